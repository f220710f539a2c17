//! Table tests of `advance`: every phase × input, and the defects found in the first version.

use proptest::prelude::*;

use super::*;
use crate::rollout::observation::MetricResult;

fn policy(inconclusive: InconclusivePolicy) -> Policy {
    Policy {
        steps: vec![10, 50, 100],
        hold: Duration::from_secs(60),
        interval: Duration::from_secs(5),
        inconclusive,
        consecutive_error_limit: 3,
        monitor_duration: Duration::from_secs(30),
        monitor_interval: Duration::from_secs(10),
        validation: false,
    }
}

fn at(phase: Phase, step: Option<usize>, percent: u8) -> State {
    State {
        phase,
        step,
        percent,
        ..State::start()
    }
}

fn metric(status: Status) -> MetricResult {
    MetricResult::new("request errors", status, "numbers")
}

fn look(statuses: &[Status], seconds: u64) -> Input {
    Input::Observed {
        observation: Observation::of(
            statuses
                .iter()
                .enumerate()
                .map(|(index, status)| {
                    MetricResult::new(format!("metric {index}"), *status, "numbers")
                })
                .collect(),
        ),
        elapsed: Duration::from_secs(seconds),
    }
}

/// A short name for an action and the phase it leaves the rollout in.
fn describe((state, action): (State, Action)) -> String {
    let action = match action {
        Action::DeployFirst => "deploy first".to_string(),
        Action::CreateRevision => "create".to_string(),
        Action::ChooseRecovery => "choose".to_string(),
        Action::VerifyIdentity => "verify".to_string(),
        Action::Validate => "validate".to_string(),
        Action::Confirm { .. } => "confirm".to_string(),
        Action::MoveTraffic { percent } => format!("traffic {percent}"),
        Action::Observe { wait } => format!("observe {}", wait.as_secs()),
        Action::RollBack => "rollback".to_string(),
        Action::ClearCanary => "clear".to_string(),
        Action::Record => "record".to_string(),
        Action::Complete => "complete".to_string(),
        Action::Done => "done".to_string(),
    };
    format!("{action} / {:?}", state.phase)
}

