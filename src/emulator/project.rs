//! The project around the services, as far as `deployer doctor` asks about it: which Google APIs
//! are enabled (Service Usage `services.get`, and a `SERVICE_DISABLED` refusal from every API the
//! emulator serves while its API is disabled), the caller's permissions on a service account
//! (IAM `serviceAccounts.testIamPermissions`), and Secret Manager version metadata
//! (`secrets.versions.get`; never a payload).
//!
//! Every API is enabled and no secret exists until a test says otherwise through
//! `GET/PUT /emulator/v1/project` (JSON body [`ProjectConfig`]). Like the faults, this is kept
//! in memory only: a restarted emulator starts with every API enabled.

use std::{collections::BTreeSet, sync::RwLock};

use axum::{
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::api_error::{ApiError, Code};

/// What the project looks like.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectConfig {
    /// APIs that are not enabled (`logging.googleapis.com`, …): Service Usage answers them
    /// `DISABLED`, and their calls are refused with `SERVICE_DISABLED`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub disabled_services: BTreeSet<String>,
    /// Secret versions that exist, by full name
    /// (`projects/P/secrets/S/versions/1`); `versions/latest` resolves when the secret has any.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub secret_versions: BTreeSet<String>,
}

impl ProjectConfig {
    /// Checks the values are usable.
    pub fn validate(&self) -> Result<(), ApiError> {
        if let Some(api) = self
            .disabled_services
            .iter()
            .find(|api| !api.ends_with(".googleapis.com"))
        {
            return Err(ApiError::invalid(format!(
                "disabledServices: `{api}` is not an API name: use e.g. `logging.googleapis.com`"
            )));
        }
        if let Some(version) = self
            .secret_versions
            .iter()
            .find(|version| secret_version_parts(version).is_none())
        {
            return Err(ApiError::invalid(format!(
                "secretVersions: `{version}` is not `projects/P/secrets/S/versions/V`"
            )));
        }
        Ok(())
    }
}

/// `projects/P/secrets/S/versions/V` → (`projects/P/secrets/S`, `V`).
fn secret_version_parts(name: &str) -> Option<(&str, &str)> {
    let (secret, version) = name.rsplit_once("/versions/")?;
    let parts: Vec<&str> = secret.split('/').collect();
    let well_formed = matches!(parts.as_slice(), ["projects", p, "secrets", s] if !p.is_empty() && !s.is_empty())
        && !version.is_empty()
        && !version.contains('/');
    well_formed.then_some((secret, version))
}

/// The project state of one emulator.
#[derive(Debug, Default)]
pub struct Project {
    config: RwLock<ProjectConfig>,
}

impl Project {
    /// The state in force.
    pub fn get(&self) -> ProjectConfig {
        self.config
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the state.
    pub fn set(&self, config: ProjectConfig) -> Result<(), ApiError> {
        config.validate()?;
        *self
            .config
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
        Ok(())
    }

    /// The refusal Google answers a call to a disabled API (403 `PERMISSION_DENIED` with an
    /// `ErrorInfo` of reason `SERVICE_DISABLED`), when `path` belongs to one.
    pub fn refuse_disabled(&self, path: &str) -> Option<Response> {
        let api = api_of(path)?;
        if !self.get().disabled_services.contains(api) {
            return None;
        }
        let project = project_of(path);
        let consumer = project.map(|project| format!("projects/{project}"));
        let message = format!(
            "{api} has not been used in project {} before or it is disabled. Enable it by visiting https://console.developers.google.com/apis/api/{api}/overview?project={} then retry.",
            project.unwrap_or("PROJECT"),
            project.unwrap_or("PROJECT"),
        );
        let mut metadata = json!({ "service": api });
        if let Some(consumer) = consumer {
            metadata["consumer"] = json!(consumer);
        }
        let body = json!({"error": {
            "code": 403,
            "message": message,
            "status": "PERMISSION_DENIED",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "SERVICE_DISABLED",
                "domain": "googleapis.com",
                "metadata": metadata,
            }],
        }});
        Some((StatusCode::FORBIDDEN, Json(body)).into_response())
    }

    /// Answers a `/v1/...` call of Service Usage, IAM or Secret Manager; `None` when `path` is
    /// none of theirs (Pub/Sub and Cloud Scheduler share the prefix).
    pub fn dispatch(
        &self,
        method: &Method,
        path: &str,
        body: &[u8],
        denied: &[String],
    ) -> Option<Result<Value, ApiError>> {
        let segments: Vec<&str> = path.split('/').collect();
        Some(match (method.clone(), segments.as_slice()) {
            (Method::GET, ["projects", project, "services", api]) => Ok(self.service(project, api)),
            (Method::POST, ["projects", _, "serviceAccounts", account])
                if account.ends_with(":testIamPermissions") =>
            {
                test_iam_permissions(denied, body)
            }
            (Method::POST, ["projects", _, "secrets", secret])
                if secret.ends_with(":testIamPermissions") =>
            {
                test_iam_permissions(denied, body)
            }
            (Method::GET, ["projects", _, "secrets", _, "versions", version])
                if !version.contains(':') =>
            {
                self.secret_version(path)
            }
            (_, ["projects", _, "secrets", ..]) => Err(ApiError::new(
                Code::Unimplemented,
                format!("{method} /v1/{path} is not implemented by the emulator (it keeps no secret payloads)"),
            )),
            _ => return None,
        })
    }

    /// Service Usage `services.get`.
    fn service(&self, project: &str, api: &str) -> Value {
        let state = if self.get().disabled_services.contains(api) {
            "DISABLED"
        } else {
            "ENABLED"
        };
        json!({
            "name": format!("projects/{project}/services/{api}"),
            "parent": format!("projects/{project}"),
            "config": { "name": api },
            "state": state,
        })
    }

    /// Secret Manager `secrets.versions.get`: metadata only.
    fn secret_version(&self, name: &str) -> Result<Value, ApiError> {
        let (secret, version) = secret_version_parts(name)
            .ok_or_else(|| ApiError::invalid(format!("`{name}` is not a secret version name")))?;
        let versions = self.get().secret_versions;
        let found = if version == "latest" {
            versions
                .iter()
                .filter(|known| secret_version_parts(known).is_some_and(|(s, _)| s == secret))
                .max_by_key(|known| {
                    secret_version_parts(known)
                        .and_then(|(_, v)| v.parse::<u64>().ok())
                        .unwrap_or(0)
                })
                .cloned()
        } else {
            versions.contains(name).then(|| name.to_string())
        };
        match found {
            Some(found) => Ok(json!({
                "name": found,
                "state": "ENABLED",
                "createTime": "2026-01-01T00:00:00Z",
            })),
            None => Err(ApiError::not_found(format!(
                "Secret Version [{name}] not found or has no versions."
            ))),
        }
    }
}

