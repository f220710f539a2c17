//! The release history end to end: the `deployer` binary against the local emulator with real
//! containers. Four deploys — A (first), B (promoted), C (`FAIL_RATE=0.5`, rolled back),
//! D (promoted) — then on-call's `deployer rollback`, as the team would run it at 3 a.m.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

mod support;

use std::{path::Path, process::Output};

use deployer::release::{History, Verdict};
use support::stage::Stage;

const A: &str = "aaaa000000000000000000000000000000000001";
const B: &str = "bbbb000000000000000000000000000000000002";
const C: &str = "cccc000000000000000000000000000000000003";
const D: &str = "dddd000000000000000000000000000000000004";

/// Runs `deployer ARGS --endpoint EMULATOR` with `state` as its state directory.
fn deployer(stage: &Stage, state: &Path, arguments: &[&str]) -> Output {
    support::deployer_command(&stage.services, state)
        .args(arguments)
        .args(["--endpoint", stage.emulator.endpoint()])
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn printed(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_b_c_rolled_back_and_d_a_plain_rollback_serves_b_and_history_lists_five_events() {
    let stage = Stage::empty("hist").await;
    for (label, commit, fail_rate, expected) in [
        ("a", A, None, 0),
        ("b", B, None, 0),
        ("c", C, Some("FAIL_RATE=0.5"), 4),
        ("d", D, None, 0),
    ] {
        let mut command = stage.deploy(label, commit);
        if let Some(rate) = fail_rate {
            command.args(["--env", rate]);
        }
        let status = stage.run(label, command).await;
        assert_eq!(status.code(), Some(expected), "{}", stage.printed(label));
    }
    let history = History::of(&stage.service().await).unwrap();
    let revision_of = |commit: &str| {
        history
            .entries
            .iter()
            .find(|entry| entry.commit.as_deref() == Some(commit))
            .map(|entry| entry.revision.clone())
            .unwrap_or_else(|| panic!("no entry of {commit}: {history:?}"))
    };
    let (b, c, d) = (revision_of(B), revision_of(C), revision_of(D));
    assert_eq!(history.verdict(&c), Some(Verdict::Bad));

    // A fresh machine: nothing in its state directory.
    let fresh = tempfile::tempdir().unwrap();

    // `--to C` is refused: C was rolled back as faulty. Nothing is written.
    let refused = deployer(&stage, fresh.path(), &["rollback", "hist", "--to", &c]);
    assert_eq!(refused.status.code(), Some(2), "{}", printed(&refused));
    let text = printed(&refused);
    assert!(
        text.contains("recorded bad") && text.contains("rolled back"),
        "{text}"
    );
    assert!(text.contains("--force --reason"), "{text}");
    // `--force` without a reason, unattended: refused too.
    let forced = deployer(
        &stage,
        fresh.path(),
        &["rollback", "hist", "--to", &c, "--force"],
    );
    assert_eq!(forced.status.code(), Some(2), "{}", printed(&forced));
    assert!(printed(&forced).contains("needs a `--reason`"));
    // With a reason, a dry run shows the plan and its warning, and changes nothing.
    let dry = deployer(
        &stage,
        fresh.path(),
        &[
            "rollback",
            "hist",
            "--to",
            &c,
            "--force",
            "--reason",
            "drill",
            "--dry-run",
        ],
    );
    assert_eq!(dry.status.code(), Some(0), "{}", printed(&dry));
    assert!(
        printed(&dry).contains("is recorded bad"),
        "{}",
        printed(&dry)
    );
    assert_eq!(stage.service().await.serving(), [(d.clone(), 100)]);

    // The plain rollback goes to B, the last known-good revision, not C.
    let rollback = deployer(&stage, fresh.path(), &["rollback", "hist"]);
    assert_eq!(rollback.status.code(), Some(0), "{}", printed(&rollback));
    assert!(
        printed(&rollback).contains("last known-good"),
        "{}",
        printed(&rollback)
    );
    assert_eq!(stage.service().await.serving(), [(b.clone(), 100)]);

    // `history` from the fresh machine lists all five events, newest first.
    let listed = deployer(
        &stage,
        fresh.path(),
        &["history", "hist", "--format", "json"],
    );
    assert_eq!(listed.status.code(), Some(0), "{}", printed(&listed));
    let events: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    let outcomes: Vec<&str> = events
        .iter()
        .map(|event| event["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "restored",
            "promoted",
            "rolled-back",
            "promoted",
            "promoted-unmonitored"
        ],
        "{}",
        printed(&listed)
    );
    assert_eq!(events[0]["kind"], "emergency-rollback");
    assert_eq!(events[0]["revision"], b.as_str());
    assert_eq!(events[0]["from"][0], d.as_str());
    assert_eq!(events[2]["commit"], C);
    assert!(
        events[2]["why"].as_str().unwrap().contains("errors"),
        "the why line with its numbers: {}",
        events[2]
    );
    assert!(events
        .iter()
        .all(|event| event["who"].as_str().is_some_and(|who| who.contains('@'))));
    let table = deployer(&stage, fresh.path(), &["history", "hist"]);
    assert_eq!(table.status.code(), Some(0), "{}", printed(&table));
    assert!(
        printed(&table).contains("emergency rollback"),
        "{}",
        printed(&table)
    );

    // `status` shows the emergency rollback as the last event.
    let status = deployer(&stage, fresh.path(), &["status", "hist"]);
    let text = printed(&status);
    assert!(
        text.contains(&format!("last event emergency rollback `{d}` → `{b}`")),
        "{text}"
    );

    // The delivery metrics of this history: 4 rollouts, C and D failed (D was rolled back
    // from in an emergency), 3 deployments.
    let stats = deployer(
        &stage,
        fresh.path(),
        &["history", "--stats", "--format", "json"],
    );
    assert_eq!(stats.status.code(), Some(0), "{}", printed(&stats));
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["all"]["rollouts"], 4, "{stats}");
    assert_eq!(stats["all"]["deployments"], 3, "{stats}");
    assert_eq!(stats["all"]["failed"], 2, "{stats}");
    assert_eq!(stats["all"]["emergency_rollbacks"], 1, "{stats}");
    stage.shutdown().await;
}

/// Inconclusive is held: without traffic the 50% step never has enough requests.
const HOLDING: &str = r#"steps = [50, 100]
hold = "3s"
interval = "1s"
max_error_rate = 0.2
min_requests = 20
inconclusive = "hold"
monitor_duration = "3s"
monitor_interval = "1s"
consecutive_error_limit = 3
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_rollout_is_promoted_or_aborted_by_a_human_and_status_watch_follows_one_elsewhere() {
    let stage = Stage::with_rollout("held", HOLDING).await;
    let state = stage.state.clone();
    let held = |label: &str, commit: &str| {
        let mut command = stage.deploy(label, commit);
        command.args(["--traffic", "0"]);
        command
    };
    let status = stage.run("first", held("first", B)).await;
    assert_eq!(status.code(), Some(6), "{}", stage.printed("first"));
    let canary = deployer::rollout::journal::Journal::of(&stage.service().await)
        .unwrap()
        .canary;

    // `status --watch` of a rollout that already ended: its outcome at once, exit 6.
    let watched = deployer(&stage, &state, &["status", "held", "--watch"]);
    assert_eq!(watched.status.code(), Some(6), "{}", printed(&watched));
    assert!(printed(&watched).contains("HELD"), "{}", printed(&watched));

    // `promote`: 100% to the canary, the monitor (with synthetic traffic), recorded who/why.
    let promoted = deployer(
        &stage,
        &state,
        &["promote", "held", "--reason", "logs look fine"],
    );
    assert_eq!(promoted.status.code(), Some(0), "{}", printed(&promoted));
    assert_eq!(stage.service().await.serving(), [(canary.clone(), 100)]);
    let history = History::of(&stage.service().await).unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.kind, deployer::release::Kind::Promote);
    assert_eq!(last.outcome, deployer::release::Outcome::Promoted);
    assert!(
        last.why.as_deref().unwrap().contains("logs look fine"),
        "{last:?}"
    );
    assert_eq!(history.verdict(&canary), Some(Verdict::Good));
    // Nothing held any more: both refuse clearly, exit 2, nothing written.
    for command in ["promote", "abort"] {
        let refused = deployer(&stage, &state, &[command, "held"]);
        assert_eq!(refused.status.code(), Some(2), "{}", printed(&refused));
        assert!(
            printed(&refused).contains("nothing is held"),
            "{}",
            printed(&refused)
        );
    }

    // `abort`: a second held rollout goes back to its stable revision (the promoted one).
    let status = stage.run("second", held("second", C)).await;
    assert_eq!(status.code(), Some(6), "{}", stage.printed("second"));
    let second = deployer::rollout::journal::Journal::of(&stage.service().await)
        .unwrap()
        .canary;
    let aborted = deployer(&stage, &state, &["abort", "held", "--reason", "not today"]);
    assert_eq!(aborted.status.code(), Some(0), "{}", printed(&aborted));
    let snapshot = stage.assert_consistent(&canary, &printed(&aborted)).await;
    let journal = deployer::rollout::journal::Journal::of(&snapshot).unwrap();
    assert_eq!(journal.phase(), deployer::rollout::machine::Phase::Aborted);
    let history = History::of(&snapshot).unwrap();
    assert_eq!(
        history.last().unwrap().outcome,
        deployer::release::Outcome::Aborted
    );
    assert_eq!(history.verdict(&second), Some(Verdict::Bad));

    // `status --watch` follows a rollout running in another process to its end.
    let mut running = stage.deploy("third", D).spawn().unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let journal = deployer::rollout::journal::Journal::of(&stage.service().await).unwrap();
        if journal.commit == D && !journal.phase().is_terminal() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the third rollout never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let watched = deployer(
        &stage,
        &state,
        &["status", "held", "--watch", "--every", "500ms"],
    );
    let status = running.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", stage.printed("third"));
    let text = printed(&watched);
    assert_eq!(watched.status.code(), Some(0), "{text}");
    assert!(
        text.contains("Canary at 50%") || text.contains("Monitoring at 100%"),
        "{text}"
    );
    assert!(text.contains("PROMOTED"), "{text}");
    stage.shutdown().await;
}
