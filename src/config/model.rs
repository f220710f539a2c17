//! The service-definition model: what one `services/*.toml` file says.
//!
//! Every struct denies unknown keys so that a typo (`max_eror_rate`) is an error that names the
//! file, line and column and suggests the closest key, instead of a setting silently ignored in
//! production. Defaults are the numbers of the team's current scripts (monitor 30 minutes, a check
//! every 5 minutes, error rate under 5%), so a minimal file is a safe file.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::HumanDuration;

/// One service, as written in `services/NAME.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The service's name in deployer commands (`deployer deploy NAME`). Lowercase letters,
    /// digits and `-`, starting with a letter (Cloud Run's own rule for service names).
    pub name: String,
    /// One line saying what the service does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Path of the service's runbook, relative to the repository root and inside it.
    pub runbook: String,
    /// Where the service runs.
    pub target: Target,
    /// Where its images are pushed.
    pub image: ImageConfig,
    /// How its image is built.
    #[serde(default)]
    pub build: BuildConfig,
    /// Settings of new revisions (environment, secrets, resources, scaling). Absent keys keep
    /// the stable revision's value.
    #[serde(default, skip_serializing_if = "RunConfig::is_empty")]
    pub run: RunConfig,
    /// The health endpoint and the identity it reports.
    #[serde(default)]
    pub health: HealthConfig,
    /// Options of the preflight checklist.
    #[serde(default)]
    pub preflight: PreflightConfig,
    /// The rollout policy: canary steps, analysis and the post-deploy monitor.
    #[serde(default)]
    pub rollout: RolloutConfig,
    /// Service-specific checks (data quality, metrics, logs).
    #[serde(default, rename = "checks", skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckConfig>,
    /// Where alerts go.
    #[serde(default)]
    pub notifications: NotificationConfig,
    /// Drift thresholds: how long a service-relevant commit may stay undeployed.
    #[serde(default)]
    pub drift: DriftConfig,
    /// Pub/Sub topics this service publishes to (topic ids, in the target's project).
    /// Written before the first `[table]` of the file, like `name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publishes: Vec<String>,
    /// Pub/Sub subscriptions this service consumes (`[[subscriptions]]`): the declared event
    /// wiring that `deployer graph --check` and `health` compare with the live project.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<SubscriptionConfig>,
    /// Cloud Scheduler jobs that call this service (`[[schedules]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleConfig>,
    /// Services (by `name`) that a deploy of several services promotes before this one
    /// starts (`deployer deploy a b`, `--all`, `--changed`); when one of them fails, this one is
    /// not started. Written before the first `[table]` of the file, like `name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

/// A Pub/Sub subscription the service consumes (`[[subscriptions]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// The subscription id (`projects/PROJECT/subscriptions/NAME`, in the target's project).
    pub name: String,
    /// The topic id it subscribes to (in the target's project).
    pub topic: String,
    /// Push delivery to this service's own URL + this path (e.g. `/pubsub`). Absent: a pull
    /// subscription, which must push nowhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_path: Option<String>,
}

/// A Cloud Scheduler job that calls the service (`[[schedules]]`): an HTTP target on the
/// service's own URL + `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// The job id (`projects/PROJECT/locations/REGION/jobs/NAME`, in the target's project and
    /// region).
    pub name: String,
    /// The unix-cron schedule, e.g. `0 */6 * * *`.
    pub schedule: String,
    /// The time zone the schedule is read in (a tz database name) [default: `Etc/UTC`].
    #[serde(default = "defaults::time_zone")]
    pub time_zone: String,
    /// The path on the service's URL the job calls, e.g. `/start`.
    pub path: String,
}

/// Where a service runs: Cloud Run in a GCP project, or the local emulator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Target {
    /// Google Cloud Run. `project` and `region` can be overridden by `--project`/`--region` or
    /// the environment, like gcloud.
    CloudRun {
        /// GCP project id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        project: Option<String>,
        /// Cloud Run region, e.g. `us-west2`. Not with `regions`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        /// Several regions, the canary region first, e.g. `["us-west2", "us-east1"]`: the first
        /// gets the full guarded rollout, the others follow one after another once it is
        /// promoted (docs/ROLLOUT.md, "Multi-region services"). Not with `region`; `--region`
        /// picks one of them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        regions: Option<Vec<String>>,
        /// Cloud Run service name; defaults to the service's `name`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<String>,
    },
    /// The local Cloud Run emulator (`deployer emulator`).
    Local {
        /// Cloud Run service name in the emulator; defaults to the service's `name`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<String>,
        /// Emulator locations, the canary region first, as `target.regions` of Cloud Run
        /// targets [default: the one location `local`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        regions: Option<Vec<String>>,
    },
}

