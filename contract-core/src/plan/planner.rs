//! Findings → steps and refusals, per dialect (the rules are in `ARCHITECTURE.md` section 5).

use super::merge::{Merged, by_table};
use super::order::creations_first;
use super::rebuild::{TypeChange, rebuild_step};
use super::render::Target;
use super::step::{Action, Hazard, LockLevel, PlanStep, Refusal};
use super::types::{PgTypeChange, ddl_type, pg_canonical, pg_type_change, pg_typmod_change};
use super::{Phase, PhaseKind};
use super::{TableInput, TenantPlan, TypeCatalog};
use std::collections::BTreeMap;

use crate::drift::{DriftKind, Finding};
use crate::error::IdentError;
use crate::ident::Dialect;
use crate::model::ColumnContract;

/// Plans the remediation of one tenant's drift.
///
/// `schema` is where the tenant's tables live (`None` on SQLite). Steps come out in
/// contract order, then finding order, so the same inputs always give byte-identical SQL
/// and the same hash; except that several contracts on one table are planned as one (the
/// table is created once with every column any of them reads, a column `NOT NULL` unless
/// all read it as an `Option`), missing tables are created first, each after the new
/// tables it references, and a table's renames come after its other steps (which name the
/// columns as they are live). Narrowing, lossy and may-fail casts, drops and undeclared
/// renames are never planned: they come back as refusals with the reason.
///
/// On SQLite a type change is one table rebuild per table (all its changed columns, ahead
/// of the table's other steps), written from the introspected `CREATE TABLE` text, indexes
/// and triggers; it always needs an approval (`table_rebuild`, `validates_rows`), and a
/// definition that cannot be read unambiguously is refused.
///
/// On PostgreSQL a column type the contract names without a schema is written qualified
/// with the first schema `types` has it in among the tenant's, the contract's and
/// `public` (remediation pins `search_path` to `pg_catalog`); one that none of them has is
/// refused. Built-in types, and types `types` did not look up, stay as written.
#[must_use]
pub fn plan_tenant(
    dialect: Dialect,
    tenant: &str,
    schema: Option<&str>,
    tables: &[TableInput<'_>],
    types: &TypeCatalog,
) -> TenantPlan {
    // Contracts reading the same table are planned as one.
    let merged = by_table(dialect, schema, tables);
    let inputs: Vec<TableInput<'_>> = merged.iter().map(Merged::input).collect();
    let tables = inputs.as_slice();
    let mut steps = Vec::new();
    let mut refusals = Vec::new();
    // The index in `steps` of each table's CREATE TABLE.
    let mut created = Vec::with_capacity(tables.len());
    for (input, merged) in tables.iter().zip(&merged) {
        for (finding, reason) in &merged.refused {
            refusals.push(Refusal {
                table: finding.table.clone(),
                column: finding.column.clone(),
                kind: finding.kind,
                reason: reason.clone(),
            });
        }
        let table_schema = match dialect {
            Dialect::Sqlite => None,
            _ => input.contract.schema.as_deref().or(schema),
        };
        let mut type_schemas: Vec<&str> = schema
            .into_iter()
            .chain(input.contract.schema.as_deref())
            .chain(["public"])
            .collect();
        type_schemas.dedup();
        let target = Target {
            dialect,
            schema: table_schema,
            table: &input.contract.table,
            types,
            type_schemas: &type_schemas,
        };
        // SQLite changes types by rebuilding the table from its current definition: once
        // per table, for all its changed columns, before the table's other steps.
        let first = steps.len();
        let rebuilt = dialect == Dialect::Sqlite;
        let mut rebuild_planned = false;
        if rebuilt {
            let (step, refused) = sqlite_type_changes(&target, input);
            rebuild_planned = step.is_some();
            steps.extend(step);
            refusals.extend(refused);
        }
        for finding in input.findings {
            let retyped = if rebuilt && finding.kind == DriftKind::TypeMismatch {
                // Changed by the table's rebuild, unless this column's change was refused.
                rebuild_planned
                    && !refusals.iter().any(|r| {
                        r.kind == DriftKind::TypeMismatch
                            && r.table == finding.table
                            && r.column == finding.column
                    })
            } else {
                let planned = plan_finding(&target, input, finding);
                let retyped =
                    finding.kind == DriftKind::TypeMismatch && matches!(planned, Ok(Some(_)));
                push_planned(planned, finding, &mut steps, &mut refusals);
                retyped
            };
            // The diff judges nothing else of a column whose type does not fit; once the
            // type is changed, its nullability shows. Plan that now, so an approved plan
            // leaves no second approval behind.
            if let Some(hidden) = retyped
                .then(|| hidden_nullability(target.dialect, input, finding))
                .flatten()
            {
                let planned = plan_finding(&target, input, &hidden);
                push_planned(planned, &hidden, &mut steps, &mut refusals);
            }
        }
        // Renames last: the table's other steps name the columns as they are live.
        let (renames, others): (Vec<PlanStep>, Vec<PlanStep>) = steps
            .drain(first..)
            .partition(|s| s.action == Action::RenameColumn);
        steps.extend(others);
        steps.extend(renames);
        created.push(
            steps[first..]
                .iter()
                .position(|s| s.action == Action::CreateTable)
                .map(|at| first + at),
        );
    }
    let steps = creations_first(dialect, schema, tables, &created, steps, &mut refusals);
    TenantPlan::new(tenant, dialect, steps, refusals)
}

fn push_planned(
    planned: Planned,
    finding: &Finding,
    steps: &mut Vec<PlanStep>,
    refusals: &mut Vec<Refusal>,
) {
    match planned {
        Ok(Some(step)) => steps.push(step),
        Ok(None) => {}
        Err(reason) => refusals.push(Refusal {
            table: finding.table.clone(),
            column: finding.column.clone(),
            kind: finding.kind,
            reason,
        }),
    }
}

/// The nullability finding a type mismatch hides: the live column accepts NULL and the
/// field is not an `Option` (the finding the diff makes once the type fits).
fn hidden_nullability(
    dialect: Dialect,
    input: &TableInput<'_>,
    mismatch: &Finding,
) -> Option<Finding> {
    let column = input.contract.column(mismatch.column.as_deref()?)?;
    let live = live_column(dialect, input, column)?;
    (live.nullable && !column.nullable).then(|| Finding {
        kind: DriftKind::Nullability,
        severity: crate::drift::Severity::AtRisk,
        expected: format!("NOT NULL ({} is not an Option)", column.rust_type),
        actual: "nullable".into(),
        ..mismatch.clone()
    })
}

type Planned = Result<Option<PlanStep>, String>;

/// The live column a contracted column is: under its name as the dialect resolves names,
/// or under its declared former name (`renamed_from`). Steps for the column write the live
/// name; the rename comes after them, so each step runs whether or not the rename does.
fn live_column<'a>(
    dialect: Dialect,
    input: &TableInput<'a>,
    column: &ColumnContract,
) -> Option<&'a crate::live::LiveColumn> {
    let live = input.live?;
    live.column_in(dialect, &column.name).or_else(|| {
        column
            .renamed_from
            .as_deref()
            .and_then(|old| live.column_in(dialect, old))
    })
}

