//! The CLI on MySQL/MariaDB: tenants are databases, the control plane in a database of
//! its own (`--control-schema`), the audit in each tenant database.

use contract_sqlx::control::ControlPlane;
use contract_sqlx::plan::Remediation;
use contract_sqlx::{Guard, Tenants};
use sqlx::{AssertSqlSafe, MySql};

use super::Event;
use crate::cli::{assert_readable, contract_async};
use crate::support::{MySqlDatabases, exec, mysql_pool, mysql_url, unique_name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_status_plans_approve_pause_audit() {
    let pool = mysql_pool().await;
    let base = unique_name("cli");
    let (control, ok, drifted) = (
        format!("{base}_ctl"),
        format!("{base}_t1"),
        format!("{base}_t2"),
    );
    let _cleanup = MySqlDatabases(vec![control.clone(), ok.clone(), drifted.clone()]);
    exec(&pool, format!("CREATE DATABASE `{control}`")).await;
    // The drifted tenant misses the table: the plan creates it.
    exec(&pool, format!("CREATE DATABASE `{ok}`")).await;
    exec(&pool, format!("CREATE DATABASE `{drifted}`")).await;
    exec(
        &pool,
        format!(
            "CREATE TABLE `{ok}`.events (id BIGINT NOT NULL PRIMARY KEY, user_id BIGINT NOT NULL)"
        ),
    )
    .await;
    let start = |policy: Remediation| {
        Guard::<MySql>::builder()
            .contract::<Event>()
            .tenants(Tenants::list([ok.clone(), drifted.clone()]))
            .control_plane(ControlPlane::default().with_schema(&control))
            .remediation(policy)
            .start(&pool)
    };
    // Plans only; the `SafeOnly` guard below applies the (safe) plan.
    let guard = start(Remediation::DryRun).await.expect("guard");
    let url = mysql_url();
    let run = |args: &'static [&'static str]| {
        let mut all = vec!["--control-schema", control.as_str()];
        all.extend_from_slice(args);
        let url = url.clone();
        let all: Vec<String> = all.into_iter().map(str::to_owned).collect();
        async move {
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            contract_async(&url, &all).await
        }
    };

    let status = run(&["status", "--json"]).await.expect(0).json();
    assert_eq!(
        status["tenants"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    assert_readable(&run(&["status", "--fail-on", "drift"]).await.expect(1));
    let plans = run(&["plans", "--json"]).await.expect(0).json();
    assert_eq!(plans["shapes"].as_array().map(Vec::len), Some(1), "{plans}");
    assert_eq!(
        plans["shapes"][0]["estimated_rows"]["source"],
        "information_schema.TABLES.TABLE_ROWS"
    );
    let shape = plans["shapes"][0]["shape"]
        .as_str()
        .expect("shape")
        .to_owned();
    assert_readable(&run(&["plans"]).await.expect(0));

    let args = [
        "--control-schema".to_owned(),
        control.clone(),
        "pause".into(),
        ok.clone(),
        "--reason".into(),
        "drill".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    contract_async(&url, &args).await.expect(0);
    guard.revalidate().await.expect("pass");
    assert!(!guard.gate(&ok).is_open(), "operator pause applied");
    let args = [
        "--control-schema".to_owned(),
        control.clone(),
        "resume".into(),
        ok.clone(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    contract_async(&url, &args).await.expect(0);

    let args = [
        "--control-schema".to_owned(),
        control.clone(),
        "approve".into(),
        "--shape".into(),
        shape,
        "--by".into(),
        "erin".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let approved = contract_async(&url, &[args, vec!["--json"]].concat())
        .await
        .expect(0)
        .json();
    assert_eq!(
        approved["covers"],
        serde_json::json!([drifted.as_str()]),
        "{approved}"
    );
    drop(guard);
    let guard = start(Remediation::SafeOnly).await.expect("guard");
    guard.revalidate().await.expect("pass");
    run(&["status", "--fail-on", "drift"]).await.expect(0);

    let args = [
        "audit".to_owned(),
        "--tenant".into(),
        drifted.clone(),
        "--json".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let audit = contract_async(&url, &args).await.expect(0).json();
    let entries = audit["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["tenant"], drifted.as_str());
    assert_eq!(entries[0]["status"], "applied");
    assert_readable(&run(&["audit"]).await.expect(0));
    run(&["quarantine", "list", "--json"])
        .await
        .expect(0)
        .json();
    drop(guard);
    pool.close().await;
}

/// The approvable change MySQL applies online: a rename (`renamed_from`), metadata only.
#[derive(Debug, sqlx::FromRow, contract_sqlx::Contract)]
#[contract(table = "accounts")]
#[allow(dead_code)]
struct Account {
    id: i64,
    #[contract(renamed_from = "owner")]
    owner_id: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_rename_approved_by_shape_is_applied_on_the_next_pass() {
    let pool = mysql_pool().await;
    let base = unique_name("cli_rename");
    let (control, tenant) = (format!("{base}_ctl"), format!("{base}_t1"));
    let _cleanup = MySqlDatabases(vec![control.clone(), tenant.clone()]);
    exec(&pool, format!("CREATE DATABASE `{control}`")).await;
    exec(&pool, format!("CREATE DATABASE `{tenant}`")).await;
    exec(
        &pool,
        format!(
            "CREATE TABLE `{tenant}`.accounts (id BIGINT NOT NULL PRIMARY KEY, owner BIGINT NOT NULL);
             INSERT INTO `{tenant}`.accounts VALUES (1, 7), (2, 9)"
        ),
    )
    .await;
    let guard = Guard::<MySql>::builder()
        .contract::<Account>()
        .tenants(Tenants::list([tenant.clone()]))
        .control_plane(ControlPlane::default().with_schema(&control))
        .remediation(Remediation::SafeOnly)
        .start(&pool)
        .await
        .expect("guard");
    // SafeOnly does not rename: the plan waits for an approval, the gate is closed.
    let pass = guard.revalidate().await.expect("pass");
    assert!(pass.remediated.is_empty(), "{pass:?}");
    assert!(!guard.gate(&tenant).is_open(), "drifted tenant paused");

    let url = mysql_url();
    let with_control = |args: &[&str]| -> Vec<String> {
        ["--control-schema", control.as_str()]
            .iter()
            .chain(args)
            .map(|a| (*a).to_owned())
            .collect()
    };
    let run = |args: Vec<String>| {
        let url = url.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            contract_async(&url, &args).await
        }
    };
    let plans = run(with_control(&["plans", "--json"]))
        .await
        .expect(0)
        .json();
    let shapes = plans["shapes"].as_array().expect("shapes");
    assert_eq!(shapes.len(), 1, "{plans}");
    assert_eq!(shapes[0]["tenant_count"], 1, "{plans}");
    assert_eq!(shapes[0]["needs_approval"], true, "{plans}");
    assert!(
        shapes[0]["hazards"]
            .as_array()
            .expect("hazards")
            .iter()
            .any(|h| h["name"] == "renames_column"),
        "{plans}"
    );
    let shape = shapes[0]["shape"].as_str().expect("shape").to_owned();
    assert_readable(&run(with_control(&["plans"])).await.expect(0));

    let approved = run(with_control(&[
        "approve", "--shape", &shape, "--by", "erin", "--json",
    ]))
    .await
    .expect(0)
    .json();
    assert_eq!(approved["covers"], serde_json::json!([tenant.as_str()]));

    // The running guard applies it on its next pass; no restart, no code.
    let pass = guard.revalidate().await.expect("pass");
    assert_eq!(pass.remediated.len(), 1, "{pass:?}");
    guard.revalidate().await.expect("pass");
    assert!(guard.gate(&tenant).is_open(), "resumed after the rename");
    run(with_control(&["status", "--fail-on", "drift"]))
        .await
        .expect(0);
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(column_name AS CHAR) FROM information_schema.columns
         WHERE table_schema = ? AND table_name = 'accounts' ORDER BY ordinal_position",
    )
    .bind(&tenant)
    .fetch_all(&pool)
    .await
    .expect("columns");
    assert_eq!(columns, ["id", "owner_id"]);
    let owners: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT owner_id FROM `{tenant}`.accounts ORDER BY id"
    )))
    .fetch_all(&pool)
    .await
    .expect("rows");
    assert_eq!(owners, [7, 9], "data kept through the rename");

    let audit = run(vec![
        "audit".into(),
        "--tenant".into(),
        tenant.clone(),
        "--json".into(),
    ])
    .await
    .expect(0)
    .json();
    let entries = audit["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(
        (&entries[0]["approved_by"], &entries[0]["status"]),
        (&serde_json::json!("erin"), &serde_json::json!("applied")),
        "{audit}"
    );
    drop(guard);
    pool.close().await;
}

/// `contract quarantine replay` puts a payload that is not UTF-8 back into a binary
/// (`LONGBLOB`) queue byte for byte. It used to go through `CONVERT(… USING utf8mb4)`,
/// which the server refuses for such bytes ("Invalid utf8mb4 character string"): the
/// operator could not replay it at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_quarantine_replay_into_a_binary_queue_keeps_bytes_that_are_not_utf8() {
    use contract_sqlx::TenantName;
    use contract_sqlx::payload::PayloadContract;
    use contract_sqlx::quarantine::{QueueQuarantine, QueueTable};

    let pool = mysql_pool().await;
    let tenant = unique_name("cli_blob");
    let _cleanup = MySqlDatabases(vec![tenant.clone()]);
    exec(
        &pool,
        format!(
            "CREATE DATABASE `{tenant}`;
             CREATE TABLE `{tenant}`.jobs (id BIGINT NOT NULL PRIMARY KEY, payload LONGBLOB NOT NULL,
                enqueued_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
                attempts INT NOT NULL DEFAULT 0) ENGINE = InnoDB"
        ),
    )
    .await;
    let raw: &[u8] = b"{\"user_id\": \"\xff\"}";
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO `{tenant}`.jobs (id, payload) VALUES (7, ?)"
    )))
    .bind(raw)
    .execute(&pool)
    .await
    .expect("enqueue");
    let site = QueueQuarantine::new(
        TenantName::new(&tenant).expect("name"),
        QueueTable::new("jobs"),
    );
    site.ensure_table(&pool).await.expect("quarantine table");
    let contract = PayloadContract::<serde_json::Value>::named("any");
    let rejection = contract.check(raw).expect_err("not UTF-8");
    let mut tx = pool.begin().await.expect("tx");
    site.quarantine(&mut *tx, &contract, &[(7, raw, &rejection)])
        .await
        .expect("quarantine");
    tx.commit().await.expect("commit");
    let id: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT id FROM `{tenant}`.contract_quarantine"
    )))
    .fetch_one(&pool)
    .await
    .expect("quarantined row");
    contract_async(
        &mysql_url(),
        &["quarantine", "replay", &id.to_string(), "--tenant", &tenant],
    )
    .await
    .expect(0);
    let back: Vec<u8> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT payload FROM `{tenant}`.jobs WHERE id = 7"
    )))
    .fetch_one(&pool)
    .await
    .expect("the message is back");
    assert_eq!(back, raw);
}
