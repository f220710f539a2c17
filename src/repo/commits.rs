//! The history between commits: finding a commit, ahead/behind, the commits of a range with
//! their authors, and the paths two commits' trees differ in. Ranges are walked with `hide()`
//! and changed paths come from one diff of the two trees (see the module above).

use std::collections::{BTreeMap, BTreeSet};

use git2::{ErrorCode, Oid, Sort};
use serde::Serialize;

use super::{git_error, short, RepoError, Repository};

/// Ahead/behind counts of one commit against another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Divergence {
    /// Commits reachable from the local side only.
    pub ahead: usize,
    /// Commits reachable from the other side only.
    pub behind: usize,
}

/// One commit of a range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitSummary {
    /// Full commit id.
    pub id: String,
    /// Author name.
    pub author: String,
    /// First line of the message.
    pub subject: String,
    /// Author time, seconds since the Unix epoch.
    pub time: i64,
}

impl CommitSummary {
    /// The first 7 characters of the id, as `git log --oneline` shows it.
    pub fn short_id(&self) -> &str {
        short(&self.id)
    }
}

/// The commits reachable from one commit and not from another (`from..to`), newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitRange {
    /// How many commits the range holds (all of them, even beyond `commits`).
    pub count: usize,
    /// The newest commits of the range, at most the number asked for.
    pub commits: Vec<CommitSummary>,
    /// Authors with their number of commits in the range, most commits first.
    pub authors: Vec<Author>,
}

/// An author of a range and how many of its commits they wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Author {
    /// Author name.
    pub name: String,
    /// Commits in the range.
    pub commits: usize,
}

impl Repository {
    /// The full id of the commit `text` names (a full or abbreviated hex id), if the repository
    /// has it. Anything that is not a hex id of at least 4 characters names no commit.
    pub fn find_commit(&self, text: &str) -> Result<Option<String>, RepoError> {
        let text = text.trim();
        if text.len() < 4 || text.len() > 40 || !text.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let found = if text.len() == 40 {
            Oid::from_str(text).and_then(|oid| self.repository.find_commit(oid))
        } else {
            self.repository.find_commit_by_prefix(text)
        };
        match found {
            Ok(commit) => Ok(Some(commit.id().to_string())),
            Err(error) if error.code() == ErrorCode::NotFound => Ok(None),
            Err(error) => Err(git_error(format!("look up commit `{text}`"))(error)),
        }
    }

    /// Ahead/behind of `local` against `other` (both full commit ids).
    pub fn divergence(&self, local: &str, other: &str) -> Result<Divergence, RepoError> {
        let (ahead, behind) = self
            .repository
            .graph_ahead_behind(self.oid(local)?, self.oid(other)?)
            .map_err(git_error("compare the histories"))?;
        Ok(Divergence { ahead, behind })
    }

    /// True when `ancestor` is `descendant` or one of its ancestors.
    pub fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool, RepoError> {
        if ancestor == descendant {
            return Ok(true);
        }
        self.repository
            .graph_descendant_of(self.oid(descendant)?, self.oid(ancestor)?)
            .map_err(git_error("compare the histories"))
    }