#[test]
fn every_phase_and_input() {
    use InconclusivePolicy::{Hold, Promote, Rollback};
    use Status::{Error, Fail, Inconclusive, NoData, Pass, Warn};
    let canary = at(Phase::Canary, Some(0), 10);
    let last_step = at(Phase::Canary, Some(1), 50);
    let monitor = at(Phase::Monitoring, None, 100);
    // The monitor's last interval (30 s every 10 s: two intervals ended, both judged).
    let monitor_last = State {
        intervals: 2,
        ..monitor.clone()
    };
    let verifying = State::start();
    let validating = at(Phase::Validating, None, 0);
    let wrong = IdentityError::WrongCode("commit `fedcba9`".into());
    let rolled_back = at(Phase::RolledBack, Some(0), 10);
    let promoted = at(Phase::Promoted, None, 100);
    let held = at(Phase::Held, Some(0), 10);
    let aborted = at(Phase::Aborted, Some(0), 10);
    let cases: Vec<(InconclusivePolicy, &State, Input, &str)> = vec![
        // Identity.
        (
            Rollback,
            &verifying,
            Input::Identity(Ok(())),
            "traffic 10 / Canary",
        ),
        (
            Rollback,
            &verifying,
            Input::Identity(Err(wrong)),
            "clear / Stopped",
        ),
        (
            Rollback,
            &verifying,
            Input::Recovered(Recovery::Resume),
            "clear / Stopped",
        ),
        // Validation.
        (
            Rollback,
            &validating,
            Input::Validated(Observation::of(vec![metric(Pass)])),
            "traffic 10 / Canary",
        ),
        (
            Rollback,
            &validating,
            Input::Validated(Observation::of(vec![metric(Fail)])),
            "clear / Stopped",
        ),
        (
            Promote,
            &validating,
            Input::Validated(Observation::of(vec![metric(NoData)])),
            "clear / Stopped",
        ),
        (
            Promote,
            &validating,
            Input::Validated(Observation::of(vec![metric(Error)])),
            "clear / Stopped",
        ),
        (
            Promote,
            &validating,
            Input::Validated(Observation::default()),
            "clear / Stopped",
        ),
        (
            Rollback,
            &validating,
            Input::Validated(Observation::of(vec![metric(Warn)])),
            "confirm / Validating",
        ),
        (
            Rollback,
            &validating,
            Input::Confirmed(true),
            "traffic 10 / Canary",
        ),
        (
            Rollback,
            &validating,
            Input::Confirmed(false),
            "clear / Stopped",
        ),
        // Traffic writes.
        (Rollback, &canary, Input::TrafficMoved, "observe 5 / Canary"),
        (
            Rollback,
            &canary,
            Input::TrafficFailed("503".into()),
            "rollback / RolledBack",
        ),
        (
            Rollback,
            &monitor,
            Input::TrafficMoved,
            "observe 10 / Monitoring",
        ),
        (
            Rollback,
            &monitor,
            Input::TrafficFailed("503".into()),
            "rollback / RolledBack",
        ),
        // Canary looks.
        (
            Rollback,
            &canary,
            look(&[Pass, Pass], 5),
            "traffic 50 / Canary",
        ),
        (
            Rollback,
            &last_step,
            look(&[Pass], 5),
            "traffic 100 / Monitoring",
        ),
        (
            Promote,
            &canary,
            look(&[Fail, Pass], 5),
            "rollback / RolledBack",
        ),
        (
            Hold,
            &canary,
            look(&[Pass, Fail], 5),
            "rollback / RolledBack",
        ),
        (
            Rollback,
            &canary,
            look(&[Inconclusive], 5),
            "observe 5 / Canary",
        ),
        (
            Rollback,
            &canary,
            look(&[Pass, Warn], 5),
            "observe 5 / Canary",
        ),
        (Promote, &canary, look(&[Error], 5), "observe 5 / Canary"),
        (Promote, &canary, look(&[NoData], 5), "observe 5 / Canary"),
        (
            Rollback,
            &canary,
            look(&[Inconclusive], 60),
            "rollback / RolledBack",
        ),
        (Hold, &canary, look(&[Inconclusive], 60), "record / Held"),
        (
            Promote,
            &canary,
            look(&[Inconclusive], 60),
            "traffic 50 / Canary",
        ),
        (
            Promote,
            &canary,
            look(&[Pass, Warn], 60),
            "traffic 50 / Canary",
        ),
        (
            Promote,
            &last_step,
            look(&[Inconclusive], 60),
            "traffic 100 / Monitoring",
        ),
        // Defect 1: at the deadline after a failed read, `promote` never promotes.
        (Promote, &canary, look(&[Error], 60), "record / Held"),
        (Promote, &canary, look(&[Pass, NoData], 60), "record / Held"),
        (
            Rollback,
            &canary,
            look(&[Error], 60),
            "rollback / RolledBack",
        ),
        (Hold, &canary, look(&[Error], 60), "record / Held"),
        // A look that measured nothing is never a pass.
        (Promote, &canary, look(&[], 5), "observe 5 / Canary"),
        (Promote, &canary, look(&[], 60), "record / Held"),
        // Ctrl-C.
        (
            Rollback,
            &canary,
            Input::Interrupted(Interruption::RollBack),
            "rollback / RolledBack",
        ),
        (
            Rollback,
            &canary,
            Input::Interrupted(Interruption::Leave),
            "record / Held",
        ),
        // Monitor looks.
        (
            Promote,
            &monitor,
            look(&[Pass, Pass], 10),
            "observe 10 / Monitoring",
        ),
        (
            Promote,
            &monitor,
            look(&[Inconclusive], 10),
            "observe 10 / Monitoring",
        ),
        (
            Promote,
            &monitor,
            look(&[Pass, Fail], 10),
            "rollback / RolledBack",
        ),
        (
            Promote,
            &monitor_last,
            look(&[Pass], 30),
            "complete / Promoted",
        ),
        // Defect 2: the last interval had no data: the monitor did not pass (its end look at
        // 30 s could not read, nor the second look half an interval later).
        (
            Promote,
            &monitor_last,
            look(&[Error], 30),
            "observe 5 / Monitoring",
        ),
        (Promote, &monitor_last, look(&[Error], 35), "record / Held"),
        (
            Rollback,
            &monitor_last,
            look(&[NoData], 35),
            "rollback / RolledBack",
        ),
        // A look at 30 s of a monitor no earlier look reached ends its first interval only:
        // the next one is due at once.
        (
            Promote,
            &monitor,
            look(&[Pass], 30),
            "observe 0 / Monitoring",
        ),
        // Defect 3: Ctrl-C "leave the split" during the monitor ends Held, never Promoted.
        (
            Promote,
            &monitor,
            Input::Interrupted(Interruption::Leave),
            "record / Held",
        ),
        (
            Promote,
            &monitor,
            Input::Interrupted(Interruption::RollBack),
            "rollback / RolledBack",
        ),
        // Recovery after a crash.
        (
            Rollback,
            &last_step,
            Input::Recovered(Recovery::Resume),
            "traffic 50 / Canary",
        ),
        (
            Rollback,
            &monitor,
            Input::Recovered(Recovery::Resume),
            "traffic 100 / Monitoring",
        ),
        (
            Rollback,
            &canary,
            Input::Recovered(Recovery::RollBack),
            "rollback / RolledBack",
        ),
        (
            Rollback,
            &canary,
            Input::Recovered(Recovery::Leave),
            "done / Canary",
        ),
        // Final writes.
        (
            Rollback,
            &rolled_back,
            Input::Wrote(Written::Done),
            "done / RolledBack",
        ),
        (
            Rollback,
            &rolled_back,
            Input::Wrote(Written::Failed("503".into())),
            "done / RollbackFailed",
        ),
        (
            Rollback,
            &promoted,
            Input::Wrote(Written::Failed("503".into())),
            "done / Promoted",
        ),
        // A human's decision on a held rollout (`promote` / `abort`), and nowhere else.
        (
            Rollback,
            &held,
            Input::Manual(Manual::Promote),
            "traffic 100 / Monitoring",
        ),
        (
            Rollback,
            &held,
            Input::Manual(Manual::Abort),
            "rollback / Aborted",
        ),
        (
            Rollback,
            &aborted,
            Input::Wrote(Written::Failed("503".into())),
            "done / RollbackFailed",
        ),
        (
            Rollback,
            &aborted,
            Input::Wrote(Written::Done),
            "done / Aborted",
        ),
        (
            Rollback,
            &promoted,
            Input::Manual(Manual::Abort),
            "done / Promoted",
        ),
        (
            Rollback,
            &canary,
            Input::Manual(Manual::Promote),
            "observe 5 / Canary",
        ),
        (
            Rollback,
            &rolled_back,
            Input::Manual(Manual::Promote),
            "done / RolledBack",
        ),
        // Out-of-place inputs never move a finished rollout.
        (Promote, &held, look(&[Pass], 5), "done / Held"),
        (Promote, &verifying, look(&[Pass], 5), "verify / Verifying"),
    ];
    for (inconclusive, state, input, expected) in cases {
        let shown = format!("{inconclusive:?} {:?} {input:?}", state.phase);
        let actual = describe(advance(&policy(inconclusive), state, input));
        assert_eq!(actual, expected, "{shown}");
    }
}

