//! Fleet remediation benchmark: a remediation run over the whole fleet against the same
//! DDL run raw (one transaction per tenant over one connection), measured in one run.
//!
//! ```text
//! cargo bench -p contract-sqlx --bench remediate -- --tenants 1000
//! ```
//!
//! Needs PostgreSQL at `CONTRACT_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). It creates a uniquely named scratch
//! database with `--tenants N` schemas (5 contracted tables each, `benches/pgfleet`), and
//! drops it again, also when a step fails. Two scenarios, `--rounds R` (3) timed rounds
//! each after one warm-up round, the remediation and the raw loop alternating first:
//!
//! - **SafeOnly**: every tenant's `accounts` lacks the nullable `email` column;
//!   `remediate(…, Remediation::SafeOnly)` (check, plan, apply under each tenant's lock
//!   with its audit row, verify) against the plans' own statements run raw. The raw
//!   statements are also run over as many connections as the remediation applies with
//!   (its parallelism): the least its apply could take on this machine. Its check and
//!   verify added to that give the floor of a run that checks, applies and verifies.
//! - **Approved**: every tenant's `orders.total_cents` is `int4` under an `i64` field (a
//!   table rewrite, which waits for approval); one `Remediation::ApprovedShape` run over
//!   the fleet against the same statements run raw.
//!
//! `--latency-us L` sends every timed connection through a relay that delays each chunk by
//! `L` µs each way (`benches/pgfleet/latency.rs`), as a server across a network would: a
//! round trip then costs about `2L` more, and a remediation that needs more of them per
//! tenant than the raw loop falls behind it.
//!
//! Between timed runs the drift is put back untimed. The SafeOnly runs are also split into
//! their check and plan, apply and verify, from each run's execution log. The last stdout line is one JSON
//! object: `{"bench":"remediate","tenants":…,"safe_only_vs_raw":…,"approved_vs_raw":…,…}`
//! (ratios of medians).

mod pgfleet;

use std::time::{Duration, Instant};

use contract_sqlx::plan::{Remediation, TenantPlan};
use contract_sqlx::remediation::ApplyOptions;
use contract_sqlx::report::LogAction;
use contract_sqlx::{TenantDirectory, Tenants, remediate};
use pgfleet::{Result, Timing, ms};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgPool};

fn main() {
    let mut args = [
        ("--tenants", 1000),
        ("--rounds", 3),
        ("--parallelism", 0),
        ("--latency-us", 0),
    ];
    if let Err(e) = pgfleet::parse_args(
        "remediate [--tenants N] [--rounds R] [--parallelism P] [--latency-us L]",
        &mut args,
    ) {
        eprintln!("remediate bench: {e}");
        std::process::exit(2);
    }
    let [(_, tenants), (_, rounds), (_, parallelism), (_, latency_us)] = args;
    let latency = Duration::from_micros(u64::try_from(latency_us).unwrap_or(u64::MAX));
    pgfleet::run_main(
        "remediate",
        pgfleet::with_scratch_db("contract_bench_remediate", move |scratch| {
            run(scratch, tenants, rounds, parallelism, latency)
        }),
    );
}

fn drop_email(sql: &mut String, schema: &str) {
    sql.push_str(&format!(
        "ALTER TABLE {schema}.accounts DROP COLUMN IF EXISTS email;\n"
    ));
}

fn narrow_total(sql: &mut String, schema: &str) {
    sql.push_str(&format!(
        "ALTER TABLE {schema}.orders ALTER COLUMN total_cents TYPE int4;\n"
    ));
}

