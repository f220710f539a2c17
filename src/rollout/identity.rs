//! Identity verification: is the new revision running the code we meant to deploy?
//!
//! Before a revision gets any traffic, its `/health` on the tag URL (which reaches that revision
//! alone) must report the expected service name and commit, and the platform must report the
//! image digest we pushed. "Wrong code deployed" — a stale image, the wrong service's image — is
//! a hard failure, found while the revision still serves nobody.

use std::time::Duration;

use async_trait::async_trait;

use tokio::time::Instant;

use crate::{
    config::HealthConfig,
    platform::{Platform, RevisionSnapshot, ServiceId},
};

/// The parsed answer of a health endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body, if it was JSON.
    pub body: Option<serde_json::Value>,
}

/// Why a health endpoint gave no answer (without the URL: the caller's message names it).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The request failed: refused, timed out, TLS.
    #[error("{0}")]
    Request(reqwest::Error),
    /// The answer's body could not be read.
    #[error("{0}")]
    Body(reqwest::Error),
}

/// Calls health endpoints.
#[async_trait]
pub trait HealthProbe: Send + Sync {
    /// `GET url`, with a time limit.
    async fn get(&self, url: &str, timeout: Duration) -> Result<HealthAnswer, ProbeError>;
}

/// The real probe, over HTTP.
#[derive(Debug, Clone, Default)]
pub struct HttpProbe {
    client: reqwest::Client,
}

impl HttpProbe {
    /// A probe with its own HTTP client.
    pub fn new() -> Self {
        crate::install_crypto_provider();
        Self {
            client: reqwest::Client::new(),
        }
    }
}

#[async_trait]
impl HealthProbe for HttpProbe {
    async fn get(&self, url: &str, timeout: Duration) -> Result<HealthAnswer, ProbeError> {
        let response = self
            .client
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|error| ProbeError::Request(error.without_url()))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(ProbeError::Body)?;
        Ok(HealthAnswer {
            status,
            body: serde_json::from_str(&text).ok(),
        })
    }
}

/// The value at a dotted path (`build.commit`) of a JSON document, as text.
pub fn field(body: &serde_json::Value, path: &str) -> Option<String> {
    let value = path
        .split('.')
        .try_fold(body, |value, key| value.get(key))?;
    match value {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// What went wrong verifying the new revision's identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// It runs other code than the one deployed (service, commit or image digest): final,
    /// retrying will not change the code.
    #[error("wrong code deployed: {0}")]
    WrongCode(String),
    /// It did not become Ready (failed to start, or not within the ready timeout).
    #[error("{0}")]
    NotReady(String),
    /// Its URL did not answer a healthy identity within the ready timeout.
    #[error("{0}")]
    Unreachable(String),
}

/// True when `reported` names the same commit as `expected` (either may be abbreviated, but at
/// least 7 characters must agree). Compared by characters: `reported` comes from a remote
/// system and may hold anything.
pub fn same_commit(reported: &str, expected: &str) -> bool {
    let reported: Vec<char> = reported.trim().to_lowercase().chars().collect();
    let expected: Vec<char> = expected.trim().to_lowercase().chars().collect();
    let shorter = reported.len().min(expected.len());
    shorter >= 7 && reported[..shorter] == expected[..shorter]
}

/// Checks one health answer against the expected identity.
pub fn check_identity(
    answer: &HealthAnswer,
    health: &HealthConfig,
    service: &str,
    commit: &str,
) -> Result<(), IdentityError> {
    if answer.status != 200 {
        return Err(IdentityError::Unreachable(format!(
            "`{}` answered HTTP {}",
            health.path, answer.status
        )));
    }
    let body = answer.body.as_ref().ok_or_else(|| {
        IdentityError::Unreachable(format!("`{}` did not answer JSON", health.path))
    })?;
    let reported_service = field(body, &health.service_field);
    if reported_service.as_deref() != Some(service) {
        return Err(IdentityError::WrongCode(format!(
            "`{}` reports service {} (field `{}`), expected `{service}`",
            health.path,
            reported_service.map_or("nothing".to_string(), |name| format!(
                "`{}`",
                name.escape_debug()
            )),
            health.service_field
        )));
    }
    let reported_commit = field(body, &health.commit_field);
    match reported_commit {
        Some(reported) if same_commit(&reported, commit) => Ok(()),
        other => Err(IdentityError::WrongCode(format!(
            "`{}` reports commit {} (field `{}`), expected `{commit}`",
            health.path,
            other.map_or("nothing".to_string(), |commit| format!(
                "`{}`",
                commit.escape_debug()
            )),
            health.commit_field
        ))),
    }
}
/// True when the image the platform runs is the image deployed: the same digest.
pub fn same_image(running: &str, deployed: &str) -> bool {
    let digest = |image: &str| image.split_once('@').map(|(_, digest)| digest.to_string());
    match (digest(running), digest(deployed)) {
        (Some(running), Some(deployed)) => running == deployed,
        _ => running == deployed,
    }
}

/// What the new revision must be.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The service name `/health` must report.
    pub service: &'a str,
    /// The commit it must report.
    pub commit: &'a str,
    /// The image the platform must run, by digest.
    pub image: &'a str,
    /// The health endpoint and its identity fields.
    pub health: &'a HealthConfig,
    /// How long the revision may take to become Ready and answer.
    pub ready_timeout: Duration,
}

