//! Incremental detokenization with stop strings: turns generated ids into text deltas,
//! holds back text that may be the start of a stop string, and cuts at a stop string.

use tokenizers::Tokenizer;

/// Text state of one generated sequence.
pub struct Detok {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    text: String,
    emitted: usize,
    stops: Vec<String>,
}

/// Result of pushing one token.
#[derive(Debug, PartialEq, Eq)]
pub struct Pushed {
    /// New text that may be sent now.
    pub delta: String,
    /// A stop string was found (the delta ends before it).
    pub stopped: bool,
}

impl Detok {
    /// Empty state with the request's stop strings (empty strings ignored).
    pub fn new(stops: Vec<String>) -> Self {
        Detok {
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
            text: String::new(),
            emitted: 0,
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
        }
    }

    fn decode(tok: &Tokenizer, ids: &[u32]) -> String {
        tok.decode(ids, true).unwrap_or_default()
    }

    /// Adds a generated token; returns what can be emitted.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Pushed {
        self.ids.push(id);
        let prefix = Self::decode(tok, &self.ids[self.prefix_offset..self.read_offset]);
        let full = Self::decode(tok, &self.ids[self.prefix_offset..]);
        if full.len() > prefix.len()
            && !full.ends_with('\u{FFFD}')
            && full.is_char_boundary(prefix.len())
        {
            self.text.push_str(&full[prefix.len()..]);
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
        }
        self.take(false)
    }

    /// Emits what is left at the end of generation (held-back text included).
    pub fn finish(&mut self) -> String {
        self.take(true).delta
    }

    fn take(&mut self, end: bool) -> Pushed {
        let pending = &self.text[self.emitted..];
        // Earliest stop string in the pending text.
        let hit = self
            .stops
            .iter()
            .filter_map(|s| pending.find(s.as_str()))
            .min();
        if let Some(i) = hit {
            let delta = pending[..i].to_string();
            self.emitted = self.text.len();
            return Pushed {
                delta,
                stopped: true,
            };
        }
        let mut safe = pending.len();
        if !end {
            // Hold back the longest tail that is a prefix of some stop string.
            for s in &self.stops {
                for k in (1..s.len().min(pending.len() + 1)).rev() {
                    if s.is_char_boundary(k) && pending.ends_with(&s[..k]) {
                        safe = safe.min(pending.len() - k);
                        break;
                    }
                }
            }
        }
        while !pending.is_char_boundary(safe) {
            safe -= 1;
        }
        let delta = pending[..safe].to_string();
        self.emitted += safe;
        Pushed {
            delta,
            stopped: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, stops: &[&str]) -> (String, bool) {
        let tok = crate::testmodel::build_tokenizer().unwrap();
        let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
        let mut d = Detok::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for id in ids {
            let p = d.push(&tok, id);
            out.push_str(&p.delta);
            if p.stopped {
                return (out, true);
            }
        }
        out.push_str(&d.finish());
        (out, false)
    }

    #[test]
    fn deltas_add_up_to_the_text() {
        let t = "Hello, wörld! The capital of France is Paris. ✓";
        assert_eq!(run(t, &[]), (t.to_string(), false));
    }

    #[test]
    fn cuts_at_the_earliest_stop_string() {
        assert_eq!(
            run("The capital of France is Paris.", &["France", "is"]),
            ("The capital of ".into(), true)
        );
        assert_eq!(run("one two three", &["two t"]), ("one ".into(), true));
        // A held-back prefix of a stop string that never completes is still emitted.
        assert_eq!(run("one tw", &["two"]), ("one tw".into(), false));
    }
}
