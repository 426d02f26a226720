//! Where the gate, the guard, remediation and quarantine record their metrics: through
//! the `metrics` facade with the `metrics` feature (on by default), and to nothing without
//! it — every function here is then empty and the `metrics` crate is not compiled. The
//! metric names are in [`crate::guard::metrics`].

/// A counter registered once and incremented on a hot path (the gate).
#[derive(Debug, Clone)]
pub(crate) struct Counter {
    #[cfg(feature = "metrics")]
    inner: ::metrics::Counter,
}

impl Counter {
    /// The counter `name` with one label.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn labelled(name: &'static str, label: &'static str, value: &'static str) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            inner: ::metrics::counter!(name, label => value),
        }
    }

    /// Adds `n`.
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn increment(&self, n: u64) {
        #[cfg(feature = "metrics")]
        self.inner.increment(n);
    }
}

/// Adds `n` to the unlabelled counter `name`.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn count(name: &'static str, n: u64) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(name).increment(n);
}

/// Adds `n` to the counter `name` labelled by queue and one more label.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn count_queue(
    name: &'static str,
    queue: &str,
    label: &'static str,
    value: &'static str,
    n: u64,
) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(name, "queue" => queue.to_owned(), label => value).increment(n);
}

/// Sets the gauge `name` to `value` (a count).
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn gauge(name: &'static str, value: u64) {
    #[cfg(feature = "metrics")]
    #[allow(clippy::cast_precision_loss)]
    ::metrics::gauge!(name).set(value as f64);
}

/// Records one sample of `elapsed` in the histogram `name`, in seconds.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn seconds(name: &'static str, elapsed: std::time::Duration) {
    #[cfg(feature = "metrics")]
    ::metrics::histogram!(name).record(elapsed.as_secs_f64());
}
