//! The end of an online type change: `NOT NULL` through a validated check and the indexes
//! built `CONCURRENTLY` (no lock that stops writers), then the one short swap transaction.

use sqlx::{AssertSqlSafe, PgPool, SqlSafeStr};

use super::inspect::ColumnFacts;
use super::type_change::{Names, OnlineTypeChange, short_tx};
use crate::error::Result;
use contract_core::Dialect;

/// The name of the index built on the shadow column for the index `name`: within
/// PostgreSQL's 63 bytes, a long name cut at a character boundary.
fn shadow_index(name: &str) -> String {
    let raw = format!("{name}_contract_new");
    if raw.len() <= 63 {
        return raw;
    }
    let mut cut = name.len().min(40);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}_{}",
        &name[..cut],
        &contract_core::digest_hex(raw.as_bytes())[..8]
    )
}

/// The check behind `NOT NULL` (added `NOT VALID`, then validated) and the indexes.
pub(super) async fn prepare(
    pool: &PgPool,
    change: &OnlineTypeChange,
    names: &Names,
    facts: &ColumnFacts,
) -> Result<()> {
    let db = |context| super::step_failed(context, change.tenant());
    if facts.not_null {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 AND k.conname = $3)",
        )
        .bind(&change.schema)
        .bind(&change.table)
        .bind(&names.check_raw)
        .fetch_one(pool)
        .await
        .map_err(db("looking up the NOT NULL check"))?;
        if !exists {
            let add = format!(
                "ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} IS NOT NULL) NOT VALID",
                names.table, names.check, names.shadow
            );
            short_tx(pool, change, &add, "adding the NOT NULL check").await?;
        }
        // SHARE UPDATE EXCLUSIVE: readers and writers continue while it scans.
        let validate = format!(
            "ALTER TABLE {} VALIDATE CONSTRAINT {}",
            names.table, names.check
        );
        short_tx(pool, change, &validate, "validating the NOT NULL check").await?;
    }
    for (index, unique, method) in &facts.indexes.0 {
        let new = shadow_index(index);
        let q = |n: &str| Dialect::Postgres.quote(n);
        let qualified = Dialect::Postgres.quote_qualified(Some(&change.schema), &new)?;
        let build = format!(
            "CREATE {}INDEX CONCURRENTLY {} ON {} USING {} ({})",
            if *unique { "UNIQUE " } else { "" },
            q(&new)?,
            names.table,
            q(method)?,
            names.shadow
        );
        super::index::build_concurrently(pool, change.tenant(), &qualified, build).await?;
    }
    Ok(())
}

/// The swap: one transaction under `lock_timeout`, retried; the attempts it took.
pub(super) async fn swap(
    pool: &PgPool,
    change: &OnlineTypeChange,
    names: &Names,
    facts: &ColumnFacts,
) -> Result<u32> {
    let mut sql = Vec::new();
    if facts.not_null {
        sql.push(format!(
            "ALTER TABLE {} ALTER COLUMN {} SET NOT NULL",
            names.table, names.shadow
        ));
    }
    if let Some(default) = &facts.default_expr {
        sql.push(format!(
            "ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {default}",
            names.table, names.shadow
        ));
    }
    sql.push(format!("DROP TRIGGER {} ON {}", names.trigger, names.table));
    sql.push(format!(
        "ALTER TABLE {} DROP COLUMN {}",
        names.table, names.column
    ));
    sql.push(format!(
        "ALTER TABLE {} RENAME COLUMN {} TO {}",
        names.table, names.shadow, names.column
    ));
    for (index, _, _) in &facts.indexes.0 {
        sql.push(format!(
            "ALTER INDEX {} RENAME TO {}",
            Dialect::Postgres.quote_qualified(Some(&change.schema), &shadow_index(index))?,
            Dialect::Postgres.quote(index)?
        ));
    }
    if facts.not_null {
        sql.push(format!(
            "ALTER TABLE {} DROP CONSTRAINT {}",
            names.table, names.check
        ));
    }
    sql.push(format!("DROP FUNCTION {}()", names.function));
    sql.push(format!(
        "DELETE FROM {} WHERE change = {}",
        names.progress,
        Dialect::Postgres.string_literal(&names.key)?
    ));
    sql.extend(change.recorded_in_swap.iter().cloned());
    let _ = &names.shadow_raw;
    let attempts = short_tx(pool, change, &sql.join(";\n"), "the swap").await?;
    // Fresh statistics for the planner on the new column. The change has committed: a
    // failure here is not the change's (autovacuum analyzes the table later).
    let analyze = format!("ANALYZE {} ({})", names.table, names.column);
    if let Err(error) = sqlx::query(AssertSqlSafe(analyze).into_sql_str())
        .execute(pool)
        .await
    {
        tracing::warn!(table = %names.table, column = %names.column, error = %error, "the type change committed, but analyzing the swapped column failed; autovacuum will");
    }
    Ok(attempts)
}

#[cfg(test)]
mod tests {
    use super::shadow_index;

    #[test]
    fn a_long_index_name_is_cut_at_a_character_boundary() {
        assert_eq!(shadow_index("accounts_pkey"), "accounts_pkey_contract_new");
        // Byte 40 falls inside the 'é' (bytes 39 and 40): slicing there panicked, after
        // the whole backfill, on every pass.
        let name = format!("{}é{}", "a".repeat(39), "b".repeat(11));
        let shadow = shadow_index(&name);
        assert!(shadow.len() <= 63, "{shadow}");
        assert!(shadow.starts_with(&"a".repeat(39)), "{shadow}");
        assert!(!shadow.contains('é'), "{shadow}");
        // Two long names that share their first 40 bytes still differ.
        assert_ne!(shadow, shadow_index(&format!("{name}x")));
    }
}
