//! Quarantine on SQLite: the table lives in each tenant file; moves are row by row (SQLite
//! has no `unnest`, and statements are in-process calls).

use sqlx::{AssertSqlSafe, SqlSafeStr, Sqlite, SqliteConnection, SqlitePool, Transaction};

use crate::backend::binds::placeholders;
use crate::quarantine::{Poison, QuarantineStore, QuarantinedMessage, Target, WaitingRow};

/// RFC 3339 UTC now, with milliseconds.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// The columns of the quarantine table, in order (also the copy list of the upgrade).
const COLUMNS: &str = "id, tenant, queue, source_id, payload, payload_raw, enqueued_at, attempts, \
     reason, field_path, error, contract_name, contract_fingerprint, quarantined_at, \
     replayed_at, replay_count";

/// `CREATE TABLE <name> (...)` of the current layout. `enqueued_at` has no declared type:
/// the queue's value is kept as it is. No unique key on (tenant, queue, source_id): a
/// reused queue id gets a row of its own.
fn create_table_sql(name: &str, if_not_exists: bool) -> String {
    let guard = if if_not_exists { "IF NOT EXISTS " } else { "" };
    // language=SQL
    format!(
        "CREATE TABLE {guard}{name} (
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
            replay_count INTEGER NOT NULL DEFAULT 0)"
    )
}

impl QuarantineStore for Sqlite {
    async fn create_table(pool: &SqlitePool, target: &Target<'_>) -> Result<(), sqlx::Error> {
        let q = &target.sql;
        let (table, time_index, waiting_index) = (&q.quarantine, &q.time_index, &q.waiting_index);
        // `IMMEDIATE`: the write lock from the start, so racing creators (and the upgrade
        // below) run one after the other.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::raw_sql(AssertSqlSafe(create_table_sql(table, true)))
            .execute(&mut *tx)
            .await?;
        // Upgrade: earlier releases had `UNIQUE (tenant, queue, source_id)`, an index
        // SQLite cannot drop: rebuild the table, rows kept.
        // language=SQL
        let old_unique: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pragma_index_list(?1) AS il
             WHERE il.origin = 'u' AND (
                SELECT group_concat(name, ',') FROM (
                    SELECT ii.name AS name FROM pragma_index_info(il.name) AS ii ORDER BY ii.seqno)
             ) = 'tenant,queue,source_id'",
        )
        .bind(target.quarantine_name)
        .fetch_one(&mut *tx)
        .await?;
        if old_unique > 0 {
            let rebuilt = &q.upgrade;
            // language=SQL
            let upgrade = format!(
                "{};
                 INSERT INTO {rebuilt} ({COLUMNS}) SELECT {COLUMNS} FROM {table};
                 DROP TABLE {table};
                 ALTER TABLE {rebuilt} RENAME TO {table};",
                create_table_sql(rebuilt, false)
            );
            sqlx::raw_sql(AssertSqlSafe(upgrade))
                .execute(&mut *tx)
                .await?;
            tracing::info!(table = %table, "quarantine table upgraded: unique key on (tenant, queue, source_id) removed");
        }
        // language=SQL
        let indexes = format!(
            "CREATE INDEX IF NOT EXISTS {time_index} ON {table} (tenant, queue, quarantined_at);
             CREATE INDEX IF NOT EXISTS {waiting_index} ON {table} (tenant, queue, id)
                WHERE replayed_at IS NULL;"
        );
        sqlx::raw_sql(AssertSqlSafe(indexes))
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    async fn move_rows(
        conn: &mut SqliteConnection,
        target: &Target<'_>,
        contract: (&str, &str),
        rows: &[Poison<'_>],
    ) -> Result<u64, sqlx::Error> {
        let q = &target.sql;
        let (queue, id, enqueued_at, attempts, quarantine) =
            (&q.queue, &q.id, &q.enqueued_at, &q.attempts, &q.quarantine);
        // Copy from the live row (nothing if it is gone: a repeat is a no-op), then delete.
        // language=SQL
        let insert = format!(
            "INSERT INTO {quarantine} (tenant, queue, source_id, payload, payload_raw,
                enqueued_at, attempts, reason, field_path, error, contract_name, contract_fingerprint)
             SELECT ?, ?, s.{id}, ?, ?, s.{enqueued_at}, COALESCE(s.{attempts}, 0), ?, ?, ?, ?, ?
             FROM {queue} AS s WHERE s.{id} = ?"
        );
        // language=SQL
        let delete = format!("DELETE FROM {queue} WHERE {id} = ?");
        let mut moved = 0;
        for row in rows {
            let copied = sqlx::query(AssertSqlSafe(insert.as_str()).into_sql_str())
                .bind(target.tenant)
                .bind(target.queue)
                .bind(row.parsed)
                .bind(row.raw)
                .bind(row.reason)
                .bind(row.path.as_deref())
                .bind(&*row.error)
                .bind(contract.0)
                .bind(contract.1)
                .bind(row.source_id)
                .execute(&mut *conn)
                .await?;
            if copied.rows_affected() == 0 {
                continue;
            }
            moved += sqlx::query(AssertSqlSafe(delete.as_str()).into_sql_str())
                .bind(row.source_id)
                .execute(&mut *conn)
                .await?
                .rows_affected();
        }
        Ok(moved)
    }

