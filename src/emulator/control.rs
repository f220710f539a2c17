//! The control plane: what each Admin API call does to the state, and the background work it
//! starts (revision containers, router changes), ending in long-running operations.
//!
//! Order of effects, for every call: validate and change the state in one [`Store::mutate`]
//! (persisted before anything else happens), then update the routers, then start containers.
//! An operation that waits for a revision finishes when its startup probe passes (`response` is
//! the service) or fails (`error` says why, and the service keeps serving what it served).

use std::{sync::Arc, time::Duration};

use google_cloud_run_v2::model::{Revision, Service};
use google_cloud_wkt as wkt;
use serde_json::{json, Value};

use super::{
    api_error::{ApiError, Code},
    faults::Faults,
    logging::LogSource,
    resources::{
        self, merge_update, new_revision, refresh_status, revision_name, revision_number,
        revision_phase, route_table, serving_revisions, set_revision_phase, template_changed,
        validate_annotations, validate_service_id, validate_traffic, Phase, ServiceName,
    },
    router::Routers,
    runtime::{RevisionLaunch, Runtime},
    store::{OperationKind, OperationRecord, ServiceRecord, State, Store},
};

const SERVICE_TYPE: &str = "type.googleapis.com/google.cloud.run.v2.Service";
const REVISION_TYPE: &str = "type.googleapis.com/google.cloud.run.v2.Revision";

/// Default and maximum page sizes of list calls.
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

/// The control plane of one emulator.
#[derive(Debug)]
pub struct Controller {
    /// The state.
    pub store: Store,
    /// Containers.
    pub runtime: Arc<Runtime>,
    /// Routers.
    pub routers: Arc<Routers>,
    /// Injected faults.
    pub faults: Arc<Faults>,
    /// How long a revision may take to pass its startup probe.
    pub startup_timeout: Duration,
}

/// The current time as a protobuf timestamp.
pub fn now() -> wkt::Timestamp {
    wkt::Timestamp::try_from(std::time::SystemTime::now())
        .unwrap_or_else(|_| wkt::Timestamp::clamp(0, 0))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, ApiError> {
    serde_json::to_value(value)
        .map_err(|error| ApiError::internal(format!("cannot encode a resource: {error}")))
}

fn typed(value: Value, type_url: &str) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("@type".to_string(), Value::String(type_url.to_string()));
    if let Value::Object(fields) = value {
        object.extend(fields);
    }
    Value::Object(object)
}

/// A page of a sorted list: `(items, next page token)`.
pub(super) fn page<T: Clone>(
    items: &[T],
    page_size: usize,
    page_token: &str,
) -> Result<(Vec<T>, String), ApiError> {
    let offset: usize = if page_token.is_empty() {
        0
    } else {
        page_token
            .parse()
            .map_err(|_| ApiError::invalid(format!("pageToken `{page_token}` is not valid")))?
    };
    let size = match page_size {
        0 => DEFAULT_PAGE_SIZE,
        size => size.min(MAX_PAGE_SIZE),
    };
    let selected: Vec<T> = items.iter().skip(offset).take(size).cloned().collect();
    let next = if offset + size < items.len() {
        (offset + size).to_string()
    } else {
        String::new()
    };
    Ok((selected, next))
}

/// Parses `projects/P/locations/L`.
fn parse_parent(parent: &str) -> Result<(String, String), ApiError> {
    match parent.split('/').collect::<Vec<_>>().as_slice() {
        ["projects", project, "locations", location]
            if !project.is_empty() && !location.is_empty() =>
        {
            Ok((project.to_string(), location.to_string()))
        }
        _ => Err(ApiError::invalid(format!(
            "parent `{parent}` is not of the form projects/PROJECT/locations/LOCATION"
        ))),
    }
}

fn service_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "Resource '{name}' of kind 'SERVICE' was not found."
    ))
}

