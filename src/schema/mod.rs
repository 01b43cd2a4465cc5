//! The shape of an entry: its columns in the buffer and in Parquet (`columns`), the entry as it is
//! read (`entry`), and journalctl's JSON form of its fields (`json`).

pub mod columns;
pub mod entry;
pub mod json;
