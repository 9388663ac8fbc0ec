//! The pipeline: configuration, the per-document phase (optionally one
//! shard of it), and the merge phase that removes duplicates and writes the
//! outputs.
//!
//! A run is always "per-document phase, then merge". The per-document
//! phase reads every input record, keeps those whose `seq % N == i` (for
//! `--shard i/N`; a plain run is shard 0/1), parses them and runs the
//! per-document stages on worker threads, and writes a *part* under
//! `DIR/parts/part-<i>-of-<N>/`: kept documents, rejects, statistics, and
//! the hashes dedup needs. The merge phase reads all N parts, finds exact
//! and near duplicates over the whole corpus (keeping, in each group, the
//! document that came first in the input), and writes the shards,
//! `rejected.jsonl` and the reports. Because documents are ordered by their
//! input position `seq` and every stage is deterministic, the output is the
//! same for any thread count and for any N.

use crate::decontam::{DecontamConfig, Decontaminator};
use crate::document::{Document, RawPayload, RejectedRecord};
use crate::error::{DataError, Result};
use crate::input::{InputConfig, RawRecord, RecordReader, expand_inputs, parse_record};
use crate::lang::{Language, identify};
use crate::minhash::{MinHashConfig, MinHasher, band_hash, estimate_jaccard};
use crate::normalize::{NormalizeConfig, Normalizer};
use crate::output::{AtomicFile, OutputConfig, ShardWriter, write_atomic};
use crate::pii::{PiiConfig, PiiRedactor};
use crate::quality::{
    BadWords, BadWordsConfig, C4Quality, C4QualityConfig, FineWebQuality, FineWebQualityConfig,
    GopherQuality, GopherQualityConfig, GopherRepetition, GopherRepetitionConfig, LengthFilter,
    LengthFilterConfig, StopWords, StopWordsConfig, SymbolFilter, SymbolFilterConfig,
};
use crate::report::{REPORT_SCHEMA, Report, Stats};
use crate::stage::{DocContext, DocumentStage, Outcome, Rejection};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// The pipeline configuration schema name and version.
pub const PIPELINE_SCHEMA: &str = "kaiyuan.data.pipeline/1";
/// The part manifest schema name and version.
pub const PART_SCHEMA: &str = "kaiyuan.data.part/1";

/// A pipeline configuration (the TOML file).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Optional; when present it must be [`PIPELINE_SCHEMA`].
    #[serde(default)]
    pub schema: Option<String>,
    /// How to read input.
    #[serde(default)]
    pub input: InputConfig,
    /// How to write shards.
    #[serde(default)]
    pub output: OutputConfig,
    /// The stages, in order. Per-document stages come first; the dedup
    /// stages (`exact_dedup`, `minhash_dedup`) run in the merge phase.
    #[serde(default)]
    pub stages: Vec<StageConfig>,
    /// A hash of the configuration text, so a merge can check that all
    /// parts were made with the same configuration.
    #[serde(skip)]
    pub fingerprint: u64,
}

/// One stage of the configuration (`[[stages]]` with a `kind`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StageConfig {
    /// Unicode, control characters, whitespace, HTML.
    Normalize(NormalizeConfig),
    /// Language identification and filtering.
    Language(LanguageConfig),
    /// PII desensitisation.
    Pii(PiiConfig),
    /// Gopher quality rules (word counts and lengths, symbols, bullets,
    /// ellipses, alphabetic words, stop words).
    GopherQuality(GopherQualityConfig),
    /// Gopher repetition rules (duplicate lines/paragraphs, top and
    /// duplicated n-grams).
    GopherRepetition(GopherRepetitionConfig),
    /// C4 rules (line filters that edit the text, and document drops).
    C4Quality(C4QualityConfig),
    /// FineWeb line rules.
    FinewebQuality(FineWebQualityConfig),
    /// Length bounds in characters, words or lines.
    Length(LengthFilterConfig),
    /// Symbol, bullet and ellipsis ratios.
    Symbols(SymbolFilterConfig),
    /// Stop-word presence.
    StopWords(StopWordsConfig),
    /// Bad-word lists from files.
    BadWords(BadWordsConfig),
    /// Drop documents sharing n-grams with evaluation files.
    Decontaminate(DecontamConfig),
    /// Exact duplicates of the normalised text (merge phase).
    ExactDedup(ExactDedupConfig),
    /// MinHash + LSH near duplicates (merge phase).
    MinhashDedup(MinHashConfig),
}

impl StageConfig {
    fn is_dedup(&self) -> bool {
        matches!(
            self,
            StageConfig::ExactDedup(_) | StageConfig::MinhashDedup(_)
        )
    }

    fn name(&self) -> &'static str {
        match self {
            StageConfig::Normalize(_) => "normalize",
            StageConfig::Language(_) => "language",
            StageConfig::Pii(_) => "pii",
            StageConfig::GopherQuality(_) => "gopher_quality",
            StageConfig::GopherRepetition(_) => "gopher_repetition",
            StageConfig::C4Quality(_) => "c4_quality",
            StageConfig::FinewebQuality(_) => "fineweb_quality",
            StageConfig::Length(_) => "length",
            StageConfig::Symbols(_) => "symbols",
            StageConfig::StopWords(_) => "stop_words",
            StageConfig::BadWords(_) => "bad_words",
            StageConfig::Decontaminate(_) => "decontaminate",
            StageConfig::ExactDedup(_) => "exact_dedup",
            StageConfig::MinhashDedup(_) => "minhash_dedup",
        }
    }
}

/// Settings of the `language` stage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LanguageConfig {
    /// Languages to keep (`zh`, `en`, `other`); the others are dropped.
    pub keep: Vec<Language>,
    /// Minimum confidence to keep a document.
    pub min_score: f64,
}

