//! Reading a spanned TOML tree field by field, recording every problem instead of
//! stopping at the first (so `check` commands can list them all).

use std::ops::Range;

use rust_decimal::Decimal;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diag::{Diag, closest};

/// A byte range in the source text.
pub type Span = Range<usize>;

/// Parses `src` as TOML; syntax errors go to `d` and yield `None`.
pub fn parse_document<'i>(d: &mut Diag<'_>, src: &'i str) -> Option<Spanned<DeTable<'i>>> {
    match DeTable::parse(src) {
        Ok(t) => Some(t),
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let msg = e.message().trim().replace('\n', " ");
            d.push(span, "", format!("invalid TOML: {msg}"));
            None
        }
    }
}

/// A value in the tree together with its span.
#[derive(Clone)]
pub struct Node<'a, 'i> {
    /// The value.
    pub value: &'a DeValue<'i>,
    /// Where the value is in the source.
    pub span: Span,
}

impl<'a, 'i> Node<'a, 'i> {
    fn from_spanned(v: &'a Spanned<DeValue<'i>>) -> Self {
        Node {
            value: v.get_ref(),
            span: v.span(),
        }
    }

    /// The value as a string, or a problem saying a string was expected.
    pub fn string(&self, d: &mut Diag<'_>, field: &str, expected: &str) -> Option<&'a str> {
        match self.value {
            DeValue::String(s) => Some(s.as_ref()),
            other => {
                d.push(
                    self.span.clone(),
                    field,
                    format!("expected {expected}, found {}", other.type_str()),
                );
                None
            }
        }
    }
}

/// One table of the tree, with the dotted path that names it in messages.
pub struct Table<'a, 'i> {
    table: &'a DeTable<'i>,
    span: Span,
    path: String,
}

impl<'a, 'i> Table<'a, 'i> {
    /// Wraps the document's root table.
    pub fn root(doc: &'a Spanned<DeTable<'i>>) -> Self {
        Table {
            table: doc.get_ref(),
            span: doc.span(),
            path: String::new(),
        }
    }

    /// The dotted path of `key` within this table.
    pub fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The table's own path (empty for the root).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Where the table starts in the source.
    pub fn span(&self) -> Span {
        self.span.clone()
    }

    /// Reports every key not in `allowed`, suggesting the closest valid one.
    pub fn check_keys(&self, d: &mut Diag<'_>, allowed: &[&str]) {
        for (k, _) in self.table.iter() {
            let name: &str = k.get_ref().as_ref();
            if !allowed.contains(&name) {
                let hint = match closest(name, allowed) {
                    Some(s) => format!("; did you mean `{s}`?"),
                    None => format!("; expected one of: {}", allowed.join(", ")),
                };
                d.push(
                    k.span(),
                    self.field(name),
                    format!("unknown key `{name}`{hint}"),
                );
            }
        }
    }

    /// All keys with their spans, in source order where the map keeps it.
    pub fn entries(&self) -> Vec<(String, Span, Node<'a, 'i>)> {
        self.table
            .iter()
            .map(|(k, v)| {
                (
                    k.get_ref().to_string(),
                    k.span(),
                    Node {
                        value: v.get_ref(),
                        span: v.span(),
                    },
                )
            })
            .collect()
    }

    /// The value under `key`, if present.
    pub fn get(&self, key: &str) -> Option<Node<'a, 'i>> {
        self.table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| Node::from_spanned(v))
    }

    /// Reports that a required key is missing.
    pub fn missing(&self, d: &mut Diag<'_>, key: &str, expected: &str) {
        d.push(
            self.span.clone(),
            self.field(key),
            format!("missing required key `{key}` ({expected})"),
        );
    }

    /// A string under `key`; a missing key is a problem only when `required`.
    pub fn string(
        &self,
        d: &mut Diag<'_>,
        key: &str,
        required: bool,
        expected: &str,
    ) -> Option<(String, Span)> {
        match self.get(key) {
            Some(n) => n
                .string(d, &self.field(key), expected)
                .map(|s| (s.to_string(), n.span.clone())),
            None => {
                if required {
                    self.missing(d, key, expected);
                }
                None
            }
        }
    }

