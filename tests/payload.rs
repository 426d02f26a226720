//! Payload contracts: every kind of bad payload gets a clear rejection with the failing
//! field path; a valid payload is returned parsed.

use contract_sqlx::payload::{DEFAULT_MAX_BYTES, PayloadContract, RejectReason, Rejection};
use serde::Deserialize;

#[derive(Debug, PartialEq, Deserialize)]
struct Order {
    order_id: i64,
    status: Status,
    items: Vec<Item>,
    note: Option<String>,
}

#[derive(Debug, PartialEq, Deserialize)]
struct Item {
    sku: String,
    price: i64,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Open,
    Paid,
}

fn contract() -> PayloadContract<Order> {
    PayloadContract::named("order").with_version("3")
}

fn reject(raw: &[u8]) -> Rejection {
    match contract().check(raw) {
        Ok(order) => panic!("accepted {order:?}"),
        Err(rejection) => rejection,
    }
}

#[test]
fn valid_payload_is_returned_parsed() {
    let order = contract()
        .check(br#"{"order_id": 7, "status": "paid", "items": [{"sku": "a", "price": 3}], "note": null}"#)
        .unwrap();
    assert_eq!(
        order,
        Order {
            order_id: 7,
            status: Status::Paid,
            items: vec![Item {
                sku: "a".into(),
                price: 3
            }],
            note: None,
        }
    );
}

#[test]
fn invalid_json_is_rejected_with_its_position() {
    let r = reject(br#"{"order_id": 7,, "#);
    assert_eq!(r.reason, RejectReason::InvalidJson);
    assert!(!r.raw_is_json);
    assert!(
        r.message.starts_with("payload is not valid JSON"),
        "{}",
        r.message
    );
    assert!(r.message.contains("line 1 column"), "{}", r.message);
}

#[test]
fn trailing_characters_after_a_valid_document_are_invalid_json() {
    let r = reject(br#"{"order_id": 7, "status": "open", "items": []} x"#);
    assert_eq!(r.reason, RejectReason::InvalidJson);
    assert!(r.message.contains("trailing characters"), "{}", r.message);
}

#[test]
fn type_error_after_which_the_document_breaks_is_invalid_json_not_a_mismatch() {
    // The wrong type stops the parse before the syntax error: still not JSON.
    let r = reject(br#"{"order_id": "7", "items": [}"#);
    assert_eq!(r.reason, RejectReason::InvalidJson);
    assert!(!r.raw_is_json);
}

#[test]
fn wrong_type_names_the_field_path() {
    let r = reject(
        br#"{"order_id": 7, "status": "open", "items": [{"sku": "a", "price": 1}, {"sku": "b", "price": 2}, {"sku": "c", "price": "9.99"}]}"#,
    );
    assert_eq!(r.reason, RejectReason::ContractMismatch);
    assert!(r.raw_is_json);
    assert_eq!(r.path.as_deref(), Some("items[2].price"));
    assert!(
        r.message
            .contains("does not match contract `order` at field `items[2].price`"),
        "{}",
        r.message
    );
    assert!(
        r.message
            .contains("invalid type: string \"9.99\", expected i64"),
        "{}",
        r.message
    );
}

#[test]
fn missing_field_names_the_field_and_its_parent() {
    let r = reject(br#"{"order_id": 7, "status": "open", "items": [{"sku": "a"}]}"#);
    assert_eq!(r.reason, RejectReason::ContractMismatch);
    assert_eq!(r.path.as_deref(), Some("items[0]"));
    assert!(r.message.contains("missing field `price`"), "{}", r.message);

    let root = reject(br#"{"status": "open", "items": []}"#);
    assert_eq!(root.path, None);
    assert!(
        root.message.contains("missing field `order_id`"),
        "{}",
        root.message
    );
}

#[test]
fn unknown_enum_variant_lists_the_expected_ones() {
    let r = reject(br#"{"order_id": 7, "status": "refunded", "items": []}"#);
    assert_eq!(r.reason, RejectReason::ContractMismatch);
    assert_eq!(r.path.as_deref(), Some("status"));
    assert!(
        r.message
            .contains("unknown variant `refunded`, expected `open` or `paid`"),
        "{}",
        r.message
    );
}

#[test]
fn ten_megabytes_is_too_large_and_not_parsed() {
    let mut raw = b"\"".to_vec();
    raw.resize(10 * 1024 * 1024, b'x');
    raw.push(b'"');
    let r = reject(&raw);
    assert_eq!(r.reason, RejectReason::TooLarge);
    assert!(!r.raw_is_json);
    assert!(
        r.message
            .contains(&format!("over the {DEFAULT_MAX_BYTES}-byte limit")),
        "{}",
        r.message
    );
    // The limit is configurable.
    let small = PayloadContract::<serde_json::Value>::new().with_max_bytes(4);
    assert_eq!(
        small.check(b"12345").unwrap_err().reason,
        RejectReason::TooLarge
    );
    assert!(small.check(b"1234").is_ok());
    // Text is held to the same limit, in bytes.
    assert_eq!(
        small.check_str("12345").unwrap_err().reason,
        RejectReason::TooLarge
    );
    assert_eq!(
        small.check_str("\"ée\"").unwrap_err().reason,
        RejectReason::TooLarge,
        "4 characters, 5 bytes"
    );
    assert!(small.check_str("1234").is_ok());
}

#[test]
fn bytes_that_are_not_utf8_are_rejected_before_parsing() {
    let r = reject(b"{\"order_id\": \"\xff\xfe\"}");
    assert_eq!(r.reason, RejectReason::NotUtf8);
    assert!(r.message.contains("not valid UTF-8"), "{}", r.message);
}

#[test]
fn rejection_serialises_with_snake_case_reasons() {
    let r = reject(br#"{"order_id": true}"#);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["reason"], "contract_mismatch");
    assert_eq!(json["path"], "order_id");
    assert_eq!(json["raw_is_json"], true);
    let back: Rejection = serde_json::from_value(json).unwrap();
    assert_eq!(back, r);
    assert_eq!(r.to_string(), r.message);
    for (reason, name) in [
        (RejectReason::TooLarge, "too_large"),
        (RejectReason::NotUtf8, "not_utf8"),
        (RejectReason::InvalidJson, "invalid_json"),
        (RejectReason::ContractMismatch, "contract_mismatch"),
    ] {
        assert_eq!(serde_json::to_value(reason).unwrap(), name);
        assert_eq!(reason.as_str(), name);
    }
}

#[test]
fn fingerprint_is_stable_and_changes_with_the_version() {
    let a = contract();
    assert_eq!(a.fingerprint(), contract().fingerprint());
    assert_ne!(
        a.fingerprint(),
        PayloadContract::<Order>::named("order")
            .with_version("4")
            .fingerprint()
    );
    assert_eq!(a.fingerprint().len(), 64);
    assert!(PayloadContract::<Order>::new().name().ends_with("Order"));
}

#[test]
fn truncated_json_has_no_made_up_field_path() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Click {
        user_id: i64,
        kind: String,
    }
    let rejection = contract_sqlx::payload::PayloadContract::<Click>::new()
        .check(br#"{"user_id": 7, "kind": "click""#)
        .expect_err("truncated");
    assert_eq!(
        rejection.reason,
        contract_sqlx::payload::RejectReason::InvalidJson
    );
    assert_eq!(rejection.path, None, "{rejection:?}");
}
