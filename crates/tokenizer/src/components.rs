//! The pipeline stages of a `tokenizer.json`: normalizers, pre-tokenizers,
//! post-processors and decoders, parsed from HF's JSON and run on
//! [`Aligned`] text.

use serde_json::Value;
use unicode_normalization_alignments::UnicodeNormalization;

use crate::aligned::Aligned;
use crate::split::SplitPattern;
use crate::{Result, TokenizerError};

/// Reads a string field, failing with the component and field named.
fn field_str<'a>(origin: &str, kind: &'static str, v: &'a Value, name: &str) -> Result<&'a str> {
    v.get(name).and_then(Value::as_str).ok_or_else(|| {
        TokenizerError::bad_entry(
            origin,
            kind,
            format!("missing string field `{name}` in {v}"),
        )
    })
}

fn field_bool(v: &Value, name: &str, default: bool) -> bool {
    v.get(name).and_then(Value::as_bool).unwrap_or(default)
}

fn type_of<'a>(origin: &str, kind: &'static str, v: &'a Value) -> Result<&'a str> {
    field_str(origin, kind, v, "type")
}

/// A `{"String": s}` or `{"Regex": r}` pattern.
#[derive(Debug, Clone)]
pub(crate) enum Pattern {
    Literal(String),
    Regex(SplitPattern),
}

impl Pattern {
    fn parse(origin: &str, kind: &'static str, v: &Value) -> Result<Self> {
        let p = v
            .get("pattern")
            .ok_or_else(|| TokenizerError::bad_entry(origin, kind, "missing `pattern`"))?;
        if let Some(s) = p.get("String").and_then(Value::as_str) {
            Ok(Pattern::Literal(s.to_owned()))
        } else if let Some(r) = p.get("Regex").and_then(Value::as_str) {
            Ok(Pattern::Regex(SplitPattern::new(origin, r)?))
        } else {
            Err(TokenizerError::bad_entry(
                origin,
                kind,
                format!("pattern must be {{\"String\"}} or {{\"Regex\"}}, got {p}"),
            ))
        }
    }

    /// Byte ranges of the non-overlapping matches in `text`.
    fn matches(&self, text: &str) -> Result<Vec<(usize, usize)>> {
        let mut out = Vec::new();
        match self {
            Pattern::Literal(s) if s.is_empty() => {}
            Pattern::Literal(s) => out.extend(
                text.match_indices(s.as_str())
                    .map(|(i, m)| (i, i + m.len())),
            ),
            Pattern::Regex(r) => r.for_each_regex_match(text, &mut |a, b| {
                if a < b {
                    out.push((a, b))
                }
            })?,
        }
        Ok(out)
    }
}

// ----- normalizers ---------------------------------------------------------

/// A normalizer stage.
#[derive(Debug, Clone)]
pub(crate) enum Normalizer {
    Nfc,
    Nfd,
    Nfkc,
    Nfkd,
    Lowercase,
    Replace { pattern: Pattern, content: String },
    Prepend(String),
    Strip { left: bool, right: bool },
    Sequence(Vec<Normalizer>),
}

impl Normalizer {
    pub(crate) fn parse(origin: &str, v: &Value) -> Result<Self> {
        const KIND: &str = "normalizer";
        Ok(match type_of(origin, KIND, v)? {
            "NFC" => Normalizer::Nfc,
            "NFD" => Normalizer::Nfd,
            "NFKC" => Normalizer::Nfkc,
            "NFKD" => Normalizer::Nfkd,
            "Lowercase" => Normalizer::Lowercase,
            "Replace" => Normalizer::Replace {
                pattern: Pattern::parse(origin, KIND, v)?,
                content: field_str(origin, KIND, v, "content")?.to_owned(),
            },
            "Prepend" => Normalizer::Prepend(field_str(origin, KIND, v, "prepend")?.to_owned()),
            "Strip" => Normalizer::Strip {
                left: field_bool(v, "strip_left", false),
                right: field_bool(v, "strip_right", false),
            },
            "Sequence" => Normalizer::Sequence(
                v.get("normalizers")
                    .and_then(Value::as_array)
                    .ok_or_else(|| {
                        TokenizerError::bad_entry(origin, KIND, "Sequence without `normalizers`")
                    })?
                    .iter()
                    .map(|n| Normalizer::parse(origin, n))
                    .collect::<Result<_>>()?,
            ),
            other => return Err(TokenizerError::unsupported(origin, KIND, other, "")),
        })
    }