/// The one rebuild step for a SQLite table's type mismatches, and the refusals of those it
/// cannot change (each with its reason).
fn sqlite_type_changes(
    target: &Target<'_>,
    input: &TableInput<'_>,
) -> (Option<PlanStep>, Vec<Refusal>) {
    let mut refusals = Vec::new();
    let mut refuse = |finding: &Finding, reason: String| {
        refusals.push(Refusal {
            table: finding.table.clone(),
            column: finding.column.clone(),
            kind: finding.kind,
            reason,
        });
    };
    let mut changes = Vec::new();
    let mut changed = Vec::new();
    for finding in input
        .findings
        .iter()
        .filter(|f| f.kind == DriftKind::TypeMismatch)
    {
        let Some(column) = finding
            .column
            .as_deref()
            .and_then(|c| input.contract.column(c))
        else {
            continue;
        };
        let Some(live) = live_column(target.dialect, input, column) else {
            continue;
        };
        if let Some(reason) = not_a_table(input, finding) {
            refuse(finding, reason);
            continue;
        }
        match sql_type(target, input, column) {
            Ok(to) => {
                changes.push(TypeChange {
                    column: live.name.clone(),
                    from: live.data_type.clone(),
                    to,
                });
                changed.push(finding);
            }
            Err(reason) => refuse(finding, reason),
        }
    }
    let Some(live) = input.live.filter(|_| !changes.is_empty()) else {
        return (None, refusals);
    };
    match rebuild_step(target, live, &changes) {
        Ok(step) => (Some(step), refusals),
        Err(reason) => {
            for finding in changed {
                refuse(finding, reason.clone());
            }
            (None, refusals)
        }
    }
}