async fn run(
    scratch: PgConnectOptions,
    n: usize,
    rounds: usize,
    parallelism: usize,
    latency: Duration,
) -> Result<()> {
    let schemas = pgfleet::create_fleet(&scratch, n, drop_email).await?;
    // Everything timed goes through the relay when a latency is asked for.
    let scratch = if latency.is_zero() {
        scratch
    } else {
        pgfleet::latency::relay(&scratch, latency)?
    };
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(scratch.clone())
        .await?;
    let raw_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(scratch.clone())
        .await?;
    let contracts = pgfleet::contracts();
    let directory = TenantDirectory::new()
        .discover(&pool, &Tenants::schemas_like("tenant_%"))
        .await?;
    if directory.tenants().len() != n {
        return Err(format!(
            "discovered {} tenants, created {n}",
            directory.tenants().len()
        )
        .into());
    }
    let mut options = ApplyOptions::default();
    if parallelism > 0 {
        options.parallelism = parallelism;
    }
    eprintln!("remediation parallelism {}", options.parallelism);
    let parallel_pool = PgPoolOptions::new()
        .max_connections(u32::try_from(options.parallelism).unwrap_or(u32::MAX))
        .connect_with(scratch)
        .await?;

    // The plans (and so the raw statements) are the same every round: make them once.
    let plans_of = async |directory: &TenantDirectory<sqlx::Postgres>| -> Result<Vec<TenantPlan>> {
        let dry = remediate(directory, &contracts, Remediation::DryRun)
            .run()
            .await?;
        if dry.plans.len() != n {
            return Err(format!("{} plans for {n} drifted tenants", dry.plans.len()).into());
        }
        Ok(dry.plans)
    };

    // --- SafeOnly: a missing nullable column in every tenant ------------------------------
    let safe_plans = plans_of(&directory).await?;
    let safe_raw: Vec<Vec<String>> = safe_plans.iter().map(raw_statements).collect();
    // Remediation, raw over one connection, raw over `parallelism`: the order rotates.
    let mut safe_samples: [Vec<Duration>; 3] = Default::default();
    let mut safe_parts: Vec<[Duration; 3]> = Vec::new();
    for round in 0..=rounds {
        for turn in 0..3 {
            let variant = (round + turn) % 3;
            pgfleet::for_each_batch(&pool, &schemas, 100, drop_email).await?;
            let elapsed = match variant {
                0 => {
                    let t = Instant::now();
                    let run = remediate(&directory, &contracts, Remediation::SafeOnly)
                        .options(options.clone())
                        .run()
                        .await?;
                    let elapsed = t.elapsed();
                    expect_all_applied(&run, n)?;
                    if round > 0 {
                        safe_parts.push(parts(&run, elapsed));
                    }
                    elapsed
                }
                1 => raw_loop(&raw_pool, &safe_raw).await?,
                _ => raw_parallel(&parallel_pool, &safe_raw, options.parallelism).await?,
            };
            if round > 0 {
                safe_samples[variant].push(elapsed);
            }
        }
    }
    let [safe, safe_raw_samples, safe_parallel_samples] = safe_samples;

    // --- Approved: an int4 → int8 rewrite in every tenant, one approval of its shape -----
    pgfleet::for_each_batch(&pool, &schemas, 100, narrow_total).await?;
    let approved_plans = plans_of(&directory).await?;
    let shape = approved_plans[0].shape.clone();
    if approved_plans
        .iter()
        .any(|p| p.shape != shape || !p.needs_approval())
    {
        return Err("the int4 → int8 plans do not share one shape awaiting approval".into());
    }
    let approved_raw: Vec<Vec<String>> = approved_plans.iter().map(raw_statements).collect();
    let (mut approved, mut approved_raw_samples) = (Vec::new(), Vec::new());
    for round in 0..=rounds {
        for first in [round % 2 == 0, round % 2 != 0] {
            pgfleet::for_each_batch(&pool, &schemas, 100, narrow_total).await?;
            let elapsed = if first {
                let t = Instant::now();
                let run = remediate(
                    &directory,
                    &contracts,
                    Remediation::ApprovedShape(shape.clone()),
                )
                .options(options.clone())
                .run()
                .await?;
                let elapsed = t.elapsed();
                expect_all_applied(&run, n)?;
                (true, elapsed)
            } else {
                (false, raw_loop(&raw_pool, &approved_raw).await?)
            };
            if round > 0 {
                if elapsed.0 {
                    &mut approved
                } else {
                    &mut approved_raw_samples
                }
                .push(elapsed.1);
            }
        }
    }
    pool.close().await;
    raw_pool.close().await;
    parallel_pool.close().await;

    let (safe, safe_raw_t) = (Timing::of(&safe), Timing::of(&safe_raw_samples));
    let (approved, approved_raw_t) = (Timing::of(&approved), Timing::of(&approved_raw_samples));
    println!();
    println!(
        "remediation over {n} tenants (parallelism {}, +{} us each way), 1 warm-up + {rounds} rounds",
        options.parallelism,
        latency.as_micros()
    );
    println!(
        "{:<48} {:>10} {:>10} {:>10}  runs",
        "variant", "min ms", "median ms", "max ms"
    );
    safe.print("SafeOnly: remediate (missing nullable column)", rounds);
    safe_raw_t.print("raw: same DDL, 1 tx per tenant, 1 connection", rounds);
    let safe_parallel = Timing::of(&safe_parallel_samples);
    safe_parallel.print(
        &format!("raw: same DDL, {} connections", options.parallelism),
        rounds,
    );
    let mut part_medians = [Duration::ZERO; 3];
    for (i, part) in ["check and plan", "apply", "verify"].iter().enumerate() {
        let samples: Vec<Duration> = safe_parts.iter().map(|p| p[i]).collect();
        let timing = Timing::of(&samples);
        timing.print(&format!("  SafeOnly's {part} (from its log)"), rounds);
        part_medians[i] = timing.median;
    }
    // What a run that checks, applies and verifies cannot go below: its own check and
    // verify, and the DDL alone at its parallelism.
    let floor = part_medians[0] + safe_parallel.median + part_medians[2];
    approved.print("ApprovedShape: remediate (int4 -> int8)", rounds);
    approved_raw_t.print("raw: same DDL, 1 tx per tenant, 1 connection", rounds);
    let ratio = |a: Timing, b: Timing| ms(a.median) / ms(b.median);
    let range = |a: Timing, b: Timing| (ms(a.min) / ms(b.max), ms(a.max) / ms(b.min));
    let (safe_ratio, approved_ratio) = (ratio(safe, safe_raw_t), ratio(approved, approved_raw_t));
    let floor_ratio = ms(floor) / ms(safe_raw_t.median);
    println!();
    println!(
        "SafeOnly's floor (its check + the DDL over {} connections + its verify): {:.1} ms, \
         {floor_ratio:.2} x raw; its apply is {:.2} x the DDL over {0} connections",
        options.parallelism,
        ms(floor),
        ms(part_medians[1]) / ms(safe_parallel.median)
    );
    println!(
        "safe_only/raw {safe_ratio:.2} (extremes {:.2}..{:.2}), approved/raw {approved_ratio:.2} \
         (extremes {:.2}..{:.2}); target <= 1.3",
        range(safe, safe_raw_t).0,
        range(safe, safe_raw_t).1,
        range(approved, approved_raw_t).0,
        range(approved, approved_raw_t).1
    );
    println!(
        "{{\"bench\":\"remediate\",\"tenants\":{n},\"latency_us\":{},\"safe_only_vs_raw\":{safe_ratio:.2},\"approved_vs_raw\":{approved_ratio:.2},\"safe_only_raw_ms\":{:.1},\"safe_only_raw_parallel_ms\":{:.1},\"safe_only_floor_vs_raw\":{floor_ratio:.2}}}",
        latency.as_micros(),
        ms(safe_raw_t.median),
        ms(safe_parallel.median)
    );
    Ok(())
}

