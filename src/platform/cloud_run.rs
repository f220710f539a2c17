//! [`Platform`] on Google's official `google-cloud-run-v2` client.
//!
//! Against Google the client uses Application Default Credentials; against the local emulator
//! (an `http://` endpoint) it uses anonymous credentials — without them the client probes the
//! metadata server and hangs for about a minute. Every long-running operation has a deadline:
//! the client's poller has none of its own.

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use google_cloud_gax::error::rpc::Code;
use google_cloud_lro::Poller;
use google_cloud_run_v2::{
    client::{Revisions, Services},
    model::{self, condition::State, env_var::Values, TrafficTargetAllocationType},
};

use crate::untrusted::remote_message;

use super::{
    Platform, PlatformError, RevisionSettings, RevisionSnapshot, RevisionSpec, ServiceId,
    ServiceSnapshot, ServiceUpdate, TrafficStatus, TrafficTarget,
};

/// Where the Cloud Run Admin API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Google's API, with Application Default Credentials.
    Google,
    /// Another endpoint (the local emulator), with anonymous credentials.
    Custom(String),
}

/// Told, while an operation is still running after [`ANNOUNCE_AFTER`], what is awaited and
/// for how long at most (the CLI prints it as a line).
pub type WaitingNotice = std::sync::Arc<dyn Fn(String) + Send + Sync>;

/// The Cloud Run adapter.
#[derive(Clone)]
pub struct CloudRunPlatform {
    services: Services,
    revisions: Revisions,
    operation_deadline: Duration,
    metadata_deadline: Duration,
    call_deadline: Duration,
    /// The endpoint, named in every error (`run.googleapis.com` or the custom URL).
    endpoint: String,
    waiting_notice: Option<WaitingNotice>,
}

impl std::fmt::Debug for CloudRunPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudRunPlatform")
            .field("endpoint", &self.endpoint)
            .field("operation_deadline", &self.operation_deadline)
            .field("metadata_deadline", &self.metadata_deadline)
            .field("call_deadline", &self.call_deadline)
            .finish_non_exhaustive()
    }
}

/// How long an update that changes no template (the lock, the journal, the release history,
/// a traffic split) may wait for its operation: no revision is created, so Cloud Run answers in
/// seconds; an operation that never completes must not hold a deploy for the 10 minutes of a
/// new revision's deadline.
pub const METADATA_OPERATION_DEADLINE: Duration = Duration::from_secs(60);

/// How long an operation runs before the wait is announced ([`WaitingNotice`]).
pub const ANNOUNCE_AFTER: Duration = Duration::from_secs(5);

/// Errors creating the client.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No usable Google credentials (never retried: nothing changes until someone acts).
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialsError),
    /// The client could not be built (credentials, endpoint).
    #[error("cannot create the Cloud Run client for `{endpoint}`: {message}")]
    Client {
        /// The endpoint.
        endpoint: String,
        /// The client's message.
        message: String,
    },
}

/// The longest one request may take (connect, send, answer), per try: a slow or silent
/// endpoint costs seconds, not the client's minute (docs/ROLLOUT.md, "Retries").
pub const CALL_DEADLINE: Duration = Duration::from_secs(15);

/// The most pages of one list followed: an endless `nextPageToken` is an error, not a loop.
pub const MAX_PAGES: usize = 100;

/// Sets the one retry policy on a Google client builder: no retry inside the client (deployer
/// retries in one place, `platform::retry`, with its budget and `Retry-After`), one attempt at
/// most `call_deadline`, and operations polled every 1 s doubling up to 5 s.
macro_rules! configured {
    ($builder:expr, $call_deadline:expr) => {{
        use google_cloud_gax::retry_policy::RetryPolicyExt as _;
        let polling = google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder::new()
            .with_initial_delay(Duration::from_secs(1))
            .with_maximum_delay(Duration::from_secs(5))
            .clamp();
        $builder
            .with_retry_policy(google_cloud_gax::retry_policy::Aip194Strict.with_attempt_limit(1))
            .with_attempt_timeout($call_deadline)
            .with_polling_backoff_policy(polling)
    }};
}

