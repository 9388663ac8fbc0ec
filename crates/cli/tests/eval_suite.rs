//! `kaiyuan eval --model --suite --output` end to end on
//! `fixtures/eval/suite_tiny.toml` (every task kind on the tiny model of
//! `fixtures/eval/mc/model`): the three reports exist, the JSON has its
//! schema and every task, the HTML needs nothing from the network, and the
//! report compares cleanly with itself. A suite with a misspelt key is
//! refused with the file and key named.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn a_suite_runs_every_task_kind_into_three_reports() {
    let out_dir = std::env::temp_dir().join(format!("kaiyuan-suite-{}", std::process::id()));
    let model = root().join("fixtures/eval/mc/model");
    let suite = root().join("fixtures/eval/suite_tiny.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_kaiyuan"))
        .args([
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--suite",
            suite.to_str().unwrap(),
        ])
        .args(["--output", out_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["schema"], "kaiyuan.eval.report/1");
    let kinds: Vec<&str> = json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["perplexity", "mc", "generation", "speed"]);
    assert_eq!(
        json["metrics"]["mmlu_ceval/acc"]["samples"]
            .as_array()
            .map(Vec::len),
        Some(20)
    );
    assert!(json["metrics"]["continue/bleu"]["value"].is_number());
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert!(html.contains("<svg") && !html.contains("http://") && !html.contains("https://"));
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("| mmlu_ceval | mc | acc |"), "{md}");
    let report = out_dir.join("report.json");
    let same = Command::new(env!("CARGO_BIN_EXE_kaiyuan"))
        .args([
            "eval",
            "compare",
            report.to_str().unwrap(),
            report.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        same.status.success(),
        "{}",
        String::from_utf8_lossy(&same.stdout)
    );
    std::fs::remove_dir_all(&out_dir).ok();
}

#[test]
fn a_misspelt_suite_key_is_named() {
    let dir = std::env::temp_dir().join(format!("kaiyuan-suite-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let suite = dir.join("bad.toml");
    std::fs::write(
        &suite,
        "name = 'x'\n[[task]]\nkind = 'mc'\ndata = 'd'\nshots = 1\nlimt = 5\n",
    )
    .unwrap();
    let model = root().join("fixtures/eval/mc/model");
    let out = Command::new(env!("CARGO_BIN_EXE_kaiyuan"))
        .args([
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--suite",
            suite.to_str().unwrap(),
        ])
        .args(["--output", dir.join("out").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("bad.toml") && err.contains("limt"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `kaiyuan quantize --eval-task` reports the multiple-choice accuracy of
/// the reference and the quantized model on the same questions.
#[test]
fn quantize_reports_the_multiple_choice_delta() {
    let dir = std::env::temp_dir().join(format!("kaiyuan-quant-mc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = dir.join("q8");
    let out = Command::new(env!("CARGO_BIN_EXE_kaiyuan"))
        .args([
            "quantize",
            "--model",
            root().join("fixtures/eval/mc/model").to_str().unwrap(),
        ])
        .args([
            "--method",
            "rtn",
            "--bits",
            "8",
            "--group-size",
            "32",
            "--decode-tokens",
            "0",
        ])
        .args([
            "--eval-task",
            root().join("fixtures/eval/mc/data").to_str().unwrap(),
            "--eval-shots",
            "1",
        ])
        .args(["--output", output.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("q8.report.json")).unwrap())
            .unwrap();
    let mc = &report["multiple_choice"];
    assert_eq!(mc["questions"], 20);
    let (before, after) = (
        mc["acc_reference"].as_f64().unwrap(),
        mc["acc_quantized"].as_f64().unwrap(),
    );
    assert!((mc["delta_points"].as_f64().unwrap() - 100.0 * (after - before)).abs() < 1e-9);
    assert!(
        mc["delta_points_ci95"]
            .as_array()
            .is_some_and(|c| c.len() == 2)
    );
    let md = std::fs::read_to_string(dir.join("q8.report.md")).unwrap();
    assert!(
        md.contains("Multiple choice (20 questions, 1-shot)"),
        "{md}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
