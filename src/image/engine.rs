//! The connection to the Docker Engine: `DOCKER_HOST` (a `unix://` socket or `tcp://` address,
//! default `/var/run/docker.sock`), API version negotiated with the daemon.
//!
//! Most calls go through bollard. The push is the exception: bollard's typed push events drop
//! the layer `id`, so per-layer progress and the `aux` digest record would be lost; [`Engine`]
//! therefore also opens plain HTTP/1.1 connections to the same endpoint for streaming requests
//! whose JSON it parses itself.

use std::time::Duration;

use bollard::Docker;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

use super::ImageError;

/// The socket the engine listens on when `DOCKER_HOST` is unset.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Builds of large images and pushes to slow registries take long; bollard's default of two
/// minutes per request would cut them off.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// A connected Docker Engine.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    host: String,
}

impl Engine {
    /// Connects to the engine named by `DOCKER_HOST` and negotiates the API version; fails with
    /// [`ImageError::EngineUnavailable`] when nothing answers there.
    pub async fn connect() -> Result<Self, ImageError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|host| !host.is_empty())
            .unwrap_or_else(|| format!("unix://{DEFAULT_SOCKET}"));
        let unavailable = |source| ImageError::EngineUnavailable {
            host: host.clone(),
            source,
        };
        let docker = Docker::connect_with_host(&host)
            .map_err(unavailable)?
            .with_timeout(REQUEST_TIMEOUT);
        let docker = docker.negotiate_version().await.map_err(unavailable)?;
        Ok(Self { docker, host })
    }

    /// The bollard client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The `DOCKER_HOST` in use.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Sends a POST without body to the engine over a fresh HTTP/1.1 connection and returns the
    /// response body as a stream of chunks (the engine streams JSON messages, one per line).
    pub(crate) async fn post_streaming(
        &self,
        path_and_query: &str,
        headers: &[(&str, String)],
    ) -> Result<hyper::body::Incoming, String> {
        let version = self.docker.client_version();
        let uri = format!(
            "/v{}.{}{path_and_query}",
            version.major_version, version.minor_version
        );
        let mut request = Request::post(uri).header("host", "docker");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|error| error.to_string())?;
        let response = if let Some(path) = self.host.strip_prefix("unix://") {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|error| format!("cannot connect to `{path}`: {error}"))?;
            send(stream, request).await?
        } else if let Some(address) = self.host.strip_prefix("tcp://") {
            let stream = tokio::net::TcpStream::connect(address.trim_end_matches('/'))
                .await
                .map_err(|error| format!("cannot connect to `{address}`: {error}"))?;
            send(stream, request).await?
        } else {
            return Err(format!(
                "`DOCKER_HOST={}` is not a `unix://` or `tcp://` address",
                self.host
            ));
        };
        let status = response.status();
        if status != StatusCode::OK {
            let body = response
                .into_body()
                .collect()
                .await
                .map(|body| body.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&body);
            // The engine answers errors as `{"message": "..."}`.
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|value| value.get("message")?.as_str().map(str::to_string))
                .unwrap_or_else(|| text.trim().to_string());
            return Err(format!("{status}: {message}"));
        }
        Ok(response.into_body())
    }
}

async fn send<S>(
    stream: S,
    request: Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| error.to_string())?;
    tokio::spawn(async move {
        // The connection ends with the response body; an error here surfaces as a body error.
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|error| error.to_string())
}
