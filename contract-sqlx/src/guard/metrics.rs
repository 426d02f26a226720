//! Metric names (Prometheus conventions: `_total` counters, `_seconds` histograms, no
//! tenant label by default — tenants are on spans, logs and pause rows instead).

/// Histogram: time to answer one `gate` call.
pub const GATE_DURATION: &str = "contract_gate_duration_seconds";
/// Counter: gate answers, by `outcome` (`open` / `paused`).
pub const GATE_TOTAL: &str = "contract_gate_total";
/// Gauge: tenants currently paused (guard or operator).
pub const PAUSED_TENANTS: &str = "contract_paused_tenants";
/// Gauge: drift findings at `at_risk` or worse across the fleet.
pub const DRIFT_FINDINGS: &str = "contract_drift_findings";
/// Histogram: time of one revalidation pass.
pub const REVALIDATION_DURATION: &str = "contract_revalidation_duration_seconds";
/// Counter: remediations applied.
pub const REMEDIATIONS_TOTAL: &str = "contract_remediations_total";
