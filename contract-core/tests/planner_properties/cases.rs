//! Random cases: contracts for one dialect, and a live schema derived from them by random
//! drift. Everything is generated as a small spec (indexes and choices, which proptest
//! shrinks towards "no drift") and then built into concrete contracts and live tables.

use std::collections::BTreeMap;

use contract_core::{ColumnContract, Dialect, LiveColumn, LiveTable, Reference, RelationKind};
use contract_core::{LiveForeignKey, TableContract};
use proptest::prelude::*;
use proptest::sample::Index;

use super::types::{Ty, by_dialect};

/// Names that read normally.
const PLAIN: [&str; 14] = [
    "id",
    "user_id",
    "kind",
    "note",
    "created_at",
    "payload",
    "score",
    "amount",
    "name",
    "status",
    "order",
    "select",
    "user",
    "tags",
];
/// Names that stress quoting and the dialects' name rules.
const ODD: [&str; 17] = [
    "Événement",
    "日本語",
    "we\"ird",
    "back`tick",
    "it's",
    "a b",
    "MixedCase",
    "ID",
    "semi;colon",
    "🦀crab",
    "trailing ",
    "dollar$",
    "ß",
    "İstanbul",
    "x\\y",
    "a.b",
    "(paren)",
];
/// Labels of the one enum type a case may use.
const LABELS: [&str; 6] = ["happy", "sad", "meh", "it's", "naïve", "with space"];
/// Defaults a contract may declare for a column.
const DEFAULTS: [&str; 6] = ["0", "'n/a'", "''", "now()", "clock_timestamp()", "(1 + 1)"];

/// A name: from a list, random, or one no dialect keeps (NUL, too long).
#[derive(Debug, Clone)]
pub enum NameSpec {
    Plain(Index),
    Odd(Index),
    Random(String),
    Invalid(Index),
}

fn name_spec() -> impl Strategy<Value = NameSpec> {
    prop_oneof![
        12 => any::<Index>().prop_map(NameSpec::Plain),
        4 => any::<Index>().prop_map(NameSpec::Odd),
        3 => "[a-zA-Z_\"`' éß日$.;()\\\\-]{0,11}[a-zA-Z_\"`'éß日$.;()\\\\-]".prop_map(NameSpec::Random),
        1 => any::<Index>().prop_map(NameSpec::Invalid),
    ]
}

impl NameSpec {
    fn text(&self) -> String {
        match self {
            NameSpec::Plain(i) => i.get(&PLAIN).to_string(),
            NameSpec::Odd(i) => i.get(&ODD).to_string(),
            NameSpec::Random(s) => s.clone(),
            NameSpec::Invalid(i) => i
                .get(&["nul\0byte".to_owned(), "long_".repeat(14), "é".repeat(40)])
                .clone(),
        }
    }
}

/// How a live column differs from its contracted column.
#[derive(Debug, Clone)]
pub enum ColumnDrift {
    Same,
    Missing,
    Retype(Index),
    /// A related type the planner may know a conversion from (often narrower).
    Related(Index),
    Nullable,
    NotNull,
    OtherCase,
    Renamed,
    /// A narrower (`Narrower`) or wider type modifier than the declared `sql_type`.
    Narrower,
    Wider,
}

#[derive(Debug, Clone)]
pub struct ColumnSpec {
    name: NameSpec,
    ty: Index,
    nullable: bool,
    optional: bool,
    default: Option<Index>,
    declared: bool,
    renamed_from: bool,
    primary_key: bool,
    references: Option<Index>,
    drift: ColumnDrift,
}

fn column_drift() -> impl Strategy<Value = ColumnDrift> {
    prop_oneof![
        8 => Just(ColumnDrift::Same),
        3 => Just(ColumnDrift::Missing),
        2 => any::<Index>().prop_map(ColumnDrift::Retype),
        3 => any::<Index>().prop_map(ColumnDrift::Related),
        2 => Just(ColumnDrift::Nullable),
        1 => Just(ColumnDrift::NotNull),
        1 => Just(ColumnDrift::OtherCase),
        1 => Just(ColumnDrift::Renamed),
        1 => Just(ColumnDrift::Narrower),
        1 => Just(ColumnDrift::Wider),
    ]
}

fn column_spec() -> impl Strategy<Value = ColumnSpec> {
    (
        name_spec(),
        any::<Index>(),
        any::<bool>(),
        proptest::bool::weighted(0.1),
        proptest::option::weighted(0.4, any::<Index>()),
        proptest::bool::weighted(0.25),
        proptest::bool::weighted(0.15),
        proptest::bool::weighted(0.3),
        proptest::option::weighted(0.15, any::<Index>()),
        column_drift(),
    )
        .prop_map(
            |(name, ty, nullable, optional, default, declared, renamed_from, pk, refs, drift)| {
                ColumnSpec {
                    name,
                    ty,
                    nullable,
                    optional,
                    default,
                    declared,
                    renamed_from,
                    primary_key: pk,
                    references: refs,
                    drift,
                }
            },
        )
}

