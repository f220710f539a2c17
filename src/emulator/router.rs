//! The data plane: one HTTP reverse proxy per service on `127.0.0.1:PORT` (the service `uri`),
//! splitting requests across revisions by the traffic percentages, and one more per traffic tag
//! (the tag URL in `trafficStatuses`) that reaches only the tagged revision.
//!
//! Why a port per tag: Cloud Run's tag URLs are host names (`https://TAG---SERVICE-HASH.a.run.app`)
//! that need DNS; a port per tag gives a URL any HTTP client can use as is. The service port
//! also honours a `Host: TAG---SERVICE` header (any suffix) for clients that prefer Cloud Run's
//! naming. Every proxied request is counted for monitoring and logged as a request entry;
//! injected request faults (errors, latency) are applied here, before forwarding.
//! Ports are kept in the state, so URLs stay the same across emulator restarts when the port is
//! still free.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex, RwLock},
    time::Instant,
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{header, HeaderValue, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tokio_util::sync::CancellationToken;

use super::{
    api_error::ApiError,
    faults::Faults,
    logging::{LogSource, Logging, RequestLog},
    monitoring::{Monitoring, SeriesKey},
    resources::{RouteTable, ServiceName},
    runtime::Runtime,
};

/// Headers that concern one connection and are not forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

#[derive(Debug)]
struct Listener {
    port: u16,
    stop: CancellationToken,
}

/// All routers of one emulator.
pub struct Routers {
    listeners: Mutex<HashMap<(String, Option<String>), Listener>>,
    tables: RwLock<HashMap<String, Arc<RouteTable>>>,
    runtime: Arc<Runtime>,
    monitoring: Arc<Monitoring>,
    logging: Arc<Logging>,
    faults: Arc<Faults>,
    client: Client<HttpConnector, Body>,
}

impl std::fmt::Debug for Routers {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Routers").finish_non_exhaustive()
    }
}

struct ListenerContext {
    routers: Arc<Routers>,
    service_full: String,
    source: ServiceName,
    tag: Option<String>,
}

impl Routers {
    /// Routers that forward to the runtime's containers and record into monitoring and logging.
    pub fn new(
        runtime: Arc<Runtime>,
        monitoring: Arc<Monitoring>,
        logging: Arc<Logging>,
        faults: Arc<Faults>,
    ) -> Self {
        Self {
            listeners: Mutex::new(HashMap::new()),
            tables: RwLock::new(HashMap::new()),
            runtime,
            monitoring,
            logging,
            faults,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// The port of a service's router (or of one of its tags), starting it when needed: on
    /// `preferred` when that port is free, else on a port the system picks.
    pub fn ensure_port(
        self: &Arc<Self>,
        service_full: &str,
        tag: Option<&str>,
        preferred: u16,
    ) -> Result<u16, ApiError> {
        let key = (service_full.to_string(), tag.map(str::to_string));
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(listener) = listeners.get(&key) {
            return Ok(listener.port);
        }
        let bind = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port));
        let listener = match preferred {
            0 => bind(0),
            port => bind(port).or_else(|_| bind(0)),
        }
        .map_err(|error| ApiError::internal(format!("cannot open a router port: {error}")))?;
        listener.set_nonblocking(true).map_err(|error| {
            ApiError::internal(format!("cannot configure a router port: {error}"))
        })?;
        let port = listener
            .local_addr()
            .map_err(|error| ApiError::internal(format!("cannot read a router port: {error}")))?
            .port();
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|error| ApiError::internal(format!("cannot serve a router port: {error}")))?;
        let source = ServiceName::parse(service_full)
            .ok_or_else(|| ApiError::internal(format!("bad service name `{service_full}`")))?;
        let context = Arc::new(ListenerContext {
            routers: Arc::clone(self),
            service_full: service_full.to_string(),
            source,
            tag: tag.map(str::to_string),
        });
        let stop = CancellationToken::new();
        let app = axum::Router::new()
            .fallback(proxy)
            .with_state(context)
            .into_make_service_with_connect_info::<SocketAddr>();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::warn!("router on port {port} stopped: {error}");
            }
        });
        listeners.insert(key, Listener { port, stop });
        Ok(port)
    }

    /// Replaces a service's routing, and closes the routers of tags it no longer has.
    pub fn set_routes(&self, service_full: &str, table: RouteTable) {
        let tags: BTreeSet<String> = table.tags.keys().cloned().collect();
        self.tables
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(service_full.to_string(), Arc::new(table));
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        listeners.retain(|(service, tag), listener| {
            let keep = service != service_full || tag.as_ref().is_none_or(|tag| tags.contains(tag));
            if !keep {
                listener.stop.cancel();
            }
            keep
        });
    }

    /// Closes every router of a service.
    pub fn remove_service(&self, service_full: &str) {
        self.tables
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(service_full);
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        listeners.retain(|(service, _), listener| {
            let keep = service != service_full;
            if !keep {
                listener.stop.cancel();
            }
            keep
        });
    }

    /// Closes every router.
    pub fn close_all(&self) {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        for listener in listeners.values() {
            listener.stop.cancel();
        }
        listeners.clear();
    }

    fn table(&self, service_full: &str) -> Arc<RouteTable> {
        self.tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(service_full)
            .cloned()
            .unwrap_or_default()
    }
}

