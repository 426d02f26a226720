//! Code generation. Assumes the model passed validation; all paths are fully qualified
//! through the runtime's hidden `__private` module.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned as _;
use syn::{Ident, Path, Type};

use crate::ast::{Field, Input};
use crate::attr::{Backend, Json};
use crate::valid::{option_inner, ungroup};

/// The runtime path used by generated code: `#[contract(crate = "...")]` or `::contract_sqlx`.
pub(crate) fn krate(input_crate: Option<&Path>) -> TokenStream {
    match input_crate {
        Some(path) => path.to_token_stream(),
        None => quote!(::contract_sqlx),
    }
}

/// The tokens of `sqlx::<Backend>` and the `__private::if_<backend>!` macro gating it.
pub(crate) fn backend_tokens(krate: &TokenStream, backend: Backend) -> (TokenStream, TokenStream) {
    match backend {
        Backend::Postgres => (
            quote!(#krate::__private::sqlx::Postgres),
            quote!(#krate::__private::if_postgres),
        ),
        Backend::MySql => (
            quote!(#krate::__private::sqlx::MySql),
            quote!(#krate::__private::if_mysql),
        ),
        Backend::Sqlite => (
            quote!(#krate::__private::sqlx::Sqlite),
            quote!(#krate::__private::if_sqlite),
        ),
    }
}

/// `__private::<backend>_check`: `TypeCheck::of` behind a bound whose error names the backend.
fn check_fn(backend: Backend) -> Ident {
    let name = match backend {
        Backend::Postgres => "postgres_check",
        Backend::MySql => "mysql_check",
        Backend::Sqlite => "sqlite_check",
    };
    Ident::new(name, Span::call_site())
}

/// What one field contributes to the contract.
enum Part {
    /// One column.
    Column(Column),
    /// Every column of a flattened struct (`<Inner as Columns>::columns()`).
    Flatten { inner: TokenStream, optional: bool },
}

/// One column read by FromRow.
struct Column {
    name: String,
    /// The type FromRow decodes, spanned on the field's type.
    decode_ty: TokenStream,
    rust_type: String,
    optional: bool,
    json: bool,
    span: Span,
}

/// Expands a valid input into the `Columns`, `Contract` and per-backend `TypeChecks` impls.
pub(crate) fn expand(input: &Input) -> TokenStream {
    let krate = krate(input.attrs.krate.as_ref().map(|k| &k.value));
    let ident = &input.original.ident;
    let fields: Vec<_> = input
        .fields
        .iter()
        .filter(|f| f.attrs.skip.is_none())
        .collect();
    let parts: Vec<Part> = fields.iter().map(|f| part(input, f, &krate)).collect();

    let pushes = fields
        .iter()
        .zip(&parts)
        .map(|(field, part)| column_tokens(&krate, field, part));
    let columns_impl = quote! {
        #[automatically_derived]
        #[allow(unused_qualifications)]
        impl #krate::__private::Columns for #ident {
            #[allow(unused_mut)]
            fn columns() -> #krate::__private::Vec<#krate::__private::ColumnContract> {
                let mut columns = #krate::__private::Vec::new();
                #(#pushes)*
                columns
            }
        }
    };

    let contract_impl = input.attrs.table.as_ref().map(|table| {
        let struct_name = ident.to_string();
        let table = &table.value;
        let schema = match &input.attrs.schema {
            Some(schema) => {
                let schema = &schema.value;
                quote!(#krate::__private::Option::Some(#schema))
            }
            None => quote!(#krate::__private::Option::None),
        };
        quote! {
            #[automatically_derived]
            #[allow(unused_qualifications)]
            impl #krate::__private::Contract for #ident {
                const STRUCT_NAME: &'static str = #struct_name;
                const TABLE: &'static str = #table;
                const SCHEMA: #krate::__private::Option<&'static str> = #schema;
            }
        }
    });

    let backends = input
        .attrs
        .backends
        .as_ref()
        .map_or(&Backend::ALL[..], |b| &b.value[..]);
    let type_checks = backends.iter().map(|&backend| {
        let (db, gate) = backend_tokens(&krate, backend);
        let check_fn = check_fn(backend);
        let checks = parts.iter().map(|part| match part {
            Part::Column(column) => {
                let Column {
                    name,
                    decode_ty,
                    rust_type,
                    span,
                    ..
                } = column;
                quote_spanned! {*span=>
                    checks.push(#krate::__private::#check_fn::<#decode_ty>(#name, #rust_type));
                }
            }
            Part::Flatten { inner, .. } => quote! {
                checks.extend(<#inner as #krate::__private::TypeChecks<#db>>::type_checks());
            },
        });
        quote! {
            #gate! {
                #[automatically_derived]
                #[allow(unused_qualifications)]
                impl #krate::__private::TypeChecks<#db> for #ident {
                    #[allow(unused_mut)]
                    fn type_checks() -> #krate::__private::Vec<#krate::__private::TypeCheck<#db>> {
                        let mut checks = #krate::__private::Vec::new();
                        #(#checks)*
                        checks
                    }
                }
            }
        }
    });

    quote! {
        const _: () = {
            #columns_impl
            #contract_impl
            #(#type_checks)*
        };
    }
}

/// Classifies a non-skipped field the way FromRow reads it.
fn part(input: &Input, field: &Field, krate: &TokenStream) -> Part {
    let attrs = &field.attrs;
    let ty = field.ty;
    let optional = attrs.default.is_some() || input.attrs.default;
    if attrs.flatten.is_some() {
        let inner = match &attrs.try_from {
            Some(try_from) => try_from.value.to_token_stream(),
            None => ty.to_token_stream(),
        };
        return Part::Flatten { inner, optional };
    }
    let span = match &attrs.try_from {
        Some(try_from) => try_from.value.span(),
        None => ty.span(),
    };
    let json_ty = quote_spanned!(span=> #krate::__private::sqlx::types::Json);
    let (decode_ty, rust_type) = match (&attrs.try_from, attrs.json.as_ref().map(|j| j.value)) {
        (Some(try_from), Some(_)) => {
            let try_from = &try_from.value;
            (
                quote_spanned!(span=> #json_ty<#try_from>),
                format!("Json<{}>", render_type(try_from)),
            )
        }
        (Some(try_from), None) => (
            try_from.value.to_token_stream(),
            render_type(&try_from.value),
        ),
        (None, Some(Json::NonNullable)) => (
            quote_spanned!(span=> #json_ty<#ty>),
            format!("Json<{}>", render_type(ty)),
        ),
        (None, Some(Json::Nullable)) => (
            quote_spanned!(span=> #krate::__private::Option<#json_ty<#ty>>),
            format!("Option<Json<{}>>", render_type(ty)),
        ),
        (None, None) => (ty.to_token_stream(), render_type(ty)),
    };
    let json = attrs.json.is_some()
        || attrs
            .try_from
            .as_ref()
            .map_or(is_json_type(ty), |t| is_json_type(&t.value));
    Part::Column(Column {
        name: column_name(input, field),
        decode_ty,
        rust_type,
        optional,
        json,
        span,
    })
}

/// The label FromRow looks up: `rename`, else `rename_all(ident without r#)`, else the ident.
pub(crate) fn column_name(input: &Input, field: &Field) -> String {
    if let Some(rename) = &field.attrs.rename {
        return rename.value.clone();
    }
    let ident = field.ident.to_string();
    let ident = ident.trim_start_matches("r#");
    match input.attrs.rename_all {
        Some(rule) => rule.apply(ident),
        None => ident.to_owned(),
    }
}

/// `columns.push(..)` / `columns.extend(..)` for one field.
fn column_tokens(krate: &TokenStream, field: &Field, part: &Part) -> TokenStream {
    let private = quote!(#krate::__private);
    match part {
        Part::Flatten {
            inner,
            optional: false,
        } => quote! {
            columns.extend(<#inner as #private::Columns>::columns());
        },
        Part::Flatten {
            inner,
            optional: true,
        } => quote! {
            columns.extend(<#inner as #private::Columns>::columns().into_iter().map(|mut column| {
                column.optional = true;
                column
            }));
        },
        Part::Column(Column {
            name,
            decode_ty,
            rust_type,
            optional,
            json,
            ..
        }) => {
            let attrs = &field.attrs;
            let opt_string = |value: Option<&String>| match value {
                Some(s) => quote!(#private::Option::Some(#private::String::from(#s))),
                None => quote!(#private::Option::None),
            };
            let default_sql = opt_string(attrs.default_sql.as_ref().map(|a| &a.value));
            let sql_type = opt_string(attrs.sql_type.as_ref().map(|a| &a.value));
            let renamed_from = opt_string(attrs.renamed_from.as_ref().map(|a| &a.value));
            let enum_labels = match &attrs.enum_labels {
                Some(labels) => {
                    let labels = &labels.value;
                    quote!(#private::Option::Some(#private::Vec::from([#(#private::String::from(#labels)),*])))
                }
                None => quote!(#private::Option::None),
            };
            let primary_key = attrs.primary_key.is_some();
            let references = match &attrs.references {
                Some(target) => {
                    let target = &target.value;
                    let schema = opt_string(target.schema.as_ref());
                    let (table, column) = (&target.table, &target.column);
                    quote!(#private::Option::Some(#private::Reference {
                        schema: #schema,
                        table: #private::String::from(#table),
                        column: #private::String::from(#column),
                    }))
                }
                None => quote!(#private::Option::None),
            };
            quote! {
                columns.push({
                    let mut column = #private::ColumnContract::new(#name, #rust_type);
                    column.nullable = {
                        use #private::{NullableViaAny as _, NullableViaOption as _};
                        (&#private::NullProbe::<#decode_ty>::new()).nullable()
                    };
                    column.optional = #optional;
                    column.json = #json;
                    column.default_sql = #default_sql;
                    column.sql_type = #sql_type;
                    column.renamed_from = #renamed_from;
                    column.enum_labels = #enum_labels;
                    column.primary_key = #primary_key;
                    column.references = #references;
                    column
                });
            }
        }
    }
}

/// `true` for types that hold JSON, written `Json<T>`, `JsonValue` or `serde_json::Value`
/// (optionally inside `Option<..>`).
fn is_json_type(ty: &Type) -> bool {
    let ty = option_inner(ty).unwrap_or(ty);
    let Type::Path(path) = ungroup(ty) else {
        return false;
    };
    let segments = &path.path.segments;
    let Some(last) = segments.last() else {
        return false;
    };
    last.ident == "Json"
        || last.ident == "JsonValue"
        || (last.ident == "Value" && segments.iter().any(|s| s.ident == "serde_json"))
}

/// Renders a type readably: `Option<i64>`, `sqlx::types::Json<Payload>`, `[u8; 16]`.
pub(crate) fn render_type(ty: &Type) -> String {
    let mut s = ty.to_token_stream().to_string();
    for (from, to) in [
        (" :: ", "::"),
        (":: ", "::"),
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
        (" ;", ";"),
        ("& ", "&"),
    ] {
        s = s.replace(from, to);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctxt::Ctxt;

    fn expand_str(input: &syn::DeriveInput) -> String {
        let cx = Ctxt::new();
        let model = Input::from_syn(&cx, input).unwrap();
        model.validate(&cx);
        cx.check().unwrap();
        expand(&model).to_string()
    }

    #[test]
    fn render_type_drops_token_spacing() {
        let cases = [
            (quote!(Option<i64>), "Option<i64>"),
            (
                quote!(::sqlx::types::Json<Vec<Option<i64>>>),
                "::sqlx::types::Json<Vec<Option<i64>>>",
            ),
            (quote!([u8; 16]), "[u8; 16]"),
            (
                quote!(std::collections::HashMap<String, i64>),
                "std::collections::HashMap<String, i64>",
            ),
        ];
        for (tokens, expected) in cases {
            assert_eq!(render_type(&syn::parse2(tokens).unwrap()), expected);
        }
    }

    #[test]
    fn json_types_are_recognised_syntactically() {
        for json in [
            quote!(Json<P>),
            quote!(sqlx::types::Json<P>),
            quote!(serde_json::Value),
            quote!(Option<JsonValue>),
        ] {
            assert!(is_json_type(&syn::parse2(json).unwrap()));
        }
        for other in [quote!(Value), quote!(String), quote!(Option<i64>)] {
            assert!(!is_json_type(&syn::parse2(other).unwrap()));
        }
    }

    #[test]
    fn column_names_follow_from_row() {
        let input: syn::DeriveInput = syn::parse_quote! {
            #[contract(table = "t")]
            #[sqlx(rename_all = "camelCase")]
            struct T { user_id: i64, #[sqlx(rename = "Exact_Name")] renamed: i64, r#type: String }
        };
        let cx = Ctxt::new();
        let model = Input::from_syn(&cx, &input).unwrap();
        cx.check().unwrap();
        let names: Vec<_> = model
            .fields
            .iter()
            .map(|f| column_name(&model, f))
            .collect();
        assert_eq!(names, ["userId", "Exact_Name", "type"]);
    }

    #[test]
    fn expansion_orders_checks_like_columns_and_honours_crate_path() {
        let input: syn::DeriveInput = syn::parse_quote! {
            #[contract(table = "events", crate = "my::path", backends(sqlite))]
            struct Event { id: i64, #[sqlx(skip)] cache: u8, #[sqlx(flatten)] audit: Audit, #[sqlx(json)] p: Payload }
        };
        let out = expand_str(&input);
        assert!(!out.contains("contract_sqlx"), "{out}");
        assert!(
            out.contains("my :: path :: __private :: if_sqlite"),
            "{out}"
        );
        assert!(!out.contains("if_postgres"), "{out}");
        assert!(!out.contains("\"cache\""), "{out}");
        let checks = &out[out.find("if_sqlite").unwrap()..];
        let id = checks.find("sqlite_check :: < i64 > (\"id\"").unwrap();
        let audit = checks
            .find("< Audit as my :: path :: __private :: TypeChecks")
            .unwrap();
        let payload = checks.find("(\"p\" , \"Json<Payload>\")").unwrap();
        assert!(id < audit && audit < payload, "{out}");
    }
}
