//! The journalctl JSON form: an entry's fields as `journalctl -o json --all` prints them, the
//! lossless `fields` column of a row.

use super::entry::{EntryMeta, Fields};

/// systemd's `utf8_is_printable()`: what journalctl prints as a JSON string rather than as an
/// array of byte values. Valid UTF-8, no control characters but TAB and newline, no C1 controls,
/// no non-characters (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF). Returns `value` as text when it is
/// printable, validating the bytes once.
pub fn printable_text(value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(value).ok()?;
    let printable = if text.is_ascii() {
        text.bytes()
            .all(|b| b >= b' ' && b != 0x7f || b == b'\t' || b == b'\n')
    } else {
        text.chars().all(|c| {
            let u = c as u32;
            !((u < 0x20 && c != '\t' && c != '\n')
                || (0x7f..=0x9f).contains(&u)
                || (0xfdd0..=0xfdef).contains(&u)
                || (u & 0xfffe) == 0xfffe)
        })
    };
    printable.then_some(text)
}

fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut last = 0;
    for (i, b) in text.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\t' => "\\t",
            b'\r' => "\\r",
            0..=0x1f | 0x7f => {
                out.push_str(&text[last..i]);
                out.push_str(&format!("\\u{b:04x}"));
                last = i + 1;
                continue;
            }
            _ => continue,
        };
        out.push_str(&text[last..i]);
        out.push_str(escape);
        last = i + 1;
    }
    out.push_str(&text[last..]);
    out.push('"');
}

fn push_json_value(out: &mut String, value: &[u8]) {
    if let Some(text) = printable_text(value) {
        push_json_string(out, text);
    } else {
        out.push('[');
        for (i, b) in value.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let mut buf = [0u8; 3];
            let digits = if *b >= 100 {
                buf = [b'0' + b / 100, b'0' + b / 10 % 10, b'0' + b % 10];
                &buf[..]
            } else if *b >= 10 {
                buf[0] = b'0' + b / 10;
                buf[1] = b'0' + b % 10;
                &buf[..2]
            } else {
                buf[0] = b'0' + b;
                &buf[..1]
            };
            // Digits are ASCII.
            out.push_str(std::str::from_utf8(digits).unwrap_or_default());
        }
        out.push(']');
    }
}

/// Encodes the fields of an entry that its columns do not hold exactly (see `Batch::push`), the
/// way `journalctl -o json --all` encodes them: one key per field name (in order of first
/// appearance) whose value is a string for printable UTF-8, an array of byte values otherwise, and
/// an array of such values for a repeated name. The entry's address (`__CURSOR`,
/// `__MONOTONIC_TIMESTAMP`, the header's `_BOOT_ID`) is always in its columns, never here;
/// `__REALTIME_TIMESTAMP` is here only when `timestamp` cannot hold it.
/// Field names are written as they are when they are UTF-8 without a `%` (every name journald
/// accepts: `[A-Z0-9_]`); any other name (possible in files written by other tools) is written
/// percent-encoded, every byte outside `[A-Za-z0-9_]` as `%XX`, so that no name is lost or
/// merged with another: a key with a `%` is an encoded one (`field_name_key`).
/// `boot_hex` is `meta.boot_id` in hex; `in_columns` lists the names left out.
pub fn encode_json(
    meta: &EntryMeta,
    boot_hex: &str,
    fields: &Fields,
    in_columns: &[&[u8]],
    out: &mut String,
) {
    out.clear();
    out.push('{');
    if !realtime_fits(meta.realtime_usec) {
        out.push_str(&format!(
            "\"__REALTIME_TIMESTAMP\":\"{}\"",
            meta.realtime_usec
        ));
    }
    // `monotonic_usec` is a BIGINT (no engine takes unsigned columns): the rare value beyond it
    // saturates there and is kept exactly here.
    if i64::try_from(meta.monotonic_usec).is_err() {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&format!(
            "\"__MONOTONIC_TIMESTAMP\":\"{}\"",
            meta.monotonic_usec
        ));
    }

    // Group repeated names, keeping journal order. Entries have ~25 fields, so a linear scan over
    // the distinct names beats hashing; huge entries (thousands of fields) fall back to a map.
    let all: Vec<(&[u8], &[u8])> = fields
        .iter()
        // journalctl prints _BOOT_ID once, from the entry header (our `boot_id`); a differing
        // value is kept.
        .filter(|(n, v)| !(*n == b"_BOOT_ID" && *v == boot_hex.as_bytes()))
        .filter(|(n, _)| !in_columns.contains(n))
        .collect();
    let mut names: Vec<(&[u8], Vec<usize>)> = Vec::new();
    if all.len() <= 64 {
        for (i, (name, _)) in all.iter().enumerate() {
            match names.iter_mut().find(|(n, _)| n == name) {
                Some((_, idx)) => idx.push(i),
                None => names.push((name, vec![i])),
            }
        }
    } else {
        let mut slot: std::collections::HashMap<&[u8], usize> = Default::default();
        for (i, (name, _)) in all.iter().enumerate() {
            match slot.get(name) {
                Some(&k) => names[k].1.push(i),
                None => {
                    slot.insert(name, names.len());
                    names.push((name, vec![i]));
                }
            }
        }
    }
    for (name, idx) in &names {
        if out.len() > 1 {
            out.push(',');
        }
        push_json_string(out, &field_name_key(name));
        out.push(':');
        if idx.len() == 1 {
            push_json_value(out, all[idx[0]].1);
        } else {
            out.push('[');
            for (k, &i) in idx.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                push_json_value(out, all[i].1);
            }
            out.push(']');
        }
    }
    out.push('}');
}

/// The JSON key for a field name: the name itself when it is UTF-8 without `%`, else the name
/// percent-encoded (reversible: decode the `%XX` of any key that has a `%`).
pub fn field_name_key(name: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(name) {
        Ok(text) if !text.contains('%') => std::borrow::Cow::Borrowed(text),
        _ => {
            let mut key = String::with_capacity(name.len() * 3);
            for &b in name {
                if b.is_ascii_alphanumeric() || b == b'_' {
                    key.push(b as char);
                } else {
                    key.push_str(&format!("%{b:02X}"));
                }
            }
            std::borrow::Cow::Owned(key)
        }
    }
}

/// Whether `timestamp` holds an entry's realtime exactly: TIMESTAMP is signed, and its largest
/// value means infinity. A realtime past year 294247 cannot occur; it saturates, and `fields`
/// keeps the exact one.
pub fn realtime_fits(usec: u64) -> bool {
    usec < i64::MAX as u64
}
