//! Test fixtures shared by unit tests: temporary git repositories built through `git2`, with a
//! local bare repository as their remote. Commit times advance by a fixed step from a fixed
//! epoch, so commit ids are the same on every run (snapshots can show them).

use std::{cell::Cell, path::Path};

use git2::{Repository, RepositoryInitOptions, Signature, Time};

/// A temporary repository with a working tree, on branch `main`.
pub struct TestRepo {
    directory: tempfile::TempDir,
    repository: Repository,
    clock: Cell<i64>,
}

/// A temporary bare repository, used as a remote.
pub struct BareRemote {
    directory: tempfile::TempDir,
}

impl TestRepo {
    /// An empty repository on an unborn `main`.
    pub fn new() -> Self {
        let directory = tempfile::tempdir().expect("temporary directory");
        let mut options = RepositoryInitOptions::new();
        options.initial_head("main");
        let repository = Repository::init_opts(directory.path(), &options).expect("git init");
        Self::wrap(directory, repository)
    }

    fn wrap(directory: tempfile::TempDir, repository: Repository) -> Self {
        Self {
            directory,
            repository,
            clock: Cell::new(1_700_000_000),
        }
    }

    /// The working tree.
    pub fn path(&self) -> &Path {
        self.directory.path()
    }

    /// Writes a file of the working tree (creating directories).
    pub fn write(&self, path: &str, content: &str) {
        let full = self.path().join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).expect("create directories");
        }
        std::fs::write(full, content).expect("write file");
    }

    /// Stages a file (`git add`).
    pub fn stage(&self, path: &str) {
        let mut index = self.repository.index().expect("index");
        index.add_path(Path::new(path)).expect("git add");
        index.write().expect("write index");
    }

    /// Writes, stages and commits one file as "Tester"; returns the commit id.
    pub fn commit_file(&self, path: &str, content: &str, message: &str) -> String {
        self.commit_file_as(path, content, message, "Tester")
    }

    /// Writes, stages and commits one file as `author`; returns the commit id.
    pub fn commit_file_as(&self, path: &str, content: &str, message: &str, author: &str) -> String {
        self.write(path, content);
        self.stage(path);
        self.commit_index(message, author)
    }

    /// Commits the index as `author`; returns the commit id.
    pub fn commit_index(&self, message: &str, author: &str) -> String {
        let time = self.clock.get() + 60;
        self.clock.set(time);
        let signature = Signature::new(
            author,
            &format!("{}@example.com", author.to_lowercase()),
            &Time::new(time, 0),
        )
        .expect("signature");
        let mut index = self.repository.index().expect("index");
        let tree = self
            .repository
            .find_tree(index.write_tree().expect("write tree"))
            .expect("tree");
        let parent = self
            .repository
            .head()
            .ok()
            .and_then(|head| head.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        self.repository
            .commit(
                Some("HEAD"),
                &signature,
                &signature,
                message,
                &tree,
                &parents,
            )
            .expect("commit")
            .to_string()
    }

    /// Detaches HEAD at its current commit.
    pub fn detach(&self) {
        let commit = self
            .repository
            .head()
            .and_then(|head| head.peel_to_commit())
            .expect("HEAD commit");
        self.repository
            .set_head_detached(commit.id())
            .expect("detach");
    }

    /// Creates a branch at HEAD and switches to it (the working tree is unchanged).
    pub fn switch_to_new_branch(&self, name: &str) {
        let commit = self
            .repository
            .head()
            .and_then(|head| head.peel_to_commit())
            .expect("HEAD commit");
        self.repository
            .branch(name, &commit, false)
            .expect("branch");
        self.repository
            .set_head(&format!("refs/heads/{name}"))
            .expect("switch");
    }

    /// Moves the current branch (and HEAD) back to `commit`, keeping the working tree in step.
    pub fn reset_hard(&self, commit: &str) {
        let object = self
            .repository
            .find_object(git2::Oid::from_str(commit).expect("id"), None)
            .expect("commit");
        self.repository
            .reset(&object, git2::ResetType::Hard, None)
            .expect("reset");
    }

    /// Creates a bare repository and adds it as remote `name`.
    pub fn add_bare_remote(&self, name: &str) -> BareRemote {
        let directory = tempfile::tempdir().expect("temporary directory");
        let mut options = RepositoryInitOptions::new();
        options.bare(true).initial_head("main");
        Repository::init_opts(directory.path(), &options).expect("git init --bare");
        self.set_remote_url(name, &directory.path().to_string_lossy());
        BareRemote { directory }
    }

    /// Adds (or repoints) remote `name` to `url`.
    pub fn set_remote_url(&self, name: &str, url: &str) {
        if self.repository.find_remote(name).is_ok() {
            self.repository.remote_set_url(name, url).expect("set url");
        } else {
            self.repository.remote(name, url).expect("add remote");
        }
    }

    /// Pushes `branch` to `remote` (forced) and updates `REMOTE/BRANCH` as `git push` does.
    pub fn push(&self, remote: &str, branch: &str) {
        let mut found = self.repository.find_remote(remote).expect("remote");
        found
            .push(&[format!("+refs/heads/{branch}:refs/heads/{branch}")], None)
            .expect("push");
        let commit = self
            .repository
            .find_branch(branch, git2::BranchType::Local)
            .and_then(|found| found.get().peel_to_commit())
            .expect("branch commit");
        self.repository
            .reference(
                &format!("refs/remotes/{remote}/{branch}"),
                commit.id(),
                true,
                "push",
            )
            .expect("update remote-tracking ref");
    }
}

impl BareRemote {
    /// The bare repository.
    pub fn path(&self) -> &Path {
        self.directory.path()
    }

    /// Clones the remote into a new temporary repository (its remote is `origin`).
    pub fn clone_into_temp(&self) -> TestRepo {
        let directory = tempfile::tempdir().expect("temporary directory");
        let repository =
            Repository::clone(&self.directory.path().to_string_lossy(), directory.path())
                .expect("git clone");
        let clone = TestRepo::wrap(directory, repository);
        // Later commits than the original's, so ids never collide by accident.
        clone.clock.set(1_800_000_000);
        clone
    }
}
