//! `deployer graph` end to end: the shipped pipeline's diagram (snapshot, and `docs/PIPELINE.md`
//! kept current), and `graph --check` / `health` against the local emulator serving Cloud Run,
//! the Pub/Sub admin read surface and Cloud Scheduler's `jobs.list` in their real wire formats:
//! the declared wiring as it is live conforms (exit 0); the Session 77 bypass — an undeclared
//! push subscription on the orchestrator's topic delivering to the worker — is CRITICAL in both
//! (exit 2) with a Slack alert; a push to the wrong path or URL, a missing subscription and a
//! pull mismatch are CRITICAL; lists are read across pages; an unreadable API is an ERROR,
//! never a pass.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

#[path = "support/slack.rs"]
mod slack;
mod support;

use std::{
    path::Path,
    process::{Command, Output},
    time::{Duration, Instant},
};

use google_cloud_lro::Poller as _;
use serde_json::{json, Value};
use support::{clients, echo_service, start_emulator};

const PROJECT: &str = "nba-props-platform";
const REGION: &str = "us-west2";

/// The shipped services that declare wiring (`hello` declares none).
const WIRED: [&str; 5] = [
    "phase3-processors",
    "phase4-processors",
    "prediction-coordinator",
    "prediction-worker",
    "grading-service",
];

fn deployer(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deployer"));
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .env("CI", "true")
        .env_remove("DEPLOYER_SERVICES_DIR")
        .env_remove("DEPLOYER_PUBSUB_ENDPOINT")
        .env_remove("DEPLOYER_SCHEDULER_ENDPOINT")
        .env_remove("DEPLOYER_CLOUD_RUN_ENDPOINT")
        .env_remove("DEPLOYER_EMULATOR_ENDPOINT")
        .env_remove("DEPLOYER_PROJECT")
        .env_remove("DEPLOYER_REGION")
        .env_remove("DEPLOYER_HEALTH_HISTORY")
        .env_remove("DEPLOYER_HEALTH_EVERY")
        .env_remove("SLACK_WEBHOOK_URL")
        .env_remove("SLACK_WEBHOOK_URL_CRITICAL")
        .env_remove("SLACK_WEBHOOK_URL_WARNING");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run deployer")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Creates `names` as Cloud Run services under `parent` in the emulator; their URLs by name.
async fn create_services(endpoint: &str, parent: &str, names: &[&str]) -> Vec<(String, String)> {
    let (services, _) = clients(endpoint).await;
    let mut urls = Vec::new();
    for name in names {
        let created = tokio::time::timeout(
            Duration::from_secs(60),
            services
                .create_service()
                .set_parent(parent)
                .set_service_id(*name)
                .set_service(echo_service(&[]))
                .poller()
                .until_done(),
        )
        .await
        .expect("create finished within 60 s")
        .expect("create succeeded");
        assert!(
            created.urls.contains(&created.uri),
            "the emulator lists its URL in `urls`: {created:?}"
        );
        urls.push((name.to_string(), created.uri.clone()));
    }
    urls
}

/// Replaces the emulator's Pub/Sub and Cloud Scheduler resources.
async fn seed(endpoint: &str, body: Value) {
    let response = support::http()
        .put(format!("{endpoint}/emulator/v1/wiring"))
        .json(&body)
        .send()
        .await
        .expect("seed the wiring");
    let status = response.status();
    assert!(status.is_success(), "{status}: {:?}", response.text().await);
}

fn url_of<'a>(urls: &'a [(String, String)], service: &str) -> &'a str {
    &urls
        .iter()
        .find(|(name, _)| name == service)
        .expect("a created service")
        .1
}

fn topic(project: &str, name: &str) -> Value {
    json!({"name": format!("projects/{project}/topics/{name}")})
}

