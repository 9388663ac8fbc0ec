//! Training data: documents tokenized into one stream of ids with EOS
//! between documents (or token shards read as they are), a held-out
//! validation stream, and batches of fixed-length sequences in an order
//! fixed by the seed.
//!
//! Sequence `i` of the training stream is tokens `i·T .. (i+1)·T`. Each
//! epoch visits every sequence once in a Fisher–Yates order drawn from
//! `seed` and the epoch number, so the `k`-th sequence a run sees depends
//! only on `(seed, k)`: a resumed run continues exactly where it stopped.

use std::io::Write;
use std::path::{Path, PathBuf};

use kaiyuan_tokenizer::shard::Shard;
use kaiyuan_tokenizer::{EncodeOptions, Tokenizer};

use crate::config::TrainConfig;
use crate::corpus::{Corpus, CorpusConfig};
use crate::init::SplitMix64;
use crate::{Result, TrainError};

/// A record of the input that could not be used, with the reason.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    /// File and line (1-based), e.g. `data.jsonl:17`.
    pub location: String,
    /// Why it was rejected.
    pub reason: String,
    /// The record as read (lossy UTF-8 for invalid bytes).
    pub record: String,
}

/// Documents read from the configured sources, before tokenization.
#[derive(Clone, Debug, Default)]
pub struct Documents {
    /// Training documents.
    pub train: Vec<String>,
    /// Held-out documents.
    pub validation: Vec<String>,
    /// Token shards (already tokenized; split by tokens, not documents).
    pub shards: Vec<PathBuf>,
    /// Records that could not be used.
    pub rejected: Vec<Rejected>,
}

/// Reads the documents `config.data` names. JSONL lines that are not an
/// object with a string `field` are rejected (kept in
/// [`Documents::rejected`], never dropped silently).
pub fn read_documents(config: &TrainConfig) -> Result<Documents> {
    let data = &config.data;
    let mut docs = Documents::default();
    if data.source == ["embedded"] {
        let corpus = Corpus::new(&CorpusConfig {
            seed: config.seed,
            documents: data.documents,
            ..CorpusConfig::default()
        })?;
        docs.train = corpus.training().into_iter().map(|d| d.text).collect();
        docs.validation = corpus
            .validation(data.validation_documents.max(1))?
            .into_iter()
            .map(|d| d.text)
            .collect();
        return Ok(docs);
    }
    let mut all = Vec::new();
    for source in &data.source {
        let path = Path::new(source);
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext {
            "bin" | "shard" => docs.shards.push(path.to_path_buf()),
            "jsonl" => {
                let text = read_text(path)?;
                for (i, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let location = format!("{}:{}", path.display(), i + 1);
                    match serde_json::from_str::<serde_json::Value>(line) {
                        Ok(v) => match v.get(&data.field).and_then(|f| f.as_str()) {
                            Some(t) if !t.is_empty() => all.push(t.to_string()),
                            Some(_) => docs.rejected.push(Rejected {
                                location,
                                reason: format!("field `{}` is empty", data.field),
                                record: line.to_string(),
                            }),
                            None => docs.rejected.push(Rejected {
                                location,
                                reason: format!("no string field `{}`", data.field),
                                record: line.to_string(),
                            }),
                        },
                        Err(e) => docs.rejected.push(Rejected {
                            location,
                            reason: format!("not JSON: {e}"),
                            record: line.to_string(),
                        }),
                    }
                }
            }
            _ => {
                let text = read_text(path)?;
                if !text.trim().is_empty() {
                    all.push(text);
                }
            }
        }
    }
    // Hold out a seeded sample of documents.
    let mut order: Vec<usize> = (0..all.len()).collect();
    shuffle(&mut order, config.seed ^ 0xDA7A);
    let held = (all.len() as f64 * data.validation_fraction).round() as usize;
    let held = if all.len() > 1 {
        held.clamp(usize::from(data.validation_fraction > 0.0), all.len() - 1)
    } else {
        0
    };
    let mut slots: Vec<Option<String>> = all.into_iter().map(Some).collect();
    for (k, &i) in order.iter().enumerate() {
        if let Some(doc) = slots[i].take() {
            if k < held {
                docs.validation.push(doc);
            } else {
                docs.train.push(doc);
            }
        }
    }
    Ok(docs)
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path)
        .map_err(|e| TrainError::invalid(path.display().to_string(), e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| {
        TrainError::invalid(
            path.display().to_string(),
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })
}

/// Writes rejected records as JSONL (`location`, `reason`, `record`) to `path`.
pub fn write_rejected(path: &Path, rejected: &[Rejected]) -> Result<()> {
    let mut out = Vec::new();
    for r in rejected {
        let line =
            serde_json::json!({"location": r.location, "reason": r.reason, "record": r.record});
        writeln!(out, "{line}")
            .map_err(|e| TrainError::invalid(path.display().to_string(), e.to_string()))?;
    }
    crate::checkpoint::write_atomic(path, &out)
}

/// Deterministic Fisher–Yates shuffle.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = SplitMix64::new(seed);
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// Training and validation token streams.
#[derive(Clone, Debug)]
pub struct TokenStreams {
    /// Training ids, EOS after every document.
    pub train: Vec<u32>,
    /// Validation ids.
    pub validation: Vec<u32>,
}

/// Tokenizes documents (no special tokens added; `eos` after each) and
/// appends the shards' tokens, holding out the last `validation_fraction`
/// of each shard.
pub fn tokenize(
    docs: &Documents,
    tokenizer: &Tokenizer,
    eos: u32,
    validation_fraction: f64,
) -> Result<TokenStreams> {
    let encode = |texts: &[String]| -> Result<Vec<u32>> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encoded = tokenizer.encode_batch(&refs, EncodeOptions::default())?;
        let mut ids = Vec::new();
        for e in encoded {
            ids.extend_from_slice(&e.ids);
            ids.push(eos);
        }
        Ok(ids)
    };
    let mut train = encode(&docs.train)?;
    let mut validation = encode(&docs.validation)?;
    for path in &docs.shards {
        let shard = Shard::open(path)?;
        let n = shard.len();
        let held = (n as f64 * validation_fraction) as usize;
        train.extend(shard.range(0, n - held));
        validation.extend(shard.range(n - held, n));
    }
    Ok(TokenStreams { train, validation })
}

