//! SQLite type changes by table rebuild (`ARCHITECTURE.md` section 5, SQLite; sqlite.org
//! "Making Other Kinds Of Table Schema Changes").
//!
//! SQLite's `ALTER TABLE` cannot change a column's type, so the table is re-created from
//! its own `CREATE TABLE` text (as stored in `sqlite_schema`) with only the type of the
//! changed columns rewritten, under a temporary name; the rows are copied, a check proves
//! every value of a changed column now has the storage class the new type implies (or the
//! transaction fails), the old table is dropped, the new one renamed, and the table's
//! indexes and triggers re-created verbatim. Everything comes from the introspected live
//! schema, so the plan (and its hash) is deterministic; a definition this module cannot
//! read unambiguously is refused, never guessed.
//!
//! The copy is `INSERT INTO <tmp> SELECT * FROM <table>`: values convert by the new
//! column's affinity (SQLite converts only when the value survives the round trip), and
//! the check rejects any that did not (`CHECK constraint failed:
//! <column>_values_convert_to_<class>`). As with `VACUUM`, a rowid table without an
//! `INTEGER PRIMARY KEY` may get new rowids; an `AUTOINCREMENT` high-water mark is kept.
//! A view or another table's trigger that mentions the table makes SQLite reject the
//! rename after the drop, so those are refused up front.
//!
//! The apply side (not here) turns `foreign_keys` off on the connection before
//! `BEGIN IMMEDIATE` for a step with [`Hazard::TableRebuild`], runs
//! `PRAGMA foreign_key_check` before commit, and restores the setting afterwards.

use super::render::Target;
use super::step::{Action, Hazard, LockLevel, PlanStep};
use crate::drift::DriftKind;
use crate::ident::Dialect;
use crate::live::LiveTable;
use crate::rules::{Affinity, sqlite_affinity};

/// One column whose declared type changes.
#[derive(Debug, Clone)]
pub(super) struct TypeChange {
    /// The live column name.
    pub column: String,
    /// The live declared type (cross-checked against the `CREATE TABLE` text).
    pub from: String,
    /// The new declared type.
    pub to: String,
}

/// The suffix of the temporary table a rebuild creates.
pub(super) const REBUILD_SUFFIX: &str = "__contract_rebuild";
/// The temporary (connection-local) table the conversion check inserts into.
const CHECK_TABLE: &str = "contract_rebuild_check";

