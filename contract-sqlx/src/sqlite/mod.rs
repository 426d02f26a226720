//! SQLite: one database file per tenant.
//!
//! * Tenants: [`sqlite_tenant_files`] opens one pool per file (file stem = tenant name),
//!   all within one [`ConnectionBudget`] (see `budget`).
//!   A pool may also reach several tenants as attached databases (`ATTACH ... AS
//!   tenant_1`, for example in `after_connect`): [`Backend::schemas_like`] lists those.
//!   A requested tenant that is not an attached database is the pool's `main` database.
//! * Introspection: `pragma_table_list` ⟕ `pragma_table_xinfo` and
//!   `pragma_foreign_key_list`, one bulk query each per pool; `LiveTable::schema` is the
//!   tenant name. Plus `sqlite_schema` per tenant database: the `CREATE TABLE` text and
//!   the index and trigger SQL a type change's table rebuild re-creates (see `apply`).
//! * Types: see `oracle` — the verdict follows the storage classes decoding really sees.
//!   Nullable columns read into non-`Option` fields are reported by the generic diff
//!   (`nullability`, at risk); on SQLite that hazard is silent: sqlx decodes NULL as 0,
//!   0.0, "" or an empty blob instead of failing.

mod apply;
mod budget;
mod files;
mod oracle;
mod parse;
mod quarantine;
mod query;
mod row;

use std::collections::HashMap;

use contract_core::{Dialect, LiveColumn, LiveTable, TypeFit};
use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Row, Sqlite, SqlitePool, ValueRef};

use crate::backend::resolve::{prepare_types, unresolved};
use crate::backend::{Backend, Signatures, TypeMap};
use crate::check::ContractSet;
use crate::check::TypeCheck;
use crate::error::{Error, Result, hint};
use crate::remediation::ApplyJob;
use crate::remediation::AuditRecord;

pub use budget::ConnectionBudget;
pub use files::{sqlite_tenant_files, sqlite_tenant_files_with};

const INTROSPECTING: &str = "introspecting tenant databases";
const RESOLVING: &str = "resolving live column types";

impl Backend for Sqlite {
    const DIALECT: Dialect = Dialect::Sqlite;

    async fn introspect(
        pool: &SqlitePool,
        schemas: &[String],
        contracts: &ContractSet<Self>,
    ) -> Result<Vec<LiveTable>> {
        let tenant = (schemas.len() == 1).then(|| schemas[0].as_str());
        if schemas.is_empty() || contracts.table_names().is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = pool
            .acquire()
            .await
            .map_err(Error::db(INTROSPECTING, tenant))?;
        introspect_on(&mut conn, schemas, contracts)
            .await
            .map_err(Error::db(INTROSPECTING, tenant))
    }

    async fn resolve_types(pool: &SqlitePool, tables: &[LiveTable]) -> Result<TypeMap<Self>> {
        let mut conn = pool.acquire().await.map_err(Error::db(RESOLVING, None))?;
        resolve_on(&mut conn, tables).await
    }

    /// Both on one connection: acquiring twice from the tenant's pool would open a second
    /// connection (a thread and a file) while the first is still being handed back.
    async fn introspect_resolved(
        pool: &SqlitePool,
        schemas: &[String],
        contracts: &ContractSet<Self>,
    ) -> Result<(Vec<LiveTable>, TypeMap<Self>)> {
        let tenant = (schemas.len() == 1).then(|| schemas[0].as_str());
        let mut conn = pool
            .acquire()
            .await
            .map_err(Error::db(INTROSPECTING, tenant))?;
        let live = introspect_on(&mut conn, schemas, contracts)
            .await
            .map_err(Error::db(INTROSPECTING, tenant))?;
        let types = resolve_on(&mut conn, &live).await?;
        Ok((live, types))
    }

    /// `PRAGMA schema_version` of each tenant's database (attached, or the pool's `main`):
    /// SQLite bumps it on every schema change, from any connection.
    async fn signatures(
        pool: &SqlitePool,
        schemas: &[String],
        contracts: &ContractSet<Self>,
    ) -> Result<Option<Signatures>> {
        let _ = contracts;
        let tenant = (schemas.len() == 1).then(|| schemas[0].as_str());
        let context = "reading the schema version of tenant databases";
        let mut conn = pool.acquire().await.map_err(Error::db(context, tenant))?;
        let databases: Vec<String> = sqlx::query_scalar(query::DATABASES)
            .fetch_all(&mut *conn)
            .await
            .map_err(Error::db(context, tenant))?;
        let mut signatures = Signatures::new();
        for schema in schemas {
            let database = database_of(&databases, schema);
            let quoted = Dialect::Sqlite.quote(database).map_err(|e| {
                Error::db(context, tenant)(sqlx::Error::InvalidArgument(e.to_string()))
            })?;
            let version: i64 =
                sqlx::query_scalar(AssertSqlSafe(format!("PRAGMA {quoted}.schema_version")))
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(Error::db(context, tenant))?;
            signatures.insert(schema.clone(), Some(format!("{database}:{version}")));
        }
        Ok(Some(signatures))
    }

    fn fit(check: &TypeCheck<Self>, live: &LiveColumn, types: &TypeMap<Self>) -> TypeFit {
        let (compatible, risk) = oracle::verdict(check, &live.data_type, types);
        TypeFit {
            compatible,
            expected_sql_type: check.expected_sql_type(),
            risk,
        }
    }

