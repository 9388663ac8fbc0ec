//! `kaiyuan tokenizer`: encode and decode text with a `tokenizer.json` or a
//! tiktoken rank file.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use kaiyuan_tokenizer::shard::ShardWriter;
use kaiyuan_tokenizer::{BpeTrainer, EncodeOptions, TiktokenSpec, Tokenizer, WordCounts};

/// Arguments of `kaiyuan tokenizer`.
#[derive(Debug, Args)]
pub struct TokenizerArgs {
    /// What to do.
    #[command(subcommand)]
    command: TokenizerCommand,
}

/// Where the vocabulary comes from.
#[derive(Debug, Args)]
struct Source {
    /// A HF `tokenizer.json`.
    #[arg(
        long,
        conflicts_with = "tiktoken",
        required_unless_present = "tiktoken"
    )]
    tokenizer: Option<PathBuf>,
    /// A tiktoken encoding: a `.tiktoken` rank file, or a name
    /// (`r50k_base`, `p50k_base`, `cl100k_base`, `o200k_base`, `qwen`) looked
    /// up in `$KAIYUAN_TIKTOKEN_DIR` or `target/vocab-cache/tiktoken`.
    #[arg(long)]
    tiktoken: Option<String>,
    /// Split pattern for a rank file whose name is not a known encoding.
    #[arg(long, requires = "tiktoken")]
    pattern: Option<String>,
}

/// Output of `kaiyuan tokenizer encode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// One JSON array of ids per input line, on standard output.
    Json,
    /// Token shards for training (`docs/formats.md`) in `--output DIR`.
    Shard,
}

#[derive(Debug, Subcommand)]
enum TokenizerCommand {
    /// Trains a byte-level BPE tokenizer and writes its `tokenizer.json`.
    Train {
        /// Text files (each line one sequence, as HF reads them) or JSONL files with `--jsonl-field`.
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// Vocabulary size, special tokens and the 256 bytes included.
        #[arg(long)]
        vocab_size: usize,
        /// Where to write the tokenizer.json.
        #[arg(long)]
        output: PathBuf,
        /// Pairs seen fewer times are not merged.
        #[arg(long, default_value_t = 2)]
        min_frequency: u64,
        /// Special tokens (first ids, in order).
        #[arg(long = "special", num_args = 1..)]
        special_tokens: Vec<String>,
        /// Split pattern (GPT-2's when absent).
        #[arg(long)]
        pattern: Option<String>,
        /// Read JSONL and take the text from this string field.
        #[arg(long)]
        jsonl_field: Option<String>,
    },
    /// Prints one JSON array of ids per input line.
    Encode {
        #[command(flatten)]
        source: Source,
        /// Input file (standard input when absent).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Add the post-processor's special tokens (BOS/EOS).
        #[arg(long)]
        with_special: bool,
        /// Treat special-token strings in the text as plain text.
        #[arg(long)]
        split_special: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// Output folder for `--format shard`.
        #[arg(long, required_if_eq("format", "shard"))]
        output: Option<PathBuf>,
        /// Read JSONL and take each document's text from this string field
        /// (else each line is a document).
        #[arg(long)]
        jsonl_field: Option<String>,
        /// End-of-document id for shards (the tokenizer's `<|endoftext|>`, `</s>` or `<eos>` when absent).
        #[arg(long)]
        eos_id: Option<u32>,
    },
    /// Reads one JSON array of ids per line and prints the text of each.
    Decode {
        #[command(flatten)]
        source: Source,
        /// Input file (standard input when absent).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Leave special tokens out.
        #[arg(long)]
        skip_special: bool,
    },
}

