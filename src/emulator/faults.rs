//! Fault injection for tests: make a fraction of Google API calls fail (503 `UNAVAILABLE` or
//! 429 `RESOURCE_EXHAUSTED`), add latency to them, make revisions fail to start, and make a
//! revision's requests fail or slow down in the data plane (a bad canary, with any image).
//!
//! Faults are read and replaced at runtime through `GET/PUT/DELETE /emulator/v1/faults` (JSON
//! body [`FaultConfig`]); they apply to the Cloud Run, Monitoring and Logging APIs, never to the
//! emulator's own `/emulator/v1/*` endpoints or `/metrics`, so a test can always turn them off.

use std::{collections::BTreeMap, sync::RwLock, time::Duration};

use serde::{Deserialize, Serialize};

use super::api_error::{ApiError, Code};

/// The faults in force.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultConfig {
    /// Fraction (0.0–1.0) of API calls answered with an error instead of being served.
    #[serde(default)]
    pub error_rate: f64,
    /// HTTP status of injected errors: 503 (`UNAVAILABLE`, default) or 429
    /// (`RESOURCE_EXHAUSTED`), or 500 (`INTERNAL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_status: Option<u16>,
    /// A mix of statuses for injected errors (each one of these, equally likely; e.g.
    /// `[503, 429]`, as a busy Google API answers). Wins over `errorStatus` when not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_statuses: Vec<u16>,
    /// Only calls whose path starts with this prefix are affected (e.g. `/v2/projects`);
    /// all Google API calls when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Only calls with this HTTP method are affected (e.g. `PATCH`); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Added to every affected API call before it is served, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Every new revision of these services (service ids) fails its start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_revision_start: Vec<String>,
    /// Data plane: fraction (0.0–1.0) of requests answered by the router with
    /// `requestErrorStatus` instead of reaching the container, by revision name or service id
    /// (a revision's own entry wins). Counted and logged like the container's own answers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub request_error_rate: BTreeMap<String, f64>,
    /// Status of injected request errors (400–599; default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_error_status: Option<u16>,
    /// Data plane: milliseconds added to each request, by revision name or service id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub request_latency_ms: BTreeMap<String, u64>,
    /// Permissions `testIamPermissions` does not grant (all others are granted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied_permissions: Vec<String>,
}

impl FaultConfig {
    /// Checks the values are usable.
    pub fn validate(&self) -> Result<(), ApiError> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(ApiError::invalid(format!(
                "errorRate is {}: it must be between 0.0 and 1.0",
                self.error_rate
            )));
        }
        if let Some((key, rate)) = self
            .request_error_rate
            .iter()
            .find(|(_, rate)| !(0.0..=1.0).contains(*rate))
        {
            return Err(ApiError::invalid(format!(
                "requestErrorRate[{key}] is {rate}: it must be between 0.0 and 1.0"
            )));
        }
        if let Some(status) = self
            .request_error_status
            .filter(|status| !(400..=599).contains(status))
        {
            return Err(ApiError::invalid(format!(
                "requestErrorStatus is {status}: use an HTTP error status (400-599)"
            )));
        }
        if let Some(status) = self.error_status {
            if !matches!(status, 429 | 500 | 503) {
                return Err(ApiError::invalid(format!(
                    "errorStatus is {status}: use 503, 429 or 500"
                )));
            }
        }
        if let Some(status) = self
            .error_statuses
            .iter()
            .find(|status| !matches!(status, 429 | 500 | 503))
        {
            return Err(ApiError::invalid(format!(
                "errorStatuses holds {status}: use 503, 429 or 500"
            )));
        }
        Ok(())
    }
}

/// The status of an injected error, for a call whose `draw` fell under `errorRate`: one of
/// `errorStatuses` (the draw, rescaled to `[0, 1)` below the rate, picks it), else `errorStatus`.
fn injected_status(config: &FaultConfig, draw: f64) -> Option<u16> {
    if config.error_statuses.is_empty() {
        return config.error_status;
    }
    let position = (draw / config.error_rate).clamp(0.0, 1.0);
    let count = config.error_statuses.len();
    let index = ((position * count as f64) as usize).min(count - 1);
    config.error_statuses.get(index).copied()
}

/// The faults of one emulator.
#[derive(Debug, Default)]
pub struct Faults {
    config: RwLock<FaultConfig>,
}

/// What to do with one API call.
#[derive(Debug, PartialEq)]
pub struct Injection {
    /// Wait this long first.
    pub delay: Duration,
    /// Then answer this error instead of serving.
    pub error: Option<ApiError>,
}

impl Faults {
    /// Faults from a configuration (validated by the caller).
    pub fn new(config: FaultConfig) -> Self {
        Self {
            config: RwLock::new(config),
        }
    }

