//! Perplexity with HF transformers' sliding-window recipe ("Perplexity of
//! fixed-length models").
//!
//! # The recipe
//!
//! For a sequence of `n` token ids, windows of `context` tokens start at
//! `0, stride, 2·stride, …`; window `[begin, end)` ends at
//! `min(begin + context, n)`, and the loop stops at the first window that
//! reaches `n`. A window scores the tokens the previous window did not score
//! (HF sets their labels to -100), except its own first token, which has no
//! context inside the window (HF's label shift drops it): window `k` scores
//! the tokens `max(prev_end, begin + 1) .. end`. So with `stride < context`
//! every token but the sequence's first is scored once, each with at least
//! `context − stride` tokens of context; with `stride == context` the
//! windows are disjoint and the first token of each window goes unscored.
//! A window that would score nothing (a last window of one token) is left
//! out; HF's loop would add a NaN loss for it.
//!
//! `nll_sum` is the sum, in f64, of the negative log-probabilities of the
//! scored tokens, `nll_mean = nll_sum / tokens_scored` and
//! `perplexity = exp(nll_mean)`. This is what HF's model loss averages over
//! in each window. (The documentation's loop weights each window's mean loss
//! by "valid labels − 1", which is one token short for every window after the
//! first when `stride < context`; it scores the same tokens.)
//!
//! # How it runs
//!
//! Windows of the same shape (length, and offset of the first scored token)
//! run together as the rows of one batch, up to a batch size. Within a
//! window, the unscored prefix is fed first with only the last position's
//! logits computed, then the rest in chunks of at most 512 tokens through
//! the KV cache with every position's logits, so the (B, T, V) logits stay
//! small even for an 8k context. Where each window is cut depends only on
//! its shape, never on the batch it runs in. Log-probabilities are taken
//! from the logits in f64 (max-shifted log-sum-exp).

use kaiyuan_models::{Logits, Model, ModelConfig};
use kaiyuan_tensor::{DType, Tensor};
use kaiyuan_tokenizer::{EncodeOptions, Tokenizer};
use rayon::prelude::*;

use crate::{EvalError, Result};

/// Tokens of one window fed to the model per call, at most.
pub(crate) const CHUNK: usize = 512;
/// Default batching: tokens per forward call, at most.
const TOKENS_PER_FORWARD: usize = 2048;
/// Default batching: bytes of f32 logits per forward call, at most.
const LOGITS_BYTES: usize = 256 << 20;

/// Options of [`perplexity()`]. The default scores with the model's full
/// context and disjoint windows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerplexityOptions {
    /// Tokens per window (default: the model's `max_position_embeddings`).
    /// At least 2 and at most the model's maximum.
    pub context: Option<usize>,
    /// Tokens between the starts of consecutive windows (default: the
    /// context). At least 1 and at most the context.
    pub stride: Option<usize>,
    /// Keep the log-probability of every scored token in the report.
    pub per_token: bool,
    /// Windows run together in one forward call, at most (default: as many
    /// as keep a call within 2048 tokens and 256 MiB of logits). Results do
    /// not depend on it.
    pub batch_size: Option<usize>,
    /// For [`perplexity_of_documents`]: lm-eval's rolling log-likelihood
    /// (`loglikelihood_rolling`, its wikitext recipe) instead of HF's
    /// sliding window. A document's tokens (with the tokenizer's special
    /// tokens) follow one prefix token (the BOS, else the EOS) and are cut
    /// into disjoint windows of `context` predicted tokens [default: the
    /// model's maximum], each conditioned on the token before it; every
    /// token is scored, the first one given the prefix. `stride` must be
    /// unset.
    pub rolling: bool,
}

/// What [`perplexity()`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct PerplexityReport {
    /// `exp(nll_mean)`.
    pub perplexity: f64,
    /// Tokens whose log-probability was scored.
    pub tokens_scored: usize,
    /// Sum of the negative log-likelihoods (natural log) of the scored
    /// tokens, accumulated in f64.
    pub nll_sum: f64,
    /// `nll_sum / tokens_scored`: the cross-entropy in nats per token.
    pub nll_mean: f64,
    /// With [`PerplexityOptions::per_token`], the log-probability of each
    /// scored token, in sequence order (one per scored token).
    pub logprobs: Option<Vec<f32>>,
    /// The context used (the option or the model's default).
    pub context: usize,
    /// The stride used.
    pub stride: usize,
    /// Number of windows that scored tokens.
    pub windows: usize,
}

/// One window of the recipe: tokens `begin..end` are fed to the model and
/// tokens `first_scored..end` are scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First token fed.
    pub begin: usize,
    /// One past the last token fed (and scored).
    pub end: usize,
    /// First token scored (after `begin`, at or after the previous window's end).
    pub first_scored: usize,
}

