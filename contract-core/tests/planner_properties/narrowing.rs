//! An independent judge of PostgreSQL type changes: does `ALTER COLUMN … TYPE to USING
//! col::to` keep every value of a `from` column? Written from PostgreSQL's documented
//! casts, not from the planner's matrix.

use super::types::pg_family;

fn typmods(name: &str) -> Vec<u32> {
    name.split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inside, _)| {
            inside
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Why the change loses values, or `None` when every value survives.
pub fn narrows(from: &str, to: &str) -> Option<&'static str> {
    let (f, t) = (pg_family(from), pg_family(to));
    let (fm, tm) = (typmods(from), typmods(to));
    if f == t {
        return match f.as_str() {
            "numeric" => match (fm.as_slice(), tm.as_slice()) {
                (_, []) => None,
                ([], _) => Some("bounds an unbounded numeric"),
                ([_, s], [_, s2]) if s2 < s => Some("rounds away decimal places"),
                ([p, s], [p2, s2]) if p2 - s2 < p - s => Some("drops integer digits"),
                _ => None,
            },
            _ => match (fm.first(), tm.first()) {
                (_, None) => None,
                (None, Some(_)) => Some("bounds an unbounded type"),
                (Some(a), Some(b)) if b < a => Some("truncates to a shorter length"),
                _ => None,
            },
        };
    }
    if t == "text" && f != "bytea" {
        // Every type has a text form that reads back as the same value (arrays too).
        return None;
    }
    let element = |s: &str| s.trim_end_matches("[]").to_owned();
    if f.ends_with("[]") != t.ends_with("[]") {
        return Some("changes array-ness");
    }
    let (fe, te) = (element(&f), element(&t));
    let widening = matches!(
        (fe.as_str(), te.as_str()),
        ("int2", "int4" | "int8" | "numeric" | "float8")
            | ("int4", "int8" | "numeric" | "float8")
            | ("int8", "numeric")
            | ("float4", "float8")
            | ("varchar" | "bpchar", "text")
            | ("json", "jsonb")
            | ("jsonb", "json")
            | ("date", "timestamp" | "timestamptz")
            | ("timestamp", "timestamptz")
            | ("timestamptz", "timestamp")
    ) || (te == "text" && fe != "bytea")
        || (te == "varchar" && tm.is_empty() && matches!(fe.as_str(), "text" | "bpchar"));
    if widening {
        None
    } else {
        Some("is not known to keep every value")
    }
}
