//! Logits processors and token sampling, with the semantics of HF
//! transformers' `generate(do_sample=True, …)`.
//!
//! One decoding step takes the logits of the last position, shape (V,) for a
//! vocabulary of V tokens (or (B, V) for a batch), and the ids seen so far
//! (prompt + generated). [`LogitsProcessor::process`] rewrites the logits in
//! transformers' order:
//!
//! 1. the optional [`TokenMask`] (constrained decoding): disallowed ids → −∞;
//! 2. repetition penalty over the *set* of previous ids (`RepetitionPenaltyLogitsProcessor`):
//!    a logit < 0 is multiplied by the penalty, any other is divided by it;
//! 3. temperature (`TemperatureLogitsWarper`): logits / T;
//! 4. top-k (`TopKLogitsWarper`): every logit strictly below the k-th largest
//!    becomes −∞ (ties with the k-th value are all kept, so more than k may stay);
//! 5. top-p (`TopPLogitsWarper`): sort ascending, softmax, cumulative sum;
//!    positions whose cumulative probability is `<= 1 - top_p` are removed,
//!    except the last `min_tokens_to_keep`;
//! 6. min-p (`MinPLogitsWarper`): tokens whose probability is below
//!    `min_p × max probability` are removed, except the `min_tokens_to_keep`
//!    most probable.
//!
//! Steps 3–6 run only when sampling; temperature 0 means greedy decoding
//! (argmax of the logits after steps 1–2, ties → the lowest id, as
//! `torch.argmax`), which is what greedy `generate` does.
//!
//! Arithmetic follows torch's float32 kernels (f32 products and quotients,
//! f32 softmax, the top-p cumulative sum accumulated in f64 and rounded to
//! f32 at each position, thresholds rounded to f32), so the processed logits
//! match transformers' to the last bit away from exact threshold ties; the
//! test `tests/sampling.rs` compares them with transformers' own classes.
//!
//! **Ties at a top-p or min-p cut.** torch sorts with an unstable sort, so
//! when tokens of *equal* logit straddle the cut, which of them transformers
//! keeps depends on the sort's internals. This module keeps the same
//! *number* of them, choosing the lowest ids (consistent with argmax).
//!
//! **Random stream.** [`Sampler`] draws from its own seeded generator
//! (xoshiro256** seeded through SplitMix64): a given seed always gives the
//! same tokens here, on every platform and thread count, but not the tokens
//! `torch.manual_seed` + `torch.multinomial` would give.
//!
//! ```
//! use kaiyuan_models::sampling::{Sampler, SamplingParams};
//!
//! let params = SamplingParams {
//!     temperature: 0.7,
//!     top_k: 50,
//!     top_p: 0.9,
//!     repetition_penalty: 1.1,
//!     seed: Some(42),
//!     ..SamplingParams::default()
//! };
//! let mut sampler = Sampler::new(params)?;
//! let mut logits = vec![0.5_f32, 2.0, -1.0, 1.5];
//! let previous = [1_u32, 3];
//! let token = sampler.sample(&mut logits, &previous)?;
//! assert!(token < 4);
//! // The logits now hold the processed values, -inf for removed tokens.
//! assert_eq!(logits[2], f32::NEG_INFINITY);
//! # Ok::<(), kaiyuan_models::ModelError>(())
//! ```

use rayon::prelude::*;

use crate::error::{ModelError, Result};

