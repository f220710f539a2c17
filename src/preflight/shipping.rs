//! Steps 4–5: the commits that will ship (deployed commit → HEAD) and the schema files they
//! change.

use crate::repo::{short, CommitRange, GlobError, Head, PathFilter, RepoError, Repository};

use super::{deployment::DeployedState, describe, Check, Step, LISTED_COMMITS};

/// What step 4 found, for step 5 and the report.
#[derive(Debug, Clone)]
pub(super) struct Shipping {
    /// Step 4's result.
    pub check: Check,
    /// The commits of `deployed..HEAD`, when both ends are known.
    pub range: Option<CommitRange>,
    /// Where the comparison stands, for step 5.
    pub basis: Basis,
}

/// What step 5 can compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Basis {
    /// Deployed commit and HEAD, both in the repository.
    Range { deployed: String, head: String },
    /// Nothing is deployed: no earlier revision to roll back to.
    FirstDeploy,
    /// Step 4 could not find the range (the reason is its check's).
    Unknown,
}

fn authors_text(range: &CommitRange) -> String {
    let mut names: Vec<String> = range
        .authors
        .iter()
        .take(3)
        .map(|author| format!("{} ({})", author.name, author.commits))
        .collect();
    if range.authors.len() > 3 {
        names.push(format!("{} more", range.authors.len() - 3));
    }
    names.join(", ")
}

/// `1 commit ships`, `3 commits ship`.
fn ships(count: usize) -> String {
    if count == 1 {
        "1 commit ships".into()
    } else {
        format!("{count} commits ship")
    }
}

/// Step 4.
pub(super) fn commits(
    repo: &Result<Repository, RepoError>,
    head: Option<&Head>,
    state: &DeployedState,
) -> Shipping {
    let step = Step::Commits;
    let unknown = |check: Check| Shipping {
        check,
        range: None,
        basis: Basis::Unknown,
    };
    let (repo, head) = match (repo, head) {
        (Ok(repo), Some(head)) => (repo, head),
        (Err(error), _) => {
            return unknown(Check::warn(
                step,
                format!("cannot run: {}", describe(error)),
            ))
        }
        (Ok(_), None) => return unknown(Check::warn(step, "cannot run: HEAD could not be read")),
    };
    let head_commit = head.commit();
    let primary = match state {
        DeployedState::Unavailable(reason) => {
            return unknown(
                Check::warn(step, format!("cannot run: {reason}"))
                    .hint("without the deployed commit nobody can review what ships"),
            )
        }
        DeployedState::NotDeployed { service } => {
            return Shipping {
                check: Check::pass(
                    step,
                    format!(
                        "first deploy: `{service}` does not exist yet; HEAD {} ships",
                        short(head_commit)
                    ),
                ),
                range: None,
                basis: Basis::FirstDeploy,
            }
        }
        DeployedState::Deployed {
            primary,
            revision_problem,
            ..
        } => match (primary, revision_problem) {
            (None, _) => {
                return unknown(Check::warn(
                    step,
                    "cannot run: no revision serves traffic, so nothing says what is deployed",
                ))
            }
            (Some(primary), Some(problem)) => {
                return unknown(Check::warn(
                    step,
                    format!(
                        "cannot run: the labels of revision `{}` could not be read: {problem}",
                        primary.revision
                    ),
                ))
            }
            (Some(primary), None) => primary,
        },
    };
    let Some(label) = &primary.commit else {
        return unknown(
            Check::warn(
                step,
                format!(
                    "serving revision `{}` has no `deployer-commit` label: what ships is unknown",
                    primary.revision
                ),
            )
            .hint("it was not deployed by deployer; review `git log` yourself (the next deploy labels its revision)"),
        );
    };
    // The label is the commit id (labels are lowercase, so a hex id survives unchanged); take
    // the leading hex part in case a suffix was added.
    let hex: String = label.chars().take_while(char::is_ascii_hexdigit).collect();
    let deployed = match repo.find_commit(&hex) {
        Ok(Some(deployed)) => deployed,
        Ok(None) => {
            return unknown(
                Check::warn(
                    step,
                    format!(
                        "deployed commit `{label}` (revision `{}`) is not in this repository",
                        primary.revision
                    ),
                )
                .hint("fetch (`git fetch`) — or it was built from another branch or repository; review what ships yourself"),
            )
        }
        Err(error) => return unknown(Check::warn(step, format!("cannot run: {}", describe(&error)))),
    };
    let basis = Basis::Range {
        deployed: deployed.clone(),
        head: head_commit.to_string(),
    };
    if deployed == head_commit {
        return Shipping {
            check: Check::pass(
                step,
                format!(
                    "HEAD {} is already deployed (revision `{}`): no new commit ships",
                    short(head_commit),
                    primary.revision
                ),
            ),
            range: None,
            basis,
        };
    }
    let (range, divergence) = match repo
        .commits(Some(&deployed), head_commit, LISTED_COMMITS)
        .and_then(|range| Ok((range, repo.divergence(head_commit, &deployed)?)))
    {
        Ok(found) => found,
        Err(error) => {
            return unknown(Check::warn(
                step,
                format!("cannot run: {}", describe(&error)),
            ))
        }
    };
    let mut details: Vec<String> = range
        .commits
        .iter()
        .map(|commit| {
            format!(
                "{} {} ({})",
                commit.short_id(),
                commit.subject,
                commit.author
            )
        })
        .collect();
    if range.count > range.commits.len() {
        details.push(format!(
            "... and {} more",
            range.count - range.commits.len()
        ));
    }
    let arrow = format!("{} → {}", short(&deployed), short(head_commit));
    let check = if divergence.behind > 0 {
        // HEAD lacks commits that are live: deploying it takes them out of production.
        Check::warn(
            step,
            format!(
                "{} but {} missing from HEAD ({arrow}): deploying would remove {}",
                ships(range.count),
                if divergence.behind == 1 {
                    "1 deployed commit is".to_string()
                } else {
                    format!("{} deployed commits are", divergence.behind)
                },
                if divergence.behind == 1 { "it" } else { "them" }
            ),
        )
        .hint("update your branch first, unless this deploy is meant to take those commits out")
    } else {
        Check::pass(
            step,
            format!(
                "{} ({arrow}) by {}",
                ships(range.count),
                authors_text(&range)
            ),
        )
    };
    Shipping {
        check: check.details(details),
        range: Some(range),
        basis,
    }
}

