//! One GitHub issue per drifting service, kept up to date by every `deployer drift
//! --github-issue` run.
//!
//! The issue is found again by its label ([`LABEL`]) and a hidden marker in its body
//! ([`marker`]), never by title search: the search API has its own small rate limit and its index
//! lags behind new issues, so a search-based lookup opens duplicates. The lifecycle ([`plan`]):
//! created when drift starts; its body rewritten only when it changes (the body holds no relative
//! time, so the same drift renders the same body and a run writes nothing); closed with a comment
//! when the service is deployed again; the same issue reopened if drift returns. Drift that
//! cannot be measured changes nothing: an issue is never closed on a guess.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use crate::{
    notify::github::{GitHubClient, GitHubError, Issue, IssueUpdate, RepositoryName},
    repo::short,
};

use super::{ServiceDrift, LISTED_COMMITS};

/// The label every drift issue carries.
pub const LABEL: &str = "deployer-drift";

/// The hidden marker that identifies a service's issue.
pub fn marker(service: &str) -> String {
    format!("<!-- deployer:drift service={service} -->")
}

/// The issue's title.
pub fn title(service: &str) -> String {
    format!("Deployment drift: `{service}` serves code behind `main`")
}

/// The issue of `service` among `issues`: the one whose body carries its marker (a marker line
/// exactly, so `api` never matches `api-gateway`); an open one first, then the oldest.
pub fn find<'a>(issues: &'a [Issue], service: &str) -> Option<&'a Issue> {
    let marker = marker(service);
    issues
        .iter()
        .filter(|issue| {
            issue
                .body
                .as_deref()
                .is_some_and(|body| body.lines().any(|line| line.trim() == marker))
        })
        .min_by_key(|issue| (!issue.is_open(), issue.number))
}

/// What the body links to.
#[derive(Debug, Clone)]
pub struct Links {
    /// `https://github.com` (`GITHUB_SERVER_URL` in GitHub Actions).
    pub server_url: String,
}

fn clean(text: &str) -> String {
    // A subject is remote text: keep it on one line and out of Markdown code spans.
    text.replace(['\r', '\n'], " ").replace('`', "'")
}

