//! [`Platform`] on Google's official `google-cloud-run-v2` client.
//!
//! Against Google the client uses Application Default Credentials; against the local emulator
//! (an `http://` endpoint) it uses anonymous credentials — without them the client probes the
//! metadata server and hangs for about a minute. Every long-running operation has a deadline:
//! the client's poller has none of its own.
//!
//! This file is the client: connecting, each call with its deadline, the long-running operations
//! and their announced waits, paging, and the one read retried here. What the client's model
//! means in the platform's types is the codec's (`codec.rs`), and what its errors mean is
//! `errors.rs`.

mod codec;
mod errors;

use std::time::Duration;

use async_trait::async_trait;
use google_cloud_lro::Poller;
use google_cloud_run_v2::{
    client::{Revisions, Services},
    model,
};

pub use codec::{decode_revision, decode_service, label_value, revision_labels, MalformedService};

use codec::{apply_template, template_from_revision, traffic_target};
use errors::map_error;

use super::{
    Platform, PlatformError, RevisionSnapshot, RevisionSpec, ServiceId, ServiceSnapshot,
    ServiceUpdate,
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
