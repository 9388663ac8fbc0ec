//! The [`Tokenizer`]: added tokens → normalizer → pre-tokenizer → BPE model
//! → post-processor, and back through the decoder.

use std::path::Path;

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde_json::Value;

use crate::added::{AddedToken, AddedVocab, Segment};
use crate::aligned::Aligned;
use crate::bpe::{Bpe, Symbols};
use crate::components::{Decoder, Normalizer, PostProcessor, PreTokenizer};
use crate::split::SplitPattern;
use crate::tiktoken::{TiktokenSpec, load_ranks};
use crate::{Result, TokenizerError};

/// The ids of an encoded text and the byte span of each in the input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoding {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `(start, end)` byte offsets of each token in the input text; special
    /// tokens added by the post-processor have `(0, 0)`.
    pub offsets: Vec<(usize, usize)>,
}

/// How [`Tokenizer::encode_with`] treats special tokens (default: no
/// post-processor specials, special tokens in the text recognised).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Add the post-processor's special tokens (BOS/EOS templates).
    pub add_special_tokens: bool,
    /// Treat special added tokens in the text as plain text (tiktoken's
    /// `encode_ordinary`, HF's `split_special_tokens`).
    pub split_special_tokens: bool,
}

/// A loaded tokenizer.
///
/// ```
/// use kaiyuan_tokenizer::Tokenizer;
/// let json = r#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
///               "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false}, "decoder": {"type": "ByteLevel"}}"#;
/// let tok = Tokenizer::from_json_str("inline", json).unwrap();
/// let enc = tok.encode("abab").unwrap();
/// assert_eq!(enc.ids, vec![2, 2]);
/// assert_eq!(enc.offsets, vec![(0, 2), (2, 4)]);
/// assert_eq!(tok.decode(&enc.ids, false).unwrap(), "abab");
/// ```
#[derive(Clone, Debug)]
pub struct Tokenizer {
    origin: String,
    normalizer: Option<Normalizer>,
    pre_tokenizer: Option<PreTokenizer>,
    /// When there is no normalizer and the pre-tokenizer only cuts text:
    /// the patterns to cut with, in order (the fast path).
    fast_splits: Option<Vec<SplitPattern>>,
    model: Bpe,
    added: AddedVocab,
    post_processor: Option<PostProcessor>,
    decoder: Option<Decoder>,
    /// What [`Tokenizer::to_json`] writes back; `None` for tokenizers not
    /// loaded from JSON (trained, tiktoken).
    json: Option<SavedJson>,
}

/// The `tokenizer.json` a tokenizer was loaded from.
#[derive(Clone, Debug)]
enum SavedJson {
    /// As compact text (a parsed value of a large vocabulary is ten times
    /// its text).
    Text(Box<str>),
    /// Everything but `model.vocab` and `model.merges`, which were given as
    /// tables ([`Tokenizer::from_json_value_with_tables`]) and are written
    /// back from the model.
    Skeleton(Box<Value>),
}

/// Per-call cache of encoded words (key: the word's bytes), for models that
/// start from characters (their first symbols cost string look-ups). For
/// byte-level models merging is cheaper than caching.
type WordCache = FxHashMap<Box<[u8]>, Box<[(u32, u32, u32)]>>;
const CACHE_LIMIT: usize = 1 << 16;
const MAX_CACHED_WORD: usize = 48;

