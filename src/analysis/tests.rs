//! Table and property tests of the step analysis.

use proptest::prelude::*;

use super::*;

/// The default policy: max 5%, healthy 2%, min 50 requests, alpha 0.01, beta 0.05. Hand-computed
/// weights (see `sprt.rs`): error +0.916291, success −0.031091, boundaries +4.605170 /
/// −2.995732.
fn policy() -> AnalysisPolicy {
    AnalysisPolicy::default()
}

fn counts(requests: u64, errors: u64) -> Counts {
    Counts::new(requests, errors).expect("valid counts")
}

/// One window of counts: (canary requests, errors), and the stable revision's if it served.
type Window = ((u64, u64), Option<(u64, u64)>);

fn look(canary: (u64, u64), stable: Option<(u64, u64)>) -> Window {
    (canary, stable)
}

/// The verdict on the step's counts after these windows: summed, as the driver reads them
/// (cumulative since the step started), and judged once.
fn run(policy: AnalysisPolicy, looks: impl IntoIterator<Item = Window>) -> Assessment {
    let analysis = CanaryAnalysis::new(policy).expect("valid policy");
    let mut canary = (0, 0);
    let mut stable: Option<(u64, u64)> = None;
    for (window, stable_window) in looks {
        canary = (canary.0 + window.0, canary.1 + window.1);
        if let Some(window) = stable_window {
            let sum = stable.unwrap_or_default();
            stable = Some((sum.0 + window.0, sum.1 + window.1));
        }
    }
    analysis.judge(Observation {
        canary: counts(canary.0, canary.1),
        stable: stable.map(|(requests, errors)| counts(requests, errors)),
    })
}

fn too_few(observed: u64) -> Verdict {
    Verdict::Inconclusive {
        reason: InconclusiveReason::TooFewRequests {
            observed,
            required: 50,
        },
    }
}

const UNDECIDED: Verdict = Verdict::Inconclusive {
    reason: InconclusiveReason::Undecided,
};
const FAIL_CANARY: Verdict = Verdict::Fail {
    cause: FailureCause::Canary,
};
const FAIL_SERVICE: Verdict = Verdict::Fail {
    cause: FailureCause::ServiceWide,
};

#[test]
fn verdicts_on_known_counts() {
    // (looks as (canary, stable), expected verdict; LLRs by hand)
    let table: Vec<(Vec<Window>, Verdict)> = vec![
        // No canary traffic at all: inconclusive, never pass.
        (vec![look((0, 0), Some((250, 0))); 3], too_few(0)),
        // 40 requests, all errors: far beyond the boundary, but below min_requests.
        (vec![look((40, 40), None)], too_few(40)),
        // 50 requests, 10 errors: 9.163 − 40 × 0.031091 = 7.919 ≥ 4.605.
        (vec![look((25, 5), None), look((25, 5), None)], FAIL_CANARY),
        // 50 requests, 1 error: 0.916 − 49 × 0.031091 = −0.607: between the boundaries.
        (vec![look((50, 1), None)], UNDECIDED),
        // 100 requests, no error: −3.109 ≤ −2.996.
        (vec![look((100, 0), None)], Verdict::Pass),
        // 96 requests, no error: −2.985, not yet.
        (vec![look((96, 0), None)], UNDECIDED),
        // Canary 100/10 (9.163 − 2.798 = 6.365, failing); stable 900/90 (10%):
        // 82.466 − 25.184 = 57.3, failing too → the whole service.
        (vec![look((100, 10), Some((900, 90)))], FAIL_SERVICE),
        // Same canary; stable 900/9 (1%): 8.247 − 27.702 = −19.5, healthy → the canary.
        (vec![look((100, 10), Some((900, 9)))], FAIL_CANARY),
        // Stable failing but below min_requests (30 requests): not known → the canary.
        (vec![look((100, 10), Some((30, 30)))], FAIL_CANARY),
        // A healthy canary passes even when the stable revision fails: it may be the fix.
        (vec![look((100, 0), Some((900, 90)))], Verdict::Pass),
    ];
    for (index, (looks, verdict)) in table.into_iter().enumerate() {
        let assessment = run(policy(), looks);
        assert_eq!(assessment.verdict, verdict, "row {index}: {assessment:?}");
    }
}

#[test]
fn assessment_reports_counts_and_boundaries() {
    let assessment = run(
        policy(),
        [look((30, 1), Some((270, 2))), look((30, 2), Some((270, 3)))],
    );
    assert_eq!(assessment.canary, counts(60, 3));
    assert_eq!(assessment.stable, counts(540, 5));
    // 3 × 0.916291 − 57 × 0.031091 = 2.749 − 1.772 = 0.977
    assert!((assessment.log_likelihood_ratio - 0.977).abs() < 1e-3);
    assert!((assessment.fail_boundary - 4.605).abs() < 1e-3);
    assert!((assessment.pass_boundary + 2.996).abs() < 1e-3);
    assert_eq!(assessment.baseline, BaselineStatus::Healthy);
}

