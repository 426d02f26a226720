//! Cheap change detection for revalidation: the PostgreSQL catalog signature and the
//! catalog mark in front of it move for every kind of change the guard detects (and stay
//! put otherwise; the mark also for DDL committed after it by a transaction open before it,
//! in a savepoint too), a sweep whose mark fails reads the signatures alone, an unchanged
//! fleet's sweep introspects no tenant, every Nth sweep is a full check, the DDL trigger's pass
//! introspects only the named tenant (and leaves a changed fixed schema to the next sweep),
//! sweeps use the trigger's per-schema versions while the trigger can be trusted and fall
//! back to the catalog signatures otherwise, and MySQL (no trustworthy signal) checks fully
//! and says so.

use crate::support;
use crate::support::faults::open_gates;

use std::time::Duration;

use contract_sqlx::backend::{Backend, CatalogMark, SignatureRead};
use contract_sqlx::check::ContractSet;
use contract_sqlx::guard::{ChangeSignal, GuardBuilder, UNPINNED_CHANGE, install_ddl_trigger};
use contract_sqlx::plan::Remediation;
use contract_sqlx::{Contract, Guard, Tenants};
use sqlx::{MySql, PgPool, Postgres};
use support::proxy::{Cut, Proxy, pg_options, target_of};
use support::{PgScratch, exec};

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "events")]
#[allow(dead_code)]
struct Event {
    id: i64,
    user_id: i64,
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "items")]
#[allow(dead_code)]
struct Item {
    id: i64,
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "item_names")]
#[allow(dead_code)]
struct ItemName {
    id: i64,
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "label_names")]
#[allow(dead_code)]
struct LabelName {
    id: i64,
}

/// `items` (contracted) with every kind of column the guard reads, `parents` (referenced,
/// not contracted), `item_names` (a contracted view over `items`), `label_names` (a
/// contracted view over the uncontracted `labels`).
const ITEMS: &str = "
CREATE TYPE {s}.mood AS ENUM ('calm', 'busy');
CREATE DOMAIN {s}.amount AS int8;
CREATE TABLE {s}.parents (id int8 PRIMARY KEY, code int8);
CREATE TABLE {s}.labels (id int8 NOT NULL, name text);
CREATE TABLE {s}.items (
    id int8 PRIMARY KEY, name text, flag bool NOT NULL, mood {s}.mood, total {s}.amount,
    parent_id int8 REFERENCES {s}.parents (id), note text DEFAULT 'none');
CREATE VIEW {s}.item_names AS SELECT id, name FROM {s}.items;
CREATE VIEW {s}.label_names AS SELECT id, name FROM {s}.labels;
";

fn item_contracts() -> ContractSet<Postgres> {
    ContractSet::new()
        .with::<Item>()
        .with::<ItemName>()
        .with::<LabelName>()
}

async fn signature(pool: &PgPool, schema: &str) -> Option<String> {
    let signatures = Postgres::signatures(pool, &[schema.to_owned()], &item_contracts())
        .await
        .expect("signatures")
        .expect("PostgreSQL has a signal");
    signatures
        .get(schema)
        .cloned()
        .expect("every schema answered")
}

/// The catalog mark now (read with no earlier mark to compare with).
async fn catalog_mark(pool: &PgPool) -> CatalogMark {
    match Postgres::signatures_since(pool, &[], &item_contracts(), None)
        .await
        .expect("mark")
    {
        Some(SignatureRead::Read(_, Some(mark))) => mark,
        other => panic!("PostgreSQL reads a mark with its signatures: {other:?}"),
    }
}

/// Whether the catalogs are as they were at `mark`: the signatures are not read again.
async fn catalogs_unchanged_since(pool: &PgPool, schema: &str, mark: &CatalogMark) -> bool {
    let read =
        Postgres::signatures_since(pool, &[schema.to_owned()], &item_contracts(), Some(mark))
            .await
            .expect("mark");
    match read {
        Some(SignatureRead::Unchanged(_)) => true,
        Some(SignatureRead::Read(signatures, Some(_))) => {
            assert!(signatures.contains_key(schema), "{signatures:?}");
            false
        }
        other => panic!("PostgreSQL reads a mark with its signatures: {other:?}"),
    }
}

