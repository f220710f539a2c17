//! Google credentials: found the way Google's libraries find Application Default Credentials,
//! before any client is built — so that their absence ends a command at once.
//!
//! Google's `google-cloud-auth` falls back to the metadata server when it finds no credentials
//! file; off Google Cloud that fails with an error marked *transient* ("Fetching the token
//! resulted in transient errors"), which every caller that retries transient errors retried for
//! its whole budget: 29–37 s per command, then a sentence that says nothing about what to do
//! (docs/BENCHMARKS.md). So deployer looks first, in Google's order:
//!
//! 1. `GOOGLE_APPLICATION_CREDENTIALS`: a service-account key, an authorized-user file, or an
//!    external-account (Workload Identity Federation) configuration;
//! 2. gcloud's ADC file: `$CLOUDSDK_CONFIG/application_default_credentials.json`, else
//!    `~/.config/gcloud/application_default_credentials.json` (`%APPDATA%\gcloud\…` on Windows),
//!    written by `gcloud auth application-default login`;
//! 3. the metadata server, only on Google Cloud: Cloud Run (`K_SERVICE`), Cloud Run Jobs
//!    (`CLOUD_RUN_JOB`), an explicit `GCE_METADATA_HOST`, or GCE/GKE (the DMI product name
//!    `/sys/class/dmi/id/product_name` says `Google`).
//!
//! With none, [`CredentialsError::Missing`] names what was looked for and the fix; it is never
//! retried (it is not a [`crate::platform::PlatformError`] at all).

use std::path::{Path, PathBuf};

/// Where Application Default Credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A credentials file (`GOOGLE_APPLICATION_CREDENTIALS` or gcloud's ADC file).
    File {
        /// The file.
        path: PathBuf,
        /// Its `type` (`service_account`, `authorized_user`, `external_account`, …).
        kind: String,
    },
    /// The metadata server of the Google Cloud environment deployer runs in.
    MetadataServer {
        /// Which environment said so (`Cloud Run`, `GCE_METADATA_HOST`, …).
        environment: String,
    },
}

impl Source {
    /// One line for people: `service-account key file `/k.json``, `the metadata server (Cloud Run)`.
    pub fn describe(&self) -> String {
        match self {
            Source::File { path, kind } => {
                let kind = match kind.as_str() {
                    "service_account" => "service-account key file",
                    "authorized_user" => "gcloud user credentials",
                    "external_account" => "Workload Identity Federation configuration",
                    "impersonated_service_account" => "impersonated service-account credentials",
                    "external_account_authorized_user" => "workforce identity user credentials",
                    _ => "credentials file",
                };
                format!("{kind} `{}`", path.display())
            }
            Source::MetadataServer { environment } => {
                format!("the metadata server ({environment})")
            }
        }
    }
}

/// Why no usable credentials were found.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    /// Nothing to use: no variable, no gcloud file, not on Google Cloud.
    #[error("no Google credentials: `GOOGLE_APPLICATION_CREDENTIALS` is not set, there is no gcloud credentials file `{}`, and this machine is not on Google Cloud (no metadata server). On a workstation run `gcloud auth application-default login`; in CI set `GOOGLE_APPLICATION_CREDENTIALS` to a service-account key file or a Workload Identity Federation configuration (`gcloud iam workload-identity-pools create-cred-config`)", gcloud_file.display())]
    Missing {
        /// The gcloud ADC file looked for.
        gcloud_file: PathBuf,
    },
    /// A credentials file that cannot be used.
    #[error("Google credentials file `{}` (from {origin}) cannot be used: {reason}. Fix the file or the variable, or run `gcloud auth application-default login`", path.display())]
    Unusable {
        /// The file.
        path: PathBuf,
        /// Where its name came from.
        origin: &'static str,
        /// What is wrong (unreadable, not JSON, no `type`).
        reason: String,
    },
    /// Google's library refused what was found.
    #[error("Google credentials from {source_name} cannot be used: {message}")]
    Refused {
        /// [`Source::describe`].
        source_name: String,
        /// The library's message.
        message: String,
    },
}

