//! SQLite: one database file per tenant.

/// Placeholder: see the helper's implementation.
pub fn sqlite_tenant_files() {}