/// Why `finding` cannot be fixed when the live relation is not a table (a view, a
/// materialized view, a foreign table): every fix but a missing table's and an enum's
/// labels is an `ALTER TABLE` of that relation, which PostgreSQL refuses.
fn not_a_table(input: &TableInput<'_>, finding: &Finding) -> Option<String> {
    let live = input.live.filter(|t| !t.kind.is_table())?;
    if matches!(
        finding.kind,
        DriftKind::MissingTable | DriftKind::EnumLabels
    ) {
        return None;
    }
    let hint = match (finding.kind, finding.column.as_deref()) {
        (DriftKind::Nullability, Some(column)) => format!(
            "its column `{column}` can return NULL (a nullable base column, or one PostgreSQL \
             cannot follow through joins or expressions); make the field an Option, or make \
             the base column NOT NULL and select it as a plain column"
        ),
        _ => format!("change the {} (or the table it reads) by hand", live.kind),
    };
    Some(format!(
        "not remediable: relation `{}.{}` is a {} (ALTER TABLE cannot change it); {hint}",
        live.schema, live.name, live.kind
    ))
}

fn plan_finding(target: &Target<'_>, input: &TableInput<'_>, finding: &Finding) -> Planned {
    if let Some(reason) = not_a_table(input, finding) {
        return Err(reason);
    }
    let column = finding
        .column
        .as_deref()
        .and_then(|c| input.contract.column(c));
    let planned = match (finding.kind, column) {
        (DriftKind::MissingTable, _) => create_table(target, input),
        (DriftKind::MissingColumn, Some(column)) => add_or_rename_column(target, input, column),
        (DriftKind::TypeMismatch, Some(column)) => change_type(target, input, column),
        (DriftKind::Nullability, Some(column)) => set_not_null(target, input, column),
        (DriftKind::ForeignKey, Some(column)) => add_foreign_key(target, column),
        (DriftKind::Width, Some(column)) => widen(target, input, column),
        (DriftKind::PrimaryKey, _) => {
            Err("primary keys are not changed automatically (they need a unique index built concurrently); migrate by hand".into())
        }
        (DriftKind::EnumLabels, Some(column)) => enum_labels(target, input, column, finding),
        (_, None) => Ok(None),
    };
    planned.map_err(|e| e.to_string())
}

fn ident(result: Result<String, IdentError>) -> Result<String, String> {
    result.map_err(|e| e.to_string())
}

/// The DDL type of `column` for `target`: as the contract or sqlx names it, custom types
/// qualified with the schema the fleet has them in (PostgreSQL).
fn sql_type(
    target: &Target<'_>,
    input: &TableInput<'_>,
    column: &ColumnContract,
) -> Result<String, String> {
    let written = written_type(target.dialect, column, input.expected_types)?;
    match target.dialect {
        Dialect::Postgres => target.types.qualify(column, &written, target.type_schemas),
        Dialect::MySql | Dialect::Sqlite => Ok(written),
    }
}

