//! The BPE model: a vocabulary, a table of merges, and the merge loop.
//!
//! Tokens are keyed by their bytes: raw bytes for byte-level vocabularies
//! (GPT-2 alphabet decoded) and tiktoken rank files, UTF-8 bytes of the token
//! string otherwise (SentencePiece-style vocabularies with `▁`). A word is
//! split into initial symbols (bytes, or characters with byte fallback), then
//! the adjacent pair with the lowest merge rank is merged, leftmost first,
//! until no pair has a merge — the rule of both HF `tokenizers` and tiktoken.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use crate::{Result, TokenizerError};

/// How a word is cut into initial symbols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Symbols {
    /// One symbol per byte (byte-level BPE, tiktoken).
    Bytes,
    /// One symbol per character; characters missing from the vocabulary fall
    /// back to `<0xXX>` byte tokens or the unknown token.
    Chars,
}

/// Result of merging a pair: its priority and the token it makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Merge {
    pub rank: u32,
    pub id: u32,
}

/// A BPE vocabulary and its merges.
#[derive(Clone, Debug)]
pub struct Bpe {
    /// Token strings as the file writes them (for `tokens` and decoders).
    pub(crate) tokens: Vec<Option<String>>,
    /// Bytes of each token (what merges concatenate).
    pub(crate) token_bytes: Vec<Option<Box<[u8]>>>,
    pub(crate) bytes_to_id: FxHashMap<Box<[u8]>, u32>,
    pub(crate) merges: FxHashMap<u64, Merge>,
    pub(crate) symbols: Symbols,
    pub(crate) byte_ids: [Option<u32>; 256],
    pub(crate) unk: Option<u32>,
    pub(crate) fuse_unk: bool,
    pub(crate) byte_fallback: bool,
    /// Look the whole word up before merging (tiktoken; HF `ignore_merges`).
    pub(crate) whole_word_first: bool,
    pub(crate) continuing_subword_prefix: Option<String>,
    pub(crate) end_of_word_suffix: Option<String>,
}

