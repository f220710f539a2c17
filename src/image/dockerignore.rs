//! `.dockerignore`: reading the file and matching paths exactly as Docker does.
//!
//! No maintained Rust crate implements Docker's rules (the `ignore`/`globset` family follows
//! `.gitignore`, which differs: there a pattern without `/` matches at any depth, here it is
//! anchored at the context root; there `!` cannot re-include a file under an excluded directory,
//! here it can). So this module re-implements the two Go packages the Docker CLI uses, keeping
//! their structure so the behaviour can be checked line by line against them:
//!
//! - **Reading** (moby `patternmatcher/ignorefile.ReadAll`): a UTF-8 byte-order mark is dropped;
//!   a line *starting* with `#` is a comment; each line is trimmed; blank lines are skipped; a
//!   leading `!` marks an exception (the rest is trimmed again); the pattern is cleaned like Go's
//!   `filepath.Clean` (`./a//b/` → `a/b`, `a/../b` → `b`) and one leading `/` is dropped, so
//!   `/foo`, `./foo` and `foo/` all mean `foo`.
//! - **Patterns** (moby `patternmatcher`): `*` matches any run of characters except `/`; `?` one
//!   character except `/`; `[...]` is a character class (negated with `^`; `!` is an ordinary
//!   member, unlike in shells); `\` escapes the next character; `**` matches any number of
//!   directories including none (`**/` as a whole, and a trailing `**` matches everything
//!   below). Like moby, patterns are translated to regular expressions, with the same shortcuts
//!   (exact, prefix and suffix matches) where moby takes them; a pattern that Go's
//!   `filepath.Match` rejects (unterminated `[`, a trailing `\`) is an error naming the line.
//! - **Matching** (moby `MatchesUsingParentResults`): a path is excluded when the last pattern
//!   that matches it, or matches one of its parent directories, is not an exception. Patterns
//!   match whole paths relative to the context root, with `/` separators.
//!
//! The walk that applies these rules (which directories can be skipped, the Dockerfile and
//! `.dockerignore` always being sent) lives in [`super::context`].

use std::fmt;

/// The parsed patterns of one `.dockerignore` file, ready to match paths.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    patterns: Vec<Pattern>,
    has_exceptions: bool,
}

/// A line of a `.dockerignore` file that Docker would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: invalid pattern `{text}`: {reason}")]
pub struct PatternError {
    /// 1-based line number.
    pub line: usize,
    /// The line as written.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The per-pattern match results of a directory, handed down to its entries so each pattern is
/// evaluated against a path's parents only once (moby's `MatchInfo`).
#[derive(Debug, Clone, Default)]
pub struct ParentMatches(Vec<bool>);

#[derive(Clone)]
struct Pattern {
    /// The cleaned pattern, without the `!`.
    cleaned: String,
    exception: bool,
    kind: MatchKind,
}

#[derive(Clone)]
enum MatchKind {
    Exact,
    /// `foo/**`: the text before the trailing `**`.
    Prefix(String),
    /// `**/foo`: the text after the leading `**`.
    Suffix(String),
    Regex(regex::Regex),
}

impl fmt::Debug for Pattern {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}{}",
            if self.exception { "!" } else { "" },
            self.cleaned
        )
    }
}

