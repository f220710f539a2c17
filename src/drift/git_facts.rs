//! Drift facts from the local repository: `main` as the remote has it (fetched by the preflight
//! rules), the commits of `main` the deployed commit lacks, which of them touch the service's
//! paths, and the schema files among the changes.
//!
//! Speed: the range is walked with `hide()` (libgit2 stops at the deployed commit, whatever the
//! length of the history), and a commit's relevance is decided by comparing, between the commit
//! and its parent, the tree entries at each glob's literal prefix (`services/api/**` →
//! `services/api`): two object lookups per commit, and a diff only when that subtree changed.
//! A 600-commit range of a 100 000-commit repository takes a few milliseconds
//! (`docs/BENCHMARKS.md`).

use std::{path::Path, time::Duration};

use chrono::{DateTime, Utc};
use git2::{DiffOptions, Oid, Sort};

use crate::{
    preflight::describe,
    repo::{PathFilter, RepoError, Repository},
};

use super::{Commit, Facts, LISTED_COMMITS};

/// `main` as the remote has it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MainTip {
    /// `origin/main`.
    pub reference: String,
    /// Its commit, when known.
    pub commit: Option<String>,
    /// Why it is unknown, or why it may be stale (a failed fetch): a reason to WARN.
    pub problem: Option<String>,
    /// A note that is no problem (`--no-fetch`).
    pub note: Option<String>,
}

/// Reads `REMOTE/BRANCH`, fetching it first when `fetch` (the preflight's step 3 rules: a failed
/// fetch compares with the last fetched state but says so).
pub fn main_tip(
    repo: &Repository,
    remote: &str,
    branch: &str,
    fetch: bool,
    limit: Duration,
) -> MainTip {
    let reference = format!("{remote}/{branch}");
    let mut tip = MainTip {
        reference: reference.clone(),
        commit: None,
        problem: None,
        note: None,
    };
    if !repo.has_remote(remote) {
        tip.problem = Some(format!(
            "the repository has no remote `{remote}` (set `preflight.remote` in the service file)"
        ));
        return tip;
    }
    let fetch_problem = if fetch {
        repo.fetch(remote, branch, limit)
            .err()
            .map(|error| describe(&error))
    } else {
        tip.note = Some(format!("`{reference}` as last fetched (--no-fetch)"));
        None
    };
    match repo.remote_branch_commit(remote, branch) {
        Ok(Some(commit)) => {
            tip.commit = Some(commit);
            tip.problem = fetch_problem
                .map(|problem| format!("comparing with `{reference}` as last fetched: {problem}"));
        }
        Ok(None) => {
            tip.problem = Some(match fetch_problem {
                Some(problem) => format!("{problem}; `{reference}` was never fetched"),
                None => format!("`{reference}` does not exist"),
            })
        }
        Err(error) => tip.problem = Some(describe(&error)),
    }
    tip
}

/// Why the facts of a deployed commit cannot be known.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    /// The commit is not in the local repository.
    #[error("deployed commit `{commit}` is not in this repository (not fetched, or built from another repository or a rewritten history)")]
    NotInRepository {
        /// The commit as deployed.
        commit: String,
    },
    /// The repository could not be read (the message is the whole chain of causes).
    #[error("{}", describe(.0))]
    Repository(RepoError),
    /// git failed while walking the history.
    #[error("{}", .0.message())]
    Git(git2::Error),
}

fn time_of(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap_or_default()
}

fn commit_of(commit: &git2::Commit<'_>) -> Commit {
    Commit {
        id: commit.id().to_string(),
        author: String::from_utf8_lossy(commit.author().name_bytes()).into_owned(),
        subject: String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default()).into_owned(),
        committed: time_of(commit.committer().when().seconds()),
    }
}

