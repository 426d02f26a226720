//! The one retry schedule of the crate: exponential backoff with jitter, capped. Used for
//! lock-timeout retries inside an apply and for the guard's retries of a failed remediation
//! (jitter keeps replicas that failed together from retrying together).

use std::time::Duration;

/// `base · 2^(attempt − 1)`, at most `max`, plus up to 50% jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay before attempt `attempt + 1` (`attempt` counts from 1).
    pub fn delay(self, attempt: u32) -> Duration {
        let exponential = self
            .base
            .saturating_mul(1 << attempt.saturating_sub(1).min(20))
            .min(self.max);
        let jitter_permille = random_u64() % 500;
        exponential
            + exponential.mul_f64(f64::from(u32::try_from(jitter_permille).unwrap_or(0)) / 1000.0)
    }
}

/// Random bits from the operating system (the same source UUIDv7 ids use).
fn random_u64() -> u64 {
    u64::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..8]
            .try_into()
            .unwrap_or([0; 8]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_up_to_the_cap_with_bounded_jitter() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(500),
        };
        for (attempt, base_ms) in [(1, 100), (2, 200), (3, 400), (4, 500), (30, 500)] {
            let delay = backoff.delay(attempt);
            let base = Duration::from_millis(base_ms);
            assert!(
                delay >= base && delay <= base * 3 / 2,
                "attempt {attempt}: {delay:?}"
            );
        }
        let delays: std::collections::HashSet<Duration> =
            (0..20).map(|_| backoff.delay(3)).collect();
        assert!(delays.len() > 1, "no jitter: {delays:?}");
    }
}