/// How a live table differs from its contract.
#[derive(Debug, Clone)]
pub enum TableDrift {
    Present,
    Missing,
    View,
    /// Present under a name that differs in case (the contracted name is then missing on
    /// PostgreSQL and MySQL, found on SQLite).
    OtherCase,
}

#[derive(Debug, Clone)]
pub struct TableSpec {
    name: NameSpec,
    columns: Vec<ColumnSpec>,
    drift: TableDrift,
    /// Extra live columns: name, type, NOT NULL, position.
    extras: Vec<(NameSpec, Index, bool, Index)>,
    /// The live primary key differs.
    pk_drift: bool,
    /// SQLite: the definition text was not read, other objects refer to the table, it
    /// has an index.
    no_definition: bool,
    referenced_by: bool,
    dependents: bool,
    /// A permutation of the live columns (sort keys).
    order: Vec<u16>,
}

fn table_spec() -> impl Strategy<Value = TableSpec> {
    (
        name_spec(),
        proptest::collection::vec(column_spec(), 1..6),
        prop_oneof![
            8 => Just(TableDrift::Present),
            2 => Just(TableDrift::Missing),
            1 => Just(TableDrift::View),
            1 => Just(TableDrift::OtherCase),
        ],
        proptest::collection::vec(
            (name_spec(), any::<Index>(), any::<bool>(), any::<Index>()),
            0..3,
        ),
        proptest::bool::weighted(0.1),
        (
            proptest::bool::weighted(0.05),
            proptest::bool::weighted(0.05),
            proptest::bool::weighted(0.2),
        ),
        proptest::collection::vec(any::<u16>(), 10),
    )
        .prop_map(
            |(name, columns, drift, extras, pk_drift, (no_def, refd, deps), order)| TableSpec {
                name,
                columns,
                drift,
                extras,
                pk_drift,
                no_definition: no_def,
                referenced_by: refd,
                dependents: deps,
                order,
            },
        )
}

/// Where the enum type lives in the tenant's database.
#[derive(Debug, Clone, Copy)]
pub enum EnumHome {
    Tenant,
    Public,
    Nowhere,
}

#[derive(Debug, Clone)]
pub struct CaseSpec {
    dialect: Index,
    tenant: Index,
    tables: Vec<TableSpec>,
    shared_schema: bool,
    enum_home: EnumHome,
    contract_labels: Vec<Index>,
    live_labels: Vec<Index>,
    /// Seed of the shuffles the determinism property applies.
    pub shuffle: u64,
}

pub fn case_spec() -> impl Strategy<Value = CaseSpec> {
    (
        any::<Index>(),
        any::<Index>(),
        proptest::collection::vec(table_spec(), 1..4),
        proptest::bool::weighted(0.1),
        prop_oneof![
            3 => Just(EnumHome::Tenant),
            1 => Just(EnumHome::Public),
            1 => Just(EnumHome::Nowhere),
        ],
        proptest::collection::vec(any::<Index>(), 1..4),
        proptest::collection::vec(any::<Index>(), 0..5),
        any::<u64>(),
    )
        .prop_map(
            |(dialect, tenant, tables, shared, home, cl, ll, shuffle)| CaseSpec {
                dialect,
                tenant,
                tables,
                shared_schema: shared,
                enum_home: home,
                contract_labels: cl,
                live_labels: ll,
                shuffle,
            },
        )
}

/// A built case: the contracts (with the SQL type sqlx gives each field) and the live
/// schema, including the enum types it has.
#[derive(Debug, Clone)]
pub struct Case {
    pub dialect: Dialect,
    pub tenant: String,
    pub contracts: Vec<TableContract>,
    pub expected: Vec<BTreeMap<String, String>>,
    pub live: Vec<LiveTable>,
    /// `(schema, type name)` → labels.
    pub enums: BTreeMap<(String, String), Vec<String>>,
    pub shuffle: u64,
}

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

