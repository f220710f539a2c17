//! Special files where service files are expected — named pipes, devices, directories, symlink
//! loops — are reported, never read or blocked on; and validation stays linear in the number of
//! checks.
//!
//! Each test is named after what broke; each failed on the code before its fix.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

mod hostile;

use std::time::{Duration, Instant};

use hostile::{deployer, deployer_within, mkfifo, valid_with, Repository};

#[test]
fn services_validate_on_a_fifo_reports_a_named_pipe_instead_of_blocking() {
    let repository = Repository::new();
    let fifo = repository.root().join("services/pipe.toml");
    mkfifo(&fifo);
    let run = deployer_within(
        repository.root(),
        &["services", "validate", "services/pipe.toml"],
        Duration::from_secs(20),
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("services/pipe.toml:1:1: is a named pipe (FIFO), not a regular file"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_fifo_in_the_services_directory_is_reported_not_skipped() {
    let repository = Repository::new();
    repository.service("svc", &valid_with(&[]));
    mkfifo(&repository.root().join("services/pipe.toml"));
    let run = deployer_within(
        repository.root(),
        &["services", "validate"],
        Duration::from_secs(20),
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("pipe.toml:1:1: is a named pipe"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("ok     services/svc.toml"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_fifo_runbook_does_not_block_validation() {
    let repository = Repository::new();
    mkfifo(&repository.root().join("runbooks/pipe.md"));
    let path = repository.service(
        "svc",
        &valid_with(&[("runbooks/ok.md", "runbooks/pipe.md")]),
    );
    let started = Instant::now();
    let (sender, receiver) = std::sync::mpsc::channel();
    let workspace = repository.workspace();
    std::thread::spawn(move || {
        let _ = sender.send(workspace.load_file(&path).map(|_| ()));
    });
    let result = receiver
        .recv_timeout(Duration::from_secs(20))
        .expect("validation of a FIFO runbook finishes");
    let diagnostics = result.expect_err("a FIFO runbook is an error");
    let text = diagnostics.to_string();
    assert!(
        text.contains(
            ":2:11: runbook `runbooks/pipe.md` is a named pipe (FIFO), not a regular file"
        ),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_directory_named_like_a_service_file_is_reported_as_a_directory() {
    let repository = Repository::new();
    std::fs::create_dir(repository.root().join("services/dir.toml")).unwrap();
    let diagnostics = repository.diagnostics(&repository.root().join("services/dir.toml"));
    assert_eq!(diagnostics, ["1:1: is a directory, not a regular file"]);
}

#[test]
fn a_device_named_as_a_service_file_is_reported_as_a_device() {
    let repository = Repository::new();
    // `/dev/null`, not `/dev/zero`: the old code read `/dev/zero` until memory ran out.
    std::os::unix::fs::symlink("/dev/null", repository.root().join("services/null.toml")).unwrap();
    let diagnostics = repository.diagnostics(&repository.root().join("services/null.toml"));
    assert_eq!(
        diagnostics,
        ["1:1: is a character device, not a regular file"]
    );
}

#[test]
fn a_service_file_that_is_a_symlink_loop_says_so() {
    let repository = Repository::new();
    let services = repository.root().join("services");
    std::os::unix::fs::symlink("b.toml", services.join("a.toml")).unwrap();
    std::os::unix::fs::symlink("a.toml", services.join("b.toml")).unwrap();
    let diagnostics = repository.diagnostics(&services.join("a.toml"));
    assert_eq!(diagnostics, ["1:1: is a symlink loop"]);
    let run = deployer(repository.root(), &["services", "validate"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("a.toml:1:1: is a symlink loop"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_services_directory_that_is_a_file_says_so() {
    let repository = Repository::new();
    let file = repository.root().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let run = deployer(
        repository.root(),
        &["services", "list", "--services-dir", "not-a-dir"],
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("services directory `not-a-dir` is a regular file, not a directory"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_services_directory_that_is_a_symlink_loop_says_so() {
    let repository = Repository::new();
    let root = repository.root();
    std::os::unix::fs::symlink("loop-b", root.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", root.join("loop-b")).unwrap();
    let run = deployer(root, &["services", "list", "--services-dir", "loop-a"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("services directory `loop-a` is a symlink loop"),
        "{}",
        run.stderr
    );
}

#[test]
fn ten_thousand_checks_with_one_name_give_one_diagnostic_per_duplicate() {
    let repository = Repository::new();
    let check = "[[checks]]\nname = \"Coverage\"\nprovider = \"bigquery\"\nquery = \"SELECT 95\"\ncomparison = \">=\"\nwarn = 90\ncritical = 70\nunit = \"percent\"\n\n";
    let head = valid_with(&[]);
    let head = head.split("[[checks]]").next().unwrap();
    let head_lines = head.lines().count();
    let text = format!("{head}{}", check.repeat(10_000));
    let path = repository.service("many", &text);
    let diagnostics = repository.diagnostics(&path);
    assert_eq!(diagnostics.len(), 9_999);
    // Check K (0-based) starts at line head_lines + 1 + 9K; its name is on the next line, col 8.
    for (index, diagnostic) in diagnostics.iter().enumerate() {
        let check = index + 1;
        let line = head_lines + 1 + 9 * check + 1;
        assert_eq!(
            diagnostic,
            &format!("{line}:8: duplicate check name `Coverage`"),
            "duplicate #{check}"
        );
    }
}
