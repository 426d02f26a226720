//! Cross-crate tests; see the `[[test]]` targets.

/// The examples of `#[derive(Contract)]`'s documentation (`contract-derive/src/derive.md`),
/// compiled and run as doctests here: `contract-derive` is a proc-macro crate, and a
/// dev-dependency on `contract-sqlx` there would build the runtime stack a second time for
/// the host (see `contract-derive/Cargo.toml`).
#[cfg(doctest)]
#[doc = include_str!("../contract-derive/src/derive.md")]
pub struct DeriveDocExamples;
