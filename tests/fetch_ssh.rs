//! The `git` CLI fetch over ssh, for real: `deployer preflight` (step 3, "Sync with remote")
//! fetching `main` from a bare repository served by an OpenSSH server of the test's own
//! (`sshd -D` on a free port of 127.0.0.1, its own host key, one authorized client key).
//! tests/env/15-sshd.sh installs OpenSSH and exports `DEPLOYER_TEST_SSHD`.
//!
//! ssh reads `~/.ssh` from the password database, not from `$HOME`, so the tests never rely on
//! what the machine's account holds: the key and known hosts they use are passed explicitly
//! (`GIT_SSH_COMMAND`, or an `ssh -F CONFIG` on `PATH` standing for the user's ssh config), and
//! an agent is never inherited.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

#[path = "support/git_repo.rs"]
mod git_repo;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use git_repo::Repo;

const RUNBOOK: &str = "# svc\n## Pre-flight\n## Deploy\n## Verify\n## Troubleshoot\n## Rollback\n";

/// Runs `program args`, failing the test with its stderr when it fails.
fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run `{program}`: {error}"));
    assert!(
        output.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A new ed25519 key pair without passphrase at `path` (and `path.pub`).
fn keygen(path: &Path) {
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "deployer-test",
            "-f",
            path.to_str().unwrap(),
        ],
    );
}

