//! The buffer between the collector and jp-flush: the directory of segments (`directory`), one
//! segment's DuckDB file and its tables (`segment`), and the hand-off of sealed segments with its
//! lease (`handoff`).

mod directory;
pub mod handoff;
pub mod segment;

pub use directory::*;
