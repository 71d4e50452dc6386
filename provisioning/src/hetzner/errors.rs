//! Maps Hetzner API error responses onto typed `ProviderError`s.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest12::StatusCode;
use reqwest12::header::HeaderMap;

use crate::ProviderError;

/// Delay used when a 429 carries no usable header (Hetzner refills one request per second).
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(1);

/// Maps an error response (status, headers, body) to a typed error.
pub(crate) fn map_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    what: &str,
) -> ProviderError {
    let parsed: Option<hcloud::models::ErrorResponse> = serde_json::from_str(body).ok();
    let (code, message) = match &parsed {
        Some(r) => (r.error.code.as_str(), r.error.message.as_str()),
        None => ("", body),
    };
    let detail = format!("{what}: {code} ({status}): {message}");
    match code {
        "rate_limit_exceeded" => rate_limited(headers),
        "resource_unavailable" | "placement_error" => ProviderError::Capacity(detail),
        "unauthorized" | "forbidden" | "token_readonly" => ProviderError::Auth(detail),
        "not_found" => ProviderError::NotFound(detail),
        "invalid_input"
        | "json_error"
        | "uniqueness_error"
        | "resource_limit_exceeded"
        | "protected"
        | "unsupported_error"
        | "invalid_server_type" => ProviderError::Invalid(detail),
        "service_error" | "maintenance" | "unavailable" | "timeout" | "locked" | "conflict"
        | "server_error" => ProviderError::Transient(detail),
        _ => by_status(status, headers, detail),
    }
}

fn by_status(status: StatusCode, headers: &HeaderMap, detail: String) -> ProviderError {
    match status.as_u16() {
        429 => rate_limited(headers),
        401 | 403 => ProviderError::Auth(detail),
        404 => ProviderError::NotFound(detail),
        408 | 409 | 423 | 500..=599 => ProviderError::Transient(detail),
        _ => ProviderError::Invalid(detail),
    }
}

/// Reads `Retry-After` or `RateLimit-Reset` into a wait.
pub(crate) fn rate_limited(headers: &HeaderMap) -> ProviderError {
    ProviderError::RateLimited {
        retry_after: retry_after(headers).unwrap_or(DEFAULT_RATE_LIMIT_WAIT),
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The wait a response asks for, if any header says so: `Retry-After`, else the time
/// until one request is back in the budget. Hetzner refills the budget linearly, and
/// `RateLimit-Reset` is when it is full again, so one request takes
/// `(reset - now) / (limit - remaining)`.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(secs) = header_u64(headers, "retry-after") {
        return Some(Duration::from_secs(secs));
    }
    let reset = header_u64(headers, "ratelimit-reset")?;
    let limit = header_u64(headers, "ratelimit-limit").unwrap_or(1).max(1);
    let remaining = header_u64(headers, "ratelimit-remaining")
        .unwrap_or(0)
        .min(limit);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let until_full = (reset as f64 - now).max(0.0);
    let per_request = until_full / (limit - remaining).max(1) as f64;
    Some(Duration::from_secs_f64(
        per_request.max(MIN_RATE_LIMIT_WAIT),
    ))
}

/// Shortest wait taken for a rate limit (the reset header has one-second resolution).
const MIN_RATE_LIMIT_WAIT: f64 = 0.05;

/// True when the response says no request is left in the current window.
pub(crate) fn budget_exhausted(headers: &HeaderMap) -> bool {
    header_u64(headers, "ratelimit-remaining") == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: &str) -> String {
        format!(r#"{{"error":{{"code":"{code}","message":"m","details":{{}}}}}}"#)
    }

    #[test]
    fn codes_map_to_typed_errors() {
        let h = HeaderMap::new();
        let s = StatusCode::BAD_REQUEST;
        assert!(matches!(
            map_error(s, &h, &body("resource_unavailable"), "x"),
            ProviderError::Capacity(_)
        ));
        assert!(matches!(
            map_error(s, &h, &body("uniqueness_error"), "x"),
            ProviderError::Invalid(_)
        ));
        assert!(matches!(
            map_error(s, &h, &body("not_found"), "x"),
            ProviderError::NotFound(_)
        ));
        assert!(matches!(
            map_error(s, &h, &body("unauthorized"), "x"),
            ProviderError::Auth(_)
        ));
        assert!(matches!(
            map_error(s, &h, &body("service_error"), "x"),
            ProviderError::Transient(_)
        ));
        assert!(matches!(
            map_error(StatusCode::BAD_GATEWAY, &h, "<html>", "x"),
            ProviderError::Transient(_)
        ));
    }

    #[test]
    fn rate_limit_reads_the_reset_header() {
        let mut h = HeaderMap::new();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        h.insert("RateLimit-Reset", (now + 7).to_string().parse().unwrap());
        h.insert("RateLimit-Limit", "1".parse().unwrap());
        h.insert("RateLimit-Remaining", "0".parse().unwrap());
        let e = map_error(
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            &body("rate_limit_exceeded"),
            "x",
        );
        match e {
            ProviderError::RateLimited { retry_after } => {
                assert!(
                    retry_after >= Duration::from_secs(6) && retry_after <= Duration::from_secs(8)
                )
            }
            other => panic!("{other:?}"),
        }
        // A big budget refills one request in (reset - now) / limit.
        h.insert("RateLimit-Limit", "3600".parse().unwrap());
        h.insert("RateLimit-Reset", (now + 3600).to_string().parse().unwrap());
        let wait = retry_after(&h).unwrap();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_millis(1001),
            "{wait:?}"
        );
        h.insert("Retry-After", "30".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(30)));
    }
}
