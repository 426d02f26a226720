//! What a view can return: PostgreSQL reports every view column as nullable
//! (`attnotnull` is false), so a consumer reading a view over `NOT NULL` columns would be
//! told each of them is at risk. A view column is NULL-free when it is a plain reference to
//! a `NOT NULL` table column with no outer join or grouping sets on the way.
//!
//! Preparing `SELECT … FROM <view>` reports the view itself as each column's origin, so
//! the view's definition (`pg_get_viewdef`, deparsed in this session) is prepared as a
//! subquery instead: its RowDescription gives, per plain column reference, the origin
//! relation and attribute. One catalog query then reads `attnotnull` of every origin; an
//! origin that is itself a view is followed the same way, a level at a time. Only views
//! cost anything: a fleet of tables sends nothing more.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use contract_core::{Dialect, LiveTable};
use sqlx::postgres::PgColumn;
use sqlx::{Acquire as _, AssertSqlSafe, Executor as _, PgConnection, SqlSafeStr, Statement as _};

use crate::check::fingerprint;

/// Views nested deeper than this are left as PostgreSQL reports them (nullable).
const MAX_DEPTH: usize = 8;
/// View definitions prepared together in one statement (a cross join of subqueries, never
/// executed): one round trip for many views, far below the 1,664-column limit.
const VIEWS_PER_STATEMENT: usize = 50;
/// Words in a deparsed definition that can bring NULL into a plain column reference whose
/// origin is a `NOT NULL` column: outer joins and grouping sets. Deparsed SQL spells them in
/// capitals; a string literal or quoted name containing them only keeps a column nullable.
const NULL_INTRODUCING: [&str; 6] = [
    "LEFT JOIN",
    "RIGHT JOIN",
    "FULL JOIN",
    "GROUPING SETS",
    "ROLLUP",
    "CUBE",
];

/// A view among the introspected tables, and its nullable contracted columns.
#[derive(Debug)]
pub(super) struct ViewColumns {
    /// Index of the view in the introspected tables.
    pub table: usize,
    /// The view's `pg_class` oid.
    pub oid: i64,
    /// `(attnum, index in the table's columns)` of each nullable contracted column.
    pub columns: Vec<(i32, usize)>,
}

/// A column of a relation: `(pg_class oid, attnum)`.
type Attribute = (i64, i32);

/// Marks the view columns of `tables` that can never return NULL as not nullable, and
/// re-digests those views. Views PostgreSQL cannot see through stay nullable.
pub(super) async fn settle_view_nullability(
    conn: &mut PgConnection,
    tables: &mut [LiveTable],
    views: Vec<ViewColumns>,
) -> Result<(), sqlx::Error> {
    if views.is_empty() {
        return Ok(());
    }
    let mut wanted: BTreeMap<i64, BTreeSet<i32>> = BTreeMap::new();
    for view in &views {
        wanted
            .entry(view.oid)
            .or_default()
            .extend(view.columns.iter().map(|(attnum, _)| *attnum));
    }
    let (not_null, origins) = follow_views(conn, wanted).await?;
    for view in views {
        let table = &mut tables[view.table];
        let mut changed = false;
        for (attnum, index) in view.columns {
            if never_null(&(view.oid, attnum), &not_null, &origins) {
                table.columns[index].nullable = false;
                changed = true;
            }
        }
        if changed {
            table.fingerprint = fingerprint(table);
        }
    }
    Ok(())
}

/// Follows an attribute through views to a table column: `true` when it reaches a
/// `NOT NULL` one.
fn never_null(
    start: &Attribute,
    not_null: &HashMap<Attribute, bool>,
    origins: &HashMap<Attribute, Attribute>,
) -> bool {
    let mut at = *start;
    for _ in 0..=MAX_DEPTH {
        match origins.get(&at) {
            Some(origin) => at = *origin,
            None => return not_null.get(&at).copied().unwrap_or(false),
        }
    }
    false
}

