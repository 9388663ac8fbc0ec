//! Logits processors against HF transformers' own classes
//! (`fixtures/sampling/logits_processors.json`, written by
//! `fixtures/sampling/make_references.py`), and the sampler's statistics.
//!
//! Tolerance for processed logits: `|ours − ref| <= 1e-6 + 1e-6·|ref|`, and
//! −∞ exactly where transformers has −∞ — except that when tokens of equal
//! logit straddle a top-p/min-p cut, torch's unstable sort decides which of
//! them survive; there we require the same number of survivors among them.

use std::path::PathBuf;

use kaiyuan_models::ModelError;
use kaiyuan_models::sampling::{
    LogitsProcessor, Sampler, SamplingParams, TokenMask, argmax, process_logits,
};
use serde_json::Value;

const ATOL: f32 = 1e-6;
const RTOL: f32 = 1e-6;

fn fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/sampling/logits_processors.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| match x {
            Value::Null => f32::NEG_INFINITY,
            x => x.as_f64().expect("number") as f32,
        })
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn params(v: &Value) -> SamplingParams {
    SamplingParams {
        temperature: v["temperature"].as_f64().expect("temperature"),
        top_k: v["top_k"].as_u64().expect("top_k") as usize,
        top_p: v["top_p"].as_f64().expect("top_p"),
        min_p: v["min_p"].as_f64().expect("min_p"),
        repetition_penalty: v["repetition_penalty"].as_f64().expect("penalty"),
        min_tokens_to_keep: v["min_tokens_to_keep"].as_u64().expect("keep") as usize,
        seed: Some(0),
    }
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= ATOL + RTOL * b.abs()
}

