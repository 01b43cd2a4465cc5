//! DuckDB as every program opens it, and its errors told apart by their kind.
//!
//! DuckDB's message starts with the kind of its exception (`IO Error: `, `Invalid Input Error: `,
//! `Out of Memory Error: `…), then its text, which often holds a path. A decision (is this file
//! damaged, or did the disk, the memory or a permission fail?) looks at that kind, and at most at
//! the fixed words that start the text, never at words anywhere in it: a host named `thrift-01`
//! or a data directory `/srv/checksum-archive` must not make an EIO look like damage.

use duckdb::Config;

/// The kind of a DuckDB error (its exception type), from the start of its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `IO Error`: a system call failed, or a file's bytes do not hold what they should.
    Io,
    /// `Invalid Input Error`: for a Parquet file, its content is not valid.
    InvalidInput,
    /// `Invalid Error`: a decoder gave up (DuckDB's wrapper of a plain C++ exception).
    Invalid,
    /// `INTERNAL Error`: DuckDB met what it never expected, e.g. in a damaged file.
    Internal,
    /// `Serialization Error`: metadata that does not decode.
    Serialization,
    /// `Data Corruption Error`: a block whose checksum does not match.
    DataCorruption,
    OutOfMemory,
    Permission,
    /// Anything else: SQL errors (`Parser`, `Binder`, `Catalog`), conversions, interrupts.
    Other,
}

/// A DuckDB failure found in an error chain: its kind and the text after the kind.
pub struct Failure<'a> {
    pub kind: Kind,
    pub text: &'a str,
}

super::message_error! {
    /// DuckDB's own message, kept as an error of its own kind (`sql_error`), so that it is still
    /// told apart by its kind after the binding's error code is dropped.
    SqlError
}

/// The DuckDB failure in `err`'s chain, if any.
pub fn failure(err: &anyhow::Error) -> Option<Failure<'_>> {
    err.chain().find_map(|e| {
        if let Some(SqlError(message)) = e.downcast_ref::<SqlError>() {
            return Some(classify(message));
        }
        match e.downcast_ref::<duckdb::Error>()? {
            duckdb::Error::DuckDBFailure(_, Some(message)) => Some(classify(message)),
            _ => None,
        }
    })
}

/// Splits `Kind Error: text`.
fn classify(message: &str) -> Failure<'_> {
    let Some((head, text)) = message.split_once(" Error: ") else {
        return Failure {
            kind: Kind::Other,
            text: message,
        };
    };
    let kind = match head {
        "IO" => Kind::Io,
        "Invalid Input" => Kind::InvalidInput,
        "Invalid" => Kind::Invalid,
        "INTERNAL" => Kind::Internal,
        "Serialization" => Kind::Serialization,
        "Data Corruption" => Kind::DataCorruption,
        "Out of Memory" => Kind::OutOfMemory,
        "Permission" => Kind::Permission,
        _ => Kind::Other,
    };
    Failure { kind, text }
}

/// How DuckDB's IO errors of a failed system call begin (its local file system's messages; the
/// path and `strerror` follow), or of a file that went away meanwhile. Any other IO error of a
/// Parquet reader is about the bytes read.
const SYSTEM_CALL_FAILED: [&str; 9] = [
    "No files found that match the pattern",
    "Cannot open file",
    "Could not read from file",
    "Could not seek",
    "Could not get file position",
    "Failed to get stats for file",
    "Could not stat file",
    "Could not set lock on file",
    "Could not read enough bytes",
];

/// Whether DuckDB says that the content of a Parquet file is not valid, as opposed to a cause
/// outside the file (the disk, memory, permissions, open files), which must never make us give
/// the file up. The caller has read every byte of the file itself first (`files::read_through`),
/// so an error of the disk shows there as what it is.
pub fn says_parquet_invalid(err: &anyhow::Error) -> bool {
    let Some(f) = failure(err) else {
        return false;
    };
    match f.kind {
        Kind::InvalidInput
        | Kind::Invalid
        | Kind::Internal
        | Kind::Serialization
        | Kind::DataCorruption => true,
        Kind::Io => !SYSTEM_CALL_FAILED.iter().any(|p| f.text.starts_with(p)),
        Kind::OutOfMemory | Kind::Permission | Kind::Other => false,
    }
}