/// The windows of the recipe for `len` tokens, in order (see the module
/// docs); windows that would score nothing are left out.
///
/// ```
/// use kaiyuan_eval::{Window, windows};
/// let w = windows(10, 4, 2)?;
/// assert_eq!(w[0], Window { begin: 0, end: 4, first_scored: 1 });
/// assert_eq!(w[1], Window { begin: 2, end: 6, first_scored: 4 });
/// assert_eq!(w.last(), Some(&Window { begin: 6, end: 10, first_scored: 8 }));
/// # Ok::<(), kaiyuan_eval::EvalError>(())
/// ```
///
/// # Errors
///
/// [`EvalError::InvalidOption`] for a context below 2 or a stride of 0 or
/// above the context.
pub fn windows(len: usize, context: usize, stride: usize) -> Result<Vec<Window>> {
    check_geometry(context, stride)?;
    let mut out = Vec::with_capacity(len / stride + 1);
    let mut prev_end = 0;
    let mut begin = 0;
    while begin < len {
        let end = (begin + context).min(len);
        let first_scored = prev_end.max(begin + 1);
        if first_scored < end {
            out.push(Window {
                begin,
                end,
                first_scored,
            });
        }
        if end == len {
            break;
        }
        prev_end = end;
        begin += stride;
    }
    Ok(out)
}

/// Scores `ids` with `model` by HF's sliding-window recipe (see the module
/// docs) and returns the perplexity, the summed and mean negative
/// log-likelihood and, with `options.per_token`, each token's
/// log-probability.
///
/// ```
/// use kaiyuan_eval::{PerplexityOptions, perplexity};
/// use kaiyuan_models::ModelFiles;
/// use kaiyuan_tensor::DType;
///
/// // A tiny random LLaMA (vocabulary 80, context 64) from the repository's fixtures.
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/llama");
/// let model = ModelFiles::open(dir)?.take_model(DType::F32)?;
/// let ids: Vec<u32> = (0..150).map(|i| (i * 37 % 80) as u32).collect();
///
/// let options = PerplexityOptions {
///     context: Some(64),
///     stride: Some(32),
///     per_token: true,
///     ..Default::default()
/// };
/// let report = perplexity(&model, &ids, &options)?;
/// assert_eq!(report.tokens_scored, 149); // every token but the first
/// assert_eq!(report.logprobs.as_ref().map(Vec::len), Some(149));
/// assert!((report.nll_mean.exp() - report.perplexity).abs() < 1e-9 * report.perplexity);
///
/// // Disjoint windows (the default stride) leave each window's first token unscored.
/// let disjoint = perplexity(&model, &ids, &PerplexityOptions::default())?;
/// assert_eq!((disjoint.windows, disjoint.tokens_scored), (3, 147));
///
/// // Options are checked and named.
/// let bad = PerplexityOptions { stride: Some(0), ..Default::default() };
/// let err = perplexity(&model, &ids, &bad).unwrap_err();
/// assert!(err.to_string().contains("`stride`"));
/// # Ok::<(), kaiyuan_eval::EvalError>(())
/// ```
///
/// # Errors
///
/// [`EvalError::InvalidOption`] naming `context` (below 2 or above the
/// model's `max_position_embeddings`), `stride` (0 or above the context) or
/// `batch_size` (0); [`EvalError::InvalidInput`] for fewer than 2 ids or an
/// id outside the vocabulary; [`EvalError::NotANumber`] when the model
/// yields a NaN log-probability; model errors from the forward pass.
pub fn perplexity(
    model: &Model,
    ids: &[u32],
    options: &PerplexityOptions,
) -> Result<PerplexityReport> {
    let config = model.config();
    let (context, stride) = resolve(config, options)?;
    let batch_size = match options.batch_size {
        Some(0) => return Err(EvalError::option("batch_size", "must be at least 1")),
        Some(b) => b,
        None => default_batch_size(context.min(ids.len()), config.vocab_size),
    };
    check_ids(config, ids)?;
    let windows = windows(ids.len(), context, stride)?;
    let logprobs = score_windows(model, ids, &windows, batch_size, CHUNK)?;
    report(&windows, logprobs, context, stride, options.per_token)
}

/// The windows of llama.cpp's `llama-perplexity`: `len / context` disjoint
/// chunks of `context` tokens (a shorter tail is not scored), each scoring
/// the tokens of its second half after the first, `context/2 + 1 ..
/// context`, every one from the whole chunk before it.
///
/// ```
/// use kaiyuan_eval::{Window, llama_cpp_windows};
/// let w = llama_cpp_windows(300, 128)?;
/// assert_eq!(w, [Window { begin: 0, end: 128, first_scored: 65 },
///                Window { begin: 128, end: 256, first_scored: 193 }]);
/// assert!(llama_cpp_windows(255, 128).is_err()); // fewer than 2 chunks
/// # Ok::<(), kaiyuan_eval::EvalError>(())
/// ```
///
/// # Errors
///
/// [`EvalError::InvalidOption`] for a context below 4;
/// [`EvalError::InvalidInput`] for fewer than `2 · context` tokens, which
/// llama.cpp refuses too.
pub fn llama_cpp_windows(len: usize, context: usize) -> Result<Vec<Window>> {
    if context < 4 {
        return Err(EvalError::option(
            "context",
            format!("llama.cpp's recipe needs at least 4 tokens per chunk, got {context}"),
        ));
    }
    if len < 2 * context {
        return Err(EvalError::input(
            "ids",
            format!(
                "llama.cpp's recipe needs at least {} tokens (2 × the context of {context}), got {len}",
                2 * context
            ),
        ));
    }
    Ok((0..len / context)
        .map(|i| Window {
            begin: i * context,
            end: (i + 1) * context,
            first_scored: i * context + context / 2 + 1,
        })
        .collect())
}