/// Parameters of one sampling configuration, in the conventions of
/// transformers' `GenerationConfig` with `do_sample=True`. The neutral value
/// of each filter turns it off, exactly as `generate` leaves the processor
/// out: `temperature` 1, `top_k` 0, `top_p` 1, `min_p` 0,
/// `repetition_penalty` 1.
///
/// `Default` is plain multinomial sampling from the softmax with every filter
/// off and a random seed (transformers 5 likewise applies no top-k unless the
/// model's `generation_config.json` asks for one).
///
/// ```
/// use kaiyuan_models::sampling::SamplingParams;
///
/// let p = SamplingParams { top_p: 1.5, ..SamplingParams::default() };
/// let err = p.validate().unwrap_err();
/// assert!(err.to_string().starts_with("top_p:"));
/// assert!(SamplingParams::greedy().is_greedy());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature, `>= 0`; 0 means greedy decoding (argmax), 1
    /// leaves the logits unchanged.
    pub temperature: f64,
    /// Keep only the `top_k` largest logits (and ties with the k-th); 0 turns
    /// the filter off.
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of most probable tokens whose
    /// probabilities add up to at least `top_p`; in (0, 1], 1 turns it off.
    pub top_p: f64,
    /// Keep tokens with probability at least `min_p ×` the largest
    /// probability; in [0, 1], 0 turns it off.
    pub min_p: f64,
    /// Penalty on every token id seen before (prompt included), `> 0`; 1
    /// turns it off, above 1 discourages repetition, below 1 encourages it.
    pub repetition_penalty: f64,
    /// The fewest tokens top-k, top-p and min-p may leave, `>= 1`
    /// (transformers uses 1 for sampling).
    pub min_tokens_to_keep: usize,
    /// Seed of the random generator; `None` draws one from the operating
    /// system's randomness.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            min_tokens_to_keep: 1,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: temperature 0, every filter off.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Whether these parameters decode greedily (temperature 0).
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks every parameter, returning [`ModelError::InvalidArgument`]
    /// naming the first one out of range.
    pub fn validate(&self) -> Result<()> {
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return Err(ModelError::invalid(
                "temperature",
                format!("must be a finite number >= 0 (0 means greedy), got {t}"),
            ));
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return Err(ModelError::invalid(
                "top_p",
                format!("must be in (0, 1] (1 turns it off), got {p}"),
            ));
        }
        let m = self.min_p;
        if !(0.0..=1.0).contains(&m) {
            return Err(ModelError::invalid(
                "min_p",
                format!("must be in [0, 1] (0 turns it off), got {m}"),
            ));
        }
        let r = self.repetition_penalty;
        if !(r.is_finite() && r > 0.0) {
            return Err(ModelError::invalid(
                "repetition_penalty",
                format!("must be a finite number > 0 (1 turns it off), got {r}"),
            ));
        }
        if self.min_tokens_to_keep == 0 {
            return Err(ModelError::invalid(
                "min_tokens_to_keep",
                "must be at least 1, got 0",
            ));
        }
        Ok(())
    }
}

/// A set of allowed token ids over a vocabulary, stored as a bitset: the
/// per-step hook of constrained decoding. Ids outside the set get logit −∞
/// before any other processing, so top-p and min-p renormalise over the
/// allowed tokens only.
///
/// ```
/// use kaiyuan_models::sampling::TokenMask;
///
/// let mut mask = TokenMask::deny_all(10);
/// mask.allow(3)?;
/// mask.allow(7)?;
/// assert!(mask.is_allowed(3) && !mask.is_allowed(4));
/// assert_eq!(mask.count_allowed(), 2);
/// assert!(mask.allow(10).is_err()); // outside the vocabulary
/// # Ok::<(), kaiyuan_models::ModelError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMask {
    words: Vec<u64>,
    len: usize,
}

impl TokenMask {
    /// A mask over `vocab_size` ids allowing every one.
    pub fn allow_all(vocab_size: usize) -> Self {
        let mut words = vec![u64::MAX; vocab_size.div_ceil(64)];
        if !vocab_size.is_multiple_of(64)
            && let Some(last) = words.last_mut()
        {
            *last = (1u64 << (vocab_size % 64)) - 1;
        }
        Self {
            words,
            len: vocab_size,
        }
    }

    /// A mask over `vocab_size` ids allowing none.
    pub fn deny_all(vocab_size: usize) -> Self {
        Self {
            words: vec![0; vocab_size.div_ceil(64)],
            len: vocab_size,
        }
    }

    /// A mask with one entry per id: `true` allows it.
    pub fn from_bools(allowed: &[bool]) -> Self {
        let mut mask = Self::deny_all(allowed.len());
        for (id, _) in allowed.iter().enumerate().filter(|(_, a)| **a) {
            mask.words[id / 64] |= 1 << (id % 64);
        }
        mask
    }

    /// A mask over `vocab_size` ids allowing exactly `ids`; an id
    /// `>= vocab_size` is an [`ModelError::InvalidArgument`].
    pub fn from_allowed(vocab_size: usize, ids: impl IntoIterator<Item = u32>) -> Result<Self> {
        let mut mask = Self::deny_all(vocab_size);
        for id in ids {
            mask.allow(id)?;
        }
        Ok(mask)
    }