fn new_operation(
    state: &mut State,
    location_of: &str,
    kind: OperationKind,
    service: &str,
) -> String {
    state.next_operation += 1;
    let parent = ServiceName::parse(service)
        .map(|name| format!("projects/{}/locations/{}", name.project, name.location))
        .unwrap_or_else(|| location_of.to_string());
    let name = format!("{parent}/operations/{}", resources::uid());
    state.operations.insert(
        name.clone(),
        OperationRecord {
            name: name.clone(),
            sequence: state.next_operation,
            kind,
            service: service.to_string(),
            waiting_for: None,
            done: false,
            error: None,
            response: None,
        },
    );
    name
}

/// What an update did: the operation, and the revision to start, if any.
struct Applied {
    operation: String,
    new_revision: Option<String>,
}

impl Controller {
    /// Answers an operation by name, as `google.longrunning.Operation` JSON.
    pub fn operation(&self, name: &str) -> Result<Value, ApiError> {
        self.store.read(|state| {
            let operation = state
                .operations
                .get(name)
                .ok_or_else(|| ApiError::not_found(format!("Operation '{name}' was not found.")))?;
            operation_json(state, operation)
        })
    }

    /// Lists operations of a location.
    pub fn list_operations(
        &self,
        parent: &str,
        page_size: usize,
        page_token: &str,
    ) -> Result<Value, ApiError> {
        self.store.read(|state| {
            let prefix = format!("{parent}/operations/");
            let mut operations: Vec<&OperationRecord> = state
                .operations
                .values()
                .filter(|operation| operation.name.starts_with(&prefix))
                .collect();
            operations.sort_by_key(|operation| operation.sequence);
            let (selected, next) = page(&operations, page_size, page_token)?;
            let operations = selected
                .into_iter()
                .map(|operation| operation_json(state, operation))
                .collect::<Result<Vec<_>, _>>()?;
            let mut body = json!({ "operations": operations });
            if !next.is_empty() {
                body["nextPageToken"] = Value::String(next);
            }
            Ok(body)
        })
    }

    /// Forgets an operation.
    pub fn delete_operation(&self, name: &str) -> Result<Value, ApiError> {
        self.store.mutate(|state| {
            state
                .operations
                .remove(name)
                .map(|_| json!({}))
                .ok_or_else(|| ApiError::not_found(format!("Operation '{name}' was not found.")))
        })
    }

    /// `GetService`.
    pub fn get_service(&self, name: &str) -> Result<Value, ApiError> {
        self.store.read(|state| {
            let record = state
                .services
                .get(name)
                .ok_or_else(|| service_not_found(name))?;
            to_json(&record.service)
        })
    }

    /// `ListServices`.
    pub fn list_services(
        &self,
        parent: &str,
        page_size: usize,
        page_token: &str,
    ) -> Result<Value, ApiError> {
        parse_parent(parent)?;
        self.store.read(|state| {
            let prefix = format!("{parent}/services/");
            let services: Vec<&Service> = state
                .services
                .iter()
                .filter(|(name, _)| name.starts_with(&prefix))
                .map(|(_, record)| &record.service)
                .collect();
            let (selected, next) = page(&services, page_size, page_token)?;
            let mut body =
                json!({ "services": selected.iter().map(to_json).collect::<Result<Vec<_>, _>>()? });
            if !next.is_empty() {
                body["nextPageToken"] = Value::String(next);
            }
            Ok(body)
        })
    }

    /// `GetRevision`.
    pub fn get_revision(&self, name: &str) -> Result<Value, ApiError> {
        let (service, short) = split_revision_name(name)?;
        self.store.read(|state| {
            let revision = state
                .services
                .get(&service)
                .and_then(|record| record.revisions.get(&short))
                .ok_or_else(|| {
                    ApiError::not_found(format!(
                        "Resource '{name}' of kind 'REVISION' was not found."
                    ))
                })?;
            to_json(revision)
        })
    }

