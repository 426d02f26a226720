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

#[cfg(test)]
mod tests {
    use super::*;

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
