//! One journal entry → one row of `journal_logs`: the lossless `fields` JSON and the typed columns
//! promoted from it. The same columns, in the same order, make up every Parquet file.

use std::sync::Arc;

use duckdb::arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use duckdb::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use duckdb::arrow::record_batch::RecordBatch;

use crate::archive::layout::{host_dir, MINUTE_USEC};
use crate::journal::id128_hex;

/// The columns of `journal_logs` and of the Parquet files, in order: name, DuckDB type, and
/// whether the column can be NULL. Parquet files mark the same columns OPTIONAL in every file,
/// whatever the data (see `flush::select_list`).
///
/// These are the types of file schema 3 (`PARQUET_SCHEMA`), chosen so that every engine takes
/// the files as they are: no unsigned integers (Iceberg, Delta, Athena and Trino have none),
/// `pid`/`uid`/`gid` as BIGINT (a `_UID` is any uint32, 4294967294 included), and `fields` as
/// plain UTF-8 text rather than DuckDB's JSON type, whose Parquet JSON annotation pyiceberg's
/// `add_files` refuses, Polars reads as binary and chDB turns into a type where LIKE fails. JSON
/// functions take the text as it is (`fields->>'$.NAME'` in DuckDB); the README has the measured
/// table of both choices.
pub const COLUMNS: &[(&str, &str, bool)] = &[
    ("timestamp", "TIMESTAMP", false),
    ("minute_key", "TIMESTAMP", false),
    ("hostname", "VARCHAR", true),
    ("cursor", "VARCHAR", false),
    ("fields", "VARCHAR", false),
    ("message", "VARCHAR", true),
    ("priority", "INTEGER", true),
    ("syslog_identifier", "VARCHAR", true),
    ("systemd_unit", "VARCHAR", true),
    ("pid", "BIGINT", true),
    ("uid", "BIGINT", true),
    ("gid", "BIGINT", true),
    ("comm", "VARCHAR", true),
    ("exe", "VARCHAR", true),
    ("boot_id", "VARCHAR", false),
    ("machine_id", "VARCHAR", true),
    ("transport", "VARCHAR", true),
    ("monotonic_usec", "BIGINT", false),
    ("source_timestamp", "TIMESTAMP", true),
    // Buffer only, not exported: the entry's directory under DATA (see `layout`), computed once at
    // ingest so that jp-flush can group rows by it.
    ("host_dir", "VARCHAR", false),
];

/// The version of the Parquet files' schema, written into each file's key-value metadata as
/// `journal_parquet_schema`. 2: `priority` UTINYINT, `pid`/`uid`/`gid` INTEGER, `monotonic_usec`
/// UBIGINT, `fields` JSON; 3: the types above. Readers take both (`views::journal_select`).
pub const PARQUET_SCHEMA: u32 = 3;

/// The buffer columns that are not written to Parquet.
pub const BUFFER_ONLY_COLUMNS: &[&str] = &["host_dir"];

/// The columns as a select list, each cast to its type above, so that rows of an earlier schema
/// (a segment or a file of schema 2) come out in the current types. With `buffer_only`, the
/// columns that are not exported too.
pub fn cast_columns(buffer_only: bool) -> String {
    COLUMNS
        .iter()
        .filter(|(name, _, _)| buffer_only || !BUFFER_ONLY_COLUMNS.contains(name))
        .map(|(name, ty, _)| format!("CAST(\"{name}\" AS {ty}) AS \"{name}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A DuckDB expression of a `journal_logs` or Parquet row that gives the whole entry as
/// `journalctl -o json --all` prints it: the columns that hold a field exactly, overlaid with
/// `fields` (which holds every other field, and a promoted field whenever its column does not
/// hold it exactly). The inner `json_merge_patch` drops the NULL columns. The README shows it.
pub const WHOLE_ENTRY_SQL: &str = "json_merge_patch(json_merge_patch('{}', json_object(
    '__CURSOR', cursor, '__REALTIME_TIMESTAMP', epoch_us(timestamp)::VARCHAR,
    '__MONOTONIC_TIMESTAMP', monotonic_usec::VARCHAR, '_BOOT_ID', boot_id,
    '_HOSTNAME', hostname, 'MESSAGE', message, 'PRIORITY', priority::VARCHAR,
    'SYSLOG_IDENTIFIER', syslog_identifier, '_SYSTEMD_UNIT', systemd_unit,
    '_PID', pid::VARCHAR, '_UID', uid::VARCHAR, '_GID', gid::VARCHAR, '_COMM', comm, '_EXE', exe,
    '_MACHINE_ID', machine_id, '_TRANSPORT', transport,
    '_SOURCE_REALTIME_TIMESTAMP', epoch_us(source_timestamp)::VARCHAR)), fields)";

