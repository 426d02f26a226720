//! The pure drift `diff`: one contract against one tenant's live table.

use crate::drift::{DriftKind, Finding, Severity};
use crate::ident::Dialect;
use crate::live::{LiveColumn, LiveTable};
use crate::model::{ColumnContract, TableContract};

/// What the type oracle says about one (contracted column, live column) pair.
///
/// The verdict itself is sqlx's (`compatible()` on the type info the driver reports for
/// the live column, `ARCHITECTURE.md` D1); the oracle adds the dialect rules `compatible()` lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeFit {
    /// sqlx's verdict: a non-NULL value of the live type decodes into the field type.
    pub compatible: bool,
    /// The SQL type sqlx maps the field type to (for example `INT8`).
    pub expected_sql_type: String,
    /// A value-dependent hazard found by the dialect rules (MySQL integer width, SQLite
    /// affinity), described for the report.
    pub risk: Option<String>,
}

/// Judges live column types against contracted columns. Implemented per backend in
/// `contract-sqlx`; tests implement it with plain rules.
pub trait TypeOracle {
    /// The fit of `live` for `column` of `table`.
    fn fit(&self, table: &TableContract, column: &ColumnContract, live: &LiveColumn) -> TypeFit;
}

/// Prefix of an enum finding's `actual` when the live type has labels the Rust enum lacks.
pub const UNKNOWN_LABELS: &str = "labels unknown to the Rust enum: ";
/// Prefix of an enum finding's `actual` when the live type lacks labels of the Rust enum.
pub const MISSING_LABELS: &str = "missing labels: ";

/// `(expected labels missing in the live type, live labels the contract does not know)`,
/// each in its list's order.
#[must_use]
pub fn enum_label_drift<'a>(
    expected: &'a [String],
    actual: &'a [String],
) -> (Vec<&'a str>, Vec<&'a str>) {
    let missing = expected
        .iter()
        .filter(|l| !actual.contains(l))
        .map(String::as_str)
        .collect();
    let unknown = actual
        .iter()
        .filter(|l| !expected.contains(l))
        .map(String::as_str)
        .collect();
    (missing, unknown)
}

/// Where the diff runs: which tenant, which schema the table was looked for in, and the
/// dialect whose name rules apply ([`Dialect::same_column`], [`Dialect::same_table`]).
#[derive(Debug, Clone, Copy)]
pub struct DiffScope<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// The schema (the tenant's, or the contract's fixed schema).
    pub schema: &'a str,
    /// The dialect of the live table.
    pub dialect: Dialect,
}

