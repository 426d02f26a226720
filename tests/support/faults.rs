//! Helpers shared by the fault tests: pools through the proxy, polling with a generous
//! bound, the guard's gates, and a count of the guard's revalidation passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use contract_sqlx::control::ControlStore;
use contract_sqlx::{Gate, Guard};

use super::proxy::{Proxy, Refusal, mysql_options, pg_options};

/// How long a pool waits for a connection through the proxy before it reports the server
/// unreachable (sqlx retries a refused connection until then; its default is 30 s).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// A PostgreSQL pool to `url` through `proxy` (connections are opened on first use).
pub fn pg_pool_through(proxy: &Proxy, url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(pg_options(proxy, url))
}

/// A MySQL/MariaDB pool to `url` through `proxy` (connections are opened on first use).
pub fn mysql_pool_through(proxy: &Proxy, url: &str) -> sqlx::MySqlPool {
    sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(mysql_options(proxy, url))
}

/// Polls `check` every 50 ms for up to `bound` (a generous bound, not a timing assertion).
pub async fn eventually(bound: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// The guard's tenants whose gate is open.
pub fn open_gates<DB: ControlStore>(guard: &Guard<DB>) -> Vec<String> {
    guard
        .tenants()
        .into_iter()
        .filter(|t| guard.gate(t).is_open())
        .collect()
}

/// Runs a guard pass that waits for a lock a session of `pool` holds (`lock`, run in an
/// open transaction: `LOCK TABLE …`) and drops it there after 2 s, as a caller's timeout
/// around `revalidate` does; then releases the lock. Returns the statement the pass was
/// waiting in (read from `pg_stat_activity` while it waited), for the caller to check
/// that the pass got as far as it means to drop it at.
pub async fn drop_a_pass_waiting_for(
    pool: &sqlx::PgPool,
    guard: &Guard<sqlx::Postgres>,
    lock: &str,
) -> String {
    let mut holder = pool.acquire().await.expect("connection");
    super::exec(&mut *holder, format!("BEGIN; {lock}")).await;
    // Read on the holder's own session: a new connection may need the locked catalog.
    let waiting = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        sqlx::query_scalar::<_, String>(
            "SELECT query FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_all(&mut *holder)
        .await
        .expect("pg_stat_activity")
    };
    let (pass, waiting) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(2), guard.revalidate()),
        waiting
    );
    super::exec(&mut *holder, "ROLLBACK").await;
    assert!(pass.is_err(), "the pass was to wait for: {lock}");
    match waiting.as_slice() {
        [query] => query.clone(),
        other => panic!("one statement waiting for {lock}, found {other:?}"),
    }
}

/// `true` when every gate is closed by the guard because the tenant is unreachable.
pub fn all_paused_unreachable<DB: ControlStore>(guard: &Guard<DB>) -> bool {
    guard.tenants().iter().all(|t| match guard.gate(t) {
        Gate::Paused(why) => why.reason.starts_with("unreachable"),
        Gate::Open(_) => false,
    })
}

/// The reason `tenant`'s gate is closed, or `None` when it is open.
pub fn pause_reason<DB: ControlStore>(guard: &Guard<DB>, tenant: &str) -> Option<String> {
    match guard.gate(tenant) {
        Gate::Paused(why) => Some(why.reason.clone()),
        Gate::Open(_) => None,
    }
}

/// Runs passes until every gate is open, at most `max`; returns how many it took.
pub async fn passes_to_reopen<DB: ControlStore>(guard: &Guard<DB>, max: usize) -> Option<usize> {
    for pass in 1..=max {
        let _ = guard.revalidate().await;
        if open_gates(guard).len() == guard.tenants().len() {
            return Some(pass);
        }
    }
    None
}

/// Takes the server away for `length` (port closed, open connections cut) while the
/// guard's background passes run, and runs `drift` (directly on the server) a third of
/// the way in. Asserts that every gate closes as unreachable, that none opens while the
/// server is away, and that after healing every gate reopens before a third pass
/// finishes (a pass still waiting on the dead server when it came back may finish
/// first). Returns how long the gates took to close.
pub async fn ride_out_outage<DB: ControlStore>(
    guard: &Guard<DB>,
    proxy: &Proxy,
    passes: &PassCounter,
    length: Duration,
    drift: impl std::future::Future<Output = ()>,
) -> Duration {
    proxy.refuse(Refusal::Down).await;
    proxy.cut_all();
    let away = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(20), || all_paused_unreachable(guard)).await,
        "{:?}",
        guard.pauses()
    );
    let closed_after = away.elapsed();
    let mut drift = Some(drift);
    while away.elapsed() < length {
        assert_eq!(
            open_gates(guard),
            Vec::<String>::new(),
            "a gate opened while the server was away"
        );
        if away.elapsed() >= length / 3
            && let Some(drift) = drift.take()
        {
            drift.await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let passes_away = passes.passes();
    proxy.heal().await;
    assert!(
        eventually(Duration::from_secs(60), || open_gates(guard).len()
            == guard.tenants().len())
        .await,
        "{:?}",
        guard.pauses()
    );
    let finished = passes.passes() - passes_away;
    assert!(
        finished <= 2,
        "{finished} passes finished before every gate reopened"
    );
    eprintln!(
        "outage: every gate closed {closed_after:?} after the server went away; {finished} pass(es) finished before all reopened"
    );
    closed_after
}

/// Counts the guard's finished revalidation passes (each records its duration). Install
/// it with [`metrics::set_default_local_recorder`] in a current-thread test: the guard's
/// background task then runs on the same thread and records here.
#[derive(Debug, Default)]
pub struct PassCounter(Arc<Passes>);

#[derive(Debug, Default)]
struct Passes(AtomicUsize);

impl metrics::HistogramFn for Passes {
    fn record(&self, _seconds: f64) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl PassCounter {
    /// Passes finished so far.
    pub fn passes(&self) -> usize {
        self.0.0.load(Ordering::SeqCst)
    }
}

impl metrics::Recorder for PassCounter {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        if key.name() == contract_sqlx::guard::metrics::REVALIDATION_DURATION {
            metrics::Histogram::from_arc(Arc::clone(&self.0))
        } else {
            metrics::Histogram::noop()
        }
    }
}

/// `true` once no other session of this database holds an advisory lock, sits in an open
/// transaction or is still running a statement (the server notices a cut connection when
/// it next waits to read: a statement it was running, say one waiting for a lock, runs on
/// with its locks until then).
pub async fn nothing_left_open(pool: &sqlx::PgPool) -> bool {
    for _ in 0..100 {
        let (locks, busy): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
                     WHERE l.locktype = 'advisory' AND d.datname = current_database()), \
                    (SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid() \
                       AND backend_type = 'client backend' \
                       AND (state IS DISTINCT FROM 'idle' OR xact_start IS NOT NULL))",
        )
        .fetch_one(pool)
        .await
        .expect("activity");
        if (locks, busy) == (0, 0) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