fn push(project: &str, name: &str, topic: &str, endpoint: &str) -> Value {
    json!({
        "name": format!("projects/{project}/subscriptions/{name}"),
        "topic": format!("projects/{project}/topics/{topic}"),
        "pushConfig": {"pushEndpoint": endpoint},
        "ackDeadlineSeconds": 10
    })
}

fn pull(project: &str, name: &str, topic: &str) -> Value {
    json!({
        "name": format!("projects/{project}/subscriptions/{name}"),
        "topic": format!("projects/{project}/topics/{topic}"),
        "pushConfig": {},
        "ackDeadlineSeconds": 10
    })
}

/// The live project exactly as the shipped services declare it.
fn shipped_as_declared(urls: &[(String, String)]) -> Value {
    let topics: Vec<Value> = [
        "phase3-complete",
        "phase4-complete",
        "prediction-requests",
        "predictions-ready",
    ]
    .iter()
    .map(|name| topic(PROJECT, name))
    .collect();
    json!({
        "topics": topics,
        "subscriptions": [
            push(PROJECT, "phase4-processors-phase3-complete", "phase3-complete",
                &format!("{}/pubsub", url_of(urls, "phase4-processors"))),
            push(PROJECT, "prediction-coordinator-phase4-complete", "phase4-complete",
                &format!("{}/pubsub", url_of(urls, "prediction-coordinator"))),
            push(PROJECT, "prediction-worker-prediction-requests", "prediction-requests",
                &format!("{}/predict", url_of(urls, "prediction-worker"))),
            push(PROJECT, "grading-service-predictions-ready", "predictions-ready",
                &format!("{}/pubsub", url_of(urls, "grading-service"))),
        ],
        "jobs": [{
            "name": format!("projects/{PROJECT}/locations/{REGION}/jobs/prediction-coordinator-daily"),
            "schedule": "0 10 * * *",
            "timeZone": "America/Los_Angeles",
            "state": "ENABLED",
            "httpTarget": {"uri": format!("{}/start", url_of(urls, "prediction-coordinator")), "httpMethod": "POST"}
        }]
    })
}

/// An emulator with the five wired shipped services deployed in their project and region.
async fn shipped_fleet(data_dir: &Path) -> (deployer::emulator::Emulator, Vec<(String, String)>) {
    let emulator = start_emulator(data_dir).await;
    let parent = format!("projects/{PROJECT}/locations/{REGION}");
    let urls = create_services(emulator.endpoint(), &parent, &WIRED).await;
    (emulator, urls)
}

