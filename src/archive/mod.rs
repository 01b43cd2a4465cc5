//! The Parquet tree: where a host's minute goes (`layout`), which files a range takes in
//! (`files`), what retention deletes
//! (`retention`), the archive as SQL views and the catalogue file (`views`), and the summary of
//! entries per minute that jp-flush keeps beside it (`summary`).

pub mod files;
pub mod layout;
pub mod retention;
pub mod summary;
pub mod views;