/// Where training sequences come from: fixed-length chunks of a token
/// stream (labels are the ids), or tokenized conversations with their
/// labels (SFT).
#[derive(Clone, Debug)]
enum Items {
    Stream { tokens: Vec<u32>, seq_len: usize },
    Examples(Vec<(Vec<u32>, Vec<i64>)>),
}

/// Training sequences in a seeded order per epoch, batched with right
/// padding (`pad` ids labelled [`crate::loss::IGNORE`]) to the longest row.
#[derive(Clone, Debug)]
pub struct Batcher {
    items: Items,
    pad: u32,
    seed: u64,
    epoch: Option<(u64, Vec<u32>)>,
}

impl Batcher {
    /// Sequences of `seq_len` tokens of `tokens`; at least `batch_size` of them.
    pub fn new(tokens: Vec<u32>, seq_len: usize, batch_size: usize, seed: u64) -> Result<Self> {
        let count = tokens.len() / seq_len.max(1);
        if count < batch_size.max(1) {
            return Err(TrainError::invalid(
                "data",
                format!(
                    "{} training tokens make {count} sequences of {seq_len}, fewer than one batch of {batch_size} (the corpus is empty or too small)",
                    tokens.len()
                ),
            ));
        }
        Ok(Self {
            items: Items::Stream { tokens, seq_len },
            pad: 0,
            seed,
            epoch: None,
        })
    }

    /// Labelled examples (ids, labels of equal length), padded with `pad`.
    pub fn from_examples(
        examples: Vec<(Vec<u32>, Vec<i64>)>,
        pad: u32,
        batch_size: usize,
        seed: u64,
    ) -> Result<Self> {
        if examples.len() < batch_size.max(1) {
            return Err(TrainError::invalid(
                "data",
                format!(
                    "{} usable examples, fewer than one batch of {batch_size} (the corpus is empty or too small)",
                    examples.len()
                ),
            ));
        }
        if let Some(bad) = examples
            .iter()
            .position(|(ids, labels)| ids.len() != labels.len() || ids.len() < 2)
        {
            return Err(TrainError::invalid(
                "data",
                format!("example {bad} has mismatched ids and labels or fewer than 2 tokens"),
            ));
        }
        Ok(Self {
            items: Items::Examples(examples),
            pad,
            seed,
            epoch: None,
        })
    }

    /// Number of sequences per epoch.
    pub fn sequences(&self) -> usize {
        match &self.items {
            Items::Stream { tokens, seq_len } => tokens.len() / seq_len,
            Items::Examples(e) => e.len(),
        }
    }

