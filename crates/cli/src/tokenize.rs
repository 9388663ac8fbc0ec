//! `kaiyuan tokenizer`: encode and decode text with a `tokenizer.json` or a
//! tiktoken rank file.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use kaiyuan_tokenizer::{EncodeOptions, TiktokenSpec, Tokenizer};

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

#[derive(Debug, Subcommand)]
enum TokenizerCommand {
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
        TokenizerCommand::Encode {
            source,
            input,
            with_special,
            split_special,
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
