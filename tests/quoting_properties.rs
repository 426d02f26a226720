//! Identifier quoting against the servers' own parsers: random names (unicode, quotes of
//! both kinds, whitespace, backslashes, leading digits, keywords, lengths around the
//! 63-byte and 64-character limits) quoted with `Dialect::Postgres.quote` /
//! `Dialect::MySql.quote` must read back as exactly the input; names the validator rejects
//! must be ones the server would not keep intact.
//!
//! Each proptest case is a batch of names checked in one statement (a `SELECT 1 AS <q>, …`
//! whose RowDescription carries the names as the server parsed them), so thousands of
//! names cost a few round trips; a failing batch is re-checked name by name and shrunk to
//! the smallest failing names.

use crate::support;

use contract_sqlx::model::Dialect;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sqlx::{AssertSqlSafe, Column as _, Executor as _, SqlSafeStr as _, Statement as _};

/// Names per batch, and batches per server: 12 × 1,000 = 12,000 random names each.
const BATCH: usize = 1_000;
const CASES: u32 = 12;

/// Names that are SQL keywords in one dialect or both.
const KEYWORDS: [&str; 24] = [
    "select",
    "SELECT",
    "Select",
    "from",
    "table",
    "user",
    "order",
    "group",
    "where",
    "all",
    "default",
    "null",
    "true",
    "primary",
    "key",
    "index",
    "int",
    "varchar",
    "end",
    "limit",
    "check",
    "lateral",
    "current_user",
    "returning",
];

/// Characters that stress quoting and the servers' identifier rules.
fn name_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => proptest::char::range('a', 'z'),
        2 => proptest::char::range('A', 'Z'),
        2 => proptest::char::range('0', '9'),
        3 => proptest::sample::select(vec![
            ' ', '"', '`', '\\', '\'', '.', ';', '-', '$', '(', '%', '?', '\t', '\n', '\r',
            '\u{b}', '\u{c}', '\u{a0}', '\0',
        ]),
        2 => proptest::sample::select(vec![
            'é', 'ß', 'Ж', '日', '本', 'ﬀ', '\u{301}', '\u{200b}', 'Ω', 'İ', 'ı', '\u{fffd}',
            '🦀', '𝔘',
        ]),
        1 => any::<char>(),
    ]
}

/// A name of `len` characters: a random head, padded with a 1-, 2- or 3-byte character,
/// so the byte and character counts straddle PostgreSQL's 63 bytes and MySQL's 64
/// characters.
fn near_the_limits() -> impl Strategy<Value = String> {
    (
        vec(name_char(), 0..4),
        58_usize..68,
        proptest::sample::select(vec!['a', 'é', '日']),
    )
        .prop_map(|(head, len, fill)| {
            let mut name: String = head.into_iter().collect();
            while name.chars().count() < len {
                name.push(fill);
            }
            name
        })
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => vec(name_char(), 0..24).prop_map(String::from_iter),
        3 => near_the_limits(),
        1 => proptest::sample::select(KEYWORDS.to_vec()).prop_map(str::to_owned),
        1 => ("[0-9]{1,4}", "[a-z_]{0,6}").prop_map(|(digits, rest)| digits + &rest),
    ]
}