/// Every kind of change the guard detects moves the tenant's signature and the catalog
/// mark; data changes, `ANALYZE` and DDL in another schema move neither (a table created
/// and dropped again between two reads leaves the catalogs as they were).
#[tokio::test]
async fn the_catalog_signature_moves_for_every_kind_of_drift() {
    let scratch = PgScratch::create("contract_signature").await;
    let pool = &scratch.pool;
    let changes: &[(&str, &str)] = &[
        (
            "column added",
            "ALTER TABLE {s}.items ADD COLUMN extra int4",
        ),
        ("column dropped", "ALTER TABLE {s}.items DROP COLUMN note"),
        (
            "column renamed",
            "ALTER TABLE {s}.items RENAME COLUMN note TO remark",
        ),
        (
            "column retyped (rewrite)",
            "ALTER TABLE {s}.items ALTER COLUMN flag TYPE int4 USING 1",
        ),
        (
            "column retyped (no rewrite)",
            "ALTER TABLE {s}.items ALTER COLUMN total TYPE int8",
        ),
        (
            "NOT NULL set",
            "ALTER TABLE {s}.items ALTER COLUMN name SET NOT NULL",
        ),
        (
            "NOT NULL dropped",
            "ALTER TABLE {s}.items ALTER COLUMN flag DROP NOT NULL",
        ),
        (
            "default changed",
            "ALTER TABLE {s}.items ALTER COLUMN note SET DEFAULT 'other'",
        ),
        (
            "default dropped",
            "ALTER TABLE {s}.items ALTER COLUMN note DROP DEFAULT",
        ),
        (
            "default added",
            "ALTER TABLE {s}.items ALTER COLUMN name SET DEFAULT 'x'",
        ),
        ("enum label added", "ALTER TYPE {s}.mood ADD VALUE 'idle'"),
        (
            "enum label renamed",
            "ALTER TYPE {s}.mood RENAME VALUE 'busy' TO 'hectic'",
        ),
        ("enum type renamed", "ALTER TYPE {s}.mood RENAME TO feeling"),
        ("domain renamed", "ALTER DOMAIN {s}.amount RENAME TO money"),
        ("domain NOT NULL", "ALTER DOMAIN {s}.amount SET NOT NULL"),
        (
            "primary key dropped",
            "ALTER TABLE {s}.items DROP CONSTRAINT items_pkey",
        ),
        (
            "foreign key dropped",
            "ALTER TABLE {s}.items DROP CONSTRAINT items_parent_id_fkey",
        ),
        (
            "primary key replaced",
            "ALTER TABLE {s}.items DROP CONSTRAINT items_pkey; ALTER TABLE {s}.items ADD PRIMARY KEY (id, flag)",
        ),
        (
            "foreign key added",
            "ALTER TABLE {s}.items ADD FOREIGN KEY (id) REFERENCES {s}.parents (id)",
        ),
        (
            "referenced table renamed",
            "ALTER TABLE {s}.parents RENAME TO elders",
        ),
        (
            "referenced column renamed",
            "ALTER TABLE {s}.parents RENAME COLUMN id TO parent_key",
        ),
        (
            "referenced table moved to another schema",
            "CREATE SCHEMA {s}_moved; ALTER TABLE {s}.parents SET SCHEMA {s}_moved",
        ),
        ("table renamed", "ALTER TABLE {s}.items RENAME TO goods"),
        (
            "table renamed into a contracted name",
            "ALTER TABLE {s}.items RENAME TO goods; ALTER TABLE {s}.parents RENAME TO items",
        ),
        (
            "view redefined",
            "CREATE OR REPLACE VIEW {s}.item_names AS SELECT id, name || '!' AS name FROM {s}.items",
        ),
        (
            "view base column NOT NULL",
            "ALTER TABLE {s}.labels ALTER COLUMN name SET NOT NULL",
        ),
        (
            "view base column NOT NULL dropped",
            "ALTER TABLE {s}.labels ALTER COLUMN id DROP NOT NULL",
        ),
        ("table dropped", "DROP TABLE {s}.items CASCADE"),
        (
            "table dropped and recreated",
            "DROP TABLE {s}.items CASCADE; CREATE TABLE {s}.items (id int8 PRIMARY KEY, name text, flag bool NOT NULL, mood {s}.mood, total {s}.amount, parent_id int8 REFERENCES {s}.parents (id), note text DEFAULT 'none')",
        ),
        (
            "table became a view",
            "DROP TABLE {s}.items CASCADE; CREATE VIEW {s}.items AS SELECT id FROM {s}.parents",
        ),
    ];
    let quiet: &[(&str, &str)] = &[
        (
            "rows written",
            "INSERT INTO {s}.parents VALUES (1, 1); INSERT INTO {s}.items (id, flag, parent_id) VALUES (1, true, 1)",
        ),
        ("analyzed", "ANALYZE {s}.items"),
        // The signature sums row versions as ages, which grow with every transaction id
        // handed out: it must not move with them.
        ("transaction ids handed out", "SELECT txid_current()"),
        (
            "DDL elsewhere",
            "CREATE TABLE public.unrelated_{s} (id int4); DROP TABLE public.unrelated_{s}",
        ),
    ];
    for (i, (what, ddl)) in changes.iter().chain(quiet).enumerate() {
        let schema = format!("t{i}");
        let setup = format!("CREATE SCHEMA {schema};{}", ITEMS.replace("{s}", &schema));
        exec(pool, &setup).await;
        let before = signature(pool, &schema).await;
        assert!(before.is_some(), "{what}: a one-level view has a signature");
        let mark = catalog_mark(pool).await;
        exec(pool, &ddl.replace("{s}", &schema)).await;
        let after = signature(pool, &schema).await;
        // The whole-catalog mark in front of the signatures must see every such change.
        let unchanged = catalogs_unchanged_since(pool, &schema, &mark).await;
        if i < changes.len() {
            assert_ne!(before, after, "{what}: the signature must move");
            assert!(!unchanged, "{what}: the catalog mark must move");
        } else {
            assert_eq!(before, after, "{what}: the signature must stay");
            assert!(unchanged, "{what}: the catalog mark must stay");
        }
    }
    // A view reading a system column of its base: a grant on that column rewrites the
    // column's row, which neither the mark nor the signature reads (nothing the guard
    // checks changed).
    exec(
        pool,
        &format!("CREATE SCHEMA sys;{}", ITEMS.replace("{s}", "sys")),
    )
    .await;
    exec(
        pool,
        "DROP VIEW sys.label_names; \
         CREATE VIEW sys.label_names AS SELECT id, name, ctid AS row_id FROM sys.labels",
    )
    .await;
    let before = signature(pool, "sys").await;
    let mark = catalog_mark(pool).await;
    exec(pool, "GRANT SELECT (ctid) ON sys.labels TO public").await;
    assert_eq!(
        before,
        signature(pool, "sys").await,
        "system column granted: the signature must stay"
    );
    assert!(
        catalogs_unchanged_since(pool, "sys", &mark).await,
        "system column granted: the catalog mark must stay"
    );
    // A key referencing a table in another schema: renaming that schema moves it too.
    exec(
        pool,
        "CREATE SCHEMA owners; CREATE TABLE owners.parents (id int8 PRIMARY KEY); \
         CREATE SCHEMA referrer; CREATE TABLE referrer.items (id int8 REFERENCES owners.parents (id))",
    )
    .await;
    let before = signature(pool, "referrer").await;
    exec(pool, "ALTER SCHEMA owners RENAME TO holders").await;
    assert_ne!(
        before,
        signature(pool, "referrer").await,
        "referenced schema renamed: the signature must move"
    );
    // A column's type in another schema: renaming that schema renames the type.
    exec(
        pool,
        "CREATE SCHEMA kinds; CREATE TYPE kinds.shade AS ENUM ('light', 'dark'); \
         CREATE SCHEMA painted; CREATE TABLE painted.items (id int8 PRIMARY KEY, shade kinds.shade)",
    )
    .await;
    let before = signature(pool, "painted").await;
    exec(pool, "ALTER SCHEMA kinds RENAME TO sorts").await;
    assert_ne!(
        before,
        signature(pool, "painted").await,
        "the schema of a column's type renamed: the signature must move"
    );
    // A view over a view: no signature (introspected every pass).
    exec(pool, "CREATE SCHEMA nested;").await;
    exec(pool, &ITEMS.replace("{s}", "nested")).await;
    exec(
        pool,
        "DROP VIEW nested.label_names; CREATE VIEW nested.label_names AS SELECT id, name FROM nested.item_names",
    )
    .await;
    assert_eq!(signature(pool, "nested").await, None);
    // A schema without contracted relations has one too (it can gain them).
    exec(pool, "CREATE SCHEMA bare").await;
    assert_eq!(signature(pool, "bare").await, Some(String::new()));
    scratch.drop_db().await;
}

