//! Registry credentials, found the way `docker push` finds them, plus Google's for Artifact
//! Registry.
//!
//! In order: `credHelpers[HOST]` in the Docker config (`$DOCKER_CONFIG/config.json`, default
//! `~/.docker/config.json`) run as `docker-credential-NAME get`; a stored `auths[HOST]` entry
//! (`auth` = base64 `user:password`, or an `identitytoken`); the config's `credsStore` helper;
//! then, for Google hosts (`*-docker.pkg.dev`, `gcr.io`, `*.gcr.io`), an access token from
//! Application Default Credentials with the user `oauth2accesstoken` (what
//! `gcloud auth print-access-token | docker login -u oauth2accesstoken` does). Anything else,
//! such as a local registry, gets no credentials.
//!
//! Secrets never leave this module in printable form: [`RegistryCredentials`]' `Debug` hides
//! them, and errors name the host and the helper, never what the helper answered.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use base64::Engine as _;
use serde::Deserialize;

use super::ImageError;

/// The user name Google registries expect with an OAuth access token.
const GOOGLE_TOKEN_USER: &str = "oauth2accesstoken";

/// ADC falls back to the metadata server, which on a machine outside Google Cloud can take most
/// of a minute to give up; a push should fail sooner than that.
const GOOGLE_TOKEN_TIMEOUT: Duration = Duration::from_secs(20);

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum RegistryCredentials {
    /// User name and password (or access token).
    Basic { username: String, password: String },
    /// An identity token (OAuth refresh token) from `docker login`.
    IdentityToken(String),
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { username, .. } => formatter
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"[hidden]")
                .finish(),
            Self::IdentityToken(_) => formatter.write_str("IdentityToken([hidden])"),
        }
    }
}

impl RegistryCredentials {
    /// The engine's `X-Registry-Auth` header value: base64url of the auth JSON.
    pub(crate) fn engine_header(credentials: Option<&Self>, host: &str) -> String {
        let value = match credentials {
            None => serde_json::json!({}),
            Some(Self::Basic { username, password }) => serde_json::json!({
                "username": username,
                "password": password,
                "serveraddress": host,
            }),
            Some(Self::IdentityToken(token)) => serde_json::json!({
                "identitytoken": token,
                "serveraddress": host,
            }),
        };
        base64::engine::general_purpose::URL_SAFE.encode(value.to_string())
    }

    /// Resolves the credentials for `host` (see the module documentation for the order).
    pub async fn resolve(host: &str) -> Result<Option<Self>, ImageError> {
        let config_path = docker_config_path();
        let config = match config_path.as_deref().map(std::fs::read_to_string) {
            Some(Ok(text)) => serde_json::from_str::<DockerConfig>(&text).map_err(|error| {
                ImageError::Credentials {
                    host: host.to_string(),
                    message: format!(
                        "cannot read `{}`: {error}",
                        config_path.as_deref().unwrap_or(Path::new("")).display()
                    ),
                }
            })?,
            _ => DockerConfig::default(),
        };
        if let Some(found) = from_docker_config(&config, host)? {
            return Ok(Some(found));
        }
        if is_google_registry(host) {
            return google_token(host).await.map(Some);
        }
        Ok(None)
    }
}

/// The registry host of an image repository, as Docker decides it: the first path component
/// when it looks like a host (has a `.` or `:`, or is `localhost`), else Docker Hub.
pub fn registry_host(repository: &str) -> &str {
    match repository.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

/// True when the registry of `repository` answers its API root (`/v2/`) within 2 s: a local
/// registry is optional for the emulator, which can run the engine's image by its content id.
pub async fn registry_answers(repository: &str) -> bool {
    crate::install_crypto_provider();
    let url = format!("http://{}/v2/", registry_host(repository));
    matches!(
        reqwest::Client::new().get(&url).timeout(std::time::Duration::from_secs(2)).send().await,
        Ok(response) if response.status().as_u16() < 500
    )
}

/// Whether the host is Artifact Registry or Container Registry.
fn is_google_registry(host: &str) -> bool {
    host.ends_with("-docker.pkg.dev") || host == "gcr.io" || host.ends_with(".gcr.io")
}

#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    credential_helpers: std::collections::BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    credentials_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|dir| !dir.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// `https://index.docker.io/v1/`, `https://HOST/`, `HOST` → the bare host, as Docker compares
/// `auths` keys.
fn normalize_host(key: &str) -> &str {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = without_scheme.split('/').next().unwrap_or(without_scheme);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        other => other,
    }
}

