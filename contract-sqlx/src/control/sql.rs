//! The control plane's SQL per dialect. Table names are `{pauses}`, `{tenants}`,
//! `{approvals}` and `{replicas}` here and replaced by their quoted, qualified names.
//! Timestamps are written from RFC 3339 text and read back as RFC 3339 text (UTC) on every
//! dialect, stored as `timestamptz` (PostgreSQL), `DATETIME(6)` in UTC (MySQL) and ISO 8601
//! text (SQLite), so operators can query them.

/// The statements that differ per dialect.
pub(super) struct ControlSql {
    pub create: &'static str,
    pub load_pauses: &'static str,
    pub save_pause: &'static str,
    pub delete_pause: &'static str,
    pub load_tenants: &'static str,
    pub save_tenant: &'static str,
    pub delete_tenant: &'static str,
    pub insert_approval: &'static str,
    pub revoke_approval: &'static str,
    pub load_approvals: &'static str,
    pub reserve_approval: &'static str,
    pub release_approval: &'static str,
    pub heartbeat: &'static str,
    pub deregister: &'static str,
    pub load_replicas: &'static str,
}

#[cfg(feature = "postgres")]
// language=SQL
pub(super) const POSTGRES: ControlSql = ControlSql {
    create: "CREATE TABLE IF NOT EXISTS {pauses} (tenant text NOT NULL, queue text NOT NULL, kind text NOT NULL, \
        paused_by text NOT NULL, reason text NOT NULL, findings jsonb NOT NULL, plan_hash text, \
        expected_fingerprint text, observed_fingerprint text, paused_at timestamptz NOT NULL, \
        PRIMARY KEY (tenant, queue, kind)); \
      CREATE TABLE IF NOT EXISTS {tenants} (tenant text PRIMARY KEY, verdict text NOT NULL, detail text, \
        findings jsonb NOT NULL, plan jsonb, plan_hash text, shape text, waiting text, location text NOT NULL, \
        backlog int8, checked_at timestamptz NOT NULL, changed_at timestamptz NOT NULL, replica text NOT NULL); \
      CREATE TABLE IF NOT EXISTS {approvals} (id text PRIMARY KEY, kind text NOT NULL, target text NOT NULL, \
        approver text NOT NULL, note text NOT NULL, created_at timestamptz NOT NULL, expires_at timestamptz, \
        tenant_cap int8, applied int8 NOT NULL DEFAULT 0, revoked_at timestamptz, revoked_by text); \
      CREATE TABLE IF NOT EXISTS {replicas} (replica_id text PRIMARY KEY, host text NOT NULL, pid int8 NOT NULL, \
        version text NOT NULL, contracts jsonb NOT NULL, started_at timestamptz NOT NULL, \
        heartbeat_at timestamptz NOT NULL)",
    load_pauses: "SELECT tenant, queue, paused_by, reason, findings::text AS findings, plan_hash, expected_fingerprint, \
        observed_fingerprint, to_char(paused_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS paused_at \
        FROM {pauses} ORDER BY tenant, queue, kind",
    save_pause: "INSERT INTO {pauses} (tenant, queue, kind, paused_by, reason, findings, plan_hash, expected_fingerprint, \
        observed_fingerprint, paused_at) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10::timestamptz) \
        ON CONFLICT (tenant, queue, kind) DO UPDATE SET paused_by = excluded.paused_by, reason = excluded.reason, \
        findings = excluded.findings, plan_hash = excluded.plan_hash, \
        expected_fingerprint = excluded.expected_fingerprint, observed_fingerprint = excluded.observed_fingerprint",
    delete_pause: "DELETE FROM {pauses} WHERE tenant = $1 AND queue = $2 AND kind = $3",
    load_tenants: "SELECT tenant, verdict, detail, findings::text AS findings, plan::text AS plan, waiting, location, backlog, \
        to_char(checked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS checked_at, \
        to_char(changed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS changed_at, replica \
        FROM {tenants} ORDER BY tenant",
    save_tenant: "INSERT INTO {tenants} (tenant, verdict, detail, findings, plan, plan_hash, shape, waiting, location, backlog, \
        checked_at, changed_at, replica) VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7, $8, $9, $10, \
        $11::timestamptz, $12::timestamptz, $13) \
        ON CONFLICT (tenant) DO UPDATE SET verdict = excluded.verdict, detail = excluded.detail, \
        findings = excluded.findings, plan = excluded.plan, plan_hash = excluded.plan_hash, shape = excluded.shape, \
        waiting = excluded.waiting, location = excluded.location, backlog = excluded.backlog, \
        checked_at = excluded.checked_at, changed_at = excluded.changed_at, replica = excluded.replica",
    delete_tenant: "DELETE FROM {tenants} WHERE tenant = $1",
    insert_approval: "INSERT INTO {approvals} (id, kind, target, approver, note, created_at, expires_at, tenant_cap) \
        VALUES ($1, $2, $3, $4, $5, now(), $6::timestamptz, $7)",
    revoke_approval: "UPDATE {approvals} SET revoked_at = now(), revoked_by = $1 WHERE id = $2 AND revoked_at IS NULL",
    load_approvals: "SELECT id, kind, target, approver, note, \
        to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at, \
        to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS expires_at, tenant_cap, applied, \
        to_char(revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS revoked_at, revoked_by \
        FROM {approvals} ORDER BY created_at, id",
    reserve_approval: "UPDATE {approvals} SET applied = applied + 1 WHERE id = $1 AND revoked_at IS NULL \
        AND (expires_at IS NULL OR expires_at > now()) AND (tenant_cap IS NULL OR applied < tenant_cap)",
    release_approval: "UPDATE {approvals} SET applied = applied - 1 WHERE id = $1 AND applied > 0",
    heartbeat: "INSERT INTO {replicas} (replica_id, host, pid, version, contracts, started_at, heartbeat_at) \
        VALUES ($1, $2, $3, $4, $5::jsonb, $6::timestamptz, now()) \
        ON CONFLICT (replica_id) DO UPDATE SET heartbeat_at = now()",
    deregister: "DELETE FROM {replicas} WHERE replica_id = $1",
    load_replicas: "SELECT replica_id, host, pid, version, contracts::text AS contracts, \
        to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS started_at, \
        to_char(heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS heartbeat_at \
        FROM {replicas} ORDER BY started_at, replica_id",
};