    /// The vocabulary size the mask covers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mask covers an empty vocabulary.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, id: u32) -> Result<usize> {
        let i = id as usize;
        if i >= self.len {
            return Err(ModelError::invalid(
                "token mask",
                format!("id {id} is outside the vocabulary of {} tokens", self.len),
            ));
        }
        Ok(i)
    }

    /// Allows `id` (an error if `id >= len()`).
    pub fn allow(&mut self, id: u32) -> Result<()> {
        let i = self.check(id)?;
        self.words[i / 64] |= 1 << (i % 64);
        Ok(())
    }

    /// Disallows `id` (an error if `id >= len()`).
    pub fn deny(&mut self, id: u32) -> Result<()> {
        let i = self.check(id)?;
        self.words[i / 64] &= !(1 << (i % 64));
        Ok(())
    }

    /// Whether `id` is allowed (`false` outside the vocabulary).
    pub fn is_allowed(&self, id: u32) -> bool {
        let i = id as usize;
        i < self.len && self.words[i / 64] >> (i % 64) & 1 == 1
    }

    /// How many ids are allowed.
    pub fn count_allowed(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Sets every disallowed logit to −∞.
    fn apply(&self, logits: &mut [f32]) {
        for (chunk, &word) in logits.chunks_mut(64).zip(&self.words) {
            if word == u64::MAX {
                continue;
            }
            for (j, x) in chunk.iter_mut().enumerate() {
                if word >> j & 1 == 0 {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
    }
}

/// The deterministic part of a decoding step: applies the repetition
/// penalty and the warpers of a validated [`SamplingParams`] to logits, in
/// place. Holds no random state, so it is `Sync` and one instance serves
/// many threads.
///
/// ```
/// use kaiyuan_models::sampling::{LogitsProcessor, SamplingParams};
///
/// let proc = LogitsProcessor::new(SamplingParams { top_k: 2, ..SamplingParams::default() })?;
/// let mut logits = vec![1.0_f32, 3.0, 2.0, 0.0];
/// proc.process(&mut logits, &[], None)?;
/// assert_eq!(logits, [f32::NEG_INFINITY, 3.0, 2.0, f32::NEG_INFINITY]);
/// # Ok::<(), kaiyuan_models::ModelError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LogitsProcessor {
    params: SamplingParams,
}

impl LogitsProcessor {
    /// A processor for `params`, validated first.
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        Ok(Self { params })
    }

    /// The parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Processes one row of logits (V,) in place, given the ids seen so far
    /// (`previous`, prompt + generated; ids `>= V` are ignored, as
    /// transformers does) and an optional mask of allowed ids (its length
    /// must be V). Removed tokens get −∞. With greedy parameters only the
    /// mask and the repetition penalty apply.
    ///
    /// Errors: an empty row, a NaN or +∞ logit, a mask of the wrong length,
    /// or no token left with a finite logit.
    pub fn process(
        &self,
        logits: &mut [f32],
        previous: &[u32],
        mask: Option<&TokenMask>,
    ) -> Result<()> {
        check_row(logits, mask)?;
        if let Some(mask) = mask {
            mask.apply(logits);
        }
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            repetition_penalty(logits, previous, p.repetition_penalty);
        }
        if !logits.iter().any(|x| x.is_finite()) {
            return Err(ModelError::invalid(
                "logits",
                "no token left to choose: every logit is -inf (all tokens masked?)",
            ));
        }
        if p.is_greedy() {
            return Ok(());
        }
        if p.temperature != 1.0 {
            let t = p.temperature as f32;
            logits.iter_mut().for_each(|x| *x /= t);
        }
        if p.top_k != 0 {
            top_k(logits, p.top_k.max(p.min_tokens_to_keep));
        }
        if p.top_p < 1.0 {
            top_p(logits, p.top_p, p.min_tokens_to_keep);
        }
        if p.min_p != 0.0 {
            min_p(logits, p.min_p, p.min_tokens_to_keep);
        }
        Ok(())
    }

    /// Processes a batch (B, V) stored row-major in `logits`, row `b` with
    /// `previous[b]` and `masks[b]`, rows in parallel. Errors name the row.
    pub fn process_batch(
        &self,
        logits: &mut [f32],
        vocab_size: usize,
        previous: &[&[u32]],
        masks: Option<&[TokenMask]>,
    ) -> Result<()> {
        let rows = check_batch(logits, vocab_size, previous, masks)?;
        let results: Vec<Result<()>> = logits
            .par_chunks_mut(vocab_size)
            .enumerate()
            .map(|(b, row)| {
                self.process(row, previous[b], masks.map(|m| &m[b]))
                    .map_err(|e| in_row(e, b))
            })
            .collect();
        debug_assert_eq!(results.len(), rows);
        results.into_iter().collect()
    }
}

