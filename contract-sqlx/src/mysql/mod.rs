//! MySQL / MariaDB: one database per tenant.
