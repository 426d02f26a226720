//! `contract audit`: the remediation audit rows, newest first, with the approver of each.

use std::fmt;

use serde::Serialize;

use super::args::AuditArgs;
use super::connect::Db;
use super::error::CliError;
use crate::control::ControlPlane;
use crate::remediation::{AuditConfig, AuditEntry, AuditQuery};

/// What `contract audit` prints.
#[derive(Debug, Serialize)]
pub(crate) struct AuditReport {
    /// Where the rows were read.
    pub source: String,
    pub entries: Vec<AuditEntry>,
}

pub(crate) async fn audit(
    db: &Db,
    #[cfg_attr(not(feature = "sqlite"), allow(unused_variables))] plane: &ControlPlane,
    args: &AuditArgs,
) -> Result<AuditReport, CliError> {
    let config = AuditConfig {
        schema: args.audit_schema.clone(),
        table: args.audit_table.clone(),
        ..AuditConfig::default()
    };
    let mut query = AuditQuery::default().limit(args.limit);
    if let Some(tenant) = &args.tenant {
        query = query.tenant(tenant);
    }
    let (source, entries) = match db {
        #[cfg(feature = "postgres")]
        Db::Postgres(pool) => (
            format!("{}.{}", config.schema, config.table),
            AuditEntry::read_postgres(pool, &config, &query).await?,
        ),
        #[cfg(feature = "mysql")]
        Db::MySql(pool) => (
            format!("{} in each tenant database", config.table),
            AuditEntry::read_mysql(pool, &config, &query).await?,
        ),
        #[cfg(feature = "sqlite")]
        Db::Sqlite(fleet) => {
            let mut entries = Vec::new();
            let files = super::files::tenant_files(fleet, plane, args.tenant.as_deref()).await?;
            for (tenant, path) in &files {
                let pool = super::files::open(tenant, path).await?;
                let read = AuditEntry::read_sqlite(&pool, &config, &query).await;
                pool.close().await;
                entries.extend(read?);
            }
            (
                format!("{} in {} tenant files", config.table, files.len()),
                AuditEntry::merge(entries, &query),
            )
        }
    };
    Ok(AuditReport { source, entries })
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return write!(
                f,
                "no audit row in {}: nothing was applied yet",
                self.source
            );
        }
        for entry in &self.entries {
            writeln!(f, "{entry}")?;
        }
        write!(f, "{} rows from {}", self.entries.len(), self.source)
    }
}
