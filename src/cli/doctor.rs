//! `deployer doctor [SERVICE…]`: one line per check, PASS/WARN/FAIL, each failure with its fix
//! (the checks themselves are `crate::doctor`'s).

use clap::Args;
use serde::Serialize;

use super::{target, Context};
use crate::{
    config::{ServiceConfig, Target, TargetOverrides},
    doctor::{self, google, Finding, Level, RuntimeAccount},
    exit::ExitStatus,
    platform::{cloud_run::CloudRunPlatform, Platform, RevisionSettings, ServiceId},
};

/// `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The services to check [default: every service].
    pub services: Vec<String>,
    /// Where the metric providers are (as `check` and `deploy`).
    #[command(flatten)]
    pub providers: super::check::ProviderFlags,
    /// Service Usage endpoint (which APIs are enabled) [default: the emulator for local
    /// targets, Google otherwise].
    #[arg(long, env = "DEPLOYER_SERVICEUSAGE_ENDPOINT", value_name = "URL", value_parser = super::args::endpoint_url)]
    pub serviceusage_endpoint: Option<String>,
    /// IAM endpoint (`actAs` on the runtime service account) [default: the emulator for local
    /// targets, Google otherwise].
    #[arg(long, env = "DEPLOYER_IAM_ENDPOINT", value_name = "URL", value_parser = super::args::endpoint_url)]
    pub iam_endpoint: Option<String>,
    /// Secret Manager endpoint (secret references) [default: the emulator for local targets,
    /// Google otherwise].
    #[arg(long, env = "DEPLOYER_SECRETMANAGER_ENDPOINT", value_name = "URL", value_parser = super::args::endpoint_url)]
    pub secretmanager_endpoint: Option<String>,
}

#[derive(Serialize)]
struct DoctorOutput<'a> {
    exit_code: u8,
    findings: &'a [Finding],
}

