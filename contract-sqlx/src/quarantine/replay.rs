//! Replay: waiting messages the contract now accepts go back into the queue.

use serde::de::DeserializeOwned;
use sqlx::{Connection, Pool};

use super::error::{QuarantineAction, problem};
use super::report::{Held, HeldReason, ReplayReport, StillRejected};
use super::site::Target;
use super::{QuarantineStore, QueueQuarantine};
use crate::error::Result;
use crate::payload::PayloadContract;

/// Waiting rows read, checked and moved back per transaction.
const REPLAY_PAGE: i64 = 500;

impl QueueQuarantine {
    /// Puts the waiting quarantined messages of this tenant queue that `contract` now
    /// accepts back into the queue: original message id and payload, `attempts` = 0. Each
    /// replayed quarantine row is marked `replayed_at` (and `replay_count` bumped) in the
    /// transaction that re-enqueues it; rows are never deleted.
    ///
    /// A message the contract still rejects stays waiting and is listed with its current
    /// reason in [`ReplayReport::still_rejected`]. An accepted message whose id the queue
    /// holds already, or whose payload the queue column refuses, stays waiting too
    /// ([`ReplayReport::held`]). Rows go in quarantine order, in transactions of 500 rows
    /// that lock them (a concurrent replay of the same queue waits, then skips them), so
    /// of two waiting rows with the same source id the first accepted one goes back and
    /// the other waits until that id is free again.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Ident`] for unusable names; [`crate::Error::Quarantine`] when a
    /// transaction fails: pages committed before stay replayed, the other messages keep
    /// waiting. Calling `replay` again is safe.
    pub async fn replay<DB: QuarantineStore, T: DeserializeOwned>(
        &self,
        pool: &Pool<DB>,
        contract: &PayloadContract<T>,
    ) -> Result<ReplayReport> {
        let target = self.target(DB::DIALECT)?;
        let mut report = ReplayReport::default();
        let mut after = i64::MIN;
        loop {
            match replay_page(pool, &target, contract, after, &mut report).await {
                Ok(Some(last)) => after = last,
                Ok(None) => break,
                Err(e) => {
                    let missing = match pool.acquire().await {
                        Ok(mut conn) => self.missing_table::<DB>(&mut conn, &e).await,
                        Err(_) => None,
                    };
                    return Err(self.error(DB::DIALECT, QuarantineAction::Replay, e, missing));
                }
            }
        }
        tracing::info!(
            tenant = %self.tenant(),
            queue = self.queue_name(),
            replayed = report.replayed,
            still_rejected = report.still_rejected.len(),
            held = report.held.len(),
            "replayed quarantined messages"
        );
        Ok(report)
    }
}

/// One page in one transaction; returns the last row id read, `None` when none is left.
async fn replay_page<DB: QuarantineStore, T: DeserializeOwned>(
    pool: &Pool<DB>,
    target: &Target<'_>,
    contract: &PayloadContract<T>,
    after: i64,
    report: &mut ReplayReport,
) -> Result<Option<i64>, sqlx::Error> {
    let mut tx = DB::begin_write(pool).await?;
    let page = DB::waiting_page(&mut tx, target, after, i64::MAX, REPLAY_PAGE).await?;
    let Some(&(last, _, _)) = page.last() else {
        tx.commit().await?;
        return Ok(None);
    };
    let mut replayed = Vec::new();
    let mut held = Vec::new();
    for (id, source_id, raw) in &page {
        if let Err(rejection) = contract.check(raw) {
            report.still_rejected.push(StillRejected {
                quarantine_id: *id,
                source_id: *source_id,
                rejection,
            });
            continue;
        }
        // A savepoint per message: a payload the queue refuses keeps only itself waiting.
        let mut savepoint = tx.begin().await?;
        let utf8 = std::str::from_utf8(raw).is_ok(); // always, once the contract took it
        let why = match DB::restore(&mut savepoint, target, *id, utf8).await {
            Ok(true) => {
                savepoint.commit().await?;
                replayed.push(*id);
                continue;
            }
            Ok(false) => {
                savepoint.commit().await?;
                HeldReason::IdInUse
            }
            Err(e @ sqlx::Error::Database(_)) => {
                savepoint.rollback().await?;
                HeldReason::QueueRefused { error: problem(&e) }
            }
            Err(e) => return Err(e),
        };
        held.push(Held {
            quarantine_id: *id,
            source_id: *source_id,
            why,
        });
    }
    if !replayed.is_empty() {
        DB::mark_replayed(&mut tx, target, &replayed).await?;
    }
    tx.commit().await?;
    report.replayed += replayed.len() as u64;
    report.held.extend(held);
    Ok(Some(last))
}
