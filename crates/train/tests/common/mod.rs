//! Helpers shared by the training tests: fixture paths, fresh output
//! directories and small configs built from `--set`-style lines.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use kaiyuan_train::config::TrainConfig;
use kaiyuan_train::trainer::{self, Report};

/// The repository's `fixtures/`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// An empty directory under the test target's temporary folder.
/// (`KAIYUAN_TEST_TMPDIR` instead, where set: a test binary run on
/// another machine, as the GPU check does).
pub fn out_dir(name: &str) -> PathBuf {
    let root = std::env::var_os("KAIYUAN_TEST_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The defaults overridden by `base` then `extra` (`key=value` lines).
pub fn config(base: &[&str], extra: &[&str]) -> TrainConfig {
    let sets: Vec<String> = base.iter().chain(extra).map(|s| s.to_string()).collect();
    TrainConfig::parse("test", "", &sets).unwrap()
}

/// A quiet training run that must succeed.
pub fn train(config: &TrainConfig, out: &Path, resume: Option<&Path>, sets: &[String]) -> Report {
    trainer::run(config, out, resume, sets, &mut |_| {}).unwrap()
}

/// The losses of a run that stops after `first` (a config with fewer
/// `max_steps`) and is resumed from its checkpoint in `dir` up to
/// `max_steps` steps, joined: what an uninterrupted run must reproduce.
pub fn stopped_and_resumed(first: &TrainConfig, dir: &Path, max_steps: u64) -> Vec<f64> {
    let before = train(first, dir, None, &[]);
    let after = train(first, dir, Some(dir), &[format!("max_steps={max_steps}")]);
    before.losses.iter().chain(&after.losses).copied().collect()
}
