//! Remediation on PostgreSQL: one transaction per tenant, with the audit row inside it, in
//! four round trips (begin and locks; re-check; DDL and audit row; commit).

use std::time::Instant;

use sqlx::{PgPool, Postgres, Transaction};

use super::held::HeldTransaction;
use crate::remediation::audit::to_json;

use crate::error::{Error, Result};
use crate::remediation::{ApplyJob, failed, outcome_unknown};
use crate::remediation::{AuditConfig, AuditRecord, new_audit_id};

/// SQLSTATE `lock_not_available`: `lock_timeout` fired.
const LOCK_NOT_AVAILABLE: &str = "55P03";
/// SQLSTATE `deadlock_detected`: this transaction was chosen to end a lock cycle (say with
/// a hand-run migration that took the tables in the other order).
const DEADLOCK_DETECTED: &str = "40P01";

/// The audit table's columns added after its first version (`ADD COLUMN IF NOT EXISTS`).
const LATER_COLUMNS: [&str; 5] = [
    "approval_id",
    "approved_by",
    "phase",
    "transactions",
    "evidence",
];

/// Creates the audit table if missing (or adds the columns later versions use), under an
/// advisory lock so racing replicas do not collide on the catalog. A table that has them
/// all is left alone: even an `ALTER … ADD COLUMN IF NOT EXISTS` that adds nothing takes
/// the table's `ACCESS EXCLUSIVE` lock and is DDL to the event trigger, whose version bump
/// of the schema sent every guard listening on a sweep after each remediation.
pub(super) async fn ensure_audit_table(pool: &PgPool, audit: &AuditConfig) -> Result<()> {
    let table =
        contract_core::Dialect::Postgres.quote_qualified(Some(&audit.schema), &audit.table)?;
    let complete: Option<bool> = sqlx::query_scalar(
        "SELECT count(*) = cardinality($2::text[]) FROM pg_attribute
         WHERE attrelid = to_regclass($1) AND attname = ANY($2) AND attnum > 0 AND NOT attisdropped",
    )
    .bind(&table)
    .bind(LATER_COLUMNS)
    .fetch_one(pool)
    .await
    .ok();
    if complete == Some(true) {
        return Ok(());
    }
    // language=SQL
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            audit_id text PRIMARY KEY,
            tenant text NOT NULL,
            plan_hash text NOT NULL,
            statements jsonb NOT NULL,
            drift_before jsonb NOT NULL,
            status text NOT NULL,
            actor text NOT NULL,
            attempts int4 NOT NULL,
            started_at timestamptz NOT NULL,
            finished_at timestamptz NOT NULL,
            duration_ms int8 NOT NULL,
            approval_id text,
            approved_by text);
         ALTER TABLE {table} ADD COLUMN IF NOT EXISTS approval_id text,
             ADD COLUMN IF NOT EXISTS approved_by text,
             ADD COLUMN IF NOT EXISTS phase int4,
             ADD COLUMN IF NOT EXISTS transactions jsonb,
             ADD COLUMN IF NOT EXISTS evidence text"
    );
    let context = "creating the audit table";
    super::ddl::create_under_lock(pool, "contract:audit-table", ddl, context).await
}

/// Applies with bounded retries on lock timeout or deadlock.
pub(super) async fn apply(pool: &PgPool, job: &ApplyJob<'_, Postgres>) -> Result<AuditRecord> {
    if job.steps.iter().any(|s| s.online.is_some()) {
        return super::online::apply_online(pool, job).await;
    }
    apply_statements(pool, job).await
}

