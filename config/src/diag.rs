//! Problems found in a config or schedule file, each with file, line, column and field.

use std::fmt;
use std::ops::Range;

/// One problem in a file: where it is, which field, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file's path as the user gave it.
    pub file: String,
    /// 1-based line of the offending text.
    pub line: usize,
    /// 1-based column (in characters) of the offending text.
    pub column: usize,
    /// Dotted path of the field, e.g. `window[2].start`; empty for syntax errors.
    pub field: String,
    /// What is wrong and what is expected instead.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        } else {
            write!(
                f,
                "{}:{}:{}: {}: {}",
                self.file, self.line, self.column, self.field, self.message
            )
        }
    }
}

/// All problems of one file; parsing goes on after a problem so every one is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Collects problems for one source text, turning byte spans into line and column.
pub struct Diag<'s> {
    file: String,
    src: &'s str,
    problems: Vec<Problem>,
}

impl<'s> Diag<'s> {
    /// Starts collecting problems for `src`, read from `file`.
    pub fn new(file: impl Into<String>, src: &'s str) -> Self {
        Diag {
            file: file.into(),
            src,
            problems: Vec::new(),
        }
    }

    /// Records a problem at the byte span `span` for the field `field`.
    pub fn push(
        &mut self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (line, column) = line_col(self.src, span.start);
        self.problems.push(Problem {
            file: self.file.clone(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        });
    }

    /// True when no problem was recorded.
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// The problems in file order.
    pub fn into_problems(mut self) -> Problems {
        self.problems.sort_by_key(|p| (p.line, p.column));
        self.problems.dedup();
        Problems(self.problems)
    }
}

/// 1-based line and character column of byte offset `offset` in `src`.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = src[line_start..offset].chars().count() + 1;
    (line, column)
}

/// Longest name [`closest`] compares: a typo of a key, zone or pool name is short, and
/// the comparison's cost grows with the length (a 1 MB "zone name" took 12 s).
pub const MAX_HINT_INPUT: usize = 128;

/// The valid name closest to `given`, if one is close enough to be a likely typo; `None`
/// at once for a `given` longer than [`MAX_HINT_INPUT`] bytes.
pub fn closest<'a>(given: &str, valid: &[&'a str]) -> Option<&'a str> {
    if given.len() > MAX_HINT_INPUT {
        return None;
    }
    valid
        .iter()
        .map(|v| (strsim::jaro_winkler(given, v), *v))
        .filter(|(score, _)| *score >= 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, v)| v)
}

/// `value` for an error message: whole when short, else its first 60 characters, an
/// ellipsis and its length (a message must not repeat a megabyte of bad input).
pub fn shown(value: &str) -> std::borrow::Cow<'_, str> {
    const KEEP: usize = 60;
    match value.char_indices().nth(KEEP) {
        None => std::borrow::Cow::Borrowed(value),
        Some((cut, _)) => {
            std::borrow::Cow::Owned(format!("{}… ({} bytes)", &value[..cut], value.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let src = "a = 1\nbé = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 9), (2, 3));
        assert_eq!(line_col(src, 999), (3, 1));
    }

    #[test]
    fn closest_suggests_typos_only() {
        assert_eq!(
            closest("timezon", &["timezone", "window"]),
            Some("timezone")
        );
        assert_eq!(closest("zzz", &["timezone", "window"]), None);
        let huge = "Europe/Berlin".repeat(100_000);
        assert_eq!(closest(&huge, &["Europe/Berlin"]), None);
    }

    #[test]
    fn shown_cuts_long_values() {
        assert_eq!(shown("Europe/Berlin"), "Europe/Berlin");
        let long = "é".repeat(1000);
        let s = shown(&long);
        assert!(s.starts_with(&"é".repeat(60)));
        assert!(s.ends_with("… (2000 bytes)"), "{s}");
    }
}