/// The public half of the key pair at `path`: `ssh-ed25519 AAAA…` (without the comment).
fn public_key(path: &Path) -> String {
    let text = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The name of the user the tests run as (the account sshd logs into).
fn user_name() -> String {
    let output = Command::new("id").arg("-un").output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// An OpenSSH server of the test's own, stopped (killed) when dropped. Everything it reads and
/// writes is in its temporary directory: configuration, host key, authorized keys, pid file, log.
struct Sshd {
    child: Child,
    directory: tempfile::TempDir,
    port: u16,
}

impl Sshd {
    fn start() -> Self {
        let program = std::env::var("DEPLOYER_TEST_SSHD").unwrap_or_else(|_| {
            panic!(
                "DEPLOYER_TEST_SSHD is not set: run the tests with tests/run.sh, or source \
                 tests/env/start.sh first (tests/env/15-sshd.sh installs OpenSSH's server)"
            )
        });
        // The privilege-separation directory, which sshd refuses to start without.
        std::fs::create_dir_all("/run/sshd").expect("sshd needs /run/sshd");
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path();
        keygen(&root.join("host_key"));
        keygen(&root.join("client_key"));
        std::fs::write(
            root.join("authorized_keys"),
            format!("{}\n", public_key(&root.join("client_key"))),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = root.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {root}/host_key\n\
                 AuthorizedKeysFile {root}/authorized_keys\nPidFile {root}/sshd.pid\n\
                 StrictModes no\nUsePAM no\nPubkeyAuthentication yes\n\
                 PasswordAuthentication yes\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\n",
                root = root.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(root.join("sshd.log")).unwrap();
        let child = Command::new(&program)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start `{program}`: {error}"));
        let mut sshd = Self {
            child,
            directory,
            port,
        };
        sshd.wait_until_listening();
        sshd
    }

    /// Waits for sshd's "Server listening" line (it binds in milliseconds).
    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.log().contains("Server listening on 127.0.0.1 port") {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("sshd exited ({status}) before listening:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen within 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.directory.path().join(name)
    }

    /// What sshd wrote (`-e`: its log goes to stderr, into this file).
    fn log(&self) -> String {
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }

    /// The URL of the repository at `path` on this server.
    fn url(&self, path: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            user_name(),
            self.port,
            path.display()
        )
    }

    /// A `known_hosts` line for this server with `key` (`ssh-ed25519 AAAA…`).
    fn known_host(&self, key: &str) -> String {
        format!("[127.0.0.1]:{} {key}\n", self.port)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A repository with `services/svc.toml` whose `origin` is served by `sshd`: `main` there is one
/// commit ahead (someone else pushed), while the local `main` and `origin/main` are still at the
/// first commit. Returns it, the first commit and the pushed one.
fn repository_behind_over_ssh(sshd: &Sshd) -> (Repo, String, String) {
    let repo = Repo::new();
    repo.write("runbooks/svc.md", RUNBOOK);
    repo.write("Dockerfile", "FROM scratch\n");
    repo.write(
        "services/svc.toml",
        "name = \"svc\"\nrunbook = \"runbooks/svc.md\"\n[target]\nkind = \"local\"\n\
         [image]\nrepository = \"127.0.0.1:5000/svc\"\n[preflight]\ntest_command = \"true\"\n",
    );
    let first = repo.commit(
        &["runbooks/svc.md", "Dockerfile", "services/svc.toml"],
        "first",
        2,
    );
    repo.push();
    let pushed = repo.change("api/a.txt", "x", "someone else's commit", 1);
    repo.push();
    repo.reset(&first);
    let git = git2::Repository::open(repo.path()).unwrap();
    git.reference(
        "refs/remotes/origin/main",
        git2::Oid::from_str(&first).unwrap(),
        true,
        "as last fetched before the other push",
    )
    .unwrap();
    git.remote_set_url("origin", &sshd.url(repo.remote_path()))
        .unwrap();
    (repo, first, pushed)
}

/// Where `origin/main` points.
fn tracking(repo: &Repo) -> String {
    git2::Repository::open(repo.path())
        .unwrap()
        .refname_to_id("refs/remotes/origin/main")
        .unwrap()
        .to_string()
}

/// `deployer preflight svc --format json` in `repo`, with a home and environment of the test's
/// own: no agent, no ssh command of the user's unless `env` sets one, an askpass program that
/// ssh is forced to use whenever it would ask anything (it records the question and answers
/// "no", so that even a regression changes nothing outside the test). Returns
/// step 3's check.
fn preflight_sync(repo: &Repo, scratch: &Path, env: &[(&str, String)]) -> serde_json::Value {
    let home = scratch.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let askpass = scratch.join("askpass");
    std::fs::write(
        &askpass,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\necho no\n",
            scratch.join("asked").display()
        ),
    )
    .unwrap();
    set_executable(&askpass);
    let mut command = Command::new(env!("CARGO_BIN_EXE_deployer"));
    command
        .current_dir(repo.path())
        .env("CI", "true")
        .env("NO_COLOR", "1")
        .env("HOME", &home)
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("GIT_SSH_COMMAND")
        .env_remove("GIT_SSH")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("DEPLOYER_SERVICES_DIR")
        .env_remove("DEPLOYER_CLOUD_RUN_ENDPOINT")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_STEP_SUMMARY")
        // Nothing listens on port 9: the platform steps do not matter here.
        .args([
            "preflight",
            "svc",
            "--endpoint",
            "http://127.0.0.1:9",
            "--format",
            "json",
        ]);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    let document: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "preflight printed no JSON report ({error}): {}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let check = document["checks"][2].clone();
    assert_eq!(check["name"], "Sync with remote", "{document:#}");
    check
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Whether ssh asked the askpass program anything (it would have, without `BatchMode`).
fn asked(scratch: &Path) -> Option<String> {
    std::fs::read_to_string(scratch.join("asked")).ok()
}

/// The ssh command a user would choose: the test's client key, known hosts in `known_hosts`
/// (a new host is added to it).
fn users_ssh_command(sshd: &Sshd, known_hosts: &Path) -> String {
    format!(
        "ssh -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=accept-new",
        sshd.path("client_key").display(),
        known_hosts.display()
    )
}

/// Step 3 after a fetch that brought the other commit: behind by one, only `origin/main` moved.
fn assert_fetched(sshd: &Sshd, repo: &Repo, check: &serde_json::Value, first: &str, pushed: &str) {
    assert_eq!(check["status"], "FAIL", "{check:#}\nsshd:\n{}", sshd.log());
    assert_eq!(
        check["reason"], "1 commit behind `origin/main`",
        "{check:#}"
    );
    assert_eq!(tracking(repo), pushed, "the fetch brought the other commit");
    assert_eq!(
        git2::Repository::open(repo.path())
            .unwrap()
            .refname_to_id("refs/heads/main")
            .unwrap()
            .to_string(),
        first,
        "the user's branch is not touched"
    );
    assert!(
        sshd.log().contains("Accepted publickey for"),
        "the fetch went through sshd:\n{}",
        sshd.log()
    );
}

#[test]
fn an_ssh_remote_is_fetched_with_the_users_ssh_command() {
    let sshd = Sshd::start();
    let (repo, first, pushed) = repository_behind_over_ssh(&sshd);
    let scratch = tempfile::tempdir().unwrap();
    let ssh_command = users_ssh_command(&sshd, &scratch.path().join("known_hosts"));
    let check = preflight_sync(&repo, scratch.path(), &[("GIT_SSH_COMMAND", ssh_command)]);
    assert_fetched(&sshd, &repo, &check, &first, &pushed);
    assert_eq!(asked(scratch.path()), None);
}

#[test]
fn an_ssh_remote_is_fetched_with_the_repositorys_core_ssh_command() {
    let sshd = Sshd::start();
    let (repo, first, pushed) = repository_behind_over_ssh(&sshd);
    let scratch = tempfile::tempdir().unwrap();
    let ssh_command = users_ssh_command(&sshd, &scratch.path().join("known_hosts"));
    git2::Repository::open(repo.path())
        .unwrap()
        .config()
        .unwrap()
        .set_str("core.sshCommand", &ssh_command)
        .unwrap();
    let check = preflight_sync(&repo, scratch.path(), &[]);
    assert_fetched(&sshd, &repo, &check, &first, &pushed);
}

/// The first `program` on `PATH`.
fn on_path(program: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|directory| directory.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("`{program}` is not on PATH"))
}

/// The WARN of a fetch that failed while `origin/main` is still the local `main`.
fn failed_fetch_reason(check: &serde_json::Value) -> String {
    assert_eq!(check["status"], "WARN", "{check:#}");
    let reason = check["reason"].as_str().unwrap();
    let problem = reason
        .strip_suffix("; in sync with `origin/main` as last fetched")
        .unwrap_or_else(|| panic!("{reason}"));
    assert!(
        problem.starts_with("fetching `origin` with `git fetch` failed (exit status 128): "),
        "{problem}"
    );
    assert!(!problem.contains('\n'), "one line: {problem}");
    problem.to_string()
}

#[test]
fn an_unknown_ssh_host_fails_at_once_without_a_question() {
    let sshd = Sshd::start();
    let (repo, first, _) = repository_behind_over_ssh(&sshd);
    let scratch = tempfile::tempdir().unwrap();
    let check = preflight_sync(&repo, scratch.path(), &[]);
    let problem = failed_fetch_reason(&check);
    assert!(
        problem.contains(
            "Host key verification failed.; fatal: Could not read from remote repository."
        ),
        "{problem}"
    );
    assert_eq!(asked(scratch.path()), None, "ssh asked nothing (BatchMode)");
    assert_eq!(tracking(&repo), first);
}

#[test]
fn without_a_usable_key_an_ssh_fetch_fails_at_once_without_a_password_prompt() {
    let sshd = Sshd::start();
    let (repo, first, _) = repository_behind_over_ssh(&sshd);
    let scratch = tempfile::tempdir().unwrap();
    // The user's ssh config: the host is known, no key the server accepts. It is passed by an
    // `ssh` first on PATH, which leaves the product's `GIT_SSH_COMMAND` (`ssh -o BatchMode=yes`).
    let known_hosts = scratch.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        sshd.known_host(&public_key(&sshd.path("host_key"))),
    )
    .unwrap();
    let config = scratch.path().join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "UserKnownHostsFile {}\nIdentityFile {}\nIdentitiesOnly yes\n",
            known_hosts.display(),
            scratch.path().join("no-such-key").display()
        ),
    )
    .unwrap();
    let bin = scratch.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(
        bin.join("ssh"),
        format!(
            "#!/bin/sh\nexec '{}' -F '{}' \"$@\"\n",
            on_path("ssh").display(),
            config.display()
        ),
    )
    .unwrap();
    set_executable(&bin.join("ssh"));
    let path = std::env::join_paths(
        std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let check = preflight_sync(
        &repo,
        scratch.path(),
        &[("PATH", path.to_string_lossy().into_owned())],
    );
    let problem = failed_fetch_reason(&check);
    assert!(
        problem.contains(&format!(
            "{}@127.0.0.1: Permission denied (publickey,password).; fatal: Could not read from remote repository.",
            user_name()
        )),
        "{problem}"
    );
    assert_eq!(
        asked(scratch.path()),
        None,
        "ssh asked for no password (BatchMode)"
    );
    assert_eq!(tracking(&repo), first);
    assert!(
        sshd.log()
            .contains("Connection closed by authenticating user"),
        "sshd saw the attempt:\n{}",
        sshd.log()
    );
}

#[test]
fn an_ssh_host_whose_key_changed_is_refused() {
    let sshd = Sshd::start();
    let (repo, first, _) = repository_behind_over_ssh(&sshd);
    let scratch = tempfile::tempdir().unwrap();
    let other = scratch.path().join("other_host_key");
    keygen(&other);
    let known_hosts = scratch.path().join("known_hosts");
    std::fs::write(&known_hosts, sshd.known_host(&public_key(&other))).unwrap();
    let ssh_command = users_ssh_command(&sshd, &known_hosts);
    let check = preflight_sync(&repo, scratch.path(), &[("GIT_SSH_COMMAND", ssh_command)]);
    let problem = failed_fetch_reason(&check);
    // ssh's banner without its frame of `@`, which used to take a third of the message.
    assert!(
        problem.contains(
            "failed (exit status 128): WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!; \
             IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!; "
        ),
        "{problem}"
    );
    assert!(!problem.contains("@@"), "{problem}");
    assert_eq!(tracking(&repo), first);
    assert!(
        !sshd.log().contains("Accepted publickey for"),
        "no login:\n{}",
        sshd.log()
    );
}
