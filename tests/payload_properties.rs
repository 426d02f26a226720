//! Properties of `PayloadContract::check` over random input: it never panics, whatever
//! the bytes, and every rejection is a sentence a person can read: not empty, no Rust
//! `{:?}` rendering of a type, and the offending value serde quotes (`string "…"`) given
//! as a JSON string literal, as it is written in the payload (`"a\u0001b"`), not with
//! Rust's debug escapes (`"a\u{1}b"`). A rejection calls the payload JSON exactly when it
//! is a contract mismatch, and then it is.
//!
//! The bulk is a seeded generator (deterministic, cheap): 1,000,000 inputs of arbitrary
//! bytes, valid UTF-8, JSON-ish token soup, edits of valid payloads, huge numbers, and
//! nesting up to and past serde_json's recursion limit (128), each checked against one of
//! six contracts in turn. proptest adds structured cases, valid payloads with one value
//! replaced by a random string or number, and shrinks a failure to the smallest input.
//!
//! `cargo test --test offline payload_properties::` (no server needed).

use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};

use contract_sqlx::payload::{PayloadContract, RejectReason, Rejection};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde::Deserialize;
use serde::de::{Error as _, IgnoredAny};

/// Inputs of the seeded bulk run.
const INPUTS: usize = 1_000_000;

#[path = "payload_properties/inputs.rs"]
mod inputs;

use inputs::{Rng, input};

