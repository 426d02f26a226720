//! The copy's first transaction: the new table, its indexes under names of their own, the
//! new type while it is empty, the trigger on the old table and the checkpoint row.

use contract_core::Dialect;
use sqlx::PgPool;

use super::qualify::Layout;
use super::{CopyNames, abandon_sql, index_copy};
use crate::error::Result;
use crate::postgres::online::type_change::{OnlineTypeChange, short_tx};

/// `"a", "b"` of the columns written (not the generated ones), and the same with `prefix`
/// and the column `cast` cast to the new type.
pub(super) fn column_lists(
    layout: &Layout,
    change: &OnlineTypeChange,
    prefix: &str,
) -> Result<(String, String)> {
    let mut names = Vec::new();
    let mut values = Vec::new();
    for (column, generated) in &layout.columns {
        if *generated {
            continue;
        }
        let q = Dialect::Postgres.quote(column)?;
        if *column == change.column {
            values.push(format!("{prefix}{q}::{}", change.new_type));
        } else {
            values.push(format!("{prefix}{q}"));
        }
        names.push(q);
    }
    Ok((names.join(", "), values.join(", ")))
}

/// Creates the copy (dropping any remains of an earlier one first), in one transaction.
/// Indexes that back no constraint and read the same after the type change are dropped
/// again: [`build_indexes`] builds them `CONCURRENTLY` after the copy (measured at 2M rows,
/// inserting into a table with its secondary index took about twice as long as inserting
/// without it and building the index afterwards).
pub(super) async fn create(
    pool: &PgPool,
    change: &OnlineTypeChange,
    names: &CopyNames,
    layout: &Layout,
) -> Result<()> {
    let pg = Dialect::Postgres;
    let lit = |s: &str| pg.string_literal(s);
    let (columns, new_values) = column_lists(layout, change, "NEW.")?;
    let pk = pg.quote(&layout.pk)?;
    let updates = layout
        .columns
        .iter()
        .filter(|(c, generated)| !generated && *c != layout.pk)
        .map(|(c, _)| pg.quote(c).map(|q| format!("{q} = EXCLUDED.{q}")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let on_conflict = if updates.is_empty() {
        "DO NOTHING".to_owned()
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    };
    let olds = layout
        .indexes
        .iter()
        .map(|i| lit(i))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let copies = layout
        .indexes
        .iter()
        .map(|i| lit(&index_copy(i)))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // `LIKE` copies the indexes in the old table's OID order, so the i-th index of each
    // (by OID) are one another's copy, checked by their definitions without name and
    // table; the copies are renamed before the type change rebuilds any of them.
    let sql = format!(
        "{abandon};
         CREATE TABLE {n} (LIKE {t} INCLUDING ALL);
         DO $\0$ DECLARE o text[]; od text[]; nw text[]; nd text[]; opts text[]; BEGIN
           SELECT array_agg(ic.relname::text ORDER BY ic.oid),
                  array_agg(regexp_replace(pg_get_indexdef(ic.oid), '^CREATE (UNIQUE )?INDEX \\S+ ON \\S+ ', '\\1') ORDER BY ic.oid)
             INTO o, od FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid WHERE x.indrelid = {tl}::regclass;
           SELECT array_agg(ic.relname::text ORDER BY ic.oid),
                  array_agg(regexp_replace(pg_get_indexdef(ic.oid), '^CREATE (UNIQUE )?INDEX \\S+ ON \\S+ ', '\\1') ORDER BY ic.oid)
             INTO nw, nd FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid WHERE x.indrelid = {nl}::regclass;
           IF coalesce(o, '{{}}') IS DISTINCT FROM ARRAY[{olds}]::text[] OR od IS DISTINCT FROM nd THEN
             RAISE EXCEPTION 'contract: the indexes of % changed, or were not copied alike', {tl};
           END IF;
           FOR i IN 1 .. coalesce(cardinality(nw), 0) LOOP
             EXECUTE format('ALTER INDEX %I.%I RENAME TO %I', {sl}, nw[i], (ARRAY[{copies}]::text[])[i]);
           END LOOP;
           SELECT reloptions INTO opts FROM pg_class WHERE oid = {tl}::regclass;
           IF opts IS NOT NULL THEN
             EXECUTE format('ALTER TABLE %s SET (%s)', {nl}, array_to_string(opts, ', '));
           END IF;
         END $\0$;
         ALTER TABLE {n} ALTER COLUMN {c} TYPE {ty} USING {c}::{ty};
         DO $\0$ DECLARE o text[] := ARRAY[{olds}]::text[]; cp text[] := ARRAY[{copies}]::text[]; BEGIN
           FOR i IN 1 .. cardinality(o) LOOP
             IF NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = format('%I.%I', {sl}, cp[i])::regclass)
                AND regexp_replace(pg_get_indexdef(format('%I.%I', {sl}, cp[i])::regclass), '^CREATE (UNIQUE )?INDEX \\S+ ON \\S+ ', '\\1')
                  = regexp_replace(pg_get_indexdef(format('%I.%I', {sl}, o[i])::regclass), '^CREATE (UNIQUE )?INDEX \\S+ ON \\S+ ', '\\1') THEN
               EXECUTE format('DROP INDEX %I.%I', {sl}, cp[i]);
             END IF;
           END LOOP;
         END $\0$;
         CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $\0$
         BEGIN
           IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.{pk} IS DISTINCT FROM NEW.{pk}) THEN
             PERFORM pg_advisory_xact_lock_shared({lock});
             DELETE FROM {n} WHERE {pk} = OLD.{pk};
           END IF;
           IF TG_OP <> 'DELETE' THEN
             INSERT INTO {n} ({columns}) VALUES ({new_values}) ON CONFLICT ({pk}) {on_conflict};
           END IF;
           RETURN NULL;
         END $\0$;
         CREATE TRIGGER {tr} AFTER INSERT OR UPDATE OR DELETE ON {t} FOR EACH ROW EXECUTE FUNCTION {f}();
         INSERT INTO {p} (change, state) VALUES ({k}, 'copy')",
        abandon = abandon_sql(names)?,
        n = names.new,
        t = names.table,
        tl = lit(&names.table)?,
        nl = lit(&names.new)?,
        sl = lit(&change.schema)?,
        olds = olds.join(", "),
        copies = copies.join(", "),
        c = pg.quote(&change.column)?,
        ty = change.new_type,
        f = names.function,
        tr = names.trigger,
        p = names.progress,
        k = lit(&names.key)?,
        lock = names.batch_lock,
    );
    short_tx(pool, change, &sql, "creating the copy of the table").await?;
    Ok(())
}

