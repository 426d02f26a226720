//! Resolving live column types by preparing a statement over a real table (MySQL, SQLite):
//! the type info each column reports there is exactly what decoding sees.

use std::collections::HashMap;

use contract_core::{Dialect, LiveColumn, LiveTable};
use sqlx::{AssertSqlSafe, Column, Executor, SqlSafeStr, Statement};

use crate::backend::Backend;
use crate::error::{Error, Result};

/// The columns of `table` whose type key `types` does not hold yet, one per key.
pub(crate) fn unresolved<'t, T>(
    table: &'t LiveTable,
    types: &HashMap<String, T>,
) -> Vec<&'t LiveColumn> {
    let mut wanted: Vec<&LiveColumn> = Vec::new();
    for column in &table.columns {
        if !types.contains_key(&column.type_key)
            && !wanted.iter().any(|w| w.type_key == column.type_key)
        {
            wanted.push(column);
        }
    }
    wanted
}

/// Prepares `SELECT <wanted> FROM <schema>.<table>` (never executed) on `executor` (a
/// pool or a connection) and pairs each wanted column's type key with the type info the
/// statement reports for it.
pub(crate) async fn prepare_types<'e, DB: Backend>(
    executor: impl Executor<'e, Database = DB>,
    schema: &str,
    table: &LiveTable,
    wanted: &[&LiveColumn],
) -> Result<Vec<(String, DB::TypeInfo)>> {
    let dialect: Dialect = DB::DIALECT;
    let columns = wanted
        .iter()
        .map(|c| dialect.quote(&c.name))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let sql = format!(
        "SELECT {} FROM {}",
        columns.join(", "),
        dialect.quote_qualified(Some(schema), &table.name)?
    );
    let statement = executor
        .prepare(AssertSqlSafe(sql).into_sql_str())
        .await
        .map_err(Error::db(
            "resolving live column types",
            Some(&table.schema),
        ))?;
    Ok(wanted
        .iter()
        .zip(statement.columns())
        .map(|(c, col)| (c.type_key.clone(), col.type_info().clone()))
        .collect())
}
