//! A fleet of rollouts: several services in one deploy, in the order of their `depends_on`. A
//! layer above `rollout` — each service's rollout stays as it is, with its own lock, journal,
//! checks and rollback; this module only plans: the order, which services can start now (every
//! dependency in the deploy promoted, fewer than `parallel` running), which are not started
//! because a dependency failed or the run was interrupted, and the fleet's exit status.
//! Pure: the CLI runs the rollouts and tells [`Fleet`] how each ended.
//!
//! A dependency outside the deploy (`deployer deploy b` where `b` depends on `a`) is taken as
//! already deployed: only services of the same deploy wait for each other.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::{config::dependencies, exit::ExitStatus};

/// Planning errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// A selected service is not among the known services.
    #[error("no service `{0}`")]
    UnknownService(String),
    /// The dependencies go round.
    #[error("dependency cycle: {}", .0.join(" → "))]
    Cycle(Vec<String>),
}

/// Why a service of the deploy was not started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NotStarted {
    /// A dependency (direct or not) did not promote.
    DependencyFailed {
        /// The service that failed.
        dependency: String,
    },
    /// Ctrl-C: no new rollout starts.
    Interrupted,
}

impl std::fmt::Display for NotStarted {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotStarted::DependencyFailed { dependency } => {
                write!(formatter, "not started: dependency {dependency} failed")
            }
            NotStarted::Interrupted => write!(formatter, "not started: interrupted"),
        }
    }
}

/// Where one service of the deploy is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceState {
    /// Waiting for its dependencies or a free slot.
    Waiting,
    /// Its rollout runs.
    Running,
    /// Its rollout ended with this exit status (`Success`: promoted).
    Finished(ExitStatus),
    /// Never started.
    NotStarted(NotStarted),
}

/// How bad an exit status is for the fleet's own: promoted, stopped before traffic, rolled
/// back, held for a human, failed, rollback failed (a human must act now).
pub fn severity(status: ExitStatus) -> u8 {
    match status {
        ExitStatus::Success => 0,
        ExitStatus::StoppedBeforeTraffic => 1,
        ExitStatus::RolledBack => 2,
        ExitStatus::Held => 3,
        ExitStatus::Usage | ExitStatus::Critical => 4,
        ExitStatus::Failure => 5,
        ExitStatus::RollbackFailed => 6,
    }
}

/// The deploy of several services.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The services in a dependency order (dependencies first; ties by name).
    order: Vec<String>,
    /// Each service's dependencies inside the deploy.
    dependencies: BTreeMap<String, BTreeSet<String>>,
    states: BTreeMap<String, ServiceState>,
}

