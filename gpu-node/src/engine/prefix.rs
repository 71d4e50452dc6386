//! Prompt prefix reuse across requests (`[engine] prefix_cache`, on by default).
//!
//! When a sequence leaves its KV slot, the slot keeps the keys and values of the tokens
//! the sequence fed (its prompt and the tokens it generated, but the last), and this
//! cache remembers which tokens those were. A new request whose prompt starts with the
//! same tokens is given that slot and prefills only the rest: a chat's next turn resends
//! the whole conversation, and apps send the same system prompt every time. Only slots
//! of the same **scope** are reused: the ingress sends the API key's id and the end
//! user's (`user`), which the node hashes, so one key's or user's prompts never speed
//! up, and so never reveal themselves to, another's requests. (A prompt start held by a
//! *running* sequence is copied into the new slot by the scheduler, `running_prefix`.)
//!
//! A reused slot's keys and values were computed in earlier steps of other batches: the
//! same arithmetic on the same tokens at the same positions, so the same values up to
//! the order of floating-point sums in a batched matrix product.

/// Fewest prompt tokens worth reusing a slot for: below it the request takes a slot as
/// without a match (a few template tokens such as `<|im_start|>system` would otherwise
/// steer every request to some other slot, widening the decode batch's slot range for
/// nothing).
pub const MIN_REUSE_TOKENS: usize = 16;

/// What a free slot's KV cache holds.
#[derive(Debug, Clone, Default)]
struct Entry {
    /// The tokens whose keys and values fill positions `0..tokens.len()`.
    tokens: Vec<u32>,
    /// The scope of the request that wrote them.
    scope: u64,
    /// When they were retained ([`PrefixCache::clock`]): the oldest goes first.
    at: u64,
}

/// The tokens held by each KV slot, for reuse by later requests of the same scope.
#[derive(Debug)]
pub struct PrefixCache {
    on: bool,
    entries: Vec<Entry>,
    /// Counts retained entries.
    clock: u64,
}

impl PrefixCache {
    /// A cache over `slots` KV slots, all empty; `on: false` never reuses anything.
    pub fn new(slots: usize, on: bool) -> Self {
        PrefixCache {
            on,
            entries: vec![Entry::default(); slots],
            clock: 0,
        }
    }

    /// Takes a slot from `free` (kept sorted highest first, so `pop` gives the lowest)
    /// for a request of `scope` with `prompt`: the free slot holding the longest prefix
    /// of the prompt (at least [`MIN_REUSE_TOKENS`], and never the whole prompt: its
    /// last token must run to give the first logits); else the lowest free slot that
    /// holds nothing, else the one whose content is oldest. Returns the slot and how many
    /// prompt tokens its cache already holds.
    pub fn take(
        &mut self,
        free: &mut Vec<usize>,
        scope: u64,
        prompt: &[u32],
    ) -> Option<(usize, usize)> {
        let most = prompt.len().saturating_sub(1);
        let best = if self.on {
            free.iter()
                .enumerate()
                .filter_map(|(i, &slot)| {
                    let e = self.entries.get(slot)?;
                    (e.scope == scope).then(|| (i, common_prefix(&e.tokens, prompt).min(most)))
                })
                .filter(|&(_, n)| n >= MIN_REUSE_TOKENS)
                // the longest; among equals the lowest slot (the last in `free`)
                .max_by_key(|&(i, n)| (n, i))
        } else {
            None
        };
        let (i, reused) = match best {
            Some(b) => b,
            None => {
                let empty = |s: usize| self.entries.get(s).is_none_or(|e| e.tokens.is_empty());
                let i = match free.iter().rposition(|&s| empty(s)) {
                    Some(i) => i,
                    None => {
                        free.iter()
                            .enumerate()
                            .min_by_key(|&(_, &s)| self.entries.get(s).map_or(0, |e| e.at))?
                            .0
                    }
                };
                (i, 0)
            }
        };
        let slot = free.remove(i);
        self.forget(slot);
        Some((slot, reused))
    }

    /// Takes a free slot whose content will be overwritten (a forked choice, which gets
    /// its first choice's keys and values copied in): as [`PrefixCache::take`] without a
    /// match.
    pub fn take_plain(&mut self, free: &mut Vec<usize>) -> Option<usize> {
        self.take(free, 0, &[]).map(|(slot, _)| slot)
    }

