//! MySQL / MariaDB: one database per tenant.
//!
//! * Introspection: `information_schema` (`TABLES` ⟕ `COLUMNS`, `KEY_COLUMN_USAGE`, and
//!   MariaDB's `CHECK_CONSTRAINTS` to recognise its `JSON` alias), each one bulk query over
//!   every tenant database, filtered on the contracted tables and columns (`ARCHITECTURE.md` D3).
//! * Types: `MySqlTypeInfo` has no public constructor, so each distinct live type key is
//!   resolved by preparing `SELECT <columns> FROM <db>.<table>` on the first table that
//!   has it: a fleet of identical tenants costs one prepare per distinct definition.
//! * Fit: sqlx's `compatible()` (`ARCHITECTURE.md` D1) plus the value-dependent hazards it does not
//!   see: integer width, JSON text in a non-JSON column, UUID byte length.

mod apply;
mod parse;
mod quarantine;
mod query;
mod reconcile;
mod row;

use contract_core::{Dialect, LiveColumn, LiveTable, TenantName, TypeFit, rules};
use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, MySql, MySqlPool, Pool};

use crate::backend::resolve::{prepare_types, unresolved};
use crate::backend::{Backend, TypeMap};
use crate::check::ContractSet;
use crate::check::TypeCheck;
use crate::error::{Error, Result, hint};
use crate::remediation::ApplyJob;
use crate::remediation::{AuditRecord, ReconciledAudit};

impl Backend for MySql {
    const DIALECT: Dialect = Dialect::MySql;

    async fn introspect(
        pool: &MySqlPool,
        schemas: &[String],
        contracts: &ContractSet<Self>,
    ) -> Result<Vec<LiveTable>> {
        let context = "introspecting tenant databases";
        // Nothing to read: no connection needed.
        if schemas.is_empty() || contracts.table_names().is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = pool.acquire().await.map_err(Error::db(context, None))?;
        introspect_on(&mut conn, schemas, contracts)
            .await
            .map_err(Error::db(context, None))
    }

    async fn resolve_types(pool: &MySqlPool, tables: &[LiveTable]) -> Result<TypeMap<Self>> {
        let mut types = TypeMap::<Self>::new();
        for table in tables {
            let wanted = unresolved(table, &types);
            if wanted.is_empty() {
                continue;
            }
            match prepare_types(pool, &table.schema, table, &wanted).await {
                Ok(resolved) => types.extend(resolved),
                // Another tenant with the same definition may still resolve these keys; a
                // key nobody resolves is reported as a type mismatch with its live type.
                Err(error) => tracing::warn!(
                    database = %table.schema, table = %table.name, error = %crate::error::error_chain(&error),
                    "cannot prepare a statement over the table to resolve its column types"
                ),
            }
        }
        Ok(types)
    }

    fn fit(check: &TypeCheck<Self>, live: &LiveColumn, types: &TypeMap<Self>) -> TypeFit {
        let expected_sql_type = check.expected_sql_type();
        let compatible = types
            .get(&live.type_key)
            .is_some_and(|ti| check.is_compatible(ti));
        let risk = if compatible {
            value_risk(check, &expected_sql_type, live)
        } else {
            None
        };
        TypeFit {
            compatible,
            expected_sql_type,
            risk,
        }
    }

    async fn schemas_like(pool: &MySqlPool, pattern: &str) -> Result<Vec<String>> {
        sqlx::query_scalar(query::SCHEMAS_LIKE)
            .bind(pattern)
            .fetch_all(pool)
            .await
            .map_err(Error::db("listing tenant databases", None))
    }

    async fn registry_names(pool: &MySqlPool, sql: &'static str) -> Result<Vec<String>> {
        sqlx::query_scalar(sql)
            .fetch_all(pool)
            .await
            .map_err(Error::db_hint(
                "running the tenant registry query",
                hint::REGISTRY,
                None,
            ))
    }

