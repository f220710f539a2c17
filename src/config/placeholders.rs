//! The placeholders a check's query may use, and their syntax — part of the service-file model,
//! so that validation (here in `config`) and resolution (`checks::CheckContext`) share one list.
//!
//! `{service}`, `{revision}`, `{stable_revision}`, `{project}`, `{region}`, `{commit}`,
//! `{window}` (and `{window_seconds}`); `{{` and `}}` are literal braces. Only a brace pair around
//! a bare lowercase name is a placeholder, so PromQL label matchers (`{job="api"}`) and SQL are
//! left alone.

/// Every placeholder a query may use.
pub const PLACEHOLDERS: [&str; 8] = [
    "service",
    "revision",
    "stable_revision",
    "project",
    "region",
    "commit",
    "window",
    "window_seconds",
];

/// True when `text` uses `{name}`.
pub fn uses_placeholder(text: &str, name: &str) -> bool {
    tokens(text)
        .iter()
        .any(|token| matches!(token, Token::Placeholder(found) if *found == name))
}

/// The placeholders of `text` that are not in [`PLACEHOLDERS`] (for service-file validation).
pub fn unknown_placeholders(text: &str) -> Vec<String> {
    let mut unknown: Vec<String> = tokens(text)
        .into_iter()
        .filter_map(|token| match token {
            Token::Placeholder(name) if !PLACEHOLDERS.contains(&name) => Some(name.to_string()),
            _ => None,
        })
        .collect();
    unknown.dedup();
    unknown
}

/// A piece of a query's text.
#[derive(Debug, PartialEq)]
pub(crate) enum Token<'a> {
    /// Literal text.
    Text(&'a str),
    /// The name inside `{name}`.
    Placeholder(&'a str),
}

/// Splits `text` into literal text and `{name}` placeholders (`{{`/`}}` are literal braces).
pub(crate) fn tokens(text: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(['{', '}']) {
        let (before, from_brace) = rest.split_at(open);
        if !before.is_empty() {
            tokens.push(Token::Text(before));
        }
        if let Some(after) = from_brace.strip_prefix("{{") {
            tokens.push(Token::Text("{"));
            rest = after;
            continue;
        }
        if let Some(after) = from_brace.strip_prefix("}}") {
            tokens.push(Token::Text("}"));
            rest = after;
            continue;
        }
        if let Some(inner) = from_brace.strip_prefix('{') {
            let name_length = inner
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(inner.len());
            if name_length > 0 && inner[name_length..].starts_with('}') {
                tokens.push(Token::Placeholder(&inner[..name_length]));
                rest = &inner[name_length + 1..];
                continue;
            }
        }
        tokens.push(Token::Text(&from_brace[..1]));
        rest = &from_brace[1..];
    }
    if !rest.is_empty() {
        tokens.push(Token::Text(rest));
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_placeholders_are_found_once() {
        assert_eq!(
            unknown_placeholders("{servce} {servce} {revision} {job=\"x\"} é{x}"),
            ["servce", "x"]
        );
        assert!(unknown_placeholders("SELECT 1").is_empty());
        assert!(uses_placeholder("a {revision} b", "revision"));
        assert!(!uses_placeholder("a {{revision}} b", "revision"));
    }
}
