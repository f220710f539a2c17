//! Diagnostics: one problem in one service file, with its line, column and a hint.

use std::{
    fmt,
    ops::Range,
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::{closest, duration::DurationErrorKind, locate};
use crate::untrusted::escaped;

/// One problem in a service file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A problem at `span` of `source` (the whole file's start when the span is unknown).
    pub fn at(
        file: &Path,
        source: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = span
            .map(|span| line_column(source, span.start))
            .unwrap_or((1, 1));
        Self::at_line_column(file, (line, column), message)
    }

    /// A problem at `span`, located through `lines` (the index of the file's text): for a file
    /// with many problems, each one costs a binary search instead of a scan of the text.
    pub fn located(
        file: &Path,
        lines: &LineIndex<'_>,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        let position = span.map_or((1, 1), |span| lines.line_column(span.start));
        Self::at_line_column(file, position, message)
    }

    fn at_line_column(
        file: &Path,
        (line, column): (usize, usize),
        message: impl Into<String>,
    ) -> Self {
        // Messages quote what the user wrote (names, keys, paths): control characters in it
        // must not reach the terminal raw.
        Self {
            file: file.to_path_buf(),
            line,
            column,
            message: escaped(&message.into()).into_owned(),
            hint: None,
        }
    }

    /// A problem with the file as a whole (unreadable, say): reported at 1:1.
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Self::at(file, "", None, message)
    }

    /// Adds the hint line.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(escaped(&hint.into()).into_owned());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            escaped(&self.file.display().to_string()),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Several diagnostics, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Adds one.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }

    /// Adds all of `other`.
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Iterates in order.
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }
}

impl std::error::Error for Diagnostics {}

impl From<Diagnostic> for Diagnostics {
    fn from(diagnostic: Diagnostic) -> Self {
        Self(vec![diagnostic])
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, diagnostic) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

/// 1-based line and column (in characters) of byte `offset` in `source`.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |index| index + 1);
    let column = source[line_start..offset].chars().count() + 1;
    (line, column)
}

/// Line starts of one file's text, computed once, so that locating many diagnostics in a large
/// file stays linear in the file's size (10,000 duplicate checks used to take minutes).
#[derive(Debug)]
pub struct LineIndex<'a> {
    source: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    /// Indexes `source`.
    pub fn new(source: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(index, _)| index + 1))
            .collect();
        Self { source, starts }
    }

    /// 1-based line and column (in characters) of byte `offset`, as [`line_column`].
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.source.len());
        while !self.source.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|start| *start <= offset);
        let line_start = self.starts[line - 1];
        let column = self.source[line_start..offset].chars().count() + 1;
        (line, column)
    }
}