    /// `ListRevisions`, newest first.
    pub fn list_revisions(
        &self,
        parent: &str,
        page_size: usize,
        page_token: &str,
    ) -> Result<Value, ApiError> {
        self.store.read(|state| {
            let record = state.services.get(parent).ok_or_else(|| service_not_found(parent))?;
            let mut revisions: Vec<(&String, &Revision)> = record.revisions.iter().collect();
            revisions.sort_by_key(|(name, _)| std::cmp::Reverse(revision_number(name)));
            let revisions: Vec<&Revision> = revisions.into_iter().map(|(_, revision)| revision).collect();
            let (selected, next) = page(&revisions, page_size, page_token)?;
            let mut body = json!({ "revisions": selected.iter().map(to_json).collect::<Result<Vec<_>, _>>()? });
            if !next.is_empty() {
                body["nextPageToken"] = Value::String(next);
            }
            Ok(body)
        })
    }

    /// `CreateService`.
    pub fn create_service(
        self: &Arc<Self>,
        parent: &str,
        service_id: &str,
        request: Service,
        validate_only: bool,
    ) -> Result<Value, ApiError> {
        let (project, location) = parse_parent(parent)?;
        if service_id.is_empty() {
            return Err(ApiError::invalid("serviceId is required"));
        }
        validate_service_id(service_id)?;
        validate_annotations(&request.annotations)?;
        if !request.name.is_empty() {
            return Err(ApiError::invalid(
                "service.name must be empty: the name comes from the parent and serviceId",
            ));
        }
        let name = ServiceName {
            project,
            location,
            service: service_id.to_string(),
        }
        .full();
        let change = |state: &mut State, allocate: bool| -> Result<Applied, ApiError> {
            if state.services.contains_key(&name) {
                return Err(ApiError::new(
                    Code::AlreadyExists,
                    format!("Resource '{service_id}' already exists."),
                ));
            }
            let now = now();
            let mut service = Service::new();
            service.name = name.clone();
            service.uid = resources::uid();
            service.create_time = Some(now);
            service.creator = "emulator@localhost".to_string();
            let requested = merge_update(&service, &request, None)?;
            let mut record = ServiceRecord {
                service,
                revisions: Default::default(),
                revision_counter: 0,
                port: 0,
                tag_ports: Default::default(),
            };
            let new_revision = self.apply_spec(&mut record, requested, &now, allocate)?;
            state.services.insert(name.clone(), record);
            let operation = new_operation(state, parent, OperationKind::Create, &name);
            finish_or_wait(state, &operation, &name, new_revision.as_deref())?;
            Ok(Applied {
                operation,
                new_revision,
            })
        };
        self.run_change(&name, validate_only, change)
    }

    /// `UpdateService` (PATCH): refused with `ABORTED` when the request carries a stale etag.
    pub fn update_service(
        self: &Arc<Self>,
        name: &str,
        request: Service,
        update_mask: Option<&str>,
        allow_missing: bool,
        validate_only: bool,
    ) -> Result<Value, ApiError> {
        let parsed = ServiceName::parse(name)
            .ok_or_else(|| ApiError::invalid(format!("`{name}` is not a service name")))?;
        let exists = self.store.read(|state| state.services.contains_key(name));
        if !exists {
            if allow_missing {
                let mut request = request;
                request.name.clear();
                let parent = format!("projects/{}/locations/{}", parsed.project, parsed.location);
                return self.create_service(&parent, &parsed.service, request, validate_only);
            }
            return Err(service_not_found(name));
        }
        let change = |state: &mut State, allocate: bool| -> Result<Applied, ApiError> {
            let record = state
                .services
                .get_mut(name)
                .ok_or_else(|| service_not_found(name))?;
            // Concurrent writers are detected, never silently overwritten: an update carrying
            // an etag must carry the current one.
            if !request.etag.is_empty() && request.etag != record.service.etag {
                return Err(ApiError::new(
                    Code::Aborted,
                    format!(
                        "The etag of service '{}' does not match: it was modified since it was \
                         read (current etag {}). Read it again and retry.",
                        parsed.service, record.service.etag
                    ),
                ));
            }
            let now = now();
            let requested = merge_update(&record.service, &request, update_mask)?;
            let new_revision = self.apply_spec(record, requested, &now, allocate)?;
            let operation = new_operation(state, name, OperationKind::Update, name);
            finish_or_wait(state, &operation, name, new_revision.as_deref())?;
            Ok(Applied {
                operation,
                new_revision,
            })
        };
        self.run_change(name, validate_only, change)
    }

