//! Reading an image's identity back: its labels, from the local engine or from the registry by
//! digest, and checking them against the commit and service a deploy expects.
//!
//! The registry path is the one that matters for verification: it reads the manifest at the
//! digest being deployed and the configuration blob it points to (both checked against their
//! digests), so the labels seen are those of exactly the bytes Cloud Run will pull.

use std::collections::BTreeMap;

use super::{
    registry::{RegistryClient, MANIFEST_TYPES},
    Engine, ImageError, LABEL_REVISION, LABEL_SERVICE,
};

/// What an image says about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageIdentity {
    /// The image configuration's digest (the engine's image id).
    pub config_digest: String,
    /// All labels of the image.
    pub labels: BTreeMap<String, String>,
}

impl ImageIdentity {
    /// The commit label (`org.opencontainers.image.revision`).
    pub fn commit(&self) -> Option<&str> {
        self.labels.get(LABEL_REVISION).map(String::as_str)
    }

    /// The service label (`dev.deployer.service`).
    pub fn service(&self) -> Option<&str> {
        self.labels.get(LABEL_SERVICE).map(String::as_str)
    }

    /// Reads the identity of `reference` (`REPO:TAG`, `REPO@sha256:...` or an image id) from the
    /// local engine.
    pub async fn from_engine(engine: &Engine, reference: &str) -> Result<Self, ImageError> {
        let inspect = engine
            .docker()
            .inspect_image(reference)
            .await
            .map_err(|source| ImageError::Engine {
                action: "inspect the image",
                source,
            })?;
        Ok(Self {
            config_digest: inspect.id.unwrap_or_default(),
            labels: inspect
                .config
                .and_then(|config| config.labels)
                .map(|labels| labels.into_iter().collect())
                .unwrap_or_default(),
        })
    }

    /// Reads the identity of `repository@digest` from its registry.
    pub async fn from_registry(
        client: &RegistryClient,
        repository: &str,
        digest: &str,
    ) -> Result<Self, ImageError> {
        let manifest = client.manifest(repository, digest).await?;
        let base_type = manifest
            .media_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim();
        let invalid = |message: String| ImageError::Registry {
            url: format!("{repository}@{digest}"),
            message,
        };
        let document: serde_json::Value = serde_json::from_slice(&manifest.bytes)
            .map_err(|error| invalid(format!("the manifest is not JSON: {error}")))?;
        let declared = document
            .get("mediaType")
            .and_then(|value| value.as_str())
            .unwrap_or(base_type);
        if !MANIFEST_TYPES.contains(&declared) {
            return Err(invalid(format!(
                "the manifest is a `{declared}`; deployer reads single-platform image manifests"
            )));
        }
        let config_digest = document
            .pointer("/config/digest")
            .and_then(|value| value.as_str())
            .ok_or_else(|| invalid("the manifest names no configuration blob".into()))?
            .to_string();
        let config = client.blob(repository, &config_digest).await?;
        let config: serde_json::Value = serde_json::from_slice(&config)
            .map_err(|error| invalid(format!("the image configuration is not JSON: {error}")))?;
        let labels = config
            .pointer("/config/Labels")
            .and_then(|labels| labels.as_object())
            .map(|labels| {
                labels
                    .iter()
                    .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            config_digest,
            labels,
        })
    }
}

/// An image that is not what a deploy expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityMismatch {
    /// The image carries no commit label: it was not built by deployer.
    #[error("the image has no `{LABEL_REVISION}` label (was it built by `deployer build`?)")]
    MissingCommit,
    /// The image was built from another commit.
    #[error("the image was built from commit `{found}`, expected `{expected}`")]
    Commit { expected: String, found: String },
    /// The image belongs to another service.
    #[error("the image belongs to service `{found}`, expected `{expected}`")]
    Service { expected: String, found: String },
}

/// Checks that `identity` carries `service` and `commit`.
pub fn verify_identity(
    identity: &ImageIdentity,
    service: &str,
    commit: &str,
) -> Result<(), IdentityMismatch> {
    let found_commit = identity.commit().ok_or(IdentityMismatch::MissingCommit)?;
    if found_commit != commit {
        return Err(IdentityMismatch::Commit {
            expected: commit.to_string(),
            found: found_commit.to_string(),
        });
    }
    let found_service = identity.service().unwrap_or_default();
    if found_service != service {
        return Err(IdentityMismatch::Service {
            expected: service.to_string(),
            found: found_service.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(commit: Option<&str>, service: &str) -> ImageIdentity {
        let mut labels = BTreeMap::from([(LABEL_SERVICE.to_string(), service.to_string())]);
        if let Some(commit) = commit {
            labels.insert(LABEL_REVISION.to_string(), commit.to_string());
        }
        ImageIdentity {
            config_digest: "sha256:x".into(),
            labels,
        }
    }

    #[test]
    fn verification_table() {
        assert_eq!(
            verify_identity(&identity(Some("abc"), "hello"), "hello", "abc"),
            Ok(())
        );
        assert_eq!(
            verify_identity(&identity(None, "hello"), "hello", "abc"),
            Err(IdentityMismatch::MissingCommit)
        );
        assert!(matches!(
            verify_identity(&identity(Some("def"), "hello"), "hello", "abc"),
            Err(IdentityMismatch::Commit { .. })
        ));
        assert!(matches!(
            verify_identity(&identity(Some("abc"), "other"), "hello", "abc"),
            Err(IdentityMismatch::Service { .. })
        ));
    }
}
