//! What serves: every revision with traffic, and the commit it was built from — its
//! `deployer-commit` label, else (a revision deployed by another tool) its image's
//! `org.opencontainers.image.revision` label read from the registry.

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::{
    image::{registry_host, split_tag, ImageIdentity, RegistryClient, RegistryCredentials},
    platform::{Platform, ServiceId},
    preflight::COMMIT_LABEL,
};

/// Where a revision's commit was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitOrigin {
    /// The revision's `deployer-commit` label.
    RevisionLabel,
    /// The image's `org.opencontainers.image.revision` label, from the registry.
    ImageLabel,
}

/// One revision that receives traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServingRevision {
    /// Revision name.
    pub revision: String,
    /// Percent of traffic.
    pub percent: u8,
    /// The image it runs.
    pub image: String,
    /// The commit it was built from, when known.
    pub commit: Option<String>,
    /// Where `commit` was read.
    pub commit_origin: Option<CommitOrigin>,
    /// Why the commit is unknown, when it is.
    pub unknown_reason: Option<String>,
}

/// What the platform says about a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployedState {
    /// The platform could not be read: why.
    Unavailable(String),
    /// The service does not exist.
    NotDeployed,
    /// The revisions serving traffic (empty: none serves).
    Serving(Vec<ServingRevision>),
}

/// Reads the `org.opencontainers.image.revision` label of an image.
#[async_trait]
pub trait ImageLabels: Send + Sync {
    /// The commit label of `image` (`REPO@sha256:...` or `REPO:TAG`); `Ok(None)` when the image
    /// has none; `Err(why)` when it cannot be read.
    async fn revision(&self, image: &str) -> Result<Option<String>, String>;
}

/// [`ImageLabels`] from the image's registry (credentials found as `docker push` finds them).
#[derive(Debug, Clone, Copy, Default)]
pub struct RegistryLabels;

#[async_trait]
impl ImageLabels for RegistryLabels {
    async fn revision(&self, image: &str) -> Result<Option<String>, String> {
        let (repository, reference) = match image.split_once('@') {
            Some((repository, digest)) => (repository, digest.to_string()),
            None => {
                let (repository, tag) = split_tag(image);
                (repository, tag.unwrap_or("latest").to_string())
            }
        };
        let host = registry_host(repository);
        let credentials = RegistryCredentials::resolve(host)
            .await
            .map_err(|error| error.to_string())?;
        let client = RegistryClient::new(host, credentials).map_err(|error| error.to_string())?;
        let identity = ImageIdentity::from_registry(&client, repository, &reference)
            .await
            .map_err(|error| error.to_string())?;
        Ok(identity.commit().map(str::to_string))
    }
}

/// The leading hex digits of a label (labels are lowercase, so a commit id survives; a suffix
/// someone added is dropped). `None` when nothing hex is left.
fn commit_of(label: &str) -> Option<String> {
    let hex: String = label
        .trim()
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    (hex.len() >= 4).then_some(hex)
}

