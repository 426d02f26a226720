//! Builders for the remediation options: both structs are `#[non_exhaustive]` (options
//! will grow), so users start from `default()` and set what they need.

use std::time::Duration;

use super::{ApplyOptions, AuditConfig};

impl ApplyOptions {
    /// `lock_timeout` for the DDL (PostgreSQL) / `lock_wait_timeout` (MySQL).
    ///
    /// ```
    /// use std::time::Duration;
    /// use contract_sqlx::remediation::{ApplyOptions, AuditConfig};
    ///
    /// let options = ApplyOptions::default()
    ///     .with_lock_timeout(Duration::from_millis(500))
    ///     .with_parallelism(8)
    ///     .with_audit(AuditConfig::default().with_actor("billing-consumer"));
    /// assert_eq!(options.parallelism, 8);
    /// assert_eq!(options.audit.actor, "billing-consumer");
    /// ```
    #[must_use]
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// `statement_timeout` for each statement.
    #[must_use]
    pub fn with_statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// How long to wait for another replica's remediation of the same tenant.
    #[must_use]
    pub fn with_advisory_lock_wait(mut self, wait: Duration) -> Self {
        self.advisory_lock_wait = wait;
        self
    }

    /// Attempts on lock timeout or deadlock (at least one).
    #[must_use]
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The first backoff after a lock timeout; doubled each attempt, with jitter.
    #[must_use]
    pub fn with_base_backoff(mut self, backoff: Duration) -> Self {
        self.base_backoff = backoff;
        self
    }

    /// Where audit rows go and who is recorded as the actor.
    #[must_use]
    pub fn with_audit(mut self, audit: AuditConfig) -> Self {
        self.audit = audit;
        self
    }

    /// How many tenants are remediated at once (at least one).
    #[must_use]
    pub fn with_parallelism(mut self, parallelism: usize) -> Self {
        self.parallelism = parallelism.max(1);
        self
    }

    /// The table size (rows, `pg_class.reltuples`) from which a rewriting type change is
    /// planned online on PostgreSQL; `None` keeps every type change a plain
    /// `ALTER … USING`. Changing it changes the plans (and hashes) of such tenants.
    ///
    /// ```
    /// use std::time::Duration;
    /// use contract_sqlx::remediation::ApplyOptions;
    ///
    /// let options = ApplyOptions::default()
    ///     .with_online_threshold(Some(500_000))
    ///     .with_online_batches(5_000, Duration::from_millis(10));
    /// assert_eq!(options.online_threshold_rows, Some(500_000));
    /// assert_eq!(options.online_batch_rows, 5_000);
    /// ```
    #[must_use]
    pub fn with_online_threshold(mut self, rows: Option<u64>) -> Self {
        self.online_threshold_rows = rows;
        self
    }

    /// Rows per online backfill batch (at least one) and the pause between batches.
    #[must_use]
    pub fn with_online_batches(mut self, rows: u32, pause: Duration) -> Self {
        self.online_batch_rows = rows.max(1);
        self.online_pause = pause;
        self
    }
}

impl AuditConfig {
    /// Schema of the audit table on PostgreSQL (ignored on MySQL and SQLite, where the
    /// table lives in each tenant's database).
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Name of the audit table.
    #[must_use]
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Who applies, recorded in every row: a service or operator name.
    #[must_use]
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = actor.into();
        self
    }
}
