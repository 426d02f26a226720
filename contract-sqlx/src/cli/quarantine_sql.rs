//! Reading quarantine rows across tenants and replaying one, per backend: one table for
//! every tenant on PostgreSQL, one in each tenant database (MySQL) or file (SQLite).

use sqlx::Pool;

use super::args::{PayloadKind, QuarantineTable};
use super::connect::Db;
use super::error::CliError;
use crate::control::ControlPlane;
use crate::error::Error;
use crate::quarantine::table::Quoted;
use crate::quarantine::{Quarantine, QuarantineStore, QuarantinedMessage, QueueTable, Target};

const CONTEXT: &str = "reading the quarantine table";

/// The rows of `tenant` (or every tenant), or the one with `id`, by tenant then id.
pub(crate) async fn read(
    db: &Db,
    #[cfg_attr(not(feature = "sqlite"), allow(unused_variables))] plane: &ControlPlane,
    table: &QuarantineTable,
    tenant: Option<&str>,
    id: Option<i64>,
) -> Result<Vec<QuarantinedMessage>, CliError> {
    let rows = match db {
        #[cfg(feature = "postgres")]
        Db::Postgres(pool) => {
            let name = contract_core::Dialect::Postgres
                .quote_qualified(Some(&table.quarantine_schema), &table.quarantine_table)
                .map_err(Error::from)?;
            let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
                .bind(&name)
                .fetch_one(pool)
                .await
                .map_err(Error::db(CONTEXT, None))?;
            if exists.is_none() {
                return Ok(Vec::new());
            }
            let utc = |c: &str| {
                format!(
                    "to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS {c}"
                )
            };
            // language=SQL
            let sql = format!(
                "SELECT id, tenant, queue, source_id, payload::text AS payload, payload_raw, {}, attempts, reason, \
                 field_path, error, contract_name, contract_fingerprint, {}, {}, replay_count::int8 AS replay_count \
                 FROM {name} WHERE ($1::text IS NULL OR tenant = $1) AND ($2::int8 IS NULL OR id = $2) \
                 ORDER BY tenant, id",
                utc("enqueued_at"),
                utc("quarantined_at"),
                utc("replayed_at")
            );
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .bind(id)
                .fetch_all(pool)
                .await
                .map_err(Error::db(CONTEXT, tenant))?
        }
        #[cfg(feature = "mysql")]
        Db::MySql(pool) => {
            let databases: Vec<String> = sqlx::query_scalar(
                "SELECT CAST(TABLE_SCHEMA AS CHAR) FROM information_schema.TABLES \
                 WHERE TABLE_NAME = ? AND (? IS NULL OR TABLE_SCHEMA = ?) ORDER BY TABLE_SCHEMA",
            )
            .bind(&table.quarantine_table)
            .bind(tenant)
            .bind(tenant)
            .fetch_all(pool)
            .await
            .map_err(Error::db(CONTEXT, None))?;
            let utc = |c: &str| format!("DATE_FORMAT({c}, '%Y-%m-%dT%H:%i:%s.%fZ') AS {c}");
            let mut rows = Vec::new();
            for database in databases {
                let name = contract_core::Dialect::MySql
                    .quote_qualified(Some(&database), &table.quarantine_table)
                    .map_err(Error::from)?;
                // language=SQL
                let sql = format!(
                    "SELECT id, tenant, queue, source_id, CAST(payload AS CHAR) AS payload, payload_raw, {}, \
                     attempts, reason, field_path, error, contract_name, contract_fingerprint, {}, {}, \
                     CAST(replay_count AS SIGNED) AS replay_count FROM {name} WHERE (? IS NULL OR id = ?) ORDER BY id",
                    utc("enqueued_at"),
                    utc("quarantined_at"),
                    utc("replayed_at")
                );
                let read: Vec<QuarantinedMessage> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .bind(id)
                    .fetch_all(pool)
                    .await
                    .map_err(Error::db(CONTEXT, Some(&database)))?;
                rows.extend(read);
            }
            rows
        }
        #[cfg(feature = "sqlite")]
        Db::Sqlite(fleet) => {
            let mut rows = Vec::new();
            for (name, path) in super::files::tenant_files(fleet, plane, tenant).await? {
                let pool = super::files::open(&name, path.as_path()).await?;
                let read = sqlite_rows(&pool, &table.quarantine_table, id).await;
                pool.close().await;
                rows.extend(read.map_err(Error::db(CONTEXT, Some(&name)))?);
            }
            rows
        }
    };
    Ok(rows)
}