    /// Applies a change (or only validates it on a copy), then updates routers and starts the
    /// new revision's container.
    fn run_change(
        self: &Arc<Self>,
        name: &str,
        validate_only: bool,
        change: impl Fn(&mut State, bool) -> Result<Applied, ApiError>,
    ) -> Result<Value, ApiError> {
        if validate_only {
            return self.store.read(|state| {
                let mut copy = state.clone();
                let applied = change(&mut copy, false)?;
                let record = copy
                    .services
                    .get(name)
                    .ok_or_else(|| service_not_found(name))?;
                let mut operation = copy
                    .operations
                    .get(&applied.operation)
                    .cloned()
                    .ok_or_else(|| ApiError::internal("operation vanished"))?;
                operation.done = true;
                operation.response = Some(to_json(&record.service)?);
                operation_json(&copy, &operation)
            });
        }
        let applied = self.store.mutate_and_publish(
            |state| change(state, true),
            |state, _| self.publish_routes(state, name),
        )?;
        if let Some(revision) = applied.new_revision {
            let controller = Arc::clone(self);
            let service = name.to_string();
            tokio::spawn(async move { controller.launch(service, revision).await });
        }
        self.operation(&applied.operation)
    }

    /// Puts a requested spec into a record: a new revision when the template changed, traffic
    /// validated, generation bumped, router ports assigned, status recomputed. Returns the new
    /// revision's short name.
    fn apply_spec(
        self: &Arc<Self>,
        record: &mut ServiceRecord,
        mut requested: Service,
        now: &wkt::Timestamp,
        allocate: bool,
    ) -> Result<Option<String>, ApiError> {
        let service_full = record.service.name.clone();
        let service_id = ServiceName::parse(&service_full)
            .map(|name| name.service)
            .unwrap_or_default();
        let is_new = record.revisions.is_empty() && record.revision_counter == 0;
        let changed = is_new
            || template_changed(
                record.service.template.as_ref(),
                requested.template.as_ref(),
            )?;
        let mut new_name = None;
        if changed {
            let template = requested
                .template
                .as_ref()
                .ok_or_else(|| ApiError::invalid("service.template is required"))?;
            let container = template.containers.first().ok_or_else(|| {
                ApiError::invalid("template.containers must list at least one container")
            })?;
            if container.image.is_empty() {
                return Err(ApiError::invalid(
                    "template.containers[0].image is required",
                ));
            }
            let number = record.revision_counter + 1;
            let name = if template.revision.is_empty() {
                revision_name(&service_id, number, &resources::random_suffix())
            } else {
                if !template.revision.starts_with(&format!("{service_id}-")) {
                    return Err(ApiError::invalid(format!(
                        "template.revision `{}` must start with the service name followed by a \
                         hyphen (`{service_id}-`)",
                        template.revision
                    )));
                }
                template.revision.clone()
            };
            if record.revisions.contains_key(&name) {
                return Err(ApiError::new(
                    Code::AlreadyExists,
                    format!("Revision named '{name}' with different configuration already exists."),
                ));
            }
            new_name = Some(name);
        } else if let Some(template) = &requested.template {
            if !template.revision.is_empty()
                && record.service.template.as_ref().map(|t| &t.revision) != Some(&template.revision)
                && !record.revisions.contains_key(&template.revision)
            {
                return Err(ApiError::invalid(format!(
                    "template.revision `{}` is new but the template did not change",
                    template.revision
                )));
            }
        }
        requested.traffic =
            validate_traffic(&requested.traffic, &record.revisions, new_name.as_deref())?;
        validate_annotations(&requested.annotations)?;
        requested.generation = record.service.generation + 1;
        requested.update_time = Some(*now);
        requested.last_modifier = "emulator@localhost".to_string();
        record.service = requested;
        if let Some(name) = &new_name {
            record.revision_counter += 1;
            let revision = new_revision(&record.service, name, now)?;
            record.revisions.insert(name.clone(), revision);
        }
        if allocate {
            record.port = self.routers.ensure_port(&service_full, None, record.port)?;
            let mut tag_ports = std::collections::BTreeMap::new();
            for target in &record.service.traffic {
                if target.tag.is_empty() {
                    continue;
                }
                let preferred = record.tag_ports.get(&target.tag).copied().unwrap_or(0);
                let port = self
                    .routers
                    .ensure_port(&service_full, Some(&target.tag), preferred)?;
                tag_ports.insert(target.tag.clone(), port);
            }
            record.tag_ports = tag_ports;
        }
        refresh_status(record, now);
        Ok(new_name)
    }

