//! Metric names (Prometheus conventions: `_total` counters, `_seconds` histograms, no
//! tenant label by default — tenants are on spans, logs and pause rows instead).

/// Counter: gate answers, by `outcome` (`open` / `paused`). (The gate answers in about a
/// hundred nanoseconds from memory; timing every call would cost more than the call.)
pub const GATE_TOTAL: &str = "contract_gate_total";
/// Gauge: tenants the guard knows (listed by its tenant sources, retired ones until pruned).
pub const TENANTS: &str = "contract_tenants";
/// Gauge: messages waiting across the fleet, where a backlog source counts them.
pub const BACKLOG_MESSAGES: &str = "contract_backlog_messages";
/// Gauge: the largest backlog of one tenant (no tenant label: the name is in the report).
pub const BACKLOG_MAX_MESSAGES: &str = "contract_backlog_max_messages";
/// Gauge: tenants currently paused (guard or operator).
pub const PAUSED_TENANTS: &str = "contract_paused_tenants";
/// Gauge: drift findings at `at_risk` or worse across the fleet.
pub const DRIFT_FINDINGS: &str = "contract_drift_findings";
/// Histogram: time of one revalidation pass.
pub const REVALIDATION_DURATION: &str = "contract_revalidation_duration_seconds";
/// Counter: remediations applied.
pub const REMEDIATIONS_TOTAL: &str = "contract_remediations_total";
/// Counter: tenant remediations that failed (rolled back; retried with backoff).
pub const REMEDIATION_FAILURES_TOTAL: &str = "contract_remediation_failures_total";
/// Counter: revalidation passes (or pools within one) that could not read the live schema.
pub const REVALIDATION_ERRORS_TOTAL: &str = "contract_revalidation_errors_total";
/// Counter: messages by `queue` and `outcome` (`accepted`, `quarantined`, `released`).
pub const MESSAGES_TOTAL: &str = "contract_messages_total";
/// Counter: quarantined messages by `queue` and `reason`.
pub const QUARANTINED_TOTAL: &str = "contract_quarantined_total";
/// Gauge: rows an online backfill has copied (the running one; no tenant label, the
/// tenant is in the progress log line).
pub const ONLINE_BACKFILL_ROWS_DONE: &str = "contract_online_backfill_rows_done";
/// Gauge: the running online backfill's table size estimate (`pg_class.reltuples`).
pub const ONLINE_BACKFILL_ROWS_ESTIMATE: &str = "contract_online_backfill_rows_estimate";
/// Counter: rows online backfills copied, all of them (`rate()` of it is the copy rate).
pub const ONLINE_BACKFILL_ROWS_COPIED_TOTAL: &str = "contract_online_backfill_rows_copied_total";
/// Gauge: rows per second of the running online backfill.
pub const ONLINE_BACKFILL_ROWS_PER_SECOND: &str = "contract_online_backfill_rows_per_second";
/// Gauge: seconds the running online backfill expects to need still.
pub const ONLINE_BACKFILL_ETA_SECONDS: &str = "contract_online_backfill_eta_seconds";

/// Counts `n` messages of `queue` with `outcome` (`accepted`, `quarantined`, `released`).
/// Consumers call it for accepted and released messages; quarantine counts itself. Does
/// nothing without the `metrics` feature.
pub fn record_messages(queue: &str, outcome: &'static str, n: u64) {
    crate::telemetry::count_queue(MESSAGES_TOTAL, queue, "outcome", outcome, n);
}