fn pair_key(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

/// Words longer than this many symbols merge with a heap instead of scans.
const HEAP_THRESHOLD: usize = 16;

impl Bpe {
    /// An empty model of the given symbol kind.
    pub(crate) fn empty(symbols: Symbols) -> Self {
        Self {
            tokens: Vec::new(),
            token_bytes: Vec::new(),
            bytes_to_id: FxHashMap::default(),
            merges: FxHashMap::default(),
            symbols,
            byte_ids: [None; 256],
            unk: None,
            fuse_unk: false,
            byte_fallback: false,
            whole_word_first: false,
            continuing_subword_prefix: None,
            end_of_word_suffix: None,
        }
    }

    /// Adds token `id` with display string `text` and merge bytes `bytes`.
    pub(crate) fn insert(
        &mut self,
        origin: &str,
        id: u32,
        text: String,
        bytes: Box<[u8]>,
    ) -> Result<()> {
        let slot = id as usize;
        if self.tokens.len() <= slot {
            self.tokens.resize(slot + 1, None);
            self.token_bytes.resize(slot + 1, None);
        }
        if self.tokens[slot].is_some() {
            return Err(TokenizerError::bad_entry(
                origin,
                format!("token {text:?}"),
                format!("id {id} is used twice"),
            ));
        }
        if let Some(previous) = self.bytes_to_id.insert(bytes.clone(), id) {
            return Err(TokenizerError::bad_entry(
                origin,
                format!("token {text:?}"),
                format!("same bytes as id {previous}; ids {previous} and {id} collide"),
            ));
        }
        if bytes.len() == 1 {
            self.byte_ids[bytes[0] as usize] = Some(id);
        }
        self.tokens[slot] = Some(text);
        self.token_bytes[slot] = Some(bytes);
        Ok(())
    }

    /// Records that merging `left` and `right` makes `id` with priority `rank`
    /// (lower merges first). A pair already present keeps its first rank.
    pub(crate) fn add_merge(&mut self, left: u32, right: u32, rank: u32, id: u32) {
        self.merges
            .entry(pair_key(left, right))
            .or_insert(Merge { rank, id });
    }

    /// Number of id slots (one past the largest id).
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The id of a token given by its bytes.
    pub fn id_of_bytes(&self, bytes: &[u8]) -> Option<u32> {
        self.bytes_to_id.get(bytes).copied()
    }

    /// The token string of an id, as the vocabulary file writes it.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).and_then(|t| t.as_deref())
    }

    fn merge_of(&self, a: u32, b: u32) -> Option<Merge> {
        self.merges.get(&pair_key(a, b)).copied()
    }

    /// Encodes a word through the merges (no whole-word lookup).
    pub(crate) fn merge_word(&self, word: &[u8], out: &mut Vec<(u32, usize, usize)>) {
        thread_local! {
            static SCRATCH: std::cell::RefCell<(Vec<Symbol>, Vec<u32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
        }
        SCRATCH.with(|scratch| {
            let Ok(mut scratch) = scratch.try_borrow_mut() else {
                // Re-entered (cannot happen today): work without the scratch buffers.
                let mut symbols = Vec::new();
                self.initial_symbols(word, &mut symbols);
                self.merge_symbols(&mut symbols, &mut Vec::new());
                out.extend(symbols.iter().map(|s| (s.id, s.start, s.end)));
                return;
            };
            let (symbols, ranks) = &mut *scratch;
            symbols.clear();
            self.initial_symbols(word, symbols);
            self.merge_symbols(symbols, ranks);
            out.extend(symbols.iter().map(|s| (s.id, s.start, s.end)));
        });
    }

    fn merge_symbols(&self, symbols: &mut Vec<Symbol>, ranks: &mut Vec<u32>) {
        if symbols.len() > HEAP_THRESHOLD {
            self.merge_with_heap(symbols);
        } else {
            self.merge_with_scan(symbols, ranks);
        }
    }

    /// Cuts a word into its first symbols. As in HF, a symbol's span is the
    /// running sum of the lengths of the symbols before it, so a character
    /// dropped for lack of an unknown token shifts the spans after it.
    fn initial_symbols(&self, word: &[u8], symbols: &mut Vec<Symbol>) {
        let mut pos = 0;
        let push = |symbols: &mut Vec<Symbol>, pos: &mut usize, id: u32, len: usize| {
            symbols.push(Symbol {
                id,
                start: *pos,
                end: *pos + len,
            });
            *pos += len;
        };
        match self.symbols {
            Symbols::Bytes => {
                for &b in word {
                    if let Some(id) = self.byte_ids[b as usize].or(self.unk) {
                        push(symbols, &mut pos, id, 1);
                    }
                }
            }
            Symbols::Chars => {
                let text = String::from_utf8_lossy(word);
                let count = text.chars().count();
                let mut unk_run = false;
                for (k, c) in text.chars().enumerate() {
                    let len = c.len_utf8();
                    let mut key = String::new();
                    if k > 0
                        && let Some(prefix) = &self.continuing_subword_prefix
                    {
                        key.push_str(prefix);
                    }
                    key.push(c);
                    if k + 1 == count
                        && let Some(suffix) = &self.end_of_word_suffix
                    {
                        key.push_str(suffix);
                    }
                    if let Some(&id) = self.bytes_to_id.get(key.as_bytes()) {
                        push(symbols, &mut pos, id, len);
                        unk_run = false;
                    } else if self.byte_fallback
                        && let Some(ids) = c
                            .encode_utf8(&mut [0; 4])
                            .bytes()
                            .map(|b| {
                                self.bytes_to_id
                                    .get(format!("<0x{b:02X}>").as_bytes())
                                    .copied()
                            })
                            .collect::<Option<Vec<u32>>>()
                    {
                        for id in ids {
                            push(symbols, &mut pos, id, 1);
                        }
                        unk_run = false;
                    } else if let Some(id) = self.unk {
                        if self.fuse_unk && unk_run {
                            if let Some(last) = symbols.last_mut() {
                                last.end += len;
                            }
                            pos += len;
                        } else {
                            push(symbols, &mut pos, id, len);
                        }
                        unk_run = true;
                    }
                }
            }
        }
    }

    /// Merges by repeated scans for the lowest-ranked pair (short words).
    /// `ranks[i]` is the rank of the pair starting at symbol `i` (`u32::MAX`: none).
    fn merge_with_scan(&self, symbols: &mut Vec<Symbol>, ranks: &mut Vec<u32>) {
        let rank_of =
            |a: &Symbol, b: &Symbol| self.merge_of(a.id, b.id).map_or(u32::MAX, |m| m.rank);
        ranks.clear();
        ranks.extend(symbols.windows(2).map(|w| rank_of(&w[0], &w[1])));
        loop {
            let mut best = u32::MAX;
            let mut at = 0;
            for (i, &r) in ranks.iter().enumerate() {
                if r < best {
                    best = r;
                    at = i;
                }
            }
            if best == u32::MAX {
                break;
            }
            let Some(merge) = self.merge_of(symbols[at].id, symbols[at + 1].id) else {
                break;
            };
            symbols[at].id = merge.id;
            symbols[at].end = symbols[at + 1].end;
            symbols.remove(at + 1);
            ranks.remove(at);
            if at + 1 < symbols.len() {
                ranks[at] = rank_of(&symbols[at], &symbols[at + 1]);
            } else {
                ranks.truncate(at);
            }
            if at > 0 {
                ranks[at - 1] = rank_of(&symbols[at - 1], &symbols[at]);
            }
        }
    }

    /// Merges with a priority queue over a linked list (long words): the
    /// same order as the scan — lowest rank, then leftmost.
    fn merge_with_heap(&self, symbols: &mut Vec<Symbol>) {
        const NONE: u32 = u32::MAX;
        let n = symbols.len();
        // Linked list over the symbols; a merged-away symbol has `alive` false.
        let mut next: Vec<u32> = (1..=n as u32).collect();
        let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; n];
        // Entries (rank << 32 | position): smallest rank, then leftmost, first.
        let key = |rank: u32, at: u32| Reverse((u64::from(rank) << 32) | u64::from(at));
        let mut heap = BinaryHeap::with_capacity(n);
        for i in 0..n - 1 {
            if let Some(m) = self.merge_of(symbols[i].id, symbols[i + 1].id) {
                heap.push(key(m.rank, i as u32));
            }
        }
        while let Some(Reverse(entry)) = heap.pop() {
            let (rank, i) = ((entry >> 32) as u32, (entry & 0xFFFF_FFFF) as usize);
            let j = next[i];
            if !alive[i] || j as usize >= n {
                continue;
            }
            let j = j as usize;
            let Some(m) = self.merge_of(symbols[i].id, symbols[j].id) else {
                continue;
            };
            if m.rank != rank {
                continue;
            }
            symbols[i].id = m.id;
            symbols[i].end = symbols[j].end;
            alive[j] = false;
            next[i] = next[j];
            if (next[j] as usize) < n {
                prev[next[j] as usize] = i as u32;
            }
            let after = next[i] as usize;
            if after < n
                && let Some(m) = self.merge_of(symbols[i].id, symbols[after].id)
            {
                heap.push(key(m.rank, i as u32));
            }
            let p = prev[i];
            if p != NONE
                && let Some(m) = self.merge_of(symbols[p as usize].id, symbols[i].id)
            {
                heap.push(key(m.rank, p));
            }
        }
        let mut k = 0;
        symbols.retain(|_| {
            k += 1;
            alive[k - 1]
        });
    }
}