/// `/health` at `url` reports the expected identity, retried until the ready timeout (a wrong
/// identity is final at once: retrying will not change the code).
pub async fn verify_url(
    probe: &dyn HealthProbe,
    url: &str,
    expected: Expected<'_>,
) -> Result<(), IdentityError> {
    let deadline = Instant::now() + expected.ready_timeout;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        match probe.get(url, expected.health.timeout.get()).await {
            Ok(answer) => {
                match check_identity(&answer, expected.health, expected.service, expected.commit) {
                    Ok(()) => return Ok(()),
                    Err(error @ IdentityError::WrongCode(_)) => return Err(error),
                    Err(error) => last = error.to_string(),
                }
            }
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(IdentityError::Unreachable(format!(
        "`{url}` did not answer a healthy identity within {}: {last}",
        humantime::format_duration(expected.ready_timeout)
    )))
}

/// Waits for `revision` to be Ready, then checks that it runs the expected image digest.
pub async fn wait_ready(
    platform: &dyn Platform,
    id: &ServiceId,
    revision: &str,
    expected: Expected<'_>,
) -> Result<RevisionSnapshot, IdentityError> {
    let deadline = Instant::now() + expected.ready_timeout;
    let ready = loop {
        match platform.revision(id, revision).await {
            Ok(Some(found)) if found.ready => break found,
            Ok(Some(found)) if found.failure.is_some() && !found.reconciling => {
                return Err(IdentityError::NotReady(format!(
                    "revision `{revision}` failed to start: {}",
                    found.failure.unwrap_or_default()
                )))
            }
            Ok(_) | Err(_) if Instant::now() >= deadline => {
                return Err(IdentityError::NotReady(format!(
                    "revision `{revision}` was not Ready within {}",
                    humantime::format_duration(expected.ready_timeout)
                )))
            }
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    if !same_image(&ready.image, expected.image) {
        return Err(IdentityError::WrongCode(format!(
            "revision `{revision}` runs `{}`, expected `{}`",
            ready.image, expected.image
        )));
    }
    Ok(ready)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(body: serde_json::Value) -> HealthAnswer {
        HealthAnswer {
            status: 200,
            body: Some(body),
        }
    }

    #[test]
    fn identity_matches_service_and_commit() {
        let health = HealthConfig::default();
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            check_identity(
                &answer(json!({"service": "hello", "commit": commit})),
                &health,
                "hello",
                commit
            ),
            Ok(())
        );
        assert_eq!(
            check_identity(
                &answer(json!({"service": "hello", "commit": "0123456"})),
                &health,
                "hello",
                commit
            ),
            Ok(())
        );
        let wrong_service = check_identity(
            &answer(json!({"service": "grading-service", "commit": commit})),
            &health,
            "hello",
            commit,
        )
        .unwrap_err()
        .to_string();
        assert!(
            wrong_service.contains("reports service `grading-service`"),
            "{wrong_service}"
        );
        let stale = check_identity(
            &answer(json!({"service": "hello", "commit": "fedcba9"})),
            &health,
            "hello",
            commit,
        )
        .unwrap_err();
        assert!(matches!(stale, IdentityError::WrongCode(_)), "{stale}");
        let short = check_identity(
            &answer(json!({"service": "hello", "commit": "01"})),
            &health,
            "hello",
            commit,
        );
        assert!(short.is_err(), "two characters are not an identity");
    }

    #[test]
    fn dotted_fields_and_non_json_answers() {
        let health = HealthConfig {
            service_field: "build.service".into(),
            ..HealthConfig::default()
        };
        let body = json!({"build": {"service": "hello"}, "commit": "abcdef0"});
        assert_eq!(
            check_identity(&answer(body), &health, "hello", "abcdef0"),
            Ok(())
        );
        let not_json = HealthAnswer {
            status: 200,
            body: None,
        };
        assert!(check_identity(&not_json, &health, "hello", "abcdef0").is_err());
        let down = HealthAnswer {
            status: 503,
            body: None,
        };
        assert_eq!(
            check_identity(&down, &health, "hello", "abcdef0"),
            Err(IdentityError::Unreachable(
                "`/health` answered HTTP 503".into()
            ))
        );
    }

    /// `deploy --commit 'aaaaaaaaaaaéé'` panicked slicing bytes (exit 101); a `/health` that
    /// reports non-ASCII commits did too.
    #[test]
    fn commits_with_multibyte_characters_do_not_panic() {
        assert!(!same_commit("aaaaaaaaaaaéé", "aaaaaaaaaaaa"));
        assert!(same_commit("aaaaaaaéé", "aaaaaaaéé"));
        assert!(!same_commit("ééééééé", "aaaaaaa"));
        assert_eq!(crate::repo::short_commit("aaaaaaéé", 7), "aaaaaaé");
        let health = HealthConfig::default();
        let answer = answer(json!({"service": "hello", "commit": "ééééééééé"}));
        assert!(check_identity(&answer, &health, "hello", "abcdef0123").is_err());
    }

    #[test]
    fn images_compare_by_digest() {
        assert!(same_image(
            "127.0.0.1:5000/hello@sha256:aa",
            "localhost:5000/hello@sha256:aa"
        ));
        assert!(!same_image("repo/hello@sha256:aa", "repo/hello@sha256:bb"));
        assert!(same_image("repo/hello:tag", "repo/hello:tag"));
    }
}