/// Returns the processed logits of one row (−∞ for removed tokens), a
/// convenience over [`LogitsProcessor::process`] that validates `params` and
/// copies `logits`.
///
/// ```
/// use kaiyuan_models::sampling::{process_logits, SamplingParams};
///
/// let params = SamplingParams { repetition_penalty: 2.0, ..SamplingParams::default() };
/// let out = process_logits(&params, &[1.0, -1.0, 4.0], &[0, 1])?;
/// assert_eq!(out, [0.5, -2.0, 4.0]);
/// # Ok::<(), kaiyuan_models::ModelError>(())
/// ```
pub fn process_logits(
    params: &SamplingParams,
    logits: &[f32],
    previous: &[u32],
) -> Result<Vec<f32>> {
    let processor = LogitsProcessor::new(params.clone())?;
    let mut out = logits.to_vec();
    processor.process(&mut out, previous, None)?;
    Ok(out)
}

/// The index of the largest value, ties → the lowest index (as
/// `torch.argmax`); NaN values are skipped. `None` for an empty slice or
/// one holding only NaN.
///
/// ```
/// assert_eq!(kaiyuan_models::sampling::argmax(&[1.0, 3.0, 3.0, 2.0]), Some(1));
/// ```
pub fn argmax(values: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in values.iter().enumerate() {
        if x.is_nan() {
            continue;
        }
        match best {
            Some((_, b)) if x <= b => {}
            _ => best = Some((i, x)),
        }
    }
    best.map(|(i, _)| i as u32)
}

/// A [`LogitsProcessor`] with a seeded random generator: picks the next
/// token of each step. Deterministic for a given seed (see the module docs
/// for how its random stream relates to torch's).
///
/// ```
/// use kaiyuan_models::sampling::{Sampler, SamplingParams, TokenMask};
///
/// let params = SamplingParams { seed: Some(7), ..SamplingParams::default() };
/// let logits = [0.0_f32, 1.0, 2.0, 3.0];
/// let mut a = Sampler::new(params.clone())?;
/// let mut b = Sampler::new(params)?;
/// for _ in 0..10 {
///     assert_eq!(a.sample(&mut logits.clone(), &[])?, b.sample(&mut logits.clone(), &[])?);
/// }
/// // Constrained: only ids 0 and 2 may be chosen.
/// let mask = TokenMask::from_allowed(4, [0, 2])?;
/// let t = a.sample_masked(&mut logits.clone(), &[], Some(&mask))?;
/// assert!(t == 0 || t == 2);
/// // Greedy ignores the generator.
/// let mut g = Sampler::new(SamplingParams::greedy())?;
/// assert_eq!(g.sample(&mut logits.clone(), &[])?, 3);
/// # Ok::<(), kaiyuan_models::ModelError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Sampler {
    processor: LogitsProcessor,
    rng: Xoshiro256,
}

impl Sampler {
    /// A sampler for `params` (validated), seeded with `params.seed` or, when
    /// that is `None`, from the operating system's randomness.
    pub fn new(params: SamplingParams) -> Result<Self> {
        let seed = params.seed.unwrap_or_else(random_seed);
        let processor = LogitsProcessor::new(params)?;
        Ok(Self {
            processor,
            rng: Xoshiro256::new(seed),
        })
    }

    /// The parameters.
    pub fn params(&self) -> &SamplingParams {
        self.processor.params()
    }

    /// The logits processor.
    pub fn processor(&self) -> &LogitsProcessor {
        &self.processor
    }

