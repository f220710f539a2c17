//! Simulation benchmark of the canary analysis, run by `bench/analysis_simulation.sh`; results
//! in `docs/BENCHMARKS.md`.
//!
//! Thousands of simulated rollouts with Poisson traffic and Bernoulli errors: 50 requests/s in
//! total, the canary's share by step, metrics read every `interval`. Each rollout runs the
//! product's own decision path: the real [`SequentialAnalyser`] (the driver's `Analyser`) judges
//! the step's cumulative counts at every look, and the real state machine
//! ([`machine::advance`]) decides, from the identity check to the end of the post-deploy
//! monitor, with the default rollout policy. For comparison, the same traffic is judged by the
//! team's old fixed-threshold rule (every interval's error rate < 5%, 6 checks). It reports how
//! fast a bad canary is rolled back and how often a healthy one is. Seeded: reproducible.
//!
//! Usage: `cargo run --example analysis_simulation -- [--runs N] [--seed S] [--interval SECS]
//! [--rate REQ_PER_S] [--sampled]`. With `--sampled` each look of the product path reads what
//! the bounded Cloud Logging reader reads: each revision's new requests thinned to the fraction
//! `checks::request_log::fraction_for` chooses for its rate over the look's span (the interval
//! plus the reader's overlap) — a Bernoulli thinning of the Poisson traffic, independent of the
//! outcome, judged as it is (docs/ANALYSIS.md, "Sampled request counts"); the old rule is not
//! run then.

use std::{process::ExitCode, time::Duration};

use deployer::{
    checks::RequestCounts,
    config::RolloutConfig,
    rollout::{
        analyser::SequentialAnalyser,
        machine::{self, Action, Input, Phase, Policy, State, Written},
        observation::{MetricResult, Observation, Status},
        ports::Analyser,
    },
};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Checks of the old rule (the team's monitor ran 6 checks).
const FIXED_CHECKS: u32 = 6;
/// The old rule's threshold.
const FIXED_THRESHOLD: f64 = 0.05;

struct Settings {
    runs: usize,
    seed: u64,
    interval: f64,
    /// Requests per second reaching the service.
    rate: f64,
    /// Whether the product path reads a sample, as the Cloud Logging reader does.
    sampled: bool,
}

/// The fraction of a revision's requests the Cloud Logging reader reads per look.
fn fraction(settings: &Settings, revision_rate: f64, wait: f64) -> f64 {
    if settings.sampled {
        deployer::checks::request_log::fraction_for(
            revision_rate,
            wait + deployer::checks::request_log::OVERLAP.as_secs_f64(),
        )
    } else {
        1.0
    }
}

/// One scenario: error rates of the canary and of the stable revision, canary share(s).
struct Scenario {
    name: &'static str,
    canary_error_rate: f64,
    stable_error_rate: f64,
    /// Canary traffic percentages before the promotion.
    steps: &'static [u8],
    /// Every metrics read fails.
    metrics_unavailable: bool,
}

/// How one simulated rollout ended, for one analyser.
#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    /// Rolled back after this many seconds.
    RolledBack(f64),
    /// Stopped as a service-wide failure after this many seconds (no blame on the canary).
    ServiceWide(f64),
    /// Promoted (the old rule: passed its checks).
    Promoted,
    /// Held for a human.
    Held,
}

const fn scenario(
    name: &'static str,
    canary_error_rate: f64,
    stable_error_rate: f64,
    steps: &'static [u8],
) -> Scenario {
    Scenario {
        name,
        canary_error_rate,
        stable_error_rate,
        steps,
        metrics_unavailable: false,
    }
}

