//! The BPE model: a vocabulary, a table of merges, and the merge loop.
//!
//! Tokens are keyed by their bytes: raw bytes for byte-level vocabularies
//! (GPT-2 alphabet decoded) and tiktoken rank files, UTF-8 bytes of the token
//! string otherwise (SentencePiece-style vocabularies with `▁`). A word is
//! split into initial symbols (bytes, or characters with byte fallback), then
//! the adjacent pair with the lowest merge rank is merged, leftmost first,
//! until no pair has a merge — the rule of both HF `tokenizers` and tiktoken.
//!
//! The fast path starts byte-level words from whole characters where that
//! cannot change the result (see [`Bpe::char_tokens`]); [`Bpe::merge_word_reference`]
//! is the plain algorithm it is tested against.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::OnceLock;

use rustc_hash::FxHashMap;

use crate::token_store::{Refused, TokenStore};
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
    /// Token strings as the file writes them (for `tokens` and decoders),
    /// the bytes of each token (what merges concatenate), and ids by bytes.
    store: TokenStore,
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
    /// Tables derived from the vocabulary and merges on first use, reset
    /// by every edit.
    derived: OnceLock<Derived>,
}

/// "No merge" in the merge tables.
const NO_MERGE: Merge = Merge {
    rank: u32::MAX,
    id: u32::MAX,
};

