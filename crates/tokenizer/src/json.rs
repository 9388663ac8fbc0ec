//! Reading and writing the model and added-token sections of HF's
//! `tokenizer.json`.

use serde_json::{Map, Value, json};

use crate::added::AddedToken;
use crate::bpe::{Bpe, Symbols};
use crate::split::SplitPattern;
use crate::{Result, TokenizerError};

/// Parses `"model": {"type": "BPE", …}`. `byte_level` says whether token
/// strings are in GPT-2's byte alphabet.
pub(crate) fn parse_bpe(origin: &str, model: &Value, byte_level: bool) -> Result<Bpe> {
    require_bpe(origin, model)?;
    let vocab_json = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            TokenizerError::bad_entry(origin, "model.vocab", "missing or not an object")
        })?;
    let mut vocab = Vec::with_capacity(vocab_json.len());
    for (token, id) in vocab_json {
        let id = id
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| {
                TokenizerError::bad_entry(
                    origin,
                    format!("vocab entry {token:?}"),
                    format!("id {id} is not a u32"),
                )
            })?;
        vocab.push((token.as_str(), id));
    }
    let merges_json = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            TokenizerError::bad_entry(origin, "model.merges", "missing or not an array")
        })?;
    let mut merges = Vec::with_capacity(merges_json.len());
    for (rank, merge) in merges_json.iter().enumerate() {
        let entry = || format!("merge {rank} {merge}");
        merges.push(match merge {
            Value::String(s) => s.split_once(' ').ok_or_else(|| {
                TokenizerError::bad_entry(
                    origin,
                    entry(),
                    "expected two tokens separated by a space",
                )
            })?,
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] => (a.as_str(), b.as_str()),
                _ => {
                    return Err(TokenizerError::bad_entry(
                        origin,
                        entry(),
                        "expected a pair of strings",
                    ));
                }
            },
            _ => {
                return Err(TokenizerError::bad_entry(
                    origin,
                    entry(),
                    "expected a string or a pair",
                ));
            }
        });
    }
    build_bpe(origin, model, byte_level, &vocab, &merges)
}

/// Refuses model types other than BPE (a missing `type` means BPE).
fn require_bpe(origin: &str, model: &Value) -> Result<()> {
    let kind = model.get("type").and_then(Value::as_str).unwrap_or("BPE");
    if kind != "BPE" {
        return Err(TokenizerError::unsupported(
            origin,
            "model",
            kind,
            "only BPE models are implemented",
        ));
    }
    Ok(())
}

/// The BPE model of `"model"` (its `type` and options: `unk_token`,
/// `continuing_subword_prefix`, …) with the vocabulary and merges given as
/// tables: `(token, id)` in `tokenizer.json` spelling, merges in rank order.
pub(crate) fn build_bpe(
    origin: &str,
    model: &Value,
    byte_level: bool,
    vocab: &[(&str, u32)],
    merges: &[(&str, &str)],
) -> Result<Bpe> {
    require_bpe(origin, model)?;
    let mut bpe = Bpe::empty(if byte_level {
        Symbols::Bytes
    } else {
        Symbols::Chars
    });
    for &(token, id) in vocab {
        // Byte-level spellings decode to new bytes; others are their bytes.
        let decoded = if byte_level {
            crate::bytelevel::decode_token(token)
        } else {
            None
        };
        let bytes = decoded.as_deref().unwrap_or(token.as_bytes());
        bpe.insert(origin, id, token, bytes)?;
    }
    let prefix = model
        .get("continuing_subword_prefix")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let ids: rustc_hash::FxHashMap<&str, u32> = vocab.iter().copied().collect();
    for (rank, &(left, right)) in merges.iter().enumerate() {
        let entry = || format!("merge {rank} {:?}", format!("{left} {right}"));
        let lookup = |t: &str| {
            ids.get(t).copied().ok_or_else(|| {
                TokenizerError::bad_entry(
                    origin,
                    entry(),
                    format!("token {t:?} is not in the vocabulary"),
                )
            })
        };
        let (l, r) = (lookup(left)?, lookup(right)?);
        let right_part = match &prefix {
            Some(p) => right.strip_prefix(p.as_str()).unwrap_or(right),
            None => right,
        };
        let merged = format!("{left}{right_part}");
        let id = lookup(&merged).map_err(|_| {
            TokenizerError::bad_entry(
                origin,
                entry(),
                format!("merged token {merged:?} is not in the vocabulary"),
            )
        })?;
        bpe.add_merge(l, r, rank as u32, id);
    }
    let opt_str = |k: &str| model.get(k).and_then(Value::as_str).map(str::to_owned);
    if let Some(unk) = opt_str("unk_token") {
        let bytes = if byte_level {
            crate::bytelevel::decode_token(&unk).unwrap_or_else(|| unk.as_bytes().to_vec())
        } else {
            unk.as_bytes().to_vec()
        };
        bpe.unk = Some(bpe.id_of_bytes(&bytes).ok_or_else(|| {
            TokenizerError::bad_entry(
                origin,
                "model.unk_token",
                format!("{unk:?} is not in the vocabulary"),
            )
        })?);
    }
    let flag = |k: &str| model.get(k).and_then(Value::as_bool).unwrap_or(false);
    bpe.fuse_unk = flag("fuse_unk");
    bpe.byte_fallback = flag("byte_fallback");
    bpe.whole_word_first = flag("ignore_merges");
    bpe.continuing_subword_prefix = prefix;
    bpe.end_of_word_suffix = opt_str("end_of_word_suffix");
    bpe.shrink_to_fit();
    Ok(bpe)
}