#[cfg(feature = "mysql")]
// language=SQL
pub(super) const MYSQL: ControlSql = ControlSql {
    // Tenant and queue names compare byte for byte (`utf8mb4_bin`): under the server's
    // default case-insensitive collation a pause of `acme` updated the pause of `Acme`
    // (database names are case-sensitive on Linux). Tables of earlier versions are
    // altered to it when they are not so (`mysql_collation.rs`).
    create: "CREATE TABLE IF NOT EXISTS {pauses} (tenant VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, \
        queue VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, \
        kind VARCHAR(16) NOT NULL, paused_by TEXT NOT NULL, reason TEXT NOT NULL, findings LONGTEXT NOT NULL, \
        plan_hash TEXT, expected_fingerprint TEXT, observed_fingerprint TEXT, paused_at DATETIME(6) NOT NULL, \
        PRIMARY KEY (tenant, queue, kind)) DEFAULT CHARSET = utf8mb4; \
      CREATE TABLE IF NOT EXISTS {tenants} (tenant VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY, verdict VARCHAR(16) NOT NULL, \
        detail TEXT, findings LONGTEXT NOT NULL, plan LONGTEXT, plan_hash VARCHAR(64), shape VARCHAR(64), waiting TEXT, \
        location TEXT NOT NULL, backlog BIGINT, checked_at DATETIME(6) NOT NULL, changed_at DATETIME(6) NOT NULL, \
        replica VARCHAR(64) NOT NULL) DEFAULT CHARSET = utf8mb4; \
      CREATE TABLE IF NOT EXISTS {approvals} (id VARCHAR(64) NOT NULL PRIMARY KEY, kind VARCHAR(16) NOT NULL, \
        target VARCHAR(64) NOT NULL, approver TEXT NOT NULL, note TEXT NOT NULL, created_at DATETIME(6) NOT NULL, \
        expires_at DATETIME(6) NULL, tenant_cap BIGINT NULL, applied BIGINT NOT NULL DEFAULT 0, \
        revoked_at DATETIME(6) NULL, revoked_by TEXT NULL); \
      CREATE TABLE IF NOT EXISTS {replicas} (replica_id VARCHAR(64) NOT NULL PRIMARY KEY, host TEXT NOT NULL, \
        pid BIGINT NOT NULL, version VARCHAR(64) NOT NULL, contracts LONGTEXT NOT NULL, \
        started_at DATETIME(6) NOT NULL, heartbeat_at DATETIME(6) NOT NULL)",
    load_pauses: "SELECT tenant, queue, paused_by, reason, findings, plan_hash, expected_fingerprint, \
        observed_fingerprint, DATE_FORMAT(paused_at, '%Y-%m-%dT%H:%i:%s.%fZ') AS paused_at \
        FROM {pauses} ORDER BY tenant, queue, kind",
    save_pause: "INSERT INTO {pauses} (tenant, queue, kind, paused_by, reason, findings, plan_hash, expected_fingerprint, \
        observed_fingerprint, paused_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, STR_TO_DATE(?, '%Y-%m-%dT%H:%i:%s.%fZ')) \
        ON DUPLICATE KEY UPDATE paused_by = VALUES(paused_by), reason = VALUES(reason), \
        findings = VALUES(findings), plan_hash = VALUES(plan_hash), \
        expected_fingerprint = VALUES(expected_fingerprint), observed_fingerprint = VALUES(observed_fingerprint)",
    delete_pause: "DELETE FROM {pauses} WHERE tenant = ? AND queue = ? AND kind = ?",
    load_tenants: "SELECT tenant, verdict, detail, findings, plan, waiting, location, backlog, \
        DATE_FORMAT(checked_at, '%Y-%m-%dT%H:%i:%s.%fZ') AS checked_at, \
        DATE_FORMAT(changed_at, '%Y-%m-%dT%H:%i:%s.%fZ') AS changed_at, replica \
        FROM {tenants} ORDER BY tenant",
    save_tenant: "INSERT INTO {tenants} (tenant, verdict, detail, findings, plan, plan_hash, shape, waiting, location, backlog, \
        checked_at, changed_at, replica) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, \
        STR_TO_DATE(?, '%Y-%m-%dT%H:%i:%s.%fZ'), STR_TO_DATE(?, '%Y-%m-%dT%H:%i:%s.%fZ'), ?) \
        ON DUPLICATE KEY UPDATE verdict = VALUES(verdict), detail = VALUES(detail), findings = VALUES(findings), \
        plan = VALUES(plan), plan_hash = VALUES(plan_hash), shape = VALUES(shape), waiting = VALUES(waiting), \
        location = VALUES(location), backlog = VALUES(backlog), checked_at = VALUES(checked_at), \
        changed_at = VALUES(changed_at), replica = VALUES(replica)",
    delete_tenant: "DELETE FROM {tenants} WHERE tenant = ?",
    insert_approval: "INSERT INTO {approvals} (id, kind, target, approver, note, created_at, expires_at, tenant_cap) \
        VALUES (?, ?, ?, ?, ?, UTC_TIMESTAMP(6), STR_TO_DATE(?, '%Y-%m-%dT%H:%i:%s.%fZ'), ?)",
    revoke_approval: "UPDATE {approvals} SET revoked_at = UTC_TIMESTAMP(6), revoked_by = ? WHERE id = ? AND revoked_at IS NULL",
    load_approvals: "SELECT id, kind, target, approver, note, \
        DATE_FORMAT(created_at, '%Y-%m-%dT%H:%i:%s.%fZ') AS created_at, \
        DATE_FORMAT(expires_at, '%Y-%m-%dT%H:%i:%s.%fZ') AS expires_at, tenant_cap, applied, \
        DATE_FORMAT(revoked_at, '%Y-%m-%dT%H:%i:%s.%fZ') AS revoked_at, revoked_by \
        FROM {approvals} ORDER BY created_at, id",
    reserve_approval: "UPDATE {approvals} SET applied = applied + 1 WHERE id = ? AND revoked_at IS NULL \
        AND (expires_at IS NULL OR expires_at > UTC_TIMESTAMP(6)) AND (tenant_cap IS NULL OR applied < tenant_cap)",
    release_approval: "UPDATE {approvals} SET applied = applied - 1 WHERE id = ? AND applied > 0",
    heartbeat: "INSERT INTO {replicas} (replica_id, host, pid, version, contracts, started_at, heartbeat_at) \
        VALUES (?, ?, ?, ?, ?, STR_TO_DATE(?, '%Y-%m-%dT%H:%i:%s.%fZ'), UTC_TIMESTAMP(6)) \
        ON DUPLICATE KEY UPDATE heartbeat_at = UTC_TIMESTAMP(6)",
    deregister: "DELETE FROM {replicas} WHERE replica_id = ?",
    load_replicas: "SELECT replica_id, host, pid, version, contracts, \
        DATE_FORMAT(started_at, '%Y-%m-%dT%H:%i:%s.%fZ') AS started_at, \
        DATE_FORMAT(heartbeat_at, '%Y-%m-%dT%H:%i:%s.%fZ') AS heartbeat_at \
        FROM {replicas} ORDER BY started_at, replica_id",
};

