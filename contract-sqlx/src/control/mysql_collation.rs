//! MySQL/MariaDB: the name columns of a control plane an earlier version created, made
//! byte-for-byte (`utf8mb4_bin`). Under the server's case-insensitive default a pause of
//! `acme` updated the pause of `Acme` (two databases on Linux).
//!
//! Only when a column is not so already: an `ALTER TABLE` waits for every transaction that
//! has read the table, and every later read waits behind it (a backup's long transaction
//! would have held up each replica's passes at every start), and it needs a privilege the
//! guard's role may not have. It waits 5 s at most, and a failure is a warning: the plane
//! works as before, names that differ only in case sharing a row.

use contract_core::Dialect;
use sqlx::MySqlPool;

use super::ControlPlane;

/// The most a start waits for the metadata lock of the `ALTER`.
const LOCK_WAIT_SECONDS: u32 = 5;

/// Alters the pauses' `tenant` and `queue` and the tenants' `tenant` to `utf8mb4_bin`
/// when any of them is not; logs what it could not do.
pub(super) async fn upgrade(pool: &MySqlPool, plane: &ControlPlane) {
    if let Err(error) = try_upgrade(pool, plane).await {
        tracing::warn!(
            error = %crate::error::error_chain(&error),
            "the control plane's name columns could not be made case-sensitive (utf8mb4_bin); \
             pauses of tenants whose names differ only in case share a row until they are \
             (ARCHITECTURE.md gives the ALTER)"
        );
    }
}

async fn try_upgrade(pool: &MySqlPool, plane: &ControlPlane) -> crate::error::Result<()> {
    let context = "making the control plane's name columns case-sensitive";
    let fail = |e| crate::Error::control(context, None)(e);
    let (pauses, tenants) = (
        format!("{}pauses", plane.prefix()),
        format!("{}tenants", plane.prefix()),
    );
    // language=SQL
    let stale: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.COLUMNS
         WHERE TABLE_SCHEMA = COALESCE(?, DATABASE())
           AND ((TABLE_NAME = ? AND COLUMN_NAME IN ('tenant', 'queue'))
             OR (TABLE_NAME = ? AND COLUMN_NAME = 'tenant'))
           AND COLLATION_NAME <> 'utf8mb4_bin'",
    )
    .bind(plane.schema())
    .bind(&pauses)
    .bind(&tenants)
    .fetch_one(pool)
    .await
    .map_err(fail)?;
    if stale == 0 {
        return Ok(());
    }
    let (pauses, tenants) = (
        plane.qualified(Dialect::MySql, "pauses")?,
        plane.qualified(Dialect::MySql, "tenants")?,
    );
    let name =
        |width| format!("VARCHAR({width}) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL");
    // One connection, closed after: its session's lock wait is not the pool's.
    let mut conn = pool.acquire().await.map_err(fail)?.detach();
    // language=SQL
    let alter = format!(
        "SET SESSION lock_wait_timeout = {LOCK_WAIT_SECONDS};
         ALTER TABLE {pauses} MODIFY tenant {}, MODIFY queue {};
         ALTER TABLE {tenants} MODIFY tenant {}",
        name(64),
        name(191),
        name(64)
    );
    let altered = sqlx::raw_sql(sqlx::AssertSqlSafe(alter))
        .execute(&mut conn)
        .await
        .map_err(fail);
    let _ = sqlx::Connection::close(conn).await;
    altered?;
    tracing::info!(%pauses, %tenants, "control plane's name columns made case-sensitive (utf8mb4_bin)");
    Ok(())
}
