//! What the broker conservation consumers share (included with `#[path]`): the message
//! contract, the tenant's `processed` table, the idempotent writer and the guard, so that
//! `rabbitmq` and `nats` consumers of `conservation_consumer` differ only in the
//! broker they read (`nats_conservation` runs a consumer in-process with them too).
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use contract_sqlx::broker::{Accepted, Handler, HandlerError};
use contract_sqlx::guard::BacklogSource;
use contract_sqlx::payload::PayloadContract;
use contract_sqlx::plan::Remediation;
use contract_sqlx::remediation::ApplyOptions;
use contract_sqlx::{Contract, Guard, SchemaEpoch, Tenants, model::Dialect};
use futures_util::future::BoxFuture;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Postgres};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[path = "message.rs"]
mod message;
pub use message::Message;

/// The tenant's `processed` table; `note` is what the test drops and the guard re-adds.
#[derive(sqlx::FromRow, Contract)]
#[contract(table = "processed")]
#[allow(dead_code)]
struct Processed {
    #[contract(primary_key)]
    message_id: String,
    user_id: i64,
    kind: String,
    #[contract(default = "''")]
    note: Option<String>,
}

/// The payload contract the tests expect in every dead letter.
pub fn contract() -> PayloadContract<Message> {
    PayloadContract::named("conservation-message").with_version("1")
}

/// One set-based insert per batch, skipping message ids written before, committed before
/// the consumer acknowledges.
pub struct Writer {
    pool: PgPool,
}

impl Handler<Message> for Writer {
    fn handle<'a>(
        &'a self,
        tenant: &'a str,
        batch: &'a [Accepted<Message>],
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let schema = Dialect::Postgres.quote(tenant)?;
            let ids: Vec<&str> = batch.iter().map(|m| m.message_id.as_str()).collect();
            let users: Vec<i64> = batch.iter().map(|m| m.value.user_id).collect();
            let kinds: Vec<&str> = batch.iter().map(|m| m.value.kind.as_str()).collect();
            let mut tx = self.pool.begin().await?;
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {schema}.processed (message_id, user_id, kind, note)
                 SELECT *, 'ok' FROM unnest($1::text[], $2::int8[], $3::text[])
                 ON CONFLICT (message_id) DO NOTHING"
            )))
            .bind(&ids)
            .bind(&users)
            .bind(&kinds)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

/// The guard's revalidation and DDL-listener tasks.
pub type Tasks = (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>);

/// The started guard over `tenants` (SafeOnly, waiting 1 s for another replica's
/// remediation, revalidating every 200 ms and on DDL, measuring `backlog`, logging to
/// `log`) and the writer on its pool. The background
/// tasks run as long as the returned handles live.
pub async fn guard(
    url: &str,
    tenants: &[String],
    backlog: impl BacklogSource<Postgres>,
    log: &str,
) -> Result<(Arc<Guard<Postgres>>, Arc<Writer>, Tasks), BoxError> {
    let epoch = SchemaEpoch::new();
    let pool = epoch
        .install(PgPoolOptions::new().max_connections(8))
        .connect(url)
        .await?;
    let guard = Guard::<Postgres>::builder()
        .contract::<Processed>()
        .tenants(Tenants::list(tenants.to_vec()))
        .remediation(Remediation::SafeOnly)
        // The test's "other replica" holds the drifted tenants' advisory locks until their
        // pauses are persisted: waiting the default minute for them only delays that.
        .apply_options(ApplyOptions::default().with_advisory_lock_wait(Duration::from_secs(1)))
        .revalidate_every(Duration::from_millis(200))
        .backlog(backlog)
        .execution_log_file(log)
        .epoch(epoch)
        .start(&pool)
        .await?;
    let revalidation = guard.spawn();
    let ddl = guard.listen_for_ddl().await?;
    Ok((
        Arc::new(guard),
        Arc::new(Writer { pool }),
        (revalidation, ddl),
    ))
}