/// Resolves the wanted view attributes a level at a time: each one's origin (only for
/// plain references PostgreSQL can follow), and `attnotnull` of origins that are tables.
async fn follow_views(
    conn: &mut PgConnection,
    mut wanted: BTreeMap<i64, BTreeSet<i32>>,
) -> Result<(HashMap<Attribute, bool>, HashMap<Attribute, Attribute>), sqlx::Error> {
    let mut not_null: HashMap<Attribute, bool> = HashMap::new();
    let mut origins: HashMap<Attribute, Attribute> = HashMap::new();
    for _ in 0..MAX_DEPTH {
        if wanted.is_empty() {
            break;
        }
        let oids: Vec<i64> = wanted.keys().copied().collect();
        let definitions: Vec<(i64, String)> = sqlx::query_as(
            "SELECT c.oid::int8, pg_get_viewdef(c.oid) FROM pg_class c \
             WHERE c.oid = ANY($1::int8[]::oid[]) AND c.relkind = 'v'",
        )
        .bind(&oids)
        .fetch_all(&mut *conn)
        .await?;
        let followable: Vec<(i64, String, Vec<i32>)> = definitions
            .into_iter()
            .filter(|(_, definition)| !NULL_INTRODUCING.iter().any(|w| definition.contains(w)))
            .filter_map(|(oid, definition)| {
                let attnums = wanted.get(&oid)?.iter().copied().collect();
                Some((oid, definition, attnums))
            })
            .collect();
        let mut found: Vec<(Attribute, Attribute)> = Vec::new();
        for chunk in followable.chunks(VIEWS_PER_STATEMENT) {
            found.extend(origins_of(conn, chunk).await?);
        }
        let rels: Vec<i64> = found.iter().map(|(_, (rel, _))| *rel).collect();
        let atts: Vec<i32> = found.iter().map(|(_, (_, att))| *att).collect();
        let kinds: Vec<(i64, i32, bool, String)> = sqlx::query_as(
            "SELECT a.attrelid::int8, a.attnum::int4, a.attnotnull, c.relkind::text \
             FROM unnest($1::int8[], $2::int4[]) AS o(rel, att) \
             JOIN pg_attribute a ON a.attrelid = o.rel::oid AND a.attnum = o.att \
             JOIN pg_class c ON c.oid = a.attrelid",
        )
        .bind(&rels)
        .bind(&atts)
        .fetch_all(&mut *conn)
        .await?;
        wanted = BTreeMap::new();
        for (rel, att, attnotnull, relkind) in kinds {
            match relkind.as_str() {
                "r" | "p" => {
                    not_null.insert((rel, att), attnotnull);
                }
                "v" if !origins.contains_key(&(rel, att)) => {
                    wanted.entry(rel).or_default().insert(att);
                }
                _ => {}
            }
        }
        origins.extend(found);
    }
    Ok((not_null, origins))
}

/// Prepares the definitions of `views` as subqueries in one statement (inside a savepoint:
/// a failure must not abort the caller's transaction) and reads each wanted column's
/// origin. A statement that fails is retried one view at a time; a view that still fails
/// is left nullable.
async fn origins_of(
    conn: &mut PgConnection,
    views: &[(i64, String, Vec<i32>)],
) -> Result<Vec<(Attribute, Attribute)>, sqlx::Error> {
    match prepare_origins(conn, views).await? {
        Some(found) => Ok(found),
        None if views.len() > 1 => {
            let mut found = Vec::new();
            for view in views {
                found.extend(
                    prepare_origins(conn, std::slice::from_ref(view))
                        .await?
                        .unwrap_or_default(),
                );
            }
            Ok(found)
        }
        None => Ok(Vec::new()),
    }
}