impl Default for LanguageConfig {
    fn default() -> Self {
        LanguageConfig {
            keep: vec![Language::Zh, Language::En, Language::Other],
            min_score: 0.0,
        }
    }
}

/// Settings of the `exact_dedup` stage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExactDedupConfig {
    /// Compare texts lowercased with whitespace runs collapsed (default);
    /// `false` compares the exact bytes.
    pub normalize: bool,
}

impl Default for ExactDedupConfig {
    fn default() -> Self {
        ExactDedupConfig { normalize: true }
    }
}

/// The `language` stage.
#[derive(Debug, Clone)]
pub struct LanguageStage {
    config: LanguageConfig,
}

impl LanguageStage {
    /// A stage with `config`.
    pub fn new(config: LanguageConfig) -> Self {
        LanguageStage { config }
    }
}

impl DocumentStage for LanguageStage {
    fn name(&self) -> &'static str {
        "language"
    }

    fn apply(&self, text: &str, ctx: &mut DocContext) -> Outcome {
        let guess = identify(text);
        ctx.language = Some(guess.language);
        ctx.language_score = guess.score;
        ctx.record("language.score", guess.score);
        ctx.count(
            match guess.language {
                Language::Zh => "language.zh",
                Language::En => "language.en",
                Language::Other => "language.other",
            },
            1,
        );
        if !self.config.keep.contains(&guess.language) {
            return Outcome::Drop(Rejection::new(
                "language.not_kept",
                format!("language {} is not in keep", guess.language.code()),
            ));
        }
        if guess.score < self.config.min_score {
            return Outcome::Drop(Rejection::new(
                "language.low_score",
                format!(
                    "{} score {:.3} < min_score {}",
                    guess.language.code(),
                    guess.score,
                    self.config.min_score
                ),
            ));
        }
        Outcome::Keep
    }
}

impl PipelineConfig {
    /// Parses a TOML configuration; `origin` names it in errors.
    ///
    /// ```
    /// use kaiyuan_data::pipeline::PipelineConfig;
    /// let config = PipelineConfig::from_toml(r#"
    /// [[stages]]
    /// kind = "normalize"
    /// form = "nfkc"
    /// [[stages]]
    /// kind = "minhash_dedup"
    /// threshold = 0.7
    /// "#, "inline").unwrap();
    /// assert_eq!(config.stages.len(), 2);
    /// assert!(PipelineConfig::from_toml("[[stages]]\nkind = \"nope\"", "inline").is_err());
    /// ```
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        let mut config: PipelineConfig =
            toml::from_str(text).map_err(|e| DataError::ConfigSyntax {
                path: origin.to_string(),
                message: e.to_string(),
            })?;
        config.fingerprint = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    fn validate(&self) -> Result<()> {
        if let Some(schema) = &self.schema
            && schema != PIPELINE_SCHEMA
        {
            return Err(DataError::config(
                "schema",
                format!("`{schema}` is not `{PIPELINE_SCHEMA}`"),
            ));
        }
        if self.output.shard_bytes == 0 {
            return Err(DataError::config("output.shard_bytes", "must be positive"));
        }
        if self.input.max_record_bytes == 0 {
            return Err(DataError::config(
                "input.max_record_bytes",
                "must be positive",
            ));
        }
        let mut seen_dedup = false;
        for (i, stage) in self.stages.iter().enumerate() {
            if stage.is_dedup() {
                seen_dedup = true;
            } else if seen_dedup {
                return Err(DataError::config(
                    format!("stages[{i}]"),
                    format!(
                        "per-document stage `{}` after a dedup stage: dedup stages run last, over the whole corpus",
                        stage.name()
                    ),
                ));
            }
            if let StageConfig::MinhashDedup(m) = stage {
                m.bands_rows()?;
            }
        }
        Ok(())
    }

    fn minhash(&self) -> Option<&MinHashConfig> {
        self.stages.iter().find_map(|s| {
            if let StageConfig::MinhashDedup(m) = s {
                Some(m)
            } else {
                None
            }
        })
    }

    fn exact(&self) -> Option<&ExactDedupConfig> {
        self.stages.iter().find_map(|s| {
            if let StageConfig::ExactDedup(e) = s {
                Some(e)
            } else {
                None
            }
        })
    }

    /// Builds the per-document stages.
    pub fn build_stages(&self) -> Result<Vec<Box<dyn DocumentStage>>> {
        let mut stages: Vec<Box<dyn DocumentStage>> = Vec::new();
        for stage in &self.stages {
            match stage {
                StageConfig::Normalize(c) => stages.push(Box::new(Normalizer::new(c.clone()))),
                StageConfig::Language(c) => stages.push(Box::new(LanguageStage::new(c.clone()))),
                StageConfig::Pii(c) => stages.push(Box::new(PiiRedactor::new(c)?)),
                StageConfig::GopherQuality(c) => {
                    stages.push(Box::new(GopherQuality::new(c.clone())?))
                }
                StageConfig::GopherRepetition(c) => {
                    stages.push(Box::new(GopherRepetition::new(c.clone())?))
                }
                StageConfig::C4Quality(c) => stages.push(Box::new(C4Quality::new(c.clone())?)),
                StageConfig::FinewebQuality(c) => {
                    stages.push(Box::new(FineWebQuality::new(c.clone())?))
                }
                StageConfig::Length(c) => stages.push(Box::new(LengthFilter::new(c.clone())?)),
                StageConfig::Symbols(c) => stages.push(Box::new(SymbolFilter::new(c.clone())?)),
                StageConfig::StopWords(c) => stages.push(Box::new(StopWords::new(c.clone())?)),
                StageConfig::BadWords(c) => stages.push(Box::new(BadWords::new(c.clone())?)),
                StageConfig::Decontaminate(c) => stages.push(Box::new(Decontaminator::new(c)?)),
                StageConfig::ExactDedup(_) | StageConfig::MinhashDedup(_) => {}
            }
        }
        Ok(stages)
    }
}