/// Defect 1: with `inconclusive = "promote"`, `consecutive_error_limit = 100` and every read
/// failing, the old machine moved 10% → 50% → 100% and the monitor "passed".
#[test]
fn metrics_that_cannot_be_read_are_never_promoted_even_with_a_high_error_limit() {
    let policy = Policy {
        consecutive_error_limit: 100,
        ..policy(InconclusivePolicy::Promote)
    };
    let (mut state, mut action) = advance(&policy, &State::start(), Input::Identity(Ok(())));
    let mut elapsed = 0;
    for _ in 0..1000 {
        let input = match action {
            Action::MoveTraffic { .. } => {
                elapsed = 0;
                Input::TrafficMoved
            }
            Action::Observe { wait } => {
                elapsed += wait.as_secs();
                look(&[Status::Error, Status::Pass], elapsed)
            }
            Action::Done => break,
            _ => Input::Wrote(Written::Done),
        };
        (state, action) = advance(&policy, &state, input);
    }
    assert_eq!(state.phase, Phase::Held, "{state:?}");
    assert_eq!(state.percent, 10, "never left the first step");
    assert!(
        state
            .reason
            .as_deref()
            .is_some_and(|reason| reason.contains("never promoted without data")),
        "{state:?}"
    );
}

#[test]
fn a_monitor_ending_unjudged_after_a_read_last_look_does_not_claim_nothing_was_measured() {
    // Monitor: 30 s every 10 s. The first interval could not be read, the last one was.
    let policy = policy(InconclusivePolicy::Hold);
    let state = at(Phase::Monitoring, None, 100);
    let (state, _) = advance(&policy, &state, look(&[Status::Error, Status::Pass], 10));
    let (state, _) = advance(&policy, &state, look(&[Status::Error, Status::Pass], 15));
    let (state, _) = advance(&policy, &state, look(&[Status::Pass, Status::Pass], 20));
    let (state, action) = advance(&policy, &state, look(&[Status::Pass, Status::Pass], 30));
    assert_eq!((state.phase, action), (Phase::Held, Action::Record));
    let reason = state.reason.unwrap_or_default();
    assert!(reason.contains("1 of 3 interval(s)"), "{reason}");
    assert!(!reason.contains("no metric was measured"), "{reason}");
    assert!(
        reason.contains("the last look read every metric"),
        "{reason}"
    );
}