/// Builds the indexes the create transaction left out, `CONCURRENTLY` (the trigger's
/// writes go on), each from the old index's definition; one an interrupted build left
/// invalid is dropped and built again.
pub(super) async fn build_indexes(
    pool: &PgPool,
    change: &OnlineTypeChange,
    names: &CopyNames,
    layout: &Layout,
) -> Result<()> {
    let pg = Dialect::Postgres;
    for index in &layout.indexes {
        let copy = index_copy(index);
        let qualified = pg.quote_qualified(Some(&change.schema), &copy)?;
        // language=SQL
        let (unique, rest): (bool, String) = sqlx::query_as(
            "SELECT x.indisunique,
                    regexp_replace(pg_get_indexdef(x.indexrelid), '^CREATE (UNIQUE )?INDEX \\S+ ON \\S+ ', '')
             FROM pg_index x WHERE x.indexrelid = $1::regclass",
        )
        .bind(pg.quote_qualified(Some(&change.schema), index)?)
        .fetch_one(pool)
        .await
        .map_err(crate::error::Error::db(
            "reading an index to copy",
            Some(change.tenant()),
        ))?;
        let build = format!(
            "CREATE {}INDEX CONCURRENTLY {} ON {} {rest}",
            if unique { "UNIQUE " } else { "" },
            pg.quote(&copy)?,
            names.new,
        );
        crate::postgres::online::index::build_concurrently(
            pool,
            change.tenant(),
            &qualified,
            build,
        )
        .await?;
    }
    Ok(())
}
