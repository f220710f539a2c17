//! Delivery metrics from the release history: how often a service ships, how often a change
//! fails, how long it takes to restore, and how long a commit waits to reach production.
//!
//! Pure functions over [`History`]: the same numbers from any machine, since the history lives
//! on the platform. Definitions (docs/ROLLOUT.md, "Delivery metrics"):
//!
//! - **deployments**: rollouts that ended promoted, plus held canaries promoted by hand;
//!   **deployment frequency** is deployments per day over the window;
//! - **change failure rate**: rollouts that failed — rolled back, stopped before traffic,
//!   rollback failed, or later aborted or emergency-rolled-back from — over all rollouts;
//! - **time to restore**: from the start of a failure to the next healthy state. An automatic
//!   rollback restores itself (the rollout's start to the rollback); an emergency rollback
//!   restores what was promoted before it (that promotion to the emergency rollback); a failed
//!   rollback lasts until the next change that leaves a healthy revision serving (a promotion,
//!   an emergency rollback, a rollback or an abort). One still unresolved is counted as open;
//! - **lead time for changes**: the commit's time to its promotion, for promotions whose commit
//!   time is known.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::{Entry, History, Kind, Outcome};

/// Durations summarised: how many, the median and the longest.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Spread {
    /// How many were measured.
    pub count: usize,
    /// The median, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_seconds: Option<i64>,
    /// The longest, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_seconds: Option<i64>,
}

impl Spread {
    fn of(mut seconds: Vec<i64>) -> Self {
        seconds.sort_unstable();
        let median = match seconds.len() {
            0 => None,
            n if n % 2 == 1 => Some(seconds[n / 2]),
            n => Some((seconds[n / 2 - 1] + seconds[n / 2]) / 2),
        };
        Self {
            count: seconds.len(),
            median_seconds: median,
            max_seconds: seconds.last().copied(),
        }
    }
}

/// The delivery metrics of one service or of several, over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryMetrics {
    /// The window's start.
    pub since: DateTime<Utc>,
    /// The window's end.
    pub until: DateTime<Utc>,
    /// Rollouts started in the window (every `deploy` that reached the platform).
    pub rollouts: usize,
    /// Changes that reached 100% (promoted rollouts and held canaries promoted by hand).
    pub deployments: usize,
    /// Deployments per day.
    pub deployments_per_day: f64,
    /// Rollouts that failed (see the module doc).
    pub failed: usize,
    /// `failed / rollouts`; none without rollouts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_failure_rate: Option<f64>,
    /// Emergency rollbacks in the window.
    pub emergency_rollbacks: usize,
    /// Time to restore, over the failures that were restored.
    pub time_to_restore: Spread,
    /// Failures not restored yet.
    pub open_failures: usize,
    /// Lead time for changes (commit → promoted).
    pub lead_time: Spread,
    /// When at least one history was compacted past the window's start, the oldest entry
    /// still kept: the counts cover only the time after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub covered_since: Option<DateTime<Utc>>,
}

fn promoted(entry: &Entry) -> bool {
    matches!(
        entry.outcome,
        Outcome::Promoted | Outcome::PromotedUnmonitored
    )
}

/// True when a later entry failed this rollout's revision (aborted it, or moved traffic away
/// from it in an emergency).
fn failed_later(later: &[Entry], revision: &str) -> bool {
    later.iter().any(|entry| match entry.outcome {
        Outcome::Aborted => entry.revision == revision,
        Outcome::Restored => entry.from.iter().any(|name| name == revision),
        _ => false,
    })
}

/// True when this entry left a healthy revision serving.
fn restores(entry: &Entry) -> bool {
    matches!(
        entry.outcome,
        Outcome::Promoted
            | Outcome::PromotedUnmonitored
            | Outcome::Restored
            | Outcome::RolledBack
            | Outcome::Aborted
    )
}

/// The metrics of `histories` (one per service) over `[since, until]`.
pub fn delivery(
    histories: &[&History],
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> DeliveryMetrics {
    let mut metrics = DeliveryMetrics {
        since,
        until,
        rollouts: 0,
        deployments: 0,
        deployments_per_day: 0.0,
        failed: 0,
        change_failure_rate: None,
        emergency_rollbacks: 0,
        time_to_restore: Spread::default(),
        open_failures: 0,
        lead_time: Spread::default(),
        covered_since: None,
    };
    let mut restore = Vec::new();
    let mut lead = Vec::new();
    for history in histories {
        let entries = &history.entries;
        if history.compacted > 0 {
            if let Some(oldest) = entries.first().filter(|oldest| oldest.started > since) {
                metrics.covered_since = Some(
                    metrics
                        .covered_since
                        .map_or(oldest.started, |covered| covered.max(oldest.started)),
                );
            }
        }
        for (index, entry) in entries.iter().enumerate() {
            if entry.at < since || entry.at > until {
                continue;
            }
            let later = &entries[index + 1..];
            if entry.kind == Kind::Rollout {
                metrics.rollouts += 1;
                if entry.outcome.failed()
                    || (promoted(entry) && failed_later(later, &entry.revision))
                {
                    metrics.failed += 1;
                }
            }
            if promoted(entry) && entry.kind != Kind::EmergencyRollback {
                metrics.deployments += 1;
                if let Some(commit_time) = entry.commit_time {
                    lead.push((entry.at - commit_time).num_seconds().max(0));
                }
            }
            let failure_start = match entry.outcome {
                Outcome::RolledBack => Some((entry.started, Some(entry.at))),
                Outcome::Restored => {
                    metrics.emergency_rollbacks += 1;
                    // Production was bad since what it rolled back from was promoted.
                    let promoted_at = entry
                        .from
                        .iter()
                        .filter_map(|name| {
                            entries[..index]
                                .iter()
                                .rev()
                                .find(|earlier| earlier.revision == *name && promoted(earlier))
                                .map(|earlier| earlier.at)
                        })
                        .min();
                    Some((promoted_at.unwrap_or(entry.started), Some(entry.at)))
                }
                Outcome::RollbackFailed => Some((
                    entry.started,
                    later.iter().find(|next| restores(next)).map(|next| next.at),
                )),
                _ => None,
            };
            match failure_start {
                Some((start, Some(end))) => restore.push((end - start).num_seconds().max(0)),
                Some((_, None)) => metrics.open_failures += 1,
                None => {}
            }
        }
    }
    let days = (until - since).max(Duration::seconds(1)).num_seconds() as f64 / 86_400.0;
    metrics.deployments_per_day = metrics.deployments as f64 / days;
    metrics.change_failure_rate =
        (metrics.rollouts > 0).then(|| metrics.failed as f64 / metrics.rollouts as f64);
    metrics.time_to_restore = Spread::of(restore);
    metrics.lead_time = Spread::of(lead);
    metrics
}
