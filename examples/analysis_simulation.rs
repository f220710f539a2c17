//! Simulation benchmark of the canary analysis (`src/analysis/`), run by
//! `bench/analysis_simulation.sh`; results in `docs/BENCHMARKS.md`.
//!
//! Thousands of simulated canary steps with Poisson traffic and Bernoulli errors: 50 requests/s
//! in total, 10% to the canary, metrics read every `interval`. Each step is judged twice on the
//! same traffic, by the sequential analysis with the default rollout policy and by the old
//! fixed-threshold rule (every interval's error rate < 5%, 6 checks). It reports how fast a bad
//! canary is rolled back and how often a healthy one is. The random generator is seeded, so a
//! run is reproducible.
//!
//! Usage: `cargo run --example analysis_simulation -- [--runs N] [--seed S] [--interval SECS]`

use std::{process::ExitCode, time::Duration};

use deployer::{
    analysis::{
        decide, decide_at_deadline, AnalysisPolicy, CanaryAnalysis, Counts, Decision, FailureCause,
        FixedThresholdAnalysis, Measurement, Observation, Phase, Verdict,
    },
    config::RolloutConfig,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Requests per second reaching the service.
const TOTAL_RATE: f64 = 50.0;
/// Checks of the old rule (the team's monitor ran 6 checks).
const FIXED_CHECKS: u32 = 6;

struct Settings {
    runs: usize,
    seed: u64,
    interval: f64,
}

/// One scenario: error rates of the canary and of the stable revision, canary share(s).
struct Scenario {
    name: &'static str,
    canary_error_rate: f64,
    stable_error_rate: f64,
    /// Canary traffic percentages, one analysed step each (a full rollout has several).
    steps: &'static [f64],
}

/// How one simulated step or rollout ended, for one analyser.
#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    /// Rolled back after this many seconds.
    RolledBack(f64),
    /// Reported as a service-wide failure after this many seconds (no blame on the canary).
    ServiceWide(f64),
    /// Passed (promoted to the next step or fully).
    Promoted,
    /// Stopped on hold.
    Held,
}

fn main() -> ExitCode {
    let settings = match parse_arguments() {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("error: {message}\nusage: analysis_simulation [--runs N] [--seed S] [--interval SECONDS]");
            return ExitCode::from(2);
        }
    };
    let rollout = RolloutConfig::default();
    let policy = AnalysisPolicy::from(&rollout);
    let hold = rollout.hold.get();
    println!(
        "Policy: max_error_rate {:.3} (p1), healthy rate {:.3} (p0), alpha {}, beta {}, min_requests {}, \
         hold {}, inconclusive {:?}",
        policy.max_error_rate,
        policy.healthy_error_rate,
        policy.alpha,
        policy.beta,
        policy.min_requests,
        rollout.hold,
        policy.inconclusive,
    );
    println!(
        "Traffic: {TOTAL_RATE} req/s Poisson; interval {} s; fixed threshold: error rate < {} in each \
         of {FIXED_CHECKS} intervals; {} runs per scenario, seed {}\n",
        settings.interval, policy.max_error_rate, settings.runs, settings.seed
    );
    println!(
        "| scenario | analyser | rolled back | service-wide | promoted | held | rolled back ≤ 15 s | \
         time to rollback median / p95 / max |"
    );
    println!("|---|---|---|---|---|---|---|---|");

    let scenarios = [
        Scenario {
            name: "bad canary 20% (4× threshold), stable 1%",
            canary_error_rate: 0.20,
            stable_error_rate: 0.01,
            steps: &[10.0],
        },
        Scenario {
            name: "canary at the threshold 5%, stable 1%",
            canary_error_rate: 0.05,
            stable_error_rate: 0.01,
            steps: &[10.0],
        },
        Scenario {
            name: "healthy canary 1%, stable 1%",
            canary_error_rate: 0.01,
            stable_error_rate: 0.01,
            steps: &[10.0],
        },
        Scenario {
            name: "healthy canary 2% = stable 2% (= p0)",
            canary_error_rate: 0.02,
            stable_error_rate: 0.02,
            steps: &[10.0],
        },
        Scenario {
            name: "indifference zone: canary 3.5%, stable 1%",
            canary_error_rate: 0.035,
            stable_error_rate: 0.01,
            steps: &[10.0],
        },
        Scenario {
            name: "service-wide: canary 20%, stable 20%",
            canary_error_rate: 0.20,
            stable_error_rate: 0.20,
            steps: &[10.0],
        },
        Scenario {
            name: "full rollout 5→25→50%, healthy canary 1%",
            canary_error_rate: 0.01,
            stable_error_rate: 0.01,
            steps: &[5.0, 25.0, 50.0],
        },
        Scenario {
            name: "full rollout 5→25→50%, bad canary 20%",
            canary_error_rate: 0.20,
            stable_error_rate: 0.01,
            steps: &[5.0, 25.0, 50.0],
        },
    ];
    for (index, scenario) in scenarios.iter().enumerate() {
        // One seed stream per scenario, so adding a scenario does not change the others.
        let mut seeds = StdRng::seed_from_u64(settings.seed.wrapping_add(index as u64));
        let mut sequential = Vec::with_capacity(settings.runs);
        let mut fixed = Vec::with_capacity(settings.runs);
        for _ in 0..settings.runs {
            // Both analysers get the same seed: the same traffic, as long as both are looking.
            let run_seed = seeds.random::<u64>();
            sequential.push(simulate_rollout(
                scenario,
                hold,
                settings.interval,
                &mut StdRng::seed_from_u64(run_seed),
                || Sequential {
                    analysis: CanaryAnalysis::new(policy).expect("the default policy is valid"),
                    policy,
                },
            ));
            fixed.push(simulate_rollout(
                scenario,
                hold,
                settings.interval,
                &mut StdRng::seed_from_u64(run_seed),
                || {
                    Fixed(FixedThresholdAnalysis::new(
                        policy.max_error_rate,
                        FIXED_CHECKS,
                        policy.consecutive_error_limit,
                    ))
                },
            ));
        }
        print_row(scenario.name, "sequential (SPRT)", &sequential);
        print_row(scenario.name, "fixed threshold", &fixed);
    }
    ExitCode::SUCCESS
}