    /// Restarts the random stream from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = Xoshiro256::new(seed);
    }

    /// Processes `logits` (V,) in place (see [`LogitsProcessor::process`])
    /// and picks a token: the argmax when greedy, else a draw from the
    /// softmax of the processed logits.
    pub fn sample(&mut self, logits: &mut [f32], previous: &[u32]) -> Result<u32> {
        self.sample_masked(logits, previous, None)
    }

    /// [`Sampler::sample`] restricted to the ids `mask` allows.
    pub fn sample_masked(
        &mut self,
        logits: &mut [f32],
        previous: &[u32],
        mask: Option<&TokenMask>,
    ) -> Result<u32> {
        self.processor.process(logits, previous, mask)?;
        self.pick(logits)
    }

    /// Processes a batch (B, V) row-major (rows in parallel) and picks one
    /// token per row; the random draws are taken in row order, so the result
    /// does not depend on the thread count.
    pub fn sample_batch(
        &mut self,
        logits: &mut [f32],
        vocab_size: usize,
        previous: &[&[u32]],
        masks: Option<&[TokenMask]>,
    ) -> Result<Vec<u32>> {
        self.processor
            .process_batch(logits, vocab_size, previous, masks)?;
        logits
            .chunks(vocab_size)
            .enumerate()
            .map(|(b, row)| self.pick(row).map_err(|e| in_row(e, b)))
            .collect()
    }

    /// Picks a token from processed logits.
    fn pick(&mut self, logits: &[f32]) -> Result<u32> {
        let no_token = || ModelError::invalid("logits", "no token left to choose");
        if self.params().is_greedy() {
            return argmax(logits).ok_or_else(no_token);
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return Err(no_token());
        }
        let weight = |x: f32| {
            if x == f32::NEG_INFINITY {
                0.0
            } else {
                (f64::from(x) - f64::from(max)).exp()
            }
        };
        let total: f64 = logits.iter().map(|&x| weight(x)).sum();
        let target = self.rng.next_f64() * total;
        let mut cumulative = 0.0;
        let mut last_positive = None;
        for (i, &x) in logits.iter().enumerate() {
            let w = weight(x);
            if w > 0.0 {
                cumulative += w;
                last_positive = Some(i);
                if cumulative > target {
                    return Ok(i as u32);
                }
            }
        }
        // Rounding can leave `target` a hair above the final sum.
        last_positive.map(|i| i as u32).ok_or_else(no_token)
    }
}

// ------------------------------------------------------------- processors --

fn check_row(logits: &[f32], mask: Option<&TokenMask>) -> Result<()> {
    if logits.is_empty() {
        return Err(ModelError::invalid(
            "logits",
            "empty row (vocabulary of 0 tokens)",
        ));
    }
    if let Some(i) = logits
        .iter()
        .position(|x| x.is_nan() || *x == f32::INFINITY)
    {
        return Err(ModelError::invalid(
            "logits",
            format!(
                "logit of token {i} is {} (NaN and +inf are refused)",
                logits[i]
            ),
        ));
    }
    if let Some(mask) = mask
        && mask.len() != logits.len()
    {
        return Err(ModelError::invalid(
            "token mask",
            format!(
                "covers {} ids but the logits have {}",
                mask.len(),
                logits.len()
            ),
        ));
    }
    Ok(())
}

fn check_batch(
    logits: &[f32],
    vocab_size: usize,
    previous: &[&[u32]],
    masks: Option<&[TokenMask]>,
) -> Result<usize> {
    if vocab_size == 0 || !logits.len().is_multiple_of(vocab_size) {
        return Err(ModelError::invalid(
            "logits",
            format!(
                "batch of {} values is not a whole number of rows of {vocab_size}",
                logits.len()
            ),
        ));
    }
    let rows = logits.len() / vocab_size;
    if previous.len() != rows {
        return Err(ModelError::invalid(
            "previous",
            format!("{} id lists for a batch of {rows} rows", previous.len()),
        ));
    }
    if let Some(masks) = masks
        && masks.len() != rows
    {
        return Err(ModelError::invalid(
            "token mask",
            format!("{} masks for a batch of {rows} rows", masks.len()),
        ));
    }
    Ok(rows)
}