/// Issue #19: under transient faults the last look of a step failed to read after earlier looks
/// had read (too few requests to decide yet): the step ended "could not be read" and a healthy
/// canary was rolled back. The step is judged on what its looks read.
#[test]
fn a_last_look_that_fails_after_an_earlier_read_applies_the_inconclusive_policy() {
    use Status::{Error, Inconclusive, Pass};
    let canary = at(Phase::Canary, Some(0), 10);
    let step = |inconclusive| {
        let policy = policy(inconclusive);
        let (state, _) = advance(&policy, &canary, look(&[Inconclusive, Pass], 5));
        assert!(state.read.is_some(), "{state:?}");
        let (state, _) = advance(&policy, &state, look(&[Error, Pass], 10));
        assert!(
            state.read.is_some(),
            "an unread look keeps what was read: {state:?}"
        );
        advance(&policy, &state, look(&[Error, Pass], 60))
    };
    let (promoted, action) = step(InconclusivePolicy::Promote);
    assert_eq!(
        (promoted.phase, action),
        (Phase::Canary, Action::MoveTraffic { percent: 50 })
    );
    assert_eq!(
        promoted.read, None,
        "the next step starts with nothing read"
    );
    let (held, _) = step(InconclusivePolicy::Hold);
    let (rolled, _) = step(InconclusivePolicy::Rollback);
    assert_eq!((held.phase, rolled.phase), (Phase::Held, Phase::RolledBack));
    let reason = rolled.reason.unwrap_or_default();
    assert!(reason.contains("metric 0 INCONCLUSIVE"), "{reason}");
    assert!(reason.contains("the last look could not read"), "{reason}");
    assert!(reason.contains("inconclusive policy: rollback"), "{reason}");
    assert!(!reason.contains("never promoted without data"), "{reason}");
}

#[test]
fn a_step_no_look_of_which_read_is_never_promoted() {
    use Status::{Error, NoData, Pass};
    let policy = Policy {
        consecutive_error_limit: 100,
        ..policy(InconclusivePolicy::Promote)
    };
    // A read in the previous step does not count for this one.
    let (state, action) = advance(&policy, &at(Phase::Canary, Some(0), 10), look(&[Pass], 5));
    assert_eq!(action, Action::MoveTraffic { percent: 50 });
    let (state, _) = advance(&policy, &state, Input::TrafficMoved);
    let (state, _) = advance(&policy, &state, look(&[NoData, Pass], 30));
    let (state, action) = advance(&policy, &state, look(&[Pass, Error], 60));
    assert_eq!((state.phase, action), (Phase::Held, Action::Record));
    let reason = state.reason.unwrap_or_default();
    assert!(
        reason.contains("could not be read by any look of the step"),
        "{reason}"
    );
    assert!(reason.contains("never promoted without data"), "{reason}");
}

