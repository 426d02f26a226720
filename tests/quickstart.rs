//! The quickstart's story, end to end, on SQLite files and on the local PostgreSQL: the
//! same code `cargo run --example quickstart` runs (`examples/quickstart/`), checked on
//! its results (tenants, pauses, audits, plan hashes, counts, quarantine rows, the log
//! file), never on its wording.

use crate::support;

#[path = "../examples/quickstart/mod.rs"]
#[allow(dead_code)]
mod example;

use std::collections::{BTreeMap, BTreeSet};

use contract_sqlx::plan::Hazard;
use contract_sqlx::{
    guard::PausedBy,
    report::{DriftKind, Verdict},
};
use example::postgres::PgFleet;
use example::sqlite::SqliteFleet;
use example::story::{self, Drift, Outcome, Summary};

/// The tenant's name in the scenario (`acme`), without the server's scratch prefix.
fn short(tenant: &str) -> &str {
    tenant.rsplit('_').next().unwrap_or(tenant)
}

fn set<'a>(names: impl IntoIterator<Item = &'a String>) -> BTreeSet<&'a str> {
    names.into_iter().map(|t| short(t)).collect()
}

/// `(valid, poison ids)` per short tenant name, from the scenario itself.
fn expected_counts() -> BTreeMap<&'static str, (u64, BTreeSet<i64>)> {
    story::scenario()
        .into_iter()
        .map(|(name, _, messages)| {
            let poison: BTreeSet<i64> = messages
                .iter()
                .filter(|(_, _, raw)| story::is_poison(raw))
                .map(|(id, _, _)| *id)
                .collect();
            let valid = u64::try_from(messages.len() - poison.len()).unwrap();
            (name, (valid, poison))
        })
        .collect()
}