impl CloudRunPlatform {
    /// Connects to `endpoint`; long-running operations are waited for at most
    /// `operation_deadline`, one request at most [`CALL_DEADLINE`].
    pub async fn connect(
        endpoint: &Endpoint,
        operation_deadline: Duration,
    ) -> Result<Self, ConnectError> {
        Self::connect_with(endpoint, operation_deadline, CALL_DEADLINE).await
    }

    /// [`CloudRunPlatform::connect`] with another per-request deadline.
    pub async fn connect_with(
        endpoint: &Endpoint,
        operation_deadline: Duration,
        call_deadline: Duration,
    ) -> Result<Self, ConnectError> {
        crate::install_crypto_provider();
        let label = match endpoint {
            Endpoint::Google => "run.googleapis.com".to_string(),
            Endpoint::Custom(url) => url.clone(),
        };
        let error = |error: google_cloud_gax::client_builder::Error| ConnectError::Client {
            endpoint: label.clone(),
            message: error.to_string(),
        };
        let (services, revisions) = match endpoint {
            Endpoint::Google => {
                // Found first, as Google's libraries would: with none, the client's fallback to
                // the metadata server fails as "transient" off Google Cloud, retried for 37 s.
                let credentials = crate::credentials::google()?;
                (
                    configured!(Services::builder(), call_deadline)
                        .with_credentials(credentials.clone())
                        .build()
                        .await
                        .map_err(error)?,
                    configured!(Revisions::builder(), call_deadline)
                        .with_credentials(credentials)
                        .build()
                        .await
                        .map_err(error)?,
                )
            }
            Endpoint::Custom(url) => {
                let anonymous = google_cloud_auth::credentials::anonymous::Builder::new().build();
                (
                    configured!(Services::builder(), call_deadline)
                        .with_endpoint(url.clone())
                        .with_credentials(anonymous.clone())
                        .build()
                        .await
                        .map_err(error)?,
                    configured!(Revisions::builder(), call_deadline)
                        .with_endpoint(url.clone())
                        .with_credentials(anonymous)
                        .build()
                        .await
                        .map_err(error)?,
                )
            }
        };
        Ok(Self {
            services,
            revisions,
            operation_deadline,
            metadata_deadline: operation_deadline.min(METADATA_OPERATION_DEADLINE),
            call_deadline,
            endpoint: label,
            waiting_notice: None,
        })
    }

    /// Announces every operation still running after [`ANNOUNCE_AFTER`] through `notice`.
    pub fn with_waiting_notice(mut self, notice: WaitingNotice) -> Self {
        self.waiting_notice = Some(notice);
        self
    }

    /// Sends one request, at most `call_deadline` (the client's own attempt timeout is the
    /// same; this one also covers an answer that trickles in).
    async fn call<T>(
        &self,
        what: &str,
        subject: &str,
        future: impl std::future::Future<Output = Result<T, google_cloud_run_v2::Error>>,
    ) -> Result<T, PlatformError> {
        match tokio::time::timeout(self.call_deadline, future).await {
            Ok(result) => result.map_err(|error| self.map_error(subject, error)),
            Err(_) => Err(PlatformError::Unavailable(format!(
                "`{}`: no answer to {what} within {}",
                self.endpoint,
                humantime::format_duration(self.call_deadline)
            ))),
        }
    }

    /// Which of `permissions` the caller holds on the service (`testIamPermissions`): what
    /// `deployer doctor` asks before a deploy would find out the hard way.
    pub async fn granted_permissions(
        &self,
        id: &ServiceId,
        permissions: &[&str],
    ) -> Result<Vec<String>, PlatformError> {
        let request = self
            .services
            .test_iam_permissions()
            .set_resource(id.path())
            .set_permissions(permissions.iter().map(|permission| permission.to_string()))
            .send();
        let answer = self
            .call("testing the caller's permissions", &id.path(), request)
            .await?;
        Ok(answer.permissions)
    }