/// The type as the contract (`#[contract(sql_type)]`) or sqlx names it.
pub(super) fn written_type(
    dialect: Dialect,
    column: &ColumnContract,
    expected_types: &BTreeMap<String, String>,
) -> Result<String, String> {
    if let Some(sql_type) = &column.sql_type {
        return Ok(sql_type.clone());
    }
    // sqlx sends JSON to MySQL as a binary string, so its type name is `BINARY` (the same
    // as a UUID's): the field type decides, or a JSON field would become `BINARY(16)`.
    // On SQLite sqlx names it `TEXT`, but a column declared `TEXT` is (rightly) reported at
    // risk for a JSON field; declaring it `JSON` is what makes the added column comply.
    if matches!(dialect, Dialect::MySql | Dialect::Sqlite)
        && matches!(
            crate::rules::rust_type_name(&column.rust_type),
            "Json" | "Value" | "JsonValue" | "RawValue"
        )
    {
        return Ok("JSON".to_owned());
    }
    let expected = expected_types.get(&column.name).ok_or_else(|| {
        format!(
            "no SQL type is known for `{}`; add #[contract(sql_type = \"...\")] to the field",
            column.name
        )
    })?;
    ident(ddl_type(dialect, expected))
}

fn step(target: &Target<'_>, column: Option<&str>, action: Action, fixes: DriftKind) -> PlanStep {
    PlanStep {
        table: target.table.to_owned(),
        column: column.map(str::to_owned),
        action,
        fixes,
        statements: Vec::new(),
        lock: LockLevel::AccessExclusiveBrief,
        hazards: Vec::new(),
        phases: Vec::new(),
        online: None,
    }
}

fn create_table(target: &Target<'_>, input: &TableInput<'_>) -> Planned {
    let mut parts = Vec::new();
    for column in &input.contract.columns {
        parts.push(ident(
            target.column_definition(column, &sql_type(target, input, column)?),
        )?);
    }
    let pk: Vec<String> = input
        .contract
        .primary_key()
        .into_iter()
        .map(|c| target.q(c))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if !pk.is_empty() {
        parts.push(format!("PRIMARY KEY ({})", pk.join(", ")));
    }
    for (column, reference) in input.contract.foreign_keys() {
        parts.push(format!(
            "CONSTRAINT {} FOREIGN KEY ({}) {}",
            ident(target.q(&target.constraint_name(column, "fkey")))?,
            ident(target.q(column))?,
            ident(target.references(reference))?
        ));
    }
    let mut s = step(target, None, Action::CreateTable, DriftKind::MissingTable);
    s.lock = LockLevel::None;
    s.statements.push(format!(
        "CREATE TABLE {} ({})",
        ident(target.qualified())?,
        parts.join(", ")
    ));
    Ok(Some(s))
}

const VOLATILE: [&str; 7] = [
    "clock_timestamp",
    "random(",
    "gen_random_uuid",
    "uuid_generate",
    "nextval",
    "timeofday",
    "txid_current",
];

