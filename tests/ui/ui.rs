//! Compile-time errors of `#[derive(Contract)]`: every mistake is a spanned error that
//! says how to fix it (`fail/`). The cases that must compile are plain test binaries of
//! `contract-tests` (`tests/derive_pass/`), so they reuse the workspace's compiled
//! dependencies instead of trybuild building them a second time.
//!
//! With only compile-fail cases, trybuild type-checks them all in one `cargo check`
//! (no code generation). Regenerate snapshots with
//! `TRYBUILD=overwrite cargo test -p contract-ui --test ui` and review the diff: `.stderr`
//! output is pinned to the workspace toolchain.

use std::env;
use std::ffi::OsStr;
use std::process::{Command, Stdio};

/// The rustc flags trybuild gives the cases (trybuild 1.0's `rustflags.rs`: `--cfg trybuild
/// --verbose -A dead_code`, plus `--diagnostic-width=140` when it checks the cases), joined
/// as cargo's `CARGO_ENCODED_RUSTFLAGS` wants them.
///
/// trybuild first checks the dependencies without the last flag, then the cases with it. To
/// cargo that is a different build, so every dependency (sqlx and its three drivers,
/// SQLite's C library, contract-sqlx) was checked twice, about half of this test's time.
/// trybuild removes `RUSTFLAGS` but leaves `CARGO_ENCODED_RUSTFLAGS`, which cargo prefers
/// over the `--config` flags trybuild passes: with the final flags set there, both steps
/// are the same build and the dependencies are checked once. The cases see exactly the
/// flags trybuild would give them; if trybuild changes its flags, the pinned `.stderr`
/// files no longer match and this test fails, saying so.
const TRYBUILD_CASE_FLAGS: &str =
    "--cfg\u{1f}trybuild\u{1f}--verbose\u{1f}-A\u{1f}dead_code\u{1f}--diagnostic-width=140";

#[test]
fn ui() {
    let fixed =
        env::var_os("CARGO_ENCODED_RUSTFLAGS").as_deref() == Some(OsStr::new(TRYBUILD_CASE_FLAGS));
    // Coverage runs (`RUSTFLAGS` with `-C instrument-coverage`, which trybuild forwards)
    // keep trybuild's own flags.
    let coverage = env::var("RUSTFLAGS").is_ok_and(|flags| flags.contains("instrument-coverage"));
    if fixed || coverage {
        let t = trybuild::TestCases::new();
        t.compile_fail("fail/*.rs");
        return;
    }
    // A test cannot set its own environment without `unsafe` (edition 2024), so it runs
    // itself again with the flags set: this test alone. trybuild's report (on stderr) is
    // passed through; the inner run's own libtest summary (on stdout) is shown only on
    // failure, so the suite counts this test once.
    let exe = env::current_exe().expect("the path of this test binary");
    let inner = Command::new(exe)
        .args(["ui", "--exact", "--nocapture", "--test-threads=1"])
        .env("CARGO_ENCODED_RUSTFLAGS", TRYBUILD_CASE_FLAGS)
        .stderr(Stdio::inherit())
        .output()
        .expect("run the ui test binary again with trybuild's flags fixed");
    if !inner.status.success() {
        print!("{}", String::from_utf8_lossy(&inner.stdout));
        panic!("compile-fail cases failed (trybuild's report above)");
    }
}
