//! Drift facts from the GitHub API, for where no checkout exists (the health check's Cloud Run
//! Job): `GET /repos/O/R/compare/DEPLOYED...BRANCH` gives `ahead_by` (what `main` has that
//! is not deployed), `behind_by` (deployed commits `main` lacks), the commits and the changed
//! files. Which commits touch the service comes from `GET /repos/O/R/commits?path=PREFIX` for
//! each glob's literal directory prefix, since the comparison has no per-commit files; the
//! changed-file list then removes a false positive when no file matches the globs exactly.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::github_commits::ComparedCommit;
use crate::notify::github::{GitHubClient, GitHubError, RepositoryName};

use super::{Commit, Facts, LISTED_COMMITS};
use crate::repo::PathFilter;

/// GitHub lists at most this many files in a comparison.
const COMPARE_FILE_LIMIT: usize = 300;

fn date(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|date| date.with_timezone(&Utc))
}

fn commit_of(compared: &ComparedCommit) -> Commit {
    let signature = compared
        .commit
        .committer
        .as_ref()
        .or(compared.commit.author.as_ref());
    Commit {
        id: compared.sha.clone(),
        author: compared
            .commit
            .author
            .as_ref()
            .map(|author| author.name.clone())
            .unwrap_or_default(),
        subject: compared
            .commit
            .message
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        committed: signature
            .and_then(|signature| date(&signature.date))
            .unwrap_or_default(),
    }
}

/// The facts of `deployed` against `branch` of `repository`.
pub(super) async fn facts(
    client: &GitHubClient,
    repository: &RepositoryName,
    deployed: &str,
    branch: &str,
    paths: &PathFilter,
    schema: Option<&PathFilter>,
) -> Result<Facts, String> {
    let comparison = match client.compare(repository, deployed, branch).await {
        Ok(comparison) => comparison,
        Err(GitHubError::NotFound { .. }) => {
            return Err(format!(
                "GitHub does not know deployed commit `{deployed}` or branch `{branch}` in `{repository}` (built from another repository, or a rewritten history)"
            ))
        }
        Err(error) => return Err(error.to_string()),
    };
    // Oldest first, as GitHub sends them; drift lists newest first.
    let commits: Vec<Commit> = comparison.commits.iter().rev().map(commit_of).collect();
    let main_commit = commits
        .first()
        .map(|commit| commit.id.clone())
        .or_else(|| {
            comparison
                .merge_base_commit
                .as_ref()
                .map(|commit| commit.sha.clone())
        })
        .unwrap_or_else(|| deployed.to_string());
    let changed: Vec<&str> = comparison
        .files
        .iter()
        .flat_map(|file| {
            std::iter::once(file.filename.as_str()).chain(file.previous_filename.as_deref())
        })
        .collect();
    let files_complete = comparison.files.len() < COMPARE_FILE_LIMIT;
    let mut path_note = None;
    let relevant: Vec<Commit> = if paths.is_everything() || commits.is_empty() {
        commits.clone()
    } else if files_complete && !changed.iter().any(|path| paths.matches(path)) {
        Vec::new()
    } else if paths.prefixes().iter().any(String::is_empty) {
        path_note = Some(
            "a glob starts with a wildcard: via GitHub every undeployed commit counts as the service's".into(),
        );
        commits.clone()
    } else {
        let since = commits
            .iter()
            .map(|commit| commit.committed)
            .min()
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut touching = BTreeSet::new();
        for prefix in paths.prefixes() {
            let found = client
                .commits_touching(repository, &main_commit, prefix, &since)
                .await
                .map_err(|error| error.to_string())?;
            touching.extend(found);
        }
        path_note = Some(format!(
            "via GitHub, a commit counts when it touches {}",
            paths
                .prefixes()
                .iter()
                .map(|prefix| format!("`{prefix}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        commits
            .iter()
            .filter(|commit| touching.contains(&commit.id))
            .cloned()
            .collect()
    };
    let schema_changes = schema
        .map(|schema| {
            let mut found: Vec<String> = changed
                .iter()
                .filter(|path| schema.matches(path))
                .map(|path| path.to_string())
                .collect();
            found.sort();
            found.dedup();
            found
        })
        .unwrap_or_default();
    Ok(Facts {
        deployed_commit: comparison
            .base_commit
            .as_ref()
            .map(|commit| commit.sha.clone())
            .unwrap_or_else(|| deployed.to_string()),
        main_commit,
        in_main: comparison.behind_by == 0,
        behind: comparison.ahead_by,
        not_in_main: comparison.behind_by,
        relevant: relevant.len(),
        oldest_relevant: relevant
            .iter()
            .min_by_key(|commit| commit.committed)
            .cloned(),
        relevant_commits: relevant.into_iter().take(LISTED_COMMITS).collect(),
        schema_changes,
        deployed_committed: comparison
            .base_commit
            .as_ref()
            .map(|commit| commit_of(commit).committed),
        path_note,
    })
}
