//! Attribute parsing: `#[contract(...)]` and the `#[sqlx(...)]` keys `FromRow` reads.
//!
//! None of these functions return a `Result`. Unknown, malformed or duplicated attributes
//! are recorded in the [`Ctxt`] and otherwise ignored, so the user sees every bad attribute
//! of the struct at once rather than only the first. `#[sqlx(...)]` is parsed with
//! `FromRow`'s own tolerance: unknown keys are skipped (FromRow reports them itself).

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::{Attribute, Expr, ExprLit, Lit, LitStr, Token};

use crate::ctxt::Ctxt;
use crate::symbol::{
    BACKENDS, CONTRACT, CRATE, DEFAULT, EMBEDDED, ENUM_LABELS, FLATTEN, JSON, MYSQL, NULLABLE,
    POSTGRES, PRIMARY_KEY, REFERENCES, RENAME, RENAME_ALL, RENAMED_FROM, SCHEMA, SKIP, SQL_TYPE,
    SQLITE, SQLX, Symbol, TABLE, TRY_FROM,
};

/// A parsed value together with the tokens it was written with, for error spans.
pub(crate) struct Spanned<T> {
    /// The tokens of the key (and value) in the user's source.
    pub tokens: TokenStream,
    /// The parsed value.
    pub value: T,
}

/// One attribute key that may be given at most once.
struct Attr<'c, T> {
    cx: &'c Ctxt,
    ns: Symbol,
    name: Symbol,
    value: Option<Spanned<T>>,
}

impl<'c, T> Attr<'c, T> {
    fn none(cx: &'c Ctxt, ns: Symbol, name: Symbol) -> Self {
        Attr {
            cx,
            ns,
            name,
            value: None,
        }
    }

    fn set<A: ToTokens>(&mut self, obj: A, value: T) {
        let tokens = obj.into_token_stream();
        if self.value.is_some() {
            self.cx.error_spanned_by(
                tokens,
                format!("duplicate #[{}({})] attribute", self.ns, self.name),
            );
        } else {
            self.value = Some(Spanned { tokens, value });
        }
    }

    fn get(self) -> Option<Spanned<T>> {
        self.value
    }
}

/// The case conversions of `#[sqlx(rename_all = "...")]`, exactly sqlx's seven.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum RenameAll {
    /// `lowercase`
    LowerCase,
    /// `snake_case`
    SnakeCase,
    /// `UPPERCASE`
    UpperCase,
    /// `SCREAMING_SNAKE_CASE`
    ScreamingSnakeCase,
    /// `kebab-case`
    KebabCase,
    /// `camelCase`
    CamelCase,
    /// `PascalCase`
    PascalCase,
}

/// The accepted `rename_all` values, for error messages.
pub(crate) const RENAME_ALL_VALUES: &str = "\"lowercase\", \"snake_case\", \"UPPERCASE\", \"SCREAMING_SNAKE_CASE\", \"kebab-case\", \"camelCase\", \"PascalCase\"";

impl RenameAll {
    /// Parses a `rename_all` value; `None` for anything sqlx rejects.
    pub(crate) fn from_value(value: &str) -> Option<Self> {
        Some(match value {
            "lowercase" => RenameAll::LowerCase,
            "snake_case" => RenameAll::SnakeCase,
            "UPPERCASE" => RenameAll::UpperCase,
            "SCREAMING_SNAKE_CASE" => RenameAll::ScreamingSnakeCase,
            "kebab-case" => RenameAll::KebabCase,
            "camelCase" => RenameAll::CamelCase,
            "PascalCase" => RenameAll::PascalCase,
            _ => return None,
        })
    }

    /// Applies the rule with the same heck 0.5 functions as `sqlx-macros-core`.
    pub(crate) fn apply(self, name: &str) -> String {
        use heck::{
            ToKebabCase, ToLowerCamelCase, ToShoutySnakeCase, ToSnakeCase, ToUpperCamelCase,
        };
        match self {
            RenameAll::LowerCase => name.to_lowercase(),
            RenameAll::SnakeCase => name.to_snake_case(),
            RenameAll::UpperCase => name.to_uppercase(),
            RenameAll::ScreamingSnakeCase => name.to_shouty_snake_case(),
            RenameAll::KebabCase => name.to_kebab_case(),
            RenameAll::CamelCase => name.to_lower_camel_case(),
            RenameAll::PascalCase => name.to_upper_camel_case(),
        }
    }
}

