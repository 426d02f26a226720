//! Quarantine on MySQL / MariaDB: a table in each tenant database, beside the queue (like
//! the remediation audit table), InnoDB so that the move is part of the caller's
//! transaction. Each row to move is locked first (`FOR UPDATE`, by primary key), then
//! copied and deleted: MySQL has no `DELETE … RETURNING`.

use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, MySql, MySqlPool, SqlSafeStr, Transaction};

use crate::backend::binds::placeholders;
use crate::quarantine::{Poison, QuarantineStore, QuarantinedMessage, Target, WaitingRow};

/// `ER_NO_SUCH_TABLE`'s SQLSTATE.
const NO_SUCH_TABLE: &str = "42S02";
/// `ER_DUP_ENTRY`: the queue holds the id (or another unique value) already.
const DUP_ENTRY: u16 = 1062;
/// Errors of a value the column refuses that SQLSTATE does not classify as data errors:
/// `ER_TRUNCATED_WRONG_VALUE_FOR_FIELD` (incorrect string value), MySQL's
/// `ER_INVALID_JSON_TEXT`, MariaDB's `ER_CONSTRAINT_FAILED` (its `JSON` is a checked
/// `LONGTEXT`).
const VALUE_REFUSED: [u16; 3] = [1366, 3140, 4025];

/// RFC 3339 UTC text of a `DATETIME(6)` column written in UTC (sqlx's sessions run at
/// `time_zone = '+00:00'`, and this module writes `UTC_TIMESTAMP(6)`).
macro_rules! utc_text {
    ($column:literal) => {
        concat!("DATE_FORMAT(", $column, ", '%Y-%m-%dT%H:%i:%s.%fZ')")
    };
}