    async fn begin_write(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        // The write lock at once: a concurrent replay waits instead of failing to upgrade
        // its read lock.
        pool.begin_with("BEGIN IMMEDIATE").await
    }

    async fn waiting_page(
        conn: &mut SqliteConnection,
        target: &Target<'_>,
        after: i64,
        through: i64,
        limit: i64,
    ) -> Result<Vec<WaitingRow>, sqlx::Error> {
        let quarantine = &target.sql.quarantine;
        // language=SQL
        let sql = format!(
            "SELECT id, source_id, payload_raw FROM {quarantine}
             WHERE tenant = ? AND queue = ? AND replayed_at IS NULL AND id > ? AND id <= ?
             ORDER BY id LIMIT ?"
        );
        sqlx::query_as(AssertSqlSafe(sql).into_sql_str())
            .bind(target.tenant)
            .bind(target.queue)
            .bind(after)
            .bind(through)
            .bind(limit)
            .fetch_all(conn)
            .await
    }

    async fn restore(
        conn: &mut SqliteConnection,
        target: &Target<'_>,
        row: i64,
        _utf8: bool,
    ) -> Result<bool, sqlx::Error> {
        let q = &target.sql;
        let (queue, id, payload, enqueued_at, attempts, quarantine) = (
            &q.queue,
            &q.id,
            &q.payload,
            &q.enqueued_at,
            &q.attempts,
            &q.quarantine,
        );
        // An id already in the queue conflicts: nothing is inserted.
        // language=SQL
        let sql = format!(
            "INSERT INTO {queue} ({id}, {payload}, {enqueued_at}, {attempts})
             SELECT source_id, CAST(payload_raw AS TEXT), enqueued_at, 0 FROM {quarantine}
             WHERE id = ?
             ON CONFLICT DO NOTHING"
        );
        let inserted = sqlx::query(AssertSqlSafe(sql).into_sql_str())
            .bind(row)
            .execute(conn)
            .await?;
        Ok(inserted.rows_affected() > 0)
    }

    async fn mark_replayed(
        conn: &mut SqliteConnection,
        target: &Target<'_>,
        ids: &[i64],
    ) -> Result<(), sqlx::Error> {
        let quarantine = &target.sql.quarantine;
        // language=SQL
        let sql = format!(
            "UPDATE {quarantine} SET replayed_at = {NOW}, replay_count = replay_count + 1
             WHERE id IN ({})",
            placeholders(ids.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql).into_sql_str());
        for id in ids {
            query = query.bind(id);
        }
        query.execute(conn).await.map(drop)
    }

    async fn queue_page(
        pool: &SqlitePool,
        target: &Target<'_>,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, sqlx::Error> {
        let q = &target.sql;
        let (queue, id, payload) = (&q.queue, &q.id, &q.payload);
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
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, raw)| (id, raw.unwrap_or_default()))
            .collect())
    }

    async fn list_rows(
        pool: &SqlitePool,
        target: &Target<'_>,
    ) -> Result<Vec<QuarantinedMessage>, sqlx::Error> {
        let table = &target.sql.quarantine;
        // language=SQL
        let sql = format!(
            "SELECT id, tenant, queue, source_id, payload, payload_raw,
                CAST(enqueued_at AS TEXT) AS enqueued_at, attempts, reason, field_path, error,
                contract_name, contract_fingerprint, quarantined_at, replayed_at, replay_count
             FROM {table} WHERE tenant = ? AND queue = ? ORDER BY source_id, id"
        );
        sqlx::query_as(AssertSqlSafe(sql).into_sql_str())
            .bind(target.tenant)
            .bind(target.queue)
            .fetch_all(pool)
            .await
    }

    async fn table_exists(
        conn: &mut SqliteConnection,
        _schema: Option<&str>,
        table: &str,
    ) -> Result<bool, sqlx::Error> {
        // language=SQL
        let found: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?",
        )
        .bind(table)
        .fetch_one(conn)
        .await?;
        Ok(found > 0)
    }

    fn is_missing_table(error: &sqlx::Error) -> bool {
        error
            .as_database_error()
            .is_some_and(|db| db.message().starts_with("no such table"))
    }

    fn is_data_error(_error: &sqlx::Error) -> bool {
        // `TEXT` and `BLOB` columns take any value.
        false
    }
}
