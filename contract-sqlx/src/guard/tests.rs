//! The guard's pass under failing pause writes, on SQLite files.

use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

use contract_core::{ColumnContract, TableContract, Verdict};
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use super::{Guard, PauseInfo, PausedBy};
use crate::check::{ContractEntry, ContractSet, TypeCheck};
use crate::control::{ControlPlane, ControlStore};

/// A one-connection pool on the SQLite file at `path` (created if missing).
pub(super) async fn open(path: &Path) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("open")
}

/// Runs `sql` on `pool`, panicking with the SQL.
pub(super) async fn exec(pool: &SqlitePool, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .expect(sql);
}

/// `events (id i64, body String)`.
pub(super) fn contracts() -> ContractSet<Sqlite> {
    let mut set = ContractSet::new();
    set.push_entry(ContractEntry {
        contract: TableContract {
            struct_name: "Event".into(),
            schema: None,
            table: "events".into(),
            columns: vec![
                ColumnContract::new("id", "i64"),
                ColumnContract::new("body", "String"),
            ],
        },
        checks: vec![
            TypeCheck::of::<i64>("id", "i64"),
            TypeCheck::of::<String>("body", "String"),
        ],
    });
    set
}

fn since_ms(pause: &PauseInfo) -> u128 {
    pause
        .since
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn guard_pause_of(guard: &Guard<Sqlite>, tenant: &str) -> Arc<PauseInfo> {
    guard
        .pauses()
        .into_iter()
        .find(|p| p.tenant == tenant && p.paused_by == PausedBy::Guard)
        .expect("a guard pause")
}

/// A pass whose pause writes fail still closes every drifted tenant's gate, and the
/// pauses are written by a later pass although the tenants did not change again;
/// re-checking a paused tenant keeps when it was paused. Rejected tenant names are
/// in the guard's report, as in `check_fleet`.
#[tokio::test]
async fn failed_pause_writes_close_every_gate_and_are_written_next_pass() {
    let scratch = tempfile::Builder::new()
        .prefix("contract-guard-unit-")
        .tempdir()
        .expect("scratch dir");
    let dir: PathBuf = scratch.path().to_owned();
    let tenants_dir = dir.join("tenants");
    std::fs::create_dir_all(&tenants_dir).expect("dir");
    for name in ["tenant_a", "tenant_b", "tenant_c", "bad-name"] {
        let pool = open(&tenants_dir.join(format!("{name}.db"))).await;
        exec(
            &pool,
            "CREATE TABLE events (id INTEGER NOT NULL, body TEXT NOT NULL)",
        )
        .await;
        pool.close().await;
    }
    let control = open(&dir.join("control.db")).await;
    let guard = Guard::<Sqlite>::builder()
        .contracts(contracts())
        .directory(
            crate::sqlite_tenant_files(&tenants_dir)
                .await
                .expect("tenant files"),
        )
        .start(&control)
        .await
        .expect("guard start");
    assert!(
        ["tenant_a", "tenant_b", "tenant_c"]
            .iter()
            .all(|t| guard.gate(t).is_open())
    );
    let rejected = guard
        .report()
        .tenants
        .into_iter()
        .find(|r| r.tenant == "bad-name")
        .expect("the rejected name is reported");
    assert!(matches!(rejected.verdict, Verdict::Unreachable { .. }));

    // The pause table is gone: every pause write fails.
    exec(&control, "DROP TABLE contract_pauses").await;
    for tenant in ["tenant_a", "tenant_b"] {
        let pool = open(&tenants_dir.join(format!("{tenant}.db"))).await;
        exec(&pool, "ALTER TABLE events DROP COLUMN body").await;
        pool.close().await;
    }
    assert!(guard.revalidate().await.is_err());
    assert!(!guard.gate("tenant_a").is_open());
    assert!(!guard.gate("tenant_b").is_open());
    assert!(guard.gate("tenant_c").is_open());
    let since = since_ms(&guard_pause_of(&guard, "tenant_a"));

    // The table is back: the next pass writes both pauses, though only tenant_a is
    // re-checked (and it keeps its start).
    Sqlite::ensure(&control, &ControlPlane::default())
        .await
        .expect("pause table");
    tokio::time::sleep(Duration::from_millis(20)).await;
    guard.mark_dirty("tenant_a");
    let pass = guard.revalidate().await.expect("revalidate");
    assert_eq!(pass.changed, ["tenant_a"]);
    assert_eq!(since_ms(&guard_pause_of(&guard, "tenant_a")), since);
    let stored = Sqlite::load_pauses(&control, &ControlPlane::default())
        .await
        .expect("load");
    let stored: Vec<(&str, u128)> = stored
        .iter()
        .filter(|p| p.paused_by == PausedBy::Guard)
        .map(|p| (p.tenant.as_str(), since_ms(p)))
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0], ("tenant_a", since));
    assert_eq!(stored[1].0, "tenant_b");
    assert!(!guard.gate("tenant_a").is_open());
    assert!(!guard.gate("tenant_b").is_open());

    // A lift is persisted before the gate opens: tenant_b is fixed while its stored pause
    // cannot be removed, so its gate stays closed (fail closed), and it opens on the first
    // pass that removes the row.
    exec(
        &control,
        "ALTER TABLE contract_pauses RENAME TO contract_pauses_away",
    )
    .await;
    let pool = open(&tenants_dir.join("tenant_b.db")).await;
    exec(
        &pool,
        "ALTER TABLE events ADD COLUMN body TEXT NOT NULL DEFAULT ''",
    )
    .await;
    pool.close().await;
    assert!(guard.revalidate().await.is_err());
    assert!(
        !guard.gate("tenant_b").is_open(),
        "lifted before the row was removed"
    );
    exec(
        &control,
        "ALTER TABLE contract_pauses_away RENAME TO contract_pauses",
    )
    .await;
    guard.revalidate().await.expect("revalidate");
    assert!(guard.gate("tenant_b").is_open());
    let stored: Vec<String> = Sqlite::load_pauses(&control, &ControlPlane::default())
        .await
        .expect("load")
        .into_iter()
        .map(|p| p.tenant)
        .collect();
    assert_eq!(stored, ["tenant_a"]);
    // Broken again for the restart below.
    let pool = open(&tenants_dir.join("tenant_b.db")).await;
    exec(&pool, "ALTER TABLE events DROP COLUMN body").await;
    pool.close().await;
    guard.revalidate().await.expect("revalidate");
    drop(guard);

    // A restart after tenant_a was fixed: its stored guard pause is removed (found by
    // one read of the stored pauses), tenant_b's stays.
    let pool = open(&tenants_dir.join("tenant_a.db")).await;
    exec(
        &pool,
        "ALTER TABLE events ADD COLUMN body TEXT NOT NULL DEFAULT ''",
    )
    .await;
    pool.close().await;
    let guard = Guard::<Sqlite>::builder()
        .contracts(contracts())
        .directory(
            crate::sqlite_tenant_files(&tenants_dir)
                .await
                .expect("tenant files"),
        )
        .start(&control)
        .await
        .expect("guard restart");
    assert!(guard.gate("tenant_a").is_open());
    assert!(!guard.gate("tenant_b").is_open());
    let stored: Vec<String> = Sqlite::load_pauses(&control, &ControlPlane::default())
        .await
        .expect("load")
        .into_iter()
        .filter(|p| p.paused_by == PausedBy::Guard)
        .map(|p| p.tenant)
        .collect();
    assert_eq!(stored, ["tenant_b"]);
    drop(guard);
    control.close().await;
    scratch.close().expect("remove the scratch dir");
}

