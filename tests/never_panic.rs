//! Property tests: the service-file loader and the decoding of Cloud Run, Cloud Monitoring and
//! Cloud Logging answers never panic, and never turn impossible answers into a pass.
//! `PROPTEST_CASES=N` runs a longer campaign (`docs/FUZZING.md`, `bench/fuzz.sh`).
//!
//! Each test is named after what broke; each failed on the code before its fix.

// Test code: a failed set-up step panics the test (Cargo.toml's `unwrap_used` is for the product).
#![allow(clippy::unwrap_used)]

mod fake_cloud_run;
mod hostile;

use fake_cloud_run::service_with_statuses;
use hostile::{valid_with, Repository};

mod properties {
    use std::path::Path;

    use deployer::platform::cloud_run::{decode_revision, decode_service};
    use google_cloud_run_v2::model;
    use proptest::{collection, prelude::*, sample};
    use serde_json::Value;

    use super::{fake_cloud_run, valid_with, Repository};

    fn cases(default: u32) -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(default)
    }

    /// Keys of Cloud Run's Service and Revision (and their parts), so that arbitrary JSON often
    /// decodes into a model with fields set, plus arbitrary keys.
    const KEYS: &[&str] = &[
        "name",
        "uid",
        "etag",
        "uri",
        "urls",
        "generation",
        "observedGeneration",
        "reconciling",
        "conditions",
        "terminalCondition",
        "latestReadyRevision",
        "latestCreatedRevision",
        "traffic",
        "trafficStatuses",
        "annotations",
        "labels",
        "template",
        "containers",
        "image",
        "type",
        "revision",
        "percent",
        "tag",
        "state",
        "message",
        "reason",
        "createTime",
        "env",
        "value",
        "service",
        "scaling",
    ];

    fn json_key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => sample::select(KEYS).prop_map(str::to_string),
            1 => "\\PC{0,8}",
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-300i64..300).prop_map(Value::from),
            any::<i64>().prop_map(|number| Value::from(number.to_string())),
            any::<f64>()
                .prop_map(|number| serde_json::Number::from_f64(number)
                    .map_or(Value::Null, Value::Number)),
            "\\PC{0,24}".prop_map(Value::from),
            sample::select(
                &[
                    "REVISION",
                    "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST",
                    "CONDITION_SUCCEEDED",
                    "CONDITION_FAILED",
                    "Ready",
                    "2024-01-01T00:00:00Z",
                    "30s"
                ][..]
            )
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 96, 8, |inner| {
            prop_oneof![
                collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                collection::btree_map(json_key(), inner, 0..8)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// A value for a field: mostly of the field's type (`typed`), sometimes anything.
    fn field(typed: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
        proptest::option::of(prop_oneof![40 => typed, 1 => json_value()]).boxed()
    }

    fn text() -> BoxedStrategy<Value> {
        prop_oneof![
            "\\PC{0,16}",
            "projects/p/locations/r/services/s/revisions/[a-z0-9-]{0,8}"
        ]
        .prop_map(Value::from)
        .boxed()
    }

    fn enumeration() -> BoxedStrategy<Value> {
        prop_oneof![
            (-2i64..5).prop_map(Value::from),
            sample::select(
                &[
                    "REVISION",
                    "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST",
                    "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
                    "CONDITION_SUCCEEDED",
                    "CONDITION_FAILED",
                    "CONDITION_PENDING"
                ][..]
            )
            .prop_map(Value::from),
        ]
        .boxed()
    }

    fn object(fields: Vec<(&'static str, BoxedStrategy<Option<Value>>)>) -> BoxedStrategy<Value> {
        let (names, strategies): (Vec<_>, Vec<_>) = fields.into_iter().unzip();
        strategies
            .prop_map(move |values| {
                Value::Object(
                    names
                        .iter()
                        .zip(values)
                        .filter_map(|(name, value)| Some((name.to_string(), value?)))
                        .collect(),
                )
            })
            .boxed()
    }

    fn traffic_entry() -> BoxedStrategy<Value> {
        object(vec![
            ("type", field(enumeration())),
            ("revision", field(text())),
            (
                "percent",
                field(
                    prop_oneof![(-300i64..300), any::<i32>().prop_map(i64::from)]
                        .prop_map(Value::from),
                ),
            ),
            ("tag", field(text())),
            ("uri", field(text())),
        ])
    }

    fn condition() -> BoxedStrategy<Value> {
        object(vec![
            (
                "type",
                field(prop_oneof![Just(Value::from("Ready")), text()]),
            ),
            ("state", field(enumeration())),
            ("message", field(text())),
        ])
    }

    fn string_map() -> BoxedStrategy<Value> {
        collection::btree_map("\\PC{0,8}", "\\PC{0,16}", 0..4)
            .prop_map(|map| {
                Value::Object(map.into_iter().map(|(k, v)| (k, Value::from(v))).collect())
            })
            .boxed()
    }

    fn containers() -> BoxedStrategy<Value> {
        collection::vec(object(vec![("image", field(text()))]), 0..3)
            .prop_map(Value::Array)
            .boxed()
    }

    /// JSON shaped like a Cloud Run Service or Revision, each field usually of its type.
    fn resource_json() -> BoxedStrategy<Value> {
        object(vec![
            ("name", field(text())),
            ("etag", field(text())),
            ("uri", field(text())),
            (
                "generation",
                field(any::<i64>().prop_map(|n| Value::from(n.to_string()))),
            ),
            (
                "observedGeneration",
                field(any::<i64>().prop_map(Value::from)),
            ),
            ("reconciling", field(any::<bool>().prop_map(Value::from))),
            ("latestReadyRevision", field(text())),
            ("latestCreatedRevision", field(text())),
            (
                "traffic",
                field(collection::vec(traffic_entry(), 0..5).prop_map(Value::Array)),
            ),
            (
                "trafficStatuses",
                field(collection::vec(traffic_entry(), 0..5).prop_map(Value::Array)),
            ),
            (
                "conditions",
                field(collection::vec(condition(), 0..3).prop_map(Value::Array)),
            ),
            ("terminalCondition", field(condition())),
            ("annotations", field(string_map())),
            ("labels", field(string_map())),
            (
                "template",
                field(object(vec![("containers", field(containers()))])),
            ),
            ("containers", field(containers())),
            (
                "createTime",
                field(prop_oneof![
                    Just(Value::from("2024-01-01T00:00:00Z")),
                    text()
                ]),
            ),
        ])
    }

    fn top_level_object() -> impl Strategy<Value = Value> {
        collection::btree_map(json_key(), json_value(), 0..12)
            .prop_map(|map| Value::Object(map.into_iter().collect()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases(256)))]

        /// Arbitrary JSON that Google's client accepts as a Service or a Revision never panics
        /// our decoding.
        #[test]
        fn arbitrary_service_and_revision_answers_never_panic_decoding(
            value in prop_oneof![3 => resource_json(), 1 => top_level_object().boxed()]
        ) {
            if let Ok(service) = serde_json::from_value::<model::Service>(value.clone()) {
                let _ = decode_service(&fake_cloud_run::id(), &service);
            }
            if let Ok(revision) = serde_json::from_value::<model::Revision>(value) {
                let _ = decode_revision(&revision);
            }
        }

        /// A split decodes exactly when every percent is 0..=100 and a non-empty split sums to
        /// 100; then the serving percents sum to 100 too (no wrap, no clamp).
        #[test]
        fn traffic_splits_decode_only_when_they_add_up(
            percents in collection::vec(prop_oneof![0i32..=100, any::<i32>()], 0..5)
        ) {
            let statuses: Vec<model::TrafficTargetStatus> = percents
                .iter()
                .enumerate()
                .map(|(index, percent)| {
                    model::TrafficTargetStatus::new()
                        .set_revision(format!("s-{}", index % 2))
                        .set_percent(*percent)
                })
                .collect();
            let service = model::Service::new().set_traffic_statuses(statuses);
            let valid = percents.iter().all(|percent| (0..=100).contains(percent))
                && (percents.is_empty() || percents.iter().map(|p| i64::from(*p)).sum::<i64>() == 100);
            match decode_service(&fake_cloud_run::id(), &service) {
                Ok(snapshot) => {
                    prop_assert!(valid, "{percents:?} decoded");
                    let total: u32 = snapshot.serving().iter().map(|(_, p)| u32::from(*p)).sum();
                    prop_assert_eq!(total, if percents.is_empty() { 0 } else { 100 });
                }
                Err(problem) => prop_assert!(!valid, "{percents:?} refused: {problem}"),
            }
        }

        /// Arbitrary bytes as a service file never panic the loader, and every diagnostic is
        /// inside the file.
        #[test]
        fn arbitrary_bytes_as_a_service_file_never_panic_the_loader(
            bytes in collection::vec(any::<u8>(), 0..600)
        ) {
            let repository = Repository::new();
            let path = repository.root().join("services/bytes.toml");
            std::fs::write(&path, &bytes).unwrap();
            if let Err(diagnostics) = repository.workspace().load_file(&path) {
                let lines = bytes.iter().filter(|byte| **byte == b'\n').count() + 2;
                for diagnostic in diagnostics.iter() {
                    prop_assert!(diagnostic.line >= 1 && diagnostic.line <= lines);
                    prop_assert!(diagnostic.column >= 1);
                    prop_assert!(!diagnostic.message.contains('\u{1b}'), "escaped: {:?}", diagnostic.message);
                }
            }
        }

        /// Arbitrary values in every duration and path of a valid file never panic, never load
        /// a path outside the repository, and never let a duration beyond 365 days through.
        #[test]
        fn arbitrary_durations_and_paths_never_panic_or_escape(
            durations in collection::vec(prop_oneof![
                "[0-9]{1,22}[a-z]{1,6}",
                "[0-9 ]{0,4}\\PC{0,6}",
            ], 6),
            runbook in prop_oneof![
                Just("runbooks/ok.md".to_string()),
                "(\\.\\./|/|runbooks/|\\./){0,4}[a-z.\\n\\u{1b}]{0,10}",
            ],
            dockerfile in prop_oneof![
                Just("Dockerfile".to_string()),
                "(\\.\\./|/|\\./|runbooks){0,3}[A-Za-z.]{0,10}",
            ],
        ) {
            let repository = Repository::new();
            let text = valid_with(&[
                ("runbooks/ok.md", &runbook.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").replace('\u{1b}', "\\u001b")),
                ("dockerfile = \"Dockerfile\"", &format!("dockerfile = {dockerfile:?}")),
                ("[[checks]]", &format!(
                    "[health]\ntimeout = {:?}\n\n[preflight]\ntest_timeout = {:?}\n\n[rollout]\nhold = {:?}\ninterval = {:?}\nmonitor_duration = {:?}\nmonitor_interval = {:?}\n\n[[checks]]",
                    durations[0], durations[1], durations[2], durations[3], durations[4], durations[5],
                )),
            ]);
            let path = repository.service("svc", &text);
            if let Ok(loaded) = repository.workspace().load_file(&path) {
                let config = &loaded.config;
                for duration in [
                    config.health.timeout, config.preflight.test_timeout, config.rollout.hold,
                    config.rollout.interval, config.rollout.monitor_duration,
                    config.rollout.monitor_interval,
                ] {
                    prop_assert!(duration.get() <= std::time::Duration::from_secs(7 * 24 * 3600));
                }
                let root = repository.root().canonicalize().unwrap();
                for relative in [&config.runbook, &config.build.dockerfile] {
                    let resolved = repository.root().join(relative).canonicalize().unwrap();
                    prop_assert!(resolved.starts_with(&root), "{relative} escaped");
                }
                prop_assert!(Path::new(&config.runbook).is_relative());
            }
        }
    }

    /// Arbitrary bodies (and statuses) answered by the fake Admin API never panic the real
    /// client path: transport, Google's decoding, ours, error mapping.
    #[test]
    fn arbitrary_http_answers_never_panic_the_cloud_run_platform() {
        use deployer::platform::Platform as _;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut runner =
            proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases(64)));
        let strategy = (
            sample::select(
                &[
                    // Only answers that are not retried: a 429 or 5xx is retried with backoff
                    // within the read budget (seconds of real time per case, tested in
                    // tests/faults.rs), and its body reaches the same decoding as a 4xx's.
                    200u16, 200, 200, 400, 401, 403, 404, 409,
                ][..],
            ),
            prop_oneof![
                resource_json().prop_map(|value| value.to_string()),
                top_level_object().prop_map(|value| value.to_string()),
                "\\PC{0,200}",
                Just(super::service_with_statuses(&[100, 100, 100])),
            ],
        );
        let (server, platform) = runtime.block_on(async {
            let server =
                fake_cloud_run::Server::start(200, "application/json", String::new()).await;
            let platform = server.platform().await;
            (server, platform)
        });
        runner
            .run(&strategy, |(status, body)| {
                server.answer(status, body);
                runtime.block_on(async {
                    match platform.service(&fake_cloud_run::id()).await {
                        Ok(_) => {}
                        Err(error) => {
                            let text = error.to_string();
                            prop_assert!(text.chars().count() < 700, "{text}");
                            prop_assert!(!text.contains('\n'), "{text}");
                        }
                    }
                    let _ = platform.revision(&fake_cloud_run::id(), "s-1").await;
                    Ok(())
                })
            })
            .unwrap();
    }

    // ---- Cloud Monitoring and Cloud Logging answers ---------------------------------------

    /// What a generated number is, as a request count.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Count {
        /// A whole number of requests (0 ..= i64::MAX).
        Whole(u64),
        /// Impossible as a request count (negative, fractional-huge, NaN, infinite, overflowing
        /// int64, not a number, a bool, a distribution, no value at all). `finite` tells whether
        /// it is still a finite number for a generic check (a bool is 1, a distribution its mean).
        Impossible { finite: bool },
    }

    /// One Monitoring point's `value` (a `TypedValue`) and what it is.
    fn typed_value() -> BoxedStrategy<(Value, Count)> {
        use serde_json::json;
        let whole = prop_oneof![0u64..1_000_000, 0u64..=(i64::MAX as u64)];
        prop_oneof![
            6 => whole.clone().prop_map(|n| (json!({"int64Value": n.to_string()}), Count::Whole(n))),
            2 => (0u64..1_000_000).prop_map(|n| (json!({"doubleValue": n as f64}), Count::Whole(n))),
            2 => whole.prop_map(|n| (json!({"stringValue": n.to_string()}), Count::Whole(n))),
            1 => (i64::MIN..0).prop_map(|n| (json!({"int64Value": n.to_string()}), Count::Impossible { finite: true })),
            1 => sample::select(&[
                "9223372036854775808", "18446744073709551616", "99999999999999999999999",
                "-9223372036854775809", "NaN", "1.5", "", " 7",
            ][..]).prop_map(|text| (json!({"int64Value": text}), Count::Impossible { finite: false })),
            1 => sample::select(&["NaN", "Infinity", "-Infinity"][..])
                .prop_map(|text| (json!({"doubleValue": text}), Count::Impossible { finite: false })),
            1 => prop_oneof![-1e300..-1e-300f64, 1.9e19..1e300f64]
                .prop_map(|x| (json!({"doubleValue": x}), Count::Impossible { finite: true })),
            1 => sample::select(&["NaN", "inf", "-inf", "infinity", "1e400"][..])
                .prop_map(|text| (json!({"stringValue": text}), Count::Impossible { finite: false })),
            1 => prop_oneof![
                (i64::MIN..0).prop_map(|n| n.to_string()),
                Just("1.5e3".to_string()),
                Just("18446744073709551616".to_string()),
            ].prop_map(|text| (json!({"stringValue": text}), Count::Impossible { finite: true })),
            1 => "[a-z ]{1,8}".prop_map(|text| (json!({"stringValue": text}), Count::Impossible { finite: false })),
            1 => any::<bool>().prop_map(|b| (json!({"boolValue": b}), Count::Impossible { finite: true })),
            1 => (0.0..1e6f64).prop_map(|mean| (json!({"distributionValue": {"count": "3", "mean": mean}}), Count::Impossible { finite: true })),
            1 => Just((json!({}), Count::Impossible { finite: false })),
        ]
        .boxed()
    }

    /// A `timeSeries` answer: series of `run.googleapis.com/request_count` by response class.
    #[allow(clippy::type_complexity)]
    fn time_series() -> BoxedStrategy<Vec<(String, Vec<(Value, Count)>)>> {
        let class = prop_oneof![
            sample::select(&["2xx", "4xx", "5xx", "3xx", ""][..]).prop_map(str::to_string),
            "\\PC{0,4}",
        ];
        collection::vec((class, collection::vec(typed_value(), 0..4)), 0..4).boxed()
    }

    fn time_series_json(series: &[(String, Vec<(Value, Count)>)]) -> String {
        let series: Vec<Value> = series
            .iter()
            .map(|(class, points)| {
                serde_json::json!({
                    "metric": {"type": "run.googleapis.com/request_count", "labels": {"response_code_class": class}},
                    "resource": {"type": "cloud_run_revision", "labels": {"revision_name": "s-1"}},
                    "metricKind": "DELTA",
                    "valueType": "INT64",
                    "points": points.iter().map(|(value, _)| serde_json::json!({
                        "interval": {"startTime": "2024-01-01T00:00:00Z", "endTime": "2024-01-01T00:01:00Z"},
                        "value": value,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::json!({"timeSeries": series}).to_string()
    }

    /// An HTTP answer of a fake Google API: mostly 200 with the generated body; sometimes an
    /// error status with Google's error body, or arbitrary JSON (`None`: no model to check).
    fn http_answer<T: std::fmt::Debug + Clone + 'static>(
        body: BoxedStrategy<T>,
        encode: fn(&T) -> String,
    ) -> BoxedStrategy<(u16, String, Option<T>)> {
        // No 503: Google's client retries it after a backoff (a timing question, not decoding).
        prop_oneof![
            12 => body.prop_map(move |model| (200u16, encode(&model), Some(model))),
            1 => (sample::select(&[400u16, 404, 429, 500][..]), "\\PC{0,40}").prop_map(|(status, message)| {
                let body = serde_json::json!({"error": {"code": status, "message": message, "status": "X"}});
                (status, body.to_string(), None)
            }),
            1 => top_level_object().prop_map(|value| (200u16, value.to_string(), None)),
            1 => "\\PC{0,60}".prop_map(|text| (200u16, text, None)),
        ]
        .boxed()
    }

    fn checked(text: &str) -> deployer::config::CheckConfig {
        toml::from_str(text).unwrap()
    }

    /// A single-threaded runtime with a fake Google API answering whatever it is told.
    fn fake_google() -> (tokio::runtime::Runtime, fake_cloud_run::Server) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(fake_cloud_run::Server::start(
            200,
            "application/json",
            String::new(),
        ));
        (runtime, server)
    }

    fn check_context() -> deployer::checks::CheckContext {
        deployer::checks::CheckContext {
            service: "s".into(),
            project: "p".into(),
            region: "r".into(),
            revision: Some("s-1".into()),
            ..deployer::checks::CheckContext::default()
        }
    }

    /// Arbitrary and mis-shaped Cloud Monitoring `timeSeries` answers, read through the real
    /// client and decoding, as the canary analysis reads request counts (`CloudMonitoring`)
    /// and as a `cloud-monitoring` check reads a value (`ALIGN_SUM`): no panic; a request count
    /// that is impossible (negative, NaN, infinite, fractional-huge, overflowing int64, not a
    /// number, no value) or a sum beyond 64 bits is a measurement error, never counts; a
    /// plausible answer is counted exactly; a check passes only on a finite value.
    #[test]
    fn arbitrary_monitoring_answers_never_turn_impossible_counts_into_a_pass() {
        use deployer::checks::{
            cloud_monitoring::CloudMonitoring, ProviderEndpoints, Providers, RequestMetrics as _,
            Status,
        };
        let (runtime, server) = fake_google();
        let metrics = CloudMonitoring::new(&server.url).unwrap();
        let providers = Providers::new(ProviderEndpoints {
            monitoring: Some(server.url.clone()),
            ..ProviderEndpoints::default()
        });
        let check = checked(
            "name = \"Requests\"\nprovider = \"cloud-monitoring\"\nfilter = 'metric.type = \"run.googleapis.com/request_count\"'\naligner = \"ALIGN_SUM\"\nreducer = \"REDUCE_SUM\"\nwindow = \"10m\"\ncomparison = \">=\"\nwarn = 10\ncritical = 1\n",
        );
        let context = check_context();
        let id = fake_cloud_run::id();
        let mut runner =
            proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases(64)));
        runner
            .run(
                &http_answer(time_series(), |series| time_series_json(series)),
                |(status, body, model)| {
                    server.answer(status, body.clone());
                    let counts = runtime.block_on(metrics.request_counts(
                        &id,
                        "s-1",
                        std::time::Duration::from_secs(60),
                    ));
                    let result =
                        runtime.block_on(deployer::checks::run_check(&check, &context, &providers));
                    if let Err(error) = &counts {
                        let text = error.to_string();
                        prop_assert!(!text.contains('\n') && text.chars().count() < 700, "{text}");
                    }
                    if let Ok(counts) = &counts {
                        prop_assert!(counts.errors <= counts.total, "{counts:?}");
                    }
                    if result.status.evaluated() {
                        let value = result.value.unwrap_or(f64::NAN);
                        prop_assert!(value.is_finite(), "{result:?} for {body}");
                    }
                    let Some(series) = model.filter(|_| status == 200) else {
                        return Ok(());
                    };
                    // Request counts: exactly the plausible sums, else an error.
                    let points = || {
                        series
                            .iter()
                            .flat_map(|(_, points)| points.iter().map(|(_, count)| *count))
                    };
                    let impossible =
                        points().any(|count| matches!(count, Count::Impossible { .. }));
                    let sum = |only_5xx: bool| -> u128 {
                        series
                            .iter()
                            .filter(|(class, _)| !only_5xx || class == "5xx")
                            .flat_map(|(_, points)| points.iter())
                            .map(|(_, count)| match count {
                                Count::Whole(n) => u128::from(*n),
                                Count::Impossible { .. } => 0,
                            })
                            .sum()
                    };
                    let (total, errors) = (sum(false), sum(true));
                    if impossible || total > u128::from(u64::MAX) {
                        prop_assert!(counts.is_err(), "counted {counts:?} from {body}");
                    } else {
                        let counts = counts
                            .map_err(|error| TestCaseError::fail(format!("{error} for {body}")))?;
                        prop_assert_eq!(
                            (u128::from(counts.total), u128::from(counts.errors)),
                            (total, errors),
                            "{}",
                            body
                        );
                    }
                    // A check: one series with points is one value; a non-finite point is an
                    // error, never a pass.
                    let with_points: Vec<_> = series
                        .iter()
                        .filter(|(_, points)| !points.is_empty())
                        .collect();
                    if let [(_, points)] = with_points.as_slice() {
                        if points
                            .iter()
                            .any(|(_, count)| matches!(count, Count::Impossible { finite: false }))
                        {
                            prop_assert_eq!(
                                result.status,
                                Status::Error,
                                "{:?} for {}",
                                result,
                                body
                            );
                        } else if points
                            .iter()
                            .all(|(_, count)| matches!(count, Count::Whole(_)))
                        {
                            prop_assert!(result.status.evaluated(), "{result:?} for {body}");
                        }
                    }
                    Ok(())
                },
            )
            .unwrap();
    }

    /// What a generated request log entry's `httpRequest.status` is.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Logged {
        /// An HTTP status (100..=599).
        Status(i32),
        /// No request, or an impossible status (none, 0, negative, beyond 599, beyond i32).
        Impossible,
    }

    fn log_entry() -> BoxedStrategy<(Value, Logged)> {
        use serde_json::json;
        // Within the reader's window (the test runs for seconds): Cloud Logging gives every
        // entry a timestamp and a receiveTimestamp (and an insertId, see `entries_json`).
        let entry = |request: Option<Value>| {
            let now = chrono::Utc::now().to_rfc3339();
            let mut entry = json!({
                "logName": "projects/p/logs/run.googleapis.com%2Frequests",
                "resource": {"type": "cloud_run_revision", "labels": {"revision_name": "s-1"}},
                "timestamp": now,
                "receiveTimestamp": now,
            });
            if let Some(request) = request {
                entry["httpRequest"] = request;
            }
            entry
        };
        prop_oneof![
            12 => prop_oneof![100i32..600, 200i32..204, 500i32..504]
                .prop_map(move |status| (entry(Some(json!({"status": status, "requestMethod": "GET"}))), Logged::Status(status))),
            1 => prop_oneof![i32::MIN..100, 600..=i32::MAX]
                .prop_map(move |status| (entry(Some(json!({"status": status}))), Logged::Impossible)),
            1 => sample::select(vec![json!("99999999999"), json!(-99999999999i64), json!(1e12), json!("5xx")])
                .prop_map(move |status| (entry(Some(json!({"status": status}))), Logged::Impossible)),
            1 => Just((entry(Some(json!({"requestMethod": "GET"}))), Logged::Impossible)),
            1 => Just((entry(None), Logged::Impossible)),
        ]
        .boxed()
    }

    fn entries_json(entries: &[(Value, Logged)]) -> String {
        let with_ids = entries.iter().enumerate().map(|(index, (entry, _))| {
            let mut entry = entry.clone();
            entry["insertId"] = Value::String(format!("{index:08x}"));
            entry
        });
        serde_json::json!({"entries": with_ids.collect::<Vec<_>>()}).to_string()
    }

    /// Arbitrary and mis-shaped Cloud Logging `entries` answers, read through the real client
    /// and decoding, as the canary analysis reads request counts from Cloud Run's request logs
    /// (`CloudLoggingRequests`) and as a `cloud-logging` check counts entries: no panic; a
    /// request entry without a possible HTTP status is a measurement error, never a request
    /// that succeeded; a plausible answer is counted exactly.
    #[test]
    fn arbitrary_logging_answers_never_turn_impossible_statuses_into_a_pass() {
        use deployer::checks::{
            cloud_logging::CloudLoggingRequests, ProviderEndpoints, Providers, RequestMetrics as _,
        };
        let (runtime, server) = fake_google();
        let providers = Providers::new(ProviderEndpoints {
            logging: Some(server.url.clone()),
            ..ProviderEndpoints::default()
        });
        let check = checked(
            "name = \"Errors\"\nprovider = \"cloud-logging\"\nfilter = 'httpRequest.status>=500'\nwindow = \"10m\"\ncomparison = \"<=\"\nwarn = 5\ncritical = 20\n",
        );
        let context = check_context();
        let id = fake_cloud_run::id();
        let mut runner =
            proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases(64)));
        let answers = http_answer(collection::vec(log_entry(), 0..12).boxed(), |entries| {
            entries_json(entries)
        });
        runner
            .run(&answers, |(status, body, model)| {
                server.answer(status, body.clone());
                // A reader per answer: each is a revision's first look (the reader keeps what it
                // counted per revision across looks).
                let metrics = CloudLoggingRequests::new(Some(server.url.clone()));
                let counts = runtime.block_on(metrics.request_counts(
                    &id,
                    "s-1",
                    std::time::Duration::from_secs(60),
                ));
                let result =
                    runtime.block_on(deployer::checks::run_check(&check, &context, &providers));
                if let Err(error) = &counts {
                    let text = error.to_string();
                    prop_assert!(!text.contains('\n') && text.chars().count() < 700, "{text}");
                }
                if let Ok(counts) = &counts {
                    prop_assert!(counts.errors <= counts.total, "{counts:?}");
                }
                if result.status.evaluated() {
                    prop_assert!(result.value.is_some_and(f64::is_finite), "{result:?}");
                }
                let Some(entries) = model.filter(|_| status == 200) else {
                    return Ok(());
                };
                let overflowing = entries.iter().any(|(entry, _)| {
                    entry["httpRequest"]["status"]
                        .as_i64()
                        .is_none_or(|s| i32::try_from(s).is_err())
                        && !entry["httpRequest"]["status"].is_null()
                });
                if entries
                    .iter()
                    .any(|(_, logged)| *logged == Logged::Impossible)
                {
                    prop_assert!(counts.is_err(), "counted {counts:?} from {body}");
                } else {
                    let counts = counts
                        .map_err(|error| TestCaseError::fail(format!("{error} for {body}")))?;
                    let errors = entries
                        .iter()
                        .filter(|(_, logged)| matches!(logged, Logged::Status(500..=599)))
                        .count();
                    prop_assert_eq!(
                        (counts.total, counts.errors),
                        (entries.len() as u64, errors as u64),
                        "{}",
                        body
                    );
                }
                // The check counts entries, whatever they hold, once they decode.
                if !overflowing {
                    prop_assert_eq!(
                        result.value,
                        Some(entries.len() as f64),
                        "{:?} for {}",
                        result,
                        body
                    );
                }
                Ok(())
            })
            .unwrap();
    }
}
