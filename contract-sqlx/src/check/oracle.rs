//! The type oracle a fleet check diffs with: sqlx's verdict per column, plus the rules it
//! lacks.

use contract_core::plan::types::pg_typmod_change;
use contract_core::{ColumnContract, Dialect, LiveColumn, TableContract, TypeFit, TypeOracle};

use super::contracts::ContractEntry;
use crate::backend::{Backend, TypeMap};

/// One contract's type checks against the snapshot's resolved live types.
pub(super) struct Oracle<'a, DB: Backend> {
    pub entry: &'a ContractEntry<DB>,
    pub types: &'a TypeMap<DB>,
}

impl<DB: Backend> TypeOracle for Oracle<'_, DB> {
    fn fit(&self, _: &TableContract, column: &ColumnContract, live: &LiveColumn) -> TypeFit {
        match self.entry.check(&column.name) {
            Some(check) => {
                let mut fit = DB::fit(check, live, self.types);
                // PostgreSQL: a column narrower than the contract's declared SQL type
                // (`varchar(50)` where `sql_type = "varchar(100)"`) rejects longer writes.
                if let Some(declared) = column
                    .sql_type
                    .as_deref()
                    .filter(|_| DB::DIALECT == Dialect::Postgres)
                    && fit.compatible
                    && fit.risk.is_none()
                    && pg_typmod_change(&live.data_type, declared).is_some()
                {
                    fit.risk = Some(format!(
                        "{} (the contract declares {declared})",
                        live.data_type
                    ));
                }
                fit
            }
            // A contract without a type check for this column cannot be judged: say so.
            None => TypeFit {
                compatible: false,
                expected_sql_type: format!("no type check for {}", column.rust_type),
                risk: None,
            },
        }
    }
}