    /// Sequence `index` of the data (not of the run's order) and its labels.
    pub fn example(&self, index: usize) -> (Vec<u32>, Vec<i64>) {
        match &self.items {
            Items::Stream { tokens, seq_len } => {
                let ids = tokens[index * seq_len..(index + 1) * seq_len].to_vec();
                let labels = ids.iter().map(|&x| i64::from(x)).collect();
                (ids, labels)
            }
            Items::Examples(e) => e[index].clone(),
        }
    }

    /// Sequence `index` of the data, ids only.
    pub fn chunk(&self, index: usize) -> Vec<u32> {
        self.example(index).0
    }

    /// The `k`-th sequence of the run (over all epochs).
    pub fn sequence(&mut self, k: u64) -> (Vec<u32>, Vec<i64>) {
        let n = self.sequences() as u64;
        let epoch = k / n;
        if self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut order: Vec<u32> = (0..n as u32).collect();
            shuffle(
                &mut order,
                self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            self.epoch = Some((epoch, order));
        }
        let index = self.epoch.as_ref().map_or(0, |(_, o)| o[(k % n) as usize]) as usize;
        self.example(index)
    }

    /// Sequences `first..first + count` of the run, right-padded to the
    /// longest: (ids, labels), each (count, T).
    pub fn batch(&mut self, first: u64, count: usize) -> (Vec<Vec<u32>>, Vec<Vec<i64>>) {
        let rows: Vec<(Vec<u32>, Vec<i64>)> = (0..count as u64)
            .map(|i| self.sequence(first + i))
            .collect();
        pad_rows(rows, self.pad)
    }
}

/// Right-pads rows to the longest with `pad` ids labelled IGNORE.
pub fn pad_rows(rows: Vec<(Vec<u32>, Vec<i64>)>, pad: u32) -> (Vec<Vec<u32>>, Vec<Vec<i64>>) {
    let longest = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
    rows.into_iter()
        .map(|(mut ids, mut labels)| {
            ids.resize(longest, pad);
            labels.resize(longest, crate::loss::IGNORE);
            (ids, labels)
        })
        .unzip()
}

/// The validation stream cut into sequences of `seq_len` (in order), at
/// most `max`, labelled with their own ids.
pub fn validation_sequences(
    tokens: &[u32],
    seq_len: usize,
    max: usize,
) -> Vec<(Vec<u32>, Vec<i64>)> {
    tokens
        .chunks_exact(seq_len.max(1))
        .take(max)
        .map(|c| (c.to_vec(), c.iter().map(|&x| i64::from(x)).collect()))
        .collect()
}

/// Chat JSONL (`messages` with roles) rendered with the model's chat
/// template and labelled on assistant tokens only, truncated to `seq_len`:
/// (training examples, validation examples, rejected records). A seeded
/// `validation_fraction` of conversations is held out.
#[allow(clippy::type_complexity)]
pub fn chat_examples(
    config: &TrainConfig,
    template: &kaiyuan_models::chat::ChatTemplate,
    tokenizer: &Tokenizer,
) -> Result<(
    Vec<(Vec<u32>, Vec<i64>)>,
    Vec<(Vec<u32>, Vec<i64>)>,
    Vec<Rejected>,
)> {
    let mut all = Vec::new();
    let mut rejected = Vec::new();
    for source in &config.data.source {
        let jsonl = crate::sft::ChatJsonl::read(source)?;
        let data = jsonl.tokenize(template, tokenizer, Some(config.train.seq_len));
        all.extend(data.examples.into_iter().map(|e| (e.ids, e.labels)));
        rejected.extend(data.rejected.into_iter().map(|r| Rejected {
            location: format!("{}:{}", r.source, r.line),
            reason: r.reason,
            record: r.raw,
        }));
    }
    let mut order: Vec<usize> = (0..all.len()).collect();
    shuffle(&mut order, config.seed ^ 0xDA7A);
    let held = (all.len() as f64 * config.data.validation_fraction).round() as usize;
    let held = held.min(all.len().saturating_sub(1));
    let mut slots: Vec<Option<(Vec<u32>, Vec<i64>)>> = all.into_iter().map(Some).collect();
    let (mut train, mut validation) = (Vec::new(), Vec::new());
    for (k, &i) in order.iter().enumerate() {
        if let Some(example) = slots[i].take() {
            if k < held {
                validation.push(example);
            } else {
                train.push(example);
            }
        }
    }
    Ok((train, validation, rejected))
}