#[derive(Clone, Copy, Debug)]
struct Symbol {
    id: u32,
    start: usize,
    end: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-level model over "abc" with merges a+b, ab+c, b+c.
    fn tiny() -> Bpe {
        let mut bpe = Bpe::empty(Symbols::Bytes);
        for (id, t) in ["a", "b", "c", "ab", "abc", "bc"].iter().enumerate() {
            bpe.insert("test", id as u32, t.to_string(), t.as_bytes().into())
                .unwrap();
        }
        bpe.add_merge(0, 1, 0, 3);
        bpe.add_merge(3, 2, 1, 4);
        bpe.add_merge(1, 2, 2, 5);
        bpe
    }

    #[test]
    fn scan_and_heap_merge_in_the_same_order() {
        let bpe = tiny();
        let word: Vec<u8> = b"abcbcabcab".repeat(20);
        let mut a = Vec::new();
        bpe.merge_word(&word, &mut a);
        let mut b: Vec<Symbol> = word
            .iter()
            .enumerate()
            .map(|(i, &c)| Symbol {
                id: (c - b'a') as u32,
                start: i,
                end: i + 1,
            })
            .collect();
        bpe.merge_with_scan(&mut b, &mut Vec::new());
        let b: Vec<(u32, usize, usize)> = b.iter().map(|s| (s.id, s.start, s.end)).collect();
        assert_eq!(a, b);
        let mut short = Vec::new();
        bpe.merge_word(b"abcbc", &mut short);
        assert_eq!(short, vec![(4, 0, 3), (5, 3, 5)]);
    }
}
