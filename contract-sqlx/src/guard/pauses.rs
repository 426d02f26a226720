//! Persisted pauses: a table every replica reads, so operator pauses survive restarts and
//! guard pauses are visible fleet-wide (with who, why, when and the fingerprints).

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use contract_core::Dialect;

use super::gate::{PauseInfo, PausedBy};
use crate::backend::Backend;
use crate::error::{Error, Result};

/// Where pauses are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseTable {
    /// Schema (PostgreSQL) or database (MySQL); ignored on SQLite.
    pub schema: Option<String>,
    /// Table name.
    pub table: String,
}

impl Default for PauseTable {
    fn default() -> Self {
        Self {
            schema: Some("public".into()),
            table: "contract_pauses".into(),
        }
    }
}

impl PauseTable {
    fn qualified(&self, dialect: Dialect) -> Result<String> {
        let schema = if dialect == Dialect::Sqlite {
            None
        } else {
            self.schema.as_deref()
        };
        Ok(dialect.quote_qualified(schema, &self.table)?)
    }
}

/// One stored pause.
#[derive(Debug, sqlx::FromRow)]
struct PauseRow {
    tenant: String,
    queue: String,
    paused_by: String,
    reason: String,
    findings: String,
    plan_hash: Option<String>,
    expected_fingerprint: Option<String>,
    observed_fingerprint: Option<String>,
    paused_at_ms: i64,
}

