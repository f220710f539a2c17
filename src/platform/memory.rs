//! An in-memory [`Platform`] with Cloud Run's semantics, for unit tests of the rollout logic.
//!
//! It keeps etags, immutable revisions, traffic validation and tag URLs, and can be told to fail:
//! a revision whose image is marked failing never becomes Ready; injected faults make the next
//! updates fail before or after being applied (the ambiguous case); another writer can change a
//! service between a read and a write. Integration tests use the real emulator instead.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::Mutex,
};

use async_trait::async_trait;

use super::{
    Platform, PlatformError, RevisionSnapshot, RevisionSpec, ServiceId, ServiceSnapshot,
    ServiceUpdate, TrafficStatus, TrafficTarget,
};

/// A fault injected into the next `update` call.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Fail with this error without applying the update.
    Before(PlatformError),
    /// Apply the update, then report this error (a response lost on the way back).
    After(PlatformError),
}

#[derive(Debug, Default)]
struct State {
    services: BTreeMap<String, Stored>,
    faults: VecDeque<Fault>,
    read_faults: VecDeque<PlatformError>,
    failing_images: BTreeSet<String>,
    writes: u64,
    etag_counter: u64,
}

#[derive(Debug, Clone)]
struct Stored {
    snapshot: ServiceSnapshot,
    revisions: Vec<RevisionSnapshot>,
}

/// The in-memory platform.
#[derive(Debug, Default)]
pub struct MemoryPlatform {
    state: Mutex<State>,
}

impl MemoryPlatform {
    /// An empty platform.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic in a test thread must not hide the state from the other assertions.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Revisions with this image never become Ready.
    pub fn fail_image(&self, image: &str) {
        self.lock().failing_images.insert(image.to_string());
    }

    /// Queues a fault for the next `update` call.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push_back(fault);
    }

    /// Queues a failure for the next `service` read.
    pub fn inject_read_failure(&self, error: PlatformError) {
        self.lock().read_faults.push_back(error);
    }

    /// Number of updates applied so far.
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// Points the service's URL at `uri` (e.g. a local test server), as if its domain moved.
    pub fn set_uri(&self, id: &ServiceId, uri: &str) {
        if let Some(stored) = self.lock().services.get_mut(&id.path()) {
            stored.snapshot.uri = uri.to_string();
            stored.snapshot.urls = vec![uri.to_string()];
        }
    }

    /// Applies an update as another writer would (bypassing faults; etag still checked against
    /// the current one, so pass the current etag).
    pub fn external_update(&self, id: &ServiceId, update: &ServiceUpdate) -> ServiceSnapshot {
        let mut state = self.lock();
        let etag = state
            .services
            .get(&id.path())
            .map(|stored| stored.snapshot.etag.clone())
            .unwrap_or_default();
        apply(&mut state, id, &etag, update)
            .unwrap_or_else(|error| panic!("external update: {error}"))
    }
}

fn next_etag(state: &mut State) -> String {
    state.etag_counter += 1;
    format!("\"etag-{}\"", state.etag_counter)
}

fn resolve_statuses(stored: &mut Stored) {
    let snapshot = &mut stored.snapshot;
    let split = if snapshot.traffic.is_empty() {
        vec![TrafficTarget {
            revision: None,
            percent: 100,
            tag: None,
        }]
    } else {
        snapshot.traffic.clone()
    };
    snapshot.traffic_statuses = split
        .iter()
        .map(|target| TrafficStatus {
            revision: target
                .revision
                .clone()
                .unwrap_or_else(|| snapshot.latest_ready_revision.clone()),
            percent: target.percent,
            uri: target
                .tag
                .as_ref()
                .map(|tag| format!("http://{tag}---{}.memory.test", snapshot.id.name)),
            tag: target.tag.clone(),
        })
        .collect();
}

fn validate_split(stored: &Stored, split: &[TrafficTarget]) -> Result<(), PlatformError> {
    let total: u32 = split.iter().map(|target| u32::from(target.percent)).sum();
    if total != 100 {
        return Err(PlatformError::Refused(format!(
            "traffic percentages sum to {total}, not 100"
        )));
    }
    let mut tags = BTreeSet::new();
    for target in split {
        if let Some(tag) = &target.tag {
            if !tags.insert(tag) {
                return Err(PlatformError::Refused(format!("duplicate tag `{tag}`")));
            }
        }
        if let Some(name) = &target.revision {
            let revision = stored
                .revisions
                .iter()
                .find(|revision| &revision.name == name)
                .ok_or_else(|| PlatformError::Refused(format!("revision `{name}` not found")))?;
            if target.percent > 0 && !revision.ready {
                return Err(PlatformError::Refused(format!(
                    "revision `{name}` is not ready and cannot serve traffic"
                )));
            }
        }
    }
    Ok(())
}