/// Runs `doctor`.
pub fn run(context: &Context, args: &DoctorArgs) -> anyhow::Result<ExitStatus> {
    let (root, configs) = super::drift::load(context, &args.services)?;
    // Google is needed by a service reached through Google's endpoint (not `--endpoint`, not
    // the local emulator).
    let needs_google = context.endpoint.is_none()
        && configs
            .iter()
            .any(|config| matches!(config.target, Target::CloudRun { .. }));
    let findings = super::block_on(async {
        let mut findings = vec![
            doctor::docker_engine().await,
            doctor::git(&root),
            doctor::google_credentials(needs_google),
        ];
        let rest = google::Rest::new().map_err(anyhow::Error::msg)?;
        for config in &configs {
            let origin = origin(config, &context.overrides);
            let config = config.clone().with_overrides(&context.overrides);
            let check = format!("{}: project and region", config.name);
            let id = match target::service_id(&config) {
                Ok(id) => {
                    findings.push(Finding {
                        check,
                        level: Level::Pass,
                        detail: format!("`{id}` ({origin})"),
                        fix: None,
                    });
                    id
                }
                Err(error) => {
                    findings.push(Finding {
                        check,
                        level: Level::Fail,
                        detail: error.to_string(),
                        fix: Some(
                            "set `target.project`/`target.region`, or `--project`/`--region`"
                                .into(),
                        ),
                    });
                    continue;
                }
            };
            match target::connect(&config, context.endpoint.as_deref()).await {
                Ok(platform) => {
                    let (cloud_run, snapshot) =
                        doctor::cloud_run(&platform, &id, &config.name).await;
                    findings.extend(cloud_run);
                    let deployed = match &snapshot {
                        Some(snapshot) => deployed_settings(&platform, &id, snapshot).await,
                        None => RevisionSettings::default(),
                    };
                    let emulator = match target::endpoint(&config, context.endpoint.as_deref()) {
                        crate::platform::cloud_run::Endpoint::Custom(url)
                            if url.starts_with("http://") =>
                        {
                            Some(url)
                        }
                        _ => None,
                    };
                    let endpoints = google::Endpoints::new(
                        args.serviceusage_endpoint.clone(),
                        args.iam_endpoint.clone(),
                        args.secretmanager_endpoint.clone(),
                        emulator.as_deref(),
                    );
                    let mut secrets = deployed.secrets.clone();
                    secrets.extend(config.run.secrets.clone());
                    let apis = doctor::apis_used(&config, !secrets.is_empty());
                    findings.push(
                        doctor::apis_enabled(&rest, &endpoints, &config.name, &id.project, &apis)
                            .await,
                    );
                    let account = runtime_account(&config, &deployed);
                    findings.push(
                        doctor::runtime_service_account(
                            &rest,
                            &endpoints,
                            &config.name,
                            &id.project,
                            &account,
                        )
                        .await,
                    );
                    findings.extend(
                        doctor::secrets(&rest, &endpoints, &config.name, &id.project, &secrets)
                            .await,
                    );
                    if let Some(snapshot) = &snapshot {
                        findings.push(doctor::session_affinity(&config.name, snapshot));
                    }
                }
                Err(error) => findings.push(Finding {
                    check: format!("{}: Cloud Run API", config.name),
                    level: Level::Fail,
                    detail: super::short_cause(&error),
                    fix: Some("see `Google credentials` above, or pass `--endpoint`".into()),
                }),
            }
            let endpoints = super::check::endpoints(&config, &args.providers, context);
            let metrics = crate::checks::request_metrics_for(&config.rollout, &endpoints);
            findings.push(doctor::request_metrics(&config, metrics, &id).await);
            findings.push(doctor::image_repository(&config).await);
            findings.extend(doctor::notifications(&config, &|name| {
                std::env::var_os(name).is_some_and(|value| !value.is_empty())
            }));
        }
        Ok(findings)
    })?;
    let code = doctor::exit_code(&findings);
    if context.output.is_json() {
        context.output.json(&DoctorOutput {
            exit_code: code,
            findings: &findings,
        })?;
    } else {
        context.output.data(render(&findings));
    }
    Ok(if code == 0 {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

/// Where the project and region of a service came from (`config` as written, before
/// `overrides`).
fn origin(config: &ServiceConfig, overrides: &TargetOverrides) -> String {
    let Target::CloudRun {
        project, region, ..
    } = &config.target
    else {
        return "a local target: the emulator's".into();
    };
    let source = |overridden: &Option<String>,
                  written: &Option<String>,
                  flag: &str,
                  variables: &[&str],
                  key: &str| {
        match overridden {
            Some(value) => variables
                .iter()
                .find(|name| std::env::var(name).ok().as_ref() == Some(value))
                .map(|name| format!("`{name}`"))
                .unwrap_or_else(|| format!("`--{flag}`")),
            None if written.is_some() => format!("`target.{key}` of the service file"),
            None => "nowhere".into(),
        }
    };
    format!(
        "project from {}, region from {}",
        source(
            &overrides.project,
            project,
            "project",
            &[
                "DEPLOYER_PROJECT",
                "CLOUDSDK_CORE_PROJECT",
                "GOOGLE_CLOUD_PROJECT"
            ],
            "project"
        ),
        source(
            &overrides.region,
            region,
            "region",
            &["DEPLOYER_REGION", "CLOUDSDK_RUN_REGION"],
            "region"
        ),
    )
}

/// The settings of the revision serving the most traffic (its secrets and service account);
/// none when it cannot be read (the Cloud Run lines above say why).
async fn deployed_settings(
    platform: &CloudRunPlatform,
    id: &ServiceId,
    snapshot: &crate::platform::ServiceSnapshot,
) -> RevisionSettings {
    let Some(revision) = snapshot.primary_revision() else {
        return RevisionSettings::default();
    };
    match platform.revision(id, &revision).await {
        Ok(Some(revision)) => revision.settings,
        _ => RevisionSettings::default(),
    }
}

/// The runtime service account: the service file's, else the deployed revision's, else none.
fn runtime_account(config: &ServiceConfig, deployed: &RevisionSettings) -> RuntimeAccount {
    if let Some(email) = &config.run.service_account {
        return RuntimeAccount::Named {
            email: email.clone(),
            origin: "`run.service_account`",
        };
    }
    if let Some(email) = &deployed.service_account {
        return RuntimeAccount::Named {
            email: email.clone(),
            origin: "as deployed",
        };
    }
    match config.target {
        Target::Local { .. } => RuntimeAccount::Local,
        Target::CloudRun { .. } => RuntimeAccount::Default,
    }
}

/// One line per finding (`PASS  Docker Engine: answers at …`), the fix indented below.
fn render(findings: &[Finding]) -> String {
    let mut text = String::new();
    for finding in findings {
        text.push_str(&format!(
            "{}  {}: {}\n",
            finding.level.label(),
            finding.check,
            finding.detail
        ));
        if let Some(fix) = &finding.fix {
            text.push_str(&format!("      fix: {fix}\n"));
        }
    }
    let failed = findings
        .iter()
        .filter(|finding| finding.level == Level::Fail)
        .count();
    let warned = findings
        .iter()
        .filter(|finding| finding.level == Level::Warn)
        .count();
    text.push_str(&format!(
        "\n{} passed, {warned} warning, {failed} failed",
        findings.len() - failed - warned
    ));
    text
}
