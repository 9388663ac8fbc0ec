//! An HF `tokenizer.json` rebuilt from a GGUF file's `tokenizer.*` metadata,
//! the way transformers' GGUF tokenizer converter builds it
//! (`integrations/gguf/gguf_tokenizer_mapping.py`), so both give the same ids.
//!
//! - `tokenizer.ggml.model = gpt2`: byte-level BPE. Tokens not already
//!   spelled in GPT-2's byte alphabet are respelled from their UTF-8 bytes;
//!   merges are the file's. The pre-tokenizer follows `tokenizer.ggml.pre`:
//!   a `Split` on the model family's regex then `ByteLevel` without its own
//!   regex for the families transformers knows (`llama-bpe`, `qwen2`, …),
//!   GPT-2's `ByteLevel` for GPT-2-style and `smollm` files, and an error for
//!   any other name.
//! - `tokenizer.ggml.model = llama`: SentencePiece BPE with byte fallback;
//!   the merges are recovered from the vocabulary, ranked by the merged
//!   token's score (transformers' `generate_merges`); `Metaspace` with
//!   `prepend_scheme: first`.
//!
//! Tokens of type 3 (control) become special added tokens, type 4
//! (user-defined) plain added tokens (both only when spelled as in the
//! vocabulary: a byte-level "control" token outside GPT-2's byte alphabet is
//! a llama.cpp mislabel transformers skips), and the BOS/EOS/UNK/padding
//! tokens special ones. `tokenizer.ggml.add_bos_token`/`add_eos_token` choose the
//! post-processor's template.
//!
//! Known difference: llama.cpp and SmolLM2's own `tokenizer.json` split
//! digits one by one for `smollm`; transformers' converter (followed here)
//! uses GPT-2's pattern, which keeps runs of digits together.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::GgufFile;
use crate::{ModelError, Result};

