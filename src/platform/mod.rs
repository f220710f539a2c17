//! The platform boundary: what deployer needs from Cloud Run, as a trait.
//!
//! [`Platform`] is implemented by [`cloud_run::CloudRunPlatform`] (Google's official
//! `google-cloud-run-v2` client, against Google or the local emulator) and by
//! `memory::MemoryPlatform` (an in-memory fake for tests of the rollout logic, built only for
//! tests: unit tests, and the `test-util` feature the integration tests and benches turn on,
//! never in the binary). Domain code only ever sees the small types below, never the client's generated model.
//!
//! Every write is a [`ServiceUpdate`] applied to the service *as read*, carrying the `etag` of
//! that read: Cloud Run refuses the write when someone else changed the service in between
//! (ABORTED), and deployer reports a conflict instead of overwriting the other writer's change.

pub mod cloud_run;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
mod names;
pub(crate) mod retry;

use std::{collections::BTreeMap, fmt, time::Duration};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use names::{
    check_env_name, check_project, check_region, looks_secret, NameError, RESERVED_ENV_NAMES,
};
pub use retry::{read_revisions, read_service, retry_read, write_guarded, RetryPolicy};

/// A Cloud Run service's full name: `projects/P/locations/R/services/S`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceId {
    /// GCP project (the emulator accepts any).
    pub project: String,
    /// Region.
    pub region: String,
    /// Service name.
    pub name: String,
}

impl ServiceId {
    /// `projects/P/locations/R`.
    pub fn parent(&self) -> String {
        format!("projects/{}/locations/{}", self.project, self.region)
    }

    /// `projects/P/locations/R/services/S`.
    pub fn path(&self) -> String {
        format!("{}/services/{}", self.parent(), self.name)
    }

    /// `projects/P/locations/R/services/S/revisions/REVISION`.
    pub fn revision_path(&self, revision: &str) -> String {
        format!("{}/revisions/{revision}", self.path())
    }
}

/// The most characters of one setting's value shown in a difference.
pub const SHOWN_VALUE_CHARS: usize = 80;

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path())
    }
}

/// One entry of a service's traffic split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficTarget {
    /// The revision, or `None` for "the latest ready revision". deployer never writes `None`:
    /// a split that follows "latest" would hand traffic to a revision nobody verified.
    pub revision: Option<String>,
    /// Percent of traffic, 0 to 100.
    pub percent: u8,
    /// A tag: the revision also gets its own URL (`TAG---...`), whatever its percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl TrafficTarget {
    /// `percent`% to `revision`, no tag.
    pub fn to_revision(revision: &str, percent: u8) -> Self {
        Self {
            revision: Some(revision.to_string()),
            percent,
            tag: None,
        }
    }

    /// Adds a tag.
    pub fn tagged(mut self, tag: &str) -> Self {
        self.tag = Some(tag.to_string());
        self
    }
}

/// Where traffic actually goes (Cloud Run's `trafficStatuses`), with the tag URL if tagged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficStatus {
    /// The revision (resolved: never "latest").
    pub revision: String,
    /// Percent of traffic.
    pub percent: u8,
    /// The tag, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The tag's URL, if tagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// Said when a service has session affinity on: before a deploy's canary (`pipeline`) and by
/// `deployer doctor`. A fact of Cloud Run (affinity is applied before the traffic split), kept
/// here so that both read it from below.
pub const SESSION_AFFINITY_WARNING: &str = "session affinity is on: Cloud Run applies affinity before the traffic split, so the canary's share of requests will be skewed (a client with an affinity cookie stays on the revision that first served it) and each step's analysis rests on fewer or more requests than its percent";

/// A service as read from the platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSnapshot {
    /// Which service.
    pub id: ServiceId,
    /// The concurrency token of this read; writes must carry it.
    pub etag: String,
    /// The service's main URL.
    pub uri: String,
    /// Every URL the platform lists for the service (Cloud Run's `urls`: the `*.run.app`
    /// forms), `uri` among them when the platform lists it.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Spec generation and the generation the platform has acted on.
    pub generation: i64,
    /// See `generation`.
    pub observed_generation: i64,
    /// True while the platform is still acting on the latest change.
    pub reconciling: bool,
    /// True when the service's Ready condition holds.
    pub ready: bool,
    /// The reason when the last change failed (`terminalCondition`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The newest revision created / the newest that became Ready.
    pub latest_created_revision: String,
    /// See `latest_created_revision`.
    pub latest_ready_revision: String,
    /// The split as written (may follow "latest" when empty or written by other tools).
    pub traffic: Vec<TrafficTarget>,
    /// Where traffic really goes.
    pub traffic_statuses: Vec<TrafficStatus>,
    /// Service annotations (deployer keeps its lock and journal here).
    pub annotations: BTreeMap<String, String>,
    /// Service labels.
    pub labels: BTreeMap<String, String>,
    /// The image of the service's current template.
    pub image: String,
    /// The template's session affinity: Cloud Run applies it before the traffic split, so a
    /// canary's share of requests differs from its percent.
    #[serde(default)]
    pub session_affinity: bool,
}