/// Compares one contract with one live table (`None`: the table does not exist).
///
/// Only what the consumer reads matters: extra columns are never findings (`ARCHITECTURE.md` D2).
/// Findings come out in contract column order, so the result is deterministic. A column
/// missing under its name but present under its `renamed_from` name is reported missing,
/// and that column's type and nullability are judged as the renamed column's.
///
/// Columns are matched as the dialect resolves names: on SQLite and MySQL a column
/// declared `User_Id` is the contract's `user_id` (adding it would fail), yet still a
/// `missing_column` finding, since rows name it `User_Id` and sqlx's `FromRow` finds
/// columns by exact name; its type and nullability are judged as usual.
#[must_use]
pub fn diff(
    scope: DiffScope<'_>,
    contract: &TableContract,
    live: Option<&LiveTable>,
    oracle: &dyn TypeOracle,
) -> Vec<Finding> {
    let at = At { scope, contract };
    let finding = |column: Option<&str>, kind, severity, expected: String, actual: String| {
        at.finding(column, kind, severity, expected, actual)
    };
    let Some(live) = live else {
        let columns: Vec<&str> = contract.columns.iter().map(|c| c.name.as_str()).collect();
        return vec![finding(
            None,
            DriftKind::MissingTable,
            Severity::Breaks,
            format!("table with columns {}", columns.join(", ")),
            "absent".into(),
        )];
    };
    let mut findings = Vec::new();
    for column in &contract.columns {
        let (live_column, renamed) = match live.column_in(scope.dialect, &column.name) {
            Some(live_column) => (live_column, false),
            None if column.optional => continue,
            None => {
                let expected = match &column.sql_type {
                    Some(sql_type) => format!("{sql_type} ({})", column.rust_type),
                    None => column.rust_type.clone(),
                };
                findings.push(finding(
                    Some(&column.name),
                    DriftKind::MissingColumn,
                    Severity::Breaks,
                    expected,
                    "absent".into(),
                ));
                // A column still under its declared former name is judged as the column
                // the remediation renames it to: its type and nullability show now, not
                // only after the rename.
                match column
                    .renamed_from
                    .as_deref()
                    .and_then(|old| live.column_in(scope.dialect, old))
                {
                    Some(old) => (old, true),
                    None => continue,
                }
            }
        };
        if !renamed && live_column.name != column.name {
            findings.push(finding(
                Some(&column.name),
                DriftKind::MissingColumn,
                // An optional field silently reads its default instead of the value.
                if column.optional {
                    Severity::AtRisk
                } else {
                    Severity::Breaks
                },
                format!("a column named `{}`", column.name),
                case_only(scope.dialect, &live_column.name, &column.name),
            ));
        }
        let fit = oracle.fit(contract, column, live_column);
        // Built only when a finding needs it: this loop runs for every column of the fleet.
        let expected = || {
            format!(
                "{} ({})",
                fit.expected_sql_type.to_lowercase(),
                column.rust_type
            )
        };
        if !fit.compatible {
            findings.push(finding(
                Some(&column.name),
                DriftKind::TypeMismatch,
                Severity::Breaks,
                expected(),
                live_column.data_type.clone(),
            ));
            continue;
        }
        if let Some(risk) = fit.risk {
            findings.push(finding(
                Some(&column.name),
                DriftKind::Width,
                Severity::AtRisk,
                expected(),
                risk,
            ));
        }
        if live_column.nullable && !column.nullable {
            findings.push(finding(
                Some(&column.name),
                DriftKind::Nullability,
                Severity::AtRisk,
                format!("NOT NULL ({} is not an Option)", column.rust_type),
                "nullable".into(),
            ));
        }
        if let (Some(expected), Some(actual)) = (&column.enum_labels, &live_column.enum_labels) {
            let (missing, unknown) = enum_label_drift(expected, actual);
            let labels = |l: &[&str]| l.join(", ");
            if !unknown.is_empty() {
                // Rows holding these labels fail to decode into the Rust enum.
                findings.push(finding(
                    Some(&column.name),
                    DriftKind::EnumLabels,
                    Severity::AtRisk,
                    format!("labels {}", expected.join(", ")),
                    format!("{UNKNOWN_LABELS}{}", labels(&unknown)),
                ));
            }
            if !missing.is_empty() {
                // Writing these variants fails; reading is unaffected.
                findings.push(finding(
                    Some(&column.name),
                    DriftKind::EnumLabels,
                    Severity::AtRisk,
                    format!("labels {}", expected.join(", ")),
                    format!("{MISSING_LABELS}{}", labels(&missing)),
                ));
            }
        }
    }
    findings.extend(key_findings(&at, live));
    findings
}

/// The `actual` of a column whose name differs from the field's only in case.
fn case_only(dialect: Dialect, live: &str, field: &str) -> String {
    let rows = match dialect {
        // SQLite names a result column as declared, even for `SELECT user_id`.
        Dialect::Sqlite => "rows name it",
        Dialect::MySql | Dialect::Postgres => "`SELECT *` rows name it",
    };
    format!(
        "`{live}` (only the case differs: {rows} `{live}`, and sqlx finds `{field}` by exact name)"
    )
}

/// Where findings are made: builds them with the scope and contract filled in.
struct At<'a> {
    scope: DiffScope<'a>,
    contract: &'a TableContract,
}

impl At<'_> {
    fn finding(
        &self,
        column: Option<&str>,
        kind: DriftKind,
        severity: Severity,
        expected: String,
        actual: String,
    ) -> Finding {
        Finding {
            tenant: self.scope.tenant.to_owned(),
            schema: self.scope.schema.to_owned(),
            table: self.contract.table.clone(),
            column: column.map(str::to_owned),
            kind,
            severity,
            expected,
            actual,
            contract: self.contract.struct_name.clone(),
        }
    }
}

