//! What `pg_conservation` and `mysql_conservation` share: the messages (valid, poison of
//! every kind, poison under reused ids), the consumer process that is killed mid-run, and
//! the exactly-once check of one tenant. Included with `#[path]` by both.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::{Instant, sleep};

pub const TENANTS: usize = 20;
pub const PER_TENANT: i64 = 1_000;
pub const TOTAL: i64 = 20_000;
pub const BATCH: &str = "100";
/// The tenants whose `processed.note` column is dropped while the consumer runs.
pub const DDL_TENANTS: [usize; 3] = [3, 10, 17];
/// The tenants whose queue payload column is a JSON type (the others are text).
pub const JSON_TENANTS: [usize; 4] = [2, 7, 12, 17];
/// The test fails, rather than hangs, after this.
pub const BOUND: Duration = Duration::from_secs(120);

/// The queue's payload column: what it can hold decides which poison it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// `text` / `LONGTEXT`: anything.
    Text,
    /// PostgreSQL `json`: JSON text verbatim, lone surrogate escapes included.
    Json,
    /// MariaDB `JSON` (a `LONGTEXT` checked by `JSON_VALID`): no lone surrogate.
    StrictJson,
}

/// The expected quarantine reason and (for a contract mismatch) field path of a poison.
pub type Expect = Option<(&'static str, Option<&'static str>)>;

