//! Facts from git, read through libgit2 (`git2`): working-tree status, the current branch and
//! commit, ahead/behind against a remote branch (with a time-limited fetch), the commits and
//! changed paths between two commits, and whether a commit exists.
//!
//! deployer reads through libgit2, never by parsing `git` output: the answers must not depend
//! on the user's git version, aliases or configuration (a `log.showSignature` or a pager would
//! change the output), and libgit2 answers in-process, which keeps the preflight checklist fast
//! on large histories. The one exception is fetching https and ssh remotes: deployer's libgit2
//! is built without TLS and SSH (no OpenSSL, no libssh2 to build or keep patched), and the `git`
//! CLI already has the user's credentials (credential helpers, `ssh-agent`, the `extraheader`
//! that `actions/checkout` leaves), so [`Repository::fetch`] runs `git fetch` for them when
//! `git` is installed. Only its exit status is read, never its output.
//!
//! Speed matters here because the preflight runs before every deploy, on repositories with a
//! hundred thousand commits: ranges are walked with `hide()` (libgit2 stops at the hidden commit
//! instead of walking the whole history), and changed paths come from one diff of the two trees,
//! never from a diff per commit.

use std::path::{Path, PathBuf};

use git2::{BranchType, ErrorCode, Oid, Status, StatusOptions};
use serde::Serialize;
use sha2::Digest;

use crate::untrusted::first_chars;

mod commits;
mod fetch;
mod paths;

pub use commits::{Author, CommitRange, CommitSummary, Divergence};
pub use fetch::FetchError;
pub use paths::{literal_prefix, GlobError, PathFilter};

/// Errors reading the repository.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// No git working tree at or above the path (a bare repository has none either).
    #[error("`{path}` is not inside a git repository")]
    NotARepository {
        /// Where the search started.
        path: PathBuf,
    },
    /// HEAD points at a branch with no commit yet.
    #[error("the repository at `{path}` has no commit yet")]
    NoCommit {
        /// The repository's git directory.
        path: PathBuf,
    },
    /// Any other libgit2 failure, with what was being done.
    #[error("git: cannot {action}")]
    Git {
        /// What was being done (`read the status`, `walk the history`).
        action: String,
        /// libgit2's answer.
        #[source]
        source: git2::Error,
    },
}

fn git_error(action: impl Into<String>) -> impl FnOnce(git2::Error) -> RepoError {
    let action = action.into();
    move |source| RepoError::Git { action, source }
}

/// Uncommitted work in the working tree, counted by kind (ignored files are not counted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorkingTreeStatus {
    /// Files changed in the index (staged, not committed).
    pub staged: usize,
    /// Tracked files changed in the working tree and not staged (including conflicts).
    pub modified: usize,
    /// Files git does not track (and does not ignore).
    pub untracked: usize,
    /// Paths of the changed tracked files (staged or modified), sorted.
    pub changed_paths: Vec<String>,
    /// Paths of the untracked files, sorted.
    pub untracked_paths: Vec<String>,
}

impl WorkingTreeStatus {
    /// True when a tracked file differs from HEAD (what a commit label would not describe).
    pub fn has_uncommitted_changes(&self) -> bool {
        self.staged > 0 || self.modified > 0
    }

    /// True when anything differs from HEAD, untracked files included.
    pub fn is_dirty(&self) -> bool {
        self.has_uncommitted_changes() || self.untracked > 0
    }
}

/// The source state an image is built from: HEAD's commit, and a fingerprint of the changes
/// when the working tree differs from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRevision {
    /// The full hex id of `HEAD`.
    pub commit: String,
    /// `Some(fingerprint)` when tracked files differ from `HEAD` or untracked, non-ignored files
    /// exist: the first 8 hex digits of a SHA-256 over the diff and the untracked files' content,
    /// so two different dirty builds of the same commit get different tags.
    pub dirty: Option<String>,
}

impl SourceRevision {
    /// The first 12 hex digits of the commit.
    pub fn short_commit(&self) -> &str {
        short_commit(&self.commit, RECORDED_COMMIT_CHARS)
    }
}

