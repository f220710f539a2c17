//! Table tests of the pure parts: severity, evaluation of a service, the issue lifecycle.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use super::{issue, *};
use crate::{config::ServiceConfig, notify::github::Issue};

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn commit(id: &str, hours_ago: i64) -> Commit {
    Commit {
        id: id.repeat(40 / id.len()),
        author: "Ada".into(),
        subject: format!("change {id}"),
        committed: now() - Duration::hours(hours_ago),
    }
}

fn facts(behind: usize, relevant_hours_ago: &[i64]) -> Facts {
    let commits: Vec<Commit> = relevant_hours_ago
        .iter()
        .enumerate()
        .map(|(index, hours)| commit(&format!("{index:x}"), *hours))
        .collect();
    Facts {
        deployed_commit: "d".repeat(40),
        main_commit: "e".repeat(40),
        in_main: true,
        behind,
        not_in_main: 0,
        relevant: commits.len(),
        oldest_relevant: commits
            .iter()
            .min_by_key(|commit| commit.committed)
            .cloned(),
        relevant_commits: commits,
        schema_changes: Vec::new(),
        deployed_committed: Some(now() - Duration::days(10)),
        path_note: None,
    }
}

fn thresholds(critical_commits: Option<u32>) -> DriftConfig {
    DriftConfig {
        critical_commits,
        ..DriftConfig::default()
    }
}

#[test]
fn severity_follows_the_age_of_the_oldest_relevant_commit() {
    /// Commits behind, ages of the relevant ones (hours), `critical_commits`, expected.
    type Case<'a> = (usize, &'a [i64], Option<u32>, Severity, &'a str);
    let cases: &[Case<'_>] = &[
        (0, &[], None, Severity::Ok, "up to date with `origin/main`"),
        (
            598,
            &[],
            None,
            Severity::Ok,
            "598 commits behind `origin/main`; none touches the service's paths",
        ),
        (5, &[1], None, Severity::Ok, "within `warn_after` 6h"),
        (
            5,
            &[7, 1],
            None,
            Severity::Warn,
            "the oldest undeployed for 7h 0m (past `warn_after` 6h)",
        ),
        (
            598,
            &[80, 2],
            None,
            Severity::Critical,
            "past `critical_after` 3days",
        ),
        (
            5,
            &[1, 1, 1],
            Some(3),
            Severity::Critical,
            "at least `critical_commits` 3",
        ),
        (
            5,
            &[1, 1],
            Some(3),
            Severity::Ok,
            "2 touch the service's paths",
        ),
    ];
    for (behind, ages, critical_commits, severity, text) in cases {
        let (found, reason) = assess(
            &facts(*behind, ages),
            &thresholds(*critical_commits),
            "origin/main",
            now(),
        );
        assert_eq!(found, *severity, "{reason}");
        assert!(reason.contains(text), "`{reason}` should contain `{text}`");
    }
}

#[test]
fn a_deployed_commit_off_main_warns_and_is_never_zero_behind() {
    let mut off = facts(0, &[]);
    off.in_main = false;
    off.not_in_main = 2;
    let (severity, reason) = assess(&off, &thresholds(None), "origin/main", now());
    assert_eq!(severity, Severity::Warn);
    assert!(
        reason.contains("is not in `origin/main`'s history"),
        "{reason}"
    );
    assert!(
        reason.contains("2 commits not on `origin/main`"),
        "{reason}"
    );
    assert!(!reason.contains("up to date"), "{reason}");
}

#[test]
fn format_age_is_compact() {
    assert_eq!(format_age(42), "42s");
    assert_eq!(format_age(42 * 60), "42m");
    assert_eq!(format_age(5 * 3600 + 12 * 60), "5h 12m");
    assert_eq!(format_age(3 * 86_400 + 4 * 3600 + 59), "3d 4h");
    assert_eq!(format_age(-5), "0s");
}