impl Tokenizer {
    /// Loads a HF `tokenizer.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json_str(&path.display().to_string(), &text)
    }

    /// Parses the text of a `tokenizer.json`; `origin` names it in errors.
    pub fn from_json_str(origin: &str, json: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(json).map_err(|e| TokenizerError::Json {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        Self::build(origin, &value, SavedJson::Text(json.into()), None)
    }

    /// Builds the tokenizer that `value`, a parsed `tokenizer.json`,
    /// describes; `origin` names it in errors. Callers that make the JSON
    /// themselves (a GGUF file's vocabulary, say) skip writing and
    /// re-parsing its text, which for a 50k-token vocabulary is tens of
    /// megabytes of short-lived memory.
    ///
    /// ```
    /// use kaiyuan_tokenizer::Tokenizer;
    /// let json = serde_json::json!({
    ///     "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
    /// });
    /// let tokenizer = Tokenizer::from_json_value("inline", &json).unwrap();
    /// assert_eq!(tokenizer.encode("ab").unwrap().ids, vec![2]);
    /// ```
    pub fn from_json_value(origin: &str, value: &Value) -> Result<Self> {
        let text = serde_json::to_string(value).map_err(|e| TokenizerError::Json {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        Self::build(origin, value, SavedJson::Text(text.into()), None)
    }

    /// Like [`Tokenizer::from_json_value`], for a BPE `tokenizer.json`
    /// whose `model.vocab` and `model.merges` are given as tables instead of
    /// inside `value` (where they are ignored): `vocab` holds `(token, id)`
    /// in `tokenizer.json` spelling, `merges` the pairs in rank order. A
    /// GGUF file stores its vocabulary as arrays; building a JSON value of
    /// them first would cost ten times their size in short-lived memory.
    ///
    /// ```
    /// use kaiyuan_tokenizer::Tokenizer;
    /// let skeleton = serde_json::json!({"model": {"type": "BPE"}});
    /// let tokenizer = Tokenizer::from_json_value_with_tables(
    ///     "inline",
    ///     &skeleton,
    ///     &[("a", 0), ("b", 1), ("ab", 2)],
    ///     &[("a", "b")],
    /// )
    /// .unwrap();
    /// assert_eq!(tokenizer.encode("ab").unwrap().ids, vec![2]);
    /// assert!(tokenizer.to_json().unwrap().contains("\"ab\": 2"));
    /// ```
    pub fn from_json_value_with_tables(
        origin: &str,
        value: &Value,
        vocab: &[(&str, u32)],
        merges: &[(&str, &str)],
    ) -> Result<Self> {
        let mut skeleton = value.clone();
        match skeleton.get_mut("model").and_then(Value::as_object_mut) {
            Some(model) => {
                model.remove("vocab");
                model.remove("merges");
            }
            None => {
                return Err(TokenizerError::bad_entry(
                    origin,
                    "model",
                    "missing or not an object",
                ));
            }
        }
        let saved = SavedJson::Skeleton(Box::new(skeleton));
        Self::build(origin, value, saved, Some((vocab, merges)))
    }

    /// The tokenizer `value` describes (with its vocabulary and merges in
    /// `tables` when given), keeping `saved` for [`Tokenizer::to_json`].
    fn build(
        origin: &str,
        value: &Value,
        saved: SavedJson,
        tables: Option<BpeTables<'_>>,
    ) -> Result<Self> {
        let opt = |key: &str| value.get(key).filter(|v| !v.is_null());
        let normalizer = opt("normalizer")
            .map(|v| Normalizer::parse(origin, v))
            .transpose()?;
        let pre_tokenizer = opt("pre_tokenizer")
            .map(|v| PreTokenizer::parse(origin, v))
            .transpose()?;
        let post_processor = opt("post_processor")
            .map(|v| PostProcessor::parse(origin, v))
            .transpose()?;
        let decoder = opt("decoder")
            .map(|v| Decoder::parse(origin, v))
            .transpose()?;
        let byte_level = matches!(decoder, Some(Decoder::ByteLevel))
            || opt("pre_tokenizer").is_some_and(|v| v.to_string().contains("\"ByteLevel\""));
        let model_json =
            opt("model").ok_or_else(|| TokenizerError::bad_entry(origin, "model", "missing"))?;
        let model = match tables {
            Some((vocab, merges)) => {
                crate::json::build_bpe(origin, model_json, byte_level, vocab, merges)?
            }
            None => crate::json::parse_bpe(origin, model_json, byte_level)?,
        };
        let added = crate::json::parse_added(origin, opt("added_tokens"))?;
        let normalize = |content: &str| -> Result<String> {
            match &normalizer {
                Some(n) => Ok(n.apply(Aligned::identity(content, 0))?.text),
                None => Ok(content.to_owned()),
            }
        };
        let added = AddedVocab::new(
            origin,
            added,
            normalizer
                .is_some()
                .then_some(&normalize as &dyn Fn(&str) -> Result<String>),
        )?;
        let mut tokenizer = Self {
            origin: origin.to_owned(),
            normalizer,
            pre_tokenizer,
            fast_splits: None,
            model,
            added,
            post_processor,
            decoder,
            json: Some(saved),
        };
        tokenizer.fast_splits = tokenizer.compute_fast_splits();
        Ok(tokenizer)
    }

    /// A tiktoken encoding from its rank file and spec
    /// (see [`TiktokenSpec::known`]).
    pub fn from_tiktoken(path: impl AsRef<Path>, spec: &TiktokenSpec) -> Result<Self> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let model = load_ranks(path)?;
        let added = spec
            .specials
            .iter()
            .map(|(content, id)| AddedToken {
                content: content.clone(),
                id: *id,
                special: true,
                lstrip: false,
                rstrip: false,
                single_word: false,
                normalized: false,
            })
            .collect();
        let split = SplitPattern::new(&origin, &spec.pattern)?;
        Ok(Self {
            fast_splits: Some(vec![split.clone()]),
            pre_tokenizer: Some(PreTokenizer::Split {
                pattern: crate::components::Pattern::Regex(split),
                behavior: crate::components::Behavior::Isolated,
                invert: false,
            }),
            origin: origin.clone(),
            normalizer: None,
            model,
            added: AddedVocab::new(&origin, added, None)?,
            post_processor: None,
            decoder: Some(Decoder::ByteLevel),
            json: None,
        })
    }

    fn compute_fast_splits(&self) -> Option<Vec<SplitPattern>> {
        if self.normalizer.is_some() {
            return None;
        }
        match &self.pre_tokenizer {
            None => Some(Vec::new()),
            Some(p) => p.pure_splits().map(|v| v.into_iter().cloned().collect()),
        }
    }

    /// Where the tokenizer was loaded from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// One past the largest id (model and added tokens).
    pub fn vocab_size(&self) -> usize {
        let added = self
            .added
            .tokens
            .iter()
            .map(|t| t.id as usize + 1)
            .max()
            .unwrap_or(0);
        self.model.vocab_size().max(added)
    }

    /// The id of a token string (added tokens first, then the vocabulary in
    /// its file form).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        if let Some(t) = self.added.by_content(token) {
            return Some(t.id);
        }
        let bytes: Vec<u8> = match self.model.symbols {
            Symbols::Bytes => {
                crate::bytelevel::decode_token(token).unwrap_or_else(|| token.as_bytes().to_vec())
            }
            Symbols::Chars => token.as_bytes().to_vec(),
        };
        self.model.id_of_bytes(&bytes)
    }

    /// The token string of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        if let Some((_, surface)) = self.added.by_id(id) {
            return Some(surface.to_owned());
        }
        self.model.token(id).map(str::to_owned)
    }

    /// The BPE model (for the model's tests).
    #[cfg(test)]
    pub(crate) fn model(&self) -> &Bpe {
        &self.model
    }

    /// The added tokens (special and normal).
    pub fn added_tokens(&self) -> &[AddedToken] {
        &self.added.tokens
    }

    /// Encodes `text` without the post-processor's special tokens, matching
    /// special tokens in the text.
    pub fn encode(&self, text: &str) -> Result<Encoding> {
        self.encode_with(text, EncodeOptions::default())
    }

    /// Encodes `text` with explicit options.
    pub fn encode_with(&self, text: &str, options: EncodeOptions) -> Result<Encoding> {
        let mut cache = WordCache::default();
        let mut tokens: Vec<(u32, usize, usize)> = Vec::with_capacity(text.len() / 3);
        for segment in self.added.segments(text, options.split_special_tokens) {
            match segment {
                Segment::Added(id, a, b) => tokens.push((id, a, b)),
                Segment::Text(a, b) => {
                    self.encode_text(text, a, b, options, &mut cache, &mut tokens)?
                }
            }
        }
        let mut ids: Vec<u32> = tokens.iter().map(|t| t.0).collect();
        let mut offsets: Vec<(usize, usize)> = tokens.iter().map(|t| (t.1, t.2)).collect();
        if let Some(post) = &self.post_processor {
            post.apply(
                text,
                &mut ids,
                &mut offsets,
                options.add_special_tokens,
                &|id| self.id_to_token(id),
            );
        }
        Ok(Encoding { ids, offsets })
    }

    /// Encodes many texts in parallel on rayon's pool; the result is the
    /// same as encoding each alone.
    pub fn encode_batch(&self, texts: &[&str], options: EncodeOptions) -> Result<Vec<Encoding>> {
        texts
            .par_iter()
            .map(|t| self.encode_with(t, options))
            .collect()
    }

    /// Encodes `text[start..end]`, appending `(id, start, end)` in input bytes.
    fn encode_text(
        &self,
        text: &str,
        start: usize,
        end: usize,
        options: EncodeOptions,
        cache: &mut WordCache,
        out: &mut Vec<(u32, usize, usize)>,
    ) -> Result<()> {
        if start == end {
            return Ok(());
        }
        if let Some(splits) = &self.fast_splits {
            return self.encode_split(text, start, end, splits, cache, out);
        }
        let mut normalized = Aligned::identity(&text[start..end], start);
        if let Some(n) = &self.normalizer {
            normalized = n.apply(normalized)?;
        }
        let mut parts = Vec::new();
        if self.added.has_normalized() {
            for segment in self
                .added
                .normalized_segments(&normalized.text, options.split_special_tokens)
            {
                match segment {
                    Segment::Added(id, a, b) => {
                        self.encode_pieces(std::mem::take(&mut parts), cache, out)?;
                        let (a, b) = normalized.original(a, b);
                        out.push((id, a, b));
                    }
                    Segment::Text(a, b) => parts.push(normalized.slice(a, b)),
                }
            }
        } else {
            parts.push(normalized);
        }
        self.encode_pieces(parts, cache, out)
    }

    /// Pre-tokenizes normalized parts and encodes their pieces.
    fn encode_pieces(
        &self,
        parts: Vec<Aligned>,
        cache: &mut WordCache,
        out: &mut Vec<(u32, usize, usize)>,
    ) -> Result<()> {
        if parts.is_empty() {
            return Ok(());
        }
        let pieces = match &self.pre_tokenizer {
            Some(p) => p.apply(parts)?,
            None => parts,
        };
        for piece in pieces {
            let first = out.len();
            self.encode_word(piece.text.as_bytes(), cache, out)?;
            for t in &mut out[first..] {
                let (a, b) = piece.original(t.1, t.2);
                t.1 = a;
                t.2 = b;
            }
        }
        Ok(())
    }

    /// The fast path: cut `text[start..end]` with `splits` (each applied to
    /// the pieces of the previous) and encode each piece in place.
    fn encode_split(
        &self,
        text: &str,
        start: usize,
        end: usize,
        splits: &[SplitPattern],
        cache: &mut WordCache,
        out: &mut Vec<(u32, usize, usize)>,
    ) -> Result<()> {
        let Some((first, rest)) = splits.split_first() else {
            let mut local = Vec::new();
            self.encode_word(&text.as_bytes()[start..end], cache, &mut local)?;
            out.extend(local.into_iter().map(|(id, a, b)| {
                let (a, b) = widen_to_chars(text, start + a, start + b);
                (id, a, b)
            }));
            return Ok(());
        };
        let segment = &text[start..end];
        if rest.is_empty() {
            // One pattern: encode each piece as the scanner finds it.
            let mut failure = None;
            let mut last = 0;
            let mut piece = |a: usize, b: usize, out: &mut Vec<(u32, usize, usize)>| {
                let first_index = out.len();
                if let Err(e) = self.encode_word(&segment.as_bytes()[a..b], cache, out) {
                    failure.get_or_insert(e);
                }
                for t in &mut out[first_index..] {
                    (t.1, t.2) = widen_to_chars(text, t.1 + start + a, t.2 + start + a);
                }
            };
            first.for_each_match(segment, |a, b| {
                if a > last {
                    piece(last, a, out);
                }
                if b > a {
                    piece(a, b, out);
                }
                last = b;
            })?;
            if last < segment.len() {
                piece(last, segment.len(), out);
            }
            return failure.map_or(Ok(()), Err);
        }
        let mut cuts = Vec::new();
        let mut last = 0;
        first.for_each_match(segment, |a, b| {
            if a > last {
                cuts.push((last, a));
            }
            if b > a {
                cuts.push((a, b));
            }
            last = b;
        })?;
        if last < segment.len() {
            cuts.push((last, segment.len()));
        }
        for (a, b) in cuts {
            if rest.is_empty() {
                let first_index = out.len();
                self.encode_word(&segment.as_bytes()[a..b], cache, out)?;
                for t in &mut out[first_index..] {
                    (t.1, t.2) = widen_to_chars(text, t.1 + start + a, t.2 + start + a);
                }
            } else {
                self.encode_split(text, start + a, start + b, rest, cache, out)?;
            }
        }
        Ok(())
    }

    fn encode_word(
        &self,
        word: &[u8],
        cache: &mut WordCache,
        out: &mut Vec<(u32, usize, usize)>,
    ) -> Result<()> {
        if self.model.whole_word_first
            && let Some(id) = self.model.id_of_bytes(word)
        {
            out.push((id, 0, word.len()));
            return Ok(());
        }
        let cached = self.model.symbols == crate::bpe::Symbols::Chars;
        if cached && let Some(hit) = cache.get(word) {
            out.extend(hit.iter().map(|&(id, a, b)| (id, a as usize, b as usize)));
            return Ok(());
        }
        let first = out.len();
        self.model.merge_word(word, out);
        // Long words are rarely seen twice (Chinese runs, code): not worth caching.
        if cached && word.len() <= MAX_CACHED_WORD {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            let entry: Box<[(u32, u32, u32)]> = out[first..]
                .iter()
                .map(|&(id, a, b)| (id, a as u32, b as u32))
                .collect();
            cache.insert(word.into(), entry);
        }
        Ok(())
    }

    /// The bytes token `id` adds to the text in the middle of a sequence
    /// (what constrained decoding matches against): raw bytes for byte-level
    /// and tiktoken vocabularies; for SentencePiece-style ones `▁` becomes a
    /// space and `<0xXX>` byte-fallback tokens give their byte. Added tokens
    /// give their content. `None` for an unused id.
    ///
    /// ```
    /// use kaiyuan_tokenizer::Tokenizer;
    /// let json = r#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2},
    ///   "merges": ["a b"]}, "decoder": {"type": "ByteLevel"}}"#;
    /// let tok = Tokenizer::from_json_str("inline", json).unwrap();
    /// assert_eq!(tok.token_bytes(2).unwrap(), b"ab");
    /// ```
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        if let Some((token, _)) = self.added.by_id(id) {
            return Some(token.content.as_bytes().to_vec());
        }
        match self.model.symbols {
            crate::bpe::Symbols::Bytes => self.model.bytes_of(id).map(<[u8]>::to_vec),
            crate::bpe::Symbols::Chars => {
                let token = self.model.token(id)?;
                if self.model.byte_fallback
                    && token.len() == 6
                    && token.starts_with("<0x")
                    && token.ends_with('>')
                    && let Ok(byte) = u8::from_str_radix(&token[3..5], 16)
                {
                    return Some(vec![byte]);
                }
                Some(token.replace('\u{2581}', " ").into_bytes())
            }
        }
    }

    /// Decodes ids to text through the decoder (HF's `decode`); with
    /// `skip_special_tokens`, special added tokens are left out.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let mut tokens = Vec::with_capacity(ids.len());
        for &id in ids {
            if let Some((t, surface)) = self.added.by_id(id) {
                if !(skip_special_tokens && t.special) {
                    tokens.push(surface.to_owned());
                }
                continue;
            }
            let token = self.model.token(id).ok_or(TokenizerError::UnknownId {
                id,
                size: self.vocab_size(),
            })?;
            tokens.push(token.to_owned());
        }
        match &self.decoder {
            Some(d) => Ok(d.apply(tokens)?.concat()),
            None => Ok(tokens.join(" ")),
        }
    }

    /// Writes the tokenizer as HF `tokenizer.json` (the loaded JSON, for a
    /// tokenizer read from one).
    pub fn to_json(&self) -> Result<String> {
        let json_error = |e: serde_json::Error| TokenizerError::Json {
            origin: self.origin.clone(),
            message: e.to_string(),
        };
        match &self.json {
            Some(SavedJson::Text(text)) => serde_json::from_str::<Value>(text)
                .and_then(|v| serde_json::to_string_pretty(&v))
                .map_err(json_error),
            Some(SavedJson::Skeleton(skeleton)) => {
                let mut value = (**skeleton).clone();
                let (vocab, merges) = crate::json::vocab_and_merges(&self.model);
                value["model"]["vocab"] = vocab;
                value["model"]["merges"] = merges;
                serde_json::to_string_pretty(&value).map_err(json_error)
            }
            None => crate::json::bpe_to_json(
                &self.model,
                &self.added.tokens,
                self.fast_splits.as_deref(),
            ),
        }
    }
}

/// A BPE vocabulary `(token, id)` and its merges, given as tables.
type BpeTables<'a> = (&'a [(&'a str, u32)], &'a [(&'a str, &'a str)]);

/// Widens a byte span to whole characters: a byte-level token that holds
/// part of a character reports the character's span, as HF does.
fn widen_to_chars(text: &str, mut start: usize, mut end: usize) -> (usize, usize) {
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    while !text.is_char_boundary(end) {
        end += 1;
    }
    (start, end)
}
