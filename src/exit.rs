//! Exit codes: one table for every command, documented in the README.
//!
//! Scripts and CI pipelines branch on these numbers, so they never change meaning. A command
//! returns an [`ExitStatus`]; errors are classified by the CLI edge into [`ExitStatus::Failure`]
//! or [`ExitStatus::Usage`].

use std::process::ExitCode;

/// How a `deployer` run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: the command did what was asked; checks passed.
    Success,
    /// 1: the command ran but found problems (invalid state, failed check), or an operation
    /// failed (a remote system refused or was unreachable).
    Failure,
    /// 2: the command line or a service file is invalid; nothing was changed.
    Usage,
    /// 2: a check found the worst severity, CRITICAL (`drift`, `health`, `check`). The same
    /// number as [`ExitStatus::Usage`] — the team's health-check convention 0 OK / 1 WARN /
    /// 2 CRITICAL, which schedulers and alerting already branch on — but a variant of its own,
    /// so that the code never confuses "the command line is wrong" with "the command ran and
    /// found something critical" (`Usage` only ever means the input is wrong).
    Critical,
    /// 3: a deploy stopped before any traffic moved to the new revision (failed identity
    /// check, revision did not start, service locked by another rollout); the service serves
    /// as before.
    StoppedBeforeTraffic,
    /// 4: a deploy was rolled back: traffic is back on the previous revision.
    RolledBack,
    /// 5: a rollback was needed and failed: a human must act now.
    RollbackFailed,
    /// 6: a deploy stopped with the traffic split left as it was, for a human to decide
    /// (inconclusive analysis with the `hold` policy, a service-wide failure, Ctrl-C with
    /// "leave").
    Held,
}

impl ExitStatus {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Usage | ExitStatus::Critical => 2,
            ExitStatus::StoppedBeforeTraffic => 3,
            ExitStatus::RolledBack => 4,
            ExitStatus::RollbackFailed => 5,
            ExitStatus::Held => 6,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(status.code())
    }
}
