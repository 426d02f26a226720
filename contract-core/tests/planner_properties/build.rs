//! A case from its spec: names first (unique as the dialect compares them; a table two
//! contracts read shares one name), then the contracts, then the live schema drifted
//! from them.

use std::collections::BTreeMap;

use contract_core::{ColumnContract, Dialect, LiveColumn, LiveForeignKey, LiveTable};
use contract_core::{Reference, RelationKind, TableContract};

use super::cases::{Case, CaseSpec, ColumnDrift, DEFAULTS, EnumHome, LABELS, TableDrift};
use super::cases::{ColumnSpec, TableSpec};
use super::sql::sqlite_definition;
use super::types::{Ty, by_dialect, related, resized, type_key};

/// A name unique among `taken` as `same` compares names: suffixed when it clashes.
fn unique(name: String, taken: &[String], same: impl Fn(&str, &str) -> bool) -> String {
    let mut candidate = name.clone();
    let mut n = 1;
    while taken.iter().any(|t| same(t, &candidate)) {
        candidate = format!("{name}_{n}");
        n += 1;
    }
    candidate
}

/// The name with its ASCII letters' case flipped (another name that differs only in
/// case), or `None` when it has no ASCII letter.
fn other_case(name: &str) -> Option<String> {
    name.chars().any(|c| c.is_ascii_alphabetic()).then(|| {
        name.chars()
            .map(|c| {
                if c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    })
}

fn labels(indexes: &[proptest::sample::Index]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in indexes {
        let l = i.get(&LABELS).to_string();
        if !out.contains(&l) {
            out.push(l);
        }
    }
    out
}

/// The names of one contract.
struct Names {
    table: String,
    /// The first table of the case with this name (itself unless two contracts share it).
    root: usize,
    schema: Option<String>,
    columns: Vec<String>,
    renamed_from: Vec<Option<String>>,
}

/// A single-column primary key a reference may point to: table, schema, column, type,
/// and the index of its contract in the case.
type Key = (String, Option<String>, String, usize, usize);

/// Whether a contract may reference a table that comes later in the case (or itself).
const REFERENCES_LATER: bool = true;

/// What every table of a case is built with.
struct Ctx<'a> {
    dialect: Dialect,
    universe: &'static [Ty],
    labels: Vec<String>,
    live_labels: Vec<String>,
    enum_schema: Option<String>,
    keys: &'a [Key],
}

pub fn build(spec: &CaseSpec) -> Case {
    let dialect = *spec
        .dialect
        .get(&[Dialect::Postgres, Dialect::MySql, Dialect::Sqlite]);
    let tenant = spec.tenant.get(&["tenant_1", "t_42", "acme"]).to_string();
    let universe = by_dialect(dialect);
    let enum_schema = match spec.enum_home {
        EnumHome::Tenant => Some(tenant.clone()),
        EnumHome::Public => Some("public".to_owned()),
        EnumHome::Nowhere => None,
    };
    let live_labels = labels(&spec.live_labels);
    let mut enums = BTreeMap::new();
    if dialect == Dialect::Postgres
        && let Some(schema) = &enum_schema
    {
        enums.insert((schema.clone(), "mood".to_owned()), live_labels.clone());
    }
    let names = names(spec, dialect);
    let contract_names = &names;
    let mut keys: Vec<Key> = Vec::new();
    for (t, (table, names)) in spec.tables.iter().zip(&names).enumerate() {
        let pk: Vec<usize> = (0..table.columns.len())
            .filter(|c| table.columns[*c].primary_key && !table.columns[*c].nullable)
            .collect();
        if let [one] = pk.as_slice() {
            keys.push((
                names.table.clone(),
                names.schema.clone(),
                names.columns[*one].clone(),
                table.columns[*one].ty.index(universe.len()),
                t,
            ));
        }
    }
    let ctx = Ctx {
        dialect,
        universe,
        labels: labels(&spec.contract_labels),
        live_labels,
        enum_schema,
        keys: &keys,
    };
    let mut contracts = Vec::new();
    let mut expected = Vec::new();
    let mut live: Vec<LiveTable> = Vec::new();
    for (t, (table, names)) in spec.tables.iter().zip(&names).enumerate() {
        let root =
            (names.root != t).then(|| (&spec.tables[names.root], &contract_names[names.root]));
        let (contract, types, columns) = contract(&ctx, t, table, names, root);
        let live_schema = names.schema.clone().unwrap_or_else(|| tenant.clone());
        if names.root == t {
            if let Some(lt) = live_table(&ctx, table, &contract, &live_schema, columns, names) {
                live.push(lt);
            }
        } else if let Some(lt) = live
            .iter_mut()
            .find(|l| l.schema == live_schema && l.name.eq_ignore_ascii_case(&names.table))
        {
            // A second contract on the table: its columns join the live table's.
            for column in columns {
                if lt.column_in(dialect, &column.name).is_none() {
                    lt.columns.push(column);
                }
            }
        }
        contracts.push(contract);
        expected.push(types);
    }
    let mut bystander = LiveTable::new(tenant.clone(), "bystander")
        .with_column(LiveColumn::new("v", universe[0].live).not_null());
    if !names
        .iter()
        .any(|n| n.table.eq_ignore_ascii_case("bystander"))
    {
        bystander.definition = Some(String::new());
        live.push(bystander);
    }
    if dialect == Dialect::Sqlite {
        for table in &mut live {
            if table.definition.is_some() {
                table.definition = Some(sqlite_definition(table));
            }
        }
    } else {
        for table in &mut live {
            table.definition = None;
        }
    }
    Case {
        dialect,
        tenant,
        contracts,
        expected,
        live,
        enums,
        shuffle: spec.shuffle,
    }
}

fn names(spec: &CaseSpec, dialect: Dialect) -> Vec<Names> {
    let mut out: Vec<Names> = Vec::new();
    for (t, table) in spec.tables.iter().enumerate() {
        let root = match table.same_as {
            Some(i) if t > 0 => out[i.index(t)].root,
            _ => t,
        };
        let (name, schema) = if root == t {
            let taken: Vec<String> = out.iter().map(|n| n.table.clone()).collect();
            let name = unique(table.name.text(), &taken, |a, b| {
                dialect.same_table(a, b) || a.eq_ignore_ascii_case(b)
            });
            let shared = spec.shared_schema && t == 0 && dialect != Dialect::Sqlite;
            (name, shared.then(|| "shared".to_owned()))
        } else {
            (out[root].table.clone(), out[root].schema.clone())
        };
        let mut taken: Vec<String> = Vec::new();
        let mut columns = Vec::new();
        let mut renamed_from = Vec::new();
        for column in &table.columns {
            let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
            let mut name = column.name.text();
            if root != t {
                // The table's column of that name (in any case) is the one this reads.
                if let Some(known) = out[root].columns.iter().find(|c| same(c, &name)) {
                    name.clone_from(known);
                }
            }
            let name = unique(name, &taken, same);
            taken.push(name.clone());
            let old = column.renamed_from.then(|| {
                let old = unique(format!("old_{name}"), &taken, same);
                taken.push(old.clone());
                old
            });
            columns.push(name);
            renamed_from.push(old);
        }
        out.push(Names {
            table: name,
            root,
            schema,
            columns,
            renamed_from,
        });
    }
    out
}

/// One contract, the SQL type sqlx gives each field, and the live columns its drift
/// leaves (in contract order).
fn contract(
    ctx: &Ctx<'_>,
    t: usize,
    table: &TableSpec,
    names: &Names,
    root: Option<(&TableSpec, &Names)>,
) -> (TableContract, BTreeMap<String, String>, Vec<LiveColumn>) {
    let mut columns = Vec::new();
    let mut types = BTreeMap::new();
    let mut live = Vec::new();
    for (c, col) in table.columns.iter().enumerate() {
        let name = names.columns[c].clone();
        // A column the table's first contract reads too has its type (contracts that
        // disagree on a type cannot both be satisfied).
        let shared = root.and_then(|(spec, names)| {
            let at = names.columns.iter().position(|n| *n == name)?;
            Some(&spec.columns[at])
        });
        let col = &ColumnSpec {
            ty: shared.map_or(col.ty, |s| s.ty),
            declared: shared.map_or(col.declared, |s| s.declared),
            ..col.clone()
        };
        let ty: &Ty = col.ty.get(ctx.universe);
        let mut contract = ColumnContract::new(name.clone(), ty.rust);
        contract.nullable = col.nullable;
        contract.optional = col.optional;
        contract.json = ty.rust == "Value";
        contract.default_sql = col.default.map(|i| i.get(&DEFAULTS).to_string());
        contract.sql_type = ty
            .declared
            .filter(|_| col.declared && ctx.dialect == Dialect::Postgres)
            .map(str::to_owned);
        contract.renamed_from = names.renamed_from[c].clone();
        contract.primary_key = col.primary_key && !col.nullable;
        if ty.rust == "Mood" {
            contract.enum_labels = Some(ctx.labels.clone());
        }
        contract.references = reference(ctx, col, names, t);
        types.insert(name.clone(), ty.sqlx.to_owned());
        if let Some(column) = drifted(ctx, col, &contract, &names.columns) {
            live.push(column);
        }
        columns.push(contract);
    }
    let contract = TableContract {
        struct_name: format!("Struct{t}"),
        schema: names.schema.clone(),
        table: names.table.clone(),
        columns,
    };
    (contract, types, live)
}

/// A reference to a single-column key of the same type, in any table of the case.
fn reference(ctx: &Ctx<'_>, col: &ColumnSpec, names: &Names, t: usize) -> Option<Reference> {
    if ctx.keys.is_empty() {
        return None;
    }
    let (table, schema, column, ty, of) = col.references?.get(ctx.keys);
    if *ty != col.ty.index(ctx.universe.len()) || (!REFERENCES_LATER && *of >= t) {
        return None;
    }
    let valid = |s: &str| !s.is_empty() && s.trim() == s && !s.contains(['(', ')', ',', '.']);
    if !valid(table) || !valid(column) {
        return None;
    }
    Some(Reference {
        schema: schema.clone().filter(|s| Some(s) != names.schema.as_ref()),
        table: table.clone(),
        column: column.clone(),
    })
}

/// The live column of a contracted column after its drift (`None`: absent).
fn drifted(
    ctx: &Ctx<'_>,
    col: &ColumnSpec,
    contract: &ColumnContract,
    taken: &[String],
) -> Option<LiveColumn> {
    let (dialect, enum_schema) = (ctx.dialect, ctx.enum_schema.as_deref());
    let ty: &Ty = col.ty.get(ctx.universe);
    if dialect.quote(&contract.name).is_err() || (ty.rust == "Mood" && enum_schema.is_none()) {
        return None;
    }
    let of_type = |ty: &Ty| {
        let mut column = ty.live_column(&contract.name, dialect, enum_schema);
        if ty.rust == "Mood" {
            column.enum_labels = Some(ctx.live_labels.clone());
        }
        column.nullable = contract.nullable;
        column
    };
    let mut live = of_type(ty);
    live.default = contract.default_sql.clone();
    match &col.drift {
        ColumnDrift::Missing => return None,
        ColumnDrift::Same => {}
        ColumnDrift::Retype(i) => {
            let other: &Ty = i.get(ctx.universe);
            if !(other.rust == "Mood" && enum_schema.is_none()) {
                live = of_type(other);
            }
        }
        ColumnDrift::Related(i) => {
            let related = related(dialect, ty.rust);
            if !related.is_empty() {
                let spelling = i.get(related);
                let mut retyped = LiveColumn::new(contract.name.clone(), *spelling);
                retyped.type_key = type_key(dialect, spelling);
                retyped.nullable = live.nullable;
                live = retyped;
            }
        }
        ColumnDrift::Nullable => live.nullable = true,
        ColumnDrift::NotNull => live.nullable = false,
        ColumnDrift::OtherCase => {
            if let Some(other) = other_case(&contract.name)
                .filter(|o| !taken.contains(o) && dialect.quote(o).is_ok())
            {
                live.name = other;
            }
        }
        ColumnDrift::Renamed => {
            if let Some(old) = &contract.renamed_from {
                live.name = old.clone();
            }
        }
        ColumnDrift::Narrower | ColumnDrift::Wider => {
            if let Some(declared) = &contract.sql_type {
                live.data_type = resized(declared, matches!(col.drift, ColumnDrift::Wider));
            }
        }
    }
    if col.also_nullable {
        live.nullable = true;
    }
    Some(live)
}

/// The live table of a contract (its first contract), or `None` when it is missing.
fn live_table(
    ctx: &Ctx<'_>,
    table: &TableSpec,
    contract: &TableContract,
    schema: &str,
    columns: Vec<LiveColumn>,
    names: &Names,
) -> Option<LiveTable> {
    let dialect = ctx.dialect;
    let name = &contract.table;
    let live_name = match table.drift {
        TableDrift::Missing => None,
        TableDrift::OtherCase => other_case(name).filter(|o| dialect.quote(o).is_ok()),
        TableDrift::Present | TableDrift::View => Some(name.clone()),
    };
    let live_name = live_name.filter(|_| dialect.quote(name).is_ok())?;
    let mut lt = LiveTable::new(schema.to_owned(), live_name);
    if matches!(table.drift, TableDrift::View) {
        lt.kind = RelationKind::View;
    }
    let mut cols = columns;
    let mut taken: Vec<String> = names.columns.clone();
    taken.extend(names.renamed_from.iter().flatten().cloned());
    for (extra, ty, not_null, pos) in &table.extras {
        let name = unique(extra.text(), &taken, |a, b| a.eq_ignore_ascii_case(b));
        let ty: &Ty = ty.get(ctx.universe);
        if dialect.quote(&name).is_err() || (ty.rust == "Mood" && ctx.enum_schema.is_none()) {
            continue;
        }
        taken.push(name.clone());
        let mut column = ty.live_column(&name, dialect, ctx.enum_schema.as_deref());
        column.nullable = !not_null;
        if ty.rust == "Mood" {
            column.enum_labels = Some(ctx.live_labels.clone());
        }
        cols.insert(pos.index(cols.len() + 1), column);
    }
    // Ordinal order: shuffled.
    let mut keyed: Vec<(u16, usize, LiveColumn)> = cols
        .into_iter()
        .enumerate()
        .map(|(i, c)| (table.order.get(i).copied().unwrap_or(0), i, c))
        .collect();
    keyed.sort_by_key(|(k, i, _)| (*k, *i));
    lt.columns = keyed.into_iter().map(|(_, _, c)| c).collect();
    lt.primary_key = if table.pk_drift {
        lt.columns.iter().take(1).map(|c| c.name.clone()).collect()
    } else {
        contract
            .primary_key()
            .iter()
            .filter_map(|k| lt.column_in(dialect, k).map(|c| c.name.clone()))
            .collect()
    };
    for (column, reference) in contract.foreign_keys() {
        if let Some(c) = lt.column_in(dialect, column) {
            lt.foreign_keys.push(LiveForeignKey {
                column: c.name.clone(),
                ref_schema: reference.schema.clone().unwrap_or(schema.to_owned()),
                ref_table: reference.table.clone(),
                ref_column: reference.column.clone(),
            });
        }
    }
    if dialect == Dialect::Sqlite && lt.kind.is_table() {
        if !table.no_definition {
            // Written once every column is in (`build`).
            lt.definition = Some(String::new());
        }
        if table.referenced_by {
            lt.referenced_by.push("view \"v\"".to_owned());
        }
        if table.dependents
            && let Some(first) = lt.columns.first()
        {
            let q = |n: &str| dialect.quote(n).unwrap_or_default();
            lt.dependents.push(format!(
                "CREATE INDEX {} ON {} ({})",
                q(&format!("{}_idx", lt.name)),
                q(&lt.name),
                q(&first.name)
            ));
        }
    }
    Some(lt)
}
