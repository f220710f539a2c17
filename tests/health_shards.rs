//! `deployer health` as a Cloud Run Job of several tasks (`CLOUD_RUN_TASK_INDEX` /
//! `CLOUD_RUN_TASK_COUNT` / `CLOUD_RUN_EXECUTION`), each task a separate process of the real
//! binary started at once, meeting in the file store (one shared `DEPLOYER_STATE_DIR`): every
//! service checked by exactly one task, exactly one Slack digest per run carrying every task's
//! failing results, no alert sent twice (nor again on the next run, the lifecycle being shared).

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

#[path = "support/slack.rs"]
mod slack;

use std::{collections::BTreeMap, path::Path, process::Command};

use axum::{extract::Path as UrlPath, routing::get, Json, Router};
use serde_json::{json, Value};

const HOOK: &str = "T111/B111/shardsecret";

/// A provider stand-in: `GET /value/NAME` answers `{"value": 1}` (PASS), or `{"value": 0}`
/// (CRITICAL) for a name starting with `bad-`.
fn start_provider() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = Router::new().route(
                "/value/{name}",
                get(|UrlPath(name): UrlPath<String>| async move {
                    Json(json!({"value": if name.starts_with("bad-") { 0 } else { 1 }}))
                }),
            );
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{address}")
}

/// A workspace of `names`, one `http` check each against the provider.
fn workspace(root: &Path, names: &[String], provider: &str) {
    std::fs::create_dir_all(root.join("services")).unwrap();
    std::fs::create_dir_all(root.join("runbooks")).unwrap();
    std::fs::write(root.join("Dockerfile"), "FROM scratch\n").unwrap();
    for name in names {
        std::fs::write(
            root.join(format!("runbooks/{name}.md")),
            format!(
                "# {name}\n## Pre-flight\n## Deploy\n## Verify\n## Troubleshoot\n## Rollback\n"
            ),
        )
        .unwrap();
        std::fs::write(
            root.join(format!("services/{name}.toml")),
            format!(
                "name = \"{name}\"\nrunbook = \"runbooks/{name}.md\"\n[target]\nkind = \"local\"\n\
                 [image]\nrepository = \"127.0.0.1:5000/{name}\"\n\
                 [[checks]]\nname = \"Freshness\"\nprovider = \"http\"\n\
                 url = \"{provider}/value/{name}\"\nfield = \"value\"\n\
                 comparison = \">=\"\nwarn = 1\ncritical = 0.5\nunit = \"count\"\ngates = [\"health\"]\n"
            ),
        )
        .unwrap();
    }
}

/// One execution of `count` tasks, started at once; each task's JSON document.
fn execution(
    root: &Path,
    state: &Path,
    execution: &str,
    count: u32,
    cloud_run: &str,
    hook: &str,
) -> Vec<Value> {
    let children: Vec<_> = (0..count)
        .map(|index| {
            Command::new(env!("CARGO_BIN_EXE_deployer"))
                .args([
                    "health",
                    "--format",
                    "json",
                    "--no-fetch",
                    "--no-architecture",
                    "--endpoint",
                    cloud_run,
                ])
                .current_dir(root)
                .env("CLOUD_RUN_TASK_INDEX", index.to_string())
                .env("CLOUD_RUN_TASK_COUNT", count.to_string())
                .env("CLOUD_RUN_EXECUTION", execution)
                .env("DEPLOYER_STATE_DIR", state)
                .env("SLACK_WEBHOOK_URL", hook)
                .env("NO_COLOR", "1")
                .env("CI", "true")
                .env_remove("DEPLOYER_HEALTH_HISTORY")
                .env_remove("DEPLOYER_SERVICES_DIR")
                .env_remove("GITHUB_ACTIONS")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start deployer")
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                !stderr.contains("shardsecret"),
                "the webhook never shows: {stderr}"
            );
            serde_json::from_str(&stdout)
                .unwrap_or_else(|error| panic!("{error}: {stdout}\nstderr: {stderr}"))
        })
        .collect()
}