/// Runs `kaiyuan tokenizer …`.
pub fn run(args: TokenizerArgs) -> anyhow::Result<()> {
    match args.command {
        TokenizerCommand::Train {
            input,
            vocab_size,
            output,
            min_frequency,
            special_tokens,
            pattern,
            jsonl_field,
        } => {
            let trainer = BpeTrainer {
                vocab_size,
                min_frequency,
                special_tokens,
                pattern,
            };
            // Count words batch by batch: memory holds distinct words, not the corpus.
            let mut counts = WordCounts::default();
            let mut batch: Vec<String> = Vec::with_capacity(BATCH);
            for path in &input {
                for_each_document(path, jsonl_field.as_deref(), true, |_, doc| {
                    batch.push(doc);
                    if batch.len() == BATCH {
                        merge_counts(&mut counts, trainer.count_words(&batch)?);
                        batch.clear();
                    }
                    Ok(())
                })?;
            }
            merge_counts(&mut counts, trainer.count_words(&batch)?);
            let tokenizer = trainer.train_from_counts(&counts)?;
            crate::write_atomic(&output, tokenizer.to_json()?.as_bytes())?;
            let roles: Vec<(&str, &std::path::Path)> =
                input.iter().map(|p| ("data", p.as_path())).collect();
            crate::provenance_cmd::record(
                &output,
                "tokenizer",
                serde_json::json!({
                    "trainer": "byte-level BPE",
                    "vocab_size": trainer.vocab_size,
                    "min_frequency": trainer.min_frequency,
                    "special_tokens": trainer.special_tokens,
                    "pattern": trainer.pattern,
                    "jsonl_field": jsonl_field,
                }),
                &roles,
            )?;
            eprintln!(
                "kaiyuan tokenizer train: {} distinct words, vocabulary {} → {}",
                counts.len(),
                tokenizer.vocab_size(),
                output.display()
            );
        }
        TokenizerCommand::Encode {
            source,
            input,
            with_special,
            split_special,
            format: Format::Shard,
            output,
            jsonl_field,
            eos_id,
        } => {
            let tokenizer = load(&source)?;
            let options = EncodeOptions {
                add_special_tokens: with_special,
                split_special_tokens: split_special,
            };
            let Some(dir) = output else {
                bail!("--format shard needs --output DIR")
            };
            let eos = match eos_id {
                Some(id) => id,
                None => ["<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>"]
                    .iter()
                    .find_map(|t| tokenizer.token_to_id(t))
                    .context(
                        "the tokenizer has no <|endoftext|>, </s> or <eos> token: give --eos-id",
                    )?,
            };
            std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
            let inputs: Vec<PathBuf> = input.into_iter().collect();
            anyhow::ensure!(!inputs.is_empty(), "--format shard needs --input FILE");
            let mut writer =
                ShardWriter::create(dir.join("tokens-00000.bin"), tokenizer.vocab_size(), eos)?;
            let mut documents = 0usize;
            let mut batch: Vec<String> = Vec::with_capacity(BATCH);
            let flush = |batch: &mut Vec<String>, writer: &mut ShardWriter| -> anyhow::Result<()> {
                let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
                for encoding in tokenizer.encode_batch(&refs, options)? {
                    writer.write_document(&encoding.ids)?;
                }
                batch.clear();
                Ok(())
            };
            for path in &inputs {
                for_each_document(path, jsonl_field.as_deref(), false, |_, doc| {
                    batch.push(doc);
                    documents += 1;
                    if batch.len() == BATCH {
                        flush(&mut batch, &mut writer)?;
                    }
                    Ok(())
                })?;
            }
            flush(&mut batch, &mut writer)?;
            let tokens = writer.len();
            let path = writer.finish()?;
            let mut roles: Vec<(&str, &std::path::Path)> =
                inputs.iter().map(|p| ("data", p.as_path())).collect();
            if let Some(t) = &source.tokenizer {
                roles.push(("tokenizer", t.as_path()));
            }
            crate::provenance_cmd::record(
                &path,
                "token-shard",
                serde_json::json!({
                    "tiktoken": source.tiktoken,
                    "pattern": source.pattern,
                    "add_special_tokens": with_special,
                    "split_special_tokens": split_special,
                    "eos_id": eos,
                    "jsonl_field": jsonl_field,
                }),
                &roles,
            )?;
            eprintln!(
                "kaiyuan tokenizer encode: {documents} documents, {tokens} tokens → {}",
                path.display()
            );
        }
        TokenizerCommand::Encode {
            source,
            input,
            with_special,
            split_special,
            format: Format::Json,
            ..
        } => {
            let tokenizer = load(&source)?;
            let options = EncodeOptions {
                add_special_tokens: with_special,
                split_special_tokens: split_special,
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for_each_line(input.as_deref(), |number, line| {
                let ids = tokenizer
                    .encode_with(line, options)
                    .with_context(|| format!("line {number}"))?
                    .ids;
                writeln!(out, "{}", json_ids(&ids))?;
                Ok(())
            })?;
            out.flush()?;
        }
        TokenizerCommand::Decode {
            source,
            input,
            skip_special,
        } => {
            let tokenizer = load(&source)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for_each_line(input.as_deref(), |number, line| {
                let ids = parse_ids(line)
                    .with_context(|| format!("line {number}: expected a JSON array of ids"))?;
                let text = tokenizer
                    .decode(&ids, skip_special)
                    .with_context(|| format!("line {number}"))?;
                writeln!(out, "{text}")?;
                Ok(())
            })?;
            out.flush()?;
        }
    }
    Ok(())
}

fn load(source: &Source) -> anyhow::Result<Tokenizer> {
    if let Some(path) = &source.tokenizer {
        return Ok(Tokenizer::from_file(path)?);
    }
    let Some(name) = &source.tiktoken else {
        bail!("give --tokenizer PATH or --tiktoken NAME_OR_PATH");
    };
    let path = resolve_tiktoken(name)?;
    let spec = match (&source.pattern, TiktokenSpec::known(name)) {
        (Some(pattern), known) => TiktokenSpec {
            name: name.clone(),
            pattern: pattern.clone(),
            specials: known.map(|k| k.specials).unwrap_or_default(),
        },
        (None, Some(spec)) => spec,
        (None, None) => {
            bail!("{name}: not a known tiktoken encoding; give its split pattern with --pattern")
        }
    };
    Ok(Tokenizer::from_tiktoken(&path, &spec)?)
}

fn resolve_tiktoken(name: &str) -> anyhow::Result<PathBuf> {
    let direct = PathBuf::from(name);
    if direct.is_file() {
        return Ok(direct);
    }
    let file = format!("{}.tiktoken", name.trim_end_matches(".tiktoken"));
    let dirs = std::env::var_os("KAIYUAN_TIKTOKEN_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            PathBuf::from("target/vocab-cache/tiktoken"),
            PathBuf::from("target/vocab-cache/qwen"),
        ]);
    for dir in dirs {
        let candidate = dir.join(&file);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{name}: no such rank file; pass a path, or set KAIYUAN_TIKTOKEN_DIR (bash fixtures/tokenizer/fetch_vocabs.sh fills target/vocab-cache)"
    )
}