/// A scratch directory of SQLite tenants (`tenants/<name>.db`, each with `events` as the
/// contracts read it) and a control database, with a guard started over them.
struct Fleet {
    scratch: tempfile::TempDir,
    tenants: PathBuf,
    control: SqlitePool,
}

impl Fleet {
    async fn new(names: &[&str]) -> Self {
        let scratch = tempfile::Builder::new()
            .prefix("contract-guard-unit-")
            .tempdir()
            .expect("scratch dir");
        let tenants = scratch.path().join("tenants");
        std::fs::create_dir_all(&tenants).expect("dir");
        let control = open(&scratch.path().join("control.db")).await;
        let fleet = Self {
            scratch,
            tenants,
            control,
        };
        for name in names {
            fleet.add(name).await;
        }
        fleet
    }

    /// A new tenant file with a compliant `events`.
    async fn add(&self, name: &str) {
        self.on(
            name,
            "CREATE TABLE events (id INTEGER NOT NULL, body TEXT NOT NULL)",
        )
        .await;
    }

    async fn on(&self, tenant: &str, sql: &str) {
        let pool = open(&self.tenants.join(format!("{tenant}.db"))).await;
        exec(&pool, sql).await;
        pool.close().await;
    }

    async fn guard(&self, every: Duration) -> Guard<Sqlite> {
        self.builder(every)
            .await
            .start(&self.control)
            .await
            .expect("guard start")
    }