/// What HEAD points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Head {
    /// A branch (`refs/heads/NAME`) and its commit.
    Branch {
        /// Short branch name.
        name: String,
        /// Full commit id.
        commit: String,
    },
    /// A commit, no branch (CI checkouts are often detached).
    Detached {
        /// Full commit id.
        commit: String,
    },
}

impl Head {
    /// The commit HEAD points at.
    pub fn commit(&self) -> &str {
        match self {
            Head::Branch { commit, .. } | Head::Detached { commit } => commit,
        }
    }

    /// The branch name, unless detached.
    pub fn branch(&self) -> Option<&str> {
        match self {
            Head::Branch { name, .. } => Some(name),
            Head::Detached { .. } => None,
        }
    }
}

/// Characters of a commit id in messages to people (git's own short form).
pub const SHOWN_COMMIT_CHARS: usize = 7;

/// Characters of a commit id kept in image tags, release records and status lines, where it must
/// stay unambiguous for longer.
pub const RECORDED_COMMIT_CHARS: usize = 12;

/// The first `length` characters of a commit id (all of it when shorter). By characters, never
/// bytes: a commit read from a label or a remote answer is not always hex.
pub fn short_commit(id: &str, length: usize) -> &str {
    first_chars(id, length)
}

/// The first [`SHOWN_COMMIT_CHARS`] characters of a commit id.
pub fn short(id: &str) -> &str {
    short_commit(id, SHOWN_COMMIT_CHARS)
}

/// An open repository.
pub struct Repository {
    repository: git2::Repository,
    workdir: PathBuf,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("workdir", &self.workdir)
            .finish()
    }
}

impl Repository {
    /// Opens the repository containing `path` (searching upwards, like `git` does).
    pub fn discover(path: &Path) -> Result<Self, RepoError> {
        let not_a_repository = || RepoError::NotARepository {
            path: path.to_path_buf(),
        };
        let repository = git2::Repository::discover(path).map_err(|source| {
            if source.code() == ErrorCode::NotFound {
                not_a_repository()
            } else {
                git_error("open the repository")(source)
            }
        })?;
        let workdir = repository
            .workdir()
            .map(Path::to_path_buf)
            .ok_or_else(not_a_repository)?;
        Ok(Self {
            repository,
            workdir,
        })
    }

    /// The working tree's top directory.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// The working tree's top directory (always `Some`: a bare repository is not opened).
    pub fn root(&self) -> Option<&Path> {
        Some(&self.workdir)
    }

    /// The URL of remote `name`, if it exists.
    pub fn remote_url(&self, name: &str) -> Option<String> {
        self.repository
            .find_remote(name)
            .ok()
            .and_then(|remote| remote.url().ok().map(str::to_string))
    }

    /// The underlying libgit2 handle, for callers that need more than these facts.
    pub fn git(&self) -> &git2::Repository {
        &self.repository
    }

    /// Counts staged, modified and untracked files (ignored files excluded).
    pub fn status(&self) -> Result<WorkingTreeStatus, RepoError> {
        let mut options = StatusOptions::new();
        options
            .include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_ignored(false)
            .exclude_submodules(true)
            // Without this libgit2 compares content to detect renames: slower, and a rename is
            // still an uncommitted change.
            .renames_head_to_index(false);
        let statuses = self
            .repository
            .statuses(Some(&mut options))
            .map_err(git_error("read the working-tree status"))?;
        let staged_bits = Status::INDEX_NEW
            | Status::INDEX_MODIFIED
            | Status::INDEX_DELETED
            | Status::INDEX_RENAMED
            | Status::INDEX_TYPECHANGE;
        let modified_bits = Status::WT_MODIFIED
            | Status::WT_DELETED
            | Status::WT_RENAMED
            | Status::WT_TYPECHANGE
            | Status::CONFLICTED;
        let mut result = WorkingTreeStatus::default();
        for entry in statuses.iter() {
            let status = entry.status();
            let path = String::from_utf8_lossy(entry.path_bytes()).into_owned();
            let staged = status.intersects(staged_bits);
            let modified = status.intersects(modified_bits);
            if staged {
                result.staged += 1;
            }
            if modified {
                result.modified += 1;
            }
            if staged || modified {
                result.changed_paths.push(path);
            } else if status.contains(Status::WT_NEW) {
                result.untracked += 1;
                result.untracked_paths.push(path);
            }
        }
        result.changed_paths.sort();
        result.untracked_paths.sort();
        Ok(result)
    }