// ---------------------------------------------------------------------------------------
// Contracts: the corners of serde a consumer's type reaches.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Order {
    order_id: i64,
    status: Status,
    items: Vec<Item>,
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Item {
    sku: String,
    price: i64,
    qty: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Open,
    Paid,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Strict {
    a: i64,
    b: Option<Vec<u8>>,
}

/// A custom `Deserialize` with its own error message.
#[derive(Debug)]
struct Even(#[allow(dead_code)] u32);

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

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Counts {
    pairs: Vec<Even>,
    by_id: HashMap<u8, bool>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(dead_code)]
enum Event {
    Click { x: i64, y: i64 },
    Key { code: char },
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Envelope {
    id: u64,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

type Check = Box<dyn Fn(&[u8]) -> Result<(), Rejection>>;

fn contract<T: serde::de::DeserializeOwned + 'static>(name: &str) -> Check {
    let contract = PayloadContract::<T>::named(name).with_max_bytes(64 * 1024);
    Box::new(move |raw| contract.check(raw).map(drop))
}

fn contracts() -> Vec<(&'static str, Check)> {
    vec![
        ("order", contract::<Order>("order")),
        ("strict", contract::<Strict>("strict")),
        ("counts", contract::<Counts>("counts")),
        ("event", contract::<Event>("event")),
        ("envelope", contract::<Envelope>("envelope")),
        ("value", contract::<serde_json::Value>("value")),
    ]
}

// ---------------------------------------------------------------------------------------
// The properties.
// ---------------------------------------------------------------------------------------

/// Checks `raw`, turning a panic into a failure that shows the input.
fn check_once(check: &Check, raw: &[u8]) -> Result<Result<(), Rejection>, String> {
    catch_unwind(AssertUnwindSafe(|| check(raw)))
        .map_err(|_| format!("check panicked on {}", shown(raw)))
}

/// Every rejection reads as a sentence; the reason and `raw_is_json` agree.
fn readable(rejection: &Rejection, raw: &[u8]) -> Result<(), String> {
    let fail = |what: &str| {
        Err(format!(
            "{what}\n  message: {}\n  input:   {}",
            rejection.message,
            shown(raw)
        ))
    };
    let message = &rejection.message;
    if !message.starts_with("payload ") || message.len() < 20 {
        return fail("not a sentence about the payload");
    }
    if let Some(word) = debug_rendering(message) {
        return fail(&format!("a Rust debug rendering (`{word}`)"));
    }
    if let Err(e) = quoted_values_are_json(message) {
        return fail(&e);
    }
    let mismatch = rejection.reason == RejectReason::ContractMismatch;
    if rejection.raw_is_json != mismatch {
        return fail("raw_is_json disagrees with the reason");
    }
    if rejection.raw_is_json && serde_json::from_slice::<IgnoredAny>(raw).is_err() {
        return fail("raw_is_json, but serde_json does not read it");
    }
    Ok(())
}

/// A piece of a `{:?}` rendering of a type the check uses (`Some(…)`, `Error(…)`,
/// `Utf8Error { … }`, `InvalidJson`), if the message has one.
fn debug_rendering(message: &str) -> Option<&'static str> {
    [
        "Some(",
        "Error(",
        "Error {",
        "Utf8Error",
        "Rejection {",
        "InvalidJson",
        "ContractMismatch",
        "NotUtf8",
        "TooLarge",
    ]
    .into_iter()
    .find(|debug| message.contains(debug))
}

/// Each value serde quotes (`string "…"`) is a JSON string literal: only JSON escapes
/// (`\" \\ \/ \b \f \n \r \t \uXXXX`), no raw control characters. A value cut by the
/// length cap (`… (truncated)`) may end inside an escape.
fn quoted_values_are_json(message: &str) -> Result<(), String> {
    const QUOTE: &str = "string \"";
    let mut rest = message;
    while let Some(start) = rest.find(QUOTE) {
        let body = &rest[start + QUOTE.len()..];
        let mut chars = body.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            let cut = |at: usize| body[at..].starts_with("… (truncated)");
            match c {
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                '…' if cut(i) => {
                    end = Some(i);
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, '"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't')) => {}
                    Some((u, 'u')) => {
                        let hex = body[u + 1..]
                            .chars()
                            .take(4)
                            .take_while(char::is_ascii_hexdigit)
                            .count();
                        if hex < 4 && !cut(u + 1 + hex) {
                            return Err(format!("`{}` is not a JSON escape", &body[i..]));
                        }
                        for _ in 0..hex {
                            chars.next();
                        }
                    }
                    Some((at, _)) if cut(at) => {}
                    _ => return Err(format!("`{}` is not a JSON escape", &body[i..])),
                },
                c if u32::from(c) < 0x20 => {
                    return Err(format!("a raw control character U+{:04X}", u32::from(c)));
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            return Err("a quoted value without its closing quote".to_owned());
        };
        rest = &body[end..];
    }
    Ok(())
}

/// An input as a person can read it in a failure report (escaped, capped).
fn shown(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(&raw[..raw.len().min(400)]).into_owned();
    let more = if raw.len() > 400 { " …" } else { "" };
    format!("{text:?}{more} ({} bytes)", raw.len())
}

/// (contract, outcome) → how many inputs, to show the inputs reach every outcome.
type Outcomes = BTreeMap<(&'static str, &'static str), usize>;

/// Checks `count` seeded inputs; returns the outcomes and the first failures.
fn run_seeded(seed: u64, count: usize) -> (Outcomes, Vec<String>) {
    let contracts = contracts();
    let mut rng = Rng(seed);
    let mut seen = Outcomes::new();
    let mut failures = Vec::new();
    for i in 0..count {
        let raw = input(&mut rng);
        let (name, check) = &contracts[i % contracts.len()];
        let outcome = match check_once(check, &raw) {
            Err(panic) => {
                failures.push(panic);
                "panicked"
            }
            Ok(Ok(())) => "accepted",
            Ok(Err(rejection)) => {
                if let Err(e) = readable(&rejection, &raw) {
                    failures.push(format!("contract {name}: {e}"));
                }
                rejection.reason.as_str()
            }
        };
        *seen.entry((name, outcome)).or_default() += 1;
        if failures.len() >= 10 {
            break;
        }
    }
    (seen, failures)
}

#[test]
fn a_million_random_inputs_never_panic_and_every_rejection_reads_well() {
    // One seeded share per core (the debug build is slow); the same inputs on every run.
    const SHARES: u64 = 2;
    let share = INPUTS / 2;
    let runs: Vec<(Outcomes, Vec<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..SHARES)
            .map(|t| scope.spawn(move || run_seeded(0x0005_EED0_FBAD_C0DE + t, share)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("the checks catch their panics"))
            .collect()
    });
    let mut seen = Outcomes::new();
    let mut failures = Vec::new();
    for (outcomes, failed) in runs {
        for (key, count) in outcomes {
            *seen.entry(key).or_default() += count;
        }
        failures.extend(failed);
    }
    assert!(
        failures.is_empty(),
        "{} failures (first 10 per thread):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(seen.values().sum::<usize>(), INPUTS);
    eprintln!("outcomes: {seen:?}");
    for (name, _) in contracts() {
        for outcome in ["accepted", "not_utf8", "invalid_json", "contract_mismatch"] {
            if (name, outcome) == ("value", "contract_mismatch") {
                continue; // `Value` takes every JSON document.
            }
            let count = seen.get(&(name, outcome)).copied().unwrap_or(0);
            assert!(
                count >= 100,
                "contract {name}: only {count} inputs {outcome}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Structured cases with proptest: a valid payload with one value replaced.
// ---------------------------------------------------------------------------------------

fn any_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::char::range(' ', '~'),
            2 => proptest::char::range('\0', '\u{1f}'),
            2 => proptest::sample::select(vec![
                '"', '\\', '\u{7f}', '\u{85}', '\u{a0}', '\u{200b}', '\u{301}', '\u{2028}',
                '\u{feff}', '\u{e0001}', 'é', '🦀',
            ]),
            1 => any::<char>(),
        ],
        0..40,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

/// A JSON value that the contracts' fields mostly do not accept where it is put.
fn any_json_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any_text().prop_map(|s| serde_json::to_string(&s).expect("a string serialises")),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| serde_json::to_string(&f).expect("a float serialises")),
        "-?[0-9]{1,400}(\\.[0-9]{1,20})?([eE][-+]?[0-9]{1,6})?",
        Just("null".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
    ]
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: 3_000,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x00C0_FFEE),
        ..Config::default()
    })
}

/// Valid payloads with one value left open (`@`), and the contract (index in
/// [`contracts`]) each is valid for.
const TEMPLATES: [(usize, &str); 6] = [
    (
        0,
        r#"{"order_id": @, "status": "open", "items": [], "note": null}"#,
    ),
    (0, r#"{"order_id": 1, "status": @, "items": []}"#),
    (
        0,
        r#"{"order_id": 1, "status": "paid", "items": [{"sku": "a", "price": @, "qty": 1}]}"#,
    ),
    (1, r#"{"a": 1, "b": [@]}"#),
    (2, r#"{"pairs": [2, @], "by_id": {"1": true}}"#),
    (3, r#"{"type": "key", "code": @}"#),
];

/// A template filled with `value`, and `value` under `key`: an unknown field, a map key,
/// an enum variant and a tag.
fn payloads(template: usize, value: &str, key: &str) -> [(usize, String); 6] {
    let (contract, text) = TEMPLATES[template];
    [
        (contract, text.replace('@', value)),
        (
            2,
            format!(r#"{{"pairs": [], "by_id": {{{key}: {value}}}}}"#),
        ),
        (1, format!(r#"{{"a": 1, {key}: {value}}}"#)),
        (4, format!(r#"{{"id": 1, {key}: {value}}}"#)),
        (
            0,
            format!(r#"{{"order_id": 1, "status": {key}, "items": []}}"#),
        ),
        (3, format!(r#"{{"type": {key}, "x": {value}}}"#)),
    ]
}

#[test]
fn a_valid_payload_with_one_value_replaced_is_accepted_or_rejected_readably() {
    let contracts = contracts();
    let strategy = (0..TEMPLATES.len(), any_json_value(), any_text());
    let result = runner().run(&strategy, |(template, value, key)| {
        let key = serde_json::to_string(&key).expect("a key serialises");
        for (index, raw) in payloads(template, &value, &key) {
            let (name, check) = &contracts[index];
            let checked = check_once(check, raw.as_bytes()).map_err(TestCaseError::fail)?;
            if let Err(rejection) = checked {
                readable(&rejection, raw.as_bytes())
                    .map_err(|e| TestCaseError::fail(format!("contract {name}: {e}")))?;
            }
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
