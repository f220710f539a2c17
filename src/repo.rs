//! Facts from git (through libgit2): the commit being built and whether the working tree has
//! uncommitted changes, plus a fingerprint of those changes.
//!
//! The image build stamps these into labels and tags, so what a tag or label claims must be
//! exactly what git says: a tree with changes is never labelled as a clean commit (its tag says
//! `-dirty-` and carries a hash of the changes, so two different dirty builds of the same commit
//! get different tags). Other read-only git facts (branch, remote, ahead/behind) belong here too.

use std::path::{Path, PathBuf};

use sha2::Digest;

/// Errors reading the repository.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// No git repository at or above the path.
    #[error("`{path}` is not inside a git repository")]
    NotARepository { path: PathBuf },
    /// The repository has no commit yet.
    #[error("the repository at `{path}` has no commit yet")]
    NoCommit { path: PathBuf },
    /// Any other libgit2 failure.
    #[error("git: cannot {action}")]
    Git {
        action: &'static str,
        #[source]
        source: git2::Error,
    },
}

/// An opened repository.
pub struct Repository {
    inner: git2::Repository,
}

/// The source state a build comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRevision {
    /// The full hex id of `HEAD`.
    pub commit: String,
    /// `Some(fingerprint)` when tracked files differ from `HEAD` or untracked, non-ignored files
    /// exist: the first 8 hex digits of a SHA-256 over the diff and the untracked files' content.
    pub dirty: Option<String>,
}

impl SourceRevision {
    /// The first 12 hex digits of the commit.
    pub fn short_commit(&self) -> &str {
        &self.commit[..self.commit.len().min(12)]
    }
}

impl Repository {
    /// Opens the repository containing `path`.
    pub fn discover(path: &Path) -> Result<Self, RepoError> {
        let inner = git2::Repository::discover(path).map_err(|source| {
            if source.code() == git2::ErrorCode::NotFound {
                RepoError::NotARepository {
                    path: path.to_path_buf(),
                }
            } else {
                RepoError::Git {
                    action: "open the repository",
                    source,
                }
            }
        })?;
        Ok(Self { inner })
    }

    /// The working tree's root directory.
    pub fn root(&self) -> Option<&Path> {
        self.inner.workdir()
    }

    /// `HEAD`'s commit and the working tree's state against it.
    pub fn source_revision(&self) -> Result<SourceRevision, RepoError> {
        let head = match self.inner.head() {
            Ok(head) => head,
            Err(error)
                if error.code() == git2::ErrorCode::UnbornBranch
                    || error.code() == git2::ErrorCode::NotFound =>
            {
                return Err(RepoError::NoCommit {
                    path: self.inner.path().to_path_buf(),
                })
            }
            Err(source) => {
                return Err(RepoError::Git {
                    action: "read HEAD",
                    source,
                })
            }
        };
        let commit = head.peel_to_commit().map_err(|source| RepoError::Git {
            action: "read the commit of HEAD",
            source,
        })?;
        Ok(SourceRevision {
            commit: commit.id().to_string(),
            dirty: self.change_fingerprint(&commit)?,
        })
    }

    /// The URL of remote `name`, if it exists.
    pub fn remote_url(&self, name: &str) -> Option<String> {
        self.inner
            .find_remote(name)
            .ok()
            .and_then(|remote| remote.url().ok().map(str::to_string))
    }

    fn change_fingerprint(&self, head: &git2::Commit<'_>) -> Result<Option<String>, RepoError> {
        let git = |action| move |source| RepoError::Git { action, source };
        let tree = head.tree().map_err(git("read the tree of HEAD"))?;
        let mut options = git2::DiffOptions::new();
        options
            .include_untracked(true)
            .recurse_untracked_dirs(true)
            .show_untracked_content(true)
            .include_typechange(true);
        let diff = self
            .inner
            .diff_tree_to_workdir_with_index(Some(&tree), Some(&mut options))
            .map_err(git("compare the working tree with HEAD"))?;
        if diff.deltas().len() == 0 {
            return Ok(None);
        }
        let mut hasher = sha2::Sha256::new();
        diff.print(git2::DiffFormat::Patch, |_, _, line| {
            hasher.update([line.origin() as u8]);
            hasher.update(line.content());
            true
        })
        .map_err(git("read the changes against HEAD"))?;
        let digest = hasher.finalize();
        let fingerprint: String = digest[..4]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Ok(Some(fingerprint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit_all(repository: &git2::Repository, message: &str) {
        let mut index = repository.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.write().unwrap();
        let tree = repository.find_tree(index.write_tree().unwrap()).unwrap();
        let signature = git2::Signature::now("test", "test@example.com").unwrap();
        let parents: Vec<git2::Commit> = repository
            .head()
            .ok()
            .and_then(|head| head.peel_to_commit().ok())
            .into_iter()
            .collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        repository
            .commit(
                Some("HEAD"),
                &signature,
                &signature,
                message,
                &tree,
                &parents,
            )
            .unwrap();
    }

    #[test]
    fn clean_dirty_and_untracked() {
        let directory = tempfile::tempdir().unwrap();
        let git = git2::Repository::init(directory.path()).unwrap();
        let repository = Repository::discover(directory.path()).unwrap();
        assert!(matches!(
            repository.source_revision(),
            Err(RepoError::NoCommit { .. })
        ));

        std::fs::write(directory.path().join("a.txt"), "one").unwrap();
        commit_all(&git, "first");
        let clean = repository.source_revision().unwrap();
        assert_eq!(clean.commit.len(), 40);
        assert_eq!(clean.short_commit().len(), 12);
        assert_eq!(clean.dirty, None);

        std::fs::write(directory.path().join("a.txt"), "two").unwrap();
        let modified = repository.source_revision().unwrap();
        assert_eq!(modified.commit, clean.commit);
        let first = modified.dirty.clone().unwrap();
        assert_eq!(first.len(), 8);

        std::fs::write(directory.path().join("a.txt"), "three").unwrap();
        let other = repository.source_revision().unwrap().dirty.unwrap();
        assert_ne!(first, other, "different changes, different fingerprints");

        std::fs::write(directory.path().join("a.txt"), "one").unwrap();
        std::fs::write(directory.path().join("new.txt"), "untracked").unwrap();
        assert!(repository.source_revision().unwrap().dirty.is_some());
    }
}
