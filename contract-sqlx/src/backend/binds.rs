//! Bind-parameter lists for the `?`-style dialects (MySQL, SQLite).

/// `?, ?, ?` (`n` ≥ 1), or `NULL` for an empty list so `IN (NULL)` matches nothing.
pub(crate) fn placeholders(n: usize) -> String {
    if n == 0 {
        "NULL".to_owned()
    } else {
        vec!["?"; n].join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn one_placeholder_per_value_and_null_for_none() {
        assert_eq!(placeholders(3), "?, ?, ?");
        assert_eq!(placeholders(1), "?");
        assert_eq!(placeholders(0), "NULL");
    }
}