    /// Attached databases (not `main` or `temp`) whose name is `LIKE pattern`: the tenants
    /// of a connection that attaches one file per tenant. A pool per file (see
    /// [`sqlite_tenant_files`]) has none, so this returns an empty list there.
    async fn schemas_like(pool: &SqlitePool, pattern: &str) -> Result<Vec<String>> {
        sqlx::query_scalar(query::ATTACHED_LIKE)
            .bind(pattern)
            .fetch_all(pool)
            .await
            .map_err(Error::db("listing attached tenant databases", None))
    }

    async fn registry_names(pool: &SqlitePool, sql: &'static str) -> Result<Vec<String>> {
        sqlx::query_scalar(sql)
            .fetch_all(pool)
            .await
            .map_err(Error::db_hint(
                "running the tenant registry query",
                hint::REGISTRY,
                None,
            ))
    }

    fn describe_pool(pool: &SqlitePool) -> String {
        pool.connect_options().get_filename().display().to_string()
    }

    async fn apply(pool: &SqlitePool, job: &ApplyJob<'_, Self>) -> Result<AuditRecord> {
        apply::apply(pool, job).await
    }
}

/// The type infos decoding sees for the live types of `tables` (see `oracle`), on one
/// connection.
async fn resolve_on(conn: &mut SqliteConnection, tables: &[LiveTable]) -> Result<TypeMap<Sqlite>> {
    let context = RESOLVING;
    let mut types = TypeMap::<Sqlite>::new();
    // The runtime type info of one value per storage class: what decoding checks.
    let row = sqlx::query(query::STORAGE_CLASSES)
        .fetch_one(&mut *conn)
        .await
        .map_err(Error::db(context, None))?;
    for (i, class) in oracle::CLASSES.iter().enumerate() {
        let value = row.try_get_raw(i).map_err(Error::db(context, None))?;
        types.insert(oracle::class_key(class), value.type_info().into_owned());
    }
    if tables.is_empty() {
        return Ok(types);
    }
    // sqlx's reading of each declared type, from a statement over a real column.
    let databases: Vec<String> = sqlx::query_scalar(query::DATABASES)
        .fetch_all(&mut *conn)
        .await
        .map_err(Error::db(context, None))?;
    for table in tables {
        let wanted = unresolved(table, &types);
        if wanted.is_empty() {
            continue;
        }
        let database = database_of(&databases, &table.schema);
        match prepare_types(&mut *conn, database, table, &wanted).await {
            Ok(resolved) => types.extend(resolved),
            // Without sqlx's reading the verdict falls back to the affinity rules.
            Err(error) => tracing::warn!(
                tenant = %table.schema, table = %table.name, error = %crate::error::error_chain(&error),
                "cannot prepare a statement over the table to read its declared types"
            ),
        }
    }
    Ok(types)
}

/// The database a schema's tables are in: the attached database of that name (among
/// `databases`, `pragma_database_list`), else the connection's own file.
fn database_of<'a>(databases: &[String], schema: &'a str) -> &'a str {
    if databases.iter().any(|d| d == schema) {
        schema
    } else {
        "main"
    }
}

/// The bulk catalog queries on one connection (a pooled one, or the remediation's
/// `BEGIN IMMEDIATE` transaction).
pub(crate) async fn introspect_on(
    conn: &mut SqliteConnection,
    schemas: &[String],
    contracts: &ContractSet<Sqlite>,
) -> std::result::Result<Vec<LiveTable>, sqlx::Error> {
    let (tables, columns) = (contracts.table_names(), contracts.column_names());
    if schemas.is_empty() || tables.is_empty() {
        return Ok(Vec::new());
    }
    let databases: Vec<String> = sqlx::query_scalar(query::DATABASES)
        .fetch_all(&mut *conn)
        .await?;
    let fixed = contracts.fixed_schemas();
    let mut labels: HashMap<String, Vec<String>> = HashMap::new();
    for schema in schemas {
        if schema != "main" && databases.contains(schema) {
            labels
                .entry(schema.clone())
                .or_default()
                .push(schema.clone());
        } else if !fixed.contains(schema) {
            labels
                .entry("main".to_owned())
                .or_default()
                .push(schema.clone());
        }
    }

    let mut rows = sqlx::query_as::<_, row::ColumnRow>(AssertSqlSafe(query::columns(
        columns.len(),
        tables.len(),
    )));
    for value in columns.iter().chain(&tables) {
        rows = rows.bind(value);
    }
    let rows = rows.fetch_all(&mut *conn).await?;
    let mut fks =
        sqlx::query_as::<_, row::ForeignKeyRow>(AssertSqlSafe(query::foreign_keys(tables.len())));
    for value in &tables {
        fks = fks.bind(value);
    }
    let fks = fks.fetch_all(&mut *conn).await?;
    // The definitions a table rebuild needs, from each database that holds a tenant.
    let mut objects = Vec::new();
    let mut wanted: Vec<&String> = labels.keys().collect();
    wanted.sort();
    for database in wanted {
        let sql = query::schema_objects(
            &Dialect::Sqlite
                .quote(database)
                .map_err(|e| sqlx::Error::InvalidArgument(e.to_string()))?,
            tables.len(),
        );
        let mut query = sqlx::query_as::<_, row::SchemaObjectRow>(AssertSqlSafe(sql));
        for value in &tables {
            query = query.bind(value);
        }
        for mut object in query.fetch_all(&mut *conn).await? {
            object.schema_name.clone_from(database);
            objects.push(object);
        }
    }
    Ok(parse::tables(rows, fks, objects, &labels))
}