/// What [`find_in`] reads: the environment and a few files, passed in so tests need neither.
pub struct Lookup<'a> {
    /// An environment variable.
    pub variable: &'a dyn Fn(&str) -> Option<String>,
    /// The DMI product name file (`/sys/class/dmi/id/product_name` on Linux).
    pub product_name_file: &'a Path,
}

/// Finds credentials in this process's environment (see the module doc).
pub fn find() -> Result<Source, CredentialsError> {
    find_in(&Lookup {
        variable: &|name| std::env::var(name).ok(),
        product_name_file: Path::new("/sys/class/dmi/id/product_name"),
    })
}

/// Finds credentials as [`find`] does, reading through `lookup`.
pub fn find_in(lookup: &Lookup<'_>) -> Result<Source, CredentialsError> {
    let variable = |name: &str| (lookup.variable)(name).filter(|value| !value.trim().is_empty());
    if let Some(path) = variable("GOOGLE_APPLICATION_CREDENTIALS") {
        return file_source(PathBuf::from(path), "`GOOGLE_APPLICATION_CREDENTIALS`");
    }
    let gcloud_file = gcloud_adc_file(&variable);
    if let Some(path) = &gcloud_file {
        if path.exists() {
            return file_source(path.clone(), "gcloud's application default credentials");
        }
    }
    if let Some(environment) = google_cloud_environment(&variable, lookup.product_name_file) {
        return Ok(Source::MetadataServer { environment });
    }
    Err(CredentialsError::Missing {
        gcloud_file: gcloud_file.unwrap_or_else(|| {
            PathBuf::from("~/.config/gcloud/application_default_credentials.json")
        }),
    })
}

/// gcloud's ADC file: `$CLOUDSDK_CONFIG/…`, else `%APPDATA%\gcloud\…` on Windows, else
/// `$HOME/.config/gcloud/…`.
fn gcloud_adc_file(variable: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    const FILE: &str = "application_default_credentials.json";
    if let Some(directory) = variable("CLOUDSDK_CONFIG") {
        return Some(PathBuf::from(directory).join(FILE));
    }
    if cfg!(windows) {
        return variable("APPDATA")
            .map(|directory| PathBuf::from(directory).join("gcloud").join(FILE));
    }
    variable("HOME").map(|home| {
        PathBuf::from(home)
            .join(".config")
            .join("gcloud")
            .join(FILE)
    })
}

/// The Google Cloud environment this process runs in, if any: only there may the metadata
/// server be asked (elsewhere it is a DNS name that resolves to nothing, after seconds).
fn google_cloud_environment(
    variable: &dyn Fn(&str) -> Option<String>,
    product_name_file: &Path,
) -> Option<String> {
    if variable("K_SERVICE").is_some() {
        return Some("Cloud Run".into());
    }
    if variable("CLOUD_RUN_JOB").is_some() {
        return Some("Cloud Run Jobs".into());
    }
    if variable("GCE_METADATA_HOST").is_some() {
        return Some("`GCE_METADATA_HOST`".into());
    }
    let product = std::fs::read_to_string(product_name_file).unwrap_or_default();
    product
        .contains("Google")
        .then(|| "Compute Engine or GKE".into())
}

/// A credentials file's source: readable, JSON, with a `type`.
fn file_source(path: PathBuf, origin: &'static str) -> Result<Source, CredentialsError> {
    let unusable = |reason: String| CredentialsError::Unusable {
        path: path.clone(),
        origin,
        reason,
    };
    let text = fs_err::read_to_string(&path).map_err(|error| {
        unusable(match error.kind() {
            std::io::ErrorKind::NotFound => "it does not exist".into(),
            _ => crate::untrusted::remote_message(&error.to_string()),
        })
    })?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|error| unusable(format!("it is not JSON ({error})")))?;
    let kind = json
        .get("type")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| unusable("it has no `type`".into()))?;
    Ok(Source::File {
        path,
        kind: crate::untrusted::escaped(kind).into_owned(),
    })
}