/// Perplexity as llama.cpp's `llama-perplexity` computes it: the windows of
/// [`llama_cpp_windows`], with the first token of every chunk replaced by
/// `bos` when the tokenizer adds one (llama.cpp's `add_bos`). `ids` should
/// be the whole text tokenized with the special tokens ([`encode_text`]).
///
/// ```
/// use kaiyuan_eval::perplexity_llama_cpp;
/// use kaiyuan_models::ModelFiles;
/// use kaiyuan_tensor::DType;
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/llama");
/// let model = ModelFiles::open(dir)?.take_model(DType::F32)?;
/// let ids: Vec<u32> = (0..150).map(|i| (i * 37 % 80) as u32).collect();
/// let report = perplexity_llama_cpp(&model, &ids, 64, Some(1), false)?;
/// assert_eq!((report.windows, report.tokens_scored), (2, 2 * 31));
/// # Ok::<(), kaiyuan_eval::EvalError>(())
/// ```
///
/// # Errors
///
/// Those of [`llama_cpp_windows`]; [`EvalError::InvalidOption`] for a
/// context above the model's maximum; [`EvalError::InvalidInput`] for an
/// id outside the vocabulary; [`EvalError::NotANumber`] for NaN logits.
pub fn perplexity_llama_cpp(
    model: &Model,
    ids: &[u32],
    context: usize,
    bos: Option<u32>,
    per_token: bool,
) -> Result<PerplexityReport> {
    let config = model.config();
    resolve(
        config,
        &PerplexityOptions {
            context: Some(context),
            ..Default::default()
        },
    )?;
    let windows = llama_cpp_windows(ids.len(), context)?;
    let mut fed = ids.to_vec();
    if let Some(bos) = bos {
        for w in &windows {
            fed[w.begin] = bos;
        }
    }
    check_ids(config, &fed)?;
    let batch_size = default_batch_size(context, config.vocab_size);
    let logprobs = score_windows(model, &fed, &windows, batch_size, CHUNK)?;
    report(&windows, logprobs, context, context, per_token)
}

/// Tokenizes `text` as HF tokenizers do for perplexity: one sequence, with
/// the post-processor's special tokens (e.g. a BOS) added and special
/// tokens written in the text recognised.
///
/// ```
/// use kaiyuan_eval::encode_text;
/// use kaiyuan_tokenizer::Tokenizer;
/// let json = r#"{"model": {"type": "BPE", "vocab": {"<s>": 0, "a": 1, "b": 2}, "merges": []},
///   "added_tokens": [{"id": 0, "content": "<s>", "special": true}],
///   "post_processor": {"type": "TemplateProcessing",
///     "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
///     "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}}}"#;
/// let tok = Tokenizer::from_json_str("inline", json)?;
/// assert_eq!(encode_text(&tok, "ab")?, vec![0, 1, 2]);
/// # Ok::<(), kaiyuan_eval::EvalError>(())
/// ```
///
/// # Errors
///
/// [`EvalError::Tokenizer`] when the tokenizer cannot encode the text.
pub fn encode_text(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let options = EncodeOptions {
        add_special_tokens: true,
        split_special_tokens: false,
    };
    Ok(tokenizer.encode_with(text, options)?.ids)
}

/// [`encode_text`] then [`perplexity()`].
///
/// ```no_run
/// use kaiyuan_eval::{PerplexityOptions, perplexity_of_text};
/// use kaiyuan_models::ModelFiles;
/// use kaiyuan_tensor::DType;
///
/// let mut files = ModelFiles::open("SmolLM2-135M-Instruct.Q4_1.gguf")?;
/// let model = files.take_model(DType::F32)?;
/// let text = std::fs::read_to_string("botchan.txt").unwrap_or_default();
/// let report = perplexity_of_text(&model, files.require_tokenizer()?, &text, &PerplexityOptions::default())?;
/// println!("perplexity {:.3} over {} tokens", report.perplexity, report.tokens_scored);
/// # Ok::<(), kaiyuan_eval::EvalError>(())
/// ```
///
/// # Errors
///
/// Those of [`encode_text`] and [`perplexity()`].
pub fn perplexity_of_text(
    model: &Model,
    tokenizer: &Tokenizer,
    text: &str,
    options: &PerplexityOptions,
) -> Result<PerplexityReport> {
    perplexity(model, &encode_text(tokenizer, text)?, options)
}

/// Bytes and words of a text as lm-eval's rolling-loglikelihood tasks
/// (wikitext) count them: UTF-8 bytes, and `len(re.split(r"\s+", text))`
/// words (one more than the runs of whitespace, so leading or trailing
/// whitespace counts an empty word, as there).
///
/// ```
/// use kaiyuan_eval::perplexity::text_units;
/// assert_eq!(text_units("two  words"), (10, 2));
/// assert_eq!(text_units(" 开源 LLM\n"), (12, 4));
/// ```
pub fn text_units(text: &str) -> (usize, usize) {
    let mut words = 1;
    let mut in_space = false;
    for c in text.chars() {
        let space = c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c);
        if space && !in_space {
            words += 1;
        }
        in_space = space;
    }
    (text.len(), words)
}