fn from_docker_config(
    config: &DockerConfig,
    host: &str,
) -> Result<Option<RegistryCredentials>, ImageError> {
    if let Some(helper) = config
        .credential_helpers
        .iter()
        .find(|(key, _)| normalize_host(key) == host)
        .map(|(_, helper)| helper)
    {
        return run_helper(helper, host);
    }
    if let Some(entry) = config
        .auths
        .iter()
        .find(|(key, _)| normalize_host(key) == host)
        .map(|(_, entry)| entry)
    {
        if let Some(token) = entry
            .identity_token
            .as_ref()
            .filter(|token| !token.is_empty())
        {
            return Ok(Some(RegistryCredentials::IdentityToken(token.clone())));
        }
        if let Some(encoded) = entry.auth.as_ref().filter(|auth| !auth.is_empty()) {
            let invalid = || ImageError::Credentials {
                host: host.to_string(),
                message: "the `auth` entry in the Docker config is not base64 `user:password`"
                    .to_string(),
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| invalid())?;
            let text = String::from_utf8(decoded).map_err(|_| invalid())?;
            let (username, password) = text.split_once(':').ok_or_else(invalid)?;
            return Ok(Some(RegistryCredentials::Basic {
                username: username.to_string(),
                password: password.to_string(),
            }));
        }
        if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
            return Ok(Some(RegistryCredentials::Basic {
                username: username.clone(),
                password: password.clone(),
            }));
        }
    }
    if let Some(store) = config
        .credentials_store
        .as_ref()
        .filter(|store| !store.is_empty())
    {
        return run_helper(store, host);
    }
    Ok(None)
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Runs `docker-credential-NAME get` with the host on stdin (the credential-helper protocol).
fn run_helper(name: &str, host: &str) -> Result<Option<RegistryCredentials>, ImageError> {
    run_helper_program(&format!("docker-credential-{name}"), host)
}

