//! The fast path (one plain `serde_json` parse) must accept exactly what the path-tracking
//! parse accepts, fail on the same error, and leave every rejection as the tracking run
//! makes it. Compared over tricky inputs and over every prefix and one-byte edit of valid
//! payloads, for types that reach the different corners of serde.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;

use serde::Deserialize;
use serde::de::{DeserializeOwned, Error as _};
use serde_json::value::RawValue;

use super::{PayloadContract, RejectReason, Rejection};

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

#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Strict {
    a: i64,
    b: Option<Vec<u8>>,
}

/// A custom `Deserialize` that rejects odd numbers with its own message.
#[derive(Debug, PartialEq)]
struct Even(u32);

impl<'de> Deserialize<'de> for Even {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        if n % 2 == 1 {
            return Err(D::Error::custom(format_args!(
                "{n} is odd, an even count is needed"
            )));
        }
        Ok(Even(n))
    }
}

#[derive(Debug, PartialEq, Deserialize)]
struct Pairs {
    pairs: Vec<Even>,
    by_id: HashMap<u8, bool>,
}

/// Internally tagged, untagged and flattened: serde buffers these as `Content` first.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    Click { x: i64, y: i64 },
    Key { code: String },
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(untagged)]
enum Loose {
    Number(f64),
    Words(Vec<String>),
    Event(Event),
}

