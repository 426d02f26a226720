//! The traits `#[derive(Contract)]` implements.

use crate::model::{ColumnContract, TableContract};

/// A set of columns read by `sqlx::FromRow`: every `#[derive(Contract)]` struct, including
/// `#[contract(embedded)]` ones that are only used through `#[sqlx(flatten)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no schema contract",
    label = "this type does not derive `Contract`",
    note = "add `#[derive(Contract)]` to `{Self}` (with `#[contract(embedded)]` if it is only flattened into other structs)"
)]
pub trait Columns {
    /// The columns, in field order, with flattened structs inlined.
    fn columns() -> Vec<ColumnContract>;
}

/// A struct that reads one table: its [`TableContract`].
///
/// ```
/// use contract_core::{ColumnContract, Columns, Contract, TableContract};
///
/// struct Event;
/// impl Columns for Event {
///     fn columns() -> Vec<ColumnContract> { vec![ColumnContract::new("id", "i64")] }
/// }
/// impl Contract for Event {
///     const STRUCT_NAME: &'static str = "Event";
///     const TABLE: &'static str = "events";
/// }
/// assert_eq!(Event::contract().columns[0].name, "id");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no table contract",
    note = "add `#[derive(Contract)]` and `#[contract(table = \"...\")]` to `{Self}`"
)]
pub trait Contract: Columns {
    /// The Rust struct's name.
    const STRUCT_NAME: &'static str;
    /// The table read.
    const TABLE: &'static str;
    /// A fixed schema, if the table lives outside the tenants' schemas.
    const SCHEMA: Option<&'static str> = None;

    /// The whole table contract.
    #[must_use]
    fn contract() -> TableContract {
        TableContract {
            struct_name: Self::STRUCT_NAME.to_owned(),
            schema: Self::SCHEMA.map(str::to_owned),
            table: Self::TABLE.to_owned(),
            columns: Self::columns(),
        }
    }
}