    async fn raw_service(&self, id: &ServiceId) -> Result<Option<model::Service>, PlatformError> {
        let read = self.services.get_service().set_name(id.path()).send();
        match self.call("reading the service", &id.path(), read).await {
            Ok(service) => Ok(Some(service)),
            Err(PlatformError::NotFound(_)) => Ok(None),
            Err(other) => Err(other),
        }
    }

    async fn wait<T>(
        &self,
        operation: &str,
        future: impl std::future::Future<Output = Result<T, google_cloud_run_v2::Error>>,
        subject: &str,
        deadline: Duration,
    ) -> Result<T, PlatformError> {
        match wait_announced(future, operation, deadline, self.waiting_notice.as_ref()).await {
            Ok(result) => result.map_err(|error| self.map_error(subject, error)),
            Err(_) => Err(PlatformError::Timeout {
                operation: operation.to_string(),
                deadline,
            }),
        }
    }

    /// Maps the client's errors onto [`PlatformError`] (see [`map_error`]).
    fn map_error(&self, subject: &str, error: google_cloud_run_v2::Error) -> PlatformError {
        map_error(&self.endpoint, subject, error)
    }

    /// Decodes a service answer (see [`decode_service`]), naming the endpoint on failure.
    fn decode_service(
        &self,
        id: &ServiceId,
        service: &model::Service,
    ) -> Result<ServiceSnapshot, PlatformError> {
        decode_service(id, service)
            .map_err(|problem| PlatformError::Malformed(format!("`{}`: {problem}", self.endpoint)))
    }
}

/// Awaits `future` for at most `deadline`; if it is still running after [`ANNOUNCE_AFTER`],
/// tells `notice` once what is awaited and for how long at most. `Err` when the deadline passed.
pub async fn wait_announced<T>(
    future: impl std::future::Future<Output = T>,
    operation: &str,
    deadline: Duration,
    notice: Option<&WaitingNotice>,
) -> Result<T, tokio::time::error::Elapsed> {
    let timed = tokio::time::timeout(deadline, future);
    tokio::pin!(timed);
    if let Some(notice) = notice.filter(|_| deadline > ANNOUNCE_AFTER) {
        tokio::select! {
            result = &mut timed => return result,
            () = tokio::time::sleep(ANNOUNCE_AFTER) => notice(format!(
                "{operation}: still running after {}, gives up after {}",
                humantime::format_duration(ANNOUNCE_AFTER),
                humantime::format_duration(deadline)
            )),
        }
    }
    timed.await
}

