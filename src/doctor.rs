//! `deployer doctor`: is this machine ready to deploy these services? One finding per check —
//! PASS, WARN or FAIL — each failure with the command that fixes it.
//!
//! A command over the existing adapters, not a new adapter: the Docker Engine through
//! [`crate::image::Engine`], git through [`crate::repo`], credentials through
//! [`crate::credentials`], Cloud Run through [`crate::platform::cloud_run`] (a read of the
//! service, whose disabled-API or permission refusal is already one line with its fix, and
//! `testIamPermissions` for what a deploy writes), Service Usage, IAM and Secret Manager through
//! [`google`] (the APIs the service uses enabled, `actAs` on its runtime service account, its
//! secret references resolvable), and the notification settings by the names of their
//! variables (values are never read into a finding).

pub mod google;

use std::{collections::BTreeMap, path::Path};

use serde::Serialize;

use self::google::{CallError, Endpoints, Rest};
use crate::{
    config::{Provider, RequestMetricsSource, ServiceConfig},
    credentials::{self, CredentialsError},
    platform::{cloud_run::CloudRunPlatform, Platform, ServiceId, ServiceSnapshot},
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
/// allowed to read), and the caller may update it; and the service as read (`None` when it is
/// not deployed yet or could not be read).
pub async fn cloud_run(
    platform: &CloudRunPlatform,
    id: &ServiceId,
    service: &str,
) -> (Vec<Finding>, Option<ServiceSnapshot>) {
    let api = format!("{service}: Cloud Run API");
    let (read, snapshot) = match platform.service(id).await {
        Ok(Some(snapshot)) => (
            Finding::pass(
                api,
                format!(
                    "`{id}` answers (latest ready revision `{}`)",
                    snapshot.latest_ready_revision
                ),
            ),
            Some(snapshot),
        ),
        Ok(None) => (
            Finding::pass(
                api,
                format!("`{id}` is not deployed yet: the first deploy creates it"),
            ),
            None,
        ),
        Err(error) => {
            return (
                vec![Finding::not_passed(
                    Level::Fail,
                    api,
                    error.to_string(),
                    "see above; `gcloud services list --enabled --project PROJECT` shows the enabled APIs",
                )],
                None,
            )
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
    (vec![read, permissions], snapshot)
}

/// The Google APIs a deploy of `config` calls, each with what for: Cloud Run always, Cloud
/// Logging and Cloud Monitoring when its request metrics or checks read them, BigQuery when a
/// check queries it, Secret Manager when `has_secrets`.
pub fn apis_used(config: &ServiceConfig, has_secrets: bool) -> Vec<(&'static str, &'static str)> {
    let checks = |provider: Provider| {
        config
            .checks
            .iter()
            .any(|check| check.source.provider() == provider)
    };
    let metrics = config.rollout.request_metrics;
    let mut apis = vec![("run.googleapis.com", "deploys")];
    if metrics == RequestMetricsSource::CloudLogging || checks(Provider::CloudLogging) {
        apis.push(("logging.googleapis.com", "request metrics and checks"));
    }
    if metrics == RequestMetricsSource::CloudMonitoring || checks(Provider::CloudMonitoring) {
        apis.push(("monitoring.googleapis.com", "request metrics and checks"));
    }
    if checks(Provider::Bigquery) {
        apis.push(("bigquery.googleapis.com", "checks"));
    }
    if has_secrets {
        apis.push((
            "secretmanager.googleapis.com",
            "secret environment variables",
        ));
    }
    apis
}

/// A call refused because `api` is not enabled in `project`: the line and the command.
fn disabled(check: String, api: &str, project: &str) -> Finding {
    Finding::not_passed(
        Level::Fail,
        check,
        format!("the `{api}` API is not enabled in project `{project}`"),
        format!("`gcloud services enable {api} --project {project}` (it takes a minute to apply)"),
    )
}

/// The APIs of `apis` are enabled in `project` (Service Usage `services.get`, one call each).
pub async fn apis_enabled(
    rest: &Rest,
    endpoints: &Endpoints,
    service: &str,
    project: &str,
    apis: &[(&str, &str)],
) -> Finding {
    let check = format!("{service}: Google APIs");
    let mut not_enabled = Vec::new();
    for (api, _) in apis {
        let path = format!("v1/projects/{project}/services/{api}");
        match rest.get(&endpoints.service_usage, &path).await {
            Ok(answer) if answer["state"] == "ENABLED" => {}
            Ok(_) => not_enabled.push(*api),
            Err(CallError::Disabled(api)) => return disabled(check, &api, project),
            Err(CallError::Denied(message)) => {
                return Finding::not_passed(
                    Level::Warn,
                    check,
                    format!("could not be checked: {message}"),
                    format!(
                        "grant the deploying account `roles/serviceusage.serviceUsageViewer` (`gcloud projects add-iam-policy-binding {project} --member=MEMBER --role=roles/serviceusage.serviceUsageViewer`)"
                    ),
                )
            }
            Err(error) => {
                return Finding::not_passed(
                    Level::Fail,
                    check,
                    format!("Service Usage: {error}"),
                    format!("check the network and `DEPLOYER_SERVICEUSAGE_ENDPOINT` (now `{}`)", endpoints.service_usage),
                )
            }
        }
    }
    if not_enabled.is_empty() {
        let used: Vec<String> = apis
            .iter()
            .map(|(api, why)| format!("{api} ({why})"))
            .collect();
        Finding::pass(check, format!("enabled: {}", used.join(", ")))
    } else {
        Finding::not_passed(
            Level::Fail,
            check,
            format!(
                "not enabled in project `{project}`: {}",
                not_enabled.join(", ")
            ),
            format!(
                "`gcloud services enable {} --project {project}` (it takes a minute to apply)",
                not_enabled.join(" ")
            ),
        )
    }
}

/// The service account revisions run as, and where that came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeAccount {
    /// Named (by `run.service_account`, or by the deployed revision).
    Named {
        /// Its email.
        email: String,
        /// Where it came from.
        origin: &'static str,
    },
    /// None named: a local target has none.
    Local,
    /// None named: Cloud Run's default (the Compute Engine default service account).
    Default,
}

/// The permission a deploy needs on the runtime service account.
pub const ACT_AS: &str = "iam.serviceAccounts.actAs";

/// The caller may deploy revisions that run as the runtime service account
/// (`iam.serviceAccounts.actAs` through IAM `testIamPermissions`).
pub async fn runtime_service_account(
    rest: &Rest,
    endpoints: &Endpoints,
    service: &str,
    project: &str,
    account: &RuntimeAccount,
) -> Finding {
    let check = format!("{service}: runtime service account");
    let (email, origin) = match account {
        RuntimeAccount::Named { email, origin } => (email, *origin),
        RuntimeAccount::Local => {
            return Finding::pass(check, "none set (a local target runs without one)")
        }
        RuntimeAccount::Default => {
            return Finding::not_passed(
                Level::Warn,
                check,
                "none set: revisions run as the Compute Engine default service account, which holds the project's Editor role",
                format!(
                    "create one (`gcloud iam service-accounts create {service}-runtime --project {project}`) and set `run.service_account = \"{service}-runtime@{project}.iam.gserviceaccount.com\"` in the service file"
                ),
            )
        }
    };
    if !google::is_path_segment(email) || !email.contains('@') {
        return Finding::not_passed(
            Level::Fail,
            check,
            format!(
                "`{}` ({origin}) is not a service account email",
                crate::untrusted::remote_message(email)
            ),
            "set `run.service_account` to an email like `NAME@PROJECT.iam.gserviceaccount.com`",
        );
    }
    let path = format!("v1/projects/-/serviceAccounts/{email}:testIamPermissions");
    let body = serde_json::json!({ "permissions": [ACT_AS] });
    let fix = format!(
        "`gcloud iam service-accounts add-iam-policy-binding {email} --member=MEMBER --role=roles/iam.serviceAccountUser --project {project}` (MEMBER: the deploying account, e.g. `serviceAccount:deployer@{project}.iam.gserviceaccount.com`)"
    );
    match rest.post(&endpoints.iam, &path, &body).await {
        Ok(answer) => {
            let granted = answer["permissions"]
                .as_array()
                .is_some_and(|held| held.iter().any(|permission| permission == ACT_AS));
            if granted {
                Finding::pass(
                    check,
                    format!("`{email}` ({origin}): the caller may act as it"),
                )
            } else {
                Finding::not_passed(
                    Level::Fail,
                    check,
                    format!("the caller lacks {ACT_AS} on `{email}` ({origin})"),
                    fix,
                )
            }
        }
        Err(CallError::Disabled(api)) => disabled(check, &api, project),
        Err(CallError::NotFound(_)) => Finding::not_passed(
            Level::Fail,
            check,
            format!("`{email}` ({origin}) does not exist"),
            format!("`gcloud iam service-accounts create NAME --project {project}`, then set `run.service_account` to its email"),
        ),
        Err(CallError::Denied(message)) => Finding::not_passed(
            Level::Fail,
            check,
            format!("the caller may not test its permissions on `{email}`: {message}"),
            fix,
        ),
        Err(error) => Finding::not_passed(
            Level::Fail,
            check,
            format!("IAM: {error}"),
            format!("check the network and `DEPLOYER_IAM_ENDPOINT` (now `{}`)", endpoints.iam),
        ),
    }
}

/// Each secret environment variable (`NAME` → reference) resolves to an enabled Secret Manager
/// version (its metadata: the payload is never read).
pub async fn secrets(
    rest: &Rest,
    endpoints: &Endpoints,
    service: &str,
    project: &str,
    secrets: &BTreeMap<String, String>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (variable, reference) in secrets {
        let check = format!("{service}: secret `{variable}`");
        let Some(name) = google::secret_version_name(reference, project) else {
            findings.push(Finding::not_passed(
                Level::Fail,
                check,
                "not a Secret Manager reference",
                "write `projects/PROJECT/secrets/SECRET/versions/VERSION` (a version number or `latest`)",
            ));
            continue;
        };
        // `projects/P/secrets/S/versions/V`: checked above.
        let parts: Vec<&str> = name.split('/').collect();
        let (secret_project, secret, version) = (parts[1], parts[3], parts[5]);
        let finding = match rest.get(&endpoints.secret_manager, &format!("v1/{name}")).await {
            Ok(answer) if answer["state"] == "ENABLED" => {
                Finding::pass(check, format!("`{name}` exists and is enabled"))
            }
            Ok(answer) => Finding::not_passed(
                Level::Fail,
                check,
                format!(
                    "`{name}` is {}",
                    crate::untrusted::remote_message(answer["state"].as_str().unwrap_or("in no state"))
                ),
                format!("`gcloud secrets versions enable {version} --secret {secret} --project {secret_project}`, or point `run.secrets.{variable}` at an enabled version"),
            ),
            Err(CallError::Disabled(api)) => disabled(check, &api, secret_project),
            Err(CallError::NotFound(_)) => Finding::not_passed(
                Level::Fail,
                check,
                format!("`{name}` does not exist"),
                format!("`printf %s \"$VALUE\" | gcloud secrets create {secret} --data-file=- --project {secret_project}` (or `gcloud secrets versions add {secret} --data-file=- --project {secret_project}` for a new version), then grant the runtime service account `roles/secretmanager.secretAccessor` on it"),
            ),
            Err(CallError::Denied(message)) => Finding::not_passed(
                Level::Warn,
                check,
                format!("could not be checked: {message}"),
                format!("grant the deploying account `roles/secretmanager.viewer` on the secret (`gcloud secrets add-iam-policy-binding {secret} --member=MEMBER --role=roles/secretmanager.viewer --project {secret_project}`)"),
            ),
            Err(error) => Finding::not_passed(
                Level::Fail,
                check,
                format!("Secret Manager: {error}"),
                format!("check the network and `DEPLOYER_SECRETMANAGER_ENDPOINT` (now `{}`)", endpoints.secret_manager),
            ),
        };
        findings.push(finding);
    }
    findings
}

/// Session affinity of the deployed service: a warning when on (see
/// [`crate::platform::SESSION_AFFINITY_WARNING`]).
pub fn session_affinity(service: &str, snapshot: &ServiceSnapshot) -> Finding {
    let check = format!("{service}: session affinity");
    if !snapshot.session_affinity {
        return Finding::pass(check, "off: a canary gets its share of requests");
    }
    let id = &snapshot.id;
    Finding::not_passed(
        Level::Warn,
        check,
        crate::platform::SESSION_AFFINITY_WARNING
            .trim_start_matches("session affinity is "),
        format!(
            "if the service does not need it, `gcloud run services update {} --no-session-affinity --region {} --project {}`; otherwise expect canary steps to see fewer requests than their percent",
            id.name, id.region, id.project
        ),
    )
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