/// The issue's body: what serves, how far behind, the relevant commits, the deploy command, the
/// runbook. Absolute times only, so an unchanged drift renders an unchanged body.
pub fn body(drift: &ServiceDrift, repository: &RepositoryName, links: &Links) -> String {
    let mut text = format!("{}\n", marker(&drift.service));
    let reference = &drift.main.reference;
    let _ = writeln!(
        text,
        "## `{}` is behind `{reference}`: {}\n",
        drift.service,
        drift.severity.label()
    );
    let _ = writeln!(text, "{}\n", clean(&drift.reason));
    let _ = writeln!(
        text,
        "| revision | traffic | deployed commit | behind | touching the service | oldest undeployed since |"
    );
    let _ = writeln!(text, "|---|---|---|---|---|---|");
    for revision in &drift.revisions {
        let commit = revision.commit.as_deref().map(short).unwrap_or("unknown");
        match &revision.facts {
            Some(facts) => {
                let behind = if facts.in_main {
                    facts.behind.to_string()
                } else {
                    format!("{} (not on `{reference}`)", facts.behind)
                };
                let since = facts
                    .oldest_relevant
                    .as_ref()
                    .map(|oldest| oldest.committed.format("%Y-%m-%d %H:%M UTC").to_string())
                    .unwrap_or_else(|| "-".into());
                let _ = writeln!(
                    text,
                    "| `{}` | {}% | `{commit}` | {behind} | {} | {since} |",
                    revision.revision, revision.percent, facts.relevant
                );
            }
            None => {
                let _ = writeln!(
                    text,
                    "| `{}` | {}% | `{commit}` | unknown | unknown | - |",
                    revision.revision, revision.percent
                );
            }
        }
    }
    for revision in &drift.revisions {
        let Some(facts) = &revision.facts else {
            continue;
        };
        if facts.relevant_commits.is_empty() {
            continue;
        }
        let _ = writeln!(
            text,
            "\n### Undeployed commits touching `{}` (`{}`, newest first)\n",
            drift.service, revision.revision
        );
        for commit in facts.relevant_commits.iter().take(LISTED_COMMITS) {
            let _ = writeln!(
                text,
                "- `{}` {} — {} ({})",
                short(&commit.id),
                clean(&commit.subject),
                clean(&commit.author),
                commit.committed.format("%Y-%m-%d %H:%M UTC")
            );
        }
        if facts.relevant > facts.relevant_commits.len() {
            let _ = writeln!(
                text,
                "- … and {} more",
                facts.relevant - facts.relevant_commits.len()
            );
        }
        if !facts.schema_changes.is_empty() {
            let _ = writeln!(
                text,
                "\n**Schema changes** (a rollback across them may be unsafe): {}",
                facts
                    .schema_changes
                    .iter()
                    .map(|path| format!("`{}`", clean(path)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let _ = writeln!(text, "\n### What to do\n");
    let _ = writeln!(text, "```\n{}\n```\n", drift.deploy_command);
    let _ = writeln!(
        text,
        "Runbook: [{runbook}]({}/{repository}/blob/{}/{runbook})",
        links.server_url.trim_end_matches('/'),
        branch_of(reference),
        runbook = drift.runbook
    );
    let _ = write!(
        text,
        "\n_Kept up to date by `deployer drift --github-issue`; closed automatically when the service is deployed again._\n"
    );
    text
}

/// `main` from `origin/main` or `owner/repo@main`.
fn branch_of(reference: &str) -> &str {
    reference
        .rsplit_once('@')
        .map(|(_, branch)| branch)
        .or_else(|| reference.split_once('/').map(|(_, branch)| branch))
        .unwrap_or(reference)
}

/// What a run does to a service's issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// No write.
    Nothing,
    /// Open a new issue.
    Create,
    /// Rewrite the body of the open issue.
    UpdateBody(u64),
    /// Reopen the closed issue with the new body, and say why in a comment.
    Reopen(u64),
    /// Comment that the service is deployed again, and close.
    Close(u64),
}

/// The lifecycle, as a pure decision.
pub fn plan(drift: &ServiceDrift, existing: Option<&Issue>, body: &str) -> Plan {
    let drifting = drift.is_drifting();
    let deployed_again = drift.is_measured() && !drifting && drift.main.problem.is_none();
    match existing {
        None if drifting => Plan::Create,
        None => Plan::Nothing,
        Some(issue) if issue.is_open() => {
            if drifting {
                if issue.body.as_deref() == Some(body) {
                    Plan::Nothing
                } else {
                    Plan::UpdateBody(issue.number)
                }
            } else if deployed_again {
                Plan::Close(issue.number)
            } else {
                Plan::Nothing
            }
        }
        Some(issue) if drifting => Plan::Reopen(issue.number),
        Some(_) => Plan::Nothing,
    }
}

/// What was done to a service's issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A new issue was opened.
    Created,
    /// The open issue's body was rewritten.
    Updated,
    /// The open issue already said this.
    Unchanged,
    /// The issue was closed (deployed again).
    Closed,
    /// The closed issue was reopened (drift returned).
    Reopened,
    /// No issue, none needed.
    None,
}

/// The result for one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The service.
    pub service: String,
    /// The repository written to.
    pub repository: String,
    /// What was done.
    pub action: Action,
    /// The issue, if one exists.
    pub number: Option<u64>,
    /// Its page.
    pub url: Option<String>,
}

/// Keeps the issues of `drifts` in their repositories: one listing per repository, then the
/// writes each service's [`plan`] asks for.
pub async fn sync(
    client: &GitHubClient,
    drifts: &[(&ServiceDrift, RepositoryName)],
    links: &Links,
) -> Vec<Result<Outcome, GitHubError>> {
    let mut listings: BTreeMap<String, Result<Vec<Issue>, String>> = BTreeMap::new();
    let mut outcomes = Vec::new();
    for (drift, repository) in drifts {
        let key = repository.as_str().to_string();
        if !listings.contains_key(&key) {
            let listed = client.issues_with_label(repository, LABEL).await;
            match listed {
                Ok(issues) => {
                    listings.insert(key.clone(), Ok(issues));
                }
                Err(error) => {
                    listings.insert(key.clone(), Err(error.to_string()));
                    outcomes.push(Err(error));
                    continue;
                }
            }
        }
        let Some(Ok(issues)) = listings.get_mut(&key) else {
            // The listing failed: reported once, for the first service of the repository.
            continue;
        };
        let body = body(drift, repository, links);
        let existing = find(issues, &drift.service).cloned();
        let planned = plan(drift, existing.as_ref(), &body);
        let written = match apply(client, repository, drift, &planned, &body).await {
            Ok(written) => written,
            Err(error) => {
                outcomes.push(Err(error));
                continue;
            }
        };
        if let Some(issue) = &written {
            // Later services of the same run see the issue as it is now.
            issues.retain(|listed| listed.number != issue.number);
            issues.push(issue.clone());
        }
        let action = match planned {
            Plan::Nothing if existing.as_ref().is_some_and(Issue::is_open) => Action::Unchanged,
            Plan::Nothing => Action::None,
            Plan::Create => Action::Created,
            Plan::UpdateBody(_) => Action::Updated,
            Plan::Reopen(_) => Action::Reopened,
            Plan::Close(_) => Action::Closed,
        };
        let shown = written.or(existing);
        outcomes.push(Ok(Outcome {
            service: drift.service.clone(),
            repository: repository.to_string(),
            action,
            number: shown.as_ref().map(|issue| issue.number),
            url: shown.map(|issue| issue.html_url),
        }));
    }
    outcomes
}

/// Executes the plan; returns the issue as written, if anything was written.
async fn apply(
    client: &GitHubClient,
    repository: &RepositoryName,
    drift: &ServiceDrift,
    planned: &Plan,
    body: &str,
) -> Result<Option<Issue>, GitHubError> {
    match *planned {
        Plan::Nothing => Ok(None),
        Plan::Create => client
            .create_issue(repository, &title(&drift.service), body, &[LABEL])
            .await
            .map(Some),
        Plan::UpdateBody(number) => client
            .update_issue(
                repository,
                number,
                &IssueUpdate {
                    body: Some(body.to_string()),
                    ..IssueUpdate::default()
                },
            )
            .await
            .map(Some),
        Plan::Reopen(number) => {
            let issue = client
                .update_issue(
                    repository,
                    number,
                    &IssueUpdate {
                        body: Some(body.to_string()),
                        state: Some("open"),
                        state_reason: Some("reopened"),
                    },
                )
                .await?;
            client
                .comment(
                    repository,
                    number,
                    &format!("Drift returned: {}", clean(&drift.reason)),
                )
                .await?;
            Ok(Some(issue))
        }
        Plan::Close(number) => {
            let serving: Vec<String> = drift
                .revisions
                .iter()
                .map(|revision| {
                    format!(
                        "`{}` ({}%) at `{}`",
                        revision.revision,
                        revision.percent,
                        revision.commit.as_deref().map(short).unwrap_or("unknown")
                    )
                })
                .collect();
            client
                .comment(
                    repository,
                    number,
                    &format!(
                        "Deployed again: {} serves; {}. Closed by `deployer drift`.",
                        serving.join(", "),
                        clean(&drift.reason)
                    ),
                )
                .await?;
            client
                .update_issue(
                    repository,
                    number,
                    &IssueUpdate {
                        state: Some("closed"),
                        state_reason: Some("completed"),
                        ..IssueUpdate::default()
                    },
                )
                .await
                .map(Some)
        }
    }
}
