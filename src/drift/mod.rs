//! Deployment drift: how far what serves is from what `main` holds, counting only the commits
//! that touch the service.
//!
//! The team's first incident: a fix was committed and never deployed, and the service ran 598
//! commits behind `main` for days. For each service, [`deployed::read`] finds the commit of every
//! revision that serves traffic; the facts against `main` come from the local repository
//! ([`from_git`], the preflight's fetch rules) or, where no checkout exists (the health check's
//! Cloud Run Job), from the GitHub API ([`from_github`]). [`assess`] then turns the facts and
//! the service's `[drift]` thresholds into OK / WARN / CRITICAL, and [`issue`] keeps one GitHub
//! issue per drifting service.
//!
//! Two rules shape every answer. Drift that cannot be measured (a revision with no commit, a
//! commit git does not know, `main` not fetched) is a WARN that says why, never an OK: "no drift
//! found" must mean "none exists". And a deployed commit that is not in `main`'s history
//! (deployed from a branch, or history rewritten) is reported as such, never as "0 behind".

pub mod deployed;
pub mod git_facts;
pub mod github_commits;
pub mod issue;
pub mod measure;
mod source_github;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    config::{DriftConfig, ServiceConfig},
    notify::github::{GitHubClient, RepositoryName},
    platform::ServiceId,
    repo::{short, PathFilter, Repository},
};

pub use deployed::{CommitOrigin, DeployedState, ImageLabels, RegistryLabels, ServingRevision};
pub use git_facts::MainTip;
pub use measure::{measure, HistorySource, ServiceTarget};

/// How many of the service-relevant commits are listed (all are counted).
pub const LISTED_COMMITS: usize = 10;

/// The outcome for a service. Ordered: `Ok < Warn < Critical`, so the worst is the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    /// Nothing of the service's waits undeployed (or not yet for `warn_after`).
    Ok,
    /// Drift past `warn_after`, a deployed commit off `main`, or drift that cannot be measured.
    Warn,
    /// Drift past `critical_after` (or `critical_commits`).
    Critical,
}

impl Severity {
    /// `OK`, `WARN`, `CRITICAL`.
    pub fn label(self) -> &'static str {
        match self {
            Severity::Ok => "OK",
            Severity::Warn => "WARN",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// A commit, as drift lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Commit {
    /// Full id.
    pub id: String,
    /// Author name.
    pub author: String,
    /// First line of the message.
    pub subject: String,
    /// Committer time: when it landed (a rebase or a merge queue sets it), which is what an
    /// age of "undeployed since" means.
    pub committed: DateTime<Utc>,
}

/// What one deployed commit lacks from `main`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Facts {
    /// The deployed commit, full id.
    pub deployed_commit: String,
    /// `main`'s commit.
    pub main_commit: String,
    /// True when the deployed commit is in `main`'s history.
    pub in_main: bool,
    /// Commits of `main` the deployed commit lacks.
    pub behind: usize,
    /// Commits of the deployed commit that `main` lacks (> 0: deployed off `main`).
    pub not_in_main: usize,
    /// Of `behind`, the commits touching the service's `preflight.paths`.
    pub relevant: usize,
    /// The newest of them, newest first, at most [`LISTED_COMMITS`].
    pub relevant_commits: Vec<Commit>,
    /// The oldest of them: its age decides the severity.
    pub oldest_relevant: Option<Commit>,
    /// Files matching `preflight.schema_paths` that `main` changed since the deployed commit.
    pub schema_changes: Vec<String>,
    /// When the deployed commit was committed.
    pub deployed_committed: Option<DateTime<Utc>>,
    /// How the service's paths were approximated, when they were (the GitHub source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_note: Option<String>,
}

/// One serving revision's drift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevisionDrift {
    /// Revision name.
    pub revision: String,
    /// Percent of traffic.
    pub percent: u8,
    /// The commit it was built from, when known.
    pub commit: Option<String>,
    /// Where the commit was read.
    pub commit_origin: Option<CommitOrigin>,
    /// Its severity.
    pub severity: Severity,
    /// One line saying why.
    pub reason: String,
    /// The facts, when they could be measured.
    pub facts: Option<Facts>,
    /// Age of the oldest undeployed service-relevant commit, in seconds.
    pub oldest_relevant_age_seconds: Option<i64>,
    /// Age of the deployed commit, in seconds.
    pub deployed_age_seconds: Option<i64>,
}

/// Where the facts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The local repository.
    Git,
    /// The GitHub API.
    Github,
}

