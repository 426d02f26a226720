//! Offending values in serde's error text, quoted as JSON instead of with Rust's debug
//! escapes.
//!
//! serde quotes a string it did not expect with `{:?}` (`invalid type: string "a\u{1b}b",
//! expected i64`). A person reading a rejection knows the payload, which is JSON, so each
//! such value is given as the JSON string literal it came from (`string "a\u001bb"`):
//! `\u{…}` becomes `\uXXXX` (a surrogate pair above U+FFFF), `\0` becomes `\u0000`, `\'`
//! becomes `'`. The escapes both notations share (`\" \\ \n \r \t`) stay, and so does
//! every character Rust left as it is; a value without a debug-only escape is unchanged.

use std::borrow::Cow;
use std::fmt::Write as _;

/// How serde's `Unexpected::Str` starts.
const QUOTED: &str = "string \"";

/// `text` with every value quoted by serde (`string "…"`) in JSON notation.
pub(super) fn json_quoted(text: &str) -> Cow<'_, str> {
    if !text.contains(QUOTED) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(QUOTED) {
        let body = start + QUOTED.len();
        out.push_str(&rest[..body]);
        rest = requote(&rest[body..], &mut out);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Copies one debug-quoted value from the start of `body` up to and including its closing
/// quote into `out`, rewriting debug-only escapes; returns the text after it.
fn requote<'t>(body: &'t str, out: &mut String) -> &'t str {
    let mut rest = body;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            '"' => {
                out.push('"');
                return rest;
            }
            '\\' => {
                if let Some(after) = rest.strip_prefix('0') {
                    out.push_str("\\u0000");
                    rest = after;
                } else if let Some(after) = rest.strip_prefix('\'') {
                    out.push('\'');
                    rest = after;
                } else if let Some((code, after)) = unicode_escape(rest) {
                    push_json_escape(code, out);
                    rest = after;
                } else if let Some(next) = rest.chars().next() {
                    // `\" \\ \n \r \t`: the same in JSON.
                    out.push('\\');
                    out.push(next);
                    rest = &rest[next.len_utf8()..];
                } else {
                    out.push('\\');
                }
            }
            c => out.push(c),
        }
    }
    // No closing quote (a custom message that happens to say `string "`): all of it was
    // copied, escapes rewritten.
    rest
}

/// `u{1b}…` → (the character, the text after `}`).
fn unicode_escape(escape: &str) -> Option<(char, &str)> {
    let hex_and_rest = escape.strip_prefix("u{")?;
    let (hex, rest) = hex_and_rest.split_once('}')?;
    if hex.is_empty() || hex.len() > 6 {
        return None;
    }
    let code = u32::from_str_radix(hex, 16).ok()?;
    Some((char::from_u32(code)?, rest))
}

fn push_json_escape(c: char, out: &mut String) {
    let mut units = [0_u16; 2];
    for unit in c.encode_utf16(&mut units) {
        let _ = write!(out, "\\u{unit:04x}");
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::json_quoted;

    /// serde's own text for a string value.
    fn serde_text(value: &str) -> String {
        serde_json::from_str::<i64>(&serde_json::to_string(value).unwrap())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn debug_only_escapes_become_json_escapes() {
        for (value, quoted) in [
            ("a\u{1b}b", r#""a\u001bb""#),
            ("\0", r#""\u0000""#),
            ("\u{7f}\u{200b}", r#""\u007f\u200b""#),
            ("\u{e0001}", r#""\udb40\udc01""#),
            (
                "tab\tquote\"back\\slash\nend\r",
                r#""tab\tquote\"back\\slash\nend\r""#,
            ),
            ("it's é 🦀", r#""it's é 🦀""#),
            ("9.99", r#""9.99""#),
        ] {
            let text = serde_text(value);
            let expected = format!("invalid type: string {quoted}, expected i64");
            assert!(
                json_quoted(&text).starts_with(&expected),
                "{text} -> {}",
                json_quoted(&text)
            );
            // The quoted value reads back, as JSON, as the original string.
            let literal = &json_quoted(&text)["invalid type: string ".len()..];
            let literal = &literal[..literal.find(", expected").unwrap()];
            assert_eq!(serde_json::from_str::<String>(literal).unwrap(), value);
        }
    }

    #[test]
    fn text_without_a_quoted_value_is_left_alone() {
        for text in [
            "missing field `price` at line 1 column 9",
            r"unknown variant `a\u{1}`, expected `open`",
            "",
        ] {
            assert!(matches!(json_quoted(text), Cow::Borrowed(t) if t == text));
        }
        // A custom error that happens to say `string "` without closing it.
        assert_eq!(
            json_quoted(r#"custom: string "cut \u{1}"#),
            r#"custom: string "cut \u0001"#
        );
    }
}