/// Turns a TOML/serde error into a diagnostic, pointing at the offending key when serde only
/// knows the enclosing table, and suggesting the closest valid key or value for a typo.
pub fn from_toml_error(file: &Path, source: &str, error: &toml::de::Error) -> Diagnostic {
    let message = humane_types(error.message().trim());
    let span = error.span();
    if let Some(unknown) = UnknownName::parse(&message) {
        let key_span = match unknown.kind {
            NameKind::Field => span
                .clone()
                .and_then(|within| locate::key_within(source, within, &unknown.name)),
            NameKind::Variant => span
                .clone()
                .and_then(|within| quoted_within(source, within, &unknown.name)),
        }
        .or(span);
        let what = match unknown.kind {
            NameKind::Field => "key",
            NameKind::Variant => "value",
        };
        let mut diagnostic = Diagnostic::at(
            file,
            source,
            key_span,
            format!("unknown {what} `{}`", unknown.name),
        );
        let expected: Vec<&str> = unknown.expected.iter().map(String::as_str).collect();
        diagnostic = match closest(&unknown.name, expected.iter().copied()) {
            Some(best) => diagnostic.with_hint(format!("did you mean `{best}`?")),
            None if expected.is_empty() => {
                diagnostic.with_hint(format!("remove `{}`", unknown.name))
            }
            None => diagnostic.with_hint(format!(
                "expected one of {}",
                expected
                    .iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        };
        return diagnostic;
    }
    let hint = if message.starts_with("missing field") {
        Some("add the key; `deployer services schema` lists every key")
    } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
        Some("check the value's type against `deployer services schema`")
    } else if let Some(duration) = DurationErrorKind::of_message(&message) {
        duration.hint()
    } else if span.is_some() {
        Some("fix the TOML syntax at this position")
    } else {
        None
    };
    // Inside a table read through a tagged enum (`[[checks]]`), serde only knows the table:
    // point at the offending string value when it is quoted there.
    let span = message
        .strip_prefix("invalid type: string \"")
        .and_then(|rest| rest.split_once('"'))
        .and_then(|(text, _)| {
            span.clone()
                .and_then(|within| quoted_within(source, within, text))
        })
        .or(span);
    let diagnostic = Diagnostic::at(file, source, span, message);
    match hint {
        Some(hint) => diagnostic.with_hint(hint),
        None => diagnostic,
    }
}

/// The first `"text"` or `'text'` in `source[within]`.
fn quoted_within(
    source: &str,
    within: std::ops::Range<usize>,
    text: &str,
) -> Option<std::ops::Range<usize>> {
    // serde may know only the table's header: look through the table's body too.
    let end = source
        .get(within.end..)
        .and_then(|rest| rest.find("\n["))
        .map_or(source.len(), |offset| within.end + offset)
        .max(within.end);
    let within = within.start..end;
    let region = source.get(within.clone())?;
    ['"', '\'']
        .iter()
        .filter_map(|quote| {
            region
                .find(&format!("{quote}{text}{quote}"))
                .map(|offset| within.start + offset..within.start + offset + text.len() + 2)
        })
        .min_by_key(|range| range.start)
}

/// Serde names Rust types (`u8`, `f64`, `a sequence`); users write TOML.
fn humane_types(message: &str) -> String {
    [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
    ]
    .iter()
    .fold(message.to_string(), |text, (from, to)| {
        text.replace(from, to)
    })
}

enum NameKind {
    Field,
    Variant,
}

/// The parts of serde's "unknown field `x`, expected one of `a`, `b`" messages.
struct UnknownName {
    kind: NameKind,
    name: String,
    expected: Vec<String>,
}

impl UnknownName {
    fn parse(message: &str) -> Option<Self> {
        let (kind, rest) = if let Some(rest) = message.strip_prefix("unknown field `") {
            (NameKind::Field, rest)
        } else if let Some(rest) = message.strip_prefix("unknown variant `") {
            (NameKind::Variant, rest)
        } else {
            return None;
        };
        let end = rest.find('`')?;
        let name = rest[..end].to_string();
        let expected = rest[end + 1..]
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        Some(Self {
            kind,
            name,
            expected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_characters() {
        let source = "a = 1\nbé = 2\n";
        assert_eq!(line_column(source, 0), (1, 1));
        assert_eq!(line_column(source, 6), (2, 1));
        assert_eq!(line_column(source, 9), (2, 3));
        assert_eq!(line_column(source, 1000), (3, 1));
    }

    #[test]
    fn line_index_agrees_with_line_column() {
        let source = "a = 1\nbé = 2\n\nlast";
        let index = LineIndex::new(source);
        for offset in 0..=source.len() + 2 {
            assert_eq!(
                index.line_column(offset),
                line_column(source, offset),
                "{offset}"
            );
        }
    }

    #[test]
    fn parses_serde_unknown_field_messages() {
        let parsed =
            UnknownName::parse("unknown field `stepz`, expected one of `steps`, `hold`").unwrap();
        assert_eq!(parsed.name, "stepz");
        assert_eq!(parsed.expected, ["steps", "hold"]);
        let parsed = UnknownName::parse("unknown field `x`, there are no fields").unwrap();
        assert!(parsed.expected.is_empty());
    }
}
