//! A borrowed, typed model of the input; every node keeps `original` so later stages can
//! point errors at the user's code.

use syn::{Data, DeriveInput, Fields, Ident, Type};

use crate::attr::{Container, FieldAttrs};
use crate::ctxt::Ctxt;

/// A struct with named fields, the only input `#[derive(Contract)]` accepts.
pub(crate) struct Input<'a> {
    /// The whole derive input.
    pub original: &'a DeriveInput,
    /// The struct's attributes.
    pub attrs: Container,
    /// The named fields, in declaration order.
    pub fields: Vec<Field<'a>>,
}

/// One named field.
pub(crate) struct Field<'a> {
    /// The field as written (kept for spans, as in thiserror's model).
    #[allow(dead_code)]
    pub original: &'a syn::Field,
    /// Its name.
    pub ident: &'a Ident,
    /// Its type.
    pub ty: &'a Type,
    /// Its attributes.
    pub attrs: FieldAttrs,
}

impl<'a> Input<'a> {
    /// Builds the model, recording in `cx` every problem found on the way. Returns `None`
    /// when the input has no shape a contract can describe (enum, union, tuple or unit
    /// struct); attributes are still parsed so their errors are reported too.
    pub(crate) fn from_syn(cx: &Ctxt, original: &'a DeriveInput) -> Option<Self> {
        let attrs = Container::from_ast(cx, &original.attrs);
        if !original.generics.params.is_empty() {
            cx.error_spanned_by(
                &original.generics,
                "generic structs are not supported by #[derive(Contract)]; a contract describes one concrete row type, \
                 so derive it on a struct without type, lifetime or const parameters",
            );
        }
        let named = match &original.data {
            Data::Struct(data) => match &data.fields {
                Fields::Named(named) => named,
                Fields::Unnamed(fields) => {
                    cx.error_spanned_by(
                        fields,
                        "tuple structs are not supported by #[derive(Contract)]; FromRow reads them by position, \
                         so use a struct with named fields",
                    );
                    return None;
                }
                Fields::Unit => {
                    cx.error_spanned_by(
                        &original.ident,
                        "unit structs are not supported by #[derive(Contract)]; use a struct with named fields",
                    );
                    return None;
                }
            },
            Data::Enum(data) => {
                cx.error_spanned_by(
                    data.enum_token,
                    "enums are not supported by #[derive(Contract)]; use a struct with named fields",
                );
                return None;
            }
            Data::Union(data) => {
                cx.error_spanned_by(
                    data.union_token,
                    "unions are not supported by #[derive(Contract)]; use a struct with named fields",
                );
                return None;
            }
        };
        let fields = named
            .named
            .iter()
            .filter_map(|field| {
                Some(Field {
                    original: field,
                    ident: field.ident.as_ref()?,
                    ty: &field.ty,
                    attrs: FieldAttrs::from_ast(cx, &field.attrs),
                })
            })
            .collect();
        Some(Input {
            original,
            attrs,
            fields,
        })
    }
}
