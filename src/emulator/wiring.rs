//! The Pub/Sub admin read surface and Cloud Scheduler's `jobs.list`, so that `deployer graph
//! --check` and `health` read real wire formats locally (no Pub/Sub or Scheduler emulator can
//! be installed here; Google's own Pub/Sub emulator speaks gRPC only).
//!
//! Served, as Pub/Sub REST v1 and Cloud Scheduler REST v1 document them:
//!
//! - `GET /v1/projects/{p}/topics` → `{"topics": [{"name": "projects/p/topics/t"}], "nextPageToken"}`
//! - `GET /v1/projects/{p}/subscriptions` → `{"subscriptions": [Subscription], "nextPageToken"}`
//! - `GET /v1/projects/{p}/subscriptions/{s}` → the Subscription, or 404 `NOT_FOUND`
//! - `GET /v1/projects/{p}/topics/{t}/subscriptions` → `{"subscriptions": ["projects/p/subscriptions/s"], "nextPageToken"}`
//! - `GET /v1/projects/{p}/locations/{l}/jobs` → `{"jobs": [Job], "nextPageToken"}`
//!
//! with `pageSize`/`pageToken`; empty lists and an empty `nextPageToken` are left out, as
//! Google's front end does. A Subscription is `{name, topic, pushConfig: {pushEndpoint}}`
//! (`pushConfig` empty for pull); a Job `{name, schedule, timeZone, httpTarget: {uri}}` or
//! `pubsubTarget: {topicName}`. The resources are seeded, in those shapes, through the control
//! API: `PUT /emulator/v1/wiring` with `{"topics": [...], "subscriptions": [...], "jobs": [...]}`
//! (replacing what was there; `maxPageSize` caps every page, as the real APIs may return fewer
//! items than asked), `GET` to read it back. The seed is kept in the state file.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{
    api_error::{ApiError, Code},
    control::page,
    store::Store,
};

/// What `PUT /emulator/v1/wiring` seeds: resources in their REST shapes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WiringSeed {
    /// Pub/Sub topics (`name` = `projects/P/topics/T`).
    #[serde(default)]
    pub topics: Vec<Value>,
    /// Pub/Sub subscriptions (`name`, `topic`, optional `pushConfig.pushEndpoint`).
    #[serde(default)]
    pub subscriptions: Vec<Value>,
    /// Cloud Scheduler jobs (`name` = `projects/P/locations/L/jobs/J`, `schedule`, ...).
    #[serde(default)]
    pub jobs: Vec<Value>,
    /// The most items any page holds, whatever `pageSize` asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_page_size: Option<usize>,
}

fn name_of(resource: &Value) -> &str {
    resource
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn text_of<'a>(resource: &'a Value, field: &str) -> &'a str {
    resource
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// True when `name` is `projects/{non-empty}/{collection}/{non-empty}` (with `locations/L`
/// before the collection when `located`).
fn well_formed(name: &str, collection: &str, located: bool) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    let expected = if located { 6 } else { 4 };
    parts.len() == expected
        && parts[0] == "projects"
        && parts.iter().all(|part| !part.is_empty())
        && (!located || parts[2] == "locations")
        && parts[expected - 2] == collection
}

impl WiringSeed {
    /// Checks the seed's names (and sorts each list by name, the order the APIs list in).
    pub fn validated(mut self) -> Result<Self, ApiError> {
        for (list, collection, located) in [
            (&mut self.topics, "topics", false),
            (&mut self.subscriptions, "subscriptions", false),
            (&mut self.jobs, "jobs", true),
        ] {
            for resource in list.iter() {
                if !resource.is_object() || !well_formed(name_of(resource), collection, located) {
                    return Err(ApiError::invalid(format!(
                        "{collection}: `{}` has no valid `name` (projects/P/{}{collection}/ID)",
                        name_of(resource),
                        if located { "locations/L/" } else { "" }
                    )));
                }
            }
            list.sort_by(|a, b| name_of(a).cmp(name_of(b)));
            let mut names: Vec<&str> = list.iter().map(name_of).collect();
            names.dedup();
            if names.len() != list.len() {
                return Err(ApiError::invalid(format!(
                    "{collection}: a name appears twice"
                )));
            }
        }
        for subscription in &self.subscriptions {
            if !well_formed(text_of(subscription, "topic"), "topics", false)
                && text_of(subscription, "topic") != "_deleted-topic_"
            {
                return Err(ApiError::invalid(format!(
                    "subscription `{}` has no valid `topic`",
                    name_of(subscription)
                )));
            }
        }
        if self.max_page_size == Some(0) {
            return Err(ApiError::invalid("maxPageSize must be at least 1"));
        }
        Ok(self)
    }
}

/// The value of a query parameter (empty values are unset, as Google's clients send them).
fn parameter<'a>(parameters: &'a [(String, String)], name: &str) -> Option<&'a str> {
    parameters
        .iter()
        .find(|(key, value)| key == name && !value.is_empty())
        .map(|(_, value)| value.as_str())
}

/// One page of `items` as `{field: [...], nextPageToken}`.
fn listed(
    items: &[Value],
    field: &str,
    parameters: &[(String, String)],
    max_page_size: Option<usize>,
) -> Result<Value, ApiError> {
    let asked = match parameter(parameters, "pageSize") {
        None => 0,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "query parameter pageSize is `{text}`: use a non-negative number"
                ))
            })?,
    };
    let size = match (asked, max_page_size) {
        (0, Some(cap)) => cap,
        (asked, Some(cap)) => asked.min(cap),
        (asked, None) => asked,
    };
    let (selected, next) = page(
        items,
        size,
        parameter(parameters, "pageToken").unwrap_or_default(),
    )?;
    let mut answer = Map::new();
    if !selected.is_empty() {
        answer.insert(field.to_string(), Value::Array(selected));
    }
    if !next.is_empty() {
        answer.insert("nextPageToken".into(), Value::String(next));
    }
    Ok(Value::Object(answer))
}