/// Applies steps that are all statements (no online type change): in the tenant's one
/// transaction, or in their phases' transactions.
pub(super) async fn apply_statements(
    pool: &PgPool,
    job: &ApplyJob<'_, Postgres>,
) -> Result<AuditRecord> {
    if crate::remediation::phases::is_phased(&job.steps) {
        return super::online::apply_phased(pool, job).await;
    }
    let mut attempt = 1;
    loop {
        match apply_once(pool, job, attempt).await {
            Err(Error::Apply {
                source,
                stage,
                tenant,
                ..
            }) if is_lock_conflict(&source) && attempt < job.options.max_attempts => {
                tracing::warn!(%tenant, %stage, attempt, error = %source, "lock conflict during remediation; retrying");
                tokio::time::sleep(job.options.backoff(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// `true` when a lock could not be had: `lock_timeout` fired, or the server ended a
/// deadlock by failing this transaction (rolled back either way, so worth another attempt).
pub(super) fn is_lock_conflict(error: &sqlx::Error) -> bool {
    has_code(error, &[LOCK_NOT_AVAILABLE, DEADLOCK_DETECTED])
}

/// `true` when `error` is the server's, with one of the SQLSTATEs `codes`.
pub(super) fn has_code(error: &sqlx::Error, codes: &[&str]) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|c| codes.contains(&c.as_ref()))
}

async fn apply_once(
    pool: &PgPool,
    job: &ApplyJob<'_, Postgres>,
    attempt: u32,
) -> Result<AuditRecord> {
    let tenant = job.tenant.as_str();
    let fail = |stage: &str| failed(tenant, attempt, stage);
    let started = Instant::now();
    let conn = pool.acquire().await.map_err(fail("begin"))?;
    // Round trip 1: the transaction, the wait bound for the tenant's lock, generic plans
    // for the re-check (see `recheck.rs`), and the lock: only one replica remediates a
    // tenant at a time. Then the DDL's bounds, and the locks that keep what the re-check
    // reads as it is until the DDL runs (`table_lock.rs`). (`SET LOCAL` ends with the
    // transaction.)
    let key = super::ddl::lock_key(&super::ddl::tenant_lock_name(tenant));
    let mut begin = vec![
        format!(
            "SET LOCAL statement_timeout = '{}'",
            millis(job.options.advisory_lock_wait)
        ),
        "SET LOCAL plan_cache_mode = force_generic_plan".to_owned(),
        format!("SELECT pg_advisory_xact_lock('{key}'::int8)"),
        // Like the fleet query: compiling a catalog query costs more than it saves, and a
        // generic plan whose estimate passes `jit_above_cost` would compile on every run.
        "SET LOCAL jit = off".to_owned(),
        format!(
            "SET LOCAL lock_timeout = '{}'",
            millis(job.options.lock_timeout)
        ),
        format!(
            "SET LOCAL statement_timeout = '{}'",
            millis(job.options.statement_timeout)
        ),
    ];
    let bounded = begin.len();
    // A type change made in place drops what an interrupted online change of the column
    // left (`online/leftover.rs`): the tables' online locks first, then the table locks,
    // in the order a running online change takes them.
    let (online_locks, cleanup) = super::online::cleanup_before_plain(job)?;
    begin.extend(online_locks);
    let rechecked = job.rechecked_tables();
    begin.extend(super::table_lock::lock_statements(job, &rechecked)?);
    let mut held = match HeldTransaction::begin(conn, &begin).await {
        Ok(held) => held,
        Err(f) if f.statement >= bounded => {
            return Err(super::table_lock::lock_failed(
                tenant,
                f.source,
                fail("table lock"),
            ));
        }
        Err(f) => {
            // The advisory lock is the third statement of `begin`.
            let stage = if f.statement == 2 {
                "advisory lock"
            } else {
                "begin"
            };
            return Err(fail(stage)(f.source));
        }
    };
    // Round trip 2: re-verify under the locks what the steps touch: a plan made on
    // another schema is stale.
    let mut tables: Vec<String> = rechecked.into_iter().map(|(_, t)| t).collect();
    tables.sort_unstable();
    tables.dedup();
    let live =
        super::recheck::reintrospect(held.conn(), &job.schemas(), &tables, job.contracts).await;
    let live = match live {
        Ok(live) => live,
        Err(source) => {
            held.rollback().await;
            return Err(fail("re-introspect under lock")(source));
        }
    };
    if !job.still_matches(&live) {
        held.rollback().await;
        return Err(Error::StalePlan {
            tenant: tenant.to_owned(),
        });
    }
    // Round trip 3: a pinned search path and time zone (not earlier: the re-check must
    // see the search path the check saw, as `format_type` names a type by it), the DDL,
    // and the audit row.
    // The blocks are not in the audit row; what they dropped is (`LEFTOVERS_DROPPED`).
    let statements = job.statements();
    let audit_id = new_audit_id();
    let mut message = vec![
        "SET LOCAL search_path = pg_catalog, pg_temp".to_owned(),
        "SET LOCAL TimeZone = 'UTC'".to_owned(),
    ];
    let pinned = message.len();
    message.extend(cleanup.iter().cloned());
    let cleaned = message.len();
    message.extend(statements.iter().cloned());
    let before_begin_ms = crate::remediation::elapsed_ms(started);
    let mut insert = audit_insert(job, &audit_id, &statements, attempt, before_begin_ms)
        .map_err(fail("audit row"))?;
    if !cleanup.is_empty() {
        // What the blocks dropped, for the record returned (the row lists it already).
        insert.push_str(" RETURNING ");
        insert.push_str(super::online::LEFTOVERS_DROPPED);
        insert.push_str("::text");
    }
    message.push(insert);
    let rows = match held.run(&message).await {
        Ok(rows) => rows,
        Err(f) => {
            let stage = match (
                f.statement.checked_sub(pinned),
                f.statement.checked_sub(cleaned),
            ) {
                (None, _) => "pin search_path",
                (Some(_), None) => "dropping what an interrupted online change left",
                (_, Some(i)) => statements.get(i).map_or("audit row", String::as_str),
            };
            return Err(fail(stage)(f.source));
        }
    };
    let dropped = match rows.last() {
        Some(row) if !cleanup.is_empty() => {
            super::online::dropped_statements(row).map_err(fail("audit row"))?
        }
        _ => Vec::new(),
    };
    let duration_ms = crate::remediation::elapsed_ms(started);
    // Round trip 4. A commit whose answer was lost may have taken effect: never report it
    // unchanged.
    held.commit().await.map_err(|source| {
        if outcome_unknown(&source) {
            Error::OutcomeUnknown {
                tenant: tenant.to_owned(),
                stage: "commit".into(),
                audit_id: audit_id.clone(),
                source,
            }
        } else {
            fail("commit")(source)
        }
    })?;
    // As the row lists them: what the blocks dropped, then the plan's statements.
    let mut recorded = dropped;
    recorded.extend(statements);
    Ok(AuditRecord::applied(
        job,
        audit_id,
        recorded,
        attempt,
        duration_ms,
    ))
}

/// The audit row's `INSERT`, with its values as literals: it travels in the DDL's message,
/// which cannot bind parameters. Its duration is the client's time before `BEGIN` plus the
/// server's since (`now()` is the transaction's start); the record returned to the caller
/// measures until the message was answered, so the two differ by about a round trip.
pub(in crate::postgres) fn audit_insert(
    job: &ApplyJob<'_, Postgres>,
    audit_id: &str,
    statements: &[String],
    attempt: u32,
    before_begin_ms: u64,
) -> std::result::Result<String, sqlx::Error> {
    let table = contract_core::Dialect::Postgres
        .quote_qualified(Some(&job.options.audit.schema), &job.options.audit.table)
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    // `string_literal` reads back exactly whatever the server's quoting settings (a value
    // with a backslash as `E'…'`).
    let text = |field: &str, value: &str| {
        contract_core::Dialect::Postgres
            .string_literal(value)
            .map_err(|_| {
                sqlx::Error::Encode(
                    format!(
                        "the audit row's {field} holds a NUL character, which PostgreSQL text cannot store"
                    )
                    .into(),
                )
            })
    };
    let optional = |field: &str, value: Option<&str>| {
        value.map_or_else(|| Ok("NULL".to_owned()), |value| text(field, value))
    };
    let statements_json = to_json(statements);
    let drift_json = to_json(&job.drift_before);
    // language=SQL
    Ok(format!(
        "INSERT INTO {table} (audit_id, tenant, plan_hash, statements, drift_before, status, actor, attempts, started_at, finished_at, duration_ms, approval_id, approved_by)
         VALUES ({}, {}, {}, {} || {}::jsonb, {}::jsonb, 'applied', {}, {attempt}, now(), clock_timestamp(), {before_begin_ms} + (extract(epoch FROM clock_timestamp() - now()) * 1000)::int8, {}, {})",
        text("audit_id", audit_id)?,
        text("tenant", job.tenant.as_str())?,
        text("plan_hash", &job.plan.hash)?,
        super::online::LEFTOVERS_DROPPED,
        text("statements", &statements_json)?,
        text("drift_before", &drift_json)?,
        text("actor", &job.options.audit.actor)?,
        optional("approval_id", job.approval.and_then(|a| a.id.as_deref()))?,
        optional("approved_by", job.approval.map(|a| a.approver.as_str()))?,
    ))
}

/// A duration as a PostgreSQL timeout setting (`"2000ms"`):
/// [`crate::remediation::timeout_ms`], at most `i32::MAX` ms, about 24.8 days (the server
/// refuses a larger value, which would fail every apply).
pub(super) fn millis(value: std::time::Duration) -> String {
    let ms = crate::remediation::timeout_ms(value).min(i32::MAX.unsigned_abs().into());
    format!("{ms}ms")
}

/// `SET LOCAL name = value` for a duration setting, as one statement.
pub(super) async fn set_local(
    tx: &mut Transaction<'_, Postgres>,
    name: &str,
    value: std::time::Duration,
) -> sqlx::Result<()> {
    sqlx::query("SELECT set_config($1, $2, true)")
        .bind(name)
        .bind(millis(value))
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::millis;

    #[test]
    fn a_timeout_is_never_off_and_never_refused_by_the_server() {
        assert_eq!(millis(Duration::from_millis(2000)), "2000ms");
        // `0ms` turns a PostgreSQL timeout off: zero and sub-millisecond waits stay bounds.
        assert_eq!(millis(Duration::ZERO), "1ms");
        assert_eq!(millis(Duration::from_micros(500)), "1ms");
        assert_eq!(millis(Duration::from_micros(1_500)), "2ms");
        // The largest value the server takes.
        assert_eq!(millis(Duration::MAX), "2147483647ms");
        assert_eq!(millis(Duration::from_millis(1 << 31)), "2147483647ms");
    }
}