/// The checks shared by every backend. `refused`: tenants whose drift the planner refuses
/// on this backend (they must stay paused); `approvals`: tenants whose plan needs one.
fn check(s: &Summary, refused: &[&str], approvals: &[&str]) {
    let expected = expected_counts();
    let injected: BTreeSet<&str> = s
        .injected
        .iter()
        .filter(|(_, d)| **d != Drift::None)
        .map(|(t, _)| short(t))
        .collect();
    assert_eq!(injected, BTreeSet::from(["hooli", "initech", "umbrella"]));

    // Start-up: exactly the injected tenants drifted, and paused by the guard.
    assert_eq!(
        set(s.startup.tenants_with("drifted").map(|t| &t.tenant)),
        injected,
        "{}",
        s.startup
    );
    assert_eq!(
        s.startup.tenants_with("compliant").count(),
        2,
        "{}",
        s.startup
    );
    assert_eq!(set(s.startup_pauses.iter().map(|p| &p.tenant)), injected);
    assert!(
        s.startup_pauses
            .iter()
            .all(|p| p.paused_by == PausedBy::Guard && !p.findings.is_empty())
    );

    // Round 1: paused tenants consumed nothing; the others drained their queue.
    for (tenant, outcome) in &s.round_startup {
        let (valid, poison) = &expected[short(tenant)];
        if injected.contains(short(tenant)) {
            assert!(
                matches!(outcome, Outcome::Paused { .. }),
                "{tenant}: {outcome:?}"
            );
        } else {
            assert_eq!(
                outcome,
                &Outcome::Consumed {
                    processed: *valid,
                    quarantined: u64::try_from(poison.len()).unwrap(),
                    poison_left: 0
                },
                "{tenant}"
            );
        }
    }

    // SafeOnly: the missing column added (one audit row), the rest waits or is refused.
    assert_eq!(s.safe_only.audits.len(), 1, "{:?}", s.safe_only.audits);
    let audit = &s.safe_only.audits[0];
    assert_eq!(
        (short(&audit.tenant), audit.status.as_str()),
        ("initech", "applied")
    );
    assert!(
        audit.statements.iter().all(|st| st.contains("ADD COLUMN")),
        "{:?}",
        audit.statements
    );
    assert!(s.safe_only.failed.is_empty(), "{:?}", s.safe_only.failed);
    assert_eq!(
        set(s.safe_only.awaiting_approval.keys()),
        approvals.iter().copied().collect()
    );
    for plan in s.safe_only.awaiting_approval.values() {
        assert_eq!(plan.hash.len(), 64, "{}", plan.hash);
        assert!(plan.needs_approval());
        assert!(plan.refusals.is_empty(), "{:?}", plan.refusals);
    }
    let umbrella = s
        .safe_only
        .awaiting_approval
        .iter()
        .find(|(t, _)| short(t) == "umbrella")
        .unwrap()
        .1;
    assert_eq!(umbrella.hazards(), [Hazard::RenamesColumn]);
    let refusals: BTreeSet<&str> = s
        .safe_only
        .plans
        .iter()
        .filter(|p| !p.refusals.is_empty())
        .map(|p| short(&p.tenant))
        .collect();
    assert_eq!(refusals, refused.iter().copied().collect());
    for plan in s.safe_only.plans.iter().filter(|p| !p.refusals.is_empty()) {
        assert!(
            plan.refusals
                .iter()
                .all(|r| r.kind == DriftKind::TypeMismatch && !r.reason.is_empty())
        );
    }
    assert!(
        s.revalidated_after_safe
            .paused
            .iter()
            .all(|t| short(t) != "initech")
    );

    // Approval of each exact hash: applied with an audit row carrying that hash.
    assert_eq!(s.approvals.len(), approvals.len());
    for approval in &s.approvals {
        let audits: Vec<_> = approval
            .run
            .audits
            .iter()
            .filter(|a| a.tenant == approval.tenant)
            .collect();
        assert_eq!(audits.len(), 1, "{:?}", approval.run.audits);
        assert_eq!(audits[0].plan_hash, approval.plan.hash);
        assert_eq!(audits[0].status, "applied");
    }

    // The end: every tenant compliant except the refused ones, which stay paused with
    // their messages untouched; every valid message elsewhere processed exactly once.
    let compliant: BTreeSet<&str> =
        set(s.final_report.tenants_with("compliant").map(|t| &t.tenant));
    let all: BTreeSet<&str> = expected.keys().copied().collect();
    let still: BTreeSet<&str> = refused.iter().copied().collect();
    assert_eq!(
        compliant,
        all.difference(&still).copied().collect(),
        "{}",
        s.final_report
    );
    assert_eq!(set(s.final_pauses.iter().map(|p| &p.tenant)), still);
    for pause in &s.final_pauses {
        assert!(
            pause
                .findings
                .iter()
                .any(|f| f.kind == DriftKind::TypeMismatch),
            "{pause:?}"
        );
    }
    for report in &s.final_report.tenants {
        assert_eq!(
            report.verdict == Verdict::Compliant,
            !still.contains(short(&report.tenant))
        );
    }
    let processed = s.processed();
    for (tenant, left) in &s.pending {
        let (valid, poison) = &expected[short(tenant)];
        if still.contains(short(tenant)) {
            assert_eq!(processed.get(tenant), None, "{tenant}");
            assert_eq!(
                u64::try_from(*left).unwrap(),
                valid + u64::try_from(poison.len()).unwrap()
            );
        } else {
            assert_eq!(processed.get(tenant), Some(valid), "{tenant}");
            assert_eq!(*left, 0, "{tenant}");
        }
    }

    // Exactly the poison messages of the consumed tenants are quarantined, with reasons.
    let rows = s
        .quarantined
        .as_ref()
        .expect("this backend has a quarantine store");
    let quarantined: BTreeSet<(&str, i64)> = rows
        .iter()
        .map(|r| (short(&r.tenant), r.source_id))
        .collect();
    let poison: BTreeSet<(&str, i64)> = expected
        .iter()
        .filter(|(t, _)| !still.contains(*t))
        .flat_map(|(t, (_, ids))| ids.iter().map(move |id| (*t, *id)))
        .collect();
    assert_eq!(quarantined, poison);
    assert_eq!(rows.len(), poison.len());
    for row in rows {
        assert!(
            ["contract_mismatch", "invalid_json"].contains(&row.reason.as_str()),
            "{row:?}"
        );
        assert!(
            !row.error.is_empty() && row.replayed_at.is_none(),
            "{row:?}"
        );
        assert_eq!(row.contract_name, "event");
    }

    // The execution log: one JSON log per remediation run.
    let text = std::fs::read_to_string(&s.log_path).expect("execution log file");
    let logs: Vec<contract_sqlx::report::ExecutionLog> =
        serde_json::from_str(&text).expect("the log parses as JSON");
    assert_eq!(logs.len(), 1 + s.approvals.len());
    assert!(
        logs.iter()
            .all(|l| l.task == "remediate" && !l.steps.is_empty() && !l.outcome.is_empty())
    );
}