/// A database backend a contract generates type checks for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// `sqlx::Postgres`
    Postgres,
    /// `sqlx::MySql`
    MySql,
    /// `sqlx::Sqlite`
    Sqlite,
}

impl Backend {
    /// Every backend, in the order impls are generated.
    pub(crate) const ALL: [Backend; 3] = [Backend::Postgres, Backend::MySql, Backend::Sqlite];
}

/// `#[sqlx(json)]` or `#[sqlx(json(nullable))]`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Json {
    /// `#[sqlx(json)]`: decoded as `Json<FieldTy>`.
    NonNullable,
    /// `#[sqlx(json(nullable))]`: decoded as `Option<Json<FieldTy>>`.
    Nullable,
}

/// A parsed `#[contract(references = "...")]` target: the runtime's own type and grammar,
/// so the derive accepts exactly what `contract_core::Reference::parse` accepts.
pub(crate) use contract_core::Reference as ReferenceTarget;

/// Attributes on the struct.
pub(crate) struct Container {
    /// `#[contract(table = "...")]`
    pub table: Option<Spanned<String>>,
    /// `true` when a `table` key was written, even with an invalid value (no follow-on
    /// "missing table" error then).
    pub table_written: bool,
    /// `#[contract(schema = "...")]`
    pub schema: Option<Spanned<String>>,
    /// `#[contract(crate = "...")]`
    pub krate: Option<Spanned<syn::Path>>,
    /// `#[contract(embedded)]`
    pub embedded: Option<Spanned<()>>,
    /// `#[contract(backends(...))]`
    pub backends: Option<Spanned<Vec<Backend>>>,
    /// `#[sqlx(rename_all = "...")]`
    pub rename_all: Option<RenameAll>,
    /// `#[sqlx(default)]`
    pub default: bool,
}

const CONTAINER_KEYS: &str = "table, schema, crate, embedded, backends";
const FIELD_KEYS: &str = "default, sql_type, primary_key, references, renamed_from, enum_labels";

