//! The codec between the platform's types and `google-cloud-run-v2`'s model: a service or
//! revision as answered read into a [`ServiceSnapshot`] or [`RevisionSnapshot`] (conditions,
//! traffic and its statuses, annotations, labels, short names from resource paths, the managed
//! settings), and a [`RevisionSpec`] or [`TrafficTarget`] written into a revision template or a
//! traffic entry. Pure functions: no calls, no retries, no operations (those are the client's,
//! `super`).

use std::collections::BTreeMap;

use google_cloud_run_v2::model::{
    self, condition::State, env_var::Values, TrafficTargetAllocationType,
};

use crate::platform::{
    RevisionSettings, RevisionSnapshot, RevisionSpec, ServiceId, ServiceSnapshot, TrafficStatus,
    TrafficTarget,
};

fn condition_ready(conditions: &[model::Condition], terminal: Option<&model::Condition>) -> bool {
    terminal
        .into_iter()
        .chain(
            conditions
                .iter()
                .filter(|condition| condition.r#type == "Ready"),
        )
        .next()
        .is_some_and(|condition| condition.state == State::ConditionSucceeded)
}

fn condition_failure(
    conditions: &[model::Condition],
    terminal: Option<&model::Condition>,
) -> Option<String> {
    terminal
        .into_iter()
        .chain(conditions.iter())
        .find(|condition| condition.state == State::ConditionFailed)
        .map(|condition| {
            if condition.message.is_empty() {
                format!("condition `{}` failed", condition.r#type)
            } else {
                condition.message.clone()
            }
        })
}

/// What does not add up in a service as Cloud Run answered it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedService {
    /// A traffic percent outside 0 to 100 (it used to be clamped silently).
    #[error("`{field}[{index}].percent` is {value}, not between 0 and 100")]
    PercentOutOfRange {
        /// `traffic` or `trafficStatuses`.
        field: &'static str,
        /// The entry's position in the list.
        index: usize,
        /// The percent answered.
        value: i32,
    },
    /// A split whose percents do not sum to 100.
    #[error("the percents of `{field}` sum to {total}, not 100")]
    SplitNotWhole {
        /// `traffic` or `trafficStatuses`.
        field: &'static str,
        /// What they sum to.
        total: u32,
    },
}

/// A traffic percent as answered: 0 to 100, anything else is a malformed answer.
fn percent(field: &'static str, index: usize, value: i32) -> Result<u8, MalformedService> {
    u8::try_from(value)
        .ok()
        .filter(|percent| *percent <= 100)
        .ok_or(MalformedService::PercentOutOfRange {
            field,
            index,
            value,
        })
}

/// Checks that a split's percents sum to 100 (see [`crate::platform::traffic_sum`]).
fn check_sum(
    field: &'static str,
    percents: impl IntoIterator<Item = u8>,
) -> Result<(), MalformedService> {
    crate::platform::traffic_sum(percents)
        .map_err(|total| MalformedService::SplitNotWhole { field, total })
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

/// Decodes a Cloud Run service into a [`ServiceSnapshot`]; `Err` says what does not add up
/// (a percent out of range, a split that does not sum to 100). Never panics, whatever the
/// answer (a property test holds it to that).
pub fn decode_service(
    id: &ServiceId,
    service: &model::Service,
) -> Result<ServiceSnapshot, MalformedService> {
    let traffic = service
        .traffic
        .iter()
        .enumerate()
        .map(|(index, target)| {
            Ok(TrafficTarget {
                revision: match target.r#type {
                    TrafficTargetAllocationType::Latest => None,
                    _ => non_empty(&target.revision),
                },
                percent: percent("traffic", index, target.percent)?,
                tag: non_empty(&target.tag),
            })
        })
        .collect::<Result<Vec<_>, MalformedService>>()?;
    check_sum("traffic", traffic.iter().map(|target| target.percent))?;
    let traffic_statuses = service
        .traffic_statuses
        .iter()
        .enumerate()
        .map(|(index, status)| {
            Ok(TrafficStatus {
                revision: if status.revision.is_empty() {
                    short_name(&service.latest_ready_revision)
                } else {
                    short_name(&status.revision)
                },
                percent: percent("trafficStatuses", index, status.percent)?,
                tag: non_empty(&status.tag),
                uri: non_empty(&status.uri),
            })
        })
        .collect::<Result<Vec<_>, MalformedService>>()?;
    check_sum(
        "trafficStatuses",
        traffic_statuses.iter().map(|status| status.percent),
    )?;
    Ok(ServiceSnapshot {
        id: id.clone(),
        etag: service.etag.clone(),
        uri: service.uri.clone(),
        urls: service.urls.clone(),
        generation: service.generation,
        observed_generation: service.observed_generation,
        reconciling: service.reconciling,
        ready: condition_ready(&service.conditions, service.terminal_condition.as_ref()),
        failure: condition_failure(&service.conditions, service.terminal_condition.as_ref()),
        latest_created_revision: short_name(&service.latest_created_revision),
        latest_ready_revision: short_name(&service.latest_ready_revision),
        traffic,
        traffic_statuses,
        annotations: service.annotations.clone().into_iter().collect(),
        labels: service.labels.clone().into_iter().collect(),
        image: service
            .template
            .as_ref()
            .and_then(|template| template.containers.first())
            .map(|container| container.image.clone())
            .unwrap_or_default(),
        session_affinity: service
            .template
            .as_ref()
            .is_some_and(|template| template.session_affinity),
    })
}

/// `projects/.../revisions/NAME` → `NAME` (Cloud Run returns short names, the emulator may too).
fn short_name(name: &str) -> String {
    name.rsplit('/').next().unwrap_or(name).to_string()
}

/// Decodes a Cloud Run revision into a [`RevisionSnapshot`] (infallible: every field has a
/// safe reading; never panics, whatever the answer).
pub fn decode_revision(revision: &model::Revision) -> RevisionSnapshot {
    RevisionSnapshot {
        name: short_name(&revision.name),
        ready: condition_ready(&revision.conditions, None),
        reconciling: revision.reconciling,
        failure: condition_failure(&revision.conditions, None),
        image: revision
            .containers
            .first()
            .map(|container| container.image.clone())
            .unwrap_or_default(),
        labels: revision.labels.clone().into_iter().collect(),
        created: revision
            .create_time
            .as_ref()
            .map(|time| String::from(*time)),
        settings: revision_settings(revision),
    }
}

pub(super) fn traffic_target(target: &TrafficTarget) -> model::TrafficTarget {
    let mut out = model::TrafficTarget::new().set_percent(i32::from(target.percent));
    out = match &target.revision {
        Some(revision) => out
            .set_type(TrafficTargetAllocationType::Revision)
            .set_revision(revision.clone()),
        None => out.set_type(TrafficTargetAllocationType::Latest),
    };
    match &target.tag {
        Some(tag) => out.set_tag(tag.clone()),
        None => out,
    }
}

/// The template of a new revision that starts from `base` (a revision as read): everything the
/// revision runs with, so that a new revision carries the stable revision's configuration and
/// nothing of a later (rolled-back) one.
pub(super) fn template_from_revision(base: &model::Revision) -> model::RevisionTemplate {
    let mut template = model::RevisionTemplate::new();
    template.labels = base
        .labels
        .iter()
        .filter(|(key, _)| !key.contains('/'))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    template.annotations = base
        .annotations
        .iter()
        .filter(|(key, _)| {
            !key.starts_with("run.googleapis.com/") && !key.contains("serving.knative.dev")
        })
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    template.scaling = base.scaling.clone();
    template.vpc_access = base.vpc_access.clone();
    template.timeout = base.timeout;
    template.service_account = base.service_account.clone();
    template.containers = base.containers.clone();
    template.volumes = base.volumes.clone();
    template.execution_environment = base.execution_environment.clone();
    template.encryption_key = base.encryption_key.clone();
    template.max_instance_request_concurrency = base.max_instance_request_concurrency;
    template.service_mesh = base.service_mesh.clone();
    template.session_affinity = base.session_affinity;
    template.node_selector = base.node_selector.clone();
    template
}

/// The managed settings of a revision's first container and scaling.
fn revision_settings(revision: &model::Revision) -> RevisionSettings {
    let mut settings = RevisionSettings::default();
    if let Some(container) = revision.containers.first() {
        for variable in &container.env {
            match &variable.values {
                Some(Values::Value(value)) => {
                    settings.env.insert(variable.name.clone(), value.clone());
                }
                Some(Values::ValueSource(source)) => {
                    if let Some(secret) = &source.secret_key_ref {
                        settings.secrets.insert(
                            variable.name.clone(),
                            format!("{}/versions/{}", secret.secret, secret.version),
                        );
                    }
                }
                _ => {}
            }
        }
        if let Some(resources) = &container.resources {
            settings.cpu = resources.limits.get("cpu").cloned();
            settings.memory = resources.limits.get("memory").cloned();
        }
    }
    settings.service_account = non_empty(&revision.service_account);
    settings.concurrency = u32::try_from(revision.max_instance_request_concurrency)
        .ok()
        .filter(|value| *value > 0);
    if let Some(scaling) = &revision.scaling {
        settings.min_instances = u32::try_from(scaling.min_instance_count)
            .ok()
            .filter(|value| *value > 0);
        settings.max_instances = u32::try_from(scaling.max_instance_count)
            .ok()
            .filter(|value| *value > 0);
    }
    settings.timeout_seconds = revision
        .timeout
        .and_then(|timeout| u64::try_from(timeout.seconds()).ok());
    settings
}

/// Writes `spec` into `template`: name, labels, image and every managed setting (replacing the
/// base's; `None` removes the setting so the platform default applies).
pub(super) fn apply_template(template: &mut model::RevisionTemplate, spec: &RevisionSpec) {
    template.revision = spec.name.clone();
    for (key, value) in &spec.labels {
        template.labels.insert(key.clone(), value.clone());
    }
    if template.containers.is_empty() {
        template.containers.push(model::Container::new());
    }
    let settings = &spec.settings;
    let container = &mut template.containers[0];
    container.image = spec.image.clone();
    let literal = settings.env.iter().map(|(name, value)| {
        model::EnvVar::new()
            .set_name(name.clone())
            .set_value(value.clone())
    });
    let secrets = settings.secrets.iter().map(|(name, reference)| {
        let (secret, version) = reference
            .rsplit_once("/versions/")
            .unwrap_or((reference.as_str(), "latest"));
        model::EnvVar::new()
            .set_name(name.clone())
            .set_value_source(
                model::EnvVarSource::new().set_secret_key_ref(
                    model::SecretKeySelector::new()
                        .set_secret(secret.to_string())
                        .set_version(version.to_string()),
                ),
            )
    });
    container.env = literal.chain(secrets).collect();
    let resources = container
        .resources
        .get_or_insert_with(model::ResourceRequirements::new);
    for (key, value) in [("cpu", &settings.cpu), ("memory", &settings.memory)] {
        match value {
            Some(value) => resources.limits.insert(key.to_string(), value.clone()),
            None => resources.limits.remove(key),
        };
    }
    template.service_account = settings.service_account.clone().unwrap_or_default();
    template.max_instance_request_concurrency = settings
        .concurrency
        .and_then(|value| i32::try_from(value).ok())
        .unwrap_or(0);
    let scaling = template
        .scaling
        .get_or_insert_with(model::RevisionScaling::new);
    scaling.min_instance_count = settings
        .min_instances
        .and_then(|value| i32::try_from(value).ok())
        .unwrap_or(0);
    scaling.max_instance_count = settings
        .max_instances
        .and_then(|value| i32::try_from(value).ok())
        .unwrap_or(0);
    template.timeout = settings
        .timeout_seconds
        .and_then(|seconds| i64::try_from(seconds).ok())
        .and_then(|seconds| google_cloud_wkt::Duration::new(seconds, 0).ok());
}

/// Labels as Cloud Run accepts them: lowercase, at most 63 characters of `[a-z0-9_-]`.
pub fn label_value(text: &str) -> String {
    text.chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect()
}

/// The labels deployer writes on every revision it creates.
pub fn revision_labels(commit: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("deployer-commit".to_string(), label_value(commit)),
        (
            "deployer-version".to_string(),
            label_value(env!("CARGO_PKG_VERSION")),
        ),
    ])
}
