//! The backlog of a queue table: how many messages wait in each tenant's queue, for the
//! guard's backlog monitor ([`crate::guard::BacklogSource`]).

use std::collections::HashMap;

use contract_core::Dialect;
use futures_util::future::BoxFuture;
use sqlx::Row as _;

use super::QueueTable;
use crate::error::{Error, Result, hint};
use crate::guard::BacklogSource;
use crate::tenants::TenantDirectory;

/// Tenants counted per query on a server (one `UNION ALL` of counts).
const CHUNK: usize = 100;

/// Counts the rows of each tenant's queue table: the backlog the guard reports and
/// follows after a tenant resumes.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool) -> contract_sqlx::Result<()> {
/// # use contract_sqlx::Contract;
/// # #[derive(sqlx::FromRow, Contract)] #[contract(table = "events")] struct Event { id: i64 }
/// use contract_sqlx::quarantine::{QueueBacklog, QueueTable};
/// let guard = contract_sqlx::Guard::<sqlx::Postgres>::builder()
///     .contract::<Event>()
///     .backlog(QueueBacklog::new(QueueTable::new("jobs")))
///     .start(&pool)
///     .await?;
/// # let _ = guard; Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueBacklog {
    table: QueueTable,
}

impl QueueBacklog {
    /// The backlog of the queue table `table` in every tenant.
    #[must_use]
    pub fn new(table: QueueTable) -> Self {
        Self { table }
    }

    /// `SELECT <tenant>, count(*) FROM <queue> UNION ALL …` for `tenants`.
    fn union(&self, dialect: Dialect, tenants: &[&str]) -> Result<String> {
        let mut selects = Vec::with_capacity(tenants.len());
        for (i, tenant) in tenants.iter().enumerate() {
            let schema = (dialect != Dialect::Sqlite).then_some(*tenant);
            let queue = dialect.quote_qualified(schema, &self.table.table)?;
            let label = match dialect {
                Dialect::Postgres => format!("${}::text", i + 1),
                Dialect::MySql => "CAST(? AS CHAR)".to_owned(),
                Dialect::Sqlite => "?".to_owned(),
            };
            // language=SQL
            selects.push(format!(
                "SELECT {label} AS tenant, CAST(count(*) AS {}) AS depth FROM {queue}",
                if dialect == Dialect::MySql {
                    "SIGNED"
                } else {
                    "BIGINT"
                }
            ));
        }
        Ok(selects.join(" UNION ALL "))
    }
}

/// Stamps the same counting code for each backend (only the SQL differs).
macro_rules! impl_backlog {
    ($feature:literal, $db:ty) => {
        #[cfg(feature = $feature)]
        impl BacklogSource<$db> for QueueBacklog {
            fn depths<'a>(
                &'a self,
                directory: &'a TenantDirectory<$db>,
                tenants: &'a [String],
            ) -> BoxFuture<'a, Result<HashMap<String, u64>>> {
                Box::pin(async move {
                    let dialect = <$db as crate::backend::Backend>::DIALECT;
                    let mut depths = HashMap::new();
                    for (pool, names) in directory.groups() {
                        let names: Vec<&str> = names
                            .iter()
                            .map(contract_core::TenantName::as_str)
                            .filter(|t| tenants.iter().any(|w| w == t))
                            .collect();
                        for chunk in names.chunks(CHUNK) {
                            let counted = count(pool, &self.union(dialect, chunk)?, chunk).await;
                            match counted {
                                Ok(found) => depths.extend(found),
                                // One tenant without the table fails the union: count one by one.
                                Err(_) if chunk.len() > 1 => {
                                    for tenant in chunk {
                                        let one = std::slice::from_ref(tenant);
                                        if let Ok(found) = count(pool, &self.union(dialect, one)?, one).await {
                                            depths.extend(found);
                                        }
                                    }
                                }
                                Err(error) => {
                                    tracing::debug!(tenant = chunk[0], %error, "queue backlog not counted");
                                }
                            }
                        }
                    }
                    Ok(depths)
                })
            }

            fn describe(&self) -> String {
                format!("queue table `{}`", self.table.table)
            }
        }
    };
}

/// Runs one counting query, binding each tenant's label.
async fn count<DB: crate::backend::Backend>(
    pool: &sqlx::Pool<DB>,
    sql: &str,
    tenants: &[&str],
) -> Result<HashMap<String, u64>>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    i64: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut query = sqlx::query::<DB>(sqlx::AssertSqlSafe(sql.to_owned()));
    for tenant in tenants {
        query = query.bind(*tenant);
    }
    let rows = query.fetch_all(pool).await.map_err(Error::db_hint(
        "counting the queue backlog",
        hint::TABLE,
        None,
    ))?;
    let mut depths = HashMap::new();
    for row in rows {
        let tenant: String = row.try_get(0).map_err(Error::db_hint(
            "counting the queue backlog",
            hint::TABLE,
            None,
        ))?;
        let depth: i64 = row.try_get(1).map_err(Error::db_hint(
            "counting the queue backlog",
            hint::TABLE,
            None,
        ))?;
        depths.insert(tenant, u64::try_from(depth).unwrap_or(0));
    }
    Ok(depths)
}

impl_backlog!("postgres", sqlx::Postgres);
impl_backlog!("mysql", sqlx::MySql);
impl_backlog!("sqlite", sqlx::Sqlite);