fn pair_key(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

/// Symbols of the per-thread merge buffers kept between words (1.5 MiB).
const KEPT_SYMBOLS: usize = 1 << 16;

/// Words longer than this many symbols merge with a heap instead of scans.
const HEAP_THRESHOLD: usize = 16;

impl Bpe {
    /// An empty model of the given symbol kind.
    pub(crate) fn empty(symbols: Symbols) -> Self {
        Self {
            store: TokenStore::default(),
            merges: FxHashMap::default(),
            symbols,
            byte_ids: [None; 256],
            unk: None,
            fuse_unk: false,
            byte_fallback: false,
            whole_word_first: false,
            continuing_subword_prefix: None,
            end_of_word_suffix: None,
            derived: OnceLock::new(),
        }
    }

    /// Forgets what was derived from the tables (after an edit).
    fn edited(&mut self) {
        self.derived = OnceLock::new();
    }

    /// Adds token `id` with display string `text` and merge bytes `bytes`.
    pub(crate) fn insert(&mut self, origin: &str, id: u32, text: &str, bytes: &[u8]) -> Result<()> {
        self.edited();
        let refused =
            |why: String| TokenizerError::bad_entry(origin, format!("token {text:?}"), why);
        match self.store.insert(id, text, bytes) {
            Ok(()) => {}
            Err(Refused::IdTaken) => return Err(refused(format!("id {id} is used twice"))),
            Err(Refused::SameBytes(previous)) => {
                return Err(refused(format!(
                    "same bytes as id {previous}; ids {previous} and {id} collide"
                )));
            }
            Err(Refused::TooLarge) => {
                return Err(refused(format!(
                    "id {id} is too large: ids may lie at most {} past the number of tokens read before, and the vocabulary's text must stay below 4 GiB",
                    crate::token_store::MAX_ID_GAP
                )));
            }
        }
        if bytes.len() == 1 {
            self.byte_ids[bytes[0] as usize] = Some(id);
        }
        Ok(())
    }

    /// Gives back the spare capacity of the tables once the vocabulary and
    /// merges are complete (they grow by doubling while read).
    pub(crate) fn shrink_to_fit(&mut self) {
        self.store.shrink_to_fit();
        self.merges.shrink_to_fit();
    }

    /// Records that merging `left` and `right` makes `id` with priority `rank`
    /// (lower merges first). A pair already present keeps its first rank.
    pub(crate) fn add_merge(&mut self, left: u32, right: u32, rank: u32, id: u32) {
        self.edited();
        let merge = Merge { rank, id };
        self.merges.entry(pair_key(left, right)).or_insert(merge);
    }

    /// Number of id slots (one past the largest id).
    pub fn vocab_size(&self) -> usize {
        self.store.id_slots()
    }

    /// The id of a token given by its bytes.
    #[inline]
    pub fn id_of_bytes(&self, bytes: &[u8]) -> Option<u32> {
        self.store.id_of(bytes)
    }

    /// The token string of an id, as the vocabulary file writes it.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.store.text(id)
    }

    /// The bytes of an id's token (what merges join).
    pub fn bytes_of(&self, id: u32) -> Option<&[u8]> {
        self.store.bytes(id)
    }

    /// Every id with a token, with its bytes, in id order.
    pub(crate) fn token_bytes(&self) -> impl Iterator<Item = (u32, &[u8])> {
        self.store.iter_bytes()
    }

    /// Every id with a token, with its string, in id order.
    pub(crate) fn tokens(&self) -> impl Iterator<Item = (u32, &str)> {
        self.store.iter_text()
    }

    fn merge_of(&self, a: u32, b: u32) -> Option<Merge> {
        self.merges.get(&pair_key(a, b)).copied()
    }

    /// Encodes a word through the merges (no whole-word lookup).
    pub(crate) fn merge_word(&self, word: &[u8], out: &mut Vec<(u32, usize, usize)>) {
        thread_local! {
            static SCRATCH: std::cell::RefCell<(Vec<Symbol>, ScanScratch)> = const { std::cell::RefCell::new((Vec::new(), ScanScratch::new())) };
        }
        SCRATCH.with(|scratch| {
            let Ok(mut scratch) = scratch.try_borrow_mut() else {
                // Re-entered (cannot happen today): work without the scratch buffers.
                let mut symbols = Vec::new();
                self.initial_symbols(word, true, &mut symbols);
                self.merge_symbols(&mut symbols, &mut ScanScratch::new());
                out.extend(symbols.iter().map(|s| (s.id, s.start, s.end)));
                return;
            };
            let (symbols, scan) = &mut *scratch;
            symbols.clear();
            self.initial_symbols(word, true, symbols);
            self.merge_symbols(symbols, scan);
            out.extend(symbols.iter().map(|s| (s.id, s.start, s.end)));
            // A huge word's buffers are not kept for the thread's life.
            if symbols.capacity() > KEPT_SYMBOLS {
                *symbols = Vec::new();
                *scan = ScanScratch::new();
            }
        });
    }

    /// The plain algorithm, the reference of [`Bpe::merge_word`]: every
    /// word starts from single bytes (or characters) and the lowest-ranked,
    /// leftmost pair merges until none is left, one scan per merge.
    #[cfg(test)]
    pub(crate) fn merge_word_reference(&self, word: &[u8]) -> Vec<(u32, usize, usize)> {
        let mut symbols = Vec::new();
        self.initial_symbols(word, false, &mut symbols);
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| self.merge_of(w[0].id, w[1].id).map(|m| (m.rank, i, m.id)))
                .min();
            let Some((_, at, id)) = best else { break };
            symbols[at].id = id;
            symbols[at].end = symbols[at + 1].end;
            symbols.remove(at + 1);
        }
        symbols.iter().map(|s| (s.id, s.start, s.end)).collect()
    }

    fn merge_symbols(&self, symbols: &mut Vec<Symbol>, scratch: &mut ScanScratch) {
        if symbols.len() > HEAP_THRESHOLD {
            self.merge_with_heap(symbols);
        } else {
            self.merge_with_scan(symbols, scratch);
        }
    }

    /// Multi-byte characters whose bytes become their own token before any
    /// of them meets a neighbour, so a byte-level word may start from the
    /// character's token instead of its bytes with the same result.
    ///
    /// Merging a character's bytes alone must end in one token `t` whose
    /// highest merge rank is `b`. Whatever stands to the character's left
    /// ends in the byte just before it, and whatever stands to its right
    /// starts with the byte just after it. The character is safe after a
    /// byte `x` when every piece that is ever first in its build (`t`
    /// included) merges as a right operand, with a left operand ending in
    /// `x`, only at ranks above `b` — and safe before a byte `y` likewise
    /// for its last pieces. Then its pieces meet nothing until `t` exists,
    /// exactly as alone, and `t` meets nothing before rank `b`. The safe
    /// neighbour bytes are kept per character (all ASCII bytes as one
    /// class, continuation and lead bytes each on their own: [`CharToken`])
    /// and checked against the actual neighbours.
    fn char_tokens(&self) -> &FxHashMap<u32, CharToken> {
        &self.derived().char_tokens
    }

    /// The derived tables, built on first use.
    fn derived(&self) -> &Derived {
        self.derived.get_or_init(|| Derived {
            char_tokens: self.build_char_tokens(),
        })
    }

    /// Builds the table of [`Bpe::char_tokens`] (checked against
    /// [`Bpe::merge_word_reference`] by the tests below).
    fn build_char_tokens(&self) -> FxHashMap<u32, CharToken> {
        let mut table = FxHashMap::default();
        if self.symbols != Symbols::Bytes {
            return table;
        }
        // Each candidate character alone: its token, its top rank, and
        // the pieces that are ever first and last in its build.
        struct Build {
            code: u32,
            id: u32,
            top: u32,
            firsts: Vec<u32>,
            lasts: Vec<u32>,
        }
        let mut builds = Vec::new();
        for (id, bytes) in self.store.iter_bytes() {
            let Ok(text) = std::str::from_utf8(bytes) else {
                continue;
            };
            let mut chars = text.chars();
            let (Some(c), None) = (chars.next(), chars.next()) else {
                continue;
            };
            if c.is_ascii() {
                continue;
            }
            let Some(mut pieces) = bytes
                .iter()
                .map(|&b| self.byte_ids[b as usize])
                .collect::<Option<Vec<u32>>>()
            else {
                continue;
            };
            let mut firsts = vec![pieces[0]];
            let mut lasts = vec![pieces[pieces.len() - 1]];
            let mut top = 0;
            while let Some((rank, at, merged)) = pieces
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| {
                    self.merges
                        .get(&pair_key(w[0], w[1]))
                        .map(|m| (m.rank, i, m.id))
                })
                .min()
            {
                top = top.max(rank);
                pieces[at] = merged;
                pieces.remove(at + 1);
                firsts.push(pieces[0]);
                lasts.push(pieces[pieces.len() - 1]);
            }
            if pieces == [id] {
                builds.push(Build {
                    code: u32::from(c),
                    id,
                    top,
                    firsts,
                    lasts,
                });
            }
        }
        // For every first piece, the lowest rank of a merge with it on the
        // right, by the last byte of the left operand; for every last
        // piece, with it on the left, by the first byte of the right one.
        let mut as_right: FxHashMap<u32, EdgeRanks> = FxHashMap::default();
        let mut as_left: FxHashMap<u32, EdgeRanks> = FxHashMap::default();
        for build in &builds {
            for &p in &build.firsts {
                as_right.entry(p).or_insert_with(EdgeRanks::new);
            }
            for &p in &build.lasts {
                as_left.entry(p).or_insert_with(EdgeRanks::new);
            }
        }
        let edge_byte = |id: u32, last: bool| -> Option<u8> {
            let bytes = self.store.bytes(id)?;
            if last {
                bytes.last().copied()
            } else {
                bytes.first().copied()
            }
        };
        for (&key, merge) in &self.merges {
            let (left, right) = ((key >> 32) as u32, key as u32);
            if let Some(ranks) = as_right.get_mut(&right)
                && let Some(byte) = edge_byte(left, true)
            {
                ranks.lower(byte, merge.rank);
            }
            if let Some(ranks) = as_left.get_mut(&left)
                && let Some(byte) = edge_byte(right, false)
            {
                ranks.lower(byte, merge.rank);
            }
        }
        let never = EdgeRanks::new();
        for build in builds {
            let mut token = CharToken {
                id: build.id,
                after_ascii: true,
                before_ascii: true,
                after_continuation: u64::MAX,
                before_lead: u64::MAX,
            };
            for p in &build.firsts {
                let ranks = as_right.get(p).unwrap_or(&never);
                token.after_ascii &= ranks.ascii > build.top;
                token.after_continuation &= ranks.above(build.top);
            }
            for p in &build.lasts {
                let ranks = as_left.get(p).unwrap_or(&never);
                token.before_ascii &= ranks.ascii > build.top;
                token.before_lead &= ranks.above(build.top);
            }
            table.insert(build.code, token);
        }
        table
    }

    /// Cuts a word into its first symbols. As in HF, a symbol's span is the
    /// running sum of the lengths of the symbols before it, so a character
    /// dropped for lack of an unknown token shifts the spans after it.
    /// With `whole_chars`, byte-level words start from the characters of
    /// [`Bpe::char_tokens`] instead of their bytes.
    fn initial_symbols(&self, word: &[u8], whole_chars: bool, symbols: &mut Vec<Symbol>) {
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
                let chars = if whole_chars {
                    Some(self.char_tokens()).filter(|t| !t.is_empty())
                } else {
                    None
                };
                let mut i = 0;
                while i < word.len() {
                    let b = word[i];
                    if b >= 0xC0
                        && let Some(chars) = chars
                        && let Some((code, len)) = utf8_char_at(word, i)
                        && let Some(token) = chars.get(&code)
                        && token.fits(
                            i.checked_sub(1).map(|k| word[k]),
                            word.get(i + len).copied(),
                        )
                    {
                        push(symbols, &mut pos, token.id, len);
                        i += len;
                        continue;
                    }
                    if let Some(id) = self.byte_ids[b as usize].or(self.unk) {
                        push(symbols, &mut pos, id, 1);
                    }
                    i += 1;
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
                    if let Some(id) = self.store.id_of(key.as_bytes()) {
                        push(symbols, &mut pos, id, len);
                        unk_run = false;
                    } else if self.byte_fallback
                        && let Some(ids) = c
                            .encode_utf8(&mut [0; 4])
                            .bytes()
                            .map(|b| self.store.id_of(format!("<0x{b:02X}>").as_bytes()))
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
    /// `ranks[i]` is the rank of the pair starting at symbol `i` (`u32::MAX`:
    /// none) and `merged[i]` the token it makes; ranks sit apart so the scan
    /// for the minimum runs over a dense array.
    fn merge_with_scan(&self, symbols: &mut Vec<Symbol>, scratch: &mut ScanScratch) {
        let ScanScratch { ranks, merged } = scratch;
        ranks.clear();
        merged.clear();
        for w in symbols.windows(2) {
            let m = self.merge_of(w[0].id, w[1].id).unwrap_or(NO_MERGE);
            ranks.push(m.rank);
            merged.push(m.id);
        }
        let set = |ranks: &mut Vec<u32>, merged: &mut Vec<u32>, i: usize, a: u32, b: u32| {
            let m = self.merge_of(a, b).unwrap_or(NO_MERGE);
            ranks[i] = m.rank;
            merged[i] = m.id;
        };
        loop {
            let best = ranks.iter().copied().min().unwrap_or(u32::MAX);
            if best == u32::MAX {
                break;
            }
            let at = ranks.iter().position(|&r| r == best).unwrap_or(0);
            symbols[at].id = merged[at];
            symbols[at].end = symbols[at + 1].end;
            symbols.remove(at + 1);
            ranks.remove(at);
            merged.remove(at);
            if at + 1 < symbols.len() {
                set(ranks, merged, at, symbols[at].id, symbols[at + 1].id);
            } else {
                ranks.truncate(at);
                merged.truncate(at);
            }
            if at > 0 {
                set(ranks, merged, at - 1, symbols[at - 1].id, symbols[at].id);
            }
        }
    }

    /// Merges with a priority queue over a linked list (long words): the
    /// same order as the scan — lowest rank, then leftmost. Each queued pair
    /// carries its two ids and its merge, so a stale entry is told by
    /// comparing ids, without a second look-up.
    fn merge_with_heap(&self, symbols: &mut Vec<Symbol>) {
        const NONE: u32 = u32::MAX;
        let n = symbols.len();
        // Linked list over the symbols; a merged-away symbol has `alive` false.
        let mut next: Vec<u32> = (1..=n as u32).collect();
        let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::with_capacity(n);
        let queue =
            |heap: &mut BinaryHeap<Reverse<QueuedPair>>, at: usize, left: u32, right: u32| {
                let merge = self.merge_of(left, right).unwrap_or(NO_MERGE);
                if merge.rank != u32::MAX {
                    heap.push(Reverse(QueuedPair {
                        order: (u64::from(merge.rank) << 32) | at as u64,
                        left,
                        right,
                        merged: merge.id,
                    }));
                }
            };
        for i in 0..n - 1 {
            queue(&mut heap, i, symbols[i].id, symbols[i + 1].id);
        }
        while let Some(Reverse(pair)) = heap.pop() {
            let i = (pair.order & 0xFFFF_FFFF) as usize;
            let j = next[i] as usize;
            if !alive[i] || j >= n || symbols[i].id != pair.left || symbols[j].id != pair.right {
                continue;
            }
            symbols[i].id = pair.merged;
            symbols[i].end = symbols[j].end;
            alive[j] = false;
            next[i] = next[j];
            if (next[j] as usize) < n {
                prev[next[j] as usize] = i as u32;
            }
            let after = next[i] as usize;
            if after < n {
                queue(&mut heap, i, symbols[i].id, symbols[after].id);
            }
            let p = prev[i];
            if p != NONE {
                queue(&mut heap, p as usize, symbols[p as usize].id, symbols[i].id);
            }
        }
        let mut k = 0;
        symbols.retain(|_| {
            k += 1;
            alive[k - 1]
        });
    }
}

/// A pair waiting in [`Bpe::merge_with_heap`]'s queue, ordered by
/// `rank << 32 | position` alone.
#[derive(Clone, Copy, Debug)]
struct QueuedPair {
    order: u64,
    left: u32,
    right: u32,
    merged: u32,
}

impl PartialEq for QueuedPair {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order
    }
}

