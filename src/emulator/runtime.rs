//! Runs revisions as Docker containers through the Docker Engine API (bollard).
//!
//! One container per revision, on the default bridge network, its `PORT` published on a
//! loopback port where the routers reach it; the startup probe connects to its bridge IP (so the
//! emulator must run on the Docker host, as it does on Linux; see [`ContainerFacts`]). The
//! container gets `PORT`, `K_SERVICE`, `K_REVISION`, `K_CONFIGURATION` and the template's
//! environment. A startup probe decides readiness: the template's TCP or HTTP startup probe, or
//! by default a TCP connection to the port, as Cloud Run does. A container that exits, or never
//! listens before the startup timeout, fails the revision with the reason and its last log lines.
//! A container that exits later is restarted with growing delays, as Cloud Run replaces a
//! crashed instance.
//!
//! Containers carry the label `deployer.emulator=<instance>` (a hash of the data directory), so
//! the emulator finds and removes its own containers — and only its own — after a crash.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::Duration,
};

use bollard::{
    container::LogOutput,
    models::{ContainerCreateBody, HostConfig, PortBinding},
    query_parameters::{
        CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
        LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    },
    Docker,
};
use chrono::Utc;
use futures::StreamExt;
use google_cloud_run_v2::model::{env_var::Values, probe::ProbeType, Container};

use super::logging::{LogSource, Logging};

/// Label key marking the emulator's containers; the value is the instance id.
pub const INSTANCE_LABEL: &str = "deployer.emulator";
/// Label key holding the revision's full resource name.
pub const REVISION_LABEL: &str = "deployer.emulator.revision";

/// Errors connecting to the Docker Engine.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine is not reachable.
    #[error(
        "cannot reach the Docker Engine (is dockerd running and `/var/run/docker.sock` readable?)"
    )]
    Connect(#[source] bollard::errors::Error),
}

/// What a revision needs to run.
#[derive(Debug, Clone)]
pub struct RevisionLaunch {
    /// Full revision name (`projects/P/locations/L/services/S/revisions/R`).
    pub revision_full: String,
    /// Where its logs go.
    pub source: LogSource,
    /// Its (first) container.
    pub container: Container,
    /// How long the startup probe may take.
    pub startup_timeout: Duration,
}

#[derive(Debug, Clone)]
struct Backend {
    container_id: String,
    address: SocketAddr,
}

/// The Docker side of one emulator.
#[derive(Debug)]
pub struct Runtime {
    docker: Docker,
    instance: String,
    backends: RwLock<HashMap<String, Backend>>,
    /// Revisions that should run, each with the token of the start that wants it: a restart
    /// after a crash only proceeds while its token is current, so a revision stopped (deleted)
    /// meanwhile is never brought back.
    wanted: Mutex<HashMap<String, u64>>,
    next_token: AtomicU64,
    logging: Arc<Logging>,
}

/// How often a container that exits after it became Ready is restarted before giving up, and
/// the first delay (doubled each time), like Cloud Run restarting a crashed instance.
const RESTART_ATTEMPTS: u32 = 5;
const RESTART_FIRST_DELAY: Duration = Duration::from_secs(1);

