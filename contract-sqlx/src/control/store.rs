//! Reading and writing the control plane's tables, the same code for every backend (only
//! the SQL text differs, see `sql.rs`).

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Row;

use super::sql::ControlSql;
use super::{Approval, ApprovalTarget, ControlPlane, Replica, TenantStatus};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::guard::{PauseInfo, PausedBy};

/// A backend that can hold the control plane: PostgreSQL, MySQL/MariaDB and SQLite. Its
/// methods are plumbing; use [`ControlPlane`]'s methods.
pub trait ControlStore: Backend + sealed::Sealed {
    #[doc(hidden)]
    fn ensure(
        pool: &sqlx::Pool<Self>,
        plane: &ControlPlane,
    ) -> impl Future<Output = Result<()>> + Send;
    #[doc(hidden)]
    fn load_pauses(
        pool: &sqlx::Pool<Self>,
        plane: &ControlPlane,
    ) -> impl Future<Output = Result<Vec<PauseInfo>>> + Send;
    #[doc(hidden)]
    fn save_pause(
        pool: &sqlx::Pool<Self>,
        plane: &ControlPlane,
        pause: &PauseInfo,
    ) -> impl Future<Output = Result<()>> + Send;
    #[doc(hidden)]
    fn delete_pause(
        pool: &sqlx::Pool<Self>,
        plane: &ControlPlane,
        tenant: &str,
        queue: Option<&str>,
        by: &PausedBy,
    ) -> impl Future<Output = Result<()>> + Send;
    #[doc(hidden)]
    fn load_tenants(
        pool: &sqlx::Pool<Self>,
        plane: &ControlPlane,
    ) -> impl Future<Output = Result<Vec<TenantStatus>>> + Send;
    #[doc(hidden)]
    fn save_tenants(
        pool: &sqlx::Pool<Self>,
        plane: &ControlPlane,
        statuses: &[TenantStatus],
    ) -> impl Future<Output = Result<()>> + Send;
    #[doc(hidden)]
    fn delete_tenants(
        pool: &sqlx::Pool<Self>,
        plane: &ControlPlane,
        tenants: &[String],
    ) -> impl Future<Output = Result<()>> + Send;
    #[doc(hidden)]
    fn insert_approval(
        pool: &sqlx::Pool<Self>,
        plane: &ControlPlane,
        approval: &Approval,
    ) -> impl Future<Output = Result<()>> + Send;
    #[doc(hidden)]
    fn revoke_approval(
        pool: &sqlx::Pool<Self>,
        plane: &ControlPlane,
        id: &str,
        by: &str,
    ) -> impl Future<Output = Result<bool>> + Send;
    #[doc(hidden)]
    fn load_approvals(
        pool: &sqlx::Pool<Self>,
        plane: &ControlPlane,
    ) -> impl Future<Output = Result<Vec<Approval>>> + Send;
    #[doc(hidden)]
    fn reserve_approval(
        pool: &sqlx::Pool<Self>,
        plane: &ControlPlane,
        id: &str,
    ) -> impl Future<Output = Result<bool>> + Send;
    #[doc(hidden)]
    fn release_approval(
        pool: &sqlx::Pool<Self>,
        plane: &ControlPlane,
        id: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    #[doc(hidden)]
    fn heartbeat(
        pool: &sqlx::Pool<Self>,
        plane: &ControlPlane,
        replica: &Replica,
    ) -> impl Future<Output = Result<()>> + Send;
    #[doc(hidden)]
    fn deregister(
        pool: &sqlx::Pool<Self>,
        plane: &ControlPlane,
        replica_id: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    #[doc(hidden)]
    fn load_replicas(
        pool: &sqlx::Pool<Self>,
        plane: &ControlPlane,
    ) -> impl Future<Output = Result<Vec<Replica>>> + Send;
}

mod sealed {
    pub trait Sealed {}
    #[cfg(feature = "postgres")]
    impl Sealed for sqlx::Postgres {}
    #[cfg(feature = "mysql")]
    impl Sealed for sqlx::MySql {}
    #[cfg(feature = "sqlite")]
    impl Sealed for sqlx::Sqlite {}
}

/// RFC 3339 UTC text with microseconds: what every dialect's SQL reads back.
pub(crate) fn time_text(at: SystemTime) -> String {
    humantime::format_rfc3339_micros(at).to_string()
}

/// A timestamp read back as text; an unreadable one is the epoch (never fails a load).
fn parse_time(text: Option<String>) -> Option<SystemTime> {
    text.and_then(|t| humantime::parse_rfc3339_weak(t.trim()).ok())
}

fn time_or_epoch(text: Option<String>) -> SystemTime {
    parse_time(text).unwrap_or(UNIX_EPOCH)
}

fn by_text(by: &PausedBy) -> String {
    match by {
        PausedBy::Guard => "guard".into(),
        PausedBy::Operator(name) => format!("operator:{name}"),
    }
}

fn kind(by: &PausedBy) -> &'static str {
    match by {
        PausedBy::Guard => "guard",
        PausedBy::Operator(_) => "operator",
    }
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

fn unsigned(value: Option<i64>) -> Option<u64> {
    value.and_then(|v| u64::try_from(v).ok())
}

fn signed(value: Option<u64>) -> Option<i64> {
    value.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// `sql` with the plane's quoted table names filled in.
fn sql(template: &str, plane: &ControlPlane, dialect: contract_core::Dialect) -> Result<String> {
    Ok(template
        .replace("{pauses}", &plane.qualified(dialect, "pauses")?)
        .replace("{tenants}", &plane.qualified(dialect, "tenants")?)
        .replace("{approvals}", &plane.qualified(dialect, "approvals")?)
        .replace("{replicas}", &plane.qualified(dialect, "replicas")?))
}

/// Rows → values, the same for every backend's row type.
macro_rules! decode {
    (pause, $row:expr) => {{
        let row = $row;
        let paused_by: String = row.try_get("paused_by")?;
        let queue: String = row.try_get("queue")?;
        let findings: String = row.try_get("findings")?;
        PauseInfo {
            paused_by: match paused_by.strip_prefix("operator:") {
                Some(name) => PausedBy::Operator(name.to_owned()),
                None => PausedBy::Guard,
            },
            queue: (!queue.is_empty()).then_some(queue),
            tenant: row.try_get("tenant")?,
            reason: row.try_get("reason")?,
            findings: serde_json::from_str(&findings).unwrap_or_default(),
            plan_hash: row.try_get("plan_hash")?,
            expected_fingerprint: row.try_get("expected_fingerprint")?,
            observed_fingerprint: row.try_get("observed_fingerprint")?,
            since: time_or_epoch(row.try_get("paused_at")?),
        }
    }};
    (tenant, $row:expr) => {{
        let row = $row;
        let findings: String = row.try_get("findings")?;
        let plan: Option<String> = row.try_get("plan")?;
        TenantStatus {
            tenant: row.try_get("tenant")?,
            verdict: row.try_get("verdict")?,
            detail: row.try_get("detail")?,
            findings: serde_json::from_str(&findings).unwrap_or_default(),
            plan: plan.and_then(|p| serde_json::from_str(&p).ok()),
            waiting: row.try_get("waiting")?,
            location: row.try_get("location")?,
            backlog: row.try_get("backlog")?,
            checked_at: time_or_epoch(row.try_get("checked_at")?),
            changed_at: time_or_epoch(row.try_get("changed_at")?),
            replica: row.try_get("replica")?,
        }
    }};
    (approval, $row:expr) => {{
        let row = $row;
        let kind: String = row.try_get("kind")?;
        let target: String = row.try_get("target")?;
        Approval {
            id: row.try_get("id")?,
            target: if kind == "shape" {
                ApprovalTarget::Shape(target)
            } else {
                ApprovalTarget::Plan(target)
            },
            approver: row.try_get("approver")?,
            note: row.try_get("note")?,
            created_at: time_or_epoch(row.try_get("created_at")?),
            expires_at: parse_time(row.try_get("expires_at")?),
            tenant_cap: unsigned(row.try_get("tenant_cap")?),
            applied: unsigned(row.try_get("applied")?).unwrap_or(0),
            revoked_at: parse_time(row.try_get("revoked_at")?),
            revoked_by: row.try_get("revoked_by")?,
        }
    }};
    (replica, $row:expr) => {{
        let row = $row;
        let contracts: String = row.try_get("contracts")?;
        Replica {
            replica_id: row.try_get("replica_id")?,
            host: row.try_get("host")?,
            pid: row.try_get("pid")?,
            version: row.try_get("version")?,
            contracts: serde_json::from_str(&contracts).unwrap_or_default(),
            started_at: time_or_epoch(row.try_get("started_at")?),
            heartbeat_at: time_or_epoch(row.try_get("heartbeat_at")?),
        }
    }};
}

/// Stamps the same code for each backend: only the SQL text differs.
macro_rules! impl_control_store {
    ($feature:literal, $db:ty, $sql:expr, $create:path) => {
        #[cfg(feature = $feature)]
        impl ControlStore for $db {
            async fn ensure(pool: &sqlx::Pool<Self>, plane: &ControlPlane) -> Result<()> {
                let context = "creating the control-plane tables";
                $create(pool, plane, sql(SQL.create, plane, Self::DIALECT)?, context).await
            }

            async fn load_pauses(
                pool: &sqlx::Pool<Self>,
                plane: &ControlPlane,
            ) -> Result<Vec<PauseInfo>> {
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql(
                    SQL.load_pauses,
                    plane,
                    Self::DIALECT,
                )?))
                .fetch_all(pool)
                .await
                .map_err(Error::control("reading pauses", None))?;
                rows.iter()
                    .map(|row| Ok(decode!(pause, row)))
                    .collect::<std::result::Result<_, sqlx::Error>>()
                    .map_err(Error::control("reading pauses", None))
            }

            async fn save_pause(
                pool: &sqlx::Pool<Self>,
                plane: &ControlPlane,
                pause: &PauseInfo,
            ) -> Result<()> {
                sqlx::query(sqlx::AssertSqlSafe(sql(
                    SQL.save_pause,
                    plane,
                    Self::DIALECT,
                )?))
                .bind(&pause.tenant)
                .bind(pause.queue.as_deref().unwrap_or(""))
                .bind(kind(&pause.paused_by))
                .bind(by_text(&pause.paused_by))
                .bind(&pause.reason)
                .bind(json(&pause.findings))
                .bind(&pause.plan_hash)
                .bind(&pause.expected_fingerprint)
                .bind(&pause.observed_fingerprint)
                .bind(time_text(pause.since))
                .execute(pool)
                .await
                .map_err(Error::control("saving a pause", Some(&pause.tenant)))?;
                Ok(())
            }

            async fn delete_pause(
                pool: &sqlx::Pool<Self>,
                plane: &ControlPlane,
                tenant: &str,
                queue: Option<&str>,
                by: &PausedBy,
            ) -> Result<()> {
                sqlx::query(sqlx::AssertSqlSafe(sql(
                    SQL.delete_pause,
                    plane,
                    Self::DIALECT,
                )?))
                .bind(tenant)
                .bind(queue.unwrap_or(""))
                .bind(kind(by))
                .execute(pool)
                .await
                .map_err(Error::control("removing a pause", Some(tenant)))?;
                Ok(())
            }

            async fn load_tenants(
                pool: &sqlx::Pool<Self>,
                plane: &ControlPlane,
            ) -> Result<Vec<TenantStatus>> {
                let context = "reading tenant status";
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql(
                    SQL.load_tenants,
                    plane,
                    Self::DIALECT,
                )?))
                .fetch_all(pool)
                .await
                .map_err(Error::control(context, None))?;
                rows.iter()
                    .map(|row| Ok(decode!(tenant, row)))
                    .collect::<std::result::Result<_, sqlx::Error>>()
                    .map_err(Error::control(context, None))
            }

            async fn save_tenants(
                pool: &sqlx::Pool<Self>,
                plane: &ControlPlane,
                statuses: &[TenantStatus],
            ) -> Result<()> {
                let context = "saving tenant status";
                if statuses.is_empty() {
                    return Ok(());
                }
                let statement = sql(SQL.save_tenant, plane, Self::DIALECT)?;
                let mut tx = pool.begin().await.map_err(Error::control(context, None))?;
                for status in statuses {
                    sqlx::query(sqlx::AssertSqlSafe(statement.as_str()))
                        .bind(&status.tenant)
                        .bind(&status.verdict)
                        .bind(&status.detail)
                        .bind(json(&status.findings))
                        .bind(status.plan.as_ref().map(json))
                        .bind(status.plan.as_ref().map(|p| p.hash.clone()))
                        .bind(status.plan.as_ref().map(|p| p.shape.clone()))
                        .bind(&status.waiting)
                        .bind(&status.location)
                        .bind(status.backlog)
                        .bind(time_text(status.checked_at))
                        .bind(time_text(status.changed_at))
                        .bind(&status.replica)
                        .execute(&mut *tx)
                        .await
                        .map_err(Error::control(context, Some(&status.tenant)))?;
                }
                tx.commit().await.map_err(Error::control(context, None))
            }

            async fn delete_tenants(
                pool: &sqlx::Pool<Self>,
                plane: &ControlPlane,
                tenants: &[String],
            ) -> Result<()> {
                let context = "removing tenant status";
                let statement = sql(SQL.delete_tenant, plane, Self::DIALECT)?;
                for tenant in tenants {
                    sqlx::query(sqlx::AssertSqlSafe(statement.as_str()))
                        .bind(tenant)
                        .execute(pool)
                        .await
                        .map_err(Error::control(context, Some(tenant)))?;
                }
                Ok(())
            }

            async fn insert_approval(
                pool: &sqlx::Pool<Self>,
                plane: &ControlPlane,
                approval: &Approval,
            ) -> Result<()> {
                sqlx::query(sqlx::AssertSqlSafe(sql(
                    SQL.insert_approval,
                    plane,
                    Self::DIALECT,
                )?))
                .bind(&approval.id)
                .bind(approval.target.kind())
                .bind(approval.target.value())
                .bind(&approval.approver)
                .bind(&approval.note)
                .bind(approval.expires_at.map(time_text))
                .bind(signed(approval.tenant_cap))
                .execute(pool)
                .await
                .map_err(Error::control("recording an approval", None))?;
                Ok(())
            }

            async fn revoke_approval(
                pool: &sqlx::Pool<Self>,
                plane: &ControlPlane,
                id: &str,
                by: &str,
            ) -> Result<bool> {
                let done = sqlx::query(sqlx::AssertSqlSafe(sql(
                    SQL.revoke_approval,
                    plane,
                    Self::DIALECT,
                )?))
                .bind(by)
                .bind(id)
                .execute(pool)
                .await
                .map_err(Error::control("revoking an approval", None))?;
                Ok(done.rows_affected() == 1)
            }

            async fn load_approvals(
                pool: &sqlx::Pool<Self>,
                plane: &ControlPlane,
            ) -> Result<Vec<Approval>> {
                let context = "reading approvals";
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql(
                    SQL.load_approvals,
                    plane,
                    Self::DIALECT,
                )?))
                .fetch_all(pool)
                .await
                .map_err(Error::control(context, None))?;
                rows.iter()
                    .map(|row| Ok(decode!(approval, row)))
                    .collect::<std::result::Result<_, sqlx::Error>>()
                    .map_err(Error::control(context, None))
            }

            async fn reserve_approval(
                pool: &sqlx::Pool<Self>,
                plane: &ControlPlane,
                id: &str,
            ) -> Result<bool> {
                let done = sqlx::query(sqlx::AssertSqlSafe(sql(
                    SQL.reserve_approval,
                    plane,
                    Self::DIALECT,
                )?))
                .bind(id)
                .execute(pool)
                .await
                .map_err(Error::control(
                    "counting a tenant against an approval",
                    None,
                ))?;
                Ok(done.rows_affected() == 1)
            }

            async fn release_approval(
                pool: &sqlx::Pool<Self>,
                plane: &ControlPlane,
                id: &str,
            ) -> Result<()> {
                sqlx::query(sqlx::AssertSqlSafe(sql(
                    SQL.release_approval,
                    plane,
                    Self::DIALECT,
                )?))
                .bind(id)
                .execute(pool)
                .await
                .map_err(Error::control(
                    "returning a tenant to an approval's cap",
                    None,
                ))?;
                Ok(())
            }

            async fn heartbeat(
                pool: &sqlx::Pool<Self>,
                plane: &ControlPlane,
                replica: &Replica,
            ) -> Result<()> {
                sqlx::query(sqlx::AssertSqlSafe(sql(
                    SQL.heartbeat,
                    plane,
                    Self::DIALECT,
                )?))
                .bind(&replica.replica_id)
                .bind(&replica.host)
                .bind(replica.pid)
                .bind(&replica.version)
                .bind(json(&replica.contracts))
                .bind(time_text(replica.started_at))
                .execute(pool)
                .await
                .map_err(Error::control("recording the replica's heartbeat", None))?;
                Ok(())
            }

            async fn deregister(
                pool: &sqlx::Pool<Self>,
                plane: &ControlPlane,
                replica_id: &str,
            ) -> Result<()> {
                sqlx::query(sqlx::AssertSqlSafe(sql(
                    SQL.deregister,
                    plane,
                    Self::DIALECT,
                )?))
                .bind(replica_id)
                .execute(pool)
                .await
                .map_err(Error::control("removing the replica's registration", None))?;
                Ok(())
            }

            async fn load_replicas(
                pool: &sqlx::Pool<Self>,
                plane: &ControlPlane,
            ) -> Result<Vec<Replica>> {
                let context = "reading replicas";
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql(
                    SQL.load_replicas,
                    plane,
                    Self::DIALECT,
                )?))
                .fetch_all(pool)
                .await
                .map_err(Error::control(context, None))?;
                rows.iter()
                    .map(|row| Ok(decode!(replica, row)))
                    .collect::<std::result::Result<_, sqlx::Error>>()
                    .map_err(Error::control(context, None))
            }
        }
    };
}

