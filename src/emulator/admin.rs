//! The emulator's API port: the Cloud Run Admin API v2 (`/v2/...`), Cloud Monitoring v3
//! `timeSeries.list` (`/v3/projects/P/timeSeries`), Cloud Logging v2 `entries.list`
//! (`POST /v2/entries:list`), Prometheus text (`/metrics`) and the emulator's own endpoints
//! (`/emulator/v1/status`, `/emulator/v1/faults`, `/emulator/v1/shutdown`), the Pub/Sub and
//! Cloud Scheduler read surface (`/v1/...`, seeded through `/emulator/v1/wiring`: [`super::wiring`]),
//! and Service Usage, IAM and Secret Manager as `deployer doctor` reads them (`/v1/...`, set
//! through `/emulator/v1/project`: [`super::project`]).
//!
//! Requests are decoded the way Google's REST front end does for its official clients: JSON
//! bodies with camelCase fields, enums as integers or names, query parameters that may be
//! present but empty (`pageToken=`, `etag=`) meaning "unset", and `$alt=json;enum-encoding=int`.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, RawQuery, Request, State},
    http::{header, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{any, get, post},
    Json, Router,
};
use google_cloud_run_v2::model::Service;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{
    api_error::{ApiError, Code},
    control::Controller,
    faults::{FaultConfig, Faults},
    logging::Logging,
    monitoring::Monitoring,
    project::{Project, ProjectConfig},
};

/// Everything the API handlers need.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The control plane.
    pub controller: Arc<Controller>,
    /// Metrics.
    pub monitoring: Arc<Monitoring>,
    /// Logs.
    pub logging: Arc<Logging>,
    /// Faults.
    pub faults: Arc<Faults>,
    /// Enabled APIs and secrets.
    pub project: Arc<Project>,
    /// Cancelled to shut the emulator down.
    pub shutdown: CancellationToken,
    /// What `/emulator/v1/status` reports.
    pub status: Value,
}

/// The API router.
pub fn router(state: ApiState) -> Router {
    let google = Router::new()
        .route("/v2/{*path}", any(cloud_run))
        .route("/v3/projects/{project}/timeSeries", get(time_series))
        .route("/v1/{*path}", any(google_v1))
        .layer(middleware::from_fn_with_state(state.clone(), inject_faults));
    Router::new()
        .merge(google)
        .route("/metrics", get(metrics))
        .route("/emulator/v1/status", get(status))
        .route("/emulator/v1/shutdown", post(shutdown))
        .route(
            "/emulator/v1/faults",
            get(get_faults).put(put_faults).delete(delete_faults),
        )
        .route("/emulator/v1/wiring", get(get_wiring).put(put_wiring))
        .route("/emulator/v1/project", get(get_project).put(put_project))
        .with_state(state)
}

/// Refuses calls to disabled APIs, and applies injected latency and errors to Google API calls.
async fn inject_faults(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if let Some(refusal) = state.project.refuse_disabled(request.uri().path()) {
        return refusal;
    }
    let injection = state.faults.decide(
        request.method().as_str(),
        request.uri().path(),
        rand::random::<f64>(),
    );
    if !injection.delay.is_zero() {
        tokio::time::sleep(injection.delay).await;
    }
    match injection.error {
        Some(error) => error.into_response(),
        None => next.run(request).await,
    }
}

/// Query parameters as pairs, with empty values dropped (Google's clients send every
/// parameter, empty when unset).
fn parameters(raw: Option<String>) -> Vec<(String, String)> {
    raw.map(|raw| {
        url::form_urlencoded::parse(raw.as_bytes())
            .into_owned()
            .filter(|(_, value)| !value.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

fn parameter<'a>(parameters: &'a [(String, String)], name: &str) -> Option<&'a str> {
    parameters
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn flag(parameters: &[(String, String)], name: &str) -> Result<bool, ApiError> {
    match parameter(parameters, name) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::invalid(format!(
            "query parameter {name} is `{other}`: use true or false"
        ))),
    }
}

fn number(parameters: &[(String, String)], name: &str) -> Result<usize, ApiError> {
    match parameter(parameters, name) {
        None => Ok(0),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "query parameter {name} is `{text}`: use a non-negative number"
                ))
            }),
    }
}

fn service_body(body: &Bytes) -> Result<Service, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "the request has no body: a Service is required",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|error| ApiError::invalid(format!("Invalid JSON payload received. {error}")))
}

fn answer(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(error) => {
            tracing::debug!("API error: {error}");
            error.into_response()
        }
    }
}

/// `/v2/...`: the Cloud Run Admin API (and Logging's `entries:list`, which shares the prefix).
async fn cloud_run(
    State(state): State<ApiState>,
    method: Method,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let parameters = parameters(query);
    answer(dispatch(&state, &method, &path, &parameters, &body))
}

