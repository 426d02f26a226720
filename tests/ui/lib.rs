//! Compile-time errors of `#[derive(Contract)]`; see `ui.rs` (the compile-fail cases; the
//! cases that must compile are in `tests/derive_pass/`). This library is
//! empty: cargo requires a library or binary target in every package.
