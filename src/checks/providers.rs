//! Where the providers are and the one provider of each kind a run shares:
//! [`ProviderEndpoints`] (`DEPLOYER_*_ENDPOINT`, `DEPLOYER_PROMETHEUS_URL`, the local emulator)
//! and [`Providers`], which picks the provider of a resolved [`Query`].

use std::sync::Arc;

use super::{bigquery, cloud_logging, cloud_monitoring, http, prometheus, MetricProvider, Query};

/// Where the providers are. `None`: Google's endpoint (Prometheus has no default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderEndpoints {
    /// BigQuery REST endpoint (`DEPLOYER_BIGQUERY_ENDPOINT`), without `/bigquery/v2`.
    pub bigquery: Option<String>,
    /// Cloud Logging endpoint (`DEPLOYER_LOGGING_ENDPOINT`).
    pub logging: Option<String>,
    /// Cloud Monitoring endpoint (`DEPLOYER_MONITORING_ENDPOINT`).
    pub monitoring: Option<String>,
    /// Prometheus server (`DEPLOYER_PROMETHEUS_URL`).
    pub prometheus: Option<String>,
}

impl ProviderEndpoints {
    /// The endpoints named by the environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// These endpoints, with Cloud Logging and Cloud Monitoring at `emulator` where unset: the
    /// local emulator serves both APIs next to the Admin API (pass `None` for Google targets).
    pub fn or_emulator(mut self, emulator: Option<&str>) -> Self {
        if let Some(url) = emulator {
            self.logging.get_or_insert_with(|| url.to_string());
            self.monitoring.get_or_insert_with(|| url.to_string());
        }
        self
    }

    /// The endpoints named by `lookup` (an environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        Self {
            bigquery: get("DEPLOYER_BIGQUERY_ENDPOINT"),
            logging: get("DEPLOYER_LOGGING_ENDPOINT"),
            monitoring: get("DEPLOYER_MONITORING_ENDPOINT"),
            prometheus: get("DEPLOYER_PROMETHEUS_URL"),
        }
    }
}

/// One provider of each kind, shared by every check of a run.
#[derive(Clone)]
pub struct Providers {
    /// `bigquery` checks.
    pub bigquery: Arc<dyn MetricProvider>,
    /// `http` checks.
    pub http: Arc<dyn MetricProvider>,
    /// `cloud-logging` checks.
    pub cloud_logging: Arc<dyn MetricProvider>,
    /// `cloud-monitoring` checks.
    pub cloud_monitoring: Arc<dyn MetricProvider>,
    /// `prometheus` checks.
    pub prometheus: Arc<dyn MetricProvider>,
    endpoints: ProviderEndpoints,
}

impl Providers {
    /// The five providers at `endpoints` (clients are built on first use).
    pub fn new(endpoints: ProviderEndpoints) -> Self {
        Self {
            bigquery: Arc::new(bigquery::BigQuery::new(endpoints.bigquery.clone())),
            http: Arc::new(http::Http::new()),
            cloud_logging: Arc::new(cloud_logging::CloudLogging::new(endpoints.logging.clone())),
            cloud_monitoring: Arc::new(cloud_monitoring::MonitoringProvider::new(
                endpoints.monitoring.clone(),
            )),
            prometheus: Arc::new(prometheus::Prometheus::new(endpoints.prometheus.clone())),
            endpoints,
        }
    }

    /// The endpoints the providers use.
    pub fn endpoints(&self) -> &ProviderEndpoints {
        &self.endpoints
    }

    /// The provider that runs `query`.
    pub(super) fn for_query(&self, query: &Query) -> &dyn MetricProvider {
        match query {
            Query::Bigquery { .. } => self.bigquery.as_ref(),
            Query::Http { .. } => self.http.as_ref(),
            Query::CloudLogging { .. } => self.cloud_logging.as_ref(),
            Query::CloudMonitoring { .. } => self.cloud_monitoring.as_ref(),
            Query::Prometheus { .. } => self.prometheus.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::request_metrics_for;
    use crate::config::{RequestMetricsSource, RolloutConfig};

    #[test]
    fn endpoints_come_from_the_environment_and_the_emulator() {
        let endpoints = ProviderEndpoints::from_lookup(|name| match name {
            "DEPLOYER_BIGQUERY_ENDPOINT" => Some("http://127.0.0.1:9050".into()),
            "DEPLOYER_LOGGING_ENDPOINT" => Some(" ".into()),
            "DEPLOYER_MONITORING_ENDPOINT" => Some("http://monitoring".into()),
            _ => None,
        })
        .or_emulator(Some("http://127.0.0.1:8090"));
        assert_eq!(endpoints.bigquery.as_deref(), Some("http://127.0.0.1:9050"));
        assert_eq!(endpoints.logging.as_deref(), Some("http://127.0.0.1:8090"));
        assert_eq!(endpoints.monitoring.as_deref(), Some("http://monitoring"));
        assert_eq!(endpoints.prometheus, None);
        let mut rollout = RolloutConfig {
            request_metrics: RequestMetricsSource::Prometheus,
            ..RolloutConfig::default()
        };
        assert!(request_metrics_for(&rollout, &endpoints).is_err());
        rollout.request_metrics = RequestMetricsSource::CloudLogging;
        assert!(request_metrics_for(&rollout, &endpoints).is_ok());
    }
}