/// Which part of the input a run processes: records with `seq % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: usize,
    /// The number of shards.
    pub count: usize,
}

impl Shard {
    /// The whole input.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `i/N`.
    ///
    /// ```
    /// use kaiyuan_data::pipeline::Shard;
    /// assert_eq!(Shard::parse("2/8").unwrap(), Shard { index: 2, count: 8 });
    /// assert!(Shard::parse("8/8").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || DataError::config("--shard", format!("`{text}` is not `i/N` with 0 ≤ i < N"));
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count || count > 99_999 {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    fn dir_name(self) -> String {
        format!("part-{:05}-of-{:05}", self.index, self.count)
    }
}

/// Progress of a run, reported after each batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Records read so far (this shard's).
    pub records: u64,
    /// Input bytes read so far (all shards' records are read).
    pub bytes: u64,
    /// Documents kept by the per-document stages so far.
    pub kept: u64,
}

/// Run options that do not change the output.
pub struct RunOptions<'a> {
    /// Worker threads (`None`: rayon's default, one per core).
    pub threads: Option<usize>,
    /// Memory budget in bytes for the merge phase's hash tables; above it
    /// they are processed in several passes over the spilled part files.
    pub memory_budget: u64,
    /// Called after each batch.
    pub progress: Option<&'a (dyn Fn(Progress) + Sync)>,
    /// Keep `DIR/parts` after a successful merge.
    pub keep_parts: bool,
}

impl Default for RunOptions<'_> {
    fn default() -> Self {
        RunOptions {
            threads: None,
            memory_budget: 256 << 20,
            progress: None,
            keep_parts: false,
        }
    }
}

/// The manifest that marks a part complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartManifest {
    /// Always [`PART_SCHEMA`].
    pub schema: String,
    /// This part's shard index.
    pub index: usize,
    /// The number of shards.
    pub count: usize,
    /// The configuration fingerprint.
    pub config_fingerprint: u64,
    /// The input paths.
    pub inputs: Vec<String>,
    /// Documents kept by the per-document stages.
    pub documents: u64,
    /// Seconds this part took.
    pub seconds: f64,
}

/// Per-document result, computed on a worker thread.
enum DocResult {
    Rejected {
        rejected: RejectedLine,
        trace: Vec<StageTrace>,
        ctx: DocContext,
        input_chars: Option<u64>,
    },
    Kept {
        kept: Box<KeptDoc>,
        trace: Vec<StageTrace>,
        ctx: DocContext,
        input_chars: u64,
    },
}

/// A rejected record serialised on the worker thread: the writer only
/// copies bytes.
struct RejectedLine {
    seq: u64,
    code: String,
    line: Vec<u8>,
}

impl RejectedLine {
    fn new(rejected: RejectedRecord) -> Self {
        let (seq, code) = (rejected.seq, rejected.code.clone());
        let mut line = serde_json::to_vec(&rejected.into_json()).unwrap_or_default();
        line.push(b'\n');
        RejectedLine { seq, code, line }
    }
}

struct StageTrace {
    bytes_in: u64,
    bytes_out: u64,
    modified: bool,
    dropped: bool,
}

struct KeptDoc {
    seq: u64,
    line: Vec<u8>,
    exact_hash: u128,
    text_bytes: u32,
    text_chars: u32,
    signature: Vec<u32>,
}

struct Worker<'a> {
    config: &'a PipelineConfig,
    stages: Vec<Box<dyn DocumentStage>>,
    hasher: Option<MinHasher>,
}

impl Worker<'_> {
    fn process(&self, raw: RawRecord, raw_bytes: u64) -> (DocResult, u64) {
        let parsed = match parse_record(raw, &self.config.input) {
            Ok(parsed) => parsed,
            Err(rejected) => {
                return (
                    DocResult::Rejected {
                        rejected: RejectedLine::new(*rejected),
                        trace: Vec::new(),
                        ctx: DocContext::default(),
                        input_chars: None,
                    },
                    raw_bytes,
                );
            }
        };
        let mut ctx = DocContext::default();
        if parsed.repaired_utf8 {
            ctx.count("input.utf8_repaired", 1);
        }
        let doc: Document = parsed.document;
        let input_chars = doc.text.chars().count() as u64;
        let mut text: std::borrow::Cow<'_, str> = std::borrow::Cow::Borrowed(&doc.text);
        let mut trace = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            let bytes_in = text.len() as u64;
            match stage.apply(&text, &mut ctx) {
                Outcome::Keep => trace.push(StageTrace {
                    bytes_in,
                    bytes_out: bytes_in,
                    modified: false,
                    dropped: false,
                }),
                Outcome::Replace(new) => {
                    trace.push(StageTrace {
                        bytes_in,
                        bytes_out: new.len() as u64,
                        modified: true,
                        dropped: false,
                    });
                    text = std::borrow::Cow::Owned(new);
                }
                Outcome::Drop(rejection) => {
                    trace.push(StageTrace {
                        bytes_in,
                        bytes_out: 0,
                        modified: false,
                        dropped: true,
                    });
                    drop(text);
                    let Document {
                        seq,
                        id,
                        text,
                        fields,
                        source,
                    } = doc;
                    let mut record = fields;
                    let input = &self.config.input;
                    if !record.contains_key(&input.id_field) {
                        record.insert(
                            input.id_field.clone(),
                            serde_json::Value::String(id.clone()),
                        );
                    }
                    record.insert(input.text_field.clone(), serde_json::Value::String(text));
                    let rejected = RejectedLine::new(RejectedRecord {
                        seq,
                        stage: stage.name().to_string(),
                        code: rejection.code.to_string(),
                        reason: rejection.detail,
                        source,
                        id: Some(id),
                        payload: RawPayload::Record(record),
                    });
                    return (
                        DocResult::Rejected {
                            rejected,
                            trace,
                            ctx,
                            input_chars: Some(input_chars),
                        },
                        raw_bytes,
                    );
                }
            }
        }
        let record = doc.to_record(
            &self.config.input.text_field,
            &self.config.input.id_field,
            &text,
        );
        let line = serde_json::to_vec(&record).unwrap_or_default();
        let exact_hash = match self.config.exact() {
            Some(c) if c.normalize => xxhash_rust::xxh3::xxh3_128(dedup_key(&text).as_bytes()),
            _ => xxhash_rust::xxh3::xxh3_128(text.as_bytes()),
        };
        let signature = self
            .hasher
            .as_ref()
            .map(|h| h.signature(&text))
            .unwrap_or_default();
        let kept = KeptDoc {
            seq: doc.seq,
            line,
            exact_hash,
            text_bytes: u32::try_from(text.len()).unwrap_or(u32::MAX),
            text_chars: u32::try_from(text.chars().count()).unwrap_or(u32::MAX),
            signature,
        };
        (
            DocResult::Kept {
                kept: Box::new(kept),
                trace,
                ctx,
                input_chars,
            },
            raw_bytes,
        )
    }
}