    /// The faults in force.
    pub fn get(&self) -> FaultConfig {
        self.config
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the faults.
    pub fn set(&self, config: FaultConfig) -> Result<(), ApiError> {
        config.validate()?;
        *self
            .config
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
        Ok(())
    }

    /// Decides the fate of an API call; `draw` is uniform in `[0, 1)`.
    pub fn decide(&self, method: &str, path: &str, draw: f64) -> Injection {
        let config = self.get();
        let applies = config
            .path_prefix
            .as_deref()
            .is_none_or(|prefix| path.starts_with(prefix))
            && config
                .method
                .as_deref()
                .is_none_or(|wanted| wanted.eq_ignore_ascii_case(method));
        if !applies {
            return Injection {
                delay: Duration::ZERO,
                error: None,
            };
        }
        let error = (draw < config.error_rate).then(|| match injected_status(&config, draw) {
            Some(429) => ApiError::new(
                Code::ResourceExhausted,
                "injected fault: quota exceeded for write requests per minute",
            ),
            Some(500) => ApiError::new(Code::Internal, "injected fault: internal error"),
            _ => ApiError::new(
                Code::Unavailable,
                "injected fault: the service is unavailable",
            ),
        });
        Injection {
            delay: Duration::from_millis(config.latency_ms),
            error,
        }
    }

    /// What the router does to one request for a revision: a delay, then maybe an error
    /// status instead of forwarding. `draw` is uniform in `[0, 1)`.
    pub fn decide_request(
        &self,
        service_id: &str,
        revision: &str,
        draw: f64,
    ) -> (Duration, Option<u16>) {
        let config = self.get();
        let lookup = |map: &BTreeMap<String, f64>| {
            map.get(revision).or_else(|| map.get(service_id)).copied()
        };
        let latency = config
            .request_latency_ms
            .get(revision)
            .or_else(|| config.request_latency_ms.get(service_id))
            .copied()
            .unwrap_or(0);
        let error = lookup(&config.request_error_rate)
            .filter(|rate| draw < *rate)
            .map(|_| config.request_error_status.unwrap_or(500));
        (Duration::from_millis(latency), error)
    }

    /// True when revisions of this service must fail their start.
    pub fn fails_start(&self, service_id: &str) -> bool {
        self.get()
            .fail_revision_start
            .iter()
            .any(|name| name == service_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_follow_rate_status_and_scope() {
        let faults = Faults::default();
        assert_eq!(faults.decide("GET", "/v2/x", 0.0).error, None);
        faults
            .set(FaultConfig {
                error_rate: 0.5,
                error_status: Some(429),
                method: Some("PATCH".into()),
                latency_ms: 20,
                ..FaultConfig::default()
            })
            .unwrap();
        let hit = faults.decide("patch", "/v2/x", 0.49);
        assert_eq!(
            hit.error.map(|error| error.code),
            Some(Code::ResourceExhausted)
        );
        assert_eq!(hit.delay, Duration::from_millis(20));
        assert_eq!(faults.decide("PATCH", "/v2/x", 0.5).error, None);
        assert_eq!(faults.decide("GET", "/v2/x", 0.0).error, None);
        assert!(faults
            .set(FaultConfig {
                error_rate: 1.5,
                ..FaultConfig::default()
            })
            .is_err());
    }

    #[test]
    fn a_mix_of_error_statuses_answers_each_of_them() {
        let faults = Faults::default();
        faults
            .set(FaultConfig {
                error_rate: 0.3,
                error_statuses: vec![503, 429],
                path_prefix: Some("/v2".into()),
                ..FaultConfig::default()
            })
            .unwrap();
        let code = |draw: f64| {
            faults
                .decide("GET", "/v2/entries:list", draw)
                .error
                .map(|e| e.code)
        };
        assert_eq!(code(0.0), Some(Code::Unavailable));
        assert_eq!(code(0.14), Some(Code::Unavailable));
        assert_eq!(code(0.16), Some(Code::ResourceExhausted));
        assert_eq!(code(0.2999), Some(Code::ResourceExhausted));
        assert_eq!(code(0.3), None);
        assert_eq!(faults.decide("GET", "/v3/x", 0.0).error, None);
        let refused = faults.set(FaultConfig {
            error_rate: 0.3,
            error_statuses: vec![503, 404],
            ..FaultConfig::default()
        });
        assert!(refused
            .unwrap_err()
            .message
            .contains("errorStatuses holds 404"));
    }

    #[test]
    fn request_faults_prefer_the_revision_entry() {
        let faults = Faults::default();
        faults
            .set(FaultConfig {
                request_error_rate: BTreeMap::from([
                    ("svc".into(), 1.0),
                    ("svc-00002-abc".into(), 0.0),
                ]),
                request_latency_ms: BTreeMap::from([("svc".into(), 7)]),
                request_error_status: Some(503),
                ..FaultConfig::default()
            })
            .unwrap();
        assert_eq!(
            faults.decide_request("svc", "svc-00001-xyz", 0.5),
            (Duration::from_millis(7), Some(503))
        );
        assert_eq!(
            faults.decide_request("svc", "svc-00002-abc", 0.0),
            (Duration::from_millis(7), None)
        );
        assert_eq!(
            faults.decide_request("other", "other-00001-abc", 0.0),
            (Duration::ZERO, None)
        );
        assert!(faults
            .set(FaultConfig {
                request_error_status: Some(200),
                ..FaultConfig::default()
            })
            .is_err());
    }
}