/// Journal fields promoted to typed columns; a field's slot is its index here, and into the
/// `first` and `count` arrays of `Batch::push`.
const PROMOTED: &[&[u8]] = &[
    b"_HOSTNAME",
    b"MESSAGE",
    b"PRIORITY",
    b"SYSLOG_IDENTIFIER",
    b"_SYSTEMD_UNIT",
    b"_PID",
    b"_UID",
    b"_GID",
    b"_COMM",
    b"_EXE",
    b"_MACHINE_ID",
    b"_TRANSPORT",
    b"_SOURCE_REALTIME_TIMESTAMP",
];
const HOSTNAME: usize = 0;
const MESSAGE: usize = 1;
const PRIORITY: usize = 2;
const SYSLOG_IDENTIFIER: usize = 3;
const SYSTEMD_UNIT: usize = 4;
const PID: usize = 5;
const UID: usize = 6;
const GID: usize = 7;
const COMM: usize = 8;
const EXE: usize = 9;
const MACHINE_ID: usize = 10;
const TRANSPORT: usize = 11;
const SOURCE_REALTIME: usize = 12;

/// What the journal says about an entry outside its data objects.
pub struct EntryMeta<'a> {
    pub cursor: &'a str,
    pub realtime_usec: u64,
    pub monotonic_usec: u64,
    pub boot_id: [u8; 16],
}

/// The data objects of one entry, copied out of libsystemd's mmap into one reusable buffer.
#[derive(Default)]
pub struct Fields {
    bytes: Vec<u8>,
    /// (start, position of '=' or end, end) of each `NAME=value` in `bytes`.
    spans: Vec<(usize, usize, usize)>,
}

