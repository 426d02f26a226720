//! Cross-crate tests; see the `[[test]]` targets.
