//! Just enough SQL reading for the statements a plan writes: tokens, names, column
//! definitions. Anything else is an error, so a statement the model does not know fails
//! the property instead of being skipped.

use contract_core::{Dialect, LiveTable};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A bare word (keyword, number, unquoted name).
    Word,
    /// A quoted identifier (`"x"`, `` `x` ``), unescaped in `text`.
    Ident,
    /// A string literal, unescaped in `text`.
    Str,
    /// One punctuation character.
    Punct,
}

#[derive(Debug, Clone)]
pub struct Tok {
    pub kind: Kind,
    pub text: String,
    pub start: usize,
    pub end: usize,
}

impl Tok {
    pub fn is(&self, word: &str) -> bool {
        self.kind == Kind::Word && self.text.eq_ignore_ascii_case(word)
    }

    pub fn punct(&self, c: char) -> bool {
        self.kind == Kind::Punct && self.text.starts_with(c)
    }

    /// The name this token stands for, if it is one.
    pub fn name(&self) -> Option<&str> {
        matches!(self.kind, Kind::Word | Kind::Ident).then_some(self.text.as_str())
    }
}

pub fn tokenize(sql: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<(usize, char)> = sql.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (start, c) = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if matches!(c, '"' | '`' | '\'') {
            let mut text = String::new();
            let mut j = i + 1;
            loop {
                let Some(&(_, d)) = chars.get(j) else {
                    return Err(format!("unterminated {c} in {sql}"));
                };
                if d == c {
                    if chars.get(j + 1).map(|x| x.1) == Some(c) {
                        text.push(c);
                        j += 2;
                        continue;
                    }
                    break;
                }
                text.push(d);
                j += 1;
            }
            let end = chars.get(j + 1).map_or(sql.len(), |x| x.0);
            let kind = if c == '\'' { Kind::Str } else { Kind::Ident };
            out.push(Tok {
                kind,
                text,
                start,
                end,
            });
            i = j + 1;
            continue;
        }
        if c.is_alphanumeric() || c == '_' || c == '$' {
            let mut j = i;
            while chars
                .get(j)
                .is_some_and(|x| x.1.is_alphanumeric() || x.1 == '_' || x.1 == '$')
            {
                j += 1;
            }
            let end = chars.get(j).map_or(sql.len(), |x| x.0);
            out.push(Tok {
                kind: Kind::Word,
                text: sql[start..end].to_owned(),
                start,
                end,
            });
            i = j;
            continue;
        }
        let end = chars.get(i + 1).map_or(sql.len(), |x| x.0);
        out.push(Tok {
            kind: Kind::Punct,
            text: c.to_string(),
            start,
            end,
        });
        i += 1;
    }
    Ok(out)
}

/// A cursor over a statement's tokens.
pub struct Cursor<'a> {
    pub sql: &'a str,
    pub toks: Vec<Tok>,
    pub at: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(sql: &'a str) -> Result<Self, String> {
        Ok(Self {
            sql,
            toks: tokenize(sql)?,
            at: 0,
        })
    }

    pub fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    pub fn done(&self) -> bool {
        self.at >= self.toks.len()
    }

    pub fn eat(&mut self, word: &str) -> bool {
        if self.peek().is_some_and(|t| t.is(word)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    pub fn eat_punct(&mut self, c: char) -> bool {
        if self.peek().is_some_and(|t| t.punct(c)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    pub fn expect(&mut self, words: &[&str]) -> Result<(), String> {
        for w in words {
            if !self.eat(w) {
                return Err(format!(
                    "expected {w} at token {} of: {}",
                    self.at, self.sql
                ));
            }
        }
        Ok(())
    }

    pub fn expect_punct(&mut self, c: char) -> Result<(), String> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            Err(format!(
                "expected {c} at token {} of: {}",
                self.at, self.sql
            ))
        }
    }

    /// A name: a quoted identifier, or a bare word.
    pub fn name(&mut self) -> Result<String, String> {
        let tok = self
            .peek()
            .filter(|t| t.name().is_some())
            .ok_or_else(|| format!("expected a name at token {} of: {}", self.at, self.sql))?
            .text
            .clone();
        self.at += 1;
        Ok(tok)
    }

    /// `name` or `schema.name`.
    pub fn qualified(&mut self) -> Result<(Option<String>, String), String> {
        let first = self.name()?;
        if self.eat_punct('.') {
            Ok((Some(first), self.name()?))
        } else {
            Ok((None, first))
        }
    }

    /// Skips to the end of a balanced group starting at `(`; returns its inner text.
    pub fn group(&mut self) -> Result<&'a str, String> {
        let open = self.at;
        self.expect_punct('(')?;
        let mut depth = 1;
        while depth > 0 {
            let tok = self
                .peek()
                .ok_or_else(|| format!("unbalanced ( in {}", self.sql))?;
            if tok.punct('(') {
                depth += 1;
            } else if tok.punct(')') {
                depth -= 1;
            }
            self.at += 1;
        }
        let start = self.toks[open].end;
        let end = self.toks[self.at - 1].start;
        Ok(&self.sql[start..end])
    }
}