#[test]
fn processed_logits_match_transformers() {
    let doc = fixture();
    let rows = doc["rows"].as_array().expect("rows");
    let cases = doc["cases"].as_array().expect("cases");
    assert!(cases.len() >= 20 && rows.len() >= 5);
    let mut failures = Vec::new();
    let mut tie_cuts = 0;
    let mut compared = 0;
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let p = params(&case["params"]);
        // The same step with only penalty and temperature: the values the
        // filters choose from, to recognise ties at a cut.
        let unfiltered = SamplingParams {
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..p.clone()
        };
        for (row, out) in rows
            .iter()
            .zip(case["outputs"].as_array().expect("outputs"))
        {
            let row_name = row["name"].as_str().expect("row name");
            assert_eq!(out["row"].as_str(), Some(row_name));
            let logits = floats(&row["logits"]);
            let previous = ids(&row["input_ids"]);
            let expected = floats(&out["logits"]);
            let ours = process_logits(&p, &logits, &previous).expect("valid case");
            let base = process_logits(&unfiltered, &logits, &previous).expect("valid case");
            assert_eq!(ours.len(), expected.len());
            let mut only_ours = Vec::new();
            let mut only_ref = Vec::new();
            for (i, (&o, &e)) in ours.iter().zip(&expected).enumerate() {
                compared += 1;
                match (o.is_finite(), e.is_finite()) {
                    (true, true) if !close(o, e) => failures.push(format!(
                        "{name}/{row_name}[{i}]: ours {o}, transformers {e}"
                    )),
                    (true, false) => only_ours.push(i),
                    (false, true) => only_ref.push(i),
                    _ => {}
                }
            }
            if only_ours.is_empty() && only_ref.is_empty() {
                continue;
            }
            // Allowed only as a permutation inside one group of equal values.
            let tied = only_ours
                .iter()
                .chain(&only_ref)
                .all(|&i| base[i] == base[only_ours.first().copied().unwrap_or(only_ref[0])]);
            if only_ours.len() == only_ref.len() && tied {
                tie_cuts += 1;
                // The survivors of the tie carry the same value.
                for (&a, &b) in only_ours.iter().zip(&only_ref) {
                    if !close(ours[a], expected[b]) {
                        failures.push(format!("{name}/{row_name}: tie values {a} vs {b}"));
                    }
                }
            } else {
                failures.push(format!(
                    "{name}/{row_name}: kept only by us {only_ours:?}, only by transformers {only_ref:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches of {compared} logits, first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    // The flat and tied rows make torch cut through ties; the check above
    // must have met some, or the fixture lost its tie cases.
    assert!(tie_cuts > 0, "no cut through a tie exercised");
    eprintln!("{compared} logits compared, {tie_cuts} cuts through ties");
}

#[test]
fn greedy_is_argmax_as_torch() {
    let doc = fixture();
    let rows = doc["rows"].as_array().expect("rows");
    for case in doc["cases"].as_array().expect("cases") {
        let p = params(&case["params"]);
        for (row, out) in rows
            .iter()
            .zip(case["outputs"].as_array().expect("outputs"))
        {
            let expected = out["argmax"].as_u64().expect("argmax") as u32;
            let logits = floats(&row["logits"]);
            let previous = ids(&row["input_ids"]);
            let processed = process_logits(&p, &logits, &previous).expect("valid");
            // After a cut through a tie the survivors may differ (see the
            // module docs); compare where the kept sets agree.
            let reference = floats(&out["logits"]);
            let same_set = processed
                .iter()
                .zip(&reference)
                .all(|(a, b)| a.is_finite() == b.is_finite());
            if same_set {
                assert_eq!(argmax(&processed), Some(expected), "{}", case["name"]);
            } else {
                assert!(!p.is_greedy());
            }
            if p.is_greedy() {
                // The sampler itself returns it, whatever the seed.
                for seed in 0..3 {
                    let mut s = Sampler::new(SamplingParams {
                        seed: Some(seed),
                        ..p.clone()
                    })
                    .expect("valid");
                    let mut l = logits.clone();
                    assert_eq!(s.sample(&mut l, &previous).expect("sample"), expected);
                }
            }
        }
    }
    // Ties go to the lowest id.
    assert_eq!(argmax(&[2.0, 5.0, 5.0, f32::NAN, 5.0]), Some(1));
    assert_eq!(argmax(&[]), None);
}

fn draws(params: &SamplingParams, logits: &[f32], n: usize) -> Vec<u32> {
    let mut s = Sampler::new(params.clone()).expect("valid");
    (0..n)
        .map(|_| s.sample(&mut logits.to_vec(), &[]).expect("sample"))
        .collect()
}

#[test]
fn seeded_sampling_is_deterministic() {
    let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
    let p = SamplingParams {
        temperature: 1.2,
        top_p: 0.95,
        seed: Some(1234),
        ..SamplingParams::default()
    };
    let a = draws(&p, &logits, 500);
    let b = draws(&p, &logits, 500);
    assert_eq!(a, b);
    let c = draws(
        &SamplingParams {
            seed: Some(1235),
            ..p.clone()
        },
        &logits,
        500,
    );
    assert_ne!(a, c, "another seed gives another stream");
    // reseed restarts the stream.
    let mut s = Sampler::new(p.clone()).expect("valid");
    let first: Vec<u32> = (0..20)
        .map(|_| s.sample(&mut logits.clone(), &[]).expect("sample"))
        .collect();
    s.reseed(1234);
    let again: Vec<u32> = (0..20)
        .map(|_| s.sample(&mut logits.clone(), &[]).expect("sample"))
        .collect();
    assert_eq!(first, again);
    assert_eq!(&a[..20], &first[..]);
    // Unseeded samplers still sample validly.
    let mut u = Sampler::new(SamplingParams::default()).expect("valid");
    assert!(u.sample(&mut logits.clone(), &[]).expect("sample") < 50);
}

/// Pearson's chi-square of `counts` against probabilities `probs`
/// (categories with probability 0 must have count 0).
fn chi_square(counts: &[u64], probs: &[f64], n: u64) -> f64 {
    counts
        .iter()
        .zip(probs)
        .map(|(&c, &p)| {
            if p == 0.0 {
                assert_eq!(c, 0, "sampled a token of probability 0");
                0.0
            } else {
                let e = p * n as f64;
                (c as f64 - e).powi(2) / e
            }
        })
        .sum()
}

fn softmax64(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = logits
        .iter()
        .map(|&x| (f64::from(x) - f64::from(max)).exp())
        .collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

#[test]
fn sample_frequencies_match_softmax() {
    let logits: Vec<f32> = vec![
        1.0, 0.2, -0.5, 2.0, 1.5, -2.0, 0.7, 0.0, 1.1, -1.0, 0.3, 2.2,
    ];
    let cases = [
        SamplingParams::default(),
        SamplingParams {
            temperature: 0.6,
            ..SamplingParams::default()
        },
        SamplingParams {
            temperature: 1.7,
            top_k: 7,
            ..SamplingParams::default()
        },
        SamplingParams {
            top_p: 0.8,
            min_p: 0.1,
            repetition_penalty: 1.4,
            ..SamplingParams::default()
        },
    ];
    let previous = [3_u32, 11];
    let n: u64 = 200_000;
    for (k, base) in cases.iter().enumerate() {
        let p = SamplingParams {
            seed: Some(99 + k as u64),
            ..base.clone()
        };
        let processed = process_logits(&p, &logits, &previous).expect("valid");
        let probs = softmax64(&processed);
        let mut sampler = Sampler::new(p.clone()).expect("valid");
        let mut counts = vec![0_u64; logits.len()];
        for _ in 0..n {
            let t = sampler
                .sample(&mut logits.clone(), &previous)
                .expect("sample");
            counts[t as usize] += 1;
        }
        let kept = probs.iter().filter(|&&q| q > 0.0).count();
        let df = (kept - 1) as f64;
        let chi2 = chi_square(&counts, &probs, n);
        // Mean df, sd sqrt(2 df): df + 8 sd is far in the tail for a correct
        // sampler (a fixed seed makes the outcome reproducible anyway).
        let bound = df + 8.0 * (2.0 * df).sqrt();
        assert!(
            chi2 < bound,
            "case {k}: chi2 {chi2} >= {bound} (counts {counts:?})"
        );
        // The same counts against the unprocessed softmax: a sampler that
        // skipped the processing would pass that instead; it must fail.
        if k > 0 {
            let wrong = softmax64(&logits);
            let wrong_chi2: f64 = counts
                .iter()
                .zip(&wrong)
                .map(|(&c, &q)| (c as f64 - q * n as f64).powi(2) / (q * n as f64))
                .sum();
            assert!(
                wrong_chi2 > 10.0 * bound,
                "case {k}: test has no power ({wrong_chi2})"
            );
        }
    }
}

#[test]
fn mask_restricts_choices() {
    let logits: Vec<f32> = (0..130).map(|i| (i % 13) as f32 * 0.25).collect();
    let allowed = [0_u32, 64, 65, 129];
    let mask = TokenMask::from_allowed(130, allowed).expect("ids in range");
    assert_eq!(mask.count_allowed(), 4);
    let mut s = Sampler::new(SamplingParams {
        seed: Some(5),
        top_p: 0.9,
        ..SamplingParams::default()
    })
    .expect("valid");
    let mut seen = [false; 4];
    for _ in 0..2000 {
        let t = s
            .sample_masked(&mut logits.clone(), &[], Some(&mask))
            .expect("sample");
        let pos = allowed.iter().position(|&a| a == t).expect("allowed id");
        seen[pos] = true;
    }
    // Logits 0, 3, 0, 3 for ids [0, 64, 65, 129] → top-p 0.9 keeps the two
    // largest; check with the processed logits.
    let mut l = logits.clone();
    s.processor()
        .process(&mut l, &[], Some(&mask))
        .expect("process");
    let finite: Vec<usize> = (0..130).filter(|&i| l[i].is_finite()).collect();
    assert!(finite.iter().all(|&i| allowed.contains(&(i as u32))));
    for (k, &id) in allowed.iter().enumerate() {
        assert_eq!(seen[k], l[id as usize].is_finite(), "id {id}");
    }
    assert_eq!(finite, [64, 129]);
    // Greedy with a mask: the best allowed id (64 and 129 tie → 64; 12 has
    // a larger logit but is not allowed).
    let mut g = Sampler::new(SamplingParams::greedy()).expect("valid");
    assert_eq!(
        g.sample_masked(&mut logits.clone(), &[], Some(&mask))
            .expect("greedy"),
        64
    );
    let m2 = TokenMask::from_allowed(130, [0, 65, 129]).expect("ids in range");
    assert_eq!(
        g.sample_masked(&mut logits.clone(), &[], Some(&m2))
            .expect("greedy"),
        129
    );
    // from_bools and allow_all agree with the bitset.
    let bools: Vec<bool> = (0..130).map(|i| allowed.contains(&i)).collect();
    assert_eq!(TokenMask::from_bools(&bools), mask);
    assert_eq!(TokenMask::allow_all(130).count_allowed(), 130);
    assert_eq!(TokenMask::allow_all(128).count_allowed(), 128);
    let mut m = TokenMask::allow_all(70);
    m.deny(69).expect("in range");
    assert!(!m.is_allowed(69) && m.is_allowed(68) && !m.is_allowed(70));
}

fn invalid_name(e: ModelError) -> String {
    match e {
        ModelError::InvalidArgument { name, .. } => name,
        other => panic!("expected InvalidArgument, got {other}"),
    }
}

#[test]
fn invalid_parameters_are_named() {
    let d = SamplingParams::default;
    let bad = [
        (
            SamplingParams {
                temperature: -0.1,
                ..d()
            },
            "temperature",
        ),
        (
            SamplingParams {
                temperature: f64::NAN,
                ..d()
            },
            "temperature",
        ),
        (
            SamplingParams {
                temperature: f64::INFINITY,
                ..d()
            },
            "temperature",
        ),
        (SamplingParams { top_p: 0.0, ..d() }, "top_p"),
        (SamplingParams { top_p: 1.01, ..d() }, "top_p"),
        (
            SamplingParams {
                top_p: f64::NAN,
                ..d()
            },
            "top_p",
        ),
        (
            SamplingParams {
                min_p: -0.01,
                ..d()
            },
            "min_p",
        ),
        (SamplingParams { min_p: 1.5, ..d() }, "min_p"),
        (
            SamplingParams {
                repetition_penalty: 0.0,
                ..d()
            },
            "repetition_penalty",
        ),
        (
            SamplingParams {
                repetition_penalty: -1.0,
                ..d()
            },
            "repetition_penalty",
        ),
        (
            SamplingParams {
                min_tokens_to_keep: 0,
                ..d()
            },
            "min_tokens_to_keep",
        ),
    ];
    for (p, name) in bad {
        let e = Sampler::new(p.clone()).expect_err("invalid");
        assert_eq!(invalid_name(e), name, "{p:?}");
        assert!(process_logits(&p, &[1.0], &[]).is_err());
    }
    // Bad logits and masks.
    let proc = LogitsProcessor::new(d()).expect("valid");
    for row in [vec![], vec![1.0, f32::NAN], vec![f32::INFINITY, 0.0]] {
        let e = proc
            .process(&mut row.clone(), &[], None)
            .expect_err("bad row");
        assert_eq!(invalid_name(e), "logits");
    }
    let all_masked = TokenMask::deny_all(3);
    let e = proc
        .process(&mut [1.0, 2.0, 3.0], &[], Some(&all_masked))
        .expect_err("nothing allowed");
    assert_eq!(invalid_name(e), "logits");
    let e = proc
        .process(&mut [1.0, 2.0], &[], Some(&all_masked))
        .expect_err("mask length");
    assert_eq!(invalid_name(e), "token mask");
    assert!(TokenMask::from_allowed(3, [3]).is_err());
    // Previous ids beyond the vocabulary are ignored, as transformers does.
    let p = SamplingParams {
        repetition_penalty: 2.0,
        ..d()
    };
    assert_eq!(
        process_logits(&p, &[2.0, -2.0], &[5, 1, 1]).expect("ok"),
        [2.0, -4.0]
    );
}

#[test]
fn batch_equals_rows() {
    let v = 40;
    let rows: Vec<Vec<f32>> = (0..5)
        .map(|b| {
            (0..v)
                .map(|i| (((i * 7 + b * 3) % 17) as f32 - 8.0) * 0.4)
                .collect()
        })
        .collect();
    let previous: Vec<Vec<u32>> = (0..5).map(|b| vec![b as u32, 10, 39]).collect();
    let prev_refs: Vec<&[u32]> = previous.iter().map(|p| p.as_slice()).collect();
    let p = SamplingParams {
        temperature: 0.8,
        top_k: 20,
        top_p: 0.9,
        repetition_penalty: 1.3,
        seed: Some(3),
        ..SamplingParams::default()
    };
    let proc = LogitsProcessor::new(p.clone()).expect("valid");
    let mut flat: Vec<f32> = rows.concat();
    proc.process_batch(&mut flat, v, &prev_refs, None)
        .expect("batch");
    for (b, row) in rows.iter().enumerate() {
        let one = process_logits(&p, row, &previous[b]).expect("row");
        assert_eq!(&flat[b * v..(b + 1) * v], &one[..], "row {b}");
    }
    // Sampling a batch draws in row order from one stream.
    let mut s = Sampler::new(p.clone()).expect("valid");
    let got = s
        .sample_batch(&mut rows.concat(), v, &prev_refs, None)
        .expect("batch");
    let mut t = Sampler::new(p).expect("valid");
    let want: Vec<u32> = rows
        .iter()
        .zip(&previous)
        .map(|(r, pr)| t.sample(&mut r.clone(), pr).expect("row"))
        .collect();
    assert_eq!(got, want);
    // Shape errors name the argument; row errors name the row.
    assert!(
        proc.process_batch(&mut rows.concat(), 39, &prev_refs, None)
            .is_err()
    );
    assert!(
        proc.process_batch(&mut rows.concat(), v, &prev_refs[..4], None)
            .is_err()
    );
    let mut bad = rows.concat();
    bad[2 * v + 1] = f32::NAN;
    let e = proc
        .process_batch(&mut bad, v, &prev_refs, None)
        .expect_err("NaN");
    assert_eq!(invalid_name(e), "logits (batch row 2)");
}
