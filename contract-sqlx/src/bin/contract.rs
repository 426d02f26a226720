//! The `contract` command-line tool; see [`contract_sqlx::cli`] and `contract --help`.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    contract_sqlx::cli::main()
}
