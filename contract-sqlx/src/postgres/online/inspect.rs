//! What an online type change needs to know about a column, and why one is refused.

use sqlx::PgPool;

use super::OnlineTypeChange;

use crate::error::{Error, Result};

/// The column as the catalog describes it.
#[derive(Debug, Clone)]
pub(super) struct ColumnFacts {
    /// The 1-based position of the column in the lookup.
    pub position: i64,
    pub not_null: bool,
    pub default_expr: Option<String>,
    pub rows_estimate: f64,
    pub in_pk: bool,
    pub in_fk: bool,
    pub in_view: bool,
    pub generated: bool,
    pub used_by_generated: bool,
    pub identity: bool,
    pub in_other_constraint: bool,
    pub complex_index: bool,
    /// The single-column primary key batches go by, if it is an integer.
    pub pk_column: Option<String>,
    /// Plain single-column indexes on the column: `(name, unique, access method)`.
    pub indexes: sqlx::types::Json<Vec<(String, bool, String)>>,
}

// language=SQL
const FACTS: &str = r#"
SELECT t.i AS position,
       a.attnotnull AS not_null,
       pg_get_expr(d.adbin, d.adrelid) AS default_expr,
       c.reltuples::float8 AS rows_estimate,
       EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p' AND a.attnum = ANY (k.conkey)) AS in_pk,
       EXISTS (SELECT 1 FROM pg_constraint k WHERE k.contype = 'f' AND ((k.conrelid = c.oid AND a.attnum = ANY (k.conkey))
               OR (k.confrelid = c.oid AND a.attnum = ANY (k.confkey)))) AS in_fk,
       EXISTS (SELECT 1 FROM pg_depend dep JOIN pg_rewrite r ON r.oid = dep.objid
               WHERE dep.classid = 'pg_rewrite'::regclass AND dep.refobjid = c.oid AND dep.refobjsubid = a.attnum
                 AND r.ev_class <> c.oid) AS in_view,
       a.attgenerated <> '' AS generated,
       EXISTS (SELECT 1 FROM pg_depend dep JOIN pg_attrdef gd ON gd.oid = dep.objid
               JOIN pg_attribute g ON g.attrelid = gd.adrelid AND g.attnum = gd.adnum
               WHERE dep.classid = 'pg_attrdef'::regclass AND dep.refobjid = c.oid AND dep.refobjsubid = a.attnum
                 AND g.attgenerated <> '' AND g.attnum <> a.attnum) AS used_by_generated,
       a.attidentity <> '' AS identity,
       EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype IN ('c', 'u', 'x')
               AND a.attnum = ANY (k.conkey)) AS in_other_constraint,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND a.attnum = ANY (i.indkey::int2[])
               AND NOT i.indisprimary AND (i.indnatts <> 1 OR i.indexprs IS NOT NULL OR i.indpred IS NOT NULL))
         OR EXISTS (SELECT 1 FROM pg_index i JOIN pg_depend dep ON dep.objid = i.indexrelid
               WHERE i.indrelid = c.oid AND dep.classid = 'pg_class'::regclass AND dep.refobjid = c.oid
                 AND dep.refobjsubid = a.attnum AND i.indexprs IS NOT NULL) AS complex_index,
       (SELECT pa.attname::text FROM pg_constraint k JOIN pg_attribute pa ON pa.attrelid = c.oid AND pa.attnum = k.conkey[1]
        WHERE k.conrelid = c.oid AND k.contype = 'p' AND cardinality(k.conkey) = 1
          AND pa.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)) AS pk_column,
       (SELECT coalesce(jsonb_agg(jsonb_build_array(ic.relname, i.indisunique, am.amname) ORDER BY ic.relname), '[]')
        FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam
        WHERE i.indrelid = c.oid AND i.indnatts = 1 AND i.indkey[0] = a.attnum AND NOT i.indisprimary
          AND i.indexprs IS NULL AND i.indpred IS NULL) AS indexes
FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS t(s, r, col, i)
JOIN pg_namespace n ON n.nspname = t.s
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.r AND c.relkind IN ('r', 'p')
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = t.col AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
ORDER BY t.i
"#;

