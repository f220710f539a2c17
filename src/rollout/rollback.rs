//! Emergency rollback: 100% of traffic back on a healthy revision, in one write.
//!
//! Nothing here waits on metrics, builds, git or BigQuery: on-call at 3 a.m. needs the traffic
//! moved *now*. The only reads are the service and its revisions (to find the target and to
//! refuse one that is not Ready); the only write is the split, guarded by the etag, with the
//! journal of an interrupted rollout closed in the same write.

use std::time::Duration;

use serde::Serialize;

use super::{
    journal::{Journal, JOURNAL_ANNOTATION},
    lock::{Lock, LOCK_ANNOTATION},
    machine::Phase,
};
use crate::{
    platform::{
        read_revisions, read_service, retry::Budget, Platform, PlatformError, RetryPolicy,
        RevisionSnapshot, ServiceId, ServiceSnapshot, ServiceUpdate, TrafficTarget,
    },
    release::{self, Actor, History, Verdict, HISTORY_ANNOTATION},
};

/// What a rollback will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RollbackPlan {
    /// The split before (revision, percent).
    pub from: Vec<(String, u8)>,
    /// The revision that gets 100%.
    pub to: String,
    /// Why this revision (known-good, the interrupted rollout's stable one, given).
    pub why: String,
    /// Said before the write when the choice is not a known-good revision: a revision with no
    /// record (deployed by other tools), or one recorded bad and forced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// The commit of `to`, when its revision says (recorded in the release history).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The reason a human gave (`--reason`), recorded in the release history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl RollbackPlan {
    /// A rollout's own rollback to its stable revision (the reason is in its journal).
    pub fn to_stable(from: Vec<(String, u8)>, to: String, why: String) -> Self {
        Self {
            from,
            to,
            why,
            warning: None,
            commit: None,
            reason: None,
        }
    }
}

/// Which revision a rollback goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// The stable revision of an unfinished rollout, else the last known-good revision, else
    /// (with a warning) the newest Ready revision with no record older than the one serving.
    Automatic,
    /// `--to REVISION`; one recorded bad only with `force` (`--force --reason`).
    Revision {
        /// The revision.
        name: &'a str,
        /// Accept a revision recorded bad.
        force: bool,
    },
    /// `--to-commit SHA`: the newest known-good revision of that commit.
    Commit(&'a str),
}

