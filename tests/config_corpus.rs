//! Service-file validation: the invalid corpus, the shipped services, and a property test that
//! no input panics the loader.
//!
//! Each `tests/fixtures/invalid/NAME.toml` holds one mistake; `NAME.expected` holds the exact
//! diagnostics (file:line:col, message, hint) a user sees. Regenerate the expectations after a
//! deliberate wording change with `DEPLOYER_BLESS=1 cargo test --test config_corpus`.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use deployer::config::{self, Workspace};
use proptest::prelude::*;

fn fixtures() -> Workspace {
    Workspace {
        root: PathBuf::from("tests/fixtures"),
        services_dir: PathBuf::from("tests/fixtures/invalid"),
    }
}

#[test]
fn every_invalid_fixture_gives_its_expected_diagnostics() {
    let workspace = fixtures();
    let mut files = workspace.service_files().unwrap();
    files.retain(|file| {
        file.extension()
            .is_some_and(|extension| extension == "toml")
    });
    assert!(
        files.len() >= 25,
        "the corpus needs at least 25 cases, has {}",
        files.len()
    );
    let bless = std::env::var_os("DEPLOYER_BLESS").is_some();
    let mut failures = Vec::new();
    for file in &files {
        let diagnostics = match workspace.load_file(file) {
            Ok(_) => {
                failures.push(format!("{}: loaded without error", file.display()));
                continue;
            }
            Err(diagnostics) => diagnostics,
        };
        for diagnostic in diagnostics.iter() {
            assert!(diagnostic.line >= 1 && diagnostic.column >= 1);
            assert_eq!(diagnostic.file, *file, "diagnostic names its file");
        }
        let actual = format!("{diagnostics}\n");
        let expected_path = file.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                file.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_valid_fixture_loads_with_defaults() {
    let workspace = fixtures();
    let loaded = workspace
        .load_file(Path::new("tests/fixtures/valid.toml"))
        .expect("valid fixture loads");
    assert_eq!(loaded.config.rollout.steps, [5, 25, 50, 100]);
    assert_eq!(
        loaded.config.rollout.monitor_duration.get(),
        std::time::Duration::from_secs(1800)
    );
    assert_eq!(
        loaded.config.rollout.monitor_interval.get(),
        std::time::Duration::from_secs(300)
    );
    assert!((loaded.config.rollout.max_error_rate - 0.05).abs() < f64::EPSILON);
    assert_eq!(loaded.config.preflight.branch, "main");
}

#[test]
fn every_shipped_service_validates_and_has_its_runbook() {
    let workspace = Workspace::discover(None, Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
    let (services, diagnostics) = workspace.load_all().unwrap();
    assert!(diagnostics.is_empty(), "{diagnostics}");
    let mut names: Vec<&str> = services
        .iter()
        .map(|loaded| loaded.config.name.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "grading-service",
            "hello",
            "phase3-processors",
            "phase4-processors",
            "prediction-coordinator",
            "prediction-worker"
        ]
    );
    for loaded in &services {
        assert!(
            workspace.root.join(&loaded.config.runbook).is_file(),
            "{} has its runbook",
            loaded.config.name
        );
    }
}

#[test]
fn the_teams_checks_are_configured_with_their_thresholds() {
    let workspace = Workspace::discover(None, Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
    let (services, _) = workspace.load_all().unwrap();
    let find = |name: &str| {
        services
            .iter()
            .flat_map(|loaded| loaded.config.checks.iter())
            .find(|check| check.name == name)
            .unwrap_or_else(|| panic!("check `{name}` is configured"))
    };
    for (name, warn, comparison) in [
        ("Vegas Line Coverage", 90.0, ">="),
        ("Grading Completeness", 90.0, ">="),
        ("Phase 3 Completion", 5.0, ">="),
        ("Recent Predictions", 100.0, ">"),
        ("BDB Coverage", 90.0, ">="),
    ] {
        let check = find(name);
        assert_eq!(check.provider(), config::Provider::Bigquery, "{name}");
        assert_eq!(check.warn, warn, "{name}");
        assert_eq!(check.comparison.symbol(), comparison, "{name}");
    }
}

#[test]
fn duplicate_service_names_are_reported_on_the_later_file() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    std::fs::create_dir_all(root.join("services")).unwrap();
    std::fs::create_dir_all(root.join("runbooks")).unwrap();
    std::fs::copy("tests/fixtures/runbooks/ok.md", root.join("runbooks/ok.md")).unwrap();
    std::fs::copy("tests/fixtures/Dockerfile", root.join("Dockerfile")).unwrap();
    let text = std::fs::read_to_string("tests/fixtures/valid.toml").unwrap();
    std::fs::write(root.join("services/a.toml"), &text).unwrap();
    std::fs::write(root.join("services/b.toml"), &text).unwrap();
    let workspace = Workspace::discover(None, root).unwrap();
    let (services, diagnostics) = workspace.load_all().unwrap();
    assert_eq!(services.len(), 1);
    assert_eq!(diagnostics.len(), 1);
    let diagnostic = diagnostics.iter().next().unwrap();
    assert!(diagnostic.file.ends_with("services/b.toml"));
    assert_eq!((diagnostic.line, diagnostic.column), (1, 8));
    assert!(diagnostic.message.contains("duplicate service name `svc`"));
}

fn valid_text() -> String {
    std::fs::read_to_string("tests/fixtures/valid.toml").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary text never panics the loader.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = config::parse(Path::new("fuzz.toml"), &text);
    }

    /// Valid files with random edits (the realistic kind of broken) never panic parsing or
    /// validation, and every reported location is inside the file.
    #[test]
    fn edited_valid_files_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..8, "[\\PC\\n]{0,6}"), 1..4)
    ) {
        let mut text = valid_text();
        for (at, remove, insert) in edits {
            let mut start = at.index(text.len() + 1);
            while !text.is_char_boundary(start) { start -= 1; }
            let mut end = (start + remove).min(text.len());
            while !text.is_char_boundary(end) { end += 1; }
            text.replace_range(start..end, &insert);
        }
        let directory = tempfile::tempdir().unwrap();
        let file = directory.path().join("edited.toml");
        std::fs::write(&file, &text).unwrap();
        let workspace = fixtures();
        if let Err(diagnostics) = workspace.load_file(&file) {
            let lines = text.lines().count().max(1) + 1;
            for diagnostic in diagnostics.iter() {
                prop_assert!(diagnostic.line >= 1 && diagnostic.line <= lines);
                prop_assert!(diagnostic.column >= 1);
            }
        }
    }

    /// Arbitrary TOML values in the places of the rollout policy never panic.
    #[test]
    fn arbitrary_rollout_values_never_panic(
        steps in proptest::collection::vec(any::<i64>(), 0..6),
        rate in any::<f64>(),
        hold in "[0-9a-z ]{0,8}",
    ) {
        let steps: Vec<String> = steps.iter().map(i64::to_string).collect();
        let rate = if rate.is_finite() { format!("{rate:?}") } else { "nan".to_string() };
        let text = format!(
            "{}\n[rollout]\nsteps = [{}]\nmax_error_rate = {rate}\nhold = {hold:?}\n",
            valid_text().split("\n[[checks]]").next().unwrap(),
            steps.join(", "),
        );
        let _ = fixtures().load_source(Path::new("rollout.toml"), &text);
    }
}
