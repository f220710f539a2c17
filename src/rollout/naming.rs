//! Names deployer chooses: rollout ids (also the lock's id) and revision names.
//!
//! Both carry the commit (seven characters, lowercased, only `[a-z0-9]` kept: revision names are
//! DNS labels) and a random suffix, so that two runs of the same commit never collide.

use chrono::Utc;

use crate::repo::{short_commit, SHOWN_COMMIT_CHARS};

/// `length` random lowercase letters and digits (valid in revision names and lock ids).
pub fn random_suffix(length: usize) -> String {
    (0..length)
        .map(|_| {
            char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rand::random_range(0..36usize)])
        })
        .collect()
}

/// The commit as it appears in names: seven characters of `[a-z0-9]`.
fn commit_part(commit: &str) -> String {
    short_commit(commit, SHOWN_COMMIT_CHARS)
        .to_lowercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

/// A rollout's id, which is also its lock's id: unique per run, since two deploys of the same
/// commit in the same second (a pipeline triggered twice) must not both hold "their" lock.
pub fn rollout_id(commit: &str) -> String {
    format!(
        "{}-{}-{}",
        Utc::now().format("%Y%m%d%H%M%S"),
        commit_part(commit),
        random_suffix(4)
    )
}

/// The new revision's name: `SERVICE-COMMIT-xyz`. Chosen by deployer so that the write that
/// creates it can also name it in the split, with 0% and a tag.
pub fn revision_name(service: &str, commit: &str) -> String {
    format!("{service}-{}-{}", commit_part(commit), random_suffix(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_only_safe_characters_of_the_commit() {
        let name = revision_name("hello", "ABCDEF0123");
        assert!(name.starts_with("hello-abcdef0-"), "{name}");
        assert_eq!(name.len(), "hello-abcdef0-xyz".len());
        // Multibyte characters are dropped, never sliced.
        let name = revision_name("hello", "ééééééé123");
        assert!(name.starts_with("hello--"), "{name}");
        assert!(rollout_id("0123456789").contains("-0123456-"));
    }
}
