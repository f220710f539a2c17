//! Cloud Run semantics as pure functions over the official model types: resource names,
//! revision naming, merging an update (with or without `updateMask`), traffic validation, the
//! status a service reports (`trafficStatuses`, `latestReadyRevision`, conditions, `etag`), and
//! the routing table a service's traffic resolves to.
//!
//! Nothing here touches Docker, sockets or files, so every rule is unit-tested by tables.

use std::collections::{BTreeMap, BTreeSet};

use google_cloud_wkt as wkt;

use google_cloud_run_v2::model::{
    condition::{Reasons, RevisionReason, Severity, State as ConditionState},
    Condition, Revision, RevisionTemplate, Service, TrafficTarget, TrafficTargetAllocationType,
    TrafficTargetStatus,
};
use serde_json::Value;

use super::{
    api_error::{ApiError, Code},
    store::ServiceRecord,
};

/// Fields of a Service that only the system writes; ignored in requests.
const OUTPUT_ONLY_FIELDS: &[&str] = &[
    "name",
    "uid",
    "generation",
    "createTime",
    "updateTime",
    "deleteTime",
    "expireTime",
    "creator",
    "lastModifier",
    "observedGeneration",
    "terminalCondition",
    "conditions",
    "latestReadyRevision",
    "latestCreatedRevision",
    "trafficStatuses",
    "uri",
    "urls",
    "reconciling",
    "etag",
    "satisfiesPzs",
];

/// A parsed `projects/P/locations/L/services/S`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceName {
    /// Project id.
    pub project: String,
    /// Region.
    pub location: String,
    /// Service id.
    pub service: String,
}

impl ServiceName {
    /// The full resource name.
    pub fn full(&self) -> String {
        format!(
            "projects/{}/locations/{}/services/{}",
            self.project, self.location, self.service
        )
    }

    /// Parses a full service name.
    pub fn parse(name: &str) -> Option<Self> {
        let parts: Vec<&str> = name.split('/').collect();
        match parts.as_slice() {
            ["projects", project, "locations", location, "services", service]
                if !project.is_empty() && !location.is_empty() && !service.is_empty() =>
            {
                Some(Self {
                    project: project.to_string(),
                    location: location.to_string(),
                    service: service.to_string(),
                })
            }
            _ => None,
        }
    }
}

/// Checks a service id the way Cloud Run does: lowercase letters, digits and hyphens, starting
/// with a letter, not ending with a hyphen, at most 49 characters.
pub fn validate_service_id(id: &str) -> Result<(), ApiError> {
    let valid = !id.is_empty()
        && id.len() <= 49
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "service id `{id}` is invalid: use at most 49 lowercase letters, digits or hyphens, \
             starting with a letter and not ending with a hyphen"
        )))
    }
}

/// Kubernetes' limit on all annotations of one object together (keys and values), which Cloud
/// Run's `Service.annotations` follows ("Kubernetes annotations' namespacing, limits, and
/// rules").
pub const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// Checks a service's annotations as Cloud Run does: at most [`ANNOTATIONS_MAX_BYTES`] in all,
/// and none in the namespaces Cloud Run reserves for itself.
pub fn validate_annotations<'a>(
    annotations: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), ApiError> {
    let mut total = 0;
    for (key, value) in annotations {
        total += key.len() + value.len();
        let namespace = key.split_once('/').map_or("", |(prefix, _)| prefix);
        if [
            "run.googleapis.com",
            "cloud.googleapis.com",
            "serving.knative.dev",
            "autoscaling.knative.dev",
        ]
        .contains(&namespace)
        {
            return Err(ApiError::invalid(format!(
                "annotation `{key}`: the `{namespace}` namespace is not supported in Cloud Run API v2"
            )));
        }
    }
    if total > ANNOTATIONS_MAX_BYTES {
        return Err(ApiError::invalid(format!(
            "metadata.annotations: Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes (got {total})"
        )));
    }
    Ok(())
}

