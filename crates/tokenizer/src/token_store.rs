//! A vocabulary's token strings and bytes, packed: two byte arenas, one
//! span record per id, and an open-addressing index from bytes to id.
//!
//! A 49k-token vocabulary held as one `String` and one `Box<[u8]>` per
//! token, with a `HashMap<Box<[u8]>, u32>` (and a second map of packed short
//! keys for speed), took about 9.7 MiB; packed it takes about 2.5 MiB. That
//! is memory every running model keeps beside its weights. The index keeps
//! each entry's 32-bit hash beside its id, so a look-up compares stored
//! bytes only on a full hash match: a miss rarely leaves the index, a hit
//! reads the token's bytes once.

use std::ops::Range;

/// Why [`TokenStore::insert`] refused a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The id already has a token.
    IdTaken,
    /// Another id (given) has the same bytes.
    SameBytes(u32),
    /// The id is `u32::MAX` or more than [`MAX_ID_GAP`] past the number of
    /// tokens so far, or the arenas would pass 4 GiB.
    TooLarge,
}

/// Byte ranges of one id's token in the two arenas; `text.start ==
/// ABSENT` when the id has no token.
#[derive(Clone, Copy, Debug)]
struct Span {
    text_start: u32,
    text_end: u32,
    bytes_start: u32,
    bytes_end: u32,
}

const ABSENT: u32 = u32::MAX;

/// How far past the number of tokens held an id may lie: ids come in any
/// order, but a vocabulary is dense, and a malformed id of four billion
/// would otherwise make a 64 GB span table.
pub(crate) const MAX_ID_GAP: usize = 1 << 22;

const NO_TOKEN: Span = Span {
    text_start: ABSENT,
    text_end: ABSENT,
    bytes_start: ABSENT,
    bytes_end: ABSENT,
};

/// An index entry: the token's id, the hash of its bytes, and its
/// short key ([`key_and_hash`]), so most look-ups decide without reading the arenas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    key: u64,
    hash: u32,
    id: u32,
}

/// An empty index slot (no id is `u32::MAX`).
const EMPTY: Slot = Slot {
    key: 0,
    hash: 0,
    id: ABSENT,
};

/// Tokens up to this many bytes are whole in their short key.
const SHORT: usize = 7;

/// The short key of `bytes` and the hash of all of them. The key packs up
/// to [`SHORT`] bytes with the length in the top byte (then it is the
/// whole token); longer tokens give their first eight bytes (a quick
/// rejection before the arena is read). No byte is copied through memory.
#[inline]
fn key_and_hash(bytes: &[u8]) -> (u64, u32) {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let n = bytes.len();
    let mix = |h: u64| {
        let h = (h ^ (h >> 29)).wrapping_mul(K);
        (h ^ (h >> 32)) as u32
    };
    if n <= SHORT {
        let key = load_up_to_8(bytes) | ((n as u64) << 56);
        return (key, mix(key.wrapping_mul(K)));
    }
    let mut h = n as u64;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        h = (h ^ load_up_to_8(word)).wrapping_mul(K).rotate_left(31);
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        h = (h ^ load_up_to_8(tail)).wrapping_mul(K).rotate_left(31);
    }
    (load_up_to_8(&bytes[..8]), mix(h))
}

/// The first `min(8, len)` bytes of `bytes` as a little-endian `u64`, the
/// rest zero, read with at most three loads.
#[inline]
fn load_up_to_8(bytes: &[u8]) -> u64 {
    let n = bytes.len();
    let u32_at = |at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&bytes[at..at + 4]);
        u64::from(u32::from_le_bytes(w))
    };
    if n >= 8 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[..8]);
        u64::from_le_bytes(w)
    } else if n >= 4 {
        // Two loads that overlap on equal bytes.
        u32_at(0) | (u32_at(n - 4) << ((n - 4) * 8))
    } else if n > 0 {
        u64::from(bytes[0])
            | (u64::from(bytes[n / 2]) << (n / 2 * 8))
            | (u64::from(bytes[n - 1]) << ((n - 1) * 8))
    } else {
        0
    }
}

/// Token strings (as the vocabulary file writes them) and token bytes
/// (what merges join) by id, and ids by bytes.
#[derive(Clone, Debug, Default)]
pub(crate) struct TokenStore {
    text: String,
    bytes: Vec<u8>,
    spans: Vec<Span>,
    /// One [`Slot`] per token, [`EMPTY`] elsewhere; its length is zero or a
    /// power of two at least twice the number of tokens.
    index: Vec<Slot>,
    tokens: usize,
    /// Length of the longest token's bytes (longer look-ups miss at once).
    longest: usize,
}