/// One service's drift.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceDrift {
    /// The service's name.
    pub service: String,
    /// The worst of its revisions (and of `main`'s freshness).
    pub severity: Severity,
    /// One line saying why.
    pub reason: String,
    /// What to do, when something is to be done.
    pub hint: Option<String>,
    /// `main` as compared.
    pub main: MainTip,
    /// Every revision serving traffic, most traffic first.
    pub revisions: Vec<RevisionDrift>,
    /// The thresholds applied.
    pub thresholds: DriftConfig,
    /// The command that ends the drift.
    pub deploy_command: String,
    /// The runbook, relative to the repository root.
    pub runbook: String,
}

impl ServiceDrift {
    /// True when service-relevant commits wait past `warn_after` (or the deployed commit is off
    /// `main`): what a GitHub issue is opened for. Unmeasurable drift is not "drifting": it
    /// neither opens nor closes an issue.
    pub fn is_drifting(&self) -> bool {
        self.revisions
            .iter()
            .any(|revision| revision.facts.is_some() && revision.severity > Severity::Ok)
    }

    /// True when every serving revision's drift was measured.
    pub fn is_measured(&self) -> bool {
        !self.revisions.is_empty()
            && self
                .revisions
                .iter()
                .all(|revision| revision.facts.is_some())
    }
}

/// Every service's drift.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftReport {
    /// Where the facts came from.
    pub source: Source,
    /// When the ages were computed.
    pub generated_at: DateTime<Utc>,
    /// The worst severity of all services.
    pub worst: Severity,
    /// One entry per service, in the order asked.
    pub services: Vec<ServiceDrift>,
}

/// A service and what serves it, as read from the platform.
#[derive(Debug, Clone)]
pub struct ServiceInput {
    /// The service definition.
    pub config: ServiceConfig,
    /// Its platform id.
    pub id: ServiceId,
    /// What serves.
    pub deployed: DeployedState,
}

/// `3d 4h`, `5h 12m`, `42m`, `30s`: an age for people (negative ages, from clock skew, are 0).
pub fn format_age(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let (days, hours, minutes) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
    );
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, minutes) => format!("{minutes}m"),
        (0, hours, minutes) => format!("{hours}h {minutes}m"),
        (days, hours, _) => format!("{days}d {hours}h"),
    }
}

