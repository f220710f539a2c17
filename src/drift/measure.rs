//! [`measure`]: what serves each service, read concurrently, and its drift against `main`, from
//! the local repository or the GitHub API. What `deployer drift`, `deployer health` and `deployer
//! fleet --changed` report; the CLI resolves which service runs where ([`ServiceTarget`]) and
//! prints.

use std::time::Duration;

use anyhow::Context as _;

use super::{deployed, DriftReport, GitOptions, ServiceInput};
use crate::{
    config::ServiceConfig,
    credentials::CredentialsError,
    notify::github::{GitHubClient, RepositoryName},
    platform::{
        cloud_run::{CloudRunPlatform, ConnectError, Endpoint},
        ServiceId,
    },
    repo::Repository,
};

/// How long reading one service (or revision, or image) may take.
const PLATFORM_TIME_LIMIT: Duration = Duration::from_secs(10);

/// How long one fetch of `main` may take.
const FETCH_TIME_LIMIT: Duration = Duration::from_secs(30);

/// The deadline of a long-running operation on the clients drift builds: drift only reads, and
/// starts none.
const OPERATION_DEADLINE: Duration = Duration::from_secs(600);

/// A service and where it runs: its platform id and the Cloud Run endpoint that serves it.
#[derive(Debug, Clone)]
pub struct ServiceTarget {
    /// The service definition.
    pub config: ServiceConfig,
    /// Its platform id.
    pub id: ServiceId,
    /// The Admin API that serves it.
    pub endpoint: Endpoint,
}

/// Where the history of `main` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistorySource {
    /// The local repository when there is one, else GitHub.
    Auto,
    /// The local repository.
    Git,
    /// The GitHub API.
    Github,
}

/// Reads what serves every target, concurrently, with one client per distinct endpoint
/// (building a client loads the CA certificates: far more work than a request).
async fn read_all(targets: Vec<ServiceTarget>) -> Vec<ServiceInput> {
    let mut platforms: Vec<(Endpoint, Result<CloudRunPlatform, String>)> = Vec::new();
    let mut pending = Vec::new();
    for ServiceTarget {
        config,
        id,
        endpoint,
    } in targets
    {
        let connected = match platforms.iter().find(|(known, _)| *known == endpoint) {
            Some((_, connected)) => connected.clone(),
            None => {
                let connected = CloudRunPlatform::connect(&endpoint, OPERATION_DEADLINE)
                    .await
                    .map_err(unavailable);
                platforms.push((endpoint, connected.clone()));
                connected
            }
        };
        pending.push(async move {
            let deployed = match connected {
                Ok(platform) => {
                    deployed::read(
                        &platform,
                        &id,
                        &deployed::RegistryLabels,
                        PLATFORM_TIME_LIMIT,
                    )
                    .await
                }
                Err(error) => deployed::DeployedState::Unavailable(error),
            };
            ServiceInput {
                config,
                id,
                deployed,
            }
        });
    }
    futures::future::join_all(pending).await
}

/// Why the platform cannot be read, as results show it: `no Google credentials` (the full
/// message, with its fix, is said once per run by the CLI), else the whole message.
fn unavailable(error: ConnectError) -> String {
    if matches!(
        error,
        ConnectError::Credentials(CredentialsError::Missing { .. })
    ) {
        crate::checks::NO_CREDENTIALS.to_string()
    } else {
        format!("{:#}", anyhow::Error::from(error))
    }
}

/// The GitHub client of a run: the token of the first service's variable (services of one
/// repository share it).
pub fn github_client(inputs: &[ServiceInput]) -> anyhow::Result<GitHubClient> {
    let variable = inputs
        .first()
        .map(|input| input.config.notifications.github_token_env.clone())
        .unwrap_or_else(|| "GITHUB_TOKEN".into());
    GitHubClient::from_environment(&variable).context("cannot use the GitHub API")
}

/// The repository of `GITHUB_REPOSITORY`, when set.
pub fn default_repository() -> anyhow::Result<Option<RepositoryName>> {
    match std::env::var("GITHUB_REPOSITORY") {
        Ok(value) if !value.trim().is_empty() => Ok(Some(
            RepositoryName::parse(&value).context("`GITHUB_REPOSITORY`")?,
        )),
        _ => Ok(None),
    }
}

/// Reads what serves `targets` and measures their drift, from the repository at `root` or from
/// GitHub (`source`); `fetch` fetches `main` first. `say` gets the lines meant for people (the
/// history read from GitHub for want of a repository).
pub async fn measure(
    targets: Vec<ServiceTarget>,
    root: &std::path::Path,
    source: HistorySource,
    fetch: bool,
    say: &(dyn Fn(String) + Sync),
) -> anyhow::Result<(Vec<ServiceInput>, DriftReport)> {
    let inputs = read_all(targets).await;
    let now = chrono::Utc::now();
    let repository = match source {
        HistorySource::Github => None,
        HistorySource::Git => Some(Repository::discover(root).context(
            "`--source git` needs the repository's working tree (use `--source github` where there is none)",
        )?),
        HistorySource::Auto => Repository::discover(root).ok(),
    };
    let report = match &repository {
        Some(repository) => super::from_git(
            repository,
            &inputs,
            &GitOptions {
                fetch,
                fetch_time_limit: FETCH_TIME_LIMIT,
            },
            now,
        ),
        None => {
            if source == HistorySource::Auto {
                say(format!(
                    "no git repository at `{}`: reading the history from the GitHub API",
                    root.display()
                ));
            }
            let client = github_client(&inputs)?;
            super::from_github(&client, &inputs, default_repository()?.as_ref(), now).await
        }
    };
    Ok((inputs, report))
}
