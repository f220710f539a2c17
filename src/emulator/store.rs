//! The emulator's durable state: services with their revisions, router ports and long-running
//! operations, kept in memory and written to `DATA_DIR/state.json` after every change.
//!
//! Every change goes through [`Store::mutate`], which applies it to a copy, writes the copy
//! atomically (temporary file, fsync, rename) and only then makes it current: a crash leaves
//! either the old or the new state on disk, never half of one, and a failed write changes
//! nothing in memory either.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    sync::Mutex,
};

use google_cloud_run_v2::model::{Revision, Service};
use serde::{Deserialize, Serialize};

use super::api_error::ApiError;

/// Version of the state file format; bumped when a change is not backwards compatible.
const FORMAT_VERSION: u32 = 1;

/// How many finished operations are kept (the oldest are forgotten first). A client polls its
/// operation right after the call that made it; each finished one carries the whole resource,
/// and the state file is rewritten (and synced) after every change, so keeping 1,000 of them
/// made every write rewrite megabytes once services carry a release history.
const KEPT_OPERATIONS: usize = 100;

/// How many of the newest finished operations keep the resource they returned. A client reads
/// it when its poll sees the operation done, seconds after the call; older ones keep `done` and
/// their error, so the state file does not carry a hundred copies of every service.
const KEPT_RESPONSES: usize = 10;

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state file exists but cannot be read.
    #[error("cannot read the emulator state `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not valid JSON of the expected shape.
    #[error("the emulator state `{path}` is corrupt (delete it to start empty)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The state file was written by a newer emulator.
    #[error(
        "the emulator state `{path}` has format {found}, this emulator reads {FORMAT_VERSION}"
    )]
    Format {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// The state could not be written.
    #[error("cannot write the emulator state `{path}`")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Everything the emulator remembers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Format of this file.
    #[serde(default)]
    pub format: u32,
    /// Services by full resource name (`projects/P/locations/L/services/S`).
    #[serde(default)]
    pub services: BTreeMap<String, ServiceRecord>,
    /// Long-running operations by full name, oldest first by sequence.
    #[serde(default)]
    pub operations: BTreeMap<String, OperationRecord>,
    /// Sequence number of the next operation.
    #[serde(default)]
    pub next_operation: u64,
    /// The Pub/Sub and Cloud Scheduler resources seeded through `/emulator/v1/wiring`.
    #[serde(default)]
    pub wiring: super::wiring::WiringSeed,
}

/// One service with everything the emulator keeps about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// The resource as the API returns it (spec and status).
    pub service: Service,
    /// Revisions by short name (`SERVICE-0000N-xxx`).
    pub revisions: BTreeMap<String, Revision>,
    /// Number of the last revision created (revision names count up from 1).
    pub revision_counter: u32,
    /// Local port of the service's router (its `uri`).
    pub port: u16,
    /// Local port of each tag's router (its tag URL).
    #[serde(default)]
    pub tag_ports: BTreeMap<String, u16>,
}

/// What a long-running operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    /// `CreateService`.
    Create,
    /// `UpdateService`.
    Update,
    /// `DeleteService`.
    Delete,
    /// `DeleteRevision`.
    DeleteRevision,
}

/// A long-running operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperationRecord {
    /// Full name `projects/P/locations/L/operations/ID`.
    pub name: String,
    /// Order of creation.
    pub sequence: u64,
    /// What it does.
    pub kind: OperationKind,
    /// The service (full name) it acts on.
    pub service: String,
    /// The revision (short name) whose start the operation waits for, if any.
    pub waiting_for: Option<String>,
    /// True when finished.
    pub done: bool,
    /// The error, when it finished badly.
    pub error: Option<ApiError>,
    /// The resource returned when done (a Service, or a Revision for `DeleteRevision`).
    pub response: Option<serde_json::Value>,
}

/// The state, in memory and on disk.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    state: Mutex<State>,
}