impl Eq for QueuedPair {}

impl PartialOrd for QueuedPair {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for QueuedPair {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order.cmp(&other.order)
    }
}

/// What [`Bpe`] derives from its tables on first use.
#[derive(Clone, Debug)]
struct Derived {
    /// See [`Bpe::char_tokens`].
    char_tokens: FxHashMap<u32, CharToken>,
}

/// Lowest merge ranks of one token by the edge byte of its partner: any
/// ASCII byte, or each of the 64 bytes 0x80–0xBF (continuation bytes, the
/// last byte of a partner on the left) or 0xC0–0xFF (lead bytes, the
/// first byte of a partner on the right) — `by_byte[byte & 63]`.
struct EdgeRanks {
    ascii: u32,
    by_byte: [u32; 64],
}

impl EdgeRanks {
    fn new() -> Self {
        Self {
            ascii: u32::MAX,
            by_byte: [u32::MAX; 64],
        }
    }

    fn lower(&mut self, byte: u8, rank: u32) {
        let slot = if byte < 0x80 {
            &mut self.ascii
        } else {
            &mut self.by_byte[usize::from(byte & 63)]
        };
        *slot = (*slot).min(rank);
    }

    /// Bit `k` set when every merge with a partner edge byte of low bits
    /// `k` ranks above `top`.
    fn above(&self, top: u32) -> u64 {
        self.by_byte
            .iter()
            .enumerate()
            .filter(|&(_, &rank)| rank > top)
            .fold(0, |mask, (k, _)| mask | (1 << k))
    }
}