/// The image repository the service's images are pushed to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Repository without tag, e.g. `us-west2-docker.pkg.dev/PROJECT/REPO/NAME` or
    /// `127.0.0.1:5000/hello`.
    pub repository: String,
}

/// How the image is built (through the Docker Engine API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// Build context, relative to the repository root. Default: the repository root, as the
    /// team's script did.
    #[serde(default = "defaults::context")]
    pub context: String,
    /// Dockerfile, relative to the repository root and inside it.
    #[serde(default = "defaults::dockerfile")]
    pub dockerfile: String,
    /// Build arguments (`--build-arg`). `BUILD_COMMIT` is always added by deployer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
    /// A shell command run before the build, from the repository root, with `DEPLOYER_SERVICE`,
    /// `DEPLOYER_COMMIT` and `DEPLOYER_IMAGE` set. A non-zero exit fails the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_build: Option<String>,
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            context: defaults::context(),
            dockerfile: defaults::dockerfile(),
            args: BTreeMap::new(),
            pre_build: None,
        }
    }
}

/// Settings of the revisions deployer creates. A new revision starts from the **stable
/// revision's** settings (the one serving), then these, then `deploy --env`: nothing of a
/// rolled-back revision is carried over. Absent keys keep the stable revision's value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Environment variables with literal values (set or replaced; others are kept).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Environment variables from Secret Manager: `NAME = "projects/P/secrets/S/versions/V"`.
    /// References only: a secret's value is never written in a service file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// The service account the revision runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// CPU limit, e.g. `"1"`, `"2"`, `"1000m"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory limit, e.g. `"512Mi"`, `"2Gi"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Concurrent requests per instance (1 to 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Minimum instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_instances: Option<u32>,
    /// Maximum instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    /// Request timeout (at most 60 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

impl RunConfig {
    /// True when the section sets nothing.
    pub fn is_empty(&self) -> bool {
        self == &RunConfig::default()
    }

    /// The settings of a new revision: `base` (the stable revision's), overridden by this
    /// section, then by `env` (`deploy --env`).
    pub fn apply(
        &self,
        base: &crate::platform::RevisionSettings,
        env: &BTreeMap<String, String>,
    ) -> crate::platform::RevisionSettings {
        let mut settings = base.clone();
        for (name, value) in self.env.iter().chain(env) {
            settings.secrets.remove(name);
            settings.env.insert(name.clone(), value.clone());
        }
        for (name, reference) in &self.secrets {
            if !env.contains_key(name) {
                settings.env.remove(name);
                settings.secrets.insert(name.clone(), reference.clone());
            }
        }
        fn keep<T: Clone>(value: &Option<T>, base: &Option<T>) -> Option<T> {
            value.clone().or_else(|| base.clone())
        }
        settings.service_account = keep(&self.service_account, &base.service_account);
        settings.cpu = keep(&self.cpu, &base.cpu);
        settings.memory = keep(&self.memory, &base.memory);
        settings.concurrency = keep(&self.concurrency, &base.concurrency);
        settings.min_instances = keep(&self.min_instances, &base.min_instances);
        settings.max_instances = keep(&self.max_instances, &base.max_instances);
        settings.timeout_seconds = self
            .timeout
            .map(|timeout| timeout.get().as_secs())
            .or(base.timeout_seconds);
        settings
    }
}

/// The health endpoint, and which JSON fields of its answer carry the service's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Path of the health endpoint (starting with `/`, no control characters).
    #[serde(default = "defaults::health_path")]
    pub path: String,
    /// JSON field (dotted path) of the health answer holding the service name.
    #[serde(default = "defaults::service_field")]
    pub service_field: String,
    /// JSON field (dotted path) of the health answer holding the git commit.
    #[serde(default = "defaults::commit_field")]
    pub commit_field: String,
    /// Time limit of one health request: 1s to 5 minutes.
    #[serde(default = "defaults::health_timeout")]
    pub timeout: HumanDuration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            path: defaults::health_path(),
            service_field: defaults::service_field(),
            commit_field: defaults::commit_field(),
            timeout: defaults::health_timeout(),
        }
    }
}

