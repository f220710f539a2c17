//! The emulator with real containers (the `FROM scratch` echo image): traffic splits measured
//! on real requests, tag URLs, monitoring and logging answers, failing revisions, restarts.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use google_cloud_gax::error::rpc::Code;
use google_cloud_run_v2::{
    client::Services,
    model::{condition::State as ConditionState, Service},
};
use serde_json::{json, Value};
use support::*;

/// Sends `count` GETs to `url` (16 at a time) and counts answers by (revision, status).
async fn send(client: &reqwest::Client, url: &str, count: usize) -> BTreeMap<(String, u16), usize> {
    let results: Vec<(String, u16)> = futures::stream::iter(0..count)
        .map(|_| async {
            let (status, body) = get_json(client, url).await;
            (
                body["revision"].as_str().unwrap_or_default().to_string(),
                status,
            )
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut counts = BTreeMap::new();
    for result in results {
        *counts.entry(result).or_default() += 1;
    }
    counts
}

/// Request counts from the Monitoring API, summed by (revision, response class).
async fn monitored_counts(
    client: &reqwest::Client,
    endpoint: &str,
    service: &str,
    since: chrono::DateTime<Utc>,
) -> BTreeMap<(String, String), u64> {
    let end = Utc::now() + chrono::Duration::seconds(60);
    let filter = format!(
        "metric.type = \"run.googleapis.com/request_count\" AND resource.labels.service_name = \"{service}\""
    );
    let response = client
        .get(format!("{endpoint}/v3/projects/test/timeSeries"))
        .query(&[
            ("filter", filter.as_str()),
            (
                "interval.startTime",
                &(since - chrono::Duration::seconds(60)).to_rfc3339_opts(SecondsFormat::Secs, true),
            ),
            (
                "interval.endTime",
                &end.to_rfc3339_opts(SecondsFormat::Secs, true),
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    let mut counts = BTreeMap::new();
    for series in body["timeSeries"].as_array().unwrap() {
        assert_eq!(series["metricKind"], "DELTA");
        assert_eq!(series["valueType"], "INT64");
        assert_eq!(series["resource"]["type"], "cloud_run_revision");
        let revision = series["resource"]["labels"]["revision_name"]
            .as_str()
            .unwrap()
            .to_string();
        let class = series["metric"]["labels"]["response_code_class"]
            .as_str()
            .unwrap()
            .to_string();
        for point in series["points"].as_array().unwrap() {
            let value: u64 = point["value"]["int64Value"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            *counts.entry((revision.clone(), class.clone())).or_default() += value;
        }
    }
    counts
}

/// `request_latencies` of `revision` from a minute before `since` to a minute from now, aligned
/// over 10 minutes, with the `aggregation` parameters given.
async fn latencies(
    client: &reqwest::Client,
    endpoint: &str,
    revision: &str,
    since: chrono::DateTime<Utc>,
    aggregation: &[(&str, &str)],
) -> Value {
    let filter = format!(
        "metric.type = \"run.googleapis.com/request_latencies\" AND resource.labels.revision_name = \"{revision}\""
    );
    let start = (since - chrono::Duration::seconds(60)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let end =
        (Utc::now() + chrono::Duration::seconds(60)).to_rfc3339_opts(SecondsFormat::Secs, true);
    client
        .get(format!("{endpoint}/v3/projects/test/timeSeries"))
        .query(&[
            ("filter", filter.as_str()),
            ("interval.startTime", &start),
            ("interval.endTime", &end),
            ("aggregation.alignmentPeriod", "600s"),
        ])
        .query(aggregation)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The answer of the Logging API's `entries:list` to `request`.
async fn log_entries(client: &reqwest::Client, endpoint: &str, request: Value) -> Value {
    client
        .post(format!("{endpoint}/v2/entries:list"))
        .json(&request)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Service `name` with its first revision (`MESSAGE=v1`) at 90% under tag `stable` and its
/// second (`MESSAGE=v2`) at 10% under tag `canary`: the service and the two revisions.
async fn ninety_ten(services: &Services, name: &str) -> (Service, String, String) {
    let first_service = create_service(
        services,
        PROJECT_PARENT,
        name,
        echo_service(&[("MESSAGE", "v1")]),
    )
    .await;
    let first = short(&first_service.latest_ready_revision);
    let service = split_to_new_revision(
        services,
        first_service,
        "v2",
        vec![
            target_revision(&first, 90, "stable"),
            target_latest(10, "canary"),
        ],
    )
    .await;
    let second = short(&service.latest_ready_revision);
    (service, first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_splits_by_percent_tags_reach_one_revision_and_metrics_count_every_request() {
    let directory = tempfile::tempdir().unwrap();
    let emulator = start_emulator(directory.path()).await;
    let (services, _) = clients(emulator.endpoint()).await;
    let http = http();
    let started = Utc::now();

    let (service, first, second) = ninety_ten(&services, "split").await;
    assert_ne!(first, second);

    // 1000 requests at 90/10: the canary share is Binomial(1000, 0.1): mean 100, sigma 9.5.
    let split = send(&http, &service.uri, 1000).await;
    let on_first = split.get(&(first.clone(), 200)).copied().unwrap_or(0);
    let on_second = split.get(&(second.clone(), 200)).copied().unwrap_or(0);
    assert_eq!(
        on_first + on_second,
        1000,
        "every request answered 200 by one of the two revisions: {split:?}"
    );
    let sigma = (1000.0f64 * 0.1 * 0.9).sqrt();
    assert!(
        (on_second as f64 - 100.0).abs() <= 4.0 * sigma,
        "canary got {on_second} of 1000 requests, outside 100 ± 4σ ({sigma:.1})"
    );

    // Tag URLs reach exactly their revision.
    let url_of = |tag: &str| tag_url(&service, tag);
    let canary = send(&http, &url_of("canary"), 50).await;
    assert_eq!(canary, BTreeMap::from([((second.clone(), 200), 50)]));
    let stable = send(&http, &url_of("stable"), 50).await;
    assert_eq!(stable, BTreeMap::from([((first.clone(), 200), 50)]));
    let by_host = http
        .get(&service.uri)
        .header("Host", "canary---split")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(by_host["revision"], second.as_str());

    // Errors by class.
    let errors = send(&http, &format!("{}/status/500", url_of("canary")), 30).await;
    assert_eq!(errors, BTreeMap::from([((second.clone(), 500), 30)]));
    let not_found = send(&http, &format!("{}/status/404", url_of("stable")), 20).await;
    assert_eq!(not_found, BTreeMap::from([((first.clone(), 404), 20)]));

    // Monitoring counts equal what was sent, by revision and class.
    let counts = monitored_counts(&http, emulator.endpoint(), "split", started).await;
    let expected = BTreeMap::from([
        ((first.clone(), "2xx".to_string()), (on_first + 50) as u64),
        ((first.clone(), "4xx".to_string()), 20),
        (
            (second.clone(), "2xx".to_string()),
            (on_second + 50 + 1) as u64,
        ),
        ((second.clone(), "5xx".to_string()), 30),
    ]);
    assert_eq!(counts, expected);

    // Aligned and reduced: one series per class, summed over revisions.
    let body = latencies(
        &http,
        emulator.endpoint(),
        &second,
        started,
        &[
            ("aggregation.perSeriesAligner", "ALIGN_DELTA"),
            ("aggregation.crossSeriesReducer", "REDUCE_SUM"),
            (
                "aggregation.groupByFields",
                "metric.labels.response_code_class",
            ),
        ],
    )
    .await;
    let total: u64 = body["timeSeries"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|series| series["points"].as_array().unwrap().iter())
        .map(|point| {
            point["value"]["distributionValue"]["count"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, (on_second + 50 + 1 + 30) as u64, "{body}");

    // Request logs and container logs.
    let entries = log_entries(&http, emulator.endpoint(), json!({
            "resourceNames": ["projects/test"],
            "filter": format!("resource.type=\"cloud_run_revision\" AND resource.labels.revision_name=\"{second}\" AND httpRequest.status>=500"),
            "pageSize": 1000,
        })).await;
    let entries = entries["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 30);
    assert_eq!(entries[0]["severity"], "ERROR");
    assert_eq!(entries[0]["httpRequest"]["status"], 500);
    let stdout = log_entries(&http, emulator.endpoint(), json!({
            "filter": format!("logName:\"stdout\" AND resource.labels.revision_name=\"{first}\" AND textPayload:\"listening\""),
        })).await;
    assert_eq!(
        stdout["entries"].as_array().map(Vec::len),
        Some(1),
        "{stdout}"
    );

    // Prometheus text.
    let metrics = http
        .get(format!("{}/metrics", emulator.endpoint()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!(
        "emulator_request_count{{project_id=\"test\",service_name=\"split\",revision_name=\"{second}\",response_code_class=\"5xx\"}} 30"
    );
    assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_or_silent_revisions_fail_and_get_no_traffic() {
    let directory = tempfile::tempdir().unwrap();
    let emulator = start_emulator(directory.path()).await;
    let (services, revisions) = clients(emulator.endpoint()).await;
    let http = http();
    let good = create_service(&services, PROJECT_PARENT, "crashy", echo_service(&[])).await;
    let good_revision = short(&good.latest_ready_revision);

    for (mode, reason) in [
        ("crash", "exited with code 3"),
        ("silent", "within the allocated timeout"),
    ] {
        let current = get_service(&services, &good.name).await;
        let mut update = with_message(current, mode);
        update.template.as_mut().unwrap().containers[0].env.push(
            google_cloud_run_v2::model::EnvVar::new()
                .set_name("MODE")
                .set_value(mode),
        );
        let operation = update_service(&services, update).await;
        assert!(
            matches!(&operation.result, Some(google_cloud_longrunning::model::operation::Result::Error(status)) if status.message.contains(reason)),
            "{mode}: {:?}",
            operation.result
        );
        let service = get_service(&services, &good.name).await;
        assert_eq!(
            short(&service.latest_ready_revision),
            good_revision,
            "{mode}"
        );
        let failed = short(&service.latest_created_revision);
        assert_ne!(failed, good_revision);
        let terminal = service.terminal_condition.clone().unwrap();
        assert_eq!(terminal.state, ConditionState::ConditionFailed, "{mode}");
        assert!(
            terminal.message.contains(reason),
            "{mode}: {}",
            terminal.message
        );
        assert!(!service.reconciling);
        let revision = revisions
            .get_revision()
            .set_name(&service.latest_created_revision)
            .send()
            .await
            .unwrap();
        let ready = revision
            .conditions
            .iter()
            .find(|condition| condition.r#type == "Ready")
            .unwrap();
        assert_eq!(ready.state, ConditionState::ConditionFailed);
        assert!(ready.message.contains(reason), "{}", ready.message);

        // All traffic still lands on the good revision.
        let answers = send(&http, &service.uri, 50).await;
        assert_eq!(
            answers,
            BTreeMap::from([((good_revision.clone(), 200), 50)]),
            "{mode}"
        );

        // And traffic cannot be moved to the failed one.
        let mut pin = service.clone();
        pin.traffic = vec![target_revision(&failed, 100, "")];
        let error = refused_update(&services, pin).await;
        assert_eq!(
            error.status().map(|status| status.code),
            Some(Code::FailedPrecondition)
        );
    }
    emulator.shutdown().await;
}

fn emulator_containers(instance: &str) -> usize {
    let output = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=deployer.emulator={instance}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_emulator_keeps_services_revisions_traffic_and_containers() {
    let directory = tempfile::tempdir().unwrap();
    let emulator = start_emulator(directory.path()).await;
    let instance = emulator.instance().to_string();
    let (services, revisions) = clients(emulator.endpoint()).await;
    let first_service = create_service(
        &services,
        PROJECT_PARENT,
        "durable",
        echo_service(&[("MESSAGE", "v1")]),
    )
    .await;
    let first = short(&first_service.latest_ready_revision);
    let before = split_to_new_revision(
        &services,
        first_service,
        "v2",
        vec![target_revision(&first, 50, "old"), target_latest(50, "")],
    )
    .await;
    let revisions_before = revisions
        .list_revisions()
        .set_parent(&before.name)
        .send()
        .await
        .unwrap();
    assert_eq!(emulator_containers(&instance), 2);
    let running = deployer::emulator::RunningEmulator::read(emulator.data_dir())
        .expect("emulator.json while running");
    assert_eq!(running.endpoint, emulator.endpoint());
    assert_eq!(running.pid, std::process::id());

    emulator.shutdown().await;
    assert_eq!(
        emulator_containers(&instance),
        0,
        "a clean shutdown removes the containers"
    );
    assert!(deployer::emulator::RunningEmulator::read(directory.path()).is_none());

    let emulator = start_emulator(directory.path()).await;
    assert_eq!(emulator_containers(&instance), 2, "containers are back");
    let (services, revisions) = clients(emulator.endpoint()).await;
    let after = get_service(&services, &before.name).await;
    assert_eq!(after.traffic, before.traffic);
    assert_eq!(after.traffic_statuses, before.traffic_statuses);
    assert_eq!(after.latest_ready_revision, before.latest_ready_revision);
    assert_eq!(after.generation, before.generation);
    assert_eq!(after.uri, before.uri, "the router port is kept when free");
    assert_eq!(
        after.etag, before.etag,
        "nothing changed, so neither did the etag"
    );
    let revisions_after = revisions
        .list_revisions()
        .set_parent(&after.name)
        .send()
        .await
        .unwrap();
    assert_eq!(
        revisions_after.revisions.len(),
        revisions_before.revisions.len()
    );

    let http = http();
    let answers = send(&http, &after.uri, 200).await;
    let second = short(&after.latest_ready_revision);
    let on_first = answers.get(&(first.clone(), 200)).copied().unwrap_or(0);
    let on_second = answers.get(&(second, 200)).copied().unwrap_or(0);
    assert_eq!(on_first + on_second, 200, "{answers:?}");
    // Binomial(200, 0.5): sigma ≈ 7.1; 4 sigma ≈ 28.
    assert!((on_first as i64 - 100).abs() <= 28, "{answers:?}");
    let old = after
        .traffic_statuses
        .iter()
        .find(|status| status.tag == "old")
        .unwrap();
    let tagged = send(&http, &old.uri, 10).await;
    assert_eq!(tagged, BTreeMap::from([((first, 200), 10)]));
    emulator.shutdown().await;
}

fn docker(arguments: &[&str]) {
    let status = std::process::Command::new("docker")
        .args(arguments)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "docker {arguments:?} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_missing_locally_are_pulled_from_a_local_registry() {
    let registry = std::env::var("DEPLOYER_TEST_REGISTRY").expect(
        "DEPLOYER_TEST_REGISTRY is not set: run the tests through tests/run.sh \
         (tests/env/10-registry.sh starts a local registry and exports it)",
    );
    // A tag of its own, so no other test has it in the engine; removed locally after the push
    // so that only the registry holds it.
    let image = format!("{registry}/emulator-test/echo:pull-{}", std::process::id());
    docker(&["tag", echo_image(), &image]);
    docker(&["push", &image]);
    docker(&["rmi", &image]);

    let directory = tempfile::tempdir().unwrap();
    let emulator = start_emulator(directory.path()).await;
    let (services, _) = clients(emulator.endpoint()).await;
    let mut request = echo_service(&[]);
    request.template.as_mut().unwrap().containers[0].image = image.clone();
    let operation = services
        .create_service()
        .set_parent(PROJECT_PARENT)
        .set_service_id("pulled")
        .set_service(request)
        .send()
        .await
        .unwrap();
    let operation = wait_operation(&services, operation).await;
    assert!(
        matches!(
            operation.result,
            Some(google_cloud_longrunning::model::operation::Result::Response(_))
        ),
        "{:?}",
        operation.result
    );
    let service = get_service(&services, &format!("{PROJECT_PARENT}/services/pulled")).await;
    let answers = send(&http(), &service.uri, 5).await;
    assert_eq!(answers.values().sum::<usize>(), 5);

    // An image that exists nowhere fails the revision with a clear reason.
    let mut missing = echo_service(&[]);
    missing.template.as_mut().unwrap().containers[0].image =
        format!("{registry}/emulator-test/absent:none");
    let operation = services
        .create_service()
        .set_parent(PROJECT_PARENT)
        .set_service_id("absent")
        .set_service(missing)
        .send()
        .await
        .unwrap();
    let operation = wait_operation(&services, operation).await;
    assert!(
        matches!(&operation.result, Some(google_cloud_longrunning::model::operation::Result::Error(status)) if status.message.contains("could not be pulled")),
        "{:?}",
        operation.result
    );
    emulator.shutdown().await;
    docker(&["rmi", &image]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_crashes_after_start_is_restarted() {
    let directory = tempfile::tempdir().unwrap();
    let emulator = start_emulator(directory.path()).await;
    let (services, _) = clients(emulator.endpoint()).await;
    let service = create_service(&services, PROJECT_PARENT, "phoenix", echo_service(&[])).await;
    let revision = short(&service.latest_ready_revision);
    let http = http();
    // The crash request gets no answer from the container: the router says so with a 502.
    let (status, _) = get_json(&http, &format!("{}/crash", service.uri)).await;
    assert_eq!(status, 502);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, body) = get_json(&http, &service.uri).await;
        if status == 200 {
            assert_eq!(body["revision"], revision.as_str());
            break;
        }
        // 502 until the exit is noticed, then 503 until the new container is Ready.
        assert!(matches!(status, 502 | 503), "while restarting: {status}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "not restarted within 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let after = get_service(&services, &service.name).await;
    assert_eq!(
        after.etag, service.etag,
        "a restart changes nothing in the resource"
    );
    assert_eq!(emulator_containers(emulator.instance()), 1);
    let logs = log_entries(&http, emulator.endpoint(), json!({"filter": format!("resource.labels.revision_name=\"{revision}\" AND textPayload:\"Container restarted\"")})).await;
    assert_eq!(logs["entries"].as_array().map(Vec::len), Some(1), "{logs}");
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_emulator_still_removes_its_containers() {
    let directory = tempfile::tempdir().unwrap();
    let emulator = start_emulator(directory.path()).await;
    let instance = emulator.instance().to_string();
    let (services, _) = clients(emulator.endpoint()).await;
    create_service(&services, PROJECT_PARENT, "orphan", echo_service(&[])).await;
    assert_eq!(emulator_containers(&instance), 1);
    // As when a test panics: no `shutdown()`.
    drop(emulator);
    assert_eq!(emulator_containers(&instance), 0);
    assert!(deployer::emulator::RunningEmulator::read(directory.path()).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_faults_make_a_bad_canary_out_of_any_image() {
    let directory = tempfile::tempdir().unwrap();
    let emulator = start_emulator(directory.path()).await;
    let (services, _) = clients(emulator.endpoint()).await;
    let http = http();
    let started = Utc::now();
    let (service, stable, canary) = ninety_ten(&services, "canaried").await;
    let url_of = |tag: &str| tag_url(&service, tag);
    let response = http
        .put(format!("{}/emulator/v1/faults", emulator.endpoint()))
        .json(&json!({
            "requestErrorRate": {(canary.clone()): 0.5},
            "requestLatencyMs": {(stable.clone()): 30},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    // Binomial(400, 0.5): sigma 10.
    let answers = send(&http, &url_of("canary"), 400).await;
    let failed = answers.get(&(String::new(), 500)).copied().unwrap_or(0);
    let served = answers.get(&(canary.clone(), 200)).copied().unwrap_or(0);
    assert_eq!(failed + served, 400, "{answers:?}");
    assert!(
        (failed as i64 - 200).abs() <= 40,
        "{failed} of 400 failed, outside 200 ± 4σ"
    );
    let slow = send(&http, &url_of("stable"), 10).await;
    assert_eq!(slow, BTreeMap::from([((stable.clone(), 200), 10)]));

    let counts = monitored_counts(&http, emulator.endpoint(), "canaried", started).await;
    assert_eq!(
        counts.get(&(canary.clone(), "5xx".to_string())),
        Some(&(failed as u64))
    );
    assert_eq!(
        counts.get(&(canary.clone(), "2xx".to_string())),
        Some(&(served as u64))
    );
    let mean = latencies(
        &http,
        emulator.endpoint(),
        &stable,
        started,
        &[("aggregation.perSeriesAligner", "ALIGN_MEAN")],
    )
    .await;
    let mean_ms = mean["timeSeries"][0]["points"][0]["value"]["doubleValue"]
        .as_f64()
        .unwrap();
    assert!(
        mean_ms >= 30.0,
        "injected latency shows in request_latencies: {mean}"
    );
    emulator.shutdown().await;
}
