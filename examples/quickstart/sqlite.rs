//! The embedded fleet: one SQLite file per tenant in a directory, no server.

use std::path::{Path, PathBuf};

use contract_sqlx::control::ControlPlane;
use contract_sqlx::payload::Rejection;
use contract_sqlx::quarantine::{Quarantine, QuarantinedMessage, QueueQuarantine, QueueTable};
use contract_sqlx::{
    TenantDirectory, TenantName,
    check::ContractSet,
    model::Dialect,
    remediation::{ApplyOptions, AuditConfig},
};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Sqlite, SqliteConnection, SqlitePool};

use super::story::{BoxError, Drift, Event, Fleet, Message, QueueSql, StoryDb, payload_contract};

/// Tenants as `<dir>/tenants/<name>.db`; the guard's pauses in `<dir>/guard.db`.
#[derive(Debug)]
pub struct SqliteFleet {
    dir: PathBuf,
    control: SqlitePool,
}

impl SqliteFleet {
    /// Creates `dir` (and `dir/tenants`) and the guard's control file.
    pub async fn create(dir: &Path) -> Result<Self, BoxError> {
        std::fs::create_dir_all(dir.join("tenants"))?;
        let control = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(dir.join("guard.db"))
                    .create_if_missing(true),
            )
            .await?;
        Ok(Self {
            dir: dir.to_owned(),
            control,
        })
    }

    /// Closes the control pool (the tenant pools close when the directory is dropped).
    pub async fn close(self) {
        self.control.close().await;
    }
}

impl Fleet for SqliteFleet {
    type DB = Sqlite;

    fn name(&self) -> &'static str {
        "SQLite"
    }

    fn location(&self) -> String {
        format!(
            "one file per tenant in {}",
            self.dir.join("tenants").display()
        )
    }

    async fn create_tenant(
        &mut self,
        short: &str,
        drift: Drift,
        messages: &[Message],
    ) -> Result<TenantName, BoxError> {
        let tenant = TenantName::new(short)?;
        let payload = if drift == Drift::RenamedColumn {
            "body"
        } else {
            "payload"
        };
        let user_id = if drift == Drift::IncompatibleType {
            "TEXT"
        } else {
            "INTEGER"
        };
        let metadata = if drift == Drift::MissingColumn {
            ""
        } else {
            ", event_metadata JSON DEFAULT '{}'"
        };
        let ddl = format!(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id {user_id} NOT NULL, {payload} TEXT NOT NULL{metadata}, \
             enqueued_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, attempts INTEGER NOT NULL DEFAULT 0)"
        );
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(self.dir.join("tenants").join(format!("{short}.db")))
                    .create_if_missing(true),
            )
            .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
            .execute(&pool)
            .await?;
        let insert = format!("INSERT INTO events (id, user_id, {payload}) VALUES (?, ?, ?)");
        for (id, user_id, raw) in messages {
            sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                .bind(id)
                .bind(user_id) // into a TEXT column SQLite stores it as text: the drift is the declared type
                .bind(raw)
                .execute(&pool)
                .await?;
        }
        pool.close().await;
        Ok(tenant)
    }

    async fn directory(&self) -> Result<TenantDirectory<Sqlite>, BoxError> {
        Ok(contract_sqlx::sqlite_tenant_files(self.dir.join("tenants")).await?)
    }

    fn control(&self) -> &SqlitePool {
        &self.control
    }

    fn control_plane(&self) -> ControlPlane {
        ControlPlane::default() // `contract_pauses` in the control file
    }

    fn apply_options(&self) -> ApplyOptions {
        // `contract_audit` in each tenant file
        ApplyOptions::default().with_audit(AuditConfig::default().with_actor("quickstart"))
    }

    fn queue_sql(&self, _tenant: &TenantName) -> Result<QueueSql, BoxError> {
        let events = Dialect::Sqlite.quote("events")?; // in the tenant's own file
        Ok(QueueSql {
            claim: format!(
                "SELECT id, user_id, payload, event_metadata FROM {events} WHERE id > ? ORDER BY id LIMIT 4"
            ),
            ack: format!("DELETE FROM {events} WHERE id = ?"),
            count: format!("SELECT COUNT(*) FROM {events}"),
        })
    }

    fn quarantine_table(&self) -> Quarantine {
        Quarantine::default() // on SQLite: `contract_quarantine` in each tenant file
    }

    async fn prepare_quarantine(
        &self,
        pool: &SqlitePool,
        tenants: &[TenantName],
    ) -> Result<(), BoxError> {
        // The pool is one tenant file: its quarantine table lives there.
        for tenant in tenants {
            events(tenant, &self.quarantine_table())
                .ensure_table(pool)
                .await?;
        }
        Ok(())
    }

    async fn quarantined(
        &self,
        pool: &SqlitePool,
        tenant: &TenantName,
    ) -> Result<Option<Vec<QuarantinedMessage>>, BoxError> {
        let site = events(tenant, &self.quarantine_table());
        Ok(Some(site.list(pool).await?))
    }
}

impl StoryDb for Sqlite {
    fn contracts() -> ContractSet<Sqlite> {
        ContractSet::new().with::<Event>()
    }

    async fn claim(
        conn: &mut SqliteConnection,
        sql: &QueueSql,
        after: i64,
    ) -> Result<Vec<Event>, BoxError> {
        let query = sqlx::query_as(sqlx::AssertSqlSafe(sql.claim.as_str())).bind(after);
        Ok(query.fetch_all(conn).await?)
    }

    async fn ack(conn: &mut SqliteConnection, sql: &QueueSql, id: i64) -> Result<u64, BoxError> {
        let query = sqlx::query(sqlx::AssertSqlSafe(sql.ack.as_str())).bind(id);
        Ok(query.execute(conn).await?.rows_affected())
    }

    async fn count(pool: &SqlitePool, sql: &QueueSql) -> Result<i64, BoxError> {
        let query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.count.as_str()));
        Ok(query.fetch_one(pool).await?)
    }

    async fn quarantine(
        conn: &mut SqliteConnection,
        tenant: &TenantName,
        quarantine: &Quarantine,
        rejected: &[(i64, &[u8], &Rejection)],
    ) -> Result<Option<u64>, BoxError> {
        let site = events(tenant, quarantine);
        let moved = site.quarantine(conn, &payload_contract(), rejected).await?;
        Ok(Some(moved))
    }
}

/// The tenant's `events` queue and where its poison goes.
fn events(tenant: &TenantName, quarantine: &Quarantine) -> QueueQuarantine {
    QueueQuarantine::new(tenant.clone(), QueueTable::new("events"))
        .with_quarantine(quarantine.clone())
}