fn add_or_rename_column(
    target: &Target<'_>,
    input: &TableInput<'_>,
    column: &ColumnContract,
) -> Planned {
    let table = ident(target.qualified())?;
    let live = |name: &str| input.live.and_then(|t| t.column_in(target.dialect, name));
    // The column is there under another name: the same name in another case (SQLite,
    // MySQL: adding it would collide), or the one declared with `renamed_from`.
    let old = live(&column.name)
        .filter(|c| c.name != column.name)
        .or_else(|| column.renamed_from.as_deref().and_then(live))
        .map(|c| c.name.as_str());
    if let Some(old) = old {
        let mut s = step(
            target,
            Some(&column.name),
            Action::RenameColumn,
            DriftKind::MissingColumn,
        );
        // MySQL: a rename changes only metadata; stating `INPLACE, LOCK=NONE` makes the
        // server refuse rather than copy the table or block writers if it cannot.
        let online = match target.dialect {
            Dialect::MySql => ", ALGORITHM=INPLACE, LOCK=NONE",
            Dialect::Postgres | Dialect::Sqlite => "",
        };
        s.statements.push(format!(
            "ALTER TABLE {table} RENAME COLUMN {} TO {}{online}",
            ident(target.q(old))?,
            ident(target.q(&column.name))?
        ));
        s.hazards.push(Hazard::RenamesColumn);
        return Ok(Some(s));
    }
    if !column.nullable && column.default_sql.is_none() {
        return Err(format!(
            "`{}` is NOT NULL with no default, so adding it fails on a non-empty table; add #[contract(default = \"...\")] or make the field an Option",
            column.name
        ));
    }
    let definition = ident(target.column_definition(column, &sql_type(target, input, column)?))?;
    let mut s = step(
        target,
        Some(&column.name),
        Action::AddColumn,
        DriftKind::MissingColumn,
    );
    let suffix = match target.dialect {
        Dialect::MySql => ", ALGORITHM=INSTANT",
        Dialect::Postgres | Dialect::Sqlite => "",
    };
    s.statements.push(format!(
        "ALTER TABLE {table} ADD COLUMN {definition}{suffix}"
    ));
    let default = column
        .default_sql
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase();
    if VOLATILE.iter().any(|f| default.contains(f)) {
        // A volatile default rewrites the table on PostgreSQL (measured).
        s.hazards
            .extend([Hazard::TableRewrite, Hazard::AccessExclusiveLock]);
        s.lock = LockLevel::AccessExclusive;
    }
    Ok(Some(s))
}

fn change_type(target: &Target<'_>, input: &TableInput<'_>, column: &ColumnContract) -> Planned {
    let live = live_column(target.dialect, input, column);
    let live_type = live.map(|c| c.data_type.clone()).unwrap_or_default();
    let new_type = sql_type(target, input, column)?;
    match target.dialect {
        Dialect::Postgres => {}
        Dialect::MySql => {
            return Err(format!(
                "changing `{}` from {live_type} to {new_type} copies the table on MySQL (no INSTANT/INPLACE algorithm with LOCK=NONE); migrate by hand or change the field type",
                column.name
            ));
        }
        Dialect::Sqlite => {
            // Planned per table by `sqlite_type_changes` (a table rebuild); never here.
            return Ok(None);
        }
    }
    let (from, to) = (pg_canonical(&live_type), pg_canonical(&new_type));
    let change = pg_type_change(&from, &to);
    let hazards = match change {
        PgTypeChange::MetadataOnly => vec![],
        PgTypeChange::IndexRebuild => vec![Hazard::IndexRebuild, Hazard::AccessExclusiveLock],
        PgTypeChange::Rewrite => vec![Hazard::TableRewrite, Hazard::AccessExclusiveLock],
        PgTypeChange::Lossy => {
            return Err(format!(
                "{from} -> {to} on `{}` narrows or loses data; change the field type instead",
                column.name
            ));
        }
        PgTypeChange::MayFail => {
            return Err(format!(
                "{from} -> {to} on `{}` fails on values that do not convert; clean the data and migrate by hand",
                column.name
            ));
        }
        PgTypeChange::Unknown => {
            return Err(format!(
                "no safe conversion is known from {from} to {to} for `{}`; migrate by hand",
                column.name
            ));
        }
    };
    let name = ident(target.q(live.map_or(column.name.as_str(), |c| c.name.as_str())))?;
    let mut s = step(
        target,
        Some(&column.name),
        Action::ChangeType,
        DriftKind::TypeMismatch,
    );
    if change == PgTypeChange::IndexRebuild {
        // timestamp <-> timestamptz avoids a rewrite only under UTC (measured).
        s.statements.push("SET LOCAL TimeZone = 'UTC'".into());
    }
    s.statements.push(format!(
        "ALTER TABLE {} ALTER COLUMN {name} TYPE {new_type} USING {name}::{new_type}",
        ident(target.qualified())?
    ));
    if !hazards.is_empty() {
        s.lock = LockLevel::AccessExclusive;
        s.statements
            .push(format!("ANALYZE {} ({name})", ident(target.qualified())?));
    }
    s.hazards = hazards;
    Ok(Some(s))
}