impl TokenStore {
    /// One past the largest id that was given a slot.
    pub(crate) fn id_slots(&self) -> usize {
        self.spans.len()
    }

    /// The token string of `id`.
    pub(crate) fn text(&self, id: u32) -> Option<&str> {
        let span = self.spans.get(id as usize)?;
        if span.text_start == ABSENT {
            return None;
        }
        // Spans are recorded at the ends of pushed strings: char boundaries.
        self.text
            .get(span.text_start as usize..span.text_end as usize)
    }

    /// The bytes of `id`.
    pub(crate) fn bytes(&self, id: u32) -> Option<&[u8]> {
        let span = self.spans.get(id as usize)?;
        if span.text_start == ABSENT {
            return None;
        }
        self.bytes
            .get(span.bytes_start as usize..span.bytes_end as usize)
    }

    /// Every id with a token, with its bytes, in id order.
    pub(crate) fn iter_bytes(&self) -> impl Iterator<Item = (u32, &[u8])> {
        (0..self.spans.len() as u32).filter_map(|id| Some((id, self.bytes(id)?)))
    }

    /// Every id with a token, with its string, in id order.
    pub(crate) fn iter_text(&self) -> impl Iterator<Item = (u32, &str)> {
        (0..self.spans.len() as u32).filter_map(|id| Some((id, self.text(id)?)))
    }

    /// The id whose token has exactly these bytes.
    #[inline]
    pub(crate) fn id_of(&self, bytes: &[u8]) -> Option<u32> {
        if self.index.is_empty() || bytes.len() > self.longest {
            return None;
        }
        let (key, hash) = key_and_hash(bytes);
        let mask = self.index.len() - 1;
        let mut at = hash as usize & mask;
        loop {
            let slot = self.index[at];
            if slot.id == ABSENT {
                return None;
            }
            if slot.hash == hash
                && slot.key == key
                && (bytes.len() <= SHORT || self.bytes(slot.id) == Some(bytes))
            {
                return Some(slot.id);
            }
            at = (at + 1) & mask;
        }
    }

    /// Adds token `id` with string `text` and bytes `bytes`; refuses (and
    /// changes nothing) when the id has a token or the bytes belong to
    /// another id.
    pub(crate) fn insert(&mut self, id: u32, text: &str, bytes: &[u8]) -> Result<(), Refused> {
        if id == ABSENT || id as usize > self.tokens + MAX_ID_GAP {
            return Err(Refused::TooLarge);
        }
        if self
            .spans
            .get(id as usize)
            .is_some_and(|s| s.text_start != ABSENT)
        {
            return Err(Refused::IdTaken);
        }
        if let Some(previous) = self.id_of(bytes) {
            return Err(Refused::SameBytes(previous));
        }
        let text_range = arena_range(self.text.len(), text.len())?;
        let bytes_range = arena_range(self.bytes.len(), bytes.len())?;
        if (self.tokens + 1) * 2 > self.index.len() {
            self.grow_index();
        }
        self.text.push_str(text);
        self.bytes.extend_from_slice(bytes);
        if self.spans.len() <= id as usize {
            self.spans.resize(id as usize + 1, NO_TOKEN);
        }
        self.spans[id as usize] = Span {
            text_start: text_range.start,
            text_end: text_range.end,
            bytes_start: bytes_range.start,
            bytes_end: bytes_range.end,
        };
        let (key, hash) = key_and_hash(bytes);
        self.place(Slot { key, hash, id });
        self.tokens += 1;
        self.longest = self.longest.max(bytes.len());
        Ok(())
    }

    /// Gives back the arenas' spare capacity (after the last insert).
    pub(crate) fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.bytes.shrink_to_fit();
        self.spans.shrink_to_fit();
    }

    /// Puts `slot` in the first empty place of its probe run.
    fn place(&mut self, slot: Slot) {
        let mask = self.index.len() - 1;
        let mut at = slot.hash as usize & mask;
        while self.index[at].id != ABSENT {
            at = (at + 1) & mask;
        }
        self.index[at] = slot;
    }

    /// Doubles the index (16 slots at first), re-placing every entry.
    fn grow_index(&mut self) {
        let old = std::mem::take(&mut self.index);
        self.index = vec![EMPTY; (old.len() * 2).max(16)];
        for slot in old.into_iter().filter(|s| s.id != ABSENT) {
            self.place(slot);
        }
    }
}