fn config() -> ServiceConfig {
    crate::config::parse(
        std::path::Path::new("services/svc.toml"),
        "name = \"svc\"\nrunbook = \"runbooks/svc.md\"\n[target]\nkind = \"local\"\n[image]\nrepository = \"r/svc\"\n[drift]\nwarn_after = \"1h\"\n",
    )
    .unwrap()
}

fn serving(revision: &str, percent: u8, commit: Option<&str>) -> ServingRevision {
    ServingRevision {
        revision: revision.into(),
        percent,
        image: "r/svc@sha256:1".into(),
        commit: commit.map(str::to_string),
        commit_origin: commit.map(|_| CommitOrigin::RevisionLabel),
        unknown_reason: commit
            .is_none()
            .then(|| "revision has no `deployer-commit` label".to_string()),
    }
}

fn input(deployed: DeployedState) -> ServiceInput {
    ServiceInput {
        config: config(),
        id: crate::platform::ServiceId {
            project: "local".into(),
            region: "local".into(),
            name: "svc".into(),
        },
        deployed,
    }
}

fn main_tip(problem: Option<&str>) -> MainTip {
    MainTip {
        reference: "origin/main".into(),
        commit: Some("e".repeat(40)),
        problem: problem.map(str::to_string),
        note: None,
    }
}

#[test]
fn a_split_is_judged_by_its_worst_revision() {
    let mut by_commit = BTreeMap::new();
    by_commit.insert("aaaa".to_string(), Ok(facts(0, &[])));
    by_commit.insert("bbbb".to_string(), Ok(facts(3, &[2])));
    let drift = evaluate(
        &input(DeployedState::Serving(vec![
            serving("svc-2", 90, Some("aaaa")),
            serving("svc-1", 10, Some("bbbb")),
        ])),
        &main_tip(None),
        &by_commit,
        now(),
    );
    assert_eq!(drift.severity, Severity::Warn, "warn_after is 1h here");
    assert!(
        drift
            .reason
            .starts_with("revision `svc-1` (10%): 3 commits behind"),
        "{}",
        drift.reason
    );
    assert_eq!(drift.revisions.len(), 2);
    assert_eq!(drift.revisions[0].severity, Severity::Ok);
    assert!(drift.is_drifting());
    assert_eq!(
        drift.hint.as_deref(),
        Some("deploy `svc` from `origin/main`: `deployer deploy svc`")
    );
}

#[test]
fn unknown_drift_warns_and_says_why() {
    let cases = [
        (
            DeployedState::Unavailable("connection refused".into()),
            "the platform cannot be read: connection refused",
        ),
        (DeployedState::NotDeployed, "`svc` is not deployed"),
        (
            DeployedState::Serving(Vec::new()),
            "no revision serves traffic",
        ),
        (
            DeployedState::Serving(vec![serving("svc-1", 100, None)]),
            "revision has no `deployer-commit` label",
        ),
        (
            DeployedState::Serving(vec![serving("svc-1", 100, Some("cccc"))]),
            "not in this repository",
        ),
    ];
    let mut by_commit = BTreeMap::new();
    by_commit.insert(
        "cccc".to_string(),
        Err("deployed commit `cccc` is not in this repository".to_string()),
    );
    for (deployed, text) in cases {
        let drift = evaluate(&input(deployed), &main_tip(None), &by_commit, now());
        assert_eq!(drift.severity, Severity::Warn, "{}", drift.reason);
        assert!(
            drift.reason.starts_with("drift unknown: "),
            "{}",
            drift.reason
        );
        assert!(drift.reason.contains(text), "{}", drift.reason);
        assert!(!drift.is_drifting() && !drift.is_measured());
    }
}

#[test]
fn a_stale_main_is_never_ok() {
    let mut by_commit = BTreeMap::new();
    by_commit.insert("aaaa".to_string(), Ok(facts(0, &[])));
    let drift = evaluate(
        &input(DeployedState::Serving(vec![serving(
            "svc-1",
            100,
            Some("aaaa"),
        )])),
        &main_tip(Some(
            "comparing with `origin/main` as last fetched: connection refused",
        )),
        &by_commit,
        now(),
    );
    assert_eq!(drift.severity, Severity::Warn);
    assert!(
        drift
            .reason
            .ends_with("as last fetched: connection refused"),
        "{}",
        drift.reason
    );
    assert!(!drift.is_drifting(), "no drift was found: no issue to open");
}