/// A run's check and plan, apply and verify times: the first and last from its execution
/// log, the apply the rest of `total`.
fn parts(run: &contract_sqlx::remediation::RemediationRun, total: Duration) -> [Duration; 3] {
    let (mut check, mut verify) = (0, 0);
    for entry in &run.log.steps {
        match entry.action {
            LogAction::Introspect { duration_ms, .. } => check = duration_ms,
            LogAction::Verify { duration_ms, .. } => verify = duration_ms,
            _ => {}
        }
    }
    let (check, verify) = (Duration::from_millis(check), Duration::from_millis(verify));
    [check, total.saturating_sub(check + verify), verify]
}

/// The statements a plan runs, as the raw loop sends them.
fn raw_statements(plan: &TenantPlan) -> Vec<String> {
    plan.statements().map(str::to_owned).collect()
}

/// Runs each tenant's statements in its own transaction, tenant after tenant, over one
/// connection: the floor of a remediation.
async fn raw_loop(pool: &PgPool, per_tenant: &[Vec<String>]) -> Result<Duration> {
    let mut conn = pool.acquire().await?;
    let t = Instant::now();
    for statements in per_tenant {
        let mut tx = conn.begin().await?;
        for statement in statements {
            sqlx::raw_sql(AssertSqlSafe(statement.clone()))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    Ok(t.elapsed())
}

/// The same as [`raw_loop`], with up to `parallelism` tenants at a time, each over its own
/// connection from `pool`: the least the remediation's apply could take.
async fn raw_parallel(
    pool: &PgPool,
    per_tenant: &[Vec<String>],
    parallelism: usize,
) -> Result<Duration> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let worker = async || -> Result<(), sqlx::Error> {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(statements) = per_tenant.get(i) else {
                return Ok(());
            };
            let mut tx = pool.begin().await?;
            for statement in statements {
                sqlx::raw_sql(AssertSqlSafe(statement.clone()))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
    };
    let t = Instant::now();
    futures_util::future::try_join_all((0..parallelism).map(|_| worker())).await?;
    Ok(t.elapsed())
}

fn expect_all_applied(run: &contract_sqlx::remediation::RemediationRun, n: usize) -> Result<()> {
    let compliant = run.after.tenants_with("compliant").count();
    if run.audits.len() != n || !run.failed.is_empty() || compliant != n {
        return Err(format!(
            "expected {n} tenants applied and compliant: {} audits, {} failed ({}), {compliant} compliant",
            run.audits.len(),
            run.failed.len(),
            run.failed.first().map(|f| format!("{}: {}", f.tenant, f.error)).unwrap_or_default()
        )
        .into());
    }
    Ok(())
}
