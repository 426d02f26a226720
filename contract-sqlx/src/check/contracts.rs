//! The set of contracts a guard checks, with their type checks for one backend.

use contract_core::{Contract, TableContract};
use sqlx::Database;

use crate::check::{TypeCheck, TypeChecks};

/// A contract with sqlx's type checks for backend `DB`.
#[derive(Debug)]
pub struct ContractEntry<DB: Database> {
    /// The table contract.
    pub contract: TableContract,
    /// One type check per column, in column order.
    pub checks: Vec<TypeCheck<DB>>,
}

impl<DB: Database> Clone for ContractEntry<DB> {
    fn clone(&self) -> Self {
        Self {
            contract: self.contract.clone(),
            checks: self.checks.clone(),
        }
    }
}

impl<DB: Database> Clone for ContractSet<DB> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
        }
    }
}

impl<DB: Database> ContractEntry<DB> {
    /// The type check for `column`.
    #[must_use]
    pub fn check(&self, column: &str) -> Option<&TypeCheck<DB>> {
        self.checks.iter().find(|c| c.column() == column)
    }
}

/// The contracts to check, in the order they were added.
///
/// ```
/// # #[cfg(feature = "sqlite")] {
/// use contract_sqlx::{Contract, check::ContractSet};
///
/// #[derive(Contract)]
/// #[contract(table = "events")]
/// struct Event { id: i64 }
///
/// let set = ContractSet::<sqlx::Sqlite>::new().with::<Event>();
/// assert_eq!(set.entries()[0].contract.table, "events");
/// # }
/// ```
#[derive(Debug)]
pub struct ContractSet<DB: Database> {
    entries: Vec<ContractEntry<DB>>,
}

impl<DB: Database> Default for ContractSet<DB> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<DB: Database> ContractSet<DB> {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the contract of `T`.
    #[must_use]
    pub fn with<T: Contract + TypeChecks<DB>>(mut self) -> Self {
        self.push::<T>();
        self
    }

    /// Adds the contract of `T`.
    pub fn push<T: Contract + TypeChecks<DB>>(&mut self) {
        self.entries.push(ContractEntry {
            contract: T::contract(),
            checks: T::type_checks(),
        });
    }

    /// Adds a contract built at run time (for example one generated per Rust type in a
    /// conformance test, or loaded from configuration).
    pub fn push_entry(&mut self, entry: ContractEntry<DB>) {
        self.entries.push(entry);
    }

    /// The contracts.
    #[must_use]
    pub fn entries(&self) -> &[ContractEntry<DB>] {
        &self.entries
    }

    /// `Struct -> table` for each contract, as reports list them.
    #[must_use]
    pub fn describe(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| format!("{} -> {}", e.contract.struct_name, e.contract.table))
            .collect()
    }

    /// Distinct table names (for catalog filters).
    #[must_use]
    pub fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .entries
            .iter()
            .map(|e| e.contract.table.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Distinct column names, including `renamed_from` names (for catalog filters).
    #[must_use]
    pub fn column_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .entries
            .iter()
            .flat_map(|e| &e.contract.columns)
            .flat_map(|c| std::iter::once(c.name.clone()).chain(c.renamed_from.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Fixed schemas named by contracts (`#[contract(schema = "...")]`).
    #[must_use]
    pub fn fixed_schemas(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .entries
            .iter()
            .filter_map(|e| e.contract.schema.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}