impl Container {
    /// Parses the struct's `#[contract(...)]` and `#[sqlx(...)]` attributes.
    pub(crate) fn from_ast(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut table = Attr::none(cx, CONTRACT, TABLE);
        let mut table_written = false;
        let mut schema = Attr::none(cx, CONTRACT, SCHEMA);
        let mut krate = Attr::none(cx, CONTRACT, CRATE);
        let mut embedded = Attr::none(cx, CONTRACT, EMBEDDED);
        let mut backends = Attr::none(cx, CONTRACT, BACKENDS);
        let mut rename_all = Attr::none(cx, SQLX, RENAME_ALL);
        let mut default = Attr::none(cx, SQLX, DEFAULT);

        for attr in attrs {
            if attr.path() == CONTRACT {
                let result = attr.parse_nested_meta(|meta| {
                    if meta.path == TABLE {
                        // #[contract(table = "events")]
                        table_written = true;
                        if let Some(s) = get_lit_str(cx, CONTRACT, TABLE, &meta)? {
                            table.set(&meta.path, s.value());
                        }
                    } else if meta.path == SCHEMA {
                        // #[contract(schema = "audit")]
                        if let Some(s) = get_lit_str(cx, CONTRACT, SCHEMA, &meta)? {
                            schema.set(&meta.path, s.value());
                        }
                    } else if meta.path == CRATE {
                        // #[contract(crate = "my_crate::contract")]
                        if let Some(s) = get_lit_str(cx, CONTRACT, CRATE, &meta)? {
                            match s.parse::<syn::Path>() {
                                Ok(path) => krate.set(&meta.path, path),
                                Err(_) => cx.error_spanned_by(
                                    &s,
                                    "expected a path, as in #[contract(crate = \"my_crate::contract_sqlx\")]",
                                ),
                            }
                        }
                    } else if meta.path == EMBEDDED {
                        // #[contract(embedded)]
                        embedded.set(&meta.path, ());
                    } else if meta.path == BACKENDS {
                        // #[contract(backends(postgres, mysql, sqlite))]
                        let list = parse_backends(cx, &meta)?;
                        backends.set(&meta.path, list);
                    } else if is_field_key(&meta.path) {
                        // #[contract(primary_key)] and the other field keys
                        skip_meta_value(&meta)?;
                        cx.error_spanned_by(
                            &meta.path,
                            format!("not expected here; {} belongs on a field", syntax(&meta.path)),
                        );
                    } else {
                        let path = meta.path.to_token_stream().to_string().replace(' ', "");
                        skip_meta_value(&meta)?;
                        cx.error_spanned_by(
                            &meta.path,
                            format!("unknown contract attribute `{path}`; expected one of {CONTAINER_KEYS}"),
                        );
                    }
                    Ok(())
                });
                if let Err(err) = result {
                    cx.syn_error(err);
                }
            } else if attr.path() == SQLX {
                let result = attr.parse_nested_meta(|meta| {
                    if meta.path == RENAME_ALL {
                        // #[sqlx(rename_all = "camelCase")]
                        let s: LitStr = meta.value()?.parse()?;
                        match RenameAll::from_value(&s.value()) {
                            Some(rule) => rename_all.set(&s, rule),
                            None => cx.error_spanned_by(
                                &s,
                                format!(
                                    "unknown #[sqlx(rename_all)] value {:?}; expected one of {RENAME_ALL_VALUES}",
                                    s.value()
                                ),
                            ),
                        }
                    } else if meta.path == DEFAULT {
                        // #[sqlx(default)]
                        default.set(&meta.path, ());
                    } else {
                        // #[sqlx(transparent)], #[sqlx(type_name = "...")], #[sqlx(no_pg_array)]:
                        // no effect on FromRow, so none on the contract.
                        skip_meta_value(&meta)?;
                    }
                    Ok(())
                });
                if let Err(err) = result {
                    cx.syn_error(err);
                }
            }
        }

        Container {
            table: table.get(),
            table_written,
            schema: schema.get(),
            krate: krate.get(),
            embedded: embedded.get(),
            backends: backends.get(),
            rename_all: rename_all.get().map(|s| s.value),
            default: default.get().is_some(),
        }
    }
}

/// Attributes on a field.
pub(crate) struct FieldAttrs {
    /// `#[contract(default = "...")]`
    pub default_sql: Option<Spanned<String>>,
    /// `#[contract(sql_type = "...")]`
    pub sql_type: Option<Spanned<String>>,
    /// `#[contract(enum_labels = "a, b")]`: the labels the field's enum type decodes.
    pub enum_labels: Option<Spanned<Vec<String>>>,
    /// `#[contract(primary_key)]`
    pub primary_key: Option<Spanned<()>>,
    /// `#[contract(references = "...")]`
    pub references: Option<Spanned<ReferenceTarget>>,
    /// `#[contract(renamed_from = "...")]`
    pub renamed_from: Option<Spanned<String>>,
    /// `#[sqlx(rename = "...")]`
    pub rename: Option<Spanned<String>>,
    /// `#[sqlx(default)]`
    pub default: Option<Spanned<()>>,
    /// `#[sqlx(skip)]`
    pub skip: Option<Spanned<()>>,
    /// `#[sqlx(flatten)]`
    pub flatten: Option<Spanned<()>>,
    /// `#[sqlx(try_from = "...")]`
    pub try_from: Option<Spanned<syn::Type>>,
    /// `#[sqlx(json)]` / `#[sqlx(json(nullable))]`
    pub json: Option<Spanned<Json>>,
}

