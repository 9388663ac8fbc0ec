//! MinHash signatures and LSH banding for near-duplicate detection.
//!
//! A document becomes a set of shingles: n-grams of tokens, where a token is
//! a run of letters and digits (lowercased) in space-delimited scripts and a
//! single character in CJK text, so English gets word n-grams and Chinese
//! character n-grams from one rule. Each shingle is hashed to 64 bits; the
//! signature holds, for each of `num_perm` hash functions
//! `h_i(x) = (a_i·x + b_i) mod 2⁶⁴ >> 32` (multiply-shift, `a_i` odd), the
//! minimum over the shingles. Two signatures agree at a position with
//! probability ≈ the Jaccard similarity of the shingle sets, so the share of
//! agreeing positions estimates it with standard error `√(J(1−J)/num_perm)`.
//!
//! LSH splits the signature into `bands` bands of `rows` rows; documents
//! that agree on a whole band become candidates, which happens with
//! probability `1 − (1 − J^rows)^bands`. [`optimal_bands`] picks bands and
//! rows for a Jaccard threshold the way datasketch does (minimising the
//! equally weighted false-positive and false-negative areas).

use crate::text::is_cjk;
use serde::Deserialize;

/// Settings of MinHash near-duplicate removal.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MinHashConfig {
    /// Number of hash functions (signature length).
    pub num_perm: usize,
    /// Tokens per shingle.
    pub ngram: usize,
    /// Seed of the hash functions.
    pub seed: u64,
    /// Jaccard similarity at or above which documents are near-duplicates.
    pub threshold: f64,
    /// LSH bands; with `rows`, overrides the choice derived from `threshold`:
    /// datasketch's (false positives and negatives weighted equally, 9 × 13
    /// at 0.8) without `verify`, and with `verify` the same search with the
    /// false-negative area weighted 0.95 (16 × 8 at 0.8), since verification
    /// removes the extra candidates.
    pub bands: Option<usize>,
    /// LSH rows per band.
    pub rows: Option<usize>,
    /// Confirm each LSH candidate pair by its signature estimate
    /// (≥ `threshold`) before merging clusters. Raises precision near the
    /// threshold; needs one signature read per candidate.
    pub verify: bool,
}

impl Default for MinHashConfig {
    fn default() -> Self {
        MinHashConfig {
            num_perm: 128,
            ngram: 5,
            seed: 1,
            threshold: 0.8,
            bands: None,
            rows: None,
            verify: true,
        }
    }
}

impl MinHashConfig {
    /// The (bands, rows) in use: as set, or derived from the threshold.
    pub fn bands_rows(&self) -> crate::Result<(usize, usize)> {
        if self.num_perm == 0 || self.num_perm > 1024 {
            return Err(crate::DataError::config(
                "minhash.num_perm",
                format!("{} is outside 1..=1024", self.num_perm),
            ));
        }
        if self.ngram == 0 {
            return Err(crate::DataError::config(
                "minhash.ngram",
                "must be at least 1",
            ));
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(crate::DataError::config(
                "minhash.threshold",
                format!("{} is outside (0, 1)", self.threshold),
            ));
        }
        match (self.bands, self.rows) {
            (Some(b), Some(r)) => {
                if b == 0 || r == 0 || b * r > self.num_perm {
                    return Err(crate::DataError::config(
                        "minhash.bands",
                        format!(
                            "bands {b} × rows {r} must be positive and at most num_perm {}",
                            self.num_perm
                        ),
                    ));
                }
                Ok((b, r))
            }
            // Verification removes the false positives LSH lets through, so
            // the derivation can favour recall.
            (None, None) if self.verify => Ok(optimal_bands_weighted(
                self.threshold,
                self.num_perm,
                0.05,
                0.95,
            )),
            (None, None) => Ok(optimal_bands(self.threshold, self.num_perm)),
            _ => Err(crate::DataError::config(
                "minhash.bands",
                "set both `bands` and `rows`, or neither",
            )),
        }
    }
}

/// Computes signatures with fixed hash functions.
#[derive(Debug, Clone)]
pub struct MinHasher {
    multipliers: Vec<u64>,
    offsets: Vec<u64>,
    ngram: usize,
}

