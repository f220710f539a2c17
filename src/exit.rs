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
}

impl ExitStatus {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Usage => 2,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(status.code())
    }
}
