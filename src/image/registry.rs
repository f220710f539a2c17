//! A minimal client of the registry HTTP API (distribution v2): manifests and blobs, with the
//! registry's authentication (anonymous, Basic, or the Bearer token flow of Docker Hub, Artifact
//! Registry and most others).
//!
//! Used to read an image back by digest from where it will be deployed from, so verification does
//! not trust the local engine. Every document fetched by digest is hashed and compared with that
//! digest: a registry (or proxy) answering with other bytes is an error, not a label to believe.

use std::sync::Mutex;

use reqwest::{header, StatusCode};

use super::{sha256_digest, ImageError, RegistryCredentials};

/// Media types of single-image manifests deployer reads.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
];

/// Media types of multi-platform indexes (accepted so the registry answers, then refused).
const INDEX_TYPES: &[&str] = &[
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
];

/// A client for one registry host.
pub struct RegistryClient {
    http: reqwest::Client,
    host: String,
    base: String,
    credentials: Option<RegistryCredentials>,
    /// The bearer token of the last challenge answered (tokens are scoped per repository, and a
    /// client is used for one image at a time).
    token: Mutex<Option<String>>,
}

/// A manifest as fetched.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The `Docker-Content-Digest` (or the hash of the bytes when the header is missing).
    pub digest: String,
    /// The media type.
    pub media_type: String,
    /// The raw bytes.
    pub bytes: Vec<u8>,
}

impl RegistryClient {
    /// A client for `host` (`127.0.0.1:5000`, `us-west2-docker.pkg.dev`). Loopback registries
    /// are spoken to over plain HTTP, as the engine does; every other host over HTTPS.
    pub fn new(host: &str, credentials: Option<RegistryCredentials>) -> Result<Self, ImageError> {
        crate::install_crypto_provider();
        let scheme = if is_loopback(host) { "http" } else { "https" };
        let api_host = if host == "docker.io" {
            "registry-1.docker.io"
        } else {
            host
        };
        let http = reqwest::Client::builder()
            .user_agent(concat!("deployer/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|error| ImageError::Registry {
                url: format!("{scheme}://{api_host}"),
                message: error.to_string(),
            })?;
        Ok(Self {
            http,
            host: host.to_string(),
            base: format!("{scheme}://{api_host}"),
            credentials,
            token: Mutex::new(None),
        })
    }

