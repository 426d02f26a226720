//! The fleet on a MySQL/MariaDB server (`DATABASE_URL=mysql://…`): one scratch database per
//! tenant plus one for the guard's pauses, with a unique prefix, dropped by
//! [`MySqlFleet::drop_all`].
//! Poison messages go to `contract_quarantine` in each tenant database.

use contract_sqlx::control::ControlPlane;
use contract_sqlx::payload::Rejection;
use contract_sqlx::quarantine::{
    PayloadType, Quarantine, QuarantinedMessage, QueueQuarantine, QueueTable,
};
use contract_sqlx::{
    TenantDirectory, TenantName, Tenants,
    check::ContractSet,
    model::Dialect,
    remediation::{ApplyOptions, AuditConfig},
};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::{MySql, MySqlConnection, MySqlPool};

use super::story::{BoxError, Drift, Event, Fleet, Message, QueueSql, StoryDb, payload_contract};

/// Scratch databases `<prefix>_<tenant>` and `<prefix>_control` on the server.
#[derive(Debug)]
pub struct MySqlFleet {
    pool: MySqlPool,
    prefix: String,
    tenants: Vec<TenantName>,
}

impl MySqlFleet {
    /// Connects and creates the control database.
    pub async fn create(url: &str, prefix: &str) -> Result<Self, BoxError> {
        let pool = MySqlPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(std::time::Duration::from_secs(5)) // a wrong port fails fast
            .connect(url)
            .await?;
        let fleet = Self {
            pool,
            prefix: prefix.to_owned(),
            tenants: Vec::new(),
        };
        let control = Dialect::MySql.quote(&fleet.control_db())?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {control}")))
            .execute(&fleet.pool)
            .await?;
        Ok(fleet)
    }

    fn control_db(&self) -> String {
        format!("{}_control", self.prefix)
    }

    /// Drops every database this fleet created (even after a failed story) and closes the pool.
    pub async fn drop_all(self) -> Result<(), BoxError> {
        let mut databases: Vec<String> = self.tenants.iter().map(ToString::to_string).collect();
        databases.push(self.control_db());
        for db in databases {
            let db = Dialect::MySql.quote(&db)?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
                .execute(&self.pool)
                .await?;
        }
        self.pool.close().await;
        Ok(())
    }
}

impl Fleet for MySqlFleet {
    type DB = MySql;