/// Step 5: files matching `preflight.schema_paths` that differ between the deployed commit and
/// HEAD. One tree-to-tree diff, whatever the number of commits.
pub(super) fn schema_changes(
    repo: &Result<Repository, RepoError>,
    globs: &[String],
    shipping: &Shipping,
) -> Check {
    let step = Step::SchemaChanges;
    if globs.is_empty() {
        return Check::pass(
            step,
            "no schema paths configured (`preflight.schema_paths`): nothing to check",
        );
    }
    // The drift report's filter: `schemas/*` means files directly in `schemas/` (as in git and
    // shells; `schemas/**` reaches subdirectories), and a path without wildcards names
    // everything under it.
    let filter = match PathFilter::new(globs) {
        Ok(filter) => filter,
        Err(error @ GlobError::Invalid { .. }) => {
            return Check::warn(step, format!("cannot run: {error}"))
                .hint("fix `preflight.schema_paths` in the service file")
        }
        Err(error) => return Check::warn(step, format!("cannot run: {error}")),
    };
    let (deployed, head) = match &shipping.basis {
        Basis::FirstDeploy => {
            return Check::pass(
                step,
                "first deploy: no earlier revision to roll back to",
            )
        }
        Basis::Unknown => {
            return Check::warn(
                step,
                "cannot run: the deployed commit is unknown (see step 4), so schema changes cannot be found",
            )
            .hint("review the schema files yourself: a schema change can make a rollback unsafe")
        }
        Basis::Range { deployed, head } => (deployed, head),
    };
    let repo = match repo {
        Ok(repo) => repo,
        Err(error) => return Check::warn(step, format!("cannot run: {}", describe(error))),
    };
    if deployed == head {
        return Check::pass(step, "no new commit ships");
    }
    let changed = match repo.changed_paths(deployed, head) {
        Ok(changed) => changed,
        Err(error) => return Check::warn(step, format!("cannot run: {}", describe(&error))),
    };
    let matched: Vec<String> = changed
        .into_iter()
        .filter(|path| filter.matches(path))
        .collect();
    if matched.is_empty() {
        return Check::pass(
            step,
            format!("no schema file changes ({})", globs.join(", ")),
        );
    }
    let mut check = Check::warn(
        step,
        format!(
            "{} schema {} change{}: rolling back to {} afterwards may be unsafe",
            matched.len(),
            if matched.len() == 1 { "file" } else { "files" },
            if matched.len() == 1 { "s" } else { "" },
            short(deployed)
        ),
    )
    .hint("make the change backward compatible (expand now, contract in a later deploy); deploying needs an explicit confirmation")
    .details(matched);
    check.needs_explicit_confirmation = true;
    check
}

#[cfg(test)]
mod tests {
    use super::super::{test_support::*, Status, Step};
    use crate::testing::TestRepo;

    #[tokio::test]
    async fn step_4_lists_what_ships_and_who_wrote_it() {
        let repo = TestRepo::new();
        let deployed = repo.commit_file("a.txt", "one", "deployed");
        repo.commit_file_as("b.txt", "one", "add b", "Ada");
        repo.commit_file_as("c.txt", "one", "add c", "Grace");
        let head = repo.commit_file_as("b.txt", "two", "change b", "Ada");
        let platform = deployed_at(&deployed).await;
        let report = run_with(&repo, &platform, &options_offline()).await;
        let check = report.check(Step::Commits).unwrap();
        assert_eq!(check.status, Status::Pass, "{check:?}");
        assert_eq!(
            check.reason,
            format!(
                "3 commits ship ({} → {}) by Ada (2), Grace (1)",
                &deployed[..7],
                &head[..7]
            )
        );
        assert_eq!(check.details.len(), 3);
        assert!(check.details[0].ends_with("change b (Ada)"));
        assert_eq!(report.commits.as_ref().unwrap().count, 3);
        assert_eq!(
            report.deployed.as_ref().unwrap().commit.as_deref(),
            Some(deployed.as_str())
        );
    }