fn new_revision(state: &State, id: &ServiceId, spec: &RevisionSpec) -> RevisionSnapshot {
    let failing = state.failing_images.contains(&spec.image);
    RevisionSnapshot {
        name: spec.name.clone(),
        ready: !failing,
        reconciling: false,
        failure: failing.then(|| format!("container of `{}` exited before listening", id.name)),
        image: spec.image.clone(),
        labels: spec.labels.clone(),
        created: None,
        // The spec's settings are complete (the driver built them from the base revision).
        settings: spec.settings.clone(),
    }
}

fn apply(
    state: &mut State,
    id: &ServiceId,
    etag: &str,
    update: &ServiceUpdate,
) -> Result<ServiceSnapshot, PlatformError> {
    let mut stored = state
        .services
        .get(&id.path())
        .cloned()
        .ok_or_else(|| PlatformError::NotFound(id.path()))?;
    if stored.snapshot.etag != etag {
        return Err(PlatformError::Conflict(id.path()));
    }
    let mut template_failure = None;
    if let Some(spec) = &update.template {
        if !spec.name.starts_with(&format!("{}-", id.name)) {
            return Err(PlatformError::Refused(format!(
                "revision name `{}` must start with `{}-`",
                spec.name, id.name
            )));
        }
        if stored
            .revisions
            .iter()
            .any(|revision| revision.name == spec.name)
        {
            return Err(PlatformError::Refused(format!(
                "revision `{}` already exists",
                spec.name
            )));
        }
        let revision = new_revision(state, id, spec);
        stored.snapshot.generation += 1;
        stored.snapshot.observed_generation = stored.snapshot.generation;
        stored.snapshot.latest_created_revision = revision.name.clone();
        stored.snapshot.image = revision.image.clone();
        if revision.ready {
            stored.snapshot.latest_ready_revision = revision.name.clone();
        } else {
            template_failure = revision.failure.clone();
        }
        stored.revisions.insert(0, revision);
    }
    if let Some(split) = &update.traffic {
        if template_failure.is_none() {
            validate_split(&stored, split)?;
            stored.snapshot.traffic = split.clone();
        }
    }
    for (key, value) in &update.annotations {
        match value {
            Some(value) => stored
                .snapshot
                .annotations
                .insert(key.clone(), value.clone()),
            None => stored.snapshot.annotations.remove(key),
        };
    }
    stored.snapshot.failure = template_failure.clone();
    stored.snapshot.etag = next_etag(state);
    resolve_statuses(&mut stored);
    state.writes += 1;
    let snapshot = stored.snapshot.clone();
    state.services.insert(id.path(), stored);
    match template_failure {
        // As Cloud Run: the revision exists but failed; traffic was not changed.
        Some(reason) => Err(PlatformError::Refused(reason)),
        None => Ok(snapshot),
    }
}

#[async_trait]
impl Platform for MemoryPlatform {
    async fn service(&self, id: &ServiceId) -> Result<Option<ServiceSnapshot>, PlatformError> {
        let mut state = self.lock();
        if let Some(error) = state.read_faults.pop_front() {
            return Err(error);
        }
        Ok(state
            .services
            .get(&id.path())
            .map(|stored| stored.snapshot.clone()))
    }

    async fn revisions(&self, id: &ServiceId) -> Result<Vec<RevisionSnapshot>, PlatformError> {
        let state = self.lock();
        state
            .services
            .get(&id.path())
            .map(|stored| stored.revisions.clone())
            .ok_or_else(|| PlatformError::NotFound(id.path()))
    }

    async fn revision(
        &self,
        id: &ServiceId,
        name: &str,
    ) -> Result<Option<RevisionSnapshot>, PlatformError> {
        Ok(self
            .revisions(id)
            .await?
            .into_iter()
            .find(|revision| revision.name == name))
    }