/// A transaction that was open when a mark was read and commits DDL after it: the mark
/// must move, though the row it rewrote is older than the mark's snapshot (a rename keeps
/// every count). Also when the DDL ran in a savepoint or a PL/pgSQL exception block, whose
/// rows carry a subtransaction's id (not in the snapshot's list of running transactions).
#[tokio::test]
async fn ddl_committed_after_the_mark_by_a_transaction_open_before_it_moves_the_mark() {
    let scratch = PgScratch::create("contract_mark_open_tx").await;
    let pool = &scratch.pool;
    exec(
        pool,
        &format!("CREATE SCHEMA t;{}", ITEMS.replace("{s}", "t")),
    )
    .await;
    let renames = [
        ("plain", "ALTER TABLE t.items RENAME COLUMN note TO remark"),
        (
            "in a savepoint",
            "SAVEPOINT s; ALTER TABLE t.items RENAME COLUMN remark TO note; RELEASE s",
        ),
        (
            "in an exception block",
            "DO $$ BEGIN ALTER TABLE t.items RENAME COLUMN note TO remark; \
             EXCEPTION WHEN duplicate_column THEN NULL; END $$",
        ),
    ];
    for (how, rename) in renames {
        let mut open = <sqlx::PgConnection as sqlx::Connection>::connect(&scratch.url)
            .await
            .expect("connection");
        exec(&mut open, format!("BEGIN; SELECT txid_current(); {rename}")).await;
        // A later transaction ends first: the open one is among the snapshot's running
        // transactions, below its `xmax`.
        exec(pool, "SELECT txid_current()").await;
        let mark = catalog_mark(pool).await;
        exec(&mut open, "COMMIT").await;
        drop(open);
        assert!(
            !catalogs_unchanged_since(pool, "t", &mark).await,
            "a rename ({how}) committed after the mark by a transaction open before it must \
             move the mark"
        );
    }
    scratch.drop_db().await;
}

/// A database replaced behind the same address (dropped and created again from a template,
/// or another one renamed into its place) keeps the server's start time, and its catalog
/// rows keep the template's old row versions: a mark read before must not call it
/// unchanged. Two copies of one template stand for the two databases: the tenant's column
/// renamed in the first, then the second read with the first's mark.
#[tokio::test]
async fn a_database_replaced_by_a_copy_of_its_template_is_not_unchanged() {
    let template = PgScratch::create("contract_mark_template").await;
    exec(&template.pool, "CREATE SCHEMA t1").await;
    exec(&template.pool, ITEMS.replace("{s}", "t1")).await;
    template.pool.close().await;
    let first = PgScratch::copy_of("contract_mark_first", &template).await;
    let second = PgScratch::copy_of("contract_mark_second", &template).await;
    exec(
        &first.pool,
        "ALTER TABLE t1.items RENAME COLUMN note TO remark",
    )
    .await;
    let mark = catalog_mark(&first.pool).await;
    assert!(catalogs_unchanged_since(&first.pool, "t1", &mark).await);
    assert_ne!(
        signature(&first.pool, "t1").await,
        signature(&second.pool, "t1").await
    );
    assert!(
        !catalogs_unchanged_since(&second.pool, "t1", &mark).await,
        "another database's catalogs were taken for the marked ones"
    );
    first.drop_db().await;
    second.drop_db().await;
    template.drop_db().await;
}

/// Two column rows rewritten so that their row versions' sum stays the same (`b` last
/// written by x, `a` by x + 2, then both by x + 1): the signature must still move. Once for
/// two columns of a contracted table that no view reads, once for the two base columns of
/// a contracted view over a table that is not contracted.
#[tokio::test]
async fn a_change_that_keeps_the_sum_of_row_versions_still_moves_the_signature() {
    let scratch = PgScratch::create("contract_signature_sum").await;
    let pool = &scratch.pool;
    exec(pool, ITEMS.replace("{s}", "public")).await;
    swap_row_versions(pool, "items", "total", "note").await;
    swap_row_versions(pool, "labels", "id", "name").await;
    scratch.drop_db().await;
}

/// Makes `public.table`'s columns `a` and `b` nullable, then: `b` set NOT NULL by
/// transaction x, `a` by x + 2, and both made nullable again by x + 1; asserts that the
/// signature moved with the last. It needs three consecutive transaction ids, and other
/// tests hand ids out at the same time, so it retries until it gets them.
async fn swap_row_versions(pool: &PgPool, table: &str, a: &str, b: &str) {
    let nullable = format!(
        "ALTER TABLE {table} ALTER COLUMN {a} DROP NOT NULL, ALTER COLUMN {b} DROP NOT NULL"
    );
    // A transaction on `conn` that has its id, and that id.
    let begin = async |conn: &mut sqlx::PgConnection| -> i64 {
        exec(&mut *conn, "BEGIN").await;
        sqlx::query_scalar("SELECT txid_current()")
            .fetch_one(conn)
            .await
            .expect("xid")
    };
    for _ in 0..200 {
        exec(pool, &nullable).await;
        let (mut c0, mut c1, mut c2) = (
            pool.acquire().await.expect("connection"),
            pool.acquire().await.expect("connection"),
            pool.acquire().await.expect("connection"),
        );
        let x0 = begin(&mut c0).await;
        exec(
            &mut *c0,
            format!("ALTER TABLE {table} ALTER COLUMN {b} SET NOT NULL; COMMIT"),
        )
        .await;
        let x1 = begin(&mut c1).await;
        let x2 = begin(&mut c2).await;
        exec(
            &mut *c2,
            format!("ALTER TABLE {table} ALTER COLUMN {a} SET NOT NULL; COMMIT"),
        )
        .await;
        if (x1, x2) != (x0 + 1, x0 + 2) {
            exec(&mut *c1, "ROLLBACK").await;
            continue;
        }
        let before = signature(pool, "public").await;
        exec(&mut *c1, format!("{nullable}; COMMIT")).await;
        assert_ne!(
            before,
            signature(pool, "public").await,
            "{table}: the signature must move (xids {x0}, {x1}, {x2})"
        );
        return;
    }
    panic!("{table}: never got three consecutive transaction ids");
}

/// Tenant schemas `tenant_{i}` with an `events` table that fits [`Event`].
async fn seed(pool: &PgPool, tenants: std::ops::RangeInclusive<usize>) {
    let ddl: String = tenants
        .map(|i| format!(
            "CREATE SCHEMA tenant_{i}; CREATE TABLE tenant_{i}.events (id int8 NOT NULL, user_id int8 NOT NULL);"
        ))
        .collect();
    exec(pool, &ddl).await;
}

