//! The type probe: the type info sqlx's decoding sees for each live column type, from one
//! prepared statement (`ARCHITECTURE.md` D3), and never from a connection that remembers a
//! renamed type under its old name.

use sqlx::postgres::{PgTypeInfo, types::Oid};
use sqlx::{
    AssertSqlSafe, Column, Executor, PgConnection, PgPool, SqlSafeStr, Statement, TypeInfo,
};

use crate::error::{Error, Result};

/// The first oid of an object not created by `initdb` (PostgreSQL's `FirstNormalObjectId`):
/// below it, sqlx names a type from its own table, never from the connection's cache.
const FIRST_USER_OID: u32 = 16_384;

/// The type info decoding sees for each of `keys`, from one prepared probe.
///
/// sqlx resolves a user-defined type once per connection, by oid, and keeps its name
/// (`oid::regtype`) for the connection's life; `ALTER TYPE … RENAME` (or a rename of the
/// type's schema) keeps the oid. A probe answered from such a connection would call a
/// column compliant that a new connection cannot decode. So the names of the user-defined
/// types among the answers are compared with the catalog's on the same connection, and a
/// connection that answered stale names is closed (never reused, by the probe or anyone
/// else) and the probe asked again; at worst every pooled connection is closed and the
/// pool opens a new one.
pub(super) async fn probe(
    pool: &PgPool,
    keys: &[&str],
) -> Result<Vec<(String, sqlx::postgres::PgTypeInfo)>> {
    let select: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| format!("NULL::{key} AS c{i}"))
        .collect();
    let sql = format!("SELECT {}", select.join(", "));
    let context = "resolving live column types";
    let attempts = pool.options().get_max_connections().saturating_add(1);
    for _ in 0..attempts {
        let mut conn = pool.acquire().await.map_err(Error::db(context, None))?;
        let statement = (&mut *conn)
            .prepare(AssertSqlSafe(sql.clone()).into_sql_str())
            .await
            .map_err(Error::db(context, None))?;
        let resolved: Vec<(String, sqlx::postgres::PgTypeInfo)> = keys
            .iter()
            .zip(statement.columns())
            .map(|(key, column)| ((*key).to_owned(), column.type_info().clone()))
            .collect();
        if names_are_current(&mut conn, resolved.iter().map(|(_, t)| t))
            .await
            .map_err(Error::db(context, None))?
        {
            return Ok(resolved);
        }
        tracing::info!(
            "a pooled connection holds a user-defined type under a name it no longer has; closing it"
        );
        conn.close_on_drop();
    }
    Err(Error::db(context, None)(sqlx::Error::Configuration(
        format!(
            "every pooled connection answered a renamed type under its old name ({attempts} tried)"
        )
        .into(),
    )))
}

/// Whether every user-defined type among `types` still has, in the catalog, the name the
/// connection resolved it under (sqlx's `oid::regtype::text`, read on the same connection,
/// so under the same search path).
async fn names_are_current<'a>(
    conn: &mut PgConnection,
    types: impl Iterator<Item = &'a PgTypeInfo>,
) -> std::result::Result<bool, sqlx::Error> {
    let (oids, names): (Vec<Oid>, Vec<&str>) = types
        .filter_map(|t| {
            t.oid()
                .filter(|oid| oid.0 >= FIRST_USER_OID)
                .map(|oid| (oid, t.name()))
        })
        .unzip();
    if oids.is_empty() {
        return Ok(true);
    }
    let current: Vec<String> = sqlx::query_scalar(
        "SELECT o::regtype::text FROM unnest($1::oid[]) WITH ORDINALITY AS u(o, i) ORDER BY i",
    )
    .bind(&oids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(current.len() == names.len() && current.iter().zip(&names).all(|(c, n)| c == n))
}