impl ServiceSnapshot {
    /// Revisions receiving traffic, with their percent, largest first.
    pub fn serving(&self) -> Vec<(String, u8)> {
        let mut serving: Vec<(String, u8)> = Vec::new();
        for status in &self.traffic_statuses {
            if status.percent == 0 {
                continue;
            }
            match serving
                .iter_mut()
                .find(|(name, _)| *name == status.revision)
            {
                // Decoding refuses statuses that do not sum to 100 (`traffic_sum`), so this
                // never saturates on a snapshot read from a platform; it never wraps either (an
                // 8-bit wrap once read three 100% statuses as 44%).
                Some((_, percent)) => *percent = percent.saturating_add(status.percent),
                None => serving.push((status.revision.clone(), status.percent)),
            }
        }
        serving.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        serving
    }

    /// The revision with the most traffic (the "stable" revision), if any serves.
    pub fn primary_revision(&self) -> Option<String> {
        self.serving().into_iter().next().map(|(name, _)| name)
    }

    /// True when the split follows "latest" (explicitly, or by being empty): the next revision
    /// that becomes Ready would get this traffic, verified or not.
    pub fn traffic_follows_latest(&self) -> bool {
        self.traffic.is_empty() || self.traffic.iter().any(|target| target.revision.is_none())
    }

    /// Every URL of the service, `uri` first, without duplicates or empty ones.
    pub fn all_urls(&self) -> Vec<String> {
        let mut urls: Vec<String> = Vec::new();
        for url in std::iter::once(&self.uri).chain(&self.urls) {
            if !url.is_empty() && !urls.contains(url) {
                urls.push(url.clone());
            }
        }
        urls
    }

    /// The tag URL of `tag`, if the platform reports one.
    pub fn tag_uri(&self, tag: &str) -> Option<&str> {
        self.traffic_statuses
            .iter()
            .find(|status| status.tag.as_deref() == Some(tag))
            .and_then(|status| status.uri.as_deref())
    }
}

/// The sum of traffic percents, computed wide and checked: `Err` with the sum when a non-empty
/// split does not add up to exactly 100 (Cloud Run's own invariant for `traffic` and
/// `trafficStatuses`).
pub fn traffic_sum(percents: impl IntoIterator<Item = u8>) -> Result<(), u32> {
    let mut count = 0usize;
    let total = percents.into_iter().fold(0u32, |total, percent| {
        count += 1;
        total.saturating_add(u32::from(percent))
    });
    if count == 0 || total == 100 {
        Ok(())
    } else {
        Err(total)
    }
}

/// A revision as read from the platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionSnapshot {
    /// Short name (`hello-00003-abc`).
    pub name: String,
    /// True when the revision's Ready condition holds.
    pub ready: bool,
    /// True while the platform is still starting it.
    pub reconciling: bool,
    /// Why it is not Ready, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The container image, as deployed (by digest when deployer deployed it).
    pub image: String,
    /// Revision labels (deployer writes the commit and its own version here).
    pub labels: BTreeMap<String, String>,
    /// Creation time (RFC 3339), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The settings it runs with (environment, resources, scaling, ...).
    #[serde(default)]
    pub settings: RevisionSettings,
}

/// The settings of a revision that deployer manages: a new revision starts from the stable
/// revision's, then the service file's `[run]` section, then `--env`. `None` means "not set"
/// (the platform's default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionSettings {
    /// Literal environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Environment variables from Secret Manager: name → `projects/P/secrets/S/versions/V`
    /// (references only, never values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// The service account the revision runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// CPU limit (`1`, `2`, `1000m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory limit (`512Mi`, `2Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Concurrent requests per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Minimum instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_instances: Option<u32>,
    /// Maximum instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    /// Request timeout, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

