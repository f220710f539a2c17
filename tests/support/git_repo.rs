//! A temporary repository on `main` with a bare `origin`, whose commits are dated in the past
//! (`hours_ago`), for tests of what depends on commit ages (drift).

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]
#![allow(dead_code)] // Each test binary uses a different part.

use std::path::Path;

use git2::{Signature, Time};

pub struct Repo {
    directory: tempfile::TempDir,
    remote: tempfile::TempDir,
}

impl Repo {
    pub fn new() -> Self {
        let directory = tempfile::tempdir().unwrap();
        let remote = tempfile::tempdir().unwrap();
        git2::Repository::init_bare(remote.path()).unwrap();
        let mut options = git2::RepositoryInitOptions::new();
        options.initial_head("main");
        let repository = git2::Repository::init_opts(directory.path(), &options).unwrap();
        repository
            .remote("origin", remote.path().to_str().unwrap())
            .unwrap();
        Self { directory, remote }
    }

    pub fn path(&self) -> &Path {
        self.directory.path()
    }

    /// The bare repository `origin` was made with (also after its URL changes).
    pub fn remote_path(&self) -> &Path {
        self.remote.path()
    }

    pub fn write(&self, file: &str, content: &str) {
        let path = self.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// Commits `files` (already written) as Ada, dated `hours_ago`; returns the commit id.
    pub fn commit(&self, files: &[&str], message: &str, hours_ago: i64) -> String {
        let repository = git2::Repository::open(self.path()).unwrap();
        let mut index = repository.index().unwrap();
        for file in files {
            index.add_path(Path::new(file)).unwrap();
        }
        index.write().unwrap();
        let tree = repository.find_tree(index.write_tree().unwrap()).unwrap();
        let when = Time::new(chrono::Utc::now().timestamp() - hours_ago * 3600, 0);
        let signature = Signature::new("Ada", "ada@example.com", &when).unwrap();
        let parent = repository
            .head()
            .ok()
            .and_then(|head| head.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        repository
            .commit(
                Some("HEAD"),
                &signature,
                &signature,
                message,
                &tree,
                &parents,
            )
            .unwrap()
            .to_string()
    }

    /// Writes `content` to `file` and commits it.
    pub fn change(&self, file: &str, content: &str, message: &str, hours_ago: i64) -> String {
        self.write(file, content);
        self.commit(&[file], message, hours_ago)
    }

    /// Pushes `main` to `origin` (so `origin/main` moves when drift fetches).
    pub fn push(&self) {
        let repository = git2::Repository::open(self.path()).unwrap();
        let mut remote = repository.find_remote("origin").unwrap();
        remote
            .push(&["+refs/heads/main:refs/heads/main"], None)
            .unwrap();
    }

    /// Moves `main` back to `commit` locally (later commits stay only in the object store).
    pub fn reset(&self, commit: &str) {
        let repository = git2::Repository::open(self.path()).unwrap();
        let object = repository.revparse_single(commit).unwrap();
        repository
            .reset(&object, git2::ResetType::Hard, None)
            .unwrap();
    }
}
