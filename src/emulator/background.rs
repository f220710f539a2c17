//! Running an emulator in the background: a detached `deployer emulator` process of its own
//! (own process group, output to `DATA_DIR/emulator.log`), found again through
//! `DATA_DIR/emulator.json`. `deployer emulator --detach` uses this, and so can any command
//! that needs the local emulator running (e.g. a deploy to a `kind = "local"` target).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{RunningEmulator, STATE_FILE};
use crate::process::process_alive;

/// How long a background emulator may take to announce itself (it restores containers first).
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(120);

/// Errors starting a background emulator.
#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    /// One already runs on the data directory.
    #[error("an emulator (pid {}) already runs on `{}` at {}; stop it with `deployer emulator stop`", .0.pid, .0.data_dir.display(), .0.endpoint)]
    AlreadyRunning(RunningEmulator),
    /// The data directory or log file cannot be prepared.
    #[error("cannot prepare `{path}`")]
    Prepare {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The process cannot be started.
    #[error("cannot start `{executable}`")]
    Spawn {
        /// The executable.
        executable: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The process exited before it announced itself.
    #[error("the background emulator exited ({status}); its log `{log_path}` says:\n{log}")]
    Exited {
        /// How it exited.
        status: std::process::ExitStatus,
        /// The log file.
        log_path: PathBuf,
        /// The log's content.
        log: String,
    },
    /// The process did not announce itself in time.
    #[error("the background emulator did not announce itself in `{state_file}` within {} s; see `{log_path}`", ANNOUNCE_TIMEOUT.as_secs())]
    Timeout {
        /// The file it should have written.
        state_file: PathBuf,
        /// The log file.
        log_path: PathBuf,
    },
}

/// How to start a background emulator.
#[derive(Debug, Clone)]
pub struct BackgroundOptions {
    /// The `deployer` executable.
    pub executable: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its API port (0: any free port).
    pub port: u16,
    /// Startup-probe timeout of revisions.
    pub startup_timeout: Duration,
}

/// The emulator running on a data directory, if any (its process is alive).
pub fn find_running(data_dir: &Path) -> Option<RunningEmulator> {
    RunningEmulator::read(data_dir).filter(|running| process_alive(running.pid))
}

/// Starts `deployer emulator` in the background and waits until it announces itself.
pub fn spawn_background(options: &BackgroundOptions) -> Result<RunningEmulator, BackgroundError> {
    let data_dir = &options.data_dir;
    if let Some(running) = find_running(data_dir) {
        return Err(BackgroundError::AlreadyRunning(running));
    }
    let prepare = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BackgroundError::Prepare { path, source }
    };
    std::fs::create_dir_all(data_dir).map_err(prepare(data_dir))?;
    let log_path = data_dir.join("emulator.log");
    let log = std::fs::File::create(&log_path).map_err(prepare(&log_path))?;
    let log_copy = log.try_clone().map_err(prepare(&log_path))?;
    let mut command = Command::new(&options.executable);
    command
        .arg("emulator")
        .arg("--port")
        .arg(options.port.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--startup-timeout")
        .arg(format!("{}s", options.startup_timeout.as_secs().max(1)))
        .stdin(Stdio::null())
        .stdout(log_copy)
        .stderr(log);
    // Its own process group: a Ctrl-C in the terminal that started it does not stop it.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().map_err(|source| BackgroundError::Spawn {
        executable: options.executable.clone(),
        source,
    })?;
    let deadline = Instant::now() + ANNOUNCE_TIMEOUT;
    loop {
        if let Some(running) =
            RunningEmulator::read(data_dir).filter(|running| running.pid == child.id())
        {
            return Ok(running);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(BackgroundError::Exited {
                status,
                log: std::fs::read_to_string(&log_path)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
                log_path,
            });
        }
        if Instant::now() > deadline {
            return Err(BackgroundError::Timeout {
                state_file: data_dir.join(STATE_FILE),
                log_path,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
