//! `deployer doctor` end to end: the real binary, a temporary repository on `main`, the local
//! Cloud Run emulator (answering `testIamPermissions`, told to deny through its faults; Service
//! Usage, IAM and Secret Manager, told which APIs are disabled and which secrets exist through
//! `/emulator/v1/project`), and the failures a new machine meets — each line FAILs or WARNs with
//! its fix.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

#[path = "support/git_repo.rs"]
mod git_repo;
mod support;

use std::{path::Path, process::Command};

use deployer::emulator::faults::FaultConfig;
use git_repo::Repo;
use support::start_emulator;

const RUNBOOK: &str = "# svc\n## Pre-flight\n## Deploy\n## Verify\n## Troubleshoot\n## Rollback\n";
const WEBHOOK: &str = "https://hooks.slack.example/services/T0/B0/secret-webhook-value";

/// A stand-in registry: `/v2/` answers 200 (what `docker-registry` answers without auth).
async fn registry() -> String {
    let app = axum::Router::new().route("/v2/", axum::routing::get(|| async { "{}" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address.to_string()
}

/// A repository on `main` with `services/svc.toml` on `target` (a TOML `[target]` body).
fn repository(target: &str) -> Repo {
    repository_with(target, "127.0.0.1:5000")
}

/// [`repository`] with its image repository on `registry`.
fn repository_with(target: &str, registry: &str) -> Repo {
    repository_full(target, registry, "")
}

/// [`repository_with`], with `tail` (more TOML tables) at the end of the service file.
fn repository_full(target: &str, registry: &str, tail: &str) -> Repo {
    let repo = Repo::new();
    repo.write("runbooks/svc.md", RUNBOOK);
    repo.write("Dockerfile", "FROM scratch\n");
    repo.write(
        "services/svc.toml",
        &format!(
            "name = \"svc\"\nrunbook = \"runbooks/svc.md\"\n[target]\n{target}\n\
             [image]\nrepository = \"{registry}/svc\"\n{tail}"
        ),
    );
    repo.commit(
        &["runbooks/svc.md", "Dockerfile", "services/svc.toml"],
        "first",
        1,
    );
    repo
}

struct Run {
    code: Option<i32>,
    stdout: String,
}

fn doctor(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let home = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_deployer"))
        .arg("doctor")
        .args(args)
        .current_dir(root)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("CI", "1")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stdout.contains("secret-webhook-value"), "{stdout}");
    assert!(!stderr.contains("secret-webhook-value"), "{stderr}");
    Run {
        code: output.status.code(),
        stdout: format!("{stdout}{stderr}"),
    }
}

/// Tells the emulator which APIs are disabled and which secret versions exist.
async fn set_project(endpoint: &str, project: serde_json::Value) {
    let response = reqwest::Client::new()
        .put(format!("{endpoint}/emulator/v1/project"))
        .json(&project)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );
}

/// The runtime service account and the secret of [`SERVICE_TAIL`].
const RUNTIME_ACCOUNT: &str = "svc-runtime@local.iam.gserviceaccount.com";
const SECRET_VERSION: &str = "projects/local/secrets/db-password/versions/1";
/// A service that runs as its own account, with a secret variable.
const SERVICE_TAIL: &str =
    "[run]\nservice_account = \"svc-runtime@local.iam.gserviceaccount.com\"\n\
    [run.secrets]\nDB_PASSWORD = \"projects/local/secrets/db-password/versions/1\"\n";

fn line<'a>(run: &'a Run, prefix: &str) -> &'a str {
    run.stdout
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line `{prefix}…` in:\n{}", run.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_on_the_emulator_and_fails_each_denial_with_its_fix() {
    let state = tempfile::tempdir().unwrap();
    let emulator = start_emulator(state.path()).await;
    let endpoint = emulator.endpoint().to_string();
    let repo = repository_full("kind = \"local\"", &registry().await, SERVICE_TAIL);
    let root = repo.path().to_path_buf();
    set_project(
        &endpoint,
        serde_json::json!({"secretVersions": [SECRET_VERSION]}),
    )
    .await;
    let run = {
        let (root, endpoint) = (root.clone(), endpoint.clone());
        move |extra: Vec<(&'static str, String)>| {
            let (root, endpoint) = (root.clone(), endpoint.clone());
            tokio::task::spawn_blocking(move || {
                let env: Vec<(&str, &str)> = extra
                    .iter()
                    .map(|(name, value)| (*name, value.as_str()))
                    .collect();
                doctor(&root, &["--endpoint", &endpoint], &env)
            })
        }
    };
    let docker_host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let with_webhook = || {
        let mut env = vec![("SLACK_WEBHOOK_URL", WEBHOOK.to_string())];
        if !docker_host.is_empty() {
            env.push(("DOCKER_HOST", docker_host.clone()));
        }
        env
    };

    // Everything in place: all PASS, exit 0.
    let all = run(with_webhook()).await.unwrap();
    assert_eq!(all.code, Some(0), "{}", all.stdout);
    for prefix in [
        "PASS  Docker Engine",
        "PASS  git repository: `main` at",
        "PASS  Google credentials: none, and none needed",
        "PASS  svc: project and region: `projects/local/locations/local/services/svc` (a local target",
        "PASS  svc: Cloud Run API",
        "PASS  svc: Cloud Run permissions: the caller holds run.services.get, run.services.update",
        "PASS  svc: Google APIs: enabled: run.googleapis.com (deploys), logging.googleapis.com (request metrics and checks), secretmanager.googleapis.com",
        "PASS  svc: runtime service account: `svc-runtime@local.iam.gserviceaccount.com` (`run.service_account`): the caller may act as it",
        "PASS  svc: secret `DB_PASSWORD`: `projects/local/secrets/db-password/versions/1` exists and is enabled",
        "PASS  svc: request metrics",
        "PASS  svc: image repository",
        "PASS  svc: Slack: `SLACK_WEBHOOK_URL` is set",
    ] {
        line(&all, prefix);
    }

    // A permission denied: that line FAILs with the command that grants it.
    emulator
        .set_faults(FaultConfig {
            denied_permissions: vec!["run.services.update".into()],
            ..FaultConfig::default()
        })
        .unwrap();
    let denied = run(with_webhook()).await.unwrap();
    assert_eq!(denied.code, Some(1), "{}", denied.stdout);
    assert!(
        line(&denied, "FAIL  svc: Cloud Run permissions").contains("lacks run.services.update"),
        "{}",
        denied.stdout
    );
    assert!(denied
        .stdout
        .contains("fix: `gcloud run services add-iam-policy-binding svc"));
    emulator.set_faults(FaultConfig::default()).unwrap();

    // No `actAs` on the runtime service account: that line FAILs with the binding to add.
    emulator
        .set_faults(FaultConfig {
            denied_permissions: vec!["iam.serviceAccounts.actAs".into()],
            ..FaultConfig::default()
        })
        .unwrap();
    let act_as = run(with_webhook()).await.unwrap();
    assert_eq!(act_as.code, Some(1), "{}", act_as.stdout);
    assert!(
        line(&act_as, "FAIL  svc: runtime service account").contains(
            "lacks iam.serviceAccounts.actAs on `svc-runtime@local.iam.gserviceaccount.com`"
        ),
        "{}",
        act_as.stdout
    );
    assert!(
        act_as.stdout.contains(&format!(
            "fix: `gcloud iam service-accounts add-iam-policy-binding {RUNTIME_ACCOUNT} --member=MEMBER --role=roles/iam.serviceAccountUser --project local`"
        )),
        "{}",
        act_as.stdout
    );
    line(&act_as, "PASS  svc: Cloud Run permissions");
    emulator.set_faults(FaultConfig::default()).unwrap();

    // An API disabled: the APIs line FAILs with the command that enables it, and the calls to
    // it are refused with `SERVICE_DISABLED`, said with the same command.
    set_project(
        &endpoint,
        serde_json::json!({
            "secretVersions": [SECRET_VERSION],
            "disabledServices": ["logging.googleapis.com", "iam.googleapis.com"],
        }),
    )
    .await;
    let disabled = run(with_webhook()).await.unwrap();
    assert_eq!(disabled.code, Some(1), "{}", disabled.stdout);
    assert!(
        line(&disabled, "FAIL  svc: Google APIs")
            .contains("not enabled in project `local`: logging.googleapis.com"),
        "{}",
        disabled.stdout
    );
    assert!(disabled
        .stdout
        .contains("fix: `gcloud services enable logging.googleapis.com --project local`"));
    line(&disabled, "FAIL  svc: request metrics (cloud-logging)");
    assert!(
        line(&disabled, "FAIL  svc: runtime service account")
            .contains("the `iam.googleapis.com` API is not enabled in project `local`"),
        "{}",
        disabled.stdout
    );
    assert!(disabled
        .stdout
        .contains("fix: `gcloud services enable iam.googleapis.com --project local`"));

    // A secret that does not exist: its line FAILs with the command that creates it.
    set_project(&endpoint, serde_json::json!({})).await;
    let missing = run(with_webhook()).await.unwrap();
    assert_eq!(missing.code, Some(1), "{}", missing.stdout);
    assert!(
        line(&missing, "FAIL  svc: secret `DB_PASSWORD`")
            .contains("`projects/local/secrets/db-password/versions/1` does not exist"),
        "{}",
        missing.stdout
    );
    assert!(missing
        .stdout
        .contains("fix: `printf %s \"$VALUE\" | gcloud secrets create db-password --data-file=- --project local`"));
    set_project(
        &endpoint,
        serde_json::json!({"secretVersions": [SECRET_VERSION]}),
    )
    .await;

    // The Admin API failing: the API line FAILs.
    emulator
        .set_faults(FaultConfig {
            error_rate: 1.0,
            error_status: Some(500),
            path_prefix: Some("/v2/projects".into()),
            ..FaultConfig::default()
        })
        .unwrap();
    let down = run(with_webhook()).await.unwrap();
    assert_eq!(down.code, Some(1), "{}", down.stdout);
    line(&down, "FAIL  svc: Cloud Run API");
    emulator.set_faults(FaultConfig::default()).unwrap();

    // Cloud Logging failing (the default request metrics): that line FAILs.
    emulator
        .set_faults(FaultConfig {
            error_rate: 1.0,
            error_status: Some(500),
            path_prefix: Some("/v2/entries".into()),
            ..FaultConfig::default()
        })
        .unwrap();
    let logging = run(with_webhook()).await.unwrap();
    assert_eq!(logging.code, Some(1), "{}", logging.stdout);
    line(&logging, "FAIL  svc: request metrics (cloud-logging)");
    line(&logging, "PASS  svc: Cloud Run API");
    emulator.set_faults(FaultConfig::default()).unwrap();

    // No Slack webhook: a warning with the variable to set; never a value.
    let mut no_webhook = with_webhook();
    no_webhook.retain(|(name, _)| *name != "SLACK_WEBHOOK_URL");
    let quiet = run(no_webhook).await.unwrap();
    assert_eq!(quiet.code, Some(1), "{}", quiet.stdout);
    line(&quiet, "WARN  svc: Slack: `SLACK_WEBHOOK_URL` is not set");

    // No Docker Engine.
    let mut no_docker = with_webhook();
    no_docker.retain(|(name, _)| *name != "DOCKER_HOST");
    no_docker.push(("DOCKER_HOST", "unix:///nonexistent/docker.sock".into()));
    let docker = run(no_docker).await.unwrap();
    assert_eq!(docker.code, Some(1), "{}", docker.stdout);
    line(&docker, "FAIL  Docker Engine");
    assert!(docker.stdout.contains("fix: start the Docker Engine"));

    // JSON: the same findings for machines.
    let json = {
        let root = root.clone();
        let endpoint = endpoint.clone();
        let env = with_webhook();
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (*n, v.as_str())).collect();
            doctor(&root, &["--endpoint", &endpoint, "--format", "json"], &env)
        })
        .await
        .unwrap()
    };
    let parsed: serde_json::Value =
        serde_json::from_str(json.stdout.lines().collect::<Vec<_>>().join("\n").trim())
            .unwrap_or_else(|error| panic!("{error}: {}", json.stdout));
    assert_eq!(parsed["exit_code"], 0);
    assert!(parsed["findings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|finding| finding["level"] == "PASS"));
    drop(emulator);
}

/// A `cloud-run` service on a machine without Google credentials: the credentials line FAILs
/// with the fix, at once.
#[test]
fn doctor_without_google_credentials_fails_that_line_with_the_fix() {
    let repo =
        repository("kind = \"cloud-run\"\nproject = \"my-project\"\nregion = \"us-central1\"");
    let run = doctor(repo.path(), &[], &[("SLACK_WEBHOOK_URL", WEBHOOK)]);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let credentials = line(&run, "FAIL  Google credentials");
    assert!(credentials.contains("none found"), "{credentials}");
    assert!(run.stdout.contains("gcloud auth application-default login"));
    line(&run, "FAIL  svc: Cloud Run API: no Google credentials");
}

/// A deployed service with session affinity on: `doctor` WARNs with the command that turns it
/// off, and a deploy says it before its canary (Cloud Run applies affinity before the split).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_affinity_is_warned_by_doctor_and_before_the_canary() {
    let state = tempfile::tempdir().unwrap();
    let emulator = start_emulator(state.path()).await;
    let endpoint = emulator.endpoint().to_string();
    let (services, _) = support::clients(&endpoint).await;
    let mut service = support::echo_service(&[]);
    if let Some(template) = service.template.as_mut() {
        template.session_affinity = true;
    }
    let operation = services
        .create_service()
        .set_parent("projects/local/locations/local")
        .set_service_id("svc")
        .set_service(service)
        .send()
        .await
        .unwrap();
    support::wait_operation(&services, operation).await;
    let repo = repository_with("kind = \"local\"", &registry().await);
    let root = repo.path().to_path_buf();
    let docker_host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let command = |args: Vec<String>| {
        let root = root.clone();
        let docker_host = docker_host.clone();
        tokio::task::spawn_blocking(move || {
            let mut env = vec![("SLACK_WEBHOOK_URL", WEBHOOK)];
            if !docker_host.is_empty() {
                env.push(("DOCKER_HOST", docker_host.as_str()));
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            doctor(&root, &args, &env)
        })
    };

    let doctor_run = command(vec!["--endpoint".into(), endpoint.clone()])
        .await
        .unwrap();
    assert_eq!(doctor_run.code, Some(1), "{}", doctor_run.stdout);
    assert!(
        line(&doctor_run, "WARN  svc: session affinity")
            .contains("Cloud Run applies affinity before the traffic split"),
        "{}",
        doctor_run.stdout
    );
    assert!(doctor_run.stdout.contains(
        "`gcloud run services update svc --no-session-affinity --region local --project local`"
    ));

    // A deploy (its new revision told to fail its start) warns before its rollout begins, then
    // stops before any traffic moved and exits 3 (killed, and the test failed, if it has not
    // exited within 120 s: it once kept polling the API after its report, never exiting).
    emulator
        .set_faults(FaultConfig {
            fail_revision_start: vec!["svc".into()],
            ..FaultConfig::default()
        })
        .unwrap();
    let (code, text) = {
        let root = root.clone();
        let endpoint = endpoint.clone();
        let image = support::echo_image().to_string();
        let home = tempfile::tempdir().unwrap();
        tokio::task::spawn_blocking(move || {
            let stderr = home.path().join("deploy.stderr");
            let mut child = Command::new(env!("CARGO_BIN_EXE_deployer"))
                .args(["deploy", "svc", "--skip-preflight", "--traffic", "0"])
                .args(["--image", &image, "--commit", &"a".repeat(40)])
                .args(["--endpoint", &endpoint])
                .current_dir(&root)
                .env("CI", "1")
                .env("NO_COLOR", "1")
                .env("HOME", home.path())
                .env_remove("XDG_STATE_HOME")
                .env_remove("SLACK_WEBHOOK_URL")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&stderr).unwrap())
                .spawn()
                .unwrap();
            let started = std::time::Instant::now();
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if started.elapsed() > std::time::Duration::from_secs(120) {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the deploy did not exit within 120 s:\n{}",
                        std::fs::read_to_string(&stderr).unwrap_or_default()
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            };
            (
                status.code(),
                std::fs::read_to_string(&stderr).unwrap_or_default(),
            )
        })
        .await
        .unwrap()
    };
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains(
            "warning: session affinity is on: Cloud Run applies affinity before the traffic split"
        ),
        "{text}"
    );
    assert!(text.contains("deploying `svc`"), "{text}");
    assert!(
        text.contains("rollout finished: stopped before any traffic moved"),
        "{text}"
    );
    drop(emulator);
}