impl Fields {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
    }

    pub fn push(&mut self, raw: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(raw);
        // A data object without '=' is malformed; it is kept as a name with an empty value.
        let eq = raw.iter().position(|&b| b == b'=').unwrap_or(raw.len());
        self.spans.push((start, start + eq, start + raw.len()));
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.spans.iter().map(|&(s, eq, e)| {
            let value = if eq < e {
                &self.bytes[eq + 1..e]
            } else {
                &[][..]
            };
            (&self.bytes[s..eq], value)
        })
    }

    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Keeps only the fields whose name `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        let bytes = &self.bytes;
        self.spans.retain(|&(s, eq, _)| keep(&bytes[s..eq]));
    }
}

/// systemd's `utf8_is_printable()`: what journalctl prints as a JSON string rather than as an
/// array of byte values. Valid UTF-8, no control characters but TAB and newline, no C1 controls,
/// no non-characters (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF). Returns `value` as text when it is
/// printable, validating the bytes once.
fn printable_text(value: &[u8]) -> Option<&str> {
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
fn realtime_fits(usec: u64) -> bool {
    usec < i64::MAX as u64
}

/// Whether a number's text is how the number prints itself (`7`, `-7`, `0`; not `07`, `+7`,
/// `-0`), so that its column gives back the same bytes. Checked on the bytes, without printing
/// the number: this runs for five fields of every entry.
fn canonical_decimal(text: &[u8]) -> bool {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    match digits {
        [] => false,
        [b'0'] => digits.len() == text.len(),
        [first, ..] => *first != b'0' && digits.iter().all(u8::is_ascii_digit),
    }
}

fn as_text(value: Option<&[u8]>) -> Option<&str> {
    value.and_then(|v| std::str::from_utf8(v).ok())
}

fn as_number<T: std::str::FromStr>(value: Option<&[u8]>) -> Option<T> {
    as_text(value)
        .filter(|t| !t.starts_with('+'))
        .and_then(|t| t.parse().ok())
}

/// Rows being collected for the next commit, as Arrow column builders.
pub struct Batch {
    timestamp: TimestampMicrosecondBuilder,
    minute_key: TimestampMicrosecondBuilder,
    hostname: StringBuilder,
    cursor: StringBuilder,
    fields: StringBuilder,
    message: StringBuilder,
    priority: Int32Builder,
    syslog_identifier: StringBuilder,
    systemd_unit: StringBuilder,
    pid: Int64Builder,
    uid: Int64Builder,
    gid: Int64Builder,
    comm: StringBuilder,
    exe: StringBuilder,
    boot_id: StringBuilder,
    machine_id: StringBuilder,
    transport: StringBuilder,
    monotonic_usec: Int64Builder,
    source_timestamp: TimestampMicrosecondBuilder,
    host_dir: StringBuilder,
    /// The directory of entries without `_HOSTNAME`: this machine's.
    local_host_dir: String,
    /// The last `_HOSTNAME` seen and its directory: most entries share it.
    last_host: Option<(Vec<u8>, String)>,
    rows: usize,
    bytes: usize,
    oldest_usec: Option<i64>,
    json: String,
}

impl Batch {
    pub fn new(local_host_dir: String) -> Batch {
        Batch {
            timestamp: TimestampMicrosecondBuilder::new(),
            minute_key: TimestampMicrosecondBuilder::new(),
            hostname: StringBuilder::new(),
            cursor: StringBuilder::new(),
            fields: StringBuilder::new(),
            message: StringBuilder::new(),
            priority: Int32Builder::new(),
            syslog_identifier: StringBuilder::new(),
            systemd_unit: StringBuilder::new(),
            pid: Int64Builder::new(),
            uid: Int64Builder::new(),
            gid: Int64Builder::new(),
            comm: StringBuilder::new(),
            exe: StringBuilder::new(),
            boot_id: StringBuilder::new(),
            machine_id: StringBuilder::new(),
            transport: StringBuilder::new(),
            monotonic_usec: Int64Builder::new(),
            source_timestamp: TimestampMicrosecondBuilder::new(),
            host_dir: StringBuilder::new(),
            local_host_dir,
            last_host: None,
            rows: 0,
            bytes: 0,
            oldest_usec: None,
            json: String::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The earliest timestamp in the batch (µs), None when empty.
    pub fn oldest_usec(&self) -> Option<i64> {
        self.oldest_usec
    }

    /// Approximate memory held by the batch, to commit early on large entries.
    pub fn byte_size(&self) -> usize {
        self.bytes
    }

    /// Adds one entry. A promoted field that occurs once, with a printable value (what
    /// journalctl prints as a string) that its column holds exactly, is left out of `fields`:
    /// the whole entry is `fields` plus those columns (`WHOLE_ENTRY_SQL`). Storing each value
    /// once halves what is written to the buffer and to Parquet.
    pub fn push(&mut self, meta: &EntryMeta, fields: &Fields) {
        let mut first: [Option<&[u8]>; PROMOTED.len()] = [None; PROMOTED.len()];
        let mut count = [0u32; PROMOTED.len()];
        for (name, value) in fields.iter() {
            // Every promoted name starts with '_' or an upper-case letter of "MPS".
            if !matches!(name.first(), Some(b'_' | b'M' | b'P' | b'S')) {
                continue;
            }
            if let Some(slot) = PROMOTED.iter().position(|p| *p == name) {
                first[slot].get_or_insert(value);
                count[slot] += 1;
            }
        }
        // Printable text (what journalctl shows as a string), validated once per value.
        let shown: [Option<&str>; PROMOTED.len()] = first.map(|v| v.and_then(printable_text));
        let text = |slot: usize| shown[slot].or_else(|| as_text(first[slot]));
        let hostname = text(HOSTNAME);
        let message = text(MESSAGE);
        let priority = as_number::<u8>(first[PRIORITY]);
        let syslog_identifier = text(SYSLOG_IDENTIFIER);
        let systemd_unit = text(SYSTEMD_UNIT);
        let pid = as_number::<i64>(first[PID]);
        let uid = as_number::<i64>(first[UID]);
        let gid = as_number::<i64>(first[GID]);
        let comm = text(COMM);
        let exe = text(EXE);
        let machine_id = text(MACHINE_ID);
        let transport = text(TRANSPORT);
        let source_timestamp = as_number::<u64>(first[SOURCE_REALTIME])
            .filter(|&u| realtime_fits(u))
            .map(|u| u as i64);

        // The names whose one value its column holds exactly: a text column holds any UTF-8; a
        // number column only the number's own spelling ("7", not "07" or "+7").
        let mut in_columns: [&[u8]; PROMOTED.len()] = [b""; PROMOTED.len()];
        let mut n_in_columns = 0;
        for (slot, name) in PROMOTED.iter().enumerate() {
            let (Some(value), Some(_)) = (first[slot], shown[slot]) else {
                continue;
            };
            if count[slot] != 1 {
                continue;
            }
            let exact = match slot {
                PRIORITY => priority.is_some() && canonical_decimal(value),
                PID => pid.is_some() && canonical_decimal(value),
                UID => uid.is_some() && canonical_decimal(value),
                GID => gid.is_some() && canonical_decimal(value),
                SOURCE_REALTIME => source_timestamp.is_some() && canonical_decimal(value),
                _ => true,
            };
            if exact {
                in_columns[n_in_columns] = name;
                n_in_columns += 1;
            }
        }
        let boot_hex = id128_hex(&meta.boot_id);
        encode_json(
            meta,
            &boot_hex,
            fields,
            &in_columns[..n_in_columns],
            &mut self.json,
        );

        let ts = if realtime_fits(meta.realtime_usec) {
            meta.realtime_usec as i64
        } else {
            i64::MAX - 1
        };
        self.timestamp.append_value(ts);
        self.oldest_usec = Some(self.oldest_usec.map_or(ts, |o| o.min(ts)));
        self.minute_key
            .append_value(ts - ts.rem_euclid(MINUTE_USEC));
        self.hostname.append_option(hostname);
        self.cursor.append_value(meta.cursor);
        self.fields.append_value(&self.json);
        self.message.append_option(message);
        self.priority.append_option(priority.map(i32::from));
        self.syslog_identifier.append_option(syslog_identifier);
        self.systemd_unit.append_option(systemd_unit);
        self.pid.append_option(pid);
        self.uid.append_option(uid);
        self.gid.append_option(gid);
        self.comm.append_option(comm);
        self.exe.append_option(exe);
        self.boot_id.append_value(&boot_hex);
        self.machine_id.append_option(machine_id);
        self.transport.append_option(transport);
        self.monotonic_usec
            .append_value(i64::try_from(meta.monotonic_usec).unwrap_or(i64::MAX));
        self.source_timestamp.append_option(source_timestamp);
        match first[HOSTNAME] {
            None => self.host_dir.append_value(&self.local_host_dir),
            Some(raw) => {
                if self.last_host.as_ref().is_none_or(|(h, _)| h != raw) {
                    self.last_host = Some((raw.to_vec(), host_dir(raw)));
                }
                let (_, dir) = self.last_host.as_ref().expect("set above");
                self.host_dir.append_value(dir);
            }
        }
        self.rows += 1;
        self.bytes += self.json.len() + fields.byte_len() + 256;
    }

    pub fn schema() -> Schema {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
        let fields: Vec<Field> = COLUMNS
            .iter()
            .map(|(name, ty, nullable)| {
                let dt = match *ty {
                    "TIMESTAMP" => ts.clone(),
                    "INTEGER" => DataType::Int32,
                    "BIGINT" => DataType::Int64,
                    _ => DataType::Utf8,
                };
                Field::new(*name, dt, *nullable)
            })
            .collect();
        Schema::new(fields)
    }

    /// Hands the collected rows over as one Arrow batch, and starts empty again.
    pub fn take(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.timestamp.finish()),
            Arc::new(self.minute_key.finish()),
            Arc::new(self.hostname.finish()),
            Arc::new(self.cursor.finish()),
            Arc::new(self.fields.finish()),
            Arc::new(self.message.finish()),
            Arc::new(self.priority.finish()),
            Arc::new(self.syslog_identifier.finish()),
            Arc::new(self.systemd_unit.finish()),
            Arc::new(self.pid.finish()),
            Arc::new(self.uid.finish()),
            Arc::new(self.gid.finish()),
            Arc::new(self.comm.finish()),
            Arc::new(self.exe.finish()),
            Arc::new(self.boot_id.finish()),
            Arc::new(self.machine_id.finish()),
            Arc::new(self.transport.finish()),
            Arc::new(self.monotonic_usec.finish()),
            Arc::new(self.source_timestamp.finish()),
            Arc::new(self.host_dir.finish()),
        ];
        self.rows = 0;
        self.bytes = 0;
        self.oldest_usec = None;
        // The columns match the schema by construction.
        RecordBatch::try_new(Arc::new(Self::schema()), columns)
            .expect("batch columns match the schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(items: &[&[u8]]) -> Fields {
        let mut f = Fields::default();
        for i in items {
            f.push(i);
        }
        f
    }

    #[test]
    fn field_names_that_are_not_utf8_are_encoded_reversibly() {
        assert_eq!(field_name_key(b"MESSAGE"), "MESSAGE");
        assert_eq!(field_name_key("h\u{e9}llo".as_bytes()), "h\u{e9}llo");
        assert_eq!(field_name_key(b"X\xffAME"), "X%FFAME");
        // A literal % is encoded too, so "X%FFAME" as a name cannot pass for the one above.
        assert_eq!(field_name_key(b"X%FFAME"), "X%25FFAME");
        assert_eq!(field_name_key(b"a\xfe b"), "a%FE%20b");
        // Valid UTF-8 without % stays as it is (JSON escapes what it must).
        assert_eq!(field_name_key(b"a b\x00"), "a b\u{0}");
    }

    fn meta() -> EntryMeta<'static> {
        EntryMeta {
            cursor: "s=a;i=1",
            realtime_usec: 1_709_251_200_003_888,
            monotonic_usec: 42,
            boot_id: [0xab; 16],
        }
    }

    #[test]
    fn canonical_decimal_is_how_the_number_prints_itself() {
        for text in [
            "0", "7", "-7", "123", "-0", "07", "+7", "", "-", "1a", " 1", "-007",
        ] {
            let printed = text.parse::<i64>().ok().map(|n| n.to_string());
            assert_eq!(
                canonical_decimal(text.as_bytes()),
                printed.as_deref() == Some(text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn printable_follows_systemd() {
        assert!(printable_text(b"plain text\twith tab\nand newline").is_some());
        assert!(printable_text("caf\u{e9} \u{1F600}".as_bytes()).is_some());
        assert!(printable_text(b"\x1b[31mred\x1b[0m").is_none());
        assert!(printable_text(b"nul\x00byte").is_none());
        assert!(printable_text(b"latin-1 \xe9").is_none());
        assert!(printable_text("c1 \u{85}".as_bytes()).is_none());
        assert!(printable_text("nonchar \u{fdd0}".as_bytes()).is_none());
        assert!(printable_text("bom-ish \u{fffe}".as_bytes()).is_none());
        assert!(printable_text(b"\x7f").is_none());
        assert!(printable_text(b"").is_some());
    }

    #[test]
    fn json_groups_repeats_and_encodes_bytes() {
        let f = fields(&[
            b"MESSAGE=hi \"there\"",
            b"TAG=a",
            b"BIN=\xff\x00",
            b"TAG=b",
            b"_BOOT_ID=abababababababababababababababab",
        ]);
        let mut out = String::new();
        let m = meta();
        encode_json(&m, &id128_hex(&m.boot_id), &f, &[], &mut out);
        assert_eq!(
            out,
            "{\"MESSAGE\":\"hi \\\"there\\\"\",\"TAG\":[\"a\",\"b\"],\"BIN\":[255,0]}"
        );
        encode_json(&m, &id128_hex(&m.boot_id), &f, &[b"MESSAGE"], &mut out);
        assert_eq!(out, "{\"TAG\":[\"a\",\"b\"],\"BIN\":[255,0]}");
        // A _BOOT_ID field that differs from the header's stays; a realtime that TIMESTAMP
        // cannot hold is kept here.
        let odd = fields(&[b"_BOOT_ID=00"]);
        let far = EntryMeta {
            realtime_usec: u64::MAX,
            ..meta()
        };
        encode_json(&far, &id128_hex(&far.boot_id), &odd, &[], &mut out);
        assert_eq!(
            out,
            "{\"__REALTIME_TIMESTAMP\":\"18446744073709551615\",\"_BOOT_ID\":\"00\"}"
        );
        // So is a monotonic time that BIGINT cannot hold.
        let late = EntryMeta {
            monotonic_usec: u64::MAX,
            ..meta()
        };
        encode_json(&late, &id128_hex(&late.boot_id), &odd, &[], &mut out);
        assert_eq!(
            out,
            "{\"__MONOTONIC_TIMESTAMP\":\"18446744073709551615\",\"_BOOT_ID\":\"00\"}"
        );
    }

    /// Guards the size of `fields`: a promoted field is left out exactly when its column holds
    /// its one value byte for byte, and kept whenever it does not.
    #[test]
    fn fields_keep_what_the_columns_do_not_hold_exactly() {
        let mut b = Batch::new("here".into());
        let exact = fields(&[
            b"MESSAGE=hello",
            b"PRIORITY=6",
            b"_PID=12",
            b"_UID=0",
            b"_HOSTNAME=web-1",
            b"_SOURCE_REALTIME_TIMESTAMP=1709251200003000",
            b"_TRANSPORT=journal",
            b"CODE_LINE=7",
        ]);
        let inexact = fields(&[
            b"MESSAGE=\x1b[31mred",       // UTF-8, but journalctl prints it as bytes
            b"PRIORITY=06",               // not the number's own spelling
            b"_PID=+12",                  // not a number to the column
            b"_UID=18446744073709551616", // out of BIGINT's range
            b"_GID=1",                    // repeated
            b"_GID=2",
            b"_HOSTNAME=\xff", // not UTF-8
            b"_SOURCE_REALTIME_TIMESTAMP=18446744073709551615",
        ]);
        b.push(&meta(), &exact);
        b.push(&meta(), &inexact);
        let rb = b.take();
        use duckdb::arrow::array::AsArray;
        let json = rb
            .column(rb.schema().index_of("fields").unwrap())
            .as_string::<i32>()
            .clone();
        assert_eq!(json.value(0), "{\"CODE_LINE\":\"7\"}");
        let kept: serde_json::Value = serde_json::from_str(json.value(1)).unwrap();
        let keys: Vec<&str> = kept
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys.len(), 7, "{keys:?}");
        for name in ["MESSAGE", "PRIORITY", "_PID", "_UID", "_GID", "_HOSTNAME"] {
            assert!(kept.get(name).is_some(), "{name} in {kept}");
        }
        assert!(kept.get("_SOURCE_REALTIME_TIMESTAMP").is_some());
    }

    #[test]
    fn the_readme_shows_the_whole_entry_sql() {
        let readme = include_str!("../../docs/design.md");
        assert!(
            readme.contains(WHOLE_ENTRY_SQL),
            "docs/design.md must show row::WHOLE_ENTRY_SQL as it is"
        );
    }

    #[test]
    fn promoted_columns_take_the_first_valid_value() {
        let mut b = Batch::new("here".into());
        let f = fields(&[
            b"MESSAGE=first",
            b"MESSAGE=second",
            b"PRIORITY=x",
            b"_PID=+12",
            b"_UID=4294967294",
            b"_GID=7",
            b"_HOSTNAME=\xff",
        ]);
        b.push(&meta(), &f);
        let rb = b.take();
        let col = |n: &str| rb.column(rb.schema().index_of(n).unwrap()).clone();
        use duckdb::arrow::array::{Array, AsArray};
        use duckdb::arrow::datatypes::Int64Type;
        assert_eq!(col("message").as_string::<i32>().value(0), "first");
        assert!(col("priority").is_null(0));
        assert!(col("pid").is_null(0));
        // Every uint32 fits (schema 3; schema 2's INTEGER made this one NULL).
        assert_eq!(col("uid").as_primitive::<Int64Type>().value(0), 4294967294);
        assert_eq!(col("gid").as_primitive::<Int64Type>().value(0), 7);
        assert!(col("hostname").is_null(0));
        assert_eq!(col("host_dir").as_string::<i32>().value(0), "@%FF");
        assert_eq!(rb.num_rows(), 1);
        assert!(b.is_empty());
    }
}