fn main() -> ExitCode {
    let settings = match parse_arguments() {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("error: {message}\nusage: analysis_simulation [--runs N] [--seed S] [--interval SECONDS] [--rate REQ_PER_S] [--sampled]");
            return ExitCode::from(2);
        }
    };
    let rollout = RolloutConfig {
        interval: deployer::config::HumanDuration(Duration::from_secs_f64(settings.interval)),
        ..RolloutConfig::default()
    };
    let analyser = match SequentialAnalyser::new(&rollout) {
        Ok(analyser) => analyser,
        Err(error) => {
            eprintln!("error: the default rollout policy is not usable: {error}");
            return ExitCode::from(1);
        }
    };
    println!(
        "Policy (defaults): max_error_rate {}, alpha {}, beta {}, min_requests {}, hold {}, \
         inconclusive {:?}, consecutive_error_limit {}, monitor {} every {}",
        rollout.max_error_rate,
        rollout.alpha,
        rollout.beta,
        rollout.min_requests,
        rollout.hold,
        rollout.inconclusive,
        rollout.consecutive_error_limit,
        rollout.monitor_duration,
        rollout.monitor_interval,
    );
    println!(
        "Traffic: {} req/s Poisson{}; interval {} s; fixed threshold: error rate < \
         {FIXED_THRESHOLD} in each of {FIXED_CHECKS} intervals; {} runs per scenario, seed {}\n",
        settings.rate,
        if settings.sampled {
            ", the product path reading the Cloud Logging reader's sample"
        } else {
            ""
        },
        settings.interval,
        settings.runs,
        settings.seed
    );
    println!(
        "| scenario | analyser | rolled back | service-wide | promoted | held | rolled back ≤ 15 s | \
         time to rollback median / p95 / max |"
    );
    println!("|---|---|---|---|---|---|---|---|");

    let scenarios = [
        scenario(
            "bad canary 20% (4× threshold), stable 1%",
            0.20,
            0.01,
            &[10],
        ),
        scenario("canary at the threshold 5%, stable 1%", 0.05, 0.01, &[10]),
        scenario("healthy canary 1%, stable 1%", 0.01, 0.01, &[10]),
        scenario("healthy canary 2% = stable 2% (= p0)", 0.02, 0.02, &[10]),
        scenario(
            "indifference zone: canary 3.5%, stable 1%",
            0.035,
            0.01,
            &[10],
        ),
        scenario("service-wide: canary 20%, stable 20%", 0.20, 0.20, &[10]),
        scenario(
            "full rollout 5→25→50%, healthy canary 1%",
            0.01,
            0.01,
            &[5, 25, 50],
        ),
        scenario(
            "full rollout 5→25→50%, bad canary 20%",
            0.20,
            0.01,
            &[5, 25, 50],
        ),
        Scenario {
            metrics_unavailable: true,
            ..scenario("metrics unavailable, healthy canary 1%", 0.01, 0.01, &[10])
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
            sequential.push(simulate_product(
                scenario,
                &rollout,
                &analyser,
                &settings,
                &mut StdRng::seed_from_u64(run_seed),
            ));
            if !settings.sampled {
                fixed.push(simulate_fixed(
                    scenario,
                    rollout.hold.get(),
                    &settings,
                    &mut StdRng::seed_from_u64(run_seed),
                ));
            }
        }
        print_row(
            scenario.name,
            "sequential (SPRT), product path",
            &sequential,
        );
        if !settings.sampled {
            print_row(scenario.name, "fixed threshold", &fixed);
        }
    }
    ExitCode::SUCCESS
}

fn parse_arguments() -> Result<Settings, String> {
    let mut settings = Settings {
        runs: 2000,
        seed: 42,
        interval: 5.0,
        rate: 50.0,
        sampled: false,
    };
    let mut arguments = std::env::args().skip(1);
    while let Some(flag) = arguments.next() {
        if flag == "--sampled" {
            settings.sampled = true;
            continue;
        }
        let value = arguments
            .next()
            .ok_or_else(|| format!("`{flag}` needs a value"))?;
        let invalid = || format!("`{flag}`: `{value}` is not a valid number");
        match flag.as_str() {
            "--runs" => settings.runs = value.parse().map_err(|_| invalid())?,
            "--seed" => settings.seed = value.parse().map_err(|_| invalid())?,
            "--interval" => settings.interval = value.parse().map_err(|_| invalid())?,
            "--rate" => settings.rate = value.parse().map_err(|_| invalid())?,
            _ => return Err(format!("unknown argument `{flag}`")),
        }
    }
    if settings.runs == 0
        || !settings.interval.is_finite()
        || settings.interval <= 0.0
        || !settings.rate.is_finite()
        || settings.rate <= 0.0
    {
        return Err("`--runs`, `--interval` and `--rate` must be positive".into());
    }
    Ok(settings)
}