/// SQLite: `now` as ISO 8601 UTC text with milliseconds.
#[cfg(feature = "sqlite")]
macro_rules! sqlite_now {
    () => {
        "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    };
}

#[cfg(feature = "sqlite")]
// language=SQL
pub(super) const SQLITE: ControlSql = ControlSql {
    create: "CREATE TABLE IF NOT EXISTS {pauses} (tenant TEXT NOT NULL, queue TEXT NOT NULL, kind TEXT NOT NULL, \
        paused_by TEXT NOT NULL, reason TEXT NOT NULL, findings TEXT NOT NULL, plan_hash TEXT, \
        expected_fingerprint TEXT, observed_fingerprint TEXT, paused_at TEXT NOT NULL, \
        PRIMARY KEY (tenant, queue, kind)); \
      CREATE TABLE IF NOT EXISTS {tenants} (tenant TEXT PRIMARY KEY NOT NULL, verdict TEXT NOT NULL, detail TEXT, \
        findings TEXT NOT NULL, plan TEXT, plan_hash TEXT, shape TEXT, waiting TEXT, location TEXT NOT NULL, \
        backlog INTEGER, checked_at TEXT NOT NULL, changed_at TEXT NOT NULL, replica TEXT NOT NULL); \
      CREATE TABLE IF NOT EXISTS {approvals} (id TEXT PRIMARY KEY NOT NULL, kind TEXT NOT NULL, target TEXT NOT NULL, \
        approver TEXT NOT NULL, note TEXT NOT NULL, created_at TEXT NOT NULL, expires_at TEXT, tenant_cap INTEGER, \
        applied INTEGER NOT NULL DEFAULT 0, revoked_at TEXT, revoked_by TEXT); \
      CREATE TABLE IF NOT EXISTS {replicas} (replica_id TEXT PRIMARY KEY NOT NULL, host TEXT NOT NULL, \
        pid INTEGER NOT NULL, version TEXT NOT NULL, contracts TEXT NOT NULL, started_at TEXT NOT NULL, \
        heartbeat_at TEXT NOT NULL)",
    load_pauses: "SELECT tenant, queue, paused_by, reason, findings, plan_hash, expected_fingerprint, \
        observed_fingerprint, paused_at FROM {pauses} ORDER BY tenant, queue, kind",
    save_pause: "INSERT INTO {pauses} (tenant, queue, kind, paused_by, reason, findings, plan_hash, expected_fingerprint, \
        observed_fingerprint, paused_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
        ON CONFLICT (tenant, queue, kind) DO UPDATE SET paused_by = excluded.paused_by, reason = excluded.reason, \
        findings = excluded.findings, plan_hash = excluded.plan_hash, \
        expected_fingerprint = excluded.expected_fingerprint, observed_fingerprint = excluded.observed_fingerprint",
    delete_pause: "DELETE FROM {pauses} WHERE tenant = ? AND queue = ? AND kind = ?",
    load_tenants: "SELECT tenant, verdict, detail, findings, plan, waiting, location, backlog, checked_at, changed_at, \
        replica FROM {tenants} ORDER BY tenant",
    save_tenant: "INSERT INTO {tenants} (tenant, verdict, detail, findings, plan, plan_hash, shape, waiting, location, backlog, \
        checked_at, changed_at, replica) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
        ON CONFLICT (tenant) DO UPDATE SET verdict = excluded.verdict, detail = excluded.detail, \
        findings = excluded.findings, plan = excluded.plan, plan_hash = excluded.plan_hash, shape = excluded.shape, \
        waiting = excluded.waiting, location = excluded.location, backlog = excluded.backlog, \
        checked_at = excluded.checked_at, changed_at = excluded.changed_at, replica = excluded.replica",
    delete_tenant: "DELETE FROM {tenants} WHERE tenant = ?",
    insert_approval: concat!(
        "INSERT INTO {approvals} (id, kind, target, approver, note, created_at, expires_at, tenant_cap) \
         VALUES (?, ?, ?, ?, ?, ",
        sqlite_now!(),
        ", ?, ?)"
    ),
    revoke_approval: concat!(
        "UPDATE {approvals} SET revoked_at = ",
        sqlite_now!(),
        ", revoked_by = ? WHERE id = ? AND revoked_at IS NULL"
    ),
    load_approvals: "SELECT id, kind, target, approver, note, created_at, expires_at, tenant_cap, applied, \
        revoked_at, revoked_by FROM {approvals} ORDER BY created_at, id",
    reserve_approval: concat!(
        "UPDATE {approvals} SET applied = applied + 1 WHERE id = ? AND revoked_at IS NULL \
         AND (expires_at IS NULL OR julianday(expires_at) > julianday(",
        sqlite_now!(),
        ")) AND (tenant_cap IS NULL OR applied < tenant_cap)"
    ),
    release_approval: "UPDATE {approvals} SET applied = applied - 1 WHERE id = ? AND applied > 0",
    heartbeat: concat!(
        "INSERT INTO {replicas} (replica_id, host, pid, version, contracts, started_at, heartbeat_at) \
         VALUES (?, ?, ?, ?, ?, ?, ",
        sqlite_now!(),
        ") ON CONFLICT (replica_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
    ),
    deregister: "DELETE FROM {replicas} WHERE replica_id = ?",
    load_replicas: "SELECT replica_id, host, pid, version, contracts, started_at, heartbeat_at FROM {replicas} \
        ORDER BY started_at, replica_id",
};