/// Why a rollback cannot be planned.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RollbackError {
    /// The service does not exist.
    #[error("service `{0}` not found")]
    NoService(String),
    /// The requested revision does not exist.
    #[error("revision `{revision}` does not exist (revisions: {known})")]
    UnknownRevision {
        /// Asked for.
        revision: String,
        /// The ones that exist.
        known: String,
    },
    /// The requested revision is not Ready: it would not serve.
    #[error("revision `{revision}` is not Ready{}", reason.as_ref().map(|reason| format!(": {reason}")).unwrap_or_default())]
    NotReady {
        /// Asked for.
        revision: String,
        /// Why, if known.
        reason: Option<String>,
    },
    /// The requested revision is recorded bad in the release history.
    #[error("revision `{revision}` is recorded bad: {record}")]
    KnownBad {
        /// Asked for.
        revision: String,
        /// What the history says (when, who, why).
        record: String,
    },
    /// No known-good revision of the requested commit.
    #[error("no known-good Ready revision of commit `{commit}`{}", if revisions.is_empty() { " (no revision carries it)".to_string() } else { format!(" (its revisions: {revisions})") })]
    NoKnownGoodOfCommit {
        /// Asked for.
        commit: String,
        /// Its revisions and what is known of each.
        revisions: String,
    },
    /// Nothing older and Ready to go back to.
    #[error("no Ready revision older than `{0}` to roll back to")]
    NoPrevious(String),
    /// The release history cannot be read, so no revision is known to be good.
    #[error("{0}; name the target with `--to REVISION`")]
    History(#[from] release::Unreadable),
    /// The platform failed.
    #[error(transparent)]
    Platform(#[from] PlatformError),
}

/// What the history says about `revision`, for a refusal: "rolled back 2026-12-06 10:02 UTC by
/// alice@laptop: request errors FAIL ...".
fn bad_record(history: &History, revision: &str) -> String {
    let last = history
        .newest_first()
        .find(|entry| entry.revision == revision || entry.from.iter().any(|name| name == revision));
    match last {
        Some(entry) => {
            let what = if entry.revision == revision {
                entry.outcome.label().to_string()
            } else {
                format!("emergency-rolled-back from (to `{}`)", entry.revision)
            };
            format!(
                "{what} {} by {}{}",
                entry.at.format("%Y-%m-%d %H:%M UTC"),
                entry.actor.who,
                entry
                    .why
                    .as_ref()
                    .map(|why| format!(": {why}"))
                    .unwrap_or_default()
            )
        }
        None => "in the compacted part of the release history".to_string(),
    }
}

/// The commit a revision's label records, if any.
fn commit_of(revision: &RevisionSnapshot) -> Option<String> {
    revision.labels.get("deployer-commit").cloned()
}

/// Chooses the rollback target (see [`Target`]). Reads nothing: the history is the service's
/// annotation, already in `snapshot`.
pub fn plan(
    snapshot: &ServiceSnapshot,
    revisions: &[RevisionSnapshot],
    target: Target<'_>,
) -> Result<RollbackPlan, RollbackError> {
    let from = snapshot.serving();
    let find = |name: &str| -> Result<&RevisionSnapshot, RollbackError> {
        let revision = revisions
            .iter()
            .find(|revision| revision.name == name)
            .ok_or_else(|| RollbackError::UnknownRevision {
                revision: name.to_string(),
                known: revisions
                    .iter()
                    .map(|revision| format!("`{}`", revision.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        if revision.ready {
            Ok(revision)
        } else {
            Err(RollbackError::NotReady {
                revision: name.to_string(),
                reason: revision.failure.clone(),
            })
        }
    };
    let chosen = |revision: &RevisionSnapshot, why: String, warning: Option<String>| RollbackPlan {
        from: from.clone(),
        to: revision.name.clone(),
        why,
        warning,
        commit: commit_of(revision),
        reason: None,
    };
    match target {
        Target::Revision { name, force } => {
            let revision = find(name)?;
            // An unreadable history cannot call it bad; the human named it.
            let history = History::of(snapshot).unwrap_or_default();
            let verdicts = history.verdicts();
            let mut warning = None;
            if verdicts.get(name).copied() == Some(Verdict::Bad) {
                let record = bad_record(&history, name);
                if !force {
                    return Err(RollbackError::KnownBad {
                        revision: name.to_string(),
                        record,
                    });
                }
                warning = Some(format!("`{name}` is recorded bad ({record}); forced"));
            }
            return Ok(chosen(revision, "requested with `--to`".into(), warning));
        }
        Target::Commit(commit) => {
            let history = History::of(snapshot)?;
            let verdicts = history.verdicts();
            let of_commit: Vec<&RevisionSnapshot> = revisions
                .iter()
                .filter(|revision| {
                    commit_of(revision).is_some_and(|label| {
                        label.len() >= commit.len()
                            && label
                                .get(..commit.len())
                                .is_some_and(|prefix| prefix.eq_ignore_ascii_case(commit))
                    })
                })
                .collect();
            return match of_commit.iter().find(|revision| {
                revision.ready && verdicts.get(&revision.name).copied() == Some(Verdict::Good)
            }) {
                Some(revision) => Ok(chosen(
                    revision,
                    format!("the newest known-good revision of commit `{commit}`"),
                    None,
                )),
                None => Err(RollbackError::NoKnownGoodOfCommit {
                    commit: commit.to_string(),
                    revisions: of_commit
                        .iter()
                        .map(|revision| {
                            let known = match verdicts.get(&revision.name).copied() {
                                Some(Verdict::Good) => "good, not Ready",
                                Some(Verdict::Bad) => "recorded bad",
                                None if !revision.ready => "not Ready",
                                None => "no record",
                            };
                            format!("`{}` ({known})", revision.name)
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            };
        }
        Target::Automatic => {}
    }
    let history = History::of(snapshot)?;
    // Computed once: every candidate below is judged against the same verdicts.
    let verdicts = history.verdicts();
    if let Some(journal) = Journal::of(snapshot).filter(|journal| !journal.phase().is_terminal()) {
        if let Some(stable) = journal
            .stable
            .as_deref()
            .and_then(|stable| find(stable).ok())
        {
            if verdicts.get(&stable.name).copied() != Some(Verdict::Bad) {
                return Ok(chosen(
                    stable,
                    format!(
                        "the stable revision of the unfinished rollout `{}`",
                        journal.id
                    ),
                    None,
                ));
            }
        }
    }
    // What serves now is what on-call is rolling back from: a revision alone at 100% is never
    // its own target. In a split (a held canary), the known-good revision in it may be.
    let primary = snapshot.primary_revision();
    let alone = match from.as_slice() {
        [(name, 100)] => Some(name.as_str()),
        _ => None,
    };
    if let Some(good) = revisions.iter().find(|revision| {
        revision.ready
            && Some(revision.name.as_str()) != alone
            && verdicts.get(&revision.name).copied() == Some(Verdict::Good)
    }) {
        return Ok(chosen(
            good,
            "the last known-good revision: it passed a rollout and nothing failed it since".into(),
            None,
        ));
    }
    // No known-good revision: a revision with no record at all (deployed by other tools, or
    // before deployer kept a history), the newest Ready one older than the one serving.
    let primary = primary.ok_or_else(|| RollbackError::NoPrevious(snapshot.id.name.clone()))?;
    let position = revisions
        .iter()
        .position(|revision| revision.name == primary)
        .ok_or_else(|| RollbackError::NoPrevious(primary.clone()))?;
    let previous = revisions[position + 1..]
        .iter()
        .find(|revision| revision.ready && verdicts.get(&revision.name).copied().is_none())
        .ok_or_else(|| RollbackError::NoPrevious(primary.clone()))?;
    Ok(chosen(
        previous,
        format!("the newest Ready revision older than `{primary}`"),
        Some(format!(
            "no known-good revision in the release history: `{}` has no record (deployed by another tool, or before deployer kept one); check it serves correctly",
            previous.name
        )),
    ))
}

/// Reads what a rollback needs and plans it: the service (its annotations hold the release
/// history) and its revisions — the same two reads as without a history.
pub async fn prepare(
    platform: &dyn Platform,
    id: &ServiceId,
    target: Target<'_>,
) -> Result<(ServiceSnapshot, RollbackPlan), RollbackError> {
    let retry = RetryPolicy::default();
    let snapshot = read_service(platform, id, retry)
        .await?
        .ok_or_else(|| RollbackError::NoService(id.path()))?;
    let revisions = read_revisions(platform, id, retry).await?;
    let plan = plan(&snapshot, &revisions, target)?;
    Ok((snapshot, plan))
}

/// How long and how patiently a rollback write keeps trying (docs/ROLLOUT.md, "Retries").
///
/// The rollback is the most important write deployer makes: while it has not landed, users
/// are on a revision judged bad. It re-reads the service before every try and keeps trying on
/// throttling (429), unavailability (500, 503, refused or dropped connections), timeouts and
/// conflicts for `budget` — minutes, not the seconds of an ordinary write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollbackPolicy {
    /// The whole rollback's budget: no try starts after it.
    pub budget: Duration,
    /// Wait before the second try; doubled each time up to `max_backoff`, with jitter.
    pub initial_backoff: Duration,
    /// Longest wait between tries (a longer `Retry-After` is honoured, up to a minute).
    pub max_backoff: Duration,
}

impl Default for RollbackPolicy {
    fn default() -> Self {
        Self {
            budget: Duration::from_secs(5 * 60),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(15),
        }
    }
}

impl RollbackPolicy {
    fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: u32::MAX,
            initial_backoff: self.initial_backoff,
            max_backoff: self.max_backoff,
            budget: self.budget,
        }
    }
}

/// True when the service's lock is held by a deployer that is gone (same host, process no
/// longer running) or has expired: nobody will release it but a rollback or the next deploy.
fn stale_lock(snapshot: &ServiceSnapshot) -> bool {
    Lock::of(snapshot).is_some_and(|held| held.holder_gone() || held.is_expired(chrono::Utc::now()))
}

/// True when the rollback has nothing to write: `plan.to` already serves 100% and no
/// interrupted rollout is left to close. After a `kill -9` before any traffic moved
/// (`verifying`), the stable revision still serves 100%, but the dead run's canary (0%,
/// tagged), its unfinished journal and its lock are still on the service: that rollback
/// writes, and frees the service for the next deploy.
pub fn nothing_to_do(snapshot: &ServiceSnapshot, plan: &RollbackPlan) -> bool {
    plan.from == [(plan.to.clone(), 100)]
        && Journal::of(snapshot).is_none_or(|journal| journal.phase().is_terminal())
        && !stale_lock(snapshot)
}

/// The rollback write for the service as `snapshot` shows it: the split, the journal, the
/// lock of a dead run, and the release history's new entries — all in one write, so the
/// record of a rollback exists exactly when the rollback does.
fn rollback_update(
    snapshot: &ServiceSnapshot,
    plan: &RollbackPlan,
    closing: Option<&Journal>,
) -> ServiceUpdate {
    let mut update = ServiceUpdate::traffic(vec![TrafficTarget::to_revision(&plan.to, 100)]);
    let actor = Actor::current();
    // Appended to the history as the service shows it now (re-read before every try), so a
    // race with another writer loses nothing.
    let mut history = History::of(snapshot).unwrap_or_default();
    let journal = match closing {
        Some(journal) => Some(journal.clone()),
        None => Journal::of(snapshot)
            .filter(|journal| !journal.phase().is_terminal())
            .map(|journal| {
                journal.finished(
                    Phase::RolledBack,
                    format!("emergency rollback to `{}`", plan.to),
                )
            }),
    };
    if let Some(journal) = &journal {
        update = update.with_annotation(JOURNAL_ANNOTATION, Some(journal.encode()));
        if let Some(entry) = journal.release_entry(release::Kind::Rollout, actor.clone()) {
            history = history.with(entry);
        }
    }
    if closing.is_none() {
        let now = chrono::Utc::now();
        history = history.with(release::Entry {
            at: now,
            started: now,
            kind: release::Kind::EmergencyRollback,
            outcome: release::Outcome::Restored,
            revision: plan.to.clone(),
            from: plan
                .from
                .iter()
                .filter(|(name, _)| *name != plan.to)
                .map(|(name, _)| name.clone())
                .collect(),
            commit: plan.commit.clone(),
            commit_time: None,
            rollout: journal.as_ref().map(|journal| journal.id.clone()),
            actor,
            why: Some(plan.reason.clone().unwrap_or_else(|| plan.why.clone())),
        });
    }
    update = update.with_annotation(HISTORY_ANNOTATION, Some(history.encode()));
    // After a crash the dead run's lock would refuse the next deploy until it expires:
    // release it in the same write. A live holder keeps its lock (its rollout then meets
    // the changed etag and stops).
    if closing.is_none() && stale_lock(snapshot) {
        update = update.with_annotation(LOCK_ANNOTATION, None);
    }
    update
}

/// Executes a rollback plan with the default [`RollbackPolicy`] (see [`execute_with`]).
pub async fn execute(
    platform: &dyn Platform,
    snapshot: ServiceSnapshot,
    plan: &RollbackPlan,
    closing: Option<&Journal>,
) -> Result<ServiceSnapshot, RollbackError> {
    execute_with(platform, snapshot, plan, closing, RollbackPolicy::default()).await
}

/// Executes a rollback plan: one write of `[to: 100%]`, with a journal in the same write —
/// `closing` when given (a rollout's own rollback), else the journal of an unfinished rollout
/// closed as rolled back. After a conflict or a transient failure it waits, re-reads and
/// writes again (the intent, "100% on this revision", does not depend on what changed; a
/// rollback must not lose a race), until the write lands or `policy.budget` is spent.
pub async fn execute_with(
    platform: &dyn Platform,
    mut snapshot: ServiceSnapshot,
    plan: &RollbackPlan,
    closing: Option<&Journal>,
    policy: RollbackPolicy,
) -> Result<ServiceSnapshot, RollbackError> {
    let mut budget = Budget::start(policy.retry());
    let started = tokio::time::Instant::now();
    loop {
        let update = rollback_update(&snapshot, plan, closing);
        let error = match platform.update(&snapshot.id, &snapshot.etag, &update).await {
            Ok(after) => return Ok(after),
            Err(error @ PlatformError::Conflict(_)) => error,
            Err(error) if error.is_transient() => error,
            Err(error @ PlatformError::Malformed(_)) => {
                // The write was sent and answered with something unusable (an operation named
                // `../../../etc/passwd`): it may have landed. Re-read once and believe the
                // service: landed is done; otherwise the rollback failed (a human must act) —
                // sending it again would only get the same answer.
                let fresh = read_service(platform, &snapshot.id, RetryPolicy::default())
                    .await?
                    .ok_or_else(|| RollbackError::NoService(snapshot.id.path()))?;
                if update.is_visible_in(&fresh) {
                    return Ok(fresh);
                }
                return Err(error.into());
            }
            Err(error) => return Err(error.into()),
        };
        let Some(wait) = budget.after_failure(&error) else {
            return Err(budget.exhausted(error).into());
        };
        tracing::info!(
            target: "deployer::progress",
            "{}",
            budget.retrying(
                wait,
                &format_args!("rollback to `{}` not written yet ({error}); re-reading first", plan.to)
            )
        );
        tokio::time::sleep(wait).await;
        let remaining = policy.budget.saturating_sub(started.elapsed());
        let read = RetryPolicy {
            budget: remaining,
            ..policy.retry()
        };
        let fresh = read_service(platform, &snapshot.id, read)
            .await?
            .ok_or_else(|| RollbackError::NoService(snapshot.id.path()))?;
        if update.is_visible_in(&fresh) {
            tracing::info!(id = %snapshot.id, "the rollback write had landed");
            return Ok(fresh);
        }
        snapshot = fresh;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{memory::MemoryPlatform, RevisionSpec};

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
            labels: Default::default(),
            base: None,
            settings: Default::default(),
        }
    }

    /// svc-1 (ready), svc-2 (ready), svc-3 (failed), svc-4 (ready, serving 100%).
    async fn platform() -> MemoryPlatform {
        let platform = MemoryPlatform::new();
        platform.fail_image("bad");
        let mut snapshot = platform.create(&id(), &spec("svc-1", "a")).await.unwrap();
        for (name, image) in [("svc-2", "b"), ("svc-3", "bad"), ("svc-4", "d")] {
            let update = ServiceUpdate {
                template: Some(spec(name, image)),
                traffic: Some(vec![TrafficTarget::to_revision(name, 100)]),
                ..ServiceUpdate::default()
            };
            let _ = platform.update(&id(), &snapshot.etag, &update).await;
            snapshot = platform.service(&id()).await.unwrap().unwrap();
        }
        platform
    }

    #[tokio::test]
    async fn the_previous_ready_revision_is_chosen_skipping_failed_ones() {
        let platform = platform().await;
        let (snapshot, plan) = prepare(&platform, &id(), Target::Automatic).await.unwrap();
        assert_eq!(plan.from, [("svc-4".to_string(), 100)]);
        assert_eq!(plan.to, "svc-2");
        let writes = platform.writes();
        let after = execute(&platform, snapshot, &plan, None).await.unwrap();
        assert_eq!(after.serving(), [("svc-2".to_string(), 100)]);
        assert_eq!(platform.writes(), writes + 1, "one write");
    }

    #[tokio::test]
    async fn a_target_that_is_not_ready_or_unknown_is_refused() {
        let platform = platform().await;
        let error = prepare(
            &platform,
            &id(),
            Target::Revision {
                name: "svc-3",
                force: false,
            },
        )
        .await
        .unwrap_err();
        assert!(matches!(error, RollbackError::NotReady { .. }), "{error}");
        let error = prepare(
            &platform,
            &id(),
            Target::Revision {
                name: "svc-9",
                force: false,
            },
        )
        .await
        .unwrap_err();
        assert!(
            error.to_string().contains("`svc-9` does not exist"),
            "{error}"
        );
        let (_, plan) = prepare(
            &platform,
            &id(),
            Target::Revision {
                name: "svc-1",
                force: false,
            },
        )
        .await
        .unwrap();
        assert_eq!(plan.to, "svc-1");
    }

    /// `deployer rollback` after a crash left the dead run's lock: the next deploy was refused
    /// for ~14 minutes, until the lock expired.
    #[tokio::test]
    async fn a_rollback_after_a_crash_releases_the_dead_runs_lock_in_the_same_write() {
        let platform = platform().await;
        let mut dead = Lock::new(
            "dead",
            std::time::Duration::from_secs(3600),
            chrono::Utc::now(),
        );
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        dead.pid = gone.id();
        let mut alive = Lock::new(
            "alive",
            std::time::Duration::from_secs(3600),
            chrono::Utc::now(),
        );
        alive.pid = std::process::id();
        for (lock, released) in [(dead, true), (alive, false)] {
            platform.external_update(
                &id(),
                &ServiceUpdate::default()
                    .with_annotation(LOCK_ANNOTATION, Some(serde_json::to_string(&lock).unwrap())),
            );
            let (snapshot, plan) = prepare(
                &platform,
                &id(),
                Target::Revision {
                    name: "svc-2",
                    force: false,
                },
            )
            .await
            .unwrap();
            let writes = platform.writes();
            let after = execute(&platform, snapshot, &plan, None).await.unwrap();
            assert_eq!(platform.writes(), writes + 1, "one write");
            assert_eq!(
                Lock::of(&after).is_none(),
                released,
                "lock of pid {} released: {released}",
                lock.pid
            );
        }
    }

    /// After a `kill -9` in `verifying` (the stable revision still at 100%, the canary at 0%),
    /// `deployer rollback` answered "nothing to do" and left the dead run's lock and
    /// unfinished journal: the next deploy had to take them over.
    #[tokio::test]
    async fn a_rollback_after_a_crash_before_traffic_moved_still_closes_the_journal_and_frees_the_lock(
    ) {
        let platform = platform().await;
        let mut dead = Lock::new("dead", Duration::from_secs(3600), chrono::Utc::now());
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        dead.pid = gone.id();
        let journal = Journal {
            id: "dead".into(),
            stable: Some("svc-4".into()),
            canary: "svc-5".into(),
            commit: "c0ffee0".into(),
            commit_time: None,
            image: "d".into(),
            owner: "someone".into(),
            started: chrono::Utc::now(),
            updated: chrono::Utc::now(),
            state: super::super::machine::State::start(),
            decision: None,
        };
        assert_eq!(journal.phase(), Phase::Verifying);
        platform.external_update(
            &id(),
            &ServiceUpdate::default()
                .with_annotation(LOCK_ANNOTATION, Some(serde_json::to_string(&dead).unwrap()))
                .with_annotation(JOURNAL_ANNOTATION, Some(journal.encode())),
        );
        let (snapshot, plan) = prepare(&platform, &id(), Target::Automatic).await.unwrap();
        assert_eq!(plan.from, [("svc-4".to_string(), 100)]);
        assert_eq!(plan.to, "svc-4", "{plan:?}");
        assert!(!nothing_to_do(&snapshot, &plan));
        let after = execute(&platform, snapshot, &plan, None).await.unwrap();
        assert!(Lock::of(&after).is_none());
        assert!(Journal::of(&after).unwrap().phase().is_terminal());
        assert_eq!(after.serving(), [("svc-4".to_string(), 100)]);
        // Once closed, rolling back to the revision serving is nothing to do.
        let (snapshot, plan) = prepare(
            &platform,
            &id(),
            Target::Revision {
                name: "svc-4",
                force: false,
            },
        )
        .await
        .unwrap();
        assert!(nothing_to_do(&snapshot, &plan));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rollback_wins_a_race_and_retries_through_503s() {
        let platform = platform().await;
        let (snapshot, plan) = prepare(&platform, &id(), Target::Automatic).await.unwrap();
        platform.external_update(
            &id(),
            &ServiceUpdate::default().with_annotation("someone", Some("else".into())),
        );
        platform.inject(crate::platform::memory::Fault::Before(
            PlatformError::Unavailable("503".into()),
        ));
        let after = execute(&platform, snapshot, &plan, None).await.unwrap();
        assert_eq!(after.serving(), [("svc-2".to_string(), 100)]);
        assert_eq!(
            after.annotations.get("someone").map(String::as_str),
            Some("else")
        );
    }

    /// With 30% of Admin API calls answering 429, a faulty canary's automatic rollback failed
    /// after 5 quick tries (exit 5, split left 90/10).
    #[tokio::test(start_paused = true)]
    async fn a_rollback_keeps_trying_through_twenty_throttled_writes_instead_of_giving_up() {
        let platform = platform().await;
        let (snapshot, plan) = prepare(&platform, &id(), Target::Automatic).await.unwrap();
        for _ in 0..20 {
            platform.inject(crate::platform::memory::Fault::Before(
                PlatformError::Unavailable("HTTP 429: quota exceeded".into()),
            ));
        }
        let after = execute(&platform, snapshot, &plan, None).await.unwrap();
        assert_eq!(after.serving(), [("svc-2".to_string(), 100)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rollback_re_reads_through_failing_reads_between_its_tries() {
        let platform = platform().await;
        let (snapshot, plan) = prepare(&platform, &id(), Target::Automatic).await.unwrap();
        platform.inject(crate::platform::memory::Fault::Before(
            PlatformError::Unavailable("HTTP 503".into()),
        ));
        for _ in 0..15 {
            platform.inject_read_failure(PlatformError::Unavailable("HTTP 503".into()));
        }
        let after = execute(&platform, snapshot, &plan, None).await.unwrap();
        assert_eq!(after.serving(), [("svc-2".to_string(), 100)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rollback_under_endless_throttling_gives_up_within_its_budget_saying_so() {
        let platform = platform().await;
        let (snapshot, plan) = prepare(&platform, &id(), Target::Automatic).await.unwrap();
        for _ in 0..10_000 {
            platform.inject(crate::platform::memory::Fault::Before(
                PlatformError::Throttled {
                    message: "`http://fake`: HTTP 429".into(),
                    retry_after: None,
                },
            ));
        }
        let policy = RollbackPolicy {
            budget: Duration::from_secs(120),
            ..RollbackPolicy::default()
        };
        let started = tokio::time::Instant::now();
        let error = execute_with(&platform, snapshot, &plan, None, policy)
            .await
            .unwrap_err();
        assert!(
            started.elapsed() <= policy.budget,
            "{:?}",
            started.elapsed()
        );
        assert!(
            started.elapsed() >= policy.budget - policy.max_backoff,
            "kept trying for most of the budget: {:?}",
            started.elapsed()
        );
        let message = error.to_string();
        assert!(message.contains("http://fake"), "{message}");
        assert!(message.contains("gave up after"), "{message}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rollback_waits_as_long_as_retry_after_asks() {
        let platform = platform().await;
        let (snapshot, plan) = prepare(&platform, &id(), Target::Automatic).await.unwrap();
        platform.inject(crate::platform::memory::Fault::Before(
            PlatformError::Throttled {
                message: "HTTP 429".into(),
                retry_after: Some(Duration::from_secs(20)),
            },
        ));
        let started = tokio::time::Instant::now();
        let after = execute(&platform, snapshot, &plan, None).await.unwrap();
        assert_eq!(after.serving(), [("svc-2".to_string(), 100)]);
        assert!(started.elapsed() >= Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rollback_does_not_retry_what_the_platform_refused() {
        let platform = platform().await;
        let (snapshot, plan) = prepare(&platform, &id(), Target::Automatic).await.unwrap();
        platform.inject(crate::platform::memory::Fault::Before(
            PlatformError::PermissionDenied("403".into()),
        ));
        let writes = platform.writes();
        let error = execute(&platform, snapshot, &plan, None).await.unwrap_err();
        assert!(matches!(
            error,
            RollbackError::Platform(PlatformError::PermissionDenied(_))
        ));
        assert_eq!(platform.writes(), writes);
    }

    /// The history of A (first deploy), B (promoted), C (rolled back), D (promoted), as the
    /// rollouts write it, on a service whose revisions carry their commits.
    async fn abcd() -> MemoryPlatform {
        let platform = MemoryPlatform::new();
        let labelled = |name: &str| RevisionSpec {
            labels: [(
                "deployer-commit".to_string(),
                format!("{name}{name}{name}{name}0000"),
            )]
            .into(),
            ..spec(&format!("svc-{name}"), name)
        };
        let mut snapshot = platform.create(&id(), &labelled("a")).await.unwrap();
        let now = chrono::Utc::now();
        let entry = |revision: &str, stable: Option<&str>, outcome| release::Entry {
            at: now,
            started: now,
            kind: release::Kind::Rollout,
            outcome,
            revision: format!("svc-{revision}"),
            from: stable.into_iter().map(|s| format!("svc-{s}")).collect(),
            commit: None,
            commit_time: None,
            rollout: None,
            actor: Actor::current(),
            why: Some("request errors FAIL — canary 50.0% errors (30/60)".into()),
        };
        let mut history =
            History::default().with(entry("a", None, release::Outcome::PromotedUnmonitored));
        for (name, outcome) in [
            ("b", release::Outcome::Promoted),
            ("c", release::Outcome::RolledBack),
            ("d", release::Outcome::Promoted),
        ] {
            let serving = if outcome == release::Outcome::RolledBack {
                snapshot.primary_revision().unwrap()
            } else {
                format!("svc-{name}")
            };
            history = history.with(entry(
                name,
                Some("b").filter(|_| name != "b").or(Some("a")),
                outcome,
            ));
            let update = ServiceUpdate {
                template: Some(labelled(name)),
                traffic: Some(vec![TrafficTarget::to_revision(&serving, 100)]),
                ..ServiceUpdate::default()
            }
            .with_annotation(HISTORY_ANNOTATION, Some(history.encode()));
            snapshot = platform
                .update(&id(), &snapshot.etag, &update)
                .await
                .unwrap();
        }
        platform
    }

    /// `deployer rollback` after A, B, C (rolled back), D put 100% on C, whose environment
    /// still made it fail: the newest Ready revision older than D.
    #[tokio::test]
    async fn a_plain_rollback_never_returns_to_a_revision_rolled_back_as_faulty() {
        let platform = abcd().await;
        let (snapshot, plan) = prepare(&platform, &id(), Target::Automatic).await.unwrap();
        assert_eq!(plan.from, [("svc-d".to_string(), 100)]);
        assert_eq!(plan.to, "svc-b", "{plan:?}");
        assert_eq!(plan.warning, None);
        assert_eq!(plan.commit.as_deref(), Some("bbbb0000"));
        let after = execute(&platform, snapshot, &plan, None).await.unwrap();
        assert_eq!(after.serving(), [("svc-b".to_string(), 100)]);
        // The emergency rollback is recorded in the same write, and D is now known bad.
        let history = History::of(&after).unwrap();
        let last = history.last().unwrap();
        assert_eq!(last.kind, release::Kind::EmergencyRollback);
        assert_eq!(
            (last.revision.as_str(), last.from.as_slice()),
            ("svc-b", &["svc-d".to_string()][..])
        );
        assert_eq!(history.verdict("svc-d"), Some(Verdict::Bad));
        // The next plain rollback skips C and D: A, the stable revision of B's passed rollout.
        let (_, plan) = prepare(&platform, &id(), Target::Automatic).await.unwrap();
        assert_eq!(plan.to, "svc-a");
    }

    #[tokio::test]
    async fn a_revision_recorded_bad_is_refused_as_a_target_unless_forced() {
        let platform = abcd().await;
        let error = prepare(
            &platform,
            &id(),
            Target::Revision {
                name: "svc-c",
                force: false,
            },
        )
        .await
        .unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, RollbackError::KnownBad { .. }), "{message}");
        assert!(
            message.contains("rolled back") && message.contains("50.0% errors"),
            "{message}"
        );
        let (_, plan) = prepare(
            &platform,
            &id(),
            Target::Revision {
                name: "svc-c",
                force: true,
            },
        )
        .await
        .unwrap();
        assert_eq!(plan.to, "svc-c");
        assert!(plan.warning.unwrap().contains("recorded bad"));
    }

    #[tokio::test]
    async fn to_commit_picks_the_newest_known_good_revision_of_that_commit() {
        let platform = abcd().await;
        let (_, plan) = prepare(&platform, &id(), Target::Commit("BBBB00"))
            .await
            .unwrap();
        assert_eq!(plan.to, "svc-b");
        let error = prepare(&platform, &id(), Target::Commit("cccc"))
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("`svc-c` (recorded bad)"),
            "{error}"
        );
        let error = prepare(&platform, &id(), Target::Commit("9999"))
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("no revision carries it"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn without_any_record_the_newest_older_ready_revision_is_used_with_a_warning() {
        let platform = platform().await;
        let (_, plan) = prepare(&platform, &id(), Target::Automatic).await.unwrap();
        assert_eq!(plan.to, "svc-2");
        assert!(plan.warning.unwrap().contains("no record"));
    }

    #[tokio::test]
    async fn an_unreadable_history_refuses_to_guess_and_names_to() {
        let platform = platform().await;
        platform.external_update(
            &id(),
            &ServiceUpdate::default().with_annotation(HISTORY_ANNOTATION, Some("{garbage".into())),
        );
        let error = prepare(&platform, &id(), Target::Automatic)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("--to REVISION"), "{error}");
        // `--to` still works: on-call can always name the target.
        let (_, plan) = prepare(
            &platform,
            &id(),
            Target::Revision {
                name: "svc-2",
                force: false,
            },
        )
        .await
        .unwrap();
        assert_eq!(plan.to, "svc-2");
    }

    /// Two on-call engineers rolling back at once, from the same read: the second write meets
    /// the first one's etag, re-reads and appends to the history as it now is — no entry of
    /// either is lost, round after round.
    #[tokio::test(start_paused = true)]
    async fn two_writers_of_the_history_at_once_lose_nothing() {
        let platform = abcd().await;
        let rounds = 30;
        for round in 0..rounds {
            let (snapshot, _) = prepare(&platform, &id(), Target::Automatic).await.unwrap();
            let serving = snapshot.primary_revision().unwrap();
            let (first, second) = if serving == "svc-b" {
                ("svc-a", "svc-d")
            } else {
                ("svc-b", "svc-a")
            };
            let plan = |to: &str| RollbackPlan {
                reason: Some(format!("round {round} to {to}")),
                ..RollbackPlan::to_stable(snapshot.serving(), to.into(), "drill".into())
            };
            // Both planned from the same snapshot (the same etag).
            let (plan_a, plan_b) = (plan(first), plan(second));
            let (a, b) = tokio::join!(
                execute(&platform, snapshot.clone(), &plan_a, None),
                execute(&platform, snapshot.clone(), &plan_b, None),
            );
            a.unwrap();
            b.unwrap();
        }
        let history = History::of(&platform.service(&id()).await.unwrap().unwrap()).unwrap();
        let reasons: Vec<&str> = history
            .entries
            .iter()
            .filter(|entry| entry.kind == release::Kind::EmergencyRollback)
            .filter_map(|entry| entry.why.as_deref())
            .collect();
        assert_eq!(reasons.len(), 2 * rounds, "{reasons:?}");
        for round in 0..rounds {
            assert_eq!(
                reasons
                    .iter()
                    .filter(|why| why.starts_with(&format!("round {round} to")))
                    .count(),
                2,
                "round {round}: {reasons:?}"
            );
        }
        assert!(history.encode().len() <= release::MAX_ENCODED_BYTES);
    }
}