#[tokio::test]
async fn sqlite_quickstart_story_end_to_end() {
    let scratch = support::TempDir::new("contract_quickstart");
    let mut fleet = SqliteFleet::create(&scratch.0).await.expect("fleet");
    let result = story::run(&mut fleet, &scratch.0.join("execution-log.json")).await;
    fleet.close().await;
    let summary = result.expect("story");
    assert_eq!(summary.backend, "SQLite");
    // SQLite changes hooli's `user_id` TEXT -> INTEGER by a table rebuild, after approval.
    check(&summary, &[], &["hooli", "umbrella"]);
    let hooli = summary
        .approvals
        .iter()
        .find(|a| short(&a.tenant) == "hooli")
        .unwrap();
    assert_eq!(
        hooli.plan.hazards(),
        [Hazard::ValidatesRows, Hazard::TableRebuild]
    );
    assert!(
        hooli.plan.statements().any(|s| s
            .starts_with(r#"CREATE TABLE "events__contract_rebuild""#)
            && s.contains("user_id INTEGER NOT NULL")),
        "{:?}",
        hooli.plan.steps
    );

    // The audit rows live in the tenant files.
    let initech = scratch.0.join("tenants").join("initech.db");
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite:{}",
        initech.display()
    ))
    .await
    .expect("open initech");
    let audits: Vec<(String, String)> = sqlx::query_as("SELECT tenant, status FROM contract_audit")
        .fetch_all(&mut conn)
        .await
        .expect("audit table");
    assert_eq!(audits, [("initech".to_owned(), "applied".to_owned())]);
    sqlx::Connection::close(conn).await.expect("close initech");
    let hooli = scratch.0.join("tenants").join("hooli.db");
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite:{}",
        hooli.display()
    ))
    .await
    .expect("open hooli");
    let declared: String =
        sqlx::query_scalar("SELECT type FROM pragma_table_info('events') WHERE name = 'user_id'")
            .fetch_one(&mut conn)
            .await
            .expect("user_id");
    assert_eq!(declared, "INTEGER");
    let audits: Vec<(String, String)> = sqlx::query_as("SELECT tenant, status FROM contract_audit")
        .fetch_all(&mut conn)
        .await
        .expect("audit table");
    assert_eq!(audits, [("hooli".to_owned(), "applied".to_owned())]);
}

#[tokio::test]
async fn postgres_quickstart_story_end_to_end_and_leaves_nothing_behind() {
    let prefix = support::unique_name("qs");
    let scratch = support::TempDir::new("contract_quickstart_pg");
    let mut fleet = PgFleet::create(&support::pg_url(), &prefix)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} (set CONTRACT_TEST_PG_URL): {e}",
                support::pg_url()
            )
        });
    let result = story::run(&mut fleet, &scratch.0.join("execution-log.json")).await;
    fleet.drop_all().await.expect("drop the scratch schemas");

    let pool = support::pg_pool().await;
    let left: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)")
            .bind(&prefix)
            .fetch_all(&pool)
            .await
            .expect("list schemas");
    assert!(left.is_empty(), "left behind: {left:?}");

    let summary = result.expect("story");
    assert_eq!(summary.backend, "PostgreSQL");
    // PostgreSQL widens int4 to int8 in place: both hooli and umbrella wait for approval.
    check(&summary, &[], &["hooli", "umbrella"]);
    let hooli = summary
        .approvals
        .iter()
        .find(|a| short(&a.tenant) == "hooli")
        .unwrap();
    assert!(hooli.plan.hazards().contains(&Hazard::TableRewrite));
}

/// The quickstart picks a server only when named with `--url`: an exported `DATABASE_URL`
/// is ignored (with a note saying how to use it); a `sqlite:` URL and anything else it
/// cannot run on are refused before anything is created.
#[test]
fn quickstart_uses_a_server_only_when_named_with_url() {
    use example::args::{Command, Target, parse};
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let pg = "postgres://postgres@127.0.0.1/postgres";

    // DATABASE_URL alone: still SQLite, and the user is told why.
    let Ok(Command::Run { target, note }) = parse(args(&[]), Some(pg)) else {
        panic!("no arguments must run");
    };
    assert_eq!(target, Target::Sqlite);
    assert!(
        note.as_deref().is_some_and(|n| n.contains("--url")),
        "{note:?}"
    );
    assert_eq!(
        parse(args(&[]), None),
        Ok(Command::Run {
            target: Target::Sqlite,
            note: None
        })
    );

    // An explicit server, in both spellings, wins over DATABASE_URL.
    let mysql = "mysql://root@127.0.0.1:3306/test";
    assert_eq!(
        parse(args(&["--url", pg]), Some(mysql)),
        Ok(Command::Run {
            target: Target::Postgres(pg.to_owned()),
            note: None
        })
    );
    assert_eq!(
        parse(args(&[&format!("--url={mysql}")]), None),
        Ok(Command::Run {
            target: Target::MySql(mysql.to_owned()),
            note: None
        })
    );

    // Refused, with a message that says what to do.
    let sqlite = parse(args(&["--url", "sqlite://app.db"]), None).unwrap_err();
    assert!(sqlite.contains("without --url"), "{sqlite}");
    let missing = parse(args(&["--url"]), None).unwrap_err();
    assert!(missing.starts_with("--url needs a value"), "{missing}");
    let other = parse(args(&["--url", "redis://localhost"]), None).unwrap_err();
    assert!(other.contains("`redis://localhost`"), "{other}");
    let unknown = parse(args(&["--demo"]), None).unwrap_err();
    assert!(
        unknown.starts_with("unknown argument `--demo`"),
        "{unknown}"
    );
    assert_eq!(parse(args(&["--help"]), Some(pg)), Ok(Command::Help));
}
