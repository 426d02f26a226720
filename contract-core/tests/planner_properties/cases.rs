//! Random cases: contracts for one dialect, and a live schema derived from them by random
//! drift. Everything is generated as a small spec (indexes and choices, which proptest
//! shrinks towards "no drift") and then built into concrete contracts and live tables.

use std::collections::BTreeMap;

use contract_core::{Dialect, LiveTable, TableContract};
use proptest::prelude::*;
use proptest::sample::Index;

/// Names that read normally.
pub const PLAIN: [&str; 14] = [
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
pub const ODD: [&str; 17] = [
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
pub const LABELS: [&str; 6] = ["happy", "sad", "meh", "it's", "naïve", "with space"];
/// Defaults a contract may declare for a column.
pub const DEFAULTS: [&str; 6] = ["0", "'n/a'", "''", "now()", "clock_timestamp()", "(1 + 1)"];

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
    pub fn text(&self) -> String {
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
    pub name: NameSpec,
    pub ty: Index,
    pub nullable: bool,
    pub optional: bool,
    pub default: Option<Index>,
    pub declared: bool,
    pub renamed_from: bool,
    pub primary_key: bool,
    pub references: Option<Index>,
    pub drift: ColumnDrift,
    /// The live column is also nullable (drifts combine).
    pub also_nullable: bool,
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
        3 => Just(ColumnDrift::Renamed),
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
        proptest::bool::weighted(0.25),
        proptest::bool::weighted(0.3),
        proptest::option::weighted(0.15, any::<Index>()),
        (column_drift(), proptest::bool::weighted(0.2)),
    )
        .prop_map(
            |(
                name,
                ty,
                nullable,
                optional,
                default,
                declared,
                renamed_from,
                pk,
                refs,
                (drift, also_nullable),
            )| {
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
                    also_nullable,
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
    pub name: NameSpec,
    pub columns: Vec<ColumnSpec>,
    pub drift: TableDrift,
    /// Extra live columns: name, type, NOT NULL, position.
    pub extras: Vec<(NameSpec, Index, bool, Index)>,
    /// The live primary key differs.
    pub pk_drift: bool,
    /// SQLite: the definition text was not read, other objects refer to the table, it
    /// has an index.
    pub no_definition: bool,
    pub referenced_by: bool,
    pub dependents: bool,
    /// A permutation of the live columns (sort keys).
    pub order: Vec<u16>,
    /// Another contract on an earlier table of the case (two structs reading one table).
    pub same_as: Option<Index>,
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
        (
            proptest::collection::vec(any::<u16>(), 10),
            proptest::option::weighted(0.2, any::<Index>()),
        ),
    )
        .prop_map(
            |(name, columns, drift, extras, pk_drift, (no_def, refd, deps), (order, same_as))| {
                TableSpec {
                    name,
                    columns,
                    drift,
                    extras,
                    pk_drift,
                    no_definition: no_def,
                    referenced_by: refd,
                    dependents: deps,
                    order,
                    same_as,
                }
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
    pub dialect: Index,
    pub tenant: Index,
    pub tables: Vec<TableSpec>,
    pub shared_schema: bool,
    pub enum_home: EnumHome,
    pub contract_labels: Vec<Index>,
    pub live_labels: Vec<Index>,
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
