//! Text generation: prefill, then token-by-token decode with a KV cache;
//! sampling, stop tokens and strings, streaming, constraints, batches; and
//! per-token log-probabilities.

use std::time::Instant;

use kaiyuan_tokenizer::Tokenizer;

use crate::constrain::Constraint;
use crate::sampling::{Sampler, SamplingParams, TokenMask};
use crate::{Logits, Model, ModelError, Result};

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerationConfig {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Temperature, top-k, top-p, min-p, repetition penalty, seed.
    pub sampling: SamplingParams,
    /// Ids that end generation (EOS, `<|im_end|>`, …); not part of the text.
    pub stop_token_ids: Vec<u32>,
    /// Strings that end generation; the text is cut before the first one.
    pub stop_strings: Vec<String>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            sampling: SamplingParams::greedy(),
            stop_token_ids: Vec::new(),
            stop_strings: Vec::new(),
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// `max_new_tokens` reached.
    Length,
    /// A stop token was sampled.
    StopToken,
    /// A stop string appeared in the text.
    StopString,
    /// The constraint accepts no further token.
    ConstraintComplete,
}

/// The result of one sequence's generation.
#[derive(Clone, Debug)]
pub struct GenerationOutput {
    /// Generated ids (the stop token excluded).
    pub tokens: Vec<u32>,
    /// Decoded text, cut before a stop string.
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Prompt tokens run in the prefill.
    pub prefill_tokens: usize,
    /// Seconds spent in the prefill (first forward pass).
    pub prefill_seconds: f64,
    /// Forward passes after the prefill.
    pub decode_steps: usize,
    /// Seconds spent in them (sampling and masks included).
    pub decode_seconds: f64,
    /// Seconds spent computing constraint masks.
    pub mask_seconds: f64,
}

/// Incremental detokenization: text is released only once it is complete
/// UTF-8 and cannot be the start of a stop string, so streamed chunks
/// concatenate exactly to the final text.
struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    stop_strings: &'a [String],
    emitted: usize,
    text: String,
}

impl<'a> TextStream<'a> {
    fn new(tokenizer: &'a Tokenizer, stop_strings: &'a [String]) -> Self {
        Self {
            tokenizer,
            stop_strings,
            emitted: 0,
            text: String::new(),
        }
    }

    /// Re-decodes `tokens`; returns the newly releasable chunk and whether a
    /// stop string was found (the text is then cut before it).
    fn update(&mut self, tokens: &[u32]) -> Result<(String, bool)> {
        self.text = self.tokenizer.decode(tokens, true)?;
        let stop_at = self
            .stop_strings
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.text.find(s.as_str()))
            .min();
        if let Some(at) = stop_at {
            self.text.truncate(at);
            let chunk = self.text.get(self.emitted..).unwrap_or("").to_string();
            self.emitted = self.text.len();
            return Ok((chunk, true));
        }
        // Hold back an incomplete character (decoded as U+FFFD) and any tail
        // that could still grow into a stop string.
        let mut safe = self.text.len();
        if self.text.ends_with('\u{FFFD}') {
            safe -= '\u{FFFD}'.len_utf8();
        }
        for stop in self.stop_strings {
            for (i, _) in self.text.char_indices().rev().take(stop.chars().count()) {
                if i < safe && stop.starts_with(&self.text[i..]) {
                    safe = i;
                }
            }
        }
        // A decoder could in principle rewrite text already released; then
        // nothing more is released until the end rather than panicking on a
        // range that is no longer a character boundary.
        let Some(chunk) = self
            .text
            .get(self.emitted..safe)
            .filter(|_| safe > self.emitted)
        else {
            return Ok((String::new(), false));
        };
        let chunk = chunk.to_string();
        self.emitted = safe;
        Ok((chunk, false))
    }

    /// The rest of the text, at the end of generation.
    fn finish(&mut self) -> String {
        let rest = self.text.get(self.emitted..).unwrap_or("").to_string();
        self.emitted = self.text.len();
        rest
    }
}