/// Maps the client's errors onto [`PlatformError`], by gRPC status or HTTP status.
///
/// Every message names `endpoint` and shows the remote text shortened and escaped (a 1 MB 403
/// body or a proxy's HTML page used to be printed whole, once per retry). An answer that could
/// not be decoded is [`PlatformError::Malformed`]: not "unavailable", and not retried.
fn map_error(endpoint: &str, subject: &str, error: google_cloud_run_v2::Error) -> PlatformError {
    if error.is_deserialization() {
        return PlatformError::Malformed(format!(
            "`{endpoint}`: {}",
            remote_message(&error.to_string())
        ));
    }
    // No request path could be built: a name from an answer (an operation called
    // `../../../etc/passwd`) is not a valid resource name. Retrying builds the same nothing;
    // it used to be retried as "unavailable" for minutes.
    if error.is_binding() {
        return PlatformError::Malformed(format!(
            "`{endpoint}`: a name in the answer is not a valid resource name ({})",
            remote_message(&error.to_string())
        ));
    }
    // Google's structured reasons first: a disabled API, a missing permission or scope, a
    // quota — one line with the fix, and permanent ones never retried.
    if let Some(explained) = error.status().and_then(crate::google_errors::explain) {
        use crate::google_errors::Disposition;
        let message = format!("`{endpoint}`: {}", explained.line);
        return match explained.disposition {
            Disposition::Denied => PlatformError::PermissionDenied(message),
            Disposition::Refused => PlatformError::Refused(message),
            Disposition::Throttled => PlatformError::Throttled {
                message,
                retry_after: explained
                    .retry_after
                    .or_else(|| crate::google_errors::asked_wait(&error)),
            },
        };
    }
    let remote = error
        .status()
        .map(|status| status.message.clone())
        .filter(|message| !message.is_empty())
        .or_else(|| {
            let code = error.http_status_code()?;
            let payload = error.http_payload()?;
            Some(format!("HTTP {code}: {}", String::from_utf8_lossy(payload)))
        })
        .unwrap_or_else(|| error.to_string());
    let message = format!("`{endpoint}`: {}", remote_message(&remote));
    let throttled = error.http_status_code() == Some(429)
        || error
            .status()
            .is_some_and(|status| status.code == Code::ResourceExhausted);
    if throttled {
        return PlatformError::Throttled {
            message,
            retry_after: crate::google_errors::asked_wait(&error),
        };
    }
    if let Some(status) = error.status() {
        return match status.code {
            Code::NotFound => PlatformError::NotFound(subject.to_string()),
            Code::Aborted | Code::FailedPrecondition => {
                PlatformError::Conflict(subject.to_string())
            }
            Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded => {
                PlatformError::Unavailable(message)
            }
            Code::PermissionDenied | Code::Unauthenticated => {
                PlatformError::PermissionDenied(message)
            }
            Code::Internal | Code::Unknown => PlatformError::Unavailable(message),
            _ => PlatformError::Refused(message),
        };
    }
    match error.http_status_code() {
        Some(404) => PlatformError::NotFound(subject.to_string()),
        Some(409) => PlatformError::Conflict(subject.to_string()),
        Some(401 | 403) => PlatformError::PermissionDenied(message),
        Some(400 | 422) => PlatformError::Refused(message),
        // Connection errors, timeouts, 5xx, 429: the request may or may not have landed.
        _ => PlatformError::Unavailable(message),
    }
}