/// Exact boundary names, in every batch.
fn boundaries() -> Vec<String> {
    let mut names = vec![
        "a".repeat(63),
        "a".repeat(64),
        "a".repeat(65),
        format!("{}a", "é".repeat(31)),
        "é".repeat(32),
        "日".repeat(21),
        format!("{}a", "日".repeat(21)),
        "é".repeat(64),
        "é".repeat(65),
        "ab ".to_owned(),
        "ab\t".to_owned(),
        " ab".to_owned(),
        "a🦀b".to_owned(),
    ];
    names.extend(KEYWORDS.iter().map(|k| (*k).to_owned()));
    names
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        // A failure re-checks the shrunk batches against the server: keep that bounded.
        max_shrink_iters: 400,
        max_shrink_time: 20_000,
        failure_persistence: None,
        ..Config::default()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// What a batch statement reported for each name, or the server's error.
type Readings = Result<Vec<String>, String>;

/// The failures of a batch: for each name whose reading differs from `expected(name)`,
/// the name and what the server made of it. `check` runs one statement for a list of
/// names; a statement the server rejects is split in halves until the rejected names
/// stand alone (a few statements per culprit, so shrinking stays quick).
async fn mismatches<'n, F, Fut>(
    names: &[&'n str],
    expected: impl Fn(&str) -> String,
    check: F,
) -> Vec<(&'n str, String)>
where
    F: Fn(Vec<&'n str>) -> Fut,
    Fut: std::future::Future<Output = Readings>,
{
    let mut failed = Vec::new();
    let mut pending = vec![names.to_vec()];
    while let Some(batch) = pending.pop() {
        match check(batch.clone()).await {
            Ok(readings) => failed.extend(
                batch
                    .iter()
                    .zip(readings)
                    .filter(|(name, read)| *read != expected(name))
                    .map(|(name, read)| (*name, format!("read back as {read:?}"))),
            ),
            Err(error) if batch.len() == 1 => failed.push((batch[0], format!("rejected: {error}"))),
            Err(_) => {
                let (left, right) = batch.split_at(batch.len() / 2);
                pending.push(left.to_vec());
                pending.push(right.to_vec());
            }
        }
    }
    failed
}

fn verdict(failures: &[(&str, String)]) -> Result<(), TestCaseError> {
    if failures.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = failures
        .iter()
        .take(5)
        .map(|(name, what)| format!("{name:?}: {what}"))
        .collect();
    Err(TestCaseError::fail(format!(
        "{} name(s) do not round-trip: {}",
        failures.len(),
        shown.join("; ")
    )))
}

/// `"…"` with `"` doubled, without the validator: how a name the validator rejects would
/// reach the server.
fn pg_quote_unchecked(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn pg_select_names(pool: &sqlx::PgPool, quoted: &[String]) -> Readings {
    let select: Vec<String> = quoted.iter().map(|q| format!("1 AS {q}")).collect();
    let sql = format!("SELECT {}", select.join(", "));
    let statement = pool
        .prepare(AssertSqlSafe(sql).into_sql_str())
        .await
        .map_err(|e| e.to_string())?;
    Ok(statement
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect())
}

#[test]
fn postgres_reads_every_quoted_name_back_as_written() {
    let rt = runtime();
    let pool = &rt.block_on(support::pg_pool());
    let extras = boundaries();
    let checked = std::cell::Cell::new(0_usize);
    runner()
        .run(&vec(name(), BATCH), |mut names| {
            names.extend(extras.iter().cloned());
            checked.set(checked.get() + names.len());
            // NUL cannot reach PostgreSQL at all (its strings end at NUL): the validator's
            // rejection is the only answer, checked here.
            let (nul, names): (Vec<&str>, Vec<&str>) = names
                .iter()
                .map(String::as_str)
                .partition(|n| n.contains('\0'));
            for name in nul {
                prop_assert!(Dialect::Postgres.quote(name).is_err(), "{name:?}");
            }
            let (accepted, rejected): (Vec<&str>, Vec<&str>) = names
                .into_iter()
                .partition(|name| Dialect::Postgres.quote(name).is_ok());
            let quote = |names: Vec<&str>| -> Vec<String> {
                names
                    .into_iter()
                    .map(|n| Dialect::Postgres.quote(n).expect("accepted"))
                    .collect()
            };
            let failures = rt.block_on(mismatches(&accepted, str::to_owned, |names| {
                let quoted = quote(names);
                async move { pg_select_names(pool, &quoted).await }
            }));
            verdict(&failures)?;
            // Every rejected name is one the server would not keep: empty (an error) or
            // longer than 63 bytes (silently truncated).
            for name in rejected {
                let read = rt.block_on(pg_select_names(pool, &[pg_quote_unchecked(name)]));
                prop_assert!(
                    read.as_ref().map_or(true, |r| r[0] != name),
                    "{name:?} is rejected but the server keeps it: {read:?}"
                );
            }
            Ok(())
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert!(checked.get() >= 10_000, "{} names checked", checked.get());
}

/// What MariaDB removes from the start of a column alias (warning 1466, "Leading spaces
/// are removed"): every character that is not graphic in ASCII, control characters and
/// DEL included. Column names keep them.
fn mysql_alias_trimmed(c: char) -> bool {
    c == ' ' || c.is_ascii_control()
}

fn mysql_quote_unchecked(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

async fn mysql_select_names(pool: &sqlx::MySqlPool, names: &[&str]) -> Readings {
    let select: Vec<String> = names
        .iter()
        .map(|n| Dialect::MySql.quote(n).map(|q| format!("1 AS {q}")))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let sql = format!("SELECT {}", select.join(", "));
    let statement = pool
        .prepare(AssertSqlSafe(sql).into_sql_str())
        .await
        .map_err(|e| e.to_string())?;
    Ok(statement
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect())
}

/// Creates a one-column table named by `quoted_column` in `db` and reads the column's name
/// back from the catalog.
async fn mysql_column_name(pool: &sqlx::MySqlPool, db: &str, quoted_column: &str) -> Readings {
    let table = format!("`{db}`.`t`");
    // MEMORY: no tablespace file per table; the name rules are the server's, not the engine's.
    let create = format!("CREATE TABLE {table} ({quoted_column} int) ENGINE=MEMORY");
    sqlx::raw_sql(AssertSqlSafe(create))
        .execute(pool)
        .await
        .map_err(|e| e.to_string())?;
    let read: Result<String, _> = sqlx::query_scalar(
        "SELECT CAST(column_name AS CHAR CHARACTER SET utf8mb4) FROM information_schema.columns \
         WHERE table_schema = ? AND table_name = 't'",
    )
    .bind(db)
    .fetch_one(pool)
    .await;
    let drop = format!("DROP TABLE {table}");
    sqlx::raw_sql(AssertSqlSafe(drop))
        .execute(pool)
        .await
        .map_err(|e| e.to_string())?;
    read.map(|name| vec![name]).map_err(|e| e.to_string())
}

#[test]
fn mariadb_reads_every_quoted_name_back_as_written() {
    /// Names per batch also created as real columns (DDL is slow; aliases cover the rest).
    const AS_COLUMNS: usize = 8;
    let rt = runtime();
    let pool = &rt.block_on(support::mysql_pool());
    let db = support::unique_name("contract_quoting");
    let _cleanup = support::MySqlDatabases(vec![db.clone()]);
    rt.block_on(support::exec(pool, format!("CREATE DATABASE `{db}`")));
    let extras = boundaries();
    // The boundary names as real columns: accepted ones round-trip, rejected ones fail.
    for name in &extras {
        let read = rt.block_on(mysql_column_name(pool, &db, &mysql_quote_unchecked(name)));
        let kept = read.as_ref().is_ok_and(|r| r[0] == *name);
        assert_eq!(
            kept,
            Dialect::MySql.quote(name).is_ok(),
            "{name:?}: accepted = {}, as a column name: {read:?}",
            Dialect::MySql.quote(name).is_ok()
        );
    }
    let checked = std::cell::Cell::new(0_usize);
    runner()
        .run(&vec(name(), BATCH), |mut names| {
            names.extend(extras.iter().cloned());
            checked.set(checked.get() + names.len());
            let (accepted, rejected): (Vec<&str>, Vec<&str>) = names
                .iter()
                .map(String::as_str)
                .partition(|name| Dialect::MySql.quote(name).is_ok());
            // As aliases: every accepted name (leading spaces and control characters
            // removed, as MariaDB does for aliases only).
            let alias = |name: &str| name.trim_start_matches(mysql_alias_trimmed).to_owned();
            let failures = rt.block_on(mismatches(&accepted, alias, |names| async move {
                mysql_select_names(pool, &names).await
            }));
            verdict(&failures)?;
            // As real column names: a sample of the accepted names round-trips exactly...
            for name in accepted.iter().take(AS_COLUMNS) {
                let quoted = Dialect::MySql.quote(name).expect("accepted");
                let read = rt.block_on(mysql_column_name(pool, &db, &quoted));
                prop_assert!(
                    read.as_ref().is_ok_and(|r| r[0] == *name),
                    "{name:?} is accepted but as a column name: {read:?}"
                );
            }
            // ...and a sample of the rejected ones is refused by MariaDB too.
            for name in rejected.iter().take(AS_COLUMNS) {
                let read = rt.block_on(mysql_column_name(pool, &db, &mysql_quote_unchecked(name)));
                prop_assert!(
                    read.as_ref().map_or(true, |r| r[0] != *name),
                    "{name:?} is rejected but MariaDB keeps it as a column name"
                );
            }
            Ok(())
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert!(checked.get() >= 10_000, "{} names checked", checked.get());
}
