//! Duplicate n-gram statistics of Gopher's repetition rules without building
//! an n-gram string: every n-gram is hashed in O(1) from prefix sums of a
//! polynomial hash over the words' concatenated bytes, and equal hashes are
//! confirmed by comparing bytes, so the counts are exact.

/// Polynomial base (odd, so invertible modulo 2^64).
const B: u64 = 0x9E37_79B9_7F4A_7C15 | 1;

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

/// Entries of the power tables.
const POW_TABLE: usize = 64;

const fn powers(base: u64) -> [u64; POW_TABLE] {
    let mut table = [1u64; POW_TABLE];
    let mut i = 1;
    while i < POW_TABLE {
        table[i] = table[i - 1].wrapping_mul(base);
        i += 1;
    }
    table
}

/// `B^k` and `B^-k` for `k < POW_TABLE`.
const POW: [u64; POW_TABLE] = powers(B);
const INV_POW: [u64; POW_TABLE] = powers(B_INV);

#[derive(Clone, Copy)]
struct Slot {
    hash: u64,
    first: usize,
    count: usize,
}

const EMPTY: usize = usize::MAX;

/// Window widths (bytes) of the shared-start filters, narrowest first.
const SHARED_WIDTHS: [usize; 3] = [8, 16, 32];

/// Reusable buffers for the n-gram statistics of one document's words.
#[derive(Default)]
pub(crate) struct Ngrams {
    /// The words' bytes, concatenated.
    cat: Vec<u8>,
    /// Byte offset of word `k` in `cat` (one more entry than words).
    off: Vec<usize>,
    /// Prefix sums of the words' lengths in characters.
    chars: Vec<usize>,
    /// Polynomial hash of `cat[..off[k]]`.
    prefix: Vec<u64>,
    /// `B^off[k]` and `B^-off[k]`.
    pow: Vec<u64>,
    inv_pow: Vec<u64>,
    table: Vec<Slot>,
    /// For each width of [`SHARED_WIDTHS`]: whether the `width` bytes of
    /// `cat` from word `k` on occur at another word start too.
    shared: [Vec<bool>; 3],
    /// (key, count) table that fills `shared`.
    keys: Vec<(u64, u32)>,
}

