//! Shared by the tests of hostile and broken input: a temporary repository with service files,
//! the valid fixture with replacements, named pipes, and the `deployer` binary run with a time
//! limit (a hang is a failure, never a stuck suite).

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use deployer::config::Workspace;

/// A repository with `services/`, `runbooks/ok.md` and a `Dockerfile`, in a temp dir.
pub struct Repository {
    directory: tempfile::TempDir,
}

impl Repository {
    pub fn new() -> Self {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path();
        std::fs::create_dir_all(root.join("services")).unwrap();
        std::fs::create_dir_all(root.join("runbooks")).unwrap();
        std::fs::copy("tests/fixtures/runbooks/ok.md", root.join("runbooks/ok.md")).unwrap();
        std::fs::copy("tests/fixtures/Dockerfile", root.join("Dockerfile")).unwrap();
        Self { directory }
    }

    pub fn root(&self) -> &Path {
        self.directory.path()
    }

    pub fn workspace(&self) -> Workspace {
        Workspace {
            root: self.root().to_path_buf(),
            services_dir: self.root().join("services"),
        }
    }

    /// Writes `services/NAME.toml` and returns its path.
    pub fn service(&self, name: &str, text: &str) -> PathBuf {
        let path = self.root().join("services").join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The diagnostics of loading `path`, one `line:col: message` per entry.
    pub fn diagnostics(&self, path: &Path) -> Vec<String> {
        match self.workspace().load_file(path) {
            Ok(_) => vec![],
            Err(diagnostics) => diagnostics
                .iter()
                .map(|diagnostic| {
                    format!(
                        "{}:{}: {}",
                        diagnostic.line, diagnostic.column, diagnostic.message
                    )
                })
                .collect(),
        }
    }
}

/// The diagnostics of `services/svc.toml` holding `text`, alone in a fresh repository.
pub fn diagnostics_of(text: &str) -> Vec<String> {
    let repository = Repository::new();
    let path = repository.service("svc", text);
    repository.diagnostics(&path)
}

/// The valid fixture with `replace` applied (each `(from, to)` must match).
pub fn valid_with(replacements: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string("tests/fixtures/valid.toml").unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "`{from}` is in the valid fixture");
        text = text.replacen(from, to, 1);
    }
    text
}

/// The valid fixture with a `[rollout]` section (and nothing after it but checks).
pub fn valid_with_rollout(rollout: &str) -> String {
    valid_with(&[("[[checks]]", &format!("[rollout]\n{rollout}\n\n[[checks]]"))])
}

pub fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// What a finished `deployer` run left: exit code, stdout, stderr.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `deployer ARGS` in `cwd`, killing it (and failing) after `limit`: a hang is a failure,
/// never a stuck suite.
pub fn deployer_within(cwd: &Path, args: &[&str], limit: Duration) -> Run {
    deployer_with_env(cwd, args, &[], limit)
}

/// [`deployer_within`] with these environment variables set.
pub fn deployer_with_env(cwd: &Path, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deployer"));
    command
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env("CI", "1")
        .env_remove("DEPLOYER_SERVICES_DIR")
        .env_remove("DEPLOYER_CLOUD_RUN_ENDPOINT");
    // Each run has a state directory of its own unless the caller names one: a journal another
    // test (or an earlier run on this machine) left in the user's state directory must not
    // change what this run prints.
    let state = tempfile::tempdir().unwrap();
    if !env.iter().any(|(name, _)| *name == "DEPLOYER_STATE_DIR") {
        command.env("DEPLOYER_STATE_DIR", state.path());
    }
    command.envs(env.iter().copied());
    run_within(command, limit)
}

/// Runs `command` (stdin closed, output captured), killing it (and failing) after `limit`.
pub fn run_within(mut command: Command, limit: Duration) -> Run {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{shown}` still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Run {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// Runs `deployer ARGS` in `cwd` within a minute.
pub fn deployer(cwd: &Path, args: &[&str]) -> Run {
    deployer_within(cwd, args, Duration::from_secs(60))
}
