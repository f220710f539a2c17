//! Finds where a key or value sits in a service file's text, for diagnostics.
//!
//! Serde knows spans only for what it is deserializing at the moment of an error; semantic
//! validation happens later, on the model. So locations are looked up again in the text with
//! `toml_edit`, which keeps the span of every key and value.

use std::ops::Range;

use toml_edit::{Document, Item, Table, TableLike, Value};

/// One step of a path into the document.
#[derive(Debug, Clone, Copy)]
pub enum Part<'a> {
    /// A key of a table.
    Key(&'a str),
    /// An element of an array or an array of tables.
    Index(usize),
}

/// The span of the value at `path` (for a table, of its header), if the text has it.
///
/// Parses `source`; to locate many paths in one file, parse it once and use [`span_in`].
pub fn span_of(source: &str, path: &[Part<'_>]) -> Option<Range<usize>> {
    span_in(&Document::parse(source).ok()?, path)
}

/// The span of the value at `path` in a parsed document (see [`span_of`]).
pub fn span_in<S>(document: &Document<S>, path: &[Part<'_>]) -> Option<Range<usize>> {
    let mut item: &Item = document.as_item();
    let mut last_key_span = None;
    for (position, part) in path.iter().enumerate() {
        match (part, item) {
            (Part::Key(key), Item::Table(table)) => {
                last_key_span = table.key(key).and_then(|key| key.span());
                item = table.get(key)?;
            }
            (Part::Key(key), Item::Value(Value::InlineTable(table))) => {
                last_key_span = table.key(key).and_then(|key| key.span());
                let value = table.get(key)?;
                return value_path_span(value, &path[position + 1..]).or(last_key_span);
            }
            (Part::Index(index), Item::ArrayOfTables(array)) => {
                let table = array.get(*index)?;
                return table_path_span(table, &path[position + 1..]).or(table.span());
            }
            (Part::Index(_), Item::Value(value)) => {
                return value_path_span(value, &path[position..]).or(last_key_span);
            }
            _ => return last_key_span,
        }
    }
    item_span(item).or(last_key_span)
}

fn table_path_span(table: &Table, path: &[Part<'_>]) -> Option<Range<usize>> {
    match path.split_first() {
        None => table.span(),
        Some((Part::Key(key), rest)) => {
            let key_span = table.key(key).and_then(|key| key.span());
            match table.get(key)? {
                Item::Value(value) => value_path_span(value, rest).or(key_span),
                Item::Table(inner) => table_path_span(inner, rest).or(key_span),
                other => item_span(other).or(key_span),
            }
        }
        Some((Part::Index(_), _)) => table.span(),
    }
}

fn value_path_span(value: &Value, path: &[Part<'_>]) -> Option<Range<usize>> {
    match (path.split_first(), value) {
        (None, value) => value.span(),
        (Some((Part::Index(index), rest)), Value::Array(array)) => {
            value_path_span(array.get(*index)?, rest).or(value.span())
        }
        (Some((Part::Key(key), rest)), Value::InlineTable(table)) => {
            value_path_span(table.get(key)?, rest).or(value.span())
        }
        _ => value.span(),
    }
}

fn item_span(item: &Item) -> Option<Range<usize>> {
    match item {
        Item::Value(value) => value.span(),
        Item::Table(table) => table.span(),
        Item::ArrayOfTables(array) => array.span(),
        Item::None => None,
    }
}

/// The span of the first key named `name` that starts inside `within` (serde reports an
/// unknown key with the span of its table; this narrows it to the key itself).
pub fn key_within(source: &str, within: Range<usize>, name: &str) -> Option<Range<usize>> {
    let document = Document::parse(source).ok()?;
    let mut found = Vec::new();
    collect_keys(document.as_table(), name, &mut found);
    found
        .into_iter()
        .filter(|span| span.start >= within.start && span.start < within.end.max(within.start + 1))
        .min_by_key(|span| span.start)
}

fn collect_keys(table: &dyn TableLike, name: &str, found: &mut Vec<Range<usize>>) {
    for (key, item) in table.iter() {
        if key == name {
            if let Some(span) = table.key(key).and_then(|key| key.span()) {
                found.push(span);
            }
        }
        match item {
            Item::Table(inner) => collect_keys(inner, name, found),
            Item::ArrayOfTables(array) => {
                for inner in array.iter() {
                    collect_keys(inner, name, found);
                }
            }
            Item::Value(Value::InlineTable(inner)) => collect_keys(inner, name, found),
            Item::Value(Value::Array(array)) => {
                for value in array.iter() {
                    if let Value::InlineTable(inner) = value {
                        collect_keys(inner, name, found);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "name = \"a\"\n[rollout]\nsteps = [5, 50, 100]\n\n[[checks]]\nname = \"x\"\n\n[[checks]]\nname = \"y\"\nwarn = 3\n";

    fn text(span: Option<Range<usize>>) -> &'static str {
        &SOURCE[span.expect("span")]
    }

    #[test]
    fn finds_values_by_path() {
        assert_eq!(text(span_of(SOURCE, &[Part::Key("name")])), "\"a\"");
        assert_eq!(
            text(span_of(SOURCE, &[Part::Key("rollout"), Part::Key("steps")])),
            "[5, 50, 100]"
        );
        assert_eq!(
            text(span_of(
                SOURCE,
                &[Part::Key("rollout"), Part::Key("steps"), Part::Index(1)]
            )),
            "50"
        );
        assert_eq!(
            text(span_of(
                SOURCE,
                &[Part::Key("checks"), Part::Index(1), Part::Key("warn")]
            )),
            "3"
        );
    }

    #[test]
    fn finds_keys_within_a_table() {
        let span = key_within(SOURCE, 40..SOURCE.len(), "name").unwrap();
        assert_eq!(&SOURCE[span.clone()], "name");
        assert!(span.start > 40);
    }
}
