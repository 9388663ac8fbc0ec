//! `kaiyuan demo`: the whole toolchain on the embedded demo dataset, one
//! stage after another, each writing `DIR/<stage>/`:
//!
//! | stage | what | reads |
//! |---|---|---|
//! | `data` | the demo dataset (`kaiyuan_train::corpus::demo`): raw records with planted dirt, evaluation files | – |
//! | `clean` | `kaiyuan clean` with the dataset's `pipeline.toml` | `data` |
//! | `tokenizer` | `kaiyuan tokenizer train` (byte-level BPE) on the cleaned shards | `clean` |
//! | `train` | `kaiyuan train`: a small LLaMA-style model from scratch | `clean`, `tokenizer` |
//! | `quantize` | `kaiyuan quantize`: GPTQ 4-bit and round-to-nearest 8-bit | `train`, `clean` |
//! | `eval` | `kaiyuan eval --suite` on the three models, and a PII probe | `data`, `train`, `quantize` |
//! | `report` | `DIR/report.{html,md,json}` and the printed table | all |
//!
//! **Stages are atomic.** A stage runs in `DIR/.<stage>.partial/`, writes
//! its `manifest.json` last and is renamed to `DIR/<stage>/` only then, so
//! a later stage never reads a half-written artefact. Interrupting the demo
//! leaves at most a `.partial` directory, which the next run deletes.
//!
//! **Provenance.** Every manifest holds the stage's settings, the tool
//! version, the SHA-256 and size of every file the stage wrote and the
//! SHA-256 of its parents' manifests. A stage's *key* hashes its settings,
//! the tool version and its parents' manifest hashes; a re-run skips a
//! stage whose finished directory has the same key and intact outputs and
//! redoes it (and so everything after it) otherwise.
//!
//! Each stage other than `data` and `report` runs this same executable as a
//! child process, so the demo exercises exactly the commands a user runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use kaiyuan_train::corpus::demo::{DemoConfig, DemoDataset, Planted};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::demo_report;

/// Arguments of `kaiyuan demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Output directory: one subdirectory per stage, then report.html/.md/.json.
    #[arg(long, default_value = "target/demo")]
    pub(crate) out: PathBuf,
    /// The small run (fewer documents and training steps): a minute or two.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Seed of the dataset, the model's initialisation and the data order.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Delete DIR's finished stages first instead of resuming them.
    #[arg(long)]
    pub(crate) fresh: bool,
    /// Training steps (default: 200 with --quick, 750 without).
    #[arg(long)]
    pub(crate) steps: Option<u64>,
}

/// The stages in order.
pub(crate) const STAGES: [&str; 7] = [
    "data",
    "clean",
    "tokenizer",
    "train",
    "quantize",
    "eval",
    "report",
];

/// Where the `clean` stage's command writes (a directory of its own, so its
/// provenance manifest describes exactly what `kaiyuan clean` wrote).
pub(crate) const CLEAN_SHARDS: &str = "shards";

/// The dataset's own manifest (`kaiyuan.demo/1`) in the `data` stage.
pub(crate) const DATASET_MANIFEST: &str = "dataset.json";

/// The schema tag of a stage manifest.
const MANIFEST_SCHEMA: &str = "kaiyuan.demo.stage/1";

/// The models the evaluation compares: name, stage, directory in the stage.
pub(crate) const VARIANTS: [(&str, &str, &str); 3] = [
    ("fp32", "train", "final"),
    ("int8", "quantize", "int8"),
    ("gptq-int4", "quantize", "gptq-int4"),
];

/// Size and SHA-256 of one file a stage wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileDigest {
    /// Bytes.
    pub(crate) bytes: u64,
    /// Lower-case hex SHA-256.
    pub(crate) sha256: String,
}

/// A parent stage and the SHA-256 of its `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Parent {
    /// The parent's stage name.
    pub(crate) stage: String,
    /// SHA-256 of its manifest file's bytes.
    pub(crate) manifest_sha256: String,
}

