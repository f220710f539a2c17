//! The Google clients of the providers (BigQuery, Cloud Logging, Cloud Monitoring), built once on
//! first use, and how their failures read.
//!
//! [`LazyClient`] is the one lazily built client, generic over the API through [`GoogleApi`]:
//! the endpoint (`None`: Google's), the credentials ([`credentials_for`]: Application Default
//! Credentials for Google, anonymous ones for a local part), the rustls crypto provider, the
//! retry policy ([`retry_policy`], or [`single_attempt`] for a caller that retries on its own
//! terms) and the label messages give the endpoint. A run whose checks never touch an API never
//! looks for its credentials. [`CallError`] sorts a failed call the way the providers report it,
//! and [`describe_google_error`] says any Google client's error in one line.

use std::future::Future;

use google_cloud_auth::credentials::Credentials;
use google_cloud_gax::{
    client_builder::ClientBuilder,
    retry_policy::{Aip194Strict, LimitedAttemptCount, RetryPolicyExt},
};
use tokio::sync::OnceCell;

use super::{excerpt, transient, MetricsError, ProviderError};

/// The cause every Google provider reports when [`crate::credentials::find`] finds nothing.
pub const NO_CREDENTIALS: &str = "no Google credentials";

/// Application Default Credentials for a Google endpoint, anonymous ones for any other (a
/// local emulator): without explicit anonymous credentials the Google clients probe the
/// metadata server and hang for about a minute.
pub(crate) fn credentials_for(endpoint: Option<&str>) -> Result<Credentials, String> {
    match endpoint {
        Some(url) if !url.starts_with("https://") => {
            Ok(google_cloud_auth::credentials::anonymous::Builder::new().build())
        }
        // Found first (`crate::credentials`): with none, Google's builder falls back to the
        // metadata server, which off Google Cloud fails as "transient" after a second per
        // check. The short cause is the same for every check, so a digest can group them; the
        // CLI says once what is missing and how to fix it.
        _ => crate::credentials::google().map_err(|error| match error {
            crate::credentials::CredentialsError::Missing { .. } => NO_CREDENTIALS.to_string(),
            other => other.to_string(),
        }),
    }
}

/// The retry policy of the Google clients: at most two attempts. A check is re-read at the
/// next look anyway, and retrying a refused connection until the check's timeout would report
/// a provider that is down as merely slow.
pub(crate) fn retry_policy() -> LimitedAttemptCount<Aip194Strict> {
    Aip194Strict.with_attempt_limit(2)
}

/// One attempt, no retry: for calls whose caller retries on its own terms.
pub(crate) fn single_attempt() -> LimitedAttemptCount<Aip194Strict> {
    Aip194Strict.with_attempt_limit(1)
}

/// A Google client's error as people read it: the HTTP status first when there was one (a
/// `503` says more at 3 a.m. than `UNAVAILABLE`), then the client's message.
pub(crate) fn describe_google_error(error: &google_cloud_gax::error::Error) -> String {
    // A disabled API, a missing permission or scope, a quota: one line with the fix.
    if let Some(explained) = error.status().and_then(crate::google_errors::explain) {
        return match error.http_status_code() {
            Some(code) => format!("HTTP {code}: {}", explained.line),
            None => explained.line,
        };
    }
    let message = excerpt(&error.to_string(), 300);
    match error.http_status_code() {
        Some(code) => format!("HTTP {code}: {message}"),
        None => message,
    }
}

/// A Google API whose client [`LazyClient`] builds.
///
/// Each API writes its own one-line [`build`](GoogleApi::build): the client builder's `build`
/// is bounded by a trait `google-cloud-gax` keeps hidden (`client_builder::internal`), which a
/// generic function here should not name; everything else is [`Settings::apply`].
pub(crate) trait GoogleApi: Sized + Send + Sync {
    /// The API as messages name it (`cannot create the Cloud Logging client`).
    const NAME: &'static str;
    /// What messages call Google's endpoint, when no other is set.
    const GOOGLE_LABEL: &'static str;

    /// `endpoint` as the client wants it; `None`: Google's. Unless the API says otherwise,
    /// without a trailing `/`.
    fn normalize(endpoint: &str) -> Option<String> {
        Some(endpoint.trim_end_matches('/').to_string())
    }

    /// The client, built with `settings`: `settings.apply(Self::builder()).build()`.
    fn build(
        settings: Settings,
    ) -> impl Future<Output = Result<Self, google_cloud_gax::client_builder::Error>> + Send;
}

/// How many times a client tries each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempts {
    /// Up to two ([`retry_policy`]): the client retries on its own.
    UpToTwo,
    /// One ([`single_attempt`]): the caller retries within its own budget
    /// ([`transient`](super::transient)).
    One,
}

/// What every provider's client is built with.
pub(crate) struct Settings {
    endpoint: Option<String>,
    credentials: Credentials,
    attempts: Attempts,
}

impl Settings {
    /// `builder` with these credentials, retry policy and endpoint.
    pub(crate) fn apply<Factory>(
        self,
        builder: ClientBuilder<Factory, Credentials>,
    ) -> ClientBuilder<Factory, Credentials> {
        let builder = builder
            .with_credentials(self.credentials)
            .with_retry_policy(match self.attempts {
                Attempts::UpToTwo => retry_policy(),
                Attempts::One => single_attempt(),
            });
        match self.endpoint {
            Some(endpoint) => builder.with_endpoint(endpoint),
            None => builder,
        }
    }
}

