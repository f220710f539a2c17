//! Fetching one branch of a remote into its remote-tracking ref, within a time limit: local,
//! `file://` and `git://` remotes through libgit2, https, http and ssh remotes through the `git`
//! CLI when it is installed (deployer's libgit2 has neither TLS nor SSH; the CLI has the user's
//! credentials). Only the CLI's exit status is read, never its output.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    time::Duration,
};

mod git_cli;

use git_cli::{cli_transport, git_fetch_command, run_git_fetch};

use super::Repository;

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

impl Repository {
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
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{repo::Divergence, testing::TestRepo};

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
}