impl IgnoreRules {
    /// Reads the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rules = Self::default();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            // Like ignorefile.ReadAll: the comment test comes before trimming, so `  # x` is a
            // pattern, not a comment.
            if raw.starts_with('#') {
                continue;
            }
            let mut pattern = raw.trim();
            if pattern.is_empty() {
                continue;
            }
            let exception = pattern.starts_with('!');
            if exception {
                pattern = pattern[1..].trim();
            }
            let error = |reason: &str| PatternError {
                line,
                text: raw.to_string(),
                reason: reason.to_string(),
            };
            if pattern.is_empty() {
                // moby: `illegal exclusion pattern: "!"`.
                return Err(error("`!` needs a pattern after it"));
            }
            let mut cleaned = clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            check_syntax(&cleaned).map_err(&error)?;
            let kind = compile(&cleaned).map_err(|reason| error(&reason))?;
            rules.has_exceptions |= exception;
            rules.patterns.push(Pattern {
                cleaned,
                exception,
                kind,
            });
        }
        Ok(rules)
    }

    /// Rules from already-cleaned patterns (`!` for exceptions), as the Docker CLI appends
    /// `!.dockerignore` and `!Dockerfile` to the user's patterns.
    pub fn push_exception(&mut self, path: &str) {
        let cleaned = clean(path);
        // A path given here has no glob characters to compile wrongly; Exact is moby's type
        // for it too unless it contains `[`, `*`, `?` or `\`, which compile() handles.
        let kind = compile(&cleaned).unwrap_or(MatchKind::Exact);
        self.has_exceptions = true;
        self.patterns.push(Pattern {
            cleaned,
            exception: true,
            kind,
        });
    }

    /// True when there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// True when some pattern is an exception (`!...`).
    pub fn has_exceptions(&self) -> bool {
        self.has_exceptions
    }

    /// Whether some exception pattern could re-include something under directory `dir`: moby's
    /// test for whether an excluded directory must still be walked. It is a plain text prefix
    /// test, so `!**/*.go` does *not* keep an excluded `src/` from being skipped — as in Docker.
    pub fn exception_may_reach_into(&self, dir: &str) -> bool {
        let dir_slash = format!("{dir}/");
        self.patterns
            .iter()
            .filter(|pattern| pattern.exception)
            .any(|pattern| format!("{}/", pattern.cleaned).starts_with(&dir_slash))
    }

    /// Whether `path` (relative to the context root, `/`-separated) is excluded, given the match
    /// results of its parent directory (`None` for an entry at the root, or when unknown).
    /// Returns the results to hand to this path's own entries when it is a directory.
    pub fn matches(&self, path: &str, parent: Option<&ParentMatches>) -> (bool, ParentMatches) {
        let parent = parent.filter(|parent| parent.0.len() == self.patterns.len());
        let mut excluded = false;
        let mut results = vec![false; self.patterns.len()];
        for (index, pattern) in self.patterns.iter().enumerate() {
            let mut matched = parent.is_some_and(|parent| parent.0[index]);
            if !matched {
                // Skip patterns that cannot change the outcome: an exclusion when the path is
                // already excluded, an exception when it is not. (moby records such a pattern as
                // "not matched" for the children too; so do we, to stay identical.)
                if pattern.exception != excluded {
                    continue;
                }
                matched = pattern.is_match(path);
                if !matched && parent.is_none() {
                    if let Some((parent_path, _)) = path.rsplit_once('/') {
                        let mut end = 0;
                        for component in parent_path.split('/') {
                            end += component.len();
                            if pattern.is_match(&parent_path[..end]) {
                                matched = true;
                                break;
                            }
                            end += 1;
                        }
                    }
                }
            }
            results[index] = matched;
            if matched {
                excluded = !pattern.exception;
            }
        }
        (excluded, ParentMatches(results))
    }

    /// Whether `path` is excluded, evaluating every parent directory (moby's
    /// `MatchesOrParentMatches`; used for single paths such as the Dockerfile).
    pub fn excludes(&self, path: &str) -> bool {
        let path = clean(path);
        if path == "." {
            return false;
        }
        self.matches(&path, None).0
    }
}

impl Pattern {
    fn is_match(&self, path: &str) -> bool {
        match &self.kind {
            MatchKind::Exact => path == self.cleaned,
            MatchKind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            MatchKind::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            MatchKind::Regex(regex) => regex.is_match(path),
        }
    }
}