impl Store {
    /// Opens `DATA_DIR/state.json`, or starts empty when it does not exist.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join("state.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let state: State =
                    serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                        path: path.clone(),
                        source,
                    })?;
                if state.format > FORMAT_VERSION {
                    return Err(StoreError::Format {
                        path,
                        found: state.format,
                    });
                }
                state
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => State {
                format: FORMAT_VERSION,
                ..State::default()
            },
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        Ok(Self {
            path,
            state: Mutex::new(state),
        })
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> State {
        self.lock().clone()
    }

    /// Reads the state without copying it.
    pub fn read<R>(&self, reader: impl FnOnce(&State) -> R) -> R {
        reader(&self.lock())
    }

    /// Applies a change: on a copy, persisted, then made current. An error from `change` or
    /// from the write leaves the state untouched.
    pub fn mutate<R>(
        &self,
        change: impl FnOnce(&mut State) -> Result<R, ApiError>,
    ) -> Result<R, ApiError> {
        self.mutate_and_publish(change, |_, _| {})
    }

    /// Like [`Store::mutate`], then calls `publish` with the new state while still holding the
    /// lock: what is derived from the state (the routers' tables) is updated in the same order
    /// as the state itself, so a slower caller never overwrites newer routes with older ones.
    pub fn mutate_and_publish<R>(
        &self,
        change: impl FnOnce(&mut State) -> Result<R, ApiError>,
        publish: impl FnOnce(&State, &R),
    ) -> Result<R, ApiError> {
        let mut state = self.lock();
        let mut next = state.clone();
        let result = change(&mut next)?;
        prune_operations(&mut next);
        next.format = FORMAT_VERSION;
        write_atomically(&self.path, &next)
            .map_err(|error| ApiError::internal(format!("{error}: {}", error_source(&error))))?;
        *state = next;
        publish(&state, &result);
        Ok(result)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change (changes are made on
        // a copy), so a poisoned lock still guards a consistent state.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn error_source(error: &StoreError) -> String {
    std::error::Error::source(error)
        .map(|source| source.to_string())
        .unwrap_or_default()
}

fn prune_operations(state: &mut State) {
    let mut finished: Vec<(u64, String)> = state
        .operations
        .values()
        .filter(|operation| operation.done)
        .map(|operation| (operation.sequence, operation.name.clone()))
        .collect();
    finished.sort();
    let excess = state.operations.len().saturating_sub(KEPT_OPERATIONS);
    let kept = finished.len().saturating_sub(excess);
    for (_, name) in finished.iter().take(excess) {
        state.operations.remove(name);
    }
    for (_, name) in finished
        .iter()
        .skip(excess)
        .take(kept.saturating_sub(KEPT_RESPONSES))
    {
        if let Some(operation) = state.operations.get_mut(name) {
            operation.response = None;
        }
    }
}

/// Writes JSON to a temporary file next to `path`, syncs it, and renames it over `path`.
pub fn write_atomically(path: &Path, value: &impl Serialize) -> Result<(), StoreError> {
    let write_error = |source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|error| write_error(std::io::Error::other(error)))?;
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::File::create(&temporary).map_err(write_error)?;
    file.write_all(&bytes).map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(write_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_reopen_and_failed_changes_leave_no_trace() {
        let directory = tempfile::tempdir().unwrap();
        let store = Store::open(directory.path()).unwrap();
        store
            .mutate(|state| {
                state.next_operation = 7;
                Ok(())
            })
            .unwrap();
        let refused: Result<(), ApiError> = store.mutate(|state| {
            state.next_operation = 8;
            Err(ApiError::invalid("no"))
        });
        assert!(refused.is_err());
        assert_eq!(store.snapshot().next_operation, 7);
        let reopened = Store::open(directory.path()).unwrap();
        assert_eq!(reopened.snapshot().next_operation, 7);
    }

    #[test]
    fn corrupt_state_is_reported_with_its_path() {
        let directory = tempfile::tempdir().unwrap();
        std::fs::write(directory.path().join("state.json"), "{not json").unwrap();
        let error = Store::open(directory.path()).unwrap_err();
        assert!(error.to_string().contains("state.json"), "{error}");
    }
}
