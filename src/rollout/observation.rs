//! What one look measured: an [`Observation`] is a list of [`MetricResult`]s (the request-error
//! test, the canary's `/health`, each gated service check), each with a [`Status`] from `Pass`
//! to `Fail`; the worst decides. The driver's reads (`observe`, `gates`, `analyser`) produce
//! them and the state machine ([`super::machine::advance`]) judges them; they are journalled
//! and reported as they are.

use serde::{Deserialize, Serialize};

/// The result of one metric at one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Healthy.
    Pass,
    /// Read; worse than the warning threshold, better than the critical one.
    Warn,
    /// Read; not enough to decide (too little traffic, the test between its boundaries).
    Inconclusive,
    /// The provider answered, with nothing to judge (no row, no series): not a read.
    NoData,
    /// The metric could not be read (provider down, timeout, malformed answer).
    Error,
    /// Read, and failing.
    Fail,
}

impl Status {
    /// True when the metric was read: its value can be judged.
    pub fn is_read(self) -> bool {
        !matches!(self, Status::NoData | Status::Error)
    }

    /// The status as shown to people.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Inconclusive => "INCONCLUSIVE",
            Status::NoData => "NO DATA",
            Status::Error => "ERROR",
            Status::Fail => "FAIL",
        }
    }
}

/// One metric's result at one look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    /// The metric (`request errors`, `canary health`, a check's name).
    pub name: String,
    /// Its status.
    pub status: Status,
    /// The numbers behind it, or what went wrong.
    pub detail: String,
    /// For a `Fail`: the stable revision fails as much (the whole service is failing).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub service_wide: bool,
    /// Unread looks in a row tolerated for this metric (`None`: the rollout's
    /// `consecutive_error_limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_limit: Option<u32>,
}

impl MetricResult {
    /// A result with the rollout's error limit.
    pub fn new(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status,
            detail: detail.into(),
            service_wide: false,
            error_limit: None,
        }
    }

    /// Marks a failure as shared by the stable revision.
    pub fn service_wide(mut self) -> Self {
        self.service_wide = true;
        self
    }

    pub(super) fn summary(&self) -> String {
        format!("{} {}: {}", self.name, self.status.label(), self.detail)
    }
}

/// Everything one look measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// One result per metric.
    pub metrics: Vec<MetricResult>,
}

impl Observation {
    /// An observation of these results.
    pub fn of(metrics: Vec<MetricResult>) -> Self {
        Self { metrics }
    }

    /// The worst status (`Error` for a look that measured nothing).
    pub fn worst(&self) -> Status {
        self.metrics
            .iter()
            .map(|metric| metric.status)
            .max()
            .unwrap_or(Status::Error)
    }

    /// True when every metric was read (and there was at least one).
    pub fn all_read(&self) -> bool {
        !self.metrics.is_empty() && self.metrics.iter().all(|metric| metric.status.is_read())
    }

    /// True when every metric passed (and there was at least one).
    pub fn all_pass(&self) -> bool {
        !self.metrics.is_empty()
            && self
                .metrics
                .iter()
                .all(|metric| metric.status == Status::Pass)
    }

    pub(super) fn with_status(&self, keep: impl Fn(&MetricResult) -> bool) -> String {
        let parts: Vec<String> = self
            .metrics
            .iter()
            .filter(|metric| keep(metric))
            .map(MetricResult::summary)
            .collect();
        if parts.is_empty() {
            "no metric was measured".to_string()
        } else {
            parts.join("; ")
        }
    }

    pub(super) fn unread(&self) -> String {
        self.with_status(|metric| !metric.status.is_read())
    }
}
