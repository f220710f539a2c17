//! `deployer doctor`: is this machine ready to deploy these services? One finding per check —
//! PASS, WARN or FAIL — each failure with the command that fixes it.
//!
//! A command over the existing adapters, not a new adapter: the Docker Engine through
//! [`crate::image::Engine`], git through [`crate::repo`], credentials through
//! [`crate::credentials`], Cloud Run through [`crate::platform::cloud_run`] (a read of the
//! service, whose disabled-API or permission refusal is already one line with its fix, and
//! `testIamPermissions` for what a deploy writes), and the notification settings by the names
//! of their variables (values are never read into a finding).

use std::path::Path;

use serde::Serialize;

use crate::{
    config::ServiceConfig,
    credentials::{self, CredentialsError},
    platform::{cloud_run::CloudRunPlatform, Platform, ServiceId},
};

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// Ready.
    Pass,
    /// Works, with a gap worth fixing.
    Warn,
    /// A deploy would fail here.
    Fail,
}

impl Level {
    /// `PASS`, `WARN`, `FAIL`.
    pub fn label(self) -> &'static str {
        match self {
            Level::Pass => "PASS",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What was checked (`Docker Engine`, `hello: Cloud Run permissions`).
    pub check: String,
    /// How it ended.
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// The command or page that fixes it (failures and warnings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    fn pass(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            level: Level::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    fn not_passed(
        level: Level,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            check: check.into(),
            level,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// What a deploy writes and reads on a service, asked with `testIamPermissions`.
pub const DEPLOY_PERMISSIONS: [&str; 2] = ["run.services.get", "run.services.update"];

/// The Docker Engine answers (it builds and pushes images).
pub async fn docker_engine() -> Finding {
    match crate::image::Engine::connect().await {
        Ok(engine) => Finding::pass(
            "Docker Engine",
            format!("answers at `{}`", engine.host()),
        ),
        Err(error) => Finding::not_passed(
            Level::Fail,
            "Docker Engine",
            error.to_string(),
            "start the Docker Engine (`sudo systemctl start docker`), or point `DOCKER_HOST` at one",
        ),
    }
}

/// The repository and its `main` branch (preflight and drift compare with it).
pub fn git(root: &Path) -> Finding {
    let repository = match crate::repo::Repository::discover(root) {
        Ok(repository) => repository,
        Err(error) => {
            return Finding::not_passed(
                Level::Fail,
                "git repository",
                error.to_string(),
                "run deployer inside a clone of the repository (`git clone …`)",
            )
        }
    };
    match repository.branch_commit("main") {
        Ok(Some(commit)) => Finding::pass(
            "git repository",
            format!("`main` at {}", crate::repo::short(&commit)),
        ),
        Ok(None) => Finding::not_passed(
            Level::Warn,
            "git repository",
            "no local branch `main`: preflight and drift compare with it",
            "`git fetch origin main:main`",
        ),
        Err(error) => Finding::not_passed(
            Level::Fail,
            "git repository",
            error.to_string(),
            "check the clone (`git status`)",
        ),
    }
}

/// Google credentials, and which kind; `needed` when a service talks to Google.
pub fn google_credentials(needed: bool) -> Finding {
    const CHECK: &str = "Google credentials";
    match credentials::find() {
        Ok(source) => Finding::pass(CHECK, source.describe()),
        Err(_) if !needed => Finding::pass(
            CHECK,
            "none, and none needed: every service here is reached through a local endpoint",
        ),
        Err(CredentialsError::Missing { .. }) => Finding::not_passed(
            Level::Fail,
            CHECK,
            "none found (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's credentials file, a metadata server on Google Cloud)",
            "on a workstation `gcloud auth application-default login`; in CI set `GOOGLE_APPLICATION_CREDENTIALS` to a service-account key file or a Workload Identity Federation configuration",
        ),
        Err(error) => Finding::not_passed(
            Level::Fail,
            CHECK,
            error.to_string(),
            "fix the file, or `gcloud auth application-default login`",
        ),
    }
}

/// The Cloud Run side of one service: the service can be read (the API enabled, the caller
/// allowed to read), and the caller may update it.
pub async fn cloud_run(platform: &CloudRunPlatform, id: &ServiceId, service: &str) -> Vec<Finding> {
    let api = format!("{service}: Cloud Run API");
    let read = match platform.service(id).await {
        Ok(Some(snapshot)) => Finding::pass(
            api,
            format!(
                "`{id}` answers (latest ready revision `{}`)",
                snapshot.latest_ready_revision
            ),
        ),
        Ok(None) => Finding::pass(
            api,
            format!("`{id}` is not deployed yet: the first deploy creates it"),
        ),
        Err(error) => {
            return vec![Finding::not_passed(
            Level::Fail,
            api,
            error.to_string(),
            "see above; `gcloud services list --enabled --project PROJECT` shows the enabled APIs",
        )]
        }
    };
    let check = format!("{service}: Cloud Run permissions");
    let permissions = match platform.granted_permissions(id, &DEPLOY_PERMISSIONS).await {
        Ok(granted) => {
            let missing: Vec<&str> = DEPLOY_PERMISSIONS
                .iter()
                .copied()
                .filter(|permission| !granted.iter().any(|held| held == permission))
                .collect();
            if missing.is_empty() {
                Finding::pass(
                    check,
                    format!("the caller holds {}", DEPLOY_PERMISSIONS.join(", ")),
                )
            } else {
                Finding::not_passed(
                    Level::Fail,
                    check,
                    format!("the caller lacks {}", missing.join(", ")),
                    format!(
                        "`gcloud run services add-iam-policy-binding {} --region {} --project {} --member=MEMBER --role=roles/run.developer`",
                        id.name, id.region, id.project
                    ),
                )
            }
        }
        Err(error) => Finding::not_passed(
            Level::Warn,
            check,
            format!("could not be tested: {error}"),
            "grant the deploying account `roles/run.developer` on the service or the project",
        ),
    };
    vec![read, permissions]
}

/// The request metrics a rollout of the service reads (`rollout.request_metrics`): one read
/// of a probe revision's counts (none is expected), so that a disabled Logging or Monitoring
/// API, or a missing viewer role, shows here rather than as "metrics could not be read" at the
/// first canary step.
pub async fn request_metrics(
    config: &ServiceConfig,
    metrics: Result<Box<dyn crate::checks::RequestMetrics>, crate::checks::MetricsError>,
    id: &ServiceId,
) -> Finding {
    let source = serde_json::to_value(config.rollout.request_metrics)
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_else(|| "request metrics".into());
    let check = format!("{}: request metrics ({source})", config.name);
    let fix = "enable the API (`gcloud services enable logging.googleapis.com monitoring.googleapis.com --project PROJECT`) and grant the deploying account `roles/logging.viewer` and `roles/monitoring.viewer`";
    let metrics = match metrics {
        Ok(metrics) => metrics,
        Err(error) => return Finding::not_passed(Level::Fail, check, error.to_string(), fix),
    };
    let read = metrics.request_counts(
        id,
        "deployer-doctor-probe",
        std::time::Duration::from_secs(60),
    );
    match tokio::time::timeout(std::time::Duration::from_secs(30), read).await {
        Ok(Ok(_)) => Finding::pass(check, "answers"),
        Ok(Err(error)) => Finding::not_passed(Level::Fail, check, error.to_string(), fix),
        Err(_) => Finding::not_passed(
            Level::Fail,
            check,
            "no answer within 30s",
            "check the endpoint (`--logging-endpoint`, `--monitoring-endpoint`) and the network",
        ),
    }
}

/// The image repository of a service: credentials found for its registry the way a push finds
/// them (Docker credential helpers, `docker login`, Application Default Credentials for Google
/// registries), or, for a registry without credentials (a local one), that it answers.
pub async fn image_repository(config: &ServiceConfig) -> Finding {
    let check = format!("{}: image repository", config.name);
    let repository = &config.image.repository;
    let host = crate::image::registry_host(repository);
    match crate::image::RegistryCredentials::resolve(host).await {
        Ok(Some(_)) => Finding::pass(check, format!("credentials found for `{host}`")),
        Ok(None) if crate::image::registry_answers(repository).await => {
            Finding::pass(check, format!("`{host}` answers (no credentials needed)"))
        }
        Ok(None) => Finding::not_passed(
            Level::Warn,
            check,
            format!("`{host}` does not answer and no credentials are configured for it"),
            format!(
                "start the registry, or `gcloud auth configure-docker {host}` for Artifact Registry (a local target deploys the engine's image by its content id without one)"
            ),
        ),
        Err(error) => Finding::not_passed(
            Level::Fail,
            check,
            error.to_string(),
            format!("`gcloud auth configure-docker {host}`, or `docker login {host}`"),
        ),
    }
}

/// The notification settings of a service, by the names of their variables (`is_set` says
/// whether a variable holds a value; values are never read here).
pub fn notifications(config: &ServiceConfig, is_set: &dyn Fn(&str) -> bool) -> Vec<Finding> {
    let notifications = &config.notifications;
    let slack = &notifications.slack_webhook_env;
    let mut findings = vec![if is_set(slack) {
        Finding::pass(
            format!("{}: Slack", config.name),
            format!("`{slack}` is set"),
        )
    } else {
        Finding::not_passed(
            Level::Warn,
            format!("{}: Slack", config.name),
            format!("`{slack}` is not set: alerts and rollout notices are not sent"),
            format!(
                "export `{slack}` with a Slack incoming-webhook URL (a secret of the CI system)"
            ),
        )
    }];
    if let Some(repository) = &notifications.github_repository {
        let token = &notifications.github_token_env;
        findings.push(if is_set(token) {
            Finding::pass(
                format!("{}: GitHub", config.name),
                format!("`{token}` is set for `{repository}`"),
            )
        } else {
            Finding::not_passed(
                Level::Warn,
                format!("{}: GitHub", config.name),
                format!("`{token}` is not set: drift issues on `{repository}` cannot be kept"),
                format!("export `{token}` with a token that may write issues on `{repository}`"),
            )
        });
    }
    findings
}

/// 0 when every check passed, 1 otherwise.
pub fn exit_code(findings: &[Finding]) -> u8 {
    u8::from(findings.iter().any(|finding| finding.level != Level::Pass))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_are_named_by_their_variables_never_by_their_values() {
        let config: ServiceConfig = toml::from_str(
            "name = \"svc\"\nrunbook = \"r.md\"\n[target]\nkind = \"local\"\n[image]\nrepository = \"r\"\n[notifications]\ngithub_repository = \"o/r\"\n",
        )
        .unwrap();
        let none = notifications(&config, &|_| false);
        assert_eq!(
            none.iter().map(|finding| finding.level).collect::<Vec<_>>(),
            [Level::Warn, Level::Warn]
        );
        let all = notifications(&config, &|_| true);
        assert_eq!(exit_code(&all), 0);
        assert!(all[0].detail.contains("`SLACK_WEBHOOK_URL` is set"));
    }

    #[test]
    fn credentials_not_needed_pass_without_any() {
        assert_eq!(google_credentials(false).level, Level::Pass);
    }
}