    async fn create(
        &self,
        id: &ServiceId,
        spec: &RevisionSpec,
    ) -> Result<ServiceSnapshot, PlatformError> {
        let mut state = self.lock();
        if state.services.contains_key(&id.path()) {
            return Err(PlatformError::Refused(format!("`{id}` already exists")));
        }
        let revision = new_revision(&state, id, spec);
        let etag = next_etag(&mut state);
        // As on Cloud Run, a service whose first revision fails exists anyway: it serves
        // nothing (its split follows "latest", and no revision is Ready).
        let ready = revision.ready;
        let failure = revision.failure.clone();
        let mut stored = Stored {
            snapshot: ServiceSnapshot {
                id: id.clone(),
                etag,
                uri: format!("http://{}.memory.test", id.name),
                urls: vec![format!("http://{}.memory.test", id.name)],
                generation: 1,
                observed_generation: 1,
                reconciling: false,
                ready,
                failure: failure.clone(),
                latest_created_revision: revision.name.clone(),
                latest_ready_revision: if ready {
                    revision.name.clone()
                } else {
                    String::new()
                },
                traffic: Vec::new(),
                traffic_statuses: Vec::new(),
                annotations: BTreeMap::new(),
                labels: BTreeMap::new(),
                image: revision.image.clone(),
                session_affinity: false,
            },
            revisions: vec![revision],
        };
        resolve_statuses(&mut stored);
        state.writes += 1;
        let snapshot = stored.snapshot.clone();
        state.services.insert(id.path(), stored);
        match failure.filter(|_| !ready) {
            Some(failure) => Err(PlatformError::Refused(failure)),
            None => Ok(snapshot),
        }
    }

