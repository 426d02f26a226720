//! Rows a rewrite would touch, from each backend's catalog estimates: PostgreSQL's
//! `pg_class.reltuples`, MySQL's `information_schema.TABLES.TABLE_ROWS`; SQLite keeps
//! none (reading every file to count would be a scan, not an estimate).

#[cfg(any(feature = "postgres", feature = "mysql"))]
use std::collections::HashMap;

use super::connect::Db;
use super::plans::{PlansReport, RowEstimate, rewritten_tables};
#[cfg(any(feature = "postgres", feature = "mysql"))]
use crate::error::Error;
use crate::error::Result;

/// Fills in each group's estimate.
pub(crate) async fn fill(db: &Db, report: &mut PlansReport) -> Result<()> {
    for group in &mut report.shapes {
        let wanted = rewritten_tables(group);
        let (known, source) = match db {
            #[cfg(feature = "postgres")]
            Db::Postgres(pool) => (postgres(pool, &wanted).await?, "pg_class.reltuples"),
            #[cfg(feature = "mysql")]
            Db::MySql(pool) => (
                mysql(pool, &wanted).await?,
                "information_schema.TABLES.TABLE_ROWS",
            ),
            #[cfg(feature = "sqlite")]
            Db::Sqlite(_) => (Vec::<Option<i64>>::new(), "SQLite keeps no row estimate"),
        };
        let rows: Vec<i64> = known.into_iter().flatten().collect();
        group.estimated_rows = RowEstimate {
            rows: (!rows.is_empty()).then(|| rows.iter().sum()),
            tables: wanted.len(),
            unknown: wanted.len() - rows.len(),
            source,
        };
    }
    Ok(())
}

/// One estimate per wanted `(schema, table)`, `None` when never analysed (-1) or absent.
#[cfg(feature = "postgres")]
async fn postgres(pool: &sqlx::PgPool, wanted: &[(String, String)]) -> Result<Vec<Option<i64>>> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let (schemas, tables): (Vec<&str>, Vec<&str>) =
        wanted.iter().map(|(s, t)| (s.as_str(), t.as_str())).unzip();
    // language=SQL
    let rows: Vec<(String, String, Option<i64>)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text,
                CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::int8 END
         FROM unnest($1::text[], $2::text[]) AS w(schema_name, table_name)
         JOIN pg_namespace AS n ON n.nspname = w.schema_name
         JOIN pg_class AS c ON c.relnamespace = n.oid AND c.relname = w.table_name
         WHERE c.relkind IN ('r', 'p')",
    )
    .bind(&schemas)
    .bind(&tables)
    .fetch_all(pool)
    .await
    .map_err(Error::db("reading row estimates from pg_class", None))?;
    let known: HashMap<(String, String), Option<i64>> =
        rows.into_iter().map(|(s, t, n)| ((s, t), n)).collect();
    Ok(wanted
        .iter()
        .map(|key| known.get(key).copied().flatten())
        .collect())
}

#[cfg(feature = "mysql")]
async fn mysql(pool: &sqlx::MySqlPool, wanted: &[(String, String)]) -> Result<Vec<Option<i64>>> {
    let mut known: HashMap<(String, String), Option<i64>> = HashMap::new();
    let mut schemas: Vec<&str> = wanted.iter().map(|(s, _)| s.as_str()).collect();
    schemas.sort_unstable();
    schemas.dedup();
    for schema in schemas {
        let rows: Vec<(String, Option<u64>)> = sqlx::query_as(
            "SELECT CAST(TABLE_NAME AS CHAR), TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
        )
        .bind(schema)
        .fetch_all(pool)
        .await
        .map_err(Error::db("reading row estimates from information_schema", Some(schema)))?;
        for (table, rows) in rows {
            known.insert(
                (schema.to_owned(), table),
                rows.and_then(|n| i64::try_from(n).ok()),
            );
        }
    }
    Ok(wanted
        .iter()
        .map(|key| known.get(key).copied().flatten())
        .collect())
}
