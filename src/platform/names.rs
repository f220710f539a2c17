//! The names deployer sends to Cloud Run, checked before they leave: regions and project ids
//! (parts of every resource path, `projects/P/locations/R/...`), environment variable names
//! (refused when Cloud Run reserves them or when they carry control characters), and the
//! recognition of variable names whose values must never be shown. A refusal is a
//! [`NameError`] whose message echoes the name escaped and shortened.

use crate::untrusted::{escaped, shortened};

/// Names Cloud Run sets itself in every container; a revision may not set them.
pub const RESERVED_ENV_NAMES: [&str; 4] = ["PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"];

/// The most characters of a refused name echoed in its error.
const SHOWN_NAME_CHARS: usize = 64;

/// Why a name was refused. The names held are already escaped and shortened for display,
/// except a reserved one, which is one of [`RESERVED_ENV_NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not a region as gcloud names them.
    #[error("`{shown}` is not a Cloud Run region: lowercase words joined by `-` ending in a number, e.g. `europe-west1` (`gcloud run regions list`)")]
    Region {
        /// The region, escaped and shortened.
        shown: String,
    },
    /// Not a Google Cloud project id.
    #[error("`{shown}` is not a Google Cloud project id: lowercase letters, digits and `-`, e.g. `my-project-123`")]
    Project {
        /// The project id, escaped and shortened.
        shown: String,
    },
    /// `=VALUE` with nothing before the `=`.
    #[error("an environment variable needs a name before `=`")]
    EmptyEnvName,
    /// Characters Cloud Run does not accept in a variable name.
    #[error("`{shown}` is not an environment variable name: ASCII letters, digits and `_`, not starting with a digit")]
    EnvName {
        /// The name, escaped and shortened.
        shown: String,
    },
    /// A name Cloud Run sets itself.
    #[error("`{name}` is reserved by Cloud Run (it sets `PORT`, `K_SERVICE`, `K_REVISION` and `K_CONFIGURATION` itself)")]
    ReservedEnvName {
        /// The reserved name.
        name: String,
    },
}

/// `name` escaped and shortened, as an error echoes it.
fn shown(name: &str) -> String {
    escaped(&shortened(name, SHOWN_NAME_CHARS)).into_owned()
}

/// Checks a Cloud Run region name as gcloud knows them (`us-central1`, `europe-west4`,
/// `northamerica-northeast1`): lowercase words joined by `-`, ending in a number. A region is
/// part of every resource path deployer sends (`projects/P/locations/R/...`), so `../../x` must
/// be refused before it reaches a URL.
pub fn check_region(region: &str) -> Result<(), NameError> {
    let words: Vec<&str> = region.split('-').collect();
    let last = words.last().copied().unwrap_or_default();
    let letters = |word: &str| !word.is_empty() && word.chars().all(|c| c.is_ascii_lowercase());
    let valid = region.len() <= 63
        && words.len() >= 2
        && words[..words.len() - 1].iter().all(|word| letters(word))
        && last.starts_with(|c: char| c.is_ascii_lowercase())
        && last.ends_with(|c: char| c.is_ascii_digit())
        && last
            .chars()
            .skip_while(char::is_ascii_lowercase)
            .all(|c| c.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(NameError::Region {
            shown: shown(region),
        })
    }
}

/// Checks a GCP project id (`my-project-123`, or the legacy `example.com:project`): lowercase
/// letters, digits, `-`, `.` and `:` only, so that it cannot leave its place in a resource path.
pub fn check_project(project: &str) -> Result<(), NameError> {
    let valid = !project.is_empty()
        && project.len() <= 100
        && project.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && project
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | ':'))
        && !project.contains("..");
    if valid {
        Ok(())
    } else {
        Err(NameError::Project {
            shown: shown(project),
        })
    }
}

/// Checks an environment variable name for a revision: ASCII letters, digits and `_`, not
/// starting with a digit, and not one of [`RESERVED_ENV_NAMES`] (Cloud Run refuses those, and
/// a name with a control character would be sent as is).
pub fn check_env_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::EmptyEnvName);
    }
    if name.starts_with(|c: char| c.is_ascii_digit())
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(NameError::EnvName { shown: shown(name) });
    }
    if RESERVED_ENV_NAMES.contains(&name) {
        return Err(NameError::ReservedEnvName {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// True for variable names whose values must never be shown: containing `PASSWORD`, `SECRET`,
/// `TOKEN`, `KEY` or `CREDENTIAL`, in any case. Their changes are reported as "changed", never
/// with the values (a CI log is readable by a whole organisation).
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL"]
        .iter()
        .any(|word| upper.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_with_a_path_is_refused_and_real_regions_pass() {
        for region in [
            "us-central1",
            "europe-west1",
            "northamerica-northeast1",
            "me-central2",
        ] {
            assert_eq!(check_region(region), Ok(()), "{region}");
        }
        for region in [
            "../../x",
            "",
            "us",
            "US-CENTRAL1",
            "us-central",
            "us central1",
            "us-central1/x",
        ] {
            assert!(check_region(region).is_err(), "{region}");
        }
    }

    #[test]
    fn a_project_with_a_path_is_refused() {
        assert_eq!(check_project("my-project-123"), Ok(()));
        assert_eq!(check_project("example.com:project"), Ok(()));
        for project in ["../../x", "", "a/b", "Project", "p\u{1b}[2J"] {
            assert!(check_project(project).is_err(), "{project}");
        }
    }

    #[test]
    fn env_names_with_control_characters_non_ascii_or_reserved_are_refused() {
        assert_eq!(check_env_name("FAIL_RATE"), Ok(()));
        assert_eq!(check_env_name("_private2"), Ok(()));
        for name in ["", "A\u{1}B", "NAÏVE", "1ST", "A-B", "A B"] {
            assert!(check_env_name(name).is_err(), "{name:?}");
        }
        for name in RESERVED_ENV_NAMES {
            assert!(
                check_env_name(name)
                    .unwrap_err()
                    .to_string()
                    .contains("reserved"),
                "{name}"
            );
        }
        assert!(!check_env_name("A\u{1b}[2J")
            .unwrap_err()
            .to_string()
            .contains('\u{1b}'));
    }

    #[test]
    fn secret_looking_names_are_recognised_in_any_case() {
        for name in [
            "DB_PASSWORD",
            "api_key",
            "GitHubToken",
            "CLIENT_SECRET",
            "GOOGLE_CREDENTIALS",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        assert!(!looks_secret("FAIL_RATE"));
    }
}
