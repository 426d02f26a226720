//! PostgreSQL schema-change signal: an optional DDL event trigger that bumps a per-schema
//! version row and sends `NOTIFY`, a listener that marks the tenant dirty, and the read of
//! those versions a sweep uses while the trigger can be trusted (`ARCHITECTURE.md` D8).

use std::sync::PoisonError;

use sqlx::postgres::PgListener;
use sqlx::{PgPool, Postgres};

use super::Guard;
use crate::backend::SchemaVersions;
use crate::error::error_chain;
use crate::error::{Error, Result, hint};

/// The `NOTIFY` channel the trigger uses; the payload is the schema name.
pub const DDL_CHANNEL: &str = "contract_schema_change";

/// SQLSTATE `insufficient_privilege`.
const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// SQLSTATE `raise_exception`: the install's own ownership check.
const RAISE_EXCEPTION: &str = "P0001";

/// [`UNPINNED_CHANGE`] as a literal, for the trigger's body.
macro_rules! unpinned_change {
    () => {
        "contract: a DDL change not pinned on a schema (an object moved between schemas, an extension)"
    };
}

/// The version row the trigger bumps for a change it cannot pin on the schemas it touched:
/// an object moved to another schema (`ALTER … SET SCHEMA` reports only the new one, so the
/// schema it left would look unchanged) or an object in no schema (`ALTER EXTENSION … SET
/// SCHEMA` moves the extension's types and reports no schema at all). It is no schema's
/// name (longer than PostgreSQL's 63-byte identifiers), so it moves the versions of the
/// schemas that are no tenant's, and a sweep falls back to the catalog signatures; its
/// `NOTIFY` asks the guard for that sweep.
pub const UNPINNED_CHANGE: &str = unpinned_change!();