/// The storage classes (`typeof()` names) every non-NULL value of a column declared `to`
/// must have after the copy, and the name the check constraint uses; `None` when no class
/// is known for the type.
pub(super) fn storage_classes(to: &str) -> Option<(&'static str, &'static [&'static str])> {
    Some(match sqlite_affinity(to) {
        Affinity::Integer => ("integer", &["integer"]),
        Affinity::Text => ("text", &["text"]),
        Affinity::Real => ("real", &["real"]),
        Affinity::Blob => ("blob", &["blob"]),
        Affinity::Numeric => {
            let upper = to.trim().to_ascii_uppercase();
            let base = upper.split('(').next().unwrap_or("").trim();
            match base {
                "BOOLEAN" | "BOOL" => ("integer", &["integer"]),
                // sqlx writes dates, times and JSON as text; NUMERIC affinity keeps it.
                "DATE" | "TIME" | "DATETIME" | "TIMESTAMP" | "JSON" | "JSONB" => {
                    ("text", &["text"])
                }
                "NUMERIC" | "DECIMAL" => ("numeric", &["integer", "real"]),
                _ => return None,
            }
        }
    })
}

/// The rebuild step changing `changes` of `live` (one step per table, covering every
/// changed column, so the table is copied once).
pub(super) fn rebuild_step(
    target: &Target<'_>,
    live: &LiveTable,
    changes: &[TypeChange],
) -> Result<PlanStep, String> {
    let q = |name: &str| Dialect::Sqlite.quote(name).map_err(|e| e.to_string());
    let table = live.name.as_str();
    if !live.referenced_by.is_empty() {
        return Err(format!(
            "changing a column type rebuilds `{table}` (create, copy, drop, rename), which SQLite refuses while other objects refer to it: {}; drop and re-create them by hand around the migration",
            live.referenced_by.join(", ")
        ));
    }
    let Some(definition) = live.definition.as_deref() else {
        return Err(format!(
            "the CREATE TABLE text of `{table}` was not introspected, so the table rebuild a type change needs cannot be planned"
        ));
    };
    let parsed = parse_create_table(definition, table).map_err(|why| {
        format!(
            "cannot rebuild `{table}` for a type change: {why}; migrate by hand (the table rebuild is only planned from a definition read unambiguously)"
        )
    })?;
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut checks = Vec::new();
    for change in changes {
        let (label, classes) = storage_classes(&change.to).ok_or_else(|| {
            format!(
                "no storage-class check is known for {} (to prove `{}` converts), so the rebuild is not planned; migrate by hand",
                change.to, change.column
            )
        })?;
        if parsed.strict && !is_strict_type(&change.to) {
            return Err(format!(
                "`{table}` is a STRICT table, which does not accept the type {} for `{}`; migrate by hand",
                change.to, change.column
            ));
        }
        let matching: Vec<&ColumnDef> = parsed
            .columns
            .iter()
            .filter(|c| c.name.eq_ignore_ascii_case(&change.column))
            .collect();
        let [column] = matching.as_slice() else {
            return Err(format!(
                "cannot rebuild `{table}` for a type change: its CREATE TABLE text declares `{}` {} times; migrate by hand",
                change.column,
                matching.len()
            ));
        };
        let declared = &definition[column.type_span.0..column.type_span.1];
        if squash(declared) != squash(&change.from) {
            return Err(format!(
                "cannot rebuild `{table}` for a type change: the CREATE TABLE text declares `{}` as `{declared}`, the catalog as `{}`; migrate by hand",
                change.column, change.from
            ));
        }
        let replacement = if column.type_span.0 == column.type_span.1 {
            format!(" {}", change.to)
        } else {
            change.to.clone()
        };
        edits.push((column.type_span.0, column.type_span.1, replacement));
        checks.push((change.column.as_str(), label, classes));
    }
    edits.sort_by_key(|e| e.0);
    let tmp_name = format!("{table}{REBUILD_SUFFIX}");
    let tmp = q(&tmp_name)?;
    let quoted_table = q(table)?;
    let mut body = String::new();
    let mut at = parsed.body_start;
    for (start, end, text) in &edits {
        body.push_str(&definition[at..*start]);
        body.push_str(text);
        at = *end;
    }
    body.push_str(&definition[at..]);

    let mut statements = vec![
        format!("CREATE TABLE {tmp} {body}"),
        format!("INSERT INTO {tmp} SELECT * FROM {quoted_table}"),
    ];
    // The conversion check: a temporary table whose named CHECK constraints fail (and
    // with them the transaction) when some value kept a storage class the new type does
    // not decode, for example text that is not an integer.
    let check_table = q(CHECK_TABLE)?;
    let mut check_columns = Vec::new();
    let mut probes = Vec::new();
    for (column, label, classes) in &checks {
        let name = q(column)?;
        let constraint = q(&format!("{column}_values_convert_to_{label}"))?;
        check_columns.push(format!(
            "{name} INTEGER CONSTRAINT {constraint} CHECK ({name})"
        ));
        let allowed: Vec<String> = classes
            .iter()
            .chain(&["null"])
            .map(|c| format!("'{c}'"))
            .collect();
        probes.push(format!(
            "NOT EXISTS (SELECT 1 FROM {tmp} WHERE typeof({name}) NOT IN ({}))",
            allowed.join(", ")
        ));
    }
    statements.extend([
        format!(
            "CREATE TEMP TABLE {check_table} ({})",
            check_columns.join(", ")
        ),
        format!(
            "INSERT INTO \"temp\".{check_table} SELECT {}",
            probes.join(", ")
        ),
        format!("DROP TABLE \"temp\".{check_table}"),
    ]);
    if parsed.autoincrement {
        // Keep the AUTOINCREMENT high-water mark: ids of deleted rows are never reused.
        let literal = |v: &str| Dialect::Sqlite.string_literal(v).map_err(|e| e.to_string());
        let (old, new) = (literal(table)?, literal(&tmp_name)?);
        statements.extend([
            format!("DELETE FROM sqlite_sequence WHERE name = {new}"),
            format!(
                "INSERT INTO sqlite_sequence (name, seq) SELECT {new}, seq FROM sqlite_sequence WHERE name = {old}"
            ),
        ]);
    }
    statements.extend([
        format!("DROP TABLE {quoted_table}"),
        format!("ALTER TABLE {tmp} RENAME TO {quoted_table}"),
    ]);
    statements.extend(live.dependents.iter().cloned());
    Ok(PlanStep {
        table: target.table.to_owned(),
        column: match changes {
            [one] => Some(one.column.clone()),
            _ => None,
        },
        action: Action::ChangeType,
        fixes: DriftKind::TypeMismatch,
        statements,
        lock: LockLevel::AccessExclusive,
        hazards: vec![Hazard::TableRebuild, Hazard::ValidatesRows],
        phases: Vec::new(),
        online: None,
    })
}

/// The type names a STRICT table accepts.
fn is_strict_type(to: &str) -> bool {
    matches!(
        to.trim().to_ascii_uppercase().as_str(),
        "INT" | "INTEGER" | "REAL" | "TEXT" | "BLOB" | "ANY"
    )
}

/// Uppercase without whitespace: how a type in the definition text and the catalog's
/// declared type are compared.
fn squash(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_uppercase)
        .collect()
}

