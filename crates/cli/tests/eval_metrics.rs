//! `kaiyuan eval bleu|chrf|rouge|qa` through the binary, on the 600 pairs of
//! `fixtures/eval/text_pairs/pairs.jsonl` written out as line files, against
//! the committed sacrebleu 2.6.0 and rouge-score 0.1.2 results
//! (`fixtures/eval/bleu`, `fixtures/eval/rouge`): scores within 1e-9,
//! signatures identical. Also the bad-input rules: line counts that differ
//! and `--on-empty error` name the files (and line).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read_json(rel: &str) -> Value {
    let path = root().join(rel);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// hyp.txt, ref1.txt, ref2.txt from the pairs (written once).
fn files() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kaiyuan-eval-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text =
            std::fs::read_to_string(root().join("fixtures/eval/text_pairs/pairs.jsonl")).unwrap();
        let (mut hyp, mut r1, mut r2) = (String::new(), String::new(), String::new());
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            for (out, s) in [
                (&mut hyp, &v["hyp"]),
                (&mut r1, &v["refs"][0]),
                (&mut r2, &v["refs"][1]),
            ] {
                let s = s.as_str().unwrap();
                assert!(!s.contains('\n'), "a pair holds a newline");
                out.push_str(s);
                out.push('\n');
            }
        }
        for (name, body) in [("hyp.txt", hyp), ("ref1.txt", r1), ("ref2.txt", r2)] {
            std::fs::write(dir.join(name), body).unwrap();
        }
        dir
    })
}

fn kaiyuan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kaiyuan"))
        .args(args)
        .output()
        .expect("kaiyuan runs")
}

