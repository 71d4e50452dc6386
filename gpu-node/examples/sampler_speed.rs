//! Host-side cost of drawing one token from a 49,152-logit row (SmolLM2's vocabulary) at
//! temperature 0.8, with the engine's `Sampler` and, as the baseline in the same run,
//! the method it replaced: sort the whole row, then walk the mass.
//!
//!     cargo run --release -p dayshift-node --example sampler_speed
//!
//! Prints microseconds per draw (median of 5 rounds of 2,000 draws) for no cut, top_p
//! 0.9 and top_k 50. Figures: gpu-node/README.md, "Cost of constrained decoding".

use dayshift_node::engine::sampling::{Sampler, SamplingParams};
use std::time::Instant;

const VOCAB: usize = 49_152;
const DRAWS: usize = 2_000;

/// The replaced method: a full sort of the row by logit, then top-k, top-p and the walk.
fn full_sort_draw(logits: &[f32], p: &SamplingParams, r: f32) -> u32 {
    let mut idx: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite())
        .map(|(i, &l)| (i as u32, l / p.temperature))
        .collect();
    idx.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if p.top_k > 0 && p.top_k < idx.len() {
        idx.truncate(p.top_k);
    }
    let max = idx[0].1;
    let mut probs: Vec<f32> = idx.iter().map(|(_, l)| (l - max).exp()).collect();
    let sum: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|x| *x /= sum);
    if p.top_p < 1.0 {
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (i, &x) in probs.iter().enumerate() {
            cum += x;
            if cum >= p.top_p {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
    }
    let mut r = r * probs.iter().sum::<f32>();
    for (i, &x) in probs.iter().enumerate() {
        if r < x {
            return idx[i].0;
        }
        r -= x;
    }
    idx[probs.len() - 1].0
}

/// A logits row shaped like a language model's: a few strong candidates, a long tail.
fn row(seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..VOCAB)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let u = (x as f32) / (u32::MAX as f32);
            if i % 997 == 0 {
                8.0 + 4.0 * u
            } else {
                6.0 * u - 3.0
            }
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rows: Vec<Vec<f32>> = (0..16).map(row).collect();
    println!("one draw from a {VOCAB}-logit row, temperature 0.8 (µs, median of 5 × {DRAWS})");
    for (name, top_p, top_k) in [
        ("no cut", 1.0, 0),
        ("top_p 0.9", 0.9, 0),
        ("top_k 50", 1.0, 50),
    ] {
        let p = SamplingParams {
            temperature: 0.8,
            top_p,
            top_k,
            seed: Some(1),
            ..Default::default()
        };
        let (mut base, mut ours) = (Vec::new(), Vec::new());
        let mut sink = 0u64;
        for _ in 0..5 {
            let t = Instant::now();
            for i in 0..DRAWS {
                let r = rows[i % rows.len()].clone(); // as the Sampler's loop does
                sink += u64::from(full_sort_draw(&r, &p, 0.37));
            }
            base.push(t.elapsed().as_secs_f64() * 1e6 / DRAWS as f64);
            let mut s = Sampler::new(p.clone());
            let t = Instant::now();
            for i in 0..DRAWS {
                let mut r = rows[i % rows.len()].clone();
                sink += u64::from(s.sample(&mut r));
            }
            ours.push(t.elapsed().as_secs_f64() * 1e6 / DRAWS as f64);
        }
        let (b, o) = (median(base), median(ours));
        println!(
            "  {name:10}  full sort {b:8.1}   Sampler {o:8.1}   speed-up {:.1}x   ({sink})",
            b / o
        );
    }
}
