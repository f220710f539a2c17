//! Shared by the emulator's integration tests: the `FROM scratch` echo image (built once and
//! cached by content hash), an emulator on an ephemeral port with a temporary data directory,
//! Google's official Cloud Run clients pointed at it, and small HTTP helpers.

#![allow(dead_code)]
// Each test binary uses a different part of this module.
// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

pub mod driver_harness;
pub mod recorder;
pub mod service_id;
pub mod stage;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use deployer::{
    emulator::{Emulator, EmulatorConfig},
    platform::{
        cloud_run::{revision_labels, CloudRunPlatform, Endpoint},
        Platform, RevisionSettings, RevisionSpec, ServiceId, ServiceSnapshot,
    },
};
use google_cloud_run_v2::{
    client::{Revisions, Services},
    model::{
        Container, EnvVar, RevisionTemplate, Service, TrafficTarget, TrafficTargetAllocationType,
    },
};

pub const PROJECT_PARENT: &str = "projects/test/locations/local";

/// Fails with a clear message when the Docker Engine is unreachable (tests never skip).
fn require_docker() {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        ok,
        "the Docker Engine is not reachable (`docker info` failed): the emulator tests run real \
         containers; start dockerd (tests/env/00-docker.sh checks it)"
    );
}

fn source_hash(directory: &Path) -> String {
    let mut text = String::new();
    for file in ["Cargo.toml", "src/main.rs"] {
        text.push_str(&std::fs::read_to_string(directory.join(file)).expect("echo-server source"));
    }
    deployer::emulator::short_hash(&text)
}

/// True when the engine already has `image`.
fn image_present(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Builds `image` `FROM scratch` around the static binary `binary`, run as `/NAME` on port 8080.
fn package_static_binary(binary: &Path, name: &str, image: &str) {
    let context = tempfile::tempdir().expect("temporary build context");
    std::fs::copy(binary, context.path().join(name)).expect("copy the binary into the context");
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM scratch\nCOPY {name} /{name}\nEXPOSE 8080\nENTRYPOINT [\"/{name}\"]\n"),
    )
    .expect("write the Dockerfile");
    let status = Command::new("docker")
        .args(["build", "--quiet", "--tag", image])
        .arg(context.path())
        .status()
        .expect("run docker build");
    assert!(status.success(), "docker build of `{image}` failed");
}

/// The echo image (`tests/support/echo-server` compiled statically, `FROM scratch`), built once
/// per content hash: later test processes find it in the engine.
pub fn echo_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        require_docker();
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let source = root.join("tests/support/echo-server");
        let image = format!("deployer-test-echo:{}", source_hash(&source));
        if image_present(&image) {
            return image;
        }
        let target_dir = root.join("target/echo-server");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "--quiet",
                "--target",
                "x86_64-unknown-linux-gnu",
            ])
            .arg("--manifest-path")
            .arg(source.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .status()
            .expect("run cargo to build the echo server");
        assert!(
            status.success(),
            "building tests/support/echo-server failed"
        );
        package_static_binary(
            &target_dir.join("x86_64-unknown-linux-gnu/release/echo-server"),
            "echo-server",
            &image,
        );
        image
    })
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An emulator on an ephemeral port over a data directory.
pub async fn start_emulator(data_dir: &Path) -> Emulator {
    install_crypto();
    let mut config = EmulatorConfig::ephemeral(data_dir);
    config.startup_timeout = Duration::from_secs(5);
    Emulator::start(config).await.expect("start the emulator")
}

pub async fn clients(endpoint: &str) -> (Services, Revisions) {
    install_crypto();
    let credentials = google_cloud_auth::credentials::anonymous::Builder::new().build();
    let services = Services::builder()
        .with_endpoint(endpoint)
        .with_credentials(credentials.clone())
        .build()
        .await
        .expect("Services client");
    let revisions = Revisions::builder()
        .with_endpoint(endpoint)
        .with_credentials(credentials)
        .build()
        .await
        .expect("Revisions client");
    (services, revisions)
}

