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

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    time::Duration,
};

use git2::{BranchType, ErrorCode, Oid, Sort, Status, StatusOptions};
use serde::Serialize;
use sha2::Digest;

use crate::untrusted::first_chars;

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

/// Errors of [`Repository::fetch`].
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No remote of that name.
    #[error("no remote named `{0}`")]
    NoRemote(String),
    /// A branch name git would refuse.
    #[error("`{0}` is not a valid branch name")]
    InvalidBranch(String),
    /// The fetch did not finish within its time limit (it is abandoned).
    #[error("fetching `{remote}` did not finish within {}", humantime::format_duration(*limit))]
    TimedOut {
        /// The remote.
        remote: String,
        /// The time limit.
        limit: Duration,
    },
    /// The fetch failed (network, a transport deployer's libgit2 lacks, authentication).
    #[error("fetching `{remote}` failed")]
    Failed {
        /// The remote.
        remote: String,
        /// libgit2's answer.
        #[source]
        source: git2::Error,
    },
    /// An https or ssh remote, and no `git` CLI to fetch it: the built-in libgit2 has no TLS
    /// or SSH.
    #[error(
        "fetching `{remote}` needs the `git` CLI (its URL is {transport}), which is not installed"
    )]
    NeedsGitCli {
        /// The remote.
        remote: String,
        /// `https`, `http` or `ssh`.
        transport: &'static str,
        /// libgit2's answer.
        #[source]
        source: git2::Error,
    },
    /// `git fetch` (the CLI, for https and ssh remotes) ended in failure.
    #[error("fetching `{remote}` with `git fetch` failed ({status}): {stderr}")]
    GitCliFailed {
        /// The remote.
        remote: String,
        /// `exit status 128`, `killed by signal 9`, or why it could not start.
        status: String,
        /// Its stderr, on one line, shortened, credentials in URLs masked.
        stderr: String,
    },
}

/// How often a running `git fetch` is looked at: at first every 2 ms (a local fetch takes tens
/// of milliseconds), doubling up to 50 ms.
const GIT_CLI_POLL: (Duration, Duration) = (Duration::from_millis(2), Duration::from_millis(50));

/// The transport a remote URL needs when libgit2 cannot speak it: `Some("https")` for
/// `https://`, `Some("http")` for `http://`, `Some("ssh")` for `ssh://` and scp-like
/// `user@host:path`; `None` for local paths, `file://` and `git://`, which libgit2 fetches.
/// `http://` goes to the CLI too: libgit2 speaks only git's smart HTTP protocol, the CLI also
/// the dumb one and the user's credential helpers.
fn cli_transport(url: &str) -> Option<&'static str> {
    let lower = url.trim().to_ascii_lowercase();
    if let Some((scheme, _)) = lower.split_once("://") {
        return match scheme {
            "https" => Some("https"),
            "http" => Some("http"),
            "ssh" | "git+ssh" | "ssh+git" => Some("ssh"),
            _ => None,
        };
    }
    // git's rule for scp-like syntax: a colon before any slash (`host:path`, `git@host:o/r`).
    match (lower.find(':'), lower.find('/')) {
        (Some(colon), slash) if colon > 0 && slash.is_none_or(|slash| colon < slash) => Some("ssh"),
        _ => None,
    }
}

