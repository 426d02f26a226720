//! The `online` bench's traffic: a writer (inserts and point updates at a fixed rate) and a
//! reader (point reads at a fixed rate), each on its own connection, recording how long
//! every operation took, and the checksums the bench compares.
//!
//! Every write goes to the measured table *and* to its mirror (an untouched copy) in the
//! same transaction, so after a change the two must hold the same rows: the checksum of
//! every row of one equals the other's, whatever the writer did meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection};
use tokio::task::JoinHandle;

use crate::pgfleet::Result;

/// One operation: when it started and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub took: Duration,
}

/// The writer and the reader, running until [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    writer: JoinHandle<Result<Vec<Sample>>>,
    reader: JoinHandle<Result<Vec<Sample>>>,
}

/// What the writer and the reader saw.
pub struct Seen {
    pub writes: Vec<Sample>,
    pub reads: Vec<Sample>,
}

/// Latency figures of the samples that started within a window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stalls {
    pub count: usize,
    pub max_ms: f64,
    pub p99_ms: f64,
}

impl Stalls {
    /// The samples of `samples` that started between `from` and `to`.
    pub fn within(samples: &[Sample], from: Instant, to: Instant) -> Self {
        let mut took: Vec<Duration> = samples
            .iter()
            .filter(|s| s.at >= from && s.at <= to)
            .map(|s| s.took)
            .collect();
        if took.is_empty() {
            return Self::default();
        }
        took.sort();
        let p99 = took[(took.len() * 99).div_ceil(100).saturating_sub(1)];
        Self {
            count: took.len(),
            max_ms: crate::pgfleet::ms(took[took.len() - 1]),
            p99_ms: crate::pgfleet::ms(p99),
        }
    }
}

/// A small deterministic generator for the keys the writer and reader touch.
struct Keys(u64);

impl Keys {
    fn next(&mut self, below: i64) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let below = u64::try_from(below.max(1)).unwrap_or(1);
        i64::try_from(self.0 % below).unwrap_or(0) + 1
    }
}

impl Load {
    /// Starts `rate` writes and `rate` reads a second on `table` (and `mirror`), keys
    /// `1..=rows` existing, new rows from `next_id` on.
    pub async fn start(
        options: &PgConnectOptions,
        table: &str,
        mirror: &str,
        rows: i64,
        next_id: i64,
        rate: u32,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let period = Duration::from_secs(1) / rate.max(1);
        let mut conn = options.clone().application_name(WRITER).connect().await?;
        let (t, m) = (table.to_owned(), mirror.to_owned());
        let halt = stop.clone();
        let writer = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let (mut samples, mut keys, mut id) = (Vec::new(), Keys(0x9e37_79b9), next_id);
            let mut n = 0u64;
            while !halt.load(Ordering::Relaxed) {
                tick.tick().await;
                let at = Instant::now();
                n += 1;
                if n.is_multiple_of(2) {
                    write(&mut conn, &[&t, &m], Op::Insert(id)).await?;
                    id += 1;
                } else {
                    write(&mut conn, &[&t, &m], Op::Update(keys.next(rows))).await?;
                }
                samples.push(Sample {
                    at,
                    took: at.elapsed(),
                });
            }
            conn.close().await?;
            Ok(samples)
        });
        let mut conn = options.connect().await?;
        let (t, halt) = (table.to_owned(), stop.clone());
        let reader = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let (mut samples, mut keys) = (Vec::new(), Keys(0x2545_f491));
            let read = format!("SELECT id, user_id::int8, note FROM {t} WHERE id = $1");
            while !halt.load(Ordering::Relaxed) {
                tick.tick().await;
                let at = Instant::now();
                let _: Option<(i64, i64, Option<String>)> =
                    sqlx::query_as(AssertSqlSafe(read.clone()))
                        .bind(keys.next(rows))
                        .fetch_optional(&mut conn)
                        .await?;
                samples.push(Sample {
                    at,
                    took: at.elapsed(),
                });
            }
            conn.close().await?;
            Ok(samples)
        });
        Ok(Self {
            stop,
            writer,
            reader,
        })
    }

    /// Stops both and returns what they saw; an operation that failed fails the bench.
    pub async fn stop(self) -> Result<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        let writes = self.writer.await.map_err(|e| format!("writer: {e}"))??;
        let reads = self.reader.await.map_err(|e| format!("reader: {e}"))??;
        Ok(Seen { writes, reads })
    }
}

