//! Quickstart: a fleet of tenant queues, drift in some tenants, and the whole story —
//! start-up check, fleet report, batch gate, `SafeOnly` remediation, approval of a plan
//! hash, quarantine of poison messages, and the JSON execution log.
//!
//! ```text
//! cargo run --example quickstart                                          # SQLite files, no server
//! cargo run --example quickstart -- --url postgres://postgres@127.0.0.1/postgres
//! cargo run --example quickstart -- --url mysql://root@127.0.0.1/test
//! ```
//!
//! A server is only used when named with `--url`; an exported `DATABASE_URL` is ignored
//! (with a note). On a server the tenants are scratch schemas (PostgreSQL) or databases
//! (MySQL) with a unique prefix, dropped at the end; nothing is created before the server
//! answered. The story itself is in `quickstart/story.rs`,
//! written once for every backend; every line printed here comes from its results.

#[path = "quickstart/mod.rs"]
#[allow(dead_code)] // shared with tests/quickstart.rs, which reads more than is printed
mod quickstart;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use quickstart::args::{self, Command, Target};
use quickstart::mysql::MySqlFleet;
use quickstart::postgres::PgFleet;
use quickstart::sqlite::SqliteFleet;
use quickstart::story::{self, BoxError, Drift, Outcome, Summary};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let env_url = std::env::var("DATABASE_URL").ok();
    let target = match args::parse(std::env::args().skip(1), env_url.as_deref()) {
        Ok(Command::Help) => return println!("{}", args::USAGE),
        Ok(Command::Run { target, note }) => {
            if let Some(note) = note {
                eprintln!("note: {note}");
            }
            target
        }
        Err(message) => {
            eprintln!("quickstart: {message}");
            std::process::exit(2);
        }
    };
    if let Err(error) = run(target).await {
        eprintln!("quickstart: {error}");
        std::process::exit(1);
    }
}

async fn run(target: Target) -> Result<(), BoxError> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos();
    let prefix = format!("qs_{:06x}", (nanos ^ std::process::id()) & 0xff_ffff);
    // Created only once the fleet exists: a server that does not answer leaves nothing.
    let work = std::env::temp_dir().join(format!("contract-quickstart-{prefix}"));
    let log_path = work.join("execution-log.json");
    let unreachable = |url: &str, e: BoxError| -> BoxError {
        format!("cannot set up the fleet on {url}: {e}; check that the server is up and the URL is right").into()
    };

    let summary = match target {
        Target::Postgres(url) => {
            let mut fleet = PgFleet::create(&url, &prefix)
                .await
                .map_err(|e| unreachable(&url, e))?;
            std::fs::create_dir_all(&work)?;
            let result = story::run(&mut fleet, &log_path).await;
            fleet.drop_all().await?; // even when the story failed
            result?
        }
        Target::MySql(url) => {
            let mut fleet = MySqlFleet::create(&url, &prefix)
                .await
                .map_err(|e| unreachable(&url, e))?;
            std::fs::create_dir_all(&work)?;
            let result = story::run(&mut fleet, &log_path).await;
            fleet.drop_all().await?;
            result?
        }
        Target::Sqlite => {
            let mut fleet = SqliteFleet::create(&work).await?;
            let result = story::run(&mut fleet, &log_path).await;
            fleet.close().await;
            result?
        }
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