    pub(crate) fn apply(&self, input: Aligned) -> Result<Aligned> {
        Ok(match self {
            Normalizer::Nfc => unicode_form(
                input,
                |s| s.nfc().collect(),
                |c: std::str::Chars<'_>| unicode_normalization::is_nfc_quick(c),
            ),
            Normalizer::Nfd => unicode_form(
                input,
                |s| s.nfd().collect(),
                |c: std::str::Chars<'_>| unicode_normalization::is_nfd_quick(c),
            ),
            Normalizer::Nfkc => unicode_form(
                input,
                |s| s.nfkc().collect(),
                |c: std::str::Chars<'_>| unicode_normalization::is_nfkc_quick(c),
            ),
            Normalizer::Nfkd => unicode_form(
                input,
                |s| s.nfkd().collect(),
                |c: std::str::Chars<'_>| unicode_normalization::is_nfkd_quick(c),
            ),
            Normalizer::Lowercase => input.map_chars(|c, out| out.extend(c.to_lowercase())),
            Normalizer::Replace { pattern, content } => {
                let mut out = input;
                let matches = pattern.matches(&out.text)?;
                out.replace_ranges(&matches, content);
                out
            }
            Normalizer::Prepend(prefix) => {
                let mut out = input;
                out.prepend(prefix);
                out
            }
            Normalizer::Strip { left, right } => {
                let mut start = 0;
                let mut end = input.text.len();
                if *left {
                    start = input.text.len() - input.text.trim_start().len();
                }
                if *right {
                    end = input.text.trim_end().len().max(start);
                }
                input.slice(start, end)
            }
            Normalizer::Sequence(list) => {
                let mut text = input;
                for n in list {
                    text = n.apply(text)?;
                }
                text
            }
        })
    }
}

/// Applies a Unicode normal form with HF's alignment of each output
/// character (through `unicode-normalization-alignments`).
fn unicode_form(
    mut input: Aligned,
    form: impl Fn(&str) -> Vec<(char, isize)>,
    quick: impl Fn(std::str::Chars<'_>) -> unicode_normalization::IsNormalized,
) -> Aligned {
    if quick(input.text.chars()) == unicode_normalization::IsNormalized::Yes {
        return input;
    }
    let dest = form(&input.text);
    input.transform(dest, 0);
    input
}

// ----- pre-tokenizers ------------------------------------------------------

/// How a split pattern's matches relate to the pieces around them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behavior {
    Removed,
    Isolated,
    MergedWithPrevious,
    MergedWithNext,
    Contiguous,
}

impl Behavior {
    fn parse(origin: &str, v: &Value) -> Result<Self> {
        Ok(
            match v
                .get("behavior")
                .and_then(Value::as_str)
                .unwrap_or("Isolated")
            {
                "Removed" => Behavior::Removed,
                "Isolated" => Behavior::Isolated,
                "MergedWithPrevious" => Behavior::MergedWithPrevious,
                "MergedWithNext" => Behavior::MergedWithNext,
                "Contiguous" => Behavior::Contiguous,
                other => {
                    return Err(TokenizerError::unsupported(
                        origin,
                        "pre_tokenizer",
                        "Split",
                        format!("behavior `{other}`"),
                    ));
                }
            },
        )
    }
}

/// When Metaspace adds its replacement character in front of a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrependScheme {
    Always,
    First,
    Never,
}

/// A pre-tokenizer stage.
#[derive(Debug, Clone)]
pub(crate) enum PreTokenizer {
    /// GPT-2 byte level: optional prefix space, optional GPT-2 split.
    ByteLevel {
        add_prefix_space: bool,
        split: Option<SplitPattern>,
    },
    Split {
        pattern: Pattern,
        behavior: Behavior,
        invert: bool,
    },
    Digits {
        individual: bool,
    },
    Metaspace {
        replacement: char,
        prepend: PrependScheme,
        split: bool,
    },
    Punctuation {
        behavior: Behavior,
    },
    Whitespace,
    WhitespaceSplit,
    Sequence(Vec<PreTokenizer>),
}

