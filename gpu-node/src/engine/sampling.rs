//! Picking the next token from logits: penalties, temperature, top-k, top-p, seeded RNG.

use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::HashMap;

/// Sampling settings of one request (already validated).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus mass in (0, 1].
    pub top_p: f32,
    /// 0 means no top-k cut.
    pub top_k: usize,
    /// Subtracted once from every token already generated.
    pub presence_penalty: f32,
    /// Subtracted per occurrence from tokens already generated.
    pub frequency_penalty: f32,
    /// RNG seed; `None` draws one.
    pub seed: Option<u64>,
    /// Added to the logits of these token ids before anything else (OpenAI's
    /// `logit_bias`, -100..=100).
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
            logit_bias: Vec::new(),
        }
    }
}

/// Per-sequence sampler state.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    counts: HashMap<u32, u32>,
}

impl Sampler {
    /// A sampler for one sequence.
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        Sampler {
            params,
            rng,
            counts: HashMap::new(),
        }
    }

    /// True when the next token is the argmax of the raw logits (greedy, no penalties):
    /// the engine then picks it on the device and copies only its id.
    pub fn is_greedy(&self) -> bool {
        let p = &self.params;
        p.temperature <= 1e-6
            && p.presence_penalty == 0.0
            && p.frequency_penalty == 0.0
            && p.logit_bias.is_empty()
    }

    /// Records a token picked elsewhere (on the device) for penalties.
    pub fn accept(&mut self, tok: u32) {
        *self.counts.entry(tok).or_default() += 1;
    }

    /// Picks a token from `logits` (modified in place) and remembers it for penalties.
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        let p = &self.params;
        for &(tok, b) in &p.logit_bias {
            if let Some(l) = logits.get_mut(tok as usize) {
                *l += b;
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&tok, &c) in &self.counts {
                if let Some(l) = logits.get_mut(tok as usize) {
                    *l -= p.presence_penalty + p.frequency_penalty * c as f32;
                }
            }
        }
        let tok = if p.temperature <= 1e-6 {
            argmax(logits)
        } else {
            self.draw(logits)
        };
        *self.counts.entry(tok).or_default() += 1;
        tok
    }

    fn draw(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        let mut idx: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as u32, l / p.temperature))
            .collect();
        if idx.is_empty() {
            return 0;
        }
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
        let total: f32 = probs.iter().sum();
        let mut r = self.rng.random::<f32>() * total;
        for (i, &x) in probs.iter().enumerate() {
            if r < x {
                return idx[i].0;
            }
            r -= x;
        }
        idx[probs.len() - 1].0
    }
}

/// Index of the largest value (the first one on ties, like `torch.argmax`).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// The `k` largest values with their indices, largest first (ties: lower id first).
pub fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    if k == 0 {
        return Vec::new();
    }
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let cmp = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    let k = k.min(idx.len());
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (i, row[i as usize])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_penalties() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&mut [0.0, 3.0, 2.9]), 1);
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            presence_penalty: 1.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&mut [0.0, 3.0, 2.9]), 1);
        assert_eq!(s.sample(&mut [0.0, 3.0, 2.9]), 2);
    }

    #[test]
    fn seeded_sampling_repeats_and_respects_top_k() {
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 2,
            seed: Some(7),
            ..Default::default()
        };
        let logits = [1.0, 1.1, 0.9, -5.0, 1.05];
        let run = || {
            let mut s = Sampler::new(params.clone());
            (0..50)
                .map(|_| s.sample(&mut logits.clone()))
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        assert!(a.iter().all(|&t| t == 1 || t == 4), "{a:?}");
    }

    #[test]
    fn top_p_keeps_the_head() {
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            seed: Some(1),
            ..Default::default()
        };
        let mut s = Sampler::new(params);
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [10.0, 0.0, 0.0]), 0);
        }
    }
}