/// `GET /v1/{path}`: Pub/Sub's and Cloud Scheduler's read surface.
pub fn dispatch(
    store: &Store,
    path: &str,
    parameters: &[(String, String)],
) -> Result<Value, ApiError> {
    let seed = store.read(|state| state.wiring.clone());
    let segments: Vec<&str> = path.split('/').collect();
    let in_project = |project: &str, resources: &[Value], collection: &str| -> Vec<Value> {
        let prefix = format!("projects/{project}/{collection}/");
        resources
            .iter()
            .filter(|resource| name_of(resource).starts_with(&prefix))
            .cloned()
            .collect()
    };
    match segments.as_slice() {
        ["projects", project, "topics"] => listed(
            &in_project(project, &seed.topics, "topics"),
            "topics",
            parameters,
            seed.max_page_size,
        ),
        ["projects", project, "subscriptions"] => listed(
            &in_project(project, &seed.subscriptions, "subscriptions"),
            "subscriptions",
            parameters,
            seed.max_page_size,
        ),
        ["projects", _, "subscriptions", _] => seed
            .subscriptions
            .iter()
            .find(|subscription| name_of(subscription) == path)
            .cloned()
            .ok_or_else(|| {
                ApiError::not_found(format!("Resource not found (resource={}).", segments[3]))
            }),
        ["projects", project, "topics", topic, "subscriptions"] => {
            let topic_name = format!("projects/{project}/topics/{topic}");
            if !seed.topics.iter().any(|known| name_of(known) == topic_name) {
                return Err(ApiError::not_found(format!(
                    "Resource not found (resource={topic})."
                )));
            }
            let names: Vec<Value> = seed
                .subscriptions
                .iter()
                .filter(|subscription| text_of(subscription, "topic") == topic_name)
                .map(|subscription| json!(name_of(subscription)))
                .collect();
            listed(&names, "subscriptions", parameters, seed.max_page_size)
        }
        ["projects", project, "locations", location, "jobs"] => {
            let prefix = format!("projects/{project}/locations/{location}/jobs/");
            let jobs: Vec<Value> = seed
                .jobs
                .iter()
                .filter(|job| name_of(job).starts_with(&prefix))
                .cloned()
                .collect();
            listed(&jobs, "jobs", parameters, seed.max_page_size)
        }
        _ => Err(ApiError::new(
            Code::Unimplemented,
            format!("GET /v1/{path} is not implemented by the emulator"),
        )),
    }
}

/// `PUT /emulator/v1/wiring`: replaces the seed.
pub fn seed(store: &Store, body: &[u8]) -> Result<Value, ApiError> {
    let seed = serde_json::from_slice::<WiringSeed>(body)
        .map_err(|error| ApiError::invalid(format!("invalid wiring seed: {error}")))?
        .validated()?;
    store.mutate(|state| {
        state.wiring = seed.clone();
        Ok(())
    })?;
    serde_json::to_value(&seed).map_err(|error| ApiError::internal(format!("{error}")))
}

/// `GET /emulator/v1/wiring`.
pub fn current(store: &Store) -> Result<Value, ApiError> {
    serde_json::to_value(store.read(|state| state.wiring.clone()))
        .map_err(|error| ApiError::internal(format!("{error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parameters(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn pages_follow_page_size_the_cap_and_the_token() {
        let items: Vec<Value> = (0..5).map(|n| json!({"name": format!("n{n}")})).collect();
        let first = listed(&items, "topics", &parameters(&[("pageSize", "2")]), None).unwrap();
        assert_eq!(first["topics"].as_array().unwrap().len(), 2);
        assert_eq!(first["nextPageToken"], "2");
        let last = listed(
            &items,
            "topics",
            &parameters(&[("pageSize", "10"), ("pageToken", "4")]),
            None,
        )
        .unwrap();
        assert_eq!(last, json!({"topics": [{"name": "n4"}]}));
        let capped = listed(
            &items,
            "topics",
            &parameters(&[("pageSize", "500")]),
            Some(3),
        )
        .unwrap();
        assert_eq!(capped["topics"].as_array().unwrap().len(), 3);
        assert_eq!(listed(&[], "topics", &[], None).unwrap(), json!({}));
        assert!(listed(&items, "topics", &parameters(&[("pageToken", "x")]), None).is_err());
    }

    #[test]
    fn a_seed_needs_resource_names() {
        let bad: WiringSeed =
            serde_json::from_value(json!({"topics": [{"name": "topics/t"}]})).unwrap();
        assert!(bad.validated().is_err());
        let bad: WiringSeed = serde_json::from_value(json!({
            "subscriptions": [{"name": "projects/p/subscriptions/s", "topic": "t"}]
        }))
        .unwrap();
        assert!(bad.validated().is_err());
        let good: WiringSeed = serde_json::from_value(json!({
            "topics": [{"name": "projects/p/topics/b"}, {"name": "projects/p/topics/a"}],
            "jobs": [{"name": "projects/p/locations/r/jobs/j", "schedule": "0 * * * *"}]
        }))
        .unwrap();
        let good = good.validated().unwrap();
        assert_eq!(name_of(&good.topics[0]), "projects/p/topics/a");
    }
}
