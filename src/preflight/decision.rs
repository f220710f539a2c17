//! From a [`PreflightReport`] to go / no-go: who may accept a warning, and how.
//!
//! The rules (documented in the README):
//! - a `FAIL` anywhere stops the deploy; nothing accepts it, and no question is asked (a question
//!   whose answer cannot change the outcome wastes the user's attention);
//! - a `WARN` is accepted by `--accept-warnings`, or, in an interactive run, by a human answering
//!   yes to "continue?" (the default answer is no);
//! - a schema-change `WARN` is not covered by `--accept-warnings`: it needs its own flag,
//!   `--accept-schema-changes`, or a human's yes to a question that says rollback may be unsafe.
//!   A pipeline that always passes `--accept-warnings` would otherwise ship every future schema
//!   change unseen;
//! - `--yes` answers confirmations of other commands; it never accepts a preflight warning (the
//!   CLI runs such a run as non-interactive).

use serde::Serialize;

use crate::interaction::Prompter;

use super::{PreflightReport, Status};

/// What may accept warnings in this run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Acceptance {
    /// A human can be asked.
    pub interactive: bool,
    /// `--accept-warnings`: every warning except schema changes.
    pub accept_warnings: bool,
    /// `--accept-schema-changes`: the schema-change warning.
    pub accept_schema_changes: bool,
}

/// How one step ended up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Resolution {
    /// The step passed.
    Passed,
    /// A warning accepted by a flag.
    AcceptedByFlag {
        /// The flag.
        flag: &'static str,
    },
    /// A warning a human accepted when asked.
    Confirmed,
    /// A warning a human declined when asked.
    Declined,
    /// A warning nobody accepted; what would accept it.
    NotAccepted {
        /// `--accept-warnings` or `--accept-schema-changes` (or an interactive yes).
        needs: &'static str,
    },
    /// A warning not considered because a step failed (or an earlier warning was declined).
    NotAsked,
    /// The step failed.
    Failed,
}

/// One step's resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepDecision {
    /// The step (1 to 8).
    pub step: u8,
    /// Its resolution.
    #[serde(flatten)]
    pub resolution: Resolution,
}

/// The go / no-go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// True when deploying is safe (or its risks were accepted).
    pub safe_to_deploy: bool,
    /// Every step's resolution, in order.
    pub steps: Vec<StepDecision>,
}

impl Decision {
    /// The steps that stop the deploy, with their resolution.
    pub fn blocking(&self) -> impl Iterator<Item = &StepDecision> {
        self.steps.iter().filter(|decision| {
            matches!(
                decision.resolution,
                Resolution::Failed | Resolution::Declined | Resolution::NotAccepted { .. }
            )
        })
    }
}