    /// What HEAD points at.
    pub fn head(&self) -> Result<Head, RepoError> {
        let head = match self.repository.head() {
            Ok(head) => head,
            Err(error)
                if error.code() == ErrorCode::UnbornBranch
                    || error.code() == ErrorCode::NotFound =>
            {
                return Err(RepoError::NoCommit {
                    path: self.repository.path().to_path_buf(),
                });
            }
            Err(error) => return Err(git_error("read HEAD")(error)),
        };
        let commit = head
            .peel_to_commit()
            .map_err(git_error("read the commit of HEAD"))?
            .id()
            .to_string();
        if head.is_branch() {
            let name = head.shorthand().unwrap_or("HEAD").to_string();
            Ok(Head::Branch { name, commit })
        } else {
            Ok(Head::Detached { commit })
        }
    }

    /// The full id of the commit HEAD points at.
    pub fn head_commit(&self) -> Result<String, RepoError> {
        Ok(self.head()?.commit().to_string())
    }

    /// HEAD's commit and the working tree's state against it (what an image build stamps).
    pub fn source_revision(&self) -> Result<SourceRevision, RepoError> {
        let commit = self.head_commit()?;
        let head = self
            .repository
            .find_commit(self.oid(&commit)?)
            .map_err(git_error("read the commit of HEAD"))?;
        Ok(SourceRevision {
            dirty: self.change_fingerprint(&head)?,
            commit,
        })
    }

    fn change_fingerprint(&self, head: &git2::Commit<'_>) -> Result<Option<String>, RepoError> {
        let tree = head.tree().map_err(git_error("read the tree of HEAD"))?;
        let mut options = git2::DiffOptions::new();
        options
            .include_untracked(true)
            .recurse_untracked_dirs(true)
            .show_untracked_content(true)
            .include_typechange(true);
        let diff = self
            .repository
            .diff_tree_to_workdir_with_index(Some(&tree), Some(&mut options))
            .map_err(git_error("compare the working tree with HEAD"))?;
        if diff.deltas().len() == 0 {
            return Ok(None);
        }
        let mut hasher = sha2::Sha256::new();
        diff.print(git2::DiffFormat::Patch, |_, _, line| {
            hasher.update([line.origin() as u8]);
            hasher.update(line.content());
            true
        })
        .map_err(git_error("read the changes against HEAD"))?;
        let digest = hasher.finalize();
        Ok(Some(
            digest[..4]
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect(),
        ))
    }

    /// The commit a local branch points at, if the branch exists.
    pub fn branch_commit(&self, branch: &str) -> Result<Option<String>, RepoError> {
        match self.repository.find_branch(branch, BranchType::Local) {
            Ok(found) => Ok(found
                .get()
                .peel_to_commit()
                .ok()
                .map(|commit| commit.id().to_string())),
            Err(error) if error.code() == ErrorCode::NotFound => Ok(None),
            Err(error) => Err(git_error(format!("read branch `{branch}`"))(error)),
        }
    }

    /// The commit of the remote-tracking branch `REMOTE/BRANCH` as last fetched, if any.
    pub fn remote_branch_commit(
        &self,
        remote: &str,
        branch: &str,
    ) -> Result<Option<String>, RepoError> {
        let name = format!("{remote}/{branch}");
        match self.repository.find_branch(&name, BranchType::Remote) {
            Ok(found) => Ok(found
                .get()
                .peel_to_commit()
                .ok()
                .map(|commit| commit.id().to_string())),
            Err(error) if error.code() == ErrorCode::NotFound => Ok(None),
            Err(error) => Err(git_error(format!("read `{name}`"))(error)),
        }
    }