/// `text` with the user and password of every `scheme://user:password@host` masked.
fn mask_credentials(text: &str) -> String {
    static URL_CREDENTIALS: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    URL_CREDENTIALS
        .get_or_init(|| {
            regex::Regex::new(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
                .expect("a valid pattern")
        })
        .replace_all(text, "${scheme}***@")
        .into_owned()
}

/// `git fetch`'s stderr for a message: its lines joined by `; `, credentials masked, shortened by
/// characters and escaped ([`crate::untrusted::remote_message`]). The frame of `@` ssh draws
/// around a warning (a changed host key) is left out, and so are lines of decoration alone (no
/// letter or digit): they would fill the shortened message before the words.
fn git_stderr_message(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let joined = text
        .lines()
        .map(|line| line.trim_matches(|c: char| c == '@' || c.is_whitespace()))
        .filter(|line| line.chars().any(char::is_alphanumeric))
        .collect::<Vec<_>>()
        .join("; ");
    crate::untrusted::remote_message(&mask_credentials(&joined))
}

/// The `git fetch` command for `REFSPEC` of `REMOTE` into the repository at `git_dir`, set up so
/// that it never asks anything: no terminal prompt (`GIT_TERMINAL_PROMPT=0`), no askpass
/// program (an empty `GIT_ASKPASS` stops git from looking at `core.askPass` and `SSH_ASKPASS`),
/// stdin closed, and ssh in batch mode unless the user chose an ssh command. Credential helpers
/// and `ssh-agent` still answer: they ask nobody. No tags, no submodules, no automatic `gc`.
fn git_fetch_command(
    git_program: &str,
    git_dir: &Path,
    remote: &str,
    refspec: &str,
    ssh_configured: bool,
) -> std::process::Command {
    let mut command = std::process::Command::new(git_program);
    command
        .arg("--git-dir")
        .arg(git_dir)
        .args(["-c", "gc.auto=0", "-c", "maintenance.auto=false"])
        .args(["fetch", "--quiet", "--no-tags", "--recurse-submodules=no"])
        .arg("--")
        .args([remote, refspec])
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "")
        // git's own output in English whatever the locale, for the messages it ends up in.
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if !ssh_configured {
        // `BatchMode`: no passphrase or host-key question; an unknown host fails instead.
        command.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
    }
    // Its own process group, so that a timeout stops `git` and its helpers (`git-remote-https`,
    // `ssh`) together.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command
}

/// Runs a `git fetch` command within `limit`. `None` when `git` is not installed.
fn run_git_fetch(
    mut command: std::process::Command,
    remote: &str,
    limit: Duration,
) -> Option<Result<(), FetchError>> {
    use std::io::Read as _;
    let failed = |status: String, stderr: String| FetchError::GitCliFailed {
        remote: remote.to_string(),
        status,
        stderr,
    };
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            return Some(Err(failed(
                format!("cannot start `git`: {error}"),
                String::new(),
            )))
        }
    };
    // Read on a thread so that a chatty stderr never fills the pipe and blocks `git`.
    let (sender, receiver) = mpsc::channel();
    if let Some(mut stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.read_to_end(&mut text);
            let _ = sender.send(text);
        });
    }
    let deadline = std::time::Instant::now() + limit;
    let mut poll = GIT_CLI_POLL.0;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if std::time::Instant::now() >= deadline => break Err(None),
            Ok(None) => {
                std::thread::sleep(poll);
                poll = (poll * 2).min(GIT_CLI_POLL.1);
            }
            Err(error) => break Err(Some(error)),
        }
    };
    let status = match status {
        Ok(status) => status,
        Err(error) => {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: `kill` has no memory-safety preconditions. `-pid` addresses the
                // process group made for this child (`process_group(0)`), which has not been
                // reaped yet, so the id cannot have been reused.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            let _ = child.wait();
            return Some(Err(match error {
                None => FetchError::TimedOut {
                    remote: remote.to_string(),
                    limit,
                },
                Some(error) => failed(format!("cannot wait for `git`: {error}"), String::new()),
            }));
        }
    };
    if status.success() {
        return Some(Ok(()));
    }
    // A helper that outlives `git` (an ssh control master) may hold stderr open: do not wait
    // for its end for long.
    let stderr = receiver
        .recv_timeout(Duration::from_secs(1))
        .unwrap_or_default();
    let how = {
        use std::os::unix::process::ExitStatusExt as _;
        match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "unknown exit status".into(),
        }
    };
    Some(Err(failed(how, git_stderr_message(&stderr))))
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

/// Ahead/behind counts of one commit against another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Divergence {
    /// Commits reachable from the local side only.
    pub ahead: usize,
    /// Commits reachable from the other side only.
    pub behind: usize,
}

/// One commit of a range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitSummary {
    /// Full commit id.
    pub id: String,
    /// Author name.
    pub author: String,
    /// First line of the message.
    pub subject: String,
    /// Author time, seconds since the Unix epoch.
    pub time: i64,
}

impl CommitSummary {
    /// The first 7 characters of the id, as `git log --oneline` shows it.
    pub fn short_id(&self) -> &str {
        short(&self.id)
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

/// The commits reachable from one commit and not from another (`from..to`), newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitRange {
    /// How many commits the range holds (all of them, even beyond `commits`).
    pub count: usize,
    /// The newest commits of the range, at most the number asked for.
    pub commits: Vec<CommitSummary>,
    /// Authors with their number of commits in the range, most commits first.
    pub authors: Vec<Author>,
}

/// An author of a range and how many of its commits they wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Author {
    /// Author name.
    pub name: String,
    /// Commits in the range.
    pub commits: usize,
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

