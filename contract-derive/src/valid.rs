//! Cross-field checks that need more than one attribute at a time. Checks of a single
//! attribute (syntax, duplicates, unknown keys) happen while parsing, in `attr.rs`.

use syn::{GenericArgument, PathArguments, Type};

use crate::ast::{Field, Input};
use crate::attr::Json;
use crate::ctxt::Ctxt;

impl Input<'_> {
    /// Runs every check, recording failures in `cx`.
    pub(crate) fn validate(&self, cx: &Ctxt) {
        check_table(cx, self);
        for field in &self.fields {
            check_skip_has_no_column_attrs(cx, field);
            check_flatten_has_no_column_attrs(cx, field);
            check_flatten_without_json(cx, field);
            check_try_from_without_json_nullable(cx, field);
            check_json_nullable_is_option(cx, field);
        }
    }
}

// A contract reads one table, unless it is only flattened into others:
//
//     #[derive(Contract)]
//     #[contract(table = "events")]   // or #[contract(embedded)], never both
//     struct Event { .. }
fn check_table(cx: &Ctxt, input: &Input) {
    let attrs = &input.attrs;
    match (&attrs.table, &attrs.embedded) {
        (None, None) if !attrs.table_written => cx.error_spanned_by(
            &input.original.ident,
            "missing #[contract(table = \"...\")]; name the table this struct reads, \
             or add #[contract(embedded)] if it is only used through #[sqlx(flatten)]",
        ),
        (Some(table), Some(_)) => cx.error_spanned_by(
            &table.tokens,
            "#[contract(embedded)] structs have no table; remove #[contract(table = ...)] or #[contract(embedded)]",
        ),
        _ => {}
    }
    if let (Some(schema), Some(_)) = (&attrs.schema, &attrs.embedded) {
        cx.error_spanned_by(
            &schema.tokens,
            "#[contract(embedded)] structs have no table, so no schema; remove #[contract(schema = ...)]",
        );
    }
}

// A skipped field reads no column, so column hints make no sense on it:
//
//     #[sqlx(skip)]
//     #[contract(primary_key)]   // error
//     cache: Vec<u8>,
fn check_skip_has_no_column_attrs(cx: &Ctxt, field: &Field) {
    if field.attrs.skip.is_none() {
        return;
    }
    for (tokens, syntax) in field.attrs.contract_column_attrs() {
        cx.error_spanned_by(
            tokens,
            format!("{syntax} has no effect on a #[sqlx(skip)] field, which reads no column; remove one of them"),
        );
    }
}

// A flattened field is a group of columns; hints belong on the inner struct's fields:
//
//     #[sqlx(flatten)]
//     #[contract(primary_key)]   // error
//     audit: Audit,
fn check_flatten_has_no_column_attrs(cx: &Ctxt, field: &Field) {
    if field.attrs.flatten.is_none() || field.attrs.skip.is_some() {
        return;
    }
    for (tokens, syntax) in field.attrs.contract_column_attrs() {
        cx.error_spanned_by(
            tokens,
            format!(
                "{syntax} is not allowed on a #[sqlx(flatten)] field, which stands for several columns; \
                 put it on the column's field inside the flattened struct"
            ),
        );
    }
}

// FromRow rejects `json` together with `flatten`:
//
//     #[sqlx(flatten, json)]   // error
//     audit: Audit,
fn check_flatten_without_json(cx: &Ctxt, field: &Field) {
    if let (Some(_), Some(json)) = (&field.attrs.flatten, &field.attrs.json) {
        cx.error_spanned_by(
            &json.tokens,
            "#[sqlx(json)] cannot be combined with #[sqlx(flatten)]; use one: flatten reads the inner struct's columns, \
             json reads one JSON column",
        );
    }
}

// FromRow cannot combine `try_from` with `json(nullable)` (its macro panics):
//
//     #[sqlx(try_from = "Raw", json(nullable))]   // error
//     payload: Option<Payload>,
fn check_try_from_without_json_nullable(cx: &Ctxt, field: &Field) {
    if let (Some(_), Some(json)) = (&field.attrs.try_from, &field.attrs.json)
        && json.value == Json::Nullable
    {
        cx.error_spanned_by(
            &json.tokens,
            "#[sqlx(json(nullable))] cannot be combined with #[sqlx(try_from = ...)]; \
             use #[sqlx(json)] with try_from, or drop try_from",
        );
    }
}

// FromRow unwraps `json(nullable)` into the field with `.and_then(|j| j.0)`, so the field
// must be an `Option`:
//
//     #[sqlx(json(nullable))]
//     payload: Payload,   // error: must be Option<Payload>
fn check_json_nullable_is_option(cx: &Ctxt, field: &Field) {
    if let Some(json) = &field.attrs.json
        && json.value == Json::Nullable
        && option_inner(field.ty).is_none()
    {
        cx.error_spanned_by(
            field.ty,
            "#[sqlx(json(nullable))] requires an Option<_> field; change the type to Option<...>, \
             or use #[sqlx(json)] for a non-null column",
        );
    }
}

/// `Some(T)` when `ty` is written `Option<T>` (any path ending in `Option`).
pub(crate) fn option_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ungroup(ty) else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != "Option" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(inner) if args.args.len() == 1 => Some(inner),
        _ => None,
    }
}

/// Looks through invisible groups and parentheses.
pub(crate) fn ungroup(mut ty: &Type) -> &Type {
    loop {
        match ty {
            Type::Group(group) => ty = &group.elem,
            Type::Paren(paren) => ty = &paren.elem,
            _ => return ty,
        }
    }
}