fn parse_arguments() -> Result<Settings, String> {
    let mut settings = Settings {
        runs: 2000,
        seed: 42,
        interval: 5.0,
    };
    let mut arguments = std::env::args().skip(1);
    while let Some(flag) = arguments.next() {
        let value = arguments
            .next()
            .ok_or_else(|| format!("`{flag}` needs a value"))?;
        let invalid = || format!("`{flag}`: `{value}` is not a valid number");
        match flag.as_str() {
            "--runs" => settings.runs = value.parse().map_err(|_| invalid())?,
            "--seed" => settings.seed = value.parse().map_err(|_| invalid())?,
            "--interval" => settings.interval = value.parse().map_err(|_| invalid())?,
            _ => return Err(format!("unknown argument `{flag}`")),
        }
    }
    if settings.runs == 0 || !settings.interval.is_finite() || settings.interval <= 0.0 {
        return Err("`--runs` and `--interval` must be positive".into());
    }
    Ok(settings)
}

/// How a step ended for an analyser that stops the rollout.
#[derive(Clone, Copy)]
enum Stop {
    RolledBack,
    ServiceWide,
    Held,
}

/// An analyser judging one step, one look at a time.
trait Judge {
    /// `None`: keep looking; `Some(None)`: step passed; `Some(Some(stop))`: rollout stopped.
    fn look(&mut self, canary: Counts, stable: Counts, at_deadline: bool) -> Option<Option<Stop>>;
}

/// The sequential analysis with the driver's decision rules.
struct Sequential {
    analysis: CanaryAnalysis,
    policy: AnalysisPolicy,
}

impl Judge for Sequential {
    fn look(&mut self, canary: Counts, stable: Counts, at_deadline: bool) -> Option<Option<Stop>> {
        let assessment = self.analysis.record(Measurement::Counts(Observation {
            canary,
            stable: Some(stable),
        }));
        let decision = if at_deadline {
            Some(decide_at_deadline(&assessment, &self.policy))
        } else {
            decide(&assessment, &self.policy)
        }?;
        let service_wide = assessment.verdict
            == Verdict::Fail {
                cause: FailureCause::ServiceWide,
            };
        Some(match decision {
            Decision::Continue => None,
            _ if service_wide => Some(Stop::ServiceWide),
            Decision::Rollback => Some(Stop::RolledBack),
            Decision::Hold => Some(Stop::Held),
        })
    }
}

