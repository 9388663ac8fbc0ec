//! Duplicate n-gram statistics of Gopher's repetition rules without building
//! an n-gram string.
//!
//! Two notions of "the same n-gram" are needed, and each gets its own exact
//! method:
//!
//! - [`Ngrams::top_duplicate`] counts n-grams as word sequences (datatrove
//!   joins them with spaces). Words are interned to ids, and the n-grams of
//!   each length are numbered from the (n−1)-grams: the n-gram at `i` is the
//!   pair (id of the (n−1)-gram at `i`, id of word `i + n − 1`), an exact
//!   64-bit key. An n-gram can only occur twice where the (n−1)-grams at `i`
//!   and `i + 1` both do, so each length only visits the positions the
//!   previous one found repeated: a sparse list that shrinks quickly.
//! - [`Ngrams::all_duplicate`] compares n-grams by their concatenation
//!   (datatrove joins them with `""`, so `ab c` equals `a bc`). Every
//!   concatenation is hashed in O(1) from prefix sums of a polynomial hash
//!   over the words' concatenated bytes, equal hashes are confirmed by
//!   comparing bytes, and only n-grams shorter than 16 bytes or whose first
//!   16 or 32 bytes also start at another word are visited (the
//!   shared-start filters, computed once per document).
//!
//! Both answer exactly what the naive versions in the `naive` module
//! answer, which the proptests below check.

/// Polynomial base (odd, so invertible modulo 2^64).
const B: u64 = 0x9E37_79B9_7F4A_7C15 | 1;

/// The multiplier that spreads keys over a table.
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// The inverse of an odd number modulo 2^64 (Newton's iteration).
const fn inverse(a: u64) -> u64 {
    let mut x = a; // correct to 3 bits
    let mut i = 0;
    while i < 6 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
        i += 1;
    }
    x
}

const B_INV: u64 = inverse(B);

/// Entries of the power table.
const POW_TABLE: usize = 256;

const fn powers<const N: usize>(base: u64) -> [u64; N] {
    let mut table = [1u64; N];
    let mut i = 1;
    while i < N {
        table[i] = table[i - 1].wrapping_mul(base);
        i += 1;
    }
    table
}

/// `B^k` for `k < POW_TABLE`, `B^-k` for `k <= 8`.
const POW: [u64; POW_TABLE] = powers(B);
const INV_POW: [u64; 9] = powers(B_INV);

/// `GEO[l]` = `B^0 + … + B^(l-1)`.
const GEO: [u64; 9] = {
    let mut table = [0u64; 9];
    let mut i = 1;
    while i < 9 {
        table[i] = table[i - 1].wrapping_add(POW[i - 1]);
        i += 1;
    }
    table
};

