//! Greedy decode steps launched before the previous step's tokens are on the host.
//!
//! At batch 1 a decode step through a CUDA graph keeps the GPU busy for about a
//! millisecond, but between two steps the host waits for the picked token, copies it
//! back, detokenizes and sends it, then uploads the next step's indices and launches the
//! graph: tens of µs in which the GPU idles. With the token ids kept on the device, the
//! engine launches step N + 1 (its ids read from step N's greedy pick on the device)
//! before it reads step N's tokens, so that host work overlaps the GPU's.
//!
//! Where no decode graph can take the step (CPU, eager CUDA, a batch larger than every
//! bucket) the same API runs the step eagerly, with the previous step's ids read back
//! first: the same tokens, without the overlap.

use super::llama::{BatchItem, KvCache, Llama, WantLogits};
use candle_core::{Result, Tensor};

/// Where a greedy decode step's input token ids come from.
pub enum DecodeIds<'a> {
    /// Token ids on the host, one per row.
    Host(&'a [u32]),
    /// The greedy picks of an earlier step over the same rows, still on the device.
    Previous(&'a GreedyStep),
}

/// A greedy decode step launched on the device: its picks (one per row, in row order)
/// are read with [`GreedyStep::tokens`].
pub struct GreedyStep {
    /// The picks `[rows]` (u32) on the model's device.
    ids: Tensor,
    /// Rows.
    rows: usize,
    /// On CUDA: the page-locked host buffer the picks are being copied into.
    #[cfg(feature = "cuda")]
    fetch: Option<super::cuda_graph::PickFetch>,
}

impl GreedyStep {
    /// The picks on the device (a later step's input ids).
    #[cfg(feature = "cuda")]
    pub(crate) fn ids(&self) -> &Tensor {
        &self.ids
    }

    /// Waits for the step and returns its picks, one per row. Steps launched after this
    /// one keep running meanwhile.
    pub fn tokens(self, kv: &mut KvCache) -> Result<Vec<u32>> {
        #[cfg(feature = "cuda")]
        if let Some(f) = self.fetch {
            return super::cuda_graph::finish_fetch(kv, f, self.rows);
        }
        let _ = kv;
        self.ids.to_vec1::<u32>()
    }
}

/// Whether greedy steps chain on the device over `kv` (decode graphs were captured), so
/// that launching one before reading the previous one's tokens overlaps host and GPU.
pub fn chains_on_device(kv: &KvCache) -> bool {
    #[cfg(feature = "cuda")]
    if kv.graphs.is_some() {
        return true;
    }
    let _ = kv;
    false
}

impl Llama {
    /// Launches one greedy decode step: row `r` runs token `ids[r]` of the sequence in
    /// slot `rows[r].0` at position `rows[r].1` and picks the argmax of its logits. The
    /// rows of a [`DecodeIds::Previous`] step must be this step's rows, one position
    /// earlier. On CUDA with decode graphs the call returns once the step is enqueued.
    pub fn launch_greedy(
        &self,
        kv: &mut KvCache,
        rows: &[(usize, usize)],
        ids: DecodeIds<'_>,
    ) -> Result<GreedyStep> {
        if let DecodeIds::Previous(p) = &ids
            && p.rows != rows.len()
        {
            candle_core::bail!(
                "a chained decode step of {} rows cannot take the picks of a step of {} rows",
                rows.len(),
                p.rows
            );
        }
        if let DecodeIds::Host(t) = &ids
            && t.len() != rows.len()
        {
            candle_core::bail!("{} token ids for {} decode rows", t.len(), rows.len());
        }
        #[cfg(feature = "cuda")]
        if let Some(step) = super::cuda_graph::replay_greedy(self, kv, rows, &ids)? {
            return Ok(step);
        }
        let host = match ids {
            DecodeIds::Host(t) => t.to_vec(),
            DecodeIds::Previous(p) => p.ids.to_vec1::<u32>()?,
        };
        let items: Vec<BatchItem<'_>> = rows
            .iter()
            .zip(&host)
            .map(|(&(slot, start), tok)| BatchItem {
                slot,
                start,
                tokens: std::slice::from_ref(tok),
                want: WantLogits::Last,
            })
            .collect();
        let Some(logits) = self.forward_batch(kv, &items)? else {
            candle_core::bail!("a decode step returned no logits");
        };
        Ok(GreedyStep::eager(
            super::decode_ops::argmax_rows(&logits)?,
            rows.len(),
        ))
    }
}

impl GreedyStep {
    /// A step whose picks `ids` are read back with a plain copy.
    fn eager(ids: Tensor, rows: usize) -> Self {
        GreedyStep {
            ids,
            rows,
            #[cfg(feature = "cuda")]
            fetch: None,
        }
    }

    /// A step whose picks are on their way into a page-locked buffer.
    #[cfg(feature = "cuda")]
    pub(crate) fn fetching(ids: Tensor, rows: usize, fetch: super::cuda_graph::PickFetch) -> Self {
        GreedyStep {
            ids,
            rows,
            fetch: Some(fetch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{self, LoadedModel};

    /// Prefills `prompts` into `slots` of a fresh cache.
    fn prefilled(m: &Llama, prompts: &[&[u32]], slots: &[usize]) -> KvCache {
        let mut kv = KvCache::new(m, 3, 32).unwrap();
        for (p, &slot) in prompts.iter().zip(slots) {
            let item = BatchItem {
                slot,
                start: 0,
                tokens: p,
                want: WantLogits::None,
            };
            m.forward_batch(&mut kv, &[item]).unwrap();
        }
        kv
    }

    /// Greedy steps chained on the previous step's picks (each launched before the
    /// previous one's tokens are read) give the tokens of steps fed from the host, on
    /// every family of the test model; a chained step over other rows is refused.
    #[test]
    fn chained_greedy_steps_match_steps_fed_from_the_host() {
        let prompts: [&[u32]; 2] = [&[5, 6, 7], &[9, 3]];
        let slots = [2usize, 0];
        let first = [11u32, 12];
        let rows_at = |k: usize| -> Vec<(usize, usize)> {
            slots
                .iter()
                .zip(&prompts)
                .map(|(&s, p)| (s, p.len() + k))
                .collect()
        };
        for f in crate::testmodel::Family::ALL {
            let dir = tempfile::tempdir().unwrap();
            crate::testmodel::make_test_model_family(dir.path(), f).unwrap();
            let LoadedModel::Generation(g) =
                model::load(dir.path(), None, &candle_core::Device::Cpu).unwrap()
            else {
                panic!("{f:?} must load as a generation model")
            };
            let m = &g.llama;
            // Every step from host ids.
            let mut kv = prefilled(m, &prompts, &slots);
            let mut ids = first.to_vec();
            let mut want = Vec::new();
            for k in 0..4 {
                let step = m
                    .launch_greedy(&mut kv, &rows_at(k), DecodeIds::Host(&ids))
                    .unwrap();
                ids = step.tokens(&mut kv).unwrap();
                want.push(ids.clone());
            }
            // Chained: step k + 1 is launched before step k's tokens are read.
            let mut kv = prefilled(m, &prompts, &slots);
            let mut prev = m
                .launch_greedy(&mut kv, &rows_at(0), DecodeIds::Host(&first))
                .unwrap();
            let mut got = Vec::new();
            for k in 1..4 {
                let next = m
                    .launch_greedy(&mut kv, &rows_at(k), DecodeIds::Previous(&prev))
                    .unwrap();
                got.push(prev.tokens(&mut kv).unwrap());
                prev = next;
            }
            got.push(prev.tokens(&mut kv).unwrap());
            assert_eq!(got, want, "{f:?}");
            let one = m
                .launch_greedy(&mut kv, &rows_at(4)[..1], DecodeIds::Host(&first[..1]))
                .unwrap();
            assert!(
                m.launch_greedy(&mut kv, &rows_at(5), DecodeIds::Previous(&one))
                    .is_err()
            );
        }
    }
}
