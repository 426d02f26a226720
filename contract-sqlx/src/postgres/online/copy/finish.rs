//! The end of a copy: the verification of every row, then the one short swap transaction.

use contract_core::Dialect;
use sqlx::{AssertSqlSafe, PgPool, SqlSafeStr};

use super::create::column_lists;
use super::qualify::Layout;
use super::{CopyNames, abandon_sql, index_copy, index_old};
use crate::error::{Error, Result};
use crate::postgres::online::type_change::{OnlineTypeChange, short_tx};

/// Compares the row count and the sum of a 64-bit hash of every row's text (the old
/// table's column cast) of both tables in one statement, so one snapshot, reading each
/// table once (count and sum from the same scan). On a difference
/// the copy is dropped (the next pass starts again) and the change fails with the figures.
pub(super) async fn verify(
    pool: &PgPool,
    change: &OnlineTypeChange,
    names: &CopyNames,
    layout: &Layout,
) -> Result<()> {
    let (columns, cast) = column_lists(layout, change, "")?;
    // language=SQL
    let sql = format!(
        "SELECT o.rows, o.sum, c.rows, c.sum
         FROM (SELECT count(*) AS rows, coalesce(sum(hashtextextended(ROW({cast})::text, 0)), 0)::text AS sum FROM {t}) o,
              (SELECT count(*) AS rows, coalesce(sum(hashtextextended(ROW({columns})::text, 0)), 0)::text AS sum FROM {n}) c",
        t = names.table,
        n = names.new,
    );
    let (old_rows, old_sum, new_rows, new_sum): (i64, String, i64, String) =
        sqlx::query_as(AssertSqlSafe(sql).into_sql_str())
            .fetch_one(pool)
            .await
            .map_err(super::super::step_failed(
                "verifying the copy",
                change.tenant(),
            ))?;
    if (old_rows, &old_sum) == (new_rows, &new_sum) {
        return Ok(());
    }
    drop_copy(
        pool,
        change,
        names,
        format!(
            "the copy differs from the table ({new_rows} rows, checksum {new_sum}, against {old_rows} and {old_sum}); it was dropped and the next pass copies again"
        ),
    )
    .await
}

/// Drops the copy and fails with `reason` (the change cannot be swapped as it stands).
async fn drop_copy(
    pool: &PgPool,
    change: &OnlineTypeChange,
    names: &CopyNames,
    reason: String,
) -> Result<()> {
    short_tx(pool, change, &abandon_sql(names)?, "dropping a copy").await?;
    Err(Error::NotOnline {
        table: format!("{}.{}", change.schema, change.table),
        column: change.column.clone(),
        reason,
    })
}

/// The column's type as the catalog spells it now (`integer`, `numeric(12,3)`).
pub(super) async fn column_type(
    pool: &PgPool,
    change: &OnlineTypeChange,
    names: &CopyNames,
) -> Result<String> {
    sqlx::query_scalar(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
         WHERE attrelid = $1::regclass AND attname = $2 AND attnum > 0 AND NOT attisdropped",
    )
    .bind(&names.table)
    .bind(&change.column)
    .fetch_one(pool)
    .await
    .map_err(super::super::step_failed(
        "reading the column's type",
        change.tenant(),
    ))
}

/// Drops the copy and fails unless the column still has the type it had when this run
/// began (`at_start`). Nothing stops an `ALTER … TYPE` of the old table while the copy
/// runs (its trigger names no column), and the copy casts whatever the column holds: a
/// column changed to `numeric(12,3)` would be swapped for the approved type with its
/// fractions rounded away.
pub(super) async fn unchanged_type(
    pool: &PgPool,
    change: &OnlineTypeChange,
    names: &CopyNames,
    at_start: &str,
) -> Result<()> {
    let now = column_type(pool, change, names).await?;
    if now == at_start {
        return Ok(());
    }
    drop_copy(
        pool,
        change,
        names,
        format!(
            "its type changed from {at_start} to {now} during the copy; the copy was dropped and nothing was swapped"
        ),
    )
    .await
}

