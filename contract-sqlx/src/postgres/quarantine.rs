//! Quarantine on PostgreSQL: one table for every tenant, set-based moves over `unnest`.

use contract_core::{Dialect, TenantName};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Postgres, SqlSafeStr};

use crate::error::{Error, Result};
use crate::payload::Rejection;
use crate::quarantine::table::{Quoted, quarantine_table, time_index};
use crate::quarantine::{
    Quarantine, QuarantineStore, QuarantinedMessage, QueueTable, Site, json_text,
};

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
    async fn create_table(pool: &PgPool, quarantine: &Quarantine) -> Result<()> {
        let table = quarantine_table(Dialect::Postgres, quarantine)?;
        let index = time_index(Dialect::Postgres, quarantine)?;
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
                replay_count int4 NOT NULL DEFAULT 0,
                UNIQUE (tenant, queue, source_id));
             CREATE INDEX IF NOT EXISTS {index} ON {table} (tenant, queue, quarantined_at)"
        );
        let context =
            "creating the quarantine table (grant CREATE on its schema, or create it beforehand)";
        crate::postgres::ddl::create_under_lock(pool, "contract:quarantine-table", ddl, context)
            .await
    }

    async fn move_rows(
        conn: &mut PgConnection,
        site: Site<'_>,
        contract: (&str, &str),
        rows: &[(i64, &[u8], &Rejection)],
    ) -> Result<u64> {
        let q = Quoted::new(Dialect::Postgres, site.tenant, site.table, site.quarantine)?;
        let Quoted {
            queue,
            id,
            enqueued_at,
            attempts,
            quarantine,
            ..
        } = &q;
        // jsonb refuses `\u0000` (it cannot become text); such a payload is kept in
        // `payload_raw` only, so the move never fails on it.
        let payloads: Vec<Option<&str>> = rows
            .iter()
            .map(|(_, raw, r)| json_text(raw, r).filter(|t| !t.contains("\\u0000")))
            .collect();
        // One statement: the delete and the insert succeed or fail together. The upsert
        // keeps a message that was replayed and is rejected again (never DO NOTHING after
        // a delete: that would lose it).
        // language=SQL
        let sql = format!(
            "WITH input AS (
                SELECT * FROM unnest($1::int8[], $2::bytea[], $3::text[], $4::text[], $5::text[], $6::text[])
                    AS i(source_id, payload_raw, payload, reason, field_path, error)
             ), moved AS (
                DELETE FROM {queue} AS q USING input AS i WHERE q.{id} = i.source_id
                RETURNING q.{id} AS source_id, q.{enqueued_at} AS enqueued_at, q.{attempts} AS attempts
             ), stored AS (
                INSERT INTO {quarantine} AS t (tenant, queue, source_id, payload, payload_raw,
                    enqueued_at, attempts, reason, field_path, error, contract_name, contract_fingerprint)
                SELECT $7, $8, m.source_id, i.payload::jsonb, i.payload_raw,
                    m.enqueued_at, COALESCE(m.attempts, 0), i.reason, i.field_path, i.error, $9, $10
                FROM moved AS m JOIN input AS i ON i.source_id = m.source_id
                ON CONFLICT (tenant, queue, source_id) DO UPDATE SET
                    payload = EXCLUDED.payload, payload_raw = EXCLUDED.payload_raw,
                    enqueued_at = EXCLUDED.enqueued_at, attempts = EXCLUDED.attempts,
                    reason = EXCLUDED.reason, field_path = EXCLUDED.field_path, error = EXCLUDED.error,
                    contract_name = EXCLUDED.contract_name,
                    contract_fingerprint = EXCLUDED.contract_fingerprint,
                    quarantined_at = now(), replayed_at = NULL
                RETURNING 1
             )
             SELECT count(*) FROM stored"
        );
        let moved: i64 = sqlx::query_scalar(AssertSqlSafe(sql).into_sql_str())
            .bind(rows.iter().map(|r| r.0).collect::<Vec<i64>>())
            .bind(rows.iter().map(|r| r.1).collect::<Vec<&[u8]>>())
            .bind(payloads)
            .bind(rows.iter().map(|r| r.2.reason.as_str()).collect::<Vec<&str>>())
            .bind(rows.iter().map(|r| r.2.path.as_deref()).collect::<Vec<Option<&str>>>())
            .bind(rows.iter().map(|r| r.2.message.as_str()).collect::<Vec<&str>>())
            .bind(site.tenant.as_str())
            .bind(site.queue)
            .bind(contract.0)
            .bind(contract.1)
            .fetch_one(&mut *conn)
            .await
            .map_err(Error::db(
                "quarantining rejected messages (is the quarantine table created? see quarantine::ensure_table)",
                Some(site.tenant.as_str()),
            ))?;
        Ok(u64::try_from(moved).unwrap_or(0))
    }

    async fn replay_rows(pool: &PgPool, site: Site<'_>) -> Result<u64> {
        let q = Quoted::new(Dialect::Postgres, site.tenant, site.table, site.quarantine)?;
        let Quoted {
            queue,
            id,
            payload,
            enqueued_at,
            attempts,
            quarantine,
        } = &q;
        let ty = site.table.payload_type.pg_name();
        // One statement: re-enqueue and mark, all or nothing. An id already back in the
        // queue conflicts, is skipped and stays waiting in quarantine.
        // language=SQL
        let sql = format!(
            "WITH picked AS (
                SELECT source_id, payload_raw, enqueued_at FROM {quarantine}
                WHERE tenant = $1 AND queue = $2 AND replayed_at IS NULL
                ORDER BY source_id
                FOR UPDATE
             ), restored AS (
                INSERT INTO {queue} ({id}, {payload}, {enqueued_at}, {attempts}) OVERRIDING SYSTEM VALUE
                SELECT source_id, convert_from(payload_raw, 'UTF8')::{ty}, enqueued_at, 0 FROM picked
                ON CONFLICT DO NOTHING
                RETURNING {id} AS source_id
             ), marked AS (
                UPDATE {quarantine} AS t SET replayed_at = now(), replay_count = t.replay_count + 1
                FROM restored AS r
                WHERE t.tenant = $1 AND t.queue = $2 AND t.source_id = r.source_id
                RETURNING 1
             )
             SELECT count(*) FROM marked"
        );
        let replayed: i64 = sqlx::query_scalar(AssertSqlSafe(sql).into_sql_str())
            .bind(site.tenant.as_str())
            .bind(site.queue)
            .fetch_one(pool)
            .await
            .map_err(Error::db(
                "replaying quarantined messages (nothing was replayed; a payload that is not UTF-8, or not JSON for a json/jsonb queue, cannot go back)",
                Some(site.tenant.as_str()),
            ))?;
        Ok(u64::try_from(replayed).unwrap_or(0))
    }

    async fn queue_page(
        pool: &PgPool,
        tenant: &TenantName,
        table: &QueueTable,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>> {
        let d = Dialect::Postgres;
        let queue = d.quote_qualified(Some(tenant.as_str()), &table.table)?;
        let (id, payload) = (d.quote(&table.id)?, d.quote(&table.payload)?);
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
            .await
            .map_err(Error::db(
                "scanning the queue backlog",
                Some(tenant.as_str()),
            ))?;
        Ok(rows
            .into_iter()
            .map(|(id, raw)| (id, raw.unwrap_or_default().into_bytes()))
            .collect())
    }

    async fn list_rows(
        pool: &PgPool,
        tenant: &TenantName,
        queue: &str,
        quarantine: &Quarantine,
    ) -> Result<Vec<QuarantinedMessage>> {
        let table = quarantine_table(Dialect::Postgres, quarantine)?;
        // language=SQL
        let sql = format!(
            "SELECT id, tenant, queue, source_id, payload::text AS payload, payload_raw,
                {} AS enqueued_at, attempts, reason, field_path, error,
                contract_name, contract_fingerprint, {} AS quarantined_at,
                {} AS replayed_at, replay_count::int8 AS replay_count
             FROM {table} WHERE tenant = $1 AND queue = $2 ORDER BY source_id",
            utc_text!("enqueued_at"),
            utc_text!("quarantined_at"),
            utc_text!("replayed_at"),
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
