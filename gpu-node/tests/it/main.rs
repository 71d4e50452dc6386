//! The integration tests of `dayshift-node`, one binary (`cargo test -p dayshift-node --test it`):
//! each file of this folder is a module; a new test file is one more `mod` line here
//! (see tests/README.md, "Adding a test").

mod agent_drain;
mod arch_reference;
mod bad_requests;
mod chat_api;
mod common;
mod concurrency;
mod embeddings;
mod fit;
mod gguf_gemma3;
mod gguf_quant;
mod gguf_quantize;
mod gguf_smollm2;
mod mirror;
mod openai_client;
mod reference;
mod start_checks;
mod tokenizers_reference;
