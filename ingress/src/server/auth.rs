//! Who may call what: the bearer token of a request, checked as an API key (gateway),
//! the admin token (admin API), a node's join token (model mirror, registration) or its
//! session token (heartbeats, goodbye). Secrets are compared by their sha256 only.

use axum::http::{HeaderMap, header};

use super::errors::ApiError;
use super::state::SharedState;
use crate::store::{ApiKey, hash_secret};

/// Reads the bearer token of a request.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        let t = token.trim();
        (!t.is_empty()).then_some(t)
    } else {
        None
    }
}

/// Checks the API key of a request.
pub async fn authenticate(state: &SharedState, headers: &HeaderMap) -> Result<ApiKey, ApiError> {
    let Some(secret) = bearer(headers) else {
        return Err(ApiError::unauthorized(
            "missing API key: send it as `Authorization: Bearer <key>`",
        ));
    };
    match state.keys.check(secret).await? {
        Some(k) => Ok(k),
        None => Err(ApiError::unauthorized(
            "incorrect or revoked API key; ask the operator for a key (`dayshift keys create`)",
        )),
    }
}

/// Checks the admin token of a request.
pub fn admin(state: &SharedState, headers: &HeaderMap) -> Result<(), ApiError> {
    match bearer(headers) {
        Some(t) if hash_secret(t) == state.admin_token_hash => Ok(()),
        _ => Err(ApiError::unauthorized(
            "the admin API needs the admin token (`<state_dir>/admin-token` or DAYSHIFT_ADMIN_TOKEN)",
        )),
    }
}
