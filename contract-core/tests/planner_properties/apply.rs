//! An in-memory database that runs a plan's statements against the live model, as the
//! server would, and tracks every column's data: each live column holds a data id, which
//! renames, type changes and `INSERT … SELECT *` carry along. A step that loses an id,
//! narrows a type, drops a constraint it did not add, or runs a statement the model does
//! not know is an error.

use std::collections::{BTreeMap, BTreeSet};

use contract_core::plan::PlanStep;
use contract_core::{Dialect, LiveColumn, LiveForeignKey, LiveTable};

use super::sql::{Cursor, Kind, column_def, tokenize};

mod alter;
use super::types::{PG_BUILTIN, pg_family, type_key};

#[derive(Debug, Clone)]
pub struct Table {
    pub live: LiveTable,
    /// The data id of each column (parallel to `live.columns`).
    pub data: Vec<u64>,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub dialect: Dialect,
    pub tables: Vec<Table>,
    pub enums: BTreeMap<(String, String), Vec<String>>,
    /// `(column, renamed_from)` of the contracts: a step for a column may name the column
    /// by its former name (it runs before the rename).
    pub renames: Vec<(String, String)>,
    next_id: u64,
}

/// What a step did that the checks look at.
#[derive(Debug, Default)]
struct StepState {
    checks_added: BTreeSet<String>,
    /// Indexes and triggers of dropped tables, waiting to be re-created.
    dropped_dependents: Vec<String>,
    /// SQLite rebuild: the columns whose type the copy changed.
    retyped: Vec<String>,
}

impl Model {
    pub fn new(
        dialect: Dialect,
        live: &[LiveTable],
        enums: &BTreeMap<(String, String), Vec<String>>,
    ) -> Self {
        let mut model = Self {
            dialect,
            tables: Vec::new(),
            enums: enums.clone(),
            renames: Vec::new(),
            next_id: 0,
        };
        for table in live {
            let data = (0..table.columns.len()).map(|_| model.fresh()).collect();
            model.tables.push(Table {
                live: table.clone(),
                data,
            });
        }
        model
    }

