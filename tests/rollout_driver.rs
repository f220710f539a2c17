//! The rollout driver against the in-memory platform, with scripted metrics and health answers,
//! under paused tokio time: a 30-minute monitor runs in milliseconds. The deploy pipeline around
//! it is `rollout_pipeline.rs`; the harness both share is `support/driver_harness.rs`.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

mod support;

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use deployer::{
    config::{Gate, InconclusivePolicy, RunConfig},
    platform::{
        memory::{Fault, MemoryPlatform},
        Platform, PlatformError, RevisionSettings, RevisionSpec, ServiceUpdate, TrafficTarget,
    },
    rollout::{
        driver::Driver,
        events::{Event, Outcome},
        identity::{HealthAnswer, HealthProbe, ProbeError},
        journal::{Journal, JOURNAL_ANNOTATION},
        lock::{Lock, LOCK_ANNOTATION},
        machine::{Phase, State},
        observation::{MetricResult, Status},
        ports::{CheckScope, GateChecks, Interrupt},
    },
};
use serde_json::json;
use support::driver_harness::{
    fail, id, inconclusive, never, pass, policy, request, Harness, Picks, COMMIT, IMAGE,
};

#[tokio::test(start_paused = true)]
async fn a_healthy_canary_is_promoted_after_the_full_monitor() {
    let harness = Harness::new(vec![pass()]).await;
    let started = tokio::time::Instant::now();
    let report = harness.deploy(&request(policy())).await;
    let canary = report.canary.clone().unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Promoted {
            revision: canary.clone()
        }
    );
    assert_eq!(harness.serving().await, [(canary.clone(), 100)]);
    assert_eq!(harness.recorder.canary_percents(), [5, 25, 50, 100]);
    // Three steps of one interval each, then the 30-minute monitor.
    assert!(
        started.elapsed() >= Duration::from_secs(1800 + 45),
        "{:?}",
        started.elapsed()
    );
    let journal = harness.journal().await;
    assert_eq!(journal.phase(), Phase::Promoted);
    let snapshot = harness.platform.service(&id()).await.unwrap().unwrap();
    assert!(
        !snapshot.annotations.contains_key(LOCK_ANNOTATION),
        "lock released"
    );
    let revision = harness
        .platform
        .revision(&id(), &canary)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revision.labels["deployer-commit"], COMMIT);
    assert!(canary.starts_with("svc-0123456-"), "{canary}");
}