/// A character that a byte-level word may start from whole, and next to
/// which neighbours, by the neighbour's edge byte (see [`Bpe::char_tokens`]).
#[derive(Clone, Copy, Debug)]
struct CharToken {
    id: u32,
    /// Safe after any ASCII byte.
    after_ascii: bool,
    /// Safe before any ASCII byte.
    before_ascii: bool,
    /// Bit `b & 63` set: safe after continuation byte `b` (0x80–0xBF).
    after_continuation: u64,
    /// Bit `b & 63` set: safe before lead byte `b` (0xC0–0xFF).
    before_lead: u64,
}

impl CharToken {
    /// Whether the character may start whole between the byte `before` it
    /// and the byte `after` it (`None`: the word's edge). In valid UTF-8
    /// a character follows ASCII or a continuation byte and precedes ASCII
    /// or a lead byte; anything else is refused.
    fn fits(&self, before: Option<u8>, after: Option<u8>) -> bool {
        let bit = |mask: u64, b: u8| mask & (1 << (b & 63)) != 0;
        let left = match before {
            None => true,
            Some(0x00..=0x7F) => self.after_ascii,
            Some(b @ 0x80..=0xBF) => bit(self.after_continuation, b),
            Some(_) => false,
        };
        let right = match after {
            None => true,
            Some(0x00..=0x7F) => self.before_ascii,
            Some(b @ 0xC0..=0xFF) => bit(self.before_lead, b),
            Some(_) => false,
        };
        left && right
    }
}