/// `model.vocab` (token → id) and `model.merges` (pairs in rank order) of
/// `bpe`, as `tokenizer.json` writes them.
pub(crate) fn vocab_and_merges(bpe: &Bpe) -> (Value, Value) {
    let mut vocab = Map::new();
    for (id, token) in bpe.tokens() {
        vocab.insert(token.to_owned(), json!(id));
    }
    let mut merges: Vec<(u32, u32, u32)> = bpe
        .merges
        .iter()
        .map(|(&key, m)| ((key >> 32) as u32, key as u32, m.rank))
        .collect();
    merges.sort_by_key(|&(l, r, rank)| (rank, l, r));
    // tiktoken-derived tables hold every split of a token; HF needs one.
    let mut seen_rank = std::collections::HashSet::new();
    let merges: Vec<Value> = merges
        .into_iter()
        .filter(|&(_, _, rank)| seen_rank.insert(rank))
        .map(|(l, r, _)| {
            json!([
                bpe.token(l).unwrap_or_default(),
                bpe.token(r).unwrap_or_default()
            ])
        })
        .collect();
    (Value::Object(vocab), Value::Array(merges))
}

/// Parses `"added_tokens": [...]`.
pub(crate) fn parse_added(origin: &str, added: Option<&Value>) -> Result<Vec<AddedToken>> {
    let Some(list) = added else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| TokenizerError::bad_entry(origin, "added_tokens", "not an array"))?;
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let entry = || format!("added_tokens[{i}]");
            let content = t
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| TokenizerError::bad_entry(origin, entry(), "missing `content`"))?;
            let id = t
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| {
                    TokenizerError::bad_entry(origin, entry(), "missing or invalid `id`")
                })?;
            let flag = |k: &str, d: bool| t.get(k).and_then(Value::as_bool).unwrap_or(d);
            Ok(AddedToken {
                content: content.to_owned(),
                id,
                special: flag("special", false),
                lstrip: flag("lstrip", false),
                rstrip: flag("rstrip", false),
                single_word: flag("single_word", false),
                normalized: flag("normalized", !flag("special", false)),
            })
        })
        .collect()
}

/// A `tokenizer.json` for a byte-level BPE built in memory (tiktoken files,
/// our trainer): vocabulary, merges in rank order, added tokens, and the split
/// pattern (as Split + ByteLevel without regex).
pub(crate) fn bpe_to_json(
    bpe: &Bpe,
    added: &[AddedToken],
    splits: Option<&[SplitPattern]>,
) -> Result<String> {
    let (vocab, merges) = vocab_and_merges(bpe);
    let mut pre = vec![];
    for s in splits.unwrap_or_default() {
        pre.push(json!({"type": "Split", "pattern": {"Regex": s.as_str()}, "behavior": "Isolated", "invert": false}));
    }
    pre.push(json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}));
    let added: Vec<Value> = added
        .iter()
        .map(|t| {
            json!({"id": t.id, "content": t.content, "single_word": t.single_word, "lstrip": t.lstrip,
                   "rstrip": t.rstrip, "normalized": t.normalized, "special": t.special})
        })
        .collect();
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": pre},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": bpe.whole_word_first, "vocab": vocab, "merges": merges},
    });
    serde_json::to_string_pretty(&doc).map_err(|e| TokenizerError::Json {
        origin: "tokenizer".into(),
        message: e.to_string(),
    })
}
