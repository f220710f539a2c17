//! The driver's [`Analyser`] on the sequential test of [`crate::analysis`].
//!
//! The driver reads *cumulative* counts since the step started at every look; the log-likelihood
//! ratio of cumulative counts is the sum of the per-window ratios, so judging them afresh at each
//! look is the same sequential test as feeding windows one by one. Measurement errors and
//! deadlines are counted by the rollout's state machine, not here.

use super::{
    observation::{MetricResult, Status},
    ports::{Analyser, REQUEST_ERRORS},
};
use crate::{
    analysis::{
        AnalysisError, AnalysisPolicy, CanaryAnalysis, Counts, FailureCause, InconclusiveReason,
        Observation, Verdict,
    },
    checks::RequestCounts,
    config::RolloutConfig,
};

/// The sequential analysis, configured from a service's rollout policy.
#[derive(Debug, Clone)]
pub struct SequentialAnalyser {
    analysis: CanaryAnalysis,
}

impl SequentialAnalyser {
    /// The analysis of `rollout`'s policy; errors when its bounds are out of range.
    pub fn new(rollout: &RolloutConfig) -> Result<Self, AnalysisError> {
        let analysis = CanaryAnalysis::new(AnalysisPolicy::from(rollout))?;
        Ok(Self { analysis })
    }
}

fn percent(counts: Counts) -> String {
    counts.error_rate().map_or_else(
        || "no requests".to_string(),
        |rate| {
            format!(
                "{:.1}% errors ({}/{})",
                rate * 100.0,
                counts.errors(),
                counts.requests()
            )
        },
    )
}

/// The sampling of counts read from a sample of the requests: the test runs on the sampled
/// requests themselves (each still a Bernoulli trial), so it is only reported.
fn sampled(counts: RequestCounts) -> String {
    counts.sample_ppm.map_or_else(String::new, |ppm| {
        format!(" in a {:.3}% sample", f64::from(ppm) / 10_000.0)
    })
}

fn counts(counts: RequestCounts) -> Counts {
    // A backend reporting more errors than requests is clamped rather than trusted.
    Counts::new(counts.total, counts.errors.min(counts.total)).unwrap_or_default()
}

impl Analyser for SequentialAnalyser {
    fn judge(&self, canary: RequestCounts, stable: Option<RequestCounts>) -> MetricResult {
        let observation = Observation {
            canary: counts(canary),
            stable: stable.map(counts),
        };
        let assessment = self.analysis.judge(observation);
        let limit = format!(
            "{:.1}% allowed",
            self.analysis.policy().max_error_rate * 100.0
        );
        let numbers = match stable {
            Some(stable) => format!(
                "canary {}{}, stable {}{}; {limit}",
                percent(assessment.canary),
                sampled(canary),
                percent(assessment.stable),
                sampled(stable)
            ),
            None => format!("{}{}; {limit}", percent(assessment.canary), sampled(canary)),
        };
        match assessment.verdict {
            Verdict::Pass => MetricResult::new(REQUEST_ERRORS, Status::Pass, numbers),
            Verdict::Fail {
                cause: FailureCause::Canary,
            } => MetricResult::new(REQUEST_ERRORS, Status::Fail, numbers),
            Verdict::Fail {
                cause: FailureCause::ServiceWide,
            } => MetricResult::new(REQUEST_ERRORS, Status::Fail, numbers).service_wide(),
            Verdict::Inconclusive { reason } => MetricResult::new(
                REQUEST_ERRORS,
                Status::Inconclusive,
                match reason {
                    InconclusiveReason::TooFewRequests { observed, required } => {
                        format!("{observed} canary requests (< {required} needed); {numbers}")
                    }
                    InconclusiveReason::Undecided => format!("not decided yet: {numbers}"),
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(canary: (u64, u64), stable: Option<(u64, u64)>) -> MetricResult {
        SequentialAnalyser::new(&RolloutConfig::default())
            .unwrap()
            .judge(
                RequestCounts {
                    total: canary.0,
                    errors: canary.1,
                    sample_ppm: None,
                },
                stable.map(|(total, errors)| RequestCounts {
                    total,
                    errors,
                    sample_ppm: None,
                }),
            )
    }

    #[test]
    fn sampled_counts_are_judged_as_they_are_and_say_their_fraction() {
        let sampled = RequestCounts {
            total: 900,
            errors: 180,
            sample_ppm: Some(30_000),
        };
        let result = SequentialAnalyser::new(&RolloutConfig::default())
            .unwrap()
            .judge(sampled, None);
        assert_eq!(result.status, Status::Fail);
        assert!(
            result
                .detail
                .contains("20.0% errors (180/900) in a 3.000% sample"),
            "{}",
            result.detail
        );
    }

    #[test]
    fn verdicts_carry_the_numbers() {
        assert_eq!(judge((10, 0), Some((100, 0))).status, Status::Inconclusive);
        assert_eq!(judge((400, 0), Some((4000, 10))).status, Status::Pass);
        let failing = judge((200, 60), Some((2000, 10)));
        assert_eq!(failing.status, Status::Fail);
        assert!(!failing.service_wide);
        assert!(
            failing.detail.contains("canary 30.0% errors (60/200)"),
            "{}",
            failing.detail
        );
        let wide = judge((200, 60), Some((2000, 600)));
        assert_eq!(wide.status, Status::Fail);
        assert!(wide.service_wide);
    }
}