impl RevisionSettings {
    /// What differs from `base`, one line per setting (`env FAIL_RATE: 0.3 → unset`). Secret
    /// references are shown (they are names, not values); values of variables whose names look
    /// secret ([`looks_secret`]) never are, only that they changed; other values are escaped and
    /// shortened to [`SHOWN_VALUE_CHARS`] characters (a 100 KB value was echoed whole).
    pub fn differences(&self, base: &RevisionSettings) -> Vec<String> {
        fn show<T: fmt::Display>(value: Option<&T>) -> String {
            value.map_or_else(|| "unset".to_string(), ToString::to_string)
        }
        fn map_differences(
            kind: &str,
            new: &BTreeMap<String, String>,
            old: &BTreeMap<String, String>,
            lines: &mut Vec<String>,
        ) {
            let names: std::collections::BTreeSet<&String> = new.keys().chain(old.keys()).collect();
            for name in names {
                let (before, after) = (old.get(name), new.get(name));
                if before == after {
                    continue;
                }
                let shown_name = crate::untrusted::escaped(name);
                if kind == "env" && looks_secret(name) {
                    // Never the value, at any verbosity: only whether it is set.
                    let state = match (before, after) {
                        (None, Some(_)) => "set (value not shown)",
                        (Some(_), None) => "removed",
                        _ => "changed (value not shown)",
                    };
                    lines.push(format!("{kind} {shown_name}: {state}"));
                } else {
                    let value = |value: Option<&String>| match value {
                        None => "unset".to_string(),
                        Some(value) => crate::untrusted::escaped(&crate::untrusted::shortened(
                            value,
                            SHOWN_VALUE_CHARS,
                        ))
                        .into_owned(),
                    };
                    lines.push(format!(
                        "{kind} {shown_name}: {} → {}",
                        value(before),
                        value(after)
                    ));
                }
            }
        }
        let mut lines = Vec::new();
        map_differences("env", &self.env, &base.env, &mut lines);
        map_differences("secret", &self.secrets, &base.secrets, &mut lines);
        let mut scalar = |name: &str, before: String, after: String| {
            if before != after {
                lines.push(format!("{name}: {before} → {after}"));
            }
        };
        scalar(
            "service_account",
            show(base.service_account.as_ref()),
            show(self.service_account.as_ref()),
        );
        scalar("cpu", show(base.cpu.as_ref()), show(self.cpu.as_ref()));
        scalar(
            "memory",
            show(base.memory.as_ref()),
            show(self.memory.as_ref()),
        );
        scalar(
            "concurrency",
            show(base.concurrency.as_ref()),
            show(self.concurrency.as_ref()),
        );
        scalar(
            "min_instances",
            show(base.min_instances.as_ref()),
            show(self.min_instances.as_ref()),
        );
        scalar(
            "max_instances",
            show(base.max_instances.as_ref()),
            show(self.max_instances.as_ref()),
        );
        scalar(
            "timeout",
            show(
                base.timeout_seconds
                    .map(|seconds| format!("{seconds}s"))
                    .as_ref(),
            ),
            show(
                self.timeout_seconds
                    .map(|seconds| format!("{seconds}s"))
                    .as_ref(),
            ),
        );
        lines
    }
}

/// A new revision: what changes in the service's template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionSpec {
    /// The revision's name (must start with the service name); chosen by deployer so that the
    /// same write can reference it in the traffic split with 0% and a tag.
    pub name: String,
    /// The image, by digest.
    pub image: String,
    /// Labels of the revision (commit, deployer version).
    pub labels: BTreeMap<String, String>,
    /// The revision whose full template the new one starts from (the stable revision), so that
    /// settings deployer does not manage (volumes, probes, VPC access, ...) carry over too.
    /// `None`: the service's current template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The managed settings, complete: they replace the base's.
    #[serde(default)]
    pub settings: RevisionSettings,
}

/// A change to a service, applied to the service as last read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceUpdate {
    /// A new template (creates a revision).
    pub template: Option<RevisionSpec>,
    /// A new split, replacing the current one entirely.
    pub traffic: Option<Vec<TrafficTarget>>,
    /// Annotations to set (value) or remove (`None`).
    pub annotations: BTreeMap<String, Option<String>>,
}

impl ServiceUpdate {
    /// Only a new traffic split.
    pub fn traffic(split: Vec<TrafficTarget>) -> Self {
        Self {
            traffic: Some(split),
            ..Self::default()
        }
    }

    /// Also sets (or, with `None`, removes) an annotation.
    pub fn with_annotation(mut self, key: &str, value: Option<String>) -> Self {
        self.annotations.insert(key.to_string(), value);
        self
    }