/// Options of the 8-step preflight checklist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PreflightConfig {
    /// The branch deploys must come from.
    #[serde(default = "defaults::branch")]
    pub branch: String,
    /// The git remote to compare with.
    #[serde(default = "defaults::remote")]
    pub remote: String,
    /// The service's test command, run from the repository root by `sh -c`. Unset: the test step
    /// is skipped with that reason recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_command: Option<String>,
    /// Time limit of the test command: 1s to 1 day.
    #[serde(default = "defaults::test_timeout")]
    pub test_timeout: HumanDuration,
    /// Globs (relative to the repository root) of schema files: a change to one needs an
    /// explicit confirmation, because it can make a rollback unsafe.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schema_paths: Vec<String>,
    /// Globs of the service's own source paths, used by drift detection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

impl Default for PreflightConfig {
    fn default() -> Self {
        Self {
            branch: defaults::branch(),
            remote: defaults::remote(),
            test_command: None,
            test_timeout: defaults::test_timeout(),
            schema_paths: Vec::new(),
            paths: Vec::new(),
        }
    }
}

/// What to do when a canary step reaches its deadline without a statistical decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum InconclusivePolicy {
    /// Keep the current split and stop, for a human to decide (nothing is promoted).
    Hold,
    /// Move all traffic back to the previous revision.
    Rollback,
    /// Proceed to the next step as if the step had passed.
    Promote,
}

/// The rollout policy: canary steps, the sequential analysis and the post-deploy monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutConfig {
    /// Canary traffic percentages, strictly ascending, ending at 100.
    #[serde(default = "defaults::steps")]
    pub steps: Vec<u8>,
    /// Longest time spent at one step waiting for a decision: 1s to 7 days.
    #[serde(default = "defaults::hold")]
    pub hold: HumanDuration,
    /// How often metrics are read during a step: 1s to 1 day, and at most `hold`.
    #[serde(default = "defaults::interval")]
    pub interval: HumanDuration,
    /// Error rate (fraction of 5xx responses) at which a canary is failing, in `(0, 1)`: the
    /// analysis rolls back a canary at this rate or above with probability at least `1 - beta`,
    /// and one at 40% of it or below with probability at most `alpha` (`docs/ANALYSIS.md`).
    #[serde(default = "defaults::max_error_rate")]
    pub max_error_rate: f64,
    /// Fewest canary requests before the analysis may decide anything.
    #[serde(default = "defaults::min_requests")]
    pub min_requests: u64,
    /// Bound on the probability of rolling back a healthy canary (false rollback), per step, in
    /// `(0, 0.5)`.
    #[serde(default = "defaults::alpha")]
    pub alpha: f64,
    /// Bound on the probability of passing a failing canary step (miss), in `(0, 0.5)`.
    #[serde(default = "defaults::beta")]
    pub beta: f64,
    /// What to do when a step reaches `hold` without a decision.
    #[serde(default = "defaults::inconclusive")]
    pub inconclusive: InconclusivePolicy,
    /// How long the post-deploy monitor watches the promoted revision: 0s (no monitor) to 7
    /// days.
    #[serde(default = "defaults::monitor_duration")]
    pub monitor_duration: HumanDuration,
    /// How often the post-deploy monitor checks: 1s to 1 day, and at most `monitor_duration`.
    #[serde(default = "defaults::monitor_interval")]
    pub monitor_interval: HumanDuration,
    /// Consecutive measurement errors tolerated before the analysis reports an error.
    #[serde(default = "defaults::consecutive_error_limit")]
    pub consecutive_error_limit: u32,
    /// Where per-revision request and 5xx counts come from: `cloud-logging` (request logs,
    /// seconds of delay; the default, `docs/ANALYSIS.md` says why), `cloud-monitoring`
    /// (`request_count`, minutes of ingestion delay on Google Cloud) or `prometheus`.
    #[serde(default = "defaults::request_metrics")]
    pub request_metrics: RequestMetricsSource,
}

/// Where the rollout reads per-revision request counts (`rollout.request_metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RequestMetricsSource {
    /// Cloud Run request logs in Cloud Logging (`run.googleapis.com/requests`).
    CloudLogging,
    /// Cloud Monitoring's `run.googleapis.com/request_count`.
    CloudMonitoring,
    /// A Prometheus server (`DEPLOYER_PROMETHEUS_URL`).
    Prometheus,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            steps: defaults::steps(),
            hold: defaults::hold(),
            interval: defaults::interval(),
            max_error_rate: defaults::max_error_rate(),
            min_requests: defaults::min_requests(),
            alpha: defaults::alpha(),
            beta: defaults::beta(),
            inconclusive: defaults::inconclusive(),
            monitor_duration: defaults::monitor_duration(),
            monitor_interval: defaults::monitor_interval(),
            consecutive_error_limit: defaults::consecutive_error_limit(),
            request_metrics: defaults::request_metrics(),
        }
    }
}