    /// A guard over the fleet, its passes every `every`, to start.
    async fn builder(&self, every: Duration) -> super::GuardBuilder<Sqlite> {
        Guard::<Sqlite>::builder()
            .contracts(contracts())
            .directory(
                crate::sqlite_tenant_files(&self.tenants)
                    .await
                    .expect("tenant files"),
            )
            .revalidate_every(every)
    }

    async fn close(self) {
        self.control.close().await;
        self.scratch.close().expect("remove the scratch dir");
    }
}

/// The background task ends once every clone of the guard is dropped, at once and without
/// another pass. The prompt check waited for its wake-up holding the guard, so the two
/// loops of the task kept each other's guard alive and the dropped guard went on with its
/// passes for good; and the pass loop waited holding it, so one more pass (and heartbeat)
/// followed the drop at the next interval.
#[tokio::test]
async fn the_background_task_ends_once_the_guard_is_dropped() {
    let fleet = Fleet::new(&["tenant_a"]).await;
    let guard = fleet.guard(Duration::from_secs(3600)).await;
    // Spawned three times: each of the two wake-ups has three tasks waiting on it.
    let tasks = [guard.spawn(), guard.spawn(), guard.spawn()];
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "runs while the guard is held"
    );
    drop(guard);
    for task in tasks {
        let ended = tokio::time::timeout(Duration::from_secs(10), task).await;
        assert!(ended.is_ok(), "a task outlived its guard");
    }
    fleet.close().await;
}

/// A backlog source whose count waits, once armed, until the test releases it: a pass
/// held between its gates and its heartbeat.
#[derive(Debug, Default)]
struct HeldCount {
    armed: std::sync::atomic::AtomicBool,
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl super::BacklogSource<Sqlite> for Arc<HeldCount> {
    fn depths<'a>(
        &'a self,
        _directory: &'a crate::TenantDirectory<Sqlite>,
        _tenants: &'a [String],
    ) -> futures_util::future::BoxFuture<'a, crate::Result<std::collections::HashMap<String, u64>>>
    {
        Box::pin(async move {
            if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
                self.entered.notify_one();
                self.release.notified().await;
            }
            Ok(std::collections::HashMap::new())
        })
    }

    fn describe(&self) -> String {
        "a count held by the test".into()
    }
}

/// `deregister` while a pass is running: the registration stays removed. The pass wrote
/// its heartbeat at its end, registering the guard again after it had deregistered.
#[tokio::test]
async fn a_pass_running_when_the_guard_deregisters_does_not_register_it_again() {
    let fleet = Fleet::new(&["tenant_a"]).await;
    let held = Arc::new(HeldCount::default());
    let guard = fleet
        .builder(Duration::from_secs(3600))
        .await
        .backlog(Arc::clone(&held))
        .start(&fleet.control)
        .await
        .expect("guard start");
    let plane = ControlPlane::default();
    assert_eq!(
        plane
            .replicas(&fleet.control)
            .await
            .expect("replicas")
            .len(),
        1,
        "registered at start"
    );
    held.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let running = {
        let guard = guard.clone();
        tokio::spawn(async move { guard.revalidate().await })
    };
    held.entered.notified().await;
    guard.deregister().await.expect("deregister");
    held.release.notify_one();
    running.await.expect("join").expect("pass");
    assert_eq!(
        plane
            .replicas(&fleet.control)
            .await
            .expect("replicas")
            .len(),
        0,
        "the running pass registered the guard again"
    );
    drop(guard);
    fleet.close().await;
}