/// The body of `public.contract_ddl_notify()`, the `ddl_command_end` trigger's function:
/// one version bump and one `NOTIFY` per schema a DDL command touched, and one for
/// [`UNPINNED_CHANGE`] when the command moved an object between schemas or touched one
/// that is in none (but grants: `GRANT`, `REVOKE` and `ALTER DEFAULT PRIVILEGES` change no
/// introspected row). `SET SCHEMA` is recognised, for `ALTER` commands only, in the
/// statement the client sent (`current_query()`): a mention of it elsewhere there only costs
/// a sweep on the signatures; a `SET SCHEMA` run by a function the statement calls is not
/// seen.
macro_rules! ddl_notify_body {
    () => {
        concat!(
            r#"
DECLARE r record;
BEGIN
    FOR r IN
        WITH c AS MATERIALIZED (SELECT * FROM pg_event_trigger_ddl_commands())
        SELECT DISTINCT s.schema_name FROM (
            SELECT COALESCE(c.schema_name,
                            CASE WHEN c.object_type = 'schema' THEN trim(both '"' from c.object_identity) END,
                            CASE WHEN c.command_tag NOT IN ('GRANT', 'REVOKE', 'ALTER DEFAULT PRIVILEGES') THEN '"#,
            unpinned_change!(),
            r#"' END) AS schema_name
            FROM c
            UNION ALL
            SELECT '"#,
            unpinned_change!(),
            r#"'
            WHERE CASE WHEN EXISTS (SELECT FROM c WHERE c.command_tag LIKE 'ALTER %')
                       THEN current_query() ~* '\mset\s+schema\M' ELSE false END) AS s
        WHERE s.schema_name IS NOT NULL AND s.schema_name NOT LIKE 'pg\_temp%' AND s.schema_name NOT LIKE 'pg\_toast%'
    LOOP
        INSERT INTO public.contract_schema_version AS v (schema_name, version, changed_at)
        VALUES (r.schema_name, 1, now())
        ON CONFLICT (schema_name) DO UPDATE SET version = v.version + 1, changed_at = now();
        PERFORM pg_notify('contract_schema_change', r.schema_name);
    END LOOP;
END "#
        )
    };
}

/// The body of `public.contract_drop_notify()`, the `sql_drop` trigger's function.
macro_rules! drop_notify_body {
    () => {
        r#"
DECLARE r record;
BEGIN
    FOR r IN
        SELECT DISTINCT s.schema_name FROM (
            SELECT COALESCE(d.schema_name,
                            CASE WHEN d.object_type = 'schema' THEN d.object_name END) AS schema_name
            FROM pg_event_trigger_dropped_objects() AS d) AS s
        WHERE s.schema_name IS NOT NULL AND s.schema_name NOT LIKE 'pg\_temp%' AND s.schema_name NOT LIKE 'pg\_toast%'
    LOOP
        INSERT INTO public.contract_schema_version AS v (schema_name, version, changed_at)
        VALUES (r.schema_name, 1, now())
        ON CONFLICT (schema_name) DO UPDATE SET version = v.version + 1, changed_at = now();
        PERFORM pg_notify('contract_schema_change', r.schema_name);
    END LOOP;
END "#
    };
}

/// The version table, the two trigger functions and the two event triggers. The triggers
/// fire for every role's DDL, so their functions run as their owner (`SECURITY DEFINER`,
/// with a pinned `search_path` and `standard_conforming_strings`): run as the role that
/// issues the DDL, the version bump failed for any role that may not write the table, and
/// took the DDL down with it. Every role may read the versions (`GRANT SELECT … TO PUBLIC`:
/// schema names and counters, as public as `pg_namespace`), so a guard that is not a
/// superuser can use them. Running as the owner, they must not run anything another role
/// put there: the install fails unless the installing role owns the table and both
/// functions (a table or function created beforehand by another role, with a trigger, a
/// rule, a default or an index expression of its own, would run as the installer).
// language=SQL
const INSTALL: &str = concat!(
    r#"
CREATE TABLE IF NOT EXISTS public.contract_schema_version (
    schema_name text PRIMARY KEY,
    version int8 NOT NULL,
    changed_at timestamptz NOT NULL
);
REVOKE ALL ON public.contract_schema_version FROM PUBLIC;
GRANT SELECT ON public.contract_schema_version TO PUBLIC;
CREATE OR REPLACE FUNCTION public.contract_ddl_notify() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on AS $$"#,
    ddl_notify_body!(),
    r#"$$;
CREATE OR REPLACE FUNCTION public.contract_drop_notify() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on AS $$"#,
    drop_notify_body!(),
    r#"$$;
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_class WHERE oid = 'public.contract_schema_version'::regclass
               AND relowner <> current_user::regrole)
       OR EXISTS (SELECT FROM pg_proc
                  WHERE oid IN ('public.contract_ddl_notify()'::regprocedure, 'public.contract_drop_notify()'::regprocedure)
                  AND proowner <> current_user::regrole) THEN
        RAISE EXCEPTION 'public.contract_schema_version, public.contract_ddl_notify() or public.contract_drop_notify() belongs to another role than %, and would run as %: drop them and install again', current_user, current_user;
    END IF;
END $$;
DROP EVENT TRIGGER IF EXISTS contract_ddl_notify;
CREATE EVENT TRIGGER contract_ddl_notify ON ddl_command_end EXECUTE FUNCTION public.contract_ddl_notify();
DROP EVENT TRIGGER IF EXISTS contract_drop_notify;
CREATE EVENT TRIGGER contract_drop_notify ON sql_drop EXECUTE FUNCTION public.contract_drop_notify();
"#
);

/// One row when both event triggers exist, are enabled (`O`rigin or `A`lways: `R`eplica and
/// `D`isabled triggers do not fire in ordinary sessions), fire for every command tag, run
/// this library's function bodies (`$1`, `$2`) as their owner, the version table's owner
/// (an install from before `SECURITY DEFINER` is not trusted: it is stale, re-run
/// [`install_ddl_trigger`]) and the version table exists: a token of
/// their identities and row versions. Disabling and enabling a trigger, re-creating it,
/// replacing a function or re-creating or truncating the table gives another token, so
/// versions seen under one token say nothing under another.
// language=SQL
const TRIGGER_TOKEN: &str = r#"
SELECT concat_ws(',', string_agg(concat_ws(':', e.oid, e.xmin, e.evtenabled, p.oid, p.xmin), ',' ORDER BY e.oid),
                 min(v.oid::text), min(v.xmin::text)) AS token
