//! The rules for a look: a canary step's ([`canary_look`]) and the post-deploy monitor's
//! ([`monitor_look`]) — the unread looks counted per metric against their error limit, the
//! latest look that read every metric kept for the deadline, the worst metric deciding.

use std::{collections::BTreeMap, time::Duration};

use super::{
    enter_step, hold, observe, roll_back, without_promotion, Action, Phase, Policy, State,
};
use crate::{
    config::InconclusivePolicy,
    rollout::observation::{MetricResult, Observation, Status},
};

/// Counts unread looks per metric; returns the new counts and the first metric over its limit.
fn count_errors(
    policy: &Policy,
    state: &State,
    observation: &Observation,
) -> (BTreeMap<String, u32>, Option<String>) {
    let mut errors = state.errors.clone();
    let mut over = None;
    if observation.metrics.is_empty() {
        // A look that measured nothing counts against an implicit "observation" metric.
        let count = errors.entry("observation".to_string()).or_insert(0);
        *count = count.saturating_add(1);
        if *count > policy.consecutive_error_limit {
            over = Some(format!("{count} looks in a row measured nothing"));
        }
        return (errors, over);
    }
    errors.remove("observation");
    for metric in &observation.metrics {
        if metric.status.is_read() {
            errors.remove(&metric.name);
            continue;
        }
        let count = errors.entry(metric.name.clone()).or_insert(0);
        *count = count.saturating_add(1);
        let limit = metric.error_limit.unwrap_or(policy.consecutive_error_limit);
        if *count > limit && over.is_none() {
            over = Some(format!(
                "{count} unread looks in a row of {}: {}",
                metric.name, metric.detail
            ));
        }
    }
    (errors, over)
}

/// What a look that read every metric found short of a pass; `None` when it did not read them.
fn read_now(observation: &Observation) -> Option<String> {
    observation.all_read().then(|| {
        let short = observation.with_status(|metric| metric.status != Status::Pass);
        if observation.all_pass() {
            String::new()
        } else {
            short
        }
    })
}

fn first_failure(observation: &Observation, service_wide: bool) -> Option<&MetricResult> {
    observation
        .metrics
        .iter()
        .find(|metric| metric.status == Status::Fail && metric.service_wide == service_wide)
}

pub(super) fn canary_look(
    policy: &Policy,
    state: &State,
    observation: &Observation,
    elapsed: Duration,
) -> (State, Action) {
    let (errors, over_limit) = count_errors(policy, state, observation);
    let state = &State {
        elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        errors,
        read: read_now(observation).or_else(|| state.read.clone()),
        ..state.clone()
    };
    if let Some(failure) = first_failure(observation, false) {
        return roll_back(state, failure.summary());
    }
    if let Some(failure) = first_failure(observation, true) {
        // The stable revision fails too: never promote, and do not blame the canary. Rolling
        // back does not fix a service-wide failure, so it happens only with `rollback`.
        return without_promotion(
            policy,
            state,
            format!(
                "the whole service is failing, not only the canary: {}",
                failure.summary()
            ),
        );
    }
    if let Some(why) = over_limit {
        return without_promotion(
            policy,
            state,
            format!("the metrics could not be read at {}%: {why}", state.percent),
        );
    }
    if observation.all_pass() {
        return enter_step(policy, state.step.unwrap_or(0) + 1);
    }
    if elapsed < policy.hold {
        return observe(state, policy.interval);
    }
    let at = format!(
        "no decision within {} at {}%",
        humantime::format_duration(policy.hold),
        state.percent
    );
    // The step is judged on what its looks read: the counts are cumulative over the step, so
    // the latest look that read every metric is what is known; a last look that could not
    // read does not erase it.
    let undecided = match (&state.read, observation.all_read()) {
        // Safety: a step none of whose looks read its metrics is never a pass, whatever the
        // policy.
        (None, _) => {
            return without_promotion(
                policy,
                state,
                format!(
                    "{at}: the metrics could not be read by any look of the step (last look: {}); never promoted without data",
                    observation.unread()
                ),
            )
        }
        (Some(_), true) => observation.with_status(|metric| metric.status != Status::Pass),
        (Some(read), false) => format!(
            "{read} (the latest look that read every metric; the last look could not read: {})",
            observation.unread()
        ),
    };
    match policy.inconclusive {
        InconclusivePolicy::Promote => enter_step(policy, state.step.unwrap_or(0) + 1),
        InconclusivePolicy::Rollback => roll_back(
            state,
            format!("{at}: {undecided} (inconclusive policy: rollback)"),
        ),
        InconclusivePolicy::Hold => hold(
            state,
            format!("{at}: {undecided} (inconclusive policy: hold)"),
        ),
    }
}

