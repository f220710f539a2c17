//! The Google APIs `doctor` reads beside Cloud Run and the metric providers — Service Usage
//! (which APIs are enabled), IAM (`testIamPermissions` on the runtime service account) and
//! Secret Manager (a version's metadata, never its payload) — over their REST surface: one GET
//! or POST each, with the credentials the providers use ([`crate::checks::credentials_for`]:
//! Application Default Credentials for Google, none for a local endpoint).
//!
//! Every refusal is read as Google's `google.rpc.Status`: a `SERVICE_DISABLED` one names the API
//! to enable ([`crate::google_errors::disabled_api`]), whichever call met it.

use std::time::Duration;

use serde_json::Value;

use crate::untrusted::remote_message;

/// Google's Service Usage endpoint.
pub const SERVICE_USAGE: &str = "https://serviceusage.googleapis.com";
/// Google's IAM endpoint.
pub const IAM: &str = "https://iam.googleapis.com";
/// Google's Secret Manager endpoint.
pub const SECRET_MANAGER: &str = "https://secretmanager.googleapis.com";

/// The longest one call may take.
const CALL_DEADLINE: Duration = Duration::from_secs(15);

/// Where the three APIs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Service Usage (`DEPLOYER_SERVICEUSAGE_ENDPOINT`).
    pub service_usage: String,
    /// IAM (`DEPLOYER_IAM_ENDPOINT`).
    pub iam: String,
    /// Secret Manager (`DEPLOYER_SECRETMANAGER_ENDPOINT`).
    pub secret_manager: String,
}

impl Endpoints {
    /// The endpoints given, else the local emulator's (`emulator`, for a local target or an
    /// `http://` `--endpoint`: it serves all three), else Google's.
    pub fn new(
        service_usage: Option<String>,
        iam: Option<String>,
        secret_manager: Option<String>,
        emulator: Option<&str>,
    ) -> Self {
        let pick = |given: Option<String>, google: &str| {
            given
                .or_else(|| emulator.map(str::to_string))
                .unwrap_or_else(|| google.to_string())
                .trim_end_matches('/')
                .to_string()
        };
        Self {
            service_usage: pick(service_usage, SERVICE_USAGE),
            iam: pick(iam, IAM),
            secret_manager: pick(secret_manager, SECRET_MANAGER),
        }
    }
}

/// How a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The API is not enabled (`SERVICE_DISABLED`): the API's name.
    Disabled(String),
    /// 403 for another reason (a missing permission): Google's message.
    Denied(String),
    /// 404: Google's message.
    NotFound(String),
    /// Anything else (no answer, a 5xx, an answer that is not JSON).
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Disabled(api) => write!(formatter, "the `{api}` API is not enabled"),
            CallError::Denied(message) => write!(formatter, "permission denied: {message}"),
            CallError::NotFound(message) => write!(formatter, "not found: {message}"),
            CallError::Failed(message) => formatter.write_str(message),
        }
    }
}

/// One REST client for the three APIs.
#[derive(Debug, Clone)]
pub struct Rest {
    client: reqwest::Client,
}

impl Rest {
    /// A client (no request is sent yet).
    pub fn new() -> Result<Self, String> {
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(CALL_DEADLINE)
            .build()
            .map_err(|error| format!("cannot create an HTTP client: {error}"))?;
        Ok(Self { client })
    }

    /// `GET endpoint/path`.
    pub async fn get(&self, endpoint: &str, path: &str) -> Result<Value, CallError> {
        self.call(reqwest::Method::GET, endpoint, path, None).await
    }

    /// `POST endpoint/path` with a JSON body.
    pub async fn post(&self, endpoint: &str, path: &str, body: &Value) -> Result<Value, CallError> {
        self.call(reqwest::Method::POST, endpoint, path, Some(body))
            .await
    }

