//! Examples live in this package's `[[example]]` targets; this library holds the little
//! they share: a progress line for long operations and URLs safe to print.

use std::io::{IsTerminal, Write};

/// Progress of a long operation (seeding tenants, consuming queues): a line rewritten in
/// place on a terminal (on stderr, so stdout keeps the results), a `tracing` event per
/// step otherwise.
#[derive(Debug)]
pub struct Progress {
    label: &'static str,
    total: usize,
    done: usize,
    terminal: bool,
}

impl Progress {
    /// Starts `label` over `total` units.
    #[must_use]
    pub fn new(label: &'static str, total: usize) -> Self {
        let progress = Self {
            label,
            total,
            done: 0,
            terminal: std::io::stderr().is_terminal(),
        };
        progress.show();
        progress
    }

    /// `n` more units done.
    pub fn advance(&mut self, n: usize) {
        self.done = (self.done + n).min(self.total);
        self.show();
    }

    /// Ends the line (on a terminal).
    pub fn finish(self) {
        if self.terminal {
            eprintln!();
        } else {
            tracing::info!(label = self.label, total = self.total, "done");
        }
    }

    fn show(&self) {
        if self.terminal {
            eprint!("\r{}: {}/{}", self.label, self.done, self.total);
            let _ = std::io::stderr().flush();
        } else {
            tracing::info!(
                label = self.label,
                done = self.done,
                total = self.total,
                "progress"
            );
        }
    }
}

/// `url` with its password replaced by `***`, for messages.
///
/// ```
/// use contract_examples::redact_url;
///
/// assert_eq!(redact_url("postgres://app:s3cret@db:5432/x"), "postgres://app:***@db:5432/x");
/// assert_eq!(redact_url("postgres://postgres@127.0.0.1/x"), "postgres://postgres@127.0.0.1/x");
/// ```
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}