/// An unchanged fleet's sweep introspects no tenant (the catalog mark keeps every
/// signature; DDL elsewhere makes the sweep read them, and none moved); DDL on one tenant
/// makes the next sweep introspect just that one and close its gate; every fourth sweep
/// (as configured) is full.
#[tokio::test]
async fn sweeps_introspect_only_changed_tenants_and_every_nth_is_full() {
    let scratch = PgScratch::create("contract_sweep").await;
    seed(&scratch.pool, 1..=5).await;
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .full_check_every(4)
        .start(&scratch.pool)
        .await
        .expect("start");
    let start = guard.last_pass().expect("start-up pass");
    assert_eq!(
        (start.signal, start.introspected),
        (ChangeSignal::FullCheck, 5)
    );

    let unchanged = guard.revalidate().await.expect("sweep 1");
    assert_eq!(unchanged.signal, ChangeSignal::CatalogQuiet);
    assert_eq!(unchanged.introspected, 0, "{unchanged:?}");
    // A change outside the tenants: the signatures are read again, and none moved.
    exec(&scratch.pool, "CREATE TABLE public.unrelated (id int4)").await;
    let elsewhere = guard.revalidate().await.expect("sweep after DDL elsewhere");
    assert_eq!(
        (elsewhere.signal, elsewhere.introspected),
        (ChangeSignal::CatalogSignature, 0)
    );

    exec(
        &scratch.pool,
        "ALTER TABLE tenant_2.events ALTER COLUMN user_id DROP NOT NULL",
    )
    .await;
    let changed = guard.revalidate().await.expect("sweep 2");
    assert_eq!(
        (changed.signal, changed.introspected),
        (ChangeSignal::CatalogSignature, 1)
    );
    assert_eq!(changed.changed, ["tenant_2"]);
    assert!(!guard.gate("tenant_2").is_open());

    let full = guard.revalidate().await.expect("sweep 3");
    assert_eq!(
        (full.signal, full.introspected),
        (ChangeSignal::FullCheck, 5)
    );
    assert!(full.changed.is_empty(), "{full:?}");
    let after_full = guard.revalidate().await.expect("sweep 4");
    assert_eq!(
        (after_full.signal, after_full.introspected),
        (ChangeSignal::CatalogQuiet, 0)
    );

    // A new tenant has no signature yet: introspected on the next sweep.
    seed(&scratch.pool, 6..=6).await;
    let found = guard.revalidate().await.expect("sweep 5");
    assert_eq!(found.discovered, ["tenant_6"]);
    assert_eq!(found.introspected, 1);
    assert!(guard.gate("tenant_6").is_open());
    assert!(!guard.gate("tenant_2").is_open());
    scratch.drop_db().await;
}

/// A sweep whose catalog mark cannot be read (here its connection is cut as the mark's
/// query goes out) reads the signatures alone: it does not become a full check.
#[tokio::test]
async fn a_sweep_whose_mark_fails_reads_the_signatures_alone() {
    let scratch = PgScratch::create("contract_mark_fails").await;
    seed(&scratch.pool, 1..=4).await;
    let proxy = Proxy::start(target_of(&scratch.url)).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_lazy_with(pg_options(&proxy, &scratch.url));
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .start(&pool)
        .await
        .expect("start");
    let quiet = guard.revalidate().await.expect("sweep");
    assert_eq!(
        (quiet.signal, quiet.introspected),
        (ChangeSignal::CatalogQuiet, 0)
    );
    let fault = proxy.arm(&["pg_postmaster_start_time"], Cut::BeforeSending);
    let sweep = guard.revalidate().await.expect("sweep");
    assert!(fault.fired(), "the mark's query went out");
    assert_eq!(
        (sweep.signal, sweep.introspected),
        (ChangeSignal::CatalogSignature, 0),
        "{sweep:?}"
    );
    assert!(guard.gate("tenant_1").is_open());
    pool.close().await;
    scratch.drop_db().await;
}

/// With the event trigger, DDL on one tenant wakes a pass over that tenant alone, which
/// closes its gate; the periodic sweep (an hour away) plays no part.
#[tokio::test]
async fn the_trigger_pass_introspects_only_the_named_tenant() {
    let scratch = PgScratch::create("contract_targeted").await;
    seed(&scratch.pool, 1..=6).await;
    install_ddl_trigger(&scratch.pool)
        .await
        .expect("trigger (tests run as superuser)");
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .revalidate_every(Duration::from_secs(3600))
        .start(&scratch.pool)
        .await
        .expect("start");
    let listener = guard.listen_for_ddl().await.expect("listen");
    let task = guard.spawn();
    exec(
        &scratch.pool,
        "ALTER TABLE tenant_5.events RENAME COLUMN user_id TO owner_id",
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while guard.gate("tenant_5").is_open() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!guard.gate("tenant_5").is_open(), "gate never closed");
    // The gate closes before the pass has written its status and finished.
    let finished = || {
        guard
            .last_pass()
            .is_some_and(|p| p.signal != ChangeSignal::FullCheck)
    };
    while !finished() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pass = guard.last_pass().expect("a pass");
    assert_eq!(pass.signal, ChangeSignal::Targeted, "{pass:?}");
    assert_eq!(pass.introspected, 1, "{pass:?}");
    assert_eq!(pass.changed, ["tenant_5"]);
    let open = open_gates(&guard);
    assert_eq!(open.len(), 5, "{open:?}");
    task.abort();
    listener.abort();
    scratch.drop_db().await;
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(schema = "shared", table = "settings")]
#[allow(dead_code)]
struct Setting {
    id: i64,
    value: i64,
}

/// Every tenant is checked against a fixed schema's tables: a pass over one named tenant
/// that finds the fixed schema changed leaves the others to the next sweep, which
/// introspects them all (it must not take the fixed schema's new signature as seen by all).
#[tokio::test]
async fn a_targeted_pass_leaves_a_changed_fixed_schema_to_the_next_sweep() {
    let scratch = PgScratch::create("contract_fixed").await;
    seed(&scratch.pool, 1..=3).await;
    exec(
        &scratch.pool,
        "CREATE SCHEMA shared; CREATE TABLE shared.settings (id int8 NOT NULL, value int8 NOT NULL)",
    )
    .await;
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .contract::<Setting>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .revalidate_every(Duration::from_secs(3600))
        .start(&scratch.pool)
        .await
        .expect("start");
    let task = guard.spawn();
    exec(
        &scratch.pool,
        "ALTER TABLE shared.settings DROP COLUMN value",
    )
    .await;
    guard.mark_dirty("tenant_1");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while guard
        .last_pass()
        .is_none_or(|p| p.signal != ChangeSignal::Targeted)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    let targeted = guard.last_pass().expect("a pass");
    assert_eq!(
        (targeted.signal, targeted.introspected),
        (ChangeSignal::Targeted, 1),
        "{targeted:?}"
    );
    assert!(!guard.gate("tenant_1").is_open());
    assert!(guard.gate("tenant_2").is_open(), "not introspected yet");

    let sweep = guard.revalidate().await.expect("sweep");
    assert_eq!(
        (sweep.signal, sweep.introspected),
        (ChangeSignal::CatalogSignature, 3),
        "{sweep:?}"
    );
    let open = open_gates(&guard);
    assert!(open.is_empty(), "{open:?}");
    scratch.drop_db().await;
}

