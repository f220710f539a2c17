//! The release history end to end: the `deployer` binary against the local emulator with real
//! containers. Four deploys — A (first), B (promoted), C (`FAIL_RATE=0.5`, rolled back),
//! D (promoted) — then on-call's `deployer rollback`, as the team would run it at 3 a.m.

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
