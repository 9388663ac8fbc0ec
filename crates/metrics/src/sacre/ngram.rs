//! N-gram counting shared by BLEU and chrF: the hypothesis' n-grams of
//! orders `1..=max_order` (over token ids: interned words, or characters'
//! code points) and how often each occurs in a reference.
//!
//! Every distinct n-gram of the hypothesis gets an entry number, interned
//! as the pair (entry of its first n-1 tokens, id of its last token) packed
//! into a `u64`: exact for any vocabulary and order, one integer hash per
//! n-gram, and no key to allocate. Only the hypothesis' n-grams matter (a
//! match is the smaller of two counts), so a reference is counted against
//! that index, and its n-gram at `i` is looked up only where its prefix was
//! found.

use rustc_hash::FxHashMap;

/// The id of a reference token the hypothesis does not contain; also "no
/// entry" (the prefix of a unigram, or an n-gram not in the hypothesis).
pub(crate) const UNKNOWN: u32 = u32::MAX;

#[inline]
fn key(prefix: u32, token: u32) -> u64 {
    (u64::from(prefix) << 32) | u64::from(token)
}

/// The distinct n-grams of a hypothesis, orders `1..=max_order`. Reusable:
/// [`HypNgrams::build`] starts over and keeps the allocations.
#[derive(Default)]
pub(crate) struct HypNgrams {
    /// (prefix entry, last token) → entry.
    index: FxHashMap<u64, u32>,
    /// Occurrences in the hypothesis, per entry.
    pub(crate) counts: Vec<u32>,
    /// Entries of order `n` are `order_start[n - 1]..order_start[n]`.
    order_start: Vec<usize>,
    /// Scratch: the entry of the current n-gram at each position.
    at: Vec<u32>,
}

impl HypNgrams {
    /// Indexes the n-grams of `ids` (replacing what was indexed).
    pub(crate) fn build(&mut self, ids: &[u32], max_order: usize) {
        self.index.clear();
        self.counts.clear();
        self.order_start.clear();
        self.order_start.push(0);
        self.at.clear();
        self.at.resize(ids.len(), UNKNOWN);
        for n in 1..=max_order {
            if ids.len() >= n {
                for i in 0..=ids.len() - n {
                    let next = self.counts.len() as u32;
                    let e = *self
                        .index
                        .entry(key(self.at[i], ids[i + n - 1]))
                        .or_insert(next);
                    if e == next {
                        self.counts.push(1);
                    } else {
                        self.counts[e as usize] += 1;
                    }
                    self.at[i] = e;
                }
            }
            self.order_start.push(self.counts.len());
        }
        debug_assert!(self.counts.len() < UNKNOWN as usize);
    }

    /// The number of distinct n-grams (entries).
    pub(crate) fn len(&self) -> usize {
        self.counts.len()
    }

    /// The entries of order `n` (1-based).
    pub(crate) fn order(&self, n: usize) -> std::ops::Range<usize> {
        self.order_start[n - 1]..self.order_start[n]
    }

    /// Adds to `found[e]` the occurrences in `ids` of every entry `e` (the
    /// reference's n-grams of orders `1..=max_order` that the hypothesis
    /// has). `at` is scratch.
    pub(crate) fn count_in(
        &self,
        ids: &[u32],
        max_order: usize,
        found: &mut [u32],
        at: &mut Vec<u32>,
    ) {
        at.clear();
        at.extend(ids.iter().map(|&id| {
            if id == UNKNOWN {
                return UNKNOWN;
            }
            match self.index.get(&key(UNKNOWN, id)) {
                Some(&e) => {
                    found[e as usize] += 1;
                    e
                }
                None => UNKNOWN,
            }
        }));
        for n in 2..=max_order {
            if ids.len() < n {
                break;
            }
            let mut any = false;
            for i in 0..=ids.len() - n {
                let prefix = at[i];
                if prefix == UNKNOWN {
                    continue;
                }
                at[i] = match self.index.get(&key(prefix, ids[i + n - 1])) {
                    Some(&e) => {
                        found[e as usize] += 1;
                        any = true;
                        e
                    }
                    None => UNKNOWN,
                };
            }
            if !any {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn naive_counts(tokens: &[String], max_order: usize) -> HashMap<Vec<String>, u32> {
        let mut m = HashMap::new();
        for n in 1..=max_order {
            if tokens.len() >= n {
                for w in tokens.windows(n) {
                    *m.entry(w.to_vec()).or_insert(0) += 1;
                }
            }
        }
        m
    }

    /// The entry of an n-gram, by walking the index as `build` does.
    fn entry_of(idx: &HypNgrams, ids: &[u32]) -> Option<u32> {
        let mut e = UNKNOWN;
        for &id in ids {
            e = *idx.index.get(&key(e, id))?;
        }
        Some(e)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// For every hypothesis n-gram, the index's hypothesis and reference
        /// counts equal those of a `HashMap<Vec<String>, _>` counter; the
        /// index is reused across cases as in scoring.
        #[test]
        fn index_matches_naive_counter(
            cases in prop::collection::vec((
                prop::collection::vec("[abc]{1,2}", 0..14),
                prop::collection::vec("[abcd]{1,2}", 0..14),
            ), 1..4),
            max_order in 1usize..7,
        ) {
            let mut idx = HypNgrams::default();
            for (hyp, reference) in &cases {
                let mut vocab: HashMap<&str, u32> = HashMap::new();
                let hyp_ids: Vec<u32> = hyp.iter().map(|t| {
                    let next = vocab.len() as u32;
                    *vocab.entry(t.as_str()).or_insert(next)
                }).collect();
                let ref_ids: Vec<u32> = reference.iter().map(|t| *vocab.get(t.as_str()).unwrap_or(&UNKNOWN)).collect();
                idx.build(&hyp_ids, max_order);
                let mut found = vec![0u32; idx.len()];
                let mut at = Vec::new();
                idx.count_in(&ref_ids, max_order, &mut found, &mut at);

                let hyp_naive = naive_counts(hyp, max_order);
                let ref_naive = naive_counts(reference, max_order);
                prop_assert_eq!(idx.len(), hyp_naive.len());
                for (gram, count) in &hyp_naive {
                    let ids: Vec<u32> = gram.iter().map(|t| vocab[t.as_str()]).collect();
                    let e = entry_of(&idx, &ids).unwrap() as usize;
                    prop_assert_eq!(idx.counts[e], *count);
                    prop_assert_eq!(found[e], ref_naive.get(gram).copied().unwrap_or(0));
                    prop_assert!(idx.order(gram.len()).contains(&e));
                }
            }
        }
    }
}