/// A column definition read from DDL.
#[derive(Debug, Clone)]
pub struct ColumnDef {
    pub name: String,
    pub data_type: String,
    pub not_null: bool,
    pub default: Option<String>,
    pub primary_key: bool,
}

const CONSTRAINT: [&str; 9] = [
    "NOT",
    "NULL",
    "DEFAULT",
    "PRIMARY",
    "CHECK",
    "REFERENCES",
    "CONSTRAINT",
    "UNIQUE",
    "COLLATE",
];

/// Reads one column definition up to (not including) a `,` or `)` at depth 0 or the end.
pub fn column_def(c: &mut Cursor<'_>) -> Result<ColumnDef, String> {
    let name = c.name()?;
    let type_start = c.peek().map(|t| t.start);
    let mut type_end = None;
    while let Some(tok) = c.peek() {
        if tok.punct(',') || tok.punct(')') || CONSTRAINT.iter().any(|w| tok.is(w)) {
            break;
        }
        if tok.punct('(') {
            c.group()?;
        } else {
            c.at += 1;
        }
        type_end = Some(c.toks[c.at - 1].end);
    }
    let data_type = match (type_start, type_end) {
        (Some(s), Some(e)) => c.sql[s..e].to_owned(),
        _ => String::new(),
    };
    let mut def = ColumnDef {
        name,
        data_type,
        not_null: false,
        default: None,
        primary_key: false,
    };
    while let Some(tok) = c.peek() {
        if tok.punct(',') || tok.punct(')') {
            break;
        }
        if c.eat("NOT") {
            c.expect(&["NULL"])?;
            def.not_null = true;
        } else if c.eat("PRIMARY") {
            c.expect(&["KEY"])?;
            c.eat("AUTOINCREMENT");
            def.primary_key = true;
        } else if c.eat("DEFAULT") {
            let start = c.peek().map_or(c.sql.len(), |t| t.start);
            let mut end = start;
            while let Some(tok) = c.peek() {
                if tok.punct(',') || tok.punct(')') || CONSTRAINT.iter().any(|w| tok.is(w)) {
                    break;
                }
                if tok.punct('(') {
                    c.group()?;
                } else {
                    c.at += 1;
                }
                end = c.toks[c.at - 1].end;
            }
            def.default = Some(c.sql[start..end].to_owned());
        } else if c.eat("CONSTRAINT") {
            c.name()?;
        } else if c.eat("CHECK") {
            c.group()?;
        } else {
            return Err(format!(
                "unknown column constraint at token {} of: {}",
                c.at, c.sql
            ));
        }
    }
    Ok(def)
}

/// The `CREATE TABLE` text SQLite would store for `table` (every name quoted).
pub fn sqlite_definition(table: &LiveTable) -> String {
    let q = |n: &str| Dialect::Sqlite.quote(n).unwrap_or_default();
    let mut parts: Vec<String> = table
        .columns
        .iter()
        .map(|c| {
            let mut def = format!("{} {}", q(&c.name), c.data_type);
            if !c.nullable {
                def.push_str(" NOT NULL");
            }
            if let Some(default) = &c.default {
                def.push_str(" DEFAULT ");
                def.push_str(default);
            }
            def
        })
        .collect();
    if !table.primary_key.is_empty() {
        let keys: Vec<String> = table.primary_key.iter().map(|k| q(k)).collect();
        parts.push(format!("PRIMARY KEY ({})", keys.join(", ")));
    }
    format!("CREATE TABLE {} ({})", q(&table.name), parts.join(", "))
}