/// `Ok(None)` when the server rejected the statement (rolled back to the savepoint).
async fn prepare_origins(
    conn: &mut PgConnection,
    views: &[(i64, String, Vec<i32>)],
) -> Result<Option<Vec<(Attribute, Attribute)>>, sqlx::Error> {
    let Some(sql) = origins_statement(views) else {
        return Ok(Some(Vec::new()));
    };
    let mut savepoint = conn.begin().await?;
    let prepared = (&mut *savepoint)
        .prepare(AssertSqlSafe(sql).into_sql_str())
        .await;
    let statement = match prepared {
        Ok(statement) => statement,
        Err(error) => {
            tracing::debug!(%error, "a view definition could not be prepared: its columns stay nullable");
            savepoint.rollback().await?;
            return Ok(None);
        }
    };
    savepoint.commit().await?;
    let wanted = views
        .iter()
        .flat_map(|(oid, _, attnums)| attnums.iter().map(move |attnum| (*oid, *attnum)));
    Ok(Some(
        wanted
            .zip(statement.columns())
            .filter_map(|(attribute, column)| Some((attribute, origin(column)?)))
            .collect(),
    ))
}

/// `SELECT v0."1", v0."3", v1."2" FROM (<definition>) AS v0("1", "2", "3"), …`: columns
/// are named by position, since a view's column names need not match its definition's.
/// `None` when a name cannot be quoted (never for these generated names).
fn origins_statement(views: &[(i64, String, Vec<i32>)]) -> Option<String> {
    let quote = |name: String| Dialect::Postgres.quote(&name).ok();
    let mut select = Vec::new();
    let mut from = Vec::new();
    for (i, (_, definition, attnums)) in views.iter().enumerate() {
        let alias = quote(format!("v{i}"))?;
        let last = attnums.iter().copied().max()?;
        let names = (1..=last)
            .map(|n| quote(n.to_string()))
            .collect::<Option<Vec<_>>>()?;
        for attnum in attnums {
            select.push(format!("{alias}.{}", quote(attnum.to_string())?));
        }
        let body = definition.trim().trim_end_matches(';');
        from.push(format!("({body}) AS {alias}({})", names.join(", ")));
    }
    Some(format!(
        "SELECT {} FROM {}",
        select.join(", "),
        from.join(", ")
    ))
}

/// The relation and attribute a result column is a plain reference to, if any.
fn origin(column: &PgColumn) -> Option<Attribute> {
    let relation = column.relation_id()?;
    let attnum = column.relation_attribute_no()?;
    (attnum > 0).then(|| (i64::from(relation.0), i32::from(attnum)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_prepared_as_positional_subqueries() {
        let views = [
            (
                1,
                " SELECT base.id,\n    base.mood\n   FROM t.base;".to_owned(),
                vec![2],
            ),
            (2, "SELECT 1 AS a, 2 AS b, 3 AS c".to_owned(), vec![1, 3]),
        ];
        assert_eq!(
            origins_statement(&views).unwrap(),
            r#"SELECT "v0"."2", "v1"."1", "v1"."3" FROM (SELECT base.id,
    base.mood
   FROM t.base) AS "v0"("1", "2"), (SELECT 1 AS a, 2 AS b, 3 AS c) AS "v1"("1", "2", "3")"#
        );
    }

    #[test]
    fn an_attribute_is_followed_through_views_to_its_table() {
        let not_null = HashMap::from([((10, 1), true), ((10, 2), false)]);
        let origins = HashMap::from([((1, 1), (2, 4)), ((2, 4), (10, 1)), ((1, 2), (10, 2))]);
        assert!(never_null(&(1, 1), &not_null, &origins));
        assert!(!never_null(&(1, 2), &not_null, &origins));
        // No origin known (an expression, or a view PostgreSQL cannot see through).
        assert!(!never_null(&(1, 3), &not_null, &origins));
        // A cycle ends at the depth limit.
        let cycle = HashMap::from([((1, 1), (2, 1)), ((2, 1), (1, 1))]);
        assert!(!never_null(&(1, 1), &not_null, &cycle));
    }
}