fn graph_check(endpoint: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["graph", "--check", "--endpoint", endpoint];
    args.extend_from_slice(extra);
    let output = deployer(&args, &[]);
    (
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

#[test]
fn the_shipped_pipeline_diagram_matches_its_snapshot_and_docs_pipeline_md() {
    let output = deployer(&["graph"], &[]);
    let diagram = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    insta::assert_snapshot!("shipped_pipeline", diagram);
    // `docs/PIPELINE.md` carries the same diagram: regenerate it with
    // `deployer graph > /tmp/d && ...` (see the file) when the services' wiring changes.
    let document =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/PIPELINE.md"))
            .expect("docs/PIPELINE.md");
    assert!(
        document.contains(&format!("```mermaid\n{diagram}```")),
        "docs/PIPELINE.md is not current: paste the output of `deployer graph` into its mermaid block\n{diagram}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_wiring_as_declared_conforms_with_exit_0() {
    let data = tempfile::tempdir().unwrap();
    let (emulator, urls) = shipped_fleet(data.path()).await;
    seed(emulator.endpoint(), shipped_as_declared(&urls)).await;
    let started = Instant::now();
    let (code, stdout, stderr) = graph_check(emulator.endpoint(), &[]);
    let elapsed = started.elapsed();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("PASS: the live project matches the declared wiring"),
        "{stderr}"
    );
    assert!(stdout.starts_with("flowchart LR\n"), "{stdout}");
    assert!(!stdout.contains('✗'), "nothing marked: {stdout}");
    eprintln!("graph --check of the shipped services: {elapsed:?}");

    // JSON: the same verdict as data.
    let output = deployer(
        &[
            "graph",
            "--check",
            "--endpoint",
            emulator.endpoint(),
            "--format",
            "json",
        ],
        &[],
    );
    let document: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(document["check"]["conformance"], "PASS", "{document}");
    assert_eq!(document["check"]["findings"], json!([]));
    assert_eq!(document["services"].as_array().unwrap().len(), 5);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undeclared_push_bypassing_the_coordinator_is_critical_in_graph_and_health_with_a_slack_alert(
) {
    let data = tempfile::tempdir().unwrap();
    let (emulator, urls) = shipped_fleet(data.path()).await;
    let mut live = shipped_as_declared(&urls);
    // Session 77: phase 4's completion pushed straight to the worker, past the orchestrator.
    let bypass_endpoint = format!("{}/pubsub", url_of(&urls, "prediction-worker"));
    live["subscriptions"].as_array_mut().unwrap().push(push(
        PROJECT,
        "prediction-worker-phase4-direct",
        "phase4-complete",
        &bypass_endpoint,
    ));
    seed(emulator.endpoint(), live).await;

    let (code, stdout, stderr) = graph_check(emulator.endpoint(), &[]);
    assert_eq!(code, Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(
            "CRITICAL subscription `prediction-worker-phase4-direct` on `phase4-complete` is declared by no service"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "delivers: push to {bypass_endpoint} (service `prediction-worker`)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("bypasses `prediction-coordinator`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("fix: delete it (`gcloud pubsub subscriptions delete prediction-worker-phase4-direct --project nba-props-platform`)"),
        "{stderr}"
    );
    // Drawn: a red dashed arrow from the topic to the worker.
    assert!(
        stdout.contains("-.->|\"prediction-worker-phase4-direct ✗ CRITICAL: UNDECLARED\"|"),
        "{stdout}"
    );
    // Only the worker selected: the finding concerns it, so it still shows.
    let (code, _, stderr) = graph_check(emulator.endpoint(), &["prediction-worker"]);
    assert_eq!(code, Some(2), "{stderr}");
    // phase 3 alone is not concerned.
    let (code, _, stderr) = graph_check(emulator.endpoint(), &["phase3-processors"]);
    assert_eq!(code, Some(0), "{stderr}");

    // `health`: one "Architecture" result per wired service, CRITICAL for the two concerned,
    // and a Slack alert naming the subscription.
    let hook = "T000/B000/architecture";
    let slack = slack::SlackStandIn::start(&[hook]);
    let state = tempfile::tempdir().unwrap();
    let webhook = slack.hook_url(hook);
    let output = deployer(
        &[
            "health",
            "--service",
            "prediction-coordinator",
            "--service",
            "prediction-worker",
            "--service",
            "phase3-processors",
            "--no-fetch",
            "--endpoint",
            emulator.endpoint(),
            "--format",
            "json",
        ],
        &[
            ("DEPLOYER_STATE_DIR", state.path().to_str().unwrap()),
            ("SLACK_WEBHOOK_URL", &webhook),
            // The BigQuery checks read nothing here (an ERROR each): this test is about the
            // architecture.
            ("DEPLOYER_BIGQUERY_ENDPOINT", "http://127.0.0.1:9"),
        ],
    );
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(2), "{stdout}\n{stderr}");
    let document: Value = serde_json::from_str(&stdout).expect("JSON");
    let architecture: Vec<&Value> = document["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|check| check["check"] == "Architecture")
        .collect();
    let status_of = |service: &str| {
        architecture
            .iter()
            .find(|check| check["service"] == service)
            .map(|check| check["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status_of("prediction-worker").as_deref(), Some("CRITICAL"));
    assert_eq!(
        status_of("prediction-coordinator").as_deref(),
        Some("CRITICAL")
    );
    assert_eq!(status_of("phase3-processors").as_deref(), Some("PASS"));
    let worker = architecture
        .iter()
        .find(|check| check["service"] == "prediction-worker")
        .unwrap();
    assert!(
        worker["message"]
            .as_str()
            .unwrap()
            .contains("prediction-worker-phase4-direct"),
        "{worker}"
    );
    let messages = slack.messages(hook);
    assert_eq!(messages.len(), 1, "one digest: {stderr}");
    let body = messages[0].to_string();
    assert!(
        // One cause, two services' Architecture results: one line of the digest.
        body.contains(
            "*CRITICAL (new)* `prediction-coordinator, prediction-worker` · *Architecture*"
        ),
        "{body}"
    );
    assert!(body.contains("prediction-worker-phase4-direct"), "{body}");
    assert!(!stdout.contains("T000/B000") && !stderr.contains("T000/B000"));
    emulator.shutdown().await;
}

const RUNBOOK: &str = "# svc\n## Pre-flight\n## Deploy\n## Verify\n## Troubleshoot\n## Rollback\n";

/// A repository with three local services: `orders` publishes `orders`; `billing` consumes it
/// by push at `/pubsub`; `audit` by pull.
fn local_repository() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let write = |path: &str, content: &str| {
        let path = root.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    };
    write("Dockerfile", "FROM scratch\n");
    let service = |name: &str, wiring: &str| {
        write(&format!("runbooks/{name}.md"), RUNBOOK);
        write(
            &format!("services/{name}.toml"),
            &format!(
                "name = \"{name}\"\nrunbook = \"runbooks/{name}.md\"\n{wiring}\n[target]\nkind = \"local\"\n[image]\nrepository = \"127.0.0.1:5000/{name}\"\n"
            ),
        );
    };
    service("orders", "publishes = [\"orders\"]");
    service(
        "billing",
        "[[subscriptions]]\nname = \"billing-orders\"\ntopic = \"orders\"\npush_path = \"/pubsub\"\n",
    );
    service(
        "audit",
        "[[subscriptions]]\nname = \"audit-orders\"\ntopic = \"orders\"\n",
    );
    root
}

fn local_check(root: &Path, endpoint: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let services = root.join("services");
    let mut all_env = vec![
        ("DEPLOYER_SERVICES_DIR", services.to_str().unwrap()),
        ("DEPLOYER_EMULATOR_ENDPOINT", endpoint),
    ];
    all_env.extend_from_slice(env);
    let output = deployer(&["graph", "--check"], &all_env);
    (output.status.code(), text(&output.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_push_urls_missing_subscriptions_pull_pagination_and_an_unreadable_api() {
    let repository = local_repository();
    let data = tempfile::tempdir().unwrap();
    let emulator = start_emulator(data.path()).await;
    let endpoint = emulator.endpoint().to_string();
    let urls = create_services(
        &endpoint,
        "projects/local/locations/local",
        &["orders", "billing", "audit"],
    )
    .await;
    let billing = url_of(&urls, "billing").to_string();
    let conforming = |billing_endpoint: &str, extra: Vec<Value>| {
        let mut subscriptions = vec![
            push("local", "billing-orders", "orders", billing_endpoint),
            pull("local", "audit-orders", "orders"),
        ];
        subscriptions.extend(extra);
        json!({"topics": [topic("local", "orders")], "subscriptions": subscriptions})
    };

    // As declared, with a pull subscription declared pull: exit 0.
    seed(&endpoint, conforming(&format!("{billing}/pubsub"), vec![])).await;
    let (code, stderr) = local_check(repository.path(), &endpoint, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    // The rest of the read surface, in Pub/Sub's REST shapes.
    let client = support::http();
    let (status, subscription) = support::get_json(
        &client,
        &format!("{endpoint}/v1/projects/local/subscriptions/billing-orders"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(subscription["topic"], "projects/local/topics/orders");
    assert_eq!(
        subscription["pushConfig"]["pushEndpoint"],
        format!("{billing}/pubsub")
    );
    let (status, on_topic) = support::get_json(
        &client,
        &format!("{endpoint}/v1/projects/local/topics/orders/subscriptions?pageSize=1"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        on_topic,
        json!({"subscriptions": ["projects/local/subscriptions/audit-orders"], "nextPageToken": "1"})
    );
    let (status, missing) = support::get_json(
        &client,
        &format!("{endpoint}/v1/projects/local/subscriptions/nope"),
    )
    .await;
    assert_eq!(
        (status, &missing["error"]["status"]),
        (404, &json!("NOT_FOUND"))
    );
    let (status, jobs) = support::get_json(
        &client,
        &format!("{endpoint}/v1/projects/local/locations/local/jobs"),
    )
    .await;
    assert_eq!((status, jobs), (200, json!({})));

    // A declared push subscription pushing to another path of its service.
    seed(&endpoint, conforming(&format!("{billing}/other"), vec![])).await;
    let (code, stderr) = local_check(repository.path(), &endpoint, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "CRITICAL subscription `billing-orders` on `orders` delivers push to {billing}/other (service `billing`), not to `billing`'s URL + `/pubsub`"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "fix: `gcloud pubsub subscriptions modify-push-config billing-orders --project local --push-endpoint {billing}/pubsub`"
        )),
        "{stderr}"
    );

    // ... to another service's URL.
    let audit = url_of(&urls, "audit").to_string();
    seed(&endpoint, conforming(&format!("{audit}/pubsub"), vec![])).await;
    let (code, stderr) = local_check(repository.path(), &endpoint, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("(service `audit`)"), "{stderr}");

    // A declared pull subscription that pushes, and a declared subscription missing.
    seed(
        &endpoint,
        json!({
            "topics": [topic("local", "orders")],
            "subscriptions": [push("local", "audit-orders", "orders", "https://elsewhere.example/in")]
        }),
    )
    .await;
    let (code, stderr) = local_check(repository.path(), &endpoint, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("CRITICAL subscription `audit-orders` on `orders` is declared pull but delivers push to https://elsewhere.example/in"),
        "{stderr}"
    );
    assert!(
        stderr.contains("CRITICAL declared subscription `billing-orders` on `orders` is missing: `billing` receives nothing"),
        "{stderr}"
    );

    // Pagination: one item per page, the declared subscriptions and a bypass last.
    let mut filler: Vec<Value> = (0..30)
        .map(|index| pull("local", &format!("aa-other-{index:02}"), "unrelated"))
        .collect();
    filler.push(push(
        "local",
        "zz-bypass",
        "orders",
        &format!("{audit}/sneaky"),
    ));
    let mut paged = conforming(&format!("{billing}/pubsub"), filler);
    paged["maxPageSize"] = json!(1);
    let topics: Vec<Value> = (0..5)
        .map(|index| topic("local", &format!("aa-topic-{index}")))
        .chain([topic("local", "orders")])
        .collect();
    paged["topics"] = Value::Array(topics);
    seed(&endpoint, paged).await;
    let (code, stderr) = local_check(repository.path(), &endpoint, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("CRITICAL subscription `zz-bypass` on `orders` is declared by no service"),
        "the last page was read: {stderr}"
    );
    assert!(
        !stderr.contains("is missing"),
        "the declared ones were found across pages: {stderr}"
    );

    // Pub/Sub unreachable: an ERROR, exit 1, never a pass.
    let (code, stderr) = local_check(
        repository.path(),
        &endpoint,
        &[("DEPLOYER_PUBSUB_ENDPOINT", "http://127.0.0.1:9")],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("ERROR Pub/Sub could not be read"),
        "{stderr}"
    );
    assert!(!stderr.contains("PASS"), "{stderr}");
    emulator.shutdown().await;
}
