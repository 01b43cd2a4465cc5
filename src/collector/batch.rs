//! One journal entry → one row of the collector's next batch: the lossless `fields` JSON and the
//! typed columns promoted from it, as Arrow column builders in `schema::columns` order.

use std::sync::Arc;

use duckdb::arrow::datatypes::Schema;
use duckdb::arrow::record_batch::RecordBatch;

use crate::archive::layout::{host_dir, MINUTE_USEC};
use crate::journal::id128_hex;
use crate::schema::columns::Builders;
use crate::schema::entry::{EntryMeta, Fields};
use crate::schema::json::{encode_json, printable_text, realtime_fits};

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

/// The promoted fields of one entry: the first value of each, how many values it has, and
/// that value as printable text (what journalctl shows as a string), validated once.
struct Promoted<'a> {
    first: [Option<&'a [u8]>; PROMOTED.len()],
    count: [u32; PROMOTED.len()],
    shown: [Option<&'a str>; PROMOTED.len()],
}

impl<'a> Promoted<'a> {
    #[inline]
    fn scan(fields: &'a Fields) -> Promoted<'a> {
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
        let shown = first.map(|v| v.and_then(printable_text));
        Promoted {
            first,
            count,
            shown,
        }
    }

    /// The text of a text column.
    #[inline]
    fn text(&self, slot: usize) -> Option<&'a str> {
        self.shown[slot].or_else(|| as_text(self.first[slot]))
    }

    /// The names whose one value its column holds exactly: a text column holds any UTF-8; a
    /// number column (`parsed` says it took the value) only the number's own spelling ("7",
    /// not "07" or "+7"). The `fields` JSON leaves them out.
    #[inline]
    fn in_columns(
        &self,
        parsed: impl Fn(usize) -> bool,
    ) -> ([&'static [u8]; PROMOTED.len()], usize) {
        let mut names: [&[u8]; PROMOTED.len()] = [b""; PROMOTED.len()];
        let mut n = 0;
        for (slot, name) in PROMOTED.iter().enumerate() {
            let (Some(value), Some(_)) = (self.first[slot], self.shown[slot]) else {
                continue;
            };
            if self.count[slot] != 1 {
                continue;
            }
            let exact = match slot {
                PRIORITY | PID | UID | GID | SOURCE_REALTIME => {
                    parsed(slot) && canonical_decimal(value)
                }
                _ => parsed(slot),
            };
            if exact {
                names[n] = name;
                n += 1;
            }
        }
        (names, n)
    }
}

/// Rows being collected for the next commit, as Arrow column builders.
pub struct Batch {
    columns: Builders,
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
            columns: Builders::new(),
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
        let found = Promoted::scan(fields);
        let text = |slot: usize| found.text(slot);
        let hostname = text(HOSTNAME);
        let message = text(MESSAGE);
        let priority = as_number::<u8>(found.first[PRIORITY]);
        let syslog_identifier = text(SYSLOG_IDENTIFIER);
        let systemd_unit = text(SYSTEMD_UNIT);
        let pid = as_number::<i64>(found.first[PID]);
        let uid = as_number::<i64>(found.first[UID]);
        let gid = as_number::<i64>(found.first[GID]);
        let comm = text(COMM);
        let exe = text(EXE);
        let machine_id = text(MACHINE_ID);
        let transport = text(TRANSPORT);
        let source_timestamp = as_number::<u64>(found.first[SOURCE_REALTIME])
            .filter(|&u| realtime_fits(u))
            .map(|u| u as i64);
        // A number column holds its field exactly when the field parsed as a number.
        let (in_columns, n_in_columns) = found.in_columns(|slot| match slot {
            PRIORITY => priority.is_some(),
            PID => pid.is_some(),
            UID => uid.is_some(),
            GID => gid.is_some(),
            SOURCE_REALTIME => source_timestamp.is_some(),
            _ => true,
        });
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
        self.columns.timestamp.append_value(ts);
        self.oldest_usec = Some(self.oldest_usec.map_or(ts, |o| o.min(ts)));
        self.columns
            .minute_key
            .append_value(ts - ts.rem_euclid(MINUTE_USEC));
        self.columns.hostname.append_option(hostname);
        self.columns.cursor.append_value(meta.cursor);
        self.columns.fields.append_value(&self.json);
        self.columns.message.append_option(message);
        self.columns.priority.append_option(priority.map(i32::from));
        self.columns
            .syslog_identifier
            .append_option(syslog_identifier);
        self.columns.systemd_unit.append_option(systemd_unit);
        self.columns.pid.append_option(pid);
        self.columns.uid.append_option(uid);
        self.columns.gid.append_option(gid);
        self.columns.comm.append_option(comm);
        self.columns.exe.append_option(exe);
        self.columns.boot_id.append_value(&boot_hex);
        self.columns.machine_id.append_option(machine_id);
        self.columns.transport.append_option(transport);
        self.columns
            .monotonic_usec
            .append_value(i64::try_from(meta.monotonic_usec).unwrap_or(i64::MAX));
        self.columns
            .source_timestamp
            .append_option(source_timestamp);
        match found.first[HOSTNAME] {
            None => self.columns.host_dir.append_value(&self.local_host_dir),
            Some(raw) => {
                if self.last_host.as_ref().is_none_or(|(h, _)| h != raw) {
                    self.last_host = Some((raw.to_vec(), host_dir(raw)));
                }
                let (_, dir) = self.last_host.as_ref().expect("set above");
                self.columns.host_dir.append_value(dir);
            }
        }
        self.rows += 1;
        self.bytes += self.json.len() + fields.byte_len() + 256;
    }

    pub fn schema() -> Schema {
        crate::schema::columns::arrow_schema()
    }

    /// Hands the collected rows over as one Arrow batch, and starts empty again.
    pub fn take(&mut self) -> RecordBatch {
        let columns = self.columns.finish();
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
    use crate::schema::json::field_name_key;

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

    /// Guards the promoted fields against drifting from the column list: the fields `push`
    /// promotes are those whose columns `WHOLE_ENTRY_SQL` (made from the list) puts back,
    /// besides the ones every entry has from its header.
    #[test]
    fn promoted_fields_are_the_columns_fields() {
        let sql = crate::schema::columns::WHOLE_ENTRY_SQL;
        let in_sql: Vec<&str> = sql
            .split('\'')
            .skip(1)
            .step_by(2)
            .filter(|f| !f.starts_with("__") && *f != "_BOOT_ID" && *f != "{}")
            .collect();
        let promoted: Vec<&str> = PROMOTED
            .iter()
            .map(|p| std::str::from_utf8(p).unwrap())
            .collect();
        assert_eq!(in_sql, promoted);
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