    /// Records that `slot`, now free, holds the keys and values of `tokens` (from
    /// position 0), written by a request of `scope`.
    pub fn retain(&mut self, slot: usize, scope: u64, tokens: Vec<u32>) {
        if let (true, Some(e)) = (self.on, self.entries.get_mut(slot)) {
            self.clock += 1;
            *e = Entry {
                tokens,
                scope,
                at: self.clock,
            };
        }
    }

    /// Forgets what `slot` holds (it is about to be overwritten).
    fn forget(&mut self, slot: usize) {
        if let Some(e) = self.entries.get_mut(slot) {
            *e = Entry::default();
        }
    }
}

/// Length of the common prefix of `a` and `b`.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(n: u32) -> Vec<u32> {
        (100..100 + n).collect()
    }

    #[test]
    fn the_longest_held_prefix_of_the_same_scope_wins() {
        let mut c = PrefixCache::new(4, true);
        let mut free = vec![3, 2, 1, 0];
        c.retain(1, 7, toks(20));
        c.retain(2, 7, toks(40));
        c.retain(3, 8, toks(60)); // another scope
        // A prompt extending 60 tokens: slot 2 holds 40 of them in scope 7.
        let (slot, reused) = c.take(&mut free, 7, &toks(60)).unwrap();
        assert_eq!((slot, reused), (2, 40));
        assert_eq!(free, vec![3, 1, 0]);
        // Taken: the slot's old content is forgotten until it is retained again.
        free.push(2);
        free.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(c.take(&mut free, 7, &toks(60)).unwrap(), (1, 20));
        // Scope 8 sees only its own slot.
        assert_eq!(c.take(&mut free, 8, &toks(60)).unwrap(), (3, 59));
    }

    #[test]
    fn short_matches_and_whole_prompts() {
        let mut c = PrefixCache::new(3, true);
        let mut free = vec![2, 1, 0];
        c.retain(2, 0, toks(MIN_REUSE_TOKENS as u32 - 1));
        // Too short to be worth it: the lowest slot, nothing reused.
        assert_eq!(c.take(&mut free, 0, &toks(40)).unwrap(), (0, 0));
        // The whole prompt held: its last token still runs.
        c.retain(1, 0, toks(30));
        assert_eq!(c.take(&mut free, 0, &toks(30)).unwrap(), (1, 29));
        // A prompt that diverges after 18 tokens.
        c.retain(1, 0, toks(30));
        free.push(1);
        free.sort_unstable_by(|a, b| b.cmp(a));
        let mut p = toks(18);
        p.extend([1, 2, 3]);
        assert_eq!(c.take(&mut free, 0, &p).unwrap(), (1, 18));
    }

    #[test]
    fn without_a_match_an_empty_slot_then_the_oldest_content_goes() {
        let mut c = PrefixCache::new(3, true);
        let mut free = vec![2, 1, 0];
        c.retain(0, 1, toks(30));
        // Another scope: the lowest empty slot, slot 0's content stays.
        assert_eq!(c.take(&mut free, 2, &toks(30)).unwrap(), (1, 0));
        c.retain(1, 2, toks(30));
        c.retain(2, 3, toks(30));
        free = vec![2, 1, 0];
        // Nothing empty, no match: the oldest content (slot 0's) is overwritten.
        assert_eq!(c.take(&mut free, 4, &toks(30)).unwrap(), (0, 0));
        assert_eq!(c.take(&mut free, 2, &toks(30)).unwrap(), (1, 29));
    }

    #[test]
    fn off_never_reuses_and_plain_takes_forget() {
        let mut c = PrefixCache::new(2, false);
        let mut free = vec![1, 0];
        c.retain(1, 0, toks(50));
        assert_eq!(c.take(&mut free, 0, &toks(50)).unwrap(), (0, 0));
        let mut c = PrefixCache::new(2, true);
        let mut free = vec![1, 0];
        c.retain(0, 0, toks(50));
        c.retain(1, 0, toks(20));
        // A fork's slot: no match wanted, the oldest content goes.
        assert_eq!(c.take_plain(&mut free), Some(0));
        free.push(0);
        free.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(c.take(&mut free, 0, &toks(50)).unwrap(), (1, 20));
        assert_eq!(c.take(&mut free, 0, &toks(50)).unwrap(), (0, 0));
        assert_eq!(c.take(&mut free, 0, &toks(50)), None);
    }
}
