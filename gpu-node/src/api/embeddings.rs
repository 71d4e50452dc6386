//! `POST /v1/embeddings`: float or base64 vectors from the BERT encoder.

use super::error::{ApiError, from_value, parse_object};
use super::types::{EMBEDDING_KEYS, EmbeddingInput, EmbeddingRequest, check_known};
use super::{AppState, InFlight};
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;
use std::sync::Arc;

/// The handler.
pub async fn embeddings(State(app): State<Arc<AppState>>, body: Bytes) -> Response {
    let _g = InFlight::new(&app.metrics);
    match inner(&app, &body).await {
        Ok(r) => {
            app.metrics
                .requests_ok
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            r
        }
        Err(e) => app.fail(e),
    }
}

async fn inner(app: &Arc<AppState>, body: &[u8]) -> Result<Response, ApiError> {
    let v = parse_object(body)?;
    check_known(&v, EMBEDDING_KEYS, "/v1/embeddings")?;
    let req: EmbeddingRequest = from_value(v)?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(f) => {
            return Err(ApiError::invalid(
                Some("encoding_format"),
                format!("encoding_format {f:?} is not one of float, base64."),
            )
            .with_code("invalid_value"));
        }
    };
    let model = app.embedding(&req.model)?;
    if let Some(d) = req.dimensions
        && d != model.dims as i64
    {
        return Err(ApiError::invalid(
            Some("dimensions"),
            format!(
                "model `{}` gives {} dimensions; {d} cannot be produced: leave 'dimensions' out.",
                req.model, model.dims
            ),
        )
        .with_code("invalid_value"));
    }
    let texts = match EmbeddingInput::from_value(&req.input)? {
        EmbeddingInput::Text(t) => vec![t],
        EmbeddingInput::Texts(v) => v,
        EmbeddingInput::Tokens => {
            return Err(ApiError::invalid(
                Some("input"),
                "token-id input is not supported for this model: send text.",
            ));
        }
    };
    if texts.is_empty() {
        return Err(ApiError::invalid(
            Some("input"),
            "'input' is empty: send at least one string.",
        ));
    }
    if texts.len() > 2048 {
        return Err(ApiError::invalid(
            Some("input"),
            format!("{} inputs given: at most 2048 per request.", texts.len()),
        ));
    }
    if let Some(i) = texts.iter().position(|t| t.is_empty()) {
        return Err(ApiError::invalid(
            Some(&format!("input[{i}]")),
            "input strings must not be empty.",
        ));
    }
    let m = model.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<(Vec<Vec<f32>>, usize), ApiError> {
        let counts = m.count_tokens(&texts).map_err(ApiError::internal)?;
        if let Some((i, n)) = counts.iter().enumerate().find(|(_, n)| **n > m.max_tokens) {
            return Err(ApiError::invalid(
                Some(&format!("input[{i}]")),
                format!("This model's maximum input length is {} tokens; input {i} has {n}. Shorten or split it.", m.max_tokens),
            )
            .with_code("context_length_exceeded"));
        }
        let vecs = m.embed(&texts).map_err(ApiError::internal)?;
        Ok((vecs, counts.iter().sum()))
    })
    .await
    .map_err(|e| ApiError::internal(format!("embedding task failed: {e}")))??;
    let (vecs, tokens) = result;
    let data: Vec<_> = vecs
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let emb = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": emb})
        })
        .collect();
    Ok(axum::Json(json!({
        "object": "list", "data": data, "model": req.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response())
}