/// Issue #19: one unread look of the monitor made its interval "unjudged" even when another
/// look in the same interval read every metric.
#[test]
fn a_monitor_interval_is_judged_when_any_look_in_it_read() {
    use Status::{Error, Pass};
    let policy = policy(InconclusivePolicy::Promote);
    let monitor = at(Phase::Monitoring, None, 100);
    // Interval 1 (due at 10 s): a look at 4 s reads, the one at 10 s does not.
    let (state, action) = advance(&policy, &monitor, look(&[Pass, Pass], 4));
    assert_eq!(
        (state.intervals, action),
        (
            0,
            Action::Observe {
                wait: Duration::from_secs(6)
            }
        )
    );
    let (state, _) = advance(&policy, &state, look(&[Error, Pass], 10));
    assert_eq!((state.intervals, state.unjudged), (1, 0));
    // Interval 2: only unread looks (its end look, and the second look half an interval
    // later): unjudged.
    let (state, action) = advance(&policy, &state, look(&[Error, Pass], 20));
    assert_eq!(
        (state.intervals, action),
        (
            1,
            Action::Observe {
                wait: Duration::from_secs(5)
            }
        )
    );
    let (state, _) = advance(&policy, &state, look(&[Error, Pass], 25));
    assert_eq!((state.intervals, state.unjudged), (2, 1));
    let (state, action) = advance(&policy, &state, look(&[Pass, Pass], 30));
    assert_eq!((state.phase, action), (Phase::Held, Action::Record));
    let reason = state.reason.unwrap_or_default();
    assert!(reason.contains("1 of 3 interval(s) of 10s"), "{reason}");
    // The same monitor with interval 2 read: promoted.
    let (state, _) = advance(&policy, &monitor, look(&[Pass, Pass], 4));
    let (state, _) = advance(&policy, &state, look(&[Error, Pass], 10));
    let (state, _) = advance(&policy, &state, look(&[Pass, Pass], 20));
    let (state, action) = advance(&policy, &state, look(&[Pass, Pass], 30));
    assert_eq!((state.phase, action), (Phase::Promoted, Action::Complete));
}

/// CI, under load with 30% of Logging reads throttled: the one look that ended a monitor
/// interval ran out of its time, and a healthy canary was rolled back for "1 of 3 interval(s)
/// had no look that read every metric". An end look that cannot read is now looked at again
/// half an interval later, and only two unread looks leave the interval unjudged.
#[test]
fn one_unread_look_at_an_intervals_end_does_not_fail_a_healthy_monitor() {
    use Status::{Error, Pass};
    let policy = policy(InconclusivePolicy::Rollback);
    let monitor = at(Phase::Monitoring, None, 100);
    let (state, _) = advance(&policy, &monitor, look(&[Pass], 10));
    assert_eq!((state.intervals, state.unjudged), (1, 0));
    // Interval 2's end look cannot read: the interval stays open, looked at again at 25 s.
    let (state, action) = advance(&policy, &state, look(&[Error], 20));
    assert_eq!(
        (state.intervals, state.unjudged, action),
        (
            1,
            0,
            Action::Observe {
                wait: Duration::from_secs(5)
            }
        )
    );
    // The second look reads: interval 2 is judged, and interval 3 is due at 30 s.
    let (state, action) = advance(&policy, &state, look(&[Pass], 25));
    assert_eq!(
        (state.intervals, state.unjudged, action),
        (
            2,
            0,
            Action::Observe {
                wait: Duration::from_secs(5)
            }
        )
    );
    // The last interval's end look cannot read, its second look can: promoted.
    let (state, action) = advance(&policy, &state, look(&[Error], 30));
    assert_eq!(
        action,
        Action::Observe {
            wait: Duration::from_secs(5)
        }
    );
    let (state, action) = advance(&policy, &state, look(&[Pass], 35));
    assert_eq!((state.phase, action), (Phase::Promoted, Action::Complete));
    assert_eq!((state.intervals, state.unjudged), (3, 0));
}