    /// Gives the routers a service's current routing (or closes them when it is gone).
    fn publish_routes(&self, state: &State, service_full: &str) {
        match state.services.get(service_full) {
            Some(record) => self.routers.set_routes(service_full, route_table(record)),
            None => self.routers.remove_service(service_full),
        }
    }

    /// `DeleteService`: stops its containers and routers; the operation is done at once.
    pub fn delete_service(
        self: &Arc<Self>,
        name: &str,
        etag: &str,
        validate_only: bool,
    ) -> Result<Value, ApiError> {
        let check = |state: &State| -> Result<ServiceRecord, ApiError> {
            let record = state
                .services
                .get(name)
                .ok_or_else(|| service_not_found(name))?;
            if !etag.is_empty() && etag != record.service.etag {
                return Err(ApiError::new(
                    Code::Aborted,
                    format!(
                        "The etag of '{name}' does not match: it was modified since it was read."
                    ),
                ));
            }
            Ok(record.clone())
        };
        if validate_only {
            return self.store.read(|state| {
                let record = check(state)?;
                Ok(
                    json!({"name": format!("{name}/operations/validate"), "done": true,
                          "response": typed(to_json(&record.service)?, SERVICE_TYPE)}),
                )
            });
        }
        let (operation, record) = self.store.mutate_and_publish(
            |state| {
                let record = check(state)?;
                state.services.remove(name);
                let mut deleted = record.service.clone();
                deleted.delete_time = Some(now());
                let operation = new_operation(state, name, OperationKind::Delete, name);
                for pending in state.operations.values_mut() {
                    if pending.service == name && !pending.done {
                        pending.done = true;
                        pending.error = Some(ApiError::new(
                            Code::Aborted,
                            format!("Service '{name}' was deleted."),
                        ));
                    }
                }
                if let Some(record) = state.operations.get_mut(&operation) {
                    record.done = true;
                    record.error = None;
                    record.response = Some(to_json(&deleted)?);
                }
                Ok((operation, record))
            },
            |state, _| self.publish_routes(state, name),
        )?;
        let runtime = Arc::clone(&self.runtime);
        let revisions: Vec<String> = record
            .revisions
            .values()
            .map(|revision| revision.name.clone())
            .collect();
        tokio::spawn(async move {
            for revision in revisions {
                runtime.stop(&revision).await;
            }
        });
        self.operation(&operation)
    }

    /// `DeleteRevision`: refused while the revision serves traffic or a tag.
    pub fn delete_revision(
        self: &Arc<Self>,
        name: &str,
        etag: &str,
        validate_only: bool,
    ) -> Result<Value, ApiError> {
        let (service, short) = split_revision_name(name)?;
        let change = |state: &mut State| -> Result<(String, Revision), ApiError> {
            let record = state.services.get_mut(&service).ok_or_else(|| {
                ApiError::not_found(format!(
                    "Resource '{name}' of kind 'REVISION' was not found."
                ))
            })?;
            let revision = record.revisions.get(&short).cloned().ok_or_else(|| {
                ApiError::not_found(format!(
                    "Resource '{name}' of kind 'REVISION' was not found."
                ))
            })?;
            if !etag.is_empty() && etag != revision.etag {
                return Err(ApiError::new(
                    Code::Aborted,
                    format!("The etag of '{name}' does not match."),
                ));
            }
            if serving_revisions(record).contains(&short) {
                return Err(ApiError::new(
                    Code::FailedPrecondition,
                    format!("Revision '{short}' is serving traffic or a tag and cannot be deleted; move its traffic first."),
                ));
            }
            let latest_created = record
                .service
                .latest_created_revision
                .ends_with(&format!("/{short}"));
            if latest_created && revision_phase(&revision) == Phase::Starting {
                return Err(ApiError::new(
                    Code::FailedPrecondition,
                    format!("Revision '{short}' is still being deployed and cannot be deleted."),
                ));
            }
            record.revisions.remove(&short);
            refresh_status(record, &now());
            let operation = new_operation(state, &service, OperationKind::DeleteRevision, &service);
            if let Some(record) = state.operations.get_mut(&operation) {
                record.done = true;
                record.response = Some(to_json(&revision)?);
            }
            Ok((operation, revision))
        };
        if validate_only {
            return self.store.read(|state| {
                let mut copy = state.clone();
                let (_, revision) = change(&mut copy)?;
                Ok(
                    json!({"name": format!("{name}/operations/validate"), "done": true,
                          "response": typed(to_json(&revision)?, REVISION_TYPE)}),
                )
            });
        }
        let (operation, revision) = self.store.mutate(change)?;
        let runtime = Arc::clone(&self.runtime);
        tokio::spawn(async move { runtime.stop(&revision.name).await });
        self.operation(&operation)
    }