    async fn call(
        &self,
        method: reqwest::Method,
        endpoint: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let credentials =
            crate::checks::credentials_for(Some(endpoint)).map_err(CallError::Failed)?;
        let headers = match credentials.headers(http::Extensions::new()).await {
            Ok(google_cloud_auth::credentials::CacheableResource::New { data, .. }) => data,
            Ok(google_cloud_auth::credentials::CacheableResource::NotModified) => {
                http::HeaderMap::new()
            }
            Err(error) => {
                return Err(CallError::Failed(format!(
                    "cannot get an access token: {}",
                    remote_message(&error.to_string())
                )))
            }
        };
        let mut request = self
            .client
            .request(method, format!("{endpoint}/{path}"))
            .headers(headers);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| CallError::Failed(format!("`{endpoint}`: {}", error.without_url())))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|error| CallError::Failed(format!("`{endpoint}`: {}", error.without_url())))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|error| {
                CallError::Failed(format!(
                    "`{endpoint}` answered something that is not JSON: {error}"
                ))
            });
        }
        let parsed = google_cloud_gax::error::rpc::Status::try_from(&bytes).ok();
        if let Some(api) = parsed.as_ref().and_then(crate::google_errors::disabled_api) {
            return Err(CallError::Disabled(api));
        }
        let message = parsed
            .map(|status| remote_message(&status.message))
            .filter(|message| !message.is_empty())
            .unwrap_or_else(|| remote_message(&String::from_utf8_lossy(&bytes)));
        Err(match status.as_u16() {
            401 | 403 => CallError::Denied(message),
            404 => CallError::NotFound(message),
            code => CallError::Failed(format!("`{endpoint}` answered HTTP {code}: {message}")),
        })
    }
}

/// True when `text` is fit to be one segment of a resource path: letters, digits and `@._-`.
pub fn is_path_segment(text: &str) -> bool {
    text.chars().any(|c| c.is_ascii_alphanumeric())
        && text.len() <= 256
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '_' | '-'))
}

/// A Secret Manager version reference as a full name (`projects/P/secrets/S/versions/V`):
/// references deployed in the same project may name the secret alone (`S`, version apart).
/// `None` when it is not one (it would not be a safe URL path).
pub fn secret_version_name(reference: &str, project: &str) -> Option<String> {
    let (secret, version) = reference
        .rsplit_once("/versions/")
        .unwrap_or((reference, "latest"));
    let full = if secret.starts_with("projects/") {
        secret.to_string()
    } else {
        format!("projects/{project}/secrets/{secret}")
    };
    let parts: Vec<&str> = full.split('/').collect();
    let valid = matches!(parts.as_slice(), ["projects", p, "secrets", s] if is_path_segment(p) && is_path_segment(s))
        && is_path_segment(version);
    valid.then(|| format!("{full}/versions/{version}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_references_become_full_version_names_or_nothing() {
        assert_eq!(
            secret_version_name("projects/p/secrets/db/versions/3", "other").as_deref(),
            Some("projects/p/secrets/db/versions/3")
        );
        assert_eq!(
            secret_version_name("db", "p").as_deref(),
            Some("projects/p/secrets/db/versions/latest")
        );
        assert_eq!(
            secret_version_name("projects/p/secrets/../x/versions/1", "p"),
            None
        );
        assert_eq!(secret_version_name("db/versions/1?alt=media", "p"), None);
        assert_eq!(
            secret_version_name("projects/p/secrets/../versions/1", "p"),
            None
        );
    }

    #[test]
    fn endpoints_prefer_the_flag_then_the_emulator_then_google() {
        let endpoints = Endpoints::new(
            Some("http://su:1/".into()),
            None,
            None,
            Some("http://127.0.0.1:8090"),
        );
        assert_eq!(endpoints.service_usage, "http://su:1");
        assert_eq!(endpoints.iam, "http://127.0.0.1:8090");
        assert_eq!(
            Endpoints::new(None, None, None, None).secret_manager,
            SECRET_MANAGER
        );
    }
}
