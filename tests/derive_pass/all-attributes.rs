//! Derive pass case: every supported `#[contract]` and `#[sqlx]` attribute compiles and shapes the contract.
#![allow(dead_code)]

use contract_sqlx::{
    Contract,
    model::{Columns, Reference},
};

#[derive(sqlx::FromRow, Contract)]
#[contract(embedded)]
struct Audit {
    created_by: String,
    #[sqlx(rename = "audit_at")]
    at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Payload {
    kind: String,
}

#[derive(sqlx::FromRow, Contract)]
#[contract(table = "events", schema = "audit", crate = "contract_sqlx")]
#[sqlx(rename_all = "camelCase", type_name = "ignored", no_pg_array)]
struct Event {
    #[contract(primary_key)]
    id: i64,
    #[contract(references = "audit.users(id)", renamed_from = "owner_id")]
    user_id: i64,
    #[sqlx(rename = "Kind")]
    kind: String,
    #[sqlx(default)]
    #[contract(default = "0", sql_type = "bigint")]
    retry_count: i64,
    #[sqlx(skip)]
    cache: Vec<u8>,
    #[sqlx(flatten)]
    audit: Audit,
    #[sqlx(try_from = "i64")]
    seen: u64,
    #[sqlx(json)]
    payload: Payload,
    #[sqlx(json(nullable))]
    extra: Option<Payload>,
    meta: Option<serde_json::Value>,
    #[sqlx(unknown_field_key)]
    r#type: Option<String>,
}

fn main() {
    let contract = Event::contract();
    assert_eq!(contract.struct_name, "Event");
    assert_eq!(contract.table, "events");
    assert_eq!(contract.schema.as_deref(), Some("audit"));
    let names: Vec<_> = contract.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "id",
            "userId",
            "Kind",
            "retryCount",
            "created_by",
            "audit_at",
            "seen",
            "payload",
            "extra",
            "meta",
            "type"
        ]
    );
    let col = |name: &str| contract.column(name).unwrap();
    assert!(col("id").primary_key && !col("id").nullable && !col("id").optional);
    assert_eq!(
        col("userId").references,
        Some(Reference {
            schema: Some("audit".into()),
            table: "users".into(),
            column: "id".into()
        })
    );
    assert_eq!(col("userId").renamed_from.as_deref(), Some("owner_id"));
    assert!(col("retryCount").optional);
    assert_eq!(col("retryCount").default_sql.as_deref(), Some("0"));
    assert_eq!(col("retryCount").sql_type.as_deref(), Some("bigint"));
    assert_eq!(col("audit_at").rust_type, "chrono::DateTime<chrono::Utc>");
    assert_eq!(col("seen").rust_type, "i64");
    assert!(col("payload").json && !col("payload").nullable);
    assert_eq!(col("payload").rust_type, "Json<Payload>");
    assert!(col("extra").json && col("extra").nullable);
    assert_eq!(col("extra").rust_type, "Option<Json<Option<Payload>>>");
    assert!(col("meta").json && col("meta").nullable);
    assert_eq!(col("type").rust_type, "Option<String>");
    assert_eq!(Audit::columns().len(), 2);

    use contract_sqlx::check::TypeChecks;
    let checks = <Event as TypeChecks<sqlx::Sqlite>>::type_checks();
    let check_names: Vec<_> = checks.iter().map(|c| c.column()).collect();
    assert_eq!(check_names, names);
    assert_eq!(
        <Event as TypeChecks<sqlx::Postgres>>::type_checks().len(),
        names.len()
    );
    assert_eq!(
        <Event as TypeChecks<sqlx::MySql>>::type_checks().len(),
        names.len()
    );
}
