//! Where the queue and the quarantine live: table and column names, quoted per dialect.

#[cfg(any(feature = "postgres", feature = "sqlite"))]
use contract_core::{Dialect, TenantName};

#[cfg(any(feature = "postgres", feature = "sqlite"))]
use crate::error::Result;

/// The SQL type of the queue's payload column on PostgreSQL (SQLite stores `TEXT`).
///
/// Replay casts the stored raw payload back to this type, so it must match the column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PayloadType {
    /// `jsonb` (the default): the payload is re-parsed by the server on replay.
    #[default]
    Jsonb,
    /// `json`: kept verbatim by the server.
    Json,
    /// `text`: kept verbatim, may hold payloads that are not JSON.
    Text,
}

impl PayloadType {
    /// The PostgreSQL type name (a fixed keyword, never user input).
    #[cfg(feature = "postgres")]
    pub(crate) const fn pg_name(self) -> &'static str {
        match self {
            PayloadType::Jsonb => "jsonb",
            PayloadType::Json => "json",
            PayloadType::Text => "text",
        }
    }
}

/// A tenant's queue table: in the tenant's schema on PostgreSQL, in the tenant's file
/// (the pool's `main` database) on SQLite.
///
/// The id column is the message id (`int8` / `INTEGER`), also the source id recorded in
/// quarantine and restored on replay. `enqueued_at` is a `timestamptz` (or `timestamp`)
/// on PostgreSQL and any value on SQLite; `attempts` is an integer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTable {
    /// Table name, unqualified.
    pub table: String,
    /// Message id column (`id`).
    pub id: String,
    /// Payload column (`payload`).
    pub payload: String,
    /// Type of the payload column on PostgreSQL ([`PayloadType::Jsonb`]).
    pub payload_type: PayloadType,
    /// Enqueue time column (`enqueued_at`), copied into quarantine and back on replay.
    pub enqueued_at: String,
    /// Attempt counter column (`attempts`), copied into quarantine, reset to 0 on replay.
    pub attempts: String,
}

impl QueueTable {
    /// A queue table with the default column names `id`, `payload`, `enqueued_at`,
    /// `attempts` and a `jsonb` payload.
    #[must_use]
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            id: "id".into(),
            payload: "payload".into(),
            payload_type: PayloadType::default(),
            enqueued_at: "enqueued_at".into(),
            attempts: "attempts".into(),
        }
    }

    /// Sets the id column name.
    #[must_use]
    pub fn with_id(mut self, column: impl Into<String>) -> Self {
        self.id = column.into();
        self
    }

    /// Sets the payload column name and its PostgreSQL type.
    #[must_use]
    pub fn with_payload(mut self, column: impl Into<String>, ty: PayloadType) -> Self {
        self.payload = column.into();
        self.payload_type = ty;
        self
    }

    /// Sets the enqueue time column name.
    #[must_use]
    pub fn with_enqueued_at(mut self, column: impl Into<String>) -> Self {
        self.enqueued_at = column.into();
        self
    }

    /// Sets the attempt counter column name.
    #[must_use]
    pub fn with_attempts(mut self, column: impl Into<String>) -> Self {
        self.attempts = column.into();
        self
    }
}

/// Where quarantined messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    /// Schema of the quarantine table on PostgreSQL (`public`): one table for every
    /// tenant, keyed by a `tenant` column. On SQLite the table lives in each tenant file.
    pub schema: String,
    /// Table name (`contract_quarantine`).
    pub table: String,
}

impl Default for Quarantine {
    fn default() -> Self {
        Self {
            schema: "public".into(),
            table: "contract_quarantine".into(),
        }
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
/// Every identifier of one operation, quoted for the dialect: nothing is pasted raw.
pub(crate) struct Quoted {
    pub queue: String,
    pub id: String,
    pub payload: String,
    pub enqueued_at: String,
    pub attempts: String,
    pub quarantine: String,
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl Quoted {
    /// Quotes the queue table (in the tenant's schema on PostgreSQL) and the quarantine.
    pub fn new(
        dialect: Dialect,
        tenant: &TenantName,
        table: &QueueTable,
        quarantine: &Quarantine,
    ) -> Result<Self> {
        let schema = (dialect == Dialect::Postgres).then_some(tenant.as_str());
        Ok(Self {
            queue: dialect.quote_qualified(schema, &table.table)?,
            id: dialect.quote(&table.id)?,
            payload: dialect.quote(&table.payload)?,
            enqueued_at: dialect.quote(&table.enqueued_at)?,
            attempts: dialect.quote(&table.attempts)?,
            quarantine: quarantine_table(dialect, quarantine)?,
        })
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
/// The quoted quarantine table (schema-qualified on PostgreSQL only).
pub(crate) fn quarantine_table(dialect: Dialect, quarantine: &Quarantine) -> Result<String> {
    let schema = (dialect == Dialect::Postgres).then_some(quarantine.schema.as_str());
    Ok(dialect.quote_qualified(schema, &quarantine.table)?)
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
/// The quoted name of the quarantine's time index (`<table>_by_time`), unqualified.
pub(crate) fn time_index(dialect: Dialect, quarantine: &Quarantine) -> Result<String> {
    Ok(dialect.quote(&format!("{}_by_time", quarantine.table))?)
}