/// `tokenizer.ggml.token_type` of a control token.
pub(super) const TOKEN_CONTROL: i32 = 3;
/// `tokenizer.ggml.token_type` of a user-defined token.
pub(super) const TOKEN_USER_DEFINED: i32 = 4;

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.pre` values with their own split regex.
pub(super) const PRE_SPLITS: [(&str, &str); 20] = [
    ("llama3", LLAMA3_SPLIT),
    ("llama-v3", LLAMA3_SPLIT),
    ("llama-bpe", LLAMA3_SPLIT),
    ("falcon3", LLAMA3_SPLIT),
    ("falcon-h1", LLAMA3_SPLIT),
    ("pixtral", LLAMA3_SPLIT),
    ("midm-2.0", LLAMA3_SPLIT),
    ("lfm2", LLAMA3_SPLIT),
    ("dbrx", LLAMA3_SPLIT),
    ("smaug-bpe", LLAMA3_SPLIT),
    ("tekken", TEKKEN_SPLIT),
    ("qwen2", QWEN2_SPLIT),
    ("deepseek-r1-qwen", QWEN2_SPLIT),
    ("megrez", QWEN2_SPLIT),
    ("kormo", QWEN2_SPLIT),
    ("gpt-4o", GPT4O_SPLIT),
    ("llama4", GPT4O_SPLIT),
    ("kanana2", GPT4O_SPLIT),
    ("minimax-m2", GPT4O_SPLIT),
    ("f2llmv2", QWEN2_SPLIT),
];

/// `tokenizer.ggml.pre` values that use GPT-2's byte-level pattern (in
/// llama.cpp too, except `smollm`, see the module docs).
const PRE_GPT2: [&str; 16] = [
    "default",
    "gpt-2",
    "gpt2",
    "phi-2",
    "roberta-bpe",
    "jina-es",
    "jina-de",
    "jina-v1-en",
    "jina-v2-es",
    "jina-v2-de",
    "jina-v2-code",
    "gigachat",
    "mpt",
    "olmo",
    "jais",
    "smollm",
];

/// GPT-2's map from bytes to the printable characters that spell them.
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let printable = matches!(b, 33..=126 | 161..=172 | 174..=255);
        let code = if printable {
            b as u32
        } else {
            let c = next;
            next += 1;
            c
        };
        *slot = char::from_u32(code).unwrap_or('\u{FFFD}');
    }
    table
}

/// See [`GgufFile::byte_level_parts`].
struct ByteLevelParts<'a> {
    skeleton: Value,
    spelled: Vec<String>,
    merges: Vec<(&'a str, &'a str)>,
}

impl GgufFile {
    /// `tokenizer.chat_template`, when present and a string.
    pub fn chat_template(&self) -> Option<String> {
        self.get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    }

    /// `general.license` (e.g. `apache-2.0`), when present and a string.
    pub fn license(&self) -> Option<String> {
        self.get("general.license")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    }

    /// An HF `tokenizer.json` equivalent of the tokenizer metadata, loadable
    /// by `kaiyuan_tokenizer::Tokenizer::from_json_str` (see the module docs
    /// for how each part is chosen).
    ///
    /// Errors: [`ModelError::Unsupported`] for tokenizer models other than
    /// `gpt2` and `llama` and for unknown `tokenizer.ggml.pre` values;
    /// [`ModelError::Format`] for missing or inconsistent arrays (naming the
    /// key).
    pub fn tokenizer_json(&self) -> Result<String> {
        let value = self.tokenizer_json_value()?;
        serde_json::to_string(&value).map_err(|e| {
            ModelError::format(self.origin().to_string(), format!("tokenizer JSON: {e}"))
        })
    }

    /// The tokenizer, built from [`GgufFile::tokenizer_json_value`] without
    /// writing and re-reading its text.
    pub fn tokenizer(&self) -> Result<kaiyuan_tokenizer::Tokenizer> {
        if self.get_str("tokenizer.ggml.model")? != "gpt2" {
            let value = self.tokenizer_json_value()?;
            return Ok(kaiyuan_tokenizer::Tokenizer::from_json_value(
                self.origin(),
                &value,
            )?);
        }
        // Byte-level vocabularies skip the JSON value of their tables. As
        // in a JSON object, a token spelled twice keeps its last id.
        let parts = self.byte_level_parts()?;
        let mut last_id: std::collections::HashMap<&str, u32> =
            std::collections::HashMap::with_capacity(parts.spelled.len());
        for (id, token) in parts.spelled.iter().enumerate() {
            last_id.insert(token.as_str(), id as u32);
        }
        let vocab: Vec<(&str, u32)> = parts
            .spelled
            .iter()
            .enumerate()
            .filter(|&(id, token)| last_id.get(token.as_str()) == Some(&(id as u32)))
            .map(|(id, token)| (token.as_str(), id as u32))
            .collect();
        Ok(kaiyuan_tokenizer::Tokenizer::from_json_value_with_tables(
            self.origin(),
            &parts.skeleton,
            &vocab,
            &parts.merges,
        )?)
    }

    /// [`GgufFile::tokenizer_json`] as a JSON value.
    pub fn tokenizer_json_value(&self) -> Result<Value> {
        let model = self.get_str("tokenizer.ggml.model")?;
        let value = match model {
            "gpt2" => self.byte_level_tokenizer()?,
            "llama" => {
                // transformers builds these architectures' SentencePiece
                // vocabularies differently (respelled spaces, merges in file
                // order, a normalizer instead of Metaspace).
                let arch = self.get_str_opt("general.architecture")?.unwrap_or("");
                if ["gemma", "gemma2", "gemma3", "phi3"].contains(&arch) {
                    return Err(ModelError::Unsupported {
                        origin: self.origin().to_string(),
                        what: format!("SentencePiece tokenizer of architecture `{arch}`"),
                    });
                }
                self.sentencepiece_tokenizer()?
            }
            other => {
                return Err(ModelError::Unsupported {
                    origin: self.origin().to_string(),
                    what: format!("tokenizer model `{other}` (supported: gpt2, llama)"),
                });
            }
        };
        Ok(value)
    }

    fn token_types(&self, count: usize) -> Result<Vec<i32>> {
        let key = "tokenizer.ggml.token_type";
        let Some(array) = self.get_array_opt(key)? else {
            return Ok(Vec::new());
        };
        let types = array.as_i32s().ok_or_else(|| {
            ModelError::format(
                self.origin().to_string(),
                format!(
                    "metadata key `{key}`: array of {}, expected i32",
                    array.element_type()
                ),
            )
        })?;
        if types.len() != count {
            return Err(ModelError::format(
                self.origin().to_string(),
                format!(
                    "metadata key `{key}` has {} entries for {count} tokens",
                    types.len()
                ),
            ));
        }
        Ok(types.to_vec())
    }

    /// `(token id, key)` of the BOS/EOS/UNK/padding ids present, each
    /// checked to be a token.
    fn special_ids(&self, count: usize) -> Result<Vec<(&'static str, u32)>> {
        let mut out = Vec::new();
        for (name, key) in [
            ("bos", "tokenizer.ggml.bos_token_id"),
            ("eos", "tokenizer.ggml.eos_token_id"),
            ("unk", "tokenizer.ggml.unknown_token_id"),
            ("pad", "tokenizer.ggml.padding_token_id"),
        ] {
            if let Some(id) = self.get_u64_opt(key)? {
                match u32::try_from(id) {
                    Ok(id) if (id as usize) < count => out.push((name, id)),
                    _ => {
                        return Err(ModelError::format(
                            self.origin().to_string(),
                            format!(
                                "metadata key `{key}`: id {id} is not one of the {count} tokens"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The post-processor for the add-BOS/EOS flags (transformers'
    /// `update_post_processor`).
    fn post_processor(
        &self,
        tokens: &[String],
        specials: &[(&'static str, u32)],
        add_bos_default: bool,
    ) -> Result<Value> {
        let add_bos = self
            .get_bool_opt("tokenizer.ggml.add_bos_token")?
            .unwrap_or(add_bos_default);
        let add_eos = self
            .get_bool_opt("tokenizer.ggml.add_eos_token")?
            .unwrap_or(false);
        let find = |which: &str| {
            specials
                .iter()
                .find(|s| s.0 == which)
                .and_then(|&(_, id)| Some((tokens.get(id as usize)?.clone(), id)))
        };
        let bos = find("bos").filter(|_| add_bos);
        let eos = find("eos").filter(|_| add_eos);
        let special = |(t, _): &(String, u32), type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
        let seq = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
        let mut single = Vec::new();
        let mut pair = Vec::new();
        if let Some(b) = &bos {
            single.push(special(b, 0));
            pair.push(special(b, 0));
        }
        single.push(seq("A", 0));
        pair.push(seq("A", 0));
        if let Some(e) = &eos {
            single.push(special(e, 0));
            pair.push(special(e, 0));
        }
        if let Some(b) = &bos {
            pair.push(special(b, 1));
        }
        pair.push(seq("B", 1));
        if let Some(e) = &eos {
            pair.push(special(e, 1));
        }
        let mut special_tokens = Map::new();
        for (t, id) in bos.iter().chain(eos.iter()) {
            special_tokens.insert(t.clone(), json!({"id": t, "ids": [id], "tokens": [t]}));
        }
        Ok(json!({
            "type": "TemplateProcessing",
            "single": single,
            "pair": pair,
            "special_tokens": special_tokens,
        }))
    }

    /// Added tokens: control tokens and the BOS/EOS/UNK/padding tokens as
    /// special, user-defined ones as plain; control and user-defined tokens
    /// only when `keep` (the token is spelled as in the vocabulary).
    fn added_tokens(
        &self,
        tokens: &[String],
        types: &[i32],
        specials: &[(&'static str, u32)],
        keep: impl Fn(&str) -> bool,
    ) -> Vec<Value> {
        let mut added: Vec<(u32, bool)> = Vec::new();
        let mut seen = HashSet::new();
        for &(_, id) in specials {
            if seen.insert(id) {
                added.push((id, true));
            }
        }
        for (id, (token, &ty)) in tokens.iter().zip(types).enumerate() {
            let id = id as u32;
            if ty == TOKEN_CONTROL && keep(token) && seen.insert(id) {
                added.push((id, true));
            }
        }
        for (id, (token, &ty)) in tokens.iter().zip(types).enumerate() {
            let id = id as u32;
            if ty == TOKEN_USER_DEFINED && keep(token) && seen.insert(id) {
                added.push((id, false));
            }
        }
        added.sort_by_key(|a| a.0);
        added
            .into_iter()
            .filter_map(|(id, special)| {
                let content = tokens.get(id as usize)?;
                Some(json!({
                    "id": id, "content": content, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": special,
                }))
            })
            .collect()
    }

    fn byte_level_tokenizer(&self) -> Result<Value> {
        let parts = self.byte_level_parts()?;
        let mut value = parts.skeleton;
        let vocab: Map<String, Value> = parts
            .spelled
            .iter()
            .enumerate()
            .map(|(id, token)| (token.clone(), json!(id)))
            .collect();
        let merges: Vec<Value> = parts.merges.iter().map(|(a, b)| json!([a, b])).collect();
        value["model"]["vocab"] = Value::Object(vocab);
        value["model"]["merges"] = Value::Array(merges);
        Ok(value)
    }

    /// A byte-level (`gpt2`) vocabulary's `tokenizer.json` in parts: the
    /// JSON without `model.vocab` and `model.merges`, the tokens respelled
    /// in GPT-2's byte alphabet by id, and the merges as pairs.
    fn byte_level_parts(&self) -> Result<ByteLevelParts<'_>> {
        let tokens = self.get_str_array("tokenizer.ggml.tokens")?;
        let merges = self.get_str_array("tokenizer.ggml.merges")?;
        let types = self.token_types(tokens.len())?;
        let specials = self.special_ids(tokens.len())?;
        let spelling = bytes_to_unicode();
        let alphabet: HashSet<char> = spelling.iter().copied().collect();
        let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
        let spelled: Vec<String> = tokens
            .iter()
            .map(|token| {
                if in_alphabet(token) {
                    token.clone()
                } else {
                    token.bytes().map(|b| spelling[b as usize]).collect()
                }
            })
            .collect();
        let merges: Vec<(&str, &str)> = merges
            .iter()
            .map(|m| {
                let mut parts = m.split(' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(a), Some(b), None) => Ok((a, b)),
                    _ => Err(ModelError::format(
                        self.origin().to_string(),
                        format!(
                            "metadata key `tokenizer.ggml.merges`: merge {m:?} is not two tokens"
                        ),
                    )),
                }
            })
            .collect::<Result<_>>()?;
        let pre = self.get_str_opt("tokenizer.ggml.pre")?;
        let pre_tokenizer = match pre {
            None => gpt2_byte_level(),
            Some(p) if PRE_GPT2.contains(&p) => gpt2_byte_level(),
            Some(p) => match PRE_SPLITS.iter().find(|(name, _)| *name == p) {
                Some((_, regex)) => json!({
                    "type": "Sequence",
                    "pretokenizers": [
                        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
                        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
                    ],
                }),
                None => {
                    return Err(ModelError::Unsupported {
                        origin: self.origin().to_string(),
                        what: format!(
                            "pre-tokenizer `{p}` (tokenizer.ggml.pre); known: {}, {}",
                            PRE_GPT2.join(", "),
                            PRE_SPLITS.map(|s| s.0).join(", ")
                        ),
                    });
                }
            },
        };
        let added = self.added_tokens(tokens, &types, &specials, in_alphabet);
        let skeleton = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": self.post_processor(tokens, &specials, false)?,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": false,
            },
        });
        Ok(ByteLevelParts {
            skeleton,
            spelled,
            merges,
        })
    }

    fn sentencepiece_tokenizer(&self) -> Result<Value> {
        let tokens = self.get_str_array("tokenizer.ggml.tokens")?;
        let types = self.token_types(tokens.len())?;
        let specials = self.special_ids(tokens.len())?;
        let scores_key = "tokenizer.ggml.scores";
        let merges = match self.get_array_opt("tokenizer.ggml.merges")? {
            Some(_) => self
                .get_str_array("tokenizer.ggml.merges")?
                .iter()
                .map(|m| match m.split_once(' ') {
                    Some((a, b)) => json!([a, b]),
                    None => json!([m, ""]),
                })
                .collect(),
            None => {
                let scores = self.get_array(scores_key)?;
                let scores = scores.as_f32s().ok_or_else(|| {
                    ModelError::format(
                        self.origin().to_string(),
                        format!(
                            "metadata key `{scores_key}`: array of {}, expected f32",
                            scores.element_type()
                        ),
                    )
                })?;
                if scores.len() != tokens.len() {
                    return Err(ModelError::format(
                        self.origin().to_string(),
                        format!(
                            "metadata key `{scores_key}` has {} entries for {} tokens",
                            scores.len(),
                            tokens.len()
                        ),
                    ));
                }
                merges_from_scores(tokens, scores)
            }
        };
        let mut vocab = Map::new();
        for (id, token) in tokens.iter().enumerate() {
            vocab.insert(token.clone(), json!(id));
        }
        let unk = specials
            .iter()
            .find(|s| s.0 == "unk")
            .and_then(|&(_, id)| tokens.get(id as usize).cloned())
            .unwrap_or_else(|| "<unk>".to_string());
        let unk = vocab.contains_key(&unk).then_some(unk);
        let added = self.added_tokens(tokens, &types, &specials, |_| true);
        Ok(json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false},
            "post_processor": self.post_processor(tokens, &specials, true)?,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            ]},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                "ignore_merges": false, "vocab": vocab, "merges": merges,
            },
        }))
    }
}

fn gpt2_byte_level() -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
}

/// Merges implied by a SentencePiece vocabulary (transformers'
/// `generate_merges` with scores): every split of a token into two tokens,
/// ordered by the merged token's score (highest first), then by the lengths
/// of the left and right parts (longest first); ties keep vocabulary order,
/// and the splits of one token are ordered by the ids of their parts.
fn merges_from_scores(tokens: &[String], scores: &[f32]) -> Vec<Value> {
    // Python dict semantics: a repeated token keeps its first position and
    // its last id and score.
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    let mut order: Vec<&str> = Vec::with_capacity(tokens.len());
    let mut score_of: HashMap<&str, f32> = HashMap::with_capacity(tokens.len());
    for (id, (token, &score)) in tokens.iter().zip(scores).enumerate() {
        if ids.insert(token, id).is_none() {
            order.push(token);
        }
        score_of.insert(token, score);
    }
    let mut merges: Vec<(&str, &str, f32)> = Vec::new();
    for &token in &order {
        let score = score_of.get(token).copied().unwrap_or(f32::NEG_INFINITY);
        let mut local: Vec<(&str, &str, usize, usize)> = token
            .char_indices()
            .skip(1)
            .filter_map(|(i, _)| {
                let (l, r) = token.split_at(i);
                Some((l, r, *ids.get(l)?, *ids.get(r)?))
            })
            .collect();
        local.sort_by_key(|&(_, _, li, ri)| (li, ri));
        merges.extend(local.into_iter().map(|(l, r, _, _)| (l, r, score)));
    }
    // Python's `sorted(..., reverse=True)` is stable: equal keys keep their
    // order. Lengths are in characters.
    merges.sort_by(|a, b| {
        let key = |m: &(&str, &str, f32)| (m.2, m.0.chars().count(), m.1.chars().count());
        let (ka, kb) = (key(a), key(b));
        kb.0.total_cmp(&ka.0)
            .then(kb.1.cmp(&ka.1))
            .then(kb.2.cmp(&ka.2))
    });
    merges.into_iter().map(|(l, r, _)| json!([l, r])).collect()
}