/// The text exact dedup compares: lowercased, whitespace runs as one space,
/// trimmed.
pub fn dedup_key(text: &str) -> String {
    if text.is_ascii() {
        let mut out = Vec::with_capacity(text.len());
        for word in text
            .as_bytes()
            .split(u8::is_ascii_whitespace)
            .filter(|w| !w.is_empty())
        {
            if !out.is_empty() {
                out.push(b' ');
            }
            out.extend(word.iter().map(u8::to_ascii_lowercase));
        }
        return String::from_utf8(out).unwrap_or_default();
    }
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        for c in word.chars() {
            out.extend(c.to_lowercase());
        }
    }
    out
}

fn raw_len(raw: &RawRecord) -> u64 {
    match &raw.content {
        crate::input::RawContent::Bytes(b) => b.len() as u64,
        crate::input::RawContent::Problem {
            payload: RawPayload::Raw { total_bytes, .. },
            ..
        } => *total_bytes,
        crate::input::RawContent::Problem { .. } => 0,
    }
}

fn parts_dir(output: &Path) -> PathBuf {
    output.join("parts")
}

struct PartWriters {
    docs: AtomicFile,
    index: AtomicFile,
    signatures: Option<AtomicFile>,
    bands: Vec<AtomicFile>,
    rejected: AtomicFile,
    dir: PathBuf,
}

fn write_to(file: &mut AtomicFile, bytes: &[u8]) -> Result<()> {
    let path = file.path().to_path_buf();
    file.write_all(bytes).map_err(|e| DataError::io(path, e))
}