/// Perplexity of a corpus of documents, each scored on its own (its own
/// windows, its own BOS), summed.
#[derive(Clone, Debug, PartialEq)]
pub struct CorpusPerplexity {
    /// Documents scored.
    pub documents: usize,
    /// Tokens scored over all documents.
    pub tokens_scored: usize,
    /// Sum of the scored tokens' negative log-likelihoods (nats).
    pub nll_sum: f64,
    /// `exp(nll_sum / tokens_scored)`.
    pub perplexity: f64,
    /// UTF-8 bytes of the documents.
    pub bytes: usize,
    /// Words of the documents ([`text_units`]).
    pub words: usize,
    /// `exp(nll_sum / words)`: lm-eval's `word_perplexity`.
    pub word_perplexity: f64,
    /// `exp(nll_sum / bytes)`: lm-eval's `byte_perplexity`.
    pub byte_perplexity: f64,
    /// `nll_sum / (bytes · ln 2)`: lm-eval's `bits_per_byte`.
    pub bits_per_byte: f64,
    /// Per document, in order.
    pub per_document: Vec<PerplexityReport>,
}

/// Scores every document of `docs` with [`perplexity_of_text`] and sums:
/// token perplexity, word perplexity, byte perplexity and bits per byte.
/// `names` label the documents in errors (e.g. `file.jsonl:12`).
///
/// ```
/// use kaiyuan_eval::{PerplexityOptions, perplexity_of_documents};
/// use kaiyuan_models::ModelFiles;
/// use kaiyuan_tensor::DType;
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/eval/mc/model");
/// let mut files = ModelFiles::open(dir)?;
/// let model = files.take_model(DType::F32)?;
/// let docs = ["The master was kind.", "学而时习之"];
/// let report = perplexity_of_documents(&model, files.require_tokenizer()?, &docs, &["a", "b"], &PerplexityOptions::default())?;
/// assert_eq!((report.documents, report.words, report.bytes), (2, 5, 35));
/// assert!(report.bits_per_byte > 0.0);
/// # Ok::<(), kaiyuan_eval::EvalError>(())
/// ```
///
/// # Errors
///
/// [`EvalError::InvalidInput`] naming the document when it has fewer than
/// two tokens; those of [`perplexity()`].
pub fn perplexity_of_documents(
    model: &Model,
    tokenizer: &Tokenizer,
    docs: &[&str],
    names: &[&str],
    options: &PerplexityOptions,
) -> Result<CorpusPerplexity> {
    if docs.is_empty() {
        return Err(EvalError::input("documents", "no documents to score"));
    }
    let mut out = CorpusPerplexity {
        documents: docs.len(),
        tokens_scored: 0,
        nll_sum: 0.0,
        perplexity: f64::NAN,
        bytes: 0,
        words: 0,
        word_perplexity: f64::NAN,
        byte_perplexity: f64::NAN,
        bits_per_byte: f64::NAN,
        per_document: Vec::with_capacity(docs.len()),
    };
    for (i, doc) in docs.iter().enumerate() {
        let name = names.get(i).copied().unwrap_or("document");
        let scored = if options.rolling {
            rolling_perplexity(model, tokenizer, doc, options)
        } else {
            perplexity_of_text(model, tokenizer, doc, options)
        };
        let report = scored.map_err(|e| match e {
            EvalError::InvalidInput { message, .. } => EvalError::input(name, message),
            other => other,
        })?;
        let (bytes, words) = text_units(doc);
        out.bytes += bytes;
        out.words += words;
        out.tokens_scored += report.tokens_scored;
        out.nll_sum += report.nll_sum;
        out.per_document.push(report);
    }
    out.perplexity = (out.nll_sum / out.tokens_scored as f64).exp();
    out.word_perplexity = (out.nll_sum / out.words as f64).exp();
    out.byte_perplexity = (out.nll_sum / out.bytes as f64).exp();
    out.bits_per_byte = out.nll_sum / (out.bytes as f64 * std::f64::consts::LN_2);
    Ok(out)
}

/// lm-eval's rolling log-likelihood of one document (see
/// [`PerplexityOptions::rolling`]): HF's recipe over `[prefix] + ids` with
/// windows of `context + 1` tokens every `context` tokens, which feeds each
/// window the token before its first prediction and `context` tokens in all.
fn rolling_perplexity(
    model: &Model,
    tokenizer: &Tokenizer,
    text: &str,
    options: &PerplexityOptions,
) -> Result<PerplexityReport> {
    let config = model.config();
    if options.stride.is_some() {
        return Err(EvalError::option(
            "stride",
            "the rolling recipe has no stride: its windows are disjoint",
        ));
    }
    let max = config.max_position_embeddings;
    let context = options.context.unwrap_or(max);
    if context == 0 || context > max {
        return Err(EvalError::option(
            "context",
            format!("must be 1 to the model's max_position_embeddings of {max}, got {context}"),
        ));
    }
    let prefix = config
        .bos_token_id
        .or_else(|| config.eos_token_ids.first().copied())
        .ok_or_else(|| {
            EvalError::input(
                "model",
                "the rolling recipe needs a BOS or EOS token id to condition the first token on",
            )
        })?;
    let mut ids = vec![prefix];
    ids.extend(encode_text(tokenizer, text)?);
    check_ids(config, &ids)?;
    let batch_size = match options.batch_size {
        Some(0) => return Err(EvalError::option("batch_size", "must be at least 1")),
        Some(b) => b,
        None => default_batch_size((context + 1).min(ids.len()), config.vocab_size),
    };
    let windows = rolling_windows(ids.len(), context);
    let logprobs = score_windows(model, &ids, &windows, batch_size, CHUNK)?;
    report(&windows, logprobs, context, context, options.per_token)
}