/// What the rebuild needs from a `CREATE TABLE` text.
#[derive(Debug)]
struct ParsedTable {
    /// Byte offset of the `(` opening the column list: the text from here on is reused.
    body_start: usize,
    /// Column definitions, in order.
    columns: Vec<ColumnDef>,
    /// `STRICT` table option.
    strict: bool,
    /// Some column is `AUTOINCREMENT`.
    autoincrement: bool,
}

#[derive(Debug)]
struct ColumnDef {
    /// The column name, unquoted.
    name: String,
    /// Byte range of the declared type (empty, right after the name, when none).
    type_span: (usize, usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A bare word: keyword, identifier or number.
    Word,
    /// `"x"`, `` `x` `` or `[x]`.
    Quoted,
    /// `'x'`.
    Str,
    Open,
    Close,
    Comma,
    Dot,
    /// Any other character (operators).
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
}

impl Token {
    fn text<'s>(&self, sql: &'s str) -> &'s str {
        &sql[self.start..self.end]
    }

    fn is_word(&self, sql: &str, word: &str) -> bool {
        self.kind == Kind::Word && self.text(sql).eq_ignore_ascii_case(word)
    }
}

/// Splits SQL into tokens, dropping whitespace and comments.
fn tokenize(sql: &str) -> Result<Vec<Token>, String> {
    let bytes = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    // Finds the closing `close` from `from`; a doubled `close` is an escaped one when
    // `doubled`. Returns the index just past it.
    let closing = |from: usize, close: u8, doubled: bool| -> Result<usize, String> {
        let mut j = from;
        while j < bytes.len() {
            if bytes[j] == close {
                if doubled && bytes.get(j + 1) == Some(&close) {
                    j += 2;
                    continue;
                }
                return Ok(j + 1);
            }
            j += 1;
        }
        Err(format!("unterminated {} in the definition", close as char))
    };
    while i < bytes.len() {
        let b = bytes[i];
        let start = i;
        let kind = match b {
            _ if b.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n + 1);
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..]
                    .find("*/")
                    .map(|n| i + 2 + n + 2)
                    .ok_or("unterminated comment in the definition")?;
                continue;
            }
            b'\'' => {
                i = closing(i + 1, b'\'', true)?;
                Kind::Str
            }
            b'"' => {
                i = closing(i + 1, b'"', true)?;
                Kind::Quoted
            }
            b'`' => {
                i = closing(i + 1, b'`', true)?;
                Kind::Quoted
            }
            b'[' => {
                i = closing(i + 1, b']', false)?;
                Kind::Quoted
            }
            b'(' => {
                i += 1;
                Kind::Open
            }
            b')' => {
                i += 1;
                Kind::Close
            }
            b',' => {
                i += 1;
                Kind::Comma
            }
            b'.' if !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i += 1;
                Kind::Dot
            }
            _ if is_word_byte(b) || b == b'.' => {
                // A number keeps its decimal point (`1.5`, `.5`); a name stops at a dot.
                let number = b.is_ascii_digit() || b == b'.';
                i += 1;
                while i < bytes.len() && (is_word_byte(bytes[i]) || number && bytes[i] == b'.') {
                    i += 1;
                }
                Kind::Word
            }
            _ => {
                i += sql[i..].chars().next().map_or(1, char::len_utf8);
                Kind::Other
            }
        };
        tokens.push(Token {
            kind,
            start,
            end: i,
        });
    }
    Ok(tokens)
}

/// Bytes of a bare word: ASCII letters, digits, `_`, `$`, and any non-ASCII character
/// (SQLite treats those as identifier characters).
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// The name a name token stands for (quotes removed, doubled quotes undone).
fn unquote(sql: &str, token: &Token) -> Option<String> {
    let text = token.text(sql);
    match token.kind {
        Kind::Word => Some(text.to_owned()),
        Kind::Str | Kind::Quoted => {
            let inner = &text[1..text.len() - 1];
            Some(match text.as_bytes()[0] {
                b'[' => inner.to_owned(),
                q => {
                    let q = char::from(q).to_string();
                    inner.replace(&q.repeat(2), &q)
                }
            })
        }
        _ => None,
    }
}