/// The swap, one transaction under `lock_timeout`, retried; the attempts it took. It fails
/// (nothing swapped) if the column's type is no longer `type_at_start`.
pub(super) async fn swap(
    pool: &PgPool,
    change: &OnlineTypeChange,
    names: &CopyNames,
    layout: &Layout,
    type_at_start: &str,
) -> Result<u32> {
    let pg = Dialect::Postgres;
    let lit = |s: &str| pg.string_literal(s);
    let olds = layout
        .indexes
        .iter()
        .map(|i| lit(i))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut renames = Vec::new();
    for index in &layout.indexes {
        renames.push(format!(
            "ALTER INDEX {} RENAME TO {}",
            pg.quote_qualified(Some(&change.schema), index)?,
            pg.quote(&index_old(index))?
        ));
    }
    for index in &layout.indexes {
        renames.push(format!(
            "ALTER INDEX {} RENAME TO {}",
            pg.quote_qualified(Some(&change.schema), &index_copy(index))?,
            pg.quote(index)?
        ));
    }
    // Under the lock nothing writes the old table: what the catalog says of it now is
    // what moves. Grants are re-granted by the owner (a superuser's grant counts as the
    // owner's), in the order the old table lists them.
    // language=SQL
    let sql = format!(
        "LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE;
         DO $\0$ DECLARE old oid := {tl}::regclass; owner name; acl aclitem[]; note text; g record; BEGIN
           IF (SELECT coalesce(array_agg(ic.relname::text ORDER BY ic.oid), '{{}}') FROM pg_index x
               JOIN pg_class ic ON ic.oid = x.indexrelid WHERE x.indrelid = old) IS DISTINCT FROM ARRAY[{olds}]::text[] THEN
             RAISE EXCEPTION 'contract: the indexes of % changed during the copy', {tl};
           END IF;
           IF (SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = old
               AND attname = {cl} AND attnum > 0 AND NOT attisdropped) IS DISTINCT FROM {ty} THEN
             RAISE EXCEPTION 'contract: the type of %.% changed during the copy (it was %)', {tl}, {cl}, {ty};
           END IF;
           SELECT pg_get_userbyid(relowner), relacl INTO owner, acl FROM pg_class WHERE oid = old;
           EXECUTE format('ALTER TABLE %s OWNER TO %I', {nl}, owner);
           IF acl IS NOT NULL THEN
             EXECUTE format('REVOKE ALL ON TABLE %s FROM %I', {nl}, owner);
             FOR g IN SELECT a.grantee, a.privilege_type, a.is_grantable FROM aclexplode(acl) a LOOP
               EXECUTE format('GRANT %s ON TABLE %s TO %s%s', g.privilege_type, {nl},
                 CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END,
                 CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
             END LOOP;
           END IF;
           note := obj_description(old, 'pg_class');
           IF note IS NOT NULL THEN
             EXECUTE format('COMMENT ON TABLE %s IS %L', {nl}, note);
           END IF;
           FOR g IN SELECT d.objid::regclass::text AS seq, a.attname FROM pg_depend d
               JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
               JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
               WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                 AND d.refobjid = old AND d.deptype = 'a' LOOP
             EXECUTE format('ALTER SEQUENCE %s OWNED BY %s.%I', g.seq, {nl}, g.attname);
           END LOOP;
         END $\0$;
         DROP TRIGGER {tr} ON {t};
         ALTER TABLE {t} RENAME TO {old};
         ALTER TABLE {n} RENAME TO {name};
         {renames};
         DROP FUNCTION {f}();
         DELETE FROM {p} WHERE change = {k}{recorded}",
        t = names.table,
        tl = lit(&names.table)?,
        cl = lit(&change.column)?,
        ty = lit(type_at_start)?,
        nl = lit(&names.new)?,
        olds = olds.join(", "),
        tr = names.trigger,
        n = names.new,
        name = pg.quote(&change.table)?,
        old = pg.quote(&names.old_raw)?,
        renames = renames.join(";\n"),
        f = names.function,
        p = names.progress,
        k = lit(&names.key)?,
        recorded = change
            .recorded_in_swap
            .as_ref()
            .map(|statement| format!(";\n{statement}"))
            .unwrap_or_default(),
    );
    short_tx(pool, change, &sql, "the swap of the tables").await
}