/// The code point and byte length of the UTF-8 character starting at
/// `word[i]`, when a complete, valid one starts there.
fn utf8_char_at(word: &[u8], i: usize) -> Option<(u32, usize)> {
    let len = match word[i] {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return None,
    };
    let bytes = word.get(i..i + len)?;
    let c = std::str::from_utf8(bytes).ok()?.chars().next()?;
    Some((u32::from(c), len))
}

/// Reused buffers of [`Bpe::merge_with_scan`].
struct ScanScratch {
    ranks: Vec<u32>,
    merged: Vec<u32>,
}

impl ScanScratch {
    const fn new() -> Self {
        Self {
            ranks: Vec::new(),
            merged: Vec::new(),
        }
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
            bpe.insert("test", id as u32, t, t.as_bytes()).unwrap();
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
        bpe.merge_with_scan(&mut b, &mut ScanScratch::new());
        let b: Vec<(u32, usize, usize)> = b.iter().map(|s| (s.id, s.start, s.end)).collect();
        assert_eq!(a, b);
        let mut short = Vec::new();
        bpe.merge_word(b"abcbc", &mut short);
        assert_eq!(short, vec![(4, 0, 3), (5, 3, 5)]);
    }

    /// A byte-level vocabulary grown by random steps over the bytes of a
    /// few multi-byte characters and ASCII letters. A step either takes the
    /// next merge that builds one of the characters (left to right) or
    /// merges two random tokens made so far, so merges across character
    /// boundaries, and merges of partly built characters, sometimes rank
    /// before a character is complete.
    fn random_vocab(steps: &[(bool, usize, usize)]) -> Bpe {
        let mut bpe = byte_vocab();
        let chars: Vec<Vec<u8>> = ["é", "中", "文", "😀"]
            .iter()
            .map(|c| c.bytes().collect())
            .collect();
        // How many bytes of each character its build has joined so far.
        let mut built = vec![1usize; chars.len()];
        let mut made: Vec<u32> = "ab é中文😀".bytes().map(u32::from).collect();
        for (rank, &(build, x, y)) in steps.iter().enumerate() {
            let (l, r) = if build {
                let c = x % chars.len();
                if built[c] == chars[c].len() {
                    continue;
                }
                let prefix = bpe.id_of_bytes(&chars[c][..built[c]]).unwrap();
                let byte = u32::from(chars[c][built[c]]);
                built[c] += 1;
                (prefix, byte)
            } else {
                (made[x % made.len()], made[y % made.len()])
            };
            let (id, new) = add_test_merge(&mut bpe, l, r, rank as u32);
            if new {
                made.push(id);
            }
        }
        bpe
    }

