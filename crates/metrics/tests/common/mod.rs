//! What the metric tests share: the committed fixtures, the 600 text pairs
//! and a collector of mismatches against a reference implementation.

// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::fmt::Debug;
use std::path::PathBuf;

use serde_json::Value;

/// How far a float may be from its reference: `|x - ref| <= 1e-9`.
pub const TOLERANCE: f64 = 1e-9;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A JSON fixture, by its path from the workspace root.
pub fn load_json(rel: &str) -> Value {
    let path = root().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One line of `fixtures/eval/text_pairs/pairs.jsonl`.
pub struct Pair {
    pub id: u64,
    pub lang: String,
    pub hyp: String,
    pub refs: [String; 2],
}

/// The text pairs, in file order.
pub fn load_pairs() -> Vec<Pair> {
    let path = root().join("fixtures/eval/text_pairs/pairs.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("pairs.jsonl line");
            Pair {
                id: v["id"].as_u64().expect("id"),
                lang: v["lang"].as_str().expect("lang").to_string(),
                hyp: v["hyp"].as_str().expect("hyp").to_string(),
                refs: [
                    v["refs"][0].as_str().expect("ref").to_string(),
                    v["refs"][1].as_str().expect("ref").to_string(),
                ],
            }
        })
        .collect()
}

/// The hypotheses and both reference streams of all pairs.
pub fn all_streams(pairs: &[Pair]) -> (Vec<&str>, Vec<Vec<&str>>) {
    let hyps = pairs.iter().map(|p| p.hyp.as_str()).collect();
    let refs = (0..2)
        .map(|r| pairs.iter().map(|p| p.refs[r].as_str()).collect())
        .collect();
    (hyps, refs)
}

/// A JSON array of strings.
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array of strings")
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

/// A JSON array of unsigned integers.
pub fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("array of integers")
        .iter()
        .map(|x| x.as_u64().expect("integer"))
        .collect()
}

/// A JSON array of numbers.
pub fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array of numbers")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// An optional JSON array of segment indices (empty when absent).
pub fn indices(v: Option<&Value>) -> Vec<usize> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().map(|x| x.as_u64().unwrap() as usize).collect())
        .unwrap_or_default()
}

/// The hypotheses and reference streams a sacrebleu corpus case describes:
/// `subset` (`all`, a language, or `segment:<i>`), `nrefs` streams, and the
/// segments whose second reference is `None` (`ref2_none`) or empty
/// (`ref2_empty`).
pub fn corpus_input(pairs: &[Pair], case: &Value) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let subset = case["subset"].as_str().unwrap();
    let chosen: Vec<usize> = match subset {
        "all" => (0..pairs.len()).collect(),
        s if s.starts_with("segment:") => vec![s["segment:".len()..].parse().unwrap()],
        lang => (0..pairs.len())
            .filter(|&i| pairs[i].lang == lang)
            .collect(),
    };
    let nrefs = case["nrefs"].as_u64().unwrap() as usize;
    let none_at = indices(case.get("ref2_none"));
    let empty_at = indices(case.get("ref2_empty"));
    let hyps = chosen.iter().map(|&i| pairs[i].hyp.clone()).collect();
    let streams = (0..nrefs)
        .map(|r| {
            chosen
                .iter()
                .map(|&i| {
                    if r == 1 && none_at.contains(&i) {
                        None
                    } else if r == 1 && empty_at.contains(&i) {
                        Some(String::new())
                    } else {
                        Some(pairs[i].refs[r].clone())
                    }
                })
                .collect()
        })
        .collect();
    (hyps, streams)
}

/// Collects mismatches against a reference implementation; [`finish`]
/// fails with the first few.
///
/// [`finish`]: Mismatches::finish
pub struct Mismatches {
    /// The reference implementation, as the messages name it.
    reference: &'static str,
    list: Vec<String>,
    checked: usize,
}

impl Mismatches {
    /// An empty collector for results of `reference` (`sacrebleu`, …).
    pub fn new(reference: &'static str) -> Self {
        Mismatches {
            reference,
            list: Vec::new(),
            checked: 0,
        }
    }

    /// `got` must be within [`TOLERANCE`] of `want`; a NaN never is.
    pub fn float(&mut self, what: impl FnOnce() -> String, got: f64, want: f64) {
        self.checked += 1;
        let close = (got - want).abs() <= TOLERANCE;
        if !close {
            self.list.push(format!(
                "{}: got {got:?}, {} {want:?} (diff {:e})",
                what(),
                self.reference,
                got - want
            ));
        }
    }

    /// `got` must equal `want`.
    pub fn eq<T: PartialEq + Debug>(&mut self, what: impl FnOnce() -> String, got: T, want: T) {
        self.checked += 1;
        if got != want {
            self.list.push(format!(
                "{}: got {got:?}, {} {want:?}",
                what(),
                self.reference
            ));
        }
    }

    /// [`Mismatches::float`] against the number `case[key]`.
    pub fn float_at(&mut self, label: &str, case: &Value, key: &str, got: f64) {
        let want = case[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}: number"));
        self.float(|| format!("{label} {key}"), got, want);
    }

    /// [`Mismatches::eq`] against the integer `case[key]`.
    pub fn u64_at(&mut self, label: &str, case: &Value, key: &str, got: u64) {
        let want = case[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: integer"));
        self.eq(|| format!("{label} {key}"), got, want);
    }

    /// [`Mismatches::eq`] against the string `case[key]`.
    pub fn str_at(&mut self, label: &str, case: &Value, key: &str, got: &str) {
        let want = case[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key}: string"));
        self.eq(|| format!("{label} {key}"), got, want);
    }

    /// One row of a sacrebleu sentence fixture, `[score, statistics…]`:
    /// the score within [`TOLERANCE`], the statistics exactly.
    pub fn score_and_stats(&mut self, label: &str, row: &Value, score: f64, stats: Vec<u64>) {
        let row = row.as_array().expect("row");
        let want_score = row[0].as_f64().expect("score");
        self.float(|| format!("{label} score"), score, want_score);
        let want_stats = row[1..]
            .iter()
            .map(|x| x.as_u64().expect("count"))
            .collect();
        self.eq(|| format!("{label} stats"), stats, want_stats);
    }

    /// Fails if anything differed (listing the first 12) or nothing was
    /// compared.
    pub fn finish(self, what: &str) {
        assert!(self.checked > 0, "{what}: nothing compared");
        if !self.list.is_empty() {
            let first: Vec<&str> = self.list.iter().take(12).map(String::as_str).collect();
            panic!(
                "{what}: {} of {} values differ from {}; first ones:\n  {}",
                self.list.len(),
                self.checked,
                self.reference,
                first.join("\n  ")
            );
        }
        eprintln!("{what}: {} values match {}", self.checked, self.reference);
    }
}
