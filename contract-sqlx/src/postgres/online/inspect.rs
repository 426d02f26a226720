//! What an online type change needs to know about a column, and why one is refused.

use sqlx::PgPool;

use crate::error::{Error, Result};

/// The column as the catalog describes it.
#[derive(Debug, Clone)]
pub(super) struct ColumnFacts {
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
SELECT a.attnotnull AS not_null,
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
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = $3 AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
"#;

/// The facts about `schema.table.column`, or [`Error::NotOnline`] with the first reason
/// it cannot be changed online.
pub(super) async fn inspect(
    pool: &PgPool,
    schema: &str,
    table: &str,
    column: &str,
) -> Result<ColumnFacts> {
    let facts: Option<ColumnFacts> = sqlx::query_as(FACTS)
        .bind(schema)
        .bind(table)
        .bind(column)
        .fetch_optional(pool)
        .await
        .map_err(Error::db(
            "inspecting a column for an online type change",
            Some(schema),
        ))?;
    let refuse = |reason: &str| Error::NotOnline {
        table: format!("{schema}.{table}"),
        column: column.to_owned(),
        reason: reason.to_owned(),
    };
    let facts = facts.ok_or_else(|| refuse("is not a column of a table"))?;
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
    match reasons.iter().find(|(refused, _)| *refused) {
        Some((_, reason)) => Err(refuse(reason)),
        None => Ok(facts),
    }
}

crate::from_row::impl_from_row!(sqlx::postgres::PgRow => ColumnFacts {
    not_null, default_expr, rows_estimate, in_pk, in_fk, in_view, generated, used_by_generated,
    identity, in_other_constraint, complex_index, pk_column, indexes,
});