/// The name of the `number`th revision of a service: `SERVICE-0000N-xxx`.
pub fn revision_name(service: &str, number: u32, suffix: &str) -> String {
    format!("{service}-{number:05}-{suffix}")
}

/// Three random lowercase letters, as Cloud Run appends to generated revision names.
pub fn random_suffix() -> String {
    (0..3)
        .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
        .collect()
}

fn to_value<T: serde::Serialize>(value: &T) -> Result<Value, ApiError> {
    serde_json::to_value(value)
        .map_err(|error| ApiError::internal(format!("cannot encode a resource: {error}")))
}

fn from_value<T: serde::de::DeserializeOwned>(value: Value, what: &str) -> Result<T, ApiError> {
    serde_json::from_value(value)
        .map_err(|error| ApiError::invalid(format!("invalid {what}: {error}")))
}

/// Converts a field-mask path segment to the JSON (camelCase) name.
fn camel_case(segment: &str) -> String {
    let mut result = String::with_capacity(segment.len());
    let mut upper = false;
    for character in segment.chars() {
        if character == '_' {
            upper = true;
        } else if upper {
            result.extend(character.to_uppercase());
            upper = false;
        } else {
            result.push(character);
        }
    }
    result
}

/// The service that an update request asks for: without a mask, every writable field of the
/// request replaces the current one; with a mask, only the listed paths are copied (a path
/// absent from the request clears the field). Output-only fields always stay as they are.
pub fn merge_update(
    current: &Service,
    request: &Service,
    update_mask: Option<&str>,
) -> Result<Service, ApiError> {
    let current_value = to_value(current)?;
    let request_value = to_value(request)?;
    let (Value::Object(mut merged), Value::Object(requested)) = (current_value, request_value)
    else {
        return Err(ApiError::internal(
            "a service did not encode as a JSON object",
        ));
    };
    match update_mask.filter(|mask| !mask.trim().is_empty()) {
        None => {
            merged.retain(|key, _| OUTPUT_ONLY_FIELDS.contains(&key.as_str()));
            for (key, value) in requested {
                if !OUTPUT_ONLY_FIELDS.contains(&key.as_str()) {
                    merged.insert(key, value);
                }
            }
        }
        Some(mask) => {
            for path in mask
                .split(',')
                .map(str::trim)
                .filter(|path| !path.is_empty())
            {
                let segments: Vec<String> = path.split('.').map(camel_case).collect();
                if OUTPUT_ONLY_FIELDS.contains(&segments[0].as_str()) {
                    return Err(ApiError::invalid(format!(
                        "updateMask path `{path}` names an output-only field"
                    )));
                }
                let source = lookup(&requested, &segments).cloned();
                assign(&mut merged, &segments, source);
            }
        }
    }
    from_value(Value::Object(merged), "service")
}

fn lookup<'a>(object: &'a serde_json::Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let value = object.get(first)?;
    if rest.is_empty() {
        Some(value)
    } else {
        lookup(value.as_object()?, rest)
    }
}

fn assign(object: &mut serde_json::Map<String, Value>, path: &[String], value: Option<Value>) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        match value {
            Some(value) => {
                object.insert(first.clone(), value);
            }
            None => {
                object.remove(first);
            }
        }
        return;
    }
    let child = object
        .entry(first.clone())
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if !child.is_object() {
        *child = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(child) = child {
        assign(child, rest, value);
    }
}

/// True when two templates differ in anything that makes a new revision (Cloud Run creates a
/// revision for every template change, and for none otherwise).
pub fn template_changed(
    previous: Option<&RevisionTemplate>,
    next: Option<&RevisionTemplate>,
) -> Result<bool, ApiError> {
    Ok(to_value(&previous)? != to_value(&next)?)
}

