//! Duration flags out of their documented ranges (`--ready-timeout`, `--lock-wait`,
//! `--startup-timeout`) are usage errors (exit 2) naming the flag, not overflows later.
//!
//! Each test is named after what broke; each failed on the code before its fix.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

mod hostile;

use hostile::{deployer, valid_with, Repository};

#[test]
fn a_ready_timeout_of_a_million_years_is_a_usage_error() {
    let repository = Repository::new();
    repository.service("svc", &valid_with(&[]));
    let run = deployer(
        repository.root(),
        &["deploy", "svc", "--ready-timeout", "1000000y"],
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--ready-timeout"), "{}", run.stderr);
    assert!(
        run.stderr.contains("longer than the longest allowed"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_lock_wait_of_500000000000_years_is_a_usage_error() {
    let repository = Repository::new();
    repository.service("svc", &valid_with(&[]));
    let run = deployer(
        repository.root(),
        &["deploy", "svc", "--lock-wait", "500000000000y"],
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--lock-wait"), "{}", run.stderr);
}

#[test]
fn an_emulator_startup_timeout_of_zero_is_a_usage_error() {
    let repository = Repository::new();
    let data = repository.root().join("emulator-data");
    let run = deployer(
        repository.root(),
        &[
            "emulator",
            "--data-dir",
            data.to_str().unwrap(),
            "--startup-timeout",
            "0s",
            "status",
        ],
    );
    assert_eq!(run.code, Some(2), "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("--startup-timeout"), "{}", run.stderr);
    assert!(
        run.stderr.contains("shorter than the shortest allowed, 1s"),
        "{}",
        run.stderr
    );
}