impl Runtime {
    /// Connects to the local Docker Engine (negotiating the API version).
    pub async fn connect(instance: String, logging: Arc<Logging>) -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_local_defaults().map_err(RuntimeError::Connect)?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(RuntimeError::Connect)?;
        Ok(Self {
            docker,
            instance,
            backends: RwLock::new(HashMap::new()),
            wanted: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            logging,
        })
    }

    /// The address of a revision's running container.
    pub fn backend(&self, revision_full: &str) -> Option<SocketAddr> {
        self.backends
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(revision_full)
            .map(|backend| backend.address)
    }

    /// Removes every container of this emulator instance (left over by a crash, or at shutdown).
    pub async fn remove_all(&self) {
        self.wanted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.backends
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        remove_labelled(&self.docker, &self.instance).await;
    }

    async fn remove_container(&self, id: &str) {
        remove_container(&self.docker, id).await;
    }

    /// Stops and removes a revision's container.
    pub async fn stop(&self, revision_full: &str) {
        self.wanted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(revision_full);
        let removed = self
            .backends
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(revision_full);
        if let Some(backend) = removed {
            self.remove_container(&backend.container_id).await;
        }
    }

    fn container_name(&self, launch: &RevisionLaunch) -> String {
        // Revision names are unique within a project and region; the hash keeps names of equal
        // revisions in other projects apart.
        let digest = super::short_hash(&launch.revision_full);
        format!(
            "deployer-emulator-{}-{}-{digest}",
            &self.instance[..8.min(self.instance.len())],
            launch.source.revision
        )
    }

    /// Starts a revision's container and waits for its startup probe. `Err` carries the reason
    /// the revision failed, worded for its `Ready` condition.
    pub async fn start(self: &Arc<Self>, launch: &RevisionLaunch) -> Result<SocketAddr, String> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.wanted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(launch.revision_full.clone(), token);
        self.start_container(launch, token).await
    }

    fn is_wanted(&self, revision_full: &str, token: u64) -> bool {
        self.wanted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(revision_full)
            == Some(&token)
    }

    async fn start_container(
        self: &Arc<Self>,
        launch: &RevisionLaunch,
        token: u64,
    ) -> Result<SocketAddr, String> {
        let container = &launch.container;
        if container.image.is_empty() {
            return Err("The revision has no container image.".to_string());
        }
        self.ensure_image(&container.image).await?;
        let port = container
            .ports
            .first()
            .map(|port| port.container_port)
            .filter(|port| *port > 0)
            .unwrap_or(8080);
        let mut env = vec![
            format!("PORT={port}"),
            format!("K_SERVICE={}", launch.source.service),
            format!("K_REVISION={}", launch.source.revision),
            format!("K_CONFIGURATION={}", launch.source.service),
        ];
        for variable in &container.env {
            if let Some(Values::Value(value)) = &variable.values {
                env.push(format!("{}={value}", variable.name));
            }
        }
        let labels = HashMap::from([
            (INSTANCE_LABEL.to_string(), self.instance.clone()),
            (REVISION_LABEL.to_string(), launch.revision_full.clone()),
        ]);
        let name = self.container_name(launch);
        self.remove_container(&name).await;
        let body = ContainerCreateBody {
            image: Some(container.image.clone()),
            env: Some(env),
            labels: Some(labels),
            entrypoint: (!container.command.is_empty()).then(|| container.command.clone()),
            cmd: (!container.args.is_empty()).then(|| container.args.clone()),
            working_dir: (!container.working_dir.is_empty()).then(|| container.working_dir.clone()),
            exposed_ports: Some(vec![format!("{port}/tcp")]),
            host_config: Some(HostConfig {
                init: Some(false),
                // Published on a loopback port the engine picks: see `ContainerFacts`.
                port_bindings: Some(HashMap::from([(
                    format!("{port}/tcp"),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".to_string()),
                        host_port: Some(String::new()),
                    }]),
                )])),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await
            .map_err(|error| format!("The container could not be created: {error}."))?;
        let id = created.id;
        if let Err(error) = self.docker.start_container(&id, None).await {
            self.remove_container(&id).await;
            return Err(format!("The container could not be started: {error}."));
        }
        self.follow_logs(id.clone(), launch.source.clone());
        match self.probe(&id, port, launch).await {
            Ok(_) if !self.is_wanted(&launch.revision_full, token) => {
                self.remove_container(&id).await;
                Err("The revision was stopped while it started.".to_string())
            }
            Ok(address) => {
                self.backends
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(
                        launch.revision_full.clone(),
                        Backend {
                            container_id: id.clone(),
                            address,
                        },
                    );
                self.watch_exit(id, launch.clone(), token);
                Ok(address)
            }
            Err(reason) => {
                self.remove_container(&id).await;
                Err(reason)
            }
        }
    }

    /// Makes sure the image is in the local engine; pulls it from a local registry
    /// (`127.0.0.1:*` or `localhost:*`) when it is not. Nothing else can be pulled here.
    async fn ensure_image(&self, image: &str) -> Result<(), String> {
        if self.docker.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        let host = image.split('/').next().unwrap_or_default();
        let is_local_registry = image.contains('/')
            && (host.starts_with("127.0.0.1")
                || host.starts_with("localhost")
                || host.starts_with("[::1]"));
        if !is_local_registry {
            return Err(format!(
                "Image '{image}' not found: it is not in the local Docker engine and only local \
                 registries (127.0.0.1:PORT/...) are pulled."
            ));
        }
        let options = CreateImageOptionsBuilder::new().from_image(image).build();
        let mut stream = self.docker.create_image(Some(options), None, None);
        while let Some(progress) = stream.next().await {
            if let Err(error) = progress {
                return Err(format!("Image '{image}' could not be pulled: {error}."));
            }
        }
        Ok(())
    }

    fn follow_logs(self: &Arc<Self>, id: String, source: LogSource) {
        let runtime = Arc::clone(self);
        tokio::spawn(async move {
            let options = LogsOptionsBuilder::new()
                .follow(true)
                .stdout(true)
                .stderr(true)
                .build();
            let mut stream = runtime.docker.logs(&id, Some(options));
            let mut pending: HashMap<bool, String> = HashMap::new();
            while let Some(Ok(output)) = stream.next().await {
                let (stderr, bytes) = match output {
                    LogOutput::StdErr { message } => (true, message),
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        (false, message)
                    }
                    LogOutput::StdIn { .. } => continue,
                };
                let buffer = pending.entry(stderr).or_default();
                buffer.push_str(&String::from_utf8_lossy(&bytes));
                while let Some(end) = buffer.find('\n') {
                    let line: String = buffer.drain(..=end).collect();
                    runtime
                        .logging
                        .container_line(&source, stderr, line.trim_end(), Utc::now());
                }
            }
            for (stderr, rest) in pending {
                if !rest.trim().is_empty() {
                    runtime
                        .logging
                        .container_line(&source, stderr, rest.trim_end(), Utc::now());
                }
            }
        });
    }

    /// When a serving container exits, its revision stops receiving requests (the router
    /// answers 503 for it), the exit is logged, and the container is started again with
    /// growing delays (as Cloud Run replaces a crashed instance) until it passes its startup
    /// probe, the revision is stopped, or the attempts run out. The revision's recorded state is
    /// left as is.
    fn watch_exit(self: &Arc<Self>, id: String, launch: RevisionLaunch, token: u64) {
        let runtime = Arc::clone(self);
        tokio::spawn(async move {
            let mut wait = runtime.docker.wait_container(&id, None);
            let code = match wait.next().await {
                Some(Ok(response)) => response.status_code,
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
                _ => -1,
            };
            let removed = {
                let mut backends = runtime.backends.write().unwrap_or_else(|p| p.into_inner());
                let ours = backends
                    .get(&launch.revision_full)
                    .is_some_and(|backend| backend.container_id == id);
                ours && backends.remove(&launch.revision_full).is_some()
            };
            if !removed || !runtime.is_wanted(&launch.revision_full, token) {
                return;
            }
            let log = |message: String| {
                runtime
                    .logging
                    .container_line(&launch.source, true, &message, Utc::now())
            };
            log(format!(
                "Container terminated with exit code {code}; the revision has no running instance until it is restarted."
            ));
            let mut delay = RESTART_FIRST_DELAY;
            for attempt in 1..=RESTART_ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 2;
                if !runtime.is_wanted(&launch.revision_full, token) {
                    return;
                }
                match runtime.start_container(&launch, token).await {
                    Ok(_) => {
                        log(format!("Container restarted (attempt {attempt})."));
                        return;
                    }
                    Err(reason) => log(format!("Restart attempt {attempt} failed: {reason}")),
                }
            }
            log(format!(
                "Gave up restarting the container after {RESTART_ATTEMPTS} attempts."
            ));
        });
    }

    async fn container_facts(&self, id: &str, port: i32) -> Result<ContainerFacts, String> {
        let inspect = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|error| format!("The container disappeared: {error}."))?;
        let state = inspect.state.unwrap_or_default();
        let settings = inspect.network_settings.unwrap_or_default();
        let bridge_ip = settings
            .networks
            .and_then(|networks| {
                networks
                    .into_values()
                    .find_map(|endpoint| endpoint.ip_address.filter(|ip| !ip.is_empty()))
            })
            .and_then(|ip| ip.parse().ok());
        let published = settings
            .ports
            .and_then(|ports| ports.get(&format!("{port}/tcp")).cloned().flatten())
            .and_then(|bindings| {
                bindings
                    .into_iter()
                    .find_map(|binding| binding.host_port.and_then(|port| port.parse().ok()))
            })
            .map(|host_port| SocketAddr::from(([127, 0, 0, 1], host_port)));
        Ok(ContainerFacts {
            running: state.running.unwrap_or(false),
            exit_code: state.exit_code,
            bridge_ip,
            published,
        })
    }

    async fn last_lines(&self, id: &str) -> String {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail("5")
            .build();
        let mut stream = self.docker.logs(id, Some(options));
        let mut text = String::new();
        while let Some(Ok(output)) = stream.next().await {
            text.push_str(&output.to_string());
        }
        text.trim().to_string()
    }

    async fn probe(
        &self,
        id: &str,
        port: i32,
        launch: &RevisionLaunch,
    ) -> Result<SocketAddr, String> {
        let probe = launch.container.startup_probe.as_ref();
        let (probe_port, http_path) = match probe.and_then(|probe| probe.probe_type.as_ref()) {
            Some(ProbeType::HttpGet(action)) => (
                if action.port > 0 { action.port } else { port },
                Some(if action.path.is_empty() {
                    "/".to_string()
                } else {
                    action.path.clone()
                }),
            ),
            Some(ProbeType::TcpSocket(action)) => {
                (if action.port > 0 { action.port } else { port }, None)
            }
            _ => (port, None),
        };
        let probe_port =
            u16::try_from(probe_port).map_err(|_| format!("Invalid probe port {probe_port}."))?;
        let deadline = tokio::time::Instant::now() + launch.startup_timeout;
        loop {
            let facts = self.container_facts(id, port).await?;
            let exit_code = facts.exit_code;
            if !facts.running {
                let lines = self.last_lines(id).await;
                return Err(format!(
                    "The user-provided container failed to start and listen on the port defined \
                     provided by the PORT={port} environment variable: the container exited with \
                     code {}.{}",
                    exit_code.unwrap_or(-1),
                    if lines.is_empty() {
                        String::new()
                    } else {
                        format!(" Last log lines: {lines}")
                    }
                ));
            }
            if let (Some(ip), Some(published)) = (facts.bridge_ip, facts.published) {
                let probe_address = SocketAddr::new(ip, probe_port);
                if probe_once(probe_address, http_path.as_deref()).await {
                    return Ok(published);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "The user-provided container failed to start and listen on the port defined \
                     provided by the PORT={port} environment variable within the allocated \
                     timeout ({}s).",
                    launch.startup_timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn remove_container(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    if let Err(error) = docker.remove_container(id, Some(options)).await {
        tracing::debug!("removing container {id}: {error}");
    }
}

async fn remove_labelled(docker: &Docker, instance: &str) {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{INSTANCE_LABEL}={instance}")],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    match docker.list_containers(Some(options)).await {
        Ok(containers) => {
            for container in containers {
                if let Some(id) = container.id {
                    remove_container(docker, &id).await;
                }
            }
        }
        Err(error) => tracing::warn!("cannot list the emulator's containers: {error}"),
    }
}

/// Removes the containers of an emulator instance over a fresh Docker connection (for cleanup
/// outside the emulator's own async runtime).
pub async fn remove_instance_containers(instance: &str) {
    let Ok(docker) = Docker::connect_with_local_defaults() else {
        return;
    };
    if let Ok(docker) = docker.negotiate_version().await {
        remove_labelled(&docker, instance).await;
    }
}

/// What the engine says about a container.
///
/// Two addresses, on purpose: the startup probe connects to the bridge IP, where a refused
/// connection really means "not listening" (a published port always accepts, through the
/// engine's proxy). Requests go to the published loopback port: bridge IPs are reused at once
/// by the engine for new containers (of this emulator or another one), so a stale bridge
/// address could reach a stranger's container, while published ports are allocated in turn
/// from a large range.
struct ContainerFacts {
    running: bool,
    exit_code: Option<i64>,
    bridge_ip: Option<IpAddr>,
    published: Option<SocketAddr>,
}

/// One probe attempt: a TCP connection, then for HTTP probes a `GET` answered with 2xx/3xx.
async fn probe_once(address: SocketAddr, http_path: Option<&str>) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(address),
    );
    let Ok(Ok(mut stream)) = connect.await else {
        return false;
    };
    let Some(path) = http_path else {
        return true;
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    let read = tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut head)).await;
    matches!(read, Ok(Ok(_)))
        && head.starts_with(b"HTTP/1.")
        && matches!(head.get(9), Some(b'2') | Some(b'3'))
}
