//! Wald's sequential probability ratio test (SPRT) on a Bernoulli error rate.
//!
//! Every request is one Bernoulli trial (error or not). The test weighs H0 "the error rate is at
//! most `healthy_rate`" against H1 "the error rate is at least `failing_rate`" through the log
//! likelihood ratio of all requests seen so far, and stops as soon as it leaves the band
//! between its two boundaries. `docs/ANALYSIS.md` explains the statistics.
//!
//! The boundaries are `ln(1/alpha)` (reject H0: the revision is failing) and `ln(beta)` (accept
//! H0: the revision is healthy). They are Ville's boundaries rather than Wald's approximations
//! `ln((1-beta)/alpha)` and `ln(beta/(1-alpha))`: the likelihood ratio is a non-negative
//! martingale under H0 (a supermartingale for any rate below `healthy_rate`), so by Ville's
//! inequality the probability that it *ever* reaches `1/alpha` is at most `alpha`, whatever the
//! number of looks, their timing, or how many requests arrive between looks. The symmetric
//! argument under H1 bounds the probability of ever reaching `beta` by `beta`. The price is
//! negligible (4.605 instead of 4.554 for alpha = 0.01, beta = 0.05) and the bounds hold exactly
//! instead of approximately.

use serde::Serialize;

use super::{AnalysisError, Counts};

/// The result of testing a set of counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SprtOutcome {
    /// The log likelihood ratio reached the lower boundary: the error rate is at most the
    /// healthy rate (the probability that a revision at the failing rate gets here is ≤ beta).
    Healthy,
    /// The log likelihood ratio reached the upper boundary: the error rate is at least the
    /// failing rate (the probability that a revision at the healthy rate gets here is ≤ alpha).
    Failing,
    /// Between the boundaries: more requests are needed.
    Continue,
}

/// A configured SPRT: the two hypotheses and the two boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sprt {
    healthy_rate: f64,
    failing_rate: f64,
    /// Added to the log likelihood ratio for each error: `ln(p1 / p0)`, positive.
    error_weight: f64,
    /// Added to the log likelihood ratio for each success: `ln((1 - p1) / (1 - p0))`, negative.
    success_weight: f64,
    fail_boundary: f64,
    pass_boundary: f64,
}

impl Sprt {
    /// A test of "error rate ≤ `healthy_rate`" against "error rate ≥ `failing_rate`" with
    /// false-failure bound `alpha` and miss bound `beta`.
    ///
    /// Errors when `0 < healthy_rate < failing_rate < 1` or `0 < alpha, beta < 0.5` does not
    /// hold: the logarithms below would be undefined or the boundaries would cross.
    pub fn new(
        healthy_rate: f64,
        failing_rate: f64,
        alpha: f64,
        beta: f64,
    ) -> Result<Self, AnalysisError> {
        let open_unit = |value: f64| value > 0.0 && value < 1.0;
        if !(open_unit(healthy_rate) && open_unit(failing_rate) && healthy_rate < failing_rate) {
            return Err(AnalysisError::Rates {
                healthy_rate,
                failing_rate,
            });
        }
        for (name, value) in [("alpha", alpha), ("beta", beta)] {
            if !(value > 0.0 && value < 0.5) {
                return Err(AnalysisError::ErrorBound { name, value });
            }
        }
        Ok(Self {
            healthy_rate,
            failing_rate,
            error_weight: (failing_rate / healthy_rate).ln(),
            success_weight: ((1.0 - failing_rate) / (1.0 - healthy_rate)).ln(),
            fail_boundary: (1.0 / alpha).ln(),
            pass_boundary: beta.ln(),
        })
    }

    /// The error rate of H0 (p0).
    pub fn healthy_rate(&self) -> f64 {
        self.healthy_rate
    }

    /// The error rate of H1 (p1).
    pub fn failing_rate(&self) -> f64 {
        self.failing_rate
    }

    /// The upper boundary `ln(1/alpha)`: at or above it the revision is failing.
    pub fn fail_boundary(&self) -> f64 {
        self.fail_boundary
    }

    /// The lower boundary `ln(beta)`: at or below it the revision is healthy.
    pub fn pass_boundary(&self) -> f64 {
        self.pass_boundary
    }

    /// `ln(L(H1) / L(H0))` of `counts`: `errors·ln(p1/p0) + successes·ln((1-p1)/(1-p0))`.
    /// Zero for no requests. `counts` must satisfy `errors <= requests` (see [`Counts::new`]).
    pub fn log_likelihood_ratio(&self, counts: Counts) -> f64 {
        let successes = counts.requests().saturating_sub(counts.errors());
        counts.errors() as f64 * self.error_weight + successes as f64 * self.success_weight
    }

