//! `deployer drift` on a large repository, minus the network: driven by `bench/drift.sh`, which
//! generates the repository (the preflight benchmark's generator) and compares with the git CLI.
//!
//! Arguments: REPOSITORY DEPLOYED_COMMIT RUNS. The deployed state comes from the in-memory
//! platform (the serving revision labelled with DEPLOYED_COMMIT), `main` is `origin/main` as last
//! fetched, so the figure is deployer's own work: reading what serves, the range, the commits
//! touching the service's paths, the schema diff, the severity.

use std::{path::PathBuf, time::Instant};

use deployer::{
    config,
    drift::{self, deployed, GitOptions, ServiceInput},
    platform::{
        cloud_run::revision_labels, memory::MemoryPlatform, Platform, RevisionSpec, ServiceId,
    },
    repo::Repository,
};

fn main() {
    let arguments: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [repository, deployed_commit, runs] = arguments.as_slice() else {
        eprintln!("usage: drift REPOSITORY DEPLOYED_COMMIT RUNS (see bench/drift.sh)");
        std::process::exit(2);
    };
    let repository = PathBuf::from(repository);
    let runs: usize = runs.parse().expect("RUNS is a number");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let id = ServiceId {
            project: "local".into(),
            region: "local".into(),
            name: "bench".into(),
        };
        let platform = MemoryPlatform::new();
        platform
            .create(
                &id,
                &RevisionSpec {
                    name: "bench-00001".into(),
                    image: "127.0.0.1:5000/bench@sha256:1".into(),
                    labels: revision_labels(deployed_commit),
                    base: None,
                    settings: Default::default(),
                },
            )
            .await
            .expect("create");
        let config = config::parse(
            std::path::Path::new("services/bench.toml"),
            "name = \"bench\"\nrunbook = \"r.md\"\n[target]\nkind = \"local\"\n[image]\nrepository = \"r/bench\"\n[preflight]\npaths = [\"src/module30/**\"]\nschema_paths = [\"schemas/**\"]\n",
        )
        .expect("service");
        let options = GitOptions {
            fetch: false,
            fetch_time_limit: std::time::Duration::from_secs(30),
        };
        let mut times = Vec::new();
        let mut last = None;
        // One warm-up run (page cache), then the measured runs.
        for run in 0..=runs {
            let started = Instant::now();
            let state = deployed::read(
                &platform,
                &id,
                &deployed::RegistryLabels,
                std::time::Duration::from_secs(5),
            )
            .await;
            let inputs = [ServiceInput {
                config: config.clone(),
                id: id.clone(),
                deployed: state,
            }];
            let opened = Repository::discover(&repository).expect("repository");
            let report = drift::from_git(&opened, &inputs, &options, chrono::Utc::now());
            if run > 0 {
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            last = Some(report);
        }
        let report = last.expect("at least one run");
        let service = &report.services[0];
        let facts = service.revisions[0]
            .facts
            .as_ref()
            .expect("the benchmark must measure a real range");
        assert!(facts.behind > 0, "the benchmark must measure a real range");
        println!(
            "{} {}: {} behind, {} touching src/module30/**, {} schema files",
            service.severity.label(),
            service.service,
            facts.behind,
            facts.relevant,
            facts.schema_changes.len()
        );
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "deployer: median {median:.1} ms over {runs} runs (min {:.1}, max {:.1})",
            times[0],
            times[times.len() - 1]
        );
        println!("median_ms={median:.1}");
        println!("relevant={}", facts.relevant);
    });
}
