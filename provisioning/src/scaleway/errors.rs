//! Maps the Instance API's answers to typed `ProviderError`s (from the status and the
//! body's `type`, never from the human message except Scaleway's "out of stock").

use std::time::Duration;

use super::model::ErrorBody;
use crate::ProviderError;

/// The typed error for a non-success answer.
pub(crate) fn map_error(
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
    what: &str,
) -> ProviderError {
    let parsed: ErrorBody = serde_json::from_str(body).unwrap_or_default();
    let text = if parsed.message.is_empty() {
        format!("{what}: HTTP {status}")
    } else {
        format!("{what}: {} ({})", parsed.message, parsed.kind)
    };
    let out_of_stock = parsed.kind == "out_of_stock"
        || parsed.message.to_ascii_lowercase().contains("out of stock");
    if out_of_stock {
        return ProviderError::Capacity(text);
    }
    match (status, parsed.kind.as_str()) {
        (429, _) | (_, "too_many_requests") | (_, "rate_limited") => ProviderError::RateLimited {
            retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
        },
        (401, _) | (_, "denied_authentication") | (_, "authorization_required") => {
            ProviderError::Auth(text)
        }
        (403, "quotas_exceeded") | (_, "quotas_exceeded") => ProviderError::Invalid(format!(
            "{text}: raise the project's quota in the Scaleway console or use another zone"
        )),
        (403, _) | (_, "permissions_denied") => ProviderError::Auth(format!(
            "{text}: the API key lacks InstancesFullAccess on this project"
        )),
        (404, _) | (_, "not_found") | (_, "unknown_resource") => ProviderError::NotFound(text),
        (409, "transient_state") | (_, "transient_state") => ProviderError::Transient(text),
        (s, _) if s >= 500 => ProviderError::Transient(text),
        (408, _) => ProviderError::Transient(text),
        _ => ProviderError::Invalid(text),
    }
}

/// A network-level failure (connect, timeout, reading the body).
pub(crate) fn network(what: &str, e: &reqwest12::Error) -> ProviderError {
    ProviderError::Transient(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_map_to_typed_errors() {
        let e = map_error(
            412,
            None,
            r#"{"type":"out_of_stock","message":"out of stock"}"#,
            "x",
        );
        assert!(matches!(e, ProviderError::Capacity(_)));
        let e = map_error(
            400,
            None,
            r#"{"type":"invalid_arguments","message":"bad"}"#,
            "x",
        );
        assert!(matches!(e, ProviderError::Invalid(_)));
        let e = map_error(404, None, r#"{"type":"not_found","message":"no"}"#, "x");
        assert!(matches!(e, ProviderError::NotFound(_)));
        let e = map_error(
            401,
            None,
            r#"{"type":"denied_authentication","message":"no"}"#,
            "x",
        );
        assert!(matches!(e, ProviderError::Auth(_)));
        let e = map_error(429, Some(Duration::from_secs(3)), "{}", "x");
        assert_eq!(
            e,
            ProviderError::RateLimited {
                retry_after: Duration::from_secs(3)
            }
        );
        let e = map_error(502, None, "<html>", "x");
        assert!(matches!(e, ProviderError::Transient(_)));
    }
}