/// lm-eval's rolling windows over `len` tokens (the prefix first), each
/// feeding `max_len` tokens: the first predicts tokens `1..=max_len`; each
/// later one predicts the next `max_len` tokens (fewer at the end) from the
/// `max_len` tokens before its last, so a short last window still sees a
/// full context (`get_rolling_token_windows` + `make_disjoint_window`).
///
/// ```
/// use kaiyuan_eval::perplexity::{Window, rolling_windows};
/// let w = rolling_windows(11, 4);
/// assert_eq!(w, [
///     Window { begin: 0, end: 5, first_scored: 1 },
///     Window { begin: 4, end: 9, first_scored: 5 },
///     Window { begin: 6, end: 11, first_scored: 9 },
/// ]);
/// ```
pub fn rolling_windows(len: usize, max_len: usize) -> Vec<Window> {
    let max_len = max_len.max(1);
    if len < 2 {
        return Vec::new();
    }
    let mut out = vec![Window {
        begin: 0,
        end: (max_len + 1).min(len),
        first_scored: 1,
    }];
    let mut predicted = out[0].end;
    while predicted < len {
        let end = (predicted + max_len).min(len);
        out.push(Window {
            begin: end - (max_len + 1),
            end,
            first_scored: predicted,
        });
        predicted = end;
    }
    out
}

/// The context and stride to use, checked against the model.
fn resolve(config: &ModelConfig, options: &PerplexityOptions) -> Result<(usize, usize)> {
    let max = config.max_position_embeddings;
    let context = options.context.unwrap_or(max);
    if context > max {
        return Err(EvalError::option(
            "context",
            format!("{context} tokens exceed the model's max_position_embeddings of {max}"),
        ));
    }
    let stride = options.stride.unwrap_or(context);
    check_geometry(context, stride)?;
    Ok((context, stride))
}

fn check_geometry(context: usize, stride: usize) -> Result<()> {
    if context < 2 {
        return Err(EvalError::option(
            "context",
            format!(
                "must be at least 2 tokens (a window scores the tokens after its first), got {context}"
            ),
        ));
    }
    if stride == 0 {
        return Err(EvalError::option("stride", "must be at least 1"));
    }
    if stride > context {
        return Err(EvalError::option(
            "stride",
            format!(
                "{stride} exceeds the context of {context}: the tokens between windows would never be scored"
            ),
        ));
    }
    Ok(())
}

fn check_ids(config: &ModelConfig, ids: &[u32]) -> Result<()> {
    if ids.len() < 2 {
        return Err(EvalError::input(
            "ids",
            format!(
                "perplexity needs at least 2 tokens (the first is never scored), got {}",
                ids.len()
            ),
        ));
    }
    let vocab = config.vocab_size;
    if let Some((i, &bad)) = ids.iter().enumerate().find(|(_, t)| **t as usize >= vocab) {
        return Err(EvalError::input(
            "ids",
            format!("id {bad} at position {i} is outside the model's vocabulary of {vocab}"),
        ));
    }
    Ok(())
}

/// Windows per forward call that keep it within [`TOKENS_PER_FORWARD`]
/// tokens and [`LOGITS_BYTES`] of logits (at least 1).
fn default_batch_size(window_len: usize, vocab: usize) -> usize {
    let by_tokens = TOKENS_PER_FORWARD / window_len.max(1);
    let by_logits = LOGITS_BYTES / (window_len.clamp(1, CHUNK) * vocab.max(1) * 4);
    by_tokens.min(by_logits).max(1)
}

/// Log-probabilities of the scored tokens of every window, in order. Runs
/// consecutive windows of the same shape together, `batch_size` at most
/// (windows too short for [`MIN_TOKENS`] per call run alone).
fn score_windows(
    model: &Model,
    ids: &[u32],
    windows: &[Window],
    batch_size: usize,
    chunk: usize,
) -> Result<Vec<f64>> {
    let shape = |w: &Window| (w.end - w.begin, w.first_scored - w.begin);
    let mut out = Vec::with_capacity(ids.len());
    let mut i = 0;
    while i < windows.len() {
        let (len, first) = shape(&windows[i]);
        let limit = if len - 1 < MIN_TOKENS { 1 } else { batch_size };
        let mut j = i + 1;
        while j < windows.len() && j - i < limit && shape(&windows[j]) == (len, first) {
            j += 1;
        }
        let rows: Vec<&[u32]> = windows[i..j].iter().map(|w| &ids[w.begin..w.end]).collect();
        for row in score_rows(model, &rows, first, chunk)? {
            out.extend(row.iter().map(|t| t.logprob));
        }
        i = j;
    }
    Ok(out)
}

/// Tokens per row that every forward call feeds when the window allows.
/// Kernels for a few rows (the decoding GEMV, up to 4 rows) round
/// differently from the GEMM, and a linear layer sees batch × tokens rows;
/// with at least this many tokens per row every call takes the same kernel
/// whatever the batch size, so batched and one-window runs give the same
/// bits (the batching proptest checks it).
const MIN_TOKENS: usize = 8;