/// One rollout through the product's state machine, the analyser judging each look.
fn simulate_product(
    scenario: &Scenario,
    rollout: &RolloutConfig,
    analyser: &SequentialAnalyser,
    settings: &Settings,
    random: &mut StdRng,
) -> Outcome {
    let mut rollout = rollout.clone();
    rollout.steps = scenario.steps.iter().copied().chain([100]).collect();
    let policy = Policy::new(&rollout, false);
    let (mut state, mut action) =
        machine::advance(&policy, &State::start(), Input::Identity(Ok(())));
    let mut clock = 0.0;
    let mut step_started = 0.0;
    let (mut canary, mut stable) = (RequestCounts::default(), RequestCounts::default());
    loop {
        let input = match action {
            Action::MoveTraffic { .. } => {
                step_started = clock;
                canary = RequestCounts::default();
                stable = RequestCounts::default();
                Input::TrafficMoved
            }
            Action::Observe { wait } => {
                let wait = wait.as_secs_f64();
                clock += wait;
                let share = f64::from(state.percent) / 100.0;
                let monitoring = state.phase == Phase::Monitoring;
                let (canary_rate, stable_rate) =
                    (settings.rate * share, settings.rate * (1.0 - share));
                let window_canary = window(
                    random,
                    canary_rate * wait * fraction(settings, canary_rate, wait),
                    scenario.canary_error_rate,
                );
                let window_stable = window(
                    random,
                    stable_rate * wait * fraction(settings, stable_rate, wait),
                    scenario.stable_error_rate,
                );
                let result = if scenario.metrics_unavailable {
                    MetricResult::new("request errors", Status::Error, "metrics unavailable")
                } else if monitoring {
                    // The monitor judges each interval alone, without a baseline (as the driver).
                    analyser.judge(window_canary, None)
                } else {
                    // A step is judged on its cumulative counts (as the driver reads them).
                    canary = add(canary, window_canary);
                    stable = add(stable, window_stable);
                    analyser.judge(canary, Some(stable))
                };
                Input::Observed {
                    observation: Observation::of(vec![result]),
                    elapsed: Duration::from_secs_f64(clock - step_started),
                }
            }
            Action::Done => break,
            Action::RollBack | Action::Record | Action::Complete | Action::ClearCanary => {
                Input::Wrote(Written::Done)
            }
            Action::VerifyIdentity
            | Action::Validate
            | Action::Confirm { .. }
            | Action::DeployFirst
            | Action::CreateRevision
            | Action::ChooseRecovery => Input::Identity(Ok(())),
        };
        (state, action) = machine::advance(&policy, &state, input);
    }
    let service_wide = state
        .reason
        .as_deref()
        .is_some_and(|reason| reason.contains("whole service"));
    match state.phase {
        Phase::Promoted => Outcome::Promoted,
        Phase::RolledBack if service_wide => Outcome::ServiceWide(clock),
        Phase::RolledBack => Outcome::RolledBack(clock),
        Phase::Held if service_wide => Outcome::ServiceWide(clock),
        _ => Outcome::Held,
    }
}

fn add(total: RequestCounts, window: RequestCounts) -> RequestCounts {
    RequestCounts {
        total: total.total + window.total,
        errors: total.errors + window.errors,
        sample_ppm: None,
    }
}

/// The team's old rule on the same traffic: each step passes after `FIXED_CHECKS` intervals
/// whose error rate is below the threshold (no requests counts as 0%, as the script printed);
/// one interval at or above it rolls back. Unreadable metrics: no check passes, so the step
/// reaches its deadline and holds.
fn simulate_fixed(
    scenario: &Scenario,
    hold: Duration,
    settings: &Settings,
    random: &mut StdRng,
) -> Outcome {
    let interval = settings.interval;
    let mut clock = 0.0;
    for &percent in scenario.steps {
        let share = f64::from(percent) / 100.0;
        let mut passed = 0;
        let mut step_time = 0.0;
        while passed < FIXED_CHECKS {
            if step_time >= hold.as_secs_f64() {
                return Outcome::Held;
            }
            step_time += interval;
            clock += interval;
            let canary = window(
                random,
                settings.rate * share * interval,
                scenario.canary_error_rate,
            );
            let _stable = window(
                random,
                settings.rate * (1.0 - share) * interval,
                scenario.stable_error_rate,
            );
            if scenario.metrics_unavailable {
                continue;
            }
            match canary.error_rate() {
                Some(rate) if rate >= FIXED_THRESHOLD => return Outcome::RolledBack(clock),
                _ => passed += 1,
            }
        }
    }
    Outcome::Promoted
}

/// One interval of one revision: Poisson requests, each an error with probability `error_rate`.
fn window(random: &mut StdRng, mean_requests: f64, error_rate: f64) -> RequestCounts {
    let total = poisson(random, mean_requests);
    let errors = (0..total)
        .filter(|_| random.random_bool(error_rate))
        .count() as u64;
    RequestCounts {
        total,
        errors,
        sample_ppm: None,
    }
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
