//! One integration-test binary: a harness (temp dir, binaries, a private journald) and tests
//! named after what they guard.

mod admin;
mod archive;
mod collector;
mod compact;
mod flush;
mod harness;
mod nspawn;
mod packages;
mod reliability;
mod upload;
mod web;
