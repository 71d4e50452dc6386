//! Who may use the node's API: only the ingress the node registered with.
//!
//! A node with an ingress draws a random token at start ([`NodeAccess::generate`]),
//! sends it in its registration and keeps only its sha256 here; every request but
//! `GET /health` must carry `Authorization: Bearer <token>`, else it is answered `401`
//! (before its body is read) and counted in `dayshift_node_unauthorized_requests_total`.
//! A standalone node (no `ingress_url`: benchmarks, local trials) is open
//! ([`NodeAccess::Open`]) and says so in its log at start.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dayshift_config::protocol::Secret;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::AppState;
use super::error::ApiError;

/// The path that answers without the credential (state only, no model or load figures).
pub const HEALTH_PATH: &str = "/health";

/// The node API's access rule.
#[derive(Clone)]
pub enum NodeAccess {
    /// Anyone who reaches the port (standalone node, no ingress).
    Open,
    /// Only requests bearing the token whose sha256 this is.
    Bearer([u8; 32]),
}

impl NodeAccess {
    /// A fresh token (64 hex digits, 256 random bits) and the rule that admits it.
    pub fn generate() -> (Secret, NodeAccess) {
        use rand::Rng;
        let bytes: [u8; 32] = rand::rng().random();
        let token = Secret::new(hex_lower(&bytes));
        let rule = NodeAccess::for_token(&token);
        (token, rule)
    }

    /// The rule that admits exactly `token`.
    pub fn for_token(token: &Secret) -> NodeAccess {
        NodeAccess::Bearer(Sha256::digest(token.expose().as_bytes()).into())
    }

    /// Whether a request with this `Authorization` header value may pass.
    pub fn admits(&self, authorization: Option<&HeaderValue>) -> bool {
        let NodeAccess::Bearer(want) = self else {
            return true;
        };
        let Some(token) = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let got: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        // Compare every byte whatever the first difference (no timing hint).
        got.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Middleware: refuses requests without the ingress's credential (all paths but
/// [`HEALTH_PATH`]) with `401` and counts them.
pub async fn require_ingress(
    State(app): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if req.uri().path() == HEALTH_PATH
        || app.access.admits(req.headers().get(header::AUTHORIZATION))
    {
        return next.run(req).await;
    }
    app.metrics.unauthorized.fetch_add(1, Relaxed);
    let mut resp = ApiError {
        status: axum::http::StatusCode::UNAUTHORIZED,
        message: "this node serves only its ingress: send your request to the dayshift \
                  endpoint (with your API key), not to the node"
            .into(),
        kind: "invalid_request_error",
        param: None,
        code: Some("node_credential_required"),
    }
    .into_response();
    let h = resp.headers_mut();
    h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    // The body was not read: the connection cannot carry another request.
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_only_the_token() {
        let (token, rule) = NodeAccess::generate();
        assert_eq!(token.expose().len(), 64);
        let ok = HeaderValue::from_str(&format!("Bearer {}", token.expose())).unwrap();
        assert!(rule.admits(Some(&ok)));
        assert!(!rule.admits(None));
        assert!(!rule.admits(Some(&HeaderValue::from_static("Bearer nope"))));
        assert!(!rule.admits(Some(&HeaderValue::from_str(token.expose()).unwrap())));
        let (other, _) = NodeAccess::generate();
        assert_ne!(token, other);
        assert!(NodeAccess::Open.admits(None));
    }
}