/// A sweep dropped after it read the catalog signatures and before it read the tenants a
/// changed fixed schema picked (a caller's timeout) leaves them all to the next sweep. It
/// had kept the fixed schema's new signature first, so the next sweep found it unchanged,
/// picked no tenant, and every gate stayed open on the shared table's drift until a full
/// check (helper-70).
#[tokio::test]
async fn a_sweep_dropped_after_a_fixed_schema_moved_leaves_every_tenant_to_the_next() {
    let scratch = PgScratch::create("contract_fixed_dropped").await;
    seed(&scratch.pool, 1..=2).await;
    exec(
        &scratch.pool,
        "CREATE SCHEMA shared; CREATE TABLE shared.settings (id int8 NOT NULL, value int8 NOT NULL)",
    )
    .await;
    // One connection, which has read the catalog's own definitions before the test locks
    // `pg_attrdef`: the signatures' read then goes through, the tenants' read waits.
    let single = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&scratch.url)
        .await
        .expect("pool");
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .contract::<Setting>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .revalidate_every(Duration::from_secs(3600))
        .full_check_every(1000)
        .start(&single)
        .await
        .expect("start");
    guard.revalidate().await.expect("a sweep on the signatures");
    assert_eq!(open_gates(&guard).len(), 2);
    exec(
        &scratch.pool,
        "ALTER TABLE shared.settings DROP COLUMN value",
    )
    .await;
    let waiting = crate::support::faults::drop_a_pass_waiting_for(
        &scratch.pool,
        &guard,
        "LOCK TABLE pg_catalog.pg_attrdef IN ACCESS EXCLUSIVE MODE",
    )
    .await;
    // In the tenants' read (their columns), past the signatures' read.
    assert!(waiting.contains("format_type"), "{waiting}");
    guard.revalidate().await.expect("the next sweep");
    let open = open_gates(&guard);
    assert!(open.is_empty(), "{open:?}");
    drop(guard);
    single.close().await;
    scratch.drop_db().await;
}

/// With the event trigger and the listener, DDL on a contract's fixed schema closes every
/// tenant's gate promptly. The listener named the schema `shared`, no tenant: the pass it
/// woke introspected nothing, and the gates stayed open until the periodic sweep (an hour
/// away here). A name that is no tenant's now makes that pass a sweep.
#[tokio::test]
async fn ddl_on_a_fixed_schema_closes_every_tenant_s_gate_promptly() {
    let scratch = PgScratch::create("contract_fixed_ddl").await;
    seed(&scratch.pool, 1..=3).await;
    exec(
        &scratch.pool,
        "CREATE SCHEMA shared; CREATE TABLE shared.settings (id int8 NOT NULL, value int8 NOT NULL)",
    )
    .await;
    install_ddl_trigger(&scratch.pool)
        .await
        .expect("trigger (tests run as superuser)");
    let guard = Guard::<Postgres>::builder()
        .contract::<Event>()
        .contract::<Setting>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .revalidate_every(Duration::from_secs(3600))
        .start(&scratch.pool)
        .await
        .expect("start");
    let listener = guard.listen_for_ddl().await.expect("listen");
    let task = guard.spawn();
    assert_eq!(open_gates(&guard).len(), 3);
    exec(
        &scratch.pool,
        "ALTER TABLE shared.settings DROP COLUMN value",
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !open_gates(&guard).is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open = open_gates(&guard);
    assert!(
        open.is_empty(),
        "still open after the fixed schema changed: {open:?}"
    );
    let pass = guard.last_pass().expect("a pass");
    assert_ne!(pass.signal, ChangeSignal::Targeted, "{pass:?}");
    task.abort();
    listener.abort();
    scratch.drop_db().await;
}

/// A label added to the enum behind an array column and a domain column moves the tenant's
/// catalog signature, so the next sweep (no DDL trigger) introspects the tenant and pauses
/// it: rows holding the label cannot be decoded. The signature hashed only the labels of a
/// column's own type, so the sweep found nothing changed and the gate stayed open.
#[tokio::test]
async fn a_label_added_to_an_enum_behind_an_array_or_a_domain_moves_the_signature() {
    use crate::pg_drift::{Moods, moods_setup};

    a_sweep_pauses_after::<Moods>(
        "contract_enum_signature",
        &moods_setup("'happy', 'sad', 'meh'"),
        "ALTER TYPE tenant_1.mood ADD VALUE 'grumpy'",
    )
    .await;
}

/// With `setup` in a scratch database and a guard over `T` started on it (every tenant's
/// gate open), `ddl` moves tenant_1's catalog signature: the next sweep (no DDL trigger)
/// introspects it and closes its gate.
async fn a_sweep_pauses_after<T>(prefix: &str, setup: &str, ddl: &str)
where
    T: contract_sqlx::Contract + contract_sqlx::check::TypeChecks<Postgres>,
{
    let scratch = PgScratch::create(prefix).await;
    exec(&scratch.pool, setup).await;
    let guard = Guard::<Postgres>::builder()
        .contract::<T>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .revalidate_every(Duration::from_secs(3600))
        .full_check_every(1000)
        .start(&scratch.pool)
        .await
        .expect("start");
    assert!(guard.gate("tenant_1").is_open());
    exec(&scratch.pool, ddl).await;
    let sweep = guard.revalidate().await.expect("sweep");
    assert_eq!(
        (sweep.signal, sweep.introspected),
        (ChangeSignal::CatalogSignature, 1),
        "{sweep:?}"
    );
    assert!(!guard.gate("tenant_1").is_open(), "{sweep:?}");
    scratch.drop_db().await;
}

/// A domain over the enum, alone in its table.
#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "today_moods", backends(postgres))]
#[allow(dead_code)]
struct TodayMood {
    id: i64,
    #[contract(enum_labels = "happy, sad, meh")]
    today: crate::pg_drift::Mood,
}

/// The enum behind a domain column renamed: the tenant's catalog signature moves, so the
/// next sweep introspects it and pauses it (sqlx knows the enum by its name). The
/// signature hashed the domain's row and the enum's labels, neither of which a rename
/// changes, so the sweep found nothing changed and the gate stayed open.
#[tokio::test]
async fn the_enum_behind_a_domain_renamed_moves_the_signature() {
    a_sweep_pauses_after::<TodayMood>(
        "contract_enum_rename",
        "CREATE SCHEMA tenant_1; CREATE TYPE tenant_1.mood AS ENUM ('happy', 'sad', 'meh'); \
         CREATE DOMAIN tenant_1.mood_today AS tenant_1.mood; \
         CREATE TABLE tenant_1.today_moods (id int8 NOT NULL, today tenant_1.mood_today NOT NULL)",
        "ALTER TYPE tenant_1.mood RENAME TO feeling",
    )
    .await;
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "notes")]
#[allow(dead_code)]
struct Note {
    id: i64,
    body: Option<String>,
}

