//! The contract model: what consumers expect of the schema.

mod column;
mod table;

pub use column::{ColumnContract, Reference};
pub use table::TableContract;