/// splitmix64: the seed expander and the 64-bit finaliser.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

impl MinHasher {
    /// Hash functions for `num_perm` positions and `ngram`-token shingles.
    pub fn new(num_perm: usize, ngram: usize, seed: u64) -> Self {
        let mut state = seed ^ 0x6b61_6979_7561_6e00;
        let multipliers = (0..num_perm).map(|_| splitmix64(&mut state) | 1).collect();
        let offsets = (0..num_perm).map(|_| splitmix64(&mut state)).collect();
        MinHasher {
            multipliers,
            offsets,
            ngram: ngram.max(1),
        }
    }

    /// The signature length.
    pub fn num_perm(&self) -> usize {
        self.multipliers.len()
    }

    /// The 64-bit hashes of a text's shingles, in text order (repeats
    /// included). A text with fewer tokens than `ngram` has one shingle of
    /// all its tokens; a text without tokens has none.
    ///
    /// ```
    /// use kaiyuan_data::minhash::MinHasher;
    /// let h = MinHasher::new(8, 2, 1);
    /// // Case and punctuation do not matter; words do.
    /// assert_eq!(h.shingles("The cat, the hat."), h.shingles("the CAT the hat"));
    /// assert_eq!(h.shingles("床前明月光").len(), 4);
    /// ```
    pub fn shingles(&self, text: &str) -> Vec<u64> {
        let tokens = token_hashes(text);
        let n = self.ngram;
        if tokens.is_empty() {
            return Vec::new();
        }
        if tokens.len() < n {
            return vec![combine(&tokens)];
        }
        tokens.windows(n).map(combine).collect()
    }

    /// The signature of a text: `num_perm` minima (all `u32::MAX` for a text
    /// without tokens).
    pub fn signature(&self, text: &str) -> Vec<u32> {
        let shingles = self.shingles(text);
        let mut signature = vec![u32::MAX; self.num_perm()];
        self.fold_into(&shingles, &mut signature);
        signature
    }

    /// Lowers `signature` by the given shingle hashes.
    pub fn fold_into(&self, shingles: &[u64], signature: &mut [u32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512dq")
            {
                // SAFETY: the CPU supports AVX-512F and DQ (checked above).
                unsafe { fold_avx512(&self.multipliers, &self.offsets, shingles, signature) };
                return;
            }
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked above).
                unsafe { fold_avx2(&self.multipliers, &self.offsets, shingles, signature) };
                return;
            }
        }
        fold_portable(&self.multipliers, &self.offsets, shingles, signature);
    }
}

#[inline(always)]
fn fold_portable(multipliers: &[u64], offsets: &[u64], shingles: &[u64], signature: &mut [u32]) {
    let n = signature.len().min(multipliers.len()).min(offsets.len());
    let (multipliers, offsets, signature) = (&multipliers[..n], &offsets[..n], &mut signature[..n]);
    for &x in shingles {
        for ((slot, &a), &b) in signature.iter_mut().zip(multipliers).zip(offsets) {
            let v = (a.wrapping_mul(x).wrapping_add(b) >> 32) as u32;
            *slot = (*slot).min(v);
        }
    }
}

/// The same loop compiled for AVX-512 (vectorised 64-bit multiplies).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn fold_avx512(
    multipliers: &[u64],
    offsets: &[u64],
    shingles: &[u64],
    signature: &mut [u32],
) {
    fold_portable(multipliers, offsets, shingles, signature);
}

/// The same loop compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fold_avx2(multipliers: &[u64], offsets: &[u64], shingles: &[u64], signature: &mut [u32]) {
    fold_portable(multipliers, offsets, shingles, signature);
}

/// The naive reference: the signature by the definition, one position at a
/// time over the set of distinct shingles.
pub fn naive_signature(hasher: &MinHasher, text: &str) -> Vec<u32> {
    let set: std::collections::BTreeSet<u64> = hasher.shingles(text).into_iter().collect();
    (0..hasher.num_perm())
        .map(|i| {
            set.iter()
                .map(|&x| {
                    (hasher.multipliers[i]
                        .wrapping_mul(x)
                        .wrapping_add(hasher.offsets[i])
                        >> 32) as u32
                })
                .min()
                .unwrap_or(u32::MAX)
        })
        .collect()
}

