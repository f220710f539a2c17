//! One service's image delivered: its source revision read from git, the build, then (when
//! asked) the registry's credentials and the push. `deployer build` and `deploy` both run it;
//! what they draw comes through the [`Reporter`].

use std::path::Path;

use crate::{
    config::ServiceConfig,
    repo::{RepoError, Repository},
};

use super::{
    build, push, registry_host, BuildPlan, BuiltImage, Engine, ImageError, PushedImage,
    RegistryCredentials, Reporter,
};

/// What a build (and push) delivered.
#[derive(Debug)]
pub struct Delivery {
    /// What was built: the service, the source revision, the tag.
    pub plan: BuildPlan,
    /// The image in the local engine.
    pub built: BuiltImage,
    /// The image in the registry, by digest, when it was pushed.
    pub pushed: Option<PushedImage>,
}

/// Why an image was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The source revision could not be read from git.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The build failed (nothing was pushed).
    #[error("cannot build `{service}`")]
    Build {
        /// The service.
        service: String,
        /// What failed.
        #[source]
        source: ImageError,
    },
    /// The build or the push failed.
    #[error("cannot build and push `{service}`")]
    BuildAndPush {
        /// The service.
        service: String,
        /// What failed.
        #[source]
        source: ImageError,
    },
}

/// Builds the image of `config` from the repository holding `root` at its working tree, and
/// pushes it when `push`. The reporter hears every step, and [`Reporter::finished`] once at the
/// end whatever the result.
pub async fn build_service(
    config: &ServiceConfig,
    root: &Path,
    push: bool,
    reporter: &mut dyn Reporter,
) -> Result<Delivery, DeliveryError> {
    let repository = Repository::discover(root)?;
    let revision = repository.source_revision()?;
    let source = repository.remote_url(&config.preflight.remote);
    let plan = BuildPlan::new(config, root, revision, source, chrono::Utc::now());
    if let Some(fingerprint) = &plan.revision.dirty {
        reporter.uncommitted_changes(&plan.tag(), fingerprint);
    }
    let result = build_and_push(&plan, push, reporter).await;
    reporter.finished();
    match result {
        Ok((built, pushed)) => Ok(Delivery {
            plan,
            built,
            pushed,
        }),
        Err(source) => {
            let service = plan.service;
            Err(if push {
                DeliveryError::BuildAndPush { service, source }
            } else {
                DeliveryError::Build { service, source }
            })
        }
    }
}

/// Build → credentials → push.
async fn build_and_push(
    plan: &BuildPlan,
    push_too: bool,
    reporter: &mut dyn Reporter,
) -> Result<(BuiltImage, Option<PushedImage>), ImageError> {
    let engine = Engine::connect().await?;
    let built = build(&engine, plan, reporter).await?;
    reporter.built(&built);
    if !push_too {
        return Ok((built, None));
    }
    let credentials = RegistryCredentials::resolve(registry_host(&built.repository)).await?;
    reporter.push_started(&built, credentials.is_some());
    let pushed = push(&engine, &built, credentials.as_ref(), reporter).await?;
    reporter.pushed(&pushed);
    Ok((built, Some(pushed)))
}