fn issue_of(number: u64, state: &str, body: &str) -> Issue {
    Issue {
        number,
        title: "t".into(),
        body: Some(body.into()),
        state: state.into(),
        html_url: format!("https://github.com/o/r/issues/{number}"),
    }
}

#[test]
fn issue_lifecycle_table() {
    let mut by_commit = BTreeMap::new();
    by_commit.insert("aaaa".to_string(), Ok(facts(3, &[5])));
    by_commit.insert("bbbb".to_string(), Ok(facts(0, &[])));
    let drifting = evaluate(
        &input(DeployedState::Serving(vec![serving(
            "svc-1",
            100,
            Some("aaaa"),
        )])),
        &main_tip(None),
        &by_commit,
        now(),
    );
    let deployed = evaluate(
        &input(DeployedState::Serving(vec![serving(
            "svc-2",
            100,
            Some("bbbb"),
        )])),
        &main_tip(None),
        &by_commit,
        now(),
    );
    let unknown = evaluate(
        &input(DeployedState::NotDeployed),
        &main_tip(None),
        &by_commit,
        now(),
    );
    let repository = crate::notify::github::RepositoryName::parse("o/r").unwrap();
    let links = issue::Links {
        server_url: "https://github.com".into(),
    };
    let body = issue::body(&drifting, &repository, &links);
    assert!(body.starts_with("<!-- deployer:drift service=svc -->\n"));
    assert!(body.contains("deployer deploy svc"));
    assert!(body.contains("https://github.com/o/r/blob/main/runbooks/svc.md"));
    assert_eq!(
        body,
        issue::body(&drifting, &repository, &links),
        "deterministic"
    );

    let open_same = issue_of(7, "open", &body);
    let open_old = issue_of(7, "open", "<!-- deployer:drift service=svc -->\nold");
    let closed = issue_of(7, "closed", "<!-- deployer:drift service=svc -->\nold");
    use issue::Plan;
    let cases = [
        (&drifting, None, Plan::Create),
        (&drifting, Some(&open_same), Plan::Nothing),
        (&drifting, Some(&open_old), Plan::UpdateBody(7)),
        (&drifting, Some(&closed), Plan::Reopen(7)),
        (&deployed, Some(&open_old), Plan::Close(7)),
        (&deployed, Some(&closed), Plan::Nothing),
        (&deployed, None, Plan::Nothing),
        (&unknown, Some(&open_old), Plan::Nothing),
        (&unknown, None, Plan::Nothing),
    ];
    for (drift, existing, expected) in cases {
        assert_eq!(
            issue::plan(drift, existing, &body),
            expected,
            "{} {existing:?}",
            drift.reason
        );
    }
}

#[test]
fn issues_are_found_by_their_marker_line() {
    let issues = vec![
        issue_of(3, "closed", "<!-- deployer:drift service=svc -->\nold"),
        issue_of(4, "open", "<!-- deployer:drift service=svc-gateway -->"),
        issue_of(
            5,
            "open",
            "mentions <!-- deployer:drift service=svc --> inline only",
        ),
        issue_of(9, "open", "x\n<!-- deployer:drift service=svc -->\n"),
    ];
    assert_eq!(
        issue::find(&issues, "svc").map(|issue| issue.number),
        Some(9),
        "open first"
    );
    assert_eq!(
        issue::find(&issues[..1], "svc").map(|issue| issue.number),
        Some(3)
    );
    assert_eq!(
        issue::find(&issues, "svc-gateway").map(|issue| issue.number),
        Some(4)
    );
    assert_eq!(issue::find(&issues, "other"), None);
}