impl FieldAttrs {
    /// Parses a field's `#[contract(...)]` and `#[sqlx(...)]` attributes.
    pub(crate) fn from_ast(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut default_sql = Attr::none(cx, CONTRACT, DEFAULT);
        let mut sql_type = Attr::none(cx, CONTRACT, SQL_TYPE);
        let mut enum_labels = Attr::none(cx, CONTRACT, ENUM_LABELS);
        let mut primary_key = Attr::none(cx, CONTRACT, PRIMARY_KEY);
        let mut references = Attr::none(cx, CONTRACT, REFERENCES);
        let mut renamed_from = Attr::none(cx, CONTRACT, RENAMED_FROM);
        let mut rename = Attr::none(cx, SQLX, RENAME);
        let mut default = Attr::none(cx, SQLX, DEFAULT);
        let mut skip = Attr::none(cx, SQLX, SKIP);
        let mut flatten = Attr::none(cx, SQLX, FLATTEN);
        let mut try_from = Attr::none(cx, SQLX, TRY_FROM);
        let mut json = Attr::none(cx, SQLX, JSON);

        for attr in attrs {
            if attr.path() == CONTRACT {
                let result = attr.parse_nested_meta(|meta| {
                    if meta.path == DEFAULT {
                        // #[contract(default = "'{}'")]
                        if let Some(s) = get_lit_str(cx, CONTRACT, DEFAULT, &meta)? {
                            default_sql.set(&meta.path, s.value());
                        }
                    } else if meta.path == SQL_TYPE {
                        // #[contract(sql_type = "jsonb")]
                        if let Some(s) = get_lit_str(cx, CONTRACT, SQL_TYPE, &meta)? {
                            sql_type.set(&meta.path, s.value());
                        }
                    } else if meta.path == ENUM_LABELS {
                        // #[contract(enum_labels = "happy, sad")]
                        if let Some(s) = get_lit_str(cx, CONTRACT, ENUM_LABELS, &meta)? {
                            let labels: Vec<String> = s.value().split(',').map(|l| l.trim().to_owned()).collect();
                            if labels.iter().any(String::is_empty) {
                                cx.error_spanned_by(&s, "#[contract(enum_labels = ...)] expects comma-separated labels, for example \"happy, sad\"");
                            } else {
                                enum_labels.set(&meta.path, labels);
                            }
                        }
                    } else if meta.path == PRIMARY_KEY {
                        // #[contract(primary_key)]
                        primary_key.set(&meta.path, ());
                    } else if meta.path == REFERENCES {
                        // #[contract(references = "users(id)")]
                        // #[contract(references = "audit.users(id)")]
                        if let Some(s) = get_lit_str(cx, CONTRACT, REFERENCES, &meta)? {
                            match ReferenceTarget::parse(&s.value()) {
                                Some(target) => references.set(&meta.path, target),
                                None => cx.error_spanned_by(
                                    &s,
                                    format!(
                                        "invalid foreign key target {:?}; expected \"table(column)\" or \"schema.table(column)\"",
                                        s.value()
                                    ),
                                ),
                            }
                        }
                    } else if meta.path == RENAMED_FROM {
                        // #[contract(renamed_from = "old_name")]
                        if let Some(s) = get_lit_str(cx, CONTRACT, RENAMED_FROM, &meta)? {
                            renamed_from.set(&meta.path, s.value());
                        }
                    } else if is_container_key(&meta.path) {
                        // #[contract(table = "...")] and the other struct keys
                        skip_meta_value(&meta)?;
                        cx.error_spanned_by(
                            &meta.path,
                            format!("not expected here; {} belongs on the struct", syntax(&meta.path)),
                        );
                    } else {
                        let path = meta.path.to_token_stream().to_string().replace(' ', "");
                        skip_meta_value(&meta)?;
                        cx.error_spanned_by(
                            &meta.path,
                            format!("unknown contract field attribute `{path}`; expected one of {FIELD_KEYS}"),
                        );
                    }
                    Ok(())
                });
                if let Err(err) = result {
                    cx.syn_error(err);
                }
            } else if attr.path() == SQLX {
                let result = attr.parse_nested_meta(|meta| {
                    if meta.path == RENAME {
                        // #[sqlx(rename = "column_name")]
                        let s: LitStr = meta.value()?.parse()?;
                        rename.set(&meta.path, s.value());
                    } else if meta.path == TRY_FROM {
                        // #[sqlx(try_from = "i64")]
                        let s: LitStr = meta.value()?.parse()?;
                        try_from.set(&meta.path, s.parse::<syn::Type>()?);
                    } else if meta.path == DEFAULT {
                        // #[sqlx(default)]
                        default.set(&meta.path, ());
                    } else if meta.path == FLATTEN {
                        // #[sqlx(flatten)]
                        flatten.set(&meta.path, ());
                    } else if meta.path == SKIP {
                        // #[sqlx(skip)]
                        skip.set(&meta.path, ());
                    } else if meta.path == JSON {
                        // #[sqlx(json)]
                        // #[sqlx(json(nullable))]
                        let path = meta.path.clone();
                        if meta.input.peek(syn::token::Paren) {
                            meta.parse_nested_meta(|inner| {
                                if inner.path == NULLABLE {
                                    json.set(&path, Json::Nullable);
                                    Ok(())
                                } else {
                                    let name = inner.path.to_token_stream().to_string().replace(' ', "");
                                    Err(inner.error(format_args!(
                                        "unknown json option `{name}`; expected #[sqlx(json)] or #[sqlx(json(nullable))]"
                                    )))
                                }
                            })?;
                        } else {
                            json.set(&path, Json::NonNullable);
                        }
                    } else {
                        // Unknown keys: FromRow ignores them, so does the contract.
                        skip_meta_value(&meta)?;
                    }
                    Ok(())
                });
                if let Err(err) = result {
                    cx.syn_error(err);
                }
            }
        }

        FieldAttrs {
            default_sql: default_sql.get(),
            sql_type: sql_type.get(),
            enum_labels: enum_labels.get(),
            primary_key: primary_key.get(),
            references: references.get(),
            renamed_from: renamed_from.get(),
            rename: rename.get(),
            default: default.get(),
            skip: skip.get(),
            flatten: flatten.get(),
            try_from: try_from.get(),
            json: json.get(),
        }
    }