/// Runs the per-document phase for one shard and writes its part under
/// `output/parts/`.
pub fn run_shard(
    config: &PipelineConfig,
    inputs: &[PathBuf],
    output: &Path,
    shard: Shard,
    options: &RunOptions<'_>,
) -> Result<PartManifest> {
    let started = std::time::Instant::now();
    let files = expand_inputs(inputs)?;
    let dir = parts_dir(output).join(shard.dir_name());
    std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
    let stages = config.build_stages()?;
    let minhash = config.minhash();
    let bands_rows = minhash.map(MinHashConfig::bands_rows).transpose()?;
    let hasher = minhash.map(|m| MinHasher::new(m.num_perm, m.ngram, m.seed));
    let worker = Worker {
        config,
        stages,
        hasher,
    };
    let writers = PartWriters {
        docs: AtomicFile::create(&dir.join("docs.jsonl"))?,
        index: AtomicFile::create(&dir.join("index.bin"))?,
        signatures: match minhash {
            Some(m) if m.verify => Some(AtomicFile::create(&dir.join("signatures.bin"))?),
            _ => None,
        },
        bands: (0..bands_rows.map_or(0, |(b, _)| b))
            .map(|b| AtomicFile::create(&dir.join(format!("band-{b:03}.bin"))))
            .collect::<Result<_>>()?,
        rejected: AtomicFile::create(&dir.join("rejected.jsonl"))?,
        dir: dir.clone(),
    };
    let mut stats = Stats::default();
    stats.stage_mut("input");
    for stage in &worker.stages {
        stats.stage_mut(stage.name());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads.unwrap_or(0))
        .build()
        .map_err(|e| DataError::config("threads", e.to_string()))?;

    let (sender, receiver) = std::sync::mpsc::sync_channel::<(Vec<RawRecord>, u64)>(2);
    let input_config = config.input.clone();
    let reader_files = files.clone();
    let reader_thread = std::thread::spawn(move || {
        let mut reader = RecordReader::new(reader_files, &input_config);
        let mut batch = Vec::new();
        let mut batch_bytes = 0u64;
        let mut last_read = 0u64;
        // `while let` rather than `for`: the loop reads `reader.bytes_read`.
        #[allow(clippy::while_let_on_iterator)]
        while let Some(raw) = reader.next() {
            if raw.seq % shard.count as u64 == shard.index as u64 {
                batch_bytes += raw_len(&raw);
                batch.push(raw);
            }
            if batch.len() >= 2048 || batch_bytes >= 8 << 20 {
                let read = reader.bytes_read - last_read;
                last_read = reader.bytes_read;
                if sender.send((std::mem::take(&mut batch), read)).is_err() {
                    return;
                }
                batch_bytes = 0;
            }
        }
        let read = reader.bytes_read - last_read;
        let _ = sender.send((batch, read));
    });

    let mut progress = Progress::default();
    let rows = bands_rows.map_or(0, |(_, r)| r);
    let stage_names: Vec<&'static str> = worker.stages.iter().map(|s| s.name()).collect();
    // Results are written on their own thread, so the pool never waits for
    // the disk; batches arrive in order, so the output order is fixed.
    let (result_sender, result_receiver) =
        std::sync::mpsc::sync_channel::<Vec<(DocResult, u64)>>(2);
    let write_outcome = std::thread::scope(|scope| {
        let writer_thread = scope.spawn(|| -> Result<(Stats, u64, PartWriters)> {
            let mut stats = stats;
            let mut writers = writers;
            let mut documents = 0u64;
            for results in result_receiver {
                for (result, raw_bytes) in results {
                    stats.input_records += 1;
                    stats.input_bytes += raw_bytes;
                    match result {
                        DocResult::Rejected {
                            rejected,
                            trace,
                            ctx,
                            input_chars,
                        } => {
                            account(
                                &mut stats,
                                &stage_names,
                                &trace,
                                &ctx,
                                rejected.seq,
                                input_chars,
                                raw_bytes,
                            );
                            stats.reject(&rejected.code);
                            write_to(&mut writers.rejected, &rejected.line)?;
                        }
                        DocResult::Kept {
                            kept,
                            trace,
                            ctx,
                            input_chars,
                        } => {
                            account(
                                &mut stats,
                                &stage_names,
                                &trace,
                                &ctx,
                                kept.seq,
                                Some(input_chars),
                                raw_bytes,
                            );
                            documents += 1;
                            let mut line = kept.line;
                            line.push(b'\n');
                            write_to(&mut writers.docs, &line)?;
                            let mut entry = [0u8; INDEX_ENTRY];
                            entry[..8].copy_from_slice(&kept.seq.to_le_bytes());
                            entry[8..24].copy_from_slice(&kept.exact_hash.to_le_bytes());
                            entry[24..28].copy_from_slice(&kept.text_bytes.to_le_bytes());
                            entry[28..32].copy_from_slice(&kept.text_chars.to_le_bytes());
                            write_to(&mut writers.index, &entry)?;
                            if let Some(file) = &mut writers.signatures {
                                let bytes: Vec<u8> = kept
                                    .signature
                                    .iter()
                                    .flat_map(|v| v.to_le_bytes())
                                    .collect();
                                write_to(file, &bytes)?;
                            }
                            for (b, file) in writers.bands.iter_mut().enumerate() {
                                write_to(file, &band_hash(&kept.signature, b, rows).to_le_bytes())?;
                            }
                        }
                    }
                }
            }
            Ok((stats, documents, writers))
        });
        for (batch, read) in receiver {
            let results: Vec<(DocResult, u64)> = pool.install(|| {
                batch
                    .into_par_iter()
                    .map(|raw| {
                        let len = raw_len(&raw);
                        worker.process(raw, len)
                    })
                    .collect()
            });
            progress.bytes += read;
            progress.records += results.len() as u64;
            progress.kept += results
                .iter()
                .filter(|(r, _)| matches!(r, DocResult::Kept { .. }))
                .count() as u64;
            if result_sender.send(results).is_err() {
                break;
            }
            if let Some(report) = options.progress {
                report(progress);
            }
        }
        drop(result_sender);
        writer_thread
            .join()
            .map_err(|_| DataError::config("output", "the writer thread panicked"))?
    });
    let (mut stats, documents, writers) = write_outcome?;
    reader_thread
        .join()
        .map_err(|_| DataError::config("input", "the reader thread panicked"))?;
    let PartWriters {
        docs,
        index,
        signatures,
        bands,
        rejected,
        dir,
    } = writers;
    docs.commit()?;
    index.commit()?;
    if let Some(s) = signatures {
        s.commit()?;
    }
    for b in bands {
        b.commit()?;
    }
    rejected.commit()?;
    // The input stage's docs_in counts every record; fix it up now that the
    // per-document counts are known.
    let input_records = stats.input_records;
    let input_stage = stats.stage_mut("input");
    input_stage.docs_in = input_records;
    write_atomic(
        &dir.join("stats.json"),
        &serde_json::to_vec_pretty(&stats).unwrap_or_default(),
    )?;
    let manifest = PartManifest {
        schema: PART_SCHEMA.into(),
        index: shard.index,
        count: shard.count,
        config_fingerprint: config.fingerprint,
        inputs: inputs.iter().map(|p| p.display().to_string()).collect(),
        documents,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_atomic(
        &dir.join("part.json"),
        &serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
    )?;
    Ok(manifest)
}

const INDEX_ENTRY: usize = 32;

fn account(
    stats: &mut Stats,
    stages: &[&'static str],
    trace: &[StageTrace],
    ctx: &DocContext,
    seq: u64,
    input_chars: Option<u64>,
    raw_bytes: u64,
) {
    // The input stage: a record that parsed (its text length is known)
    // passes it; one that did not is dropped there.
    let input = stats.stage_mut("input");
    input.bytes_in += raw_bytes;
    if input_chars.is_some() {
        input.docs_out += 1;
        input.bytes_out += raw_bytes;
    } else {
        input.dropped += 1;
    }
    if let Some(chars) = input_chars {
        stats.input_length_chars.add(chars);
    }
    for (stage, t) in stages.iter().zip(trace) {
        let s = stats.stage_mut(stage);
        s.docs_in += 1;
        s.bytes_in += t.bytes_in;
        if t.dropped {
            s.dropped += 1;
        } else {
            s.docs_out += 1;
            s.bytes_out += t.bytes_out;
        }
        if t.modified {
            s.modified += 1;
        }
    }
    for &(name, value) in &ctx.metrics {
        stats
            .metrics
            .entry(name.to_string())
            .or_default()
            .add(seq, value);
    }
    for &(name, n) in &ctx.counters {
        *stats.counters.entry(name.to_string()).or_default() += n;
    }
}

/// One kept document in the merge phase, in global input order.
#[derive(Clone, Copy)]
struct Entry {
    seq: u64,
    part: u32,
    local: u32,
    text_bytes: u32,
    text_chars: u32,
}

/// Why the merge phase dropped a document.
#[derive(Clone, Copy, PartialEq)]
enum Dup {
    None,
    Exact(u64),
    Near(u64),
}

/// Runs the merge phase over all parts under `output/parts/` and writes the
/// shards, `rejected.jsonl`, `report.json`, `report.md` and the charts.
pub fn merge(config: &PipelineConfig, output: &Path, options: &RunOptions<'_>) -> Result<Report> {
    let started = std::time::Instant::now();
    let parts_root = parts_dir(output);
    let manifests = read_manifests(&parts_root, config)?;
    let part_dirs: Vec<PathBuf> = manifests
        .iter()
        .map(|m| {
            parts_root.join(
                Shard {
                    index: m.index,
                    count: m.count,
                }
                .dir_name(),
            )
        })
        .collect();
    let mut stats = Stats::default();
    for dir in &part_dirs {
        let path = dir.join("stats.json");
        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        let part: Stats = serde_json::from_slice(&bytes)
            .map_err(|e| DataError::config(path.display().to_string(), e.to_string()))?;
        stats.merge(&part);
    }
    // Global order of the kept documents.
    let mut entries: Vec<Entry> = Vec::new();
    let mut hashes: Vec<u128> = Vec::new();
    let mut global_of: Vec<Vec<u32>> = Vec::new();
    for (p, dir) in part_dirs.iter().enumerate() {
        let path = dir.join("index.bin");
        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        let mut locals = Vec::with_capacity(bytes.len() / INDEX_ENTRY);
        for (local, chunk) in bytes.chunks_exact(INDEX_ENTRY).enumerate() {
            let seq = u64::from_le_bytes(chunk[..8].try_into().unwrap_or_default());
            let hash = u128::from_le_bytes(chunk[8..24].try_into().unwrap_or_default());
            let text_bytes = u32::from_le_bytes(chunk[24..28].try_into().unwrap_or_default());
            let text_chars = u32::from_le_bytes(chunk[28..32].try_into().unwrap_or_default());
            locals.push((
                Entry {
                    seq,
                    part: p as u32,
                    local: local as u32,
                    text_bytes,
                    text_chars,
                },
                hash,
            ));
        }
        entries.extend(locals.iter().map(|e| e.0));
        hashes.extend(locals.iter().map(|e| e.1));
        global_of.push(vec![0; locals.len()]);
    }
    let mut order: Vec<u32> = (0..entries.len() as u32).collect();
    order.sort_unstable_by_key(|&i| entries[i as usize].seq);
    let entries: Vec<Entry> = order.iter().map(|&i| entries[i as usize]).collect();
    let hashes: Vec<u128> = order.iter().map(|&i| hashes[i as usize]).collect();
    drop(order);
    for (g, e) in entries.iter().enumerate() {
        global_of[e.part as usize][e.local as usize] = g as u32;
    }
    let n = entries.len();
    let mut dup = vec![Dup::None; n];
    let budget = options.memory_budget.max(1 << 20);

    for stage in &config.stages {
        match stage {
            StageConfig::ExactDedup(_) => {
                let docs_in = dup.iter().filter(|d| **d == Dup::None).count() as u64;
                let passes = passes_for(n as u64 * 20, budget);
                for pass in 0..passes {
                    let mut keyed: Vec<(u128, u32)> = hashes
                        .iter()
                        .enumerate()
                        .filter(|(g, h)| {
                            dup[*g] == Dup::None && ((**h >> 64) as u64 % passes) == pass
                        })
                        .map(|(g, h)| (*h, g as u32))
                        .collect();
                    keyed.par_sort_unstable();
                    for run in keyed.chunk_by(|a, b| a.0 == b.0) {
                        let first = run[0].1 as usize;
                        for &(_, g) in &run[1..] {
                            dup[g as usize] = Dup::Exact(entries[first].seq);
                        }
                    }
                }
                account_dedup(&mut stats, "exact_dedup", &entries, &dup, docs_in, |d| {
                    matches!(d, Dup::Exact(_))
                });
            }
            StageConfig::MinhashDedup(m) => {
                let docs_in = dup.iter().filter(|d| **d == Dup::None).count() as u64;
                let (bands, _rows) = m.bands_rows()?;
                let mut parent: Vec<u32> = (0..n as u32).collect();
                let mut signatures: Vec<Option<std::fs::File>> = Vec::new();
                if m.verify {
                    for dir in &part_dirs {
                        let path = dir.join("signatures.bin");
                        signatures.push(Some(
                            std::fs::File::open(&path).map_err(|e| DataError::io(&path, e))?,
                        ));
                    }
                }
                let passes = passes_for(n as u64 * 12, budget);
                let mut buf_a = vec![0u32; m.num_perm];
                let mut buf_b = vec![0u32; m.num_perm];
                for band in 0..bands {
                    let mut band_hashes: Vec<Vec<u64>> = Vec::new();
                    for (p, dir) in part_dirs.iter().enumerate() {
                        let path = dir.join(format!("band-{band:03}.bin"));
                        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
                        if bytes.len() != global_of[p].len() * 8 {
                            return Err(DataError::config(
                                path.display().to_string(),
                                format!(
                                    "{} bytes for {} documents: the part is damaged; rerun its shard",
                                    bytes.len(),
                                    global_of[p].len()
                                ),
                            ));
                        }
                        band_hashes.push(
                            bytes
                                .chunks_exact(8)
                                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                                .collect(),
                        );
                    }
                    for pass in 0..passes {
                        let mut keyed: Vec<(u64, u32)> = Vec::new();
                        for (p, hashes) in band_hashes.iter().enumerate() {
                            for (local, &h) in hashes.iter().enumerate() {
                                let g = global_of[p][local];
                                if dup[g as usize] == Dup::None && h % passes == pass {
                                    keyed.push((h, g));
                                }
                            }
                        }
                        keyed.par_sort_unstable();
                        for run in keyed.chunk_by(|a, b| a.0 == b.0) {
                            let first = run[0].1;
                            for &(_, g) in &run[1..] {
                                if find(&mut parent, first) == find(&mut parent, g) {
                                    continue;
                                }
                                if m.verify {
                                    read_signature(
                                        &signatures,
                                        &entries[first as usize],
                                        &mut buf_a,
                                        &part_dirs,
                                    )?;
                                    read_signature(
                                        &signatures,
                                        &entries[g as usize],
                                        &mut buf_b,
                                        &part_dirs,
                                    )?;
                                    if estimate_jaccard(&buf_a, &buf_b) < m.threshold {
                                        continue;
                                    }
                                }
                                union(&mut parent, first, g);
                            }
                        }
                    }
                }
                for g in 0..n as u32 {
                    let root = find(&mut parent, g);
                    if root != g && dup[g as usize] == Dup::None {
                        dup[g as usize] = Dup::Near(entries[root as usize].seq);
                    }
                }
                account_dedup(&mut stats, "minhash_dedup", &entries, &dup, docs_in, |d| {
                    matches!(d, Dup::Near(_))
                });
            }
            _ => {}
        }
    }

    // Write the shards and the rejects, in input order.
    let mut shards = ShardWriter::new(output, &config.output);
    let rejected_path = output.join("rejected.jsonl");
    let mut rejected = AtomicFile::create(&rejected_path)?;
    let mut part_rejects: Vec<RejectStream> = part_dirs
        .iter()
        .map(|d| RejectStream::open(&d.join("rejected.jsonl")))
        .collect::<Result<_>>()?;
    let mut part_docs: Vec<Box<dyn BufRead>> = Vec::new();
    for dir in &part_dirs {
        let path = dir.join("docs.jsonl");
        let file = std::fs::File::open(&path).map_err(|e| DataError::io(&path, e))?;
        part_docs.push(Box::new(BufReader::with_capacity(1 << 20, file)));
    }
    let mut line = Vec::new();
    for (g, entry) in entries.iter().enumerate() {
        line.clear();
        let reader = &mut part_docs[entry.part as usize];
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| DataError::io(&part_dirs[entry.part as usize], e))?;
        if read == 0 {
            return Err(DataError::config(
                part_dirs[entry.part as usize]
                    .join("docs.jsonl")
                    .display()
                    .to_string(),
                "ends before its index: the part is damaged; rerun its shard",
            ));
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        match dup[g] {
            Dup::None => {
                shards.write_line(&line)?;
                stats.kept += 1;
                stats.kept_text_bytes += entry.text_bytes as u64;
                stats.kept_length_chars.add(entry.text_chars as u64);
            }
            Dup::Exact(of) | Dup::Near(of) => {
                flush_rejects_before(&mut part_rejects, entry.seq, &mut rejected)?;
                let (stage, code, reason) = match dup[g] {
                    Dup::Exact(_) => (
                        "exact_dedup",
                        "exact_dedup.duplicate",
                        format!("same normalised text as the record with seq {of}"),
                    ),
                    _ => (
                        "minhash_dedup",
                        "minhash_dedup.near_duplicate",
                        format!("near-duplicate of the record with seq {of} (MinHash)"),
                    ),
                };
                let record: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(&line).unwrap_or_default();
                let id = record.get(&config.input.id_field).map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
                let rec = RejectedRecord {
                    seq: entry.seq,
                    stage: stage.into(),
                    code: code.into(),
                    reason,
                    source: String::new(),
                    id,
                    payload: RawPayload::Record(record),
                };
                stats.reject(code);
                let mut out = serde_json::to_vec(&rec.to_json()).unwrap_or_default();
                out.push(b'\n');
                write_to(&mut rejected, &out)?;
            }
        }
    }
    flush_rejects_before(&mut part_rejects, u64::MAX, &mut rejected)?;
    rejected.commit()?;
    let shard_paths = shards.finish()?;

    let part_seconds: f64 = manifests.iter().map(|m| m.seconds).sum();
    let report = Report {
        schema: REPORT_SCHEMA.into(),
        inputs: manifests
            .first()
            .map(|m| m.inputs.clone())
            .unwrap_or_default(),
        shards: shard_paths
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect(),
        seconds: part_seconds + started.elapsed().as_secs_f64(),
        stats,
    };
    let charts = report.charts();
    for (_, file, svg) in &charts {
        write_atomic(&output.join(file), svg.as_bytes())?;
    }
    let chart_links: Vec<(String, String)> = charts
        .iter()
        .map(|(t, f, _)| (t.clone(), f.clone()))
        .collect();
    write_atomic(
        &output.join("report.json"),
        &serde_json::to_vec_pretty(&report).unwrap_or_default(),
    )?;
    write_atomic(
        &output.join("report.md"),
        report.to_markdown(&chart_links).as_bytes(),
    )?;
    if !options.keep_parts {
        std::fs::remove_dir_all(&parts_root).map_err(|e| DataError::io(&parts_root, e))?;
    }
    Ok(report)
}

fn account_dedup(
    stats: &mut Stats,
    name: &str,
    entries: &[Entry],
    dup: &[Dup],
    docs_in: u64,
    mine: impl Fn(&Dup) -> bool,
) {
    let dropped = dup.iter().filter(|d| mine(d)).count() as u64;
    let bytes_in: u64 = entries
        .iter()
        .zip(dup)
        .filter(|(_, d)| **d == Dup::None || mine(d))
        .map(|(e, _)| e.text_bytes as u64)
        .sum();
    let bytes_out: u64 = entries
        .iter()
        .zip(dup)
        .filter(|(_, d)| **d == Dup::None)
        .map(|(e, _)| e.text_bytes as u64)
        .sum();
    let s = stats.stage_mut(name);
    s.docs_in = docs_in;
    s.dropped = dropped;
    s.docs_out = docs_in - dropped;
    s.bytes_in = bytes_in;
    s.bytes_out = bytes_out;
}

fn passes_for(bytes: u64, budget: u64) -> u64 {
    // Half the budget for the sort buffer; the rest holds the order tables.
    bytes.div_ceil((budget / 2).max(1)).max(1)
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let grand = parent[parent[x as usize] as usize];
        parent[x as usize] = grand;
        x = grand;
    }
    x
}

/// Joins two clusters; the root is always the smaller index, so each
/// cluster's root is its earliest document.
fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra < rb {
        parent[rb as usize] = ra;
    } else if rb < ra {
        parent[ra as usize] = rb;
    }
}

