//! The consumer run (and killed) by `mysql_conservation`: the batch loop of
//! `pg_conservation_consumer.rs` on MySQL/MariaDB (a database per tenant), writing each tenant's
//! `processed` table (keyed by the source message id) in the transaction that acks, with
//! poison moved to the tenant's `contract_quarantine`, a `pause_log` row whenever it finds
//! a gate paused and a `consumer_errors` row for every rolled-back batch (both in the
//! control database).
//!
//! `conservation_consumer mysql <url> <tenant,tenant,...> <batch size> <workers> <control db>`
//!
//! Exits 0 once every queue is empty and no tenant was paused for 3 consecutive rounds;
//! exits 3 if a message would be processed twice (a duplicate key on `processed`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use contract_sqlx::control::ControlPlane;
use contract_sqlx::payload::PayloadContract;
use contract_sqlx::plan::Remediation;
use contract_sqlx::quarantine::{PayloadType, QueueQuarantine, QueueTable};
use contract_sqlx::remediation::ApplyOptions;
use contract_sqlx::{Contract, Gate, Guard, SchemaEpoch, TenantName, Tenants, model::Dialect};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::{AssertSqlSafe, Executor, MySql};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `ER_DUP_ENTRY`.
const DUP_ENTRY: u16 = 1062;

// The one `Message` of every conservation consumer (`message.rs`, loaded once).
use crate::broker_writer::Message;

/// The tenant's `processed` table; `note` is what the test drops and the guard re-adds.
#[derive(sqlx::FromRow, Contract)]
#[contract(table = "processed")]
#[allow(dead_code)]
struct Processed {
    #[contract(primary_key)]
    source_id: i64,
    user_id: i64,
    kind: String,
    #[contract(default = "''")]
    note: Option<String>,
}

struct Consumer {
    pool: MySqlPool,
    guard: Guard<MySql>,
    contract: PayloadContract<Message>,
    /// Each tenant's queue and quarantine (in the tenant database).
    sites: HashMap<TenantName, QueueQuarantine>,
    /// The control database, quoted.
    control: String,
    batch_size: i64,
}

enum Batch {
    Paused(String),
    Empty,
    Done,
}