    /// True when a remote of that name is configured.
    pub fn has_remote(&self, remote: &str) -> bool {
        self.repository.find_remote(remote).is_ok()
    }

    /// Fetches `BRANCH` of `REMOTE` into `refs/remotes/REMOTE/BRANCH`, giving up after `limit`.
    /// Only the remote-tracking ref is written, never the user's branches.
    ///
    /// Local, `file://` and `git://` remotes are fetched by libgit2. https, http and ssh remotes
    /// are fetched by the `git` CLI when it is installed (see the module's documentation), and
    /// otherwise by libgit2, which fails on them with [`FetchError::NeedsGitCli`].
    pub fn fetch(&self, remote: &str, branch: &str, limit: Duration) -> Result<(), FetchError> {
        self.fetch_using("git", remote, branch, limit)
    }

    /// [`Repository::fetch`] with the `git` CLI found as `git_program` (tests name one that
    /// does not exist).
    fn fetch_using(
        &self,
        git_program: &str,
        remote: &str,
        branch: &str,
        limit: Duration,
    ) -> Result<(), FetchError> {
        let branch_ref = format!("refs/heads/{branch}");
        if !git2::Reference::is_valid_name(&branch_ref) {
            return Err(FetchError::InvalidBranch(branch.to_string()));
        }
        let url = match self.repository.find_remote(remote) {
            Ok(found) => found.url().unwrap_or_default().to_string(),
            Err(_) => return Err(FetchError::NoRemote(remote.to_string())),
        };
        let refspec = format!("+{branch_ref}:refs/remotes/{remote}/{branch}");
        let Some(transport) = cli_transport(&url) else {
            return self.fetch_with_libgit2(remote, &refspec, limit);
        };
        let command = git_fetch_command(
            git_program,
            self.repository.path(),
            remote,
            &refspec,
            self.ssh_command_configured(),
        );
        if let Some(result) = run_git_fetch(command, remote, limit) {
            return result;
        }
        match self.fetch_with_libgit2(remote, &refspec, limit) {
            Err(FetchError::Failed { remote, source }) => Err(FetchError::NeedsGitCli {
                remote,
                transport,
                source,
            }),
            other => other,
        }
    }

    /// True when the user chose how git runs ssh (`GIT_SSH_COMMAND`, `GIT_SSH`,
    /// `core.sshCommand`): the CLI fetch then leaves it alone.
    fn ssh_command_configured(&self) -> bool {
        ["GIT_SSH_COMMAND", "GIT_SSH"]
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
            || self
                .repository
                .config()
                .and_then(|config| config.get_string("core.sshCommand"))
                .is_ok_and(|command| !command.trim().is_empty())
    }

