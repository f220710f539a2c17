//! Text that came from outside — a user's input, a remote system's answer — made safe to show.
//!
//! A service name typed with terminal escape sequences, a key in a service file holding a
//! carriage return, or a 1 MB HTML page answered by a proxy instead of Cloud Run must never reach
//! the terminal raw: an escape sequence can rewrite what the user sees (a red `FAILED` turned
//! green, a line erased), and a page of HTML buries the one line that matters. So every place
//! that echoes such text goes through [`escaped`] (control and bidirectional-override characters
//! written as `\u{1b}`, `\r`, `\n`), and remote messages through [`remote_message`] (escaped, and
//! shortened by characters — never sliced by byte index, which would panic inside a multi-byte
//! character).

use std::{borrow::Cow, fmt::Write as _};

/// The longest remote message shown, in characters (the rest is counted, not shown).
pub const REMOTE_MESSAGE_CHARS: usize = 300;

/// True for characters that change how a terminal shows the text around them: control
/// characters (C0, DEL, C1) and Unicode bidirectional overrides and isolates (which can make
/// text read differently from what it is, "Trojan Source").
pub(crate) fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every control or bidirectional-override character escaped (`\u{1b}`, `\n`,
/// `\t`); everything else, non-ASCII letters included, unchanged. Borrowed when nothing needed
/// escaping, which is almost always.
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            // `escape_debug` writes `\n`, `\r`, `\t` and `\u{1b}`: readable and unambiguous.
            let _ = write!(out, "{}", c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The first `max_chars` characters of `text` (all of it when shorter), with no mark of the cut:
/// the base of every shortening here, and of commit ids shown short (`repo::short_commit`).
/// Counts characters, not bytes, so it never cuts a character in half.
pub fn first_chars(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        None => text,
        Some((cut, _)) => &text[..cut],
    }
}

/// The first `max_chars` characters of `text`, then `…(N more characters)` when it is longer.
/// Counts characters, not bytes, so it never cuts a character in half.
pub fn shortened(text: &str, max_chars: usize) -> Cow<'_, str> {
    let kept = first_chars(text, max_chars);
    if kept.len() == text.len() {
        return Cow::Borrowed(text);
    }
    let rest = text[kept.len()..].chars().count();
    Cow::Owned(format!("{kept}…({rest} more characters)"))
}

/// `text` in at most `max_chars` characters, the last one `…` when it had to be cut: for fields
/// with a hard length limit (Slack's block texts), where the mark must fit inside the limit.
pub fn ellipsized(text: &str, max_chars: usize) -> Cow<'_, str> {
    if text.chars().count() <= max_chars {
        return Cow::Borrowed(text);
    }
    Cow::Owned(format!(
        "{}…",
        first_chars(text, max_chars.saturating_sub(1))
    ))
}

/// A message from a remote system, fit for one line of a terminal: trimmed, shortened to
/// [`REMOTE_MESSAGE_CHARS`] characters and escaped (an HTML page's newlines become `\n`).
pub fn remote_message(text: &str) -> String {
    escaped(&shortened(text.trim(), REMOTE_MESSAGE_CHARS)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_sequences_and_keeps_letters() {
        assert_eq!(escaped("hello"), "hello");
        assert!(matches!(escaped("prédiction"), Cow::Borrowed(_)));
        assert_eq!(escaped("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(escaped("a\r\nb\tc"), "a\\r\\nb\\tc");
        assert_eq!(escaped("x\u{7f}\u{9b}"), "x\\u{7f}\\u{9b}");
        assert_eq!(escaped("ab\u{202e}cd"), "ab\\u{202e}cd");
    }

    #[test]
    fn shortens_by_characters_never_inside_one() {
        assert_eq!(shortened("abc", 3), "abc");
        assert_eq!(shortened("abcdef", 3), "abc…(3 more characters)");
        // Multi-byte characters: a byte-index cut at 3 would panic inside `é`.
        assert_eq!(shortened("ééééé", 2), "éé…(3 more characters)");
        assert_eq!(shortened("", 0), "");
        assert_eq!(first_chars("ééééé", 2), "éé");
        assert_eq!(first_chars("abc", 7), "abc");
    }

    #[test]
    fn ellipsizes_within_the_limit() {
        assert_eq!(ellipsized("héllo", 10), "héllo");
        assert_eq!(ellipsized("ééééé", 3), "éé…");
    }

    #[test]
    fn remote_messages_are_one_short_line() {
        let page = format!("<html>\n{}\n</html>", "x".repeat(1_000_000));
        let message = remote_message(&page);
        assert!(
            message.chars().count() < REMOTE_MESSAGE_CHARS + 40,
            "{message}"
        );
        assert!(message.starts_with("<html>\\n"), "{message}");
        assert!(message.ends_with("more characters)"), "{message}");
        assert!(!message.contains('\n'));
    }
}