    async fn update(
        &self,
        id: &ServiceId,
        etag: &str,
        update: &ServiceUpdate,
    ) -> Result<ServiceSnapshot, PlatformError> {
        let mut state = self.lock();
        match state.faults.pop_front() {
            Some(Fault::Before(error)) => Err(error),
            Some(Fault::After(error)) => {
                apply(&mut state, id, etag, update)?;
                Err(error)
            }
            None => apply(&mut state, id, etag, update),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{write_guarded, RetryPolicy};

    fn id() -> ServiceId {
        ServiceId {
            project: "p".into(),
            region: "r".into(),
            name: "svc".into(),
        }
    }

    fn spec(name: &str, image: &str) -> RevisionSpec {
        RevisionSpec {
            name: name.into(),
            image: image.into(),
            labels: BTreeMap::new(),
            base: None,
            settings: Default::default(),
        }
    }

    async fn two_revisions(platform: &MemoryPlatform) -> ServiceSnapshot {
        let first = platform
            .create(&id(), &spec("svc-1", "img@1"))
            .await
            .unwrap();
        let update = ServiceUpdate {
            template: Some(spec("svc-2", "img@2")),
            traffic: Some(vec![
                TrafficTarget::to_revision("svc-1", 100),
                TrafficTarget::to_revision("svc-2", 0).tagged("canary"),
            ]),
            ..ServiceUpdate::default()
        };
        platform.update(&id(), &first.etag, &update).await.unwrap()
    }

    #[tokio::test]
    async fn a_new_revision_gets_no_traffic_but_a_tag_url() {
        let platform = MemoryPlatform::new();
        let snapshot = two_revisions(&platform).await;
        assert_eq!(snapshot.serving(), [("svc-1".to_string(), 100)]);
        assert_eq!(
            snapshot.tag_uri("canary"),
            Some("http://canary---svc.memory.test")
        );
        assert_eq!(snapshot.latest_ready_revision, "svc-2");
    }

    #[tokio::test]
    async fn a_stale_etag_is_a_conflict() {
        let platform = MemoryPlatform::new();
        let first = platform
            .create(&id(), &spec("svc-1", "img@1"))
            .await
            .unwrap();
        platform.external_update(
            &id(),
            &ServiceUpdate::default().with_annotation("other", Some("x".into())),
        );
        let error = platform
            .update(&id(), &first.etag, &ServiceUpdate::default())
            .await
            .unwrap_err();
        assert_eq!(error, PlatformError::Conflict(id().path()));
    }

    #[tokio::test]
    async fn traffic_to_a_failed_revision_is_refused() {
        let platform = MemoryPlatform::new();
        platform.fail_image("img@bad");
        let first = platform
            .create(&id(), &spec("svc-1", "img@1"))
            .await
            .unwrap();
        let error = platform
            .update(
                &id(),
                &first.etag,
                &ServiceUpdate {
                    template: Some(spec("svc-2", "img@bad")),
                    traffic: Some(vec![
                        TrafficTarget::to_revision("svc-1", 100),
                        TrafficTarget::to_revision("svc-2", 0).tagged("canary"),
                    ]),
                    ..ServiceUpdate::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(error, PlatformError::Refused(_)));
        let snapshot = platform.service(&id()).await.unwrap().unwrap();
        assert_eq!(snapshot.serving(), [("svc-1".to_string(), 100)]);
        assert_eq!(snapshot.latest_ready_revision, "svc-1");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_response_is_recognised_by_re_reading() {
        let platform = MemoryPlatform::new();
        let snapshot = two_revisions(&platform).await;
        platform.inject(Fault::After(PlatformError::Unavailable("503".into())));
        let split = ServiceUpdate::traffic(vec![
            TrafficTarget::to_revision("svc-1", 90),
            TrafficTarget::to_revision("svc-2", 10).tagged("canary"),
        ]);
        let result = write_guarded(
            &platform,
            &id(),
            &snapshot.etag,
            &split,
            RetryPolicy::default(),
        )
        .await
        .unwrap();
        assert_eq!(platform.writes(), 3, "applied once, not twice");
        assert_eq!(result.serving()[1], ("svc-2".to_string(), 10));
    }

    /// Issue #19 (bench/chaos.sh `transient`): a revision-creating write whose answer was lost
    /// (a 503 after it landed), then whose re-read failed too, was sent again with its old etag
    /// and "failed" as someone else's change: the rollout stopped on its own write.
    #[tokio::test(start_paused = true)]
    async fn a_landed_write_whose_re_read_failed_is_not_taken_for_someone_elses() {
        let platform = MemoryPlatform::new();
        let snapshot = two_revisions(&platform).await;
        platform.inject(Fault::After(PlatformError::Unavailable("503".into())));
        platform.inject_read_failure(PlatformError::Unavailable("429".into()));
        let split = ServiceUpdate::traffic(vec![
            TrafficTarget::to_revision("svc-1", 90),
            TrafficTarget::to_revision("svc-2", 10).tagged("canary"),
        ]);
        let result = write_guarded(
            &platform,
            &id(),
            &snapshot.etag,
            &split,
            RetryPolicy::default(),
        )
        .await
        .unwrap();
        assert_eq!(result.serving()[1], ("svc-2".to_string(), 10));
        assert_eq!(platform.writes(), 3, "applied once, not twice");
    }

    /// The same, when the change is not there: someone else wrote the service.
    #[tokio::test(start_paused = true)]
    async fn an_unknown_write_then_another_writer_is_still_a_conflict() {
        let platform = MemoryPlatform::new();
        let snapshot = two_revisions(&platform).await;
        platform.inject(Fault::Before(PlatformError::Unavailable("503".into())));
        platform.inject_read_failure(PlatformError::Unavailable("429".into()));
        platform.external_update(
            &id(),
            &ServiceUpdate::traffic(vec![TrafficTarget::to_revision("svc-1", 100)]),
        );
        let split = ServiceUpdate::traffic(vec![TrafficTarget::to_revision("svc-2", 100)]);
        let error = write_guarded(
            &platform,
            &id(),
            &snapshot.etag,
            &split,
            RetryPolicy::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(error, PlatformError::Conflict(id().path()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_before_applying_is_retried_with_the_same_etag() {
        let platform = MemoryPlatform::new();
        let snapshot = two_revisions(&platform).await;
        platform.inject(Fault::Before(PlatformError::Unavailable("503".into())));
        platform.inject(Fault::Before(PlatformError::Unavailable("429".into())));
        let split = ServiceUpdate::traffic(vec![TrafficTarget::to_revision("svc-2", 100)]);
        let result = write_guarded(
            &platform,
            &id(),
            &snapshot.etag,
            &split,
            RetryPolicy::default(),
        )
        .await
        .unwrap();
        assert_eq!(result.serving(), [("svc-2".to_string(), 100)]);
    }

    #[tokio::test(start_paused = true)]
    async fn another_writer_during_a_retry_is_a_conflict_not_an_overwrite() {
        let platform = MemoryPlatform::new();
        let snapshot = two_revisions(&platform).await;
        platform.inject(Fault::Before(PlatformError::Unavailable("503".into())));
        platform.external_update(
            &id(),
            &ServiceUpdate::traffic(vec![TrafficTarget::to_revision("svc-1", 100)]),
        );
        let split = ServiceUpdate::traffic(vec![TrafficTarget::to_revision("svc-2", 100)]);
        let error = write_guarded(
            &platform,
            &id(),
            &snapshot.etag,
            &split,
            RetryPolicy::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(error, PlatformError::Conflict(id().path()));
        let now = platform.service(&id()).await.unwrap().unwrap();
        assert_eq!(now.serving(), [("svc-1".to_string(), 100)]);
    }
}