/// How a check's value is compared with its thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Comparison {
    /// The value must be at least the threshold.
    #[serde(rename = ">=")]
    AtLeast,
    /// The value must be greater than the threshold.
    #[serde(rename = ">")]
    Above,
    /// The value must be at most the threshold.
    #[serde(rename = "<=")]
    AtMost,
    /// The value must be less than the threshold.
    #[serde(rename = "<")]
    Below,
}

impl Comparison {
    /// True when `value` satisfies the comparison against `threshold`.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::AtLeast => value >= threshold,
            Comparison::Above => value > threshold,
            Comparison::AtMost => value <= threshold,
            Comparison::Below => value < threshold,
        }
    }

    /// The operator as written in service files.
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::AtLeast => ">=",
            Comparison::Above => ">",
            Comparison::AtMost => "<=",
            Comparison::Below => "<",
        }
    }

    /// True when a larger value is better (`>=`, `>`).
    pub fn higher_is_better(self) -> bool {
        matches!(self, Comparison::AtLeast | Comparison::Above)
    }
}

/// The unit of a check's value, used for display and range validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    /// A plain number.
    #[default]
    Count,
    /// A percentage, 0 to 100.
    Percent,
    /// A fraction, 0 to 1.
    Ratio,
}

/// Phases of a deploy (and the scheduled health check) that a check can gate.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, PartialOrd, Ord,
)]
#[serde(rename_all = "kebab-case")]
pub enum Gate {
    /// Service validation right after the identity check, before any traffic moves.
    Validation,
    /// Every canary step.
    Canary,
    /// The post-deploy monitor.
    Monitor,
    /// The unified health check (`deployer health`).
    Health,
}

/// Which metric provider answers a check (the `provider` key of a `[[checks]]` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// An HTTP GET whose JSON answer holds the value at `field`.
    Http,
    /// A BigQuery SQL query whose first row's first column is the value.
    Bigquery,
    /// A Cloud Monitoring time-series filter, aligned and reduced to one value.
    CloudMonitoring,
    /// A Cloud Logging filter; the value is the number of matching entries in `window`.
    CloudLogging,
    /// A PromQL instant query.
    Prometheus,
}

impl Provider {
    /// The name as written in service files.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Http => "http",
            Provider::Bigquery => "bigquery",
            Provider::CloudMonitoring => "cloud-monitoring",
            Provider::CloudLogging => "cloud-logging",
            Provider::Prometheus => "prometheus",
        }
    }
}

/// How a check with no data is reported (a gate never counts it as a pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NoDataPolicy {
    /// As a warning.
    #[default]
    Warn,
    /// As critical.
    Critical,
    /// As passed (for reporting; gates still refuse it).
    Pass,
}

/// One service-specific check: a provider query that yields a number, compared with
/// thresholds.
///
/// In service files a `[[checks]]` table is tagged by `provider`, and each provider has its own
/// table type (`RawCheck` below), so a key that belongs to another provider (a `field` on a
/// `bigquery` check) is rejected with the file, line and column like any unknown key. In
/// memory the keys every check has are fields here and the provider's own are in
/// [`CheckSource`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(from = "RawCheck", into = "RawCheck")]
pub struct CheckConfig {
    /// Display name, e.g. `Vegas Line Coverage`. Unique within the service.
    pub name: String,
    /// The provider and its query.
    pub source: CheckSource,
    /// How the value is compared with the thresholds.
    pub comparison: Comparison,
    /// Past this (below it for `>=`/`>`, above it for `<=`/`<`) the check is a WARNING.
    pub warn: f64,
    /// Past this the check is CRITICAL.
    pub critical: f64,
    /// Unit of the value, for display and range checks.
    pub unit: Unit,
    /// Which phases this check gates.
    pub gates: Vec<Gate>,
    /// How NO DATA is reported.
    pub on_no_data: NoDataPolicy,
    /// Also run the query for the stable revision.
    pub baseline: bool,
    /// Time limit of one evaluation.
    pub timeout: HumanDuration,
    /// The window looked at.
    pub window: HumanDuration,
}