/// Intervals are counted from when the split is in place: a slow look does not end the
/// intervals it spans (each ends only at a look attempted in it), and the next look is due
/// when the next interval ends, not an interval after the slow look.
#[test]
fn a_slow_monitor_look_ends_one_interval_and_the_next_is_due_on_the_split_clock() {
    use Status::Pass;
    let policy = policy(InconclusivePolicy::Promote);
    let monitor = at(Phase::Monitoring, None, 100);
    let (state, action) = advance(&policy, &monitor, look(&[Pass], 12));
    assert_eq!(
        (state.intervals, action),
        (
            1,
            Action::Observe {
                wait: Duration::from_secs(8)
            }
        )
    );
    // This look was due at 20 s and came at 27 s: it ends interval 2 only.
    let (state, action) = advance(&policy, &state, look(&[Pass], 27));
    assert_eq!(
        (state.intervals, action),
        (
            2,
            Action::Observe {
                wait: Duration::from_secs(3)
            }
        )
    );
    let (state, action) = advance(&policy, &state, look(&[Pass], 31));
    assert_eq!((state.phase, action), (Phase::Promoted, Action::Complete));
    assert_eq!((state.intervals, state.unjudged), (3, 0));
}

#[test]
fn per_metric_error_limits_end_the_step_without_promotion() {
    let policy = policy(InconclusivePolicy::Promote);
    let mut state = at(Phase::Canary, Some(0), 10);
    let mut strict = MetricResult::new("coverage", Status::Error, "BigQuery down");
    strict.error_limit = Some(1);
    let observation = Observation::of(vec![metric(Status::Pass), strict]);
    let input = || Input::Observed {
        observation: observation.clone(),
        elapsed: Duration::from_secs(5),
    };
    let (next, action) = advance(&policy, &state, input());
    assert_eq!(
        action,
        Action::Observe {
            wait: policy.interval
        }
    );
    assert_eq!(next.errors.get("coverage"), Some(&1));
    state = next;
    let (next, action) = advance(&policy, &state, input());
    assert_eq!((next.phase, action), (Phase::Held, Action::Record));
    assert!(next
        .reason
        .unwrap()
        .contains("2 unread looks in a row of coverage"));
}

#[test]
fn a_service_wide_failure_is_not_blamed_on_the_canary() {
    let wide = Input::Observed {
        observation: Observation::of(vec![metric(Status::Fail).service_wide()]),
        elapsed: Duration::from_secs(5),
    };
    let canary = at(Phase::Canary, Some(0), 10);
    let (held, action) = advance(&policy(InconclusivePolicy::Promote), &canary, wide.clone());
    assert_eq!((held.phase, action), (Phase::Held, Action::Record));
    assert!(held
        .reason
        .unwrap()
        .contains("the whole service is failing"));
    let (rolled, _) = advance(&policy(InconclusivePolicy::Rollback), &canary, wide);
    assert_eq!(rolled.phase, Phase::RolledBack);
}

#[test]
fn reasons_carry_the_numbers() {
    let (state, _) = advance(
        &policy(InconclusivePolicy::Rollback),
        &at(Phase::Canary, Some(1), 50),
        Input::Observed {
            observation: Observation::of(vec![MetricResult::new(
                "request errors",
                Status::Inconclusive,
                "12 canary requests (< 50 needed)",
            )]),
            elapsed: Duration::from_secs(60),
        },
    );
    assert_eq!(
        state.reason.as_deref(),
        Some(
            "no decision within 1m at 50%: request errors INCONCLUSIVE: 12 canary requests \
             (< 50 needed) (inconclusive policy: rollback)"
        )
    );
}