/// True when a path the filter takes differs between `old` (None: the empty tree) and `new`.
fn changed_under(
    repository: &git2::Repository,
    old: Option<&git2::Tree<'_>>,
    new: &git2::Tree<'_>,
    filter: &PathFilter,
) -> Result<bool, git2::Error> {
    for prefix in filter.prefixes() {
        let entry = |tree: &git2::Tree<'_>| -> Option<Oid> {
            if prefix.is_empty() {
                Some(tree.id())
            } else {
                tree.get_path(Path::new(prefix))
                    .ok()
                    .map(|entry| entry.id())
            }
        };
        if old.and_then(entry) == entry(new) {
            continue;
        }
        if filter.is_everything() {
            return Ok(true);
        }
        let mut options = DiffOptions::new();
        if !prefix.is_empty() {
            options.pathspec(prefix);
        }
        let diff = repository.diff_tree_to_tree(old, Some(new), Some(&mut options))?;
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(path) = file.path() {
                    if filter.matches(&path.to_string_lossy().replace('\\', "/")) {
                        return Ok(true);
                    }
                }
            }
        }
    }
    Ok(false)
}

/// True when `commit` changes a path of the filter. A merge counts only when it differs from
/// every parent there (git log's rule: a merge that kept one side's files changed nothing).
fn touches(
    repository: &git2::Repository,
    commit: &git2::Commit<'_>,
    filter: &PathFilter,
) -> Result<bool, git2::Error> {
    let tree = commit.tree()?;
    if commit.parent_count() == 0 {
        return changed_under(repository, None, &tree, filter);
    }
    for parent in commit.parents() {
        if !changed_under(repository, Some(&parent.tree()?), &tree, filter)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The facts of one deployed commit against `main`: `Err(why)` when they cannot be known (the
/// commit is not in the repository, or the repository cannot be read).
pub fn facts(
    repo: &Repository,
    deployed: &str,
    main: &str,
    paths: &PathFilter,
    schema: Option<&PathFilter>,
) -> Result<Facts, FactsError> {
    let deployed = match repo.find_commit(deployed) {
        Ok(Some(full)) => full,
        Ok(None) => {
            return Err(FactsError::NotInRepository {
                commit: deployed.to_string(),
            })
        }
        Err(error) => return Err(FactsError::Repository(error)),
    };
    let git = FactsError::Git;
    let repository = repo.git();
    let deployed_oid = Oid::from_str(&deployed).map_err(git)?;
    let main_oid = Oid::from_str(main).map_err(git)?;
    let divergence = repo
        .divergence(&deployed, main)
        .map_err(FactsError::Repository)?;
    let mut walk = repository.revwalk().map_err(git)?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME)
        .map_err(git)?;
    walk.push(main_oid).map_err(git)?;
    walk.hide(deployed_oid).map_err(git)?;
    let mut relevant = 0;
    let mut relevant_commits = Vec::new();
    let mut oldest_relevant = None;
    for oid in walk {
        let commit = repository.find_commit(oid.map_err(git)?).map_err(git)?;
        if touches(repository, &commit, paths).map_err(git)? {
            relevant += 1;
            let summary = commit_of(&commit);
            if relevant_commits.len() < LISTED_COMMITS {
                relevant_commits.push(summary.clone());
            }
            // Newest first: the last relevant commit seen is the oldest; keep the earliest time
            // in case commit times are not monotonic.
            if oldest_relevant
                .as_ref()
                .is_none_or(|oldest: &Commit| summary.committed <= oldest.committed)
            {
                oldest_relevant = Some(summary);
            }
        }
    }
    let schema_changes = match schema {
        None => Vec::new(),
        Some(schema) => {
            let base = if divergence.ahead == 0 {
                deployed.clone()
            } else {
                repository
                    .merge_base(deployed_oid, main_oid)
                    .map_err(git)?
                    .to_string()
            };
            repo.changed_paths(&base, main)
                .map_err(FactsError::Repository)?
                .into_iter()
                .filter(|path| schema.matches(path))
                .collect()
        }
    };
    let deployed_committed = repository
        .find_commit(deployed_oid)
        .map(|commit| time_of(commit.committer().when().seconds()))
        .ok();
    Ok(Facts {
        deployed_commit: deployed,
        main_commit: main.to_string(),
        in_main: divergence.ahead == 0,
        behind: divergence.behind,
        not_in_main: divergence.ahead,
        relevant,
        relevant_commits,
        oldest_relevant,
        schema_changes,
        deployed_committed,
        path_note: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestRepo;

    #[test]
    fn relevant_commits_are_those_touching_the_paths() {
        let repo = TestRepo::new();
        let deployed = repo.commit_file("api/main.rs", "v1", "deployed");
        repo.commit_file_as("web/index.html", "x", "web only", "Grace");
        repo.commit_file_as("api/main.rs", "v2", "api fix", "Ada");
        repo.commit_file_as("schemas/t.json", "{}", "schema", "Ada");
        let main = repo.commit_file_as("web/index.html", "y", "web again", "Grace");
        let opened = Repository::discover(repo.path()).unwrap();
        let paths = PathFilter::new(&["api/**".into(), "schemas/**".into()]).unwrap();
        let schema = PathFilter::new(&["schemas/**".into()]).unwrap();
        let facts = facts(&opened, &deployed, &main, &paths, Some(&schema)).unwrap();
        assert_eq!(facts.behind, 4);
        assert!(facts.in_main);
        assert_eq!(facts.relevant, 2);
        let subjects: Vec<&str> = facts
            .relevant_commits
            .iter()
            .map(|commit| commit.subject.as_str())
            .collect();
        assert_eq!(subjects, ["schema", "api fix"]);
        assert_eq!(facts.oldest_relevant.unwrap().subject, "api fix");
        assert_eq!(facts.schema_changes, ["schemas/t.json"]);

        let everything = PathFilter::new(&[]).unwrap();
        let all = super::facts(&opened, &deployed, &main, &everything, None).unwrap();
        assert_eq!(all.relevant, 4, "no paths: every commit is the service's");

        let up_to_date = super::facts(&opened, &main, &main, &paths, None).unwrap();
        assert_eq!((up_to_date.behind, up_to_date.relevant), (0, 0));
    }

    #[test]
    fn a_deployed_commit_off_main_is_not_zero_behind() {
        let repo = TestRepo::new();
        let base = repo.commit_file("api/main.rs", "v1", "base");
        let main = repo.commit_file("api/main.rs", "v2", "on main");
        repo.reset_hard(&base);
        let branch = repo.commit_file("api/main.rs", "hotfix", "hotfix on a branch");
        let opened = Repository::discover(repo.path()).unwrap();
        let paths = PathFilter::new(&["api/**".into()]).unwrap();
        let facts = facts(&opened, &branch, &main, &paths, None).unwrap();
        assert!(!facts.in_main);
        assert_eq!(facts.not_in_main, 1);
        assert_eq!(facts.behind, 1);
        assert_eq!(facts.relevant, 1);
        let error = super::facts(
            &opened,
            "0123456789abcdef0123456789abcdef01234567",
            &main,
            &paths,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("is not in this repository"), "{error}");
    }

    #[test]
    fn main_tip_follows_the_preflight_fetch_rules() {
        let repo = TestRepo::new();
        let first = repo.commit_file("a.txt", "one", "first");
        let opened = Repository::discover(repo.path()).unwrap();
        let tip = main_tip(&opened, "origin", "main", true, Duration::from_secs(5));
        assert_eq!(tip.commit, None);
        assert!(tip.problem.unwrap().contains("no remote `origin`"));

        let remote = repo.add_bare_remote("origin");
        repo.push("origin", "main");
        let other = remote.clone_into_temp();
        let pushed = other.commit_file("b.txt", "x", "pushed by someone else");
        other.push("origin", "main");
        let offline = main_tip(&opened, "origin", "main", false, Duration::from_secs(5));
        assert_eq!(offline.commit.as_deref(), Some(first.as_str()));
        assert!(offline.problem.is_none());
        assert!(offline.note.unwrap().contains("--no-fetch"));
        let fetched = main_tip(&opened, "origin", "main", true, Duration::from_secs(30));
        assert_eq!(fetched.commit.as_deref(), Some(pushed.as_str()));
        assert_eq!(fetched.problem, None);

        repo.set_remote_url("origin", "/nonexistent/remote.git");
        let stale = main_tip(&opened, "origin", "main", true, Duration::from_secs(5));
        assert_eq!(stale.commit.as_deref(), Some(pushed.as_str()));
        assert!(stale
            .problem
            .unwrap()
            .starts_with("comparing with `origin/main` as last fetched"));
    }
}