/// Words that end a column's type name (the start of a column constraint).
const CONSTRAINT_WORDS: [&str; 11] = [
    "CONSTRAINT",
    "PRIMARY",
    "NOT",
    "NULL",
    "UNIQUE",
    "CHECK",
    "DEFAULT",
    "COLLATE",
    "REFERENCES",
    "GENERATED",
    "AS",
];

/// Words that start a table constraint.
const TABLE_CONSTRAINT_WORDS: [&str; 5] = ["CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"];

/// Reads `CREATE TABLE <name> (<columns and constraints>) [options]`.
fn parse_create_table(sql: &str, table: &str) -> Result<ParsedTable, String> {
    let tokens = tokenize(sql)?;
    let word = |i: usize, w: &str| tokens.get(i).is_some_and(|t| t.is_word(sql, w));
    if !(word(0, "CREATE") && word(1, "TABLE")) {
        return Err("the definition is not a plain CREATE TABLE (a virtual table?)".into());
    }
    let mut i = 2;
    if word(2, "IF") && word(3, "NOT") && word(4, "EXISTS") {
        i = 5;
    }
    // `name` or `schema.name`, then `(`.
    let name_end = match (tokens.get(i + 1).map(|t| t.kind), tokens.get(i + 3)) {
        (Some(Kind::Dot), Some(_)) => i + 2,
        _ => i,
    };
    let name = tokens
        .get(name_end)
        .and_then(|t| unquote(sql, t))
        .ok_or("the table name is missing")?;
    if !name.eq_ignore_ascii_case(table) {
        return Err(format!("the definition names the table `{name}`"));
    }
    let open = name_end + 1;
    if tokens.get(open).map(|t| t.kind) != Some(Kind::Open) {
        return Err("no column list follows the table name (CREATE TABLE ... AS SELECT?)".into());
    }
    // Split the column list into its elements at depth 1.
    let mut depth = 0_usize;
    let mut elements: Vec<Vec<(Token, usize)>> = vec![Vec::new()];
    let mut close = None;
    for (k, token) in tokens.iter().enumerate().skip(open) {
        match token.kind {
            Kind::Open => depth += 1,
            Kind::Close => {
                depth -= 1;
                if depth == 0 {
                    close = Some(k);
                    break;
                }
            }
            Kind::Comma if depth == 1 => {
                elements.push(Vec::new());
                continue;
            }
            _ => {}
        }
        if k > open
            && let Some(element) = elements.last_mut()
        {
            element.push((*token, depth));
        }
    }
    let close = close.ok_or("the column list is not closed")?;
    let options = &tokens[close + 1..];
    if let Some(extra) = options.iter().find(|t| {
        !(t.kind == Kind::Comma
            || t.is_word(sql, "STRICT")
            || t.is_word(sql, "WITHOUT")
            || t.is_word(sql, "ROWID"))
    }) {
        return Err(format!(
            "unexpected `{}` after the column list",
            extra.text(sql)
        ));
    }
    let strict = options.iter().any(|t| t.is_word(sql, "STRICT"));
    let autoincrement = tokens[open..close]
        .iter()
        .any(|t| t.is_word(sql, "AUTOINCREMENT"));

    let mut columns = Vec::new();
    for element in &elements {
        let Some(&(first, _)) = element.first() else {
            return Err("an empty element in the column list".into());
        };
        if TABLE_CONSTRAINT_WORDS.iter().any(|w| first.is_word(sql, w)) {
            continue;
        }
        let name = unquote(sql, &first)
            .ok_or_else(|| format!("a column definition starts with `{}`", first.text(sql)))?;
        // The type name: the words after the name up to the first constraint word, then
        // an optional `(n)` or `(n, m)`.
        let top: Vec<Token> = element
            .iter()
            .filter(|(_, d)| *d == 1)
            .map(|(t, _)| *t)
            .collect();
        if top
            .iter()
            .any(|t| t.is_word(sql, "GENERATED") || t.is_word(sql, "AS"))
        {
            return Err(format!("`{name}` is a generated column"));
        }
        let mut k = 1;
        while element.get(k).is_some_and(|(t, _)| {
            t.kind == Kind::Word && !CONSTRAINT_WORDS.iter().any(|w| t.is_word(sql, w))
        }) {
            k += 1;
        }
        if element
            .get(k)
            .is_some_and(|(t, _)| matches!(t.kind, Kind::Quoted | Kind::Str))
        {
            return Err(format!("the type of `{name}` is a quoted name"));
        }
        let mut type_end = if k > 1 {
            element[k - 1].0.end
        } else {
            first.end
        };
        let type_start = if k > 1 { element[1].0.start } else { first.end };
        if k > 1 && element.get(k).is_some_and(|(t, _)| t.kind == Kind::Open) {
            // `(n)` / `(n, m)`: the tokens of depth 2 up to the matching `)`, which closes
            // back at depth 1 and is not in the element (it only records depth changes).
            let mut m = k + 1;
            while element.get(m).is_some_and(|(_, d)| *d > 1) {
                m += 1;
            }
            let last = element
                .get(m)
                .filter(|(t, _)| t.kind == Kind::Close)
                .ok_or_else(|| format!("the size of the type of `{name}` is not closed"))?;
            type_end = last.0.end;
        }
        columns.push(ColumnDef {
            name,
            type_span: (type_start, type_end),
        });
    }
    if columns.is_empty() {
        return Err("no column definitions".into());
    }
    Ok(ParsedTable {
        body_start: tokens[open].start,
        columns,
        strict,
        autoincrement,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(sql: &str, table: &str) -> Vec<(String, String)> {
        let parsed = parse_create_table(sql, table).unwrap_or_else(|e| panic!("{sql}: {e}"));
        parsed
            .columns
            .iter()
            .map(|c| (c.name.clone(), sql[c.type_span.0..c.type_span.1].to_owned()))
            .collect()
    }

    #[test]
    fn parses_quoting_styles_sizes_and_constraints() {
        let sql = r#"CREATE TABLE "we""ird" ( -- a comment, (with parens)
            "a ""b" VARCHAR ( 10 ) NOT NULL DEFAULT 'x, (y)',
            [c d] DECIMAL(12, 2) CHECK ("c d" > (0)),
            `e` UNSIGNED BIG INT,
            f /* no type */ DEFAULT (lower('Q)')),
            'g' TEXT COLLATE NOCASE,
            h,
            CONSTRAINT pk PRIMARY KEY ("a ""b"),
            UNIQUE (f)
        ) WITHOUT ROWID"#;
        assert_eq!(
            types(sql, "we\"ird"),
            [
                ("a \"b".into(), "VARCHAR ( 10 )".into()),
                ("c d".into(), "DECIMAL(12, 2)".into()),
                ("e".into(), "UNSIGNED BIG INT".into()),
                ("f".into(), String::new()),
                ("g".into(), "TEXT".into()),
                ("h".into(), String::new()),
            ]
        );
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for (sql, why) in [
            ("CREATE VIRTUAL TABLE t USING fts5(a)", "virtual"),
            (
                "CREATE TABLE t (a INT, b INT GENERATED ALWAYS AS (a + 1))",
                "generated",
            ),
            (
                "CREATE TABLE t (a INT, b INT AS (a + 1) STORED)",
                "generated",
            ),
            ("CREATE TABLE t (a 'int')", "quoted"),
            ("CREATE TABLE t (a INT", "not closed"),
            ("CREATE TABLE u (a INT)", "names the table"),
            ("CREATE TABLE t (a 'x)", "unterminated"),
        ] {
            let error = parse_create_table(sql, "t").expect_err(sql);
            assert!(error.contains(why), "{sql}: {error}");
        }
        let parsed = parse_create_table("CREATE TABLE t (a INT) STRICT", "t").unwrap();
        assert!(parsed.strict && !parsed.autoincrement);
        let parsed =
            parse_create_table("CREATE TABLE t (a INTEGER PRIMARY KEY AUTOINCREMENT)", "t")
                .unwrap();
        assert!(parsed.autoincrement);
    }

    #[test]
    fn storage_classes_follow_affinity() {
        assert_eq!(
            storage_classes("INTEGER"),
            Some(("integer", &["integer"][..]))
        );
        assert_eq!(storage_classes("REAL"), Some(("real", &["real"][..])));
        assert_eq!(storage_classes("TEXT"), Some(("text", &["text"][..])));
        assert_eq!(storage_classes("JSON"), Some(("text", &["text"][..])));
        assert_eq!(
            storage_classes("BOOLEAN"),
            Some(("integer", &["integer"][..]))
        );
        assert_eq!(storage_classes("STRING"), None);
    }
}