/// `testIamPermissions`: every permission asked is granted (a local target has no IAM), but
/// those the faults deny (`deniedPermissions`), so that `deployer doctor` can be tested failing.
pub fn test_iam_permissions(denied: &[String], body: &[u8]) -> Result<Value, ApiError> {
    #[derive(serde::Deserialize)]
    struct Request {
        #[serde(default)]
        permissions: Vec<String>,
    }
    let request: Request = serde_json::from_slice(body)
        .map_err(|error| ApiError::invalid(format!("Invalid JSON payload received. {error}")))?;
    let granted: Vec<String> = request
        .permissions
        .into_iter()
        .filter(|permission| !denied.contains(permission))
        .collect();
    Ok(json!({ "permissions": granted }))
}

/// The API a call of the emulator belongs to, by its path.
fn api_of(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    Some(match segments.as_slice() {
        ["v2", "entries:list"] => "logging.googleapis.com",
        ["v2", ..] => "run.googleapis.com",
        ["v3", ..] => "monitoring.googleapis.com",
        ["v1", "projects", _, "services", ..] => "serviceusage.googleapis.com",
        ["v1", "projects", _, "serviceAccounts", ..] => "iam.googleapis.com",
        ["v1", "projects", _, "secrets", ..] => "secretmanager.googleapis.com",
        ["v1", "projects", _, "topics" | "subscriptions", ..] => "pubsub.googleapis.com",
        ["v1", "projects", _, "locations", _, "jobs", ..] => "cloudscheduler.googleapis.com",
        _ => return None,
    })
}

/// The project named by a path (`/vN/projects/P/...`), unless it is `-`.
fn project_of(path: &str) -> Option<&str> {
    let mut segments = path.trim_start_matches('/').split('/').skip(1);
    match (segments.next(), segments.next()) {
        (Some("projects"), Some(project)) if !project.is_empty() && project != "-" => Some(project),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_api_is_found_by_its_path() {
        assert_eq!(api_of("/v2/entries:list"), Some("logging.googleapis.com"));
        assert_eq!(
            api_of("/v2/projects/p/locations/r/services/s"),
            Some("run.googleapis.com")
        );
        assert_eq!(
            api_of("/v1/projects/-/serviceAccounts/a@p.iam.gserviceaccount.com:testIamPermissions"),
            Some("iam.googleapis.com")
        );
        assert_eq!(
            api_of("/v1/projects/p/locations/r/jobs"),
            Some("cloudscheduler.googleapis.com")
        );
        assert_eq!(api_of("/emulator/v1/faults"), None);
        assert_eq!(project_of("/v1/projects/-/serviceAccounts/x"), None);
        assert_eq!(project_of("/v3/projects/p/timeSeries"), Some("p"));
    }

    #[test]
    fn latest_resolves_to_the_newest_version_and_a_missing_one_is_not_found() {
        let project = Project::default();
        project
            .set(ProjectConfig {
                secret_versions: [
                    "projects/p/secrets/db/versions/2",
                    "projects/p/secrets/db/versions/10",
                ]
                .into_iter()
                .map(String::from)
                .collect(),
                ..ProjectConfig::default()
            })
            .unwrap();
        let latest = project
            .secret_version("projects/p/secrets/db/versions/latest")
            .unwrap();
        assert_eq!(latest["name"], "projects/p/secrets/db/versions/10");
        let missing = project
            .secret_version("projects/p/secrets/other/versions/latest")
            .unwrap_err();
        assert_eq!(missing.code, Code::NotFound);
        assert!(project
            .set(ProjectConfig {
                disabled_services: ["logging".to_string()].into(),
                ..ProjectConfig::default()
            })
            .is_err());
    }
}