/// A service whose template runs the echo image with extra environment variables.
pub fn echo_service(env: &[(&str, &str)]) -> Service {
    let mut container = Container::new();
    container.image = echo_image().to_string();
    container.env = env
        .iter()
        .map(|(name, value)| EnvVar::new().set_name(*name).set_value(*value))
        .collect();
    let mut template = RevisionTemplate::new();
    template.containers = vec![container];
    let mut service = Service::new();
    service.template = Some(template);
    service
}

/// Changes the template's `MESSAGE`, which makes a new revision.
pub fn with_message(mut service: Service, message: &str) -> Service {
    let template = service.template.get_or_insert_with(RevisionTemplate::new);
    let container = &mut template.containers[0];
    container.env.retain(|variable| variable.name != "MESSAGE");
    container
        .env
        .push(EnvVar::new().set_name("MESSAGE").set_value(message));
    template.revision.clear();
    service
}

pub fn target_revision(revision: &str, percent: i32, tag: &str) -> TrafficTarget {
    TrafficTarget::new()
        .set_type(TrafficTargetAllocationType::Revision)
        .set_revision(revision)
        .set_percent(percent)
        .set_tag(tag)
}

pub fn target_latest(percent: i32, tag: &str) -> TrafficTarget {
    TrafficTarget::new()
        .set_type(TrafficTargetAllocationType::Latest)
        .set_percent(percent)
        .set_tag(tag)
}

/// The short name of a full revision name.
pub fn short(revision: &str) -> String {
    revision.rsplit('/').next().unwrap_or_default().to_string()
}

/// Polls an operation through the official client until it is done (10 s deadline).
pub async fn wait_operation(
    services: &Services,
    operation: google_cloud_longrunning::model::Operation,
) -> google_cloud_longrunning::model::Operation {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut operation = operation;
    while !operation.done {
        assert!(
            tokio::time::Instant::now() < deadline,
            "operation {} not done within 20 s",
            operation.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        operation = services
            .get_operation()
            .set_name(&operation.name)
            .send()
            .await
            .expect("get operation");
    }
    operation
}

/// Creates service `id` under `parent` from `service`, waits until its operation is done, and
/// returns the service as the API has it then.
pub async fn create_service(
    services: &Services,
    parent: &str,
    id: &str,
    service: Service,
) -> Service {
    let operation = services
        .create_service()
        .set_parent(parent)
        .set_service_id(id)
        .set_service(service)
        .send()
        .await
        .expect("create the service");
    wait_operation(services, operation).await;
    get_service(services, &format!("{parent}/services/{id}")).await
}

/// The service named `name` (its full resource name) as the API has it now.
pub async fn get_service(services: &Services, name: &str) -> Service {
    services
        .get_service()
        .set_name(name)
        .send()
        .await
        .expect("get the service")
}

/// Sends `update` and waits until its operation is done; returns the done operation.
pub async fn update_service(
    services: &Services,
    update: Service,
) -> google_cloud_longrunning::model::Operation {
    let operation = services
        .update_service()
        .set_service(update)
        .send()
        .await
        .expect("update the service");
    wait_operation(services, operation).await
}

/// Sends `update`, which the API must refuse; returns the refusal.
pub async fn refused_update(
    services: &Services,
    update: Service,
) -> google_cloud_gax::error::Error {
    match services.update_service().set_service(update).send().await {
        Ok(operation) => panic!("the update was accepted: {}", operation.name),
        Err(error) => error,
    }
}

/// Makes a new revision of `service` (its `MESSAGE` set to `message`) with `traffic` as the
/// split, waits until the update is done, and returns the service as it is then.
pub async fn split_to_new_revision(
    services: &Services,
    service: Service,
    message: &str,
    traffic: Vec<TrafficTarget>,
) -> Service {
    let name = service.name.clone();
    let mut update = with_message(service, message);
    update.traffic = traffic;
    update_service(services, update).await;
    get_service(services, &name).await
}

/// The URL of `service`'s traffic tag `tag`.
pub fn tag_url(service: &Service, tag: &str) -> String {
    service
        .traffic_statuses
        .iter()
        .find(|status| status.tag == tag)
        .map(|status| status.uri.clone())
        .unwrap_or_else(|| panic!("no traffic tag `{tag}` on {}", service.name))
}

/// A plain HTTP client (no proxy, short timeouts).
pub fn http() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

/// GET a URL: (status, JSON body or Null).
pub async fn get_json(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let response = client.get(url).send().await.expect("HTTP request");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// The demo service `examples/hello` as a `FROM scratch` image, built once per content hash of
/// its sources (later test processes find it in the engine). Its `/health` reports
/// `SERVICE_NAME` and `BUILD_COMMIT` from the environment, and `FAIL_RATE` makes a fraction of
/// its other answers 500s: one image serves every identity a rollout test needs.
pub fn hello_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        require_docker();
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let source = root.join("examples/hello");
        let image = format!("deployer-test-hello:{}", source_hash(&source));
        if image_present(&image) {
            return image;
        }
        // The same command as examples/hello/build.sh, so the workspace's build cache serves
        // both (the explicit `--target` keeps `+crt-static` away from build scripts).
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--quiet", "-p", "hello"])
            .args(["--target", "x86_64-unknown-linux-gnu"])
            .arg("--target-dir")
            .arg(&target_dir)
            .current_dir(&root)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .status()
            .expect("run cargo to build examples/hello");
        assert!(status.success(), "building examples/hello failed");
        package_static_binary(
            &target_dir.join("x86_64-unknown-linux-gnu/release/hello"),
            "hello",
            &image,
        );
        image
    })
}

