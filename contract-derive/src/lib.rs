//! `#[derive(Contract)]` (placeholder while the derive is written).
use proc_macro::TokenStream;

/// Derives a schema contract.
#[proc_macro_derive(Contract, attributes(contract, sqlx))]
pub fn derive_contract(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}
