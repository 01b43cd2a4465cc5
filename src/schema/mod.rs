//! The columns of an entry: the buffer's table, the Parquet schema, the Arrow batch the collector
//! builds, and the journalctl JSON form of a whole entry (`row`).

pub mod row;
