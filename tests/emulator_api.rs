//! The emulator's Cloud Run Admin API driven by Google's official `google-cloud-run-v2` client
//! (and by raw HTTP for malformed requests), with real containers from the echo image.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use google_cloud_gax::error::rpc::Code;
use google_cloud_lro::Poller;
use google_cloud_run_v2::model::{condition::State as ConditionState, TrafficTargetAllocationType};
use serde_json::json;
use support::*;

fn code_of(error: &google_cloud_gax::error::Error) -> Option<Code> {
    error.status().map(|status| status.code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_client_creates_updates_splits_and_refuses_stale_etags() {
    let directory = tempfile::tempdir().unwrap();
    let emulator = start_emulator(directory.path()).await;
    let (services, revisions) = clients(emulator.endpoint()).await;

    // Create, waiting with the client's own poller (bounded: it has no deadline of its own).
    let mut request = echo_service(&[("MESSAGE", "v1")]);
    request.labels.insert("team".into(), "ml-platform".into());
    request
        .annotations
        .insert("deployer.dev/owner".into(), "tests \"quoted\" 🚀".into());
    let created = tokio::time::timeout(
        Duration::from_secs(60),
        services
            .create_service()
            .set_parent(PROJECT_PARENT)
            .set_service_id("api-demo")
            .set_service(request)
            .poller()
            .until_done(),
    )
    .await
    .expect("create finished within 60 s")
    .expect("create succeeded");
    let service_name = format!("{PROJECT_PARENT}/services/api-demo");
    assert_eq!(created.name, service_name);
    assert_eq!(created.labels["team"], "ml-platform");
    assert_eq!(
        created.annotations["deployer.dev/owner"],
        "tests \"quoted\" 🚀"
    );
    let first = short(&created.latest_ready_revision);
    assert!(
        first.starts_with("api-demo-00001-") && first.len() == "api-demo-00001-abc".len(),
        "{first}"
    );
    assert_eq!(
        created.latest_created_revision,
        created.latest_ready_revision
    );
    assert_eq!(created.generation, 1);
    assert_eq!(created.observed_generation, 1);
    assert!(!created.reconciling);
    assert!(!created.etag.is_empty());
    assert!(
        created.uri.starts_with("http://127.0.0.1:"),
        "{}",
        created.uri
    );
    assert_eq!(
        created
            .terminal_condition
            .as_ref()
            .map(|condition| condition.state.clone()),
        Some(ConditionState::ConditionSucceeded)
    );
    assert_eq!(created.traffic_statuses.len(), 1);
    assert_eq!(
        created.traffic_statuses[0].r#type,
        TrafficTargetAllocationType::Latest
    );
    assert_eq!(created.traffic_statuses[0].percent, 100);

    // Update: a new template, 90% on the first revision, 10% + tag `canary` on the latest.
    let current = get_service(&services, &service_name).await;
    let mut update = with_message(current.clone(), "v2");
    update.traffic = vec![target_revision(&first, 90, ""), target_latest(10, "canary")];
    let operation = services
        .update_service()
        .set_service(update)
        .send()
        .await
        .unwrap();
    assert!(
        operation
            .name
            .starts_with("projects/test/locations/local/operations/"),
        "{}",
        operation.name
    );
    let operation = wait_operation(&services, operation).await;
    assert!(operation.result.is_some(), "done operations carry a result");
    let updated = get_service(&services, &service_name).await;
    let second = short(&updated.latest_ready_revision);
    assert!(second.starts_with("api-demo-00002-"), "{second}");
    assert_eq!(
        updated.latest_created_revision,
        updated.latest_ready_revision
    );
    assert_eq!(updated.generation, 2);
    assert_eq!(updated.observed_generation, 2);
    assert_ne!(updated.etag, current.etag);
    assert_eq!(
        updated.labels, current.labels,
        "labels are preserved exactly"
    );
    assert_eq!(
        updated.annotations, current.annotations,
        "annotations are preserved exactly"
    );
    let statuses: Vec<(String, i32, String, bool)> = updated
        .traffic_statuses
        .iter()
        .map(|status| {
            (
                status.revision.clone(),
                status.percent,
                status.tag.clone(),
                !status.uri.is_empty(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            (first.clone(), 90, String::new(), false),
            (String::new(), 10, "canary".into(), true)
        ]
    );

    // Revisions: newest first, each with a Ready condition.
    let listed = revisions
        .list_revisions()
        .set_parent(&service_name)
        .send()
        .await
        .unwrap();
    let names: Vec<String> = listed
        .revisions
        .iter()
        .map(|revision| short(&revision.name))
        .collect();
    assert_eq!(names, vec![second.clone(), first.clone()]);
    let revision = revisions
        .get_revision()
        .set_name(format!("{service_name}/revisions/{first}"))
        .send()
        .await
        .unwrap();
    let ready = revision
        .conditions
        .iter()
        .find(|condition| condition.r#type == "Ready")
        .unwrap();
    assert_eq!(ready.state, ConditionState::ConditionSucceeded);
    assert_eq!(revision.containers[0].image, echo_image());

    // A writer holding the old etag is refused: concurrent changes are detected.
    let mut stale = with_message(current, "v3");
    stale.traffic.clear();
    let error = refused_update(&services, stale).await;
    assert_eq!(code_of(&error), Some(Code::Aborted), "{error}");
    let unchanged = get_service(&services, &service_name).await;
    assert_eq!(unchanged.etag, updated.etag);

    // NOT_FOUND for unknown services, revisions and operations.
    let unknown = [
        services
            .get_service()
            .set_name(format!("{PROJECT_PARENT}/services/nope"))
            .send()
            .await
            .map(drop),
        revisions
            .get_revision()
            .set_name(format!("{service_name}/revisions/api-demo-00009-zzz"))
            .send()
            .await
            .map(drop),
        services
            .get_operation()
            .set_name("projects/test/locations/local/operations/unknown")
            .send()
            .await
            .map(drop),
    ];
    for answer in unknown {
        let error = answer.unwrap_err();
        assert_eq!(code_of(&error), Some(Code::NotFound), "{error}");
    }

    // A revision that serves traffic cannot be deleted; the service can.
    let error = revisions
        .delete_revision()
        .set_name(format!("{service_name}/revisions/{first}"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_of(&error), Some(Code::FailedPrecondition), "{error}");
    let deleted = services
        .delete_service()
        .set_name(&service_name)
        .send()
        .await
        .unwrap();
    assert!(deleted.done);
    let error = services
        .get_service()
        .set_name(&service_name)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_of(&error), Some(Code::NotFound));
    emulator.shutdown().await;
}

// A single-threaded caller: the emulator runs on its own runtime, so this works as well.
#[tokio::test]
async fn list_services_pages_through_every_service() {
    let directory = tempfile::tempdir().unwrap();
    let emulator = start_emulator(directory.path()).await;
    let (services, _) = clients(emulator.endpoint()).await;
    let mut operations = Vec::new();
    for index in 0..5 {
        let operation = services
            .create_service()
            .set_parent(PROJECT_PARENT)
            .set_service_id(format!("paged-{index}"))
            .set_service(echo_service(&[]))
            .send()
            .await
            .unwrap();
        operations.push(operation);
    }
    for operation in operations {
        wait_operation(&services, operation).await;
    }
    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = services
            .list_services()
            .set_parent(PROJECT_PARENT)
            .set_page_size(2)
            .set_page_token(&token)
            .send()
            .await
            .unwrap();
        pages += 1;
        assert!(page.services.len() <= 2);
        names.extend(page.services.iter().map(|service| short(&service.name)));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(
        names,
        (0..5)
            .map(|index| format!("paged-{index}"))
            .collect::<Vec<_>>()
    );
    // Another location holds none of them.
    let other = services
        .list_services()
        .set_parent("projects/test/locations/elsewhere")
        .send()
        .await
        .unwrap();
    assert!(other.services.is_empty());
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_google_shaped_errors() {
    let directory = tempfile::tempdir().unwrap();
    let emulator = start_emulator(directory.path()).await;
    let (services, _) = clients(emulator.endpoint()).await;
    let http = http();
    let base = format!("{}/v2/{PROJECT_PARENT}/services", emulator.endpoint());

    let response = http
        .post(format!("{base}?serviceId=broken"))
        .body("{\"template\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(body["error"]["code"], 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Invalid JSON payload"));

    let (status, body) = get_json(&http, &format!("{base}/unknown")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["status"], "NOT_FOUND");

    let response = http
        .post(format!("{base}?serviceId=Bad_Name"))
        .json(&json!({"template": {"containers": [{"image": echo_image()}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    // A service to refuse bad traffic on.
    let current = create_service(&services, PROJECT_PARENT, "strict", echo_service(&[])).await;
    let name = current.name.clone();
    let first = short(&current.latest_ready_revision);

    let mut ninety = current.clone();
    ninety.traffic = vec![target_revision(&first, 90, "")];
    let error = refused_update(&services, ninety).await;
    assert_eq!(
        error.status().map(|status| status.code),
        Some(Code::InvalidArgument)
    );
    assert!(
        error.status().unwrap().message.contains("sum to 90"),
        "{error}"
    );

    let response = http
        .patch(format!("{base}/strict?updateMask=traffic"))
        .json(&json!({"traffic": [{"type": 2, "revision": "strict-00042-nop", "percent": 100}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{body}"
    );

    let mut duplicate_tags = current.clone();
    duplicate_tags.traffic = vec![
        target_revision(&first, 50, "same"),
        target_latest(50, "same"),
    ];
    let error = refused_update(&services, duplicate_tags).await;
    assert_eq!(
        error.status().map(|status| status.code),
        Some(Code::InvalidArgument)
    );

    let error = services
        .create_service()
        .set_parent(PROJECT_PARENT)
        .set_service_id("strict")
        .set_service(echo_service(&[]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error.status().map(|status| status.code),
        Some(Code::AlreadyExists)
    );

    // Nothing was changed by the refused calls.
    let after = get_service(&services, &name).await;
    assert_eq!(after.etag, current.etag);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_fail_calls_and_revision_starts() {
    let directory = tempfile::tempdir().unwrap();
    let emulator = start_emulator(directory.path()).await;
    let (services, _) = clients(emulator.endpoint()).await;
    let http = http();
    let name = create_service(&services, PROJECT_PARENT, "faulty", echo_service(&[]))
        .await
        .name;
    let faults_url = format!("{}/emulator/v1/faults", emulator.endpoint());

    // Every call answered 429 RESOURCE_EXHAUSTED (the client does not retry it).
    let response = http
        .put(&faults_url)
        .json(&json!({"errorRate": 1.0, "errorStatus": 429}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let error = services
        .get_service()
        .set_name(&name)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        error.status().map(|status| status.code),
        Some(Code::ResourceExhausted),
        "{error}"
    );

    // 503 UNAVAILABLE, only for PATCH.
    http.put(&faults_url)
        .json(&json!({"errorRate": 1.0, "errorStatus": 503, "method": "PATCH"}))
        .send()
        .await
        .unwrap();
    let current = get_service(&services, &name).await;
    let response = http
        .patch(format!("{}/v2/{name}", emulator.endpoint()))
        .json(&json!({"traffic": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAVAILABLE");

    // Bad fault configurations are refused.
    let response = http
        .put(&faults_url)
        .json(&json!({"errorRate": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    // A revision whose start fails: the operation fails, the service keeps its revision.
    http.put(&faults_url)
        .json(&json!({"failRevisionStart": ["faulty"]}))
        .send()
        .await
        .unwrap();
    let operation = update_service(&services, with_message(current.clone(), "doomed")).await;
    match &operation.result {
        Some(google_cloud_longrunning::model::operation::Result::Error(status)) => {
            assert!(status.message.contains("injected fault"), "{status:?}")
        }
        other => panic!("expected an operation error, got {other:?}"),
    }
    let after = get_service(&services, &name).await;
    assert_eq!(after.latest_ready_revision, current.latest_ready_revision);
    assert_ne!(after.latest_created_revision, after.latest_ready_revision);
    let terminal = after.terminal_condition.unwrap();
    assert_eq!(terminal.state, ConditionState::ConditionFailed);
    assert!(
        terminal.message.contains("injected fault"),
        "{}",
        terminal.message
    );

    let response = http.delete(&faults_url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    get_service(&services, &name).await;
    emulator.shutdown().await;
}