/// `B^len`.
#[inline]
fn pow_len(len: usize) -> u64 {
    if len < POW_TABLE {
        return POW[len];
    }
    let (mut result, mut base, mut e) = (1u64, B, len);
    while e > 0 {
        if e & 1 == 1 {
            result = result.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        e >>= 1;
    }
    result
}

/// The polynomial hash `Σ (b_t + 1)·B^(len-1-t)` of the `len <= 8` bytes in
/// `v` (little-endian, bytes from `len` on zero): independent products
/// rather than a chain of one multiplication per byte.
#[inline(always)]
fn chunk_hash(v: u64, len: usize) -> u64 {
    let mut sum = 0u64;
    for t in 0..8 {
        sum = sum.wrapping_add(((v >> (8 * t)) & 0xFF).wrapping_mul(POW[7 - t]));
    }
    sum.wrapping_mul(INV_POW[8 - len]).wrapping_add(GEO[len])
}

/// Characters among the `len <= 8` bytes in `v` (bytes from `len` on zero):
/// the bytes that are not UTF-8 continuation bytes (`10xxxxxx`).
#[inline(always)]
fn chunk_chars(v: u64, len: usize) -> usize {
    let continuation = v & !(v << 1) & 0x8080_8080_8080_8080;
    len - continuation.count_ones() as usize
}

/// The low `len <= 8` bytes of `v`.
#[inline(always)]
fn low_bytes(v: u64, len: usize) -> u64 {
    if len >= 8 {
        v
    } else {
        v & ((1u64 << (8 * len)) - 1)
    }
}

/// Up to 8 bytes as a little-endian `u64`, zero padded.
#[inline]
fn word_bytes(bytes: &[u8]) -> u64 {
    let mut v = [0u8; 8];
    let n = bytes.len().min(8);
    v[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(v)
}

/// The little-endian `u64` at `at` (`at + 8 <= bytes.len()`).
#[inline(always)]
fn load_u64(bytes: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(v)
}

/// Window widths (bytes) of the shared-start filters, narrowest first.
const SHARED_WIDTHS: [usize; 2] = [16, 32];

/// Zero bytes after the words in `cat`, so that 8-byte loads never run past
/// its end.
const PAD: usize = 8;

/// One entry of a [`Table`]; a slot whose `stamp` is not the table's
/// current one is empty.
#[derive(Clone, Copy, Default)]
struct Entry {
    key: u64,
    first: u32,
    count: u32,
    stamp: u32,
}

/// An open-addressing table from 64-bit keys to (first position, count),
/// emptied and sized for each use. Emptying bumps a stamp instead of
/// clearing the slots.
#[derive(Default)]
struct Table {
    slots: Vec<Entry>,
    /// Slots in use: a power of two, at most `slots.len()`.
    cap: usize,
    shift: u32,
    /// The stamp of the entries filled since the last `reset`.
    stamp: u32,
}

impl Table {
    /// Empties the table and sizes it for `entries` keys (load ≤ 1/4, so
    /// that most probes end at the first slot).
    fn reset(&mut self, entries: usize) {
        let cap = (entries * 4).next_power_of_two().max(16);
        if self.stamp == u32::MAX {
            // Stamps wrapped: clear them all once.
            self.slots.clear();
            self.stamp = 0;
        }
        if self.slots.len() < cap {
            self.slots.resize(cap, Entry::default());
        }
        self.stamp += 1;
        self.cap = cap;
        self.shift = 64 - cap.trailing_zeros();
    }

    /// Whether `e` is filled (since the last reset).
    #[inline]
    fn filled(&self, e: &Entry) -> bool {
        e.stamp == self.stamp
    }

    /// Fills the empty slot `k` with `key` first seen at `pos`.
    #[inline]
    fn insert(&mut self, k: usize, key: u64, pos: u32) {
        self.slots[k] = Entry {
            key,
            first: pos,
            count: 1,
            stamp: self.stamp,
        };
    }

    /// The slot holding `key` (confirmed by `same`, given the entry's first
    /// position) and `true`, or the empty slot where it belongs and `false`.
    #[inline]
    fn find(&self, key: u64, mut same: impl FnMut(u32) -> bool) -> (usize, bool) {
        let mask = self.cap - 1;
        let mut k = (key.wrapping_mul(MIX) >> self.shift) as usize;
        loop {
            let e = self.slots[k];
            if !self.filled(&e) {
                return (k, false);
            }
            if e.key == key && same(e.first) {
                return (k, true);
            }
            k = (k + 1) & mask;
        }
    }

    /// Counts one occurrence of `key` at `pos`, keys compared as they are;
    /// returns its slot. The probe has one exit and the update no branch,
    /// as whether a key is new is unpredictable.
    #[inline]
    fn count(&mut self, key: u64, pos: u32) -> usize {
        let mask = self.cap - 1;
        let mut k = (key.wrapping_mul(MIX) >> self.shift) as usize;
        loop {
            let e = self.slots[k];
            if !self.filled(&e) || e.key == key {
                break;
            }
            k = (k + 1) & mask;
        }
        let stamp = self.stamp;
        let e = &mut self.slots[k];
        let filled = e.stamp == stamp;
        e.first = if filled { e.first } else { pos };
        e.count = if filled { e.count + 1 } else { 1 };
        e.key = key;
        e.stamp = stamp;
        k
    }
}

/// Keeps the entries of `list` for which `keep` holds, without a branch per
/// entry.
#[inline]
fn retain_branchless(list: &mut Vec<u32>, mut keep: impl FnMut(u32) -> bool) {
    let mut w = 0;
    for r in 0..list.len() {
        let v = list[r];
        list[w] = v;
        w += usize::from(keep(v));
    }
    list.truncate(w);
}

/// Reusable buffers for the n-gram statistics of one document's words.
///
/// Positions, word ids and table slots are `u32`: a document would need
/// over 2^31 words (gigabytes of text per record) to overflow them.
#[derive(Default)]
pub(crate) struct Ngrams {
    /// The words' bytes, concatenated, then `PAD` zero bytes.
    cat: Vec<u8>,
    /// Byte offset of word `k` in `cat` (one more entry than words).
    off: Vec<usize>,
    /// Prefix sums of the words' lengths in characters.
    chars: Vec<usize>,
    /// Polynomial hash of `cat[..off[k]]`.
    prefix: Vec<u64>,
    /// A key of word `k`: its bytes and length for words of at most 7
    /// bytes (exact), else its hash with the top byte 0xFF (confirmed).
    word_key: Vec<u64>,
    /// Word id of each position (its slot in the level-1 table).
    ids: Vec<u32>,
    /// The word-sequence table of the current `level`.
    table: Table,
    /// The n-gram length `table`, `gid` and `rep` describe (0: none yet).
    level: usize,
    /// Positions whose `level`-gram occurs more than once, ascending.
    rep: Vec<u32>,
    /// The id (slot in `table`) of the `level`-gram at each position of
    /// `rep` (other entries are stale).
    gid: Vec<u32>,
    /// Table of the shared-start filters and the concatenation passes.
    aux: Table,
    /// Slot of each position in `aux` while the filters are computed.
    slot_of: Vec<u32>,
    /// Bit `w` set: the `SHARED_WIDTHS[w]` bytes of `cat` from word `k` on
    /// also start at another word.
    shared: Vec<u8>,
    shared_ready: bool,
    /// The concatenation candidates of n-grams of length `cand_n` (0: none).
    cand: Vec<u32>,
    cand_n: usize,
    /// Scratch list.
    tmp: Vec<u32>,
}

impl Ngrams {
    /// Loads the words of a document, given as byte ranges of `text`.
    pub(crate) fn load(&mut self, text: &str, spans: &[(usize, usize)]) {
        let src = text.as_bytes();
        self.off.clear();
        self.chars.clear();
        self.prefix.clear();
        self.word_key.clear();
        self.word_key.reserve(spans.len());
        self.off.reserve(spans.len() + 1);
        self.chars.reserve(spans.len() + 1);
        self.prefix.reserve(spans.len() + 1);
        self.off.push(0);
        self.chars.push(0);
        self.prefix.push(0);
        // Words are disjoint ranges of the text, so `cat` is no longer.
        self.cat.clear();
        self.cat.resize(src.len() + PAD, 0);
        let (mut h, mut pos, mut nchars) = (0u64, 0usize, 0usize);
        for &(a, b) in spans {
            let len = b - a;
            if pos + len + PAD > self.cat.len() {
                self.cat.resize(pos + len + PAD, 0);
            }
            let key = if len <= 8 && a + 8 <= src.len() {
                // One 8-byte load, store and hash for a short word.
                let v = low_bytes(load_u64(src, a), len);
                self.cat[pos..pos + 8].copy_from_slice(&v.to_le_bytes());
                let word = chunk_hash(v, len);
                h = h.wrapping_mul(POW[len]).wrapping_add(word);
                nchars += chunk_chars(v, len);
                if len < 8 {
                    v | (len as u64) << 56
                } else {
                    word | 0xFF << 56
                }
            } else {
                let bytes = &src[a..b];
                self.cat[pos..pos + len].copy_from_slice(bytes);
                let mut word = 0u64;
                for chunk in bytes.chunks(8) {
                    let mut v = [0u8; 8];
                    v[..chunk.len()].copy_from_slice(chunk);
                    let v = u64::from_le_bytes(v);
                    let part = chunk_hash(v, chunk.len());
                    h = h.wrapping_mul(POW[chunk.len()]).wrapping_add(part);
                    word = word.wrapping_mul(POW[chunk.len()]).wrapping_add(part);
                    nchars += chunk_chars(v, chunk.len());
                }
                if len < 8 {
                    low_bytes(word_bytes(bytes), len) | (len as u64) << 56
                } else {
                    word | 0xFF << 56
                }
            };
            self.word_key.push(key);
            pos += len;
            self.off.push(pos);
            self.chars.push(nchars);
            self.prefix.push(h);
        }
        self.cat.truncate(pos);
        self.cat.extend_from_slice(&[0; PAD]);
        self.level = 0;
        self.shared_ready = false;
        self.cand_n = 0;
    }

    /// Loads the words of a document (for tests).
    #[cfg(test)]
    pub(crate) fn load_words(&mut self, words: &[&str]) {
        let text = words.join(" ");
        let mut spans = Vec::new();
        let mut at = 0;
        for w in words {
            spans.push((at, at + w.len()));
            at += w.len() + 1;
        }
        self.load(&text, &spans);
    }

    /// Number of words loaded.
    pub(crate) fn len(&self) -> usize {
        self.off.len() - 1
    }

    /// Polynomial hash of the concatenation of words `i..i + n`.
    #[inline]
    fn hash(&self, i: usize, n: usize) -> u64 {
        let j = i + n;
        let scale = pow_len(self.off[j] - self.off[i]);
        self.prefix[j].wrapping_sub(self.prefix[i].wrapping_mul(scale))
    }

    /// The concatenation of words `i..i + n`.
    #[inline]
    fn concat(&self, i: usize, n: usize) -> &[u8] {
        &self.cat[self.off[i]..self.off[i + n]]
    }

    /// Whether words `i` and `j` are equal, comparing short words as
    /// masked 8-byte loads (`cat` is padded for them).
    #[inline]
    fn same_word(&self, i: usize, j: usize) -> bool {
        let (a, b) = (self.off[i], self.off[j]);
        let len = self.off[i + 1] - a;
        if len != self.off[j + 1] - b {
            return false;
        }
        if len <= 8 {
            low_bytes(load_u64(&self.cat, a) ^ load_u64(&self.cat, b), len) == 0
        } else {
            self.cat[a..a + len] == self.cat[b..b + len]
        }
    }

    /// Characters of the n-gram's concatenation.
    #[inline]
    pub(crate) fn chars(&self, i: usize, n: usize) -> usize {
        self.chars[i + n] - self.chars[i]
    }

    /// Level 1 of the word-sequence numbering: interns the words.
    fn intern(&mut self) {
        let words = self.len();
        let mut table = std::mem::take(&mut self.table);
        table.reset(words);
        self.ids.clear();
        // By key first; the keys of words of at most 7 bytes are the words
        // themselves, the others are hashes (their own key range), so only
        // those are compared with the first word of their id. If a hash was
        // shared by different words, again comparing bytes at every probe.
        for k in 0..words {
            self.ids
                .push(table.count(self.word_key[k], k as u32) as u32);
        }
        let exact = (0..words).fold(true, |ok, k| {
            ok & (self.word_key[k] >> 56 != 0xFF
                || self.same_word(table.slots[self.ids[k] as usize].first as usize, k))
        });
        if !exact {
            self.intern_comparing(&mut table);
        }
        self.finish_intern(table);
    }

    /// Interns the words comparing bytes at every probe.
    fn intern_comparing(&mut self, table: &mut Table) {
        let words = self.len();
        table.reset(words);
        self.ids.clear();
        for k in 0..words {
            let key = self.word_key[k];
            let (slot, found) = table.find(key, |f| self.same_word(f as usize, k));
            if found {
                table.slots[slot].count += 1;
            } else {
                table.insert(slot, key, k as u32);
            }
            self.ids.push(slot as u32);
        }
    }

    /// Level 1 from the interned words.
    fn finish_intern(&mut self, table: Table) {
        let words = self.len();
        self.rep.clear();
        self.rep.extend(0..words as u32);
        let ids = &self.ids;
        retain_branchless(&mut self.rep, |k| {
            table.slots[ids[k as usize] as usize].count > 1
        });
        self.gid.clear();
        self.gid.extend_from_slice(&self.ids);
        self.table = table;
        self.level = 1;
    }

    /// Numbers the (`level` + 1)-grams from the `level`-grams.
    fn next_level(&mut self) {
        let m = self.level;
        // The (m+1)-gram at i repeats only if the m-grams at i and i + 1 do.
        self.tmp.clear();
        self.tmp.extend_from_slice(&self.rep);
        let mut w = 0;
        for r in 1..self.tmp.len() {
            let (prev, cur) = (self.tmp[r - 1], self.tmp[r]);
            self.tmp[w] = prev;
            w += usize::from(cur == prev + 1);
        }
        self.tmp.truncate(w);
        self.table.reset(self.tmp.len());
        for &i in &self.tmp {
            let i = i as usize;
            let key = (u64::from(self.gid[i]) << 32) | u64::from(self.ids[i + m]);
            self.gid[i] = self.table.count(key, i as u32) as u32;
        }
        self.rep.clear();
        self.rep.extend_from_slice(&self.tmp);
        let (table, gid) = (&self.table, &self.gid);
        retain_branchless(&mut self.rep, |i| {
            table.slots[gid[i as usize] as usize].count > 1
        });
        self.level = m + 1;
    }

    /// datatrove's `find_top_duplicate(get_n_grams(words, n))`: the length
    /// of the most frequent n-gram (words joined by `sep` characters) times
    /// its count; ties go to the n-gram seen first. `None` without n-grams.
    pub(crate) fn top_duplicate(&mut self, n: usize, sep: usize) -> Option<usize> {
        let words = self.len();
        if n == 0 || words < n {
            return None;
        }
        if self.level == 0 || self.level > n {
            self.intern();
        }
        while self.level < n {
            self.next_level();
        }
        // The first n-gram occurs at least once: it wins unless another
        // occurs more often, and only those in `rep` do.
        let (mut count, mut first) = (1u32, 0u32);
        for &i in &self.rep {
            let e = self.table.slots[self.gid[i as usize] as usize];
            if e.count > count || (e.count == count && e.first < first) {
                (count, first) = (e.count, e.first);
            }
        }
        Some((self.chars(first as usize, n) + sep * (n - 1)) * count as usize)
    }

    /// A key of the `SHARED_WIDTHS[w]` bytes of `cat` at `at`: equal
    /// windows have equal keys (a collision only adds a candidate).
    #[inline]
    fn window_key(&self, at: usize, w: usize) -> u64 {
        const K: u64 = 0xC2B2_AE3D_27D4_EB4F;
        let c = &self.cat;
        let k = load_u64(c, at).wrapping_mul(K) ^ load_u64(c, at + 8);
        if w == 0 {
            return k;
        }
        let k = k.wrapping_mul(K) ^ load_u64(c, at + 16);
        k.wrapping_mul(K) ^ load_u64(c, at + 24)
    }

    /// Fills `shared` (see its field). Two equal 32-byte windows start with
    /// equal 16-byte ones, so only positions whose 16-byte window is shared
    /// are keyed at 32 bytes.
    fn mark_shared_starts(&mut self) {
        let words = self.len();
        let total = self.cat.len() - PAD;
        self.shared.clear();
        self.shared.resize(words, 0);
        let mut aux = std::mem::take(&mut self.aux);
        // Positions with a window of `width` bytes form a prefix.
        let limits =
            SHARED_WIDTHS.map(|width| self.off[..words].partition_point(|&o| o + width <= total));
        self.tmp.clear();
        self.tmp.extend(0..limits[0] as u32);
        for (w, &limit) in limits.iter().enumerate() {
            if w > 0 {
                let bit = 1 << (w - 1);
                let shared = &self.shared;
                retain_branchless(&mut self.tmp, |i| {
                    (i as usize) < limit && shared[i as usize] & bit != 0
                });
            }
            aux.reset(self.tmp.len());
            self.slot_of.clear();
            for &i in &self.tmp {
                let key = self.window_key(self.off[i as usize], w);
                self.slot_of.push(aux.count(key, i) as u32);
            }
            for (k, &i) in self.tmp.iter().enumerate() {
                let repeated = aux.slots[self.slot_of[k] as usize].count > 1;
                self.shared[i as usize] |= u8::from(repeated) << w;
            }
        }
        self.aux = aux;
        self.shared_ready = true;
    }

    /// Whether the n-gram at `i` (of `len` bytes) may equal another one:
    /// two n-grams with equal concatenations of at least `width` bytes
    /// start with equal `width` bytes, so an n-gram whose widest applicable
    /// window is not shared with another word start is unique. A longer
    /// n-gram at `i` is only a candidate if the shorter one is.
    #[inline]
    fn concat_candidate(&self, i: usize, len: usize) -> bool {
        match len {
            0..16 => true,
            16..32 => self.shared[i] & 1 != 0,
            _ => self.shared[i] & 2 != 0,
        }
    }

    /// datatrove's `find_all_duplicate(words, n)`: characters of n-grams
    /// (concatenated without separator) already seen, skipping past each
    /// repeat.
    pub(crate) fn all_duplicate(&mut self, n: usize) -> usize {
        let words = self.len();
        if n == 0 || words < n {
            return 0;
        }
        if !self.shared_ready {
            self.mark_shared_starts();
        }
        let positions = words - n + 1;
        // A unique n-gram is never found, and adding it to the table could
        // never make another n-gram found, so the pass skips it.
        let mut cand = std::mem::take(&mut self.cand);
        if self.cand_n == 0 || self.cand_n > n {
            cand.clear();
            cand.extend(0..positions as u32);
        }
        retain_branchless(&mut cand, |i| {
            let i = i as usize;
            i < positions && self.concat_candidate(i, self.off[i + n] - self.off[i])
        });
        self.cand_n = n;
        let mut aux = std::mem::take(&mut self.aux);
        aux.reset(cand.len());
        let mut repeated = 0usize;
        let mut next = 0usize;
        for &i in &cand {
            let i = i as usize;
            if i < next {
                continue;
            }
            let h = self.hash(i, n);
            let gram = self.concat(i, n);
            let (slot, found) = aux.find(h, |f| self.concat(f as usize, n) == gram);
            if found {
                repeated += self.chars(i, n);
                next = i + n;
            } else {
                aux.insert(slot, h, i as u32);
                next = i + 1;
            }
        }
        self.aux = aux;
        self.cand = cand;
        repeated
    }
}

/// The naive versions, for tests.
#[cfg(test)]
pub(crate) mod naive {
    use std::collections::{HashMap, HashSet};

    /// Counter over word sequences; length of the words plus `sep` characters between.
    pub(crate) fn top_duplicate(words: &[&str], n: usize, sep: usize) -> Option<usize> {
        if n == 0 || words.len() < n {
            return None;
        }
        let grams: Vec<&[&str]> = words.windows(n).collect();
        let mut counts: HashMap<&[&str], (usize, usize)> = HashMap::new();
        for (i, g) in grams.iter().enumerate() {
            counts.entry(*g).or_insert((0, i)).0 += 1;
        }
        let (g, (c, _)) = counts
            .into_iter()
            .max_by(|a, b| a.1.0.cmp(&b.1.0).then(b.1.1.cmp(&a.1.1)))?;
        Some((g.iter().map(|w| w.chars().count()).sum::<usize>() + sep * (n - 1)) * c)
    }

    pub(crate) fn all_duplicate(words: &[&str], n: usize) -> usize {
        if n == 0 || words.len() < n {
            return 0;
        }
        let mut unique = HashSet::new();
        let (mut rep, mut idx) = (0, 0);
        while idx < words.len() - n + 1 {
            let g = words[idx..idx + n].concat();
            if unique.contains(&g) {
                rep += g.chars().count();
                idx += n;
            } else {
                unique.insert(g);
                idx += 1;
            }
        }
        rep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table_stamps_wrap() {
        let mut t = Table::default();
        t.reset(4);
        t.stamp = u32::MAX - 1;
        for round in 0..4u32 {
            t.reset(4);
            for pos in 0..6u32 {
                t.count(u64::from(pos % 3 + round), pos);
            }
            let counts: Vec<(u32, u32)> = (0..3u32)
                .map(|k| {
                    let (slot, found) = t.find(u64::from(k + round), |_| true);
                    assert!(found);
                    (t.slots[slot].first, t.slots[slot].count)
                })
                .collect();
            assert_eq!(counts, [(0, 2), (1, 2), (2, 2)]);
            assert!(!t.find(99, |_| true).1);
        }
    }

    #[test]
    fn inverse_is_inverse() {
        assert_eq!(B.wrapping_mul(B_INV), 1);
    }

    #[test]
    fn concat_semantics() {
        // "ab c" and "a bc" concatenate to the same key.
        let words = ["ab", "c", "x", "a", "bc"];
        let mut g = Ngrams::default();
        g.load_words(&words);
        assert_eq!(g.all_duplicate(2), naive::all_duplicate(&words, 2));
        assert_eq!(g.all_duplicate(2), 3);
        assert_eq!(g.top_duplicate(2, 1), naive::top_duplicate(&words, 2, 1));
    }

    #[test]
    fn long_words_and_windows() {
        // Words longer than the power table and windows of every width,
        // with shifted word boundaries inside long repeats.
        let long = "x".repeat(70);
        let longer = "x".repeat(140);
        let words = [
            long.as_str(),
            long.as_str(),
            "abcdefghij",
            "klmnopqrstuvwxyz",
            longer.as_str(),
            "abcde",
            "fghijklmnopqrstuvwxyz",
            long.as_str(),
            long.as_str(),
            "abcdefghij",
            "klmnopqrstuvwxyz",
        ];
        let mut g = Ngrams::default();
        g.load_words(&words);
        for n in 1..words.len() + 2 {
            assert_eq!(
                g.all_duplicate(n),
                naive::all_duplicate(&words, n),
                "all {n}"
            );
            assert_eq!(
                g.top_duplicate(n, 1),
                naive::top_duplicate(&words, n, 1),
                "top {n}"
            );
        }
    }

    proptest! {
        /// Interning by keys (bytes or hashes) groups words like comparing
        /// them at every probe.
        #[test]
        fn interning_by_key_equals_comparing(words in proptest::collection::vec("[a-b]{1,3}|[a-b]{7,9}|é{3,5}|中", 0..80)) {
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            let mut g = Ngrams::default();
            g.load_words(&words);
            g.intern();
            let fast: Vec<u32> = g.ids.iter().map(|&id| g.table.slots[id as usize].first).collect();
            let mut table = Table::default();
            g.intern_comparing(&mut table);
            let slow: Vec<u32> = g.ids.iter().map(|&id| table.slots[id as usize].first).collect();
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn fast_equals_naive_long_words(words in proptest::collection::vec("[a-c]{1,6}|ab|abc|ca", 0..120), n in 1usize..11) {
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            let mut g = Ngrams::default();
            g.load_words(&words);
            prop_assert_eq!(g.all_duplicate(n), naive::all_duplicate(&words, n));
            prop_assert_eq!(g.top_duplicate(n, 1), naive::top_duplicate(&words, n, 1));
        }

        #[test]
        fn fast_equals_naive(words in proptest::collection::vec("[ab]{1,2}|é|中", 0..60), n in 1usize..6) {
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            let mut g = Ngrams::default();
            g.load_words(&words);
            prop_assert_eq!(g.all_duplicate(n), naive::all_duplicate(&words, n));
            prop_assert_eq!(g.top_duplicate(n, 1), naive::top_duplicate(&words, n, 1));
            prop_assert_eq!(g.top_duplicate(n, 0), naive::top_duplicate(&words, n, 0));
        }

        /// Any order of calls, as configurations may list the n in any
        /// order, and reloading reuses the buffers.
        #[test]
        fn any_call_order(
            docs in proptest::collection::vec(proptest::collection::vec("[a-c]{1,3}|abcabcab|[a-c]{9,20}", 0..90), 1..4),
            calls in proptest::collection::vec((any::<bool>(), 1usize..12), 1..12),
        ) {
            let mut g = Ngrams::default();
            for doc in &docs {
                let words: Vec<&str> = doc.iter().map(String::as_str).collect();
                g.load_words(&words);
                for &(top, n) in &calls {
                    if top {
                        prop_assert_eq!(g.top_duplicate(n, 1), naive::top_duplicate(&words, n, 1), "top {}", n);
                    } else {
                        prop_assert_eq!(g.all_duplicate(n), naive::all_duplicate(&words, n), "all {}", n);
                    }
                }
            }
        }
    }
}