#[test]
fn start_up_first_deploys_and_revision_creation() {
    let policy = policy(InconclusivePolicy::Rollback);
    let start = State::start();
    let wrong = || IdentityError::WrongCode("commit `fedcba9`".into());
    let failure = |start_failure: Option<&str>| CreationFailure {
        revision: "api-00002-abc1234".into(),
        error: "409 conflict".into(),
        start_failure: start_failure.map(str::to_string),
    };
    let cases: Vec<(Input, &str, Option<&str>)> = vec![
        // No revision serves (no service, or every revision failed): nothing to protect or
        // roll back to, so the new revision is deployed at once.
        (
            Input::Found { serving: false },
            "deploy first / Verifying",
            None,
        ),
        // A revision serves: the new one is created at 0% beside it.
        (Input::Found { serving: true }, "create / Verifying", None),
        // A first deploy: promoted (pinned in the split), or, with the wrong code serving and
        // nothing to roll back to, a failed rollback (exit 5), or stopped when nothing was
        // written.
        (
            Input::FirstDeployed(FirstDeploy::Verified(Ok(()))),
            "complete / Promoted",
            None,
        ),
        (
            Input::FirstDeployed(FirstDeploy::Verified(Err(wrong()))),
            "record / RollbackFailed",
            Some("; this is the service's first revision, there is nothing to roll back to"),
        ),
        (
            Input::FirstDeployed(FirstDeploy::NotCreated("403 denied".into())),
            "done / Stopped",
            Some("the service could not be created: 403 denied"),
        ),
        // The new revision created at 0%: its identity next; a failed creation stops before
        // traffic, saying why the revision did not start when the platform knows.
        (Input::RevisionCreated(Ok(())), "verify / Verifying", None),
        (
            Input::RevisionCreated(Err(failure(None))),
            "record / Stopped",
            Some("creating revision `api-00002-abc1234` failed: 409 conflict"),
        ),
        (
            Input::RevisionCreated(Err(failure(Some("container exited (1)")))),
            "record / Stopped",
            Some("revision `api-00002-abc1234` failed to start: container exited (1)"),
        ),
    ];
    for (index, (input, expected, reason)) in cases.into_iter().enumerate() {
        let (state, action) = advance(&policy, &start, input);
        if let Some(reason) = reason {
            let found = state.reason.clone().unwrap_or_default();
            assert!(found.contains(reason), "case {index}: {found}");
        }
        assert_eq!(describe((state, action)), expected, "case {index}");
    }
    let (state, _) = advance(
        &policy,
        &start,
        Input::FirstDeployed(FirstDeploy::Verified(Ok(()))),
    );
    assert_eq!(state.percent, 100);
}

#[test]
fn recovery_asks_only_after_traffic_moved() {
    let policy = policy(InconclusivePolicy::Rollback);
    let cases = [
        (State::start(), "clear / Stopped"),
        (at(Phase::Validating, None, 0), "clear / Stopped"),
        (at(Phase::Canary, Some(1), 50), "choose / Canary"),
        (at(Phase::Monitoring, None, 100), "choose / Monitoring"),
        (at(Phase::Promoted, None, 100), "done / Promoted"),
    ];
    for (state, expected) in cases {
        let answer = advance(&policy, &state, Input::Unfinished);
        assert_eq!(describe(answer), expected, "{:?}", state.phase);
    }
    // Before traffic moved, the answer is the same whatever a human would have chosen.
    for choice in [Recovery::RollBack, Recovery::Resume, Recovery::Leave] {
        let answer = advance(&policy, &State::start(), Input::Recovered(choice));
        assert_eq!(describe(answer), "clear / Stopped");
    }
}

#[test]
fn a_rollback_someone_else_already_made_is_not_written() {
    let policy = policy(InconclusivePolicy::Rollback);
    let rolled_back = State {
        reason: Some("request errors FAIL".into()),
        ..at(Phase::RolledBack, Some(0), 10)
    };
    let aborted = State {
        reason: Some("aborted by a human".into()),
        ..at(Phase::Aborted, Some(0), 10)
    };
    let stopped = at(Phase::Stopped, None, 0);
    let read = |canary_percent: u16, changed_by_others: bool| {
        Input::ReadBeforeRollBack(BeforeRollBack {
            canary_percent,
            changed_by_others,
            serving: "api-00001-old".into(),
        })
    };
    let cases: Vec<(&State, Input, &str)> = vec![
        // The canary is out of the split and someone else wrote the service: their change
        // stands.
        (&rolled_back, read(0, true), "done / RolledBack"),
        (&aborted, read(0, true), "done / Aborted"),
        // Our own split, or the canary still serving: the rollback is written.
        (&rolled_back, read(0, false), "rollback / RolledBack"),
        (&rolled_back, read(10, true), "rollback / RolledBack"),
        (&aborted, read(10, true), "rollback / Aborted"),
        // Before traffic moved the canary is dropped whatever the split says.
        (&stopped, read(0, true), "clear / Stopped"),
    ];
    for (index, (state, input, expected)) in cases.into_iter().enumerate() {
        assert_eq!(
            describe(advance(&policy, state, input)),
            expected,
            "case {index}"
        );
    }
    let (state, _) = advance(&policy, &rolled_back, read(0, true));
    assert_eq!(
        state.reason.as_deref(),
        Some("request errors FAIL; meanwhile someone else changed the service and took the canary out of the split: `api-00001-old` serves — deployer stops without writing")
    );
    let (state, _) = advance(&policy, &aborted, read(0, true));
    assert_eq!(state.reason.as_deref(), Some("aborted by a human"));
}