/// The traffic of a service after validation: an empty list means 100% to the latest ready
/// revision; percentages are 0–100 and sum to 100; revision targets name existing, non-failed
/// revisions (or `new_revision`, the one this request creates); tags are unique and valid.
pub fn validate_traffic(
    traffic: &[TrafficTarget],
    revisions: &BTreeMap<String, Revision>,
    new_revision: Option<&str>,
) -> Result<Vec<TrafficTarget>, ApiError> {
    if traffic.is_empty() {
        let mut latest = TrafficTarget::new();
        latest.r#type = TrafficTargetAllocationType::Latest;
        latest.percent = 100;
        return Ok(vec![latest]);
    }
    let mut total = 0i64;
    let mut tags = BTreeSet::new();
    for (index, target) in traffic.iter().enumerate() {
        if !(0..=100).contains(&target.percent) {
            return Err(ApiError::invalid(format!(
                "traffic[{index}].percent is {}: it must be between 0 and 100",
                target.percent
            )));
        }
        total += i64::from(target.percent);
        match &target.r#type {
            TrafficTargetAllocationType::Latest => {
                if !target.revision.is_empty() {
                    return Err(ApiError::invalid(format!(
                        "traffic[{index}] has type LATEST and names revision `{}`: use one or \
                         the other",
                        target.revision
                    )));
                }
            }
            TrafficTargetAllocationType::Revision => {
                if target.revision.is_empty() {
                    return Err(ApiError::invalid(format!(
                        "traffic[{index}] has type REVISION but no revision name"
                    )));
                }
                let is_new = new_revision == Some(target.revision.as_str());
                match revisions.get(&target.revision) {
                    None if !is_new => {
                        return Err(ApiError::invalid(format!(
                            "revision `{}` named in traffic[{index}] does not exist",
                            target.revision
                        )));
                    }
                    Some(revision) if matches!(revision_phase(revision), Phase::Failed(_)) => {
                        return Err(ApiError::new(
                            Code::FailedPrecondition,
                            format!(
                                "revision `{}` named in traffic[{index}] failed and cannot \
                                 serve traffic",
                                target.revision
                            ),
                        ));
                    }
                    _ => {}
                }
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "traffic[{index}] has type {other:?}: use REVISION or LATEST"
                )));
            }
        }
        if !target.tag.is_empty() {
            validate_tag(&target.tag)?;
            if !tags.insert(target.tag.clone()) {
                return Err(ApiError::invalid(format!(
                    "tag `{}` is used by more than one traffic target",
                    target.tag
                )));
            }
        }
    }
    if total != 100 {
        return Err(ApiError::invalid(format!(
            "traffic percentages sum to {total}: they must sum to 100"
        )));
    }
    Ok(traffic.to_vec())
}

fn validate_tag(tag: &str) -> Result<(), ApiError> {
    let valid = tag.len() <= 46
        && tag.starts_with(|c: char| c.is_ascii_lowercase())
        && !tag.ends_with('-')
        && !tag.contains("--")
        && tag
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "tag `{tag}` is invalid: use at most 46 lowercase letters, digits or single hyphens, \
             starting with a letter"
        )))
    }
}

/// Where a revision is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Its container is being started and probed.
    Starting,
    /// It passed its startup probe and can serve.
    Ready,
    /// It failed; the message says why.
    Failed(String),
}

