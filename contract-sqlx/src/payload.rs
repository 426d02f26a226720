//! Payload contracts: checking queued JSON with the consumer's own serde type.
//!
//! The check is a real deserialisation of the consumer's type, not a generated schema, so
//! it follows custom `Deserialize` impls and every serde attribute exactly. The parsed
//! value is returned for the handler: a valid message is parsed once, by plain
//! `serde_json`, so the check costs about what the handler's own parse would. A rejected
//! message is parsed a second time with its field path tracked, and gets a [`Rejection`]
//! naming the reason and the failing field path (`items[2].price`), ready to be stored by
//! [`crate::quarantine`].
//!
//! ```
//! use contract_sqlx::payload::{PayloadContract, RejectReason};
//!
//! #[derive(serde::Deserialize)]
//! struct Order { items: Vec<Item> }
//! #[derive(serde::Deserialize)]
//! struct Item { price: i64 }
//!
//! let contract = PayloadContract::<Order>::named("order").with_version("2");
//! assert!(contract.check(br#"{"items": [{"price": 3}]}"#).is_ok());
//! let rejection = contract.check(br#"{"items": [{"price": "3"}]}"#).err().unwrap();
//! assert_eq!(rejection.reason, RejectReason::ContractMismatch);
//! assert_eq!(rejection.path.as_deref(), Some("items[0].price"));
//! ```

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::error::Category;

mod quoted;

/// The default size limit of a payload: 1 MiB.
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;

/// The longest serde error text kept in a [`Rejection`] message. serde quotes the
/// offending value (`invalid type: string "…"`), which may be megabytes long.
const MAX_DETAIL_CHARS: usize = 300;

/// The longest field path kept in a [`Rejection`]: a path names map keys, and a key may be
/// megabytes long. A rejection's texts travel as dead-letter headers (a RabbitMQ header
/// frame above the server's `frame_max` closes the whole connection) and into `TEXT`
/// columns.
const MAX_PATH_CHARS: usize = 300;

/// Why a payload was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectReason {
    /// Larger than the contract's `max_bytes`; not parsed at all.
    TooLarge,
    /// Not valid UTF-8, so not JSON.
    NotUtf8,
    /// Not valid JSON (syntax error, truncated document, trailing characters).
    InvalidJson,
    /// Valid JSON that the consumer's type rejects: wrong type, missing field, unknown
    /// enum variant, a custom `Deserialize` error.
    ContractMismatch,
}

impl RejectReason {
    /// The snake_case name, as serialised and as stored in the quarantine table.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::TooLarge => "too_large",
            RejectReason::NotUtf8 => "not_utf8",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::ContractMismatch => "contract_mismatch",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A payload the contract rejected: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct Rejection {
    /// The kind of failure.
    pub reason: RejectReason,
    /// A sentence that says what is wrong and in which field, for logs and operators.
    pub message: String,
    /// The failing field path (`items[2].price`); `None` at the document root or when
    /// the payload was not parsed.
    pub path: Option<String>,
    /// Whether the raw payload is known to be a valid JSON document (only for
    /// [`RejectReason::ContractMismatch`]; a too-large payload is not parsed, so `false`).
    pub raw_is_json: bool,
}

/// The consumer's payload type as a contract: a name, an optional version, a size limit.
///
/// `PayloadContract` is `Send + Sync` and cheap to clone whatever `T` is.
pub struct PayloadContract<T> {
    name: String,
    version: Option<String>,
    max_bytes: usize,
    fingerprint: String,
    _type: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> PayloadContract<T> {
    /// A contract named after the type (`std::any::type_name::<T>()`), unversioned,
    /// with the default size limit ([`DEFAULT_MAX_BYTES`]).
    #[must_use]
    pub fn new() -> Self {
        Self::named(std::any::type_name::<T>())
    }

    /// A contract with an explicit name, which stays stable when the type is renamed or
    /// moved (the default name is the type path).
    #[must_use]
    pub fn named(name: impl Into<String>) -> Self {
        let name = name.into();
        let fingerprint = fingerprint_of(&name, None);
        Self {
            name,
            version: None,
            max_bytes: DEFAULT_MAX_BYTES,
            fingerprint,
            _type: PhantomData,
        }
    }

    /// Sets the contract version (part of the fingerprint).
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self.fingerprint = fingerprint_of(&self.name, self.version.as_deref());
        self
    }

    /// Sets the size limit in bytes: larger payloads are rejected without being parsed.
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Checks one raw payload and returns the parsed value for the handler.
    ///
    /// For a payload already held as text (a `TEXT` or `JSON` column that sqlx decoded into
    /// a `String`), [`PayloadContract::check_str`] skips the UTF-8 validation that bytes
    /// need.
    ///
    /// # Errors
    ///
    /// A [`Rejection`] saying why and where: too large (not parsed), not UTF-8, not JSON,
    /// or JSON the consumer's type does not accept (with the failing field path).
    pub fn check(&self, raw: &[u8]) -> Result<T, Rejection> {
        self.within_limit(raw.len())?;
        // simdutf8 is about twice as fast as std on short payloads but says only
        // "invalid"; std says where, for the message.
        let text = simdutf8::basic::from_utf8(raw)
            .or_else(|_| std::str::from_utf8(raw))
            .map_err(|e| Rejection {
                reason: RejectReason::NotUtf8,
                message: format!("payload is not valid UTF-8 ({e}), so it cannot be JSON"),
                path: None,
                raw_is_json: false,
            })?;
        self.parse(text)
    }