    pub(super) fn fresh(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The table `schema.name` as the dialect resolves table names.
    pub fn find(&self, schema: &str, name: &str) -> Option<usize> {
        self.tables
            .iter()
            .position(|t| t.live.schema == schema && self.dialect.same_table(&t.live.name, name))
    }

    /// Every data id held by a table of the tenant (not temporary).
    fn ids(&self) -> BTreeSet<u64> {
        self.tables
            .iter()
            .filter(|t| t.live.schema != "temp")
            .flat_map(|t| t.data.iter().copied())
            .collect()
    }

    /// Runs one step, all or nothing.
    pub fn apply(&mut self, step: &PlanStep, tenant: &str) -> Result<(), String> {
        let before = self.clone();
        let result = self.apply_inner(step, tenant);
        if result.is_err() {
            *self = before;
        }
        result
    }

    fn apply_inner(&mut self, step: &PlanStep, tenant: &str) -> Result<(), String> {
        let kept = self.ids();
        let mut state = StepState::default();
        for statement in &step.statements {
            self.statement(statement, tenant, step, &mut state)
                .map_err(|e| format!("{e}\n  in statement: {statement}"))?;
        }
        if let Some(left) = state.dropped_dependents.first() {
            return Err(format!(
                "the step dropped `{left}` and did not re-create it"
            ));
        }
        if let Some(t) = self
            .tables
            .iter()
            .find(|t| t.live.schema == "temp" || t.live.name.ends_with("__contract_rebuild"))
        {
            return Err(format!(
                "the step left the work table `{}` behind",
                t.live.name
            ));
        }
        for column in &state.retyped {
            let probe = format!("typeof({})", self.dialect.quote(column).unwrap_or_default());
            let checked = step.statements.iter().any(|s| s.contains(&probe));
            if !checked
                || !step
                    .hazards
                    .contains(&contract_core::plan::Hazard::ValidatesRows)
            {
                return Err(format!(
                    "the rebuild changes the type of `{column}` without checking every value converts"
                ));
            }
        }
        let now = self.ids();
        let lost: Vec<u64> = kept.difference(&now).copied().collect();
        if !lost.is_empty() {
            return Err(format!(
                "the step loses the data of {} column(s)",
                lost.len()
            ));
        }
        Ok(())
    }

    /// The table a statement names: `schema` defaults to the tenant's (SQLite: the file).
    fn resolve(&self, schema: Option<String>, name: &str, tenant: &str) -> Result<usize, String> {
        let schema = match self.dialect {
            Dialect::Sqlite => schema
                .filter(|s| s == "temp")
                .unwrap_or_else(|| tenant.to_owned()),
            _ => schema.ok_or_else(|| format!("table `{name}` is not schema-qualified"))?,
        };
        self.find(&schema, name)
            .ok_or_else(|| format!("relation {schema}.{name} does not exist"))
    }

    /// A column type as the server would resolve it (remediation pins `search_path` to
    /// `pg_catalog` on PostgreSQL): a custom type must be qualified and exist.
    pub(super) fn column_type(
        &self,
        written: &str,
    ) -> Result<(String, String, Option<Vec<String>>), String> {
        if self.dialect != Dialect::Postgres {
            return Ok((written.to_owned(), type_key(self.dialect, written), None));
        }
        let family = pg_family(written);
        let base = family.trim_end_matches("[]");
        if PG_BUILTIN.contains(&base) {
            return Ok((written.to_owned(), family, None));
        }
        let toks = tokenize(written)?;
        match toks.as_slice() {
            [schema, dot, name, ..] if dot.punct('.') => {
                let key = (schema.text.clone(), name.text.clone());
                let labels = self
                    .enums
                    .get(&key)
                    .ok_or_else(|| format!("type {}.{} does not exist", key.0, key.1))?;
                let type_key = if key.0 == "public" {
                    key.1.clone()
                } else {
                    format!("{}.{}", key.0, key.1)
                };
                Ok((type_key.clone(), type_key, Some(labels.clone())))
            }
            _ => Err(format!(
                "type \"{written}\" does not exist (search_path is pg_catalog)"
            )),
        }
    }

    pub(super) fn live_column(&self, def: &super::sql::ColumnDef) -> Result<LiveColumn, String> {
        let (data_type, type_key, labels) = self.column_type(&def.data_type)?;
        let mut column = LiveColumn::new(def.name.clone(), data_type);
        column.type_key = type_key;
        column.nullable = !def.not_null && !def.primary_key;
        column.default = def.default.clone();
        column.enum_labels = labels;
        Ok(column)
    }

    fn statement(
        &mut self,
        sql: &str,
        tenant: &str,
        step: &PlanStep,
        state: &mut StepState,
    ) -> Result<(), String> {
        let mut c = Cursor::new(sql)?;
        let dialect = self.dialect;
        if c.eat("ANALYZE") || (c.eat("SET") && c.eat("LOCAL")) {
            return Ok(());
        }
        if c.eat("CREATE") {
            if c.eat("INDEX") || c.eat("TRIGGER") || (c.eat("UNIQUE") && c.eat("INDEX")) {
                let at = state
                    .dropped_dependents
                    .iter()
                    .position(|d| d == sql)
                    .ok_or("creates an index or trigger that no dropped table had")?;
                state.dropped_dependents.remove(at);
                let (schema, name) = self.dependent_owner(sql)?;
                let t = self.resolve(schema, &name, tenant)?;
                self.tables[t].live.dependents.push(sql.to_owned());
                return Ok(());
            }
            let temp = c.eat("TEMP");
            c.expect(&["TABLE"])?;
            let (schema, name) = c.qualified()?;
            let schema = if temp {
                "temp".to_owned()
            } else {
                match dialect {
                    Dialect::Sqlite => tenant.to_owned(),
                    _ => schema.ok_or("CREATE TABLE without a schema")?,
                }
            };
            if self.find(&schema, &name).is_some() {
                return Err(format!("relation {schema}.{name} already exists"));
            }
            let mut live = LiveTable::new(schema.clone(), name.clone());
            let mut data = Vec::new();
            c.expect_punct('(')?;
            loop {
                if c.eat("PRIMARY") {
                    c.expect(&["KEY"])?;
                    let keys = c.group()?;
                    for key in tokenize(keys)?.iter().filter_map(|t| t.name()) {
                        live.primary_key.push(key.to_owned());
                    }
                } else if c.eat("CONSTRAINT") {
                    c.name()?;
                    if c.eat("CHECK") {
                        c.group()?;
                    } else {
                        c.expect(&["FOREIGN", "KEY"])?;
                        let column = c.group()?;
                        c.expect(&["REFERENCES"])?;
                        let (ref_schema, ref_table) = c.qualified()?;
                        let ref_column = c.group()?;
                        let ref_schema = ref_schema.unwrap_or_else(|| schema.clone());
                        let referenced = self.find(&ref_schema, &ref_table).is_some()
                            || (ref_schema == schema && dialect.same_table(&ref_table, &name));
                        // SQLite checks references when rows change, not here.
                        if !referenced && schema != "temp" && dialect != Dialect::Sqlite {
                            return Err(format!(
                                "referenced relation {ref_schema}.{ref_table} does not exist"
                            ));
                        }
                        let one = |t: &str| -> Result<String, String> {
                            Ok(tokenize(t)?
                                .first()
                                .map(|t| t.text.clone())
                                .unwrap_or_default())
                        };
                        live.foreign_keys.push(LiveForeignKey {
                            column: one(column)?,
                            ref_schema,
                            ref_table,
                            ref_column: one(ref_column)?,
                        });
                    }
                } else {
                    let def = column_def(&mut c)?;
                    if live.column_in(dialect, &def.name).is_some() {
                        return Err(format!("column `{}` specified more than once", def.name));
                    }
                    if def.primary_key {
                        live.primary_key.push(def.name.clone());
                    }
                    live.columns.push(self.live_column(&def)?);
                    data.push(self.fresh());
                }
                if c.eat_punct(')') {
                    break;
                }
                c.expect_punct(',')?;
            }
            if !c.done() {
                return Err("text after the column list".into());
            }
            if dialect == Dialect::Sqlite && !temp {
                live.definition = Some(sql.to_owned());
            }
            self.tables.push(Table { live, data });
            return Ok(());
        }
        if c.eat("INSERT") {
            c.expect(&["INTO"])?;
            let (schema, target) = c.qualified()?;
            if target == "sqlite_sequence" || schema.as_deref() == Some("temp") {
                return Ok(());
            }
            let to = self.resolve(schema, &target, tenant)?;
            c.expect(&["SELECT"])?;
            c.expect_punct('*')?;
            c.expect(&["FROM"])?;
            let (schema, source) = c.qualified()?;
            let from = self.resolve(schema, &source, tenant)?;
            if !c.done() {
                return Err("only INSERT … SELECT * FROM t is modelled".into());
            }
            let (src, dst) = (&self.tables[from], &self.tables[to]);
            if src.live.columns.len() != dst.live.columns.len() {
                return Err(format!(
                    "the copy has {} columns for {} (SELECT * copies by position)",
                    src.live.columns.len(),
                    dst.live.columns.len()
                ));
            }
            let mut retyped = Vec::new();
            for (a, b) in src.live.columns.iter().zip(&dst.live.columns) {
                if a.name != b.name {
                    return Err(format!("the copy puts `{}` into `{}`", a.name, b.name));
                }
                if !a.data_type.eq_ignore_ascii_case(&b.data_type) {
                    retyped.push(b.name.clone());
                }
            }
            let ids = src.data.clone();
            self.tables[to].data = ids;
            state.retyped.extend(retyped);
            return Ok(());
        }
        if c.eat("DELETE") {
            c.expect(&["FROM"])?;
            let (_, target) = c.qualified()?;
            return if target == "sqlite_sequence" {
                Ok(())
            } else {
                Err("DELETE of rows".into())
            };
        }
        if c.eat("DROP") {
            c.expect(&["TABLE"])?;
            let (schema, name) = c.qualified()?;
            let t = self.resolve(schema, &name, tenant)?;
            let table = self.tables.remove(t);
            state.dropped_dependents.extend(table.live.dependents);
            return Ok(());
        }
        if c.eat("ALTER") {
            if c.eat("TYPE") {
                let (schema, name) = c.qualified()?;
                c.expect(&["ADD", "VALUE", "IF", "NOT", "EXISTS"])?;
                let label = c
                    .peek()
                    .filter(|t| t.kind == Kind::Str)
                    .ok_or("a label")?
                    .text
                    .clone();
                let key = (schema.ok_or("ALTER TYPE without a schema")?, name);
                let labels = self
                    .enums
                    .get_mut(&key)
                    .ok_or_else(|| format!("type {key:?} does not exist"))?;
                if !labels.contains(&label) {
                    labels.push(label);
                }
                let labels = labels.clone();
                let type_key = format!("{}.{}", key.0, key.1);
                for table in &mut self.tables {
                    for column in &mut table.live.columns {
                        if column.type_key == type_key {
                            column.enum_labels = Some(labels.clone());
                        }
                    }
                }
                return Ok(());
            }
            c.expect(&["TABLE"])?;
            let (schema, name) = c.qualified()?;
            let t = self.resolve(schema, &name, tenant)?;
            if !self.tables[t].live.kind.is_table() {
                return Err(format!("ALTER TABLE on a {}", self.tables[t].live.kind));
            }
            if !name.ends_with("__contract_rebuild") && !dialect.same_table(&name, &step.table) {
                return Err(format!("a step for `{}` alters `{name}`", step.table));
            }
            return self.alter_table(&mut c, t, step, state);
        }
        Err("a statement the model does not know".into())
    }

    /// `CREATE INDEX … ON <table>`: the table.
    fn dependent_owner(&self, sql: &str) -> Result<(Option<String>, String), String> {
        let mut c = Cursor::new(sql)?;
        while !c.done() {
            if c.eat("ON") {
                return c.qualified();
            }
            c.at += 1;
        }
        Err("no ON <table>".into())
    }
}