/// The phase recorded in a revision's `Ready` condition.
pub fn revision_phase(revision: &Revision) -> Phase {
    let ready = revision
        .conditions
        .iter()
        .find(|condition| condition.r#type == "Ready");
    match ready.map(|condition| (&condition.state, condition)) {
        Some((ConditionState::ConditionSucceeded, _)) => Phase::Ready,
        Some((ConditionState::ConditionFailed, condition)) => {
            Phase::Failed(condition.message.clone())
        }
        _ => Phase::Starting,
    }
}

fn condition(kind: &str, phase: &Phase, now: &wkt::Timestamp) -> Condition {
    let mut condition = Condition::new();
    condition.r#type = kind.to_string();
    condition.last_transition_time = Some(*now);
    match phase {
        Phase::Starting => {
            condition.state = ConditionState::ConditionReconciling;
            condition.reasons = Some(Reasons::RevisionReason(RevisionReason::Pending));
        }
        Phase::Ready => condition.state = ConditionState::ConditionSucceeded,
        Phase::Failed(message) => {
            condition.state = ConditionState::ConditionFailed;
            condition.severity = Severity::Error;
            condition.message = message.clone();
            condition.reasons = Some(Reasons::RevisionReason(
                RevisionReason::HealthCheckContainerError,
            ));
        }
    }
    condition
}

/// Records a revision's phase in its conditions (`Ready`, `ContainerHealthy`,
/// `ResourcesAvailable`), `reconciling` and `observedGeneration`.
pub fn set_revision_phase(revision: &mut Revision, phase: &Phase, now: &wkt::Timestamp) {
    revision.conditions = vec![
        condition("Ready", phase, now),
        condition("ContainerHealthy", phase, now),
        condition("ResourcesAvailable", &Phase::Ready, now),
    ];
    revision.reconciling = *phase == Phase::Starting;
    revision.observed_generation = revision.generation;
    revision.update_time = Some(*now);
    revision.etag = etag_of(revision);
}

/// A new revision from the service's template, in phase `Starting`.
pub fn new_revision(
    service: &Service,
    short_name: &str,
    now: &wkt::Timestamp,
) -> Result<Revision, ApiError> {
    let template = service.template.clone().unwrap_or_default();
    let parsed = ServiceName::parse(&service.name)
        .ok_or_else(|| ApiError::internal(format!("bad service name `{}`", service.name)))?;
    let mut revision = Revision::new();
    revision.name = format!("{}/revisions/{short_name}", service.name);
    revision.uid = uid();
    revision.generation = 1;
    revision.labels = template.labels.clone();
    revision.labels.insert(
        "serving.knative.dev/service".to_string(),
        parsed.service.clone(),
    );
    revision.annotations = template.annotations.clone();
    revision.create_time = Some(*now);
    revision.service = parsed.service;
    revision.scaling = template.scaling.clone();
    revision.max_instance_request_concurrency = if template.max_instance_request_concurrency == 0 {
        80
    } else {
        template.max_instance_request_concurrency
    };
    revision.timeout = template.timeout.or_else(|| wkt::Duration::new(300, 0).ok());
    revision.service_account = template.service_account.clone();
    revision.containers = template.containers.clone();
    revision.volumes = template.volumes.clone();
    revision.execution_environment = template.execution_environment.clone();
    revision.session_affinity = template.session_affinity;
    revision.log_uri = format!("emulator://logs/{}", revision.name);
    set_revision_phase(&mut revision, &Phase::Starting, now);
    Ok(revision)
}

/// A random 32-hex-digit identifier in UUID layout.
pub fn uid() -> String {
    let bits: u128 = rand::random();
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A fingerprint of a resource: any change to it changes the etag.
pub fn etag_of<T: serde::Serialize>(resource: &T) -> String {
    let mut value = serde_json::to_value(resource).unwrap_or(Value::Null);
    if let Value::Object(object) = &mut value {
        object.remove("etag");
    }
    // FNV-1a over the canonical JSON text: stable across runs and Rust versions (unlike
    // `DefaultHasher`), so etags persisted in the data dir stay valid after an upgrade.
    let text = value.to_string();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{hash:016x}\"")
}

/// The routing a service's traffic resolves to right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// Revisions (short names) with their percentage; only entries above 0%.
    pub weighted: Vec<(String, u32)>,
    /// Tag → revision (short name).
    pub tags: BTreeMap<String, String>,
}

