//! `#[derive(Contract)]`: the schema contract of a `sqlx::FromRow` struct. Use it through
//! `contract_sqlx::Contract`; the pipeline is parse (`attr`, `ast`) → check (`valid`) →
//! generate (`expand`), or `fallback` when the input is invalid.
#![forbid(unsafe_code)]
#![warn(clippy::pedantic)]
#![allow(
    clippy::doc_markdown,
    clippy::enum_variant_names,
    clippy::manual_assert,
    clippy::single_match_else,
    clippy::too_many_lines
)]

mod ast;
mod attr;
mod ctxt;
mod expand;
mod fallback;
mod symbol;
mod valid;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

#[doc = include_str!("derive.md")]
#[proc_macro_derive(Contract, attributes(contract, sqlx))]
pub fn derive_contract(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    derive(&input).into()
}

/// parse → validate → expand; on any error, the errors plus stub impls.
fn derive(input: &DeriveInput) -> proc_macro2::TokenStream {
    let cx = ctxt::Ctxt::new();
    let model = ast::Input::from_syn(&cx, input);
    if let Some(model) = &model {
        model.validate(&cx);
    }
    let krate = expand::krate(
        model
            .as_ref()
            .and_then(|m| m.attrs.krate.as_ref())
            .map(|k| &k.value),
    );
    match (cx.check(), model) {
        (Ok(()), Some(model)) => expand::expand(&model),
        (Err(error), _) => fallback::expand(input, &krate, &error),
        (Ok(()), None) => {
            unreachable!("Input::from_syn returns None only after recording an error")
        }
    }
}
