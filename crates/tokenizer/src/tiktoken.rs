//! tiktoken rank files (`.tiktoken`: one `base64(token) rank` per line) and
//! the split patterns and special tokens of the known encodings.

use std::path::Path;

use base64::Engine as _;

use crate::bpe::{Bpe, Symbols};
use crate::{Result, TokenizerError};

/// What a rank file alone does not say: the split pattern and special tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TiktokenSpec {
    /// The encoding's name (`cl100k_base`, `qwen`, …).
    pub name: String,
    /// The split regex.
    pub pattern: String,
    /// Special tokens and their ids.
    pub specials: Vec<(String, u32)>,
}

const R50K_PATTERN: &str =
    r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s";
const CL100K_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";
const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
);
const QWEN_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl TiktokenSpec {
    /// The spec of a known encoding: `r50k_base` (GPT-2), `p50k_base`,
    /// `cl100k_base`, `o200k_base`, or `qwen` (Qwen-1's `qwen.tiktoken`).
    /// File names such as `cl100k_base.tiktoken` are accepted too.
    pub fn known(name: &str) -> Option<Self> {
        let stem = name
            .rsplit('/')
            .next()
            .unwrap_or(name)
            .trim_end_matches(".tiktoken");
        let own = |pattern: &str, specials: &[(&str, u32)]| {
            Some(Self {
                name: stem.to_owned(),
                pattern: pattern.to_owned(),
                specials: specials.iter().map(|&(s, i)| (s.to_owned(), i)).collect(),
            })
        };
        match stem {
            "r50k_base" | "gpt2" => own(R50K_PATTERN, &[("<|endoftext|>", 50256)]),
            "p50k_base" => own(R50K_PATTERN, &[("<|endoftext|>", 50256)]),
            "cl100k_base" => own(
                CL100K_PATTERN,
                &[
                    ("<|endoftext|>", 100257),
                    ("<|fim_prefix|>", 100258),
                    ("<|fim_middle|>", 100259),
                    ("<|fim_suffix|>", 100260),
                    ("<|endofprompt|>", 100276),
                ],
            ),
            "o200k_base" => own(
                O200K_PATTERN,
                &[("<|endoftext|>", 199999), ("<|endofprompt|>", 200018)],
            ),
            "qwen" => {
                let mut specials = vec![
                    ("<|endoftext|>".to_owned(), 151643),
                    ("<|im_start|>".to_owned(), 151644),
                    ("<|im_end|>".to_owned(), 151645),
                ];
                specials.extend((0..205).map(|i| (format!("<|extra_{i}|>"), 151646 + i)));
                Some(Self {
                    name: "qwen".to_owned(),
                    pattern: QWEN_PATTERN.to_owned(),
                    specials,
                })
            }
            _ => None,
        }
    }
}

/// Reads a rank file into a byte-level BPE whose merges follow the ranks
/// (tiktoken's rule: the pair whose concatenation has the lowest rank merges first).
pub(crate) fn load_ranks(path: &Path) -> Result<Bpe> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_ranks(&origin, &text)
}

/// Parses the text of a rank file; `origin` names it in errors.
pub(crate) fn parse_ranks(origin: &str, text: &str) -> Result<Bpe> {
    let mut bpe = Bpe::empty(Symbols::Bytes);
    bpe.whole_word_first = true;
    let engine = base64::engine::general_purpose::STANDARD;
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry = || format!("line {}", index + 1);
        let (token, rank) = line.split_once(' ').ok_or_else(|| {
            TokenizerError::bad_entry(origin, entry(), "expected `base64-token rank`")
        })?;
        let bytes = engine.decode(token).map_err(|e| {
            TokenizerError::bad_entry(origin, entry(), format!("bad base64 {token:?}: {e}"))
        })?;
        let rank: u32 = rank.trim().parse().map_err(|_| {
            TokenizerError::bad_entry(origin, entry(), format!("bad rank {rank:?}"))
        })?;
        if bytes.is_empty() {
            return Err(TokenizerError::bad_entry(origin, entry(), "empty token"));
        }
        let display = crate::bytelevel::encode_bytes(&bytes);
        bpe.insert(origin, rank, &display, &bytes)
            .map_err(|e| TokenizerError::bad_entry(origin, entry(), e.to_string()))?;
    }
    for b in 0..=255u8 {
        if bpe.byte_ids[b as usize].is_none() {
            return Err(TokenizerError::bad_entry(
                origin,
                format!("byte 0x{b:02X}"),
                "every single byte must have a rank",
            ));
        }
    }
    // Every split of a token into two tokens merges into it at its rank.
    let mut merges = Vec::new();
    for (id, bytes) in bpe.token_bytes() {
        for cut in 1..bytes.len() {
            if let (Some(l), Some(r)) = (
                bpe.id_of_bytes(&bytes[..cut]),
                bpe.id_of_bytes(&bytes[cut..]),
            ) {
                merges.push((l, r, id));
            }
        }
    }
    for (l, r, id) in merges {
        bpe.add_merge(l, r, id, id);
    }
    bpe.shrink_to_fit();
    Ok(bpe)
}