fn condition_ready(conditions: &[model::Condition], terminal: Option<&model::Condition>) -> bool {
    terminal
        .into_iter()
        .chain(
            conditions
                .iter()
                .filter(|condition| condition.r#type == "Ready"),
        )
        .next()
        .is_some_and(|condition| condition.state == State::ConditionSucceeded)
}

fn condition_failure(
    conditions: &[model::Condition],
    terminal: Option<&model::Condition>,
) -> Option<String> {
    terminal
        .into_iter()
        .chain(conditions.iter())
        .find(|condition| condition.state == State::ConditionFailed)
        .map(|condition| {
            if condition.message.is_empty() {
                format!("condition `{}` failed", condition.r#type)
            } else {
                condition.message.clone()
            }
        })
}

/// What does not add up in a service as Cloud Run answered it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedService {
    /// A traffic percent outside 0 to 100 (it used to be clamped silently).
    #[error("`{field}[{index}].percent` is {value}, not between 0 and 100")]
    PercentOutOfRange {
        /// `traffic` or `trafficStatuses`.
        field: &'static str,
        /// The entry's position in the list.
        index: usize,
        /// The percent answered.
        value: i32,
    },
    /// A split whose percents do not sum to 100.
    #[error("the percents of `{field}` sum to {total}, not 100")]
    SplitNotWhole {
        /// `traffic` or `trafficStatuses`.
        field: &'static str,
        /// What they sum to.
        total: u32,
    },
}

/// A traffic percent as answered: 0 to 100, anything else is a malformed answer.
fn percent(field: &'static str, index: usize, value: i32) -> Result<u8, MalformedService> {
    u8::try_from(value)
        .ok()
        .filter(|percent| *percent <= 100)
        .ok_or(MalformedService::PercentOutOfRange {
            field,
            index,
            value,
        })
}

/// Checks that a split's percents sum to 100 (see [`super::traffic_sum`]).
fn check_sum(
    field: &'static str,
    percents: impl IntoIterator<Item = u8>,
) -> Result<(), MalformedService> {
    super::traffic_sum(percents).map_err(|total| MalformedService::SplitNotWhole { field, total })
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

/// Decodes a Cloud Run service into a [`ServiceSnapshot`]; `Err` says what does not add up
/// (a percent out of range, a split that does not sum to 100). Never panics, whatever the
/// answer (a property test holds it to that).
pub fn decode_service(
    id: &ServiceId,
    service: &model::Service,
) -> Result<ServiceSnapshot, MalformedService> {
    let traffic = service
        .traffic
        .iter()
        .enumerate()
        .map(|(index, target)| {
            Ok(TrafficTarget {
                revision: match target.r#type {
                    TrafficTargetAllocationType::Latest => None,
                    _ => non_empty(&target.revision),
                },
                percent: percent("traffic", index, target.percent)?,
                tag: non_empty(&target.tag),
            })
        })
        .collect::<Result<Vec<_>, MalformedService>>()?;
    check_sum("traffic", traffic.iter().map(|target| target.percent))?;
    let traffic_statuses = service
        .traffic_statuses
        .iter()
        .enumerate()
        .map(|(index, status)| {
            Ok(TrafficStatus {
                revision: if status.revision.is_empty() {
                    short_name(&service.latest_ready_revision)
                } else {
                    short_name(&status.revision)
                },
                percent: percent("trafficStatuses", index, status.percent)?,
                tag: non_empty(&status.tag),
                uri: non_empty(&status.uri),
            })
        })
        .collect::<Result<Vec<_>, MalformedService>>()?;
    check_sum(
        "trafficStatuses",
        traffic_statuses.iter().map(|status| status.percent),
    )?;
    Ok(ServiceSnapshot {
        id: id.clone(),
        etag: service.etag.clone(),
        uri: service.uri.clone(),
        urls: service.urls.clone(),
        generation: service.generation,
        observed_generation: service.observed_generation,
        reconciling: service.reconciling,
        ready: condition_ready(&service.conditions, service.terminal_condition.as_ref()),
        failure: condition_failure(&service.conditions, service.terminal_condition.as_ref()),
        latest_created_revision: short_name(&service.latest_created_revision),
        latest_ready_revision: short_name(&service.latest_ready_revision),
        traffic,
        traffic_statuses,
        annotations: service.annotations.clone().into_iter().collect(),
        labels: service.labels.clone().into_iter().collect(),
        image: service
            .template
            .as_ref()
            .and_then(|template| template.containers.first())
            .map(|container| container.image.clone())
            .unwrap_or_default(),
        session_affinity: service
            .template
            .as_ref()
            .is_some_and(|template| template.session_affinity),
    })
}

/// `projects/.../revisions/NAME` → `NAME` (Cloud Run returns short names, the emulator may too).
fn short_name(name: &str) -> String {
    name.rsplit('/').next().unwrap_or(name).to_string()
}

/// Decodes a Cloud Run revision into a [`RevisionSnapshot`] (infallible: every field has a
/// safe reading; never panics, whatever the answer).
pub fn decode_revision(revision: &model::Revision) -> RevisionSnapshot {
    RevisionSnapshot {
        name: short_name(&revision.name),
        ready: condition_ready(&revision.conditions, None),
        reconciling: revision.reconciling,
        failure: condition_failure(&revision.conditions, None),
        image: revision
            .containers
            .first()
            .map(|container| container.image.clone())
            .unwrap_or_default(),
        labels: revision.labels.clone().into_iter().collect(),
        created: revision
            .create_time
            .as_ref()
            .map(|time| String::from(*time)),
        settings: revision_settings(revision),
    }
}

fn traffic_target(target: &TrafficTarget) -> model::TrafficTarget {
    let mut out = model::TrafficTarget::new().set_percent(i32::from(target.percent));
    out = match &target.revision {
        Some(revision) => out
            .set_type(TrafficTargetAllocationType::Revision)
            .set_revision(revision.clone()),
        None => out.set_type(TrafficTargetAllocationType::Latest),
    };
    match &target.tag {
        Some(tag) => out.set_tag(tag.clone()),
        None => out,
    }
}

/// The template of a new revision that starts from `base` (a revision as read): everything the
/// revision runs with, so that a new revision carries the stable revision's configuration and
/// nothing of a later (rolled-back) one.
fn template_from_revision(base: &model::Revision) -> model::RevisionTemplate {
    let mut template = model::RevisionTemplate::new();
    template.labels = base
        .labels
        .iter()
        .filter(|(key, _)| !key.contains('/'))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    template.annotations = base
        .annotations
        .iter()
        .filter(|(key, _)| {
            !key.starts_with("run.googleapis.com/") && !key.contains("serving.knative.dev")
        })
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    template.scaling = base.scaling.clone();
    template.vpc_access = base.vpc_access.clone();
    template.timeout = base.timeout;
    template.service_account = base.service_account.clone();
    template.containers = base.containers.clone();
    template.volumes = base.volumes.clone();
    template.execution_environment = base.execution_environment.clone();
    template.encryption_key = base.encryption_key.clone();
    template.max_instance_request_concurrency = base.max_instance_request_concurrency;
    template.service_mesh = base.service_mesh.clone();
    template.session_affinity = base.session_affinity;
    template.node_selector = base.node_selector.clone();
    template
}

/// The managed settings of a revision's first container and scaling.
fn revision_settings(revision: &model::Revision) -> RevisionSettings {
    let mut settings = RevisionSettings::default();
    if let Some(container) = revision.containers.first() {
        for variable in &container.env {
            match &variable.values {
                Some(Values::Value(value)) => {
                    settings.env.insert(variable.name.clone(), value.clone());
                }
                Some(Values::ValueSource(source)) => {
                    if let Some(secret) = &source.secret_key_ref {
                        settings.secrets.insert(
                            variable.name.clone(),
                            format!("{}/versions/{}", secret.secret, secret.version),
                        );
                    }
                }
                _ => {}
            }
        }
        if let Some(resources) = &container.resources {
            settings.cpu = resources.limits.get("cpu").cloned();
            settings.memory = resources.limits.get("memory").cloned();
        }
    }
    settings.service_account = non_empty(&revision.service_account);
    settings.concurrency = u32::try_from(revision.max_instance_request_concurrency)
        .ok()
        .filter(|value| *value > 0);
    if let Some(scaling) = &revision.scaling {
        settings.min_instances = u32::try_from(scaling.min_instance_count)
            .ok()
            .filter(|value| *value > 0);
        settings.max_instances = u32::try_from(scaling.max_instance_count)
            .ok()
            .filter(|value| *value > 0);
    }
    settings.timeout_seconds = revision
        .timeout
        .and_then(|timeout| u64::try_from(timeout.seconds()).ok());
    settings
}

/// Writes `spec` into `template`: name, labels, image and every managed setting (replacing the
/// base's; `None` removes the setting so the platform default applies).
fn apply_template(template: &mut model::RevisionTemplate, spec: &RevisionSpec) {
    template.revision = spec.name.clone();
    for (key, value) in &spec.labels {
        template.labels.insert(key.clone(), value.clone());
    }
    if template.containers.is_empty() {
        template.containers.push(model::Container::new());
    }
    let settings = &spec.settings;
    let container = &mut template.containers[0];
    container.image = spec.image.clone();
    let literal = settings.env.iter().map(|(name, value)| {
        model::EnvVar::new()
            .set_name(name.clone())
            .set_value(value.clone())
    });
    let secrets = settings.secrets.iter().map(|(name, reference)| {
        let (secret, version) = reference
            .rsplit_once("/versions/")
            .unwrap_or((reference.as_str(), "latest"));
        model::EnvVar::new()
            .set_name(name.clone())
            .set_value_source(
                model::EnvVarSource::new().set_secret_key_ref(
                    model::SecretKeySelector::new()
                        .set_secret(secret.to_string())
                        .set_version(version.to_string()),
                ),
            )
    });
    container.env = literal.chain(secrets).collect();
    let resources = container
        .resources
        .get_or_insert_with(model::ResourceRequirements::new);
    for (key, value) in [("cpu", &settings.cpu), ("memory", &settings.memory)] {
        match value {
            Some(value) => resources.limits.insert(key.to_string(), value.clone()),
            None => resources.limits.remove(key),
        };
    }
    template.service_account = settings.service_account.clone().unwrap_or_default();
    template.max_instance_request_concurrency = settings
        .concurrency
        .and_then(|value| i32::try_from(value).ok())
        .unwrap_or(0);
    let scaling = template
        .scaling
        .get_or_insert_with(model::RevisionScaling::new);
    scaling.min_instance_count = settings
        .min_instances
        .and_then(|value| i32::try_from(value).ok())
        .unwrap_or(0);
    scaling.max_instance_count = settings
        .max_instances
        .and_then(|value| i32::try_from(value).ok())
        .unwrap_or(0);
    template.timeout = settings
        .timeout_seconds
        .and_then(|seconds| i64::try_from(seconds).ok())
        .and_then(|seconds| google_cloud_wkt::Duration::new(seconds, 0).ok());
}

#[async_trait]
impl Platform for CloudRunPlatform {
    async fn service(&self, id: &ServiceId) -> Result<Option<ServiceSnapshot>, PlatformError> {
        Ok(self
            .raw_service(id)
            .await?
            .map(|service| self.decode_service(id, &service))
            .transpose()?)
    }

    async fn revisions(&self, id: &ServiceId) -> Result<Vec<RevisionSnapshot>, PlatformError> {
        let mut revisions = Vec::new();
        let mut token = String::new();
        for _ in 0..MAX_PAGES {
            let list = self
                .revisions
                .list_revisions()
                .set_parent(id.path())
                .set_page_token(token.clone())
                .send();
            let page = self.call("listing the revisions", &id.path(), list).await?;
            revisions.extend(page.revisions.iter().map(decode_revision));
            if page.next_page_token.is_empty() {
                revisions.sort_by(|a, b| b.created.cmp(&a.created).then(b.name.cmp(&a.name)));
                return Ok(revisions);
            }
            token = page.next_page_token;
        }
        Err(PlatformError::Malformed(format!(
            "`{}`: the revisions of `{}` still had a next page after {MAX_PAGES} pages",
            self.endpoint,
            crate::untrusted::escaped(&id.path())
        )))
    }

    /// Retried here (its callers read one revision directly): the client itself no longer
    /// retries, and a 503 on the canary's revision must not fail a rollout.
    async fn revision(
        &self,
        id: &ServiceId,
        name: &str,
    ) -> Result<Option<RevisionSnapshot>, PlatformError> {
        let path = id.revision_path(name);
        let policy = super::RetryPolicy {
            budget: Duration::from_secs(20),
            ..super::RetryPolicy::default()
        };
        super::retry_read(policy, &format!("reading `{path}`"), || async {
            let read = self.revisions.get_revision().set_name(path.clone()).send();
            match self.call("reading the revision", &path, read).await {
                Ok(revision) => Ok(Some(decode_revision(&revision))),
                Err(PlatformError::NotFound(_)) => Ok(None),
                Err(other) => Err(other),
            }
        })
        .await
    }

    async fn create(
        &self,
        id: &ServiceId,
        spec: &RevisionSpec,
    ) -> Result<ServiceSnapshot, PlatformError> {
        let mut template = model::RevisionTemplate::new();
        apply_template(&mut template, spec);
        let service = model::Service::new().set_template(template);
        let request = self
            .services
            .create_service()
            .set_parent(id.parent())
            .set_service_id(id.name.clone())
            .set_service(service)
            .poller()
            .until_done();
        let waiting = format!(
            "Cloud Run creating `{}` (its operation)",
            crate::untrusted::escaped(&id.name)
        );
        let created = self
            .wait(&waiting, request, &id.path(), self.operation_deadline)
            .await?;
        self.decode_service(id, &created)
    }

    async fn update(
        &self,
        id: &ServiceId,
        etag: &str,
        update: &ServiceUpdate,
    ) -> Result<ServiceSnapshot, PlatformError> {
        let mut service = self
            .raw_service(id)
            .await?
            .ok_or_else(|| PlatformError::NotFound(id.path()))?;
        // The update is computed from the read that produced `etag`; if the service moved on
        // since, refuse here rather than rely on the server alone.
        if service.etag != etag {
            return Err(PlatformError::Conflict(id.path()));
        }
        if let Some(spec) = &update.template {
            let base = match &spec.base {
                Some(base) => {
                    let path = id.revision_path(base);
                    let read = self.revisions.get_revision().set_name(path.clone()).send();
                    let revision = self.call("reading the base revision", &path, read).await?;
                    Some(template_from_revision(&revision))
                }
                None => None,
            };
            let template = match base {
                Some(base) => service.template.insert(base),
                None => service
                    .template
                    .get_or_insert_with(model::RevisionTemplate::new),
            };
            apply_template(template, spec);
        }
        if let Some(split) = &update.traffic {
            service.traffic = split.iter().map(traffic_target).collect();
        }
        for (key, value) in &update.annotations {
            match value {
                Some(value) => service.annotations.insert(key.clone(), value.clone()),
                None => service.annotations.remove(key),
            };
        }
        let mut paths = Vec::new();
        if update.template.is_some() {
            paths.push("template");
        }
        if update.traffic.is_some() {
            paths.push("traffic");
        }
        if !update.annotations.is_empty() {
            paths.push("annotations");
        }
        let request = self
            .services
            .update_service()
            .set_service(service)
            .set_update_mask(google_cloud_wkt::FieldMask::default().set_paths(paths))
            .poller()
            .until_done();
        // Only a new revision (a template change) may take the long deadline: the lock, the
        // journal, the history and a split are metadata, applied in seconds.
        let (waiting, deadline) = if update.template.is_some() {
            (
                format!(
                    "Cloud Run creating the new revision of `{}` (its operation)",
                    crate::untrusted::escaped(&id.name)
                ),
                self.operation_deadline,
            )
        } else {
            (
                format!(
                    "Cloud Run applying the update of `{}` (its operation)",
                    crate::untrusted::escaped(&id.name)
                ),
                self.metadata_deadline,
            )
        };
        let updated = self.wait(&waiting, request, &id.path(), deadline).await?;
        self.decode_service(id, &updated)
    }
}

/// Labels as Cloud Run accepts them: lowercase, at most 63 characters of `[a-z0-9_-]`.
pub fn label_value(text: &str) -> String {
    text.chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect()
}

/// The labels deployer writes on every revision it creates.
pub fn revision_labels(commit: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("deployer-commit".to_string(), label_value(commit)),
        (
            "deployer-version".to_string(),
            label_value(env!("CARGO_PKG_VERSION")),
        ),
    ])
}