    /// The `#[contract(...)]` column keys present, as (tokens, `#[contract(key)]` text).
    pub(crate) fn contract_column_attrs(&self) -> Vec<(&TokenStream, &'static str)> {
        let mut found = Vec::new();
        if let Some(a) = &self.default_sql {
            found.push((&a.tokens, "#[contract(default = ...)]"));
        }
        if let Some(a) = &self.sql_type {
            found.push((&a.tokens, "#[contract(sql_type = ...)]"));
        }
        if let Some(a) = &self.enum_labels {
            found.push((&a.tokens, "#[contract(enum_labels = ...)]"));
        }
        if let Some(a) = &self.primary_key {
            found.push((&a.tokens, "#[contract(primary_key)]"));
        }
        if let Some(a) = &self.references {
            found.push((&a.tokens, "#[contract(references = ...)]"));
        }
        if let Some(a) = &self.renamed_from {
            found.push((&a.tokens, "#[contract(renamed_from = ...)]"));
        }
        found
    }
}

/// `key = "string"`; a non-string value is recorded in `cx` and gives `Ok(None)`.
fn get_lit_str(
    cx: &Ctxt,
    ns: Symbol,
    name: Symbol,
    meta: &ParseNestedMeta,
) -> syn::Result<Option<LitStr>> {
    let mut value: Expr = meta.value()?.parse()?;
    while let Expr::Group(group) = value {
        value = *group.expr;
    }
    if let Expr::Lit(ExprLit {
        lit: Lit::Str(s), ..
    }) = value
    {
        Ok(Some(s))
    } else {
        cx.error_spanned_by(
            value,
            format!("expected a string literal, as in #[{ns}({name} = \"...\")]"),
        );
        Ok(None)
    }
}

/// `backends(postgres, mysql, sqlite)`
fn parse_backends(cx: &Ctxt, meta: &ParseNestedMeta) -> syn::Result<Vec<Backend>> {
    let mut list = Vec::new();
    let path = meta.path.clone();
    meta.parse_nested_meta(|inner| {
        let backend = if inner.path == POSTGRES {
            Backend::Postgres
        } else if inner.path == MYSQL {
            Backend::MySql
        } else if inner.path == SQLITE {
            Backend::Sqlite
        } else {
            let name = inner.path.to_token_stream().to_string().replace(' ', "");
            return Err(inner.error(format_args!(
                "unknown backend `{name}`; expected one of postgres, mysql, sqlite"
            )));
        };
        if list.contains(&backend) {
            cx.error_spanned_by(
                &inner.path,
                "backend listed twice in #[contract(backends(...))]; remove one",
            );
        } else {
            list.push(backend);
        }
        Ok(())
    })?;
    if list.is_empty() {
        cx.error_spanned_by(
            path,
            "#[contract(backends(...))] needs at least one of postgres, mysql, sqlite",
        );
    }
    Ok(list)
}

