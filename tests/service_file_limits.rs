//! Service files that point out of the repository, at the wrong kind of file, or hold values no
//! rollout can survive (a CRLF in a path, a non-ASCII image repository, holds of a million years)
//! are refused when they are loaded.
//!
//! Each test is named after what broke; each failed on the code before its fix.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

mod hostile;

use hostile::{diagnostics_of, valid_with, valid_with_rollout, Repository};

#[test]
fn a_runbook_outside_the_repository_is_refused() {
    let repository = Repository::new();
    let outside = repository
        .root()
        .parent()
        .unwrap()
        .join("outside-runbook.md");
    let path = repository.service(
        "svc",
        &valid_with(&[("runbooks/ok.md", "../outside-runbook.md")]),
    );
    let diagnostics = repository.diagnostics(&path);
    assert_eq!(
        diagnostics,
        ["2:11: runbook `../outside-runbook.md` is outside the repository"],
        "{}",
        outside.display()
    );
}

#[test]
fn an_absolute_dockerfile_path_is_refused() {
    assert_eq!(
        diagnostics_of(&valid_with(&[(
            "dockerfile = \"Dockerfile\"",
            "dockerfile = \"/etc/passwd\"",
        )])),
        ["12:14: Dockerfile `/etc/passwd` is outside the repository"]
    );
}

#[test]
fn a_dockerfile_through_a_symlink_out_of_the_repository_is_refused() {
    let repository = Repository::new();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    std::os::unix::fs::symlink(
        elsewhere.path().join("Dockerfile"),
        repository.root().join("Linked.Dockerfile"),
    )
    .unwrap();
    let path = repository.service(
        "svc",
        &valid_with(&[(
            "dockerfile = \"Dockerfile\"",
            "dockerfile = \"Linked.Dockerfile\"",
        )]),
    );
    assert_eq!(
        repository.diagnostics(&path),
        ["12:14: Dockerfile `Linked.Dockerfile` is outside the repository (through a symlink)"]
    );
}

#[test]
fn a_directory_where_the_dockerfile_is_expected_is_not_called_missing() {
    assert_eq!(
        diagnostics_of(&valid_with(&[(
            "dockerfile = \"Dockerfile\"",
            "dockerfile = \"runbooks\""
        )])),
        ["12:14: Dockerfile `runbooks` is a directory, not a regular file"]
    );
}

#[test]
fn a_directory_where_the_runbook_is_expected_is_not_called_missing() {
    assert_eq!(
        diagnostics_of(&valid_with(&[("runbooks/ok.md", "runbooks")])),
        ["2:11: runbook `runbooks` is a directory, not a regular file"]
    );
}

#[test]
fn a_build_context_outside_the_repository_is_refused() {
    assert_eq!(
        diagnostics_of(&valid_with(&[("context = \".\"", "context = \"../..\"")])),
        ["11:11: build context `../..` is outside the repository"]
    );
}

#[test]
fn a_health_path_with_crlf_is_refused() {
    assert_eq!(
        diagnostics_of(&valid_with(&[(
            "[[checks]]",
            "[health]\npath = \"/health\\r\\nX-Injected: 1\"\n\n[[checks]]",
        )])),
        ["15:8: health path `/health\\r\\nX-Injected: 1` contains control characters"]
    );
}

#[test]
fn a_non_ascii_image_repository_is_refused() {
    assert_eq!(
        diagnostics_of(&valid_with(&[(
            "127.0.0.1:5000/svc",
            "127.0.0.1:5000/sérvice"
        )])),
        ["8:14: invalid image repository `127.0.0.1:5000/sérvice`"]
    );
}

#[test]
fn a_hold_of_a_million_years_is_refused_at_parse_time() {
    let diagnostics = diagnostics_of(&valid_with_rollout("hold = \"1000000y\""));
    assert_eq!(
        diagnostics,
        ["15:8: duration `1000000y` is longer than the longest allowed, 365days"]
    );
}

#[test]
fn a_hold_that_overflows_the_rollout_duration_with_six_steps_is_refused() {
    let diagnostics = diagnostics_of(&valid_with_rollout(
        "steps = [1, 2, 5, 25, 50, 100]\nhold = \"99999999999y\"",
    ));
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert!(diagnostics[0].starts_with("16:8: "), "{diagnostics:?}");
    assert!(diagnostics[0].contains("99999999999y"), "{diagnostics:?}");
}

#[test]
fn a_hold_above_seven_days_is_out_of_its_documented_range() {
    assert_eq!(
        diagnostics_of(&valid_with_rollout("hold = \"8days\"")),
        ["15:8: `rollout.hold` = 8days is out of range 1s..=7days"]
    );
}

#[test]
fn a_monitor_duration_above_seven_days_is_out_of_its_documented_range() {
    assert_eq!(
        diagnostics_of(&valid_with_rollout("monitor_duration = \"30days\"")),
        ["15:20: `rollout.monitor_duration` = 30days is out of range 0s..=7days"]
    );
}