/// Reads the service and each serving revision (revisions read concurrently), each read
/// within `limit`.
pub async fn read(
    platform: &dyn Platform,
    id: &ServiceId,
    images: &dyn ImageLabels,
    limit: Duration,
) -> DeployedState {
    let too_slow = |what: &str| {
        format!(
            "reading {what} took longer than {}",
            humantime::format_duration(limit)
        )
    };
    let snapshot = match tokio::time::timeout(limit, platform.service(id)).await {
        Err(_) => return DeployedState::Unavailable(too_slow(&format!("`{}`", id.name))),
        Ok(Err(error)) => return DeployedState::Unavailable(error.to_string()),
        Ok(Ok(None)) => return DeployedState::NotDeployed,
        Ok(Ok(Some(snapshot))) => snapshot,
    };
    let reads = snapshot.serving().into_iter().map(|(name, percent)| async move {
        let mut serving = ServingRevision {
            revision: name.clone(),
            percent,
            image: String::new(),
            commit: None,
            commit_origin: None,
            unknown_reason: None,
        };
        let revision = match tokio::time::timeout(limit, platform.revision(id, &name)).await {
            Err(_) => {
                serving.unknown_reason = Some(too_slow(&format!("revision `{name}`")));
                return serving;
            }
            Ok(Err(error)) => {
                serving.unknown_reason = Some(format!("revision `{name}` cannot be read: {error}"));
                return serving;
            }
            Ok(Ok(None)) => {
                serving.unknown_reason = Some(format!("revision `{name}` not found"));
                return serving;
            }
            Ok(Ok(Some(revision))) => revision,
        };
        serving.image = revision.image.clone();
        if let Some(commit) = revision.labels.get(COMMIT_LABEL).and_then(|label| commit_of(label)) {
            serving.commit = Some(commit);
            serving.commit_origin = Some(CommitOrigin::RevisionLabel);
            return serving;
        }
        // Deployed by another tool (gcloud, a console click): the image may still say.
        match tokio::time::timeout(limit, images.revision(&revision.image)).await {
            Ok(Ok(Some(label))) => match commit_of(&label) {
                Some(commit) => {
                    serving.commit = Some(commit);
                    serving.commit_origin = Some(CommitOrigin::ImageLabel);
                }
                None => {
                    serving.unknown_reason = Some(format!(
                        "revision `{name}` has no `{COMMIT_LABEL}` label and its image's `org.opencontainers.image.revision` label `{label}` is not a commit id"
                    ))
                }
            },
            Ok(Ok(None)) => {
                serving.unknown_reason = Some(format!(
                    "revision `{name}` has no `{COMMIT_LABEL}` label and its image `{}` has no `org.opencontainers.image.revision` label",
                    revision.image
                ))
            }
            Ok(Err(error)) => {
                serving.unknown_reason = Some(format!(
                    "revision `{name}` has no `{COMMIT_LABEL}` label and its image's labels cannot be read: {error}"
                ))
            }
            Err(_) => {
                serving.unknown_reason = Some(format!(
                    "revision `{name}` has no `{COMMIT_LABEL}` label and {}",
                    too_slow(&format!("the labels of image `{}`", revision.image))
                ))
            }
        }
        serving
    });
    DeployedState::Serving(futures::future::join_all(reads).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{memory::MemoryPlatform, RevisionSpec};

    /// Image labels by image name; an image absent from the map cannot be read.
    struct Labels(std::collections::BTreeMap<&'static str, Option<&'static str>>);

    #[async_trait]
    impl ImageLabels for Labels {
        async fn revision(&self, image: &str) -> Result<Option<String>, String> {
            match self.0.get(image) {
                Some(label) => Ok(label.map(str::to_string)),
                None => Err("connection refused".into()),
            }
        }
    }

    async fn serving_one(
        image: &str,
        labels: std::collections::BTreeMap<String, String>,
    ) -> DeployedState {
        let platform = MemoryPlatform::new();
        let id = ServiceId {
            project: "local".into(),
            region: "local".into(),
            name: "svc".into(),
        };
        platform
            .create(
                &id,
                &RevisionSpec {
                    name: "svc-00001".into(),
                    image: image.into(),
                    labels,
                    base: None,
                    settings: Default::default(),
                },
            )
            .await
            .unwrap();
        let images = Labels(std::collections::BTreeMap::from([
            ("r/svc@sha256:labelled", Some("abcdef0123")),
            ("r/svc@sha256:bare", None),
        ]));
        read(&platform, &id, &images, Duration::from_secs(5)).await
    }

    #[tokio::test]
    async fn the_commit_comes_from_the_revision_label_then_the_image_label() {
        let labelled = crate::platform::cloud_run::revision_labels("1234567890abcdef");
        let DeployedState::Serving(found) = serving_one("r/svc@sha256:labelled", labelled).await
        else {
            panic!("serving")
        };
        assert_eq!(found[0].commit.as_deref(), Some("1234567890abcdef"));
        assert_eq!(found[0].commit_origin, Some(CommitOrigin::RevisionLabel));
        assert_eq!(found[0].percent, 100);

        let cases = [
            ("r/svc@sha256:labelled", None, Some("abcdef0123")),
            (
                "r/svc@sha256:bare",
                Some("has no `org.opencontainers.image.revision` label"),
                None,
            ),
            (
                "r/svc@sha256:unreachable",
                Some("its image's labels cannot be read: connection refused"),
                None,
            ),
        ];
        for (image, reason, commit) in cases {
            let DeployedState::Serving(found) = serving_one(image, Default::default()).await else {
                panic!("serving")
            };
            assert_eq!(found[0].commit.as_deref(), commit, "{image}");
            if let Some(reason) = reason {
                let text = found[0].unknown_reason.clone().unwrap();
                assert!(text.contains(reason), "{text}");
                assert!(
                    text.starts_with("revision `svc-00001` has no `deployer-commit` label"),
                    "{text}"
                );
            } else {
                assert_eq!(found[0].commit_origin, Some(CommitOrigin::ImageLabel));
            }
        }
    }

    #[test]
    fn commit_labels_keep_their_hex_prefix() {
        assert_eq!(commit_of("0123abcd").as_deref(), Some("0123abcd"));
        assert_eq!(commit_of("0123abcd_dirty").as_deref(), Some("0123abcd"));
        assert_eq!(commit_of("xyz"), None);
        assert_eq!(commit_of("abc"), None, "too short to name a commit");
    }
}
