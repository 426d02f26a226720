//! `ALTER TABLE` in the model: add, rename and retype columns, constraints the step adds
//! and drops, and the rename of a rebuilt table.

use contract_core::Dialect;
use contract_core::LiveForeignKey;
use contract_core::plan::PlanStep;

use super::super::sql::{Cursor, Kind, column_def, tokenize};
use super::{Model, StepState};

impl Model {
    pub(super) fn alter_table(
        &mut self,
        c: &mut Cursor<'_>,
        t: usize,
        step: &PlanStep,
        state: &mut StepState,
    ) -> Result<(), String> {
        let dialect = self.dialect;
        let column_of = |model: &Self, name: &str| {
            model.tables[t]
                .live
                .columns
                .iter()
                .position(|col| dialect.same_column(&col.name, name))
                .ok_or_else(|| format!("column `{name}` does not exist"))
        };
        let renames = self.renames.clone();
        let step_column = |name: &str| -> Result<(), String> {
            match &step.column {
                Some(col)
                    if dialect.same_column(col, name)
                        || renames.iter().any(|(c, old)| c == col && old == name) =>
                {
                    Ok(())
                }
                _ => Err(format!(
                    "the step for column {:?} changes `{name}`",
                    step.column
                )),
            }
        };
        if c.eat("ADD") {
            if c.eat("COLUMN") {
                let start = c.peek().map_or(0, |t| t.start);
                let def = column_def(c)?;
                let end = c.peek().map_or(c.sql.len(), |t| t.start);
                if c.eat_punct(',') {
                    c.expect(&["ALGORITHM"])?;
                    c.expect_punct('=')?;
                    c.expect(&["INSTANT"])?;
                }
                if !c.done() {
                    return Err("text after the column definition".into());
                }
                step_column(&def.name)?;
                if column_of(self, &def.name).is_ok() {
                    return Err(format!("column `{}` already exists", def.name));
                }
                let column = self.live_column(&def)?;
                let id = self.fresh();
                let table = &mut self.tables[t];
                if let Some(definition) = &mut table.live.definition {
                    // SQLite appends the definition as written to the stored CREATE TABLE.
                    let close = definition.rfind(')').ok_or("a definition without )")?;
                    definition.insert_str(close, &format!(", {}", c.sql[start..end].trim_end()));
                }
                table.live.columns.push(column);
                table.data.push(id);
                return Ok(());
            }
            c.expect(&["CONSTRAINT"])?;
            let constraint = c.name()?;
            if c.eat("CHECK") {
                c.group()?;
                c.expect(&["NOT", "VALID"])?;
                state.checks_added.insert(constraint);
                return Ok(());
            }
            c.expect(&["FOREIGN", "KEY"])?;
            let column = c.group()?.trim().to_owned();
            c.expect(&["REFERENCES"])?;
            let (ref_schema, ref_table) = c.qualified()?;
            let ref_column = c.group()?.trim().to_owned();
            c.expect(&["NOT", "VALID"])?;
            let unq = |s: &str| {
                tokenize(s).map(|t| t.first().map(|t| t.text.clone()).unwrap_or_default())
            };
            let ref_schema = ref_schema.ok_or("REFERENCES without a schema")?;
            if self.find(&ref_schema, &ref_table).is_none() {
                return Err(format!(
                    "referenced relation {ref_schema}.{ref_table} does not exist"
                ));
            }
            let fk = LiveForeignKey {
                column: unq(&column)?,
                ref_schema,
                ref_table,
                ref_column: unq(&ref_column)?,
            };
            step_column(&fk.column)?;
            self.tables[t].live.foreign_keys.push(fk);
            state.checks_added.insert(constraint);
            return Ok(());
        }
        if c.eat("VALIDATE") {
            c.expect(&["CONSTRAINT"])?;
            let constraint = c.name()?;
            return if state.checks_added.contains(&constraint) {
                Ok(())
            } else {
                Err(format!("constraint `{constraint}` does not exist"))
            };
        }
        if c.eat("DROP") {
            c.expect(&["CONSTRAINT"])?;
            let constraint = c.name()?;
            return if state.checks_added.remove(&constraint) {
                Ok(())
            } else {
                Err(format!(
                    "drops constraint `{constraint}`, which the step did not add"
                ))
            };
        }
        if c.eat("RENAME") {
            if c.eat("TO") {
                let (_, new) = c.qualified()?;
                let old = self.tables[t].live.name.clone();
                if old.ends_with("__contract_rebuild") {
                    let schema = self.tables[t].live.schema.clone();
                    if self.find(&schema, &new).is_some() {
                        return Err(format!("relation `{new}` already exists"));
                    }
                } else {
                    return Err("renames a table".into());
                }
                let table = &mut self.tables[t];
                table.live.name = new.clone();
                if let Some(definition) = &mut table.live.definition {
                    *definition = rename_in(definition, &old, &new, true)?;
                }
                return Ok(());
            }
            c.expect(&["COLUMN"])?;
            let old = c.name()?;
            c.expect(&["TO"])?;
            let new = c.name()?;
            step_column(&new)?;
            let i = column_of(self, &old)?;
            if let Ok(j) = column_of(self, &new)
                && j != i
            {
                return Err(format!("column `{new}` already exists"));
            }
            let table = &mut self.tables[t];
            table.live.columns[i].name = new.clone();
            for key in &mut table.live.primary_key {
                if dialect.same_column(key, &old) {
                    key.clone_from(&new);
                }
            }
            for fk in &mut table.live.foreign_keys {
                if dialect.same_column(&fk.column, &old) {
                    fk.column.clone_from(&new);
                }
            }
            if let Some(definition) = &mut table.live.definition {
                *definition = rename_in(definition, &old, &new, false)?;
            }
            return Ok(());
        }
        c.expect(&["ALTER", "COLUMN"])?;
        let name = c.name()?;
        step_column(&name)?;
        let i = column_of(self, &name)?;
        if c.eat("SET") {
            c.expect(&["NOT", "NULL"])?;
            self.tables[t].live.columns[i].nullable = false;
            return Ok(());
        }
        c.expect(&["TYPE"])?;
        let start = c.peek().map_or(0, |t| t.start);
        while c.peek().is_some_and(|t| !t.is("USING")) {
            c.at += 1;
        }
        let end = c.peek().map_or(c.sql.len(), |t| t.start);
        let written = c.sql[start..end].trim().to_owned();
        let from = self.tables[t].live.columns[i].data_type.clone();
        if let Some(why) = super::super::narrowing::narrows(&from, &written) {
            return Err(format!("{from} -> {written} {why}"));
        }
        let (data_type, type_key, labels) = self.column_type(&written)?;
        let column = &mut self.tables[t].live.columns[i];
        column.data_type = data_type;
        column.type_key = type_key;
        column.enum_labels = labels;
        let _ = state;
        Ok(())
    }
}

/// `definition` with the name `old` (a column, or the table when `table`) renamed.
fn rename_in(definition: &str, old: &str, new: &str, table: bool) -> Result<String, String> {
    let q = Dialect::Sqlite.quote(new).map_err(|e| e.to_string())?;
    let toks = tokenize(definition)?;
    let mut out = String::new();
    let mut at = 0;
    for (i, tok) in toks.iter().enumerate() {
        let is_name = if table {
            i == 2
        } else {
            tok.kind == Kind::Ident && tok.text.eq_ignore_ascii_case(old)
        };
        if is_name {
            out.push_str(&definition[at..tok.start]);
            out.push_str(&q);
            at = tok.end;
        }
    }
    out.push_str(&definition[at..]);
    Ok(out)
}