/// A remediation that finds the audit table complete runs no DDL on it. It ran
/// `ALTER TABLE public.contract_audit ADD COLUMN IF NOT EXISTS …` every time: the
/// `ACCESS EXCLUSIVE` lock on the audit table, and DDL in `public` to the event trigger,
/// which sent every listening guard on a fleet sweep after each remediation.
#[tokio::test]
async fn a_remediation_runs_no_ddl_on_a_complete_audit_table() {
    use contract_sqlx::remediate;

    let scratch = PgScratch::create("contract_audit_ddl").await;
    exec(
        &scratch.pool,
        "CREATE SCHEMA tenant_1; CREATE TABLE tenant_1.notes (id int8 NOT NULL)",
    )
    .await;
    install_ddl_trigger(&scratch.pool)
        .await
        .expect("trigger (tests run as superuser)");
    let dir = support::pg_tenant_directory(&scratch.pool).await;
    let contracts = ContractSet::<Postgres>::new().with::<Note>();
    let public_version = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT version FROM public.contract_schema_version WHERE schema_name = 'public'",
        )
        .fetch_one(&scratch.pool)
        .await
        .expect("public's version")
    };
    let first = remediate(&dir, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("first run");
    assert_eq!(first.audits.len(), 1, "{:?}", first.failed);
    let before = public_version().await;
    exec(&scratch.pool, "ALTER TABLE tenant_1.notes DROP COLUMN body").await;
    let second = remediate(&dir, &contracts, Remediation::SafeOnly)
        .run()
        .await
        .expect("second run");
    assert_eq!(second.audits.len(), 1, "{:?}", second.failed);
    assert_eq!(public_version().await, before, "DDL in public");
    scratch.drop_db().await;
}

/// Sweeps until one relies on the DDL trigger's versions (the first after start-up or a
/// re-install may fall back once: the guard's own tables in `public` are DDL too), each
/// introspecting nothing; panics after three.
async fn settle_on_versions(guard: &Guard<Postgres>) {
    for _ in 0..3 {
        let pass = guard.revalidate().await.expect("sweep");
        assert_eq!(pass.introspected, 0, "{pass:?}");
        if pass.signal == ChangeSignal::SchemaVersion {
            return;
        }
    }
    panic!("sweeps never used the trigger's versions");
}

/// Installs the DDL trigger, starts `builder`'s guard over the `tenant_%` schemas (the
/// periodic sweep an hour away, no full check in the test's sweeps) and sweeps until it
/// relies on the trigger's versions.
async fn guard_on_versions(pool: &PgPool, builder: GuardBuilder<Postgres>) -> Guard<Postgres> {
    install_ddl_trigger(pool)
        .await
        .expect("trigger (tests run as superuser)");
    let guard = builder
        .tenants(Tenants::schemas_like("tenant_%"))
        .revalidate_every(Duration::from_secs(3600))
        .full_check_every(1000)
        .start(pool)
        .await
        .expect("start");
    settle_on_versions(&guard).await;
    guard
}

/// With the DDL trigger installed and enabled, a sweep reads the per-schema versions and
/// introspects only the tenant whose version moved. A disabled trigger, or one disabled
/// and enabled again between two sweeps, bumps nothing: those sweeps fall back to the
/// catalog signatures, which catch the change.
#[tokio::test]
async fn sweeps_use_the_trigger_versions_while_the_trigger_can_be_trusted() {
    let scratch = PgScratch::create("contract_versions").await;
    let pool = &scratch.pool;
    seed(pool, 1..=5).await;
    let guard = guard_on_versions(
        pool,
        Guard::<Postgres>::builder()
            .contract::<Event>()
            // Plans without applying: a pass that finds drift writes an execution log.
            .remediation(Remediation::DryRun),
    )
    .await;

    exec(
        pool,
        "ALTER TABLE tenant_2.events ALTER COLUMN user_id DROP NOT NULL",
    )
    .await;
    let changed = guard.revalidate().await.expect("sweep");
    assert_eq!(
        (changed.signal, changed.introspected),
        (ChangeSignal::SchemaVersion, 1),
        "{changed:?}"
    );
    assert_eq!(changed.changed, ["tenant_2"]);
    assert!(!guard.gate("tenant_2").is_open());
    let log = guard.execution_log().expect("the pass found drift: a log");
    assert!(
        log.outcome
            .ends_with(&format!("change signal: {}", ChangeSignal::SchemaVersion)),
        "{}",
        log.outcome
    );
    let quiet = guard.revalidate().await.expect("sweep");
    assert_eq!(
        (quiet.signal, quiet.introspected),
        (ChangeSignal::SchemaVersion, 0),
        "{quiet:?}"
    );

    // Disabled: the change bumps no version; the sweep sees the trigger off and falls back.
    exec(pool, "ALTER EVENT TRIGGER contract_ddl_notify DISABLE").await;
    exec(
        pool,
        "ALTER TABLE tenant_3.events RENAME COLUMN user_id TO owner_id",
    )
    .await;
    let fallback = guard.revalidate().await.expect("sweep");
    assert_eq!(
        fallback.signal,
        ChangeSignal::CatalogSignature,
        "{fallback:?}"
    );
    assert_eq!(fallback.changed, ["tenant_3"], "{fallback:?}");
    assert!(!guard.gate("tenant_3").is_open());

    // Disabled, a change, enabled again before the next sweep: the trigger is on when the
    // sweep looks, but it never saw the change; its new token makes the sweep fall back.
    exec(
        pool,
        "ALTER TABLE tenant_4.events ALTER COLUMN user_id TYPE int4",
    )
    .await;
    exec(pool, "ALTER EVENT TRIGGER contract_ddl_notify ENABLE").await;
    let reenabled = guard.revalidate().await.expect("sweep");
    assert_eq!(
        (reenabled.signal, reenabled.introspected),
        (ChangeSignal::CatalogSignature, 1),
        "{reenabled:?}"
    );
    assert_eq!(reenabled.changed, ["tenant_4"]);
    assert!(!guard.gate("tenant_4").is_open());
    settle_on_versions(&guard).await;
    let open = open_gates(&guard);
    assert_eq!(open, ["tenant_1", "tenant_5"]);
    scratch.drop_db().await;
}