impl PauseRow {
    fn into_info(self) -> PauseInfo {
        PauseInfo {
            paused_by: match self.paused_by.strip_prefix("operator:") {
                Some(name) => PausedBy::Operator(name.to_owned()),
                None => PausedBy::Guard,
            },
            queue: (!self.queue.is_empty()).then_some(self.queue),
            tenant: self.tenant,
            reason: self.reason,
            findings: serde_json::from_str(&self.findings).unwrap_or_default(),
            plan_hash: self.plan_hash,
            expected_fingerprint: self.expected_fingerprint,
            observed_fingerprint: self.observed_fingerprint,
            since: UNIX_EPOCH
                + Duration::from_millis(u64::try_from(self.paused_at_ms).unwrap_or(0)),
        }
    }
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

fn millis(at: SystemTime) -> i64 {
    i64::try_from(
        at.duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
    )
    .unwrap_or(i64::MAX)
}

/// A backend that can persist pauses.
pub trait PauseStore: Backend {
    /// Creates the pause table if it is missing.
    fn ensure_pause_table(
        pool: &sqlx::Pool<Self>,
        table: &PauseTable,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Every stored pause.
    fn load_pauses(
        pool: &sqlx::Pool<Self>,
        table: &PauseTable,
    ) -> impl Future<Output = Result<Vec<PauseInfo>>> + Send;
    /// Stores (or replaces) a pause.
    fn save_pause(
        pool: &sqlx::Pool<Self>,
        table: &PauseTable,
        pause: &PauseInfo,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Removes the pause of `tenant` / `queue` made by `by`'s kind (guard or operator).
    fn delete_pause(
        pool: &sqlx::Pool<Self>,
        table: &PauseTable,
        tenant: &str,
        queue: Option<&str>,
        by: &PausedBy,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// SQL text that differs per dialect.
struct PauseSql {
    create: &'static str,
    upsert: &'static str,
    delete: &'static str,
}

#[cfg(feature = "postgres")]
// language=SQL
const PG_SQL: PauseSql = PauseSql {
    create: "CREATE TABLE IF NOT EXISTS {t} (tenant text NOT NULL, queue text NOT NULL, kind text NOT NULL, \
             paused_by text NOT NULL, reason text NOT NULL, findings text NOT NULL, plan_hash text, \
             expected_fingerprint text, observed_fingerprint text, paused_at_ms int8 NOT NULL, \
             PRIMARY KEY (tenant, queue, kind))",
    upsert: "INSERT INTO {t} (tenant, queue, kind, paused_by, reason, findings, plan_hash, expected_fingerprint, \
             observed_fingerprint, paused_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (tenant, queue, kind) DO UPDATE SET paused_by = excluded.paused_by, reason = excluded.reason, \
             findings = excluded.findings, plan_hash = excluded.plan_hash, \
             expected_fingerprint = excluded.expected_fingerprint, observed_fingerprint = excluded.observed_fingerprint",
    delete: "DELETE FROM {t} WHERE tenant = $1 AND queue = $2 AND kind = $3",
};

#[cfg(feature = "sqlite")]
// language=SQL
const SQLITE_SQL: PauseSql = PauseSql {
    create: "CREATE TABLE IF NOT EXISTS {t} (tenant TEXT NOT NULL, queue TEXT NOT NULL, kind TEXT NOT NULL, \
             paused_by TEXT NOT NULL, reason TEXT NOT NULL, findings TEXT NOT NULL, plan_hash TEXT, \
             expected_fingerprint TEXT, observed_fingerprint TEXT, paused_at_ms INTEGER NOT NULL, \
             PRIMARY KEY (tenant, queue, kind))",
    upsert: "INSERT INTO {t} (tenant, queue, kind, paused_by, reason, findings, plan_hash, expected_fingerprint, \
             observed_fingerprint, paused_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (tenant, queue, kind) DO UPDATE SET paused_by = excluded.paused_by, reason = excluded.reason, \
             findings = excluded.findings, plan_hash = excluded.plan_hash, \
             expected_fingerprint = excluded.expected_fingerprint, observed_fingerprint = excluded.observed_fingerprint",
    delete: "DELETE FROM {t} WHERE tenant = ? AND queue = ? AND kind = ?",
};

#[cfg(feature = "mysql")]
// language=SQL
const MYSQL_SQL: PauseSql = PauseSql {
    create: "CREATE TABLE IF NOT EXISTS {t} (tenant VARCHAR(64) NOT NULL, queue VARCHAR(191) NOT NULL, \
             kind VARCHAR(16) NOT NULL, paused_by TEXT NOT NULL, reason TEXT NOT NULL, findings LONGTEXT NOT NULL, \
             plan_hash TEXT, expected_fingerprint TEXT, observed_fingerprint TEXT, paused_at_ms BIGINT NOT NULL, \
             PRIMARY KEY (tenant, queue, kind))",
    upsert: "INSERT INTO {t} (tenant, queue, kind, paused_by, reason, findings, plan_hash, expected_fingerprint, \
             observed_fingerprint, paused_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE paused_by = VALUES(paused_by), reason = VALUES(reason), \
             findings = VALUES(findings), plan_hash = VALUES(plan_hash), \
             expected_fingerprint = VALUES(expected_fingerprint), observed_fingerprint = VALUES(observed_fingerprint)",
    delete: "DELETE FROM {t} WHERE tenant = ? AND queue = ? AND kind = ?",
};

fn sql(
    template: &str,
    table: &PauseTable,
    dialect: Dialect,
) -> Result<sqlx::AssertSqlSafe<String>> {
    Ok(sqlx::AssertSqlSafe(
        template.replace("{t}", &table.qualified(dialect)?),
    ))
}

/// Stamps the same code for each backend: only the SQL text differs.
macro_rules! impl_pause_store {
    ($feature:literal, $db:ty, $sql:expr, $create:path) => {
        #[cfg(feature = $feature)]
        impl PauseStore for $db {
            async fn ensure_pause_table(pool: &sqlx::Pool<Self>, table: &PauseTable) -> Result<()> {
                let context = "creating the pause table (grant CREATE, or create it beforehand)";
                $create(pool, sql($sql.create, table, Self::DIALECT)?.0, context).await
            }

            async fn load_pauses(pool: &sqlx::Pool<Self>, table: &PauseTable) -> Result<Vec<PauseInfo>> {
                let select = format!(
                    "SELECT tenant, queue, paused_by, reason, findings, plan_hash, expected_fingerprint, \
                     observed_fingerprint, paused_at_ms FROM {} ORDER BY tenant, queue, kind",
                    table.qualified(Self::DIALECT)?
                );
                let rows: Vec<PauseRow> = sqlx::query_as(sqlx::AssertSqlSafe(select))
                    .fetch_all(pool)
                    .await
                    .map_err(Error::db("reading pauses", None))?;
                Ok(rows.into_iter().map(PauseRow::into_info).collect())
            }

            async fn save_pause(pool: &sqlx::Pool<Self>, table: &PauseTable, pause: &PauseInfo) -> Result<()> {
                sqlx::query(sql($sql.upsert, table, Self::DIALECT)?)
                    .bind(&pause.tenant)
                    .bind(pause.queue.as_deref().unwrap_or(""))
                    .bind(kind(&pause.paused_by))
                    .bind(by_text(&pause.paused_by))
                    .bind(&pause.reason)
                    .bind(serde_json::to_string(&pause.findings).unwrap_or_else(|_| "[]".into()))
                    .bind(&pause.plan_hash)
                    .bind(&pause.expected_fingerprint)
                    .bind(&pause.observed_fingerprint)
                    .bind(millis(pause.since))
                    .execute(pool)
                    .await
                    .map_err(Error::db("saving a pause", Some(&pause.tenant)))?;
                Ok(())
            }

            async fn delete_pause(
                pool: &sqlx::Pool<Self>,
                table: &PauseTable,
                tenant: &str,
                queue: Option<&str>,
                by: &PausedBy,
            ) -> Result<()> {
                sqlx::query(sql($sql.delete, table, Self::DIALECT)?)
                    .bind(tenant)
                    .bind(queue.unwrap_or(""))
                    .bind(kind(by))
                    .execute(pool)
                    .await
                    .map_err(Error::db("removing a pause", Some(tenant)))?;
                Ok(())
            }
        }
    };
}

/// PostgreSQL: under an advisory lock, so replicas starting together do not collide.
#[cfg(feature = "postgres")]
async fn create_postgres(pool: &sqlx::PgPool, ddl: String, context: &'static str) -> Result<()> {
    crate::postgres::ddl::create_under_lock(pool, "contract:pause-table", ddl, context).await
}

/// SQLite and MySQL: `CREATE TABLE IF NOT EXISTS` is safe against concurrent creators.
macro_rules! create_plain {
    ($name:ident, $feature:literal, $pool:ty) => {
        #[cfg(feature = $feature)]
        async fn $name(pool: &$pool, ddl: String, context: &'static str) -> Result<()> {
            sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
                .execute(pool)
                .await
                .map_err(Error::db(context, None))?;
            Ok(())
        }
    };
}
create_plain!(create_sqlite, "sqlite", sqlx::SqlitePool);
create_plain!(create_mysql, "mysql", sqlx::MySqlPool);

impl_pause_store!("postgres", sqlx::Postgres, PG_SQL, create_postgres);
impl_pause_store!("sqlite", sqlx::Sqlite, SQLITE_SQL, create_sqlite);
impl_pause_store!("mysql", sqlx::MySql, MYSQL_SQL, create_mysql);