/// The monitor's intervals: `monitor_duration` in intervals of `monitor_interval` (at least
/// one).
fn monitor_intervals(policy: &Policy) -> u32 {
    let interval = policy.monitor_interval.as_millis().max(1);
    let count = policy.monitor_duration.as_millis().div_ceil(interval);
    u32::try_from(count).unwrap_or(u32::MAX).max(1)
}

/// A look of the post-deploy monitor. Its intervals are counted from when the promotion's
/// split is in place (the driver's clock starts when that write lands, however long its
/// retries took): interval `k` is due to end at `k × monitor_interval`, and ends only at a
/// look attempted at or after that time — an interval no look reached (a slow look spanning
/// it) is not ended, let alone judged, until one does. An interval is judged when some look in
/// it read every metric; the monitor passes when every interval is judged. A look that ends an
/// interval and cannot read is tried again half an interval later (its window still covers
/// half of the interval): one throttled read does not leave an interval unjudged, two do.
pub(super) fn monitor_look(
    policy: &Policy,
    state: &State,
    observation: &Observation,
    elapsed: Duration,
) -> (State, Action) {
    let (errors, over_limit) = count_errors(policy, state, observation);
    let judged = state.read.is_some() || observation.all_read();
    let due = policy
        .monitor_interval
        .saturating_mul(state.intervals.saturating_add(1));
    let second_look = due.saturating_add(policy.monitor_interval / 2);
    let ends = elapsed >= due && (judged || elapsed >= second_look);
    let look_again = (elapsed >= due && !ends).then(|| second_look.saturating_sub(elapsed));
    let state = &State {
        elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        errors,
        unjudged: state.unjudged.saturating_add(u32::from(ends && !judged)),
        intervals: state.intervals.saturating_add(u32::from(ends)),
        read: if ends {
            None
        } else {
            read_now(observation).or_else(|| state.read.clone())
        },
        ..state.clone()
    };
    if let Some(failure) = observation
        .metrics
        .iter()
        .find(|metric| metric.status == Status::Fail)
    {
        return roll_back(state, format!("post-deploy monitor: {}", failure.summary()));
    }
    if let Some(why) = over_limit {
        return roll_back(
            state,
            format!("post-deploy monitor: the metrics could not be read: {why}"),
        );
    }
    let total = monitor_intervals(policy);
    if let Some(wait) = look_again {
        return observe(state, wait);
    }
    if state.intervals < total {
        // The next look when the next interval is due (from the split, not from this look).
        let next_due = policy
            .monitor_interval
            .saturating_mul(state.intervals.saturating_add(1));
        return observe(state, next_due.saturating_sub(elapsed));
    }
    if state.unjudged == 0 {
        return (state.with_phase(Phase::Promoted), Action::Complete);
    }
    // Safety: the monitor passes only when every interval was judged on data.
    let last = if observation.all_read() {
        "the last look read every metric".to_string()
    } else {
        format!("last look: {}", observation.unread())
    };
    without_promotion(
        policy,
        state,
        format!(
            "post-deploy monitor: {} of {total} interval(s) of {} had no look that read every metric ({last}); not passed",
            state.unjudged,
            humantime::format_duration(policy.monitor_interval),
        ),
    )
}
