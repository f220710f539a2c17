//! How domain code asks questions without knowing about terminals.
//!
//! Preflight and rollouts sometimes need a human decision (continue despite a warning? resume or
//! roll back an interrupted rollout?). They ask through [`Prompter`]; the CLI implements it with
//! terminal prompts, and [`Unattended`] answers for CI and cron with the documented safe default
//! (or yes, with `--yes`). Domain modules never import a terminal library.

/// Asks a human, or answers on their behalf.
pub trait Prompter: Send + Sync {
    /// A yes/no question. `safe_default` is the answer when nobody can be asked.
    fn confirm(&self, question: &str, safe_default: bool) -> bool;

    /// A choice among `options`; returns the index chosen. `safe_default` is the index used when
    /// nobody can be asked.
    fn choose(&self, question: &str, options: &[&str], safe_default: usize) -> usize;
}

/// The prompter of non-interactive runs: every question gets its safe default, except that
/// `assume_yes` (`--yes`) answers yes to confirmations.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unattended {
    /// `--yes`.
    pub assume_yes: bool,
}

impl Prompter for Unattended {
    fn confirm(&self, question: &str, safe_default: bool) -> bool {
        let answer = self.assume_yes || safe_default;
        tracing::info!(
            question,
            answer,
            "answered without asking (non-interactive)"
        );
        answer
    }

    fn choose(&self, question: &str, options: &[&str], safe_default: usize) -> usize {
        tracing::info!(
            question,
            answer = options.get(safe_default).copied().unwrap_or_default(),
            "answered without asking (non-interactive)"
        );
        safe_default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unattended_answers_the_safe_default_unless_told_yes() {
        assert!(!Unattended { assume_yes: false }.confirm("continue?", false));
        assert!(Unattended { assume_yes: true }.confirm("continue?", false));
        assert_eq!(
            Unattended { assume_yes: true }.choose("what now?", &["resume", "roll back"], 1),
            1
        );
    }
}
