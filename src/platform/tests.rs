//! Tests of what the platform's types say about a change: [`RevisionSettings::differences`]
//! never shows the value of a secret-looking variable, and shortens a long value by characters.

use super::*;

#[test]
fn the_value_of_a_secret_looking_variable_is_never_in_the_differences() {
    let base = RevisionSettings {
        env: BTreeMap::from([("API_TOKEN".to_string(), "old-token-value".to_string())]),
        ..RevisionSettings::default()
    };
    let new = RevisionSettings {
        env: BTreeMap::from([
            ("API_TOKEN".to_string(), "new-token-value".to_string()),
            ("DB_PASSWORD".to_string(), "hunter2".to_string()),
        ]),
        ..RevisionSettings::default()
    };
    let lines = new.differences(&base).join("\n");
    for value in ["old-token-value", "new-token-value", "hunter2"] {
        assert!(!lines.contains(value), "{lines}");
    }
    assert!(
        lines.contains("env API_TOKEN: changed (value not shown)"),
        "{lines}"
    );
    assert!(
        lines.contains("env DB_PASSWORD: set (value not shown)"),
        "{lines}"
    );
    let removed = RevisionSettings::default().differences(&base).join("\n");
    assert_eq!(removed, "env API_TOKEN: removed");
}

#[test]
fn a_100_kb_env_value_is_shortened_by_characters_in_the_differences() {
    let new = RevisionSettings {
        env: BTreeMap::from([("BLOB".to_string(), "é".repeat(100_000))]),
        ..RevisionSettings::default()
    };
    let lines = new.differences(&RevisionSettings::default());
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].chars().count() < 200,
        "{}",
        lines[0].chars().count()
    );
    assert!(lines[0].contains("more characters)"), "{}", lines[0]);
}
