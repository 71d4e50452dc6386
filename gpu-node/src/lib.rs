//! `dayshift-node`: an OpenAI-compatible inference server on candle with continuous
//! batching, that registers with the dayshift ingress.

pub mod agent;
pub mod api;
pub mod device;
pub mod engine;
pub mod metrics;
pub mod model;
pub mod server;
pub mod source;
pub mod testmodel;
pub mod tls;
