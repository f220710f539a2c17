//! Steps 1–3: uncommitted changes, the branch, and sync with the remote — git facts only.

use crate::{
    config::PreflightConfig,
    repo::{short, Head, RepoError, Repository},
};

use super::{describe, Check, PreflightOptions, Step};

/// How many paths a check lists before summarising the rest.
const LISTED_PATHS: usize = 20;

fn listed(paths: &[String], prefix: &str) -> Vec<String> {
    let mut lines: Vec<String> = paths
        .iter()
        .take(LISTED_PATHS)
        .map(|path| format!("{prefix}{path}"))
        .collect();
    if paths.len() > LISTED_PATHS {
        lines.push(format!("... and {} more", paths.len() - LISTED_PATHS));
    }
    lines
}

fn plural(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// Step 1.
pub(super) fn uncommitted(repo: &Result<Repository, RepoError>) -> Check {
    let step = Step::UncommittedChanges;
    let repo = match repo {
        Ok(repo) => repo,
        // Without a repository no commit describes the code: a deploy could not be traced back,
        // so this is a FAIL rather than a step that "could not run".
        Err(error) => {
            return Check::fail(step, describe(error))
                .hint("run deployer inside the service's git repository")
        }
    };
    let status = match repo.status() {
        Ok(status) => status,
        Err(error) => return Check::warn(step, describe(&error)),
    };
    if status.has_uncommitted_changes() {
        let mut parts = Vec::new();
        if status.modified > 0 {
            parts.push(format!("{} modified", status.modified));
        }
        if status.staged > 0 {
            parts.push(format!("{} staged", status.staged));
        }
        let mut details = listed(&status.changed_paths, "changed: ");
        details.extend(listed(&status.untracked_paths, "untracked: "));
        let untracked = if status.untracked > 0 {
            format!(
                "; {}",
                plural(status.untracked, "untracked file", "untracked files")
            )
        } else {
            String::new()
        };
        return Check::fail(
            step,
            format!(
                "{} not committed ({}){untracked}",
                plural(status.changed_paths.len(), "file", "files"),
                parts.join(", ")
            ),
        )
        .hint("commit or stash them: the image would contain code that no commit describes")
        .details(details);
    }
    if status.untracked > 0 {
        return Check::warn(
            step,
            format!(
                "{} (not in any commit)",
                plural(status.untracked, "untracked file", "untracked files")
            ),
        )
        .hint("commit, delete or `.gitignore` them: a build context can pick them up")
        .details(listed(&status.untracked_paths, "untracked: "));
    }
    Check::pass(step, "working tree clean")
}

/// Step 2. A detached HEAD (usual in CI checkouts) passes when it is exactly the tip of the
/// configured branch, locally or on the remote.
pub(super) fn branch(
    repo: &Result<Repository, RepoError>,
    head: Option<&Result<Head, RepoError>>,
    branch: &str,
    remote: &str,
) -> Check {
    let step = Step::Branch;
    let (repo, head) = match (repo, head) {
        (Ok(repo), Some(Ok(head))) => (repo, head),
        (Err(error), _) | (Ok(_), Some(Err(error))) => {
            return Check::warn(step, format!("cannot run: {}", describe(error)))
        }
        (Ok(_), None) => return Check::warn(step, "cannot run: HEAD was not read"),
    };
    match head {
        Head::Branch { name, .. } if name == branch => Check::pass(step, format!("on `{name}`")),
        Head::Branch { name, .. } => Check::fail(
            step,
            format!("on `{name}`, but deploys come from `{branch}`"),
        )
        .hint(format!(
            "merge into `{branch}` and deploy from there (or set `preflight.branch` in the service file)"
        )),
        Head::Detached { commit } => {
            let tips = [
                (repo.branch_commit(branch), branch.to_string()),
                (
                    repo.remote_branch_commit(remote, branch),
                    format!("{remote}/{branch}"),
                ),
            ];
            for (tip, name) in tips {
                if matches!(tip, Ok(Some(ref tip)) if tip == commit) {
                    return Check::pass(
                        step,
                        format!("detached HEAD at the tip of `{name}` ({})", short(commit)),
                    );
                }
            }
            Check::fail(
                step,
                format!(
                    "detached HEAD at {}, which is not the tip of `{branch}`",
                    short(commit)
                ),
            )
            .hint(format!("check out `{branch}`"))
        }
    }
}

/// Step 3. Compares HEAD with `REMOTE/BRANCH` after a fetch (unless `--no-fetch`). A failed
/// fetch still compares with the last fetched state, but can only WARN, never PASS: the remote
/// may have moved.
pub(super) fn remote_sync(
    repo: &Result<Repository, RepoError>,
    head: Option<&Result<Head, RepoError>>,
    config: &PreflightConfig,
    options: &PreflightOptions,
) -> Check {
    let step = Step::RemoteSync;
    let (repo, head) = match (repo, head) {
        (Ok(repo), Some(Ok(head))) => (repo, head),
        (Err(error), _) | (Ok(_), Some(Err(error))) => {
            return Check::warn(step, format!("cannot run: {}", describe(error)))
        }
        (Ok(_), None) => return Check::warn(step, "cannot run: HEAD was not read"),
    };
    let (remote, branch) = (config.remote.as_str(), config.branch.as_str());
    let tracking = format!("{remote}/{branch}");
    if !repo.has_remote(remote) {
        return Check::warn(
            step,
            format!("cannot run: the repository has no remote `{remote}`"),
        )
        .hint(format!(
            "add it (`git remote add {remote} URL`) or set `preflight.remote` in the service file"
        ));
    }
    let fetch_problem = if options.fetch {
        repo.fetch(remote, branch, options.fetch_time_limit)
            .err()
            .map(|error| describe(&error))
    } else {
        None
    };
    let upstream = match repo.remote_branch_commit(remote, branch) {
        Ok(Some(upstream)) => upstream,
        Ok(None) => {
            let why = match &fetch_problem {
                Some(problem) => format!("{problem}; `{tracking}` was never fetched"),
                None => format!("`{tracking}` does not exist"),
            };
            return Check::warn(step, format!("cannot run: {why}"))
                .hint(format!("push the branch (`git push {remote} {branch}`)"));
        }
        Err(error) => return Check::warn(step, format!("cannot run: {}", describe(&error))),
    };
    let divergence = match repo.divergence(head.commit(), &upstream) {
        Ok(divergence) => divergence,
        Err(error) => return Check::warn(step, format!("cannot run: {}", describe(&error))),
    };
    let as_of = match (&fetch_problem, options.fetch) {
        (Some(_), _) => " as last fetched",
        (None, false) => " as last fetched (--no-fetch)",
        (None, true) => "",
    };
    let check = match (divergence.ahead, divergence.behind) {
        (0, 0) => Check::pass(step, format!("in sync with `{tracking}`{as_of}")),
        (ahead, 0) => Check::fail(
            step,
            format!(
                "{} not pushed to `{tracking}`{as_of}",
                plural(ahead, "commit", "commits")
            ),
        )
        .hint(format!(
            "push first (`git push {remote} {branch}`): deploy only what the team can see"
        )),
        (0, behind) => Check::fail(
            step,
            format!(
                "{} behind `{tracking}`{as_of}",
                plural(behind, "commit", "commits")
            ),
        )
        .hint(format!(
            "pull first (`git pull {remote} {branch}`): deploying would drop commits others pushed"
        )),
        (ahead, behind) => Check::fail(
            step,
            format!("diverged from `{tracking}`{as_of}: {ahead} ahead, {behind} behind"),
        )
        .hint(format!("rebase or merge `{tracking}`, then push")),
    };
    match fetch_problem {
        // A stale comparison that looks fine is only a warning: the remote may have moved.
        Some(problem) if check.status == super::Status::Pass => Check::warn(
            step,
            format!("{problem}; in sync with `{tracking}` as last fetched"),
        )
        .hint(format!(
            "fetch yourself (`git fetch {remote}`) and run again with `--no-fetch`"
        )),
        _ => check,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{test_support::*, Status, Step};
    use crate::testing::TestRepo;

    #[tokio::test]
    async fn step_1_clean_untracked_and_modified() {
        let repo = TestRepo::new();
        repo.commit_file("a.txt", "one", "first");
        let check = run_step(&repo, Step::UncommittedChanges).await;
        assert_eq!(check.status, Status::Pass, "{check:?}");

        repo.write("notes.txt", "scratch");
        let check = run_step(&repo, Step::UncommittedChanges).await;
        assert_eq!(check.status, Status::Warn, "{check:?}");
        assert_eq!(check.reason, "1 untracked file (not in any commit)");
        assert_eq!(check.details, ["untracked: notes.txt"]);

        repo.write("a.txt", "changed");
        let check = run_step(&repo, Step::UncommittedChanges).await;
        assert_eq!(check.status, Status::Fail, "{check:?}");
        assert_eq!(
            check.reason,
            "1 file not committed (1 modified); 1 untracked file"
        );
    }

    #[tokio::test]
    async fn step_1_outside_a_repository_fails() {
        let directory = tempfile::tempdir().unwrap();
        let report = run_in(directory.path(), &options_offline()).await;
        let check = report.check(Step::UncommittedChanges).unwrap();
        assert_eq!(check.status, Status::Fail);
        assert!(check.reason.contains("is not inside a git repository"));
        let branch = report.check(Step::Branch).unwrap();
        assert_eq!(branch.status, Status::Warn);
        assert!(branch.reason.starts_with("cannot run:"));
    }

    #[tokio::test]
    async fn step_2_branch_other_branch_and_detached() {
        let repo = TestRepo::new();
        repo.commit_file("a.txt", "one", "first");
        assert_eq!(run_step(&repo, Step::Branch).await.status, Status::Pass);

        repo.detach();
        let check = run_step(&repo, Step::Branch).await;
        assert_eq!(check.status, Status::Pass, "{check:?}");
        assert!(check
            .reason
            .starts_with("detached HEAD at the tip of `main`"));

        repo.switch_to_new_branch("feature");
        repo.commit_file("b.txt", "one", "feature work");
        let check = run_step(&repo, Step::Branch).await;
        assert_eq!(check.status, Status::Fail);
        assert_eq!(check.reason, "on `feature`, but deploys come from `main`");

        repo.detach();
        let check = run_step(&repo, Step::Branch).await;
        assert_eq!(check.status, Status::Fail);
        assert!(check.reason.contains("not the tip of `main`"));
    }

    #[tokio::test]
    async fn step_3_in_sync_ahead_behind_and_no_remote() {
        let repo = TestRepo::new();
        repo.commit_file("a.txt", "one", "first");
        let check = run_step(&repo, Step::RemoteSync).await;
        assert_eq!(check.status, Status::Warn);
        assert_eq!(
            check.reason,
            "cannot run: the repository has no remote `origin`"
        );

        let remote = repo.add_bare_remote("origin");
        repo.push("origin", "main");
        let check = run_step_fetching(&repo, Step::RemoteSync).await;
        assert_eq!(check.status, Status::Pass, "{check:?}");
        assert_eq!(check.reason, "in sync with `origin/main`");

        repo.commit_file("b.txt", "one", "unpushed");
        let check = run_step_fetching(&repo, Step::RemoteSync).await;
        assert_eq!(check.status, Status::Fail);
        assert_eq!(check.reason, "1 commit not pushed to `origin/main`");
        repo.push("origin", "main");

        // Someone else pushes: only a fetch can see it.
        let other = remote.clone_into_temp();
        other.commit_file("c.txt", "x", "theirs");
        other.push("origin", "main");
        let check = run_step(&repo, Step::RemoteSync).await;
        assert_eq!(check.status, Status::Pass, "not fetched: {check:?}");
        assert_eq!(
            check.reason,
            "in sync with `origin/main` as last fetched (--no-fetch)"
        );
        let check = run_step_fetching(&repo, Step::RemoteSync).await;
        assert_eq!(check.status, Status::Fail);
        assert_eq!(check.reason, "1 commit behind `origin/main`");

        repo.commit_file("d.txt", "x", "mine");
        let check = run_step_fetching(&repo, Step::RemoteSync).await;
        assert_eq!(check.status, Status::Fail);
        assert_eq!(
            check.reason,
            "diverged from `origin/main`: 1 ahead, 1 behind"
        );
    }

    #[tokio::test]
    async fn step_3_a_failed_fetch_warns_with_the_reason() {
        let repo = TestRepo::new();
        repo.commit_file("a.txt", "one", "first");
        let _remote = repo.add_bare_remote("origin");
        repo.push("origin", "main");
        repo.set_remote_url("origin", "/nonexistent/remote.git");
        let check = run_step_fetching(&repo, Step::RemoteSync).await;
        assert_eq!(check.status, Status::Warn, "{check:?}");
        assert!(
            check.reason.starts_with("fetching `origin` failed: "),
            "{check:?}"
        );
        assert!(check
            .reason
            .ends_with("in sync with `origin/main` as last fetched"));
    }
}
