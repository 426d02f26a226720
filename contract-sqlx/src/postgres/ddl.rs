//! Creating the guard's own tables (audit, pauses, quarantine) on PostgreSQL, and the
//! advisory locks that serialise it (and each tenant's remediation).

use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use crate::error::{Error, Result, hint};

/// Runs `ddl` (idempotent `CREATE … IF NOT EXISTS` statements) in one transaction under
/// the advisory lock `lock`: replicas starting together would otherwise collide on the
/// catalog (`duplicate key value violates unique constraint "pg_type_typname_nsp_index"`).
pub(crate) async fn create_under_lock(
    pool: &PgPool,
    lock: &str,
    ddl: String,
    context: &'static str,
) -> Result<()> {
    let mut tx = pool
        .begin()
        .await
        .map_err(Error::db_hint(context, hint::CREATE_TABLES, None))?;
    xact_lock(&mut tx, lock)
        .await
        .map_err(Error::db_hint(context, hint::CREATE_TABLES, None))?;
    sqlx::raw_sql(AssertSqlSafe(ddl))
        .execute(&mut *tx)
        .await
        .map_err(Error::db_hint(context, hint::CREATE_TABLES, None))?;
    tx.commit()
        .await
        .map_err(Error::db_hint(context, hint::CREATE_TABLES, None))
}

/// Waits for the transaction-scoped advisory lock `name` (released at commit or rollback).
pub(crate) async fn xact_lock(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(lock_key(name))
        .execute(conn)
        .await
        .map(drop)
}

/// The advisory-lock key of `name`: the first 8 bytes of its SHA-256, big-endian.
///
/// PostgreSQL's `hashtext` gives 32 bits, and among a few hundred thousand tenant names
/// many pairs share a value (`contract:tenant:tenant_1754` and `…tenant_128957`): one
/// tenant's remediation then waited for the other's. At 64 bits a collision among a
/// million names has a probability of about 3·10⁻⁸.
pub(crate) fn lock_key(name: &str) -> i64 {
    let digest = Sha256::digest(name.as_bytes());
    let mut bytes = [0_u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// The PostgreSQL advisory-lock key (`pg_advisory_xact_lock(bigint)`) that remediation of
/// `tenant` holds for the length of its transaction: only one replica remediates a tenant
/// at a time. In `pg_locks` it is the row with `locktype = 'advisory'`, `objsubid = 1`,
/// `classid = key >> 32` and `objid = key & 0xffffffff` (both as unsigned 32-bit values).
///
/// ```
/// let key = contract_sqlx::remediation::tenant_lock_key("tenant_42");
/// assert_ne!(key, contract_sqlx::remediation::tenant_lock_key("tenant_43"));
/// ```
#[must_use]
pub fn tenant_lock_key(tenant: &str) -> i64 {
    lock_key(&tenant_lock_name(tenant))
}

/// The name the per-tenant lock key is derived from.
pub(crate) fn tenant_lock_name(tenant: &str) -> String {
    format!("contract:tenant:{tenant}")
}

#[cfg(test)]
mod tests {
    use super::{lock_key, tenant_lock_key};

    #[test]
    fn the_key_is_the_leading_64_bits_of_the_sha256_of_the_name() {
        // SHA-256("abc") = ba7816bf8f01cfea… (FIPS 180-2, appendix B.1).
        assert_eq!(
            lock_key("abc"),
            i64::from_be_bytes(0xba78_16bf_8f01_cfea_u64.to_be_bytes())
        );
    }

    #[test]
    fn tenants_whose_hashtext_collides_get_distinct_keys() {
        // hashtext('contract:tenant:tenant_1754') = hashtext('contract:tenant:tenant_128957').
        assert_ne!(
            tenant_lock_key("tenant_1754"),
            tenant_lock_key("tenant_128957")
        );
    }
}
