//! The push: the engine uploads a tagged image to its registry; deployer captures the digest the
//! registry assigned to the manifest, which is what deploys use (`REPOSITORY@sha256:...`).
//!
//! The engine streams one JSON message per line: per-layer `status`/`progressDetail` keyed by
//! layer `id`, then an `aux` record with the manifest `Digest` (also printed in the last status
//! line, `TAG: digest: sha256:... size: N`, used as a fallback). Failures (registry down,
//! credentials refused) arrive as an `errorDetail` message inside a successful HTTP response.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use serde::Deserialize;

use super::{
    credentials::registry_host, BuiltImage, Engine, ImageError, LayerProgress, RegistryCredentials,
    Reporter,
};

/// A pushed image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PushedImage {
    /// `REPOSITORY:TAG` that was pushed.
    pub reference: String,
    /// The repository, without tag.
    pub repository: String,
    /// The manifest digest the registry reported (`sha256:...`).
    pub digest: String,
    /// `REPOSITORY@DIGEST`: the immutable reference deploys use.
    pub pinned: String,
}

#[derive(Debug, Deserialize)]
struct PushMessage {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "progressDetail")]
    progress_detail: Option<ProgressDetail>,
    #[serde(default, rename = "errorDetail")]
    error_detail: Option<ErrorDetail>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    aux: Option<PushAux>,
}

#[derive(Debug, Deserialize)]
struct ProgressDetail {
    #[serde(default)]
    current: Option<u64>,
    #[serde(default)]
    total: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PushAux {
    #[serde(default, rename = "Digest")]
    digest: Option<String>,
}

/// Pushes `image` with `credentials` (none for a registry that needs none).
pub async fn push(
    engine: &Engine,
    image: &BuiltImage,
    credentials: Option<&RegistryCredentials>,
    reporter: &mut dyn Reporter,
) -> Result<PushedImage, ImageError> {
    let host = registry_host(&image.repository);
    let failed = |message: String| ImageError::PushFailed {
        reference: image.reference.clone(),
        message,
    };
    let path = format!(
        "/images/{}/push?tag={}",
        image.repository,
        url_encode(&image.tag)
    );
    let auth = RegistryCredentials::engine_header(credentials, host);
    let mut body = engine
        .post_streaming(&path, &[("x-registry-auth", auth)])
        .await
        .map_err(failed)?;
    let mut buffer = BytesMut::new();
    let mut digest = None;
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                return Err(failed(format!("the engine's answer broke off: {error}")))
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        while let Some(newline) = buffer.iter().position(|byte| *byte == b'\n') {
            let line: Bytes = buffer.split_to(newline + 1).freeze();
            handle_line(&line, &mut digest, reporter).map_err(&failed)?;
        }
    }
    if !buffer.is_empty() {
        let line = buffer.freeze();
        handle_line(&line, &mut digest, reporter).map_err(&failed)?;
    }
    let digest = digest.ok_or_else(|| ImageError::NoDigest {
        reference: image.reference.clone(),
    })?;
    Ok(PushedImage {
        reference: image.reference.clone(),
        repository: image.repository.clone(),
        pinned: format!("{}@{digest}", image.repository),
        digest,
    })
}

fn handle_line(
    line: &[u8],
    digest: &mut Option<String>,
    reporter: &mut dyn Reporter,
) -> Result<(), String> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return Ok(());
    }
    let message: PushMessage = serde_json::from_str(text)
        .map_err(|error| format!("unexpected message from the engine ({error}): {text}"))?;
    if let Some(error) = message
        .error_detail
        .and_then(|detail| detail.message)
        .or(message.error)
    {
        return Err(error);
    }
    if let Some(found) = message.aux.and_then(|aux| aux.digest) {
        *digest = Some(found);
    }
    if let Some(status) = &message.status {
        if digest.is_none() {
            if let Some(found) = digest_in_status(status) {
                *digest = Some(found.to_string());
            }
        }
        if let Some(layer) = message.id {
            let progress = message
                .progress_detail
                .and_then(|detail| Some((detail.current?, detail.total?)));
            reporter.push_layer(&LayerProgress {
                layer,
                status: status.clone(),
                progress,
            });
        }
    }
    Ok(())
}

/// `TAG: digest: sha256:HEX size: N` → `sha256:HEX`.
fn digest_in_status(status: &str) -> Option<&str> {
    let start = status.find("digest: ")? + "digest: ".len();
    let rest = &status[start..];
    let digest = rest.split_whitespace().next()?;
    (digest.starts_with("sha256:") && digest.len() == 71).then_some(digest)
}

/// Percent-encodes a query value (tags are `[A-Za-z0-9_.-]`, so this is belt and braces).
fn url_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Vec<LayerProgress>);

    impl Reporter for Recorder {
        fn push_layer(&mut self, progress: &LayerProgress) {
            self.0.push(progress.clone());
        }
    }

    #[test]
    fn digest_from_aux_and_layers_from_ids() {
        let digest_hex = "a".repeat(64);
        let lines = [
            r#"{"status":"The push refers to repository [127.0.0.1:5000/hello]"}"#.to_string(),
            r#"{"status":"Preparing","progressDetail":{},"id":"5f70bf18a086"}"#.to_string(),
            r#"{"status":"Pushing","progressDetail":{"current":512,"total":2048},"id":"5f70bf18a086"}"#.to_string(),
            r#"{"status":"Pushed","progressDetail":{},"id":"5f70bf18a086"}"#.to_string(),
            format!(r#"{{"status":"abc: digest: sha256:{digest_hex} size: 528"}}"#),
            format!(r#"{{"progressDetail":{{}},"aux":{{"Tag":"abc","Digest":"sha256:{digest_hex}","Size":528}}}}"#),
        ];
        let mut digest = None;
        let mut recorder = Recorder::default();
        for line in &lines {
            handle_line(line.as_bytes(), &mut digest, &mut recorder).unwrap();
        }
        assert_eq!(digest, Some(format!("sha256:{digest_hex}")));
        assert_eq!(recorder.0.len(), 3);
        assert_eq!(recorder.0[1].progress, Some((512, 2048)));
        assert_eq!(recorder.0[2].status, "Pushed");
    }

    #[test]
    fn error_messages_fail_the_push() {
        let mut digest = None;
        let error = handle_line(
            br#"{"errorDetail":{"message":"connection refused"},"error":"connection refused"}"#,
            &mut digest,
            &mut Recorder::default(),
        )
        .unwrap_err();
        assert_eq!(error, "connection refused");
    }
}