pub fn build(spec: &CaseSpec) -> Case {
    let dialect = *spec
        .dialect
        .get(&[Dialect::Postgres, Dialect::MySql, Dialect::Sqlite]);
    let tenant = spec.tenant.get(&["tenant_1", "t_42", "acme"]).to_string();
    let universe = by_dialect(dialect);
    let mut labels: Vec<String> = Vec::new();
    for i in &spec.contract_labels {
        let l = i.get(&LABELS).to_string();
        if !labels.contains(&l) {
            labels.push(l);
        }
    }
    let mut live_labels: Vec<String> = Vec::new();
    for i in &spec.live_labels {
        let l = i.get(&LABELS).to_string();
        if !live_labels.contains(&l) {
            live_labels.push(l);
        }
    }
    let mut enums = BTreeMap::new();
    let enum_schema = match spec.enum_home {
        EnumHome::Tenant => Some(tenant.clone()),
        EnumHome::Public => Some("public".to_owned()),
        EnumHome::Nowhere => None,
    };
    if dialect == Dialect::Postgres
        && let Some(schema) = &enum_schema
    {
        enums.insert((schema.clone(), "mood".to_owned()), live_labels.clone());
    }
    let mut contracts = Vec::new();
    let mut expected = Vec::new();
    let mut live = Vec::new();
    let mut table_names: Vec<String> = Vec::new();
    // Single-column primary keys of earlier tables: what a reference may point to.
    let mut keys: Vec<(String, String, usize)> = Vec::new();
    for (t, table) in spec.tables.iter().enumerate() {
        let name = unique(table.name.text(), &table_names, |a, b| {
            dialect.same_table(a, b) || a.eq_ignore_ascii_case(b)
        });
        table_names.push(name.clone());
        let schema = (spec.shared_schema && t == 0 && dialect != Dialect::Sqlite)
            .then(|| "shared".to_owned());
        let live_schema = schema.clone().unwrap_or_else(|| tenant.clone());
        let mut columns: Vec<ColumnContract> = Vec::new();
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut live_columns: Vec<(LiveColumn, usize)> = Vec::new();
        let mut taken: Vec<String> = Vec::new();
        for (c, col) in table.columns.iter().enumerate() {
            let cname = unique(col.name.text(), &taken, |a, b| a.eq_ignore_ascii_case(b));
            taken.push(cname.clone());
            let ty: &Ty = col.ty.get(universe);
            let mut contract = ColumnContract::new(cname.clone(), ty.rust);
            contract.nullable = col.nullable;
            contract.optional = col.optional;
            contract.json = ty.rust == "Value";
            contract.default_sql = col.default.map(|i| i.get(&DEFAULTS).to_string());
            let declared = (col.declared && dialect == Dialect::Postgres)
                .then_some(ty.declared)
                .flatten();
            contract.sql_type = declared.map(str::to_owned);
            if col.renamed_from {
                contract.renamed_from = Some(unique(format!("old_{cname}"), &taken, |a, b| {
                    a.eq_ignore_ascii_case(b)
                }));
                taken.push(contract.renamed_from.clone().unwrap_or_default());
            }
            contract.primary_key = col.primary_key && !col.nullable;
            if ty.rust == "Mood" {
                contract.enum_labels = Some(labels.clone());
            }
            if let Some(i) = col.references
                && !keys.is_empty()
            {
                let (rt, rc, rty) = i.get(&keys);
                if *rty == col.ty.index(universe.len()) {
                    contract.references = Reference::parse(&format!("{rt}({rc})"))
                        .filter(|r| r.table == *rt && r.column == *rc);
                }
            }
            types.insert(cname.clone(), ty.sqlx.to_owned());
            // The live column, unless the drift (or the name) removes it.
            let valid = dialect.quote(&cname).is_ok();
            let enum_missing = ty.rust == "Mood" && enum_schema.is_none();
            let mut live_col = ty.live_column(&cname, dialect, enum_schema.as_deref());
            if ty.rust == "Mood" {
                live_col.enum_labels = Some(live_labels.clone());
            }
            live_col.nullable = contract.nullable;
            live_col.default = contract.default_sql.clone();
            let keep = match &col.drift {
                ColumnDrift::Missing => false,
                ColumnDrift::Same => true,
                ColumnDrift::Retype(i) => {
                    let other: &Ty = i.get(universe);
                    if !(other.rust == "Mood" && enum_schema.is_none()) {
                        let mut retyped =
                            other.live_column(&cname, dialect, enum_schema.as_deref());
                        retyped.nullable = live_col.nullable;
                        if other.rust == "Mood" {
                            retyped.enum_labels = Some(live_labels.clone());
                        }
                        live_col = retyped;
                    }
                    true
                }
                ColumnDrift::Related(i) => {
                    let related = super::types::related(dialect, ty.rust);
                    if !related.is_empty() {
                        let spelling = i.get(related);
                        let mut retyped = LiveColumn::new(cname.clone(), *spelling);
                        retyped.type_key = super::types::type_key(dialect, spelling);
                        retyped.nullable = live_col.nullable;
                        live_col = retyped;
                    }
                    true
                }
                ColumnDrift::Nullable => {
                    live_col.nullable = true;
                    true
                }
                ColumnDrift::NotNull => {
                    live_col.nullable = false;
                    true
                }
                ColumnDrift::OtherCase => {
                    if let Some(other) = other_case(&cname)
                        .filter(|o| !taken.iter().any(|t| t == o) && dialect.quote(o).is_ok())
                    {
                        live_col.name = other;
                    }
                    true
                }
                ColumnDrift::Renamed => {
                    if let Some(old) = &contract.renamed_from {
                        live_col.name = old.clone();
                    }
                    true
                }
                ColumnDrift::Narrower | ColumnDrift::Wider => {
                    if let Some(declared) = declared {
                        let wider = matches!(col.drift, ColumnDrift::Wider);
                        live_col.data_type = super::types::resized(declared, wider);
                    }
                    true
                }
            };
            if keep && valid && !enum_missing {
                live_columns.push((live_col, c));
            }
            columns.push(contract);
        }
        let contract = TableContract {
            struct_name: format!("Struct{t}"),
            schema,
            table: name.clone(),
            columns,
        };
        let pk = contract.primary_key();
        if let [one] = pk.as_slice() {
            let index = table.columns[contract
                .columns
                .iter()
                .position(|c| c.name == *one)
                .unwrap_or(0)]
            .ty
            .index(universe.len());
            keys.push((name.clone(), (*one).to_owned(), index));
        }
        // The live table.
        let table_valid = dialect.quote(&name).is_ok();
        let live_name = match table.drift {
            TableDrift::Missing => None,
            TableDrift::OtherCase => other_case(&name).filter(|o| {
                !table_names
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(o) && t != &name)
                    && dialect.quote(o).is_ok()
            }),
            TableDrift::Present | TableDrift::View => Some(name.clone()),
        };
        if let Some(live_name) = live_name.filter(|_| table_valid) {
            let mut lt = LiveTable::new(live_schema.clone(), live_name);
            if matches!(table.drift, TableDrift::View) {
                lt.kind = RelationKind::View;
            }
            let mut cols = live_columns;
            for (extra, ty, not_null, pos) in &table.extras {
                let ename = unique(extra.text(), &taken, |a, b| a.eq_ignore_ascii_case(b));
                if dialect.quote(&ename).is_err() {
                    continue;
                }
                taken.push(ename.clone());
                let ty: &Ty = ty.get(universe);
                if ty.rust == "Mood" && enum_schema.is_none() {
                    continue;
                }
                let mut c = ty.live_column(&ename, dialect, enum_schema.as_deref());
                c.nullable = !not_null;
                if ty.rust == "Mood" {
                    c.enum_labels = Some(live_labels.clone());
                }
                let at = pos.index(cols.len() + 1);
                cols.insert(at, (c, usize::MAX));
            }
            // Ordinal order: shuffled.
            let mut keyed: Vec<(u16, LiveColumn)> = cols
                .into_iter()
                .enumerate()
                .map(|(i, (c, _))| (table.order.get(i).copied().unwrap_or(0), c))
                .collect();
            keyed.sort_by_key(|(k, _)| *k);
            lt.columns = keyed.into_iter().map(|(_, c)| c).collect();
            let pk_names: Vec<String> = contract
                .primary_key()
                .iter()
                .filter_map(|k| lt.column_in(dialect, k).map(|c| c.name.clone()))
                .collect();
            lt.primary_key = if table.pk_drift {
                lt.columns.iter().take(1).map(|c| c.name.clone()).collect()
            } else {
                pk_names
            };
            for (column, reference) in contract.foreign_keys() {
                if let Some(c) = lt.column_in(dialect, column) {
                    lt.foreign_keys.push(LiveForeignKey {
                        column: c.name.clone(),
                        ref_schema: reference.schema.clone().unwrap_or(live_schema.clone()),
                        ref_table: reference.table.clone(),
                        ref_column: reference.column.clone(),
                    });
                }
            }
            if dialect == Dialect::Sqlite && lt.kind.is_table() {
                if !table.no_definition {
                    lt.definition = Some(super::sql::sqlite_definition(&lt));
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
            live.push(lt);
        }
        contracts.push(contract);
        expected.push(types);
    }
    // A table nobody contracts, which must come through untouched.
    let bystander = LiveTable::new(tenant.clone(), "bystander")
        .with_column(LiveColumn::new("v", by_dialect(dialect)[0].live).not_null());
    let mut bystander = bystander;
    if dialect == Dialect::Sqlite {
        bystander.definition = Some(super::sql::sqlite_definition(&bystander));
    }
    if !table_names
        .iter()
        .any(|t| t.eq_ignore_ascii_case("bystander"))
    {
        live.push(bystander);
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