/// Message `i` of tenant `t`, and for poison the expected quarantine reason and field
/// path. Every 50th message (from 25) is poison: 2%.
pub fn message(t: usize, i: i64, column: Column) -> (String, Expect) {
    if i % 50 != 25 {
        let kind = ["click", "view", "purchase"][usize::try_from(i % 3).unwrap_or(0)];
        let user = user_id(t, i);
        return (format!(r#"{{"user_id": {user}, "kind": "{kind}"}}"#), None);
    }
    if t.is_multiple_of(4) && i == 525 {
        let huge = "x".repeat(10 * 1024 * 1024);
        let payload = format!(r#"{{"user_id": 1, "kind": "{huge}"}}"#);
        return (payload, Some(("too_large", None)));
    }
    match ((i / 50) % 5, column) {
        // A JSON column refuses text that is not JSON: `\u0000` there instead.
        (0, Column::Text) => (
            r#"{"user_id": 7, "kind": "click""#.into(),
            Some(("invalid_json", None)),
        ),
        (0, _) => (
            format!(r#"{{"user_id": {i}, "kind": "\u0000"}}"#),
            Some(("contract_mismatch", Some("kind"))),
        ),
        (1, _) => (
            format!(r#"{{"user_id": "u{i}", "kind": "view"}}"#),
            Some(("contract_mismatch", Some("user_id"))),
        ),
        (2, _) => (
            r#"{"kind": "view"}"#.into(),
            Some(("contract_mismatch", None)),
        ),
        (3, _) => (
            format!(r#"{{"user_id": {i}, "kind": "teleport"}}"#),
            Some(("contract_mismatch", Some("kind"))),
        ),
        (_, Column::StrictJson) => (
            format!(r#"{{"user_id": {i}.5, "kind": "view"}}"#),
            Some(("contract_mismatch", Some("user_id"))),
        ),
        // 40 levels deep: MariaDB's `JSON_VALID` stops at 32, so the quarantine there
        // stores it without a parsed copy after the database refused one.
        _ if (i / 50) % 10 == 9 => (
            format!(
                r#"{{"user_id": "x", "deep": {}{}}}"#,
                "[".repeat(40),
                "]".repeat(40)
            ),
            Some(("contract_mismatch", Some("user_id"))),
        ),
        // A lone surrogate escape: valid JSON text, refused by the quarantine's JSON
        // column (`jsonb`, MariaDB's `JSON_VALID`).
        _ => (
            r#"{"user_id":"x","kind":"\ud800"}"#.into(),
            Some(("contract_mismatch", Some("user_id"))),
        ),
    }
}

/// The poison a producer enqueues under the id of message `id` once that one was
/// quarantined (ids are reused: an identity reset, producer-chosen ids).
pub fn reused(id: i64) -> (String, Expect) {
    (
        format!(r#"{{"kind": "view", "reused": {id}}}"#),
        Some(("contract_mismatch", None)),
    )
}

pub fn user_id(t: usize, i: i64) -> i64 {
    i64::try_from(t).unwrap_or(0) * 100_000 + i
}

/// A row of the tenant's `processed` table: `(source_id, user_id, kind, note)`.
pub type Processed = (i64, i64, String, Option<String>);

/// A quarantine row as the check needs it.
#[derive(Debug, sqlx::FromRow)]
pub struct Stored {
    pub source_id: i64,
    pub payload_raw: Vec<u8>,
    pub reason: String,
    pub field_path: Option<String>,
    pub attempts: i64,
}

/// `(source id, payload, reason, field path)` of one poison, compared as a multiset.
type Poison<'a> = (i64, &'a [u8], &'a str, Option<&'a str>);

/// Every message of tenant `t` exactly once: each valid one processed once, each poison
/// (the reused-id ones included) quarantined once with its own bytes and reason.
pub fn check_tenant(
    name: &str,
    t: usize,
    column: Column,
    reused_ids: &[i64],
    processed: &[Processed],
    quarantined: &[Stored],
) {
    let mut sent: Vec<(i64, String, Expect)> = (1..=PER_TENANT)
        .map(|i| {
            let (payload, expect) = message(t, i, column);
            (i, payload, expect)
        })
        .collect();
    sent.extend(reused_ids.iter().map(|id| {
        let (payload, expect) = reused(*id);
        (*id, payload, expect)
    }));
    let valid: BTreeSet<i64> = sent.iter().filter(|m| m.2.is_none()).map(|m| m.0).collect();
    let processed_ids: Vec<i64> = processed.iter().map(|r| r.0).collect();
    assert_eq!(
        processed_ids,
        valid.into_iter().collect::<Vec<_>>(),
        "{name}: processed"
    );
    let mut poison: Vec<Poison<'_>> = sent
        .iter()
        .filter_map(|(id, p, e)| e.map(|(reason, path)| (*id, p.as_bytes(), reason, path)))
        .collect();
    poison.sort();
    let mut stored: Vec<Poison<'_>> = quarantined
        .iter()
        .map(|s| {
            let path = (s.reason == "contract_mismatch")
                .then_some(s.field_path.as_deref())
                .flatten();
            (
                s.source_id,
                s.payload_raw.as_slice(),
                s.reason.as_str(),
                path,
            )
        })
        .collect();
    stored.sort();
    // Compared without the 10 MiB payload in the failure text first, then byte for byte.
    let shown = |rows: &[Poison<'_>]| -> Vec<String> {
        rows.iter()
            .map(|(id, raw, reason, path)| {
                let head = String::from_utf8_lossy(&raw[..raw.len().min(60)]).into_owned();
                format!("{id} {reason} {path:?} {head}")
            })
            .collect()
    };
    assert_eq!(shown(&stored), shown(&poison), "{name}: quarantined");
    assert!(stored == poison, "{name}: quarantined payload bytes differ");
    for (id, user, kind, note) in processed {
        let (payload, _) = message(t, *id, column);
        assert!(payload.contains(&format!(r#""user_id": {user}, "kind": "{kind}""#)));
        assert_eq!(*user, user_id(t, *id));
        // Rows written before the column was dropped get its default back.
        let dropped = DDL_TENANTS.contains(&t) && note.as_deref() == Some("");
        assert!(
            note.as_deref() == Some("ok") || dropped,
            "{name}: note {note:?}"
        );
    }
    for s in quarantined {
        assert_eq!(
            s.attempts, 0,
            "{name}: message {}: a release counted an attempt",
            s.source_id
        );
    }
}

/// The consumer process; killed (and its log removed) on drop, so a failing test leaves
/// nothing running.
pub struct Consumer {
    pub child: Child,
    log: std::path::PathBuf,
}

impl Consumer {
    /// Starts `program` with `args`, its stderr in a log file named after `run`.
    pub fn start(program: &str, args: &[String], run: &str) -> Self {
        let log = std::env::temp_dir().join(format!(
            "conservation_consumer_{}_{run}.log",
            std::process::id()
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn the consumer");
        Self { child, log }
    }

    /// The last 40 lines of its log.
    pub fn output(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Panics if the process already exited (it must still be consuming).
    pub fn assert_running(&mut self, what: &str) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "consumer exited ({status}) before {what}:\n{}",
                self.output()
            );
        }
    }

    /// Waits for the process to exit by itself; panics past `deadline`, or at once when
    /// `unexpected` reports a rolled-back batch.
    pub async fn wait_for_exit<U: Future<Output = Vec<String>>>(
        &mut self,
        deadline: Instant,
        mut unexpected: impl FnMut() -> U,
    ) -> std::process::ExitStatus {
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            self.assert_no_unexpected(unexpected().await);
            assert!(
                Instant::now() < deadline,
                "the consumer did not finish:\n{}",
                self.output()
            );
            sleep(Duration::from_millis(50)).await;
        }
    }

    fn assert_no_unexpected(&self, errors: Vec<String>) {
        assert!(
            errors.is_empty(),
            "unexpected rolled-back batches: {errors:?}\n{}",
            self.output()
        );
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Polls `check` every 20 ms until it holds; panics past the deadline, or at once when
/// the consumer exited or `unexpected` reports a batch rolled back for another reason
/// than the DDL race (a poison that cannot be quarantined would otherwise only show as a
/// timeout).
pub async fn wait_for<F, U>(
    deadline: Instant,
    what: &str,
    consumer: &mut Consumer,
    mut check: impl FnMut() -> F,
    mut unexpected: impl FnMut() -> U,
) where
    F: Future<Output = bool>,
    U: Future<Output = Vec<String>>,
{
    while !check().await {
        consumer.assert_running(what);
        consumer.assert_no_unexpected(unexpected().await);
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            consumer.output()
        );
        sleep(Duration::from_millis(20)).await;
    }
}
