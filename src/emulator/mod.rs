//! The local Cloud Run emulator: the Cloud Run Admin API v2 over HTTP/JSON (so Google's official
//! client works against it unchanged), revisions run as Docker containers, one HTTP router per
//! service splitting real traffic by the service's traffic split (plus one per tag), request
//! metrics and logs in the Cloud Monitoring and Cloud Logging shapes, durable state in a data
//! directory, and fault injection for tests. `docs/EMULATOR.md` documents it for users.
//!
//! Modules: [`admin`] (the API port), [`control`] (what API calls do), [`resources`] (Cloud Run
//! rules, pure), [`store`] (the state file), [`runtime`] (Docker), [`router`] (data plane),
//! [`monitoring`], [`logging`], [`faults`], [`project`] (enabled APIs, IAM, secrets), [`wiring`] (the Pub/Sub and Cloud Scheduler read
//! surface), [`background`] (a detached process).
//!
//! [`Emulator::start`] runs one in-process (the CLI's `deployer emulator` and the tests both use
//! it); [`Emulator::shutdown`] stops it cleanly. While it runs, `DATA_DIR/emulator.json` says
//! where it listens ([`RunningEmulator`]), so other processes can find and stop it.

pub mod admin;
pub mod api_error;
pub mod background;
pub mod control;
pub mod faults;
pub mod logging;
pub mod monitoring;
pub mod project;
pub mod resources;
pub mod router;
pub mod runtime;
pub mod store;
pub mod wiring;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use self::{
    admin::ApiState, control::Controller, faults::FaultConfig, faults::Faults, logging::Logging,
    monitoring::Monitoring, router::Routers, runtime::Runtime, store::Store,
};

/// Default API port of `deployer emulator`.
pub const DEFAULT_PORT: u16 = 8090;
/// Default startup-probe timeout of a revision.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Name of the file in the data directory that says where a running emulator listens.
pub const STATE_FILE: &str = "emulator.json";

/// Errors starting or stopping an emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The data directory cannot be created or used.
    #[error("cannot use the data directory `{path}`")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The state file is unreadable.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// Docker is unreachable.
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    /// The API port cannot be opened.
    #[error("cannot listen on `{address}` (is another emulator running? see `deployer emulator status`)")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another emulator runs on the same data directory.
    #[error(
        "another emulator (pid {pid}) is running on the data directory `{data_dir}` at {endpoint}"
    )]
    AlreadyRunning {
        /// Its process id.
        pid: u32,
        /// Its API endpoint.
        endpoint: String,
        /// The directory.
        data_dir: PathBuf,
    },
    /// Restoring services from the state failed.
    #[error("cannot restore the emulator state: {0}")]
    Restore(#[source] api_error::ApiError),
    /// The emulator's own async runtime cannot be started.
    #[error("cannot start the emulator's async runtime")]
    AsyncRuntime(#[source] std::io::Error),
    /// The running-emulator file cannot be written.
    #[error("cannot write `{path}`")]
    StateFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: store::StoreError,
    },
}

/// How to run an emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Where state is kept.
    pub data_dir: PathBuf,
    /// API address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// How long a revision may take to pass its startup probe.
    pub startup_timeout: Duration,
    /// Faults in force from the start.
    pub faults: FaultConfig,
}

impl EmulatorConfig {
    /// The defaults: `127.0.0.1:8090`, 30 s startup timeout, no faults.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            faults: FaultConfig::default(),
        }
    }

    /// For tests: an ephemeral port on 127.0.0.1.
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Self::new(data_dir)
        }
    }
}

/// What `DATA_DIR/emulator.json` records about a running emulator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningEmulator {
    /// Its process id.
    pub pid: u32,
    /// API endpoint, e.g. `http://127.0.0.1:8090`.
    pub endpoint: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The deployer version that runs it.
    pub version: String,
    /// When it started (RFC 3339).
    pub started_at: String,
}

impl RunningEmulator {
    /// Reads `DATA_DIR/emulator.json`; `None` when no emulator announced itself there.
    pub fn read(data_dir: &Path) -> Option<Self> {
        let bytes = std::fs::read(data_dir.join(STATE_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// The default data directory: `$XDG_STATE_HOME/deployer/emulator`, else
/// `$HOME/.local/state/deployer/emulator`, else `.deployer/emulator`.
pub fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|value| !value.is_empty())
                .map(|home| PathBuf::from(home).join(".local/state"))
        });
    match base {
        Some(base) => base.join("deployer/emulator"),
        None => PathBuf::from(".deployer/emulator"),
    }
}

/// A short stable hash (FNV-1a, 12 hex digits) used in container labels and names.
pub fn short_hash(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:012x}", hash & 0xffff_ffff_ffff)
}

/// A running emulator.
///
/// It runs on an async runtime of its own (two worker threads), whatever runtime its caller
/// uses: a caller on a single-threaded runtime, or one whose clock is paused
/// (`#[tokio::test(start_paused = true)]`), cannot starve its routers or make its startup
/// probes time out early.
#[derive(Debug)]
pub struct Emulator {
    endpoint: String,
    address: SocketAddr,
    data_dir: PathBuf,
    instance: String,
    controller: Arc<Controller>,
    faults: Arc<Faults>,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// What starting produces, before it is tied to its runtime.
struct Started {
    endpoint: String,
    address: SocketAddr,
    data_dir: PathBuf,
    instance: String,
    controller: Arc<Controller>,
    faults: Arc<Faults>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl Emulator {
    /// Starts an emulator: opens (or creates) the data directory, restores services and their
    /// containers, and serves the API. Returns when the API answers and every revision that was
    /// Ready before a restart is serving again.
    pub async fn start(config: EmulatorConfig) -> Result<Self, EmulatorError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("deployer-emulator")
            .enable_all()
            .build()
            .map_err(EmulatorError::AsyncRuntime)?;
        let started = match runtime.spawn(start_inside(config)).await {
            Ok(Ok(started)) => started,
            Ok(Err(error)) => {
                runtime.shutdown_background();
                return Err(error);
            }
            Err(join_error) => {
                runtime.shutdown_background();
                return Err(EmulatorError::AsyncRuntime(std::io::Error::other(
                    join_error,
                )));
            }
        };
        Ok(Self {
            endpoint: started.endpoint,
            address: started.address,
            data_dir: started.data_dir,
            instance: started.instance,
            controller: started.controller,
            faults: started.faults,
            shutdown: started.shutdown,
            server: Some(started.server),
            runtime: Some(runtime),
        })
    }