fn dispatch(
    state: &ApiState,
    method: &Method,
    path: &str,
    parameters: &[(String, String)],
    body: &Bytes,
) -> Result<Value, ApiError> {
    if path == "entries:list" {
        return if method == Method::POST {
            state.logging.list(body)
        } else {
            Err(ApiError::new(
                Code::Unimplemented,
                "entries:list takes POST",
            ))
        };
    }
    let controller = &state.controller;
    let segments: Vec<&str> = path.split('/').collect();
    let page_size = || number(parameters, "pageSize");
    let page_token = || {
        parameter(parameters, "pageToken")
            .unwrap_or_default()
            .to_string()
    };
    let validate_only = || flag(parameters, "validateOnly");
    let etag = || {
        parameter(parameters, "etag")
            .unwrap_or_default()
            .to_string()
    };
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["projects", _, "locations", _, "services"]) => controller.list_services(
            path.trim_end_matches("/services"),
            page_size()?,
            &page_token(),
        ),
        (Method::POST, ["projects", _, "locations", _, "services"]) => controller.create_service(
            path.trim_end_matches("/services"),
            parameter(parameters, "serviceId").unwrap_or_default(),
            service_body(body)?,
            validate_only()?,
        ),
        (Method::GET, ["projects", _, "locations", _, "services", _]) => {
            controller.get_service(path)
        }
        (Method::PATCH, ["projects", _, "locations", _, "services", _]) => {
            let mut service = service_body(body)?;
            if !service.name.is_empty() && service.name != path {
                return Err(ApiError::invalid(format!(
                    "service.name `{}` does not match the URL `{path}`",
                    service.name
                )));
            }
            service.name = path.to_string();
            controller.update_service(
                path,
                service,
                parameter(parameters, "updateMask"),
                flag(parameters, "allowMissing")?,
                validate_only()?,
            )
        }
        (Method::DELETE, ["projects", _, "locations", _, "services", _]) => {
            controller.delete_service(path, &etag(), validate_only()?)
        }
        (Method::POST, ["projects", _, "locations", _, "services", name])
            if name.ends_with(":testIamPermissions") =>
        {
            super::project::test_iam_permissions(&state.faults.get().denied_permissions, body)
        }
        (Method::GET, ["projects", _, "locations", _, "services", _, "revisions"]) => controller
            .list_revisions(
                path.trim_end_matches("/revisions"),
                page_size()?,
                &page_token(),
            ),
        (Method::GET, ["projects", _, "locations", _, "services", _, "revisions", _]) => {
            controller.get_revision(path)
        }
        (Method::DELETE, ["projects", _, "locations", _, "services", _, "revisions", _]) => {
            controller.delete_revision(path, &etag(), validate_only()?)
        }
        (Method::GET, ["projects", _, "locations", _, "operations"]) => controller.list_operations(
            path.trim_end_matches("/operations"),
            page_size()?,
            &page_token(),
        ),
        (Method::GET, ["projects", _, "locations", _, "operations", _]) => {
            controller.operation(path)
        }
        (Method::POST, ["projects", _, "locations", _, "operations", operation])
            if operation.ends_with(":wait") =>
        {
            controller.operation(path.trim_end_matches(":wait"))
        }
        (Method::DELETE, ["projects", _, "locations", _, "operations", _]) => {
            controller.delete_operation(path)
        }
        _ => Err(ApiError::new(
            Code::Unimplemented,
            format!("{method} /v2/{path} is not implemented by the emulator"),
        )),
    }
}

/// `/v1/...`: Service Usage, IAM and Secret Manager ([`super::project`]), else Pub/Sub's admin
/// read surface and Cloud Scheduler's `jobs.list` ([`super::wiring`], `GET` only).
async fn google_v1(
    State(state): State<ApiState>,
    method: Method,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let denied = state.faults.get().denied_permissions;
    if let Some(answered) = state.project.dispatch(&method, &path, &body, &denied) {
        return answer(answered);
    }
    if method != Method::GET {
        return answer(Err(ApiError::new(
            Code::Unimplemented,
            format!("{method} /v1/{path} is not implemented by the emulator"),
        )));
    }
    answer(super::wiring::dispatch(
        &state.controller.store,
        &path,
        &parameters(query),
    ))
}

async fn get_project(State(state): State<ApiState>) -> Response {
    Json(state.project.get()).into_response()
}

async fn put_project(State(state): State<ApiState>, body: Bytes) -> Response {
    let config: ProjectConfig = match serde_json::from_slice(&body) {
        Ok(config) => config,
        Err(error) => {
            return ApiError::invalid(format!("invalid project configuration: {error}"))
                .into_response()
        }
    };
    match state.project.set(config) {
        Ok(()) => Json(state.project.get()).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn get_wiring(State(state): State<ApiState>) -> Response {
    answer(super::wiring::current(&state.controller.store))
}

async fn put_wiring(State(state): State<ApiState>, body: Bytes) -> Response {
    answer(super::wiring::seed(&state.controller.store, &body))
}

/// `GET /v3/projects/{project}/timeSeries`.
async fn time_series(
    State(state): State<ApiState>,
    Path(project): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    answer(
        state
            .monitoring
            .list_time_series(&project, &parameters(query)),
    )
}

async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.monitoring.prometheus(),
    )
        .into_response()
}

async fn status(State(state): State<ApiState>) -> Response {
    let services = state
        .controller
        .store
        .read(|snapshot| snapshot.services.len());
    let mut body = state.status.clone();
    body["services"] = json!(services);
    Json(body).into_response()
}

async fn shutdown(State(state): State<ApiState>) -> Response {
    state.shutdown.cancel();
    (StatusCode::ACCEPTED, Json(json!({"shuttingDown": true}))).into_response()
}

async fn get_faults(State(state): State<ApiState>) -> Response {
    Json(state.faults.get()).into_response()
}

async fn put_faults(State(state): State<ApiState>, body: Bytes) -> Response {
    let config: FaultConfig = match serde_json::from_slice(&body) {
        Ok(config) => config,
        Err(error) => {
            return ApiError::invalid(format!("invalid fault configuration: {error}"))
                .into_response()
        }
    };
    match state.faults.set(config) {
        Ok(()) => Json(state.faults.get()).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn delete_faults(State(state): State<ApiState>) -> Response {
    match state.faults.set(FaultConfig::default()) {
        Ok(()) => Json(state.faults.get()).into_response(),
        Err(error) => error.into_response(),
    }
}
