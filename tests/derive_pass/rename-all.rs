//! Derive pass case: `#[sqlx(rename_all)]` column names match sqlx's own case conversion.
#![allow(dead_code, non_snake_case)]

use contract_sqlx::Contract;

macro_rules! rename_all_case {
    ($name:ident, $rule:literal, $expected:expr) => {
        #[derive(sqlx::FromRow, Contract)]
        #[contract(table = "t", backends(sqlite))]
        #[sqlx(rename_all = $rule)]
        struct $name {
            user_id: i64,
            http_url_2: i64,
            r#type: i64,
            #[sqlx(rename = "Exact")]
            renamed: i64,
        }
        let names: Vec<_> = $name::contract()
            .columns
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, $expected, $rule);
    };
}

fn main() {
    rename_all_case!(
        Lower,
        "lowercase",
        ["user_id", "http_url_2", "type", "Exact"]
    );
    rename_all_case!(
        Snake,
        "snake_case",
        ["user_id", "http_url_2", "type", "Exact"]
    );
    rename_all_case!(
        Upper,
        "UPPERCASE",
        ["USER_ID", "HTTP_URL_2", "TYPE", "Exact"]
    );
    rename_all_case!(
        Screaming,
        "SCREAMING_SNAKE_CASE",
        ["USER_ID", "HTTP_URL_2", "TYPE", "Exact"]
    );
    rename_all_case!(
        Kebab,
        "kebab-case",
        ["user-id", "http-url-2", "type", "Exact"]
    );
    rename_all_case!(Camel, "camelCase", ["userId", "httpUrl2", "type", "Exact"]);
    rename_all_case!(
        Pascal,
        "PascalCase",
        ["UserId", "HttpUrl2", "Type", "Exact"]
    );
}