/// Generates a continuation of `prompt` (token ids), calling `on_text` with
/// each new piece of text as soon as it is final.
///
/// With a `constraint`, only tokens it allows are sampled, and generation
/// ends when it is complete.
pub fn generate(
    model: &Model,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    config: &GenerationConfig,
    mut constraint: Option<&mut dyn Constraint>,
    mut on_text: impl FnMut(&str),
) -> Result<GenerationOutput> {
    let vocab = model.config().vocab_size;
    if prompt.is_empty() {
        return Err(ModelError::invalid("prompt", "empty prompt (no tokens)"));
    }
    let context = model.config().max_position_embeddings;
    if prompt.len() + config.max_new_tokens > context {
        return Err(ModelError::invalid(
            "prompt",
            format!(
                "{} prompt tokens + {} new tokens exceed the model's context of {context} positions",
                prompt.len(),
                config.max_new_tokens
            ),
        ));
    }
    let mut sampler = Sampler::new(config.sampling.clone())?;
    let mut stream = TextStream::new(tokenizer, &config.stop_strings);
    let mut cache = model.new_cache_for(prompt.len() + config.max_new_tokens);
    let mut seen: Vec<u32> = prompt.to_vec();
    let mut tokens = Vec::new();
    let start = Instant::now();
    let mut logits = model.prefill(&[prompt.to_vec()], &mut cache)?;
    let prefill_seconds = start.elapsed().as_secs_f64();
    let decode_start = Instant::now();
    let mut mask_seconds = 0.0;
    let mut decode_steps = 0;
    let mut finish_reason = FinishReason::Length;
    while tokens.len() < config.max_new_tokens {
        let mut row = to_f32(&logits)?;
        row.truncate(vocab);
        hide_untokenizable(&mut row, tokenizer.vocab_size());
        let mask: Option<TokenMask> = match constraint.as_deref_mut() {
            Some(c) => {
                if c.is_complete() {
                    finish_reason = FinishReason::ConstraintComplete;
                    break;
                }
                let t = Instant::now();
                let m = c.allowed(vocab)?;
                mask_seconds += t.elapsed().as_secs_f64();
                Some(m)
            }
            None => None,
        };
        let next = sampler.sample_masked(&mut row, &seen, mask.as_ref())?;
        if let Some(c) = constraint.as_deref_mut() {
            c.advance(next)?;
        }
        if config.stop_token_ids.contains(&next) {
            finish_reason = FinishReason::StopToken;
            break;
        }
        tokens.push(next);
        seen.push(next);
        let (chunk, stopped) = stream.update(&tokens)?;
        if !chunk.is_empty() {
            on_text(&chunk);
        }
        if stopped {
            finish_reason = FinishReason::StopString;
            break;
        }
        if constraint.as_deref().is_some_and(|c| c.is_complete()) {
            finish_reason = FinishReason::ConstraintComplete;
            break;
        }
        if tokens.len() == config.max_new_tokens {
            break;
        }
        logits = model.forward(&[vec![next]], &mut cache, Logits::Last)?;
        decode_steps += 1;
    }
    let rest = stream.finish();
    if !rest.is_empty() {
        on_text(&rest);
    }
    Ok(GenerationOutput {
        text: stream.text,
        tokens,
        finish_reason,
        prefill_tokens: prompt.len(),
        prefill_seconds,
        decode_steps,
        decode_seconds: decode_start.elapsed().as_secs_f64(),
        mask_seconds,
    })
}