    /// Starts a revision's container and records the outcome.
    async fn launch(self: Arc<Self>, service_full: String, revision_short: String) {
        let launch = self.store.read(|state| {
            let record = state.services.get(&service_full)?;
            let revision = record.revisions.get(&revision_short)?;
            let name = ServiceName::parse(&service_full)?;
            Some(RevisionLaunch {
                revision_full: revision.name.clone(),
                source: LogSource {
                    project: name.project,
                    location: name.location,
                    service: name.service,
                    revision: revision_short.clone(),
                },
                container: revision.containers.first().cloned().unwrap_or_default(),
                startup_timeout: self.startup_timeout,
            })
        });
        let Some(launch) = launch else { return };
        let outcome = if self.faults.fails_start(&launch.source.service) {
            Err(
                "injected fault: the container failed to start (faults.failRevisionStart)."
                    .to_string(),
            )
        } else {
            self.runtime.start(&launch).await.map(|_| ())
        };
        self.finish_launch(
            &service_full,
            &revision_short,
            &launch.revision_full,
            outcome,
        )
        .await;
    }

    async fn finish_launch(
        &self,
        service_full: &str,
        revision_short: &str,
        revision_full: &str,
        outcome: Result<(), String>,
    ) {
        let phase = match outcome {
            Ok(()) => Phase::Ready,
            Err(reason) => Phase::Failed(reason),
        };
        let result = self.store.mutate_and_publish(
            |state| {
                let Some(record) = state.services.get_mut(service_full) else {
                    return Ok(None);
                };
                let Some(revision) = record.revisions.get_mut(revision_short) else {
                    return Ok(None);
                };
                let now = now();
                // A restarted revision that is Ready again is unchanged: its resource (and the
                // service's etag) stay as they were.
                if revision_phase(revision) != phase {
                    set_revision_phase(revision, &phase, &now);
                }
                refresh_status(record, &now);
                let service_json = to_json(&record.service)?;
                let terminal_message = record
                    .service
                    .terminal_condition
                    .as_ref()
                    .map(|condition| condition.message.clone())
                    .unwrap_or_default();
                for operation in state.operations.values_mut() {
                    if operation.done
                        || operation.service != service_full
                        || operation.waiting_for.as_deref() != Some(revision_short)
                    {
                        continue;
                    }
                    operation.done = true;
                    match &phase {
                        Phase::Failed(reason) => {
                            let message = if terminal_message.is_empty() {
                                reason.clone()
                            } else {
                                terminal_message.clone()
                            };
                            operation.error =
                                Some(ApiError::new(Code::FailedPrecondition, message));
                        }
                        _ => operation.response = Some(service_json.clone()),
                    }
                }
                Ok(Some(()))
            },
            |state, _| self.publish_routes(state, service_full),
        );
        match result {
            Ok(Some(())) => {}
            // The service or revision was deleted while it started: its container must go too.
            Ok(None) => self.runtime.stop(revision_full).await,
            Err(error) => tracing::error!("cannot record the start of `{revision_full}`: {error}"),
        }
    }