/// A woken pass for a name that is no tenant's (DDL in another schema) is a sweep, but such
/// sweeps take at most a tenth of the time: one within ten times the last one's check stays
/// a targeted pass (the sweep is deferred: `a_sweep_held_off_by_the_rate_limit_runs_when_it_is_due`).
#[tokio::test]
async fn sweeps_for_ddl_outside_the_tenants_take_at_most_a_tenth_of_the_time() {
    use super::ChangeSignal;

    let fleet = Fleet::new(&["tenant_a"]).await;
    let guard = fleet.guard(Duration::from_secs(3600)).await;
    guard.mark_dirty("elsewhere");
    let first = guard.revalidate_woken().await.expect("pass");
    assert_ne!(first.signal, ChangeSignal::Targeted, "{first:?}");
    // As if that sweep had taken a minute.
    guard.inner.state.lock().await.last_elsewhere =
        Some((tokio::time::Instant::now(), Duration::from_secs(60)));
    guard.mark_dirty("elsewhere");
    let second = guard.revalidate_woken().await.expect("pass");
    assert_eq!(second.signal, ChangeSignal::Targeted, "{second:?}");
    // Long enough after it: a sweep again.
    guard.inner.state.lock().await.last_elsewhere = Some((
        tokio::time::Instant::now() - Duration::from_secs(11),
        Duration::from_secs(1),
    ));
    guard.mark_dirty("elsewhere");
    let third = guard.revalidate_woken().await.expect("pass");
    assert_ne!(third.signal, ChangeSignal::Targeted, "{third:?}");
    drop(guard);
    fleet.close().await;
}

/// A sweep for DDL outside the tenants that the rate limit holds off is deferred, not
/// dropped: the background task runs it when it is due. It was left to the periodic
/// sweep (an hour here), so drift made by that DDL stayed unseen until then.
#[tokio::test]
async fn a_sweep_held_off_by_the_rate_limit_runs_when_it_is_due() {
    use super::ChangeSignal;
    use std::time::Instant;

    let fleet = Fleet::new(&["tenant_a"]).await;
    let guard = fleet.guard(Duration::from_secs(3600)).await;
    let task = guard.spawn();
    let signal = || guard.last_pass().map(|p| p.signal);
    let wait_for = async |wanted: &dyn Fn(Option<ChangeSignal>) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !wanted(signal()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(wanted(signal()), "{:?}", signal());
    };
    // As if a sweep for such DDL had just started, its check taking 200 ms: the next one
    // is due in 2 s.
    let marked = Instant::now();
    guard.inner.state.lock().await.last_elsewhere =
        Some((tokio::time::Instant::now(), Duration::from_millis(200)));
    guard.mark_dirty("elsewhere");
    wait_for(&|s| s == Some(ChangeSignal::Targeted)).await;
    assert!(
        marked.elapsed() < Duration::from_secs(2),
        "held off at first"
    );
    wait_for(&|s| s.is_some_and(|s| s != ChangeSignal::Targeted)).await;
    assert!(
        marked.elapsed() >= Duration::from_secs(2),
        "not before it is due: {:?}",
        marked.elapsed()
    );
    drop(guard);
    task.await.expect("task");
    fleet.close().await;
}