#[test]
fn invalid_inputs_are_errors_not_panics() {
    assert!(Counts::new(3, 4).is_err());
    let broken = AnalysisPolicy {
        max_error_rate: 0.0,
        ..policy()
    };
    assert!(CanaryAnalysis::new(broken).is_err());
    let broken = AnalysisPolicy {
        alpha: 0.7,
        ..policy()
    };
    assert!(CanaryAnalysis::new(broken).is_err());
}

/// Windows of (canary requests, canary errors), errors ≤ requests.
fn windows() -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec(
        (0u64..80).prop_flat_map(|requests| (Just(requests), 0..=requests)),
        0..12,
    )
}

fn arbitrary_policy() -> impl Strategy<Value = AnalysisPolicy> {
    (
        0.01f64..0.3,
        0.1f64..0.9,
        1u64..200,
        0.001f64..0.2,
        0.01f64..0.3,
    )
        .prop_map(
            |(max_error_rate, fraction, min_requests, alpha, beta)| AnalysisPolicy {
                max_error_rate,
                healthy_error_rate: max_error_rate * fraction,
                min_requests,
                alpha,
                beta,
            },
        )
}

fn final_verdict(policy: AnalysisPolicy, windows: &[(u64, u64)]) -> Verdict {
    run(
        policy,
        windows
            .iter()
            .map(|&(requests, errors)| look((requests, errors), None)),
    )
    .verdict
}

proptest! {
    /// More errors never turn a failure into a pass: with the same requests, a sequence whose
    /// errors are at least as many in every window has a log likelihood ratio at least as high
    /// at every look, so it cannot cross the lower boundary first.
    #[test]
    fn more_errors_never_turn_fail_into_pass(
        policy in arbitrary_policy(),
        windows in windows(),
        extra in prop::collection::vec(0u64..80, 12),
    ) {
        let worse: Vec<(u64, u64)> = windows
            .iter()
            .zip(&extra)
            .map(|(&(requests, errors), &more)| (requests, (errors + more).min(requests)))
            .collect();
        let better = final_verdict(policy, &windows);
        let worse = final_verdict(policy, &worse);
        // Stronger than "a failure never becomes a pass": the worse sequence fails whenever the
        // better one does, and the better one passes whenever the worse one does.
        if matches!(better, Verdict::Fail { .. }) {
            prop_assert!(matches!(worse, Verdict::Fail { .. }), "better {better:?} worse {worse:?}");
        }
        if worse == Verdict::Pass {
            prop_assert_eq!(better, Verdict::Pass);
        }
    }

    /// Zero canary traffic is always inconclusive, whatever the stable revision does, and the
    /// driver is never told to act before the deadline.
    #[test]
    fn zero_traffic_is_always_inconclusive(
        policy in arbitrary_policy(),
        stable in prop::collection::vec(
            prop::option::of((0u64..1000).prop_flat_map(|r| (Just(r), 0..=r))),
            0..12,
        ),
    ) {
        let assessment = run(policy, stable.iter().map(|&stable| look((0, 0), stable)));
        prop_assert!(
            matches!(assessment.verdict, Verdict::Inconclusive { .. }),
            "{:?}",
            assessment.verdict
        );
    }

    /// Below `min_requests` canary requests in the step, nothing is decided.
    #[test]
    fn below_min_requests_never_decides(policy in arbitrary_policy(), windows in windows()) {
        let total: u64 = windows.iter().map(|&(requests, _)| requests).sum();
        prop_assume!(total < policy.min_requests);
        let verdict = final_verdict(policy, &windows);
        prop_assert!(matches!(verdict, Verdict::Inconclusive { .. }), "{verdict:?}");
    }

    /// A single look: the verdict is monotone in the error count for a fixed request count.
    #[test]
    fn single_look_is_monotone(
        policy in arbitrary_policy(),
        requests in 0u64..500,
        split in (0.0f64..=1.0, 0.0f64..=1.0),
    ) {
        let low = (split.0.min(split.1) * requests as f64) as u64;
        let high = (split.0.max(split.1) * requests as f64) as u64;
        let rank = |verdict: Verdict| match verdict {
            Verdict::Pass => 0,
            Verdict::Inconclusive { .. } => 1,
            Verdict::Fail { .. } => 2,
        };
        let low = rank(final_verdict(policy, &[(requests, low)]));
        let high = rank(final_verdict(policy, &[(requests, high)]));
        prop_assert!(low <= high);
    }
}