/// `start..start + len` as `u32` offsets, refused past 4 GiB.
fn arena_range(start: usize, len: usize) -> Result<Range<u32>, Refused> {
    let end = start.checked_add(len).ok_or(Refused::TooLarge)?;
    match (u32::try_from(start), u32::try_from(end)) {
        (Ok(s), Ok(e)) if e != ABSENT => Ok(s..e),
        _ => Err(Refused::TooLarge),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn refuses_taken_ids_and_repeated_bytes_without_changing_anything() {
        let mut store = TokenStore::default();
        store.insert(3, "Ġa", b" a").unwrap();
        assert_eq!(store.insert(3, "b", b"b"), Err(Refused::IdTaken));
        assert_eq!(store.insert(5, "x", b" a"), Err(Refused::SameBytes(3)));
        assert_eq!(store.insert(u32::MAX, "y", b"y"), Err(Refused::TooLarge));
        // One token held: ids up to 1 + MAX_ID_GAP are accepted.
        let far = (1 + MAX_ID_GAP + 1) as u32;
        assert_eq!(store.insert(far, "y", b"y"), Err(Refused::TooLarge));
        assert_eq!(store.id_slots(), 4);
        assert_eq!(store.text(3), Some("Ġa"));
        assert_eq!(store.bytes(3), Some(&b" a"[..]));
        assert_eq!(store.text(0), None);
        assert_eq!(store.bytes(4), None);
        assert_eq!(store.id_of(b"b"), None);
        assert_eq!(store.id_of(b"y"), None);
        assert_eq!(store.id_of(b""), None);
        assert_eq!(store.iter_text().collect::<Vec<_>>(), vec![(3, "Ġa")]);
        store.insert(far - 1, "y", b"y").unwrap();
        assert_eq!(store.id_of(b"y"), Some(far - 1));
    }

    #[test]
    fn an_empty_token_is_a_token() {
        let mut store = TokenStore::default();
        store.insert(0, "", b"").unwrap();
        assert_eq!(store.id_of(b""), Some(0));
        assert_eq!(store.bytes(0), Some(&b""[..]));
        assert_eq!(store.insert(1, "e", b""), Err(Refused::SameBytes(0)));
    }

    #[test]
    fn loads_up_to_eight_bytes() {
        let all: Vec<u8> = (1..=10).collect();
        for n in 0..=10 {
            let mut w = [0u8; 8];
            let take = n.min(8);
            w[..take].copy_from_slice(&all[..take]);
            assert_eq!(load_up_to_8(&all[..n]), u64::from_le_bytes(w), "{n} bytes");
        }
    }

    proptest! {
        /// Against a `HashMap` and a `Vec<Option<…>>`: ids given in any
        /// order (with gaps and repeats), bytes that repeat, share
        /// prefixes and pass eight bytes; look-ups of present and absent
        /// bytes after every kind of insert.
        #[test]
        fn agrees_with_maps(
            entries in prop::collection::vec(
                (0u32..400, prop::collection::vec(prop::sample::select(vec![b'a', b'b', 0xE4, 0xB8, 0x80, b' ']), 0..12)),
                0..300,
            ),
            probes in prop::collection::vec(prop::collection::vec(prop::sample::select(vec![b'a', b'b', 0xE4, b' ']), 0..12), 0..50),
        ) {
            let mut store = TokenStore::default();
            let mut by_bytes: HashMap<Vec<u8>, u32> = HashMap::new();
            let mut by_id: Vec<Option<(String, Vec<u8>)>> = Vec::new();
            for (id, bytes) in entries {
                let text = format!("t{id}:{}", bytes.len());
                let expected = if by_id.get(id as usize).is_some_and(Option::is_some) {
                    Err(Refused::IdTaken)
                } else if let Some(&previous) = by_bytes.get(&bytes) {
                    Err(Refused::SameBytes(previous))
                } else {
                    by_bytes.insert(bytes.clone(), id);
                    if by_id.len() <= id as usize {
                        by_id.resize(id as usize + 1, None);
                    }
                    by_id[id as usize] = Some((text.clone(), bytes.clone()));
                    Ok(())
                };
                prop_assert_eq!(store.insert(id, &text, &bytes), expected);
            }
            prop_assert_eq!(store.id_slots(), by_id.len());
            for (id, entry) in by_id.iter().enumerate() {
                prop_assert_eq!(store.text(id as u32), entry.as_ref().map(|e| e.0.as_str()));
                prop_assert_eq!(store.bytes(id as u32), entry.as_ref().map(|e| e.1.as_slice()));
            }
            for bytes in by_bytes.keys().chain(probes.iter()) {
                prop_assert_eq!(store.id_of(bytes), by_bytes.get(bytes).copied());
            }
            let longest = by_bytes.keys().map(Vec::len).max().unwrap_or(0);
            prop_assert_eq!(store.longest, longest);
        }
    }
}