#[cfg(test)]
mod wait_tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn recorder() -> (WaitingNotice, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&lines);
        let notice: WaitingNotice = Arc::new(move |line| shared.lock().unwrap().push(line));
        (notice, lines)
    }

    /// A lock write whose operation never completed waited silently for the 10 minutes of
    /// `OPERATION_DEADLINE`: a metadata write waits at most a minute, and says so while waiting.
    #[tokio::test(start_paused = true)]
    async fn an_operation_that_never_completes_is_announced_and_given_up_after_its_deadline() {
        let (notice, lines) = recorder();
        let started = tokio::time::Instant::now();
        let result = wait_announced(
            std::future::pending::<()>(),
            "Cloud Run applying the update of `hello`",
            METADATA_OPERATION_DEADLINE,
            Some(&notice),
        )
        .await;
        assert!(result.is_err());
        assert_eq!(started.elapsed(), METADATA_OPERATION_DEADLINE);
        assert_eq!(
            *lines.lock().unwrap(),
            ["Cloud Run applying the update of `hello`: still running after 5s, gives up after 1m"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_operation_is_not_announced() {
        let (notice, lines) = recorder();
        let result = wait_announced(
            async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                7
            },
            "x",
            METADATA_OPERATION_DEADLINE,
            Some(&notice),
        )
        .await;
        assert_eq!(result.ok(), Some(7));
        assert!(lines.lock().unwrap().is_empty());
    }
}