    /// Brings a restarted emulator back: removes containers left by a previous run, reopens
    /// every router on its former port when free, and starts the containers of every revision
    /// that was Ready (waiting for them) or still starting (in the background).
    pub async fn restore(self: &Arc<Self>) -> Result<(), ApiError> {
        self.runtime.remove_all().await;
        self.store.mutate_and_publish(
            |state| {
                for (name, record) in state.services.iter_mut() {
                    record.port = self.routers.ensure_port(name, None, record.port)?;
                    let tags: Vec<(String, u16)> = record
                        .tag_ports
                        .iter()
                        .map(|(tag, port)| (tag.clone(), *port))
                        .collect();
                    for (tag, port) in tags {
                        let port = self.routers.ensure_port(name, Some(&tag), port)?;
                        record.tag_ports.insert(tag, port);
                    }
                    refresh_status(record, &now());
                }
                Ok(())
            },
            |state, _| {
                for name in state.services.keys() {
                    self.publish_routes(state, name);
                }
            },
        )?;
        let (ready, starting): (Vec<_>, Vec<_>) = self.store.read(|state| {
            state
                .services
                .iter()
                .flat_map(|(service, record)| {
                    record.revisions.iter().filter_map(
                        move |(short, revision)| match revision_phase(revision) {
                            Phase::Failed(_) => None,
                            phase => Some((phase == Phase::Ready, service.clone(), short.clone())),
                        },
                    )
                })
                .partition(|(is_ready, _, _)| *is_ready)
        });
        for (_, service, revision) in starting {
            let controller = Arc::clone(self);
            tokio::spawn(async move { controller.launch(service, revision).await });
        }
        let launches = ready.into_iter().map(|(_, service, revision)| {
            let controller = Arc::clone(self);
            async move { controller.launch(service, revision).await }
        });
        futures::future::join_all(launches).await;
        Ok(())
    }
}

/// Marks an operation as waiting for a revision, or done now when there is none to wait for.
fn finish_or_wait(
    state: &mut State,
    operation: &str,
    service: &str,
    revision: Option<&str>,
) -> Result<(), ApiError> {
    let snapshot = state
        .services
        .get(service)
        .map(|record| to_json(&record.service))
        .transpose()?;
    let record = state
        .operations
        .get_mut(operation)
        .ok_or_else(|| ApiError::internal("operation vanished"))?;
    match revision {
        Some(revision) => record.waiting_for = Some(revision.to_string()),
        None => {
            record.done = true;
            record.response = snapshot;
        }
    }
    Ok(())
}

fn split_revision_name(name: &str) -> Result<(String, String), ApiError> {
    let (service, revision) = name
        .split_once("/revisions/")
        .filter(|(service, revision)| {
            ServiceName::parse(service).is_some() && !revision.contains('/') && !revision.is_empty()
        })
        .ok_or_else(|| ApiError::invalid(format!("`{name}` is not a revision name")))?;
    Ok((service.to_string(), revision.to_string()))
}

/// The `google.longrunning.Operation` JSON of an operation: metadata is the resource as it is
/// now, `response` the resource when the operation finished.
fn operation_json(state: &State, operation: &OperationRecord) -> Result<Value, ApiError> {
    let type_url = match operation.kind {
        OperationKind::DeleteRevision => REVISION_TYPE,
        _ => SERVICE_TYPE,
    };
    let current = match operation.kind {
        OperationKind::DeleteRevision => None,
        _ => state
            .services
            .get(&operation.service)
            .map(|record| to_json(&record.service))
            .transpose()?,
    };
    let metadata = current.or_else(|| operation.response.clone());
    let mut body = json!({ "name": operation.name, "done": operation.done });
    if let Some(metadata) = metadata {
        body["metadata"] = typed(metadata, type_url);
    }
    if operation.done {
        if let Some(error) = &operation.error {
            body["error"] = error.rpc_status();
        } else if let Some(response) = &operation.response {
            body["response"] = typed(response.clone(), type_url);
        }
    }
    Ok(body)
}