    /// [`PayloadContract::check`] for a payload that is already text: the same verdict
    /// and the same rejections, without validating UTF-8 again (a `&str` is valid UTF-8),
    /// so it costs what the handler's own `serde_json::from_str` would.
    ///
    /// ```
    /// use contract_sqlx::payload::{PayloadContract, RejectReason};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Click { user_id: i64 }
    ///
    /// let contract = PayloadContract::<Click>::named("click");
    /// // What a table queue's `TEXT` payload column decodes to.
    /// let payload: String = r#"{"user_id": "7"}"#.to_owned();
    /// let rejection = contract.check_str(&payload).err().unwrap();
    /// assert_eq!(rejection.reason, RejectReason::ContractMismatch);
    /// assert_eq!(rejection.path.as_deref(), Some("user_id"));
    /// ```
    ///
    /// # Errors
    ///
    /// As [`PayloadContract::check`], except that text is never [`RejectReason::NotUtf8`].
    pub fn check_str(&self, text: &str) -> Result<T, Rejection> {
        self.within_limit(text.len())?;
        self.parse(text)
    }

    /// Rejects a payload over the size limit before anything reads it.
    fn within_limit(&self, len: usize) -> Result<(), Rejection> {
        if len <= self.max_bytes {
            return Ok(());
        }
        Err(Rejection {
            reason: RejectReason::TooLarge,
            message: format!(
                "payload is {len} bytes, over the {}-byte limit of contract `{}`; it was not parsed",
                self.max_bytes, self.name
            ),
            path: None,
            raw_is_json: false,
        })
    }

    /// Fast path: one plain parse. Tracking the field path costs about as much again (an
    /// allocation per map key), so it is paid only by payloads that are rejected.
    #[inline]
    fn parse(&self, text: &str) -> Result<T, Rejection> {
        match serde_json::from_str(text) {
            Ok(value) => Ok(value),
            Err(_) => self.check_tracking_path(text),
        }
    }

    /// The rejection path: parses `text` again with the field path tracked and classifies
    /// the error. The tracking deserializer only wraps the plain one, so it fails where the
    /// fast path failed, with the same error; should a stateful `Deserialize` impl accept
    /// the second time, its value is returned.
    #[cold]
    #[inline(never)]
    fn check_tracking_path(&self, text: &str) -> Result<T, Rejection> {
        let mut de = serde_json::Deserializer::from_str(text);
        let value =
            serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| self.reject(text, &e))?;
        de.end().map_err(|e| invalid_json(&e, None))?;
        Ok(value)
    }

    /// Classifies a deserialisation error. A data error may stop the parse before a later
    /// syntax error, so the document's syntax is verified (rejection path only) before
    /// calling it a contract mismatch.
    fn reject(
        &self,
        text: &str,
        error: &serde_path_to_error::Error<serde_json::Error>,
    ) -> Rejection {
        let path = path_of(error.path());
        let inner = error.inner();
        match inner.classify() {
            Category::Data => match serde_json::from_str::<IgnoredAny>(text) {
                Err(syntax) => invalid_json(&syntax, None),
                Ok(_) => Rejection {
                    reason: RejectReason::ContractMismatch,
                    message: match &path {
                        Some(p) => format!(
                            "payload does not match contract `{}` at field `{p}`: {}",
                            self.name,
                            detail(inner)
                        ),
                        None => format!(
                            "payload does not match contract `{}`: {}",
                            self.name,
                            detail(inner)
                        ),
                    },
                    path,
                    raw_is_json: true,
                },
            },
            Category::Syntax | Category::Eof | Category::Io => invalid_json(inner, path),
        }
    }
}

