//! Compile-time errors of `#[derive(Contract)]`: every mistake is a spanned error that
//! says how to fix it (`fail/`). The cases that must compile are plain test binaries of
//! `contract-tests` (`tests/derive_pass/`), so they reuse the workspace's compiled
//! dependencies instead of trybuild building them a second time.
//!
//! With only compile-fail cases, trybuild type-checks them all in one `cargo check`
//! (no code generation). Regenerate snapshots with
//! `TRYBUILD=overwrite cargo test -p contract-ui --test ui` and review the diff: `.stderr`
//! output is pinned to the workspace toolchain.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("fail/*.rs");
}