/// GPT-2's split pattern, used by the ByteLevel pre-tokenizer with `use_regex`.
pub(crate) const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

impl PreTokenizer {
    pub(crate) fn parse(origin: &str, v: &Value) -> Result<Self> {
        const KIND: &str = "pre_tokenizer";
        Ok(match type_of(origin, KIND, v)? {
            "ByteLevel" => PreTokenizer::ByteLevel {
                add_prefix_space: field_bool(v, "add_prefix_space", true),
                split: if field_bool(v, "use_regex", true) {
                    Some(SplitPattern::new(origin, GPT2_PATTERN)?)
                } else {
                    None
                },
            },
            "Split" => PreTokenizer::Split {
                pattern: Pattern::parse(origin, KIND, v)?,
                behavior: Behavior::parse(origin, v)?,
                invert: field_bool(v, "invert", false),
            },
            "Digits" => PreTokenizer::Digits {
                individual: field_bool(v, "individual_digits", false),
            },
            "Metaspace" => {
                let replacement = field_str(origin, KIND, v, "replacement")?;
                let mut chars = replacement.chars();
                let (Some(c), None) = (chars.next(), chars.next()) else {
                    return Err(TokenizerError::bad_entry(
                        origin,
                        KIND,
                        format!("Metaspace replacement {replacement:?} must be one character"),
                    ));
                };
                let prepend = match v.get("prepend_scheme").and_then(Value::as_str) {
                    Some("always") => PrependScheme::Always,
                    Some("first") => PrependScheme::First,
                    Some("never") => PrependScheme::Never,
                    Some(other) => {
                        return Err(TokenizerError::unsupported(
                            origin,
                            KIND,
                            "Metaspace",
                            format!("prepend_scheme `{other}`"),
                        ));
                    }
                    None if field_bool(v, "add_prefix_space", true) => PrependScheme::Always,
                    None => PrependScheme::Never,
                };
                PreTokenizer::Metaspace {
                    replacement: c,
                    prepend,
                    split: field_bool(v, "split", true),
                }
            }
            "Punctuation" => PreTokenizer::Punctuation {
                behavior: Behavior::parse(origin, v)?,
            },
            "Whitespace" => PreTokenizer::Whitespace,
            "WhitespaceSplit" => PreTokenizer::WhitespaceSplit,
            "Sequence" => PreTokenizer::Sequence(
                v.get("pretokenizers")
                    .and_then(Value::as_array)
                    .ok_or_else(|| {
                        TokenizerError::bad_entry(origin, KIND, "Sequence without `pretokenizers`")
                    })?
                    .iter()
                    .map(|p| PreTokenizer::parse(origin, p))
                    .collect::<Result<_>>()?,
            ),
            other => return Err(TokenizerError::unsupported(origin, KIND, other, "")),
        })
    }

    /// Whether this stage only cuts text (no rewriting), so the fast path
    /// can run it on borrowed slices: returns the patterns to apply in order.
    pub(crate) fn pure_splits(&self) -> Option<Vec<&SplitPattern>> {
        match self {
            PreTokenizer::ByteLevel {
                add_prefix_space: false,
                split,
            } => Some(split.iter().collect()),
            PreTokenizer::Split {
                pattern: Pattern::Regex(r),
                behavior: Behavior::Isolated,
                invert: false,
            } => Some(vec![r]),
            PreTokenizer::Sequence(list) => {
                let mut all = Vec::new();
                for p in list {
                    all.extend(p.pure_splits()?);
                }
                Some(all)
            }
            _ => None,
        }
    }

    /// Splits each piece.
    pub(crate) fn apply(&self, pieces: Vec<Aligned>) -> Result<Vec<Aligned>> {
        let mut out = Vec::with_capacity(pieces.len());
        for piece in pieces {
            self.apply_one(piece, &mut out)?;
        }
        Ok(out)
    }