/// PostgreSQL: under an advisory lock, so replicas starting together do not collide.
#[cfg(feature = "postgres")]
async fn create_postgres(
    pool: &sqlx::PgPool,
    _plane: &ControlPlane,
    ddl: String,
    context: &'static str,
) -> Result<()> {
    crate::postgres::ddl::create_under_lock(pool, "contract:control-plane", ddl, context).await
}

/// MySQL and SQLite: `CREATE TABLE IF NOT EXISTS` is safe against concurrent creators.
macro_rules! create_plain {
    ($name:ident, $feature:literal, $pool:ty) => {
        #[cfg(feature = $feature)]
        async fn $name(
            pool: &$pool,
            _plane: &ControlPlane,
            ddl: String,
            context: &'static str,
        ) -> Result<()> {
            sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
                .execute(pool)
                .await
                .map_err(Error::db_hint(
                    context,
                    crate::error::hint::CREATE_TABLES,
                    None,
                ))?;
            Ok(())
        }
    };
}
create_plain!(create_sqlite, "sqlite", sqlx::SqlitePool);
create_plain!(create_mysql_tables, "mysql", sqlx::MySqlPool);

/// MySQL: then the name columns of an earlier version's tables made byte-for-byte.
#[cfg(feature = "mysql")]
async fn create_mysql(
    pool: &sqlx::MySqlPool,
    plane: &ControlPlane,
    ddl: String,
    context: &'static str,
) -> Result<()> {
    create_mysql_tables(pool, plane, ddl, context).await?;
    super::mysql_collation::upgrade(pool, plane).await;
    Ok(())
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;
    const SQL: ControlSql = super::super::sql::POSTGRES;
    impl_control_store!("postgres", sqlx::Postgres, SQL, create_postgres);
}
#[cfg(feature = "mysql")]
mod my {
    use super::*;
    const SQL: ControlSql = super::super::sql::MYSQL;
    impl_control_store!("mysql", sqlx::MySql, SQL, create_mysql);
}
#[cfg(feature = "sqlite")]
mod lite {
    use super::*;
    const SQL: ControlSql = super::super::sql::SQLITE;
    impl_control_store!("sqlite", sqlx::Sqlite, SQL, create_sqlite);
}

/// How long a replica's heartbeat counts as live without a refresh.
pub(crate) fn heartbeat_expiry(interval: Duration) -> Duration {
    interval.saturating_mul(3).max(Duration::from_secs(3))
}
