//! The quickstart's building blocks, shared by `examples/quickstart.rs` and
//! `tests/quickstart.rs`: the story (written once) and one fleet per backend.

pub mod args;
pub mod mysql;
pub mod postgres;
pub mod sqlite;
pub mod story;