impl RouteTable {
    /// Picks a revision for a request from a number in `0..100`.
    pub fn pick(&self, draw: u32) -> Option<&str> {
        let mut cumulative = 0;
        for (revision, percent) in &self.weighted {
            cumulative += percent;
            if draw < cumulative {
                return Some(revision);
            }
        }
        None
    }
}

/// The newest revision in a phase, by revision number.
fn latest_revision(record: &ServiceRecord, accept: impl Fn(&Phase) -> bool) -> Option<&str> {
    record
        .revisions
        .iter()
        .filter(|(_, revision)| accept(&revision_phase(revision)))
        .max_by_key(|(name, revision)| {
            (
                revision_number(name),
                revision.create_time.map(|t| t.seconds()),
            )
        })
        .map(|(name, _)| name.as_str())
}

/// The number in `SERVICE-0000N-xxx` (0 when the name has another shape).
pub fn revision_number(short_name: &str) -> u32 {
    short_name
        .rsplit('-')
        .nth(1)
        .and_then(|number| number.parse().ok())
        .unwrap_or(0)
}

/// What the traffic of a service resolves to: LATEST → the latest Ready revision.
pub fn route_table(record: &ServiceRecord) -> RouteTable {
    let latest_ready = latest_revision(record, |phase| *phase == Phase::Ready);
    let mut weighted: BTreeMap<String, u32> = BTreeMap::new();
    let mut tags = BTreeMap::new();
    for target in &record.service.traffic {
        let revision = match target.r#type {
            TrafficTargetAllocationType::Latest => latest_ready.map(str::to_string),
            _ => Some(target.revision.clone()),
        };
        let Some(revision) = revision else { continue };
        let percent = u32::try_from(target.percent).unwrap_or(0);
        if percent > 0 {
            *weighted.entry(revision.clone()).or_default() += percent;
        }
        if !target.tag.is_empty() {
            tags.insert(target.tag.clone(), revision);
        }
    }
    RouteTable {
        weighted: weighted.into_iter().collect(),
        tags,
    }
}