    fn describe_pool(pool: &Pool<Self>) -> String {
        let options = pool.connect_options();
        match options.get_socket() {
            Some(socket) => format!("mysql://{}", socket.display()),
            None => format!(
                "mysql://{}:{}/{}",
                options.get_host(),
                options.get_port(),
                options.get_database().unwrap_or("")
            ),
        }
    }

    async fn reconcile_audits(
        pool: &MySqlPool,
        tenants: &[TenantName],
        contracts: &ContractSet<Self>,
        options: &crate::remediation::ApplyOptions,
    ) -> Vec<ReconciledAudit> {
        reconcile::reconcile(pool, tenants, contracts, &options.audit).await
    }

    async fn apply(pool: &MySqlPool, job: &ApplyJob<'_, Self>) -> Result<AuditRecord> {
        apply::apply(pool, job).await
    }
}

/// `ER_BAD_FIELD_ERROR`: MySQL 8's `CHECK_CONSTRAINTS` has no `TABLE_NAME` or `LEVEL`.
const BAD_FIELD_ERROR: u16 = 1054;
/// `ER_UNKNOWN_TABLE`: MySQL 5.7 has no `CHECK_CONSTRAINTS` view at all.
const UNKNOWN_TABLE: u16 = 1109;

/// The bulk catalog queries on one connection (a pooled one, or the remediation's
/// dedicated connection that holds the tenant lock).
pub(crate) async fn introspect_on(
    conn: &mut MySqlConnection,
    schemas: &[String],
    contracts: &ContractSet<MySql>,
) -> std::result::Result<Vec<LiveTable>, sqlx::Error> {
    let (tables, columns) = (contracts.table_names(), contracts.column_names());
    if schemas.is_empty() || tables.is_empty() {
        return Ok(Vec::new());
    }
    let sql = query::columns(schemas.len(), tables.len(), columns.len());
    let mut rows = sqlx::query_as::<_, row::ColumnRow>(AssertSqlSafe(sql));
    for value in columns.iter().chain(schemas).chain(&tables) {
        rows = rows.bind(value);
    }
    let rows = rows.fetch_all(&mut *conn).await?;

    let mut keys =
        sqlx::query_as::<_, row::KeyRow>(AssertSqlSafe(query::keys(schemas.len(), tables.len())));
    for value in schemas.iter().chain(&tables) {
        keys = keys.bind(value);
    }
    let keys = keys.fetch_all(&mut *conn).await?;

    let mut json = sqlx::query_as::<_, row::JsonCheckRow>(AssertSqlSafe(query::json_checks(
        schemas.len(),
        tables.len(),
    )));
    for value in schemas.iter().chain(&tables) {
        json = json.bind(value);
    }
    // MySQL proper has a native JSON type and a CHECK_CONSTRAINTS view without these
    // columns: exactly that error means "no MariaDB JSON columns"; any other error (a
    // timeout, a dropped connection) is an error, not an empty answer.
    let json = match json.fetch_all(&mut *conn).await {
        Ok(json) => json,
        Err(error)
            if matches!(
                apply::error_number(&error),
                Some(BAD_FIELD_ERROR | UNKNOWN_TABLE)
            ) =>
        {
            Vec::new()
        }
        Err(error) => return Err(error),
    };
    Ok(parse::tables(rows, keys, &json))
}

/// Hazards `compatible()` accepts but some values fail to decode.
fn value_risk(
    check: &TypeCheck<MySql>,
    expected_sql_type: &str,
    live: &LiveColumn,
) -> Option<String> {
    if let Some(risk) = rules::mysql_width_risk(expected_sql_type, &live.data_type) {
        return Some(risk);
    }
    let live_type = &live.data_type;
    match rules::rust_type_name(check.rust_type()) {
        "Json" | "Value" | "JsonValue" | "RawValue" if live_type != "json" => Some(format!(
            "{live_type} (values that are not valid JSON fail to decode)"
        )),
        "Uuid" if live_type != "binary(16)" => Some(format!(
            "{live_type} (values that are not exactly 16 bytes fail to decode)"
        )),
        "Hyphenated" | "Simple" => Some(format!(
            "{live_type} (text that is not a UUID fails to decode)"
        )),
        _ => None,
    }
}