fn read_signature(
    files: &[Option<std::fs::File>],
    entry: &Entry,
    buf: &mut [u32],
    dirs: &[PathBuf],
) -> Result<()> {
    let Some(Some(file)) = files.get(entry.part as usize) else {
        return Err(DataError::config(
            "minhash_dedup.verify",
            "signatures missing from a part",
        ));
    };
    let mut bytes = vec![0u8; buf.len() * 4];
    let offset = entry.local as u64 * bytes.len() as u64;
    read_exact_at(file, &mut bytes, offset)
        .map_err(|e| DataError::io(dirs[entry.part as usize].join("signatures.bin"), e))?;
    for (v, c) in buf.iter_mut().zip(bytes.chunks_exact(4)) {
        *v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    Ok(())
}

#[cfg(unix)]
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut f = file.try_clone()?;
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

/// A part's `rejected.jsonl`, read line by line with each line's `seq`.
struct RejectStream {
    reader: BufReader<std::fs::File>,
    next: Option<(u64, Vec<u8>)>,
    path: PathBuf,
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

impl RejectStream {
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        let mut stream = RejectStream {
            reader: BufReader::new(file),
            next: None,
            path: path.to_path_buf(),
        };
        stream.advance()?;
        Ok(stream)
    }

    fn advance(&mut self) -> Result<()> {
        let mut line = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut line)
            .map_err(|e| DataError::io(&self.path, e))?;
        self.next = if n == 0 {
            None
        } else {
            let seq: SeqOnly = serde_json::from_slice(&line)
                .map_err(|e| DataError::config(self.path.display().to_string(), e.to_string()))?;
            Some((seq.seq, line))
        };
        Ok(())
    }
}