#[test]
fn the_state_round_trips_through_the_journal_encoding() {
    let mut state = at(Phase::Canary, Some(1), 50);
    state.errors.insert("request errors".into(), 2);
    state.elapsed_ms = 12_345;
    let text = serde_json::to_string(&state).unwrap();
    assert_eq!(serde_json::from_str::<State>(&text).unwrap(), state);
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Pass),
        Just(Status::Warn),
        Just(Status::Inconclusive),
        Just(Status::NoData),
        Just(Status::Error),
        Just(Status::Fail),
    ]
}

fn inconclusive_policy() -> impl Strategy<Value = InconclusivePolicy> {
    prop_oneof![
        Just(InconclusivePolicy::Promote),
        Just(InconclusivePolicy::Hold),
        Just(InconclusivePolicy::Rollback),
    ]
}

proptest! {
    /// For arbitrary observation sequences: the service is promoted only if every step had a
    /// look whose metrics were all read (all passing, or, with `promote`, read and
    /// inconclusive at the deadline) and every monitor interval was read; and the end state is
    /// one revision at 100% (promoted or rolled back) or a journalled hold.
    #[test]
    fn never_promoted_without_a_successful_read(
        inconclusive in inconclusive_policy(),
        looks in proptest::collection::vec(
            (proptest::collection::vec(status(), 0..4), 1u64..30),
            1..200,
        ),
        limit in 0u32..5,
    ) {
        let policy = Policy { consecutive_error_limit: limit, ..policy(inconclusive) };
        let (mut state, mut action) = advance(&policy, &State::start(), Input::Identity(Ok(())));
        let mut looks = looks.into_iter().cycle();
        let mut elapsed = 0;
        let mut step_had_read = Vec::new();
        let mut monitor_unread = false;
        let mut read_in_step = false;
        // The monitor's intervals, on the test's own clock: interval k is due at k × interval
        // and ends at a look at or after that time that read, or half an interval later
        // whatever it read (the look again after an unread one); it is judged when some look
        // in it read.
        let every = policy.monitor_interval.as_secs();
        let mut due = every;
        let mut read_in_interval = false;
        for _ in 0..2000 {
            let input = match action {
                Action::MoveTraffic { percent } => {
                    if (state.phase == Phase::Canary && elapsed > 0) || percent == 100 {
                        step_had_read.push(read_in_step);
                    }
                    read_in_step = false;
                    read_in_interval = false;
                    due = every;
                    elapsed = 0;
                    Input::TrafficMoved
                }
                Action::Observe { wait } => {
                    let (statuses, step) = looks.next().unwrap_or_default();
                    elapsed += wait.as_secs().max(step);
                    let read = !statuses.is_empty() && statuses.iter().all(|s| s.is_read());
                    read_in_step |= read;
                    if state.phase == Phase::Monitoring {
                        read_in_interval |= read;
                        if elapsed >= due && (read_in_interval || elapsed >= due + every / 2) {
                            monitor_unread |= !read_in_interval;
                            read_in_interval = false;
                            due += every;
                        }
                    }
                    look(&statuses, elapsed)
                }
                Action::Done => break,
                Action::Complete | Action::RollBack | Action::Record | Action::ClearCanary => {
                    Input::Wrote(Written::Done)
                }
                Action::VerifyIdentity | Action::Validate | Action::Confirm { .. } => {
                    Input::Identity(Ok(()))
                }
                Action::DeployFirst | Action::CreateRevision | Action::ChooseRecovery => {
                    Input::Recovered(Recovery::RollBack)
                }
            };
            (state, action) = advance(&policy, &state, input);
        }
        prop_assert!(state.phase.is_terminal(), "{:?}", state);
        if state.phase == Phase::Promoted {
            prop_assert!(step_had_read.iter().all(|read| *read), "{:?}", step_had_read);
            prop_assert!(!monitor_unread);
            prop_assert_eq!(state.percent, 100);
        }
        prop_assert!(matches!(state.phase, Phase::Promoted | Phase::RolledBack | Phase::Held));
    }
}