impl Ngrams {
    /// Loads the words of a document.
    pub(crate) fn load<'a>(&mut self, words: impl Iterator<Item = &'a str>) {
        self.cat.clear();
        self.off.clear();
        self.chars.clear();
        self.prefix.clear();
        self.pow.clear();
        self.inv_pow.clear();
        self.off.push(0);
        self.chars.push(0);
        self.prefix.push(0);
        self.pow.push(1);
        self.inv_pow.push(1);
        let (mut h, mut p, mut ip, mut nchars) = (0u64, 1u64, 1u64, 0usize);
        for w in words {
            for &b in w.as_bytes() {
                h = h.wrapping_mul(B).wrapping_add(u64::from(b) + 1);
                // Continuation bytes do not start a character.
                nchars += usize::from(b & 0xC0 != 0x80);
            }
            // B^len and B^-len per word from tables, not per byte.
            let mut len = w.len();
            while len > 0 {
                let step = len.min(POW_TABLE - 1);
                p = p.wrapping_mul(POW[step]);
                ip = ip.wrapping_mul(INV_POW[step]);
                len -= step;
            }
            self.cat.extend_from_slice(w.as_bytes());
            self.off.push(self.cat.len());
            self.chars.push(nchars);
            self.prefix.push(h);
            self.pow.push(p);
            self.inv_pow.push(ip);
        }
        self.mark_shared_starts();
    }

    /// A 64-bit key of the `width` bytes of `cat` from word `k` on (`None`
    /// when fewer remain). Width 8 is the bytes themselves; wider windows
    /// are hashed, and a collision only adds a candidate.
    fn key(&self, k: usize, width: usize) -> Option<u64> {
        let at = self.off[k];
        let bytes = self.cat.get(at..at + width)?;
        if width == 8 {
            let mut v = [0u8; 8];
            v.copy_from_slice(bytes);
            Some(u64::from_le_bytes(v))
        } else {
            Some(xxhash_rust::xxh3::xxh3_64(bytes))
        }
    }

    fn mark_shared_starts(&mut self) {
        let words = self.len();
        let cap = (words * 2).next_power_of_two().max(16);
        let mask = cap - 1;
        let slot_of = |keys: &[(u64, u32)], key: u64| {
            let mut k = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & mask;
            while keys[k].1 != 0 && keys[k].0 != key {
                k = (k + 1) & mask;
            }
            k
        };
        for (w, &width) in SHARED_WIDTHS.iter().enumerate() {
            self.keys.clear();
            self.keys.resize(cap, (0, 0));
            for i in 0..words {
                if let Some(key) = self.key(i, width) {
                    let k = slot_of(&self.keys, key);
                    self.keys[k] = (key, self.keys[k].1.saturating_add(1));
                }
            }
            let mut shared = std::mem::take(&mut self.shared[w]);
            shared.clear();
            // Fewer than `width` bytes left: always a candidate.
            shared.extend((0..words).map(|i| {
                self.key(i, width)
                    .is_none_or(|key| self.keys[slot_of(&self.keys, key)].1 > 1)
            }));
            self.shared[w] = shared;
        }
    }

    /// Whether the n-gram at `i` may equal another one: two n-grams with
    /// equal concatenations of at least `width` bytes start with equal
    /// `width` bytes, so an n-gram whose widest applicable window is not
    /// shared with another word start is unique and the passes skip it.
    #[inline]
    fn candidate(&self, i: usize, n: usize) -> bool {
        let len = self.off[i + n] - self.off[i];
        match SHARED_WIDTHS.iter().rposition(|&w| len >= w) {
            Some(w) => self.shared[w][i],
            None => true,
        }
    }

    /// Number of words loaded.
    pub(crate) fn len(&self) -> usize {
        self.off.len() - 1
    }

    #[inline]
    fn hash(&self, i: usize, n: usize) -> u64 {
        let j = i + n;
        let scale = self.pow[j].wrapping_mul(self.inv_pow[i]);
        self.prefix[j].wrapping_sub(self.prefix[i].wrapping_mul(scale))
    }

    #[inline]
    fn concat(&self, i: usize, n: usize) -> &[u8] {
        &self.cat[self.off[i]..self.off[i + n]]
    }

    /// Same words (the `" ".join` key of `find_top_duplicate`).
    #[inline]
    fn same_words(&self, i: usize, j: usize, n: usize) -> bool {
        self.concat(i, n) == self.concat(j, n)
            && (1..n).all(|k| self.off[i + k] - self.off[i] == self.off[j + k] - self.off[j])
    }

    /// Characters of the n-gram's concatenation.
    #[inline]
    pub(crate) fn chars(&self, i: usize, n: usize) -> usize {
        self.chars[i + n] - self.chars[i]
    }

    fn reset_table(&mut self, entries: usize) -> usize {
        let cap = (entries * 2).next_power_of_two().max(16);
        self.table.clear();
        self.table.resize(
            cap,
            Slot {
                hash: 0,
                first: EMPTY,
                count: 0,
            },
        );
        cap - 1
    }

    /// datatrove's `find_top_duplicate(get_n_grams(words, n))`: the length
    /// of the most frequent n-gram (words joined by `sep` characters) times
    /// its count; ties go to the n-gram seen first. `None` without n-grams.
    pub(crate) fn top_duplicate(&mut self, n: usize, sep: usize) -> Option<usize> {
        let words = self.len();
        if n == 0 || words < n {
            return None;
        }
        let positions = words - n + 1;
        let mask = self.reset_table(positions);
        // The first n-gram occurs at least once: it wins unless another
        // occurs more often. Only candidates can occur more than once.
        let mut best: Option<(usize, usize)> = Some((1, 0)); // (count, first)
        for i in 0..positions {
            if !self.candidate(i, n) {
                continue;
            }
            let h = self.hash(i, n);
            let mut k = (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & mask;
            loop {
                let slot = self.table[k];
                if slot.first == EMPTY {
                    self.table[k] = Slot {
                        hash: h,
                        first: i,
                        count: 1,
                    };
                    if best.is_none_or(|(c, f)| 1 > c || (1 == c && i < f)) {
                        best = Some((1, i));
                    }
                    break;
                }
                if slot.hash == h && self.same_words(slot.first, i, n) {
                    let count = slot.count + 1;
                    self.table[k].count = count;
                    if best.is_none_or(|(c, f)| count > c || (count == c && slot.first < f)) {
                        best = Some((count, slot.first));
                    }
                    break;
                }
                k = (k + 1) & mask;
            }
        }
        best.map(|(count, first)| (self.chars(first, n) + sep * (n - 1)) * count)
    }

    /// datatrove's `find_all_duplicate(words, n)`: characters of n-grams
    /// (concatenated without separator) already seen, skipping past each
    /// repeat.
    pub(crate) fn all_duplicate(&mut self, n: usize) -> usize {
        let words = self.len();
        if n == 0 || words < n {
            return 0;
        }
        let positions = words - n + 1;
        let mask = self.reset_table(positions);
        let mut repeated = 0usize;
        let mut i = 0usize;
        while i < positions {
            if !self.candidate(i, n) {
                i += 1;
                continue;
            }
            let h = self.hash(i, n);
            let mut k = (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & mask;
            let mut found = false;
            loop {
                let slot = self.table[k];
                if slot.first == EMPTY {
                    self.table[k] = Slot {
                        hash: h,
                        first: i,
                        count: 1,
                    };
                    break;
                }
                if slot.hash == h && self.concat(slot.first, n) == self.concat(i, n) {
                    found = true;
                    break;
                }
                k = (k + 1) & mask;
            }
            if found {
                repeated += self.chars(i, n);
                i += n;
            } else {
                i += 1;
            }
        }
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
    fn inverse_is_inverse() {
        assert_eq!(B.wrapping_mul(B_INV), 1);
    }

    #[test]
    fn concat_semantics() {
        // "ab c" and "a bc" concatenate to the same key.
        let words = ["ab", "c", "x", "a", "bc"];
        let mut g = Ngrams::default();
        g.load(words.iter().copied());
        assert_eq!(g.all_duplicate(2), naive::all_duplicate(&words, 2));
        assert_eq!(g.all_duplicate(2), 3);
        assert_eq!(g.top_duplicate(2, 1), naive::top_duplicate(&words, 2, 1));
    }

    proptest! {
        #[test]
        fn fast_equals_naive_long_words(words in proptest::collection::vec("[a-c]{1,6}|ab|abc|ca", 0..120), n in 1usize..11) {
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            let mut g = Ngrams::default();
            g.load(words.iter().copied());
            prop_assert_eq!(g.all_duplicate(n), naive::all_duplicate(&words, n));
            prop_assert_eq!(g.top_duplicate(n, 1), naive::top_duplicate(&words, n, 1));
        }

        #[test]
        fn fast_equals_naive(words in proptest::collection::vec("[ab]{1,2}|é|中", 0..60), n in 1usize..6) {
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            let mut g = Ngrams::default();
            g.load(words.iter().copied());
            prop_assert_eq!(g.all_duplicate(n), naive::all_duplicate(&words, n));
            prop_assert_eq!(g.top_duplicate(n, 1), naive::top_duplicate(&words, n, 1));
            prop_assert_eq!(g.top_duplicate(n, 0), naive::top_duplicate(&words, n, 0));
        }
    }
}
