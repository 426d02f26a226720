//! What goes into the quarantine's columns besides the raw bytes: the best-effort parsed
//! copy and text every backend's text columns accept.

use std::borrow::Cow;

use crate::payload::Rejection;

/// The payload as JSON text for the `payload` column, or `None`: only a JSON document
/// that every backend's JSON type accepts. PostgreSQL's `jsonb` refuses `\u0000` and
/// lone surrogate escapes, MariaDB's `JSON_VALID` refuses lone surrogates. Anything else
/// a JSON column still refuses makes the move retry without any parsed copy.
pub(crate) fn parsed_copy<'a>(raw: &'a [u8], rejection: &Rejection) -> Option<&'a str> {
    if !rejection.raw_is_json {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?;
    escapes_are_storable(text).then_some(text)
}

/// Whether every `\u` escape of a JSON text is neither `\u0000` nor part of a broken
/// surrogate pair. The text is known to be valid JSON, so a backslash always starts an
/// escape of one character (or `u` and four hex digits).
fn escapes_are_storable(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    // A high surrogate was just read: the next token must be a low surrogate escape.
    let mut want_low = false;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            if want_low {
                return false;
            }
            i += 1;
            continue;
        }
        let Some(&kind) = bytes.get(i + 1) else {
            return false;
        };
        if kind != b'u' {
            if want_low {
                return false;
            }
            i += 2;
            continue;
        }
        let Some(unit) = bytes
            .get(i + 2..i + 6)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
        else {
            return false;
        };
        match unit {
            0 => return false,
            0xD800..=0xDBFF if !want_low => want_low = true,
            0xDC00..=0xDFFF if want_low => want_low = false,
            0xD800..=0xDFFF => return false,
            _ if want_low => return false,
            _ => {}
        }
        i += 6;
    }
    !want_low
}

/// Text for a `text`/`TEXT` column: PostgreSQL refuses the NUL character there (a
/// rejection message may quote a payload's `\u0000`), so it is written as `\u0000`.
pub(crate) fn storable_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\\u0000"))
    } else {
        Cow::Borrowed(text)
    }
}

/// The longest contract name a quarantine table stores, in characters (MySQL's column is
/// `VARCHAR(255)`; the same cut everywhere keeps the backends alike).
pub(crate) const MAX_CONTRACT_NAME: usize = 255;

/// A contract name as a quarantine row stores it: [`storable_text`], and one longer than
/// [`MAX_CONTRACT_NAME`] characters cut to that many, the last one `…`. A name that long is
/// a type's full path ([`crate::payload::PayloadContract::new`]); on MySQL the whole name
/// failed every move of a batch with poison ("Data too long"), which stalled the tenant.
/// The fingerprint beside it still tells contracts apart.
pub(crate) fn storable_contract_name(name: &str) -> Cow<'_, str> {
    let text = storable_text(name);
    match text.char_indices().nth(MAX_CONTRACT_NAME - 1) {
        Some((cut, _)) if text.chars().count() > MAX_CONTRACT_NAME => {
            Cow::Owned(format!("{}…", &text[..cut]))
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contract_name_is_cut_to_its_column_and_says_so() {
        let short = "job";
        assert!(matches!(
            storable_contract_name(short),
            Cow::Borrowed("job")
        ));
        let exact = "é".repeat(MAX_CONTRACT_NAME);
        assert_eq!(storable_contract_name(&exact), exact);
        let long = format!("{exact}x");
        let stored = storable_contract_name(&long);
        assert_eq!(stored.chars().count(), MAX_CONTRACT_NAME);
        assert_eq!(stored, format!("{}…", "é".repeat(MAX_CONTRACT_NAME - 1)));
        // The NUL escape counts as what is stored.
        let with_nul = format!("{}\0", "a".repeat(MAX_CONTRACT_NAME - 2));
        assert_eq!(
            storable_contract_name(&with_nul).chars().count(),
            MAX_CONTRACT_NAME
        );
    }

    #[test]
    fn escapes_that_json_columns_refuse_are_found() {
        for refused in [
            r#"{"a": "\u0000"}"#,
            r#"{"a": "\ud800"}"#,
            r#"{"a": "\ud800x"}"#,
            r#"{"a": "\udc00"}"#,
            r#"{"a": "\ud800\u0041"}"#,
            r#"{"a": "\ud800\n"}"#,
            r#"["\ud800"]"#,
        ] {
            assert!(!escapes_are_storable(refused), "{refused}");
        }
        for kept in [
            r#"{"a": "\ud83d\ude00"}"#,
            r#"{"a": "\\u0000"}"#,
            r#"{"a": "\\\ud83d\ude00", "b": "\u00e9\n\"\\"}"#,
            r#"{"a": 1}"#,
            r#"{"é": "ü"}"#,
        ] {
            assert!(escapes_are_storable(kept), "{kept}");
        }
    }

    #[test]
    fn nul_characters_become_escapes() {
        assert_eq!(storable_text("a\0b"), "a\\u0000b");
        assert!(matches!(storable_text("ab"), Cow::Borrowed("ab")));
    }
}
