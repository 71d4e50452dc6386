//! OpenAI-style error responses: `{"error":{"message","type","param","code"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dayshift_config::protocol::{ErrorBody, ErrorDetail};

/// An error answered to an API client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong and what to do.
    pub message: String,
    /// `invalid_request_error`, `server_error`, …
    pub kind: &'static str,
    /// The offending field.
    pub param: Option<String>,
    /// Machine-readable code.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400 invalid_request_error about `param`.
    pub fn invalid(param: Option<&str>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
        }
    }
    /// Sets the code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
    /// 404 for a model this node does not serve.
    pub fn unknown_model(model: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "The model `{model}` does not exist on this node: GET /v1/models lists the models it serves."
            ),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
        }
    }
    /// 503 while the node loads or drains.
    pub fn unavailable(message: impl Into<String>, code: &'static str) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "service_unavailable_error",
            param: None,
            code: Some(code),
        }
    }
    /// 500 for a failure inside the node.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }
    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: self.kind.to_string(),
                param: self.param.clone(),
                code: self.code.map(str::to_string),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, "request failed: {}", self.message);
        } else {
            tracing::debug!(status = %self.status, "bad request: {}", self.message);
        }
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// Parses a JSON body into `T`, naming the offending field on failure.
pub fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    from_value(parse_object(bytes)?)
}

/// Reads `T` from an already parsed JSON object, naming the offending field on failure.
pub fn from_value<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        let inner = inner.split(" at line ").next().unwrap_or_default();
        match path.as_str() {
            "." => ApiError::invalid(None, format!("Invalid request: {inner}.")),
            p => ApiError::invalid(Some(p), format!("Invalid value for '{p}': {inner}.")),
        }
    })
}

/// Parses a body that must be a JSON object.
pub fn parse_object(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::invalid(
            None,
            format!("We could not parse the JSON body of your request ({e}). Send a JSON object with Content-Type: application/json."),
        )
    })?;
    if !v.is_object() {
        return Err(ApiError::invalid(
            None,
            "The request body must be a JSON object.",
        ));
    }
    Ok(v)
}