FROM pg_event_trigger e
JOIN pg_proc p ON p.oid = e.evtfoid
JOIN pg_namespace pn ON pn.oid = p.pronamespace AND pn.nspname = 'public'
JOIN pg_class v ON v.oid = to_regclass('public.contract_schema_version')
WHERE e.evtenabled IN ('O', 'A') AND e.evttags IS NULL AND p.prosecdef AND p.proowner = v.relowner
  AND ((e.evtname, e.evtevent, p.proname) = ('contract_ddl_notify', 'ddl_command_end', 'contract_ddl_notify') AND p.prosrc = $1
    OR (e.evtname, e.evtevent, p.proname) = ('contract_drop_notify', 'sql_drop', 'contract_drop_notify') AND p.prosrc = $2)
HAVING count(*) = 2
"#;

/// Every schema's version as the triggers left it: the counter and the row's own version
/// (`xmin`), so a row deleted and written again never repeats an old value.
// language=SQL
const VERSIONS: &str =
    "SELECT schema_name, version::text || '.' || xmin::text FROM public.contract_schema_version";

/// The per-schema versions the DDL event trigger maintains, read with the trigger's state
/// in one snapshot; `Ok(None)` when the trigger is not installed, not enabled, altered, or
/// the version table is missing (a pass then reads the catalog signatures instead).
pub(crate) async fn schema_versions(pool: &PgPool) -> Result<Option<SchemaVersions>> {
    let read = async {
        let mut tx = pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        let token: Option<String> = sqlx::query_scalar(TRIGGER_TOKEN)
            .bind(ddl_notify_body!())
            .bind(drop_notify_body!())
            .fetch_optional(&mut *tx)
            .await?;
        let versions = match token {
            Some(token) => {
                let rows: Vec<(String, String)> =
                    sqlx::query_as(VERSIONS).fetch_all(&mut *tx).await?;
                Some(SchemaVersions::new(token, rows.into_iter().collect()))
            }
            None => None,
        };
        tx.commit().await?;
        Ok(versions)
    };
    read.await.map_err(Error::db_hint(
        "reading the DDL trigger's schema versions",
        hint::SERVER,
        None,
    ))
}

/// Installs the DDL event trigger in the pool's database (idempotent). Event triggers need
/// a superuser (or a managed-cloud equivalent): without the privilege this returns
/// [`Error::Privilege`] saying so, and the guard keeps working on periodic revalidation.
///
/// # Errors
///
/// [`Error::Privilege`] when the role may not create event triggers; [`Error::Database`]
/// for other failures.
pub async fn install_ddl_trigger(pool: &PgPool) -> Result<()> {
    let mut tx = pool.begin().await.map_err(Error::db_hint(
        "installing the DDL event trigger",
        hint::SERVER,
        None,
    ))?;
    let installed = sqlx::raw_sql(INSTALL).execute(&mut *tx).await;
    match installed {
        Ok(_) => tx.commit().await.map_err(Error::db_hint(
            "installing the DDL event trigger",
            hint::SERVER,
            None,
        )),
        Err(e)
            if e.as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == INSUFFICIENT_PRIVILEGE) =>
        {
            Err(Error::Privilege {
                what: "create the DDL event trigger",
                hint: "event triggers need a superuser: run install_ddl_trigger once as a superuser \
                       (or skip it; the guard then notices DDL within one revalidation interval)",
                source: e,
            })
        }
        Err(e) => {
            // The install's own check (`RAISE`, SQLSTATE P0001): objects of another role.
            let raised = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == RAISE_EXCEPTION);
            let hint = if raised {
                hint::TRIGGER_OWNERSHIP
            } else {
                hint::SERVER
            };
            Err(Error::db_hint(
                "installing the DDL event trigger",
                hint,
                None,
            )(e))
        }
    }
}