/// The writer's `application_name`, by which [`Waits`] finds it.
const WRITER: &str = "contract_bench_writer";

/// What the writer was doing at one moment while it ran a statement: the wait event
/// (`CPU` when none) and, when a lock stopped it, the statements of the sessions that
/// held it up.
#[derive(Debug, Clone)]
pub struct Wait {
    pub at: Instant,
    pub what: String,
}

/// A sampler of the writer's waits in `pg_stat_activity`, every `period`, until stopped.
pub struct Waits {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Result<Vec<Wait>>>,
}

impl Waits {
    /// Starts sampling on a connection of its own.
    pub async fn start(options: &PgConnectOptions, period: Duration) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let mut conn = options.connect().await?;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut seen = Vec::new();
            while !halt.load(Ordering::Relaxed) {
                tick.tick().await;
                let at = Instant::now();
                let rows: Vec<(String,)> = sqlx::query_as(
                    "SELECT coalesce(w.wait_event_type || ':' || w.wait_event, 'CPU') || ' in ' || left(w.query, 30)
                            || coalesce(' <- ' || (SELECT string_agg(left(regexp_replace(b.query, '\\s+', ' ', 'g'), 90)
                                                    || ' [' || b.state || coalesce(' ' || b.wait_event, '') || ']', ' | ')
                                                    FROM pg_stat_activity b WHERE b.pid = ANY (pg_blocking_pids(w.pid))), '')
                     FROM pg_stat_activity w WHERE w.application_name = $1 AND w.state = 'active'",
                )
                .bind(WRITER)
                .fetch_all(&mut conn)
                .await?;
                seen.extend(rows.into_iter().map(|(what,)| Wait { at, what }));
            }
            conn.close().await?;
            Ok(seen)
        });
        Ok(Self { stop, task })
    }

    /// Stops sampling and returns the samples.
    pub async fn stop(self) -> Result<Vec<Wait>> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.map_err(|e| format!("sampler: {e}"))?
    }
}

enum Op {
    Insert(i64),
    Update(i64),
}

/// One write, the same on every table of `tables`, in one transaction.
async fn write(conn: &mut PgConnection, tables: &[&str], op: Op) -> Result<()> {
    let mut tx = conn.begin().await?;
    for table in tables {
        match op {
            Op::Insert(id) => {
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {table} (id, user_id, note, amount) VALUES ($1, $2, 'w' || $1, 1)"
                )))
                .bind(id)
                .bind(i32::try_from(id % 100_000).unwrap_or(0))
                .execute(&mut *tx)
                .await?
            }
            Op::Update(id) => {
                sqlx::query(AssertSqlSafe(format!(
                    "UPDATE {table} SET user_id = user_id + 1, amount = amount + 1 WHERE id = $1"
                )))
                .bind(id)
                .execute(&mut *tx)
                .await?
            }
        };
    }
    tx.commit().await?;
    Ok(())
}

/// `count:sum` of a 64-bit hash of every row of `table` (`user_id` read as `int8`, so the
/// column's type before or after a change does not move it).
pub async fn checksum(conn: &mut PgConnection, table: &str) -> Result<String> {
    let (count, sum): (i64, String) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT count(*)::int8, coalesce(sum(hashtextextended(concat_ws('|', id, user_id::int8, note, amount), 0)::numeric), 0)::text FROM {table}"
    )))
    .fetch_one(conn)
    .await?;
    Ok(format!("{count}:{sum}"))
}
