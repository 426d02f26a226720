//! Sweeps on SQLite files: `PRAGMA schema_version` says which tenant changed.

use std::path::Path;

use sqlx::Sqlite;

use super::tests::{contracts, exec, open};
use super::{ChangeSignal, Guard};

async fn exec_in(path: &Path, sql: &str) {
    let pool = open(path).await;
    exec(&pool, sql).await;
    pool.close().await;
}

/// An unchanged fleet's sweep introspects no file; DDL in one file makes the next sweep
/// introspect that file only (and close its gate); every third sweep (as configured) is a
/// full check, and each pass says which signal it used.
#[tokio::test]
async fn sweeps_introspect_only_the_file_whose_schema_version_moved() {
    let scratch = tempfile::Builder::new()
        .prefix("contract-guard-observe-")
        .tempdir()
        .expect("scratch dir");
    let dir = scratch.path();
    let tenants_dir = dir.join("tenants");
    std::fs::create_dir_all(&tenants_dir).expect("dir");
    for name in ["tenant_a", "tenant_b", "tenant_c"] {
        exec_in(
            &tenants_dir.join(format!("{name}.db")),
            "CREATE TABLE events (id INTEGER NOT NULL, body TEXT NOT NULL)",
        )
        .await;
    }
    let control = open(&dir.join("control.db")).await;
    let guard = Guard::<Sqlite>::builder()
        .contracts(contracts())
        .directory(
            crate::sqlite_tenant_files(&tenants_dir)
                .await
                .expect("tenant files"),
        )
        .in_memory_control()
        .full_check_every(3)
        .start(&control)
        .await
        .expect("guard start");
    let start = guard.last_pass().expect("the start-up pass");
    assert_eq!(
        (start.signal, start.introspected),
        (ChangeSignal::FullCheck, 3)
    );

    let unchanged = guard.revalidate().await.expect("sweep 1");
    assert_eq!(unchanged.signal, ChangeSignal::CatalogSignature);
    assert_eq!(unchanged.introspected, 0, "{unchanged:?}");
    assert!(unchanged.changed.is_empty());

    // A change that is not drift still moves the schema version: introspected, not paused.
    exec_in(
        &tenants_dir.join("tenant_c.db"),
        "CREATE INDEX events_body ON events (body)",
    )
    .await;
    let indexed = guard.revalidate().await.expect("sweep 2");
    assert_eq!(
        (indexed.signal, indexed.introspected),
        (ChangeSignal::CatalogSignature, 1)
    );
    assert!(guard.gate("tenant_c").is_open());

    // The third sweep is a full check.
    exec_in(
        &tenants_dir.join("tenant_b.db"),
        "ALTER TABLE events DROP COLUMN body",
    )
    .await;
    let full = guard.revalidate().await.expect("sweep 3");
    assert_eq!(
        (full.signal, full.introspected),
        (ChangeSignal::FullCheck, 3)
    );
    assert_eq!(full.changed, ["tenant_b"]);
    assert!(!guard.gate("tenant_b").is_open());

    exec_in(
        &tenants_dir.join("tenant_a.db"),
        "ALTER TABLE events RENAME COLUMN body TO text",
    )
    .await;
    let renamed = guard.revalidate().await.expect("sweep 4");
    assert_eq!(
        (renamed.signal, renamed.introspected),
        (ChangeSignal::CatalogSignature, 1)
    );
    assert_eq!(renamed.changed, ["tenant_a"]);
    assert!(!guard.gate("tenant_a").is_open());
    assert!(guard.gate("tenant_c").is_open());
    assert_eq!(
        ChangeSignal::CatalogSignature.to_string(),
        "catalog signature (only tenants whose catalog rows changed introspected)"
    );
    drop(guard);
    control.close().await;
    scratch.close().expect("remove the scratch dir");
}