fn set_not_null(target: &Target<'_>, input: &TableInput<'_>, column: &ColumnContract) -> Planned {
    if target.dialect != Dialect::Postgres {
        return Err(format!(
            "`{}` is nullable but the field is not an Option; make the field an Option (setting NOT NULL rebuilds the table on {})",
            column.name, target.dialect
        ));
    }
    let table = ident(target.qualified())?;
    let live = live_column(target.dialect, input, column);
    let name = ident(target.q(live.map_or(column.name.as_str(), |c| c.name.as_str())))?;
    let check = ident(target.q(&target.constraint_name(&column.name, "not_null")))?;
    let mut s = step(
        target,
        Some(&column.name),
        Action::SetNotNull,
        DriftKind::Nullability,
    );
    s.statements = vec![
        format!("ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({name} IS NOT NULL) NOT VALID"),
        format!("ALTER TABLE {table} VALIDATE CONSTRAINT {check}"),
        format!("ALTER TABLE {table} ALTER COLUMN {name} SET NOT NULL"),
        format!("ALTER TABLE {table} DROP CONSTRAINT {check}"),
    ];
    // Three transactions: the scan of VALIDATE never runs under the ACCESS EXCLUSIVE lock.
    s.phases = vec![
        Phase::new(PhaseKind::AddNotValid, LockLevel::AccessExclusiveBrief, 1),
        Phase::new(PhaseKind::Validate, LockLevel::ShareUpdateExclusive, 1),
        Phase::new(PhaseKind::SetNotNull, LockLevel::AccessExclusiveBrief, 2),
    ];
    s.hazards.push(Hazard::ValidatesRows);
    Ok(Some(s))
}

fn add_foreign_key(target: &Target<'_>, column: &ColumnContract) -> Planned {
    let Some(reference) = &column.references else {
        return Ok(None);
    };
    if target.dialect != Dialect::Postgres {
        return Err(format!(
            "adding a foreign key on `{}` is not automated on {}; migrate by hand",
            column.name, target.dialect
        ));
    }
    let table = ident(target.qualified())?;
    let name = ident(target.q(&target.constraint_name(&column.name, "fkey")))?;
    let mut s = step(
        target,
        Some(&column.name),
        Action::AddForeignKey,
        DriftKind::ForeignKey,
    );
    s.statements = vec![
        format!(
            "ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY ({}) {} NOT VALID",
            ident(target.q(&column.name))?,
            ident(target.references(reference))?
        ),
        format!("ALTER TABLE {table} VALIDATE CONSTRAINT {name}"),
    ];
    s.phases = vec![
        Phase::new(PhaseKind::AddNotValid, LockLevel::ShareRowExclusive, 1),
        Phase::new(PhaseKind::Validate, LockLevel::ShareUpdateExclusive, 1),
    ];
    s.lock = LockLevel::ShareRowExclusive;
    s.hazards = vec![Hazard::ValidatesRows, Hazard::LocksReferencedTable];
    Ok(Some(s))
}

