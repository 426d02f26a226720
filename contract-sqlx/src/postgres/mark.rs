//! The catalog mark: whether any catalog row the signatures read changed since the last
//! read, in one scan of each catalog instead of a probe per contracted relation
//! (`ARCHITECTURE.md` D8).
//!
//! A mark is the snapshot it was read in (which transactions had ended) and each catalog's
//! row count. A later read finds the catalogs exactly as they were when no visible row has
//! a version (`xmin`) that the old snapshot did not see as ended, and every count is the
//! same: a row visible now whose version had ended before the old snapshot was not deleted
//! before it (it is not deleted now), so it was visible then too; the rows visible now are
//! among those visible then, and as many. An insert or update writes a new version, and a
//! delete alone lowers a count. The signatures are read in the same snapshot as their
//! mark (one `REPEATABLE READ` transaction), so they describe exactly the catalogs the mark
//! describes; read in a later snapshot they could describe a state in between (a key added
//! and dropped again leaves the counts and the versions as they were).
//!
//! What the mark does not see, the signatures do not see either: an in-place update
//! (`pg_class` statistics and flags that `VACUUM` and `ANALYZE` write) keeps its row version.
//! A frozen row reads as a version older than any horizon: freezing changes no content.

use std::sync::LazyLock;

use sqlx::PgPool;

use super::query;
use crate::backend::{CatalogMark, SignatureRead};
use crate::check::ContractSet;
use crate::error::{Error, Result};

/// Every catalog [`query::SIGNATURES`] reads, in the order of [`CatalogMark::counts`].
const CATALOGS: [&str; 8] = [
    "pg_class",
    "pg_attribute",
    "pg_type",
    "pg_enum",
    "pg_constraint",
    "pg_namespace",
    "pg_rewrite",
    "pg_depend",
];

/// How far the transaction counter may have moved past an old horizon for its row versions
/// to be compared with `age` (which wraps at 2^31): 2^30 transactions.
const MAX_HORIZON_DISTANCE: i64 = 1 << 30;

/// The mark now (the snapshot's `xmin`, `xmax` and running transactions, as 64-bit ids,
/// and each catalog's row count), and how many visible catalog rows were not visible to the
/// snapshot of an earlier mark (`$1` its `xmin`, `$2` its `xmax`, `$3` its running ids;
/// the count is NULL when there is none, or when it is too far behind for `age`).
///
/// A row was visible to that snapshot when its version is older than the snapshot's
/// `xmin`, or older than its `xmax` and not among its running transactions. Row versions
/// are compared as ages (`age(x) <= age(h)` is "`x` at or after `h`" within 2^31
/// transactions): `age` answers `i32::MAX` for the special ids (frozen, bootstrap), which
/// then count as old. Comparing with the running transactions, not only the horizon, keeps
/// a change committed before the earlier mark from counting as new while any transaction
/// of the cluster (any database's) that started before it is still open.
static MARK_QUERY: LazyLock<String> = LazyLock::new(|| {
    let scans: Vec<String> = CATALOGS
        .iter()
        .enumerate()
        .map(|(i, catalog)| {
            format!(
                "SELECT {i} AS k, count(*) AS n, \
                 count(*) FILTER (WHERE age(xmin) <= (SELECT age_xmin FROM h) \
                     AND (age(xmin) <= (SELECT age_xmax FROM h) OR xmin = ANY((SELECT running FROM h)::xid[]))) AS fresh \
                 FROM pg_catalog.{catalog}"
            )
        })
        .collect();
    format!(
        "WITH s AS MATERIALIZED (
    SELECT pg_current_snapshot() AS now
), h AS MATERIALIZED (
    SELECT pg_snapshot_xmin(now)::text::int8 AS xmin8,
           pg_snapshot_xmax(now)::text::int8 AS xmax8,
           ARRAY(SELECT x::text::int8 FROM pg_snapshot_xip(now) x) AS running8,
           CASE WHEN pg_snapshot_xmin(now)::text::int8 - $1::int8 BETWEEN 0 AND {MAX_HORIZON_DISTANCE}
                THEN age(($1::int8 % 4294967296)::text::xid) END AS age_xmin,
           CASE WHEN pg_snapshot_xmin(now)::text::int8 - $1::int8 BETWEEN 0 AND {MAX_HORIZON_DISTANCE}
                THEN age(($2::int8 % 4294967296)::text::xid) END AS age_xmax,
           ARRAY(SELECT (x % 4294967296)::text::xid FROM unnest($3::int8[]) x) AS running
    FROM s
), c AS (
    {}
)
SELECT (SELECT xmin8 FROM h), (SELECT xmax8 FROM h), (SELECT running8 FROM h),
       array_agg(n ORDER BY k), sum(fresh)::int8
FROM c",
        scans.join("\n    UNION ALL\n    ")
    )
});

/// The signatures of `schemas`, unless the catalogs are as they were at `since`; the mark
/// and the signatures are read in one snapshot.
pub(super) async fn signatures_since(
    pool: &PgPool,
    schemas: &[String],
    contracts: &ContractSet<sqlx::Postgres>,
    since: Option<&CatalogMark>,
) -> Result<SignatureRead> {
    let read = async {
        let mut tx = pool.begin_with(query::BEGIN_MARKED_INTROSPECTION).await?;
        let (horizon, next, running, counts, fresh): (i64, i64, Vec<i64>, Vec<i64>, Option<i64>) =
            sqlx::query_as(sqlx::AssertSqlSafe(MARK_QUERY.as_str()))
                .bind(since.map(|m| m.horizon))
                .bind(since.map(|m| m.next))
                .bind(since.map(|m| m.running.as_slice()))
                .fetch_one(&mut *tx)
                .await?;
        let mark = CatalogMark {
            horizon,
            next,
            running,
            counts,
        };
        let unchanged = since.is_some_and(|since| fresh == Some(0) && since.counts == mark.counts);
        if unchanged {
            tx.commit().await?;
            return Ok(SignatureRead::Unchanged(mark));
        }
        let signatures = super::read_signatures(&mut tx, schemas, contracts).await?;
        tx.commit().await?;
        Ok(SignatureRead::Read(signatures, Some(mark)))
    };
    read.await.map_err(Error::db(
        "reading the catalog mark and signatures of tenant schemas",
        None,
    ))
}
