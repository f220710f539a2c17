//! How the Cloud Run client's errors read as [`PlatformError`]s: by Google's structured reason,
//! gRPC status or HTTP status, every message naming the endpoint with the remote text shortened
//! and escaped, and whether the call may be retried decided by the variant chosen here.

use google_cloud_gax::error::rpc::Code;

use crate::{platform::PlatformError, untrusted::remote_message};

/// Maps the client's errors onto [`PlatformError`], by gRPC status or HTTP status.
///
/// Every message names `endpoint` and shows the remote text shortened and escaped (a 1 MB 403
/// body or a proxy's HTML page used to be printed whole, once per retry). An answer that could
/// not be decoded is [`PlatformError::Malformed`]: not "unavailable", and not retried.
pub(super) fn map_error(
    endpoint: &str,
    subject: &str,
    error: google_cloud_run_v2::Error,
) -> PlatformError {
    if error.is_deserialization() {
        return PlatformError::Malformed(format!(
            "`{endpoint}`: {}",
            remote_message(&error.to_string())
        ));
    }
    // No request path could be built: a name from an answer (an operation called
    // `../../../etc/passwd`) is not a valid resource name. Retrying builds the same nothing;
    // it used to be retried as "unavailable" for minutes.
    if error.is_binding() {
        return PlatformError::Malformed(format!(
            "`{endpoint}`: a name in the answer is not a valid resource name ({})",
            remote_message(&error.to_string())
        ));
    }
    // Google's structured reasons first: a disabled API, a missing permission or scope, a
    // quota — one line with the fix, and permanent ones never retried.
    if let Some(explained) = error.status().and_then(crate::google_errors::explain) {
        use crate::google_errors::Disposition;
        let message = format!("`{endpoint}`: {}", explained.line);
        return match explained.disposition {
            Disposition::Denied => PlatformError::PermissionDenied(message),
            Disposition::Refused => PlatformError::Refused(message),
            Disposition::Throttled => PlatformError::Throttled {
                message,
                retry_after: explained
                    .retry_after
                    .or_else(|| crate::google_errors::asked_wait(&error)),
            },
        };
    }
    let remote = error
        .status()
        .map(|status| status.message.clone())
        .filter(|message| !message.is_empty())
        .or_else(|| {
            let code = error.http_status_code()?;
            let payload = error.http_payload()?;
            Some(format!("HTTP {code}: {}", String::from_utf8_lossy(payload)))
        })
        .unwrap_or_else(|| error.to_string());
    let message = format!("`{endpoint}`: {}", remote_message(&remote));
    let throttled = error.http_status_code() == Some(429)
        || error
            .status()
            .is_some_and(|status| status.code == Code::ResourceExhausted);
    if throttled {
        return PlatformError::Throttled {
            message,
            retry_after: crate::google_errors::asked_wait(&error),
        };
    }
    if let Some(status) = error.status() {
        return match status.code {
            Code::NotFound => PlatformError::NotFound(subject.to_string()),
            Code::Aborted | Code::FailedPrecondition => {
                PlatformError::Conflict(subject.to_string())
            }
            Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded => {
                PlatformError::Unavailable(message)
            }
            Code::PermissionDenied | Code::Unauthenticated => {
                PlatformError::PermissionDenied(message)
            }
            Code::Internal | Code::Unknown => PlatformError::Unavailable(message),
            _ => PlatformError::Refused(message),
        };
    }
    match error.http_status_code() {
        Some(404) => PlatformError::NotFound(subject.to_string()),
        Some(409) => PlatformError::Conflict(subject.to_string()),
        Some(401 | 403) => PlatformError::PermissionDenied(message),
        Some(400 | 422) => PlatformError::Refused(message),
        // Connection errors, timeouts, 5xx, 429: the request may or may not have landed.
        _ => PlatformError::Unavailable(message),
    }
}
