//! Byte-level BPE training, merge for merge the same as HF `tokenizers`'
//! `BpeTrainer`.
//!
//! 1. Words: each text is cut with the split pattern (GPT-2's by default)
//!    and every distinct piece is counted — memory grows with the number of
//!    distinct words, not with the corpus. Counting runs in parallel.
//! 2. Vocabulary: special tokens, then the 256 byte symbols ordered by the
//!    code point of their GPT-2 alphabet character (HF's order).
//! 3. Merges: the most frequent adjacent pair is merged next; ties go to
//!    the smaller pair of ids. Pair counts are updated incrementally from the
//!    words that contain the merged pair, with a max-heap whose stale entries
//!    are refreshed when popped — the bookkeeping of HF's trainer, including
//!    its quirk of listing a pair again when new occurrences appear later.
//!
//! The result is deterministic (no hash-order dependence) and is written as
//! a `tokenizer.json` that HF loads.

use std::collections::BinaryHeap;

use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::{Map, Value, json};

use crate::bytelevel::byte_to_char;
use crate::components::GPT2_PATTERN;
use crate::split::SplitPattern;
use crate::{Result, Tokenizer, TokenizerError};

/// Settings of [`BpeTrainer`]; the defaults are HF's for byte-level BPE.
#[derive(Clone, Debug)]
pub struct BpeTrainer {
    /// Final vocabulary size (special tokens and the 256 bytes included).
    pub vocab_size: usize,
    /// Pairs seen fewer times than this are never merged.
    pub min_frequency: u64,
    /// Special tokens, given the first ids in this order.
    pub special_tokens: Vec<String>,
    /// The split pattern; `None` is GPT-2's (HF's ByteLevel `use_regex`).
    pub pattern: Option<String>,
}

impl Default for BpeTrainer {
    fn default() -> Self {
        Self {
            vocab_size: 30_000,
            min_frequency: 0,
            special_tokens: Vec::new(),
            pattern: None,
        }
    }
}

/// Distinct pre-tokenized words and how often each occurs.
pub type WordCounts = FxHashMap<Vec<u8>, u64>;

