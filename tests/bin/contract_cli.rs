//! The `contract` CLI, built in this package so `tests/cli.rs` can run it as a separate
//! process (`CARGO_BIN_EXE_contract-cli`: Cargo sets it only for binaries of the test's own
//! package). The same entry point as `contract-sqlx`'s `contract` binary.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    contract_sqlx::cli::main()
}
