//! Running the `contract` binary as its own process and checking what it prints.

use std::process::{Command, Output};

/// What one run printed and returned.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The stdout as JSON (panics with both streams when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts the exit code, showing both streams when it differs.
    pub fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `contract <args>` with `url` in `CONTRACT_DATABASE_URL` (none when `None`), the
/// other URL variables removed. Blocking: call it from a multi-threaded runtime.
pub fn contract(url: Option<&str>, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_contract-cli"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("CONTRACT_DATABASE_URL")
        .env("USER", "ci-bot");
    if let Some(url) = url {
        command.env("CONTRACT_DATABASE_URL", url);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("run the contract binary");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs `contract` off the async runtime's threads.
pub async fn contract_async(url: &str, args: &[&str]) -> Run {
    let (url, args): (String, Vec<String>) = (
        url.to_owned(),
        args.iter().map(|a| (*a).to_owned()).collect(),
    );
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        contract(Some(&url), &args)
    })
    .await
    .expect("contract run")
}

/// Debug formatting a person should never see: `Option`s, string vectors, structs and
/// enum variants printed by `{:?}`.
const DEBUG_ARTEFACTS: [&str; 12] = [
    "Some(",
    "None",
    "[\"",
    "\"]",
    " { ",
    "TableRewrite",
    "AccessExclusive",
    "ChangeType",
    "Operator(",
    "Guard,",
    "PausedBy",
    "SystemTime",
];

/// Asserts that human output is readable: no debug formatting anywhere.
pub fn assert_readable(run: &Run) {
    for artefact in DEBUG_ARTEFACTS {
        assert!(
            !run.stdout.contains(artefact) && !run.stderr.contains(artefact),
            "debug formatting `{artefact}` in human output:\n{}\n{}",
            run.stdout,
            run.stderr
        );
    }
}

/// The full 64-hex-digit hashes in a text.
pub fn full_hashes(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .filter(|w| w.len() == 64)
        .map(str::to_owned)
        .collect()
}