    #[tokio::test]
    async fn step_4_first_deploy_same_commit_and_unknown_commit() {
        let repo = TestRepo::new();
        let head = repo.commit_file("a.txt", "one", "first");
        let platform = crate::platform::memory::MemoryPlatform::new();
        let report = run_with(&repo, &platform, &options_offline()).await;
        let check = report.check(Step::Commits).unwrap();
        assert_eq!(check.status, Status::Pass);
        assert!(check.reason.starts_with("first deploy:"), "{check:?}");

        let platform = deployed_at(&head).await;
        let check = run_with(&repo, &platform, &options_offline()).await.checks[3].clone();
        assert_eq!(check.status, Status::Pass);
        assert!(check.reason.contains("is already deployed"), "{check:?}");

        let platform = deployed_at("0123456789abcdef0123456789abcdef01234567").await;
        let check = run_with(&repo, &platform, &options_offline()).await.checks[3].clone();
        assert_eq!(check.status, Status::Warn);
        assert_eq!(
            check.reason,
            "deployed commit `0123456789abcdef0123456789abcdef01234567` (revision `svc-00001`) is not in this repository"
        );
    }

    #[tokio::test]
    async fn step_4_warns_when_deploying_would_remove_live_commits() {
        let repo = TestRepo::new();
        let base = repo.commit_file("a.txt", "one", "base");
        let live = repo.commit_file("b.txt", "one", "hotfix deployed from elsewhere");
        repo.reset_hard(&base);
        repo.commit_file("c.txt", "one", "mine");
        let platform = deployed_at(&live).await;
        let check = run_with(&repo, &platform, &options_offline()).await.checks[3].clone();
        assert_eq!(check.status, Status::Warn, "{check:?}");
        assert!(check
            .reason
            .starts_with("1 commit ships but 1 deployed commit is missing from HEAD"));
    }

    #[tokio::test]
    async fn step_4_and_5_warn_when_the_platform_is_unreachable() {
        let repo = TestRepo::new();
        repo.commit_file("a.txt", "one", "first");
        let report = run_unreachable(&repo, "connection refused").await;
        for step in [Step::Commits, Step::DeploymentStatus, Step::ServiceHealth] {
            let check = report.check(step).unwrap();
            assert_eq!(check.status, Status::Warn, "{check:?}");
            assert_eq!(check.reason, "cannot run: connection refused");
        }
        let check = report.check(Step::SchemaChanges).unwrap();
        assert_eq!(check.status, Status::Pass, "no globs configured: {check:?}");
    }

    #[tokio::test]
    async fn step_5_schema_changes_need_explicit_confirmation() {
        let repo = TestRepo::new();
        let deployed = repo.commit_file("src/main.rs", "fn main() {}", "deployed");
        repo.commit_file("src/lib.rs", "", "code only");
        let platform = deployed_at(&deployed).await;
        let globs = ["schemas/**".to_string(), "migrations/*.sql".to_string()];
        let check = schema_step(&repo, &platform, &globs).await;
        assert_eq!(check.status, Status::Pass, "{check:?}");
        assert_eq!(
            check.reason,
            "no schema file changes (schemas/**, migrations/*.sql)"
        );

        repo.commit_file(
            "migrations/nested/x.sql",
            "",
            "not matched: `*` stops at `/`",
        );
        repo.commit_file("schemas/bigquery/players.json", "{}", "new column");
        repo.commit_file("migrations/002.sql", "alter table", "migration");
        let check = schema_step(&repo, &platform, &globs).await;
        assert_eq!(check.status, Status::Warn, "{check:?}");
        assert!(check.needs_explicit_confirmation);
        assert_eq!(
            check.details,
            ["migrations/002.sql", "schemas/bigquery/players.json"]
        );
        assert!(check
            .reason
            .starts_with("2 schema files change: rolling back to"));
    }

    #[tokio::test]
    async fn step_5_invalid_glob_and_unknown_range_warn() {
        let repo = TestRepo::new();
        repo.commit_file("a.txt", "one", "first");
        let platform = deployed_at("0123456789abcdef0123456789abcdef01234567").await;
        let check = schema_step(&repo, &platform, &["schemas/**".to_string()]).await;
        assert_eq!(check.status, Status::Warn);
        assert!(check
            .reason
            .starts_with("cannot run: the deployed commit is unknown"));
        let check = schema_step(&repo, &platform, &["schemas/[".to_string()]).await;
        assert_eq!(check.status, Status::Warn);
        assert!(check
            .reason
            .starts_with("cannot run: invalid glob `schemas/[`"));
    }
}
