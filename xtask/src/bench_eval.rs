//! `cargo xtask bench eval`: our text metrics against sacrebleu 2.6.0 and
//! rouge-score 0.1.2 on the same sentence pairs.
//!
//! The pairs are the first `--sizes N` (default 50,000) of
//! `target/bench/eval_pairs.jsonl`, built by
//! `fixtures/eval/text_pairs/make_pairs.py` when missing. Both sides time
//! only the scoring (not start-up, imports or reading the pairs):
//!
//! - ours: `kaiyuan bench eval --json` for every `--threads` count, each
//!   process reporting the median of `--repeats` runs after a warm-up;
//! - the peer: `fixtures/bench/eval_peers.py`, one thread, one timed run per
//!   process after an untimed warm-up on 200 pairs (rouge-score takes about a
//!   minute per pass over 50,000 pairs).
//!
//! They alternate in rounds (ours for each thread count, then the peer), at
//! most three rounds (`--repeats` caps them), so that the machine's noise
//! hits both sides; the table gives the median over rounds of each side's
//! seconds and the ratio peer seconds / our seconds. Every run also prints
//! its scores; a difference above 1e-6 between ours and the peer's (BLEU and
//! chrF++ score, mean F of each ROUGE type) is flagged and makes the command
//! fail after the tables are printed.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::bench::{Args, capture_json_lines, ensure_venv, median, print_table, run_ours};
use crate::flat_json::Object;

/// The benchmark's sentence pairs (the path `kaiyuan bench eval` reads).
const EVAL_PAIRS: &str = "target/bench/eval_pairs.jsonl";
/// The script that writes them.
const MAKE_PAIRS: &str = "fixtures/eval/text_pairs/make_pairs.py";
/// The sacrebleu and rouge-score peer.
const PEER: &str = "fixtures/bench/eval_peers.py";
/// Pairs scored when `--sizes` is not given.
const DEFAULT_PAIRS: usize = 50_000;
/// At most this many alternating rounds (the peer's pass is slow).
const MAX_ROUNDS: usize = 3;
/// Largest difference between our score and the peer's still counted as
/// agreement.
const TOLERANCE: f64 = 1e-6;

/// One timed measure, as both sides name it.
struct Measure {
    /// The `name` of the JSON lines.
    name: &'static str,
    /// What the table calls it.
    label: &'static str,
    /// The keys of the scores to compare.
    score_keys: &'static [&'static str],
    /// Required peer/ours time ratio on one thread, if there is a target.
    target: Option<f64>,
}

const MEASURES: [Measure; 4] = [
    Measure {
        name: "bleu_1ref",
        label: "corpus BLEU (13a), 1 ref",
        score_keys: &["score"],
        target: Some(20.0),
    },
    Measure {
        name: "bleu_2ref",
        label: "corpus BLEU (13a), 2 refs",
        score_keys: &["score"],
        target: Some(20.0),
    },
    Measure {
        name: "chrfpp_1ref",
        label: "chrF++, 1 ref",
        score_keys: &["score"],
        target: None,
    },
    Measure {
        name: "rouge_stem",
        label: "ROUGE-1/2/L/Lsum, stemmed",
        score_keys: &["rouge1_f", "rouge2_f", "rougeL_f", "rougeLsum_f"],
        target: Some(20.0),
    },
];

