//! Schema contracts for multi-tenant sqlx consumers.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod type_check;

#[doc(hidden)]
pub mod __private;

pub use contract_core::*;
#[cfg(feature = "derive")]
pub use contract_derive::Contract;
pub use type_check::{Decodable, TypeCheck, TypeChecks};
