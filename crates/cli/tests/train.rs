//! `kaiyuan train` as a process: a crash injected in the middle of a
//! checkpoint write leaves the previous checkpoint intact and loadable, and
//! `--resume` then finishes the run with the losses of an uninterrupted one.

use std::path::{Path, PathBuf};
use std::process::Command;

const TINY: &[&str] = &[
    "hidden_size=32",
    "num_layers=2",
    "num_heads=4",
    "num_kv_heads=2",
    "intermediate_size=64",
    "max_position_embeddings=64",
    "vocab_size=300",
    "documents=200",
    "validation_documents=10",
    "seq_len=16",
    "batch_size=4",
    "max_steps=4",
    "save_every=2",
    "keep_last=3",
    "eval_every=0",
];

fn out_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn train(out: &Path, extra: &[&str], crash_at: Option<u64>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kaiyuan"));
    cmd.arg("train").arg("--out").arg(out);
    for s in TINY {
        cmd.args(["--set", s]);
    }
    cmd.args(extra);
    match crash_at {
        Some(step) => cmd.env("KAIYUAN_CRASH_IN_CHECKPOINT", step.to_string()),
        None => cmd.env_remove("KAIYUAN_CRASH_IN_CHECKPOINT"),
    };
    cmd.output().unwrap()
}

fn losses(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("loss").and_then(|l| l.as_f64()))
        .map(f64::to_bits)
        .collect()
}

#[test]
fn a_crash_mid_checkpoint_keeps_the_previous_one_and_resume_finishes_identically() {
    let clean = out_dir("train-clean");
    let run = train(&clean, &[], None);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let crashed = out_dir("train-crash");
    let run = train(&crashed, &[], Some(4));
    assert!(!run.status.success(), "the injected crash did not happen");
    assert!(String::from_utf8_lossy(&run.stderr).contains("aborting in the middle of writing"));
    assert!(
        crashed.join("checkpoint-4.tmp").is_dir(),
        "the partial write is left aside"
    );
    assert!(!crashed.join("checkpoint-4").exists());
    // The previous checkpoint is complete and loads.
    let previous = kaiyuan_train::checkpoint::load(&crashed.join("checkpoint-2")).unwrap();
    assert_eq!(previous.state.step, 2);
    let files = kaiyuan_models::ModelFiles::open(crashed.join("checkpoint-2")).unwrap();
    assert_eq!(files.config.num_layers, 2);

    let resumed = Command::new(env!("CARGO_BIN_EXE_kaiyuan"))
        .arg("train")
        .arg("--resume")
        .arg(&crashed)
        .arg("--out")
        .arg(&crashed)
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(crashed.join("checkpoint-4/trainer_state.json").is_file());
    assert_eq!(losses(&crashed), losses(&clean));
}

#[test]
fn unknown_keys_are_refused_before_training() {
    let out = out_dir("train-unknown");
    let run = train(&out, &["--set", "learning_rate=0.1"], None);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("learning_rate"), "{stderr}");
    assert!(!out.join("metrics.jsonl").exists());
}
