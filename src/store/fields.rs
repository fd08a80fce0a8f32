//! Frappe's `fields`, `group_by` and `order_by` expressions, parsed into what a list query may
//! select: columns (of the listed type or of one of its child tables), aggregates over them and
//! aliases. Anything else (subqueries, other functions, comments, operators) is refused with a
//! message naming it; nothing a client writes reaches SQL as text.

use crate::error::{Error, Result};

/// A column, as `field`, `` `tabType`.`field` `` or `"tabType"."field"`.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnRef {
    /// The type named by a `tab` prefix, if any.
    pub doctype: Option<String>,
    pub column: String,
}

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Agg {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

/// What one entry of `fields` computes.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Column(ColumnRef),
    /// `arg` is `None` for `count(*)`.
    Aggregate {
        func: Agg,
        distinct: bool,
        arg: Option<ColumnRef>,
    },
}

/// One entry of `fields`: what it computes and the key it is returned under.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub expr: Expr,
    /// The `as` alias, else the column's name, else the expression as written (`count(name)`).
    pub key: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// A bare word, or a quoted identifier (`quoted` set).
    Word {
        text: String,
        quoted: bool,
    },
    Punct(char),
}

fn refuse(text: &str, why: &str) -> Error {
    Error::Validation(format!("Field not permitted in query: {text} ({why})"))
}

fn tokens(text: &str) -> Result<Vec<Token>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '`' | '"' => {
                chars.next();
                let mut word = String::new();
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some(ch) => word.push(ch),
                        None => return Err(refuse(text, "an unclosed quote")),
                    }
                }
                out.push(Token::Word {
                    text: word,
                    quoted: true,
                });
            }
            c if c.is_alphanumeric() || c == '_' => {
                let mut word = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_alphanumeric() || ch == '_' {
                        word.push(ch);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Token::Word {
                    text: word,
                    quoted: false,
                });
            }
            '(' | ')' | '.' | '*' => {
                chars.next();
                out.push(Token::Punct(c));
            }
            other => {
                return Err(refuse(
                    text,
                    &format!("{other:?} is not allowed: only columns, count/sum/avg/min/max and \"as\" aliases are"),
                ))
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn punct(&mut self, c: char) -> bool {
        if self.peek() == Some(&Token::Punct(c)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn keyword(&mut self, k: &str) -> bool {
        match self.peek() {
            Some(Token::Word {
                text,
                quoted: false,
            }) if text.eq_ignore_ascii_case(k) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    fn word(&mut self, what: &str) -> Result<(String, bool)> {
        match self.next() {
            // PostgreSQL refuses an empty quoted identifier ("" or ``).
            Some(Token::Word { text, .. }) if text.trim().is_empty() => Err(refuse(
                self.text,
                &format!("{what} expected, not an empty name"),
            )),
            Some(Token::Word { text, quoted }) => Ok((text, quoted)),
            _ => Err(refuse(self.text, &format!("{what} expected"))),
        }
    }

    fn column(&mut self) -> Result<ColumnRef> {
        let (first, _) = self.word("a column")?;
        if !self.punct('.') {
            return Ok(ColumnRef {
                doctype: None,
                column: first,
            });
        }
        let (second, _) = self.word("a column after \".\"")?;
        let doctype = first.strip_prefix("tab").ok_or_else(|| {
            refuse(
                self.text,
                &format!("{first:?} is not a table: write `tab<DocType>`.field"),
            )
        })?;
        Ok(ColumnRef {
            doctype: Some(doctype.to_string()),
            column: second,
        })
    }

    fn expr(&mut self) -> Result<Expr> {
        let is_call = matches!(self.tokens.get(self.at + 1), Some(Token::Punct('(')))
            && matches!(self.peek(), Some(Token::Word { quoted: false, .. }));
        if !is_call {
            return Ok(Expr::Column(self.column()?));
        }
        let (name, _) = self.word("a function")?;
        let func = match name.to_ascii_lowercase().as_str() {
            "count" => Agg::Count,
            "sum" => Agg::Sum,
            "avg" => Agg::Avg,
            "min" => Agg::Min,
            "max" => Agg::Max,
            other => {
                return Err(refuse(
                    self.text,
                    &format!("function {other}() is not allowed: use count, sum, avg, min or max"),
                ))
            }
        };
        self.punct('(');
        let distinct = self.keyword("distinct");
        let arg = if self.punct('*') {
            if func != Agg::Count || distinct {
                return Err(refuse(self.text, "only count(*) takes *"));
            }
            None
        } else {
            Some(self.column()?)
        };
        if !self.punct(')') {
            return Err(refuse(self.text, "one column inside the parentheses"));
        }
        Ok(Expr::Aggregate {
            func,
            distinct,
            arg,
        })
    }

    fn done(&self) -> Result<()> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(refuse(self.text, &format!("unexpected {t:?}"))),
        }
    }
}

fn parser(text: &str) -> Result<Parser<'_>> {
    Ok(Parser {
        text,
        tokens: tokens(text)?,
        at: 0,
    })
}

/// Parses one entry of `fields`.
pub fn parse_field(text: &str) -> Result<Field> {
    let mut p = parser(text)?;
    let expr = p.expr()?;
    let alias = if p.keyword("as") {
        Some(p.word("an alias after \"as\"")?.0)
    } else if p.peek().is_some() {
        Some(p.word("an alias")?.0)
    } else {
        None
    };
    p.done()?;
    let key = match (&alias, &expr) {
        (Some(a), _) => a.clone(),
        (None, Expr::Column(c)) => c.column.clone(),
        (None, Expr::Aggregate { .. }) => text.trim().to_string(),
    };
    Ok(Field { expr, key })
}

/// Parses one column of `group_by`.
pub fn parse_column(text: &str) -> Result<ColumnRef> {
    let mut p = parser(text)?;
    let c = p.column()?;
    p.done()?;
    Ok(c)
}

/// Parses one term of `order_by` without its direction: a column, an aggregate, or an alias
/// (returned as a column without type).
pub fn parse_order_term(text: &str) -> Result<Expr> {
    let mut p = parser(text)?;
    let e = p.expr()?;
    p.done()?;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_aggregates_and_aliases() {
        let f = parse_field("count(name) as n").unwrap();
        assert_eq!(f.key, "n");
        assert!(matches!(
            f.expr,
            Expr::Aggregate {
                func: Agg::Count,
                distinct: false,
                ..
            }
        ));
        let f = parse_field("`tabSales Invoice Item`.item_code").unwrap();
        assert_eq!(
            f.expr,
            Expr::Column(ColumnRef {
                doctype: Some("Sales Invoice Item".into()),
                column: "item_code".into()
            })
        );
        assert_eq!(f.key, "item_code");
        assert_eq!(parse_field("item_name as title").unwrap().key, "title");
        assert_eq!(parse_field("COUNT(*)").unwrap().key, "COUNT(*)");
        let f = parse_field("sum(`tabSales Invoice`.`grand_total`) as _aggregate_column").unwrap();
        assert_eq!(f.key, "_aggregate_column");
        assert!(parse_field("count(distinct item_group) as groups").is_ok());
    }

    #[test]
    fn everything_else_is_refused_by_name() {
        for bad in [
            "(select name from tabUser)",
            "name; drop table x",
            "sleep(5)",
            "name -- comment",
            "name /* c */",
            "concat(name, 'x')",
            "name + 1",
            "sum(*)",
            "count(name, status)",
            "user.name",
            "name as",
            "name as a b",
        ] {
            let e = parse_field(bad).unwrap_err().to_string();
            assert!(e.contains("Field not permitted in query"), "{bad}: {e}");
        }
    }
}