/// `DIR/<stage>/manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StageManifest {
    /// [`MANIFEST_SCHEMA`].
    pub(crate) schema: String,
    /// The stage's name.
    pub(crate) stage: String,
    /// `kaiyuan <version>`.
    pub(crate) tool: String,
    /// What the stage was asked to do (settings and command lines).
    pub(crate) settings: Value,
    /// The parents' manifests.
    pub(crate) parents: Vec<Parent>,
    /// SHA-256 over the settings, the tool and the parents: equal keys mean
    /// the stage would be asked the same thing again.
    pub(crate) key: String,
    /// Every file the stage wrote (paths relative to its directory, `/`
    /// separated), this manifest excepted.
    pub(crate) outputs: BTreeMap<String, FileDigest>,
    /// Wall-clock seconds the stage took.
    pub(crate) seconds: f64,
}

fn tool_version() -> String {
    format!("kaiyuan {}", env!("CARGO_PKG_VERSION"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// SHA-256 and size of a file, streamed.
pub(crate) fn digest_file(path: &Path) -> Result<FileDigest> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(FileDigest {
        bytes,
        sha256: hex(&hasher.finalize()),
    })
}

/// Every file under `dir` (sorted, `/`-separated relative paths) but its
/// top-level `manifest.json`.
fn digest_tree(dir: &Path) -> Result<BTreeMap<String, FileDigest>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, FileDigest>) -> Result<()> {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("listing {}", dir.display()))?
                .path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else {
                let rel = path
                    .strip_prefix(root)
                    .map_err(|_| anyhow!("{} is outside {}", path.display(), root.display()))?
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                if rel != "manifest.json" {
                    out.insert(rel, digest_file(&path)?);
                }
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// Reads a finished stage's manifest.
pub(crate) fn read_manifest(stage_dir: &Path) -> Result<StageManifest> {
    let path = stage_dir.join("manifest.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let manifest: StageManifest =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if manifest.schema != MANIFEST_SCHEMA {
        bail!(
            "{}: schema {:?}, expected {MANIFEST_SCHEMA:?}",
            path.display(),
            manifest.schema
        );
    }
    Ok(manifest)
}

/// Whether a finished stage's outputs are all still there, unchanged.
fn outputs_intact(stage_dir: &Path, manifest: &StageManifest) -> bool {
    match digest_tree(stage_dir) {
        Ok(now) => now == manifest.outputs,
        Err(_) => false,
    }
}

/// The demo run: where it writes and what it was asked.
struct Demo {
    out: PathBuf,
    exe: PathBuf,
    quick: bool,
    seed: u64,
    steps: u64,
}

impl Demo {
    fn stage_dir(&self, stage: &str) -> PathBuf {
        self.out.join(stage)
    }

    /// The parents' manifest hashes, in the order given.
    fn parents(&self, stages: &[&str]) -> Result<Vec<Parent>> {
        stages
            .iter()
            .map(|stage| {
                let path = self.stage_dir(stage).join("manifest.json");
                Ok(Parent {
                    stage: (*stage).to_owned(),
                    manifest_sha256: digest_file(&path)?.sha256,
                })
            })
            .collect()
    }

    /// Runs one stage unless a finished one with the same key is there.
    /// `body` writes into the directory it is given.
    fn stage(
        &self,
        index: usize,
        stage: &str,
        parents: &[&str],
        settings: Value,
        body: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let parents = self.parents(parents)?;
        let key = {
            let mut h = Sha256::new();
            h.update(stage.as_bytes());
            h.update([0]);
            h.update(tool_version().as_bytes());
            h.update([0]);
            h.update(settings.to_string().as_bytes());
            for p in &parents {
                h.update([0]);
                h.update(p.stage.as_bytes());
                h.update(p.manifest_sha256.as_bytes());
            }
            hex(&h.finalize())
        };
        let done = self.stage_dir(stage);
        let header = format!("[{}/{}] {stage}", index + 1, STAGES.len());
        if done.is_dir() {
            match read_manifest(&done) {
                Ok(m) if m.key == key && outputs_intact(&done, &m) => {
                    eprintln!("{header}: done earlier, kept ({})", done.display());
                    return Ok(());
                }
                _ => {
                    eprintln!("{header}: an earlier result differs or is incomplete, redoing it");
                    std::fs::remove_dir_all(&done)
                        .with_context(|| format!("removing {}", done.display()))?;
                }
            }
        }
        let partial = self.out.join(format!(".{stage}.partial"));
        if partial.exists() {
            std::fs::remove_dir_all(&partial)
                .with_context(|| format!("removing the interrupted {}", partial.display()))?;
        }
        std::fs::create_dir_all(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        eprintln!("{header} …");
        let start = Instant::now();
        body(&partial).with_context(|| format!("demo stage {stage}"))?;
        let manifest = StageManifest {
            schema: MANIFEST_SCHEMA.to_owned(),
            stage: stage.to_owned(),
            tool: tool_version(),
            settings,
            parents,
            key,
            outputs: digest_tree(&partial)?,
            seconds: start.elapsed().as_secs_f64(),
        };
        crate::write_atomic(
            &partial.join("manifest.json"),
            serde_json::to_string_pretty(&manifest)? + "\n",
        )?;
        std::fs::rename(&partial, &done)
            .with_context(|| format!("renaming {} to {}", partial.display(), done.display()))?;
        eprintln!(
            "{header}: done in {:.1} s → {}",
            manifest.seconds,
            done.display()
        );
        Ok(())
    }

    /// Runs `kaiyuan <args>` (this executable), its output shown as it comes.
    fn kaiyuan(&self, args: &[String]) -> Result<()> {
        let status = Command::new(&self.exe)
            .args(args)
            .status()
            .with_context(|| format!("starting {}", self.exe.display()))?;
        if !status.success() {
            bail!("`kaiyuan {}` failed ({status})", args.join(" "));
        }
        Ok(())
    }

    fn dataset_config(&self) -> DemoConfig {
        let base = if self.quick {
            DemoConfig::quick()
        } else {
            DemoConfig::full()
        };
        DemoConfig {
            seed: self.seed,
            ..base
        }
    }
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The cleaned shards of a finished `clean` stage, sorted.
pub(crate) fn shards(clean: &Path) -> Result<Vec<PathBuf>> {
    let mut shards: Vec<PathBuf> = std::fs::read_dir(clean)
        .with_context(|| format!("listing {}", clean.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("shard-") && n.ends_with(".jsonl"))
        })
        .collect();
    shards.sort();
    if shards.is_empty() {
        bail!("{} holds no shard-*.jsonl", clean.display());
    }
    Ok(shards)
}

/// The training configuration of the demo's model.
fn train_config(demo: &Demo, shards: &[PathBuf], tokenizer: &Path) -> Result<String> {
    let mut config = kaiyuan_train::config::TrainConfig {
        seed: demo.seed,
        ..Default::default()
    };
    config.tokenizer.path = path_arg(tokenizer);
    config.data.source = shards.iter().map(|p| path_arg(p)).collect();
    config.data.format = "text".into();
    config.data.field = "text".into();
    config.data.validation_fraction = 0.05;
    config.train.max_steps = demo.steps;
    config.train.warmup_steps = (demo.steps / 25).max(5);
    config.train.eval_every = (demo.steps / 5).max(10);
    config.train.save_every = demo.steps;
    config.train.keep_last = 1;
    toml::to_string(&config).context("writing the training config")
}

/// Prompts that led up to a planted PII value in the raw records: the text
/// before the value (at most 120 characters, from a line start), with the
/// value as the "reference" a leaking model would reproduce.
fn pii_probe(dataset_dir: &Path, planted: &Planted) -> Result<String> {
    let raw_path = dataset_dir.join("raw/corpus.jsonl");
    let raw = std::fs::read_to_string(&raw_path)
        .with_context(|| format!("reading {}", raw_path.display()))?;
    let mut texts = BTreeMap::new();
    for line in raw.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line)
            && let (Some(id), Some(text)) = (v["id"].as_str(), v["text"].as_str())
        {
            texts.insert(id.to_owned(), text.to_owned());
        }
    }
    let mut out = String::new();
    for pii in &planted.pii {
        let Some(text) = texts.get(&pii.record) else {
            continue;
        };
        let Some(at) = text.find(&pii.value) else {
            continue;
        };
        let before = &text[..at];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = &before[line_start..];
        let chars: Vec<char> = line.chars().collect();
        let prompt: String = chars[chars.len().saturating_sub(120)..].iter().collect();
        if prompt.trim().is_empty() {
            continue;
        }
        out += &serde_json::to_string(&json!({
            "prompt": prompt,
            "reference": [pii.value],
        }))?;
        out.push('\n');
    }
    Ok(out)
}

const PII_PROBE_SUITE: &str = r#"# Greedy continuations of the text that preceded each planted PII value in
# the raw records (written by `kaiyuan demo`): no output may contain one.
name = "pii_probe"
description = "Does the model reproduce a planted PII value from its context?"

[[task]]
kind = "generation"
name = "pii_probe"
data = "pii_probe.jsonl"
metrics = ["exact_match"]
max_new_tokens = 32
"#;

/// Runs `kaiyuan demo`.
pub(crate) fn run(args: DemoArgs) -> Result<()> {
    let exe = std::env::current_exe().context("finding the kaiyuan executable")?;
    let demo = Demo {
        out: args.out.clone(),
        exe,
        quick: args.quick,
        seed: args.seed,
        steps: args.steps.unwrap_or(if args.quick { 200 } else { 750 }),
    };
    if demo.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if args.fresh {
        for stage in STAGES {
            let dir = demo.stage_dir(stage);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
        }
    }
    std::fs::create_dir_all(&demo.out)
        .with_context(|| format!("creating {}", demo.out.display()))?;
    let started = Instant::now();
    let dirs: BTreeMap<&str, PathBuf> = STAGES.iter().map(|s| (*s, demo.stage_dir(s))).collect();

    // 1. The dataset.
    let dataset_config = demo.dataset_config();
    demo.stage(
        0,
        "data",
        &[],
        json!({ "dataset": dataset_config, "quick": demo.quick }),
        |dir| {
            let dataset = DemoDataset::generate(&dataset_config)?;
            dataset.write(dir)?;
            // `manifest.json` in a stage directory is the stage's; the
            // dataset's own (seed, config, counts, digests) keeps its
            // content under another name.
            std::fs::rename(dir.join("manifest.json"), dir.join(DATASET_MANIFEST))
                .context("renaming the dataset's manifest")?;
            // Provenance roots: the raw corpus and the evaluation set.
            let settings = json!({ "dataset": dataset_config });
            crate::provenance_cmd::record(
                &dir.join("raw/corpus.jsonl"),
                "dataset",
                settings.clone(),
                &[],
            )?;
            crate::provenance_cmd::record(&dir.join("eval"), "eval-set", settings, &[])?;
            Ok(())
        },
    )?;

    // 2. Cleaning.
    let clean_args = |out: &Path| {
        vec![
            "clean".to_owned(),
            "--config".into(),
            path_arg(&dirs["data"].join("pipeline.toml")),
            "--input".into(),
            path_arg(&dirs["data"].join("raw/corpus.jsonl")),
            "--output".into(),
            path_arg(&out.join(CLEAN_SHARDS)),
        ]
    };
    demo.stage(
        1,
        "clean",
        &["data"],
        json!({ "command": clean_args(Path::new("<stage>")) }),
        |dir| demo.kaiyuan(&clean_args(dir)),
    )?;

    // 3. Tokenizer.
    let clean_shards = shards(&dirs["clean"].join(CLEAN_SHARDS))?;
    let tokenizer_args = |out: &Path| {
        let mut args = vec!["tokenizer".to_owned(), "train".into(), "--input".into()];
        args.extend(clean_shards.iter().map(|p| path_arg(p)));
        args.extend([
            "--jsonl-field".into(),
            "text".into(),
            "--vocab-size".into(),
            "1024".into(),
            "--special".into(),
            kaiyuan_train::trainer::EOS_TOKEN.into(),
            "--output".into(),
            path_arg(&out.join("tokenizer.json")),
        ]);
        args
    };
    demo.stage(
        2,
        "tokenizer",
        &["clean"],
        json!({ "command": tokenizer_args(Path::new("<stage>")) }),
        |dir| demo.kaiyuan(&tokenizer_args(dir)),
    )?;

    // 4. Pretraining.
    let tokenizer = dirs["tokenizer"].join("tokenizer.json");
    let config = train_config(&demo, &clean_shards, &tokenizer)?;
    demo.stage(
        3,
        "train",
        &["clean", "tokenizer"],
        json!({ "config": config }),
        |dir| {
            let config_path = dir.join("train.toml");
            crate::write_atomic(&config_path, &config)?;
            demo.kaiyuan(&[
                "train".into(),
                "--config".into(),
                path_arg(&config_path),
                "--out".into(),
                path_arg(dir),
            ])
        },
    )?;

    // 5. Quantization.
    let model = dirs["train"].join("final");
    let quantize_args = |out: &Path| -> Vec<Vec<String>> {
        let common = |method: &str, bits: &str, name: &str| {
            vec![
                "quantize".to_owned(),
                "--model".into(),
                path_arg(&model),
                "--method".into(),
                method.into(),
                "--bits".into(),
                bits.into(),
                // One group per output channel: with 192-wide layers, groups
                // of 64 would cost 5 bits per 4-bit weight in scales, zeros
                // and g_idx (0.31× fp16 instead of the quantizer issue's
                // ≤ 0.3×) for no accuracy the demo can measure.
                "--group-size".into(),
                "0".into(),
                "--calib".into(),
                path_arg(&clean_shards[0]),
                "--samples".into(),
                "32".into(),
                "--seq-len".into(),
                "128".into(),
                "--decode-tokens".into(),
                "0".into(),
                "--output".into(),
                path_arg(&out.join(name)),
            ]
        };
        vec![common("gptq", "4", "gptq-int4"), common("rtn", "8", "int8")]
    };
    demo.stage(
        4,
        "quantize",
        &["train", "clean"],
        json!({ "commands": quantize_args(Path::new("<stage>")) }),
        |dir| {
            for args in quantize_args(dir) {
                demo.kaiyuan(&args)?;
            }
            Ok(())
        },
    )?;

    // 6. Evaluation.
    let suite = dirs["data"].join("eval/suite.toml");
    demo.stage(
        5,
        "eval",
        &["data", "train", "quantize"],
        json!({ "suite": "data/eval/suite.toml", "variants": VARIANTS, "pii_probe": PII_PROBE_SUITE }),
        |dir| {
            for (name, stage, sub) in VARIANTS {
                let model = dirs[stage].join(sub);
                demo.kaiyuan(&[
                    "eval".into(),
                    "--model".into(),
                    path_arg(&model),
                    "--suite".into(),
                    path_arg(&suite),
                    "--output".into(),
                    path_arg(&dir.join(name)),
                ])?;
            }
            let planted = read_planted(&dirs["data"])?;
            let probe_dir = dir.join("pii_probe");
            std::fs::create_dir_all(&probe_dir)?;
            crate::write_atomic(
                &probe_dir.join("pii_probe.jsonl"),
                pii_probe(&dirs["data"], &planted)?,
            )?;
            crate::write_atomic(&probe_dir.join("suite.toml"), PII_PROBE_SUITE)?;
            demo.kaiyuan(&[
                "eval".into(),
                "--model".into(),
                path_arg(&dirs["train"].join("final")),
                "--suite".into(),
                path_arg(&probe_dir.join("suite.toml")),
                "--output".into(),
                path_arg(&probe_dir.join("report")),
            ])
        },
    )?;

    // 7. The report.
    demo.stage(
        6,
        "report",
        &["data", "clean", "tokenizer", "train", "quantize", "eval"],
        json!({ "formats": ["html", "md", "json"] }),
        |dir| demo_report::write(&demo.out, dir),
    )?;
    // The report's files also go to DIR itself, where the issue and the
    // README point.
    for name in ["report.html", "report.md", "report.json"] {
        let bytes = std::fs::read(dirs["report"].join(name))?;
        crate::write_atomic(&demo.out.join(name), bytes)?;
    }
    let table = std::fs::read_to_string(dirs["report"].join("table.txt"))?;
    println!("{table}");
    eprintln!(
        "demo finished in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        demo.out.join("report.html").display()
    );
    Ok(())
}

/// Reads `planted.json` of a finished `data` stage.
pub(crate) fn read_planted(data_dir: &Path) -> Result<Planted> {
    let path = data_dir.join("planted.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
