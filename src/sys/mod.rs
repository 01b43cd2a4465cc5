//! What every room leans on and that knows nothing of the journal or the archive: the file
//! system done safely (`files`), running as the owner of the state instead of root (`user`),
//! DuckDB's errors told apart by their kind (`duckdb`), and the fault points of the crash tests
//! (`fault`).

pub mod duckdb;
pub mod fault;
pub mod files;
pub mod user;
