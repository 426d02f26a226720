//! The re-check under a tenant's lock on PostgreSQL: the same rows as the fleet's catalog
//! query ([`super::query::COLUMNS`]), for one tenant's few tables, from a plan PostgreSQL
//! keeps.
//!
//! The fleet query is sent unnamed and planned with its arrays every time (a generic plan of
//! it scans every matched table once per schema). For one tenant that planning cost more
//! than the DDL being guarded (about 1 ms of a 10-way join search per apply). This variant
//! looks each relation up by its qualified name (`to_regclass`) and reaches every other
//! catalog row through a `LATERAL … OFFSET 0` subquery keyed by oid, so that its generic
//! plan is a chain of index lookups: it is prepared once per connection and run with
//! `plan_cache_mode = force_generic_plan`, never planned again.

use contract_core::LiveTable;
use futures_util::TryStreamExt as _;
use sqlx::Postgres;

use super::{parse, row, views};
use crate::check::ContractSet;

/// One row per contracted column of each contracted table named `$2[i].$1[j]` (every
/// schema × every table name), exactly as [`super::query::COLUMNS`] returns them.
// language=SQL
pub(super) const SCOPED_COLUMNS: &str = r#"
SELECT n.nspname::text                                   AS schema_name,
       c.relname::text                                   AS table_name,
       a.attname::text                                   AS column_name,
       a.attnum::int4                                    AS attnum,
       format_type(a.atttypid, a.atttypmod)              AS data_type,
       format_type(a.atttypid, NULL)                     AS type_key,
       NOT a.attnotnull                                  AS nullable,
       CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, 0)
            ELSE pg_get_expr(d.adbin, d.adrelid) END     AS default_expr,
       CASE WHEN t.typtype = 'e' THEN
         (SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid)
       END                                               AS enum_labels,
       array_position(pk.conkey, a.attnum)               AS pk_position,
       fn.nspname::text AS ref_schema, fc.relname::text AS ref_table, fa.attname::text AS ref_column,
       c.oid::int8                                       AS table_oid,
       c.relkind::text                                   AS relkind
FROM unnest($2::text[]) AS ws(schema_name)
CROSS JOIN unnest($1::text[]) AS wt(table_name)
JOIN LATERAL (SELECT * FROM pg_class WHERE oid = to_regclass(format('%I.%I', ws.schema_name, wt.table_name)) OFFSET 0) c ON true
JOIN LATERAL (SELECT * FROM pg_namespace WHERE oid = c.relnamespace OFFSET 0) n ON true
LEFT JOIN LATERAL (SELECT * FROM pg_attribute WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped AND attname = ANY($3) OFFSET 0) a ON true
LEFT JOIN LATERAL (SELECT * FROM pg_type WHERE oid = a.atttypid OFFSET 0) t ON true
LEFT JOIN LATERAL (SELECT * FROM pg_attrdef WHERE adrelid = c.oid AND adnum = a.attnum OFFSET 0) d ON true
LEFT JOIN LATERAL (SELECT * FROM pg_constraint WHERE conrelid = c.oid AND contype = 'p' OFFSET 0) pk ON true
LEFT JOIN LATERAL (SELECT * FROM pg_constraint WHERE conrelid = c.oid AND contype = 'f' AND conkey = ARRAY[a.attnum] OFFSET 0) f ON true
LEFT JOIN LATERAL (SELECT * FROM pg_class WHERE oid = f.confrelid OFFSET 0) fc ON true
LEFT JOIN LATERAL (SELECT * FROM pg_namespace WHERE oid = fc.relnamespace OFFSET 0) fn ON true
LEFT JOIN LATERAL (SELECT * FROM pg_attribute WHERE attrelid = f.confrelid AND attnum = f.confkey[1] OFFSET 0) fa ON true
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
"#;

/// Re-introspects `schemas` (the tenant's, and the contracts' fixed schemas) inside the
/// apply's transaction: the same tables [`super::introspect_on`] would return for them.
pub(super) async fn reintrospect(
    conn: &mut sqlx::PgConnection,
    schemas: &[String],
    contracts: &ContractSet<Postgres>,
) -> Result<Vec<LiveTable>, sqlx::Error> {
    let mut schemas = schemas.to_vec();
    schemas.sort_unstable();
    schemas.dedup();
    let mut rows = sqlx::query(SCOPED_COLUMNS)
        .bind(contracts.table_names())
        .bind(&schemas)
        .bind(contracts.column_names())
        .fetch(&mut *conn);
    let widest = contracts
        .entries()
        .iter()
        .map(|e| e.contract.columns.len())
        .max()
        .unwrap_or(0);
    let mut tables =
        parse::TablesBuilder::with_capacity(schemas.len() * contracts.entries().len(), widest);
    while let Some(row) = rows.try_next().await? {
        tables.push(&row::ColumnRow::decode(&row)?);
    }
    drop(rows);
    let (mut tables, views) = tables.finish();
    views::settle_view_nullability(conn, &mut tables, views).await?;
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::{super::query::COLUMNS, SCOPED_COLUMNS};

    #[test]
    fn the_scoped_query_returns_the_fleet_query_s_columns() {
        let select = |sql: &'static str, from: &str| -> &'static str {
            sql.split(from).next().unwrap_or_default()
        };
        let fleet = select(COLUMNS, "FROM pg_class c");
        assert!(fleet.contains("AS relkind"), "{fleet}");
        assert_eq!(fleet, select(SCOPED_COLUMNS, "FROM unnest("));
        // Every relation the fleet query joins has its keyed twin.
        for alias in ["c", "n", "a", "t", "d", "pk", "f", "fc", "fn", "fa"] {
            let joined = COLUMNS.contains(&format!(" {alias} ON "))
                || COLUMNS.contains(&format!(" {alias}\n"));
            assert!(joined, "fleet query: {alias}");
            assert!(
                SCOPED_COLUMNS.contains(&format!(") {alias} ON true")),
                "scoped query: {alias}"
            );
        }
    }
}