/// The facts about `change`'s column, or [`Error::NotOnline`] with the first reason it
/// cannot be changed online. Errors name the change's tenant.
pub(super) async fn inspect(pool: &PgPool, change: &OnlineTypeChange) -> Result<ColumnFacts> {
    let (schema, table, column) = (&change.schema, &change.table, &change.column);
    let one = [(schema.clone(), table.clone(), column.clone())];
    let facts = lookup(pool, &one, Some(change.tenant()))
        .await?
        .pop()
        .flatten();
    let refuse = |reason: &str| Error::NotOnline {
        table: format!("{schema}.{table}"),
        column: column.to_owned(),
        reason: reason.to_owned(),
    };
    let facts = facts.ok_or_else(|| refuse(NOT_A_COLUMN))?;
    match refusal(&facts) {
        Some(reason) => Err(refuse(reason)),
        None => Ok(facts),
    }
}

/// Why the online type change would refuse each `(schema, table, column)` of `columns`, in
/// order (`None`: it would run): the planner asks before it plans one, so a plan never
/// holds an online step its apply refuses on every pass. One catalog query for all.
pub(in crate::postgres) async fn refusals(
    pool: &PgPool,
    columns: &[(String, String, String)],
) -> Result<Vec<Option<&'static str>>> {
    let facts = lookup(pool, columns, columns.first().map(|c| c.0.as_str())).await?;
    Ok(facts
        .iter()
        .map(|facts| match facts {
            Some(facts) => refusal(facts),
            None => Some(NOT_A_COLUMN),
        })
        .collect())
}

const NOT_A_COLUMN: &str = "is not a column of a table";

/// The facts of each column of `columns`, in order (`None`: not a column of a table);
/// errors name `tenant`.
async fn lookup(
    pool: &PgPool,
    columns: &[(String, String, String)],
    tenant: Option<&str>,
) -> Result<Vec<Option<ColumnFacts>>> {
    let mut arrays: [Vec<&str>; 3] = Default::default();
    for (schema, table, column) in columns {
        arrays[0].push(schema);
        arrays[1].push(table);
        arrays[2].push(column);
    }
    let [schemas, tables, names] = arrays;
    let found: Vec<ColumnFacts> = sqlx::query_as(FACTS)
        .bind(schemas)
        .bind(tables)
        .bind(names)
        .fetch_all(pool)
        .await
        .map_err(Error::db(
            "inspecting a column for an online type change",
            tenant,
        ))?;
    let mut facts = vec![None; columns.len()];
    for row in found {
        let slot = usize::try_from(row.position - 1)
            .ok()
            .and_then(|i| facts.get_mut(i));
        if let Some(slot) = slot {
            *slot = Some(row);
        }
    }
    Ok(facts)
}

/// The first reason the online procedure refuses a column with these facts, if any.
fn refusal(facts: &ColumnFacts) -> Option<&'static str> {
    let default_is_sequence = facts
        .default_expr
        .as_deref()
        .is_some_and(|d| d.contains("nextval("));
    let reasons = [
        (
            facts.in_pk,
            "is part of the primary key (swapping it needs a new unique index and a new key constraint)",
        ),
        (
            facts.in_fk,
            "is part of a foreign key (the other side would have to change type in the same swap)",
        ),
        (
            facts.in_view,
            "is read by a view (the view would have to be dropped and re-created around the swap)",
        ),
        (facts.generated, "is a generated column"),
        (facts.used_by_generated, "is read by a generated column"),
        (
            facts.identity || default_is_sequence,
            "takes its default from a sequence (identity or serial)",
        ),
        (
            facts.in_other_constraint,
            "is part of a unique, check or exclusion constraint",
        ),
        (
            facts.complex_index,
            "is part of a multi-column, partial or expression index",
        ),
        (
            facts.pk_column.is_none(),
            "belongs to a table without a single-column integer primary key to batch the backfill by",
        ),
    ];
    reasons
        .iter()
        .find(|(refused, _)| *refused)
        .map(|(_, reason)| *reason)
}

crate::from_row::impl_from_row!(sqlx::postgres::PgRow => ColumnFacts {
    position, not_null, default_expr, rows_estimate, in_pk, in_fk, in_view, generated, used_by_generated,
    identity, in_other_constraint, complex_index, pk_column, indexes,
});
