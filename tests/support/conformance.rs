//! The verdict-versus-decoding report shared by the MySQL and SQLite conformance tests.

/// What the guard said about one (Rust type, column) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Compatible, no risk.
    Fits,
    /// Compatible, but decoding depends on the value.
    Risk,
    /// Incompatible.
    Mismatch,
}

/// One checked pair: the guard's verdict and what decoding a non-NULL row did.
pub struct Pair {
    /// The Rust field type, as written.
    pub rust: &'static str,
    /// The SQL column type, as written.
    pub column: &'static str,
    /// The guard's verdict.
    pub guard: Guard,
    /// The risk the guard reported with its verdict, if any.
    pub risk: Option<String>,
    /// What decoding a non-NULL row did: `Ok`, or the decode error.
    pub decoded: Result<(), String>,
}

/// Value-dependent pairs, listed by hand: `(Rust type, columns, reason)`.
pub type Risks = [(&'static str, &'static [&'static str], &'static str)];

/// Prints every risk and disagreement and fails unless the guard agrees with decoding on
/// every pair, the risks are exactly the listed ones (`expected_risks` of them, every
/// listed pair checked), and `expected_pairs` pairs were checked.
pub fn report(
    backend: &str,
    pairs: &[Pair],
    risks: &Risks,
    expected_pairs: usize,
    expected_risks: usize,
) {
    let mut disagreements = Vec::new();
    let mut risk_count = 0;
    for p in pairs {
        let listed = risks
            .iter()
            .any(|(r, cs, _)| *r == p.rust && cs.contains(&p.column));
        let agree = match p.guard {
            Guard::Fits => p.decoded.is_ok() && !listed,
            Guard::Mismatch => p.decoded.is_err() && !listed,
            Guard::Risk => listed,
        };
        if p.guard == Guard::Risk {
            risk_count += 1;
            println!(
                "risk   {:<55} {:<14} decode={:?} ({})",
                p.rust,
                p.column,
                p.decoded.as_ref().map_err(|e| short(e)),
                p.risk.as_deref().unwrap_or("")
            );
        }
        if !agree {
            disagreements.push(format!(
                "{:<55} {:<14} guard={:?} decode={:?}",
                p.rust,
                p.column,
                p.guard,
                p.decoded.as_ref().map_err(|e| short(e))
            ));
        }
    }
    for d in &disagreements {
        println!("DISAGREE {d}");
    }
    println!(
        "{backend} conformance: {} pairs checked, {risk_count} value-dependent (listed), {} disagreements",
        pairs.len(),
        disagreements.len()
    );
    assert!(
        disagreements.is_empty(),
        "{} disagreements",
        disagreements.len()
    );
    let unchecked: Vec<String> = risks
        .iter()
        .flat_map(|(r, cs, _)| cs.iter().map(move |c| (*r, *c)))
        .filter(|(r, c)| !pairs.iter().any(|p| p.rust == *r && p.column == *c))
        .map(|(r, c)| format!("{r} / {c}"))
        .collect();
    assert!(
        unchecked.is_empty(),
        "listed risks that match no checked pair: {unchecked:?}"
    );
    assert_eq!(
        (pairs.len(), risk_count),
        (expected_pairs, expected_risks),
        "(pairs, value-dependent pairs)"
    );
}

fn short(e: &str) -> String {
    e.chars().take(110).collect()
}

/// Introspects every column of the `conf` table in `db` through the backend, with a
/// contract built at run time that lists `columns` (names only: the type checks are built
/// per pair by the caller).
pub async fn introspect_all<DB: contract_sqlx::backend::Backend>(
    pool: &sqlx::Pool<DB>,
    db: &str,
    columns: &[(&str, &str, &str)],
) -> contract_sqlx::model::LiveTable {
    let mut contracts = contract_sqlx::check::ContractSet::<DB>::new();
    contracts.push_entry(contract_sqlx::check::ContractEntry {
        contract: contract_sqlx::model::TableContract {
            struct_name: "All".into(),
            schema: None,
            table: "conf".into(),
            columns: columns
                .iter()
                .map(|(c, _, _)| contract_sqlx::model::ColumnContract::new(*c, "?"))
                .collect(),
        },
        checks: Vec::new(),
    });
    let tables = DB::introspect(pool, &[db.to_owned()], &contracts)
        .await
        .expect("introspect");
    tables.into_iter().next().expect("table conf")
}