fn plural(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// The severity of one measured revision, and the line that says why.
pub fn assess(
    facts: &Facts,
    thresholds: &DriftConfig,
    reference: &str,
    now: DateTime<Utc>,
) -> (Severity, String) {
    let age = facts
        .oldest_relevant
        .as_ref()
        .map(|commit| (now - commit.committed).num_seconds());
    let mut severity = Severity::Ok;
    let mut why = Vec::new();
    if let Some(age) = age {
        if age >= thresholds.critical_after.get().as_secs() as i64 {
            severity = Severity::Critical;
            why.push(format!(
                "past `critical_after` {}",
                thresholds.critical_after
            ));
        } else if age >= thresholds.warn_after.get().as_secs() as i64 {
            severity = Severity::Warn;
            why.push(format!("past `warn_after` {}", thresholds.warn_after));
        } else {
            why.push(format!("within `warn_after` {}", thresholds.warn_after));
        }
    }
    if let Some(limit) = thresholds.critical_commits {
        if facts.relevant >= limit as usize && facts.relevant > 0 {
            severity = Severity::Critical;
            why.push(format!("at least `critical_commits` {limit}"));
        }
    }
    let relevant_text = match age {
        None => "none touches the service's paths".to_string(),
        Some(age) => format!(
            "{} the service's paths, the oldest undeployed for {} ({})",
            if facts.relevant == 1 {
                "1 touches".to_string()
            } else {
                format!("{} touch", facts.relevant)
            },
            format_age(age),
            why.join(", ")
        ),
    };
    if !facts.in_main {
        // Never "0 behind": what serves is code `main` does not have.
        return (
            severity.max(Severity::Warn),
            format!(
                "deployed commit {} is not in `{reference}`'s history (deployed from a branch or a rewritten history: {} not on `{reference}`); `{reference}` has {} it lacks, {relevant_text}",
                short(&facts.deployed_commit),
                plural(facts.not_in_main, "commit", "commits"),
                plural(facts.behind, "commit", "commits"),
            ),
        );
    }
    if facts.behind == 0 {
        return (
            Severity::Ok,
            format!(
                "up to date with `{reference}` ({})",
                short(&facts.main_commit)
            ),
        );
    }
    (
        severity,
        format!(
            "{} behind `{reference}`; {relevant_text}",
            plural(facts.behind, "commit", "commits")
        ),
    )
}

fn unknown_revision(serving: &ServingRevision, why: String) -> RevisionDrift {
    RevisionDrift {
        revision: serving.revision.clone(),
        percent: serving.percent,
        commit: serving.commit.clone(),
        commit_origin: serving.commit_origin,
        severity: Severity::Warn,
        reason: format!("drift unknown: {why}"),
        facts: None,
        oldest_relevant_age_seconds: None,
        deployed_age_seconds: None,
    }
}

/// One service's drift from what serves and the facts of each deployed commit.
pub fn evaluate(
    input: &ServiceInput,
    main: &MainTip,
    facts_by_commit: &BTreeMap<String, Result<Facts, String>>,
    now: DateTime<Utc>,
) -> ServiceDrift {
    let config = &input.config;
    let mut drift = ServiceDrift {
        service: config.name.clone(),
        severity: Severity::Warn,
        reason: String::new(),
        hint: None,
        main: main.clone(),
        revisions: Vec::new(),
        thresholds: config.drift.clone(),
        deploy_command: format!("deployer deploy {}", config.name),
        runbook: config.runbook.clone(),
    };
    let serving = match &input.deployed {
        DeployedState::Unavailable(why) => {
            drift.reason = format!("drift unknown: the platform cannot be read: {why}");
            drift.hint = Some("check the platform endpoint and credentials (`--endpoint`, `gcloud auth application-default login`)".into());
            return drift;
        }
        DeployedState::NotDeployed => {
            drift.reason = format!(
                "drift unknown: `{}` is not deployed (`{}` does not exist)",
                config.name, input.id
            );
            drift.hint = Some(format!("deploy it: `{}`", drift.deploy_command));
            return drift;
        }
        DeployedState::Serving(serving) if serving.is_empty() => {
            drift.reason = "drift unknown: no revision serves traffic".into();
            return drift;
        }
        DeployedState::Serving(serving) => serving,
    };
    for revision in serving {
        let Some(commit) = &revision.commit else {
            let why = revision
                .unknown_reason
                .clone()
                .unwrap_or_else(|| "the revision's commit is unknown".into());
            drift.revisions.push(unknown_revision(revision, why));
            continue;
        };
        match facts_by_commit.get(commit) {
            Some(Ok(facts)) => {
                let (severity, reason) = assess(facts, &config.drift, &main.reference, now);
                drift.revisions.push(RevisionDrift {
                    revision: revision.revision.clone(),
                    percent: revision.percent,
                    commit: Some(facts.deployed_commit.clone()),
                    commit_origin: revision.commit_origin,
                    severity,
                    reason,
                    oldest_relevant_age_seconds: facts
                        .oldest_relevant
                        .as_ref()
                        .map(|oldest| (now - oldest.committed).num_seconds()),
                    deployed_age_seconds: facts
                        .deployed_committed
                        .map(|committed| (now - committed).num_seconds()),
                    facts: Some(facts.clone()),
                });
            }
            Some(Err(why)) => drift
                .revisions
                .push(unknown_revision(revision, why.clone())),
            None => drift.revisions.push(unknown_revision(
                revision,
                main.problem
                    .clone()
                    .unwrap_or_else(|| format!("`{}` is unknown", main.reference)),
            )),
        }
    }
    let worst = drift
        .revisions
        .iter()
        .max_by_key(|revision| revision.severity)
        .expect("at least one serving revision");
    drift.severity = worst.severity;
    drift.reason = if drift.revisions.len() == 1 {
        worst.reason.clone()
    } else {
        format!(
            "revision `{}` ({}%): {}",
            worst.revision, worst.percent, worst.reason
        )
    };
    if let Some(problem) = &main.problem {
        if drift
            .revisions
            .iter()
            .any(|revision| revision.facts.is_some())
        {
            // A failed fetch compares with a stale `main`: it may hide drift, so never OK.
            drift.severity = drift.severity.max(Severity::Warn);
            drift.reason = format!("{}; {problem}", drift.reason);
        }
    }
    if drift.severity > Severity::Ok {
        drift.hint = Some(
            if drift
                .revisions
                .iter()
                .any(|revision| revision.facts.is_some())
            {
                format!(
                    "deploy `{}` from `{}`: `{}`",
                    config.name, main.reference, drift.deploy_command
                )
            } else {
                "drift cannot be measured until the serving revision's commit is known: the next `deployer deploy` labels it".into()
            },
        );
    }
    drift
}

fn report(source: Source, services: Vec<ServiceDrift>, now: DateTime<Utc>) -> DriftReport {
    DriftReport {
        source,
        generated_at: now,
        worst: services
            .iter()
            .map(|service| service.severity)
            .max()
            .unwrap_or(Severity::Ok),
        services,
    }
}

/// Options of the git source.
#[derive(Debug, Clone)]
pub struct GitOptions {
    /// Fetch `preflight.remote`/`preflight.branch` first (`--no-fetch` turns it off).
    pub fetch: bool,
    /// Time limit of each fetch.
    pub fetch_time_limit: std::time::Duration,
}

fn filters(config: &ServiceConfig) -> Result<(PathFilter, Option<PathFilter>), String> {
    let paths = PathFilter::new(&config.preflight.paths)
        .map_err(|error| format!("`preflight.paths`: {error}"))?;
    let schema = if config.preflight.schema_paths.is_empty() {
        None
    } else {
        Some(
            PathFilter::new(&config.preflight.schema_paths)
                .map_err(|error| format!("`preflight.schema_paths`: {error}"))?,
        )
    };
    Ok((paths, schema))
}

fn deployed_commits(input: &ServiceInput) -> Vec<String> {
    match &input.deployed {
        DeployedState::Serving(serving) => serving
            .iter()
            .filter_map(|revision| revision.commit.clone())
            .collect(),
        _ => Vec::new(),
    }
}

/// Drift from the local repository. Each `(remote, branch)` is fetched once.
pub fn from_git(
    repo: &Repository,
    inputs: &[ServiceInput],
    options: &GitOptions,
    now: DateTime<Utc>,
) -> DriftReport {
    let mut tips: BTreeMap<(String, String), MainTip> = BTreeMap::new();
    let mut services = Vec::new();
    for input in inputs {
        let preflight = &input.config.preflight;
        let key = (preflight.remote.clone(), preflight.branch.clone());
        let main = tips
            .entry(key)
            .or_insert_with(|| {
                git_facts::main_tip(
                    repo,
                    &preflight.remote,
                    &preflight.branch,
                    options.fetch,
                    options.fetch_time_limit,
                )
            })
            .clone();
        let mut facts = BTreeMap::new();
        if let Some(main_commit) = &main.commit {
            let filters = filters(&input.config);
            for commit in deployed_commits(input) {
                let found = match &filters {
                    Ok((paths, schema)) => {
                        git_facts::facts(repo, &commit, main_commit, paths, schema.as_ref())
                            .map_err(|error| error.to_string())
                    }
                    Err(error) => Err(error.clone()),
                };
                facts.insert(commit, found);
            }
        }
        services.push(evaluate(input, &main, &facts, now));
    }
    report(Source::Git, services, now)
}

/// Drift from the GitHub API (no checkout at hand): `GET /repos/O/R/compare/DEPLOYED...BRANCH`
/// for each deployed commit. The repository is the service's `notifications.github_repository`,
/// else `default_repository` (`GITHUB_REPOSITORY`).
pub async fn from_github(
    client: &GitHubClient,
    inputs: &[ServiceInput],
    default_repository: Option<&RepositoryName>,
    now: DateTime<Utc>,
) -> DriftReport {
    let mut services = Vec::new();
    for input in inputs {
        let config = &input.config;
        let branch = &config.preflight.branch;
        let repository = match &config.notifications.github_repository {
            Some(name) => RepositoryName::parse(name).map_err(|error| error.to_string()),
            None => default_repository.cloned().ok_or_else(|| {
                "no GitHub repository: set `notifications.github_repository` in the service file (or `GITHUB_REPOSITORY`)".to_string()
            }),
        };
        let mut main = MainTip {
            reference: match &repository {
                Ok(repository) => format!("{repository}@{branch}"),
                Err(_) => branch.clone(),
            },
            commit: None,
            problem: None,
            note: None,
        };
        let mut facts = BTreeMap::new();
        match (&repository, filters(config)) {
            (Err(why), _) => main.problem = Some(why.clone()),
            (_, Err(why)) => main.problem = Some(why),
            (Ok(repository), Ok((paths, schema))) => {
                for commit in deployed_commits(input) {
                    let found = source_github::facts(
                        client,
                        repository,
                        &commit,
                        branch,
                        &paths,
                        schema.as_ref(),
                    )
                    .await;
                    if let Ok(found) = &found {
                        main.commit = Some(found.main_commit.clone());
                    }
                    facts.insert(commit, found);
                }
            }
        }
        services.push(evaluate(input, &main, &facts, now));
    }
    report(Source::Github, services, now)
}

#[cfg(test)]
mod tests;
