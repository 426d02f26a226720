//! Where the queue and the quarantine live: table and column names, quoted per dialect.

use contract_core::{Dialect, TenantName};

use crate::error::Result;

/// The SQL type of the queue's payload column on PostgreSQL (SQLite and MySQL convert the
/// stored text themselves).
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

/// A tenant's queue table: in the tenant's schema on PostgreSQL, in the tenant's database
/// on MySQL/MariaDB, in the tenant's file (the pool's `main` database) on SQLite.
///
/// The id column is the message id (`int8` / `BIGINT` / `INTEGER`), also the source id
/// recorded in quarantine and restored on replay. `enqueued_at` is a `timestamptz` (or
/// `timestamp`) on PostgreSQL, a `DATETIME`/`TIMESTAMP` on MySQL and any value on SQLite;
/// `attempts` is an integer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
///
/// * PostgreSQL: `<schema>.<table>`, one table for every tenant, keyed by a `tenant` column.
/// * MySQL/MariaDB: `<tenant database>.<table>`, beside the queue (`schema` is not used).
/// * SQLite: `<table>` in each tenant file, beside the queue (`schema` is not used).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quarantine {
    /// Schema of the quarantine table on PostgreSQL (`public`).
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

impl Quarantine {
    /// Sets the schema of the quarantine table (PostgreSQL only).
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Sets the name of the quarantine table.
    #[must_use]
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// `(schema, table)` of the quarantine of `tenant`: the schema is the configured one on
    /// PostgreSQL, the tenant database on MySQL, none (the tenant file) on SQLite.
    pub(crate) fn location<'a>(
        &'a self,
        dialect: Dialect,
        tenant: &'a TenantName,
    ) -> (Option<&'a str>, &'a str) {
        let schema = match dialect {
            Dialect::Postgres => Some(self.schema.as_str()),
            Dialect::MySql => Some(tenant.as_str()),
            Dialect::Sqlite => None,
        };
        (schema, &self.table)
    }
}

/// `(schema, table)` of a tenant's queue: the tenant schema or database, none on SQLite.
pub(crate) fn queue_location<'a>(
    dialect: Dialect,
    tenant: &'a TenantName,
    table: &'a QueueTable,
) -> (Option<&'a str>, &'a str) {
    let schema = (dialect != Dialect::Sqlite).then_some(tenant.as_str());
    (schema, &table.table)
}

/// Every identifier of one tenant queue and its quarantine, quoted for the dialect:
/// nothing is pasted raw. Built once per operation, before any SQL is sent.
#[derive(Debug, Clone)]
pub(crate) struct Quoted {
    pub queue: String,
    pub id: String,
    pub payload: String,
    pub enqueued_at: String,
    pub attempts: String,
    pub quarantine: String,
    /// `<table>_by_time`, unqualified.
    pub time_index: String,
    /// `<table>_waiting`, unqualified.
    pub waiting_index: String,
    /// `<table>_upgrade`, unqualified: the rebuilt table of an upgrade on SQLite.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub upgrade: String,
}

impl Quoted {
    /// Quotes the queue table and the quarantine of `tenant`.
    pub fn new(
        dialect: Dialect,
        tenant: &TenantName,
        table: &QueueTable,
        quarantine: &Quarantine,
    ) -> Result<Self> {
        let (queue_schema, queue) = queue_location(dialect, tenant, table);
        let (schema, name) = quarantine.location(dialect, tenant);
        Ok(Self {
            queue: dialect.quote_qualified(queue_schema, queue)?,
            id: dialect.quote(&table.id)?,
            payload: dialect.quote(&table.payload)?,
            enqueued_at: dialect.quote(&table.enqueued_at)?,
            attempts: dialect.quote(&table.attempts)?,
            quarantine: dialect.quote_qualified(schema, name)?,
            time_index: dialect.quote(&format!("{name}_by_time"))?,
            waiting_index: dialect.quote(&format!("{name}_waiting"))?,
            upgrade: dialect.quote(&format!("{name}_upgrade"))?,
        })
    }
}