fn json_of(args: &[&str]) -> Value {
    let out = kaiyuan(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn path(name: &str) -> String {
    files().join(name).display().to_string()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 + 1e-9 * b.abs()
}

#[test]
fn bleu_equals_sacrebleu_for_each_tokenizer_and_smoothing() {
    let fixture = read_json("fixtures/eval/bleu/bleu_references.json");
    let cases = fixture["corpus"].as_array().unwrap();
    let (hyp, r1, r2) = (path("hyp.txt"), path("ref1.txt"), path("ref2.txt"));
    let mut checked = 0;
    for case in cases {
        if case["subset"] != "all"
            || case["effective_order"] != false
            || !case["smooth_value"].is_null()
            || case.get("ref2_none").is_some()
        {
            continue;
        }
        let (tok, smooth) = (
            case["tokenize"].as_str().unwrap(),
            case["smooth"].as_str().unwrap(),
        );
        // A sample of the grid keeps the test quick: every tokenizer with exp,
        // every smoothing with 13a, both cases and reference counts.
        if tok != "13a" && smooth != "exp" {
            continue;
        }
        let mut args = vec![
            "eval",
            "bleu",
            "--hyp",
            &hyp,
            "--tokenize",
            tok,
            "--smooth-method",
            smooth,
            "--json",
            "--ref",
            &r1,
        ];
        if case["nrefs"] == 2 {
            args.push(&r2);
        }
        if case["lowercase"] == true {
            args.push("--lowercase");
        }
        let got = json_of(&args);
        assert!(
            close(
                got["score"].as_f64().unwrap(),
                case["score"].as_f64().unwrap()
            ),
            "{args:?}: {} vs {}",
            got["score"],
            case["score"]
        );
        assert_eq!(got["signature"], case["signature"], "{args:?}");
        assert_eq!(got["counts"], case["counts"], "{args:?}");
        assert_eq!(got["totals"], case["totals"], "{args:?}");
        assert_eq!(got["segments"], 600);
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} cases");
}

#[test]
fn chrf_and_rouge_equal_their_references() {
    let fixture = read_json("fixtures/eval/bleu/chrf_references.json");
    let (hyp, r1) = (path("hyp.txt"), path("ref1.txt"));
    for word_order in ["0", "2"] {
        let case = fixture["corpus"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["subset"] == "all"
                    && c["nrefs"] == 1
                    && c["lowercase"] == false
                    && c["whitespace"] == false
                    && c["word_order"].as_u64().map(|w| w.to_string()).as_deref()
                        == Some(word_order)
                    && c["eps_smoothing"] == false
            })
            .unwrap();
        let got = json_of(&[
            "eval",
            "chrf",
            "--hyp",
            &hyp,
            "--ref",
            &r1,
            "--chrf-word-order",
            word_order,
            "--json",
        ]);
        assert!(close(
            got["score"].as_f64().unwrap(),
            case["score"].as_f64().unwrap()
        ));
        assert_eq!(got["signature"], case["signature"]);
    }
    let rouge = read_json("fixtures/eval/rouge/rouge_pairs.json");
    for (stem, key) in [(false, "default/nostem"), (true, "default/stem")] {
        let mut args = vec!["eval", "rouge", "--hyp", &hyp, "--ref", &r1, "--json"];
        if stem {
            args.push("--stem");
        }
        let got = json_of(&args);
        let means = rouge["meta"]["means"][key].as_array().unwrap();
        for (t, want) in ["rouge1", "rouge2", "rougeL", "rougeLsum"]
            .iter()
            .zip(means)
        {
            for (k, field) in ["precision", "recall", "fmeasure"].iter().enumerate() {
                let (g, w) = (
                    got["scores"][t][field].as_f64().unwrap(),
                    want[k].as_f64().unwrap(),
                );
                assert!(close(g, w), "{key} {t} {field}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn misaligned_and_empty_lines_are_named() {
    let dir = files();
    std::fs::write(dir.join("short.txt"), "one\ntwo\n").unwrap();
    let out = kaiyuan(&[
        "eval",
        "bleu",
        "--hyp",
        &path("hyp.txt"),
        "--ref",
        &path("short.txt"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("600 lines")
            && err.contains("short.txt")
            && err.contains("has 2"),
        "{err}"
    );
    // The pairs hold empty hypotheses: counted by default, refused on request.
    let got = json_of(&[
        "eval",
        "bleu",
        "--hyp",
        &path("hyp.txt"),
        "--ref",
        &path("ref1.txt"),
        "--json",
    ]);
    let empty = got["empty_hypotheses"].as_u64().unwrap();
    assert!(empty > 0);
    let out = kaiyuan(&[
        "eval",
        "rouge",
        "--hyp",
        &path("hyp.txt"),
        "--ref",
        &path("ref1.txt"),
        "--on-empty",
        "error",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("hyp.txt:") && err.contains("empty line"),
        "{err}"
    );
    let out = kaiyuan(&[
        "eval",
        "bleu",
        "--hyp",
        &path("hyp.txt"),
        "--ref",
        &path("ref1.txt"),
        "--tokenize",
        "moses",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("moses"));
}

#[test]
fn qa_scores_exact_match_and_f1() {
    let dir = files();
    std::fs::write(
        dir.join("pred.txt"),
        "The Eiffel Tower\nParis, France\n北京\n",
    )
    .unwrap();
    std::fs::write(dir.join("gold.txt"), "eiffel tower\nParis\n北京市\n").unwrap();
    let got = json_of(&[
        "eval",
        "qa",
        "--hyp",
        &path("pred.txt"),
        "--ref",
        &path("gold.txt"),
        "--json",
    ]);
    // "the" is an article; "Paris, France" vs "Paris": F1 2/3; 北京 vs 北京市 (one token each under squad): 0.
    assert!(
        close(got["exact_match"].as_f64().unwrap(), 1.0 / 3.0),
        "{got}"
    );
    assert!(
        close(got["f1"].as_f64().unwrap(), (1.0 + 2.0 / 3.0) / 3.0),
        "{got}"
    );
}

#[test]
fn sentence_level_scores_equal_sacrebleus() {
    let bleu = read_json("fixtures/eval/bleu/bleu_references.json");
    let chrf = read_json("fixtures/eval/bleu/chrf_references.json");
    let (hyp, r1, r2) = (path("hyp.txt"), path("ref1.txt"), path("ref2.txt"));
    for (metric, fixture) in [("bleu", &bleu), ("chrf", &chrf)] {
        let case = fixture["sentence"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["nrefs"] == 2
                    && c["lowercase"] == false
                    && c.get("whitespace").is_none_or(|w| w == false)
                    && c.get("word_order").is_none_or(|w| w == 0)
                    && c.get("tokenize").is_none_or(|t| t == "13a")
                    && c.get("smooth").is_none_or(|t| t == "exp")
            })
            .unwrap();
        let args = vec![
            "eval",
            metric,
            "--hyp",
            &hyp,
            "--ref",
            &r1,
            &r2,
            "--sentence-level",
            "--json",
        ];
        let out = kaiyuan(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let rows = case["rows"].as_array().unwrap();
        assert_eq!(lines.len(), rows.len());
        for (got, want) in lines.iter().zip(rows) {
            let (g, w) = (got["score"].as_f64().unwrap(), want[0].as_f64().unwrap());
            assert!(close(g, w), "{metric} line {}: {g} vs {w}", got["line"]);
            assert_eq!(got["signature"], case["signature"]);
        }
    }
}