    fn apply_one(&self, piece: Aligned, out: &mut Vec<Aligned>) -> Result<()> {
        match self {
            PreTokenizer::ByteLevel {
                add_prefix_space,
                split,
            } => {
                let mut piece = piece;
                if *add_prefix_space && !piece.text.starts_with(' ') {
                    piece.prepend(" ");
                }
                match split {
                    Some(r) => {
                        let mut ranges = Vec::new();
                        r.for_each_match(&piece.text, |a, b| ranges.push((a, b)))?;
                        cut(&piece, &ranges, Behavior::Isolated, false, out);
                    }
                    None => out.push(piece),
                }
            }
            PreTokenizer::Split {
                pattern,
                behavior,
                invert,
            } => {
                let ranges = pattern.matches(&piece.text)?;
                cut(&piece, &ranges, *behavior, *invert, out);
            }
            PreTokenizer::Digits { individual } => {
                let ranges = char_runs(&piece.text, |c| c.is_ascii_digit(), *individual);
                cut(&piece, &ranges, Behavior::Isolated, false, out);
            }
            PreTokenizer::Punctuation { behavior } => {
                let ranges = char_runs(&piece.text, is_punctuation, true);
                cut(&piece, &ranges, *behavior, false, out);
            }
            PreTokenizer::Whitespace => {
                // HF keeps the matches of `\w+|[^\w\s]+` (Unicode classes) and drops the rest.
                static WORDS: std::sync::OnceLock<Option<SplitPattern>> =
                    std::sync::OnceLock::new();
                let words = WORDS
                    .get_or_init(|| SplitPattern::new("Whitespace", r"\w+|[^\w\s]+").ok())
                    .as_ref()
                    .ok_or_else(|| {
                        TokenizerError::Invalid("the Whitespace pattern does not compile".into())
                    })?;
                let mut ranges = Vec::new();
                words.for_each_regex_match(&piece.text, &mut |a, b| ranges.push((a, b)))?;
                cut(&piece, &ranges, Behavior::Removed, true, out);
            }
            PreTokenizer::WhitespaceSplit => {
                let ranges = char_runs(&piece.text, char::is_whitespace, false);
                cut(&piece, &ranges, Behavior::Removed, false, out);
            }
            PreTokenizer::Metaspace {
                replacement,
                prepend,
                split,
            } => {
                let mut buf = [0u8; 4];
                let rep: &str = replacement.encode_utf8(&mut buf);
                // HF checks after replacing spaces; `first` means the piece
                // starts at byte 0 of the input.
                let add = match prepend {
                    PrependScheme::Always => true,
                    PrependScheme::First => piece.original(0, 0).0 == 0,
                    PrependScheme::Never => false,
                };
                let mut p = piece;
                let spaces: Vec<(usize, usize)> =
                    p.text.match_indices(' ').map(|(i, _)| (i, i + 1)).collect();
                p.replace_ranges(&spaces, rep);
                if add && !p.text.starts_with(*replacement) {
                    p.prepend(rep);
                }
                if *split {
                    let ranges = char_runs(&p.text, |c| c == *replacement, true);
                    cut(&p, &ranges, Behavior::MergedWithNext, false, out);
                } else {
                    out.push(p);
                }
            }
            PreTokenizer::Sequence(list) => {
                let mut pieces = vec![piece];
                for stage in list {
                    pieces = stage.apply(pieces)?;
                }
                out.extend(pieces);
            }
        }
        Ok(())
    }
}

/// Unicode punctuation (P*) and ASCII punctuation, as HF's Punctuation does.
fn is_punctuation(c: char) -> bool {
    use unicode_general_category::{GeneralCategory::*, get_general_category};
    c.is_ascii_punctuation()
        || matches!(
            get_general_category(c),
            ConnectorPunctuation
                | DashPunctuation
                | OpenPunctuation
                | ClosePunctuation
                | InitialPunctuation
                | FinalPunctuation
                | OtherPunctuation
        )
}

/// Byte ranges of runs of characters satisfying `pred` (each character alone when `single`).
fn char_runs(text: &str, pred: impl Fn(char) -> bool, single: bool) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, c) in text.char_indices() {
        if !pred(c) {
            continue;
        }
        let end = i + c.len_utf8();
        match out.last_mut() {
            Some(last) if !single && last.1 == i => last.1 = end,
            _ => out.push((i, end)),
        }
    }
    out
}