    /// The commits in `from..to` (reachable from `to`, not from `from`), newest first; keeps the
    /// first `keep` summaries but counts them all. `from = None` means the whole history of `to`.
    pub fn commits(
        &self,
        from: Option<&str>,
        to: &str,
        keep: usize,
    ) -> Result<CommitRange, RepoError> {
        let walk_error = || git_error("walk the history");
        let mut walk = self.repository.revwalk().map_err(walk_error())?;
        // Topological + time order, like `git log`; the walk is bounded by `hide`, so sorting
        // only ever sees the range itself.
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME)
            .map_err(walk_error())?;
        walk.push(self.oid(to)?).map_err(walk_error())?;
        if let Some(from) = from {
            walk.hide(self.oid(from)?).map_err(walk_error())?;
        }
        let mut count = 0;
        let mut commits = Vec::new();
        let mut authors: BTreeMap<String, usize> = BTreeMap::new();
        for oid in walk {
            let oid = oid.map_err(walk_error())?;
            count += 1;
            let commit = self
                .repository
                .find_commit(oid)
                .map_err(git_error(format!("read commit `{oid}`")))?;
            let author = commit.author();
            let name = String::from_utf8_lossy(author.name_bytes()).into_owned();
            *authors.entry(name.clone()).or_default() += 1;
            if commits.len() < keep {
                commits.push(CommitSummary {
                    id: oid.to_string(),
                    author: name,
                    subject: String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default())
                        .into_owned(),
                    time: author.when().seconds(),
                });
            }
        }
        let mut authors: Vec<Author> = authors
            .into_iter()
            .map(|(name, commits)| Author { name, commits })
            .collect();
        authors.sort_by(|a, b| b.commits.cmp(&a.commits).then_with(|| a.name.cmp(&b.name)));
        Ok(CommitRange {
            count,
            commits,
            authors,
        })
    }

    /// The paths that differ between the trees of two commits (both sides of renames), sorted.
    pub fn changed_paths(&self, from: &str, to: &str) -> Result<BTreeSet<String>, RepoError> {
        let tree = |id: &str| -> Result<git2::Tree<'_>, RepoError> {
            self.repository
                .find_commit(self.oid(id)?)
                .and_then(|commit| commit.tree())
                .map_err(git_error(format!("read the tree of `{}`", short(id))))
        };
        let (old, new) = (tree(from)?, tree(to)?);
        let diff = self
            .repository
            .diff_tree_to_tree(Some(&old), Some(&new), None)
            .map_err(git_error("compare the trees"))?;
        let mut paths = BTreeSet::new();
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(path) = file.path() {
                    paths.insert(path.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        Ok(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestRepo;

    #[test]
    fn range_counts_commits_authors_and_changed_paths() {
        let repo = TestRepo::new();
        let base = repo.commit_file("a.txt", "one", "base");
        repo.commit_file_as("b.txt", "one", "add b", "Ada");
        repo.commit_file_as("schemas/t.json", "{}", "add schema", "Grace");
        let head = repo.commit_file_as("b.txt", "two", "change b", "Ada");
        let opened = Repository::discover(repo.path()).unwrap();
        let range = opened.commits(Some(&base), &head, 2).unwrap();
        assert_eq!(range.count, 3);
        assert_eq!(range.commits.len(), 2);
        assert_eq!(range.commits[0].subject, "change b");
        let authors: Vec<(&str, usize)> = range
            .authors
            .iter()
            .map(|author| (author.name.as_str(), author.commits))
            .collect();
        assert_eq!(authors, [("Ada", 2), ("Grace", 1)]);
        let paths = opened.changed_paths(&base, &head).unwrap();
        assert_eq!(
            paths.into_iter().collect::<Vec<_>>(),
            ["b.txt", "schemas/t.json"]
        );
        assert_eq!(opened.commits(None, &head, 10).unwrap().count, 4);
        assert!(opened.is_ancestor(&base, &head).unwrap());
        assert!(!opened.is_ancestor(&head, &base).unwrap());
    }

    #[test]
    fn find_commit_accepts_full_and_short_ids_only() {
        let repo = TestRepo::new();
        let first = repo.commit_file("a.txt", "one", "first");
        let opened = Repository::discover(repo.path()).unwrap();
        assert_eq!(opened.find_commit(&first).unwrap(), Some(first.clone()));
        assert_eq!(opened.find_commit(&first[..8]).unwrap(), Some(first));
        assert_eq!(
            opened
                .find_commit("0123456789012345678901234567890123456789")
                .unwrap(),
            None
        );
        assert_eq!(opened.find_commit("not-a-commit").unwrap(), None);
        assert_eq!(opened.find_commit("").unwrap(), None);
    }
}