/// deployer's Cloud Run platform on `emulator`, through Google's client.
pub async fn emulator_platform(emulator: &Emulator) -> CloudRunPlatform {
    CloudRunPlatform::connect(
        &Endpoint::Custom(emulator.endpoint().to_string()),
        Duration::from_secs(60),
    )
    .await
    .expect("connect to the emulator")
}

/// Creates service `id` serving its first revision `revision`: the demo service at `commit`
/// (labelled with it, and reporting it and the service's name on `/health`).
pub async fn create_hello_service(
    platform: &dyn Platform,
    id: &ServiceId,
    revision: &str,
    commit: &str,
) -> ServiceSnapshot {
    platform
        .create(
            id,
            &RevisionSpec {
                name: revision.to_string(),
                image: hello_image().to_string(),
                labels: revision_labels(commit),
                base: None,
                settings: RevisionSettings {
                    env: hello_env(&id.name, commit, None),
                    ..RevisionSettings::default()
                },
            },
        )
        .await
        .expect("create the service")
}

/// What a [`Load`] generator saw: answers by (revision, status); `status` 0 = no answer.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub answers: std::collections::BTreeMap<(String, u16), usize>,
}

impl LoadReport {
    /// Requests answered by `revision` (any status).
    pub fn served_by(&self, revision: &str) -> usize {
        self.answers
            .iter()
            .filter(|((name, _), _)| name == revision)
            .map(|(_, count)| count)
            .sum()
    }

    /// All requests sent.
    pub fn total(&self) -> usize {
        self.answers.values().sum()
    }
}

/// A load generator: GETs at a steady rate to one loopback URL, until stopped, `limit` elapsed
/// or `rate × limit` requests were sent — whichever comes first, so a failing test never leaves
/// it running.
pub struct Load {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<LoadReport>,
}