/// The old rule.
struct Fixed(FixedThresholdAnalysis);

impl Judge for Fixed {
    fn look(&mut self, canary: Counts, _stable: Counts, at_deadline: bool) -> Option<Option<Stop>> {
        match self.0.record(Some(canary)) {
            Phase::Successful => Some(None),
            phase if phase.is_final() => Some(Some(Stop::RolledBack)),
            _ if at_deadline => Some(Some(Stop::Held)),
            _ => None,
        }
    }
}

/// Simulates one rollout through the scenario's steps, one fresh judge per step.
fn simulate_rollout<J: Judge>(
    scenario: &Scenario,
    hold: Duration,
    interval: f64,
    random: &mut StdRng,
    mut new_judge: impl FnMut() -> J,
) -> Outcome {
    let mut elapsed = 0.0;
    for &percent in scenario.steps {
        let canary_rate = TOTAL_RATE * percent / 100.0;
        let stable_rate = TOTAL_RATE - canary_rate;
        let mut judge = new_judge();
        let mut step_time = 0.0;
        loop {
            step_time += interval;
            let at_deadline = step_time >= hold.as_secs_f64();
            let canary = window(random, canary_rate * interval, scenario.canary_error_rate);
            let stable = window(random, stable_rate * interval, scenario.stable_error_rate);
            match judge.look(canary, stable, at_deadline) {
                None if !at_deadline => continue,
                None | Some(None) => break,
                Some(Some(Stop::RolledBack)) => return Outcome::RolledBack(elapsed + step_time),
                Some(Some(Stop::ServiceWide)) => return Outcome::ServiceWide(elapsed + step_time),
                Some(Some(Stop::Held)) => return Outcome::Held,
            }
        }
        elapsed += step_time;
    }
    Outcome::Promoted
}

/// One interval of one revision: Poisson requests, each an error with probability `error_rate`.
fn window(random: &mut StdRng, mean_requests: f64, error_rate: f64) -> Counts {
    let requests = poisson(random, mean_requests);
    let errors = (0..requests)
        .filter(|_| random.random_bool(error_rate))
        .count() as u64;
    Counts::new(requests, errors).expect("errors are drawn from the requests")
}

/// A Poisson draw (Knuth's method on chunks of mean ≤ 30, summed: Poisson means add up, and
/// small chunks keep `exp(-mean)` far from underflow).
fn poisson(random: &mut StdRng, mean: f64) -> u64 {
    let mut remaining = mean;
    let mut total = 0;
    while remaining > 0.0 {
        let chunk = remaining.min(30.0);
        remaining -= chunk;
        let limit = (-chunk).exp();
        let mut product: f64 = random.random();
        while product > limit {
            total += 1;
            product *= random.random::<f64>();
        }
    }
    total
}

fn print_row(scenario: &str, analyser: &str, outcomes: &[Outcome]) {
    let runs = outcomes.len() as f64;
    let fraction = |keep: &dyn Fn(&Outcome) -> bool| {
        let count = outcomes.iter().filter(|outcome| keep(outcome)).count();
        format!("{:.2}%", 100.0 * count as f64 / runs)
    };
    let mut times: Vec<f64> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Outcome::RolledBack(seconds) => Some(*seconds),
            _ => None,
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let within = times.iter().filter(|&&seconds| seconds <= 15.0).count();
    let timing = if times.is_empty() {
        "—".to_string()
    } else {
        // p95 over all runs: a run never rolled back counts as "never" (∞).
        let p95_index = ((0.95 * runs).ceil() as usize).saturating_sub(1);
        let p95 = times
            .get(p95_index)
            .map_or("never".to_string(), |seconds| format!("{seconds:.0} s"));
        format!(
            "{:.0} s / {p95} / {:.0} s",
            times[(times.len() - 1) / 2],
            times[times.len() - 1]
        )
    };
    println!(
        "| {scenario} | {analyser} | {} | {} | {} | {} | {:.2}% | {timing} |",
        fraction(&|outcome| matches!(outcome, Outcome::RolledBack(_))),
        fraction(&|outcome| matches!(outcome, Outcome::ServiceWide(_))),
        fraction(&|outcome| *outcome == Outcome::Promoted),
        fraction(&|outcome| *outcome == Outcome::Held),
        100.0 * within as f64 / runs,
    );
}
