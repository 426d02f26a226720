//! Quarantine on PostgreSQL: one table for every tenant, set-based moves over `unnest`.

use sqlx::{AssertSqlSafe, PgConnection, PgPool, Postgres, SqlSafeStr, Transaction};

use crate::quarantine::{Poison, QuarantineStore, QuarantinedMessage, Target, WaitingRow};

/// RFC 3339 UTC text of a `timestamptz` expression (independent of the session TimeZone).
macro_rules! utc_text {
    ($column:literal) => {
        concat!(
            "to_char(",
            $column,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        )
    };
}

impl QuarantineStore for Postgres {
    async fn create_table(pool: &PgPool, target: &Target<'_>) -> Result<(), sqlx::Error> {
        let q = &target.sql;
        let (table, time_index, waiting_index) = (&q.quarantine, &q.time_index, &q.waiting_index);
        // No unique key on (tenant, queue, source_id): a reused queue id gets a row of its
        // own instead of overwriting a waiting one.
        // language=SQL
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                tenant text NOT NULL,
                queue text NOT NULL,
                source_id int8 NOT NULL,
                payload jsonb,
                payload_raw bytea NOT NULL,
                enqueued_at timestamptz,
                attempts int8 NOT NULL DEFAULT 0,
                reason text NOT NULL,
                field_path text,
                error text NOT NULL,
                contract_name text NOT NULL,
                contract_fingerprint text NOT NULL,
                quarantined_at timestamptz NOT NULL DEFAULT now(),
                replayed_at timestamptz,
                replay_count int4 NOT NULL DEFAULT 0);
             CREATE INDEX IF NOT EXISTS {time_index} ON {table} (tenant, queue, quarantined_at);
             CREATE INDEX IF NOT EXISTS {waiting_index} ON {table} (tenant, queue, id)
                WHERE replayed_at IS NULL"
        );
        // One transaction under the advisory lock: replicas starting together would
        // otherwise collide on the catalog.
        let mut tx = pool.begin().await?;
        crate::postgres::ddl::xact_lock(&mut tx, "contract:quarantine-table").await?;
        sqlx::raw_sql(AssertSqlSafe(ddl)).execute(&mut *tx).await?;
        // Upgrade: earlier releases had `UNIQUE (tenant, queue, source_id)`.
        // language=SQL
        let unique: Vec<String> = sqlx::query_scalar(
            "SELECT c.conname::text FROM pg_constraint AS c
             WHERE c.conrelid = to_regclass($1) AND c.contype = 'u'
               AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text)
                    FROM pg_attribute AS a
                    WHERE a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey))
                   = ARRAY['queue', 'source_id', 'tenant']",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await?;
        for name in unique {
            // A catalog name always quotes; the guard keeps the SQL free of raw names.
            let Ok(constraint) = contract_core::Dialect::Postgres.quote(&name) else {
                tracing::warn!(table = %table, constraint = %name, "cannot quote the old unique constraint of the quarantine table; drop it by hand");
                continue;
            };
            let drop = format!("ALTER TABLE {table} DROP CONSTRAINT {constraint}");
            sqlx::raw_sql(AssertSqlSafe(drop)).execute(&mut *tx).await?;
            tracing::info!(table = %table, constraint = %name, "quarantine table upgraded: unique key on (tenant, queue, source_id) dropped");
        }
        tx.commit().await
    }

    async fn move_rows(
        conn: &mut PgConnection,
        target: &Target<'_>,
        contract: (&str, &str),
        rows: &[Poison<'_>],
    ) -> Result<u64, sqlx::Error> {
        let q = &target.sql;
        let (queue, id, enqueued_at, attempts, quarantine) =
            (&q.queue, &q.id, &q.enqueued_at, &q.attempts, &q.quarantine);
        // One statement: the delete and the insert succeed or fail together, and only rows
        // actually deleted are inserted (a repeat is a no-op).
        // language=SQL
        let sql = format!(
            "WITH input AS (
                SELECT * FROM unnest($1::int8[], $2::bytea[], $3::text[], $4::text[], $5::text[], $6::text[])
                    AS i(source_id, payload_raw, payload, reason, field_path, error)
             ), moved AS (
                DELETE FROM {queue} AS q USING input AS i WHERE q.{id} = i.source_id
                RETURNING q.{id} AS source_id, q.{enqueued_at} AS enqueued_at, q.{attempts} AS attempts
             ), stored AS (
                INSERT INTO {quarantine} (tenant, queue, source_id, payload, payload_raw,
                    enqueued_at, attempts, reason, field_path, error, contract_name, contract_fingerprint)
                SELECT $7, $8, m.source_id, i.payload::jsonb, i.payload_raw,
                    m.enqueued_at, COALESCE(m.attempts, 0), i.reason, i.field_path, i.error, $9, $10
                FROM moved AS m JOIN input AS i ON i.source_id = m.source_id
                RETURNING 1
             )
             SELECT count(*) FROM stored"
        );
        let moved: i64 = sqlx::query_scalar(AssertSqlSafe(sql).into_sql_str())
            .bind(rows.iter().map(|r| r.source_id).collect::<Vec<i64>>())
            .bind(rows.iter().map(|r| r.raw).collect::<Vec<&[u8]>>())
            .bind(rows.iter().map(|r| r.parsed).collect::<Vec<Option<&str>>>())
            .bind(rows.iter().map(|r| r.reason).collect::<Vec<&str>>())
            .bind(
                rows.iter()
                    .map(|r| r.path.as_deref())
                    .collect::<Vec<Option<&str>>>(),
            )
            .bind(rows.iter().map(|r| &*r.error).collect::<Vec<&str>>())
            .bind(target.tenant)
            .bind(target.queue)
            .bind(contract.0)
            .bind(contract.1)
            .fetch_one(&mut *conn)
            .await?;
        Ok(u64::try_from(moved).unwrap_or(0))
    }

    async fn begin_write(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        pool.begin().await
    }

    async fn waiting_page(
        conn: &mut PgConnection,
        target: &Target<'_>,
        after: i64,
        through: i64,
        limit: i64,
    ) -> Result<Vec<WaitingRow>, sqlx::Error> {
        let quarantine = &target.sql.quarantine;
        // language=SQL
        let sql = format!(
            "SELECT id, source_id, payload_raw FROM {quarantine}
             WHERE tenant = $1 AND queue = $2 AND replayed_at IS NULL AND id > $3 AND id <= $4
             ORDER BY id LIMIT $5
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
        conn: &mut PgConnection,
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
        let ty = target.payload_type.pg_name();
        // An id already in the queue conflicts: nothing is inserted.
        // language=SQL
        let sql = format!(
            "INSERT INTO {queue} ({id}, {payload}, {enqueued_at}, {attempts}) OVERRIDING SYSTEM VALUE
             SELECT source_id, convert_from(payload_raw, 'UTF8')::{ty}, enqueued_at, 0
             FROM {quarantine} WHERE id = $1
             ON CONFLICT DO NOTHING"
        );
        let inserted = sqlx::query(AssertSqlSafe(sql).into_sql_str())
            .bind(row)
            .execute(conn)
            .await?;
        Ok(inserted.rows_affected() > 0)
    }

    async fn mark_replayed(
        conn: &mut PgConnection,
        target: &Target<'_>,
        ids: &[i64],
    ) -> Result<(), sqlx::Error> {
        let quarantine = &target.sql.quarantine;
        // language=SQL
        let sql = format!(
            "UPDATE {quarantine} SET replayed_at = now(), replay_count = replay_count + 1
             WHERE id = ANY($1)"
        );
        sqlx::query(AssertSqlSafe(sql).into_sql_str())
            .bind(ids)
            .execute(conn)
            .await
            .map(drop)
    }

    async fn queue_page(
        pool: &PgPool,
        target: &Target<'_>,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, sqlx::Error> {
        let q = &target.sql;
        let (queue, id, payload) = (&q.queue, &q.id, &q.payload);
        // language=SQL
        let sql = format!(
            "SELECT {id}::int8, {payload}::text FROM {queue}
             WHERE $1::int8 IS NULL OR {id} > $1
             ORDER BY {id} LIMIT $2"
        );
        let rows: Vec<(i64, Option<String>)> = sqlx::query_as(AssertSqlSafe(sql).into_sql_str())
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, raw)| (id, raw.unwrap_or_default().into_bytes()))
            .collect())
    }

    async fn list_rows(
        pool: &PgPool,
        target: &Target<'_>,
    ) -> Result<Vec<QuarantinedMessage>, sqlx::Error> {
        let table = &target.sql.quarantine;
        // language=SQL
        let sql = format!(
            "SELECT id, tenant, queue, source_id, payload::text AS payload, payload_raw,
                {} AS enqueued_at, attempts, reason, field_path, error,
                contract_name, contract_fingerprint, {} AS quarantined_at,
                {} AS replayed_at, replay_count::int8 AS replay_count
             FROM {table} WHERE tenant = $1 AND queue = $2 ORDER BY source_id, id",
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
        conn: &mut PgConnection,
        schema: Option<&str>,
        table: &str,
    ) -> Result<bool, sqlx::Error> {
        // Quoted by the server: the names are plain text here.
        sqlx::query_scalar(
            "SELECT to_regclass(quote_ident(COALESCE($1, current_schema())) || '.' || quote_ident($2))
                IS NOT NULL",
        )
        .bind(schema)
        .bind(table)
        .fetch_one(conn)
        .await
    }

    fn is_missing_table(error: &sqlx::Error) -> bool {
        sqlstate(error).is_some_and(|code| code == "42P01")
    }

    fn is_data_error(error: &sqlx::Error) -> bool {
        // Class 22 (data exception): `invalid input syntax for type json`, untranslatable
        // characters, numeric overflow.
        sqlstate(error).is_some_and(|code| code.starts_with("22"))
    }
}

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|db| db.code())
        .map(|code| code.into_owned())
}
