//! `kaiyuan eval --model --suite --output` end to end on
//! `fixtures/eval/suite_tiny.toml` (every task kind on the tiny model of
//! `fixtures/eval/mc/model`): the three reports exist, the JSON has its
//! schema and every task, the HTML needs nothing from the network, and the
//! report compares cleanly with itself. A suite with a misspelt key is
//! refused with the file and key named.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the binary with `args` (paths as strings).
fn kaiyuan<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kaiyuan"))
        .args(args)
        .output()
        .expect("the kaiyuan binary runs")
}

/// Runs the binary and insists on success.
fn kaiyuan_ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    let out = kaiyuan(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_suite_runs_every_task_kind_into_three_reports() {
    let out_dir = std::env::temp_dir().join(format!("kaiyuan-suite-{}", std::process::id()));
    let model = root().join("fixtures/eval/mc/model");
    let suite = root().join("fixtures/eval/suite_tiny.toml");
    kaiyuan_ok(&[
        Path::new("eval"),
        Path::new("--model"),
        &model,
        Path::new("--suite"),
        &suite,
        Path::new("--output"),
        &out_dir,
    ]);
    let json = read_json(&out_dir.join("report.json"));
    assert_eq!(json["schema"], "kaiyuan.eval.report/1");
    let kinds: Vec<&str> = json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["perplexity", "mc", "generation", "speed"]);
    let samples = json["metrics"]["mmlu_ceval/acc"]["samples"].as_array();
    assert_eq!(samples.map(Vec::len), Some(20));
    assert!(json["metrics"]["continue/bleu"]["value"].is_number());
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert!(html.contains("<svg") && !html.contains("http://") && !html.contains("https://"));
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("| mmlu_ceval | mc | acc |"), "{md}");
    let report = out_dir.join("report.json");
    kaiyuan_ok(&[Path::new("eval"), Path::new("compare"), &report, &report]);

    // Provenance: the report names each task's data by hash, the output
    // directory has its manifest, and scores of a task run with other
    // settings are not compared.
    let data = json["task_provenance"]["mmlu_ceval"]["data"]["data"]["sha256"]
        .as_str()
        .unwrap();
    assert_eq!(data.len(), 64);
    assert_eq!(
        json["task_provenance"]["continue"]["settings"]["max_new_tokens"],
        12
    );
    let manifest = read_json(&out_dir.join("provenance.json"));
    assert_eq!(manifest["kind"], "eval-report");
    let roles: Vec<&str> = manifest["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "model",
            "suite",
            "botchan_zh.data",
            "mmlu_ceval.data",
            "continue.data"
        ]
    );
    let fixtures = root().join("fixtures/eval");
    let changed = std::fs::read_to_string(&suite)
        .unwrap()
        .replace("data = \"", &format!("data = \"{}/", fixtures.display()))
        .replace("max_new_tokens = 12", "max_new_tokens = 8");
    let changed_suite = out_dir.join("changed.toml");
    std::fs::write(&changed_suite, changed).unwrap();
    let other_dir = out_dir.join("changed");
    kaiyuan_ok(&[
        Path::new("eval"),
        Path::new("--model"),
        &model,
        Path::new("--suite"),
        &changed_suite,
        Path::new("--output"),
        &other_dir,
    ]);
    let other = other_dir.join("report.json");
    let refused = kaiyuan(&[Path::new("eval"), Path::new("compare"), &report, &other]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("task `continue`")
            && message.contains("setting `max_new_tokens`: 12 vs 8"),
        "{message}"
    );
    std::fs::remove_dir_all(&out_dir).ok();
}

#[test]
fn a_misspelt_suite_key_is_named() {
    let dir = std::env::temp_dir().join(format!("kaiyuan-suite-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let suite = dir.join("bad.toml");
    let text = "name = 'x'\n[[task]]\nkind = 'mc'\ndata = 'd'\nshots = 1\nlimt = 5\n";
    std::fs::write(&suite, text).unwrap();
    let model = root().join("fixtures/eval/mc/model");
    let out = kaiyuan(&[
        Path::new("eval"),
        Path::new("--model"),
        &model,
        Path::new("--suite"),
        &suite,
        Path::new("--output"),
        &dir.join("out"),
    ]);
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
    let model = root().join("fixtures/eval/mc/model");
    let task = root().join("fixtures/eval/mc/data");
    let output = dir.join("q8");
    kaiyuan_ok(&[
        Path::new("quantize"),
        Path::new("--model"),
        &model,
        Path::new("--method=rtn"),
        Path::new("--bits=8"),
        Path::new("--group-size=32"),
        Path::new("--decode-tokens=0"),
        Path::new("--eval-task"),
        &task,
        Path::new("--eval-shots=1"),
        Path::new("--output"),
        &output,
    ]);
    let report = read_json(&dir.join("q8.report.json"));
    let mc = &report["multiple_choice"];
    assert_eq!(mc["questions"], 20);
    let before = mc["acc_reference"].as_f64().unwrap();
    let after = mc["acc_quantized"].as_f64().unwrap();
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