/// The enum every tenant's column uses, in `public`.
#[derive(Debug, sqlx::Type)]
#[sqlx(type_name = "mood", rename_all = "lowercase")]
#[allow(dead_code)] // only decoded
enum Mood {
    Calm,
    Busy,
}

#[derive(Debug, sqlx::FromRow, Contract)]
#[contract(table = "moods", backends(postgres))]
#[allow(dead_code)]
struct MoodRow {
    id: i64,
    #[contract(enum_labels = "calm, busy")]
    mood: Mood,
}

/// A guard over the `tenant_%` schemas reading [`MoodRow`], every sweep a full check, the
/// periodic one an hour away.
async fn mood_guard(pool: &PgPool) -> Guard<Postgres> {
    Guard::<Postgres>::builder()
        .contract::<MoodRow>()
        .tenants(Tenants::schemas_like("tenant_%"))
        .revalidate_every(Duration::from_secs(3600))
        .full_check_every(1)
        .start(pool)
        .await
        .expect("start")
}

/// A change in a schema that is no tenant's (an enum in `public` every tenant's column
/// uses) moves no tenant's version: the sweep sees another schema's version move, falls
/// back to the catalog signatures and finds every tenant drifted.
#[tokio::test]
async fn a_shared_type_changed_outside_the_tenants_makes_the_sweep_fall_back() {
    let scratch = PgScratch::create("contract_shared_enum").await;
    let pool = &scratch.pool;
    let ddl: String = (1..=3)
        .map(|i| {
            format!(
                "CREATE SCHEMA tenant_{i}; \
                 CREATE TABLE tenant_{i}.moods (id int8 NOT NULL, mood public.mood NOT NULL);"
            )
        })
        .collect();
    exec(
        pool,
        format!("CREATE TYPE public.mood AS ENUM ('calm', 'busy'); {ddl}"),
    )
    .await;
    let guard = guard_on_versions(pool, Guard::<Postgres>::builder().contract::<MoodRow>()).await;
    assert_eq!(open_gates(&guard).len(), 3);

    exec(
        pool,
        "ALTER TYPE public.mood RENAME VALUE 'busy' TO 'hectic'",
    )
    .await;
    let sweep = guard.revalidate().await.expect("sweep");
    assert_eq!(
        (sweep.signal, sweep.introspected),
        (ChangeSignal::CatalogSignature, 3),
        "{sweep:?}"
    );
    assert_eq!(sweep.changed, ["tenant_1", "tenant_2", "tenant_3"]);
    let open = open_gates(&guard);
    assert!(open.is_empty(), "{open:?}");
    // The next sweep trusts the versions again: nothing changed since.
    settle_on_versions(&guard).await;
    scratch.drop_db().await;
}

/// `ALTER TABLE … SET SCHEMA` reports only the schema the table went to, so the tenant it
/// left looked unchanged to the versions (its gate stayed open until the next full check),
/// and a change to an object in no schema (an extension) moved no version at all. The
/// trigger bumps its unpinned-change row for both and notifies it: the sweep falls back to
/// the catalog signatures.
#[tokio::test]
async fn changes_the_trigger_cannot_pin_on_a_schema_make_the_sweep_fall_back() {
    let scratch = PgScratch::create("contract_unpinned").await;
    let pool = &scratch.pool;
    seed(pool, 1..=3).await;
    let guard = guard_on_versions(pool, Guard::<Postgres>::builder().contract::<Event>()).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(pool)
        .await
        .expect("listener");
    listener
        .listen(contract_sqlx::guard::DDL_CHANNEL)
        .await
        .expect("listen");

    exec(
        pool,
        "CREATE SCHEMA tenant_3_old; ALTER TABLE tenant_3.events SET SCHEMA tenant_3_old",
    )
    .await;
    let sweep = guard.revalidate().await.expect("sweep");
    assert_eq!(sweep.signal, ChangeSignal::CatalogSignature, "{sweep:?}");
    assert!(sweep.changed.iter().any(|t| t == "tenant_3"), "{sweep:?}");
    assert!(!guard.gate("tenant_3").is_open());
    let mut payloads = Vec::new();
    while let Ok(Ok(notification)) =
        tokio::time::timeout(Duration::from_secs(2), listener.recv()).await
    {
        payloads.push(notification.payload().to_owned());
        if notification.payload() == UNPINNED_CHANGE {
            break;
        }
    }
    assert!(
        payloads.iter().any(|p| p == UNPINNED_CHANGE),
        "{payloads:?}"
    );
    settle_after_fallback(&guard).await;

    // An extension is in no schema: a change to it bumps the unpinned-change row.
    exec(pool, "CREATE EXTENSION IF NOT EXISTS citext").await;
    settle_after_fallback(&guard).await;
    exec(
        pool,
        "COMMENT ON EXTENSION citext IS 'case-insensitive text'",
    )
    .await;
    let sweep = guard.revalidate().await.expect("sweep");
    // A comment is in no catalog the signatures read: the catalog mark keeps them.
    assert_eq!(sweep.signal, ChangeSignal::CatalogQuiet, "{sweep:?}");
    settle_after_fallback(&guard).await;

    // Grants change no introspected row: no fallback for them.
    exec(
        pool,
        "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC",
    )
    .await;
    let sweep = guard.revalidate().await.expect("sweep");
    assert_eq!(sweep.signal, ChangeSignal::SchemaVersion, "{sweep:?}");

    // A session with `standard_conforming_strings = off` still has its SET SCHEMA seen
    // (the trigger's function pins the setting it was written under).
    // A new connection: PL/pgSQL keeps a function's parsed statements per session.
    let mut old_style = <sqlx::PgConnection as sqlx::Connection>::connect(&scratch.url)
        .await
        .expect("connection");
    exec(
        &mut old_style,
        "SET standard_conforming_strings = off; CREATE SCHEMA tenant_2_old; \
         ALTER TABLE tenant_2.events SET SCHEMA tenant_2_old",
    )
    .await;
    drop(old_style);
    let sweep = guard.revalidate().await.expect("sweep");
    assert_eq!(sweep.signal, ChangeSignal::CatalogSignature, "{sweep:?}");
    assert!(!guard.gate("tenant_2").is_open());
    listener.unlisten_all().await.expect("unlisten");
    drop(listener);
    scratch.drop_db().await;
}