impl Guard<Postgres> {
    /// Makes the next pass a sweep and wakes the background task (the DDL listener
    /// reconnected: changes made while it was away were never notified).
    fn request_sweep(&self) {
        self.inner
            .dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sweep = true;
        self.inner.wake.notify_one();
    }

    /// Listens on [`DDL_CHANNEL`] on a dedicated connection of the guard's start-up pool and
    /// marks the named tenant dirty, so its gate closes promptly after DDL (needs
    /// [`install_ddl_trigger`]; harmless without it): the background task ([`Guard::spawn`])
    /// then introspects only the named tenants, so the delay does not grow with the fleet.
    /// Reconnects after connection loss and then asks the background task for a sweep: DDL
    /// made while the connection was down was never notified. Stops when every clone of the guard is
    /// dropped.
    ///
    /// # Errors
    ///
    /// When the first `LISTEN` fails.
    pub async fn listen_for_ddl(&self) -> Result<tokio::task::JoinHandle<()>> {
        let mut listener = PgListener::connect_with(&self.inner.control)
            .await
            .map_err(Error::db_hint(
                "listening for DDL notifications",
                hint::SERVER,
                None,
            ))?;
        // Reconnect here, not silently inside `try_recv`: the pass must follow the new LISTEN.
        listener.eager_reconnect(false);
        listener.listen(DDL_CHANNEL).await.map_err(Error::db_hint(
            "listening for DDL notifications",
            hint::SERVER,
            None,
        ))?;
        let weak = std::sync::Arc::downgrade(&self.inner);
        Ok(tokio::spawn(async move {
            let mut lost = false;
            loop {
                if lost {
                    // A query on the listener reconnects and listens again; only then is a
                    // pass sure to see every change the lost connection was not told about.
                    match sqlx::query("SELECT 1").execute(&mut listener).await {
                        Ok(_) => {
                            let Some(inner) = weak.upgrade() else { return };
                            tracing::info!(
                                "DDL listener reconnected; sweeping every tenant for changes made meanwhile"
                            );
                            Guard { inner }.request_sweep();
                            lost = false;
                        }
                        Err(error) => {
                            tracing::warn!(error = %error_chain(&error), "DDL listener cannot reconnect yet; retrying");
                            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        }
                    }
                }
                let received =
                    tokio::time::timeout(std::time::Duration::from_secs(1), listener.try_recv())
                        .await;
                let Some(inner) = weak.upgrade() else { return };
                let guard = Guard { inner };
                match received {
                    // A change the trigger could not pin on a schema: only a sweep (which
                    // then falls back to the catalog signatures) finds whom it touched.
                    Ok(Ok(Some(notification))) if notification.payload() == UNPINNED_CHANGE => {
                        guard.request_sweep();
                    }
                    Ok(Ok(Some(notification))) => guard.mark_dirty(notification.payload()),
                    Ok(Ok(None)) => {
                        tracing::warn!("DDL listener lost its connection; reconnecting");
                        lost = true;
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(error = %error_chain(&error), "DDL listener lost its connection; reconnecting");
                        lost = true;
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                    Err(_elapsed) => {}
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::UNPINNED_CHANGE;

    #[test]
    fn the_unpinned_change_row_is_no_schema_s_name_and_the_trigger_writes_it() {
        // PostgreSQL truncates identifiers to 63 bytes: no schema can carry this name.
        assert!(UNPINNED_CHANGE.len() > 63, "{}", UNPINNED_CHANGE.len());
        let body = ddl_notify_body!();
        assert_eq!(
            body.matches(&format!("'{UNPINNED_CHANGE}'")).count(),
            2,
            "{body}"
        );
    }
}
