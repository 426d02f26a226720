//! Quickstart: a fleet of tenant queues, drift in some tenants, and the whole story —
//! start-up check, fleet report, batch gate, `SafeOnly` remediation, approval of a plan
//! hash, quarantine of poison messages, and the JSON execution log.
//!
//! ```text
//! cargo run --example quickstart                                   # SQLite files, no server
//! DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo run --example quickstart
//! DATABASE_URL=mysql://root@127.0.0.1/test cargo run --example quickstart
//! ```
//!
//! On a server the tenants are scratch schemas (PostgreSQL) or databases (MySQL) with a
//! unique prefix, dropped at the end. The story itself is in `quickstart/story.rs`,
//! written once for every backend; every line printed here comes from its results.

#[path = "quickstart/mod.rs"]
#[allow(dead_code)] // shared with tests/quickstart.rs, which reads more than is printed
mod quickstart;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use quickstart::mysql::MySqlFleet;
use quickstart::postgres::PgFleet;
use quickstart::sqlite::SqliteFleet;
use quickstart::story::{self, BoxError, Drift, Outcome, Summary};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos();
    let prefix = format!("qs_{:06x}", (nanos ^ std::process::id()) & 0xff_ffff);
    let work = std::env::temp_dir().join(format!("contract-quickstart-{prefix}"));
    std::fs::create_dir_all(&work)?;
    let log_path = work.join("execution-log.json");

    let url = std::env::var("DATABASE_URL").unwrap_or_default();
    let summary = if url.starts_with("postgres") {
        let mut fleet = PgFleet::create(&url, &prefix).await?;
        let result = story::run(&mut fleet, &log_path).await;
        fleet.drop_all().await?; // even when the story failed
        result?
    } else if url.starts_with("mysql") || url.starts_with("mariadb") {
        let mut fleet = MySqlFleet::create(&url, &prefix).await?;
        let result = story::run(&mut fleet, &log_path).await;
        fleet.drop_all().await?;
        result?
    } else {
        if !url.is_empty() {
            return Err(format!(
                "DATABASE_URL must start with postgres:// or mysql://, not `{url}`"
            )
            .into());
        }
        let mut fleet = SqliteFleet::create(&work).await?;
        let result = story::run(&mut fleet, &log_path).await;
        fleet.close().await;
        result?
    };
    print(&summary);
    Ok(())
}

/// Prints the story's results, step by step.
fn print(s: &Summary) {
    let messages: usize = s.seeded.values().map(|(n, _)| n).sum();
    let poison: usize = s.seeded.values().map(|(_, p)| p.len()).sum();
    println!("contract quickstart on {}: {}", s.backend, s.location);
    println!(
        "seeded {} tenant queues with {messages} messages ({poison} poison); injected drift: {}",
        s.seeded.len(),
        s.injected
            .iter()
            .filter(|(_, d)| **d != Drift::None)
            .map(|(t, d)| format!("{t} ({})", d.describe()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    println!("\n[1] start-up check: Guard::start checked every tenant");
    println!("{}", s.startup);

    println!("\n[2] batch gate: paused tenants wait, the others consume");
    for (tenant, outcome) in &s.round_startup {
        print_outcome(tenant, "open   ", outcome);
    }

    println!("\n[3] Remediation::SafeOnly");
    for audit in &s.safe_only.audits {
        println!(
            "  {:<20} applied, audit {}: {}",
            audit.tenant,
            &audit.audit_id[..8],
            audit.statements.join("; ")
        );
    }
    for (tenant, plan) in &s.safe_only.awaiting_approval {
        let hazards: Vec<&str> = plan.hazards().iter().map(|h| h.as_str()).collect();
        let statements: Vec<&str> = plan.statements().collect();
        let head = format!(
            "  {tenant:<20} awaits approval of plan {} [{}]",
            plan.short_hash(),
            hazards.join(", ")
        );
        if let [one] = statements.as_slice() {
            println!("{head}: {one}");
        } else {
            // A table rebuild is several statements: one per line.
            println!("{head}:");
            for statement in statements {
                println!("  {:<20}   {statement}", "");
            }
        }
    }
    for plan in &s.safe_only.plans {
        for refusal in &plan.refusals {
            println!("  {:<20} refused: {}", plan.tenant, refusal.reason);
        }
    }
    print_resumed(&s.round_startup, &s.round_safe);

    if !s.approvals.is_empty() {
        println!("\n[4] an operator approves each plan hash: Remediation::Approved(hash)");
    }
    for approval in &s.approvals {
        for audit in approval
            .run
            .audits
            .iter()
            .filter(|a| a.tenant == approval.tenant)
        {
            println!(
                "  {:<20} plan {} applied, audit {}",
                audit.tenant,
                approval.plan.short_hash(),
                &audit.audit_id[..8],
            );
        }
    }
    print_resumed(&s.round_safe, &s.round_approved);

    println!("\n[5] result: {}", s.final_report.summary());
    for pause in &s.final_pauses {
        let left = s.pending.get(&pause.tenant).copied().unwrap_or(0);
        println!(
            "  {} stays paused, {left} messages wait in its queue (nothing lost; the guard resumes it once it complies): {}",
            pause.tenant, pause.reason
        );
    }
    let processed: u64 = s.processed().values().sum();
    let valid = u64::try_from(messages - poison).unwrap_or(u64::MAX);
    let rest = if processed < valid {
        "; the rest wait in paused tenants"
    } else {
        ""
    };
    println!("  processed {processed} of {valid} valid messages{rest}");
    match &s.quarantined {
        Some(rows) => {
            println!("  quarantined {} poison messages:", rows.len());
            for row in rows {
                println!(
                    "    {} #{} {}: {}",
                    row.tenant, row.source_id, row.reason, row.error
                );
            }
        }
        None => println!(
            "  quarantine skipped: no quarantine store for {}; poison messages stay in the queue, unacked",
            s.backend
        ),
    }
    println!("  execution log (JSON): {}", s.log_path.display());
    if let Some(dir) = s.log_path.parent().filter(|_| s.backend == "SQLite") {
        println!(
            "  tenant files kept in {}",
            Path::new(dir).join("tenants").display()
        );
    }
}

/// The tenants the guard resumed (paused in `before`, open in `after`) and what they consumed.
fn print_resumed(before: &BTreeMap<String, Outcome>, after: &BTreeMap<String, Outcome>) {
    for (tenant, outcome) in after {
        if matches!(before.get(tenant), Some(Outcome::Paused { .. }))
            && matches!(outcome, Outcome::Consumed { .. })
        {
            print_outcome(tenant, "resumed", outcome);
        }
    }
}

fn print_outcome(tenant: &str, open: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Consumed {
            processed,
            quarantined,
            poison_left,
        } => {
            let mut line = format!("  {tenant:<20} {open} processed {processed}");
            if *quarantined > 0 {
                line.push_str(&format!(", quarantined {quarantined}"));
            }
            if *poison_left > 0 {
                line.push_str(&format!(", {poison_left} poison left in the queue"));
            }
            println!("{line}");
        }
        Outcome::Paused { reason, .. } => println!("  {tenant:<20} paused  {reason}"),
    }
}
