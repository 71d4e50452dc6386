//! A fixed, fast OpenAI-shaped upstream for `bench/gateway`: answers
//! `/v1/chat/completions` at once (JSON), or as an SSE stream of `CHUNKS` chunks
//! `CHUNK_MS` apart when the request says `"stream": true`.
//!
//! `cargo run --release -p dayshift --example bench_upstream -- 127.0.0.1:18080`

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

const ANSWER: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"Paris is the capital of France."},"finish_reason":"stop","logprobs":null}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn chat(body: Bytes) -> Response {
    let stream = memchr(&body, b"\"stream\":true") || memchr(&body, b"\"stream\": true");
    if !stream {
        let mut r = ANSWER.into_response();
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        return r;
    }
    let chunks = env_u64("CHUNKS", 10);
    let gap = Duration::from_millis(env_u64("CHUNK_MS", 20));
    let s = futures_util::stream::unfold(0u64, move |i| async move {
        if i > chunks {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        let data = if i == chunks {
            "data: [DONE]\n\n".to_string()
        } else {
            format!(
                "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"bench\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\"finish_reason\":null}}]}}\n\n"
            )
        };
        Some((Ok::<_, Infallible>(Bytes::from(data)), i + 1))
    });
    let mut r = Response::new(Body::from_stream(s));
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    r
}

fn memchr(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18080".into());
    let app = Router::new().route("/v1/chat/completions", post(chat));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("bench upstream on {addr}");
    axum::serve(listener, app).await?;
    Ok(())
}
