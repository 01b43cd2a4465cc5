//! The Parquet tree: where a host's minute goes (`layout`), what retention deletes
//! (`retention`), and the archive as SQL views and the catalogue file (`views`).

pub mod layout;
pub mod retention;
pub mod views;