/// Go's `filepath.Clean` for `/`-separated paths: collapses `//`, removes `.` elements and
/// `dir/..` pairs, drops a trailing `/`; an empty result is `.`.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// The syntax errors Go's `filepath.Match` reports (`ErrBadPattern`), which moby checks when
/// loading patterns: an unterminated or empty `[...]`, a range in the wrong order, a `\` at the
/// end of the pattern or of a class.
fn check_syntax(pattern: &str) -> Result<(), &'static str> {
    let mut chars = pattern.chars().peekable();
    while let Some(character) = chars.next() {
        match character {
            '\\' if chars.next().is_none() => {
                return Err("a `\\` at the end escapes nothing");
            }
            '[' => {
                if chars.peek() == Some(&'^') {
                    chars.next();
                }
                let mut members = 0;
                loop {
                    let Some(low) = chars.next() else {
                        return Err("`[` without a closing `]`");
                    };
                    if low == ']' && members > 0 {
                        break;
                    }
                    if low == '-' || low == ']' {
                        return Err("a `[...]` member cannot start with `-` or `]` (escape it)");
                    }
                    let low = if low == '\\' {
                        chars.next().ok_or("`[` without a closing `]`")?
                    } else {
                        low
                    };
                    if chars.peek() == Some(&'-') {
                        chars.next();
                        let high = match chars.next() {
                            None => return Err("`[` without a closing `]`"),
                            Some(']' | '-') => return Err("a range in `[...]` without an end"),
                            Some('\\') => chars.next().ok_or("`[` without a closing `]`")?,
                            Some(high) => high,
                        };
                        if high < low {
                            return Err("a range in `[...]` runs backwards");
                        }
                    }
                    members += 1;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// moby's `Pattern.compile`: the pattern as a regular expression, or one of the shortcuts.
fn compile(pattern: &str) -> Result<MatchKind, String> {
    #[derive(PartialEq)]
    enum Detected {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let mut expression = String::from("^");
    let mut detected = Detected::Exact;
    let mut chars = pattern.chars().peekable();
    let mut position = 0;
    while let Some(character) = chars.next() {
        match character {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    if detected == Detected::Exact {
                        detected = Detected::Prefix;
                    } else {
                        expression.push_str(".*");
                        detected = Detected::Regex;
                    }
                } else {
                    expression.push_str("(.*/)?");
                    detected = Detected::Regex;
                }
                if position == 0 {
                    detected = Detected::Suffix;
                }
            }
            '*' => {
                expression.push_str("[^/]*");
                detected = Detected::Regex;
            }
            '?' => {
                expression.push_str("[^/]");
                detected = Detected::Regex;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                expression.push('\\');
                expression.push(character);
            }
            '\\' => match chars.next() {
                Some(escaped) => {
                    expression.push('\\');
                    expression.push(escaped);
                    detected = Detected::Regex;
                }
                None => expression.push_str("\\\\"),
            },
            '[' | ']' => {
                expression.push(character);
                detected = Detected::Regex;
            }
            other => expression.push(other),
        }
        position += 1;
    }
    Ok(match detected {
        Detected::Exact => MatchKind::Exact,
        Detected::Prefix => MatchKind::Prefix(pattern[..pattern.len() - 2].to_string()),
        Detected::Suffix => MatchKind::Suffix(pattern[2..].to_string()),
        Detected::Regex => {
            expression.push('$');
            let regex = regex::Regex::new(&expression).map_err(|error| error.to_string())?;
            MatchKind::Regex(regex)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excluded(rules: &str, path: &str) -> bool {
        IgnoreRules::parse(rules).unwrap().excludes(path)
    }

    #[test]
    fn clean_matches_go() {
        for (input, expected) in [
            ("a/b/", "a/b"),
            ("./a//b", "a/b"),
            ("a/../b", "b"),
            ("../a", "../a"),
            ("/a/../../b", "/b"),
            ("", "."),
            ("./", "."),
            ("/", "/"),
        ] {
            assert_eq!(clean(input), expected, "{input}");
        }
    }

    #[test]
    fn table_of_patterns() {
        // (rules, path, excluded)
        let table: &[(&str, &str, bool)] = &[
            ("foo", "foo", true),
            ("foo", "foo/bar", true),
            ("foo", "a/foo", false),
            ("/foo", "foo/x", true),
            ("./foo/", "foo/x", true),
            ("*.md", "README.md", true),
            ("*.md", "docs/a.md", false),
            ("*/*.md", "docs/a.md", true),
            ("**/*.md", "a/b/c.md", true),
            ("**/*.md", "c.md", true),
            ("**/target", "target", true),
            ("**/target", "x/target/y", true),
            ("**/target", "xtarget", false),
            ("build/**", "build/a/b", true),
            ("build/**", "build", false),
            ("a/**/z", "a/z", true),
            ("a/**/z", "a/b/c/z", true),
            ("file?.txt", "file1.txt", true),
            ("file?.txt", "file10.txt", false),
            ("[ab].txt", "a.txt", true),
            ("[^ab].txt", "a.txt", false),
            ("[^ab].txt", "c.txt", true),
            ("[!a].txt", "!.txt", true),
            ("\\*.txt", "*.txt", true),
            ("\\*.txt", "a.txt", false),
            ("*\n!keep.md", "keep.md", false),
            ("*\n!keep.md", "other", true),
            ("docs\n!docs/keep.md", "docs/keep.md", false),
            ("docs\n!docs/keep.md", "docs/other.md", true),
            ("!docs/keep.md\ndocs", "docs/keep.md", true),
            ("  # not a comment", "  # not a comment", false),
            ("  # not a comment", "# not a comment", true),
            ("# comment\n\n  spaced  ", "spaced", true),
            ("a.b", "axb", false),
        ];
        for (rules, path, expected) in table {
            assert_eq!(
                excluded(rules, path),
                *expected,
                "rules {rules:?} path {path:?}"
            );
        }
    }

    #[test]
    fn parent_results_agree_with_full_evaluation() {
        let rules = IgnoreRules::parse("a\n!a/b\na/b/c*\n**/*.log\n!keep/**").unwrap();
        for path in ["a/b/c1/d", "a/b/x", "a/z", "keep/x.log", "x/y.log"] {
            let components: Vec<&str> = path.split('/').collect();
            let mut parent: Option<ParentMatches> = None;
            let mut result = false;
            for end in 1..=components.len() {
                let prefix = components[..end].join("/");
                let (excluded, matches) = rules.matches(&prefix, parent.as_ref());
                result = excluded;
                parent = Some(matches);
            }
            assert_eq!(result, rules.excludes(path), "{path}");
        }
    }

    #[test]
    fn refuses_what_docker_refuses() {
        for (rules, line) in [("ok\n!", 2), ("[abc", 1), ("x\\", 1), ("[z-a]", 1)] {
            let error = IgnoreRules::parse(rules).unwrap_err();
            assert_eq!(error.line, line, "{rules:?}: {error}");
        }
    }

    #[test]
    fn exception_prefix_test_is_textual_like_docker() {
        let rules = IgnoreRules::parse("src\n!src/keep\n!**/*.go").unwrap();
        assert!(rules.exception_may_reach_into("src"));
        assert!(!rules.exception_may_reach_into("lib"));
    }
}