/// Sweeps until one trusts the trigger's versions again after a fallback.
async fn settle_after_fallback(guard: &Guard<Postgres>) {
    for _ in 0..3 {
        if guard.revalidate().await.expect("sweep").signal == ChangeSignal::SchemaVersion {
            return;
        }
    }
    panic!("sweeps never came back to the trigger's versions");
}

/// sqlx keeps a custom type's name per connection, keyed by its oid, for the connection's
/// life; `ALTER TYPE … RENAME` keeps the oid. The guard's verdict must follow the new name
/// even on connections that resolved the type before: a fresh connection's decode fails on
/// it.
#[tokio::test]
async fn a_renamed_type_is_a_mismatch_even_on_connections_that_resolved_it_before() {
    let scratch = PgScratch::create("contract_type_renamed").await;
    exec(
        &scratch.pool,
        "CREATE TYPE public.mood AS ENUM ('calm', 'busy'); \
         CREATE SCHEMA tenant_1; CREATE TABLE tenant_1.moods (id int8 NOT NULL, mood public.mood NOT NULL); \
         INSERT INTO tenant_1.moods VALUES (1, 'calm')",
    )
    .await;
    // One connection: whatever resolved the type before is what the guard's next pass uses.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&scratch.url)
        .await
        .expect("pool");
    let guard = mood_guard(&pool).await;
    assert_eq!(open_gates(&guard), ["tenant_1"]);
    let decoded: MoodRow = sqlx::query_as("SELECT id, mood FROM tenant_1.moods")
        .fetch_one(&pool)
        .await
        .expect("decodes before the rename");
    assert_eq!(decoded.id, 1, "{decoded:?}");

    exec(&pool, "ALTER TYPE public.mood RENAME TO feeling").await;
    // What a consumer's new connection sees: the type no longer decodes.
    let mut fresh = <sqlx::PgConnection as sqlx::Connection>::connect(&scratch.url)
        .await
        .expect("fresh connection");
    let fresh_decode = sqlx::query_as::<_, MoodRow>("SELECT id, mood FROM tenant_1.moods")
        .fetch_one(&mut fresh)
        .await;
    assert!(
        fresh_decode.is_err(),
        "a fresh connection no longer decodes the column"
    );
    drop(fresh);
    let pass = guard.revalidate().await.expect("full check");
    assert!(
        !guard.gate("tenant_1").is_open(),
        "the renamed type must close the gate: {pass:?}"
    );
    drop(guard);
    pool.close().await;
    scratch.drop_db().await;
}

/// MySQL has no trustworthy cheap signal: every sweep introspects every tenant and the
/// pass says it was a full check.
#[tokio::test]
async fn mysql_sweeps_fall_back_to_a_full_check_and_say_so() {
    let pool = support::mysql_pool().await;
    let prefix = support::unique_name("ct_rv");
    let names: Vec<String> = (1..=3).map(|i| format!("{prefix}_t{i}")).collect();
    let _cleanup = support::MySqlDatabases(names.clone());
    for name in &names {
        exec(
            &pool,
            format!(
                "CREATE DATABASE `{name}`; \
                 CREATE TABLE `{name}`.events (id BIGINT NOT NULL, user_id BIGINT NOT NULL)"
            ),
        )
        .await;
    }
    let guard = Guard::<MySql>::builder()
        .contract::<Event>()
        .tenants(Tenants::schemas_like(format!("{prefix}\\_t%")))
        .in_memory_control()
        .start(&pool)
        .await
        .expect("start");
    let sweep = guard.revalidate().await.expect("sweep");
    assert_eq!(
        (sweep.signal, sweep.introspected),
        (ChangeSignal::FullCheck, 3)
    );
    assert!(
        sweep.signal.to_string().starts_with("full check"),
        "{}",
        sweep.signal
    );
    assert!(names.iter().all(|t| guard.gate(t).is_open()));
}

/// The type probe of a pass fails (its connection cut, the server away for a moment): the
/// tenant it re-checks is paused, its column's type unresolved and so a mismatch. Once the
/// server answers again, the next full check must diff it again and reopen its gate. The
/// verdict was kept under the tenant's fingerprint, which the failure had not moved: the
/// tenant stayed paused until its schema changed or the process restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_paused_for_a_type_the_probe_could_not_resolve_reopens_once_it_can() {
    use support::proxy::Refusal;

    let scratch = PgScratch::create("contract_probe_failed").await;
    exec(
        &scratch.pool,
        "CREATE TYPE public.mood AS ENUM ('calm', 'busy'); \
         CREATE SCHEMA tenant_1; CREATE TABLE tenant_1.moods (id int8 NOT NULL, mood public.mood NOT NULL)",
    )
    .await;
    let proxy = Proxy::start(target_of(&support::pg_url())).await;
    // One connection, and a short wait for it: a refused reconnect fails fast.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(1))
        .connect_with(pg_options(&proxy, &scratch.url))
        .await
        .expect("pool");
    let guard = mood_guard(&pool).await;
    assert_eq!(open_gates(&guard), ["tenant_1"]);

    // The pass's catalog read goes through on a new connection (the pooled one cut, so
    // that the probe is sent again, not answered from its statement cache); its probe is
    // cut, and reconnecting is refused from the moment that connection was accepted.
    proxy.cut_all();
    proxy.delay(Duration::from_millis(20));
    let cut = proxy.arm(&["SELECT NULL::"], Cut::BeforeSending);
    let accepted = proxy.accepted();
    guard.mark_dirty("tenant_1");
    let pass = {
        let guard = guard.clone();
        tokio::spawn(async move { guard.revalidate().await })
    };
    while proxy.accepted() == accepted {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    proxy.refuse(Refusal::Close).await;
    let _ = pass.await.expect("join");
    assert!(cut.fired(), "the probe was never cut");
    assert!(
        open_gates(&guard).is_empty(),
        "an unresolved type reads as a mismatch"
    );

    proxy.heal().await;
    proxy.delay(Duration::ZERO);
    for _ in 0..3 {
        let _ = guard.revalidate().await;
    }
    assert_eq!(
        open_gates(&guard),
        ["tenant_1"],
        "still paused once the probe answers: {:?}",
        guard.report().tenants.first().map(|t| t.findings.len())
    );
    pool.close().await;
    scratch.drop_db().await;
}