/// Consumes whatever follows an ignored key: `= value` or `(...)`.
fn skip_meta_value(meta: &ParseNestedMeta) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.input.step(|cursor| match cursor.token_tree() {
            Some((_, rest)) => Ok(((), rest)),
            None => Err(cursor.error("expected parentheses")),
        })?;
    }
    Ok(())
}

fn is_container_key(path: &syn::Path) -> bool {
    [TABLE, SCHEMA, CRATE, EMBEDDED, BACKENDS]
        .iter()
        .any(|s| path == *s)
}

fn is_field_key(path: &syn::Path) -> bool {
    [
        DEFAULT,
        SQL_TYPE,
        PRIMARY_KEY,
        REFERENCES,
        RENAMED_FROM,
        ENUM_LABELS,
    ]
    .iter()
    .any(|s| path == *s)
}

/// How a key is written, for "belongs on ..." messages.
fn syntax(path: &syn::Path) -> String {
    let name = path.to_token_stream().to_string();
    if path == EMBEDDED || path == PRIMARY_KEY {
        format!("#[contract({name})]")
    } else if path == BACKENDS {
        format!("#[contract({name}(...))]")
    } else {
        format!("#[contract({name} = ...)]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // FromRow's `rename_all` names, as observed from FromRow's own errors.
    #[test]
    fn rename_all_matches_observed_from_row_names() {
        let table = [
            ("lowercase", ["user_id", "http_url_2", "type"]),
            ("snake_case", ["user_id", "http_url_2", "type"]),
            ("UPPERCASE", ["USER_ID", "HTTP_URL_2", "TYPE"]),
            ("SCREAMING_SNAKE_CASE", ["USER_ID", "HTTP_URL_2", "TYPE"]),
            ("kebab-case", ["user-id", "http-url-2", "type"]),
            ("camelCase", ["userId", "httpUrl2", "type"]),
            ("PascalCase", ["UserId", "HttpUrl2", "Type"]),
        ];
        for (rule, expected) in table {
            let rule = RenameAll::from_value(rule).unwrap();
            let got: Vec<_> = ["user_id", "http_url_2", "type"]
                .iter()
                .map(|f| rule.apply(f))
                .collect();
            assert_eq!(got, expected, "{rule:?}");
        }
    }

    #[test]
    fn rename_all_rejects_serde_only_values() {
        for bad in ["SCREAMING-KEBAB-CASE", "snake", "camelcase", ""] {
            assert!(RenameAll::from_value(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn reference_target_follows_core_grammar() {
        assert_eq!(
            ReferenceTarget::parse(" audit.users ( id ) "),
            Some(ReferenceTarget {
                schema: Some("audit".into()),
                table: "users".into(),
                column: "id".into()
            })
        );
        for bad in [
            "users",
            "users()",
            "(id)",
            "users(id",
            "users(a,b)",
            "a.b.c(id)",
            "users(id))",
        ] {
            assert!(ReferenceTarget::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn all_bad_attributes_are_reported_at_once() {
        let input: syn::DeriveInput = syn::parse_quote! {
            #[contract(table = "a", table = "b", foo)]
            #[sqlx(rename_all = "bogus", transparent, type_name = "x")]
            struct S;
        };
        let cx = Ctxt::new();
        let _ = Container::from_ast(&cx, &input.attrs);
        let messages: Vec<_> = cx
            .check()
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert_eq!(messages[0], "duplicate #[contract(table)] attribute");
        assert!(messages[1].starts_with("unknown contract attribute `foo`"));
        assert!(messages[2].starts_with("unknown #[sqlx(rename_all)] value \"bogus\""));
    }
}
