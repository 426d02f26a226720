//! Catalog SQL for PostgreSQL. `pg_catalog` only (never `information_schema` on a hot
//! path), one round trip for every tenant's contracted tables (`ARCHITECTURE.md` D3).

/// The enum type a column type `t` (a `pg_type` row) holds values of through arrays and
/// domains, three levels down at most (an array of an enum, a domain over one, a domain
/// over a domain over an array of one, a chain of three domains over one); NULL when none.
/// Scalar lookups by oid, evaluated only for the custom array and domain types the `CASE`s
/// below hand them. No recursive query: its estimate lifted the re-check's generic plan
/// over `jit_above_cost`, and compiling it cost about 70 ms a run (measured in psql at
/// 1,000 tenants, against 0.4 ms).
// language=SQL
macro_rules! enum_reached {
    () => {
        concat!(
            "(SELECT CASE WHEN b1.typtype = 'e' THEN b1.oid ELSE
               (SELECT CASE WHEN b2.typtype = 'e' THEN b2.oid ELSE
                  (SELECT b3.oid FROM pg_type b3 WHERE b3.oid = ",
            $crate::postgres::query::element_of!("b2"),
            " AND b3.typtype = 'e') END
                FROM pg_type b2 WHERE b2.oid = ",
            $crate::postgres::query::element_of!("b1"),
            ") END
             FROM pg_type b1 WHERE b1.oid = ",
            $crate::postgres::query::element_of!("t"),
            ")"
        )
    };
}

/// What the `pg_type` row `$t` wraps: a domain's base type, an array's element type.
macro_rules! element_of {
    ($t:literal) => {
        concat!(
            "CASE WHEN ",
            $t,
            ".typtype = 'd' THEN ",
            $t,
            ".typbasetype ELSE ",
            $t,
            ".typelem END"
        )
    };
}

/// `t` (a `pg_type` row) is a custom array or domain type, which may hold an enum's values.
macro_rules! custom_wrapper {
    () => {
        "t.oid >= 16384 AND (t.typtype = 'd' OR t.typcategory = 'A')"
    };
}

/// The select list of [`COLUMNS`] and of the re-check's keyed copy
/// (`super::recheck::SCOPED_COLUMNS`), over the aliases of `catalog_joins` and `c`
/// (`pg_class`): one definition, so the two cannot return different columns.
// language=SQL
macro_rules! column_select {
    () => {
        concat!(
            r#"
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
            WHEN "#,
            custom_wrapper!(),
            r#" THEN
         (SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = "#,
            enum_reached!(),
            r#")
       END                                               AS enum_labels,
       array_position(pk.conkey, a.attnum)               AS pk_position,
       fn.nspname::text AS ref_schema, fc.relname::text AS ref_table, fa.attname::text AS ref_column,
       c.oid::int8                                       AS table_oid,
       c.relkind::text                                   AS relkind,
       CASE WHEN "#,
            custom_wrapper!(),
            r#" THEN
         (SELECT format_type(x.oid, NULL) FROM pg_type x WHERE x.oid = "#,
            enum_reached!(),
            r#")
       END                                               AS enum_type_key
"#
        )
    };
}

/// The catalog rows reached from a contracted relation `c`, each as `$join!(join kind
/// catalog alias ON condition)`: `plain_join` writes the fleet query's joins, the
/// re-check's `keyed_join` the same rows as keyed lookups. The conditions name the row's
/// own alias, so they read the same in both forms.
#[rustfmt::skip]
macro_rules! catalog_joins {
    ($join:ident) => {
        concat!(
            $join!("JOIN" pg_namespace n ON "n.oid = c.relnamespace"),
            $join!("LEFT JOIN" pg_attribute a ON "a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = ANY($3)"),
            $join!("LEFT JOIN" pg_type t ON "t.oid = a.atttypid"),
            $join!("LEFT JOIN" pg_attrdef d ON "d.adrelid = c.oid AND d.adnum = a.attnum"),
            $join!("LEFT JOIN" pg_constraint pk ON "pk.conrelid = c.oid AND pk.contype = 'p'"),
            $join!("LEFT JOIN" pg_constraint f ON "f.conrelid = c.oid AND f.contype = 'f' AND f.conkey = ARRAY[a.attnum]"),
            $join!("LEFT JOIN" pg_class fc ON "fc.oid = f.confrelid"),
            $join!("LEFT JOIN" pg_namespace fn ON "fn.oid = fc.relnamespace"),
            $join!("LEFT JOIN" pg_attribute fa ON "fa.attrelid = f.confrelid AND fa.attnum = f.confkey[1]"),
        )
    };
}

/// One of `catalog_joins` as a plain join.
macro_rules! plain_join {
    ($kind:literal $catalog:tt $alias:tt ON $on:literal) => {
        concat!($kind, " ", stringify!($catalog $alias), " ON ", $on, "\n")
    };
}

/// The relation kinds checked: tables, partitioned tables, views, materialized views,
/// foreign tables.
macro_rules! contracted_relkinds {
    () => {
        "c.relkind IN ('r', 'p', 'v', 'm', 'f')"
    };
}

pub(super) use {
    catalog_joins, column_select, contracted_relkinds, custom_wrapper, element_of, enum_reached,
};

/// One row per contracted column of each contracted table in the given schemas, plus one
/// row with NULL column fields for a table that has none of the contracted columns.
///
/// Unordered: the rows are sorted in Rust (an ORDER BY here spills to disk at fleet scale).
/// `$1`: table names, `$2`: schema names, `$3`: column names (contracted and `renamed_from`).
/// The filter on `relname` uses the `pg_class (relname, relnamespace)` index.
///
/// Defaults are deparsed without their relation (`pg_get_expr(adbin, 0)`): a default cannot
/// refer to a column, and deparsing with the relation opens and locks every table (measured:
/// 143 vs 117 ms median at 1,000 tenants, and a cold first run per connection). Generated
/// columns refer to other columns and keep the relation.
///
/// Docs: <https://www.postgresql.org/docs/15/catalog-pg-attribute.html>
pub(crate) const COLUMNS: &str = concat!(
    column_select!(),
    "FROM pg_class c\n",
    catalog_joins!(plain_join),
    "WHERE c.relname = ANY($1) AND n.nspname = ANY($2) AND ",
    contracted_relkinds!(),
    "\n",
);

/// Opens the read-only transaction the catalog query runs in, with JIT compilation off for
/// it: at 10,000 tenants the planner's estimate crosses `jit_above_cost` and compiling the
/// query took 236 ms of its 1,917 ms (EXPLAIN ANALYZE), for a catalog join that gains
/// nothing from it. `SET LOCAL` ends with the transaction: the pool's connection keeps its
/// settings. One simple-query round trip.
pub(crate) const BEGIN_INTROSPECTION: &str = "BEGIN READ ONLY; SET LOCAL jit = off";

/// [`BEGIN_INTROSPECTION`] with one snapshot for every statement: the catalog mark and the
/// signatures read after it describe the same catalogs (`mark.rs`).
pub(crate) const BEGIN_MARKED_INTROSPECTION: &str =
    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL jit = off";

/// Schemas whose name is `LIKE $1`.
// language=SQL
pub(super) const SCHEMAS_LIKE: &str =
    "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE $1 ORDER BY nspname";

/// A catalog row's version (`xmin`) as a figure that stays put while transaction ids are
/// handed out: `age(xmin)` taken back by `base` (`age('3')`, the same counter) and folded
/// into 0..2^32; the special ids (`age` answers `i32::MAX`) as -1. See [`SIGNATURES`].
// language=SQL
macro_rules! row_version {
    ($xmin:literal, $base:literal) => {
        concat!(
            "coalesce(((nullif(age(",
            $xmin,
            "), 2147483647) - ",
            $base,
            ") % 4294967296 + 4294967296) % 4294967296, -1)"
        )
    };
}

/// Per schema, a digest of the catalog rows [`COLUMNS`] reads for the contracted relations
/// (the change signal of a revalidation sweep): each relation's `pg_class` row, its
/// `pg_attribute` rows (a rename, a type, nullability or default change, a dropped column
/// rewrites the column's row; an added column adds one), the `pg_type` rows of custom types
/// and the `pg_enum` rows of enums its columns use, directly or through arrays and domains
/// (and the `pg_namespace` row of a type in another schema: renaming that schema renames
/// the type; for an enum reached through an array or a domain, its own `pg_type` and
/// `pg_namespace` rows: renaming it renames what sqlx decodes), its primary and foreign keys
/// (`pg_constraint`), for a foreign key to a relation that is not contracted in the same
/// schema the referenced `pg_class` and column `pg_attribute` rows (and the `pg_namespace`
/// row of another schema), and for a view its rewrite rule and the base columns it reads
/// (`pg_depend`: a view's nullability follows them). A key to a relation contracted in the
/// same schema needs no lookup: that relation's rows are in the digest already.
///
/// Only counts, hashes of row versions (`xmin`) and oids are read, server-side: one short
/// row per schema travels. A changed row has another transaction id and a deleted one
/// lowers the count, so a change moves a count or a hash. Every row version is hashed on its
/// own (seeded with what identifies the row: a column's number and its custom type's figure,
/// a key's oid and its referenced rows, a view's base column, an enum label's oid) before
/// anything is summed: a plain sum missed two rows rewritten together so that their ids'
/// sum stayed put (`x` and `x + 2` both becoming `x + 1`; tested for a table's columns and
/// for a view's base columns). A view over another view yields NULL: its
/// nullability depends on more than one level, and the schema is introspected every pass. A
/// schema without any contracted relation has no row.
///
/// The many rows (the relations', their columns' and keys') are read as `age(xmin)`, not
/// as `xmin::text::int8`: the text round trip cost about 0.35 µs a row, a third of the
/// query at 1,000 tenants. An age moves with the transaction counter `B` (stable within the
/// transaction), so each is taken back to the row version itself: `age(x)` is `B - x`
/// modulo 2^32 and `age('3')` is `B - 3`, so `age(x) - age('3')` is `3 - x` modulo 2^32,
/// whatever `B` is (`row_version!`). `age` answers `i32::MAX` for the special ids
/// (bootstrap, frozen in clusters from before 9.4); they become a fixed marker, and they
/// stay in the row count. The few rows behind custom types, foreign keys out of the schema
/// and views are read as `xmin::text::int8`.
///
/// Per relation its figures (oid, kind, column count, the sums of its columns' hashes, its
/// own row version, the count and hash sums of its view rule's rows) are chained through
/// `hashint8extended` into 64 bits; per schema the relation count and the sums of the two
/// 31-bit halves of those hashes, and the keys' count and hash sums, make the signature. A
/// moved
/// relation figure moves the signature unless both 31-bit sums collide (about 2^-62). Sums
/// of `int4` keep their state in an `int8` by value: with a `numeric` sum per figure the
/// grouping of 10,000 schemas outgrew `work_mem` and spilled to disk (EXPLAIN: 5 batches,
/// 7 MB), and the relations were carried with their 64-byte `name` into a spilled CTE.
///
/// The contracted relations are resolved once (`rel`); the attributes are read per relation
/// (an index probe each: a hash join over a scan of `pg_attribute` measured about 1.5× as
/// dear at 1,000 tenants and 2.7× at 10,000, a bitmap scan of `attrelid = ANY(...)` 25–30 %
/// dearer at 1,000, a scan by `ctid` of the previous pass's rows twice the bitmap scan at
/// 10,000), the keys in one join grouped by schema (the whole `pg_constraint` index is
/// smaller than a probe per relation; measured: a probe per relation read 15,900 buffers
/// instead of 1,450 at 1,000 tenants), with no lookup for keys between contracted
/// relations.
///
/// Two subqueries end in `OFFSET 0`, which keeps PostgreSQL from pulling them up into
/// their callers: each attribute's hash is used by two sums, and the enum a column reaches
/// by three conditions; pulled up, each use evaluated its lookups again (EXPLAIN: six
/// `pg_type` lookups per custom-typed column instead of one).
///
/// `$1`: table names, `$2`: schema names.
///
/// Docs: <https://www.postgresql.org/docs/15/ddl-system-columns.html>,
/// <https://www.postgresql.org/docs/15/functions-info.html> (`age`)
// language=SQL
pub(crate) const SIGNATURES: &str = concat!(
    r#"
WITH rel AS MATERIALIZED (
    SELECT c.oid, age('3'::xid)::int8 AS base, "#,
    row_version!("c.xmin", "age('3'::xid)::int8"),
    r#" AS ver,
           c.relkind, c.relnamespace, n.nspname::text AS nspname
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relname = ANY($1) AND n.nspname = ANY($2) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
), con AS (
    SELECT k.relnamespace, count(*) AS n, sum((k.h >> 33)::int4) AS h1,
           sum((k.h & 2147483647)::int4) AS h2
    FROM (SELECT r.relnamespace,
                 hashint8extended("#,
    row_version!("k.xmin", "r.base"),
    r#",
                 hashint8extended(coalesce(
                     CASE WHEN k.contype = 'f'
                               AND (k.confrelid, r.relnamespace) NOT IN (SELECT oid, relnamespace FROM rel) THEN
                         (SELECT hashint8extended(f.xmin::text::int8,
                                 hashint8extended(fa.xmin::text::int8,
                                 CASE WHEN f.relnamespace <> r.relnamespace THEN
                                     (SELECT fn.xmin::text::int8 FROM pg_namespace fn WHERE fn.oid = f.relnamespace)
                                 ELSE -1 END))
                          FROM pg_class f
                          JOIN pg_attribute fa ON fa.attrelid = f.oid AND fa.attnum = k.confkey[1]
                          WHERE f.oid = k.confrelid)
                     END, -1), k.oid::int8)) AS h
          FROM rel r
          JOIN pg_constraint k ON k.conrelid = r.oid AND k.contype IN ('p', 'f')) k
    GROUP BY k.relnamespace
), per AS (
    SELECT c.relnamespace, c.nspname, v.nested,
           hashint8extended(c.oid::int8 * 256 + ascii(c.relkind::text),
           hashint8extended(a.n,
           hashint8extended(coalesce(a.h1, -1),
           hashint8extended(coalesce(a.h2, -1),
           hashint8extended(v.n,
           hashint8extended(c.ver,
           hashint8extended(coalesce(v.h1, -1),
           hashint8extended(coalesce(v.h2, -1), 0)))))))) AS h
    FROM rel c
    CROSS JOIN LATERAL (
        SELECT count(*) AS n, sum((a.h >> 33)::int4) AS h1, sum((a.h & 2147483647)::int4) AS h2
        FROM (SELECT hashint8extended("#,
    row_version!("a.xmin", "c.base"),
    r#",
                     a.attnum + 65536 * coalesce(
                         CASE WHEN a.atttypid >= 16384 THEN
                             (SELECT hashint8extended(t.xmin::text::int8,
                                     hashint8extended(
                                     coalesce((SELECT hashint8extended(sum((e.h >> 33)::int4), sum((e.h & 2147483647)::int4))
                                               FROM (SELECT CASE WHEN "#,
    custom_wrapper!(),
    r#" THEN "#,
    enum_reached!(),
    r#" ELSE t.oid END AS oid OFFSET 0) x
                                               CROSS JOIN LATERAL (
                                                     SELECT hashint8extended(e.xmin::text::int8, e.oid::int8) AS h
                                                     FROM pg_enum e WHERE e.enumtypid = x.oid
                                                     UNION ALL
                                                     SELECT hashint8extended(et.xmin::text::int8,
                                                            hashint8extended(CASE WHEN et.typnamespace <> c.relnamespace THEN
                                                                (SELECT etn.xmin::text::int8 FROM pg_namespace etn WHERE etn.oid = et.typnamespace)
                                                                ELSE -1 END, et.oid::int8))
                                                     FROM pg_type et
                                                     WHERE et.oid = x.oid AND x.oid <> t.oid) e), -1),
                                     CASE WHEN t.typnamespace <> c.relnamespace THEN
                                         (SELECT tn.xmin::text::int8 FROM pg_namespace tn WHERE tn.oid = t.typnamespace)
                                     ELSE -1 END)) >> 17
                              FROM pg_type t WHERE t.oid = a.atttypid)
                         END, -1)) AS h
              FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 OFFSET 0) a) a
    CROSS JOIN LATERAL (
        SELECT count(*) AS n, sum((v.h >> 33)::int4) AS h1, sum((v.h & 2147483647)::int4) AS h2,
               bool_or(v.nested) AS nested
        FROM (SELECT hashint8extended(w.xmin::text::int8,
                     hashint8extended(coalesce(b.xmin::text::int8, -1),
                                      coalesce(d.refobjid::int8 * 65536 + d.refobjsubid, -1))) AS h,
                     bc.relkind IN ('v', 'm') AS nested
              FROM pg_rewrite w
              LEFT JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = w.oid
                                   AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> c.oid
              LEFT JOIN pg_class bc ON bc.oid = d.refobjid
              LEFT JOIN pg_attribute b ON b.attrelid = d.refobjid AND b.attnum = d.refobjsubid
                                       AND b.attnum > 0
              WHERE c.relkind IN ('v', 'm') AND w.ev_class = c.oid) v) v
)
SELECT p.nspname AS schema_name,
       CASE WHEN p.nested THEN NULL
            ELSE concat(p.n, '/', p.h1, '/', p.h2, '/', k.n, '/', k.h1, '/', k.h2)
       END AS signature
FROM (SELECT relnamespace, nspname, bool_or(nested) AS nested, count(*) AS n,
             sum((h >> 33)::int4) AS h1, sum((h & 2147483647)::int4) AS h2
      FROM per GROUP BY relnamespace, nspname) p
LEFT JOIN con k ON k.relnamespace = p.relnamespace
"#
);