/// A pending merge in the heap: most frequent first, then the smallest pair.
#[derive(Debug, Eq, PartialEq)]
struct Candidate {
    count: u64,
    pair: (u32, u32),
    words: Vec<usize>,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.count
            .cmp(&other.count)
            .then_with(|| other.pair.cmp(&self.pair))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl BpeTrainer {
    fn split_pattern(&self) -> Result<SplitPattern> {
        SplitPattern::new("trainer", self.pattern.as_deref().unwrap_or(GPT2_PATTERN))
    }

    /// Counts the pre-tokenized words of `texts` (in parallel).
    pub fn count_words<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<WordCounts> {
        let pattern = self.split_pattern()?;
        texts
            .par_chunks(64)
            .map(|chunk| {
                let mut counts = WordCounts::default();
                for text in chunk {
                    let text = text.as_ref();
                    pattern.for_each_match(text, |a, b| {
                        *counts.entry(text.as_bytes()[a..b].to_vec()).or_default() += 1;
                    })?;
                }
                Ok(counts)
            })
            .try_reduce(WordCounts::default, |mut a, b| {
                if a.len() < b.len() {
                    return Ok(merge_counts(b, a));
                }
                a = merge_counts(a, b);
                Ok(a)
            })
    }

    /// Trains on texts (each one sequence, as HF's `train_from_iterator`).
    pub fn train<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Tokenizer> {
        let counts = self.count_words(texts)?;
        self.train_from_counts(&counts)
    }

    /// Learns the merges from word counts and builds the tokenizer.
    pub fn train_from_counts(&self, counts: &WordCounts) -> Result<Tokenizer> {
        let alphabet = byte_to_char();
        // Vocabulary: specials, then bytes by alphabet code point.
        let mut id_to_word: Vec<String> = Vec::new();
        let mut word_to_id: FxHashMap<String, u32> = FxHashMap::default();
        for s in &self.special_tokens {
            if !word_to_id.contains_key(s) {
                word_to_id.insert(s.clone(), id_to_word.len() as u32);
                id_to_word.push(s.clone());
            }
        }
        let mut bytes: Vec<u8> = (0..=255).collect();
        bytes.sort_by_key(|&b| alphabet[b as usize] as u32);
        let mut byte_id = [0u32; 256];
        for b in bytes {
            let s = alphabet[b as usize].to_string();
            let id = *word_to_id.entry(s.clone()).or_insert_with(|| {
                id_to_word.push(s);
                (id_to_word.len() - 1) as u32
            });
            byte_id[b as usize] = id;
        }
        // Words in a fixed order (sorted), as symbol ids.
        let mut entries: Vec<(&Vec<u8>, u64)> = counts.iter().map(|(w, &c)| (w, c)).collect();
        entries.sort_unstable();
        let word_counts: Vec<u64> = entries.iter().map(|e| e.1).collect();
        let mut words: Vec<Vec<u32>> = entries
            .iter()
            .map(|(w, _)| w.iter().map(|&b| byte_id[b as usize]).collect())
            .collect();
        // Initial pair counts and where each pair occurs.
        let mut pair_counts: FxHashMap<(u32, u32), i64> = FxHashMap::default();
        let mut where_to_update: FxHashMap<(u32, u32), FxHashSet<usize>> = FxHashMap::default();
        for (i, word) in words.iter().enumerate() {
            for w in word.windows(2) {
                let pair = (w[0], w[1]);
                *pair_counts.entry(pair).or_default() += word_counts[i] as i64;
                where_to_update.entry(pair).or_default().insert(i);
            }
        }
        let mut queue = BinaryHeap::with_capacity(pair_counts.len());
        push_updates(&mut queue, &mut where_to_update, &pair_counts);
        let mut merges: Vec<(u32, u32)> = Vec::new();
        while word_to_id.len() < self.vocab_size {
            let Some(mut top) = queue.pop() else { break };
            let current = pair_counts.get(&top.pair).copied().unwrap_or(0).max(0) as u64;
            if top.count != current {
                top.count = current;
                queue.push(top);
                continue;
            }
            if top.count < 1 || top.count < self.min_frequency {
                break;
            }
            let new_token = format!(
                "{}{}",
                id_to_word[top.pair.0 as usize], id_to_word[top.pair.1 as usize]
            );
            let new_id = match word_to_id.get(&new_token) {
                Some(&id) => id,
                None => {
                    let id = id_to_word.len() as u32;
                    id_to_word.push(new_token.clone());
                    word_to_id.insert(new_token, id);
                    id
                }
            };
            merges.push(top.pair);
            for &i in &top.words {
                for (pair, change) in merge_word(&mut words[i], top.pair, new_id) {
                    *pair_counts.entry(pair).or_default() += change * word_counts[i] as i64;
                    if change > 0 {
                        where_to_update.entry(pair).or_default().insert(i);
                    }
                }
            }
            push_updates(&mut queue, &mut where_to_update, &pair_counts);
        }
        self.to_tokenizer(&id_to_word, &merges)
    }

    fn to_tokenizer(&self, id_to_word: &[String], merges: &[(u32, u32)]) -> Result<Tokenizer> {
        let mut vocab = Map::new();
        for (id, w) in id_to_word.iter().enumerate() {
            vocab.insert(w.clone(), json!(id));
        }
        let merges: Vec<Value> = merges
            .iter()
            .map(|&(a, b)| json!([id_to_word[a as usize], id_to_word[b as usize]]))
            .collect();
        let added: Vec<Value> = self
            .special_tokens
            .iter()
            .enumerate()
            .map(|(id, content)| {
                json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        let pre_tokenizer = match &self.pattern {
            None => byte_level.clone(),
            Some(p) => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": p}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}),
        };
        let doc = json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": byte_level,
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": false, "vocab": vocab, "merges": merges},
        });
        let text =
            serde_json::to_string(&doc).map_err(|e| TokenizerError::Invalid(e.to_string()))?;
        Tokenizer::from_json_str("trained tokenizer", &text)
    }
}

fn merge_counts(mut into: WordCounts, from: WordCounts) -> WordCounts {
    for (w, c) in from {
        *into.entry(w).or_default() += c;
    }
    into
}

/// Moves the pairs with new occurrences into the heap (with their current count).
fn push_updates(
    queue: &mut BinaryHeap<Candidate>,
    where_to_update: &mut FxHashMap<(u32, u32), FxHashSet<usize>>,
    pair_counts: &FxHashMap<(u32, u32), i64>,
) {
    let mut updates: Vec<((u32, u32), FxHashSet<usize>)> = where_to_update.drain().collect();
    updates.sort_unstable_by_key(|u| u.0);
    for (pair, positions) in updates {
        let count = pair_counts.get(&pair).copied().unwrap_or(0);
        if count > 0 {
            let mut words: Vec<usize> = positions.into_iter().collect();
            words.sort_unstable();
            queue.push(Candidate {
                count: count as u64,
                pair,
                words,
            });
        }
    }
}

/// Merges every occurrence of `pair` in `word` left to right and returns
/// the changes in pair counts (HF's `Word::merge`: the merged pair itself is
/// not decremented).
fn merge_word(word: &mut Vec<u32>, pair: (u32, u32), new_id: u32) -> Vec<((u32, u32), i64)> {
    let mut changes = Vec::new();
    let mut i = 0;
    while i < word.len() {
        if word[i] == pair.0 && i + 1 < word.len() && word[i + 1] == pair.1 {
            if i > 0 {
                changes.push(((word[i - 1], pair.0), -1));
                changes.push(((word[i - 1], new_id), 1));
            }
            word[i] = new_id;
            word.remove(i + 1);
            if i + 1 < word.len() {
                changes.push(((pair.1, word[i + 1]), -1));
                changes.push(((new_id, word[i + 1]), 1));
            }
        }
        i += 1;
    }
    changes
}