#[tokio::test(start_paused = true)]
async fn a_failing_canary_is_rolled_back_with_its_numbers() {
    let harness = Harness::new(vec![pass(), fail()]).await;
    let report = harness.deploy(&request(policy())).await;
    match &report.outcome {
        Outcome::RolledBack { reason, revision } => {
            assert_eq!(revision, "svc-stable");
            assert!(reason.contains("30.0% errors"), "{reason}");
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    assert_eq!(harness.serving().await, [("svc-stable".to_string(), 100)]);
    assert_eq!(harness.recorder.canary_percents(), [5, 25]);
    assert_eq!(harness.journal().await.phase(), Phase::RolledBack);
}

#[tokio::test(start_paused = true)]
async fn wrong_code_never_gets_traffic() {
    let mut harness = Harness::new(vec![pass()]).await;
    harness.probe.identity = json!({"service": "svc", "commit": "fedcba9876543210"});
    let report = harness.deploy(&request(policy())).await;
    match &report.outcome {
        Outcome::StoppedBeforeTraffic { reason } => {
            assert!(reason.starts_with("wrong code deployed"), "{reason}")
        }
        other => panic!("expected a stop, got {other:?}"),
    }
    assert!(
        harness.recorder.canary_percents().is_empty(),
        "no traffic moved"
    );
    assert_eq!(harness.serving().await, [("svc-stable".to_string(), 100)]);
    assert_eq!(harness.journal().await.phase(), Phase::Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_revision_that_fails_to_start_stops_the_deploy() {
    let harness = Harness::new(vec![pass()]).await;
    harness.platform.fail_image(IMAGE);
    let report = harness.deploy(&request(policy())).await;
    match &report.outcome {
        Outcome::StoppedBeforeTraffic { reason } => {
            assert!(reason.contains("failed to start"), "{reason}")
        }
        other => panic!("expected a stop, got {other:?}"),
    }
    assert_eq!(harness.serving().await, [("svc-stable".to_string(), 100)]);
}

#[tokio::test(start_paused = true)]
async fn metrics_unavailable_is_never_promoted() {
    let harness = Harness::new(vec![pass()]).await;
    *harness.metrics.canary_errors.lock().unwrap() = true;
    let report = harness.deploy(&request(policy())).await;
    match &report.outcome {
        Outcome::RolledBack { reason, .. } => {
            assert!(reason.contains("4 unread looks in a row"), "{reason}")
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    assert_eq!(harness.serving().await, [("svc-stable".to_string(), 100)]);
}

#[tokio::test(start_paused = true)]
async fn inconclusive_with_hold_leaves_the_split_for_a_human() {
    let harness = Harness::new(vec![inconclusive()]).await;
    let mut policy = policy();
    policy.inconclusive = InconclusivePolicy::Hold;
    let report = harness.deploy(&request(policy)).await;
    assert!(
        matches!(report.outcome, Outcome::Held { .. }),
        "{:?}",
        report.outcome
    );
    let canary = report.canary.unwrap();
    assert_eq!(
        harness.serving().await,
        [("svc-stable".to_string(), 95), (canary, 5)]
    );
    assert_eq!(harness.journal().await.phase(), Phase::Held);
}

#[tokio::test(start_paused = true)]
async fn a_failure_in_the_monitor_rolls_back() {
    // Three passing steps, then the first monitor check fails.
    let harness = Harness::new(vec![pass(), pass(), pass(), fail()]).await;
    let report = harness.deploy(&request(policy())).await;
    assert!(
        matches!(report.outcome, Outcome::RolledBack { .. }),
        "{:?}",
        report.outcome
    );
    assert_eq!(harness.recorder.canary_percents(), [5, 25, 50, 100]);
    assert_eq!(harness.serving().await, [("svc-stable".to_string(), 100)]);
}

#[tokio::test(start_paused = true)]
async fn a_rollback_survives_platform_errors() {
    let harness = Harness::new(vec![fail()]).await;
    // The first step's write, then two 503s on the rollback write.
    let driver = harness.driver();
    let platform = &harness.platform;
    let deploy_request = request(policy());
    let deploy = driver.deploy(&deploy_request, never());
    tokio::pin!(deploy);
    // Let the deploy reach its first analysis, then break the API for two calls.
    tokio::select! {
        _ = &mut deploy => panic!("finished too early"),
        () = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    platform.inject(Fault::Before(PlatformError::Unavailable("503".into())));
    platform.inject(Fault::After(PlatformError::Unavailable("503".into())));
    let report = deploy.await.unwrap();
    assert!(
        matches!(report.outcome, Outcome::RolledBack { .. }),
        "{:?}",
        report.outcome
    );
    assert_eq!(harness.serving().await, [("svc-stable".to_string(), 100)]);
}

#[tokio::test(start_paused = true)]
async fn another_writer_mid_rollout_stops_safely() {
    let harness = Harness::new(vec![pass()]).await;
    let driver = harness.driver();
    let deploy_request = request(policy());
    let deploy = driver.deploy(&deploy_request, never());
    tokio::pin!(deploy);
    tokio::select! {
        _ = &mut deploy => panic!("finished too early"),
        () = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    // An on-call engineer's emergency rollback lands between two steps.
    harness.platform.external_update(
        &id(),
        &ServiceUpdate::traffic(vec![TrafficTarget::to_revision("svc-stable", 100)]),
    );
    let report = deploy.await.unwrap();
    match &report.outcome {
        Outcome::RolledBack { reason, revision } => {
            assert_eq!(revision, "svc-stable");
            assert!(
                reason.contains("someone else changed the service"),
                "{reason}"
            );
        }
        other => panic!("expected a stop, got {other:?}"),
    }
    assert_eq!(harness.serving().await, [("svc-stable".to_string(), 100)]);
}

/// A previous deployer died (kill -9) with a canary at 25% and its lock held.
async fn crash_mid_canary(harness: &Harness) {
    crash_in(
        harness,
        State {
            phase: Phase::Canary,
            step: Some(1),
            percent: 25,
            ..State::start()
        },
    )
    .await;
}

/// A previous deployer died (kill -9) in `state`, its lock held, the split as the state says.
async fn crash_in(harness: &Harness, state: State) {
    let percent = state.percent;
    let snapshot = harness.platform.service(&id()).await.unwrap().unwrap();
    harness
        .platform
        .update(
            &id(),
            &snapshot.etag,
            &ServiceUpdate {
                template: Some(RevisionSpec {
                    name: "svc-crashed".into(),
                    image: "127.0.0.1:5000/svc@sha256:crashed".into(),
                    labels: BTreeMap::new(),
                    base: None,
                    settings: RevisionSettings::default(),
                }),
                traffic: Some(vec![
                    TrafficTarget::to_revision("svc-stable", 100 - percent),
                    TrafficTarget::to_revision("svc-crashed", percent).tagged("canary"),
                ]),
                ..ServiceUpdate::default()
            },
        )
        .await
        .unwrap();
    let dead = Journal {
        id: "dead-rollout".into(),
        stable: Some("svc-stable".into()),
        canary: "svc-crashed".into(),
        commit: "crashed".into(),
        commit_time: None,
        image: "img".into(),
        owner: "ci@runner".into(),
        started: chrono::Utc::now(),
        updated: chrono::Utc::now(),
        state,
        decision: None,
    };
    let mut lock = Lock::new(
        "dead-rollout",
        Duration::from_secs(3600),
        chrono::Utc::now(),
    );
    // Its process is gone: a child that has exited and been reaped.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    lock.pid = gone.id();
    harness.platform.external_update(
        &id(),
        &ServiceUpdate::default()
            .with_annotation(
                JOURNAL_ANNOTATION,
                Some(serde_json::to_string(&dead).unwrap()),
            )
            .with_annotation(LOCK_ANNOTATION, Some(serde_json::to_string(&lock).unwrap())),
    );
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_rollout_is_rolled_back_by_the_next_run() {
    let harness = Harness::new(vec![pass()]).await;
    crash_mid_canary(&harness).await;
    let report = harness.deploy(&request(policy())).await;
    assert!(
        report
            .notes
            .iter()
            .any(|note| note.contains("interrupted rollout `dead-rollout` rolled back")),
        "{:?}",
        report.notes
    );
    let canary = report.canary.clone().unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Promoted {
            revision: canary.clone()
        }
    );
    assert_eq!(harness.serving().await, [(canary, 100)]);
}

#[tokio::test(start_paused = true)]
async fn ctrl_c_takes_the_safe_default_when_unattended() {
    let harness = Harness::new(vec![inconclusive()]).await;
    let interrupt: Interrupt = Box::pin(tokio::time::sleep(Duration::from_secs(40)));
    let report = harness
        .driver()
        .deploy(&request(policy()), interrupt)
        .await
        .unwrap();
    match &report.outcome {
        Outcome::RolledBack { reason, .. } => assert_eq!(reason, "interrupted by the user"),
        other => panic!("expected a rollback, got {other:?}"),
    }
    assert_eq!(harness.serving().await, [("svc-stable".to_string(), 100)]);
}

#[tokio::test(start_paused = true)]
async fn a_locked_service_is_not_touched() {
    let harness = Harness::new(vec![pass()]).await;
    let other = Lock::new(
        "someone-else",
        Duration::from_secs(3600),
        chrono::Utc::now(),
    );
    harness.platform.external_update(
        &id(),
        &ServiceUpdate::default().with_annotation(
            LOCK_ANNOTATION,
            Some(serde_json::to_string(&other).unwrap()),
        ),
    );
    let writes = harness.platform.writes();
    let error = harness.deploy_error(&request(policy())).await;
    assert!(error.to_string().contains("locked by"), "{error}");
    assert_eq!(harness.platform.writes(), writes, "nothing written");
}

#[tokio::test(start_paused = true)]
async fn a_running_rollout_is_not_mistaken_for_an_interrupted_one() {
    let harness = Harness::new(vec![pass()]).await;
    // Another deployer, alive (this very process), is in its canary step.
    let running = Journal {
        id: "running-rollout".into(),
        stable: Some("svc-stable".into()),
        canary: "svc-other".into(),
        commit: "other".into(),
        commit_time: None,
        image: "img".into(),
        owner: "ci@runner".into(),
        started: chrono::Utc::now(),
        updated: chrono::Utc::now(),
        state: State {
            phase: Phase::Canary,
            step: Some(0),
            percent: 5,
            ..State::start()
        },
        decision: None,
    };
    let lock = Lock::new(
        "running-rollout",
        Duration::from_secs(3600),
        chrono::Utc::now(),
    );
    harness.platform.external_update(
        &id(),
        &ServiceUpdate::default()
            .with_annotation(
                JOURNAL_ANNOTATION,
                Some(serde_json::to_string(&running).unwrap()),
            )
            .with_annotation(LOCK_ANNOTATION, Some(serde_json::to_string(&lock).unwrap())),
    );
    let writes = harness.platform.writes();
    let error = harness.deploy_error(&request(policy())).await;
    assert!(
        error.to_string().contains("rollout running-rollout"),
        "{error}"
    );
    assert_eq!(
        harness.platform.writes(),
        writes,
        "the running rollout was not rolled back"
    );
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_rollout_can_be_resumed_where_it_stopped() {
    let harness = Harness::new(vec![pass()]).await;
    crash_mid_canary(&harness).await;
    let writes = harness.platform.writes();
    let report = harness
        .deploy_answering(&Picks(1), &request(policy()))
        .await;
    assert_eq!(
        report.outcome,
        Outcome::Promoted {
            revision: "svc-crashed".into()
        },
        "{:?}",
        report.notes
    );
    assert_eq!(
        report.id.as_deref(),
        Some("dead-rollout"),
        "the resumed rollout keeps its id"
    );
    // Resumed at its step (25%), not from the start; no new revision was created.
    assert_eq!(harness.recorder.canary_percents(), [25, 50, 100]);
    assert_eq!(harness.serving().await, [("svc-crashed".to_string(), 100)]);
    assert!(harness.platform.writes() > writes);
    assert!(report
        .notes
        .iter()
        .any(|note| note.contains("resumed the interrupted rollout")));
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_rollout_can_be_left_for_a_human() {
    let harness = Harness::new(vec![pass()]).await;
    crash_mid_canary(&harness).await;
    let writes = harness.platform.writes();
    let error = harness
        .deploy_error_answering(&Picks(2), &request(policy()))
        .await;
    assert!(error.to_string().contains("left for a human"), "{error}");
    assert_eq!(harness.platform.writes(), writes, "nothing written");
}

#[tokio::test(start_paused = true)]
async fn a_build_from_a_dirty_tree_is_labelled_as_such_on_its_revision() {
    let harness = Harness::new(vec![pass()]).await;
    let mut dirty = request(policy());
    dirty.dirty = Some("54bad933".into());
    let report = harness.deploy(&dirty).await;
    let canary = report.canary.unwrap();
    let revision = harness
        .platform
        .revision(&id(), &canary)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revision.labels["deployer-dirty"], "54bad933");
    assert_eq!(revision.labels["deployer-commit"], COMMIT);
}

/// Service checks scripted per gate: every run of a gate answers the same results.
struct Checks(BTreeMap<Gate, Vec<MetricResult>>);

#[async_trait]
impl GateChecks for Checks {
    fn gates(&self, gate: Gate) -> bool {
        self.0.contains_key(&gate)
    }

    async fn run(&self, gate: Gate, scope: &CheckScope) -> Vec<MetricResult> {
        assert!(scope.revision.starts_with("svc-0123456-"), "{scope:?}");
        assert_eq!(scope.stable_revision.as_deref(), Some("svc-stable"));
        self.0.get(&gate).cloned().unwrap_or_default()
    }
}

/// Service checks of one gate, every run of it answering `results`.
fn gate_checks(gate: Gate, results: Vec<MetricResult>) -> Box<dyn GateChecks> {
    Box::new(Checks(BTreeMap::from([(gate, results)])))
}

fn check(name: &str, status: Status) -> MetricResult {
    MetricResult::new(name, status, "92.4% (threshold: >= 90%)")
}

/// Defect 1: with `inconclusive = "promote"`, a huge error limit and every metrics read failing,
/// the old driver moved 10% → 50% → 100% and reported "post-deploy monitor passed".
#[tokio::test(start_paused = true)]
async fn metrics_always_failing_never_promote_under_any_inconclusive_policy() {
    for inconclusive in [
        InconclusivePolicy::Promote,
        InconclusivePolicy::Hold,
        InconclusivePolicy::Rollback,
    ] {
        let harness = Harness::new(vec![pass()]).await;
        *harness.metrics.canary_errors.lock().unwrap() = true;
        let mut policy = policy();
        policy.inconclusive = inconclusive;
        policy.consecutive_error_limit = 100;
        let report = harness.deploy(&request(policy)).await;
        assert!(
            !matches!(report.outcome, Outcome::Promoted { .. }),
            "{inconclusive:?}: {:?}",
            report.outcome
        );
        assert_eq!(
            harness.recorder.canary_percents(),
            [5],
            "{inconclusive:?}: never left the first step"
        );
        let reason = match &report.outcome {
            Outcome::Held { reason } | Outcome::RolledBack { reason, .. } => reason.clone(),
            other => panic!("{inconclusive:?}: {other:?}"),
        };
        assert!(reason.contains("never promoted without data"), "{reason}");
    }
}

/// Defect 2: a monitor in which nothing could be read "passed".
#[tokio::test(start_paused = true)]
async fn a_monitor_without_readable_metrics_does_not_pass() {
    let no_data = MetricResult::new("request errors", Status::NoData, "no series");
    let harness = Harness::new(vec![pass(), pass(), pass(), no_data]).await;
    let mut policy = policy();
    policy.consecutive_error_limit = 100;
    policy.inconclusive = InconclusivePolicy::Hold;
    let report = harness.deploy(&request(policy)).await;
    match &report.outcome {
        Outcome::Held { reason } => assert!(
            reason.contains("had no look that read every metric"),
            "{reason}"
        ),
        other => panic!("expected a hold, got {other:?}"),
    }
    assert_eq!(harness.journal().await.phase(), Phase::Held);
}

/// Defect 3: Ctrl-C "leave the split" during the monitor journalled the rollout Promoted and
/// dropped the stable revision from the split.
#[tokio::test(start_paused = true)]
async fn ctrl_c_leave_during_the_monitor_ends_held_with_the_stable_revision_kept() {
    let harness = Harness::new(vec![pass()]).await;
    // Three steps of 15 s, then 10 minutes into the 30-minute monitor.
    let interrupt: Interrupt = Box::pin(tokio::time::sleep(Duration::from_secs(45 + 600)));
    let report = harness
        .driver_with(&Picks(1))
        .deploy(&request(policy()), interrupt)
        .await
        .unwrap();
    assert!(
        matches!(&report.outcome, Outcome::Held { reason } if reason.contains("interrupted")),
        "{:?}",
        report.outcome
    );
    let journal = harness.journal().await;
    assert_eq!(journal.phase(), Phase::Held);
    let snapshot = harness.platform.service(&id()).await.unwrap().unwrap();
    assert!(
        snapshot
            .traffic
            .iter()
            .any(|target| target.revision.as_deref() == Some("svc-stable")),
        "the stable revision stays in the split: {:?}",
        snapshot.traffic
    );
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_monitor_is_resumed_by_promoting_and_monitoring_again() {
    let harness = Harness::new(vec![pass()]).await;
    crash_in(
        &harness,
        State {
            phase: Phase::Monitoring,
            percent: 100,
            ..State::start()
        },
    )
    .await;
    let started = tokio::time::Instant::now();
    let report = harness
        .deploy_answering(&Picks(1), &request(policy()))
        .await;
    assert_eq!(
        report.outcome,
        Outcome::Promoted {
            revision: "svc-crashed".into()
        }
    );
    assert_eq!(harness.recorder.canary_percents(), [100]);
    assert!(
        started.elapsed() >= Duration::from_secs(1800),
        "monitored again in full"
    );
}

/// Defect 4: after a rolled-back `--env FAIL_RATE=0.3` deploy, the next plain deploy created a
/// revision that again had `FAIL_RATE=0.3` (it edited the template of the rolled-back revision).
#[tokio::test(start_paused = true)]
async fn the_next_revision_starts_from_the_stable_revision_not_a_rolled_back_one() {
    let harness = Harness::new(vec![fail()]).await;
    let mut faulty = request(policy());
    faulty.env = BTreeMap::from([("FAIL_RATE".to_string(), "0.3".to_string())]);
    let report = harness.deploy(&faulty).await;
    assert!(matches!(report.outcome, Outcome::RolledBack { .. }));

    *harness.analyser.0.lock().unwrap() = vec![pass()];
    let mut plain = request(policy());
    plain.run = RunConfig {
        memory: Some("1Gi".into()),
        ..RunConfig::default()
    };
    let report = harness.deploy(&plain).await;
    let revision = harness.promoted(&report).await;
    assert_eq!(
        revision.settings.env,
        BTreeMap::from([("REGION".to_string(), "west".to_string())]),
        "the stable revision's environment, without the rolled-back FAIL_RATE"
    );
    assert_eq!(revision.settings.memory.as_deref(), Some("1Gi"));
    let changes: Vec<Vec<String>> = harness
        .recorder
        .events()
        .iter()
        .filter_map(|event| match event {
            Event::SettingsChanged { changes } => Some(changes.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        changes,
        [
            vec!["env FAIL_RATE: unset → 0.3".to_string()],
            vec!["memory: 512Mi → 1Gi".to_string()]
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_critical_validation_check_stops_the_deploy_before_any_traffic() {
    let mut harness = Harness::new(vec![pass()]).await;
    harness.checks = gate_checks(
        Gate::Validation,
        vec![check("Vegas Line Coverage", Status::Fail)],
    );
    let report = harness.deploy(&request(policy())).await;
    match &report.outcome {
        Outcome::StoppedBeforeTraffic { reason } => {
            assert!(reason.contains("Vegas Line Coverage FAIL"), "{reason}")
        }
        other => panic!("expected a stop, got {other:?}"),
    }
    assert!(harness.recorder.canary_percents().is_empty());
    assert_eq!(harness.serving().await, [("svc-stable".to_string(), 100)]);
}

#[tokio::test(start_paused = true)]
async fn validation_warnings_stop_an_unattended_deploy_and_pass_when_accepted() {
    let mut harness = Harness::new(vec![pass()]).await;
    harness.checks = gate_checks(
        Gate::Validation,
        vec![check("Grading Completeness", Status::Warn)],
    );
    let report = harness.deploy(&request(policy())).await;
    assert!(
        matches!(&report.outcome, Outcome::StoppedBeforeTraffic { reason } if reason.contains("not accepted")),
        "{:?}",
        report.outcome
    );
    let mut accepted = request(policy());
    accepted.accept_warnings = true;
    let report = harness.deploy(&accepted).await;
    assert!(
        matches!(report.outcome, Outcome::Promoted { .. }),
        "{:?}",
        report.outcome
    );
}

#[tokio::test(start_paused = true)]
async fn a_critical_canary_check_rolls_back_naming_the_check() {
    let mut harness = Harness::new(vec![inconclusive()]).await;
    harness.checks = gate_checks(
        Gate::Canary,
        vec![check("Recent Predictions", Status::Fail)],
    );
    let report = harness.deploy(&request(policy())).await;
    match &report.outcome {
        Outcome::RolledBack { reason, .. } => {
            assert!(
                reason.contains("Recent Predictions FAIL: 92.4%"),
                "{reason}"
            )
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    assert_eq!(harness.recorder.canary_percents(), [5]);
}

/// Recovery from every phase a crashed run can have journalled: before traffic moved the
/// canary is dropped and the requested deploy goes on; after, "resume" continues from the
/// journalled step (or the monitor) through the same state machine, and ends promoted.
#[tokio::test(start_paused = true)]
async fn recovery_resumes_from_each_journalled_phase() {
    let at = |phase, step: Option<usize>, percent| State {
        phase,
        step,
        percent,
        ..State::start()
    };
    let cases = [
        (at(Phase::Verifying, None, 0), None),
        (at(Phase::Validating, None, 0), None),
        (at(Phase::Canary, Some(0), 5), Some(vec![5, 25, 50, 100])),
        (at(Phase::Canary, Some(1), 25), Some(vec![25, 50, 100])),
        (at(Phase::Canary, Some(2), 50), Some(vec![50, 100])),
        // The monitor is resumed by writing 100% again (idempotent), then monitoring afresh.
        (at(Phase::Monitoring, None, 100), Some(vec![100])),
    ];
    for (state, resumed_percents) in cases {
        let phase = state.phase;
        let harness = Harness::new(vec![pass()]).await;
        crash_in(&harness, state).await;
        let report = harness
            .deploy_answering(&Picks(1), &request(policy()))
            .await;
        let serving = harness.serving().await;
        match resumed_percents {
            Some(percents) => {
                assert_eq!(
                    report.outcome,
                    Outcome::Promoted {
                        revision: "svc-crashed".into()
                    },
                    "{phase:?}: {:?}",
                    report.notes
                );
                assert_eq!(harness.recorder.canary_percents(), percents, "{phase:?}");
                assert_eq!(serving, [("svc-crashed".to_string(), 100)], "{phase:?}");
            }
            None => {
                // Nothing had moved: the crashed canary is dropped, the new image deployed.
                let canary = report.canary.clone().unwrap();
                assert_ne!(canary, "svc-crashed", "{phase:?}");
                assert_eq!(
                    report.outcome,
                    Outcome::Promoted {
                        revision: canary.clone()
                    },
                    "{phase:?}: {:?}",
                    report.notes
                );
                assert_eq!(serving, [(canary, 100)], "{phase:?}");
            }
        }
        let journal = harness.journal().await;
        assert_eq!(journal.phase(), Phase::Promoted, "{phase:?}");
        let snapshot = harness.platform.service(&id()).await.unwrap().unwrap();
        assert!(
            !snapshot.annotations.contains_key(LOCK_ANNOTATION),
            "{phase:?}: no lock left by the dead run or this one"
        );
    }
}

/// Health answers of a first revision: it answers on the service URL itself, with the deployed
/// commit.
struct Everywhere;

#[async_trait]
impl HealthProbe for Everywhere {
    async fn get(&self, _: &str, _: Duration) -> Result<HealthAnswer, ProbeError> {
        Ok(HealthAnswer {
            status: 200,
            body: Some(json!({"service": "svc", "commit": COMMIT})),
        })
    }
}

/// A first deploy used to leave the created service following "latest" (Cloud Run's default):
/// a revision created by anyone afterwards would have taken all traffic unverified.
#[tokio::test(start_paused = true)]
async fn a_first_deploy_names_its_revision_in_the_split_instead_of_following_latest() {
    let harness = Harness::new(vec![pass()]).await;
    let empty = MemoryPlatform::new();
    let driver = Driver {
        platform: &empty,
        probe: &Everywhere,
        ..harness.driver()
    };
    let report = driver.deploy(&request(policy()), never()).await.unwrap();
    let revision = report.canary.clone().unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Promoted {
            revision: revision.clone()
        },
        "{:?}",
        report.notes
    );
    let snapshot = empty.service(&id()).await.unwrap().unwrap();
    assert_eq!(
        snapshot.traffic,
        [TrafficTarget::to_revision(&revision, 100)],
        "the split names the revision"
    );
}

/// A service whose revisions all failed (its first deploy had a bad image) could never be
/// deployed again: the next deploy pinned the split to the revision named ``, read it six times
/// and ended "did not start". It is deployed as a first deploy, with nothing to roll back to.
#[tokio::test(start_paused = true)]
async fn a_service_whose_revisions_all_failed_is_deployed_as_a_first_deploy() {
    let harness = Harness::new(vec![pass()]).await;
    let failed = MemoryPlatform::new();
    failed.fail_image("127.0.0.1:5000/svc@sha256:bad");
    let created = failed
        .create(
            &id(),
            &RevisionSpec {
                name: "svc-bad".into(),
                image: "127.0.0.1:5000/svc@sha256:bad".into(),
                labels: BTreeMap::new(),
                base: None,
                settings: RevisionSettings::default(),
            },
        )
        .await;
    assert!(created.is_err(), "the first revision fails to start");
    let before = failed
        .service(&id())
        .await
        .unwrap()
        .expect("the service exists with its failed revision");
    assert_eq!(
        before.primary_revision().as_deref(),
        Some(""),
        "the state of the report: nothing Ready serves"
    );
    let driver = Driver {
        platform: &failed,
        probe: &Everywhere,
        ..harness.driver()
    };
    let report = driver.deploy(&request(policy()), never()).await.unwrap();
    let revision = report.canary.clone().expect("a revision was deployed");
    assert_eq!(
        report.outcome,
        Outcome::Promoted {
            revision: revision.clone()
        },
        "{:?}",
        report.notes
    );
    assert!(
        report
            .notes
            .iter()
            .any(|note| note.contains("nothing to roll back to")
                || note.contains("no previous revision")),
        "{:?}",
        report.notes
    );
    assert!(
        !report
            .notes
            .iter()
            .any(|note| note.contains("pins it to ``")),
        "{:?}",
        report.notes
    );
    let after = failed.service(&id()).await.unwrap().unwrap();
    assert_eq!(after.serving(), [(revision.clone(), 100)]);
    assert!(Lock::of(&after).is_none(), "the lock is released");
}

/// `deploy --env DB_PASSWORD=…` printed the value in `settings-changed` (`env DB_PASSWORD:
/// unset → …`), in text and in `--format json` events. No event of the rollout carries it now.
#[tokio::test(start_paused = true)]
async fn the_value_of_a_secret_looking_variable_is_in_no_event() {
    let harness = Harness::new(vec![pass()]).await;
    let mut secret = request(policy());
    secret.env = BTreeMap::from([
        ("DB_PASSWORD".to_string(), "hunter2-value".to_string()),
        ("api_token".to_string(), "token-value".to_string()),
    ]);
    let report = harness.deploy(&secret).await;
    harness.promoted(&report).await;
    let events = harness.recorder.events();
    let json = serde_json::to_string(&events).unwrap();
    let debug = format!("{events:?} {report:?}");
    for value in ["hunter2-value", "token-value"] {
        assert!(!json.contains(value), "{json}");
        assert!(!debug.contains(value), "{debug}");
    }
    assert!(
        json.contains("env DB_PASSWORD: set (value not shown)"),
        "changed/unchanged is still said: {json}"
    );
}
