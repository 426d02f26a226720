//! The consumer run (and killed) by `pg_conservation`: the batch loop of
//! `examples/pg_consumer.rs`, writing each tenant's `processed` table (unique on the
//! source message id) in the transaction that acks, with a `pause_log` row whenever it
//! finds a gate paused and a `consumer_errors` row for every rolled-back batch.
//!
//! `conservation_consumer pg <database url> <tenant,tenant,...> <batch size> [workers]
//! [json tenant,...]` (the tenants whose queue payload column is `json` rather than `text`)
//!
//! Exits 0 once every queue is empty and no tenant was paused for 3 consecutive rounds;
//! exits 3 if a message would be processed twice (a unique violation on `processed`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use contract_sqlx::payload::PayloadContract;
use contract_sqlx::plan::Remediation;
use contract_sqlx::quarantine::{PayloadType, QueueQuarantine, QueueTable};
use contract_sqlx::{Contract, Gate, Guard, SchemaEpoch, TenantName, Tenants, model::Dialect};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Postgres};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    pool: PgPool,
    guard: Guard<Postgres>,
    contract: PayloadContract<Message>,
    /// Each tenant's queue and quarantine.
    sites: HashMap<TenantName, QueueQuarantine>,
    batch_size: i64,
}

enum Batch {
    Paused(String),
    Empty,
    Done,
}

impl Consumer {
    /// One batch, as in the example (the handler is one set-based insert).
    async fn batch(&self, tenant: &TenantName) -> Result<Batch, BoxError> {
        let permit = match self.guard.gate(tenant.as_str()) {
            Gate::Open(permit) => permit,
            Gate::Paused(why) => return Ok(Batch::Paused(why.reason.clone())),
        };
        let schema = Dialect::Postgres.quote(tenant.as_str())?;
        let mut tx = self.pool.begin().await?;
        let claimed: Vec<(i64, String)> = sqlx::query_as(AssertSqlSafe(format!(
            "WITH c AS (SELECT id FROM {schema}.queue ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
             SELECT q.id, q.payload::text FROM {schema}.queue q JOIN c USING (id) ORDER BY q.id"
        )))
        .bind(self.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if claimed.is_empty() {
            return Ok(Batch::Empty);
        }
        let (mut accepted, mut rejected) = (Vec::new(), Vec::new());
        for (id, raw) in &claimed {
            match self.contract.check(raw.as_bytes()) {
                Ok(message) => accepted.push((*id, message)),
                Err(why) => rejected.push((*id, raw.as_bytes(), why)),
            }
        }
        let poison: Vec<_> = rejected
            .iter()
            .map(|(i, raw, why)| (*i, *raw, why))
            .collect();
        let site = self.sites.get(tenant).ok_or("unknown tenant")?;
        site.quarantine(&mut *tx, &self.contract, &poison).await?;
        let ids: Vec<i64> = accepted.iter().map(|(id, _)| *id).collect();
        let users: Vec<i64> = accepted.iter().map(|(_, m)| m.user_id).collect();
        let kinds: Vec<&str> = accepted.iter().map(|(_, m)| m.kind.as_str()).collect();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {schema}.processed (source_id, user_id, kind, note)
             SELECT *, 'ok' FROM unnest($1::int8[], $2::int8[], $3::text[])"
        )))
        .bind(&ids)
        .bind(&users)
        .bind(&kinds)
        .execute(&mut *tx)
        .await?;
        if !permit.is_current() {
            tx.rollback().await?; // paused meanwhile: release, nothing counted
            return Ok(Batch::Done);
        }
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {schema}.queue WHERE id = ANY($1)"
        )))
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
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
                        let code = sqlstate(&*e);
                        eprintln!("{tenant}: batch rolled back ({code:?}): {e}");
                        if code.as_deref() == Some("23505") {
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
        let sql = match table {
            "pause_log" => "INSERT INTO public.pause_log (tenant, reason) VALUES ($1, $3)",
            _ => "INSERT INTO public.consumer_errors (tenant, code, message) VALUES ($1, $2, $3)",
        };
        sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(code)
            .bind(text)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn all_empty(&self, tenants: &[TenantName]) -> Result<bool, BoxError> {
        for tenant in tenants {
            let schema = Dialect::Postgres.quote(tenant.as_str())?;
            let sql = format!("SELECT EXISTS (SELECT 1 FROM {schema}.queue)");
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

/// The SQLSTATE of the first database error in the chain.
fn sqlstate(mut e: &(dyn std::error::Error + 'static)) -> Option<String> {
    loop {
        if let Some(db) = e
            .downcast_ref::<sqlx::Error>()
            .and_then(|s| s.as_database_error())
        {
            return db.code().map(|c| c.into_owned());
        }
        e = e.source()?;
    }
}

/// Runs the consumer; `args[0]` is the program, then this consumer's arguments.
pub async fn main(args: Vec<String>) -> Result<(), BoxError> {
    let [_, url, tenants, batch, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: conservation_consumer pg <url> <tenant,...> <batch size> [workers] [json tenant,...]".into(),
        );
    };
    let workers: usize = rest.first().map_or(Ok(2), |w| w.parse())?;
    let json: Vec<&str> = rest.get(1).map_or(Vec::new(), |t| t.split(',').collect());
    let names: Vec<TenantName> =
        (tenants.split(',').map(TenantName::new)).collect::<Result<_, _>>()?;
    let epoch = SchemaEpoch::new();
    let pool = epoch
        .install(PgPoolOptions::new().max_connections(8))
        .connect(url)
        .await?;
    let guard = Guard::<Postgres>::builder()
        .contract::<Processed>()
        .tenants(Tenants::list(names.iter().map(|t| t.as_str().to_owned())))
        .remediation(Remediation::SafeOnly)
        .revalidate_every(Duration::from_millis(200))
        .epoch(epoch)
        .start(&pool)
        .await?;
    let _revalidation = guard.spawn();
    let _ddl = guard.listen_for_ddl().await?;
    // One quarantine table (`public.contract_quarantine`) for every tenant on PostgreSQL.
    let sites: HashMap<TenantName, QueueQuarantine> = names
        .iter()
        .map(|tenant| {
            let ty = match json.contains(&tenant.as_str()) {
                true => PayloadType::Json,
                false => PayloadType::Text,
            };
            let table = QueueTable::new("queue").with_payload("payload", ty);
            (tenant.clone(), QueueQuarantine::new(tenant.clone(), table))
        })
        .collect();
    if let Some(site) = sites.values().next() {
        site.ensure_table(&pool).await?;
    }
    let consumer = Arc::new(Consumer {
        pool,
        guard,
        contract: PayloadContract::named("conservation-message").with_version("1"),
        sites,
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
