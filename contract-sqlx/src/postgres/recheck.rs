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
use sqlx::Postgres;

use super::query::{
    catalog_joins, column_select, contracted_relkinds, custom_wrapper, enum_reached,
};
use crate::check::ContractSet;

/// One of the fleet query's catalog joins as a lookup by key: a `LATERAL … OFFSET 0`
/// subquery the planner keeps as is (an index lookup in the generic plan).
macro_rules! keyed_join {
    ($kind:literal $catalog:tt $alias:tt ON $on:literal) => {
        concat!(
            $kind,
            " LATERAL (SELECT * FROM ",
            stringify!($catalog $alias),
            " WHERE ",
            $on,
            " OFFSET 0) ",
            stringify!($alias),
            " ON true\n"
        )
    };
}

/// One row per contracted column of each contracted table named `$2[i].$1[j]` (every
/// schema × every table name), exactly as [`super::query::COLUMNS`] returns them: the same
/// select list and catalog rows, each reached by a keyed lookup.
pub(super) const SCOPED_COLUMNS: &str = concat!(
    column_select!(),
    "FROM unnest($2::text[]) AS ws(schema_name)\n",
    "CROSS JOIN unnest($1::text[]) AS wt(table_name)\n",
    "JOIN LATERAL (SELECT * FROM pg_class WHERE oid = to_regclass(format('%I.%I', ws.schema_name, wt.table_name)) OFFSET 0) c ON true\n",
    catalog_joins!(keyed_join),
    "WHERE ",
    contracted_relkinds!(),
    "\n",
);

/// Re-introspects the tables named `tables` in `schemas` (the tenant's, and the contracts'
/// fixed schemas) inside the apply's transaction: the same tables
/// [`super::introspect_on`] would return for them.
pub(super) async fn reintrospect(
    conn: &mut sqlx::PgConnection,
    schemas: &[String],
    tables: &[String],
    contracts: &ContractSet<Postgres>,
) -> Result<Vec<LiveTable>, sqlx::Error> {
    let mut schemas = schemas.to_vec();
    schemas.sort_unstable();
    schemas.dedup();
    // Prepared once per connection: the generic plan is a chain of index lookups.
    super::read_tables(conn, SCOPED_COLUMNS, true, &schemas, tables, contracts).await
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
        // ... and reaches no catalog by a plain join (its generic plan would scan it).
        assert!(!SCOPED_COLUMNS.contains("JOIN pg_"), "{SCOPED_COLUMNS}");
    }
}
