//! Whether a table can be changed by copying it (everything the copy would lose or break
//! refuses it, with the reason), and its layout when it can.

use sqlx::PgPool;

use super::super::type_change::OnlineTypeChange;
use crate::error::{Error, Result};

/// What the copy needs to know about the table.
pub(super) struct Layout {
    /// The single-column integer primary key the copy goes by.
    pub pk: String,
    /// Every column in order: `(name, generated)` (generated columns are not written).
    pub columns: Vec<(String, bool)>,
    /// The table's indexes in creation (OID) order, the order `LIKE` copies them in.
    pub indexes: Vec<String>,
}

/// The first reason the table cannot be copied, `NULL` when it can. `CREATE TABLE … (LIKE
/// … INCLUDING ALL)` carries columns, defaults, `NOT NULL`, check constraints, indexes
/// (with the primary key and unique and exclusion constraints), comments on them,
/// storage, compression and extended statistics; the swap moves the owner, the grants,
/// the table's comment, its storage parameters and the ownership of `serial` sequences.
/// Anything else refuses it: the old table is dropped in the swap.
// language=SQL
const QUALIFY: &str = r#"
SELECT CASE
  WHEN c.relkind <> 'r' OR c.relispartition THEN 'the table is partitioned or a partition'
  WHEN EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid OR i.inhparent = c.oid)
    THEN 'the table inherits or is inherited from'
  WHEN NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = $3 AND a.attnum > 0 AND NOT a.attisdropped)
    THEN 'the column does not exist'
  WHEN pk.col IS NULL THEN 'the table has no single-column integer primary key to copy it by'
  WHEN pk.col = $3 THEN 'the column is the primary key the copy goes by'
  WHEN EXISTS (SELECT 1 FROM pg_constraint k WHERE k.contype = 'f' AND k.confrelid = c.oid)
    THEN 'foreign keys of other tables reference it'
  WHEN EXISTS (SELECT 1 FROM pg_constraint k WHERE k.contype = 'f' AND k.conrelid = c.oid)
    THEN 'it has foreign keys (a copy does not carry them)'
  WHEN EXISTS (SELECT 1 FROM pg_rewrite r WHERE r.ev_class = c.oid)
    OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_rewrite'::regclass
               AND d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid)
    THEN 'views or rules depend on it'
  WHEN EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal AND t.tgname <> $4)
    THEN 'it has triggers of its own'
  WHEN c.relrowsecurity OR EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)
    THEN 'it has row-level security'
  WHEN EXISTS (SELECT 1 FROM pg_publication_tables p WHERE p.schemaname = n.nspname AND p.tablename = c.relname)
    THEN 'it is published for logical replication'
  WHEN EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND (NOT k.convalidated OR k.condeferrable))
    THEN 'it has a NOT VALID or deferrable constraint'
  WHEN EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               AND (a.attidentity <> '' OR a.attacl IS NOT NULL))
    THEN 'it has an identity column or privileges on columns'
  WHEN EXISTS (SELECT 1 FROM pg_depend d JOIN pg_attrdef gd ON gd.oid = d.objid
               JOIN pg_attribute g ON g.attrelid = gd.adrelid AND g.attnum = gd.adnum
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.refobjsubid
               WHERE d.classid = 'pg_attrdef'::regclass AND d.refobjid = c.oid AND a.attname = $3
                 AND g.attgenerated <> '' AND g.attnum <> a.attnum)
    THEN 'a generated column reads the column'
  WHEN c.relpersistence <> 'p' OR c.reltablespace <> 0 OR c.relreplident <> 'd'
    THEN 'it is unlogged, in a tablespace of its own or has a replica identity of its own'
  WHEN EXISTS (SELECT 1 FROM pg_depend d
               WHERE d.deptype = 'n'
                 AND ((d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid)
                      OR (d.refclassid = 'pg_type'::regclass AND d.refobjid = c.reltype))
                 AND NOT (d.classid = 'pg_constraint'::regclass
                          AND d.objid IN (SELECT k.oid FROM pg_constraint k WHERE k.conrelid = c.oid))
                 AND NOT (d.classid = 'pg_attrdef'::regclass
                          AND d.objid IN (SELECT ad.oid FROM pg_attrdef ad WHERE ad.adrelid = c.oid))
                 AND NOT (d.classid = 'pg_class'::regclass
                          AND d.objid IN (SELECT x.indexrelid FROM pg_index x WHERE x.indrelid = c.oid))
                 AND d.classid <> 'pg_statistic_ext'::regclass)
    THEN 'other objects depend on it or on its row type'
  END AS refused,
  pk.col AS pk,
  (SELECT jsonb_agg(jsonb_build_array(a.attname, a.attgenerated <> '') ORDER BY a.attnum)
   FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
  (SELECT coalesce(jsonb_agg(ic.relname ORDER BY ic.oid), '[]')
   FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid WHERE x.indrelid = c.oid) AS indexes
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN LATERAL (
  SELECT pa.attname::text AS col FROM pg_constraint k
  JOIN pg_attribute pa ON pa.attrelid = c.oid AND pa.attnum = k.conkey[1]
  WHERE k.conrelid = c.oid AND k.contype = 'p' AND cardinality(k.conkey) = 1
    AND pa.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)) pk ON true
WHERE n.nspname = $1 AND c.relname = $2
"#;

type Row = (
    Option<String>,
    Option<String>,
    Option<sqlx::types::Json<Vec<(String, bool)>>>,
    sqlx::types::Json<Vec<String>>,
);

/// The table's layout, or the reason it cannot be copied.
pub(super) async fn qualify(
    pool: &PgPool,
    change: &OnlineTypeChange,
) -> Result<std::result::Result<Layout, String>> {
    let row: Option<Row> = sqlx::query_as(QUALIFY)
        .bind(&change.schema)
        .bind(&change.table)
        .bind(&change.column)
        .bind(super::trigger_name(change))
        .fetch_optional(pool)
        .await
        .map_err(Error::db(
            "inspecting a table for an online copy",
            Some(change.tenant()),
        ))?;
    let Some((refused, pk, columns, indexes)) = row else {
        return Ok(Err("the table does not exist".to_owned()));
    };
    if let Some(reason) = refused {
        return Ok(Err(reason));
    }
    match (pk, columns) {
        (Some(pk), Some(columns)) => Ok(Ok(Layout {
            pk,
            columns: columns.0,
            indexes: indexes.0,
        })),
        _ => Ok(Err("the table has no columns or no primary key".to_owned())),
    }
}