/// Runs the comparison and prints the timing and score tables.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let pairs = match args.sizes.as_slice() {
        [] => DEFAULT_PAIRS,
        [n] if *n > 0 => *n,
        _ => bail!("bench eval takes one positive size: the number of pairs"),
    };
    let python = ensure_venv()?;
    ensure_pairs(pairs)?;
    let rounds = args.repeats.clamp(1, MAX_ROUNDS);
    let one = Args {
        sizes: vec![pairs],
        ..args.clone()
    };
    let mut ours = Vec::new();
    let mut peer = Vec::new();
    for round in 1..=rounds {
        eprintln!("bench eval: round {round} of {rounds}");
        for &threads in &args.threads {
            ours.extend(run_ours(&one, threads)?);
        }
        let mut cmd = Command::new(&python);
        cmd.arg(PEER)
            .args(["--pairs", EVAL_PAIRS, "--n", &pairs.to_string()])
            .args(["--repeats", "1"])
            .env("OMP_NUM_THREADS", "1")
            .env("OPENBLAS_NUM_THREADS", "1");
        let lines = capture_json_lines(&mut cmd)?;
        if lines.is_empty() {
            bail!("{PEER} printed no results");
        }
        peer.extend(lines);
    }

    println!();
    print_table(
        &[
            "measure",
            "threads",
            "ours s",
            "ours pairs/s",
            "peer s",
            "peer pairs/s",
            "peer/ours",
            "target (1 thread)",
        ],
        &timing_rows(&args.threads, &ours, &peer)?,
    );
    let peers: Vec<&str> = {
        let mut names: Vec<&str> = peer.iter().filter_map(|p| p.str("peer")).collect();
        names.sort_unstable();
        names.dedup();
        names
    };
    println!(
        "{pairs} pairs; medians of {rounds} alternating rounds (ours: median of {} runs per round); \
         peers on one thread: {}",
        args.repeats,
        peers.join(", ")
    );

    let checks = score_checks(&ours, &peer);
    println!();
    print_table(
        &[
            "score",
            "ours",
            "peer",
            "max |ours - peer|",
            "agree (≤ 1e-6)",
        ],
        &checks
            .iter()
            .map(|c| {
                vec![
                    c.label.clone(),
                    fmt_score(c.ours),
                    fmt_score(c.peer),
                    format!("{:.1e}", c.max_diff),
                    if c.agrees() { "yes" } else { "MISMATCH" }.to_owned(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    let bad: Vec<&str> = checks
        .iter()
        .filter(|c| !c.agrees())
        .map(|c| c.label.as_str())
        .collect();
    if !bad.is_empty() {
        bail!(
            "our scores and the peers' differ by more than {TOLERANCE:e}: {}",
            bad.join("; ")
        );
    }
    Ok(())
}

/// Builds [`EVAL_PAIRS`] with at least `pairs` lines (the generator is
/// sequential, so a longer file starts with the same pairs).
fn ensure_pairs(pairs: usize) -> anyhow::Result<()> {
    let have = std::fs::read_to_string(EVAL_PAIRS)
        .map(|text| text.lines().count())
        .unwrap_or(0);
    if have >= pairs {
        return Ok(());
    }
    let count = pairs.max(DEFAULT_PAIRS).to_string();
    let status = crate::run_echoed(
        Command::new("python3").args([MAKE_PAIRS, "--count", &count, "--output", EVAL_PAIRS]),
    )?;
    if !status.success() || !Path::new(EVAL_PAIRS).exists() {
        bail!("building {EVAL_PAIRS} failed ({status})");
    }
    Ok(())
}

/// The `median_s` of every line named `name` (and run with `threads`, when
/// given), their median.
fn median_seconds(lines: &[Object], name: &str, threads: Option<usize>) -> Option<f64> {
    let mut times: Vec<f64> = lines
        .iter()
        .filter(|l| l.str("name") == Some(name))
        .filter(|l| threads.is_none_or(|t| l.num("threads") == Some(t as f64)))
        .filter_map(|l| l.num("median_s"))
        .collect();
    (!times.is_empty()).then(|| median(&mut times))
}

/// One row per measure and thread count: our median seconds and pairs/s,
/// the (single-threaded) peer's, the ratio peer/ours and, on one thread,
/// whether the target is met.
fn timing_rows(
    thread_counts: &[usize],
    ours: &[Object],
    peer: &[Object],
) -> anyhow::Result<Vec<Vec<String>>> {
    let size = ours
        .iter()
        .chain(peer)
        .find_map(|l| l.num("size"))
        .context("no line reports its number of pairs (`size`)")?;
    let rate = |s: Option<f64>| s.map_or("-".into(), |s| format!("{:.0}", size / s));
    let secs = |s: Option<f64>| s.map_or("-".into(), |s| format!("{s:.3}"));
    let mut rows = Vec::new();
    for m in &MEASURES {
        let theirs = median_seconds(peer, m.name, None);
        for &threads in thread_counts {
            let mine = median_seconds(ours, m.name, Some(threads));
            let ratio = mine.zip(theirs).map(|(o, p)| p / o);
            let target = match (m.target, ratio) {
                (Some(t), Some(r)) if threads == 1 => {
                    format!("≥ {t}× — {}", if r >= t { "PASS" } else { "FAIL" })
                }
                _ => String::new(),
            };
            rows.push(vec![
                m.label.to_owned(),
                threads.to_string(),
                secs(mine),
                rate(mine),
                secs(theirs),
                rate(theirs),
                ratio.map_or("-".into(), |r| format!("{r:.1}×")),
                target,
            ]);
        }
    }
    Ok(rows)
}

/// One compared score: ours and the peer's (first run of each) and the
/// largest difference between any of our runs and any of the peer's.
struct ScoreCheck {
    label: String,
    ours: Option<f64>,
    peer: Option<f64>,
    max_diff: f64,
}

impl ScoreCheck {
    /// Both sides reported the score and every run agrees within
    /// [`TOLERANCE`].
    fn agrees(&self) -> bool {
        self.ours.is_some() && self.peer.is_some() && self.max_diff <= TOLERANCE
    }
}

/// Our scores against the peer's, for every measure and score key.
fn score_checks(ours: &[Object], peer: &[Object]) -> Vec<ScoreCheck> {
    let values = |lines: &[Object], name: &str, key: &str| -> Vec<f64> {
        lines
            .iter()
            .filter(|l| l.str("name") == Some(name))
            .map(|l| l.num(key).unwrap_or(f64::NAN))
            .collect()
    };
    let mut checks = Vec::new();
    for m in &MEASURES {
        for key in m.score_keys {
            let mine = values(ours, m.name, key);
            let theirs = values(peer, m.name, key);
            let mut max_diff = 0.0f64;
            for a in &mine {
                for b in &theirs {
                    let d = (a - b).abs();
                    // A NaN (missing or unparsable score) counts as infinitely far.
                    max_diff = if d.is_nan() {
                        f64::INFINITY
                    } else {
                        max_diff.max(d)
                    };
                }
            }
            let label = if m.score_keys.len() == 1 {
                m.label.to_owned()
            } else {
                format!("{}: mean {key}", m.label)
            };
            checks.push(ScoreCheck {
                label,
                ours: mine.first().copied(),
                peer: theirs.first().copied(),
                max_diff,
            });
        }
    }
    checks
}

/// A score with enough digits to see a 1e-6 difference.
fn fmt_score(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{v:.10}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flat_json::parse;

    fn lines(text: &[&str]) -> Vec<Object> {
        text.iter().map(|t| parse(t).unwrap()).collect()
    }

    fn ours() -> Vec<Object> {
        lines(&[
            r#"{"name":"bleu_1ref","size":100,"threads":1,"median_s":0.2,"score":60.5}"#,
            r#"{"name":"bleu_1ref","size":100,"threads":1,"median_s":0.1,"score":60.5}"#,
            r#"{"name":"bleu_1ref","size":100,"threads":1,"median_s":0.3,"score":60.5}"#,
            r#"{"name":"bleu_1ref","size":100,"threads":2,"median_s":0.05,"score":60.5}"#,
            r#"{"name":"rouge_stem","size":100,"threads":1,"median_s":1.0,"rouge1_f":0.5,"rouge2_f":0.4,"rougeL_f":0.45,"rougeLsum_f":0.45}"#,
        ])
    }

    #[test]
    fn timing_rows_take_medians_and_ratios() {
        let peer = lines(&[
            r#"{"name":"bleu_1ref","size":100,"threads":1,"median_s":5.0,"score":60.5}"#,
            r#"{"name":"bleu_1ref","size":100,"threads":1,"median_s":3.0,"score":60.5}"#,
            r#"{"name":"bleu_1ref","size":100,"threads":1,"median_s":4.0,"score":60.5}"#,
            r#"{"name":"rouge_stem","size":100,"threads":1,"median_s":10.0,"rouge1_f":0.5}"#,
        ]);
        let rows = timing_rows(&[1, 2], &ours(), &peer).unwrap();
        assert_eq!(rows.len(), MEASURES.len() * 2);
        // BLEU 1 ref, 1 thread: ours 0.2 s, peer 4.0 s.
        assert_eq!(
            rows[0][2..],
            ["0.200", "500", "4.000", "25", "20.0×", "≥ 20× — PASS"]
        );
        // 2 threads: a ratio, no target.
        assert_eq!(rows[1][6..], ["80.0×", ""]);
        // No lines for chrF++: dashes.
        assert_eq!(rows[4][2], "-");
        // ROUGE: 10× misses the target.
        assert_eq!(rows[6][6..], ["10.0×", "≥ 20× — FAIL"]);
    }

    #[test]
    fn score_mismatches_are_flagged() {
        let peer = lines(&[
            r#"{"name":"bleu_1ref","score":60.5000000001}"#,
            r#"{"name":"rouge_stem","rouge1_f":0.5,"rouge2_f":0.40001,"rougeL_f":0.45}"#,
        ]);
        let checks = score_checks(&ours(), &peer);
        let agree = |label: &str| {
            checks
                .iter()
                .find(|c| c.label.ends_with(label))
                .unwrap()
                .agrees()
        };
        assert!(agree("BLEU (13a), 1 ref"));
        assert!(agree("rouge1_f"));
        assert!(!agree("rouge2_f"), "1e-5 apart");
        assert!(!agree("rougeLsum_f"), "missing on the peer's side");
        assert!(!agree("BLEU (13a), 2 refs"), "missing on both sides");
        assert_eq!(fmt_score(Some(0.5)), "0.5000000000");
    }
}
