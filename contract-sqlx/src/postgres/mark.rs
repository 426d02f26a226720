//! The catalog mark: whether any catalog row the signatures read changed since the last
//! read, in one scan of each catalog instead of a probe per contracted relation
//! (`ARCHITECTURE.md` D8).
//!
//! A mark is read in one snapshot: the oldest transaction still running then (the
//! snapshot's `xmin`, the horizon), the distinct row versions (`xmin`) at or after it among
//! the visible rows (*seen*), each catalog's row count, and the server's start time. A later
//! read finds the catalogs exactly as they were when every count is the same and no visible
//! row has a version at or after the old horizon that is not among the old seen ones: a
//! visible row with an older version was written by a transaction that had ended before the
//! old snapshot (a subtransaction's id is above its parent's, which is at or above the
//! horizon while it runs), and a visible row with a seen version was written by a
//! transaction the old snapshot saw committed; either was visible then too, as it was not
//! deleted before (it is not deleted now). So the rows visible now are among those visible
//! then, and as many. An insert or update writes a new version, and a delete alone lowers a
//! count. Seen versions, not the snapshot's list of running transactions, because that list
//! holds top-level ids only: DDL in a savepoint or a PL/pgSQL exception block writes its
//! rows under a subtransaction's id. The running ids are left out of the seen ones: once
//! the 32-bit counter has gone round, an old frozen row keeps its raw version, which may be
//! a running transaction's id again (a running subtransaction's id may still collide that
//! way, about one chance in 2^32 per old version, until the periodic full check).
//!
//! The signatures are read in the same snapshot as their mark (one `REPEATABLE READ`
//! transaction), so they describe exactly the catalogs the mark describes; read in a later
//! snapshot they could describe a state in between (a key added and dropped again leaves the
//! counts and the versions as they were).
//!
//! Not compared (the signatures are read): a mark from a server that started since (a
//! restart, a failover, a restore behind the same address: transaction ids may have been
//! handed out again), a mark from another database behind the same address (one dropped
//! and created again, or renamed into its place: a copy of a template keeps the template's
//! old row versions, so only the database's oid tells them apart), or one more than 2^30
//! transactions old (`age` wraps at 2^31). A row version more than 2^31 transactions old
//! (`age` below 0; frozen since) counts as old, and the special ids (`age` answers
//! `i32::MAX`) too. A crash restart keeps the start time: a transaction committed with
//! `synchronous_commit = off`, seen, then lost in the crash may have its id handed out
//! again (the signatures hash the same row versions and miss that too; the periodic full
//! check does not).
//!
//! What the mark does not see, the signatures do not see either: an in-place update
//! (`pg_class` statistics and flags that `VACUUM` and `ANALYZE` write) keeps its row
//! version, and a renamed function or sequence (a `serial` column's `nextval('…')`, also
//! when moved to another schema) changes the text of a default that calls it
//! (`pg_get_expr`) without any row of these catalogs.

use std::sync::LazyLock;

use sqlx::PgPool;

use super::query;
use crate::backend::{CatalogMark, SignatureRead};
use crate::check::ContractSet;
use crate::error::{Error, Result};

/// Every catalog [`query::SIGNATURES`] reads, in the order of [`CatalogMark::counts`], with
/// the part of it the signatures can read: of `pg_attribute` the user columns (system
/// columns are half its rows), of `pg_depend` the rows of rewrite rules (read through its
/// index: a few per view instead of the whole table). A row never moves between the parts
/// (neither `attnum` nor `classid` is ever updated).
const CATALOGS: [(&str, &str); 8] = [
    ("pg_class", ""),
    ("pg_attribute", " WHERE attnum > 0"),
    ("pg_type", ""),
    ("pg_enum", ""),
    ("pg_constraint", ""),
    ("pg_namespace", ""),
    ("pg_rewrite", ""),
    (
        "pg_depend",
        " WHERE classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass",
    ),
];

/// How far the transaction counter may have moved past an old horizon for its row versions
/// to be compared with `age` (which wraps at 2^31): 2^30 transactions.
const MAX_HORIZON_DISTANCE: i64 = 1 << 30;

/// The most seen versions a mark keeps; a mark with more is not kept (the guard forgets its
/// kept one, and the next read has nothing to compare with).
const MAX_SEEN: usize = 10_000;

