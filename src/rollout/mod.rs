//! Guarded rollouts: the plan, the pure decisions, the driver, the lock and the journal.
//!
//! [`events`] is what a rollout reports; [`gates`] turns service checks into metrics of a look;
//! [`observation`] is what a look measured; [`machine`] decides (pure, table-tested:
//! `advance(state, input) -> (state, action)`, from start-up to recovery; the whole deploy
//! around it, preflight → image → rollout, is [`crate::pipeline`]); [`ports`] is what
//! the driver is given and talks through (the request, the analyser and check traits);
//! [`start`] reads the service and carries out the machine's first decision; [`driver`] acts
//! (the only async loop, through the [`Platform`](crate::platform::Platform) trait); [`naming`]
//! chooses rollout ids and revision names; [`rollback`] is the emergency rollback write, which
//! the driver's own rollbacks reuse; [`lock`] keeps rollouts of one service exclusive;
//! [`journal`] records every phase on the service itself so that an interrupted rollout is
//! found and finished by the next run ([`recovery`] resumes or rolls it back); [`identity`]
//! checks that the new revision runs the code we meant to deploy before it gets any traffic.

pub mod analyser;
pub mod driver;
pub mod events;
pub mod gates;
pub mod held;
pub mod identity;
pub mod journal;
pub mod lock;
pub mod machine;
pub mod naming;
pub mod observation;
mod observe;
pub mod ports;
pub mod recovery;
pub mod rollback;
pub mod start;
pub mod watch;