    /// The fetch by libgit2. Its fetch is blocking and has no overall deadline, so it runs on its
    /// own thread with its own handle on the repository; past the limit the caller gets
    /// [`FetchError::TimedOut`] at once, and the thread is told to abort at its next progress
    /// callback (a connection that never answers ends when the process does).
    fn fetch_with_libgit2(
        &self,
        remote: &str,
        refspec: &str,
        limit: Duration,
    ) -> Result<(), FetchError> {
        let refspec = refspec.to_string();
        let git_dir = self.repository.path().to_path_buf();
        let cancelled = Arc::new(AtomicBool::new(false));
        let (sender, receiver) = mpsc::channel();
        let thread_cancelled = Arc::clone(&cancelled);
        let thread_remote = remote.to_string();
        std::thread::spawn(move || {
            let result = (|| {
                let repository = git2::Repository::open(&git_dir)?;
                let mut found = repository.find_remote(&thread_remote)?;
                let mut callbacks = git2::RemoteCallbacks::new();
                let progress_cancelled = Arc::clone(&thread_cancelled);
                callbacks.transfer_progress(move |_| !progress_cancelled.load(Ordering::Relaxed));
                let sideband_cancelled = Arc::clone(&thread_cancelled);
                callbacks.sideband_progress(move |_| !sideband_cancelled.load(Ordering::Relaxed));
                let mut options = git2::FetchOptions::new();
                options
                    .remote_callbacks(callbacks)
                    .download_tags(git2::AutotagOption::None);
                found.fetch(&[refspec.as_str()], Some(&mut options), None)
            })();
            // The receiver is gone when the caller gave up: nothing left to tell.
            let _ = sender.send(result);
        });
        match receiver.recv_timeout(limit) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(FetchError::Failed {
                remote: remote.to_string(),
                source,
            }),
            Err(_) => {
                cancelled.store(true, Ordering::Relaxed);
                Err(FetchError::TimedOut {
                    remote: remote.to_string(),
                    limit,
                })
            }
        }
    }

    /// The full id of the commit `text` names (a full or abbreviated hex id), if the repository
    /// has it. Anything that is not a hex id of at least 4 characters names no commit.
    pub fn find_commit(&self, text: &str) -> Result<Option<String>, RepoError> {
        let text = text.trim();
        if text.len() < 4 || text.len() > 40 || !text.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let found = if text.len() == 40 {
            Oid::from_str(text).and_then(|oid| self.repository.find_commit(oid))
        } else {
            self.repository.find_commit_by_prefix(text)
        };
        match found {
            Ok(commit) => Ok(Some(commit.id().to_string())),
            Err(error) if error.code() == ErrorCode::NotFound => Ok(None),
            Err(error) => Err(git_error(format!("look up commit `{text}`"))(error)),
        }
    }

    fn oid(&self, id: &str) -> Result<Oid, RepoError> {
        Oid::from_str(id).map_err(git_error(format!("read commit id `{id}`")))
    }

    /// Ahead/behind of `local` against `other` (both full commit ids).
    pub fn divergence(&self, local: &str, other: &str) -> Result<Divergence, RepoError> {
        let (ahead, behind) = self
            .repository
            .graph_ahead_behind(self.oid(local)?, self.oid(other)?)
            .map_err(git_error("compare the histories"))?;
        Ok(Divergence { ahead, behind })
    }

    /// True when `ancestor` is `descendant` or one of its ancestors.
    pub fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool, RepoError> {
        if ancestor == descendant {
            return Ok(true);
        }
        self.repository
            .graph_descendant_of(self.oid(descendant)?, self.oid(ancestor)?)
            .map_err(git_error("compare the histories"))
    }

    /// The commits in `from..to` (reachable from `to`, not from `from`), newest first; keeps the
    /// first `keep` summaries but counts them all. `from = None` means the whole history of `to`.
    pub fn commits(
        &self,
        from: Option<&str>,
        to: &str,
        keep: usize,
    ) -> Result<CommitRange, RepoError> {
        let walk_error = || git_error("walk the history");
        let mut walk = self.repository.revwalk().map_err(walk_error())?;
        // Topological + time order, like `git log`; the walk is bounded by `hide`, so sorting
        // only ever sees the range itself.
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME)
            .map_err(walk_error())?;
        walk.push(self.oid(to)?).map_err(walk_error())?;
        if let Some(from) = from {
            walk.hide(self.oid(from)?).map_err(walk_error())?;
        }
        let mut count = 0;
        let mut commits = Vec::new();
        let mut authors: BTreeMap<String, usize> = BTreeMap::new();
        for oid in walk {
            let oid = oid.map_err(walk_error())?;
            count += 1;
            let commit = self
                .repository
                .find_commit(oid)
                .map_err(git_error(format!("read commit `{oid}`")))?;
            let author = commit.author();
            let name = String::from_utf8_lossy(author.name_bytes()).into_owned();
            *authors.entry(name.clone()).or_default() += 1;
            if commits.len() < keep {
                commits.push(CommitSummary {
                    id: oid.to_string(),
                    author: name,
                    subject: String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default())
                        .into_owned(),
                    time: author.when().seconds(),
                });
            }
        }
        let mut authors: Vec<Author> = authors
            .into_iter()
            .map(|(name, commits)| Author { name, commits })
            .collect();
        authors.sort_by(|a, b| b.commits.cmp(&a.commits).then_with(|| a.name.cmp(&b.name)));
        Ok(CommitRange {
            count,
            commits,
            authors,
        })
    }

    /// The paths that differ between the trees of two commits (both sides of renames), sorted.
    pub fn changed_paths(&self, from: &str, to: &str) -> Result<BTreeSet<String>, RepoError> {
        let tree = |id: &str| -> Result<git2::Tree<'_>, RepoError> {
            self.repository
                .find_commit(self.oid(id)?)
                .and_then(|commit| commit.tree())
                .map_err(git_error(format!("read the tree of `{}`", short(id))))
        };
        let (old, new) = (tree(from)?, tree(to)?);
        let diff = self
            .repository
            .diff_tree_to_tree(Some(&old), Some(&new), None)
            .map_err(git_error("compare the trees"))?;
        let mut paths = BTreeSet::new();
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(path) = file.path() {
                    paths.insert(path.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        Ok(paths)
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
    fn range_counts_commits_authors_and_changed_paths() {
        let repo = TestRepo::new();
        let base = repo.commit_file("a.txt", "one", "base");
        repo.commit_file_as("b.txt", "one", "add b", "Ada");
        repo.commit_file_as("schemas/t.json", "{}", "add schema", "Grace");
        let head = repo.commit_file_as("b.txt", "two", "change b", "Ada");
        let opened = Repository::discover(repo.path()).unwrap();
        let range = opened.commits(Some(&base), &head, 2).unwrap();
        assert_eq!(range.count, 3);
        assert_eq!(range.commits.len(), 2);
        assert_eq!(range.commits[0].subject, "change b");
        let authors: Vec<(&str, usize)> = range
            .authors
            .iter()
            .map(|author| (author.name.as_str(), author.commits))
            .collect();
        assert_eq!(authors, [("Ada", 2), ("Grace", 1)]);
        let paths = opened.changed_paths(&base, &head).unwrap();
        assert_eq!(
            paths.into_iter().collect::<Vec<_>>(),
            ["b.txt", "schemas/t.json"]
        );
        assert_eq!(opened.commits(None, &head, 10).unwrap().count, 4);
        assert!(opened.is_ancestor(&base, &head).unwrap());
        assert!(!opened.is_ancestor(&head, &base).unwrap());
    }

    #[test]
    fn find_commit_accepts_full_and_short_ids_only() {
        let repo = TestRepo::new();
        let first = repo.commit_file("a.txt", "one", "first");
        let opened = Repository::discover(repo.path()).unwrap();
        assert_eq!(opened.find_commit(&first).unwrap(), Some(first.clone()));
        assert_eq!(opened.find_commit(&first[..8]).unwrap(), Some(first));
        assert_eq!(
            opened
                .find_commit("0123456789012345678901234567890123456789")
                .unwrap(),
            None
        );
        assert_eq!(opened.find_commit("not-a-commit").unwrap(), None);
        assert_eq!(opened.find_commit("").unwrap(), None);
    }

    #[test]
    fn fetch_updates_the_remote_tracking_branch_and_counts_divergence() {
        let repo = TestRepo::new();
        let first = repo.commit_file("a.txt", "one", "first");
        let remote = repo.add_bare_remote("origin");
        repo.push("origin", "main");
        let other = remote.clone_into_temp();
        let pushed_by_other = other.commit_file("c.txt", "x", "someone else's commit");
        other.push("origin", "main");
        let opened = Repository::discover(repo.path()).unwrap();
        assert_eq!(
            opened.remote_branch_commit("origin", "main").unwrap(),
            Some(first.clone())
        );
        opened
            .fetch("origin", "main", Duration::from_secs(30))
            .unwrap();
        assert_eq!(
            opened.remote_branch_commit("origin", "main").unwrap(),
            Some(pushed_by_other.clone())
        );
        assert_eq!(
            opened.divergence(&first, &pushed_by_other).unwrap(),
            Divergence {
                ahead: 0,
                behind: 1
            }
        );
        assert!(matches!(
            opened.fetch("upstream", "main", Duration::from_secs(30)),
            Err(FetchError::NoRemote(name)) if name == "upstream"
        ));
        assert!(matches!(
            opened.fetch("origin", "bad..name", Duration::from_secs(30)),
            Err(FetchError::InvalidBranch(_))
        ));
    }

    #[test]
    fn a_fetch_from_an_unreachable_remote_is_an_error_with_the_reason() {
        let repo = TestRepo::new();
        repo.commit_file("a.txt", "one", "first");
        repo.set_remote_url("origin", "/nonexistent/remote.git");
        let opened = Repository::discover(repo.path()).unwrap();
        let error = opened
            .fetch("origin", "main", Duration::from_secs(30))
            .unwrap_err();
        assert!(matches!(error, FetchError::Failed { .. }), "{error:?}");
    }

    #[test]
    fn https_http_and_ssh_urls_go_to_the_git_cli() {
        for (url, transport) in [
            ("https://github.com/o/r.git", Some("https")),
            ("HTTPS://github.com/o/r", Some("https")),
            ("http://127.0.0.1:8080/r.git", Some("http")),
            ("ssh://git@github.com/o/r.git", Some("ssh")),
            ("git+ssh://git@host/r", Some("ssh")),
            ("git@github.com:o/r.git", Some("ssh")),
            ("host:r.git", Some("ssh")),
            ("/srv/git/r.git", None),
            ("./relative:name", None),
            ("file:///srv/git/r.git", None),
            ("git://127.0.0.1/r.git", None),
            ("", None),
        ] {
            assert_eq!(cli_transport(url), transport, "{url}");
        }
    }

    #[test]
    fn credentials_in_urls_are_masked_in_git_messages() {
        assert_eq!(
            git_stderr_message(
                b"fatal: unable to access 'https://x-access-token:ghs_secret@github.com/o/r/':\n\nThe requested URL returned error: 403\n"
            ),
            "fatal: unable to access 'https://***@github.com/o/r/':; The requested URL returned error: 403"
        );
        let long = "é".repeat(1000);
        let message = git_stderr_message(long.as_bytes());
        assert!(message.ends_with("…(700 more characters)"), "{message}");
    }

    #[test]
    fn ssh_warning_banner_frames_are_left_out_of_git_messages() {
        // What ssh 9.2 writes when a known host's key changed (tests/fetch_ssh.rs shows it live).
        let stderr = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
                      @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
                      @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
                      IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n\
                      Host key verification failed.\n\
                      fatal: Could not read from remote repository.\n";
        assert_eq!(
            git_stderr_message(stderr.as_bytes()),
            "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!; \
             IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!; \
             Host key verification failed.; fatal: Could not read from remote repository."
        );
        assert_eq!(git_stderr_message(b"----\n  \n***\nerror: x\n"), "error: x");
    }

    #[test]
    fn the_git_cli_never_asks_and_leaves_a_chosen_ssh_command_alone() {
        let env = |ssh_configured| {
            git_fetch_command(
                "git",
                Path::new("/r/.git"),
                "origin",
                "+a:b",
                ssh_configured,
            )
            .get_envs()
            .map(|(key, value)| {
                (
                    key.to_string_lossy().into_owned(),
                    value.map(|value| value.to_string_lossy().into_owned()),
                )
            })
            .collect::<BTreeMap<_, _>>()
        };
        let default = env(false);
        assert_eq!(default["GIT_TERMINAL_PROMPT"].as_deref(), Some("0"));
        assert_eq!(default["GIT_ASKPASS"].as_deref(), Some(""));
        assert_eq!(
            default["GIT_SSH_COMMAND"].as_deref(),
            Some("ssh -o BatchMode=yes")
        );
        let chosen = env(true);
        assert_eq!(chosen["GIT_TERMINAL_PROMPT"].as_deref(), Some("0"));
        assert!(!chosen.contains_key("GIT_SSH_COMMAND"));
    }

    /// What a remote answers over HTTP in the tests below.
    #[derive(Clone, Copy)]
    enum Answer {
        /// The bare repository's files: git's "dumb" HTTP protocol, which libgit2 does not speak.
        Files,
        /// 401 with a Basic challenge: git would ask for a user name.
        Unauthorized,
        /// Accept the connection, never answer.
        Silence,
    }

    /// An HTTP server on 127.0.0.1 over `root`; returns its base URL.
    fn http_remote(root: PathBuf, answer: Answer) -> String {
        use axum::http::{header, StatusCode, Uri};
        use axum::response::IntoResponse;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(move |uri: Uri| {
                    let root = root.clone();
                    async move {
                        match answer {
                            Answer::Silence => std::future::pending().await,
                            Answer::Unauthorized => (
                                StatusCode::UNAUTHORIZED,
                                [(header::WWW_AUTHENTICATE, "Basic realm=\"git\"")],
                            )
                                .into_response(),
                            Answer::Files => {
                                let path = uri.path().trim_start_matches('/');
                                if path.split('/').any(|part| part == "..") {
                                    return StatusCode::BAD_REQUEST.into_response();
                                }
                                match std::fs::read(root.join(path)) {
                                    Ok(bytes) => bytes.into_response(),
                                    Err(_) => StatusCode::NOT_FOUND.into_response(),
                                }
                            }
                        }
                    }
                });
                axum::serve(listener, app).await.unwrap();
            });
        });
        format!("http://{address}")
    }

    /// A repository whose `origin` is a bare repository served over git's dumb HTTP protocol,
    /// where someone else pushed a commit; returns the repository, that commit and the remote.
    fn repository_with_an_http_remote(
        answer: Answer,
    ) -> (TestRepo, String, crate::testing::BareRemote) {
        let repo = TestRepo::new();
        repo.commit_file("a.txt", "one", "first");
        let remote = repo.add_bare_remote("origin");
        repo.push("origin", "main");
        let other = remote.clone_into_temp();
        let pushed = other.commit_file("c.txt", "x", "someone else's commit");
        other.push("origin", "main");
        // The files a dumb HTTP client reads (`info/refs`, `objects/info/packs`).
        let status = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(remote.path())
            .arg("update-server-info")
            .status()
            .expect("the tests need the `git` CLI");
        assert!(status.success());
        let url = http_remote(remote.path().to_path_buf(), answer);
        repo.set_remote_url("origin", &format!("{url}/"));
        (repo, pushed, remote)
    }

    #[test]
    fn an_http_remote_is_fetched_by_the_git_cli() {
        let (repo, pushed, _remote) = repository_with_an_http_remote(Answer::Files);
        let opened = Repository::discover(repo.path()).unwrap();
        let refspec = "+refs/heads/main:refs/remotes/origin/main";
        // The seam: libgit2 alone cannot fetch this remote (it speaks only smart HTTP).
        let error = opened
            .fetch_with_libgit2("origin", refspec, Duration::from_secs(30))
            .unwrap_err();
        assert!(matches!(error, FetchError::Failed { .. }), "{error:?}");
        assert_ne!(
            opened.remote_branch_commit("origin", "main").unwrap(),
            Some(pushed.clone())
        );
        let before = opened.branch_commit("main").unwrap();
        opened
            .fetch("origin", "main", Duration::from_secs(30))
            .unwrap();
        assert_eq!(
            opened.remote_branch_commit("origin", "main").unwrap(),
            Some(pushed)
        );
        assert_eq!(
            opened.branch_commit("main").unwrap(),
            before,
            "the user's branch is not touched"
        );
    }

    #[test]
    fn the_git_cli_never_asks_for_a_password() {
        let (repo, _, _remote) = repository_with_an_http_remote(Answer::Unauthorized);
        let opened = Repository::discover(repo.path()).unwrap();
        let error = opened
            .fetch("origin", "main", Duration::from_secs(30))
            .unwrap_err();
        let FetchError::GitCliFailed { status, stderr, .. } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(status, "exit status 128");
        assert!(stderr.contains("terminal prompts disabled"), "{stderr}");
        assert!(!stderr.contains('\n'), "one line: {stderr}");
    }

    #[test]
    fn a_git_cli_fetch_past_its_limit_is_stopped() {
        let (repo, _, _remote) = repository_with_an_http_remote(Answer::Silence);
        let opened = Repository::discover(repo.path()).unwrap();
        let error = opened
            .fetch("origin", "main", Duration::from_millis(300))
            .unwrap_err();
        assert!(
            matches!(&error, FetchError::TimedOut { remote, .. } if remote == "origin"),
            "{error:?}"
        );
    }

    #[test]
    fn without_the_git_cli_an_https_remote_says_what_it_needs() {
        let repo = TestRepo::new();
        repo.commit_file("a.txt", "one", "first");
        repo.set_remote_url("origin", "https://127.0.0.1:9/o/r.git");
        let opened = Repository::discover(repo.path()).unwrap();
        let error = opened
            .fetch_using(
                "/nonexistent/git",
                "origin",
                "main",
                Duration::from_secs(30),
            )
            .unwrap_err();
        assert!(
            matches!(
                &error,
                FetchError::NeedsGitCli {
                    transport: "https",
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "fetching `origin` needs the `git` CLI (its URL is https), which is not installed"
        );
    }

    #[test]
    fn outside_a_repository_is_a_clear_error() {
        let directory = tempfile::tempdir().unwrap();
        let error = Repository::discover(directory.path()).unwrap_err();
        assert!(error.to_string().contains("is not inside a git repository"));
    }
}