    /// Where `counts` stand against the boundaries.
    pub fn test(&self, counts: Counts) -> SprtOutcome {
        let ratio = self.log_likelihood_ratio(counts);
        if ratio >= self.fail_boundary {
            SprtOutcome::Failing
        } else if ratio <= self.pass_boundary {
            SprtOutcome::Healthy
        } else {
            SprtOutcome::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(requests: u64, errors: u64) -> Counts {
        Counts::new(requests, errors).expect("valid counts")
    }

    /// The default policy's test: p0 = 0.4 × 0.05 = 0.02, p1 = 0.05, alpha = 0.01, beta = 0.05.
    ///
    /// By hand:
    ///   error weight   = ln(0.05 / 0.02)  = ln 2.5          =  0.916291
    ///   success weight = ln(0.95 / 0.98)  = ln 0.969388     = -0.031091
    ///   fail boundary  = ln(1 / 0.01)     = ln 100          =  4.605170
    ///   pass boundary  = ln(0.05)                           = -2.995732
    fn default_test() -> Sprt {
        Sprt::new(0.02, 0.05, 0.01, 0.05).expect("valid test")
    }

    #[test]
    fn weights_and_boundaries_match_hand_computation() {
        let test = default_test();
        assert!((test.error_weight - 0.916_291).abs() < 1e-6);
        assert!((test.success_weight - (-0.031_091)).abs() < 1e-6);
        assert!((test.fail_boundary() - 4.605_170).abs() < 1e-6);
        assert!((test.pass_boundary() - (-2.995_732)).abs() < 1e-6);
    }

    #[test]
    fn decisions_on_known_counts() {
        let test = default_test();
        // (requests, errors, expected, by hand)
        let table = [
            // LLR = 0: nothing seen.
            (0, 0, SprtOutcome::Continue),
            // 5 errors in 5: 5 × 0.916291 = 4.581 < 4.605 → not yet.
            (5, 5, SprtOutcome::Continue),
            // 6 errors in 6: 5.498 ≥ 4.605 → failing.
            (6, 6, SprtOutcome::Failing),
            // 75 requests, 10 errors: 10 × 0.916291 − 65 × 0.031091 = 9.163 − 2.021 = 7.142.
            (75, 10, SprtOutcome::Failing),
            // 75 requests, 7 errors: 6.414 − 2.114 = 4.300 < 4.605 → continue.
            (75, 7, SprtOutcome::Continue),
            // 75 requests, 8 errors: 7.330 − 2.083 = 5.247 → failing (the count that detects a
            // 20% canary at 15 s with 5 req/s).
            (75, 8, SprtOutcome::Failing),
            // 96 successes: 96 × −0.031091 = −2.985 > −2.996 → continue.
            (96, 0, SprtOutcome::Continue),
            // 97 successes: −3.016 ≤ −2.996 → healthy.
            (97, 0, SprtOutcome::Healthy),
            // 200 requests, 2 errors (1%): 1.833 − 6.156 = −4.323 → healthy.
            (200, 2, SprtOutcome::Healthy),
            // 200 requests, 7 errors (3.5%): 6.414 − 5.999 = 0.415 → continue (indifference zone).
            (200, 7, SprtOutcome::Continue),
            // 200 requests, 12 errors (6%): 10.996 − 5.845 = 5.151 → failing.
            (200, 12, SprtOutcome::Failing),
        ];
        for (requests, errors, expected) in table {
            assert_eq!(
                test.test(counts(requests, errors)),
                expected,
                "{errors} errors in {requests} requests (LLR {:.3})",
                test.log_likelihood_ratio(counts(requests, errors))
            );
        }
    }

    #[test]
    fn rejects_meaningless_parameters() {
        assert!(Sprt::new(0.05, 0.05, 0.01, 0.05).is_err());
        assert!(Sprt::new(0.06, 0.05, 0.01, 0.05).is_err());
        assert!(Sprt::new(0.0, 0.05, 0.01, 0.05).is_err());
        assert!(Sprt::new(0.02, 1.0, 0.01, 0.05).is_err());
        assert!(Sprt::new(0.02, 0.05, 0.0, 0.05).is_err());
        assert!(Sprt::new(0.02, 0.05, 0.01, 0.5).is_err());
        assert!(Sprt::new(0.02, 0.05, f64::NAN, 0.05).is_err());
    }
}
