//! GitHub Actions output, shared by `preflight`, `deploy`, `drift` and `health`: when the runner
//! says so (`GITHUB_ACTIONS=true`), every FAIL/CRITICAL becomes an `::error` workflow command and
//! every WARN a `::warning`, so that the run's page lists them without anyone reading the log,
//! and a Markdown summary is appended to the file `$GITHUB_STEP_SUMMARY` names.
//!
//! Escaping follows GitHub's documented rules for workflow commands (the same as
//! `@actions/core`'s `toCommandValue`/`escapeData`/`escapeProperty`): in the message `%` → `%25`,
//! CR → `%0D`, LF → `%0A`; in a property (`title=`) also `:` → `%3A` and `,` → `%2C`. Without it
//! a newline in a commit subject or a remote error would end the command early and let the rest
//! of the line be read as a command of its own (`::add-mask::`, `::stop-commands::`). Other
//! control characters (an escape sequence in remote text) are written as `\u{1b}` so that the log
//! shows them instead of obeying them.
//!
//! Where the commands go: GitHub documents workflow commands as written to stdout, so text output
//! puts them there. With `--format json` stdout must stay one JSON document (`| jq` in a workflow
//! step), so they go to stderr: the runner reads commands from both streams of a step (its
//! `ScriptHandler` feeds stdout and stderr through the same command parser), which makes stderr
//! work as well in practice.

use std::{fmt::Write as _, io::Write as _};

use super::Context;
use crate::untrusted::is_unsafe;

/// True when running as a GitHub Actions step (the runner sets `GITHUB_ACTIONS=true`).
pub(super) fn enabled() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|value| value == "true")
}

/// The two annotation levels deployer uses (`::notice` would be noise for a PASS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Level {
    /// A WARN: the run continues, someone should look.
    Warning,
    /// A FAIL, a CRITICAL, a deploy that did not promote.
    Error,
}

/// One annotation: a title (shown in bold on the run's page) and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Annotation {
    pub level: Level,
    pub title: String,
    pub message: String,
}

impl Annotation {
    /// A `::warning`.
    pub(super) fn warning(title: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            level: Level::Warning,
            title: title.into(),
            message: message.into(),
        }
    }

    /// An `::error`.
    pub(super) fn error(title: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            level: Level::Error,
            title: title.into(),
            message: message.into(),
        }
    }

    /// The workflow command line: `::error title=TITLE::MESSAGE`, both escaped.
    pub(super) fn command(&self) -> String {
        let name = match self.level {
            Level::Warning => "warning",
            Level::Error => "error",
        };
        format!(
            "::{name} title={}::{}",
            escape_property(&self.title),
            escape_data(&self.message)
        )
    }
}

/// Appends `c` escaped as workflow command data.
fn push_data(out: &mut String, c: char) {
    match c {
        '%' => out.push_str("%25"),
        '\r' => out.push_str("%0D"),
        '\n' => out.push_str("%0A"),
        c if is_unsafe(c) => {
            let _ = write!(out, "{}", c.escape_debug());
        }
        c => out.push(c),
    }
}

/// A workflow command's message: `%`, CR and LF escaped (other control characters shown as
/// `\u{..}`).
pub(super) fn escape_data(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_data(&mut out, c);
    }
    out
}

/// A workflow command's property value: as [`escape_data`], and `:` and `,` too (they end the
/// property list and separate properties).
pub(super) fn escape_property(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            ':' => out.push_str("%3A"),
            ',' => out.push_str("%2C"),
            c => push_data(&mut out, c),
        }
    }
    out
}

/// One Markdown table cell: `|` escaped, line breaks as spaces, control characters shown.
pub(super) fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c if is_unsafe(c) => {
                let _ = write!(out, "{}", c.escape_debug());
            }
            c => out.push(c),
        }
    }
    out
}

/// A Markdown table (every cell through [`cell`]), ending with a blank line.
pub(super) fn table<R>(headers: &[&str], rows: impl IntoIterator<Item = R>) -> String
where
    R: IntoIterator,
    R::Item: AsRef<str>,
{
    let mut text = format!(
        "| {} |\n|{}\n",
        headers
            .iter()
            .map(|header| cell(header))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(headers.len())
    );
    for row in rows {
        let cells: Vec<String> = row.into_iter().map(|value| cell(value.as_ref())).collect();
        let _ = writeln!(text, "| {} |", cells.join(" | "));
    }
    text.push('\n');
    text
}

/// In GitHub Actions: prints the annotations (stdout for text, stderr with `--format json`) and
/// appends `summary` (unless empty) to `$GITHUB_STEP_SUMMARY` (when set). Nothing otherwise. A summary that
/// cannot be written is a warning on stderr, never a failure of the command: the report itself
/// is already out.
pub(super) fn publish(context: &Context, annotations: &[Annotation], summary: &str) {
    if !enabled() {
        return;
    }
    for annotation in annotations {
        if context.output.is_json() {
            context.output.message(annotation.command());
        } else {
            context.output.data(annotation.command());
        }
    }
    let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|path| !path.is_empty()) else {
        return;
    };
    if summary.is_empty() {
        return;
    }
    let written = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(summary.as_bytes()));
    if let Err(error) = written {
        context
            .output
            .message(format!("warning: cannot write the step summary: {error}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_escapes_percent_cr_and_lf() {
        assert_eq!(escape_data("50% done\nnext"), "50%25 done%0Anext");
        assert_eq!(escape_data("a\r\nb"), "a%0D%0Ab");
        // `%` first: an already escaped sequence stays literal, it is not decoded by the runner.
        assert_eq!(escape_data("%0A"), "%250A");
        // `:` and `,` are fine in the message.
        assert_eq!(escape_data("a: b, c"), "a: b, c");
        assert_eq!(escape_data("ünïcödé ✓"), "ünïcödé ✓");
    }

    #[test]
    fn properties_also_escape_colon_and_comma() {
        assert_eq!(escape_property("Drift: a,b"), "Drift%3A a%2Cb");
        assert_eq!(escape_property("50%\n"), "50%25%0A");
    }

    #[test]
    fn a_newline_cannot_start_another_command() {
        let annotation = Annotation::error(
            "Preflight: svc",
            "subject\n::add-mask::secret\r\n::stop-commands::x",
        );
        let command = annotation.command();
        assert_eq!(command.lines().count(), 1, "{command}");
        assert_eq!(
            command,
            "::error title=Preflight%3A svc::subject%0A::add-mask::secret%0D%0A::stop-commands::x"
        );
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(escape_data("\u{1b}[32mOK"), "\\u{1b}[32mOK");
        assert_eq!(escape_property("a\tb"), "a\\tb");
        assert_eq!(
            Annotation::warning("t", "x").command(),
            "::warning title=t::x"
        );
    }

    #[test]
    fn table_cells_cannot_break_the_table() {
        let text = table(&["a", "b"], [vec!["x|y", "line\nbreak"], vec!["", "z"]]);
        assert_eq!(
            text,
            "| a | b |\n|---|---|\n| x\\|y | line break |\n|  | z |\n\n"
        );
    }
}