/// One forward call of a window: inputs `start..end`, and whether every
/// position's logits are needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Call {
    start: usize,
    end: usize,
    logits: Logits,
}

/// The calls that score a window of `len` tokens from token `first` on.
/// Inputs are `0..len − 1` (the last token is only a target); position `p`
/// gives the log-probability of token `p + 1`, so logits are needed from
/// `first − 1` on. The prefix before that is fed with only the last logits
/// computed; both parts are cut into balanced chunks of at most `chunk`
/// tokens, and every call feeds at least [`MIN_TOKENS`] tokens where the
/// window allows (the all-logits part starts earlier, a short prefix joins
/// it). The cuts depend only on the window's shape.
fn plan_calls(len: usize, first: usize, chunk: usize) -> Vec<Call> {
    let inputs = len - 1;
    let mut split = (first - 1).min(inputs.saturating_sub(MIN_TOKENS));
    if split < MIN_TOKENS {
        split = 0;
    }
    let mut calls = Vec::new();
    let mut push = |start: usize, end: usize, logits: Logits| {
        let pieces = (end - start).div_ceil(chunk.max(1));
        for k in 0..pieces {
            calls.push(Call {
                start: start + (end - start) * k / pieces,
                end: start + (end - start) * (k + 1) / pieces,
                logits,
            });
        }
    };
    push(0, split, Logits::Last);
    push(split, inputs, Logits::All);
    calls
}

/// The log-probability of one token given the tokens before it, and whether
/// it is the model's most likely next token there (the first maximum, as
/// torch's `argmax` picks).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct TokenScore {
    /// `log p(token | prefix)`, natural log, computed in f64.
    pub logprob: f64,
    /// The token is the argmax of the logits.
    pub greedy: bool,
}

/// Scores rows of equal length `L` from token `first` (≥ 1) on: per row the
/// `L − first` [`TokenScore`]s. The calls that feed a row depend only on
/// `(L, first, chunk)`, so a row's scores are the same bits whatever rows it
/// runs with (see [`MIN_TOKENS`]).
pub(crate) fn score_rows(
    model: &Model,
    rows: &[&[u32]],
    first: usize,
    chunk: usize,
) -> Result<Vec<Vec<TokenScore>>> {
    let len = rows.first().map_or(0, |r| r.len());
    if first == 0 || first >= len || rows.iter().any(|r| r.len() != len) {
        return Err(EvalError::input(
            "rows",
            format!("cannot score rows of {len} tokens from token {first} on"),
        ));
    }
    score_batch(model, rows, first, &plan_calls(len, first, chunk))
}

/// Runs `calls` (see [`plan_calls`]) on rows of equal length `L` scored from
/// token `first` on, and returns per row the `L − first` token scores.
fn score_batch(
    model: &Model,
    rows: &[&[u32]],
    first: usize,
    calls: &[Call],
) -> Result<Vec<Vec<TokenScore>>> {
    let len = rows.first().map_or(0, |r| r.len());
    let vocab = model.config().vocab_size;
    let mut cache = model.new_cache_for(len);
    let mut out: Vec<Vec<TokenScore>> = vec![Vec::with_capacity(len); rows.len()];
    for call in calls {
        let feed: Vec<Vec<u32>> = rows
            .iter()
            .map(|r| r[call.start..call.end].to_vec())
            .collect();
        let logits = model.forward(&feed, &mut cache, call.logits)?;
        if call.logits == Logits::Last {
            continue;
        }
        let t = call.end - call.start;
        let expected = [rows.len(), t, vocab];
        if logits.shape() != expected {
            return Err(EvalError::input(
                "logits",
                format!(
                    "the model returned shape {:?}, expected {expected:?}",
                    logits.shape()
                ),
            ));
        }
        let values = to_f32(&logits)?;
        let targets: Vec<u32> = rows
            .iter()
            .flat_map(|r| r[call.start + 1..call.end + 1].iter().copied())
            .collect();
        let logprobs: Vec<TokenScore> = values
            .par_chunks(vocab)
            .zip(targets.par_iter())
            .map(|(x, &target)| score_at(x, target as usize))
            .collect();
        // Positions before `first − 1` were fed only to reach the call size.
        let skip = (first - 1).saturating_sub(call.start).min(t);
        for (row, lp) in out.iter_mut().zip(logprobs.chunks(t)) {
            row.extend_from_slice(&lp[skip..]);
        }
    }
    Ok(out)
}

/// `log softmax(x)[target]` in f64: `x[target] − max − ln Σ exp(x − max)`,
/// and whether `target` is the first maximum of `x`. Any NaN in `x` makes
/// the log-probability NaN.
fn score_at(x: &[f32], target: usize) -> TokenScore {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = x.iter().map(|&v| (v as f64 - max).exp()).sum();
    let value = x[target];
    let greedy =
        !x[..target].iter().any(|&v| v >= value) && !x[target + 1..].iter().any(|&v| v > value);
    TokenScore {
        logprob: (value as f64 - max) - sum.ln(),
        greedy,
    }
}