/// Generates for several prompts at once (left-padded into one batch);
/// rows leave the batch as they finish. Each row's result equals what
/// [`generate`] gives for it alone with greedy decoding; sampled rows draw
/// from one random stream in row order.
pub fn generate_batch(
    model: &Model,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
) -> Result<Vec<GenerationOutput>> {
    let vocab = model.config().vocab_size;
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(ModelError::invalid(
            "prompts",
            format!("prompt {i} is empty"),
        ));
    }
    let context = model.config().max_position_embeddings;
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if longest + config.max_new_tokens > context {
        return Err(ModelError::invalid(
            "prompts",
            format!(
                "{longest} prompt tokens + {} new tokens exceed the context of {context}",
                config.max_new_tokens
            ),
        ));
    }
    let mut sampler = Sampler::new(config.sampling.clone())?;
    let mut cache = model.new_cache_for(longest + config.max_new_tokens);
    let start = Instant::now();
    let mut logits = model.prefill(prompts, &mut cache)?;
    let prefill_seconds = start.elapsed().as_secs_f64();
    let decode_start = Instant::now();
    let mut streams: Vec<TextStream<'_>> = prompts
        .iter()
        .map(|_| TextStream::new(tokenizer, &config.stop_strings))
        .collect();
    let mut seen: Vec<Vec<u32>> = prompts.to_vec();
    let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    let mut reasons: Vec<Option<FinishReason>> = vec![None; prompts.len()];
    let mut active: Vec<usize> = (0..prompts.len()).collect();
    let mut decode_steps = 0;
    while !active.is_empty() {
        let mut rows = to_f32(&logits)?;
        for row in rows.chunks_mut(vocab) {
            hide_untokenizable(row, tokenizer.vocab_size());
        }
        let previous: Vec<&[u32]> = active.iter().map(|&r| seen[r].as_slice()).collect();
        let next = sampler.sample_batch(&mut rows, vocab, &previous, None)?;
        let mut still = Vec::with_capacity(active.len());
        let mut keep = Vec::with_capacity(active.len());
        for (slot, (&row, &token)) in active.iter().zip(&next).enumerate() {
            if config.stop_token_ids.contains(&token) {
                reasons[row] = Some(FinishReason::StopToken);
                continue;
            }
            tokens[row].push(token);
            seen[row].push(token);
            let (_, stopped) = streams[row].update(&tokens[row])?;
            if stopped {
                reasons[row] = Some(FinishReason::StopString);
            } else if tokens[row].len() >= config.max_new_tokens {
                reasons[row] = Some(FinishReason::Length);
            } else {
                still.push(row);
                keep.push(slot);
            }
        }
        if still.is_empty() {
            break;
        }
        if keep.len() != active.len() {
            cache.retain_rows(&keep)?;
        }
        active = still;
        let feed: Vec<Vec<u32>> = active
            .iter()
            .map(|&r| tokens[r].last().map(|&t| vec![t]).unwrap_or_default())
            .collect();
        logits = model.forward(&feed, &mut cache, Logits::Last)?;
        decode_steps += 1;
    }
    let decode_seconds = decode_start.elapsed().as_secs_f64();
    Ok(streams
        .into_iter()
        .zip(tokens)
        .zip(reasons)
        .zip(prompts)
        .map(|(((stream, tokens), reason), prompt)| GenerationOutput {
            text: stream.text,
            tokens,
            finish_reason: reason.unwrap_or(FinishReason::Length),
            prefill_tokens: prompt.len(),
            prefill_seconds,
            decode_steps,
            decode_seconds,
            mask_seconds: 0.0,
        })
        .collect())
}

/// Log-probability of each token of `ids` given the tokens before it:
/// `ids.len() − 1` values (the first token has no context). Runs the
/// sequence in one pass; it must fit the model's context.
pub fn token_logprobs(model: &Model, ids: &[u32]) -> Result<Vec<f32>> {
    if ids.len() < 2 {
        return Ok(Vec::new());
    }
    let context = model.config().max_position_embeddings;
    if ids.len() > context {
        return Err(ModelError::invalid(
            "ids",
            format!(
                "{} tokens exceed the model's context of {context}",
                ids.len()
            ),
        ));
    }
    let vocab = model.config().vocab_size;
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        return Err(ModelError::invalid(
            "ids",
            format!("id {bad} is outside the vocabulary of {vocab}"),
        ));
    }
    let mut cache = model.new_cache();
    let logits = model.forward(&[ids[..ids.len() - 1].to_vec()], &mut cache, Logits::All)?;
    let logp = to_f32(&logits.log_softmax(-1)?)?;
    Ok(ids[1..]
        .iter()
        .enumerate()
        .map(|(i, &t)| logp[i * vocab + t as usize])
        .collect())
}

/// The values of `t` as f32, whatever its float dtype.
fn to_f32(t: &kaiyuan_tensor::Tensor) -> Result<Vec<f32>> {
    Ok(match t.dtype() {
        kaiyuan_tensor::DType::F32 => t.to_vec::<f32>()?,
        _ => t.cast(kaiyuan_tensor::DType::F32)?.to_vec::<f32>()?,
    })
}

/// Models often pad their vocabulary past the tokenizer's (Qwen2: 151 936
/// rows for 151 665 tokens); ids without a token can never be chosen.
fn hide_untokenizable(row: &mut [f32], tokenizer_vocab: usize) {
    if let Some(padding) = row.get_mut(tokenizer_vocab..) {
        padding.fill(f32::NEG_INFINITY);
    }
}