fn in_row(e: ModelError, row: usize) -> ModelError {
    match e {
        ModelError::InvalidArgument { name, message } => ModelError::InvalidArgument {
            name: format!("{name} (batch row {row})"),
            message,
        },
        other => other,
    }
}

/// `RepetitionPenaltyLogitsProcessor`: once per distinct previous id.
fn repetition_penalty(logits: &mut [f32], previous: &[u32], penalty: f64) {
    let penalty = penalty as f32;
    let mut ids: Vec<usize> = previous
        .iter()
        .map(|&id| id as usize)
        .filter(|&id| id < logits.len())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let x = logits[id];
        logits[id] = if x < 0.0 { x * penalty } else { x / penalty };
    }
}

/// `TopKLogitsWarper`: removes logits strictly below the k-th largest.
fn top_k(logits: &mut [f32], k: usize) {
    if k >= logits.len() {
        return;
    }
    let mut values = logits.to_vec();
    let (_, kth, _) = values.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let kth = *kth;
    logits
        .iter_mut()
        .filter(|x| **x < kth)
        .for_each(|x| *x = f32::NEG_INFINITY);
}

/// Softmax in float32 as torch computes it: max, exp(x − max), sum, then
/// multiplication by the reciprocal of the sum (the sum is accumulated in
/// f64 and rounded once, close to torch's vectorised f32 sum).
fn softmax_f32(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum = exps.iter().map(|&e| f64::from(e)).sum::<f64>() as f32;
    let inv = 1.0 / sum;
    exps.into_iter().map(|e| e * inv).collect()
}

/// `TopPLogitsWarper`. Ascending order puts, among equal logits, the higher
/// ids first, so the ones removed at a cut through a tie are the higher ids.
fn top_p(logits: &mut [f32], top_p: f64, min_keep: usize) {
    // Tokens already at -inf sort first, have probability 0 and stay -inf,
    // so only the finite ones need sorting (after top-k that is k of them);
    // the last `min_keep` positions of the full order are the last
    // `min_keep` finite ones.
    let mut order: Vec<u32> = (0..logits.len() as u32)
        .filter(|&i| logits[i as usize].is_finite())
        .collect();
    order.sort_unstable_by(|&a, &b| {
        logits[a as usize]
            .total_cmp(&logits[b as usize])
            .then(b.cmp(&a))
    });
    let sorted: Vec<f32> = order.iter().map(|&i| logits[i as usize]).collect();
    let probs = softmax_f32(&sorted);
    // torch compares the f32 tensor with the Python float 1 - top_p cast to f32.
    let threshold = (1.0 - top_p) as f32;
    let removable = order.len().saturating_sub(min_keep);
    let mut cumulative = 0.0_f64; // torch's CPU cumsum accumulates f32 in f64
    for (&id, &p) in order.iter().zip(&probs).take(removable) {
        cumulative += f64::from(p);
        if cumulative as f32 > threshold {
            break; // the cumulative sum never decreases
        }
        logits[id as usize] = f32::NEG_INFINITY;
    }
}

/// `MinPLogitsWarper`.
fn min_p(logits: &mut [f32], min_p: f64, min_keep: usize) {
    let probs = softmax_f32(logits);
    let top = probs.iter().copied().fold(0.0_f32, f32::max);
    let threshold = min_p as f32 * top;
    // The `min_keep` most probable tokens stay (ties → lowest ids).
    let mut keep = vec![false; logits.len()];
    if min_keep > 1 {
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| {
            probs[b as usize]
                .total_cmp(&probs[a as usize])
                .then(a.cmp(&b))
        });
        for &i in order.iter().take(min_keep) {
            keep[i as usize] = true;
        }
    } else if let Some(i) = argmax(&probs) {
        keep[i as usize] = true;
    }
    for ((x, &p), &k) in logits.iter_mut().zip(&probs).zip(&keep) {
        if p < threshold && !k {
            *x = f32::NEG_INFINITY;
        }
    }
}

// -------------------------------------------------------------------- rng --

/// xoshiro256** (Blackman & Vigna), seeded through SplitMix64: small, fast,
/// and the same stream on every platform.
#[derive(Debug, Clone)]
struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x6b61_6979_7561_6e00_u64)
}