/// Cuts `piece` at the matched `ranges` according to `behavior`, with HF's
/// rules: a match merges into its neighbour unless that neighbour is itself
/// a match; `Contiguous` joins runs of adjacent matches.
fn cut(
    piece: &Aligned,
    ranges: &[(usize, usize)],
    behavior: Behavior,
    invert: bool,
    out: &mut Vec<Aligned>,
) {
    // (start, end, is_match) segments covering the whole piece.
    let mut segments: Vec<(usize, usize, bool)> = Vec::new();
    let mut last = 0;
    for &(a, b) in ranges {
        if a > last {
            segments.push((last, a, invert));
        }
        segments.push((a, b, !invert));
        last = b;
    }
    if last < piece.text.len() {
        segments.push((last, piece.text.len(), invert));
    }
    let mut acc: Vec<(usize, usize)> = Vec::with_capacity(segments.len());
    let mut previous_match = false;
    match behavior {
        Behavior::Removed => acc.extend(segments.iter().filter(|s| !s.2).map(|&(a, b, _)| (a, b))),
        Behavior::Isolated => acc.extend(segments.iter().map(|&(a, b, _)| (a, b))),
        Behavior::MergedWithPrevious => {
            for &(a, b, matched) in &segments {
                match acc.last_mut() {
                    Some(last) if matched && !previous_match => last.1 = b,
                    _ => acc.push((a, b)),
                }
                previous_match = matched;
            }
        }
        Behavior::MergedWithNext => {
            for &(a, b, matched) in segments.iter().rev() {
                match acc.last_mut() {
                    Some(last) if matched && !previous_match => last.0 = a,
                    _ => acc.push((a, b)),
                }
                previous_match = matched;
            }
            acc.reverse();
        }
        Behavior::Contiguous => {
            for &(a, b, matched) in &segments {
                match acc.last_mut() {
                    Some(last) if matched == previous_match => last.1 = b,
                    _ => acc.push((a, b)),
                }
                previous_match = matched;
            }
        }
    }
    out.extend(
        acc.into_iter()
            .filter(|(a, b)| a < b)
            .map(|(a, b)| piece.slice(a, b)),
    );
}

// ----- post-processors -----------------------------------------------------

/// One item of a template: a special token or the input sequence A/B.
#[derive(Debug, Clone)]
pub(crate) enum TemplateItem {
    Special(Vec<u32>),
    Sequence,
}

/// A post-processor stage.
#[derive(Debug, Clone)]
pub(crate) enum PostProcessor {
    /// Adds special tokens around the sequence (single-sequence template).
    Template(Vec<TemplateItem>),
    /// Trims whitespace from byte-level token offsets.
    ByteLevel {
        trim_offsets: bool,
        add_prefix_space: bool,
    },
    Sequence(Vec<PostProcessor>),
}

impl PostProcessor {
    pub(crate) fn parse(origin: &str, v: &Value) -> Result<Self> {
        const KIND: &str = "post_processor";
        Ok(match type_of(origin, KIND, v)? {
            "TemplateProcessing" => {
                let specials = v.get("special_tokens").and_then(Value::as_object);
                let single = v.get("single").and_then(Value::as_array).ok_or_else(|| {
                    TokenizerError::bad_entry(origin, KIND, "TemplateProcessing without `single`")
                })?;
                let mut items = Vec::new();
                for item in single {
                    if let Some(sp) = item.get("SpecialToken") {
                        let name = field_str(origin, KIND, sp, "id")?;
                        let ids = specials
                            .and_then(|m| m.get(name))
                            .and_then(|t| t.get("ids"))
                            .and_then(Value::as_array)
                            .ok_or_else(|| {
                                TokenizerError::bad_entry(
                                    origin,
                                    KIND,
                                    format!(
                                        "template token {name:?} missing from `special_tokens`"
                                    ),
                                )
                            })?
                            .iter()
                            .map(|i| i.as_u64().and_then(|i| u32::try_from(i).ok()))
                            .collect::<Option<Vec<u32>>>()
                            .ok_or_else(|| {
                                TokenizerError::bad_entry(
                                    origin,
                                    KIND,
                                    format!("template token {name:?} has a non-integer id"),
                                )
                            })?;
                        items.push(TemplateItem::Special(ids));
                    } else if item.get("Sequence").is_some() {
                        items.push(TemplateItem::Sequence);
                    } else {
                        return Err(TokenizerError::bad_entry(
                            origin,
                            KIND,
                            format!("template item {item}"),
                        ));
                    }
                }
                PostProcessor::Template(items)
            }
            "ByteLevel" => PostProcessor::ByteLevel {
                trim_offsets: field_bool(v, "trim_offsets", true),
                add_prefix_space: field_bool(v, "add_prefix_space", true),
            },
            "Sequence" => PostProcessor::Sequence(
                v.get("processors")
                    .and_then(Value::as_array)
                    .ok_or_else(|| {
                        TokenizerError::bad_entry(origin, KIND, "Sequence without `processors`")
                    })?
                    .iter()
                    .map(|p| PostProcessor::parse(origin, p))
                    .collect::<Result<_>>()?,
            ),
            other => return Err(TokenizerError::unsupported(origin, KIND, other, "")),
        })
    }