/// A deferred sweep is no longer owed once a later pass took its names and found them to
/// be tenants: a schema created meanwhile. The deferral stayed set, and the background task
/// ran an extra sweep for it, past the rate limit.
#[tokio::test]
async fn a_deferred_sweep_is_dropped_once_its_names_turn_out_to_be_tenants() {
    use super::ChangeSignal;

    let fleet = Fleet::new(&["tenant_a"]).await;
    let guard = fleet.guard(Duration::from_secs(3600)).await;
    guard.inner.state.lock().await.last_elsewhere =
        Some((tokio::time::Instant::now(), Duration::from_secs(60)));
    guard.mark_dirty("tenant_b");
    let held_off = guard.revalidate_woken().await.expect("pass");
    assert_eq!(held_off.signal, ChangeSignal::Targeted, "{held_off:?}");
    let deferred = || {
        *guard
            .inner
            .deferred_sweep
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    assert!(deferred().is_some(), "deferred");
    fleet.add("tenant_b").await;
    let pass = guard.revalidate_woken().await.expect("pass");
    assert_eq!(pass.signal, ChangeSignal::Targeted, "{pass:?}");
    assert!(guard.tenants().iter().any(|t| t == "tenant_b"));
    assert!(deferred().is_none(), "no sweep owed any more");
    drop(guard);
    fleet.close().await;
}

/// A tenant listed in a pass that cannot read the operator pauses stays closed; once a
/// later pass reads them it opens, although it is not checked again (nothing changed). It
/// stayed closed for good: only a pass that re-diffed it cleared its `checking` pause.
#[tokio::test]
async fn a_new_tenant_kept_closed_for_unread_operator_pauses_opens_once_they_are_read() {
    let fleet = Fleet::new(&["tenant_a"]).await;
    let guard = fleet.guard(Duration::from_secs(3600)).await;
    exec(
        &fleet.control,
        "ALTER TABLE contract_pauses RENAME TO contract_pauses_away",
    )
    .await;
    fleet.add("tenant_b").await;
    assert!(guard.revalidate().await.is_err());
    assert!(guard.tenants().iter().any(|t| t == "tenant_b"), "listed");
    assert!(!guard.gate("tenant_b").is_open(), "pauses unread");
    exec(
        &fleet.control,
        "ALTER TABLE contract_pauses_away RENAME TO contract_pauses",
    )
    .await;
    let pass = guard.revalidate().await.expect("revalidate");
    assert!(pass.changed.is_empty(), "{pass:?}");
    assert!(
        guard.gate("tenant_b").is_open(),
        "{:?}",
        guard.gate("tenant_b")
    );
    assert!(guard.gate("tenant_a").is_open());
    drop(guard);
    fleet.close().await;
}

/// A new tenant that drifted, listed in a pass that cannot read the operator pauses, has
/// one guard pause in `Guard::pauses`: its drift, whose reason goes on with what holds the
/// gate after the drift is gone. Both its drift pause and its `checking` pause were listed.
#[tokio::test]
async fn a_drifted_tenant_with_unread_operator_pauses_lists_one_guard_pause() {
    let fleet = Fleet::new(&["tenant_a"]).await;
    let guard = fleet.guard(Duration::from_secs(3600)).await;
    exec(
        &fleet.control,
        "ALTER TABLE contract_pauses RENAME TO contract_pauses_away",
    )
    .await;
    fleet
        .on("tenant_b", "CREATE TABLE events (id INTEGER NOT NULL)")
        .await;
    assert!(guard.revalidate().await.is_err());
    let pauses: Vec<String> = guard
        .pauses()
        .iter()
        .filter(|p| p.tenant == "tenant_b")
        .map(|p| p.reason.clone())
        .collect();
    assert_eq!(pauses.len(), 1, "{pauses:?}");
    assert!(
        pauses[0].starts_with("drift: ") && pauses[0].contains("; then checking: "),
        "the drift, then what holds the gate after it: {pauses:?}"
    );
    drop(guard);
    fleet.close().await;
}

/// A prompt check's pause (set while a pass held the pass lock) is lifted by a later pass
/// that introspects the tenant and finds it as it was before, although that pass does not
/// re-diff it (it is not dirty: the pass that took the dirty set was cancelled). The pause
/// was cleared only for a tenant the pass re-diffed, so the gate stayed closed for good.
#[tokio::test]
async fn a_prompt_pause_is_lifted_by_a_later_pass_that_finds_the_tenant_unchanged() {
    let fleet = Fleet::new(&["tenant_a"]).await;
    let guard = fleet.guard(Duration::from_secs(3600)).await;
    let task = guard.spawn();

    // A pass is busy; tenant_a drifts and is marked dirty: the prompt check closes it.
    let busy = guard.inner.state.lock().await;
    fleet
        .on("tenant_a", "ALTER TABLE events DROP COLUMN body")
        .await;
    guard.mark_dirty("tenant_a");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while guard.gate("tenant_a").is_open() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        guard
            .cell_state("tenant_a")
            .is_some_and(|s| s.prompt.is_some()),
        "the prompt check closed it"
    );
    task.abort();
    // A pass takes the dirty set and is cancelled before it checks anything.
    let _ = guard
        .inner
        .dirty
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take_for_pass();
    drop(busy);

    // tenant_a is put back as it was: the next pass finds its fingerprint unchanged.
    fleet
        .on(
            "tenant_a",
            "DROP TABLE events; CREATE TABLE events (id INTEGER NOT NULL, body TEXT NOT NULL)",
        )
        .await;
    let pass = guard.revalidate().await.expect("revalidate");
    assert!(pass.changed.is_empty(), "{pass:?}");
    assert!(
        guard.gate("tenant_a").is_open(),
        "{:?}",
        guard.gate("tenant_a")
    );
    drop(guard);
    fleet.close().await;
}