    /// The API endpoint, e.g. `http://127.0.0.1:8090`: give it to the clients'
    /// `with_endpoint`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The API address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The data directory (canonical).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The instance id in the `deployer.emulator` label of this emulator's containers.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Replaces the faults in force.
    pub fn set_faults(&self, faults: FaultConfig) -> Result<(), api_error::ApiError> {
        self.faults.set(faults)
    }

    /// Resolves when someone asked the emulator to stop (`POST /emulator/v1/shutdown`).
    pub async fn stop_requested(&self) {
        self.shutdown.cancelled().await;
    }

    /// Stops cleanly: the API and routers close, containers are removed (they come back from
    /// the state on the next start), `emulator.json` is removed. The state stays.
    pub async fn shutdown(mut self) {
        let (Some(runtime), Some(server)) = (self.runtime.take(), self.server.take()) else {
            return;
        };
        self.shutdown.cancel();
        let controller = Arc::clone(&self.controller);
        let stopping = runtime.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
            controller.routers.close_all();
            controller.runtime.remove_all().await;
        });
        let _ = stopping.await;
        self.remove_state_file();
        // Dropping a runtime blocks, which async code must not do; its tasks are done anyway.
        runtime.shutdown_background();
    }

    fn remove_state_file(&self) {
        if RunningEmulator::read(&self.data_dir)
            .is_some_and(|running| running.endpoint == self.endpoint)
        {
            let _ = std::fs::remove_file(self.data_dir.join(STATE_FILE));
        }
    }
}

impl Drop for Emulator {
    /// An emulator dropped without [`Emulator::shutdown`] (a test that panicked) still removes
    /// its containers, on a helper thread: async code cannot run in `drop`.
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        self.shutdown.cancel();
        self.controller.routers.close_all();
        let instance = self.instance.clone();
        let cleanup = std::thread::spawn(move || {
            if let Ok(cleanup_runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                // A fresh Docker connection: the emulator's own belongs to its runtime.
                cleanup_runtime.block_on(runtime::remove_instance_containers(&instance));
            }
        });
        let _ = cleanup.join();
        self.remove_state_file();
        runtime.shutdown_background();
    }
}

async fn start_inside(config: EmulatorConfig) -> Result<Started, EmulatorError> {
    let data_dir_error = |source| EmulatorError::DataDir {
        path: config.data_dir.clone(),
        source,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(data_dir_error)?;
    let data_dir = config.data_dir.canonicalize().map_err(data_dir_error)?;
    if let Some(running) = RunningEmulator::read(&data_dir) {
        if running.pid != std::process::id() && crate::process::process_alive(running.pid) {
            return Err(EmulatorError::AlreadyRunning {
                pid: running.pid,
                endpoint: running.endpoint,
                data_dir,
            });
        }
    }
    let instance = short_hash(&data_dir.to_string_lossy());
    let store = Store::open(&data_dir)?;
    let logging = Arc::new(Logging::default());
    let monitoring = Arc::new(Monitoring::default());
    let faults = Arc::new(Faults::new(FaultConfig::default()));
    faults
        .set(config.faults.clone())
        .map_err(EmulatorError::Restore)?;
    let runtime = Arc::new(Runtime::connect(instance.clone(), Arc::clone(&logging)).await?);
    let routers = Arc::new(Routers::new(
        Arc::clone(&runtime),
        Arc::clone(&monitoring),
        Arc::clone(&logging),
        Arc::clone(&faults),
    ));
    let controller = Arc::new(Controller {
        store,
        runtime,
        routers,
        faults: Arc::clone(&faults),
        startup_timeout: config.startup_timeout,
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| EmulatorError::Listen {
            address: config.listen,
            source,
        })?;
    let address = listener
        .local_addr()
        .map_err(|source| EmulatorError::Listen {
            address: config.listen,
            source,
        })?;
    let endpoint = format!("http://{address}");
    controller.restore().await.map_err(EmulatorError::Restore)?;
    let shutdown = CancellationToken::new();
    let running = RunningEmulator {
        pid: std::process::id(),
        endpoint: endpoint.clone(),
        data_dir: data_dir.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let state = ApiState {
        controller: Arc::clone(&controller),
        monitoring,
        logging,
        faults: Arc::clone(&faults),
        project: Arc::default(),
        shutdown: shutdown.clone(),
        status: serde_json::to_value(&running).unwrap_or_default(),
    };
    let app = admin::router(state);
    let stopped = shutdown.clone();
    let server = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stopped.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!("the emulator API stopped: {error}");
        }
    });
    let state_file = data_dir.join(STATE_FILE);
    store::write_atomically(&state_file, &running).map_err(|source| EmulatorError::StateFile {
        path: state_file.clone(),
        source,
    })?;
    Ok(Started {
        endpoint,
        address,
        data_dir,
        instance,
        controller,
        faults,
        shutdown,
        server,
    })
}
