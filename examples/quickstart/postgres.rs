//! The fleet on a PostgreSQL server (`DATABASE_URL=postgres://…`): one scratch schema per
//! tenant plus one for the guard's pauses, the audit and the quarantine, all with a
//! unique prefix, dropped by [`PgFleet::drop_all`].

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
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool, Postgres};

use super::story::{BoxError, Drift, Event, Fleet, Message, QueueSql, StoryDb, payload_contract};

/// Scratch schemas `<prefix>_<tenant>` and `<prefix>_control` in the given database.
#[derive(Debug)]
pub struct PgFleet {
    pool: PgPool,
    prefix: String,
    tenants: Vec<TenantName>,
}

impl PgFleet {
    /// Connects and creates the control schema.
    pub async fn create(url: &str, prefix: &str) -> Result<Self, BoxError> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(std::time::Duration::from_secs(5)) // a wrong port fails fast
            .connect(url)
            .await?;
        let fleet = Self {
            pool,
            prefix: prefix.to_owned(),
            tenants: Vec::new(),
        };
        let control = Dialect::Postgres.quote(&fleet.control_schema())?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {control}")))
            .execute(&fleet.pool)
            .await?;
        Ok(fleet)
    }

    fn control_schema(&self) -> String {
        format!("{}_control", self.prefix)
    }

    /// Drops every schema this fleet created (even after a failed story) and closes the pool.
    pub async fn drop_all(self) -> Result<(), BoxError> {
        let mut schemas: Vec<String> = self.tenants.iter().map(ToString::to_string).collect();
        schemas.push(self.control_schema());
        for schema in schemas {
            let schema = Dialect::Postgres.quote(&schema)?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(&self.pool)
            .await?;
        }
        self.pool.close().await;
        Ok(())
    }
}

impl Fleet for PgFleet {
    type DB = Postgres;

    fn name(&self) -> &'static str {
        "PostgreSQL"
    }

    fn location(&self) -> String {
        format!("one scratch schema per tenant, {}_*", self.prefix)
    }

    async fn create_tenant(
        &mut self,
        short: &str,
        drift: Drift,
        messages: &[Message],
    ) -> Result<TenantName, BoxError> {
        let tenant = TenantName::new(format!("{}_{short}", self.prefix))?;
        let schema = Dialect::Postgres.quote(tenant.as_str())?;
        self.tenants.push(tenant.clone());
        let payload = if drift == Drift::RenamedColumn {
            "body"
        } else {
            "payload"
        };
        // The classic drift: `int4` where the struct reads `i64`. PostgreSQL can widen it in
        // place (a table rewrite under an ACCESS EXCLUSIVE lock), so it needs an approval.
        let user_id = if drift == Drift::IncompatibleType {
            "int4"
        } else {
            "int8"
        };
        let metadata = if drift == Drift::MissingColumn {
            ""
        } else {
            ", event_metadata jsonb DEFAULT '{}'"
        };
        let ddl = format!(
            "CREATE SCHEMA {schema}; \
             CREATE TABLE {schema}.events (id int8 PRIMARY KEY, user_id {user_id} NOT NULL, {payload} text NOT NULL{metadata}, \
             enqueued_at timestamptz NOT NULL DEFAULT now(), attempts int4 NOT NULL DEFAULT 0)"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
            .execute(&self.pool)
            .await?;
        let insert =
            format!("INSERT INTO {schema}.events (id, user_id, {payload}) VALUES ($1, $2, $3)");
        for (id, user_id, raw) in messages {
            let query = sqlx::query(sqlx::AssertSqlSafe(insert.as_str())).bind(id);
            let query = match drift {
                Drift::IncompatibleType => query.bind(i32::try_from(*user_id)?),
                _ => query.bind(user_id),
            };
            query.bind(raw).execute(&self.pool).await?;
        }
        Ok(tenant)
    }

    async fn directory(&self) -> Result<TenantDirectory<Postgres>, BoxError> {
        let names = self.tenants.iter().map(ToString::to_string);
        Ok(TenantDirectory::new()
            .discover(&self.pool, &Tenants::list(names))
            .await?)
    }

    fn control(&self) -> &PgPool {
        &self.pool
    }

    fn control_plane(&self) -> ControlPlane {
        ControlPlane::default().with_schema(self.control_schema())
    }

    fn apply_options(&self) -> ApplyOptions {
        ApplyOptions::default().with_audit(
            AuditConfig::default()
                .with_schema(self.control_schema())
                .with_actor("quickstart"),
        )
    }

    fn queue_sql(&self, tenant: &TenantName) -> Result<QueueSql, BoxError> {
        let d = Dialect::Postgres;
        let events = d.quote_qualified(Some(tenant.as_str()), "events")?;
        Ok(QueueSql {
            claim: format!(
                "SELECT id, user_id, payload, event_metadata FROM {events} WHERE id > $1 ORDER BY id LIMIT 4 \
                 FOR UPDATE SKIP LOCKED"
            ),
            ack: format!("DELETE FROM {events} WHERE id = $1"),
            count: format!("SELECT COUNT(*) FROM {events}"),
        })
    }

    fn quarantine_table(&self) -> Quarantine {
        Quarantine::default().with_schema(self.control_schema())
    }

    async fn prepare_quarantine(
        &self,
        pool: &PgPool,
        tenants: &[TenantName],
    ) -> Result<(), BoxError> {
        // One table for every tenant: created once.
        if let Some(tenant) = tenants.first() {
            events(tenant, &self.quarantine_table())
                .ensure_table(pool)
                .await?;
        }
        Ok(())
    }

    async fn quarantined(
        &self,
        pool: &PgPool,
        tenant: &TenantName,
    ) -> Result<Option<Vec<QuarantinedMessage>>, BoxError> {
        let site = events(tenant, &self.quarantine_table());
        Ok(Some(site.list(pool).await?))
    }
}

impl StoryDb for Postgres {
    fn contracts() -> ContractSet<Postgres> {
        ContractSet::new().with::<Event>()
    }

    async fn claim(
        conn: &mut PgConnection,
        sql: &QueueSql,
        after: i64,
    ) -> Result<Vec<Event>, BoxError> {
        let query = sqlx::query_as(sqlx::AssertSqlSafe(sql.claim.as_str())).bind(after);
        Ok(query.fetch_all(conn).await?)
    }

    async fn ack(conn: &mut PgConnection, sql: &QueueSql, id: i64) -> Result<u64, BoxError> {
        let query = sqlx::query(sqlx::AssertSqlSafe(sql.ack.as_str())).bind(id);
        Ok(query.execute(conn).await?.rows_affected())
    }

    async fn count(pool: &PgPool, sql: &QueueSql) -> Result<i64, BoxError> {
        let query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.count.as_str()));
        Ok(query.fetch_one(pool).await?)
    }

    async fn quarantine(
        conn: &mut PgConnection,
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