/// The mark now (the snapshot's `xmin` as a 64-bit id, the server's start time and the
/// database's oid, each catalog's row count, the seen versions as 32-bit ids), and how many
/// visible catalog rows are new since an earlier mark (`$1` its horizon, `$2` its seen
/// versions, `$3` its server start and database; NULL when there is none, it is from another
/// server start or database, or it is too far behind for `age`). Versions are compared as ages: `age(x) <= age(h) AND age(x) >= 0`
/// is "`x` at or after `h`" for `h` within 2^30 transactions (in that order: the first is
/// false for almost every row, so `age` runs once per row and filter, not twice as a
/// `BETWEEN` would). The statement is unnamed, so it is planned with the seen versions as
/// a constant array, which PostgreSQL matches through a hash table (measured: 10,000 seen
/// versions against 123,000 rows as fast as 10); only the rows at or after the old horizon
/// are matched, and only they pay for the text round trip of their version.
static MARK_QUERY: LazyLock<String> = LazyLock::new(|| {
    let scans: Vec<String> = CATALOGS
        .iter()
        .enumerate()
        .map(|(i, (catalog, part))| {
            format!(
                "SELECT {i} AS k, count(*) AS n,
           count(*) FILTER (WHERE age(xmin) <= (SELECT age_old FROM h) AND age(xmin) >= 0
                              AND NOT (xmin::text::int8 = ANY(coalesce($2::int8[], '{{}}')))) AS fresh,
           array_agg(DISTINCT xmin::text::int8)
               FILTER (WHERE age(xmin) <= (SELECT age_now FROM h) AND age(xmin) >= 0) AS seen
    FROM pg_catalog.{catalog}{part}"
            )
        })
        .collect();
    format!(
        "WITH s AS MATERIALIZED (
    SELECT pg_current_snapshot() AS now,
           extract(epoch FROM pg_postmaster_start_time())::text || '/'
               || (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())::text AS server
), h AS MATERIALIZED (
    SELECT pg_snapshot_xmin(now)::text::int8 AS horizon, server,
           age((pg_snapshot_xmin(now)::text::int8 % 4294967296)::text::xid) AS age_now,
           CASE WHEN server = $3::text
                     AND pg_snapshot_xmax(now)::text::int8 - $1::int8 BETWEEN 0 AND {MAX_HORIZON_DISTANCE}
                THEN age(($1::int8 % 4294967296)::text::xid) END AS age_old,
           ARRAY(SELECT x::text::int8 % 4294967296 FROM pg_snapshot_xip(now) x) AS running
    FROM s
), c AS (
    {}
)
SELECT (SELECT horizon FROM h), (SELECT server FROM h), array_agg(n ORDER BY k),
       CASE WHEN (SELECT age_old FROM h) IS NOT NULL THEN sum(fresh)::int8 END,
       ARRAY(SELECT DISTINCT x FROM c, unnest(c.seen) x
             WHERE x <> ALL((SELECT running FROM h)::int8[]) ORDER BY x)
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
        let (horizon, server, counts, fresh, seen): (i64, String, Vec<i64>, Option<i64>, Vec<i64>) =
            sqlx::query_as(sqlx::AssertSqlSafe(MARK_QUERY.as_str()))
                .persistent(false)
                .bind(since.map(|m| m.horizon))
                .bind(since.map(|m| m.seen.as_slice()))
                .bind(since.map(|m| m.server.as_str()))
                .fetch_one(&mut *tx)
                .await?;
        let mark = CatalogMark {
            horizon,
            server,
            seen,
            counts,
        };
        let unchanged = since.is_some_and(|since| fresh == Some(0) && since.counts == mark.counts);
        if unchanged {
            tx.commit().await?;
            return Ok(SignatureRead::Unchanged(mark));
        }
        let signatures = super::read_signatures(&mut tx, schemas, contracts).await?;
        tx.commit().await?;
        let kept = (mark.seen.len() <= MAX_SEEN).then_some(mark);
        Ok(SignatureRead::Read(signatures, kept))
    };
    read.await.map_err(Error::db(
        "reading the catalog mark and signatures of tenant schemas",
        None,
    ))
}