fn flush_rejects_before(
    streams: &mut [RejectStream],
    seq: u64,
    out: &mut AtomicFile,
) -> Result<()> {
    loop {
        let best = streams
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.next.as_ref().map(|(q, _)| (*q, i)))
            .filter(|(q, _)| *q < seq)
            .min();
        let Some((_, i)) = best else { return Ok(()) };
        if let Some((_, line)) = streams[i].next.take() {
            write_to(out, &line)?;
        }
        streams[i].advance()?;
    }
}

fn read_manifests(parts_root: &Path, config: &PipelineConfig) -> Result<Vec<PartManifest>> {
    let entries = std::fs::read_dir(parts_root).map_err(|e| DataError::io(parts_root, e))?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with("part-"))
        .collect();
    names.sort();
    let Some(first) = names.first() else {
        return Err(DataError::config(
            "merge",
            format!("no parts under {}", parts_root.display()),
        ));
    };
    let count: usize = first
        .rsplit("-of-")
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut manifests = Vec::with_capacity(count);
    let mut missing = Vec::new();
    for index in 0..count {
        let path = parts_root
            .join(Shard { index, count }.dir_name())
            .join("part.json");
        match std::fs::read(&path) {
            Ok(bytes) => {
                let manifest: PartManifest = serde_json::from_slice(&bytes)
                    .map_err(|e| DataError::config(path.display().to_string(), e.to_string()))?;
                if manifest.config_fingerprint != config.fingerprint {
                    return Err(DataError::config(
                        path.display().to_string(),
                        "this part was made with a different pipeline configuration",
                    ));
                }
                if let Some(first) = manifests.first() {
                    let first: &PartManifest = first;
                    if first.inputs != manifest.inputs {
                        return Err(DataError::config(
                            path.display().to_string(),
                            "this part was made from different inputs",
                        ));
                    }
                }
                manifests.push(manifest);
            }
            Err(_) => missing.push(index),
        }
    }
    if !missing.is_empty() {
        return Err(DataError::config(
            "merge",
            format!(
                "parts {missing:?} of {count} are missing or unfinished under {}",
                parts_root.display()
            ),
        ));
    }
    Ok(manifests)
}

/// Runs the whole pipeline on one machine: the per-document phase as one
/// shard, then the merge.
pub fn run(
    config: &PipelineConfig,
    inputs: &[PathBuf],
    output: &Path,
    options: &RunOptions<'_>,
) -> Result<Report> {
    std::fs::create_dir_all(output).map_err(|e| DataError::io(output, e))?;
    let parts = parts_dir(output);
    if parts.exists() {
        std::fs::remove_dir_all(&parts).map_err(|e| DataError::io(&parts, e))?;
    }
    run_shard(config, inputs, output, Shard::ALL, options)?;
    merge(config, output, options)
}
