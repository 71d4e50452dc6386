//! List answers as the Instance API sends them: `page` (from 1) and `per_page` (1..=100,
//! default 50), the page's items under their key with `total_count`, and the total again in
//! the `X-Total-Count` header. A page past the end is empty (the SDKs stop there).

use axum::Json;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ScwError;

/// The first value of query parameter `key`.
pub fn query_value(q: &[(String, String)], key: &str) -> Option<String> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

/// The `tags` filter of a list query (comma-separated; empty parts ignored).
pub fn query_tags(q: &[(String, String)]) -> Vec<String> {
    query_value(q, "tags")
        .map(|t| {
            t.split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Reads `page` and `per_page` from the query.
pub fn page_params(q: &[(String, String)]) -> Result<(usize, usize), ScwError> {
    let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let per_page: usize = match get("per_page") {
        None => 50,
        Some(v) => v
            .parse()
            .map_err(|_| ScwError::invalid("per_page", "must be an integer"))?,
    };
    if per_page == 0 || per_page > 100 {
        return Err(ScwError::invalid("per_page", "must be between 1 and 100"));
    }
    let page: usize = match get("page") {
        None => 1,
        Some(v) => v
            .parse()
            .map_err(|_| ScwError::invalid("page", "must be an integer"))?,
    };
    if page == 0 {
        return Err(ScwError::invalid("page", "must be at least 1"));
    }
    Ok((page, per_page))
}

/// One page of `items` under `key`, with `total_count` and `X-Total-Count`.
pub fn paged(key: &str, items: Vec<Value>, q: &[(String, String)]) -> Result<Response, ScwError> {
    let (page, per_page) = page_params(q)?;
    let total = items.len();
    let items: Vec<Value> = items
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&total.to_string()) {
        headers.insert("X-Total-Count", v);
    }
    Ok((headers, Json(json!({ key: items, "total_count": total }))).into_response())
}