    /// A byte-level vocabulary of the 256 single bytes (id = byte value).
    fn byte_vocab() -> Bpe {
        let mut bpe = Bpe::empty(Symbols::Bytes);
        for b in 0..=255u8 {
            bpe.insert("test", u32::from(b), &format!("{b}"), &[b])
                .unwrap();
        }
        bpe
    }

    /// Adds the merge `l + r` at `rank`, making the joined token (with the
    /// next free id) when the vocabulary lacks it; its id, and whether it
    /// is new.
    fn add_test_merge(bpe: &mut Bpe, l: u32, r: u32, rank: u32) -> (u32, bool) {
        let bytes: Vec<u8> = [
            bpe.bytes_of(l).unwrap().to_vec(),
            bpe.bytes_of(r).unwrap().to_vec(),
        ]
        .concat();
        let (id, new) = match bpe.id_of_bytes(&bytes) {
            Some(id) => (id, false),
            None => {
                let id = bpe.vocab_size() as u32;
                bpe.insert("test", id, &format!("t{id}"), &bytes).unwrap();
                (id, true)
            }
        };
        bpe.add_merge(l, r, rank, id);
        (id, new)
    }

    /// Every character's own merges first, then pairs of characters: the
    /// shape of a trained vocabulary, where whole characters are used.
    fn trained_like_vocab() -> Bpe {
        let mut bpe = byte_vocab();
        let mut rank = 0u32;
        let mut add = |bpe: &mut Bpe, l: u32, r: u32| -> u32 {
            let (id, _) = add_test_merge(bpe, l, r, rank);
            rank += 1;
            id
        };
        let mut whole = Vec::new();
        for c in ['é', '中', '文', '😀'] {
            let bytes: Vec<u32> = c.to_string().bytes().map(u32::from).collect();
            let mut id = add(&mut bpe, bytes[0], bytes[1]);
            for &b in &bytes[2..] {
                id = add(&mut bpe, id, b);
            }
            whole.push(id);
        }
        add(&mut bpe, whole[1], whole[2]);
        add(&mut bpe, whole[2], whole[1]);
        add(&mut bpe, u32::from(b'a'), whole[0]);
        bpe
    }