impl Load {
    /// Starts `per_second` requests a second to `url` (which must be on 127.0.0.1).
    pub fn start(url: &str, per_second: u32, limit: Duration) -> Load {
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "the load generator only talks to loopback, not `{url}`"
        );
        let url = url.to_string();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let client = http();
        let task = tokio::spawn(async move {
            let report = std::sync::Arc::new(std::sync::Mutex::new(LoadReport::default()));
            // Requests are not awaited in turn: a slow answer must not lower the rate.
            let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / per_second);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let deadline = tokio::time::Instant::now() + limit;
            let budget = u64::from(per_second) * limit.as_secs().max(1);
            let mut requests = Vec::new();
            for _ in 0..budget {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stopped.changed() => break,
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    continue;
                };
                let (client, url, report) = (client.clone(), url.clone(), report.clone());
                requests.push(tokio::spawn(async move {
                    let answer = match client.get(&url).send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let body = response.text().await.unwrap_or_default();
                            // hello answers "Hello from S at commit C (revision R)".
                            let revision = body
                                .rsplit_once("(revision ")
                                .map(|(_, rest)| rest.trim_end().trim_end_matches(')'))
                                .unwrap_or_default()
                                .to_string();
                            (revision, status)
                        }
                        Err(_) => (String::new(), 0),
                    };
                    *report
                        .lock()
                        .expect("load report")
                        .answers
                        .entry(answer)
                        .or_default() += 1;
                    drop(permit);
                }));
            }
            for request in requests {
                let _ = request.await;
            }
            let report = report.lock().expect("load report").clone();
            report
        });
        Load { stop, task }
    }

    /// Stops sending, waits for the answers in flight, and reports.
    pub async fn finish(self) -> LoadReport {
        let _ = self.stop.send(true);
        self.task.await.expect("the load generator task")
    }
}

/// A repository with one `kind = "local"` service file whose `[rollout]` table is `rollout`,
/// its runbook and a Dockerfile, so that `deployer` validates it; returns the services
/// directory.
pub fn local_repository(root: &Path, name: &str, rollout: &str) -> PathBuf {
    let services = root.join("services");
    std::fs::create_dir_all(&services).unwrap();
    std::fs::create_dir_all(root.join("runbooks")).unwrap();
    std::fs::write(
        root.join(format!("runbooks/{name}.md")),
        format!(
            "# Runbook: {name}\n\n## Pre-flight\n\n`deployer preflight {name}`\n\n## Deploy\n\n\
             `deployer deploy {name}`\n\n## Verify\n\n`deployer status {name}`\n\n\
             ## Troubleshoot\n\nRead the revision's logs.\n\n## Rollback\n\n\
             `deployer rollback {name}`\n"
        ),
    )
    .unwrap();
    std::fs::write(root.join("Dockerfile"), "FROM scratch\n").unwrap();
    std::fs::write(
        services.join(format!("{name}.toml")),
        format!(
            r#"name = "{name}"
runbook = "runbooks/{name}.md"

[target]
kind = "local"

[image]
repository = "127.0.0.1:5000/{name}"

[build]
context = "."
dockerfile = "Dockerfile"

[health]
path = "/health"
timeout = "2s"

[rollout]
{rollout}"#
        ),
    )
    .unwrap();
    services
}

/// The `deployer` binary run in the repository of `services` with its own state directory:
/// no endpoint from the environment, stdin closed.
pub fn deployer_command(services: &Path, state: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deployer"));
    command
        .env("DEPLOYER_SERVICES_DIR", services)
        .env("DEPLOYER_STATE_DIR", state)
        .env_remove("DEPLOYER_CLOUD_RUN_ENDPOINT")
        .env_remove("DEPLOYER_MONITORING_ENDPOINT")
        .env_remove("DEPLOYER_LOGGING_ENDPOINT")
        .stdin(std::process::Stdio::null());
    command
}

/// The demo service's environment: the identity `/health` reports, and a failure rate.
pub fn hello_env(
    service: &str,
    commit: &str,
    fail_rate: Option<&str>,
) -> std::collections::BTreeMap<String, String> {
    let mut env = std::collections::BTreeMap::from([
        ("SERVICE_NAME".to_string(), service.to_string()),
        ("BUILD_COMMIT".to_string(), commit.to_string()),
    ]);
    if let Some(rate) = fail_rate {
        env.insert("FAIL_RATE".to_string(), rate.to_string());
    }
    env
}