fn key_findings(at: &At<'_>, live: &LiveTable) -> Vec<Finding> {
    let contract = at.contract;
    let finding = |column: Option<&str>, kind, severity, expected: String, actual: String| {
        at.finding(column, kind, severity, expected, actual)
    };
    let dialect = at.scope.dialect;
    let mut findings = Vec::new();
    let expected_pk = contract.primary_key();
    let same_pk = expected_pk.len() == live.primary_key.len()
        && expected_pk
            .iter()
            .zip(&live.primary_key)
            .all(|(e, l)| dialect.same_column(e, l));
    if !expected_pk.is_empty() && !same_pk {
        let actual = if live.primary_key.is_empty() {
            "none".to_owned()
        } else {
            live.primary_key.join(", ")
        };
        findings.push(finding(
            None,
            DriftKind::PrimaryKey,
            Severity::Info,
            expected_pk.join(", "),
            actual,
        ));
    }
    for (column, reference) in contract.foreign_keys() {
        let ref_schema = reference.schema.as_deref().unwrap_or(&live.schema);
        let present = live.foreign_keys.iter().any(|fk| {
            dialect.same_column(&fk.column, column)
                && fk.ref_schema == ref_schema
                && dialect.same_table(&fk.ref_table, &reference.table)
                && dialect.same_column(&fk.ref_column, &reference.column)
        });
        if !present && live.column_in(dialect, column).is_some() {
            findings.push(finding(
                Some(column),
                DriftKind::ForeignKey,
                Severity::Info,
                format!(
                    "references {ref_schema}.{}({})",
                    reference.table, reference.column
                ),
                "no such foreign key".into(),
            ));
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Reference;

    /// Same-name types fit: enough to exercise the structural rules.
    struct SameName;
    impl TypeOracle for SameName {
        fn fit(&self, _: &TableContract, column: &ColumnContract, live: &LiveColumn) -> TypeFit {
            let expected = column.sql_type.clone().unwrap_or_default();
            TypeFit {
                compatible: expected == live.type_key,
                expected_sql_type: expected,
                risk: None,
            }
        }
    }

    fn col(name: &str, sql: &str) -> ColumnContract {
        ColumnContract {
            sql_type: Some(sql.into()),
            ..ColumnContract::new(name, "T")
        }
    }

    fn contract(columns: Vec<ColumnContract>) -> TableContract {
        TableContract {
            struct_name: "Event".into(),
            schema: None,
            table: "events".into(),
            columns,
        }
    }

    const SCOPE: DiffScope<'static> = DiffScope {
        tenant: "tenant_1",
        schema: "tenant_1",
        dialect: Dialect::Postgres,
    };

    #[test]
    fn diff_reports_missing_table_once() {
        let f = diff(SCOPE, &contract(vec![col("id", "int8")]), None, &SameName);
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].kind, f[0].severity),
            (DriftKind::MissingTable, Severity::Breaks)
        );
        assert_eq!(f[0].column, None);
    }

    #[test]
    fn diff_reports_missing_column_unless_optional() {
        let mut optional = col("b", "int8");
        optional.optional = true;
        let live = LiveTable::new("tenant_1", "events").with_column(LiveColumn::new("x", "int8"));
        let f = diff(
            SCOPE,
            &contract(vec![col("a", "int8"), optional]),
            Some(&live),
            &SameName,
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].column.as_deref(), Some("a"));
        assert_eq!(
            (f[0].kind, f[0].severity),
            (DriftKind::MissingColumn, Severity::Breaks)
        );
        assert_eq!(f[0].actual, "absent");
    }

    #[test]
    fn diff_ignores_extra_columns() {
        let live = LiveTable::new("tenant_1", "events")
            .with_column(LiveColumn::new("id", "int8").not_null())
            .with_column(LiveColumn::new("extra", "text"));
        assert!(
            diff(
                SCOPE,
                &contract(vec![col("id", "int8")]),
                Some(&live),
                &SameName
            )
            .is_empty()
        );
    }

    #[test]
    fn diff_reports_type_mismatch_as_breaking_and_skips_other_rules() {
        let live = LiveTable::new("tenant_1", "events").with_column(LiveColumn::new("id", "int4"));
        let f = diff(
            SCOPE,
            &contract(vec![col("id", "int8")]),
            Some(&live),
            &SameName,
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(
            (f[0].kind, f[0].severity),
            (DriftKind::TypeMismatch, Severity::Breaks)
        );
        assert_eq!(
            (f[0].expected.as_str(), f[0].actual.as_str()),
            ("int8 (T)", "int4")
        );
    }

    #[test]
    fn diff_reports_nullable_column_for_non_option_field_as_at_risk() {
        let mut nullable_field = col("b", "text");
        nullable_field.nullable = true;
        let live = LiveTable::new("tenant_1", "events")
            .with_column(LiveColumn::new("a", "text"))
            .with_column(LiveColumn::new("b", "text"));
        let f = diff(
            SCOPE,
            &contract(vec![col("a", "text"), nullable_field]),
            Some(&live),
            &SameName,
        );
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].kind, f[0].severity),
            (DriftKind::Nullability, Severity::AtRisk)
        );
    }

    #[test]
    fn diff_reports_oracle_risk_as_width() {
        struct Risky;
        impl TypeOracle for Risky {
            fn fit(&self, _: &TableContract, _: &ColumnContract, _: &LiveColumn) -> TypeFit {
                TypeFit {
                    compatible: true,
                    expected_sql_type: "INT".into(),
                    risk: Some("bigint".into()),
                }
            }
        }
        let live = LiveTable::new("tenant_1", "events")
            .with_column(LiveColumn::new("a", "bigint").not_null());
        let f = diff(SCOPE, &contract(vec![col("a", "int")]), Some(&live), &Risky);
        assert_eq!(
            (f[0].kind, f[0].severity, f[0].actual.as_str()),
            (DriftKind::Width, Severity::AtRisk, "bigint")
        );
    }

    #[test]
    fn diff_reports_enum_labels_both_ways() {
        let mut mood = col("mood", "mood");
        mood.enum_labels = Some(vec!["happy".into(), "sad".into(), "meh".into()]);
        let mut live_mood = LiveColumn::new("mood", "mood").not_null();
        live_mood.enum_labels = Some(vec!["happy".into(), "sad".into(), "angry".into()]);
        let live = LiveTable::new("tenant_1", "events").with_column(live_mood);
        let f = diff(SCOPE, &contract(vec![mood]), Some(&live), &SameName);
        let actual: Vec<_> = f
            .iter()
            .map(|f| (f.kind, f.severity, f.actual.as_str()))
            .collect();
        assert_eq!(
            actual,
            [
                (
                    DriftKind::EnumLabels,
                    Severity::AtRisk,
                    "labels unknown to the Rust enum: angry"
                ),
                (
                    DriftKind::EnumLabels,
                    Severity::AtRisk,
                    "missing labels: meh"
                ),
            ]
        );
    }

    #[test]
    fn diff_reports_key_differences_as_info() {
        let mut id = col("id", "int8");
        id.primary_key = true;
        let mut user = col("user_id", "int8");
        user.references = Reference::parse("users(id)");
        let live = LiveTable::new("tenant_1", "events")
            .with_column(LiveColumn::new("id", "int8").not_null())
            .with_column(LiveColumn::new("user_id", "int8").not_null());
        let f = diff(SCOPE, &contract(vec![id, user]), Some(&live), &SameName);
        let kinds: Vec<_> = f.iter().map(|f| (f.kind, f.severity)).collect();
        assert_eq!(
            kinds,
            [
                (DriftKind::PrimaryKey, Severity::Info),
                (DriftKind::ForeignKey, Severity::Info)
            ]
        );
        assert_eq!(f[1].expected, "references tenant_1.users(id)");
    }

    #[test]
    fn diff_finds_columns_as_the_dialect_resolves_names() {
        let mut id = col("id", "int8");
        id.primary_key = true;
        let mut user = col("user_id", "int8");
        user.references = Reference::parse("users(id)");
        let mut live = LiveTable::new("tenant_1", "Events")
            .with_column(LiveColumn::new("ID", "int8").not_null())
            .with_column(LiveColumn::new("User_Id", "int8").not_null());
        live.primary_key = vec!["ID".into()];
        live.foreign_keys.push(crate::live::LiveForeignKey {
            column: "User_Id".into(),
            ref_schema: "tenant_1".into(),
            ref_table: "Users".into(),
            ref_column: "Id".into(),
        });
        let contract = contract(vec![id, user]);
        let sqlite = DiffScope {
            dialect: Dialect::Sqlite,
            ..SCOPE
        };
        // The same columns, key and foreign key; the spelling rows carry still breaks
        // `FromRow`, which is all that is reported (types are judged on the found column).
        let f = diff(sqlite, &contract, Some(&live), &SameName);
        let found: Vec<_> = f
            .iter()
            .map(|f| (f.column.as_deref(), f.kind, f.severity))
            .collect();
        assert_eq!(
            found,
            [
                (Some("id"), DriftKind::MissingColumn, Severity::Breaks),
                (Some("user_id"), DriftKind::MissingColumn, Severity::Breaks),
            ]
        );
        assert_eq!(
            f[1].actual,
            "`User_Id` (only the case differs: rows name it `User_Id`, and sqlx finds `user_id` by exact name)"
        );
        // PostgreSQL keeps quoted names apart: both columns are absent.
        let f = diff(SCOPE, &contract, Some(&live), &SameName);
        assert!(
            f.iter()
                .filter(|f| f.kind == DriftKind::MissingColumn)
                .all(|f| f.actual == "absent"),
            "{f:?}"
        );
        assert!(f.iter().any(|f| f.kind == DriftKind::PrimaryKey), "{f:?}");
    }
}
