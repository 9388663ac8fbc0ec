//! MinHash: the fast signature equals the definition, estimates fall within
//! the expected error of the exact Jaccard similarity, and LSH parameters
//! match datasketch's.

use kaiyuan_data::minhash::{MinHasher, estimate_jaccard, naive_signature, optimal_bands};
use proptest::prelude::*;
use std::collections::HashSet;

fn words(ids: &[u16]) -> String {
    ids.iter()
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn fast_signature_equals_naive(ids in proptest::collection::vec(0u16..500, 0..300), perms in 1usize..200, n in 1usize..7) {
        let h = MinHasher::new(perms, n, 3);
        let text = words(&ids);
        prop_assert_eq!(h.signature(&text), naive_signature(&h, &text));
    }

    /// |estimate − J| ≤ 4.5σ + 1/k with σ = √(J(1−J)/k): a 4.5σ band fails
    /// with probability below 1e-5 per case.
    #[test]
    fn estimate_within_expected_error(base in proptest::collection::vec(0u16..2000, 60..400), keep in 0.0f64..1.0, seed in 0u64..1000) {
        let k = 256;
        let h = MinHasher::new(k, 3, seed);
        // The second text keeps a prefix share of the first and replaces the rest.
        let cut = (base.len() as f64 * keep) as usize;
        let mut other = base[..cut].to_vec();
        other.extend(base[cut..].iter().map(|i| i + 3000));
        let (a, b) = (words(&base), words(&other));
        let sa: HashSet<u64> = h.shingles(&a).into_iter().collect();
        let sb: HashSet<u64> = h.shingles(&b).into_iter().collect();
        let exact = sa.intersection(&sb).count() as f64 / sa.union(&sb).count() as f64;
        let estimate = estimate_jaccard(&h.signature(&a), &h.signature(&b));
        let sigma = (exact * (1.0 - exact) / k as f64).sqrt();
        prop_assert!((estimate - exact).abs() <= 4.5 * sigma + 1.0 / k as f64,
            "estimate {estimate:.4} vs exact {exact:.4} (σ {sigma:.4})");
    }
}

#[test]
fn lsh_parameters_match_datasketch() {
    // datasketch 2.0.0: MinHashLSH(threshold=t, num_perm=128).b, .r
    for (t, expected) in [
        (0.5, (25, 5)),
        (0.7, (14, 9)),
        (0.8, (9, 13)),
        (0.9, (5, 25)),
    ] {
        assert_eq!(optimal_bands(t, 128), expected, "threshold {t}");
    }
    // MinHashLSH(threshold=0.8, num_perm=128, weights=(w, 1-w))
    for (w, expected) in [(0.2, (12, 10)), (0.1, (14, 9)), (0.05, (16, 8))] {
        assert_eq!(
            kaiyuan_data::minhash::optimal_bands_weighted(0.8, 128, w, 1.0 - w),
            expected,
            "weight {w}"
        );
    }
}

#[test]
fn chinese_uses_character_ngrams_and_english_word_ngrams() {
    let h = MinHasher::new(64, 3, 1);
    assert_eq!(h.shingles("one two three four").len(), 2);
    assert_eq!(h.shingles("天下大同世界").len(), 4);
    assert_eq!(h.shingles("mixed 中文 text").len(), 2);
    assert!(h.shingles("").is_empty());
    assert_eq!(h.shingles("short").len(), 1);
}
