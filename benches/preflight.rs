//! The preflight checklist on a large repository, minus tests and network: driven by
//! `bench/preflight.sh`, which generates the repository and compares with the git CLI.
//!
//! Arguments: REPOSITORY DEPLOYED_COMMIT RUNS. The deployed state comes from the in-memory
//! platform (the serving revision labelled with DEPLOYED_COMMIT) and `/health` from a server on
//! 127.0.0.1, so the figure is deployer's own work: git facts, schema diff, report.

use std::{path::PathBuf, time::Instant};

use deployer::{
    config,
    platform::{
        cloud_run::revision_labels, memory::MemoryPlatform, Platform, RevisionSpec, ServiceId,
    },
    preflight::{self, DeployedSource, PreflightOptions, SilentReporter, Step},
};

fn main() {
    let arguments: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [repository, deployed, runs] = arguments.as_slice() else {
        eprintln!("usage: preflight REPOSITORY DEPLOYED_COMMIT RUNS (see bench/preflight.sh)");
        std::process::exit(2);
    };
    let repository = PathBuf::from(repository);
    let runs: usize = runs.parse().expect("RUNS is a number");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let app = axum::Router::new().route("/health", axum::routing::get(|| async { "{}" }));
        tokio::spawn(async move { axum::serve(listener, app).await });

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
                    labels: revision_labels(deployed),
                    base: None,
                    settings: Default::default(),
                },
            )
            .await
            .expect("create");
        platform.set_uri(&id, &format!("http://{address}"));
        let config = config::parse(
            std::path::Path::new("services/bench.toml"),
            "name = \"bench\"\nrunbook = \"r.md\"\n[target]\nkind = \"local\"\n[image]\nrepository = \"r/bench\"\n[preflight]\nschema_paths = [\"schemas/**\"]\n",
        )
        .expect("service");
        let options = PreflightOptions {
            fetch: false,
            skip_tests: true,
            ..PreflightOptions::default()
        };
        let mut times = Vec::new();
        let mut last = None;
        // One warm-up run (page cache), then the measured runs.
        for run in 0..=runs {
            let started = Instant::now();
            let report = preflight::run(
                &config,
                &repository,
                DeployedSource::Platform {
                    platform: &platform,
                    id: id.clone(),
                },
                &options,
                &SilentReporter,
            )
            .await;
            if run > 0 {
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            last = Some(report);
        }
        let report = last.expect("at least one run");
        for check in &report.checks {
            println!("[{}/8] {} {}  {}", check.step, check.name, check.status.label(), check.reason);
        }
        let shipped = report.commits.as_ref().map_or(0, |range| range.count);
        assert!(
            report.check(Step::Commits).is_some() && shipped > 0,
            "the benchmark must measure a real range"
        );
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "deployer: median {median:.1} ms over {runs} runs (min {:.1}, max {:.1}); {shipped} commits to ship",
            times[0],
            times[times.len() - 1]
        );
        println!("median_ms={median:.1}");
    });
}
