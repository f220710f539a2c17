//! From a service definition to a connected [`Platform`]: which endpoint, which service id.
//!
//! Resolution order for the Cloud Run Admin API endpoint: `--endpoint` / `DEPLOYER_CLOUD_RUN_ENDPOINT`
//! (any target), then for `kind = "local"` targets the local emulator's endpoint
//! (`DEPLOYER_EMULATOR_ENDPOINT`, default `http://127.0.0.1:8090`), else Google's API with
//! Application Default Credentials.

use std::time::Duration;

use crate::{
    cli::UsageError,
    config::{ServiceConfig, Target},
    platform::{
        cloud_run::{CloudRunPlatform, Endpoint},
        ServiceId,
    },
};

/// The emulator's default address (`deployer emulator` listens here unless told otherwise).
pub const DEFAULT_EMULATOR_ENDPOINT: &str = "http://127.0.0.1:8090";

/// How long a long-running Cloud Run operation (a new revision) may take before deployer gives up
/// waiting — generous, since a cold image pull on Cloud Run can take minutes.
pub const OPERATION_DEADLINE: Duration = Duration::from_secs(600);

/// The platform-side id of a service: project and region from the (overridden) target.
pub fn service_id(config: &ServiceConfig) -> Result<ServiceId, UsageError> {
    match &config.target {
        Target::Local { .. } => Ok(ServiceId {
            project: "local".into(),
            region: "local".into(),
            name: config.platform_service_name().to_string(),
        }),
        Target::CloudRun {
            project, region, ..
        } => {
            let missing = |what: &str, flag: &str, variable: &str| {
                UsageError {
                message: format!(
                    "service `{}` has no {what}: set `target.{what}` in its file, pass `--{flag}`, or set `{variable}`",
                    config.name
                ),
            }
            };
            Ok(ServiceId {
                project: project
                    .clone()
                    .ok_or_else(|| missing("project", "project", "DEPLOYER_PROJECT"))?,
                region: region
                    .clone()
                    .ok_or_else(|| missing("region", "region", "DEPLOYER_REGION"))?,
                name: config.platform_service_name().to_string(),
            })
        }
    }
}

/// The endpoint for a service's target (see the module doc for the order).
pub fn endpoint(config: &ServiceConfig, explicit: Option<&str>) -> Endpoint {
    let from_env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    if let Some(url) = explicit {
        return Endpoint::Custom(url.to_string());
    }
    match config.target {
        Target::Local { .. } => Endpoint::Custom(
            from_env("DEPLOYER_EMULATOR_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_EMULATOR_ENDPOINT.to_string()),
        ),
        Target::CloudRun { .. } => Endpoint::Google,
    }
}

/// Connects to the platform of a service's target.
pub async fn connect(
    config: &ServiceConfig,
    explicit: Option<&str>,
) -> anyhow::Result<CloudRunPlatform> {
    let endpoint = endpoint(config, explicit);
    Ok(CloudRunPlatform::connect(&endpoint, OPERATION_DEADLINE).await?)
}
