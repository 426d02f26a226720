//! Where the fleet has the types remediation DDL names without a schema: one catalog
//! query per plan run, for every tenant of a pool.

use std::collections::BTreeMap;

use contract_core::Dialect;
use contract_core::plan::{TypeCatalog, type_names};
use sqlx::{PgPool, Postgres};

use crate::check::ContractSet;
use crate::error::{Error, Result};

/// `$1`: type names, `$2`: schemas. Array types are looked up by their element's name.
// language=SQL
const TYPES_IN_SCHEMAS: &str = "SELECT t.typname::text, n.nspname::text FROM pg_type t \
     JOIN pg_namespace n ON n.oid = t.typnamespace \
     WHERE t.typname = ANY($1) AND n.nspname = ANY($2)";

/// Looks the contracts' unqualified type names up in `pg_catalog` (built in), `public`,
/// the contracts' fixed schemas and `schemas` (the tenants).
pub(super) async fn type_catalog(
    pool: &PgPool,
    schemas: &[String],
    contracts: &ContractSet<Postgres>,
) -> Result<TypeCatalog> {
    let mut names: Vec<String> = contracts
        .entries()
        .iter()
        .flat_map(|entry| {
            let expected: BTreeMap<String, String> = entry
                .checks
                .iter()
                .map(|c| (c.column().to_owned(), c.expected_sql_type()))
                .collect();
            type_names(Dialect::Postgres, &entry.contract, &expected)
        })
        .collect();
    names.sort();
    names.dedup();
    let mut catalog = TypeCatalog::new();
    if names.is_empty() {
        return Ok(catalog);
    }
    let mut places: Vec<String> = schemas.to_vec();
    places.extend(contracts.fixed_schemas());
    places.extend(["public".to_owned(), "pg_catalog".to_owned()]);
    let found: Vec<(String, String)> = sqlx::query_as(TYPES_IN_SCHEMAS)
        .bind(&names)
        .bind(&places)
        .fetch_all(pool)
        .await
        .map_err(Error::db(
            "looking up the column types of remediation plans",
            None,
        ))?;
    for name in names {
        catalog.looked_up(name);
    }
    for (name, schema) in found {
        if schema == "pg_catalog" {
            catalog.builtin(name);
        } else {
            catalog.found_in(name, schema);
        }
    }
    Ok(catalog)
}