/// The tag named by a `Host: TAG---SERVICE...` header, if any.
fn host_tag(request: &Request) -> Option<String> {
    let host = request.headers().get(header::HOST)?.to_str().ok()?;
    let (tag, _) = host.split_once("---")?;
    (!tag.is_empty()).then(|| tag.to_string())
}

fn plain(status: StatusCode, text: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn proxy(
    State(context): State<Arc<ListenerContext>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let at = Utc::now();
    let routers = &context.routers;
    let table = routers.table(&context.service_full);
    let tag = context.tag.clone().or_else(|| host_tag(&request));
    let revision = match &tag {
        Some(tag) => table.tags.get(tag).cloned(),
        None => table.pick(rand::random_range(0..100)).map(str::to_string),
    };
    let Some(revision) = revision else {
        let what = match &tag {
            Some(tag) => format!("tag `{tag}` of service `{}`", context.source.service),
            None => format!("service `{}`", context.source.service),
        };
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no revision of {what} can serve traffic\n"),
        );
    };
    let method = request.method().to_string();
    let url = format!(
        "http://{}{}",
        request
            .headers()
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .unwrap_or("127.0.0.1"),
        request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|agent| agent.to_str().ok())
        .map(str::to_string);
    let revision_full = format!("{}/revisions/{revision}", context.service_full);
    let (delay, injected) =
        routers
            .faults
            .decide_request(&context.source.service, &revision, rand::random::<f64>());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let backend = routers.runtime.backend(&revision_full);
    let response = match (injected, backend) {
        (Some(status), _) => plain(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            format!("injected fault: revision `{revision}` answers {status}\n"),
        ),
        (None, None) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("revision `{revision}` has no running instance\n"),
        ),
        (None, Some(backend)) => forward(&routers.client, backend, remote, request).await,
    };
    let status = response.status().as_u16();
    let latency = started.elapsed();
    let source = LogSource {
        project: context.source.project.clone(),
        location: context.source.location.clone(),
        service: context.source.service.clone(),
        revision: revision.clone(),
    };
    routers.monitoring.record(
        SeriesKey {
            project: source.project.clone(),
            location: source.location.clone(),
            service: source.service.clone(),
            revision,
            response_code: status,
        },
        at,
        latency,
    );
    routers.logging.request(
        &source,
        &RequestLog {
            method,
            url,
            status,
            latency_seconds: latency.as_secs_f64(),
            user_agent,
            remote_ip: remote.ip().to_string(),
        },
        at,
    );
    response
}

async fn forward(
    client: &Client<HttpConnector, Body>,
    backend: SocketAddr,
    remote: SocketAddr,
    request: Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    match format!("http://{backend}{path}").parse::<Uri>() {
        Ok(uri) => parts.uri = uri,
        Err(error) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("invalid request path: {error}\n"),
            )
        }
    }
    for name in HOP_BY_HOP {
        parts.headers.remove(*name);
    }
    if let Ok(value) = HeaderValue::from_str(&remote.ip().to_string()) {
        parts.headers.append("x-forwarded-for", value);
    }
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => response.map(Body::new),
        Err(error) => plain(
            StatusCode::BAD_GATEWAY,
            format!("the revision's container did not answer: {error}\n"),
        ),
    }
}
