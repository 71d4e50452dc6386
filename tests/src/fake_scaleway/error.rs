//! Scaleway-shaped error bodies: `{"type": "...", "message": "...", ...}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An API error as the Instance API sends it.
#[derive(Debug, Clone)]
pub struct ScwError {
    /// HTTP status.
    pub status: StatusCode,
    /// The whole body (always has `type` and `message`).
    pub body: Value,
    /// `Retry-After` seconds, for 429.
    pub retry_after: Option<u64>,
}

impl ScwError {
    fn new(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body,
            retry_after: None,
        }
    }

    /// `404 not_found` for one resource (`instance_server`, `instance_ip`, …).
    pub fn not_found(resource: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            json!({"type": "not_found", "message": "resource is not found", "resource": resource, "resource_id": id}),
        )
    }

    /// `400 invalid_arguments` naming the argument.
    pub fn invalid(argument: &str, help: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            json!({"type": "invalid_arguments", "message": "invalid argument(s)",
                   "details": [{"argument_name": argument, "reason": "constraint", "help_message": help.into()}]}),
        )
    }

    /// `400 invalid_request_error` (the Instance API's older shape, e.g. a bad action).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            json!({"type": "invalid_request_error", "message": message.into()}),
        )
    }

    /// `412 out_of_stock`: no capacity for this commercial type in the zone.
    pub fn out_of_stock(commercial_type: &str) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            json!({"type": "out_of_stock", "message": "out of stock", "resource": commercial_type}),
        )
    }

    /// `401 denied_authentication`.
    pub fn denied() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            json!({"type": "denied_authentication", "message": "invalid authentication", "method": "api_key", "reason": "invalid_argument"}),
        )
    }

    /// `429 too_many_requests` with `Retry-After`.
    pub fn rate_limited(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"type": "too_many_requests", "message": "too many requests"}),
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// A 5xx: `500 internal_error`-like JSON, or a load balancer's HTML page for 502/504.
    pub fn server_error(status: u16) -> Response {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        match status {
            502 | 504 => (
                code,
                axum::response::Html("<html><body><h1>502 Bad Gateway</h1></body></html>"),
            )
                .into_response(),
            _ => Self::new(
                code,
                json!({"type": "unknown_error", "message": "internal error, please retry"}),
            )
            .into_response(),
        }
    }
}

impl IntoResponse for ScwError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body)).into_response();
        if let Some(secs) = self
            .retry_after
            .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
        {
            resp.headers_mut().insert("Retry-After", secs);
        }
        resp
    }
}

/// A request body decoded as `T`, or the API's `400` for an undecodable one.
pub fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ScwError> {
    serde_json::from_slice(body)
        .map_err(|e| ScwError::bad_request(format!("cannot decode the request body: {e}")))
}

/// A request body that must be a JSON object (read field by field by its handler).
pub fn body_object(body: &[u8]) -> Result<Value, ScwError> {
    let v: Value = decode_body(body)?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(ScwError::bad_request(
            "the request body must be a JSON object",
        ))
    }
}