/// Why a client could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ClientError {
    /// No usable credentials for a Google endpoint. The short cause ([`NO_CREDENTIALS`]) is
    /// left bare, as it has always been told by Logging and Monitoring.
    #[error("{0}")]
    Credentials(String),
    /// The client library refused to build the client.
    #[error("cannot create the {api} client: {message}")]
    Build {
        /// The API ([`GoogleApi::NAME`]).
        api: &'static str,
        /// The library's error.
        message: String,
    },
}

impl ClientError {
    /// The cause alone, without the client it stopped.
    pub(crate) fn cause(&self) -> &str {
        match self {
            ClientError::Credentials(message) | ClientError::Build { message, .. } => message,
        }
    }
}

/// A client of `Api` for `endpoint` (normalized; Google's when `None`), built now.
pub(crate) async fn build<Api: GoogleApi>(
    endpoint: Option<&str>,
    attempts: Attempts,
) -> Result<Api, ClientError> {
    crate::install_crypto_provider();
    let credentials = credentials_for(endpoint).map_err(ClientError::Credentials)?;
    Api::build(Settings {
        endpoint: endpoint.map(str::to_string),
        credentials,
        attempts,
    })
    .await
    .map_err(|error| ClientError::Build {
        api: Api::NAME,
        message: error.to_string(),
    })
}

/// A client of `Api`, built on first use and kept, with its build's failure.
#[derive(Debug)]
pub(crate) struct LazyClient<Api> {
    /// `None`: Google's endpoint.
    endpoint: Option<String>,
    attempts: Attempts,
    client: OnceCell<Result<Api, ClientError>>,
}

impl<Api: GoogleApi> LazyClient<Api> {
    /// A client for `endpoint` ([`GoogleApi::normalize`]d; Google's when `None`) that retries
    /// on its own ([`Attempts::UpToTwo`]).
    pub(crate) fn new(endpoint: Option<&str>) -> Self {
        Self {
            endpoint: endpoint.and_then(Api::normalize),
            attempts: Attempts::UpToTwo,
            client: OnceCell::new(),
        }
    }

    /// The same client, trying each call `attempts` times.
    pub(crate) fn with_attempts(mut self, attempts: Attempts) -> Self {
        self.attempts = attempts;
        self
    }

    /// The endpoint as messages name it: the one set, or Google's.
    pub(crate) fn label(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| Api::GOOGLE_LABEL.to_string())
    }

    /// The client, built on the first call; a failed build fails every call the same way.
    pub(crate) async fn get(&self) -> Result<&Api, ClientError> {
        self.client
            .get_or_init(|| build(self.endpoint.as_deref(), self.attempts))
            .await
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// A failed read of a Google API, sorted as the providers report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// The API could not be reached, failed, or the client could not be built.
    Unavailable(String),
    /// The API refused the request (an invalid filter).
    Rejected(String),
    /// The answer could not be read.
    Malformed(String),
}

impl CallError {
    /// `error` of a list call: an invalid argument is the query refused, an answer that could
    /// not be decoded is malformed, anything else the API being unavailable.
    pub(crate) fn of(error: google_cloud_gax::error::Error) -> Self {
        match error.status() {
            Some(status) if status.code == google_cloud_gax::error::rpc::Code::InvalidArgument => {
                CallError::Rejected(excerpt(&status.message, 300))
            }
            _ if error.is_deserialization() => CallError::Malformed(describe_google_error(&error)),
            _ => CallError::Unavailable(describe_google_error(&error)),
        }
    }

    /// How a call retried within a look's time ([`transient::retry_until`]) ended.
    pub(crate) fn of_look(failure: transient::Failure) -> Self {
        match failure {
            transient::Failure::Failed(error) => Self::of(error),
            transient::Failure::OutOfTime(last) => CallError::Unavailable(match last {
                Some(error) => format!(
                    "no answer within the look's time (retried through: {})",
                    describe_google_error(&error)
                ),
                None => "no answer within the look's time".to_string(),
            }),
        }
    }

    /// The error of a check's read by `provider`.
    pub(crate) fn for_check(self, provider: &'static str) -> ProviderError {
        match self {
            CallError::Unavailable(message) => ProviderError::Unavailable { provider, message },
            CallError::Rejected(message) => ProviderError::Rejected { provider, message },
            CallError::Malformed(message) => ProviderError::Malformed { provider, message },
        }
    }

    /// The error of a read of request counts at `label`: a refused request is the counts
    /// being unavailable (the reader wrote the filter, not the user).
    pub(crate) fn for_request_counts(self, label: String) -> MetricsError {
        match self {
            CallError::Malformed(message) => MetricsError::Malformed {
                provider: label,
                message,
            },
            CallError::Unavailable(message) | CallError::Rejected(message) => {
                MetricsError::Unavailable {
                    provider: label,
                    message,
                }
            }
        }
    }
}

impl From<ClientError> for CallError {
    fn from(error: ClientError) -> Self {
        CallError::Unavailable(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A provider (Logging, Monitoring, BigQuery) told of a disabled API says the command that
    /// enables it, not Google's paragraph.
    #[test]
    fn a_providers_disabled_api_is_described_with_the_enable_command() {
        let body = serde_json::json!({"error": {
            "code": 403,
            "message": "Cloud Logging API has not been used in project 123 before or it is disabled.",
            "status": "PERMISSION_DENIED",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "SERVICE_DISABLED",
                "domain": "googleapis.com",
                "metadata": {"service": "logging.googleapis.com", "consumer": "projects/123"},
            }],
        }});
        let status =
            google_cloud_gax::error::rpc::Status::try_from(&bytes::Bytes::from(body.to_string()))
                .unwrap();
        let text = describe_google_error(&google_cloud_gax::error::Error::service(status));
        assert!(
            text.contains("`gcloud services enable logging.googleapis.com --project 123`"),
            "{text}"
        );
    }
}