/// Calls `f(line_number, line)` for each line of `input` (or standard input),
/// without the line ending.
fn for_each_line(
    input: Option<&Path>,
    mut f: impl FnMut(usize, &str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let reader: Box<dyn BufRead> = match input {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("{}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    for (index, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("line {}", index + 1))?;
        f(index + 1, line.strip_suffix('\r').unwrap_or(&line))?;
    }
    Ok(())
}

/// Documents per batch when counting words or writing shards.
const BATCH: usize = 4096;

fn merge_counts(into: &mut WordCounts, from: WordCounts) {
    for (word, count) in from {
        *into.entry(word).or_default() += count;
    }
}

/// Calls `f(number, document)` for each document of `path`: each line of a
/// text file (with its `\n` when `keep_newline`, as HF's trainer reads
/// files), or the string field `field` of each JSONL line.
fn for_each_document(
    path: &Path,
    field: Option<&str>,
    keep_newline: bool,
    mut f: impl FnMut(usize, String) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut reader = std::io::BufReader::new(file);
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .with_context(|| format!("{}: line {}", path.display(), number + 1))?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        let doc = match field {
            Some(field) => {
                let value: serde_json::Value = serde_json::from_str(line.trim_end())
                    .with_context(|| format!("{}: line {number}: not JSON", path.display()))?;
                value
                    .get(field)
                    .and_then(serde_json::Value::as_str)
                    .with_context(|| {
                        format!(
                            "{}: line {number}: no string field {field:?}",
                            path.display()
                        )
                    })?
                    .to_owned()
            }
            None if keep_newline => line.clone(),
            None => line.trim_end_matches(['\n', '\r']).to_owned(),
        };
        f(number, doc)?;
    }
}

fn json_ids(ids: &[u32]) -> String {
    let body: Vec<String> = ids.iter().map(u32::to_string).collect();
    format!("[{}]", body.join(","))
}

fn parse_ids(line: &str) -> anyhow::Result<Vec<u32>> {
    let inner = line
        .trim()
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .context("missing brackets")?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().with_context(|| format!("bad id {s:?}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_json_lines() {
        assert_eq!(json_ids(&[1, 20, 300]), "[1,20,300]");
        assert_eq!(parse_ids(" [1, 20,300] ").unwrap(), vec![1, 20, 300]);
        assert_eq!(parse_ids("[]").unwrap(), Vec::<u32>::new());
        assert!(
            parse_ids("[1, x]")
                .unwrap_err()
                .to_string()
                .contains("bad id")
        );
        assert!(parse_ids("1, 2").is_err());
    }
}