impl Fleet {
    /// Plans the deploy of `selected` out of `services` (every known service and its
    /// `depends_on`).
    pub fn plan(
        selected: &[String],
        services: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, FleetError> {
        let chosen: BTreeSet<String> = selected.iter().cloned().collect();
        if let Some(unknown) = chosen.iter().find(|name| !services.contains_key(*name)) {
            return Err(FleetError::UnknownService(unknown.clone()));
        }
        if let Some(cycle) = dependencies::cycle(services) {
            return Err(FleetError::Cycle(cycle));
        }
        let dependencies: BTreeMap<String, BTreeSet<String>> = chosen
            .iter()
            .map(|name| {
                let inside = services[name]
                    .iter()
                    .filter(|dependency| chosen.contains(*dependency))
                    .cloned()
                    .collect();
                (name.clone(), inside)
            })
            .collect();
        // Kahn's algorithm, the smallest name first among those ready: a stable order.
        let mut order = Vec::with_capacity(chosen.len());
        let mut placed = BTreeSet::new();
        while order.len() < chosen.len() {
            let next = dependencies
                .iter()
                .find(|(name, needs)| !placed.contains(*name) && needs.is_subset(&placed))
                .map(|(name, _)| name.clone());
            match next {
                Some(name) => {
                    placed.insert(name.clone());
                    order.push(name);
                }
                // Unreachable after the cycle check; kept total rather than panicking.
                None => {
                    let rest = chosen.difference(&placed).cloned().collect();
                    return Err(FleetError::Cycle(rest));
                }
            }
        }
        let states = chosen
            .into_iter()
            .map(|name| (name, ServiceState::Waiting))
            .collect();
        Ok(Self {
            order,
            dependencies,
            states,
        })
    }

    /// A wave: each of `names` starts once the one before it was promoted, and a failure
    /// leaves every later one not started — a multi-region service's regions, the canary
    /// region first (a region not started names the one that failed as its `dependency`).
    pub fn chain(names: &[String]) -> Result<Self, FleetError> {
        let mut unique = BTreeSet::new();
        if let Some(twice) = names.iter().find(|name| !unique.insert(*name)) {
            return Err(FleetError::Cycle(vec![twice.clone(), twice.clone()]));
        }
        let previous = std::iter::once(None).chain(names.iter().map(Some));
        let links = names
            .iter()
            .zip(previous)
            .map(|(name, before)| (name.clone(), before.cloned().into_iter().collect()))
            .collect();
        Self::plan(names, &links)
    }

    /// The services in dependency order.
    pub fn order(&self) -> &[String] {
        &self.order
    }

    /// A service's state.
    pub fn state(&self, name: &str) -> Option<&ServiceState> {
        self.states.get(name)
    }

    fn running(&self) -> usize {
        self.states
            .values()
            .filter(|state| **state == ServiceState::Running)
            .count()
    }

    /// The services to start now, in order: waiting, every dependency promoted, within
    /// `parallel` running rollouts. Marks them running.
    pub fn start_ready(&mut self, parallel: usize) -> Vec<String> {
        let mut free = parallel.max(1).saturating_sub(self.running());
        let mut started = Vec::new();
        for name in &self.order {
            if free == 0 {
                break;
            }
            let waiting = self.states.get(name) == Some(&ServiceState::Waiting);
            let promoted = self.dependencies[name].iter().all(|dependency| {
                self.states.get(dependency) == Some(&ServiceState::Finished(ExitStatus::Success))
            });
            if waiting && promoted {
                started.push(name.clone());
                free -= 1;
            }
        }
        for name in &started {
            self.states.insert(name.clone(), ServiceState::Running);
        }
        started
    }

    /// Records how `name`'s rollout ended; when it did not promote, every service waiting on
    /// it (directly or not) will not start.
    pub fn finish(&mut self, name: &str, status: ExitStatus) {
        self.states
            .insert(name.to_string(), ServiceState::Finished(status));
        if status == ExitStatus::Success {
            return;
        }
        let mut failed = vec![name.to_string()];
        while let Some(failure) = failed.pop() {
            for (dependent, needs) in &self.dependencies {
                if needs.contains(&failure)
                    && self.states.get(dependent) == Some(&ServiceState::Waiting)
                {
                    self.states.insert(
                        dependent.clone(),
                        ServiceState::NotStarted(NotStarted::DependencyFailed {
                            dependency: name.to_string(),
                        }),
                    );
                    failed.push(dependent.clone());
                }
            }
        }
    }

    /// Ctrl-C: nothing waiting will start; running rollouts end on their own.
    pub fn interrupt(&mut self) {
        for state in self.states.values_mut() {
            if *state == ServiceState::Waiting {
                *state = ServiceState::NotStarted(NotStarted::Interrupted);
            }
        }
    }

    /// Whether every service has finished or will not start.
    pub fn is_done(&self) -> bool {
        self.states.values().all(|state| {
            matches!(
                state,
                ServiceState::Finished(_) | ServiceState::NotStarted(_)
            )
        })
    }

    /// The fleet's exit status: the worst of its services' ([`severity`]); a service not
    /// started counts as stopped before traffic (it serves as before).
    pub fn exit_status(&self) -> ExitStatus {
        self.states
            .values()
            .map(|state| match state {
                ServiceState::Finished(status) => *status,
                ServiceState::NotStarted(_) => ExitStatus::StoppedBeforeTraffic,
                ServiceState::Waiting | ServiceState::Running => ExitStatus::Failure,
            })
            .max_by_key(|status| severity(*status))
            .unwrap_or(ExitStatus::Success)
    }
}

#[cfg(test)]
mod tests;