/// Declares, for each provider, its source type (its own keys) and its `[[checks]]` table type
/// (the keys every check has, then its own), with the conversions between the two shapes.
macro_rules! check_tables {
    ($(
        $(#[$meta:meta])*
        $variant:ident($source:ident, $raw:ident) {
            $($(#[$field_meta:meta])* $field:ident : $type:ty,)*
        }
    )*) => {
        /// The provider of a check and its provider-specific keys.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(tag = "provider", rename_all = "kebab-case")]
        pub enum CheckSource {
            $($(#[$meta])* $variant($source),)*
        }

        $(
            $(#[$meta])*
            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
            #[serde(deny_unknown_fields)]
            pub struct $source {
                $($(#[$field_meta])* pub $field: $type,)*
            }

            $(#[$meta])*
            #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
            #[serde(deny_unknown_fields)]
            struct $raw {
                /// Display name, e.g. `Vegas Line Coverage`. Unique within the service.
                name: String,
                $($(#[$field_meta])* $field: $type,)*
                /// How the value is compared with the thresholds.
                comparison: Comparison,
                /// Past this (below it for `>=`/`>`, above it for `<=`/`<`) the check is a
                /// WARNING.
                warn: f64,
                /// Past this the check is CRITICAL.
                critical: f64,
                /// Unit of the value, for display and range checks.
                #[serde(default)]
                unit: Unit,
                /// Which phases this check gates. Default: the unified health check only.
                #[serde(default = "defaults::gates")]
                gates: Vec<Gate>,
                /// How NO DATA is reported: `warn` (default), `critical` or `pass`. A gate
                /// never counts NO DATA as a pass.
                #[serde(default)]
                on_no_data: NoDataPolicy,
                /// Also run the query for the stable revision (`{revision}` becomes the stable
                /// one): both values are reported, and a breach the stable revision shares is
                /// reported as service-wide rather than blamed on the new revision.
                #[serde(default)]
                baseline: bool,
                /// Time limit of one evaluation; past it the check is an ERROR.
                #[serde(default = "defaults::check_timeout")]
                timeout: HumanDuration,
                /// The window looked at: `{window}` (and `{window_seconds}`) in queries, and
                /// the time range of `cloud-logging` and `cloud-monitoring` checks.
                #[serde(default = "defaults::check_window")]
                window: HumanDuration,
            }
        )*

        /// A `[[checks]]` table as written: tagged by `provider`.
        #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
        #[serde(tag = "provider", rename_all = "kebab-case")]
        enum RawCheck {
            $($(#[$meta])* $variant($raw),)*
        }

        impl From<RawCheck> for CheckConfig {
            fn from(raw: RawCheck) -> Self {
                match raw {
                    $(RawCheck::$variant(raw) => CheckConfig {
                        source: CheckSource::$variant($source { $($field: raw.$field,)* }),
                        name: raw.name,
                        comparison: raw.comparison,
                        warn: raw.warn,
                        critical: raw.critical,
                        unit: raw.unit,
                        gates: raw.gates,
                        on_no_data: raw.on_no_data,
                        baseline: raw.baseline,
                        timeout: raw.timeout,
                        window: raw.window,
                    },)*
                }
            }
        }

        impl From<CheckConfig> for RawCheck {
            fn from(check: CheckConfig) -> Self {
                match check.source {
                    $(CheckSource::$variant(source) => RawCheck::$variant($raw {
                        $($field: source.$field,)*
                        name: check.name,
                        comparison: check.comparison,
                        warn: check.warn,
                        critical: check.critical,
                        unit: check.unit,
                        gates: check.gates,
                        on_no_data: check.on_no_data,
                        baseline: check.baseline,
                        timeout: check.timeout,
                        window: check.window,
                    }),)*
                }
            }
        }
    };
}

check_tables! {
    /// `provider = "bigquery"`: a standard-SQL query; the first column of the first row is the
    /// value (NULL or no row: no data). Optional second and third columns, when whole numbers,
    /// are the counts behind a rate (matching, total).
    Bigquery(BigquerySource, RawBigqueryCheck) {
        /// The SQL query (standard SQL). Qualify tables with their project and dataset.
        query: String,
        /// The project the query job runs (and is billed) in. Default: the target's project.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        project: Option<String>,
        /// Cost guard: the job fails instead of billing more bytes than this.
        #[serde(default = "defaults::maximum_bytes_billed")]
        maximum_bytes_billed: u64,
    }
    /// `provider = "http"`: a GET whose JSON answer holds the value at `field`; a non-2xx
    /// answer is an error.
    Http(HttpSource, RawHttpCheck) {
        /// An absolute URL, or a path on the revision under test (its tag URL during a
        /// rollout, the service URL otherwise).
        url: String,
        /// The dotted JSON field holding the value, e.g. `coverage.percent` (`items.0.n`
        /// indexes arrays).
        field: String,
    }
    /// `provider = "cloud-logging"`: the number of log entries matching `filter` in the last
    /// `window`.
    CloudLogging(CloudLoggingSource, RawCloudLoggingCheck) {
        /// A Cloud Logging filter (deployer adds the time range).
        filter: String,
        /// The project whose logs are read. Default: the target's project.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        project: Option<String>,
    }
    /// `provider = "cloud-monitoring"`: a time-series filter over the last `window`, each
    /// series aligned over the whole window by `aligner`, then reduced across series by
    /// `reducer` to one value.
    CloudMonitoring(CloudMonitoringSource, RawCloudMonitoringCheck) {
        /// A Cloud Monitoring filter, e.g.
        /// `metric.type = "run.googleapis.com/request_count" AND resource.labels.service_name = "{service}"`.
        filter: String,
        /// The per-series aligner, e.g. `ALIGN_SUM`, `ALIGN_MEAN`, `ALIGN_RATE`.
        #[serde(default = "defaults::aligner")]
        aligner: String,
        /// The cross-series reducer, e.g. `REDUCE_SUM`, `REDUCE_MEAN`, `REDUCE_MAX`.
        #[serde(default = "defaults::reducer")]
        reducer: String,
        /// The project whose metrics are read. Default: the target's project.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        project: Option<String>,
    }
    /// `provider = "prometheus"`: a PromQL instant query; an empty vector is no data, more
    /// than one series an error naming them.
    Prometheus(PrometheusSource, RawPrometheusCheck) {
        /// The PromQL expression.
        query: String,
        /// The Prometheus server. Default: `DEPLOYER_PROMETHEUS_URL`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
    }
}

impl CheckSource {
    /// The check's provider.
    pub fn provider(&self) -> Provider {
        match self {
            CheckSource::Bigquery(_) => Provider::Bigquery,
            CheckSource::Http(_) => Provider::Http,
            CheckSource::CloudLogging(_) => Provider::CloudLogging,
            CheckSource::CloudMonitoring(_) => Provider::CloudMonitoring,
            CheckSource::Prometheus(_) => Provider::Prometheus,
        }
    }

    /// The query text as written (SQL, URL, filter or PromQL).
    pub fn query_text(&self) -> &str {
        match self {
            CheckSource::Bigquery(source) => &source.query,
            CheckSource::Http(source) => &source.url,
            CheckSource::CloudLogging(source) => &source.filter,
            CheckSource::CloudMonitoring(source) => &source.filter,
            CheckSource::Prometheus(source) => &source.query,
        }
    }

    /// The key holding [`CheckSource::query_text`] in service files.
    pub fn query_key(&self) -> &'static str {
        match self {
            CheckSource::Bigquery(_) | CheckSource::Prometheus(_) => "query",
            CheckSource::Http(_) => "url",
            CheckSource::CloudLogging(_) | CheckSource::CloudMonitoring(_) => "filter",
        }
    }
}

impl CheckConfig {
    /// The check's provider.
    pub fn provider(&self) -> Provider {
        self.source.provider()
    }
}

/// Where alerts go. Secrets are never written in service files: only the names of the
/// environment variables that hold them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationConfig {
    /// Environment variable holding the Slack incoming-webhook URL.
    #[serde(default = "defaults::slack_webhook_env")]
    pub slack_webhook_env: String,
    /// Slack channel named in alerts (informational; the webhook decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_channel: Option<String>,
    /// GitHub repository (`owner/name`) where drift issues are opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_repository: Option<String>,
    /// Environment variable holding the GitHub token.
    #[serde(default = "defaults::github_token_env")]
    pub github_token_env: String,
    /// How often `deployer health` repeats an unchanged alert [default: 6h].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_interval: Option<HumanDuration>,
    /// Environment variable holding the URL of a generic JSON webhook that receives rollout
    /// notifications (none by default). The name of the variable, never the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_env: Option<String>,
    /// The rollout events notified to Slack and the webhook [default: all of them]; `[]` turns
    /// rollout notifications off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_events: Option<Vec<RolloutEvent>>,
}

/// A rollout event that can be notified (`notifications.rollout_events`). The vocabulary lives
/// with the service-file model because service files name it; `notify::rollout` sends it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutEvent {
    /// The rollout of an image starts.
    Started,
    /// The new revision serves 100% and passed the monitor.
    Promoted,
    /// Stopped before any traffic moved (identity, validation, a rollout that could not start).
    Stopped,
    /// Traffic went back to the stable revision.
    RolledBack,
    /// The split was left as it is for a human.
    Held,
    /// A held rollout was aborted: 100% back on its stable revision.
    Aborted,
    /// A rollback was needed and failed: a human must act now.
    RollbackFailed,
}

impl RolloutEvent {
    /// Every event, in the order of a rollout.
    pub const ALL: [RolloutEvent; 7] = [
        RolloutEvent::Started,
        RolloutEvent::Promoted,
        RolloutEvent::Stopped,
        RolloutEvent::RolledBack,
        RolloutEvent::Held,
        RolloutEvent::Aborted,
        RolloutEvent::RollbackFailed,
    ];

    /// Its name in service files and in the webhook's JSON (`rolled-back`).
    pub fn name(self) -> &'static str {
        match self {
            RolloutEvent::Started => "started",
            RolloutEvent::Promoted => "promoted",
            RolloutEvent::Stopped => "stopped",
            RolloutEvent::RolledBack => "rolled-back",
            RolloutEvent::Held => "held",
            RolloutEvent::Aborted => "aborted",
            RolloutEvent::RollbackFailed => "rollback-failed",
        }
    }
}

impl Default for NotificationConfig {
    fn default() -> Self {
        Self {
            slack_webhook_env: defaults::slack_webhook_env(),
            slack_channel: None,
            github_repository: None,
            github_token_env: defaults::github_token_env(),
            repeat_interval: None,
            webhook_env: None,
            rollout_events: None,
        }
    }
}

impl ServiceConfig {
    /// The platform-side service name (the target's `service`, else `name`).
    pub fn platform_service_name(&self) -> &str {
        match &self.target {
            Target::CloudRun {
                service: Some(service),
                ..
            }
            | Target::Local {
                service: Some(service),
                ..
            } => service,
            _ => &self.name,
        }
    }

    /// `target.regions` as written, when set: `--region` then picks one of them instead of
    /// overriding the region.
    pub fn listed_regions(&self) -> Option<&[String]> {
        match &self.target {
            Target::CloudRun { regions, .. } | Target::Local { regions, .. } => regions.as_deref(),
        }
    }

    /// Whether the service runs in more than one region.
    pub fn is_multi_region(&self) -> bool {
        self.listed_regions()
            .is_some_and(|regions| regions.len() > 1)
    }

    /// The regions the service runs in, the canary region first: `target.regions`, else its
    /// one region (`target.region` of a Cloud Run target, none when unset; `local` for a local
    /// target).
    pub fn regions(&self) -> Vec<String> {
        if let Some(regions) = self.listed_regions() {
            return regions.to_vec();
        }
        match &self.target {
            Target::CloudRun { region, .. } => region.iter().cloned().collect(),
            Target::Local { .. } => vec![LOCAL_REGION.to_string()],
        }
    }

    /// The service in one of its regions: a one-region service (`target.region` of a Cloud Run
    /// target, a one-element `regions` of a local one).
    pub fn in_region(&self, chosen: &str) -> ServiceConfig {
        let mut config = self.clone();
        match &mut config.target {
            Target::CloudRun {
                region, regions, ..
            } => {
                // The one region stays listed, so that the config still says it is one region
                // of a service with `target.regions` ([`ServiceConfig::target_label`]).
                *region = None;
                *regions = Some(vec![chosen.to_string()]);
            }
            Target::Local { regions, .. } => *regions = Some(vec![chosen.to_string()]),
        }
        config
    }

    /// The name a health result or an alert carries: the service's name, and for a service
    /// with `target.regions` the region too (`svc@us-east1`), so that two regions of one
    /// service never share an alert's lifecycle.
    pub fn target_label(&self) -> String {
        match self.listed_regions() {
            Some([region]) => format!("{}@{region}", self.name),
            _ => self.name.clone(),
        }
    }

    /// The service in each region a command acts on, the canary region first: every region,
    /// or only `selected` (`--region`), which must be one of a multi-region service's.
    pub fn region_configs(&self, selected: Option<&str>) -> Result<Vec<ServiceConfig>, String> {
        let regions = self.regions();
        match selected {
            _ if self.listed_regions().is_none() => Ok(vec![self.clone()]),
            None => Ok(regions.iter().map(|region| self.in_region(region)).collect()),
            Some(chosen) if regions.iter().any(|region| region == chosen) => {
                Ok(vec![self.in_region(chosen)])
            }
            Some(chosen) => Err(format!(
                "`--region {}` is not a region of service `{}` (`target.regions`: {}): pass one of them, or no `--region` for all",
                crate::untrusted::escaped(&crate::untrusted::shortened(chosen, 64)),
                self.name,
                regions.join(", ")
            )),
        }
    }
}

/// The one location of a local target without `target.regions`.
pub const LOCAL_REGION: &str = "local";

/// Default values, shared by serde and `Default` impls so the two never disagree.
pub(crate) mod defaults {
    use super::{Gate, HumanDuration, InconclusivePolicy, RequestMetricsSource};
    use std::time::Duration;

    pub fn context() -> String {
        ".".into()
    }
    pub fn dockerfile() -> String {
        "Dockerfile".into()
    }
    pub fn health_path() -> String {
        "/health".into()
    }
    pub fn service_field() -> String {
        "service".into()
    }
    pub fn commit_field() -> String {
        "commit".into()
    }
    pub fn health_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(5))
    }
    pub fn branch() -> String {
        "main".into()
    }
    pub fn remote() -> String {
        "origin".into()
    }
    pub fn test_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(600))
    }
    pub fn steps() -> Vec<u8> {
        vec![5, 25, 50, 100]
    }
    pub fn hold() -> HumanDuration {
        HumanDuration(Duration::from_secs(300))
    }
    pub fn interval() -> HumanDuration {
        HumanDuration(Duration::from_secs(15))
    }
    pub fn max_error_rate() -> f64 {
        0.05
    }
    pub fn min_requests() -> u64 {
        50
    }
    pub fn alpha() -> f64 {
        0.01
    }
    pub fn beta() -> f64 {
        0.05
    }
    pub fn inconclusive() -> InconclusivePolicy {
        InconclusivePolicy::Rollback
    }
    pub fn monitor_duration() -> HumanDuration {
        HumanDuration(Duration::from_secs(30 * 60))
    }
    pub fn monitor_interval() -> HumanDuration {
        HumanDuration(Duration::from_secs(5 * 60))
    }
    pub fn consecutive_error_limit() -> u32 {
        4
    }
    pub fn gates() -> Vec<Gate> {
        vec![Gate::Health]
    }
    pub fn check_timeout() -> HumanDuration {
        HumanDuration(Duration::from_secs(30))
    }
    pub fn check_window() -> HumanDuration {
        HumanDuration(Duration::from_secs(600))
    }
    pub fn maximum_bytes_billed() -> u64 {
        10_000_000_000
    }
    pub fn aligner() -> String {
        "ALIGN_SUM".into()
    }
    pub fn reducer() -> String {
        "REDUCE_SUM".into()
    }
    pub fn time_zone() -> String {
        "Etc/UTC".into()
    }
    pub fn request_metrics() -> RequestMetricsSource {
        RequestMetricsSource::CloudLogging
    }
    pub fn slack_webhook_env() -> String {
        "SLACK_WEBHOOK_URL".into()
    }
    pub fn github_token_env() -> String {
        "GITHUB_TOKEN".into()
    }
}

/// Drift thresholds (`deployer drift`): how long a commit that touches the service's
/// `preflight.paths` may wait on `main` before the drift is a WARN, then CRITICAL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DriftConfig {
    /// Age of the oldest undeployed service-relevant commit at which drift is a WARN.
    #[serde(default = "drift_defaults::warn_after")]
    pub warn_after: HumanDuration,
    /// Age of the oldest undeployed service-relevant commit at which drift is CRITICAL.
    #[serde(default = "drift_defaults::critical_after")]
    pub critical_after: HumanDuration,
    /// Number of undeployed service-relevant commits at which drift is CRITICAL, whatever
    /// their age. Unset: only age counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical_commits: Option<u32>,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            warn_after: drift_defaults::warn_after(),
            critical_after: drift_defaults::critical_after(),
            critical_commits: None,
        }
    }
}

/// Defaults of [`DriftConfig`]: the team's goal is to detect drift within 6 hours.
mod drift_defaults {
    use super::HumanDuration;
    use std::time::Duration;

    pub fn warn_after() -> HumanDuration {
        HumanDuration(Duration::from_secs(6 * 3600))
    }
    pub fn critical_after() -> HumanDuration {
        HumanDuration(Duration::from_secs(3 * 24 * 3600))
    }
}
