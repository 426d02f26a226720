//! Quarantine on SQLite: the table lives in each tenant file; moves are row by row inside
//! one savepoint (SQLite has no `unnest`, and statements are in-process calls).

use contract_core::{Dialect, TenantName};
use sqlx::{AssertSqlSafe, Connection, SqlSafeStr, Sqlite, SqliteConnection, SqlitePool};

use crate::error::{Error, Result};
use crate::payload::Rejection;
use crate::quarantine::table::{Quoted, quarantine_table, time_index};
use crate::quarantine::{
    Quarantine, QuarantineStore, QuarantinedMessage, QueueTable, Site, json_text,
};

/// RFC 3339 UTC now, with milliseconds.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

impl QuarantineStore for Sqlite {
    async fn create_table(pool: &SqlitePool, quarantine: &Quarantine) -> Result<()> {
        let table = quarantine_table(Dialect::Sqlite, quarantine)?;
        let index = time_index(Dialect::Sqlite, quarantine)?;
        // `enqueued_at` has no declared type: the queue's value is kept as it is.
        // language=SQL
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id INTEGER PRIMARY KEY,
                tenant TEXT NOT NULL,
                queue TEXT NOT NULL,
                source_id INTEGER NOT NULL,
                payload TEXT,
                payload_raw BLOB NOT NULL,
                enqueued_at,
                attempts INTEGER NOT NULL DEFAULT 0,
                reason TEXT NOT NULL,
                field_path TEXT,
                error TEXT NOT NULL,
                contract_name TEXT NOT NULL,
                contract_fingerprint TEXT NOT NULL,
                quarantined_at TEXT NOT NULL DEFAULT ({NOW}),
                replayed_at TEXT,
                replay_count INTEGER NOT NULL DEFAULT 0,
                UNIQUE (tenant, queue, source_id));
             CREATE INDEX IF NOT EXISTS {index} ON {table} (tenant, queue, quarantined_at);"
        );
        let context = "creating the quarantine table in the tenant file";
        // One transaction: SQLite's write lock serialises racing creators.
        let mut tx = pool.begin().await.map_err(Error::db(context, None))?;
        sqlx::raw_sql(AssertSqlSafe(ddl))
            .execute(&mut *tx)
            .await
            .map_err(Error::db(context, None))?;
        tx.commit().await.map_err(Error::db(context, None))
    }

    async fn move_rows(
        conn: &mut SqliteConnection,
        site: Site<'_>,
        contract: (&str, &str),
        rows: &[(i64, &[u8], &Rejection)],
    ) -> Result<u64> {
        let q = Quoted::new(Dialect::Sqlite, site.tenant, site.table, site.quarantine)?;
        let Quoted {
            queue,
            id,
            enqueued_at,
            attempts,
            quarantine,
            ..
        } = &q;
        // Copy from the live row (nothing if it is gone: a repeat is a no-op), then delete.
        // The upsert keeps a replayed message that is rejected again.
        // language=SQL
        let insert = format!(
            "INSERT INTO {quarantine} (tenant, queue, source_id, payload, payload_raw,
                enqueued_at, attempts, reason, field_path, error, contract_name, contract_fingerprint)
             SELECT ?, ?, s.{id}, ?, ?, s.{enqueued_at}, COALESCE(s.{attempts}, 0), ?, ?, ?, ?, ?
             FROM {queue} AS s WHERE s.{id} = ?
             ON CONFLICT (tenant, queue, source_id) DO UPDATE SET
                payload = excluded.payload, payload_raw = excluded.payload_raw,
                enqueued_at = excluded.enqueued_at, attempts = excluded.attempts,
                reason = excluded.reason, field_path = excluded.field_path, error = excluded.error,
                contract_name = excluded.contract_name,
                contract_fingerprint = excluded.contract_fingerprint,
                quarantined_at = {NOW}, replayed_at = NULL"
        );
        // language=SQL
        let delete = format!("DELETE FROM {queue} WHERE {id} = ?");
        let context = "quarantining rejected messages (is the quarantine table created? see quarantine::ensure_table)";
        let tenant = Some(site.tenant.as_str());
        // A savepoint inside the caller's transaction (or a transaction on a bare
        // connection): the inserts and deletes commit together.
        let mut tx = conn.begin().await.map_err(Error::db(context, tenant))?;
        let mut moved = 0;
        for (source_id, raw, rejection) in rows {
            let copied = sqlx::query(AssertSqlSafe(insert.as_str()).into_sql_str())
                .bind(site.tenant.as_str())
                .bind(site.queue)
                .bind(json_text(raw, rejection))
                .bind(*raw)
                .bind(rejection.reason.as_str())
                .bind(rejection.path.as_deref())
                .bind(rejection.message.as_str())
                .bind(contract.0)
                .bind(contract.1)
                .bind(source_id)
                .execute(&mut *tx)
                .await
                .map_err(Error::db(context, tenant))?;
            if copied.rows_affected() == 0 {
                continue;
            }
            moved += sqlx::query(AssertSqlSafe(delete.as_str()).into_sql_str())
                .bind(source_id)
                .execute(&mut *tx)
                .await
                .map_err(Error::db(context, tenant))?
                .rows_affected();
        }
        tx.commit().await.map_err(Error::db(context, tenant))?;
        Ok(moved)
    }

    async fn replay_rows(pool: &SqlitePool, site: Site<'_>) -> Result<u64> {
        let q = Quoted::new(Dialect::Sqlite, site.tenant, site.table, site.quarantine)?;
        let Quoted {
            queue,
            id,
            payload,
            enqueued_at,
            attempts,
            quarantine,
        } = &q;
        // language=SQL
        let pending = format!(
            "SELECT source_id FROM {quarantine}
             WHERE tenant = ? AND queue = ? AND replayed_at IS NULL ORDER BY source_id"
        );
        // An id already back in the queue conflicts, is skipped and stays in quarantine.
        // language=SQL
        let restore = format!(
            "INSERT INTO {queue} ({id}, {payload}, {enqueued_at}, {attempts})
             SELECT source_id, CAST(payload_raw AS TEXT), enqueued_at, 0 FROM {quarantine}
             WHERE tenant = ? AND queue = ? AND source_id = ?
             ON CONFLICT DO NOTHING"
        );
        // language=SQL
        let mark = format!(
            "UPDATE {quarantine} SET replayed_at = {NOW}, replay_count = replay_count + 1
             WHERE tenant = ? AND queue = ? AND source_id = ?"
        );
        let context = "replaying quarantined messages (nothing was replayed)";
        let tenant = Some(site.tenant.as_str());
        let mut tx = pool.begin().await.map_err(Error::db(context, tenant))?;
        let ids: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(pending).into_sql_str())
            .bind(site.tenant.as_str())
            .bind(site.queue)
            .fetch_all(&mut *tx)
            .await
            .map_err(Error::db(context, tenant))?;
        let mut replayed = 0;
        for source_id in ids {
            let restored = sqlx::query(AssertSqlSafe(restore.as_str()).into_sql_str())
                .bind(site.tenant.as_str())
                .bind(site.queue)
                .bind(source_id)
                .execute(&mut *tx)
                .await
                .map_err(Error::db(context, tenant))?;
            if restored.rows_affected() == 0 {
                continue;
            }
            sqlx::query(AssertSqlSafe(mark.as_str()).into_sql_str())
                .bind(site.tenant.as_str())
                .bind(site.queue)
                .bind(source_id)
                .execute(&mut *tx)
                .await
                .map_err(Error::db(context, tenant))?;
            replayed += 1;
        }
        tx.commit().await.map_err(Error::db(context, tenant))?;
        Ok(replayed)
    }

    async fn queue_page(
        pool: &SqlitePool,
        tenant: &TenantName,
        table: &QueueTable,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>> {
        let d = Dialect::Sqlite;
        let queue = d.quote(&table.table)?;
        let (id, payload) = (d.quote(&table.id)?, d.quote(&table.payload)?);
        // Read as bytes: a TEXT column may still hold bytes that are not UTF-8.
        // language=SQL
        let sql = format!(
            "SELECT {id}, CAST({payload} AS BLOB) FROM {queue}
             WHERE ? IS NULL OR {id} > ? ORDER BY {id} LIMIT ?"
        );
        let rows: Vec<(i64, Option<Vec<u8>>)> = sqlx::query_as(AssertSqlSafe(sql).into_sql_str())
            .bind(after)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(Error::db(
                "scanning the queue backlog",
                Some(tenant.as_str()),
            ))?;
        Ok(rows
            .into_iter()
            .map(|(id, raw)| (id, raw.unwrap_or_default()))
            .collect())
    }

    async fn list_rows(
        pool: &SqlitePool,
        tenant: &TenantName,
        queue: &str,
        quarantine: &Quarantine,
    ) -> Result<Vec<QuarantinedMessage>> {
        let table = quarantine_table(Dialect::Sqlite, quarantine)?;
        // language=SQL
        let sql = format!(
            "SELECT id, tenant, queue, source_id, payload, payload_raw,
                CAST(enqueued_at AS TEXT) AS enqueued_at, attempts, reason, field_path, error,
                contract_name, contract_fingerprint, quarantined_at, replayed_at, replay_count
             FROM {table} WHERE tenant = ? AND queue = ? ORDER BY source_id"
        );
        sqlx::query_as(AssertSqlSafe(sql).into_sql_str())
            .bind(tenant.as_str())
            .bind(queue)
            .fetch_all(pool)
            .await
            .map_err(Error::db(
                "listing quarantined messages",
                Some(tenant.as_str()),
            ))
    }
}