/// Whether DuckDB says that a database file (a segment) is damaged: not a lock, permission,
/// memory or space problem, which must never make us give a file up.
pub fn says_database_damaged(err: &anyhow::Error) -> bool {
    let Some(f) = failure(err) else {
        return false;
    };
    match f.kind {
        Kind::Internal | Kind::Serialization | Kind::DataCorruption => true,
        // `The file "PATH" exists, but it is not a valid DuckDB database file!`: told by the
        // words around the quoted path, not by words inside it.
        Kind::Io => {
            (f.text.starts_with("The file \"")
                && f.text
                    .ends_with("\" exists, but it is not a valid DuckDB database file!"))
                || f.text
                    .starts_with("The file is not a valid DuckDB database file")
                || f.text.starts_with("Corrupt database file")
                || f.text.starts_with("Corrupt WAL file")
        }
        _ => false,
    }
}

/// Whether another process holds the DuckDB file open (DuckDB never waits for its lock).
pub fn says_locked(err: &anyhow::Error) -> bool {
    failure(err).is_some_and(|f| f.kind == Kind::Io && f.text.starts_with("Could not set lock"))
}

/// An error chain as one line, `outer: inner: …`, without the binding's "Error code 1: Unknown
/// error code" that follows every DuckDB message (it says nothing the message does not).
pub fn chain_text(err: &anyhow::Error) -> String {
    err.chain()
        .filter(|e| e.downcast_ref::<libduckdb_sys::Error>().is_none())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// DuckDB's own message as the error (it names the file, or the SQL position: `LINE 1:` and a
/// caret), without the binding's error code.
pub fn sql_error(e: duckdb::Error) -> anyhow::Error {
    match e {
        duckdb::Error::DuckDBFailure(_, Some(message)) => SqlError(message).into(),
        other => other.into(),
    }
}

/// A SQL string literal.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// DuckDB as every program opens it: nothing downloaded or loaded at run time (the bundled build
/// would fetch extensions on first use; parquet and json are compiled in).
pub fn base_config() -> duckdb::Result<Config> {
    Config::default()
        // Sets both autoinstall_known_extensions and autoload_known_extensions.
        .enable_autoload_extension(false)?
        .with("allow_community_extensions", "false")
}

/// `base_config`, with one thread a query and a memory limit: the collector overlaps reading
/// with its commit thread, and jp-flush writes `flush_threads` files at once; DuckDB's own
/// workers would only compete with those for the same cores (measured: 8.8 s with 2, 7.2 s with
/// 1, on a 1M backfill).
pub fn config(memory_limit: &str) -> duckdb::Result<Config> {
    base_config()?.threads(1)?.max_memory(memory_limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duck(message: &str) -> anyhow::Error {
        anyhow::Error::from(duckdb::Error::DuckDBFailure(
            libduckdb_sys::Error::new(1),
            Some(message.to_owned()),
        ))
        .context("failed to read /srv/checksum-archive/thrift-01/x.parquet")
    }

    #[test]
    fn paths_with_telling_words_do_not_make_damage() {
        for outside in [
            "IO Error: Could not read from file \"/srv/checksum-archive/thrift-01/a.parquet\": Input/output error",
            "IO Error: Cannot open file \"/corrupt/thrift\": Stale file handle",
            "Out of Memory Error: failed to allocate data of size 16.0 MiB (corrupt thrift checksum)",
            "Permission Error: Cannot access file \"/corrupt.parquet\"",
        ] {
            assert!(!says_parquet_invalid(&duck(outside)), "{outside}");
        }
        for invalid in [
            "Invalid Input Error: No magic bytes found at end of file '/srv/x.parquet'",
            "Invalid Error: Parquet file is likely corrupted, missing dictionary",
            "IO Error: The width (70) of the bitpacked data exceeds the maximum width (64)",
        ] {
            assert!(says_parquet_invalid(&duck(invalid)), "{invalid}");
        }
    }

    #[test]
    fn a_message_without_its_error_code_keeps_its_kind() {
        let e = sql_error(duckdb::Error::DuckDBFailure(
            libduckdb_sys::Error::new(1),
            Some("Invalid Input Error: File 'x' too small to be a Parquet file".into()),
        ))
        .context("failed to set up the views");
        assert!(says_parquet_invalid(&e));
        assert!(!chain_text(&e).contains("Unknown error code"));
    }

    #[test]
    fn the_error_code_of_the_binding_is_left_out() {
        let text = chain_text(&duck("IO Error: x"));
        assert_eq!(
            text,
            "failed to read /srv/checksum-archive/thrift-01/x.parquet: IO Error: x"
        );
    }
}