/// Decides whether the report allows a deploy, asking `prompter` about each warning when the run
/// is interactive and no flag accepts it.
pub fn decide(
    report: &PreflightReport,
    acceptance: Acceptance,
    prompter: &dyn Prompter,
) -> Decision {
    let any_failed = report
        .checks
        .iter()
        .any(|check| check.status == Status::Fail);
    let mut stopped = any_failed;
    let mut steps = Vec::new();
    for check in &report.checks {
        let resolution = match check.status {
            Status::Pass => Resolution::Passed,
            Status::Fail => Resolution::Failed,
            Status::Warn if stopped => Resolution::NotAsked,
            Status::Warn => {
                let (flag, accepted_by_flag, question) = if check.needs_explicit_confirmation {
                    (
                        "--accept-schema-changes",
                        acceptance.accept_schema_changes,
                        format!(
                            "[{}/{}] {}. A rollback may then be unsafe. Deploy anyway?",
                            check.step,
                            super::STEP_COUNT,
                            check.reason
                        ),
                    )
                } else {
                    (
                        "--accept-warnings",
                        acceptance.accept_warnings,
                        format!(
                            "[{}/{}] {}: {}. Continue?",
                            check.step,
                            super::STEP_COUNT,
                            check.name,
                            check.reason
                        ),
                    )
                };
                if accepted_by_flag {
                    Resolution::AcceptedByFlag { flag }
                } else if acceptance.interactive {
                    // The safe default is no: an unanswered question never deploys.
                    if prompter.confirm(&question, false) {
                        Resolution::Confirmed
                    } else {
                        stopped = true;
                        Resolution::Declined
                    }
                } else {
                    Resolution::NotAccepted { needs: flag }
                }
            }
        };
        steps.push(StepDecision {
            step: check.step,
            resolution,
        });
    }
    let safe_to_deploy = steps.iter().all(|decision| {
        matches!(
            decision.resolution,
            Resolution::Passed | Resolution::AcceptedByFlag { .. } | Resolution::Confirmed
        )
    });
    Decision {
        safe_to_deploy,
        steps,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::super::{Check, Step};
    use super::*;

    /// Answers from a script and records the questions.
    struct Scripted {
        answers: Mutex<Vec<bool>>,
        questions: Mutex<Vec<String>>,
    }

    impl Scripted {
        fn new(answers: &[bool]) -> Self {
            Self {
                answers: Mutex::new(answers.iter().rev().copied().collect()),
                questions: Mutex::default(),
            }
        }

        fn questions(&self) -> Vec<String> {
            self.questions.lock().unwrap().clone()
        }
    }

    impl Prompter for Scripted {
        fn confirm(&self, question: &str, _safe_default: bool) -> bool {
            self.questions.lock().unwrap().push(question.to_string());
            self.answers
                .lock()
                .unwrap()
                .pop()
                .expect("a question the script did not expect")
        }

        fn choose(&self, _question: &str, _options: &[&str], _safe_default: usize) -> usize {
            panic!("preflight never asks to choose")
        }
    }

    fn report(statuses: &[(Step, Status, bool)]) -> PreflightReport {
        PreflightReport {
            service: "svc".into(),
            head: None,
            deployed: None,
            commits: None,
            checks: statuses
                .iter()
                .map(|(step, status, schema)| {
                    let mut check = Check::new(*step, *status, "because");
                    check.needs_explicit_confirmation = *schema;
                    check
                })
                .collect(),
        }
    }

    const INTERACTIVE: Acceptance = Acceptance {
        interactive: true,
        accept_warnings: false,
        accept_schema_changes: false,
    };

    fn warnings() -> PreflightReport {
        report(&[
            (Step::UncommittedChanges, Status::Pass, false),
            (Step::RemoteSync, Status::Warn, false),
            (Step::SchemaChanges, Status::Warn, true),
        ])
    }

    #[test]
    fn interactive_asks_about_each_warning_and_schema_says_rollback_is_at_risk() {
        let prompter = Scripted::new(&[true, true]);
        let decision = decide(&warnings(), INTERACTIVE, &prompter);
        assert!(decision.safe_to_deploy);
        let questions = prompter.questions();
        assert_eq!(questions[0], "[3/8] Sync with remote: because. Continue?");
        assert_eq!(
            questions[1],
            "[5/8] because. A rollback may then be unsafe. Deploy anyway?"
        );
    }

    #[test]
    fn a_declined_warning_stops_without_further_questions() {
        let prompter = Scripted::new(&[false]);
        let decision = decide(&warnings(), INTERACTIVE, &prompter);
        assert!(!decision.safe_to_deploy);
        assert_eq!(prompter.questions().len(), 1);
        assert_eq!(decision.steps[1].resolution, Resolution::Declined);
        assert_eq!(decision.steps[2].resolution, Resolution::NotAsked);
    }

    #[test]
    fn a_failure_stops_without_asking_anything() {
        let prompter = Scripted::new(&[]);
        let mut failed = warnings();
        failed.checks[0].status = Status::Fail;
        let decision = decide(&failed, INTERACTIVE, &prompter);
        assert!(!decision.safe_to_deploy);
        assert!(prompter.questions().is_empty());
        let all_flags = Acceptance {
            interactive: false,
            accept_warnings: true,
            accept_schema_changes: true,
        };
        assert!(!decide(&failed, all_flags, &prompter).safe_to_deploy);
    }

    #[test]
    fn non_interactive_warnings_need_their_flags() {
        let prompter = Scripted::new(&[]);
        let none = Acceptance::default();
        let decision = decide(&warnings(), none, &prompter);
        assert!(!decision.safe_to_deploy);
        assert_eq!(
            decision
                .blocking()
                .map(|step| step.step)
                .collect::<Vec<_>>(),
            [3, 5]
        );

        let warnings_only = Acceptance {
            accept_warnings: true,
            ..none
        };
        let decision = decide(&warnings(), warnings_only, &prompter);
        assert!(
            !decision.safe_to_deploy,
            "schema changes need their own flag"
        );
        assert_eq!(
            decision.steps[2].resolution,
            Resolution::NotAccepted {
                needs: "--accept-schema-changes"
            }
        );

        let both = Acceptance {
            accept_schema_changes: true,
            ..warnings_only
        };
        assert!(decide(&warnings(), both, &prompter).safe_to_deploy);
        assert!(prompter.questions().is_empty());
    }

    #[test]
    fn interactive_flags_accept_without_asking_but_schema_still_asks() {
        let prompter = Scripted::new(&[true]);
        let acceptance = Acceptance {
            accept_warnings: true,
            ..INTERACTIVE
        };
        let decision = decide(&warnings(), acceptance, &prompter);
        assert!(decision.safe_to_deploy);
        assert_eq!(prompter.questions().len(), 1, "only the schema question");
        assert_eq!(decision.steps[2].resolution, Resolution::Confirmed);
    }
}