    /// True when `snapshot` already shows everything this update asks for; used after an
    /// ambiguous failure to tell "the write landed" from "it did not".
    pub fn is_visible_in(&self, snapshot: &ServiceSnapshot) -> bool {
        let traffic_visible = self.traffic.as_ref().is_none_or(|split| {
            let mut wanted = split.clone();
            let mut actual = snapshot.traffic.clone();
            wanted.sort_by(|a, b| a.revision.cmp(&b.revision).then(a.tag.cmp(&b.tag)));
            actual.sort_by(|a, b| a.revision.cmp(&b.revision).then(a.tag.cmp(&b.tag)));
            wanted == actual
        });
        let template_visible = self
            .template
            .as_ref()
            .is_none_or(|spec| snapshot.latest_created_revision == spec.name);
        let annotations_visible = self
            .annotations
            .iter()
            .all(|(key, value)| snapshot.annotations.get(key) == value.as_ref());
        traffic_visible && template_visible && annotations_visible
    }
}

/// Errors of the platform. The classification drives the retry policy.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PlatformError {
    /// The service or revision does not exist.
    #[error("`{}` not found", crate::untrusted::escaped(.0))]
    NotFound(String),
    /// The service changed since it was read (stale `etag`): someone else wrote it.
    #[error(
        "`{}` was changed by someone else since it was read (etag mismatch)",
        crate::untrusted::escaped(.0)
    )]
    Conflict(String),
    /// The platform is unavailable or throttling (503, 429, timeout): the request may or may
    /// not have been applied.
    #[error("the platform is unavailable: {0}")]
    Unavailable(String),
    /// The platform is throttling (429, `RESOURCE_EXHAUSTED`): the request was not applied;
    /// try again, not before `retry_after` when the platform said so.
    #[error("the platform is throttling requests: {message}")]
    Throttled {
        /// What the platform said, with the endpoint.
        message: String,
        /// The platform's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The platform refused the request as invalid.
    #[error("the platform refused the request: {0}")]
    Refused(String),
    /// Credentials are missing or lack permission.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The platform answered something that is not a valid answer (not JSON, an HTML page, a
    /// traffic split that does not add up). Never retried: asking again gets the same answer,
    /// and acting on it — on a split read as 44% where it is 300% — would be wrong.
    #[error("malformed answer from the platform: {0}")]
    Malformed(String),
    /// A long-running operation did not finish within its deadline.
    #[error("`{operation}` did not finish within {}", humantime::format_duration(*deadline))]
    Timeout {
        /// What was waited for.
        operation: String,
        /// The deadline.
        deadline: Duration,
    },
}

impl PlatformError {
    /// True when the request may have been applied or may succeed if retried.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PlatformError::Unavailable(_)
                | PlatformError::Throttled { .. }
                | PlatformError::Timeout { .. }
        )
    }

    /// How long the platform asked to wait before the next try (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PlatformError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The same error with `note` added to its message (kinds without a message unchanged).
    pub fn with_note(self, note: &str) -> Self {
        match self {
            PlatformError::Unavailable(message) => {
                PlatformError::Unavailable(format!("{message} ({note})"))
            }
            PlatformError::Throttled {
                message,
                retry_after,
            } => PlatformError::Throttled {
                message: format!("{message} ({note})"),
                retry_after,
            },
            PlatformError::Timeout {
                operation,
                deadline,
            } => PlatformError::Timeout {
                operation: format!("{operation} ({note})"),
                deadline,
            },
            other => other,
        }
    }
}

/// What deployer needs from Cloud Run.
#[async_trait]
pub trait Platform: Send + Sync {
    /// Reads a service; `Ok(None)` when it does not exist.
    async fn service(&self, id: &ServiceId) -> Result<Option<ServiceSnapshot>, PlatformError>;

    /// Lists a service's revisions, newest first.
    async fn revisions(&self, id: &ServiceId) -> Result<Vec<RevisionSnapshot>, PlatformError>;

    /// Reads one revision; `Ok(None)` when it does not exist.
    async fn revision(
        &self,
        id: &ServiceId,
        name: &str,
    ) -> Result<Option<RevisionSnapshot>, PlatformError>;

    /// Creates a service with its first revision (100% of traffic on it once Ready).
    async fn create(
        &self,
        id: &ServiceId,
        spec: &RevisionSpec,
    ) -> Result<ServiceSnapshot, PlatformError>;

    /// Applies `update` to the service, guarded by `etag` (the etag of the read the update was
    /// computed from), and waits for the platform to finish acting on it.
    async fn update(
        &self,
        id: &ServiceId,
        etag: &str,
        update: &ServiceUpdate,
    ) -> Result<ServiceSnapshot, PlatformError>;
}

#[cfg(test)]
mod tests;
