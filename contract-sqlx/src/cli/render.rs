//! Output: one JSON document on stdout with `--json`, text through `Display` otherwise;
//! times as RFC 3339 UTC in both.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Prints `value` as JSON or as text.
pub(crate) fn emit<T: Serialize + fmt::Display>(json: bool, value: &T) {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(text) => println!("{text}"),
            // Every output type serialises; say so loudly rather than print nothing.
            Err(error) => eprintln!("contract: cannot write JSON output: {error}"),
        }
    } else {
        println!("{value}");
    }
}

/// RFC 3339 UTC, to the second.
pub(crate) fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// `3m ago`, `2h 5m ago`, `just now`.
pub(crate) fn age(at: SystemTime) -> String {
    let elapsed = SystemTime::now()
        .duration_since(at)
        .unwrap_or(Duration::ZERO);
    if elapsed < Duration::from_secs(1) {
        return "just now".into();
    }
    let secs = elapsed.as_secs();
    let rounded = if secs >= 3600 {
        Duration::from_secs(secs - secs % 60)
    } else {
        Duration::from_secs(secs)
    };
    format!("{} ago", humantime::format_duration(rounded))
}

/// `a, b, c` (at most `max`, then `and N more`).
pub(crate) fn list<T: fmt::Display>(items: &[T], max: usize) -> String {
    let mut text = items
        .iter()
        .take(max)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        text.push_str(&format!(" and {} more", items.len() - max));
    }
    text
}

/// Serialises a `SystemTime` as RFC 3339 UTC text (microseconds).
pub(crate) mod rfc3339 {
    use std::time::SystemTime;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_micros(*at))
    }

    /// The same for an optional time.
    pub mod option {
        use std::time::SystemTime;

        use serde::Serializer;

        #[allow(clippy::ref_option)]
        pub fn serialize<S: Serializer>(at: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => s.collect_str(&humantime::format_rfc3339_micros(*at)),
                None => s.serialize_none(),
            }
        }
    }
}