    fn oid(&self, id: &str) -> Result<Oid, RepoError> {
        Oid::from_str(id).map_err(git_error(format!("read commit id `{id}`")))
    }
}

/// The full id of HEAD's commit in the repository containing `path`.
pub fn head_commit(path: &Path) -> Result<String, RepoError> {
    Repository::discover(path)?.head_commit()
}

/// When `commit` was made (its committer time), in the repository containing `path`; `None`
/// when there is no repository or it does not hold the commit (an `--image` built elsewhere).
pub fn commit_time(path: &Path, commit: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let repository = Repository::discover(path).ok()?;
    let oid = Oid::from_str(commit).ok()?;
    let found = repository.repository.find_commit(oid).ok()?;
    chrono::DateTime::from_timestamp(found.time().seconds(), 0)
}

/// True when the working tree containing `path` differs from HEAD, untracked files included
/// (an image built from it would contain code no commit describes).
pub fn is_dirty(path: &Path) -> Result<bool, RepoError> {
    Ok(Repository::discover(path)?.status()?.is_dirty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestRepo;

    #[test]
    fn status_counts_staged_modified_and_untracked_separately() {
        let repo = TestRepo::new();
        repo.commit_file("a.txt", "one", "first");
        repo.commit_file("b.txt", "one", "second");
        repo.write("a.txt", "changed");
        repo.write("b.txt", "changed");
        repo.stage("b.txt");
        repo.write("new.txt", "new");
        repo.write(".gitignore", "ignored.txt\n");
        repo.write("ignored.txt", "x");
        let status = Repository::discover(repo.path()).unwrap().status().unwrap();
        assert_eq!(status.staged, 1);
        assert_eq!(status.modified, 1);
        assert_eq!(status.untracked, 2, "new.txt and .gitignore");
        assert_eq!(status.changed_paths, ["a.txt", "b.txt"]);
        assert!(is_dirty(repo.path()).unwrap());
    }

    #[test]
    fn head_branch_detached_and_unborn() {
        let repo = TestRepo::new();
        let error = Repository::discover(repo.path())
            .unwrap()
            .head()
            .unwrap_err();
        assert!(matches!(error, RepoError::NoCommit { .. }), "{error:?}");
        let first = repo.commit_file("a.txt", "one", "first");
        let opened = Repository::discover(repo.path()).unwrap();
        assert_eq!(
            opened.head().unwrap(),
            Head::Branch {
                name: "main".into(),
                commit: first.clone()
            }
        );
        assert_eq!(head_commit(repo.path()).unwrap(), first);
        assert!(!is_dirty(repo.path()).unwrap());
        repo.detach();
        assert_eq!(opened.head().unwrap(), Head::Detached { commit: first });
    }

    #[test]
    fn source_revision_fingerprints_the_changes() {
        let repo = TestRepo::new();
        let opened = Repository::discover(repo.path()).unwrap();
        assert!(matches!(
            opened.source_revision(),
            Err(RepoError::NoCommit { .. })
        ));
        let first = repo.commit_file("a.txt", "one", "first");
        let clean = opened.source_revision().unwrap();
        assert_eq!(clean.commit, first);
        assert_eq!(clean.short_commit(), &first[..12]);
        assert_eq!(clean.dirty, None);
        repo.write("a.txt", "two");
        let one = opened.source_revision().unwrap().dirty.unwrap();
        assert_eq!(one.len(), 8);
        repo.write("a.txt", "three");
        let other = opened.source_revision().unwrap().dirty.unwrap();
        assert_ne!(one, other, "different changes, different fingerprints");
        repo.write("a.txt", "one");
        repo.write("new.txt", "untracked");
        assert!(opened.source_revision().unwrap().dirty.is_some());
    }

    #[test]
    fn outside_a_repository_is_a_clear_error() {
        let directory = tempfile::tempdir().unwrap();
        let error = Repository::discover(directory.path()).unwrap_err();
        assert!(error.to_string().contains("is not inside a git repository"));
    }
}