/// Application Default Credentials, built by Google's library only once [`find`] found a
/// source: never the metadata-server fallback off Google Cloud.
pub fn google() -> Result<google_cloud_auth::credentials::Credentials, CredentialsError> {
    let source = find()?;
    google_cloud_auth::credentials::Builder::default()
        .build()
        .map_err(|error| CredentialsError::Refused {
            source_name: source.describe(),
            message: crate::untrusted::remote_message(&error.to_string()),
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn find_with(
        variables: &[(&str, &str)],
        product_name_file: &Path,
    ) -> Result<Source, CredentialsError> {
        let variables: BTreeMap<String, String> = variables
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        find_in(&Lookup {
            variable: &|name| variables.get(name).cloned(),
            product_name_file,
        })
    }

    fn nowhere() -> &'static Path {
        Path::new("/nonexistent/product_name")
    }

    #[test]
    fn nothing_at_all_is_missing_with_the_fix_for_a_workstation_and_for_ci() {
        let home = tempfile::tempdir().unwrap();
        let error = find_with(&[("HOME", home.path().to_str().unwrap())], nowhere()).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, CredentialsError::Missing { .. }));
        assert!(
            text.contains("gcloud auth application-default login"),
            "{text}"
        );
        assert!(text.contains("Workload Identity Federation"), "{text}");
        assert!(
            text.contains(".config/gcloud/application_default_credentials.json"),
            "{text}"
        );
    }

    #[test]
    fn the_variable_names_a_file_whose_type_is_read() {
        let directory = tempfile::tempdir().unwrap();
        let key = directory.path().join("key.json");
        std::fs::write(&key, r#"{"type": "external_account", "audience": "x"}"#).unwrap();
        let source = find_with(
            &[("GOOGLE_APPLICATION_CREDENTIALS", key.to_str().unwrap())],
            nowhere(),
        )
        .unwrap();
        assert!(source
            .describe()
            .starts_with("Workload Identity Federation configuration"));
    }

    #[test]
    fn a_variable_naming_a_missing_file_says_so_instead_of_trying_the_metadata_server() {
        let error = find_with(
            &[
                ("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json"),
                ("K_SERVICE", "x"),
            ],
            nowhere(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("does not exist"), "{error}");
    }

    #[test]
    fn gclouds_file_is_found_under_home_or_cloudsdk_config() {
        let home = tempfile::tempdir().unwrap();
        let gcloud = home.path().join(".config/gcloud");
        std::fs::create_dir_all(&gcloud).unwrap();
        std::fs::write(
            gcloud.join("application_default_credentials.json"),
            r#"{"type": "authorized_user"}"#,
        )
        .unwrap();
        let source = find_with(&[("HOME", home.path().to_str().unwrap())], nowhere()).unwrap();
        assert!(
            source.describe().starts_with("gcloud user credentials"),
            "{source:?}"
        );
        let elsewhere = tempfile::tempdir().unwrap();
        let error = find_with(
            &[
                ("HOME", home.path().to_str().unwrap()),
                ("CLOUDSDK_CONFIG", elsewhere.path().to_str().unwrap()),
            ],
            nowhere(),
        )
        .unwrap_err();
        assert!(matches!(error, CredentialsError::Missing { .. }), "{error}");
    }

    #[test]
    fn the_metadata_server_is_used_only_on_google_cloud() {
        for (variable, environment) in [
            ("K_SERVICE", "Cloud Run"),
            ("CLOUD_RUN_JOB", "Cloud Run Jobs"),
            ("GCE_METADATA_HOST", "`GCE_METADATA_HOST`"),
        ] {
            assert_eq!(
                find_with(&[(variable, "x")], nowhere()),
                Ok(Source::MetadataServer {
                    environment: environment.into()
                })
            );
        }
        let directory = tempfile::tempdir().unwrap();
        let product = directory.path().join("product_name");
        std::fs::write(&product, "Google Compute Engine\n").unwrap();
        assert!(matches!(
            find_with(&[], &product),
            Ok(Source::MetadataServer { .. })
        ));
        std::fs::write(&product, "Standard PC (Q35 + ICH9, 2009)\n").unwrap();
        assert!(find_with(&[], &product).is_err());
    }

    #[test]
    fn a_file_that_is_not_json_is_unusable() {
        let directory = tempfile::tempdir().unwrap();
        let key = directory.path().join("key.json");
        std::fs::write(&key, "not json").unwrap();
        let error = find_with(
            &[("GOOGLE_APPLICATION_CREDENTIALS", key.to_str().unwrap())],
            nowhere(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("not JSON"), "{error}");
    }
}
