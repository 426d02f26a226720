//! How [`super::TableSink`] keeps two puts of the same record from both inserting it: a
//! broker redelivers a message to a second consumer while the first is still storing it,
//! and both find no waiting row. Each backend serialises the puts its own way.

use sqlx::{Pool, Transaction};

use crate::quarantine::{QuarantineRecord, QuarantineStore};

/// A backend's transaction for one put, in which a record's "is it stored already?" and its
/// insert cannot interleave with another put's of the same record.
pub(super) trait OneAtATime: QuarantineStore {
    /// Begins the put's transaction.
    fn begin_put(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, sqlx::Error>> + Send;

    /// Waits, inside the put's transaction, until no other put holds any of `records`
    /// (stored in the quarantine table `table`), and keeps them until it ends. A backend
    /// whose transaction serialises the puts already does nothing.
    fn hold_records(
        conn: &mut Self::Connection,
        table: &str,
        records: &[QuarantineRecord],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

/// A record's lock key: the quarantine table, tenant, source and source id, digested to
/// 64 bits (two records that share a key only wait for each other).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
fn lock_key(table: &str, record: &QuarantineRecord) -> i64 {
    use sha2::Digest as _;
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
}

/// PostgreSQL at READ COMMITTED: each insert's `NOT EXISTS` reads a snapshot taken when
/// it starts, which does not see a racing put's row until that put commits. A
/// transaction-scoped advisory lock per record, taken in key order before the inserts,
/// makes the second put wait for the first one's commit; its insert then starts after it
/// and sees the row.
#[cfg(feature = "postgres")]
impl OneAtATime for sqlx::Postgres {
    async fn begin_put(pool: &Pool<Self>) -> Result<Transaction<'static, Self>, sqlx::Error> {
        pool.begin().await
    }

    async fn hold_records(
        conn: &mut sqlx::PgConnection,
        table: &str,
        records: &[QuarantineRecord],
    ) -> Result<(), sqlx::Error> {
        let mut keys: Vec<i64> = records.iter().map(|r| lock_key(table, r)).collect();
        keys.sort_unstable();
        keys.dedup();
        // `unnest` yields the keys in the array's order, so every put locks in key order.
        // language=SQL
        sqlx::query("SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::int8[]) AS k")
            .bind(keys)
            .execute(conn)
            .await
            .map(drop)
    }
}

/// MySQL/MariaDB at REPEATABLE READ (explicitly: the sink must not inherit the server's
/// default): an `INSERT … SELECT` reads with shared next-key locks, so two puts of the same
/// record lock the gap its row goes into and cannot both insert there. The server ends the
/// cycle by failing one of them (a deadlock): that put stores nothing, its message is not
/// acknowledged, and storing it again finds the other put's row.
#[cfg(feature = "mysql")]
impl OneAtATime for sqlx::MySql {
    async fn begin_put(pool: &Pool<Self>) -> Result<Transaction<'static, Self>, sqlx::Error> {
        pool.begin_with("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; START TRANSACTION")
            .await
    }

    async fn hold_records(
        _: &mut sqlx::mysql::MySqlConnection,
        _: &str,
        _: &[QuarantineRecord],
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

/// SQLite: `BEGIN IMMEDIATE` takes the database's write lock at once, so puts run one
/// after the other.
#[cfg(feature = "sqlite")]
impl OneAtATime for sqlx::Sqlite {
    async fn begin_put(pool: &Pool<Self>) -> Result<Transaction<'static, Self>, sqlx::Error> {
        <Self as QuarantineStore>::begin_write(pool).await
    }

    async fn hold_records(
        _: &mut sqlx::sqlite::SqliteConnection,
        _: &str,
        _: &[QuarantineRecord],
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }
}
