//! Compile-time behaviour of `#[derive(Contract)]`: every mistake is a spanned error that
//! says how to fix it (`ui/fail`), and every supported attribute and field type compiles
//! and produces the expected contract (`ui/pass`).
//!
//! Regenerate snapshots with `TRYBUILD=overwrite cargo test -p contract-tests --test ui`
//! and review the diff: `.stderr` output is pinned to the workspace toolchain.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/fail/*.rs");
    t.pass("ui/pass/*.rs");
}
