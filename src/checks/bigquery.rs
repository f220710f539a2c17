//! The `bigquery` provider on Google's official `google-cloud-bigquery-v2` client (REST
//! `jobs.query`, then `jobs.getQueryResults` until the job completes).
//!
//! The first column of the first row is the value; a NULL or no row is no data. When the
//! second and third columns are whole numbers they are the counts behind a rate (matching,
//! total), as in `SELECT pct, matching, total`. Every answer's `errors` array is checked: a
//! failed query can come back with HTTP 200 and no rows (the BigQuery emulator does exactly
//! that for a missing table), which must never read as "no data". A cost guard,
//! `maximum_bytes_billed`, makes BigQuery fail the job rather than bill more.
//!
//! Why this crate rather than `gcp-bigquery-client`: `docs/ARCHITECTURE.md` ("BigQuery client").

use std::time::Duration;

use async_trait::async_trait;
use google_cloud_bigquery_v2::{
    client::JobService,
    model::{ErrorProto, GetQueryResultsRequest, PostQueryRequest, QueryRequest, QueryResponse},
};
use serde_json::Value;

use super::{
    excerpt,
    google_client::{self, GoogleApi, LazyClient, Settings},
    Counts, MetricProvider, ProviderError, Query, Sample,
};

const PROVIDER: &str = "bigquery";

/// The `bigquery` provider.
#[derive(Debug)]
pub struct BigQuery {
    client: LazyClient<JobService>,
}

impl BigQuery {
    /// A provider for `endpoint` (`DEPLOYER_BIGQUERY_ENDPOINT`, without `/bigquery/v2`), or
    /// Google's BigQuery when `None`. The client is built on first use.
    pub fn new(endpoint: Option<String>) -> Self {
        Self {
            client: LazyClient::new(endpoint.as_deref()),
        }
    }

    async fn client(&self) -> Result<&JobService, ProviderError> {
        // Unlike Logging and Monitoring, BigQuery has always said which client a missing
        // credential stopped, as the history store does (`health::bigquery_store`).
        self.client
            .get()
            .await
            .map_err(|error| ProviderError::Unavailable {
                provider: PROVIDER,
                message: format!("cannot create the BigQuery client: {}", error.cause()),
            })
    }
}

impl GoogleApi for JobService {
    const NAME: &'static str = "BigQuery";
    const GOOGLE_LABEL: &'static str = "bigquery.googleapis.com";

    fn normalize(endpoint: &str) -> Option<String> {
        Some(normalize_endpoint(endpoint))
    }

    fn build(
        settings: Settings,
    ) -> impl std::future::Future<Output = Result<Self, google_cloud_gax::client_builder::Error>> + Send
    {
        settings.apply(Self::builder()).build()
    }
}

/// `endpoint` as the client wants it: no trailing `/` nor `/bigquery/v2`.
pub fn normalize_endpoint(endpoint: &str) -> String {
    endpoint
        .trim_end_matches('/')
        .trim_end_matches("/bigquery/v2")
        .to_string()
}

/// Runs `request` in `project` and waits for the job (each call waits at most `wait_ms`;
/// the caller's timeout bounds the whole): the rows, or the first transport error or the
/// `errors` of the answer (which can come with HTTP 200).
pub async fn query_rows(
    client: &JobService,
    project: &str,
    request: QueryRequest,
    wait_ms: u32,
) -> Result<Vec<serde_json::Map<String, Value>>, ProviderError> {
    let mut response: QueryResponse = client
        .query()
        .with_request(
            PostQueryRequest::new()
                .set_project_id(project.to_string())
                .set_query_request(request.set_timeout_ms(wait_ms)),
        )
        .send()
        .await
        .map_err(transport_error)?;
    query_errors(&response.errors)?;
    // A long query answers "not complete yet" with a job reference: poll it.
    while !response.job_complete.unwrap_or(true) {
        let Some(job) = response.job_reference.clone() else {
            return Err(ProviderError::Malformed {
                provider: PROVIDER,
                message: "an incomplete query without a job reference".into(),
            });
        };
        let results = client
            .get_query_results()
            .with_request(
                GetQueryResultsRequest::new()
                    .set_project_id(job.project_id.clone())
                    .set_job_id(job.job_id.clone())
                    .set_location(job.location.clone().unwrap_or_default())
                    .set_timeout_ms(wait_ms),
            )
            .send()
            .await
            .map_err(transport_error)?;
        query_errors(&results.errors)?;
        response.job_complete = results.job_complete;
        response.rows = results.rows;
    }
    Ok(response.rows)
}

