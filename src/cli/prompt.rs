//! [`Prompter`] on a terminal (dialoguer), or [`Unattended`] when nobody can answer.

use dialoguer::{Confirm, Select};

use crate::interaction::{Prompter, Unattended};

use super::Context;

/// Terminal prompts on stderr.
#[derive(Debug, Clone, Copy)]
pub struct TerminalPrompter;

impl Prompter for TerminalPrompter {
    fn confirm(&self, question: &str, safe_default: bool) -> bool {
        // A prompt that cannot be shown (terminal gone) takes the safe default.
        Confirm::new()
            .with_prompt(question)
            .default(safe_default)
            .interact()
            .unwrap_or(safe_default)
    }

    fn choose(&self, question: &str, options: &[&str], safe_default: usize) -> usize {
        Select::new()
            .with_prompt(question)
            .items(options)
            .default(safe_default)
            .interact()
            .unwrap_or(safe_default)
    }
}

/// One line of text typed on the terminal (`None` when it cannot be asked or is left empty).
pub fn text(question: &str) -> Option<String> {
    dialoguer::Input::<String>::new()
        .with_prompt(question)
        .allow_empty(true)
        .interact_text()
        .ok()
        .filter(|answer| !answer.trim().is_empty())
}

/// The prompter for this run: the terminal when interactive (and not `--yes`), else unattended.
pub fn prompter(context: &Context) -> Box<dyn Prompter> {
    if context.interactive && !context.assume_yes {
        Box::new(TerminalPrompter)
    } else {
        Box::new(Unattended {
            assume_yes: context.assume_yes,
        })
    }
}