#[derive(Debug, PartialEq, Deserialize)]
struct Envelope {
    id: u64,
    at: Option<String>,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

/// Nested arrays of any depth: `[[[]]]`.
#[derive(Debug, PartialEq, Deserialize)]
struct Nested(Vec<Nested>);

/// `Box<RawValue>` is read through serde_json's private newtype token.
#[derive(Debug, Deserialize)]
struct Raw(Box<RawValue>);

impl PartialEq for Raw {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

/// Checks `raw` with the fast path and with the tracking parse alone, and requires the
/// same outcome: the same value, or the same rejection after failing on the same error.
fn agree<T: DeserializeOwned + PartialEq + Debug>(raw: &[u8]) -> Result<T, Rejection> {
    let contract = PayloadContract::<T>::named("tricky");
    let checked = contract.check(raw);
    let Ok(text) = std::str::from_utf8(raw) else {
        let rejection = checked.expect_err("not UTF-8 yet accepted");
        assert_eq!(rejection.reason, RejectReason::NotUtf8, "{raw:?}");
        return Err(rejection);
    };
    // Text checked as text: the same value or the same rejection.
    match (&checked, &contract.check_str(text)) {
        (Ok(bytes), Ok(text_checked)) => assert_eq!(bytes, text_checked, "{text}"),
        (Err(bytes), Err(text_checked)) => assert_eq!(bytes, text_checked, "{text}"),
        (bytes, text_checked) => panic!("check {bytes:?}, check_str {text_checked:?} for {text}"),
    }
    let tracked = contract.check_tracking_path(text);
    match (&checked, &tracked) {
        (Ok(fast), Ok(slow)) => assert_eq!(fast, slow, "{text}"),
        (Err(fast), Err(slow)) => {
            assert_eq!(fast, slow, "{text}");
            // Not only the same report: the plain parse failed on the error the tracking
            // parse reports (or on the trailing characters after it succeeded).
            let plain = serde_json::from_str::<T>(text).expect_err("rejected");
            let mut de = serde_json::Deserializer::from_str(text);
            let tracking = match serde_path_to_error::deserialize::<_, T>(&mut de) {
                Err(e) => e.into_inner(),
                Ok(_) => de.end().expect_err("the tracking parse rejected it"),
            };
            assert_eq!(plain.to_string(), tracking.to_string(), "{text}");
            assert_eq!(plain.classify(), tracking.classify(), "{text}");
        }
        _ => panic!("fast path {checked:?}, tracking parse {tracked:?} for {text}"),
    }
    checked
}

fn reason<T: DeserializeOwned + PartialEq + Debug>(raw: &str) -> RejectReason {
    match agree::<T>(raw.as_bytes()) {
        Ok(value) => panic!("accepted {value:?} from {raw}"),
        Err(rejection) => rejection.reason,
    }
}

const ORDER: &str = r#"{"order_id": 7, "status": "paid", "items": [{"sku": "a\"b", "price": 3}, {"sku": "é", "price": -1}], "note": "x"}"#;

#[test]
fn data_error_before_a_later_syntax_error_is_invalid_json() {
    let raw = r#"{"order_id": "7", "status": "open", "items": [}"#;
    assert_eq!(reason::<Order>(raw), RejectReason::InvalidJson);
    // The same with the syntax error far behind the data error, inside a skipped value.
    let raw = r#"{"order_id": 7, "status": "shipped", "extra": {"a": [1, 2,, 3]}}"#;
    assert_eq!(reason::<Order>(raw), RejectReason::InvalidJson);
}

#[test]
fn trailing_characters_and_truncated_documents_are_invalid_json() {
    for raw in [
        format!("{ORDER} x"),
        format!("{ORDER}{{}}"),
        format!("{ORDER}\n\n]"),
    ] {
        let rejection = agree::<Order>(raw.as_bytes()).expect_err("trailing");
        assert_eq!(rejection.reason, RejectReason::InvalidJson);
        assert!(
            rejection.message.contains("trailing characters"),
            "{rejection}"
        );
    }
    assert!(agree::<Order>(format!(" \n{ORDER}\t\r\n ").as_bytes()).is_ok());
    for cut in 0..ORDER.len() {
        if ORDER.is_char_boundary(cut) {
            assert_eq!(reason::<Order>(&ORDER[..cut]), RejectReason::InvalidJson);
        }
    }
}

#[test]
fn escapes_lone_surrogates_and_nul() {
    let with_note = |note: &str| {
        format!(r#"{{"order_id": 1, "status": "open", "items": [], "note": "{note}"}}"#)
    };
    let order = agree::<Order>(with_note(r"a\u0000b\ud83d\ude00").as_bytes()).expect("valid");
    assert_eq!(order.note.as_deref(), Some("a\0b😀"));
    for lone in [r"\ud800", r"\udc00", r"\ud800\u0041", r"\ud83d"] {
        assert_eq!(reason::<Order>(&with_note(lone)), RejectReason::InvalidJson);
    }
    for bad in [r"\u12", r"\x41", "tab\there", r"\"] {
        assert_eq!(reason::<Order>(&with_note(bad)), RejectReason::InvalidJson);
    }
    // A skipped field is not decoded: its lone surrogate goes unnoticed by serde_json,
    // on both paths alike.
    let skipped = r#"{"order_id": 1, "status": "open", "items": [], "x": "\ud800"}"#;
    assert!(agree::<Order>(skipped.as_bytes()).is_ok());
    let mismatch = r#"{"order_id": "1", "x": "\ud800"}"#;
    assert_eq!(reason::<Order>(mismatch), RejectReason::ContractMismatch);
}

#[test]
fn deep_nesting_up_to_and_past_the_recursion_limit() {
    for depth in [1, 64, 127, 128, 129, 200, 5000] {
        let raw = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let nested = agree::<Nested>(raw.as_bytes());
        let value = agree::<serde_json::Value>(raw.as_bytes());
        assert_eq!(nested.is_ok(), value.is_ok(), "depth {depth}");
        if depth > 128 {
            let rejection = nested.expect_err("too deep");
            assert_eq!(rejection.reason, RejectReason::InvalidJson);
            assert!(rejection.message.contains("recursion limit"), "{rejection}");
        }
        let unclosed = "[".repeat(depth);
        assert_eq!(reason::<Nested>(&unclosed), RejectReason::InvalidJson);
    }
    // serde_json skips an unknown field without recursing, so nesting deeper than the
    // limit inside it is accepted, on both paths alike; `Value` reads it and refuses it.
    let too_deep_inside = format!(
        r#"{{"order_id": 1, "status": "open", "items": [], "x": {}{}}}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    assert!(agree::<Order>(too_deep_inside.as_bytes()).is_ok());
    assert_eq!(
        reason::<serde_json::Value>(&too_deep_inside),
        RejectReason::InvalidJson
    );
}

#[test]
fn unknown_variants_unknown_fields_and_custom_errors_are_mismatches() {
    let raw = r#"{"order_id": 7, "status": "refunded", "items": []}"#;
    assert_eq!(reason::<Order>(raw), RejectReason::ContractMismatch);
    assert_eq!(
        reason::<Strict>(r#"{"a": 1, "c": 2}"#),
        RejectReason::ContractMismatch
    );
    assert_eq!(
        reason::<Strict>(r#"{"a": 1, "c": "#),
        RejectReason::InvalidJson
    );
    assert_eq!(
        reason::<Strict>(r#"{"a": 1, "b": [256]}"#),
        RejectReason::ContractMismatch
    );
    let rejection = agree::<Pairs>(br#"{"pairs": [2, 4, 3], "by_id": {}}"#).expect_err("odd");
    assert_eq!(rejection.reason, RejectReason::ContractMismatch);
    assert_eq!(rejection.path.as_deref(), Some("pairs[2]"));
    assert!(rejection.message.contains("3 is odd"), "{rejection}");
    let raw = r#"{"type": "swipe", "x": 1}"#;
    assert_eq!(reason::<Event>(raw), RejectReason::ContractMismatch);
    assert_eq!(
        reason::<Loose>(r#"{"type": "key"}"#),
        RejectReason::ContractMismatch
    );
}

#[test]
fn maps_with_non_string_keys() {
    let ok = agree::<Pairs>(br#"{"pairs": [], "by_id": {"1": true, "255": false}}"#);
    assert_eq!(ok.expect("valid").by_id.len(), 2);
    for raw in [
        r#"{"pairs": [], "by_id": {"256": true}}"#,
        r#"{"pairs": [], "by_id": {"-1": true}}"#,
    ] {
        assert_eq!(
            reason::<Pairs>(raw),
            RejectReason::ContractMismatch,
            "{raw}"
        );
    }
    // serde_json reports a key that is not a number as a syntax error ("expected key to
    // be a number in quotes"), so these count as not JSON; the same on both paths.
    for raw in [
        r#"{"pairs": [], "by_id": {"x": true}}"#,
        r#"{"pairs": [], "by_id": {" 1": true}}"#,
    ] {
        assert!(agree::<Pairs>(raw.as_bytes()).is_err(), "{raw}");
    }
    let unquoted = r#"{"pairs": [], "by_id": {1: true}}"#;
    assert_eq!(reason::<Pairs>(unquoted), RejectReason::InvalidJson);
}

#[test]
fn numbers_at_and_past_their_limits() {
    let raw = |n: &str| format!(r#"{{"order_id": {n}, "status": "open", "items": []}}"#);
    for n in ["9223372036854775807", "-9223372036854775808", "0", "1"] {
        assert!(agree::<Order>(raw(n).as_bytes()).is_ok(), "{n}");
    }
    for n in [
        "9223372036854775808",
        "-0",
        "1.5",
        "1e3",
        "-1e400",
        "123456789012345678901234567890",
    ] {
        let _ = agree::<Order>(raw(n).as_bytes());
    }
    for n in ["1e400", "01", "1.", "-", "+1", ".5", "NaN", "Infinity"] {
        assert_eq!(reason::<Order>(&raw(n)), RejectReason::InvalidJson, "{n}");
    }
    for n in ["1e400", "1e308", "-0.0", "18446744073709551616"] {
        let _ = agree::<serde_json::Value>(n.as_bytes());
    }
}

#[test]
fn every_prefix_and_one_byte_edit_of_valid_payloads_agrees() {
    let valid = [
        ORDER.to_owned(),
        r#"{"type": "click", "x": 1, "y": -2}"#.to_owned(),
        r#"[1.5, ["a", "b"], {"type": "key", "code": "\u00e9"}]"#.to_owned(),
        r#"{"id": 9, "at": null, "k": [true, {"n": null}]}"#.to_owned(),
        r#"{"pairs": [2, 4], "by_id": {"1": true}}"#.to_owned(),
        r#"{"a": 1, "b": [1, 2]}"#.to_owned(),
    ];
    let edits = [
        b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b' ', b'0', b'x', b'-', b'e',
    ];
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for payload in &valid {
        let bytes = payload.as_bytes();
        for i in 0..=bytes.len() {
            inputs.push(bytes[..i].to_vec());
            if i < bytes.len() {
                let mut deleted = bytes.to_vec();
                deleted.remove(i);
                inputs.push(deleted);
                for &edit in &edits {
                    let mut replaced = bytes.to_vec();
                    replaced[i] = edit;
                    inputs.push(replaced);
                }
            }
        }
    }
    let mut tally = BTreeMap::<&str, (usize, usize)>::new();
    for raw in &inputs {
        for (name, outcome) in [
            ("Order", agree::<Order>(raw).map(drop)),
            ("Event", agree::<Event>(raw).map(drop)),
            ("Loose", agree::<Loose>(raw).map(drop)),
            ("Envelope", agree::<Envelope>(raw).map(drop)),
            ("Pairs", agree::<Pairs>(raw).map(drop)),
            ("Strict", agree::<Strict>(raw).map(drop)),
            ("Raw", agree::<Raw>(raw).map(drop)),
            ("Value", agree::<serde_json::Value>(raw).map(drop)),
        ] {
            let (accepted, rejected) = tally.entry(name).or_default();
            match outcome {
                Ok(()) => *accepted += 1,
                Err(_) => *rejected += 1,
            }
        }
    }
    // The inputs reach both sides of every type, not only one.
    for (name, (accepted, rejected)) in tally {
        assert!(
            accepted >= 20 && rejected >= 1000,
            "{name}: {accepted} accepted, {rejected} rejected"
        );
    }
}

#[test]
fn types_that_read_human_readable_formats_differently() {
    // `IpAddr` and friends read a string from human-readable formats and a tuple from
    // others; the tracking wrapper forwards the flag, so both paths read the same.
    assert!(agree::<std::net::IpAddr>(br#""10.0.0.1""#).is_ok());
    assert!(agree::<std::net::SocketAddr>(br#""[::1]:80""#).is_ok());
    assert_eq!(
        reason::<std::net::IpAddr>(r#""10.0.0.256""#),
        RejectReason::ContractMismatch
    );
    assert_eq!(
        reason::<std::net::IpAddr>("[10, 0, 0, 1]"),
        RejectReason::ContractMismatch
    );
    assert!(agree::<char>(br#""\u00e9""#).is_ok());
    assert_eq!(reason::<char>(r#""ab""#), RejectReason::ContractMismatch);
}
