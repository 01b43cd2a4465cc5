//! What every room leans on and that knows nothing of the journal or the archive: the file
//! system done safely (`files`), running as the owner of the state instead of root (`user`),
//! DuckDB's errors told apart by their kind (`duckdb`), living as a systemd service (`service`:
//! logging, signals, sd_notify), Prometheus text files (`metrics`), and the fault points of the
//! crash tests (`fault`).

pub mod duckdb;
pub mod fault;
pub mod files;
pub mod metrics;
pub mod service;
pub mod user;

/// An error that is its message, told apart by its type: what exit code it means (`exit_with`),
/// or what kind of failure it is. Defines the type with `Display` (the message) and `Error`.
macro_rules! message_error {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name(pub String);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::error::Error for $name {}
    };
}
pub(crate) use message_error;