#[cfg(feature = "sqlite")]
async fn sqlite_rows(
    pool: &sqlx::SqlitePool,
    table: &str,
    id: Option<i64>,
) -> Result<Vec<QuarantinedMessage>, sqlx::Error> {
    let exists: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?")
            .bind(table)
            .fetch_one(pool)
            .await?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    let name = contract_core::Dialect::Sqlite
        .quote(table)
        .map_err(|e| sqlx::Error::InvalidArgument(e.to_string()))?;
    // language=SQL
    let sql = format!(
        "SELECT id, tenant, queue, source_id, payload, payload_raw, CAST(enqueued_at AS TEXT) AS enqueued_at, \
         attempts, reason, field_path, error, contract_name, contract_fingerprint, quarantined_at, replayed_at, \
         replay_count FROM {name} WHERE ?1 IS NULL OR id = ?1 ORDER BY id"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_all(pool)
        .await
}

/// Puts `message` back into `queue_table` of its tenant and marks it replayed, in one
/// transaction; `false` when the queue holds its id already, an error when another replay
/// put it back since it was read.
pub(crate) async fn replay(
    db: &Db,
    #[cfg_attr(not(feature = "sqlite"), allow(unused_variables))] plane: &ControlPlane,
    table: &QuarantineTable,
    message: &QuarantinedMessage,
    queue_table: &str,
    payload_type: Option<PayloadKind>,
) -> Result<bool, CliError> {
    let tenant = contract_core::TenantName::new(&message.tenant).map_err(Error::from)?;
    let mut queue = QueueTable::new(queue_table);
    queue.payload_type = match (payload_type, db) {
        (Some(kind), _) => kind.into(),
        #[cfg(feature = "postgres")]
        (None, Db::Postgres(pool)) => pg_payload_type(pool, &tenant, &queue).await?,
        #[allow(unreachable_patterns)] // only PostgreSQL casts the payload
        (None, _) => crate::quarantine::PayloadType::default(),
    };
    let quarantine = Quarantine::default()
        .with_schema(&table.quarantine_schema)
        .with_table(&table.quarantine_table);
    let target = |dialect| -> Result<Target<'_>, CliError> {
        Ok(Target {
            tenant: tenant.as_str(),
            queue: &message.queue,
            payload_type: queue.payload_type,
            quarantine_name: &quarantine.table,
            sql: Quoted::new(dialect, &tenant, &queue, &quarantine)?,
        })
    };
    let context = "replaying a quarantined message";
    let done = match db {
        #[cfg(feature = "postgres")]
        Db::Postgres(pool) => {
            restore(pool, &target(contract_core::Dialect::Postgres)?, message.id).await
        }
        #[cfg(feature = "mysql")]
        Db::MySql(pool) => restore(pool, &target(contract_core::Dialect::MySql)?, message.id).await,
        #[cfg(feature = "sqlite")]
        Db::Sqlite(fleet) => {
            let files = super::files::tenant_files(fleet, plane, Some(tenant.as_str())).await?;
            let Some(path) = files.get(tenant.as_str()) else {
                return Err(CliError::NotFound(format!("no file for tenant {tenant}")));
            };
            let pool = super::files::open(tenant.as_str(), path).await?;
            let done = restore(&pool, &target(contract_core::Dialect::Sqlite)?, message.id).await;
            pool.close().await;
            done
        }
    };
    match done.map_err(Error::db(context, Some(tenant.as_str())))? {
        Some(back) => Ok(back),
        None => Err(CliError::NotFound(format!(
            "quarantined message {} of tenant {tenant} was replayed meanwhile by another replay; nothing was put back",
            message.id
        ))),
    }
}

/// The type of `queue`'s payload column in `tenant`'s schema, from the catalog: a
/// message goes back as the column keeps it (through `jsonb` a `text` payload was
/// normalised: keys reordered, duplicates dropped). `jsonb` when the column is not found
/// (the insert then says what is missing).
#[cfg(feature = "postgres")]
async fn pg_payload_type(
    pool: &sqlx::PgPool,
    tenant: &contract_core::TenantName,
    queue: &QueueTable,
) -> Result<crate::quarantine::PayloadType, CliError> {
    use crate::quarantine::PayloadType;
    let table = contract_core::Dialect::Postgres
        .quote_qualified(Some(tenant.as_str()), &queue.table)
        .map_err(Error::from)?;
    // A domain is read as its base type, through any number of domains (one over `jsonb`
    // takes the `jsonb` cast). A domain cannot be defined over itself, so the walk ends.
    // language=SQL
    let found: Option<String> = sqlx::query_scalar(
        "WITH RECURSIVE chain (oid, typtype, typbasetype) AS (
             SELECT t.oid, t.typtype, t.typbasetype
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
             WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND a.attnum > 0
               AND NOT a.attisdropped
             UNION ALL
             SELECT t.oid, t.typtype, t.typbasetype
             FROM chain c JOIN pg_type t ON t.oid = c.typbasetype
             WHERE c.typtype = 'd')
         SELECT format_type(oid, NULL) FROM chain WHERE typtype <> 'd'",
    )
    .bind(&table)
    .bind(&queue.payload)
    .fetch_optional(pool)
    .await
    .map_err(Error::db(
        "reading the queue's payload column type",
        Some(tenant.as_str()),
    ))?;
    match found.as_deref() {
        None | Some("jsonb") => Ok(PayloadType::Jsonb),
        Some("json") => Ok(PayloadType::Json),
        Some("text" | "character varying" | "character") => Ok(PayloadType::Text),
        Some(other) => Err(CliError::NotFound(format!(
            "the payload column {table}.{} is {other}: say which cast the payload goes through with \
             --payload-type jsonb|json|text (the one the column takes), or replay with the consumer's \
             contract (`QueueQuarantine::replay`)",
            queue.payload
        ))),
    }
}

#[allow(dead_code)] // without a backend feature nothing calls it
async fn restore<DB: QuarantineStore>(
    pool: &Pool<DB>,
    target: &Target<'_>,
    id: i64,
) -> Result<Option<bool>, sqlx::Error> {
    let mut tx = DB::begin_write(pool).await?;
    // The row (it alone) locked while it is waiting, as the library's replay locks its
    // page: a replay racing this one waits, then finds it replayed (`None`).
    let page = DB::waiting_page(&mut tx, target, id.saturating_sub(1), id, 1).await?;
    let Some((_, _, raw)) = page.first() else {
        tx.commit().await?;
        return Ok(None);
    };
    let utf8 = std::str::from_utf8(raw).is_ok();
    let back = DB::restore(&mut tx, target, id, utf8).await?;
    if back {
        DB::mark_replayed(&mut tx, target, &[id]).await?;
    }
    tx.commit().await?;
    Ok(Some(back))
}