fn enum_labels(
    target: &Target<'_>,
    input: &TableInput<'_>,
    column: &ColumnContract,
    finding: &Finding,
) -> Planned {
    if finding.actual.starts_with(crate::diff::UNKNOWN_LABELS) {
        return Err(format!(
            "the live enum of `{}` has labels the Rust enum does not know; add the variants to the Rust enum \
             (removing enum labels is destructive and never planned)",
            column.name
        ));
    }
    let live = live_column(target.dialect, input, column);
    let (Some(expected), Some(live)) = (&column.enum_labels, live) else {
        return Ok(None);
    };
    let Some(actual) = &live.enum_labels else {
        return Ok(None);
    };
    if target.dialect != Dialect::Postgres {
        return Err(format!(
            "adding enum labels to `{}` rewrites the column definition on {}; migrate by hand",
            column.name, target.dialect
        ));
    }
    // The enum as the catalog names it (the column's own type, or the enum its array's
    // elements or its domain's base are): schema-qualified unless it is on the search path,
    // which the remediation session pins to pg_catalog, so only qualified names are safe.
    let enum_type = live.enum_type_key.as_deref().unwrap_or(&live.type_key);
    if enum_type.contains('"') {
        return Err(format!(
            "the enum type `{enum_type}` of `{}` has a name the catalog quotes, which the planner does not split into schema and name; add the labels by hand",
            column.name
        ));
    }
    let Some((schema, name)) = enum_type.split_once('.') else {
        return Err(format!(
            "the enum type `{enum_type}` of `{}` is not schema-qualified in the catalog (it is on the search path); add the labels by hand",
            column.name
        ));
    };
    let type_name = format!(
        "{}.{}",
        ident(target.dialect.quote(schema))?,
        ident(target.dialect.quote(name))?
    );
    let (missing, _) = crate::diff::enum_label_drift(expected, actual);
    let mut s = step(
        target,
        Some(&column.name),
        Action::AddEnumLabel,
        DriftKind::EnumLabels,
    );
    for label in missing {
        s.statements.push(format!(
            "ALTER TYPE {type_name} ADD VALUE IF NOT EXISTS {}",
            ident(target.dialect.string_literal(label))?
        ));
    }
    Ok(Some(s))
}

/// A width finding: on PostgreSQL, a column narrower than the contract's
/// `#[contract(sql_type = "...")]` is widened in place when that is metadata-only; any
/// other width finding (a column wider than the field) is fixed in the Rust type.
fn widen(target: &Target<'_>, input: &TableInput<'_>, column: &ColumnContract) -> Planned {
    let live = live_column(target.dialect, input, column);
    let live_type = live.map(|c| c.data_type.as_str()).unwrap_or_default();
    let change = match (&column.sql_type, target.dialect) {
        (Some(declared), Dialect::Postgres) => {
            pg_typmod_change(live_type, declared).map(|c| (declared, c))
        }
        _ => None,
    };
    let Some((declared, change)) = change else {
        return Err(format!(
            "the column holds values wider than `{}`; widen the Rust field type instead (narrowing the column could lose data)",
            column.rust_type
        ));
    };
    let hazards = match change {
        PgTypeChange::MetadataOnly => vec![],
        PgTypeChange::Rewrite => vec![Hazard::TableRewrite, Hazard::AccessExclusiveLock],
        _ => {
            return Err(format!(
                "{live_type} -> {declared} on `{}` narrows or loses data; change #[contract(sql_type)] instead",
                column.name
            ));
        }
    };
    let name = ident(target.q(live.map_or(column.name.as_str(), |c| c.name.as_str())))?;
    let mut s = step(
        target,
        Some(&column.name),
        Action::ChangeType,
        DriftKind::Width,
    );
    s.statements.push(format!(
        "ALTER TABLE {} ALTER COLUMN {name} TYPE {declared} USING {name}::{declared}",
        ident(target.qualified())?
    ));
    if !hazards.is_empty() {
        s.lock = LockLevel::AccessExclusive;
    }
    s.hazards = hazards;
    Ok(Some(s))
}