impl<T> PayloadContract<T> {
    /// The contract name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The contract version, if set.
    #[must_use]
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The size limit in bytes.
    #[must_use]
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// A stable hex digest of the name and version: identical on every machine and run,
    /// stored with every quarantined message.
    #[must_use]
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

impl<T: DeserializeOwned> Default for PayloadContract<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for PayloadContract<T> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            version: self.version.clone(),
            max_bytes: self.max_bytes,
            fingerprint: self.fingerprint.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for PayloadContract<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PayloadContract")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("max_bytes", &self.max_bytes)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// Unambiguous: the name is length-prefixed and the version tagged, so no other
/// name/version pair (nor `None` versus `Some("")`) gives the same input.
fn fingerprint_of(name: &str, version: Option<&str>) -> String {
    let version = version.map_or_else(|| "-".to_owned(), |v| format!("+{v}"));
    let input = format!("payload-contract/1:{}:{name}:{version}", name.len());
    contract_core::digest_hex(input.as_bytes())
}

fn invalid_json(error: &serde_json::Error, path: Option<String>) -> Rejection {
    let message = match &path {
        Some(p) => format!(
            "payload is not valid JSON (in field `{p}`): {}",
            detail(error)
        ),
        None => format!("payload is not valid JSON: {}", detail(error)),
    };
    Rejection {
        reason: RejectReason::InvalidJson,
        message,
        path,
        raw_is_json: false,
    }
}

/// The path as `items[2].price`; `None` at the root (displayed as `.`). Segments serde
/// could not name (shown as `?`, for example inside a truncated document) are dropped
/// from the end.
fn path_of(path: &serde_path_to_error::Path) -> Option<String> {
    let shown = path.to_string();
    let mut known = shown.as_str();
    while let Some(rest) = known.strip_suffix('?') {
        known = rest.strip_suffix('.').unwrap_or(rest);
    }
    (!known.is_empty() && known != ".").then(|| printable(known, MAX_PATH_CHARS).into_owned())
}

/// The serde error text, with offending values quoted as JSON (see [`quoted`]), capped at
/// [`MAX_DETAIL_CHARS`] characters.
fn detail(error: &serde_json::Error) -> String {
    printable(&quoted::json_quoted(&error.to_string()), MAX_DETAIL_CHARS).into_owned()
}

/// `text` with every control character written as its JSON escape (`\u0000`; serde names
/// an unknown variant or field, and a map key in a path, as the payload spelt it, and
/// PostgreSQL's `text` refuses NUL, a NATS header line break), capped at `max_chars`
/// characters. Borrowed when there is nothing to change. Also the cap of dead-letter
/// header texts.
pub(crate) fn printable(text: &str, max_chars: usize) -> Cow<'_, str> {
    let long = text.char_indices().nth(max_chars).map(|(cut, _)| cut);
    if long.is_none() && !text.contains(char::is_control) {
        return Cow::Borrowed(text);
    }
    let kept = &text[..long.unwrap_or(text.len())];
    let mut out = String::with_capacity(kept.len() + 16);
    for c in kept.chars() {
        if c.is_control() {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    if long.is_some() {
        out.push_str("… (truncated)");
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod fast_path_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    enum Shade {
        Light,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Counts {
        m: std::collections::HashMap<String, i64>,
    }

    /// serde names an unknown variant, and a path names a map key, as the payload spelt
    /// them: a NUL or a line break there went raw into the quarantine's `text` columns
    /// (PostgreSQL refuses NUL: the write failed, and the tenant's batch with it) and into
    /// dead-letter headers; a key of 70 KB made a header frame above RabbitMQ's
    /// `frame_max`, which closes the connection.
    #[test]
    fn a_rejection_s_texts_hold_no_control_character_and_stay_short() {
        let variant = PayloadContract::<Shade>::named("shade")
            .check(br#""da\u0000rk\r\n""#)
            .expect_err("unknown variant");
        assert_eq!(variant.reason, RejectReason::ContractMismatch);
        assert!(
            !variant.message.contains(['\0', '\r', '\n']),
            "{}",
            variant.message
        );
        assert!(
            variant.message.contains("da\\u0000rk\\u000d\\u000a"),
            "{}",
            variant.message
        );

        let key = format!("k\\u0000{}", "x".repeat(70_000));
        let long = PayloadContract::<Counts>::named("counts")
            .with_max_bytes(1 << 20)
            .check(format!(r#"{{"m": {{"{key}": "not a number"}}}}"#).as_bytes())
            .expect_err("a string where a number goes");
        assert_eq!(long.reason, RejectReason::ContractMismatch);
        let path = long.path.as_deref().expect("a path into the map");
        assert!(path.starts_with("m.k\\u0000xxx"), "{path}");
        assert!(path.chars().count() < MAX_PATH_CHARS + 20, "{}", path.len());
        assert!(!path.contains('\0'));
        assert!(long.message.len() < 2_000, "{}", long.message.len());
    }

    #[test]
    fn fingerprint_depends_on_name_and_version_only() {
        let a = PayloadContract::<u8>::named("x").with_version("1");
        let b = PayloadContract::<String>::named("x").with_version("1");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(
            PayloadContract::<u8>::named("x").fingerprint(),
            PayloadContract::<u8>::named("x")
                .with_version("")
                .fingerprint()
        );
        assert_eq!(a.fingerprint().len(), 64);
    }

    #[test]
    fn detail_truncates_long_serde_messages_at_a_char_boundary() {
        let long = format!("\"{}\"", "é".repeat(5000));
        let e = PayloadContract::<i64>::named("n")
            .check(long.as_bytes())
            .unwrap_err();
        assert!(e.message.chars().count() < 500, "{}", e.message);
        assert!(e.message.ends_with("(truncated)"));
    }
}
