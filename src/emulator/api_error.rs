//! Google API errors as the emulator answers them: the canonical gRPC status (`NOT_FOUND`,
//! `ABORTED`, ...), its HTTP status, and the JSON body
//! `{"error":{"code":404,"message":"...","status":"NOT_FOUND"}}` that Google's clients parse.
//!
//! Google's Rust client maps an error by the `status` string of that body, so every refusal of
//! the emulator goes through [`ApiError`] and nothing else.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};

/// The canonical error codes the emulator uses (a subset of `google.rpc.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    /// The request is malformed or a field has an invalid value (3, HTTP 400).
    InvalidArgument,
    /// The system is not in a state where the operation can proceed (9, HTTP 400).
    FailedPrecondition,
    /// The resource does not exist (5, HTTP 404).
    NotFound,
    /// The resource already exists (6, HTTP 409).
    AlreadyExists,
    /// A concurrency conflict, e.g. a stale `etag` (10, HTTP 409).
    Aborted,
    /// Quota or rate limit exceeded (8, HTTP 429).
    ResourceExhausted,
    /// The method is not implemented by the emulator (12, HTTP 501).
    Unimplemented,
    /// The emulator failed (13, HTTP 500).
    Internal,
    /// Transient unavailability (14, HTTP 503).
    Unavailable,
}

impl Code {
    /// The numeric `google.rpc.Code`, used in `google.rpc.Status` (operation errors).
    pub fn rpc_code(self) -> i32 {
        match self {
            Code::InvalidArgument => 3,
            Code::NotFound => 5,
            Code::AlreadyExists => 6,
            Code::ResourceExhausted => 8,
            Code::FailedPrecondition => 9,
            Code::Aborted => 10,
            Code::Unimplemented => 12,
            Code::Internal => 13,
            Code::Unavailable => 14,
        }
    }

    /// The HTTP status Google's REST front end uses for this code.
    pub fn http_status(self) -> u16 {
        match self {
            Code::InvalidArgument | Code::FailedPrecondition => 400,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::ResourceExhausted => 429,
            Code::Unimplemented => 501,
            Code::Internal => 500,
            Code::Unavailable => 503,
        }
    }

    /// The status string, e.g. `NOT_FOUND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::Aborted => "ABORTED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
        }
    }
}

/// A refused request: the code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    /// The canonical code.
    pub code: Code,
    /// What went wrong, naming the resource or field.
    pub message: String,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `INVALID_ARGUMENT`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// `NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    /// `INTERNAL`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }

    /// The `google.rpc.Status` JSON used inside a failed long-running operation.
    pub fn rpc_status(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.code.rpc_code(), "message": self.message })
    }

    /// The HTTP error body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "code": self.code.http_status(),
                "message": self.message,
                "status": self.code.as_str(),
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_google_shape() {
        let error = ApiError::new(Code::Aborted, "etag mismatch");
        assert_eq!(
            error.body(),
            serde_json::json!({"error": {"code": 409, "message": "etag mismatch", "status": "ABORTED"}})
        );
        assert_eq!(error.rpc_status()["code"], 10);
    }
}
