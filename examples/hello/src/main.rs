//! `hello`: the demo service for rehearsing guarded rollouts, built into a `FROM scratch` image.
//!
//! It answers `GET /health` with its identity as JSON (`service`, `commit`, `revision`), which is
//! what deployer checks before a new revision gets traffic, and `GET /` with a greeting. Two
//! environment variables make a bad release on purpose, for rollout demos: `FAIL_RATE` (a
//! fraction of requests answered 500) and `EXTRA_LATENCY_MS` (a delay added to every answer).
//! `/health` is exempt from both, so a revision's identity can always be verified and the canary
//! analysis is what catches the bad release.
//!
//! The process runs as PID 1 in its image: the kernel gives PID 1 no default signal handlers, so
//! SIGTERM (what Cloud Run and `docker stop` send) is handled explicitly: stop accepting, let
//! in-flight requests finish (for at most [`SHUTDOWN_GRACE`]), exit 0.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, signal::unix::SignalKind};

/// How long in-flight requests may run after SIGTERM (Cloud Run allows 10 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Settings read from the environment once at start.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    port: u16,
    service: String,
    commit: String,
    revision: String,
    fail_rate: f64,
    extra_latency: Duration,
}

impl Settings {
    /// Reads the settings through `lookup` (the process environment in `main`). Bad values are
    /// errors naming the variable: a demo that silently ignores `FAIL_RATE=5%` demonstrates
    /// nothing.
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let text = |name: &str, default: &str| {
            lookup(name)
                .filter(|value| !value.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        let port = match lookup("PORT").filter(|value| !value.is_empty()) {
            None => 8080,
            Some(value) => value
                .parse::<u16>()
                .map_err(|_| format!("PORT must be a port number, got `{value}`"))?,
        };
        let fail_rate = match lookup("FAIL_RATE").filter(|value| !value.is_empty()) {
            None => 0.0,
            Some(value) => match value.parse::<f64>() {
                Ok(rate) if (0.0..=1.0).contains(&rate) => rate,
                _ => {
                    return Err(format!(
                        "FAIL_RATE must be a fraction between 0 and 1, got `{value}`"
                    ))
                }
            },
        };
        let extra_latency = match lookup("EXTRA_LATENCY_MS").filter(|value| !value.is_empty()) {
            None => Duration::ZERO,
            Some(value) => Duration::from_millis(value.parse::<u64>().map_err(|_| {
                format!("EXTRA_LATENCY_MS must be a whole number of milliseconds, got `{value}`")
            })?),
        };
        Ok(Self {
            port,
            service: text("SERVICE_NAME", "hello"),
            commit: text("BUILD_COMMIT", "unknown"),
            revision: text("K_REVISION", "local"),
            fail_rate,
            extra_latency,
        })
    }
}

/// Decides which requests fail: exactly `rate` of them, spread evenly.
///
/// Deterministic rather than random, so a demo with `FAIL_RATE=0.2` shows 20% errors from the
/// first requests on, and tests can count them. Request `n` (from 0) fails when the running total
/// `floor((n + 1) * rate)` steps up.
#[derive(Debug, Default)]
struct FailurePlan {
    requests: AtomicU64,
}

impl FailurePlan {
    fn next_fails(&self, rate: f64) -> bool {
        let number = self.requests.fetch_add(1, Ordering::Relaxed) as f64;
        ((number + 1.0) * rate).floor() > (number * rate).floor()
    }
}

/// One answer: status, content type, body.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Answer {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// What the service answers to `method path` (the injected failure already decided).
fn answer(settings: &Settings, method: &Method, path: &str, inject_failure: bool) -> Answer {
    if method != Method::GET && method != Method::HEAD {
        return Answer::text(405, "method not allowed\n");
    }
    if path == "/health" {
        let body = serde_json::json!({
            "service": settings.service,
            "commit": settings.commit,
            "revision": settings.revision,
        });
        return Answer {
            status: 200,
            content_type: "application/json",
            body: format!("{body}\n"),
        };
    }
    if inject_failure {
        return Answer::text(500, "injected failure (FAIL_RATE)\n");
    }
    match path {
        "/" => Answer::text(
            200,
            format!(
                "Hello from {} at commit {} (revision {})\n",
                settings.service, settings.commit, settings.revision
            ),
        ),
        _ => Answer::text(404, "not found\n"),
    }
}

async fn handle(
    settings: Arc<Settings>,
    plan: Arc<FailurePlan>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let is_health = path == "/health";
    let inject_failure = !is_health && plan.next_fails(settings.fail_rate);
    if !is_health && !settings.extra_latency.is_zero() {
        tokio::time::sleep(settings.extra_latency).await;
    }
    let answer = answer(&settings, request.method(), path, inject_failure);
    let body = if request.method() == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(answer.body)
    };
    let response = Response::builder()
        .status(answer.status)
        .header("content-type", answer.content_type)
        .body(Full::new(body));
    // The builder only fails on invalid header values or status codes; ours are constants.
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

async fn serve(settings: Settings) -> std::io::Result<()> {
    // An IP literal: a scratch image has no /etc/hosts to resolve `localhost` with.
    let address = SocketAddr::from(([0, 0, 0, 0], settings.port));
    let listener = TcpListener::bind(address).await?;
    println!(
        "{} listening on {address} (commit {}, revision {}, fail rate {}, extra latency {} ms)",
        settings.service,
        settings.commit,
        settings.revision,
        settings.fail_rate,
        settings.extra_latency.as_millis()
    );
    let settings = Arc::new(settings);
    let plan = Arc::new(FailurePlan::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut terminate = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(connection) => connection,
                    // A connection that fails while being accepted (reset by the peer, too many
                    // open files) is that client's problem, not a reason to stop serving.
                    Err(error) => {
                        eprintln!("accept failed: {error}");
                        continue;
                    }
                };
                let settings = Arc::clone(&settings);
                let plan = Arc::clone(&plan);
                let service = service_fn(move |request| {
                    handle(Arc::clone(&settings), Arc::clone(&plan), request)
                });
                let connection = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        eprintln!("connection error: {error}");
                    }
                });
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    drop(listener);
    println!("shutting down: finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => println!("stopped"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => println!("stopped after {SHUTDOWN_GRACE:?} with requests still running"),
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let settings = match Settings::from_lookup(|name| std::env::var(name).ok()) {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("error: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(settings)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings_from(pairs: &[(&str, &str)]) -> Result<Settings, String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let settings = settings_from(&[]).unwrap();
        assert_eq!(settings.port, 8080);
        assert_eq!(settings.service, "hello");
        assert_eq!(settings.commit, "unknown");
        assert_eq!(settings.fail_rate, 0.0);
        assert_eq!(settings.extra_latency, Duration::ZERO);
    }

    #[test]
    fn reads_every_variable() {
        let settings = settings_from(&[
            ("PORT", "9000"),
            ("SERVICE_NAME", "demo"),
            ("BUILD_COMMIT", "abc123"),
            ("K_REVISION", "demo-00002"),
            ("FAIL_RATE", "0.25"),
            ("EXTRA_LATENCY_MS", "150"),
        ])
        .unwrap();
        assert_eq!(settings.port, 9000);
        assert_eq!(settings.service, "demo");
        assert_eq!(settings.commit, "abc123");
        assert_eq!(settings.revision, "demo-00002");
        assert_eq!(settings.fail_rate, 0.25);
        assert_eq!(settings.extra_latency, Duration::from_millis(150));
    }

    #[test]
    fn rejects_bad_values_naming_the_variable() {
        for (name, value) in [
            ("FAIL_RATE", "1.5"),
            ("FAIL_RATE", "5%"),
            ("FAIL_RATE", "-0.1"),
            ("PORT", "http"),
            ("PORT", "70000"),
            ("EXTRA_LATENCY_MS", "-3"),
        ] {
            let error = settings_from(&[(name, value)]).unwrap_err();
            assert!(error.starts_with(name), "{name}={value}: {error}");
        }
    }

    #[test]
    fn failure_plan_fails_exactly_the_fraction() {
        for (rate, expected) in [(0.0, 0), (0.05, 5), (0.2, 20), (0.5, 50), (1.0, 100)] {
            let plan = FailurePlan::default();
            let failures = (0..100).filter(|_| plan.next_fails(rate)).count();
            assert_eq!(failures, expected, "rate {rate}");
        }
    }

    #[test]
    fn health_reports_identity_as_json_even_when_failing() {
        let settings = settings_from(&[("BUILD_COMMIT", "abc123"), ("K_REVISION", "r1")]).unwrap();
        let answer = answer(&settings, &Method::GET, "/health", true);
        assert_eq!(answer.status, 200);
        assert_eq!(answer.content_type, "application/json");
        let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"service": "hello", "commit": "abc123", "revision": "r1"})
        );
    }

    #[test]
    fn root_greets_and_injected_failures_answer_500() {
        let settings = settings_from(&[("BUILD_COMMIT", "abc123")]).unwrap();
        let greeting = answer(&settings, &Method::GET, "/", false);
        assert_eq!(greeting.status, 200);
        assert!(greeting.body.contains("hello"), "{}", greeting.body);
        assert!(greeting.body.contains("abc123"), "{}", greeting.body);
        assert_eq!(answer(&settings, &Method::GET, "/", true).status, 500);
        assert_eq!(
            answer(&settings, &Method::GET, "/missing", false).status,
            404
        );
        assert_eq!(answer(&settings, &Method::POST, "/", false).status, 405);
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Serve one connection on an ephemeral port with the real handler.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let settings = Arc::new(settings_from(&[("BUILD_COMMIT", "feed")]).unwrap());
        let plan = Arc::new(FailurePlan::default());
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = service_fn(move |request| {
                handle(Arc::clone(&settings), Arc::clone(&plan), request)
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains(r#""commit":"feed""#), "{response}");
    }
}