impl Consumer {
    /// One batch: gate, claim, check, quarantine, handle, ack, commit.
    async fn batch(&self, tenant: &TenantName) -> Result<Batch, BoxError> {
        let permit = match self.guard.gate(tenant.as_str()) {
            Gate::Open(permit) => permit,
            Gate::Paused(why) => return Ok(Batch::Paused(why.reason.clone())),
        };
        let db = Dialect::MySql.quote(tenant.as_str())?;
        let mut tx = self.pool.begin().await?;
        let claimed: Vec<(i64, Vec<u8>)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT id, CAST(payload AS BINARY) FROM {db}.queue ORDER BY id LIMIT ?
             FOR UPDATE SKIP LOCKED"
        )))
        .bind(self.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if claimed.is_empty() {
            return Ok(Batch::Empty);
        }
        let (mut accepted, mut rejected) = (Vec::new(), Vec::new());
        for (id, raw) in &claimed {
            match self.contract.check(raw) {
                Ok(message) => accepted.push((*id, message)),
                Err(why) => rejected.push((*id, raw.as_slice(), why)),
            }
        }
        let poison: Vec<_> = rejected
            .iter()
            .map(|(i, raw, why)| (*i, *raw, why))
            .collect();
        let site = self.sites.get(tenant).ok_or("unknown tenant")?;
        site.quarantine(&mut *tx, &self.contract, &poison).await?;
        if !accepted.is_empty() {
            let rows = vec!["(?, ?, ?, 'ok')"; accepted.len()].join(", ");
            let insert = format!(
                "INSERT INTO {db}.processed (source_id, user_id, kind, note) VALUES {rows}"
            );
            let mut query = sqlx::query(AssertSqlSafe(insert));
            for (id, message) in &accepted {
                query = query
                    .bind(id)
                    .bind(message.user_id)
                    .bind(message.kind.as_str());
            }
            query.execute(&mut *tx).await?;
        }
        if !permit.is_current() {
            tx.rollback().await?; // paused meanwhile: release, nothing counted
            return Ok(Batch::Done);
        }
        // Acked one id at a time: a `DELETE … WHERE id IN (…)` over a batch may be run as a
        // scan that waits on the rows another worker claimed (and deadlocks with it).
        let ack = format!("DELETE FROM {db}.queue WHERE id = ?");
        for (id, _) in &accepted {
            sqlx::query(AssertSqlSafe(ack.as_str()))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Batch::Done)
    }

    /// Round-robin from `offset` until 3 quiet rounds and every queue empty.
    async fn work(&self, tenants: &[TenantName], offset: usize) -> Result<(), BoxError> {
        let (mut quiet_rounds, mut paused) = (0, vec![None; tenants.len()]);
        loop {
            let mut quiet = true;
            for k in 0..tenants.len() {
                let i = (k + offset) % tenants.len();
                let tenant = tenants[i].as_str();
                match self.batch(&tenants[i]).await {
                    Ok(Batch::Empty) => paused[i] = None,
                    Ok(Batch::Done) => (paused[i], quiet) = (None, false),
                    Ok(Batch::Paused(reason)) => {
                        quiet = false;
                        if paused[i].as_ref() != Some(&reason) {
                            eprintln!("{tenant}: paused: {reason}");
                            self.log("pause_log", tenant, None, &reason).await?;
                            paused[i] = Some(reason);
                        }
                    }
                    Err(e) => {
                        quiet = false;
                        let (code, number) = db_error(&*e).unzip();
                        eprintln!("{tenant}: batch rolled back ({code:?}): {e}");
                        if number == Some(DUP_ENTRY) {
                            std::process::exit(3); // processed twice
                        }
                        self.log("consumer_errors", tenant, code, &e.to_string())
                            .await?;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            quiet_rounds = if quiet { quiet_rounds + 1 } else { 0 };
            if quiet_rounds >= 3 && self.all_empty(tenants).await? {
                return Ok(());
            } else if quiet {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    async fn log(
        &self,
        table: &str,
        tenant: &str,
        code: Option<String>,
        text: &str,
    ) -> Result<(), BoxError> {
        let control = &self.control;
        let sql = match table {
            "pause_log" => {
                format!("INSERT INTO {control}.pause_log (tenant, reason) VALUES (?, ?)")
            }
            _ => format!(
                "INSERT INTO {control}.consumer_errors (tenant, message, code) VALUES (?, ?, ?)"
            ),
        };
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(tenant).bind(text);
        if table != "pause_log" {
            query = query.bind(code);
        }
        query.execute(&self.pool).await?;
        Ok(())
    }

    async fn all_empty(&self, tenants: &[TenantName]) -> Result<bool, BoxError> {
        for tenant in tenants {
            let db = Dialect::MySql.quote(tenant.as_str())?;
            let sql = format!("SELECT EXISTS (SELECT 1 FROM {db}.queue)");
            let any: bool = sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(&self.pool)
                .await?;
            if any {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The SQLSTATE and MySQL error number of the first database error in the chain.
fn db_error(mut e: &(dyn std::error::Error + 'static)) -> Option<(String, u16)> {
    loop {
        if let Some(db) = e
            .downcast_ref::<sqlx::Error>()
            .and_then(|s| s.as_database_error())
            .and_then(|db| db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        {
            return Some((db.code().unwrap_or("-").to_owned(), db.number()));
        }
        e = e.source()?;
    }
}

/// Runs the consumer; `args[0]` is the program, then this consumer's arguments.
pub async fn main(args: Vec<String>) -> Result<(), BoxError> {
    let [_, url, tenants, batch, workers, control] = args.as_slice() else {
        return Err("usage: conservation_consumer mysql <url> <tenant,...> <batch size> <workers> <control db>".into());
    };
    let workers: usize = workers.parse()?;
    let names: Vec<TenantName> =
        (tenants.split(',').map(TenantName::new)).collect::<Result<_, _>>()?;
    let epoch = SchemaEpoch::new();
    // READ COMMITTED, as a queue consumer on InnoDB should: no gap locks around the claimed
    // rows, so producers and the other workers are not held up by them.
    let options = MySqlPoolOptions::new()
        .max_connections(8)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .await
                    .map(drop)
            })
        });
    let pool = epoch.install(options).connect(url).await?;
    // MySQL cannot drop the column on 3 tenants in one transaction: a pass may see the
    // first drift alone and wait for the tenant's lock (held by the test's "other
    // replica") while the other two drift unseen. A short wait keeps passes going.
    let apply = ApplyOptions::default().with_advisory_lock_wait(Duration::from_secs(1));
    let guard = Guard::<MySql>::builder()
        .contract::<Processed>()
        .apply_options(apply)
        .tenants(Tenants::list(names.iter().map(|t| t.as_str().to_owned())))
        .remediation(Remediation::SafeOnly)
        .control_plane(ControlPlane::default().with_schema(control.clone()))
        .revalidate_every(Duration::from_millis(200))
        .epoch(epoch)
        .start(&pool)
        .await?;
    let _revalidation = guard.spawn();
    // The quarantine table lives in each tenant database: created per tenant.
    let mut sites = HashMap::new();
    for tenant in &names {
        let table = QueueTable::new("queue").with_payload("payload", PayloadType::Text);
        let site = QueueQuarantine::new(tenant.clone(), table);
        site.ensure_table(&pool).await?;
        sites.insert(tenant.clone(), site);
    }
    let consumer = Arc::new(Consumer {
        pool,
        guard,
        contract: PayloadContract::named("conservation-message").with_version("1"),
        sites,
        control: Dialect::MySql.quote(control)?,
        batch_size: batch.parse()?,
    });
    let names = Arc::new(names);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (consumer, names) = (Arc::clone(&consumer), Arc::clone(&names));
        let offset = w * names.len() / workers;
        tasks.push(tokio::spawn(
            async move { consumer.work(&names, offset).await },
        ));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}