    /// Applies the stage to `ids`/`offsets`; `token_of` gives token strings
    /// (for offset trimming).
    pub(crate) fn apply(
        &self,
        text: &str,
        ids: &mut Vec<u32>,
        offsets: &mut Vec<(usize, usize)>,
        add_special: bool,
        token_of: &dyn Fn(u32) -> Option<String>,
    ) {
        match self {
            PostProcessor::Template(items) => {
                if !add_special {
                    return;
                }
                let (old_ids, old_offsets) = (std::mem::take(ids), std::mem::take(offsets));
                for item in items {
                    match item {
                        TemplateItem::Special(special) => {
                            ids.extend(special);
                            offsets.extend(std::iter::repeat_n((0, 0), special.len()));
                        }
                        TemplateItem::Sequence => {
                            ids.extend(&old_ids);
                            offsets.extend(&old_offsets);
                        }
                    }
                }
            }
            PostProcessor::ByteLevel {
                trim_offsets,
                add_prefix_space,
            } => {
                if !trim_offsets {
                    return;
                }
                for (i, (id, offset)) in ids.iter().zip(offsets.iter_mut()).enumerate() {
                    let Some(token) = token_of(*id) else { continue };
                    let is_space = |c: &char| *c == 'Ġ' || c.is_whitespace();
                    let mut leading = token.chars().take_while(is_space).count();
                    let trailing = token.chars().rev().take_while(is_space).count();
                    if leading > 0 {
                        let is_first = i == 0 || offset.0 == 0;
                        if is_first && *add_prefix_space && leading == 1 {
                            leading = 0;
                        }
                        offset.0 = (offset.0 + leading).min(offset.1);
                    }
                    if trailing > 0 && offset.1 >= trailing {
                        offset.1 = (offset.1 - trailing).max(offset.0);
                    }
                    // HF trims in bytes, which can land inside a character;
                    // its character offsets then round down to the character.
                    *offset = (floor_char(text, offset.0), floor_char(text, offset.1));
                }
            }
            PostProcessor::Sequence(list) => {
                for p in list {
                    p.apply(text, ids, offsets, add_special, token_of);
                }
            }
        }
    }
}

// ----- decoders ------------------------------------------------------------

/// A decoder stage: turns token strings back into text.
#[derive(Debug, Clone)]
pub(crate) enum Decoder {
    ByteLevel,
    Metaspace {
        replacement: char,
        prepend: bool,
    },
    ByteFallback,
    Fuse,
    Strip {
        content: char,
        start: usize,
        stop: usize,
    },
    Replace {
        pattern: Pattern,
        content: String,
    },
    Sequence(Vec<Decoder>),
}

