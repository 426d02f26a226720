//! SQL string literals for values sent inside a multi-statement message, where PostgreSQL's
//! simple query protocol has no bound parameters.

/// `value` as an escape-string literal (`E'…'`): a backslash is doubled and a quote is
/// doubled, so the literal reads back as `value` whatever `standard_conforming_strings`
/// and `backslash_quote` are set to. `None` when `value` holds a NUL character, which no
/// PostgreSQL text can.
///
/// `E'…'` is used rather than a plain `'…'`: under `standard_conforming_strings = off` a
/// plain literal reads backslashes as escapes, and the same text would read back
/// differently on a server configured that way.
pub(super) fn quote(value: &str) -> Option<String> {
    if value.contains('\0') {
        return None;
    }
    let mut literal = String::with_capacity(value.len() + 3);
    literal.push_str("E'");
    for c in value.chars() {
        match c {
            '\\' => literal.push_str("\\\\"),
            '\'' => literal.push_str("''"),
            other => literal.push(other),
        }
    }
    literal.push('\'');
    Some(literal)
}

/// [`quote`] of `value`, or `NULL`.
pub(super) fn quote_optional(value: Option<&str>) -> Option<String> {
    value.map_or_else(|| Some("NULL".to_owned()), quote)
}

#[cfg(test)]
mod tests {
    use super::{quote, quote_optional};

    #[test]
    fn quotes_and_backslashes_are_doubled() {
        assert_eq!(quote("plain").as_deref(), Some("E'plain'"));
        assert_eq!(quote(r"it's \d").as_deref(), Some(r"E'it''s \\d'"));
        assert_eq!(quote(r"\'").as_deref(), Some(r"E'\\'''"));
        assert_eq!(quote("tab\tand é").as_deref(), Some("E'tab\tand é'"));
    }

    #[test]
    fn nul_is_refused_and_none_is_null() {
        assert_eq!(quote("a\0b"), None);
        assert_eq!(quote_optional(None).as_deref(), Some("NULL"));
        assert_eq!(quote_optional(Some("x")).as_deref(), Some("E'x'"));
    }
}
