//! A service's paths in its repository: globs (`services/api/**`, `schemas/*.json`) relative to
//! the repository root, compiled once. Drift (which commits of `main` touch the service, which
//! change its schemas) and preflight (step 5, schema changes between the deployed commit and
//! `HEAD`) read them through this one filter, so a glob means the same thing to both.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// A service's globs that cannot be compiled.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GlobError {
    /// One glob is not a glob.
    #[error("invalid glob `{glob}`: {source}")]
    Invalid {
        /// The glob as written.
        glob: String,
        /// Why.
        source: globset::Error,
    },
    /// The set of them could not be built.
    #[error("invalid globs: {0}")]
    Set(globset::Error),
}

/// The service's paths: globs (`services/api/**`, `schemas/*.json`) relative to the repository
/// root, as preflight reads them (`*` stops at `/`). A glob without wildcards also names
/// everything under it (`libs/common` = `libs/common/**`). No globs: every path.
#[derive(Debug, Clone)]
pub struct PathFilter {
    set: Option<GlobSet>,
    prefixes: Vec<String>,
    globs: Vec<String>,
}

const GLOB_CHARACTERS: &[char] = &['*', '?', '[', '{', '\\'];

/// The directories of a glob before its first wildcard: `services/api/**` → `services/api`,
/// `**/*.py` → `` (the root).
pub fn literal_prefix(glob: &str) -> String {
    let mut parts = Vec::new();
    for part in glob.trim_matches('/').split('/') {
        if part.contains(GLOB_CHARACTERS) {
            break;
        }
        parts.push(part);
    }
    parts.join("/")
}

impl PathFilter {
    /// A filter of `globs`; an invalid glob is an error naming it.
    pub fn new(globs: &[String]) -> Result<Self, GlobError> {
        if globs.is_empty() {
            return Ok(Self {
                set: None,
                prefixes: vec![String::new()],
                globs: Vec::new(),
            });
        }
        let mut builder = GlobSetBuilder::new();
        let mut prefixes: Vec<String> = Vec::new();
        for glob in globs {
            let trimmed = glob.trim().trim_matches('/');
            let mut patterns = vec![trimmed.to_string()];
            if !trimmed.contains(GLOB_CHARACTERS) {
                patterns.push(format!("{trimmed}/**"));
            }
            for pattern in patterns {
                let compiled = GlobBuilder::new(&pattern)
                    .literal_separator(true)
                    .build()
                    .map_err(|source| GlobError::Invalid {
                        glob: glob.clone(),
                        source,
                    })?;
                builder.add(compiled);
            }
            let prefix = literal_prefix(trimmed);
            if !prefixes.contains(&prefix) {
                prefixes.push(prefix);
            }
        }
        // A prefix under another one is covered by it.
        let all = prefixes.clone();
        prefixes.retain(|prefix| {
            !all.iter().any(|other| {
                other != prefix && (other.is_empty() || prefix.starts_with(&format!("{other}/")))
            })
        });
        let set = builder.build().map_err(GlobError::Set)?;
        Ok(Self {
            set: Some(set),
            prefixes,
            globs: globs.to_vec(),
        })
    }

    /// True when the filter takes every path (no globs).
    pub fn is_everything(&self) -> bool {
        self.set.is_none()
    }

    /// True when `path` is one of the service's.
    pub fn matches(&self, path: &str) -> bool {
        self.set.as_ref().is_none_or(|set| set.is_match(path))
    }

    /// The literal directory prefixes of the globs, none under another (`""` = the root).
    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// The globs as written.
    pub fn globs(&self) -> &[String] {
        &self.globs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_prefixes_stop_at_the_first_wildcard() {
        assert_eq!(literal_prefix("services/api/**"), "services/api");
        assert_eq!(literal_prefix("src/module01/*.py"), "src/module01");
        assert_eq!(literal_prefix("**/*.py"), "");
        assert_eq!(literal_prefix("libs/common/"), "libs/common");
        let filter = PathFilter::new(&[
            "libs".to_string(),
            "libs/common/**".to_string(),
            "api/*.rs".to_string(),
        ])
        .unwrap();
        assert_eq!(filter.prefixes(), ["libs", "api"]);
        assert!(
            filter.matches("libs/common/x.rs"),
            "a plain path names its tree"
        );
        assert!(filter.matches("api/main.rs"));
        assert!(!filter.matches("api/nested/main.rs"), "`*` stops at `/`");
        assert!(PathFilter::new(&["api/[".to_string()]).is_err());
    }
}
