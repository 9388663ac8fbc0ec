//! `kaiyuan eval compare` and `kaiyuan registry` through the binary: exit
//! codes for higher- and lower-is-better metrics with significant and
//! insignificant changes, a promotion refused by the gate, and a crash
//! injected between writing the new `current` link and renaming it into
//! place, after which the previous `current` must be intact.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

fn kaiyuan(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kaiyuan"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the kaiyuan binary runs")
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kaiyuan-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A report with accuracy over `n` questions (`wrong` of them wrong) and a
/// perplexity from per-token nll centred on `nll`, measured on the same
/// task (one task provenance).
fn report(dir: &Path, name: &str, n: usize, wrong: usize, nll: f64) -> PathBuf {
    report_on(dir, name, n, wrong, nll, Some(task("questions-v1", 0)))
}

/// A task provenance: `data` stands for the data's hash, `shots` for the
/// settings.
fn task(data: &str, shots: usize) -> Value {
    json!({
        "settings": {"shots": shots},
        "data": {"data": {"sha256": data, "bytes": 1}},
        "sha256": format!("{data}/{shots}"),
    })
}

fn report_on(
    dir: &Path,
    name: &str,
    n: usize,
    wrong: usize,
    nll: f64,
    provenance: Option<Value>,
) -> PathBuf {
    let acc: Vec<f64> = (0..n).map(|i| if i < wrong { 0.0 } else { 1.0 }).collect();
    let tokens: Vec<f64> = (0..2000)
        .map(|i| nll + ((i * 7919 % 101) as f64 / 50.0 - 1.0))
        .collect();
    let mean_nll = tokens.iter().sum::<f64>() / tokens.len() as f64;
    let mut value = json!({
        "schema": "kaiyuan.eval.mc/1",
        "metrics": {
            "acc": {"value": acc.iter().sum::<f64>() / n as f64, "higher_is_better": true, "aggregate": "mean", "samples": acc},
            "perplexity": {"value": mean_nll.exp(), "higher_is_better": false, "aggregate": "exp_mean", "samples": tokens},
        }
    });
    if let Some(p) = provenance {
        value["provenance"] = p;
    }
    let path = dir.join(name);
    std::fs::write(&path, value.to_string()).unwrap();
    path
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn compare_exit_codes_follow_significance_direction_and_threshold() {
    let dir = scratch("compare");
    let base = report(&dir, "a.json", 1000, 300, 2.0);
    let same = report(&dir, "same.json", 1000, 301, 2.0); // one more wrong: noise
    let worse_acc = report(&dir, "worse_acc.json", 1000, 380, 2.0); // 8 points down
    let worse_ppl = report(&dir, "worse_ppl.json", 1000, 300, 2.1); // +0.1 nats/token
    let better = report(&dir, "better.json", 1000, 250, 1.9);
    let run = |b: &Path, extra: &[&str]| {
        let mut args = vec![
            "eval",
            "compare",
            base.to_str().unwrap(),
            b.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        kaiyuan(&args, &[])
    };
    let out = run(&same, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("no significant change"),
        "{}",
        text(&out)
    );
    let out = run(&worse_acc, &[]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let out = run(&worse_ppl, &["--json"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ppl = json["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "perplexity")
        .unwrap();
    assert_eq!(
        (
            ppl["higher_is_better"].as_bool(),
            ppl["fails_gate"].as_bool()
        ),
        (Some(false), Some(true))
    );
    assert!(ppl["delta"].as_f64().unwrap() > 0.0);
    let out = run(&better, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // Significant, but within a 40% allowance.
    let out = run(&worse_acc, &["--max-regression", "40%"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("worse, within threshold"),
        "{}",
        text(&out)
    );
    // Scores on other questions, or with other settings, are not compared.
    let other_data = report_on(
        &dir,
        "other_data.json",
        1000,
        300,
        2.0,
        Some(task("questions-v2", 0)),
    );
    let out = run(&other_data, &[]);
    assert_ne!(code(&out), 0);
    assert!(
        text(&out).contains("different task data or settings")
            && text(&out).contains("data data differs"),
        "{}",
        text(&out)
    );
    let other_shots = report_on(
        &dir,
        "other_shots.json",
        1000,
        300,
        2.0,
        Some(task("questions-v1", 5)),
    );
    let out = run(&other_shots, &["--unverified"]);
    assert_ne!(code(&out), 0, "--unverified never compares different tasks");
    assert!(
        text(&out).contains("setting `shots`: 0 vs 5"),
        "{}",
        text(&out)
    );
    // Without provenance: refused, or compared with a warning when asked.
    let bare = report_on(&dir, "bare.json", 1000, 301, 2.0, None);
    let out = run(&bare, &[]);
    assert_ne!(code(&out), 0);
    assert!(text(&out).contains("no task provenance"), "{}", text(&out));
    let out = run(&bare, &["--unverified"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("compared unverified"), "{}", text(&out));
    // Bad input: a report without metrics names the file.
    std::fs::write(dir.join("bad.json"), "{\"schema\": \"x\"}").unwrap();
    let out = run(&dir.join("bad.json"), &[]);
    assert_ne!(code(&out), 0);
    assert!(
        text(&out).contains("bad.json") && text(&out).contains("metrics"),
        "{}",
        text(&out)
    );
}

#[test]
fn promotion_is_gated_and_a_crash_mid_switch_keeps_the_previous_current() {
    let dir = scratch("registry");
    let root = dir.join("reg");
    let root_arg = root.to_str().unwrap();
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("config.json"), "{}").unwrap();
    let m = model.to_str().unwrap();
    let good = report(&dir, "good.json", 1000, 300, 2.0);
    let bad = report(&dir, "bad.json", 1000, 400, 2.0);
    let current = || std::fs::read_link(root.join("current")).ok();

    let promote = |v: &str, r: &Path, env: &[(&str, &str)]| {
        kaiyuan(
            &[
                "registry",
                "--root",
                root_arg,
                "promote",
                v,
                "--from",
                m,
                "--report",
                r.to_str().unwrap(),
            ],
            env,
        )
    };
    assert_eq!(code(&promote("v1", &good, &[])), 0);
    let out = promote("v2", &good, &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(current(), Some(PathBuf::from("versions/v2")));
    // A regressed candidate is refused; current stays.
    let out = promote("v3", &bad, &[]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("refused"), "{}", text(&out));
    assert_eq!(current(), Some(PathBuf::from("versions/v2")));
    // A crash between writing current.next and the rename.
    let out = promote(
        "v4",
        &good,
        &[("KAIYUAN_REGISTRY_CRASH_BEFORE_RENAME", "1")],
    );
    assert!(
        !out.status.success(),
        "the injected crash must kill the process"
    );
    assert_eq!(
        current(),
        Some(PathBuf::from("versions/v2")),
        "current must survive the crash"
    );
    assert!(
        root.join("current.next").symlink_metadata().is_ok(),
        "the crash left its half-done link"
    );
    assert!(root.join("versions/v2/config.json").is_file());
    // The next switch recovers, and rollback returns to v2.
    let out = kaiyuan(&["registry", "--root", root_arg, "promote", "v4"], &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(current(), Some(PathBuf::from("versions/v4")));
    let out = kaiyuan(&["registry", "--root", root_arg, "rollback"], &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(current(), Some(PathBuf::from("versions/v2")));
    let out = kaiyuan(&["registry", "--root", root_arg, "list"], &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "  v1\n* v2\n  v3\n  v4\n"
    );
    // Versions are never overwritten.
    let out = promote("v1", &good, &[]);
    assert_ne!(code(&out), 0);
    assert!(text(&out).contains("never overwritten"), "{}", text(&out));
}