    /// An integer under `key` within `[min, max]`.
    pub fn integer(&self, d: &mut Diag<'_>, key: &str, min: i64, max: i64) -> Option<(i64, Span)> {
        let n = self.get(key)?;
        match n.value {
            DeValue::Integer(i) => {
                let digits = i.as_str().replace('_', "");
                match i64::from_str_radix(&digits, i.radix()) {
                    Ok(v) if v >= min && v <= max => Some((v, n.span.clone())),
                    _ => {
                        d.push(
                            n.span.clone(),
                            self.field(key),
                            format!(
                                "expected an integer from {min} to {max}, found {}",
                                i.as_str()
                            ),
                        );
                        None
                    }
                }
            }
            other => {
                d.push(
                    n.span.clone(),
                    self.field(key),
                    format!(
                        "expected an integer from {min} to {max}, found {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    /// A boolean under `key`.
    pub fn boolean(&self, d: &mut Diag<'_>, key: &str) -> Option<(bool, Span)> {
        let n = self.get(key)?;
        match n.value {
            DeValue::Boolean(b) => Some((*b, n.span.clone())),
            other => {
                d.push(
                    n.span.clone(),
                    self.field(key),
                    format!("expected true or false, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// An exact decimal amount (string "0.49", integer or float, read from its source
    /// text so no binary floating point is involved), not negative.
    pub fn money(&self, d: &mut Diag<'_>, key: &str) -> Option<(Decimal, Span)> {
        let n = self.get(key)?;
        let text = match n.value {
            DeValue::String(s) => s.to_string(),
            DeValue::Integer(i) if i.radix() == 10 => i.as_str().replace('_', ""),
            DeValue::Float(f) => f.as_str().replace('_', ""),
            other => {
                d.push(
                    n.span.clone(),
                    self.field(key),
                    format!(
                        "expected an amount in EUR such as \"0.49\", found {}",
                        other.type_str()
                    ),
                );
                return None;
            }
        };
        match text.trim().parse::<Decimal>() {
            Ok(v) if v >= Decimal::ZERO => Some((v, n.span.clone())),
            _ => {
                d.push(
                    n.span.clone(),
                    self.field(key),
                    format!(
                        "expected a non-negative amount in EUR such as \"0.49\", found `{text}`"
                    ),
                );
                None
            }
        }
    }

    /// A sub-table under `key`.
    pub fn table(&self, d: &mut Diag<'_>, key: &str) -> Option<Table<'a, 'i>> {
        let n = self.get(key)?;
        n.as_table(d, self.field(key))
    }

    /// An array under `key`, as nodes.
    pub fn array(&self, d: &mut Diag<'_>, key: &str) -> Option<Vec<Node<'a, 'i>>> {
        let n = self.get(key)?;
        match n.value {
            DeValue::Array(a) => Some(a.iter().map(Node::from_spanned).collect()),
            other => {
                d.push(
                    n.span.clone(),
                    self.field(key),
                    format!("expected an array, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// An array of tables under `key` (`[[key]]`), each named `key[i]`.
    pub fn array_of_tables(&self, d: &mut Diag<'_>, key: &str) -> Vec<Table<'a, 'i>> {
        let Some(items) = self.array(d, key) else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_table(d, format!("{}[{i}]", self.field(key))))
            .collect()
    }

    /// A list of strings under `key`.
    pub fn strings(
        &self,
        d: &mut Diag<'_>,
        key: &str,
        expected: &str,
    ) -> Option<Vec<(String, Span)>> {
        let items = self.array(d, key)?;
        let mut out = Vec::new();
        for (i, n) in items.iter().enumerate() {
            if let Some(s) = n.string(d, &format!("{}[{i}]", self.field(key)), expected) {
                out.push((s.to_string(), n.span.clone()));
            }
        }
        Some(out)
    }
}

impl<'a, 'i> Node<'a, 'i> {
    /// The value as a table named `path`, or a problem.
    pub fn as_table(&self, d: &mut Diag<'_>, path: String) -> Option<Table<'a, 'i>> {
        match self.value {
            DeValue::Table(t) => Some(Table {
                table: t,
                span: self.span.clone(),
                path,
            }),
            other => {
                d.push(
                    self.span.clone(),
                    path,
                    format!("expected a table, found {}", other.type_str()),
                );
                None
            }
        }
    }
}
