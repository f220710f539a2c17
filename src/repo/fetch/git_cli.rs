//! The `git fetch` run for https, http and ssh remotes: never asking (no terminal prompt, no
//! askpass, ssh in batch mode unless the user chose how ssh runs), bounded in time, and its
//! stderr turned into one line without credentials.

use std::{path::Path, sync::mpsc, time::Duration};

use super::FetchError;

/// How often a running `git fetch` is looked at: at first every 2 ms (a local fetch takes tens
/// of milliseconds), doubling up to 50 ms.
const GIT_CLI_POLL: (Duration, Duration) = (Duration::from_millis(2), Duration::from_millis(50));

/// The transport a remote URL needs when libgit2 cannot speak it: `Some("https")` for
/// `https://`, `Some("http")` for `http://`, `Some("ssh")` for `ssh://` and scp-like
/// `user@host:path`; `None` for local paths, `file://` and `git://`, which libgit2 fetches.
/// `http://` goes to the CLI too: libgit2 speaks only git's smart HTTP protocol, the CLI also
/// the dumb one and the user's credential helpers.
pub(super) fn cli_transport(url: &str) -> Option<&'static str> {
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
pub(super) fn mask_credentials(text: &str) -> String {
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
pub(super) fn git_stderr_message(stderr: &[u8]) -> String {
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
pub(super) fn git_fetch_command(
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
pub(super) fn run_git_fetch(
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

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
}
