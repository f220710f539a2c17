//! Names that came from a user or a remote system (service names, keys, file names, revision
//! names in platform errors) are shown with their terminal escapes escaped, never raw.
//!
//! Each test is named after what broke; each failed on the code before its fix.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

mod hostile;

use hostile::{deployer, diagnostics_of, valid_with, Repository};

#[test]
fn an_unknown_service_name_with_terminal_escapes_is_shown_escaped() {
    let repository = Repository::new();
    repository.service("svc", &valid_with(&[]));
    let run = deployer(
        repository.root(),
        &["services", "show", "\u{1b}[2J\u{1b}[31mevil"],
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
    assert!(
        run.stderr
            .contains("no service named `\\u{1b}[2J\\u{1b}[31mevil`"),
        "{:?}",
        run.stderr
    );
}

#[test]
fn a_did_you_mean_suggestion_with_terminal_escapes_is_shown_escaped() {
    let repository = Repository::new();
    repository.service(
        "svc",
        &valid_with(&[("name = \"svc\"", "name = \"svc\\u001b]0;pwned\\u0007\"")]),
    );
    let run = deployer(repository.root(), &["services", "show", "svc]0;pwned"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
    assert!(!run.stderr.contains('\u{7}'), "{:?}", run.stderr);
    assert!(
        run.stderr
            .contains("did you mean `svc\\u{1b}]0;pwned\\u{7}`?"),
        "{:?}",
        run.stderr
    );
}

#[test]
fn an_invalid_service_name_with_terminal_escapes_is_shown_escaped_in_its_diagnostic() {
    assert_eq!(
        diagnostics_of(&valid_with(&[(
            "name = \"svc\"",
            "name = \"\\u001b[31mred\""
        )])),
        ["1:8: invalid service name `\\u{1b}[31mred`"]
    );
}

#[test]
fn an_unknown_key_with_terminal_escapes_is_shown_escaped_in_its_diagnostic() {
    let repository = Repository::new();
    let path = repository.service(
        "svc",
        &valid_with(&[("[target]", "\"\\u001b[31mkey\" = 1\n\n[target]")]),
    );
    let run = deployer(
        repository.root(),
        &["services", "validate", path.to_str().unwrap()],
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
    assert!(
        run.stderr.contains("unknown key `\\u{1b}[31mkey`"),
        "{:?}",
        run.stderr
    );
}

#[test]
fn a_file_name_with_terminal_escapes_is_shown_escaped() {
    let repository = Repository::new();
    let path = repository.service(
        "evil\u{1b}[2J",
        &valid_with(&[("name = \"svc\"", "name = \"Bad\"")]),
    );
    let run = deployer(
        repository.root(),
        &["services", "validate", path.to_str().unwrap()],
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
    assert!(!run.stdout.contains('\u{1b}'), "{:?}", run.stdout);
    assert!(
        run.stderr.contains("evil\\u{1b}[2J.toml:1:8"),
        "{:?}",
        run.stderr
    );
}

#[test]
fn a_revision_name_with_terminal_escapes_is_shown_escaped_in_platform_errors() {
    use deployer::platform::PlatformError;
    let path = "projects/p/locations/r/services/s/revisions/\u{1b}[2Jx".to_string();
    for error in [
        PlatformError::NotFound(path.clone()),
        PlatformError::Conflict(path),
    ] {
        let text = error.to_string();
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(text.contains("revisions/\\u{1b}[2Jx"), "{text:?}");
    }
}