    /// The repository's path on its registry: `127.0.0.1:5000/hello` → `hello`.
    pub fn repository_path<'a>(&self, repository: &'a str) -> std::borrow::Cow<'a, str> {
        let path = repository
            .strip_prefix(&self.host)
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(repository);
        if self.host == "docker.io" && !path.contains('/') {
            std::borrow::Cow::Owned(format!("library/{path}"))
        } else {
            std::borrow::Cow::Borrowed(path)
        }
    }

    /// Fetches the manifest `reference` (a tag or a digest) of `repository`. A digest reference
    /// is checked against the bytes received.
    pub async fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Manifest, ImageError> {
        let path = self.repository_path(repository);
        let url = format!("{}/v2/{path}/manifests/{reference}", self.base);
        let accept = MANIFEST_TYPES
            .iter()
            .chain(INDEX_TYPES)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        let response = self.get(&url, &path, Some(&accept)).await?;
        let media_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let bytes = read_body(&url, response).await?;
        let computed = sha256_digest(&bytes);
        if reference.starts_with("sha256:") && computed != reference {
            return Err(registry_error(
                &url,
                format!("the manifest's content hashes to `{computed}`, not the digest asked for"),
            ));
        }
        Ok(Manifest {
            digest: header_digest.unwrap_or(computed),
            media_type,
            bytes,
        })
    }

    /// Fetches blob `digest` of `repository`, checking its content against the digest.
    pub async fn blob(&self, repository: &str, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.repository_path(repository);
        let url = format!("{}/v2/{path}/blobs/{digest}", self.base);
        let response = self.get(&url, &path, None).await?;
        let bytes = read_body(&url, response).await?;
        let computed = sha256_digest(&bytes);
        if computed != digest {
            return Err(registry_error(
                &url,
                format!("the blob's content hashes to `{computed}`"),
            ));
        }
        Ok(bytes)
    }

    async fn get(
        &self,
        url: &str,
        repository_path: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, ImageError> {
        let send = |token: Option<String>| {
            let mut request = self.http.get(url);
            if let Some(accept) = accept {
                request = request.header(header::ACCEPT, accept);
            }
            if let Some(token) = token {
                request = request.bearer_auth(token);
            } else if let Some(RegistryCredentials::Basic { username, password }) =
                &self.credentials
            {
                request = request.basic_auth(username, Some(password));
            }
            request.send()
        };
        let cached = self.token.lock().ok().and_then(|token| token.clone());
        let mut response = send(cached)
            .await
            .map_err(|error| registry_error(url, describe(&error)))?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let challenge = response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_string();
            if let Some(parameters) = challenge.strip_prefix("Bearer ") {
                let token = self.fetch_token(parameters, repository_path).await?;
                if let Ok(mut slot) = self.token.lock() {
                    *slot = Some(token.clone());
                }
                response = send(Some(token))
                    .await
                    .map_err(|error| registry_error(url, describe(&error)))?;
            }
        }
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let hint = match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    " (check the registry credentials)"
                }
                _ => "",
            };
            return Err(registry_error(
                url,
                format!("{status}{hint}: {}", first_line(&text)),
            ));
        }
        Ok(response)
    }

    /// The Bearer token flow: ask the realm of the challenge for a token for this repository.
    async fn fetch_token(
        &self,
        parameters: &str,
        repository_path: &str,
    ) -> Result<String, ImageError> {
        let parameters = parse_challenge(parameters);
        let realm = parameters
            .iter()
            .find(|(key, _)| key == "realm")
            .map(|(_, value)| value.clone())
            .ok_or_else(|| {
                registry_error(
                    &self.base,
                    "an authentication challenge without realm".into(),
                )
            })?;
        let service = parameters
            .iter()
            .find(|(key, _)| key == "service")
            .map(|(_, value)| value.clone())
            .unwrap_or_default();
        let scope = parameters
            .iter()
            .find(|(key, _)| key == "scope")
            .map(|(_, value)| value.clone())
            .unwrap_or_else(|| format!("repository:{repository_path}:pull"));
        let request = match &self.credentials {
            Some(RegistryCredentials::IdentityToken(refresh)) => self.http.post(&realm).form(&[
                ("grant_type", "refresh_token"),
                ("service", service.as_str()),
                ("scope", scope.as_str()),
                ("client_id", "deployer"),
                ("refresh_token", refresh.as_str()),
            ]),
            Some(RegistryCredentials::Basic { username, password }) => self
                .http
                .get(&realm)
                .query(&[("service", &service), ("scope", &scope)])
                .basic_auth(username, Some(password)),
            None => self
                .http
                .get(&realm)
                .query(&[("service", &service), ("scope", &scope)]),
        };
        // The realm URL is safe to name in errors; the query and the answer are not echoed.
        let response = request
            .send()
            .await
            .map_err(|error| registry_error(&realm, describe(&error)))?;
        if !response.status().is_success() {
            return Err(registry_error(
                &realm,
                format!(
                    "the token service answered {} (check the registry credentials)",
                    response.status()
                ),
            ));
        }
        let answer: serde_json::Value = response
            .json()
            .await
            .map_err(|_| registry_error(&realm, "the token service's answer is not JSON".into()))?;
        answer
            .get("token")
            .or_else(|| answer.get("access_token"))
            .and_then(|token| token.as_str())
            .map(str::to_string)
            .ok_or_else(|| registry_error(&realm, "the token service sent no token".into()))
    }
}

fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            name
        } else {
            host
        }
    });
    name == "localhost"
        || name == "[::1]"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|address| address.is_loopback())
}

/// `realm="https://x",service="y",scope="z"` → pairs.
fn parse_challenge(parameters: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = parameters.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        pairs.push((key, value.to_string()));
        rest = remaining.trim_start_matches(',').trim();
    }
    pairs
}

async fn read_body(url: &str, response: reqwest::Response) -> Result<Vec<u8>, ImageError> {
    response
        .bytes()
        .await
        .map(|bytes| bytes.to_vec())
        .map_err(|error| registry_error(url, describe(&error)))
}

fn registry_error(url: &str, message: String) -> ImageError {
    ImageError::Registry {
        url: url.to_string(),
        message,
    }
}

/// A reqwest error with its causes ("connection refused" sits a few sources deep).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default().trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let pairs = parse_challenge(
            r#"realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#,
        );
        assert_eq!(
            pairs,
            [
                (
                    "realm".to_string(),
                    "https://auth.example.com/token".to_string()
                ),
                ("service".to_string(), "registry.example.com".to_string()),
                ("scope".to_string(), "repository:a/b:pull".to_string()),
            ]
        );
    }

    #[test]
    fn loopback_hosts_use_http() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("us-west2-docker.pkg.dev"));
        assert!(!is_loopback("127.example.com"));
    }

    #[test]
    fn repository_paths() {
        let client = RegistryClient::new("127.0.0.1:5000", None).unwrap();
        assert_eq!(client.repository_path("127.0.0.1:5000/hello"), "hello");
        assert_eq!(client.repository_path("127.0.0.1:5000/a/b"), "a/b");
        let hub = RegistryClient::new("docker.io", None).unwrap();
        assert_eq!(hub.repository_path("ubuntu"), "library/ubuntu");
    }
}
