//! A stage for tests that run the `deployer` binary against the local emulator: an emulator on
//! an ephemeral port, Google's client pointed at it, and a repository whose one `local` service
//! file describes the service under test, with a short rollout policy.

use std::{path::PathBuf, process::ExitStatus, time::Duration};

use deployer::{
    emulator::Emulator,
    platform::{cloud_run::CloudRunPlatform, Platform, ServiceId, ServiceSnapshot},
    rollout::{journal::Journal, lock::LOCK_ANNOTATION},
};

use super::{
    create_hello_service, deployer_command, emulator_platform, hello_image, local_repository,
    service_id::local_service_id, start_emulator,
};

/// The commit of the revision `Stage::new` creates.
pub const STABLE_COMMIT: &str = "5ab1e00000000000000000000000000000000001";

/// 50% → 100%: the first look a second after the 50% write (the `canary` window), 4 s of
/// monitor (the `monitoring` window). Each deploy sends 50 req/s of synthetic traffic, so a
/// healthy canary passes its step after about two looks.
pub const ROLLOUT: &str = r#"steps = [50, 100]
hold = "20s"
interval = "1s"
max_error_rate = 0.2
min_requests = 20
inconclusive = "rollback"
monitor_duration = "4s"
monitor_interval = "1s"
consecutive_error_limit = 3
"#;

/// An emulator with service `name` serving `NAME-stable`, and a repository describing it.
pub struct Stage {
    pub emulator: Emulator,
    pub platform: CloudRunPlatform,
    pub id: ServiceId,
    pub stable: String,
    pub services: PathBuf,
    pub state: PathBuf,
    pub directory: tempfile::TempDir,
}

impl Stage {
    /// An emulator and a repository describing `name`, with no service yet: the first
    /// `deploy` creates it.
    pub async fn empty(name: &str) -> Stage {
        Stage::empty_with_rollout(name, ROLLOUT).await
    }

    /// [`Stage::empty`] with another `[rollout]` table.
    pub async fn empty_with_rollout(name: &str, rollout: &str) -> Stage {
        let directory = tempfile::tempdir().unwrap();
        let emulator = start_emulator(&directory.path().join("emulator")).await;
        let platform = emulator_platform(&emulator).await;
        let id = local_service_id(name);
        let services = local_repository(&directory.path().join("repository"), name, rollout);
        let state = directory.path().join("state");
        Stage {
            emulator,
            platform,
            id,
            stable: format!("{name}-stable"),
            services,
            state,
            directory,
        }
    }

    /// [`Stage::empty`] with the service created outside deployer, serving `NAME-stable`
    /// (hello at [`STABLE_COMMIT`]).
    pub async fn new(name: &str) -> Stage {
        Stage::with_rollout(name, ROLLOUT).await
    }

    /// [`Stage::new`] with another `[rollout]` table.
    pub async fn with_rollout(name: &str, rollout: &str) -> Stage {
        let stage = Stage::empty_with_rollout(name, rollout).await;
        create_hello_service(&stage.platform, &stage.id, &stage.stable, STABLE_COMMIT).await;
        stage
    }

    /// `deployer ARGS... --endpoint EMULATOR`, its output kept in `LABEL.stdout/stderr`.
    pub fn command(&self, label: &str, arguments: &[&str]) -> std::process::Command {
        let mut command = deployer_command(&self.services, &self.state);
        command
            .args(arguments)
            .args(["--endpoint", self.emulator.endpoint()])
            .stdout(std::fs::File::create(self.output(label, "stdout")).unwrap())
            .stderr(std::fs::File::create(self.output(label, "stderr")).unwrap());
        command
    }

    pub fn output(&self, label: &str, stream: &str) -> PathBuf {
        self.directory.path().join(format!("{label}.{stream}"))
    }

    /// What `label` printed.
    pub fn printed(&self, label: &str) -> String {
        let read = |stream| std::fs::read_to_string(self.output(label, stream)).unwrap_or_default();
        format!("stdout:\n{}\nstderr:\n{}", read("stdout"), read("stderr"))
    }

    /// `deployer deploy` of the hello image at `commit`, unattended.
    pub fn deploy(&self, label: &str, commit: &str) -> std::process::Command {
        let name = self.id.name.as_str();
        let mut command = self.command(
            label,
            &["deploy", name, "--image", hello_image(), "--commit", commit],
        );
        command
            .args(["--skip-preflight", "--non-interactive"])
            .args(["--env", &format!("SERVICE_NAME={name}")])
            .args(["--env", &format!("BUILD_COMMIT={commit}")]);
        command
    }

    /// Runs `command` to its end (2 minutes at most).
    pub async fn run(&self, label: &str, command: std::process::Command) -> ExitStatus {
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(true);
        match tokio::time::timeout(Duration::from_secs(120), command.status()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("`{label}` ran for 2 minutes:\n{}", self.printed(label)),
        }
    }

    pub async fn service(&self) -> ServiceSnapshot {
        self.platform.service(&self.id).await.unwrap().unwrap()
    }

    /// Exactly `revision` serves 100%, the split names it alone, the journal is finished
    /// and no lock is left.
    pub async fn assert_consistent(&self, revision: &str, context: &str) -> ServiceSnapshot {
        let snapshot = self.service().await;
        assert_eq!(
            snapshot.serving(),
            [(revision.to_string(), 100)],
            "{context}: {:?}",
            snapshot.traffic_statuses
        );
        assert!(
            snapshot
                .traffic
                .iter()
                .all(|target| target.revision.is_some()
                    && (target.revision.as_deref() == Some(revision) || target.percent == 0)),
            "{context}: {:?}",
            snapshot.traffic
        );
        assert!(
            !snapshot.annotations.contains_key(LOCK_ANNOTATION),
            "{context}: a lock was left: {:?}",
            snapshot.annotations.get(LOCK_ANNOTATION)
        );
        let journal = Journal::of(&snapshot).expect("a journal");
        assert!(journal.phase().is_terminal(), "{context}: {journal:?}");
        snapshot
    }

    pub async fn shutdown(self) {
        self.emulator.shutdown().await;
    }
}