impl QuarantineStore for MySql {
    async fn create_table(pool: &MySqlPool, target: &Target<'_>) -> Result<(), sqlx::Error> {
        let q = &target.sql;
        let (table, time_index, waiting_index) = (&q.quarantine, &q.time_index, &q.waiting_index);
        // `JSON` is a real type on MySQL and a checked `LONGTEXT` alias on MariaDB. The
        // server serialises racing creators on the table's metadata lock. Tenant and queue
        // names compare byte for byte: under a case-insensitive collation `jobs` also
        // matched `Jobs` (a table of an earlier version keeps its collation: ARCHITECTURE.md).
        // language=SQL
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
                tenant VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
                queue VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
                source_id BIGINT NOT NULL,
                payload JSON NULL,
                payload_raw LONGBLOB NOT NULL,
                enqueued_at DATETIME(6) NULL,
                attempts BIGINT NOT NULL DEFAULT 0,
                reason VARCHAR(64) NOT NULL,
                field_path TEXT NULL,
                error TEXT NOT NULL,
                contract_name VARCHAR(255) NOT NULL,
                contract_fingerprint VARCHAR(64) NOT NULL,
                quarantined_at DATETIME(6) NOT NULL,
                replayed_at DATETIME(6) NULL,
                replay_count INT NOT NULL DEFAULT 0,
                KEY {time_index} (tenant, queue, quarantined_at),
                KEY {waiting_index} (tenant, queue, replayed_at, id)
             ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4"
        );
        sqlx::raw_sql(AssertSqlSafe(ddl))
            .execute(pool)
            .await
            .map(drop)
    }

    async fn move_rows(
        conn: &mut MySqlConnection,
        target: &Target<'_>,
        contract: (&str, &str),
        rows: &[Poison<'_>],
    ) -> Result<u64, sqlx::Error> {
        let q = &target.sql;
        let (queue, id, enqueued_at, attempts, quarantine) =
            (&q.queue, &q.id, &q.enqueued_at, &q.attempts, &q.quarantine);
        // Row by row, by primary key only: a lookup of one id locks that row and nothing
        // else (a statement over a list of ids may scan a range and, under REPEATABLE READ,
        // lock rows other consumers hold). Poison is rare, so this costs little.
        // 1. Lock the row if it is still queued: a concurrent move of the same message
        //    waits here, then finds it gone (a repeat is a no-op).
        // language=SQL
        let lock = format!("SELECT CAST({id} AS SIGNED) FROM {queue} WHERE {id} = ? FOR UPDATE");
        // 2. Copy it (its enqueue time and attempts) with the rejection.
        // language=SQL
        let insert = format!(
            "INSERT INTO {quarantine} (tenant, queue, source_id, payload, payload_raw,
                enqueued_at, attempts, reason, field_path, error, contract_name,
                contract_fingerprint, quarantined_at)
             SELECT ?, ?, s.{id}, ?, ?, s.{enqueued_at}, COALESCE(s.{attempts}, 0), ?, ?, ?, ?, ?,
                UTC_TIMESTAMP(6)
             FROM {queue} AS s WHERE s.{id} = ?"
        );
        // 3. Delete it from the queue.
        // language=SQL
        let delete = format!("DELETE FROM {queue} WHERE {id} = ?");
        let mut moved = 0;
        for row in rows {
            let present: Option<i64> =
                sqlx::query_scalar(AssertSqlSafe(lock.as_str()).into_sql_str())
                    .bind(row.source_id)
                    .fetch_optional(&mut *conn)
                    .await?;
            if present.is_none() {
                continue;
            }
            moved += sqlx::query(AssertSqlSafe(insert.as_str()).into_sql_str())
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
                .await?
                .rows_affected();
            sqlx::query(AssertSqlSafe(delete.as_str()).into_sql_str())
                .bind(row.source_id)
                .execute(&mut *conn)
                .await?;
        }
        Ok(moved)
    }

    async fn begin_write(pool: &MySqlPool) -> Result<Transaction<'static, MySql>, sqlx::Error> {
        // READ COMMITTED: the page's locking read locks the waiting rows it returns, not
        // the gaps around them, so consumers quarantining meanwhile do not wait on it.
        pool.begin_with("SET TRANSACTION ISOLATION LEVEL READ COMMITTED; START TRANSACTION")
            .await
    }

    async fn waiting_page(
        conn: &mut MySqlConnection,
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
             ORDER BY id LIMIT ?
             FOR UPDATE"
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
        conn: &mut MySqlConnection,
        target: &Target<'_>,
        row: i64,
        utf8: bool,
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
        // UTF-8 is converted to text: a `JSON` column on MySQL refuses a binary string.
        // Other bytes (only an unchecked replay puts those back) go as they are, which a
        // binary column keeps and a text one refuses: converting them fails on MariaDB
        // ("Invalid utf8mb4 character string") and gives NULL on MySQL. Not `INSERT
        // IGNORE`, which would also turn refused values into warnings.
        let value = if utf8 {
            "CONVERT(payload_raw USING utf8mb4)"
        } else {
            "payload_raw"
        };
        // language=SQL
        let sql = format!(
            "INSERT INTO {queue} ({id}, {payload}, {enqueued_at}, {attempts})
             SELECT source_id, {value}, enqueued_at, 0
             FROM {quarantine} WHERE id = ?"
        );
        let result = sqlx::query(AssertSqlSafe(sql).into_sql_str())
            .bind(row)
            .execute(conn)
            .await;
        match result {
            Ok(inserted) => Ok(inserted.rows_affected() > 0),
            Err(e) if error_number(&e) == Some(DUP_ENTRY) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn mark_replayed(
        conn: &mut MySqlConnection,
        target: &Target<'_>,
        ids: &[i64],
    ) -> Result<(), sqlx::Error> {
        let quarantine = &target.sql.quarantine;
        // language=SQL
        let sql = format!(
            "UPDATE {quarantine} SET replayed_at = UTC_TIMESTAMP(6), replay_count = replay_count + 1
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
        pool: &MySqlPool,
        target: &Target<'_>,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, sqlx::Error> {
        let q = &target.sql;
        let (queue, id, payload) = (&q.queue, &q.id, &q.payload);
        // language=SQL
        let sql = format!(
            "SELECT CAST({id} AS SIGNED), CAST({payload} AS BINARY) FROM {queue}
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
        pool: &MySqlPool,
        target: &Target<'_>,
    ) -> Result<Vec<QuarantinedMessage>, sqlx::Error> {
        let table = &target.sql.quarantine;
        // language=SQL
        let sql = format!(
            "SELECT id, tenant, queue, source_id, CAST(payload AS CHAR) AS payload, payload_raw,
                {} AS enqueued_at, attempts, reason, field_path, error,
                contract_name, contract_fingerprint, {} AS quarantined_at,
                {} AS replayed_at, CAST(replay_count AS SIGNED) AS replay_count
             FROM {table} WHERE tenant = ? AND queue = ? ORDER BY source_id, id",
            utc_text!("enqueued_at"),
            utc_text!("quarantined_at"),
            utc_text!("replayed_at"),
        );
        sqlx::query_as(AssertSqlSafe(sql).into_sql_str())
            .bind(target.tenant)
            .bind(target.queue)
            .fetch_all(pool)
            .await
    }

    async fn table_exists(
        conn: &mut MySqlConnection,
        schema: Option<&str>,
        table: &str,
    ) -> Result<bool, sqlx::Error> {
        // language=SQL
        let found: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.TABLES
             WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
        )
        .bind(schema)
        .bind(table)
        .fetch_one(conn)
        .await?;
        Ok(found > 0)
    }

    fn is_missing_table(error: &sqlx::Error) -> bool {
        error
            .as_database_error()
            .and_then(|db| db.code())
            .is_some_and(|code| code == NO_SUCH_TABLE)
    }

    fn is_data_error(error: &sqlx::Error) -> bool {
        let sqlstate = error.as_database_error().and_then(|db| db.code());
        sqlstate.is_some_and(|code| code.starts_with("22"))
            || error_number(error).is_some_and(|n| VALUE_REFUSED.contains(&n))
    }
}

/// The MySQL error number of a database error.
fn error_number(error: &sqlx::Error) -> Option<u16> {
    error
        .as_database_error()
        .and_then(|db| db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .map(sqlx::mysql::MySqlDatabaseError::number)
}
