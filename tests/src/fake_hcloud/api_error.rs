//! Hetzner-shaped error responses: `{"error":{"code","message","details"}}`.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An API error as the real API sends it.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Hetzner error code, e.g. `not_found`.
    pub code: &'static str,
    /// Human message.
    pub message: String,
    /// Code-specific details.
    pub details: Value,
    /// Extra headers (rate limit).
    pub headers: HeaderMap,
}

impl ApiError {
    /// An error with empty details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: json!({}),
            headers: HeaderMap::new(),
        }
    }

    /// `404 not_found`.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// `400 invalid_input` naming the offending field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("invalid input in field '{field}'"),
        );
        e.details = json!({ "fields": [{ "name": field, "messages": [message] }] });
        e
    }

    /// `409 uniqueness_error` for a field.
    pub fn uniqueness(field: &str) -> Self {
        let mut e = Self::new(
            StatusCode::CONFLICT,
            "uniqueness_error",
            format!("{field} is already used"),
        );
        e.details = json!({ "fields": [{ "name": field }] });
        e
    }

    /// `429 rate_limit_exceeded`; the caller adds the `RateLimit-*` headers.
    pub fn rate_limited_bare() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            "limit of requests per hour reached",
        )
    }

    /// `429 rate_limit_exceeded` with the `RateLimit-*` headers.
    pub fn rate_limited(reset_unix: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            "limit of 3600 requests per hour reached",
        );
        e.headers
            .insert("RateLimit-Limit", HeaderValue::from_static("3600"));
        e.headers
            .insert("RateLimit-Remaining", HeaderValue::from_static("0"));
        if let Ok(v) = HeaderValue::from_str(&reset_unix.to_string()) {
            e.headers.insert("RateLimit-Reset", v);
        }
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message, "details": self.details } });
        let mut resp = (self.status, Json(body)).into_response();
        resp.headers_mut().extend(self.headers);
        resp
    }
}
