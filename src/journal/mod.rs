//! Reading the journal: libsystemd's sd-journal (`sd`), the streams of one source read one by
//! one (`streams`), positions and the state file (`position`), and which entries are kept
//! (`filter`).

pub mod filter;
pub mod position;
mod sd;
pub mod streams;

pub use sd::*;