/// The values of `t` as f32, whatever its float dtype.
fn to_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(match t.dtype() {
        DType::F32 => t.to_vec::<f32>()?,
        _ => t.cast(DType::F32)?.to_vec::<f32>()?,
    })
}

fn report(
    windows: &[Window],
    logprobs: Vec<f64>,
    context: usize,
    stride: usize,
    per_token: bool,
) -> Result<PerplexityReport> {
    let positions = windows.iter().flat_map(|w| w.first_scored..w.end);
    if let Some((position, _)) = positions.zip(&logprobs).find(|(_, lp)| lp.is_nan()) {
        return Err(EvalError::NotANumber { position });
    }
    let tokens_scored = logprobs.len();
    let nll_sum: f64 = -logprobs.iter().sum::<f64>();
    let nll_mean = nll_sum / tokens_scored as f64;
    Ok(PerplexityReport {
        perplexity: nll_mean.exp(),
        tokens_scored,
        nll_sum,
        nll_mean,
        logprobs: per_token.then(|| logprobs.iter().map(|&lp| lp as f32).collect()),
        context,
        stride,
        windows: windows.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaiyuan_models::ModelFiles;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn fixture(name: &str) -> Model {
        let dir = format!(
            "{}/../../fixtures/models/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        ModelFiles::open(&dir)
            .and_then(|mut f| f.take_model(DType::F32))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
    }

    fn llama() -> &'static Model {
        static MODEL: OnceLock<Model> = OnceLock::new();
        MODEL.get_or_init(|| fixture("llama"))
    }

    fn mistral_window() -> &'static Model {
        static MODEL: OnceLock<Model> = OnceLock::new();
        MODEL.get_or_init(|| fixture("mistral_window"))
    }

    fn ids(n: usize) -> Vec<u32> {
        (0..n).map(|i| ((i * 37 + 11) % 80) as u32).collect()
    }

    fn options(context: Option<usize>, stride: Option<usize>) -> PerplexityOptions {
        PerplexityOptions {
            context,
            stride,
            per_token: true,
            batch_size: None,
            rolling: false,
        }
    }

    fn option_error(result: Result<PerplexityReport>) -> (String, String) {
        match result {
            Err(EvalError::InvalidOption { option, message }) => (option, message),
            other => panic!("expected InvalidOption, got {other:?}"),
        }
    }

    #[test]
    fn windows_follow_the_recipe() {
        let w = |begin, end, first_scored| Window {
            begin,
            end,
            first_scored,
        };
        // stride < context: every token but the first, once.
        assert_eq!(
            windows(10, 4, 2).unwrap(),
            [w(0, 4, 1), w(2, 6, 4), w(4, 8, 6), w(6, 10, 8)]
        );
        // stride == context: disjoint windows, each first token unscored;
        // the last window, 8..9, would score nothing and is left out.
        assert_eq!(windows(9, 4, 4).unwrap(), [w(0, 4, 1), w(4, 8, 5)]);
        assert_eq!(
            windows(10, 4, 4).unwrap(),
            [w(0, 4, 1), w(4, 8, 5), w(8, 10, 9)]
        );
        // The last window reaches the end even when the stride does not divide.
        assert_eq!(windows(7, 4, 3).unwrap(), [w(0, 4, 1), w(3, 7, 4)]);
        // Shorter than the context: one window.
        assert_eq!(windows(3, 8, 8).unwrap(), [w(0, 3, 1)]);
        assert_eq!(windows(1, 8, 8).unwrap(), []);
        // Stride 1: one new token per window.
        let many = windows(6, 3, 1).unwrap();
        assert_eq!(many.len(), 4);
        assert!(many[1..].iter().all(|x| x.end - x.first_scored == 1));
    }

    #[test]
    fn options_are_validated_and_named() {
        let model = llama();
        let ids = ids(20);
        let (option, message) = option_error(perplexity(model, &ids, &options(None, Some(0))));
        assert_eq!(option, "stride");
        assert!(message.contains("at least 1"), "{message}");
        let (option, message) = option_error(perplexity(model, &ids, &options(Some(16), Some(17))));
        assert_eq!(option, "stride");
        assert!(
            message.contains("17") && message.contains("16"),
            "{message}"
        );
        let (option, message) = option_error(perplexity(model, &ids, &options(Some(65), None)));
        assert_eq!(option, "context");
        assert!(
            message.contains("max_position_embeddings of 64"),
            "{message}"
        );
        let (option, _) = option_error(perplexity(model, &ids, &options(Some(1), None)));
        assert_eq!(option, "context");
        // The default stride is the given context, so this is valid.
        assert!(perplexity(model, &ids, &options(Some(8), None)).is_ok());
        let zero_batch = PerplexityOptions {
            batch_size: Some(0),
            ..Default::default()
        };
        let (option, _) = option_error(perplexity(model, &ids, &zero_batch));
        assert_eq!(option, "batch_size");
        let err = perplexity(model, &ids, &options(None, Some(0))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid option `stride`: must be at least 1"
        );
    }

    #[test]
    fn inputs_are_validated() {
        let model = llama();
        for short in [&[][..], &[5][..]] {
            match perplexity(model, short, &PerplexityOptions::default()) {
                Err(EvalError::InvalidInput { what, message }) => {
                    assert_eq!(what, "ids");
                    assert!(message.contains("at least 2"), "{message}");
                }
                other => panic!("expected InvalidInput, got {other:?}"),
            }
        }
        match perplexity(model, &[1, 2, 80, 3], &PerplexityOptions::default()) {
            Err(EvalError::InvalidInput { what, message }) => {
                assert_eq!(what, "ids");
                assert!(message.contains("id 80 at position 2"), "{message}");
            }
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    /// Each window against the models crate's one-pass `token_logprobs`
    /// (a different path: no cache, no chunks, the tensor's log_softmax).
    #[test]
    fn matches_token_logprobs_window_by_window() {
        for model in [llama(), mistral_window()] {
            let ids = ids(100);
            for (context, stride) in [(64, 64), (40, 15), (9, 9), (5, 1)] {
                let report =
                    perplexity(model, &ids, &options(Some(context), Some(stride))).unwrap();
                let mut expected = Vec::new();
                for w in windows(ids.len(), context, stride).unwrap() {
                    let lp = kaiyuan_models::generate::token_logprobs(model, &ids[w.begin..w.end])
                        .unwrap();
                    expected.extend_from_slice(&lp[w.first_scored - w.begin - 1..]);
                }
                let got = report.logprobs.unwrap();
                assert_eq!(got.len(), expected.len(), "({context}, {stride})");
                for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                    assert!(
                        (g - e).abs() <= 1e-5 + 1e-5 * e.abs(),
                        "({context}, {stride}) token {i}: {g} vs {e}"
                    );
                }
                let nll: f64 = -expected.iter().map(|&x| x as f64).sum::<f64>();
                assert!(
                    (report.nll_sum - nll).abs() <= 1e-4 * nll.abs(),
                    "{} vs {nll}",
                    report.nll_sum
                );
            }
        }
    }

    #[test]
    fn default_batch_size_respects_both_budgets() {
        assert_eq!(default_batch_size(64, 80), 32);
        assert_eq!(default_batch_size(8192, 49152), 1);
        // 128 tokens × 49152 × 4 B = 24 MiB of logits per window → 10 fit in 256 MiB.
        assert_eq!(default_batch_size(128, 49152), 10);
        assert_eq!(default_batch_size(0, 0), 2048);
    }

    #[test]
    fn score_at_is_stable_propagates_nan_and_picks_the_first_maximum() {
        let x = [1000.0f32, 1000.0, 1000.0, 1000.0];
        assert!((score_at(&x, 2).logprob + 4f64.ln()).abs() < 1e-12);
        // Ties go to the first maximum, as torch's argmax.
        assert!(score_at(&x, 0).greedy && !score_at(&x, 2).greedy);
        assert!(score_at(&[0.0, 3.0, 1.0], 1).greedy && !score_at(&[0.0, 3.0, 1.0], 2).greedy);
        let y = [0.0f32, f32::NAN, 1.0];
        assert!(score_at(&y, 0).logprob.is_nan());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// The calls of a window feed `0..len − 1` in order, each at most
        /// `chunk` tokens and at least `MIN_TOKENS` where the window allows,
        /// with every position from `first − 1` on in an all-logits call.
        #[test]
        fn calls_cover_the_window(len in 2usize..2000, first_frac in 0.0f64..1.0, chunk in 16usize..700) {
            let first = 1 + ((len - 1) as f64 * first_frac) as usize;
            prop_assume!(first < len);
            let calls = plan_calls(len, first, chunk);
            let mut at = 0;
            for c in &calls {
                prop_assert_eq!(c.start, at);
                prop_assert!(c.end > c.start && c.end - c.start <= chunk);
                prop_assert!(c.end - c.start >= MIN_TOKENS.min(len - 1), "{:?}", calls);
                if c.end > first - 1 {
                    prop_assert_eq!(c.logits, Logits::All);
                }
                at = c.end;
            }
            prop_assert_eq!(at, len - 1);
        }

        /// Batching windows (any batch size) and chunking (any chunk length)
        /// give the same log-probabilities as one window per forward.
        #[test]
        fn batching_does_not_change_results(
            seed in 0u64..1000,
            len in 2usize..130,
            context in 2usize..=64,
            stride_frac in 0.0f64..=1.0,
            batch in 2usize..12,
            sliding in any::<bool>(),
        ) {
            let model = if sliding { mistral_window() } else { llama() };
            let ids: Vec<u32> = (0..len as u64)
                .map(|i| ((i * 2654435761 + seed * 40503) % 80) as u32)
                .collect();
            let stride = ((context as f64 * stride_frac).ceil() as usize).clamp(1, context);
            let w = windows(len, context, stride).unwrap();
            let one = score_windows(model, &ids, &w, 1, CHUNK).unwrap();
            let batched = score_windows(model, &ids, &w, batch, CHUNK).unwrap();
            prop_assert_eq!(one.len(), batched.len());
            for (i, (a, b)) in one.iter().zip(&batched).enumerate() {
                prop_assert!(a.to_bits() == b.to_bits(),
                    "token {}: {} (one per forward) vs {} (batched)", i, a, b);
            }
            let report = perplexity(model, &ids, &PerplexityOptions {
                context: Some(context), stride: Some(stride), per_token: true, batch_size: Some(batch), rolling: false,
            }).unwrap();
            prop_assert_eq!(report.tokens_scored, one.len());
        }
    }
}