fn run_helper_program(
    program: &str,
    host: &str,
) -> Result<Option<RegistryCredentials>, ImageError> {
    let failed = |message: String| ImageError::Credentials {
        host: host.to_string(),
        message,
    };
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| failed(format!("cannot run credential helper `{program}`: {error}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(host.as_bytes())
            .map_err(|error| failed(format!("cannot talk to `{program}`: {error}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|error| failed(format!("credential helper `{program}` failed: {error}")))?;
    if !output.status.success() {
        // The protocol's "no credentials" answer is this exact text on stdout.
        let stdout = String::from_utf8_lossy(&output.stdout);
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        // Helpers print their own diagnostics on stderr, never the secret.
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(failed(format!(
            "credential helper `{program}` failed ({}): {}",
            output.status,
            stderr.trim()
        )));
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout).map_err(|_| {
        failed(format!(
            "credential helper `{program}` answered something that is not its JSON format"
        ))
    })?;
    // Docker's convention: the user `<token>` means the secret is an identity token.
    Ok(Some(if answer.username == "<token>" {
        RegistryCredentials::IdentityToken(answer.secret)
    } else {
        RegistryCredentials::Basic {
            username: answer.username,
            password: answer.secret,
        }
    }))
}

/// An access token from Application Default Credentials.
async fn google_token(host: &str) -> Result<RegistryCredentials, ImageError> {
    let failed = |message: String| ImageError::Credentials {
        host: host.to_string(),
        message,
    };
    // Found first: without any, Google's builder would wait for a metadata server that is not
    // there (most of a minute off Google Cloud) before saying so.
    crate::credentials::find().map_err(|error| failed(error.to_string()))?;
    let credentials = google_cloud_auth::credentials::Builder::default()
        .build_access_token_credentials()
        .map_err(|error| {
            failed(format!(
                "no Application Default Credentials ({error}); run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS"
            ))
        })?;
    let token = tokio::time::timeout(GOOGLE_TOKEN_TIMEOUT, credentials.access_token())
        .await
        .map_err(|_| {
            failed(format!(
                "no access token from Application Default Credentials within {GOOGLE_TOKEN_TIMEOUT:?}"
            ))
        })?
        .map_err(|error| failed(format!("Application Default Credentials: {error}")))?;
    Ok(RegistryCredentials::Basic {
        username: GOOGLE_TOKEN_USER.to_string(),
        password: token.token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_host_follows_docker() {
        assert_eq!(registry_host("127.0.0.1:5000/hello"), "127.0.0.1:5000");
        assert_eq!(
            registry_host("us-west2-docker.pkg.dev/p/r/svc"),
            "us-west2-docker.pkg.dev"
        );
        assert_eq!(registry_host("localhost/x"), "localhost");
        assert_eq!(registry_host("library/ubuntu"), "docker.io");
        assert_eq!(registry_host("ubuntu"), "docker.io");
    }

    #[test]
    fn google_hosts() {
        assert!(is_google_registry("us-west2-docker.pkg.dev"));
        assert!(is_google_registry("gcr.io"));
        assert!(is_google_registry("eu.gcr.io"));
        assert!(!is_google_registry("127.0.0.1:5000"));
        assert!(!is_google_registry("evilgcr.io"));
    }

    #[test]
    fn auths_entries_decode_and_keys_normalize() {
        let config: DockerConfig = serde_json::from_str(
            r#"{"auths": {
                "https://registry.example.com/v1/": {"auth": "dXNlcjpwYXNzOndvcmQ="},
                "tokens.example.com": {"identitytoken": "refresh"}
            }}"#,
        )
        .unwrap();
        assert_eq!(
            from_docker_config(&config, "registry.example.com").unwrap(),
            Some(RegistryCredentials::Basic {
                username: "user".into(),
                password: "pass:word".into()
            })
        );
        assert_eq!(
            from_docker_config(&config, "tokens.example.com").unwrap(),
            Some(RegistryCredentials::IdentityToken("refresh".into()))
        );
        assert_eq!(from_docker_config(&config, "127.0.0.1:5000").unwrap(), None);
    }

    #[test]
    fn debug_hides_secrets() {
        let credentials = RegistryCredentials::Basic {
            username: "user".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{credentials:?}").contains("s3cret"));
        let token = RegistryCredentials::IdentityToken("t0ken".into());
        assert!(!format!("{token:?}").contains("t0ken"));
    }

    #[test]
    fn credential_helper_protocol() {
        // A real helper program on PATH, speaking the protocol: reads the host on stdin.
        let directory = tempfile::tempdir().unwrap();
        let helper = directory.path().join("docker-credential-deployertest");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread host\nif [ \"$host\" = known.example.com ]; then\n  printf '{\"ServerURL\":\"%s\",\"Username\":\"robot\",\"Secret\":\"hunter2\"}' \"$host\"\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let program = helper.to_string_lossy();
        let found = run_helper_program(&program, "known.example.com");
        assert_eq!(
            found.unwrap(),
            Some(RegistryCredentials::Basic {
                username: "robot".into(),
                password: "hunter2".into()
            })
        );
        let missing = run_helper_program(&program, "other.example.com");
        assert_eq!(missing.unwrap(), None);
        let absent = run_helper_program("docker-credential-deployer-absent", "x.example.com");
        assert!(absent.is_err());
    }
}