/// The hash of an n-gram of token hashes (order-sensitive).
pub fn combine(tokens: &[u64]) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3u64;
    for &t in tokens {
        h = fmix64(h ^ t).wrapping_add(0x9E37_79B9_7F4A_7C15);
    }
    fmix64(h)
}

/// Token hashes: runs of alphanumeric characters (lowercased) and single
/// CJK characters; everything else separates tokens.
pub fn token_hashes(text: &str) -> Vec<u64> {
    let mut out = Vec::with_capacity(text.len() / 5);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut in_token = false;
    for c in text.chars() {
        if is_cjk(c) && c.is_alphanumeric() {
            if in_token {
                out.push(fmix64(h));
                in_token = false;
                h = 0xcbf2_9ce4_8422_2325;
            }
            out.push(fmix64(0x5bd1_e995 ^ c as u64));
        } else if c.is_alphanumeric() {
            let lower = if c.is_ascii() {
                c.to_ascii_lowercase()
            } else {
                c.to_lowercase().next().unwrap_or(c)
            };
            h = (h ^ lower as u64).wrapping_mul(0x0000_0100_0000_01b3);
            in_token = true;
        } else if in_token {
            out.push(fmix64(h));
            in_token = false;
            h = 0xcbf2_9ce4_8422_2325;
        }
    }
    if in_token {
        out.push(fmix64(h));
    }
    out
}

/// The share of positions where two signatures agree: the Jaccard estimate.
/// Two empty-text signatures (all `u32::MAX`) estimate 1.
pub fn estimate_jaccard(a: &[u32], b: &[u32]) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return 0.0;
    }
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / n as f64
}

/// The hash of band `band` (rows `band·rows .. (band+1)·rows`) of a signature.
pub fn band_hash(signature: &[u32], band: usize, rows: usize) -> u64 {
    let start = band * rows;
    let mut h = fmix64(band as u64 + 1);
    for &v in &signature[start..start + rows] {
        h = fmix64(h ^ v as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    }
    h
}

/// Bands and rows for a Jaccard threshold, as datasketch's `MinHashLSH`
/// chooses them: the pair minimising the area under the candidate
/// probability below the threshold (false positives) plus the area above it
/// where pairs are missed (false negatives), equally weighted.
///
/// ```
/// use kaiyuan_data::minhash::optimal_bands;
/// assert_eq!(optimal_bands(0.8, 128), (9, 13));
/// ```
pub fn optimal_bands(threshold: f64, num_perm: usize) -> (usize, usize) {
    optimal_bands_weighted(threshold, num_perm, 0.5, 0.5)
}

/// [`optimal_bands`] with the two error areas weighted (datasketch's
/// `weights=(fp, fn)`).
///
/// ```
/// use kaiyuan_data::minhash::optimal_bands_weighted;
/// assert_eq!(optimal_bands_weighted(0.8, 128, 0.05, 0.95), (16, 8));
/// ```
pub fn optimal_bands_weighted(
    threshold: f64,
    num_perm: usize,
    fp_weight: f64,
    fn_weight: f64,
) -> (usize, usize) {
    let mut best = (1, 1);
    let mut best_error = f64::INFINITY;
    for b in 1..=num_perm {
        for r in 1..=num_perm / b {
            let (b_f, r_f) = (b as f64, r as f64);
            let fp = integrate(|s| 1.0 - (1.0 - s.powf(r_f)).powf(b_f), 0.0, threshold);
            let fn_ = integrate(|s| (1.0 - s.powf(r_f)).powf(b_f), threshold, 1.0);
            let error = fp_weight * fp + fn_weight * fn_;
            if error < best_error {
                best_error = error;
                best = (b, r);
            }
        }
    }
    best
}

/// Composite Simpson's rule with 200 intervals (the integrands are smooth
/// polynomials of degree ≤ num_perm on a short interval).
fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    let n = 200;
    let h = (b - a) / n as f64;
    let mut sum = f(a) + f(b);
    for i in 1..n {
        let x = a + i as f64 * h;
        sum += if i % 2 == 1 { 4.0 } else { 2.0 } * f(x);
    }
    sum * h / 3.0
}
