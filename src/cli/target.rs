//! From a service definition to a connected [`Platform`]: which endpoint, which service id.
//!
//! Resolution order for the Cloud Run Admin API endpoint: `--endpoint` / `DEPLOYER_CLOUD_RUN_ENDPOINT`
//! (any target), then for `kind = "local"` targets the local emulator's endpoint
//! (`DEPLOYER_EMULATOR_ENDPOINT`, default `http://127.0.0.1:8090`), else Google's API with
//! Application Default Credentials.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;

use crate::{
    cli::UsageError,
    config::{ServiceConfig, Target},
    emulator::{self, background},
    platform::{
        cloud_run::{CloudRunPlatform, Endpoint},
        ServiceId,
    },
};

/// The emulator's data directory: `DEPLOYER_EMULATOR_DATA_DIR`, else the default.
pub fn emulator_data_dir() -> PathBuf {
    std::env::var_os("DEPLOYER_EMULATOR_DATA_DIR")
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(emulator::default_data_dir)
}

/// The endpoint of the local emulator (see the module doc), and whether one is known to run.
fn emulator_endpoint() -> (String, bool) {
    if let Some(url) = std::env::var("DEPLOYER_EMULATOR_ENDPOINT")
        .ok()
        .filter(|value| !value.is_empty())
    {
        return (url, true);
    }
    match background::find_running(&emulator_data_dir()) {
        Some(running) => (running.endpoint, true),
        None => (
            format!("http://127.0.0.1:{}", emulator::DEFAULT_PORT),
            false,
        ),
    }
}

/// For a local target with no emulator running (and no endpoint given): starts one in the
/// background and returns a line saying so. Nothing to do for other targets.
pub fn ensure_emulator(
    config: &ServiceConfig,
    explicit: Option<&str>,
) -> anyhow::Result<Option<String>> {
    if explicit.is_some() || !matches!(config.target, Target::Local { .. }) {
        return Ok(None);
    }
    if emulator_endpoint().1 {
        return Ok(None);
    }
    let executable = std::env::current_exe().context("cannot find the deployer executable")?;
    let data_dir = emulator_data_dir();
    let running = background::spawn_background(&background::BackgroundOptions {
        executable,
        data_dir: data_dir.clone(),
        // The same variable `deployer emulator --port` reads; 0 picks any free port.
        port: std::env::var("DEPLOYER_EMULATOR_PORT")
            .ok()
            .and_then(|port| port.parse().ok())
            .unwrap_or(emulator::DEFAULT_PORT),
        startup_timeout: std::time::Duration::from_secs(30),
    })
    .context("cannot start the local emulator in the background")?;
    Ok(Some(format!(
        "started the local Cloud Run emulator in the background at {} (pid {}, data `{}`); stop it with `deployer emulator stop`",
        running.endpoint,
        running.pid,
        data_dir.display()
    )))
}

/// How long a long-running Cloud Run operation (a new revision) may take before deployer gives up
/// waiting — generous, since a cold image pull on Cloud Run can take minutes.
pub const OPERATION_DEADLINE: Duration = Duration::from_secs(600);

/// How long an emergency rollback waits for one Cloud Run operation (a traffic change, which
/// creates no revision and takes seconds) before it re-reads and tries again; the rollback's
/// whole budget is [`crate::rollout::rollback::RollbackPolicy`]'s.
pub const ROLLBACK_OPERATION_DEADLINE: Duration = Duration::from_secs(60);

/// The platform-side id of a service: project and region from the (overridden) target.
pub fn service_id(config: &ServiceConfig) -> Result<ServiceId, UsageError> {
    match &config.target {
        // A multi-region service's config here is one of its regions (`in_region`), or, for
        // a command that acts on one region, its canary region.
        Target::Local { .. } => Ok(ServiceId {
            project: "local".into(),
            region: config
                .regions()
                .into_iter()
                .next()
                .unwrap_or_else(|| crate::config::LOCAL_REGION.to_string()),
            name: config.platform_service_name().to_string(),
        }),
        Target::CloudRun { project, .. } => {
            let missing = |what: &str, flag: &str, variable: &str| {
                UsageError {
                message: format!(
                    "service `{}` has no {what}: set `target.{what}` in its file, pass `--{flag}`, or set `{variable}`",
                    config.name
                ),
            }
            };
            let project = project
                .clone()
                .ok_or_else(|| missing("project", "project", "DEPLOYER_PROJECT"))?;
            let region = config
                .regions()
                .into_iter()
                .next()
                .ok_or_else(|| missing("region", "region", "DEPLOYER_REGION"))?;
            // Both become parts of every resource path (`projects/P/locations/R/...`): a
            // `--region ../../x` must stop here (exit 2), not reach a URL.
            crate::platform::check_project(&project).map_err(|error| UsageError {
                message: error.to_string(),
            })?;
            crate::platform::check_region(&region).map_err(|error| UsageError {
                message: error.to_string(),
            })?;
            Ok(ServiceId {
                project,
                region,
                name: config.platform_service_name().to_string(),
            })
        }
    }
}

/// The endpoint for a service's target (see the module doc for the order).
pub fn endpoint(config: &ServiceConfig, explicit: Option<&str>) -> Endpoint {
    if let Some(url) = explicit {
        return Endpoint::Custom(url.to_string());
    }
    match config.target {
        Target::Local { .. } => Endpoint::Custom(emulator_endpoint().0),
        Target::CloudRun { .. } => Endpoint::Google,
    }
}

/// Connects to the platform of a service's target.
pub async fn connect(
    config: &ServiceConfig,
    explicit: Option<&str>,
) -> anyhow::Result<CloudRunPlatform> {
    connect_with_deadline(config, explicit, OPERATION_DEADLINE).await
}

/// [`connect`] waiting at most `operation_deadline` for each long-running operation.
pub async fn connect_with_deadline(
    config: &ServiceConfig,
    explicit: Option<&str>,
    operation_deadline: Duration,
) -> anyhow::Result<CloudRunPlatform> {
    let endpoint = endpoint(config, explicit);
    Ok(CloudRunPlatform::connect(&endpoint, operation_deadline)
        .await?
        .with_waiting_notice(waiting_notice()))
}

/// Operations still running after a few seconds are announced on stderr, one line each
/// (`Cloud Run applying the update of `hello` (its operation): still running after 5s, gives up
/// after 1m`).
pub fn waiting_notice() -> crate::platform::cloud_run::WaitingNotice {
    std::sync::Arc::new(|line: String| eprintln!("{line}"))
}