/// Recomputes every status field of a service from its spec, revisions and router ports:
/// latest created / ready revisions, traffic statuses with tag URLs, conditions,
/// `reconciling`, `observedGeneration`, `uri`, `urls` and `etag`.
pub fn refresh_status(record: &mut ServiceRecord, now: &wkt::Timestamp) {
    let service_full = record.service.name.clone();
    let latest_created = latest_revision(record, |_| true).map(str::to_string);
    let latest_ready = latest_revision(record, |phase| *phase == Phase::Ready).map(str::to_string);
    let created_phase = latest_created
        .as_ref()
        .and_then(|name| record.revisions.get(name))
        .map(revision_phase);
    let uri = format!("http://127.0.0.1:{}", record.port);
    let tag_ports = record.tag_ports.clone();
    let statuses = record
        .service
        .traffic
        .iter()
        .map(|target| {
            let mut status = TrafficTargetStatus::new();
            status.r#type = target.r#type.clone();
            status.revision = target.revision.clone();
            status.percent = target.percent;
            status.tag = target.tag.clone();
            if let Some(port) = tag_ports.get(&target.tag) {
                status.uri = format!("http://127.0.0.1:{port}");
            }
            status
        })
        .collect();

    let service = &mut record.service;
    let full = |short: &str| format!("{service_full}/revisions/{short}");
    service.latest_created_revision = latest_created.as_deref().map(full).unwrap_or_default();
    service.latest_ready_revision = latest_ready.as_deref().map(full).unwrap_or_default();
    service.traffic_statuses = statuses;
    service.uri = uri.clone();
    service.urls = vec![uri];
    let phase = match created_phase {
        None => Phase::Starting,
        Some(Phase::Failed(message)) => Phase::Failed(format!(
            "Revision '{}' is not ready and cannot serve traffic. {message}",
            latest_created.as_deref().unwrap_or_default()
        )),
        Some(phase) => phase,
    };
    service.reconciling = phase == Phase::Starting;
    if !service.reconciling {
        service.observed_generation = service.generation;
    }
    let mut terminal = condition("Ready", &phase, now);
    terminal.reasons = None;
    let routes_phase = if latest_ready.is_some() || matches!(phase, Phase::Failed(_)) {
        if service.reconciling {
            Phase::Starting
        } else {
            Phase::Ready
        }
    } else {
        phase.clone()
    };
    let mut routes = condition("RoutesReady", &routes_phase, now);
    routes.reasons = None;
    let mut configurations = condition("ConfigurationsReady", &phase, now);
    configurations.reasons = None;
    // A condition whose state did not change keeps its transition time, so that recomputing
    // an unchanged status (e.g. after a restart) leaves the etag unchanged.
    let keep_time = |condition: &mut Condition, previous: Option<&Condition>| {
        if let Some(previous) = previous {
            if previous.state == condition.state && previous.message == condition.message {
                condition.last_transition_time = previous.last_transition_time;
            }
        }
    };
    keep_time(&mut terminal, service.terminal_condition.as_ref());
    for condition in [&mut routes, &mut configurations] {
        let previous = service
            .conditions
            .iter()
            .find(|previous| previous.r#type == condition.r#type);
        keep_time(condition, previous);
    }
    service.terminal_condition = Some(terminal);
    service.conditions = vec![routes, configurations];
    service.etag = etag_of(service);
}

/// Short revision names referenced by the service's traffic (with LATEST resolved) or tags:
/// these cannot be deleted.
pub fn serving_revisions(record: &ServiceRecord) -> BTreeSet<String> {
    let table = route_table(record);
    table
        .weighted
        .into_iter()
        .map(|(name, _)| name)
        .chain(table.tags.into_values())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(
        kind: TrafficTargetAllocationType,
        revision: &str,
        percent: i32,
        tag: &str,
    ) -> TrafficTarget {
        let mut target = TrafficTarget::new();
        target.r#type = kind;
        target.revision = revision.to_string();
        target.percent = percent;
        target.tag = tag.to_string();
        target
    }

    fn revisions(names: &[(&str, Phase)]) -> BTreeMap<String, Revision> {
        let now = wkt::Timestamp::clamp(1_700_000_000, 0);
        names
            .iter()
            .map(|(name, phase)| {
                let mut revision = Revision::new();
                revision.name = name.to_string();
                set_revision_phase(&mut revision, phase, &now);
                (name.to_string(), revision)
            })
            .collect()
    }

    #[test]
    fn traffic_rules() {
        use TrafficTargetAllocationType::{Latest, Revision as ByName};
        let known = revisions(&[
            ("s-00001-abc", Phase::Ready),
            ("s-00002-def", Phase::Failed("crashed".into())),
        ]);
        let cases: Vec<(Vec<TrafficTarget>, Option<Code>)> = vec![
            (vec![], None),
            (vec![target(Latest, "", 100, "")], None),
            (
                vec![
                    target(ByName, "s-00001-abc", 90, ""),
                    target(Latest, "", 10, "canary"),
                ],
                None,
            ),
            (
                vec![target(ByName, "s-00001-abc", 90, "")],
                Some(Code::InvalidArgument),
            ),
            (
                vec![target(ByName, "s-00009-zzz", 100, "")],
                Some(Code::InvalidArgument),
            ),
            (
                vec![target(ByName, "s-00002-def", 100, "")],
                Some(Code::FailedPrecondition),
            ),
            (
                vec![
                    target(ByName, "s-00001-abc", 50, "a"),
                    target(Latest, "", 50, "a"),
                ],
                Some(Code::InvalidArgument),
            ),
            (
                vec![target(ByName, "s-00001-abc", 100, "Bad_Tag")],
                Some(Code::InvalidArgument),
            ),
            (
                vec![target(Latest, "s-00001-abc", 100, "")],
                Some(Code::InvalidArgument),
            ),
            (
                vec![target(ByName, "s-00001-abc", 101, "")],
                Some(Code::InvalidArgument),
            ),
            (vec![target(ByName, "s-00003-new", 100, "")], None),
        ];
        for (traffic, expected) in cases {
            let result = validate_traffic(&traffic, &known, Some("s-00003-new"));
            assert_eq!(
                result.as_ref().err().map(|error| error.code),
                expected,
                "{traffic:?}: {result:?}"
            );
        }
        let normalized = validate_traffic(&[], &known, None).unwrap();
        assert_eq!(normalized.len(), 1);
        assert_eq!(normalized[0].percent, 100);
        assert_eq!(normalized[0].r#type, TrafficTargetAllocationType::Latest);
    }

    #[test]
    fn update_with_and_without_mask() {
        let mut current = Service::new();
        current.name = "projects/p/locations/l/services/s".into();
        current.description = "old".into();
        current.labels.insert("team".into(), "ml".into());
        current.generation = 3;
        let mut request = Service::new();
        request.description = "new".into();
        request.generation = 99;

        let merged = merge_update(&current, &request, None).unwrap();
        assert_eq!(merged.description, "new");
        assert!(merged.labels.is_empty(), "a full update replaces labels");
        assert_eq!(merged.generation, 3, "output-only fields are kept");
        assert_eq!(merged.name, current.name);

        let masked = merge_update(&current, &request, Some("description")).unwrap();
        assert_eq!(masked.description, "new");
        assert_eq!(masked.labels, current.labels);

        let error = merge_update(&current, &request, Some("etag")).unwrap_err();
        assert_eq!(error.code, Code::InvalidArgument);
    }

    #[test]
    fn enums_are_accepted_as_numbers_or_names() {
        for text in [
            r#"{"type": 2, "revision": "r", "percent": 100}"#,
            r#"{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": "r", "percent": 100}"#,
        ] {
            let target: TrafficTarget = serde_json::from_str(text).unwrap();
            assert_eq!(
                target.r#type,
                TrafficTargetAllocationType::Revision,
                "{text}"
            );
        }
        let encoded =
            serde_json::to_value(target(TrafficTargetAllocationType::Latest, "", 100, "")).unwrap();
        assert_eq!(
            encoded["type"], 1,
            "responses use integers, as `enum-encoding=int` asks"
        );
    }

    #[test]
    fn names_and_route_picking() {
        assert_eq!(revision_name("hello", 2, "abc"), "hello-00002-abc");
        assert_eq!(revision_number("hello-world-00012-abc"), 12);
        assert!(validate_service_id("hello-1").is_ok());
    }

    #[test]
    fn annotations_follow_the_kubernetes_size_limit_and_reserved_namespaces() {
        let annotation = |key: &str, size: usize| {
            std::collections::BTreeMap::from([(key.to_string(), "x".repeat(size))])
        };
        assert!(validate_annotations(&annotation("deployer.dev/releases", 48 * 1024)).is_ok());
        let error =
            validate_annotations(&annotation("deployer.dev/releases", 256 * 1024)).unwrap_err();
        assert_eq!(error.code, Code::InvalidArgument);
        assert!(
            error.message.contains("at most 262144 bytes"),
            "{}",
            error.message
        );
        assert!(validate_annotations(&annotation("run.googleapis.com/ingress", 3)).is_err());
        assert!(validate_service_id("Hello").is_err());
        assert!(validate_service_id("hello-").is_err());
        let table = RouteTable {
            weighted: vec![("a".into(), 90), ("b".into(), 10)],
            tags: BTreeMap::new(),
        };
        assert_eq!(table.pick(0), Some("a"));
        assert_eq!(table.pick(89), Some("a"));
        assert_eq!(table.pick(90), Some("b"));
        assert_eq!(table.pick(99), Some("b"));
        assert_eq!(RouteTable::default().pick(0), None);
    }
}