    fn name(&self) -> &'static str {
        "MySQL"
    }

    fn location(&self) -> String {
        format!("one scratch database per tenant, {}_*", self.prefix)
    }

    async fn create_tenant(
        &mut self,
        short: &str,
        drift: Drift,
        messages: &[Message],
    ) -> Result<TenantName, BoxError> {
        let tenant = TenantName::new(format!("{}_{short}", self.prefix))?;
        let db = Dialect::MySql.quote(tenant.as_str())?;
        self.tenants.push(tenant.clone());
        let payload = if drift == Drift::RenamedColumn {
            "body"
        } else {
            "payload"
        };
        let user_id = if drift == Drift::IncompatibleType {
            "TEXT"
        } else {
            "BIGINT"
        };
        let metadata = if drift == Drift::MissingColumn {
            ""
        } else {
            ", event_metadata JSON DEFAULT '{}'"
        };
        let ddl = format!(
            "CREATE DATABASE {db}; \
             CREATE TABLE {db}.events (id BIGINT PRIMARY KEY, user_id {user_id} NOT NULL, {payload} TEXT NOT NULL{metadata}, \
             enqueued_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, attempts INT NOT NULL DEFAULT 0)"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
            .execute(&self.pool)
            .await?;
        let insert = format!("INSERT INTO {db}.events (id, user_id, {payload}) VALUES (?, ?, ?)");
        for (id, user_id, raw) in messages {
            let query = sqlx::query(sqlx::AssertSqlSafe(insert.as_str())).bind(id);
            let query = match drift {
                Drift::IncompatibleType => query.bind(user_id.to_string()),
                _ => query.bind(user_id),
            };
            query.bind(raw).execute(&self.pool).await?;
        }
        Ok(tenant)
    }

    async fn directory(&self) -> Result<TenantDirectory<MySql>, BoxError> {
        let names = self.tenants.iter().map(ToString::to_string);
        Ok(TenantDirectory::new()
            .discover(&self.pool, &Tenants::list(names))
            .await?)
    }

    fn control(&self) -> &MySqlPool {
        &self.pool
    }

    fn control_plane(&self) -> ControlPlane {
        ControlPlane::default().with_schema(self.control_db())
    }

    fn apply_options(&self) -> ApplyOptions {
        // `contract_audit` in each tenant database
        ApplyOptions::default().with_audit(AuditConfig::default().with_actor("quickstart"))
    }

    fn queue_sql(&self, tenant: &TenantName) -> Result<QueueSql, BoxError> {
        let d = Dialect::MySql;
        let events = d.quote_qualified(Some(tenant.as_str()), "events")?;
        Ok(QueueSql {
            claim: format!(
                "SELECT id, user_id, payload, event_metadata FROM {events} WHERE id > ? ORDER BY id LIMIT 4 \
                 FOR UPDATE SKIP LOCKED"
            ),
            ack: format!("DELETE FROM {events} WHERE id = ?"),
            count: format!("SELECT COUNT(*) FROM {events}"),
        })
    }

    fn quarantine_table(&self) -> Quarantine {
        Quarantine::default() // on MySQL: `contract_quarantine` in each tenant database
    }

    async fn prepare_quarantine(
        &self,
        pool: &MySqlPool,
        tenants: &[TenantName],
    ) -> Result<(), BoxError> {
        for tenant in tenants {
            events(tenant, &self.quarantine_table())
                .ensure_table(pool)
                .await?;
        }
        Ok(())
    }

    async fn quarantined(
        &self,
        pool: &MySqlPool,
        tenant: &TenantName,
    ) -> Result<Option<Vec<QuarantinedMessage>>, BoxError> {
        let site = events(tenant, &self.quarantine_table());
        Ok(Some(site.list(pool).await?))
    }
}

impl StoryDb for MySql {
    fn contracts() -> ContractSet<MySql> {
        ContractSet::new().with::<Event>()
    }

    async fn claim(
        conn: &mut MySqlConnection,
        sql: &QueueSql,
        after: i64,
    ) -> Result<Vec<Event>, BoxError> {
        let query = sqlx::query_as(sqlx::AssertSqlSafe(sql.claim.as_str())).bind(after);
        Ok(query.fetch_all(conn).await?)
    }

    async fn ack(conn: &mut MySqlConnection, sql: &QueueSql, id: i64) -> Result<u64, BoxError> {
        let query = sqlx::query(sqlx::AssertSqlSafe(sql.ack.as_str())).bind(id);
        Ok(query.execute(conn).await?.rows_affected())
    }

    async fn count(pool: &MySqlPool, sql: &QueueSql) -> Result<i64, BoxError> {
        let query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.count.as_str()));
        Ok(query.fetch_one(pool).await?)
    }

    async fn quarantine(
        conn: &mut MySqlConnection,
        tenant: &TenantName,
        quarantine: &Quarantine,
        rejected: &[(i64, &[u8], &Rejection)],
    ) -> Result<Option<u64>, BoxError> {
        let site = events(tenant, quarantine);
        let moved = site.quarantine(conn, &payload_contract(), rejected).await?;
        Ok(Some(moved))
    }
}

/// The tenant's `events` queue (payload as text) and where its poison goes.
fn events(tenant: &TenantName, quarantine: &Quarantine) -> QueueQuarantine {
    let table = QueueTable::new("events").with_payload("payload", PayloadType::Text);
    QueueQuarantine::new(tenant.clone(), table).with_quarantine(quarantine.clone())
}