impl Decoder {
    pub(crate) fn parse(origin: &str, v: &Value) -> Result<Self> {
        const KIND: &str = "decoder";
        Ok(match type_of(origin, KIND, v)? {
            "ByteLevel" => Decoder::ByteLevel,
            "Metaspace" => {
                let replacement = field_str(origin, KIND, v, "replacement")?
                    .chars()
                    .next()
                    .unwrap_or('▁');
                let prepend = match v.get("prepend_scheme").and_then(Value::as_str) {
                    Some("never") => false,
                    Some(_) => true,
                    None => field_bool(v, "add_prefix_space", true),
                };
                Decoder::Metaspace {
                    replacement,
                    prepend,
                }
            }
            "ByteFallback" => Decoder::ByteFallback,
            "Fuse" => Decoder::Fuse,
            "Strip" => Decoder::Strip {
                content: field_str(origin, KIND, v, "content")?
                    .chars()
                    .next()
                    .unwrap_or(' '),
                start: v.get("start").and_then(Value::as_u64).unwrap_or(0) as usize,
                stop: v.get("stop").and_then(Value::as_u64).unwrap_or(0) as usize,
            },
            "Replace" => Decoder::Replace {
                pattern: Pattern::parse(origin, KIND, v)?,
                content: field_str(origin, KIND, v, "content")?.to_owned(),
            },
            "Sequence" => Decoder::Sequence(
                v.get("decoders")
                    .and_then(Value::as_array)
                    .ok_or_else(|| {
                        TokenizerError::bad_entry(origin, KIND, "Sequence without `decoders`")
                    })?
                    .iter()
                    .map(|d| Decoder::parse(origin, d))
                    .collect::<Result<_>>()?,
            ),
            other => return Err(TokenizerError::unsupported(origin, KIND, other, "")),
        })
    }

    /// Runs the stage over token strings (HF's `decode_chain`).
    pub(crate) fn apply(&self, tokens: Vec<String>) -> Result<Vec<String>> {
        Ok(match self {
            Decoder::ByteLevel => {
                let mut bytes = Vec::new();
                for t in &tokens {
                    match crate::bytelevel::decode_token(t) {
                        Some(b) => bytes.extend(b),
                        None => bytes.extend(t.as_bytes()),
                    }
                }
                vec![String::from_utf8_lossy(&bytes).into_owned()]
            }
            Decoder::Metaspace {
                replacement,
                prepend,
            } => tokens
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    t.chars()
                        .filter_map(|c| {
                            if c == *replacement {
                                if i == 0 && *prepend { None } else { Some(' ') }
                            } else {
                                Some(c)
                            }
                        })
                        .collect()
                })
                .collect(),
            Decoder::ByteFallback => {
                let mut out = Vec::with_capacity(tokens.len());
                let mut pending: Vec<u8> = Vec::new();
                let flush = |pending: &mut Vec<u8>, out: &mut Vec<String>| {
                    if pending.is_empty() {
                        return;
                    }
                    match String::from_utf8(pending.clone()) {
                        Ok(s) => out.push(s),
                        Err(_) => {
                            out.extend(std::iter::repeat_n("\u{FFFD}".to_owned(), pending.len()))
                        }
                    }
                    pending.clear();
                };
                for t in tokens {
                    let byte = (t.len() == 6 && t.starts_with("<0x") && t.ends_with('>'))
                        .then(|| u8::from_str_radix(&t[3..5], 16).ok())
                        .flatten();
                    match byte {
                        Some(b) => pending.push(b),
                        None => {
                            flush(&mut pending, &mut out);
                            out.push(t);
                        }
                    }
                }
                flush(&mut pending, &mut out);
                out
            }
            Decoder::Fuse => vec![tokens.concat()],
            Decoder::Strip {
                content,
                start,
                stop,
            } => tokens
                .iter()
                .map(|t| {
                    let chars: Vec<char> = t.chars().collect();
                    let mut from = 0;
                    for (i, &c) in chars.iter().enumerate().take(*start) {
                        if c == *content {
                            from = i + 1;
                        } else {
                            break;
                        }
                    }
                    let mut to = chars.len();
                    for i in 0..*stop {
                        let Some(index) = chars.len().checked_sub(i + 1) else {
                            break;
                        };
                        if chars[index] == *content {
                            to = index;
                        } else {
                            break;
                        }
                    }
                    chars[from..to.max(from)].iter().collect()
                })
                .collect(),
            Decoder::Replace { pattern, content } => tokens
                .iter()
                .map(|t| {
                    let mut out = String::new();
                    let mut last = 0;
                    for (a, b) in pattern.matches(t)? {
                        out.push_str(&t[last..a]);
                        out.push_str(content);
                        last = b;
                    }
                    out.push_str(&t[last..]);
                    Ok(out)
                })
                .collect::<Result<_>>()?,
            Decoder::Sequence(list) => {
                let mut tokens = tokens;
                for d in list {
                    tokens = d.apply(tokens)?;
                }
                tokens
            }
        })
    }
}

/// The start of the character holding byte `i` of `text` (`text.len()` stays).
fn floor_char(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}
