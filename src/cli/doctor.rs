//! `deployer doctor [SERVICE…]`: one line per check, PASS/WARN/FAIL, each failure with its fix
//! (the checks themselves are `crate::doctor`'s).

use clap::Args;
use serde::Serialize;

use super::{target, Context};
use crate::{
    config::Target,
    doctor::{self, Finding, Level},
    exit::ExitStatus,
};

/// `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The services to check [default: every service].
    pub services: Vec<String>,
    /// Where the metric providers are (as `check` and `deploy`).
    #[command(flatten)]
    pub providers: super::check::ProviderFlags,
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
        for config in &configs {
            let config = config.clone().with_overrides(&context.overrides);
            let check = format!("{}: project and region", config.name);
            let id = match target::service_id(&config) {
                Ok(id) => {
                    findings.push(Finding {
                        check,
                        level: Level::Pass,
                        detail: format!("`{id}`"),
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
                    findings.extend(doctor::cloud_run(&platform, &id, &config.name).await)
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
