//! Cross-crate tests; see the `[[test]]` targets.
//!
//! The library holds what every test binary shares (`support`): compiled once here rather
//! than once per binary, each of which would type-check it and generate its code again.

#[path = "support/mod.rs"]
pub mod support;

/// The examples of `#[derive(Contract)]`'s documentation (`contract-derive/src/derive.md`),
/// compiled and run as doctests here: `contract-derive` is a proc-macro crate, and a
/// dev-dependency on `contract-sqlx` there would build the runtime stack a second time for
/// the host (see `contract-derive/Cargo.toml`).
#[cfg(doctest)]
#[doc = include_str!("../contract-derive/src/derive.md")]
pub struct DeriveDocExamples;