fn sharded_run(count: u32, services: usize) {
    let provider = start_provider();
    let slack = slack::SlackStandIn::start(&[HOOK]);
    let hook = slack.hook_url(HOOK);
    let workspace_dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..services)
        .map(|n| {
            if n % 4 == 0 {
                format!("bad-{n:03}")
            } else {
                format!("svc-{n:03}")
            }
        })
        .collect();
    let bad = names.iter().filter(|name| name.starts_with("bad-")).count();
    workspace(workspace_dir.path(), &names, &provider);
    // The Cloud Run endpoint is the Slack stand-in (404 to every read): each drift result is
    // an ERROR, fast, so every service has one failing result whichever its check says.
    let documents = execution(
        workspace_dir.path(),
        state.path(),
        "deployer-health-1",
        count,
        &slack.url,
        &hook,
    );

    // Every service checked by exactly one task.
    let mut checked: BTreeMap<String, usize> = BTreeMap::new();
    for document in &documents {
        for check in document["checks"].as_array().unwrap() {
            if check["provider"] == "http" {
                *checked
                    .entry(check["service"].as_str().unwrap().into())
                    .or_default() += 1;
            }
        }
    }
    assert_eq!(checked.len(), services, "{checked:?}");
    assert!(checked.values().all(|times| *times == 1), "{checked:?}");
    let mut tasks: Vec<u64> = documents
        .iter()
        .map(|document| document["task"]["index"].as_u64().unwrap())
        .collect();
    tasks.sort();
    assert_eq!(tasks, (0..u64::from(count)).collect::<Vec<_>>());

    // Exactly one task sent the digest, with every task's failing results.
    let senders: Vec<&Value> = documents
        .iter()
        .filter(|document| document["task"]["digest"] == true)
        .collect();
    assert_eq!(senders.len(), 1, "{documents:#?}");
    let sender = senders[0];
    assert_eq!(sender["task"]["run_score"]["total"], services * 2);
    assert_eq!(
        sender["alerts"]["planned"].as_array().unwrap().len(),
        bad + services,
        "every bad check and every drift error: {sender:#}"
    );
    for document in &documents {
        if document["task"]["digest"] != true {
            assert!(document["alerts"]["planned"].as_array().unwrap().is_empty());
        }
    }
    let messages = slack.messages(HOOK);
    assert_eq!(messages.len(), 1, "one digest per run: {messages:#?}");
    let text = messages[0]["text"].as_str().unwrap();
    for name in names.iter().filter(|name| name.starts_with("bad-")) {
        assert!(text.contains(name.as_str()), "{name} in the digest: {text}");
    }
    assert!(
        text.contains(&format!("0 of {} passed", services * 2))
            || text.contains(&format!("{} of {} passed", services - bad, services * 2)),
        "the digest scores the whole run: {text}"
    );

    // One run in the history, with every result.
    let history = std::fs::read_to_string(state.path().join("health/history.jsonl")).unwrap();
    let runs: Vec<Value> = history
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(runs.len(), 1, "{history}");
    assert_eq!(runs[0]["checks"].as_array().unwrap().len(), services * 2);

    // The next execution: the same failures, already alerted: no digest, no duplicate alert.
    let documents = execution(
        workspace_dir.path(),
        state.path(),
        "deployer-health-2",
        count,
        &slack.url,
        &hook,
    );
    assert_eq!(
        documents
            .iter()
            .filter(|document| document["task"]["digest"] == true)
            .count(),
        1
    );
    assert_eq!(slack.messages(HOOK).len(), 1, "no alert twice");
    let history = std::fs::read_to_string(state.path().join("health/history.jsonl")).unwrap();
    assert_eq!(history.lines().count(), 2, "{history}");
}

#[test]
fn two_tasks_check_every_service_once_and_send_one_digest() {
    sharded_run(2, 9);
}

#[test]
fn ten_tasks_check_every_service_once_and_send_one_digest() {
    sharded_run(10, 23);
}

/// A task whose environment is not a Cloud Run Job's is refused, naming the variable.
#[test]
fn a_malformed_task_environment_is_a_usage_error() {
    let workspace_dir = tempfile::tempdir().unwrap();
    workspace(
        workspace_dir.path(),
        &["svc".to_string()],
        "http://127.0.0.1:1",
    );
    let state = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_deployer"))
        .args(["health", "--no-fetch"])
        .current_dir(workspace_dir.path())
        .env("CLOUD_RUN_TASK_COUNT", "3")
        .env("CLOUD_RUN_TASK_INDEX", "0")
        .env_remove("CLOUD_RUN_EXECUTION")
        .env("DEPLOYER_STATE_DIR", state.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`CLOUD_RUN_EXECUTION`"), "{stderr}");
}

/// The scheduled job runs several tasks, which meet in a state directory every task mounts.
#[test]
fn the_scheduled_job_runs_several_tasks_over_one_shared_state_directory() {
    use yaml_rust2::YamlLoader;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("deploy/health-job.yaml")).unwrap();
    let job = &YamlLoader::load_from_str(&text).unwrap()[0];
    let execution = &job["spec"]["template"]["spec"];
    let tasks = execution["taskCount"].as_i64().unwrap();
    assert!(tasks > 1, "taskCount {tasks}");
    assert_eq!(execution["parallelism"].as_i64(), Some(tasks));
    let task = &execution["template"]["spec"];
    let container = &task["containers"][0];
    let state_dir = container["env"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|var| var["name"].as_str() == Some("DEPLOYER_STATE_DIR"))
        .and_then(|var| var["value"].as_str())
        .expect("DEPLOYER_STATE_DIR");
    let mount = &container["volumeMounts"][0];
    assert_eq!(mount["mountPath"].as_str(), Some(state_dir));
    let volume = task["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|volume| volume["name"] == mount["name"])
        .expect("the mounted volume");
    assert!(
        !volume["nfs"]["server"].is_badvalue(),
        "NFS, for an exclusive create: {volume:?}"
    );
}
