//! Compile-time tests of `#[derive(Contract)]`; see `ui.rs` (compile-fail cases) and
//! `pass/` (cases that must compile and produce the expected contract). This library is
//! empty: cargo requires a library or binary target in every package.
