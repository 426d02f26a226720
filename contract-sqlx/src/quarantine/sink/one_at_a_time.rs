//! How [`super::TableSink`] keeps two puts of the same record from both inserting it: a
//! broker redelivers a message to a second consumer while the first is still storing it,
//! and both find no waiting row. Each backend serialises the puts its own way, always at
//! READ COMMITTED so that the second put's insert reads what the first one committed.

use sqlx::pool::PoolConnection;
use sqlx::{Connection as _, Transaction};

use crate::quarantine::{QuarantineRecord, QuarantineStore};

/// A backend's transaction for one put, in which a record's "is it stored already?" and its
/// insert cannot interleave with another put's of the same record.
pub(super) trait OneAtATime: QuarantineStore {
    /// Begins the put's transaction on `conn`, holding `records` (stored in the quarantine
    /// table `table`) against other puts until it ends: the caller commits it, then drops
    /// `conn`.
    fn begin_put<'c>(
        conn: &'c mut PoolConnection<Self>,
        table: &str,
        records: &[QuarantineRecord],
    ) -> impl Future<Output = Result<Transaction<'c, Self>, sqlx::Error>> + Send;
}

/// The records' lock keys, sorted and distinct (every put takes them in the same order): the
/// quarantine table, tenant, source and source id, digested to 64 bits (two records that
/// share a key only wait for each other).
#[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
fn lock_keys(table: &str, records: &[QuarantineRecord]) -> Vec<i64> {
    use sha2::Digest as _;
    let mut keys: Vec<i64> = records
        .iter()
        .map(|record| {
            let mut digest = sha2::Sha256::new();
            for part in [table, &record.tenant, &record.source] {
                digest.update(part.len().to_be_bytes());
                digest.update(part.as_bytes());
            }
            digest.update(record.source_id().to_be_bytes());
            let digest = digest.finalize();
            let mut bytes = [0_u8; 8];
            bytes.copy_from_slice(&digest[..8]);
            i64::from_be_bytes(bytes)
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// PostgreSQL: each insert's `NOT EXISTS` reads a snapshot taken when it starts, which does
/// not see a racing put's row until that put commits. A transaction-scoped advisory lock
/// per record, taken in key order before the inserts, makes the second put wait for the
/// first one's commit; its insert then starts after it and sees the row. (READ COMMITTED
/// explicitly: under a repeatable-read default the snapshot would be taken before the wait.)
#[cfg(feature = "postgres")]
impl OneAtATime for sqlx::Postgres {
    async fn begin_put<'c>(
        conn: &'c mut PoolConnection<Self>,
        table: &str,
        records: &[QuarantineRecord],
    ) -> Result<Transaction<'c, Self>, sqlx::Error> {
        let mut tx = conn
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await?;
        // `unnest` yields the keys in the array's order, so every put locks in key order.
        // language=SQL
        sqlx::query("SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::int8[]) AS k")
            .bind(lock_keys(table, records))
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

/// MySQL/MariaDB: a user lock (`GET_LOCK`) per record, in key order, taken before the
/// transaction and held by the session until it closes. The connection is closed when the
/// put is done rather than returned to the pool, so the locks go with it, also when the put
/// is cancelled half-way; puts store poison, which is rare. The transaction is READ
/// COMMITTED: at REPEATABLE READ the `INSERT … SELECT`'s gap locks deadlocked with the queue
/// consumers' quarantine moves into the same table.
#[cfg(feature = "mysql")]
impl OneAtATime for sqlx::MySql {
    async fn begin_put<'c>(
        conn: &'c mut PoolConnection<Self>,
        table: &str,
        records: &[QuarantineRecord],
    ) -> Result<Transaction<'c, Self>, sqlx::Error> {
        conn.close_on_drop();
        for key in lock_keys(table, records) {
            let granted: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 30)")
                .bind(format!("contract:quarantine-sink:{key:016x}"))
                .fetch_one(&mut **conn)
                .await?;
            if granted != Some(1) {
                return Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "another put of the same message held its lock for 30 s",
                )));
            }
        }
        conn.begin_with("SET TRANSACTION ISOLATION LEVEL READ COMMITTED; START TRANSACTION")
            .await
    }
}

/// SQLite: `BEGIN IMMEDIATE` takes the database's write lock at once, so puts run one
/// after the other.
#[cfg(feature = "sqlite")]
impl OneAtATime for sqlx::Sqlite {
    async fn begin_put<'c>(
        conn: &'c mut PoolConnection<Self>,
        _: &str,
        _: &[QuarantineRecord],
    ) -> Result<Transaction<'c, Self>, sqlx::Error> {
        conn.begin_with("BEGIN IMMEDIATE").await
    }
}