fn transport_error(error: google_cloud_bigquery_v2::Error) -> ProviderError {
    use google_cloud_gax::error::rpc::Code;
    match error.status() {
        Some(status)
            if matches!(
                status.code,
                Code::InvalidArgument
                    | Code::NotFound
                    | Code::PermissionDenied
                    | Code::FailedPrecondition
                    | Code::OutOfRange
                    | Code::AlreadyExists
            ) =>
        {
            ProviderError::Rejected {
                provider: PROVIDER,
                message: excerpt(&status.message, 300),
            }
        }
        _ => ProviderError::Unavailable {
            provider: PROVIDER,
            message: google_client::describe_google_error(&error),
        },
    }
}

fn query_errors(errors: &[ErrorProto]) -> Result<(), ProviderError> {
    if errors.is_empty() {
        return Ok(());
    }
    let message = errors
        .iter()
        .map(|error| {
            if error.reason.is_empty() {
                excerpt(&error.message, 300)
            } else {
                format!("{}: {}", error.reason, excerpt(&error.message, 300))
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    Err(ProviderError::Rejected {
        provider: PROVIDER,
        message,
    })
}

/// A cell's text: BigQuery answers every value as a string (`{"v": "44.2"}`), NULL as null.
pub fn cell(row: &serde_json::Map<String, Value>, index: usize) -> Option<&Value> {
    row.get("f")?.as_array()?.get(index)?.get("v")
}

fn whole_number(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::String(text) => text.trim().parse().ok(),
        Value::Number(number) => number.as_u64(),
        _ => None,
    }
}

/// The sample of a completed query's rows.
pub fn sample_of_rows(rows: &[serde_json::Map<String, Value>]) -> Result<Sample, ProviderError> {
    let malformed = |message: String| ProviderError::Malformed {
        provider: PROVIDER,
        message,
    };
    let Some(row) = rows.first() else {
        return Ok(Sample::NoData {
            reason: "the query returned no row".into(),
        });
    };
    let value = match cell(row, 0) {
        None => return Err(malformed("the first row has no column".into())),
        Some(Value::Null) => {
            return Ok(Sample::NoData {
                reason: "the first column of the first row is NULL".into(),
            })
        }
        Some(Value::String(text)) => text.trim().parse::<f64>().map_err(|_| {
            malformed(format!(
                "the first column is `{}`, not a number",
                excerpt(text, 40)
            ))
        })?,
        Some(Value::Number(number)) => number
            .as_f64()
            .ok_or_else(|| malformed("the first column is not a finite number".into()))?,
        Some(other) => {
            return Err(malformed(format!(
                "the first column is {}, not a number",
                excerpt(&other.to_string(), 40)
            )))
        }
    };
    let counts = whole_number(cell(row, 1))
        .zip(whole_number(cell(row, 2)))
        .map(|(matching, total)| Counts { matching, total });
    Ok(Sample::Value { value, counts })
}

#[async_trait]
impl MetricProvider for BigQuery {
    async fn sample(&self, query: &Query) -> Result<Sample, ProviderError> {
        let Query::Bigquery {
            project,
            sql,
            maximum_bytes_billed,
            timeout,
        } = query
        else {
            return Err(ProviderError::Rejected {
                provider: PROVIDER,
                message: "not a bigquery query".into(),
            });
        };
        let client = self.client().await?;
        let wait_ms = u32::try_from(timeout.min(&Duration::from_secs(60)).as_millis())
            .unwrap_or(60_000)
            .max(1);
        let request = QueryRequest::new()
            .set_query(sql.clone())
            .set_use_legacy_sql(false)
            .set_maximum_bytes_billed(i64::try_from(*maximum_bytes_billed).unwrap_or(i64::MAX));
        let rows = query_rows(client, project, request, wait_ms).await?;
        sample_of_rows(&rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(value: Value) -> Vec<serde_json::Map<String, Value>> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn reads_the_first_cell_and_the_counts_behind_it() {
        let sample = sample_of_rows(&rows(
            json!([{"f": [{"v": "44.2"}, {"v": "442"}, {"v": "1000"}]}]),
        ))
        .unwrap();
        assert_eq!(
            sample,
            Sample::Value {
                value: 44.2,
                counts: Some(Counts {
                    matching: 442,
                    total: 1000
                })
            }
        );
        assert_eq!(
            sample_of_rows(&rows(json!([{"f": [{"v": "5"}]}]))).unwrap(),
            Sample::value(5.0)
        );
        assert!(matches!(
            sample_of_rows(&rows(json!([{"f": [{"v": null}]}]))).unwrap(),
            Sample::NoData { .. }
        ));
        assert!(matches!(
            sample_of_rows(&[]).unwrap(),
            Sample::NoData { .. }
        ));
        assert!(sample_of_rows(&rows(json!([{"f": [{"v": "abc"}]}]))).is_err());
        assert!(sample_of_rows(&rows(json!([{"x": 1}]))).is_err());
    }
}