    #[test]
    fn trained_vocabularies_start_from_whole_characters() {
        let bpe = trained_like_vocab();
        assert_eq!(bpe.char_tokens().len(), 4);
        assert!(
            bpe.char_tokens()
                .values()
                .all(|t| t.after_continuation != 0)
        );
        let word = "a中文é😀文中".as_bytes();
        let mut fast = Vec::new();
        bpe.merge_word(word, &mut fast);
        assert_eq!(fast, bpe.merge_word_reference(word));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 1000, failure_persistence: None, ..Default::default() })]

        /// The fast path (whole characters, scan or heap) gives the
        /// reference's tokens and spans for any vocabulary and word.
        #[test]
        fn fast_merge_matches_the_reference(
            steps in proptest::collection::vec((proptest::bool::ANY, 0usize..64, 0usize..64), 0..80),
            trained in proptest::bool::ANY,
            word in proptest::collection::vec(proptest::sample::select(vec!["a", "b", " ", "é", "中", "文", "😀", "\u{80}"]), 0..40),
        ) {
            let bpe = if trained { trained_like_vocab() } else { random_vocab(&steps) };
            let word = word.concat();
            let mut fast = Vec::new();
            bpe.merge_word(word.as_bytes(), &mut fast);
            proptest::prop_assert_eq!(fast, bpe.merge_word_reference(word.as_bytes()));
        }
    }

    /// The committed vocabulary trained by HF `tokenizers` on English and
    /// Chinese text, and the characters of the committed test inputs.
    fn hf_trained() -> (&'static Bpe, &'static [char]) {
        static LOADED: OnceLock<(crate::Tokenizer, Vec<char>)> = OnceLock::new();
        let (tokenizer, chars) = LOADED.get_or_init(|| {
            let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/tokenizer/");
            let tokenizer =
                crate::Tokenizer::from_file(format!("{root}hf_trained_en_zh.json")).unwrap();
            let inputs = std::fs::read_to_string(format!("{root}inputs.json")).unwrap();
            let mut chars: Vec<char> = inputs.chars().collect();
            chars.sort_unstable();
            chars.dedup();
            (tokenizer, chars)
        });
        (tokenizer.model(), chars)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 500, failure_persistence: None, ..Default::default() })]

        /// On a real trained vocabulary (which starts most Chinese
        /// characters whole), any word of the inputs' characters.
        #[test]
        fn fast_merge_matches_the_reference_on_a_trained_vocabulary(
            picks in proptest::collection::vec(proptest::num::usize::ANY, 0..40),
        ) {
            let (bpe, chars) = hf_trained();
            proptest::prop_assert!(bpe.char_tokens().len() > 100);
            let word: String = picks.iter().map(|&k| chars[k % chars.len()]).collect();
            let mut fast = Vec::new();
            bpe.merge_word(word.as_bytes(), &mut fast);
            proptest::prop_assert_eq!(fast, bpe.merge_word_reference(word.as_bytes()));
        }
    }
}
