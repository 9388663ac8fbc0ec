//! `kaiyuan clean`: the data pipeline with a progress bar and a per-stage
//! summary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use kaiyuan_data::pipeline::{self, PipelineConfig, Progress, RunOptions, Shard};
use kaiyuan_data::report::Report;

/// Arguments of `kaiyuan clean`.
#[derive(Debug, clap::Args)]
pub struct CleanArgs {
    /// Pipeline configuration (TOML). Default: fixtures/pipeline.toml's
    /// contents, built into the binary.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Input files or directories (JSONL or text, optionally .gz/.zst).
    #[arg(long, num_args = 1.., required_unless_present_any = ["merge", "print_config"])]
    input: Vec<PathBuf>,
    /// Output directory (shards, rejected.jsonl, report.json/md, charts).
    #[arg(long, required_unless_present = "print_config")]
    output: Option<PathBuf>,
    /// Run only the per-document phase for shard `i/N` (e.g. a Slurm array
    /// task); run `--merge` once all N have finished.
    #[arg(long)]
    shard: Option<String>,
    /// Merge the parts under OUTPUT/parts: dedup over the whole corpus and
    /// write the outputs.
    #[arg(long, conflicts_with = "shard")]
    merge: bool,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Memory for the merge phase's hash tables, e.g. 256MB or 2GiB.
    #[arg(long, default_value = "256MB")]
    memory_budget: String,
    /// Keep OUTPUT/parts after the merge.
    #[arg(long)]
    keep_parts: bool,
    /// Print the effective configuration and exit.
    #[arg(long)]
    print_config: bool,
    /// Also print one JSON line on stdout: input MB, seconds, MB/s, peak RSS.
    #[arg(long)]
    json: bool,
}

/// The default pipeline shipped as fixtures/pipeline.toml.
pub const DEFAULT_PIPELINE: &str = include_str!("../../../fixtures/pipeline.toml");

/// Parses `256MB`, `2GiB`, `512k`, `1000000` (decimal and binary units).
pub fn parse_size(text: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .with_context(|| format!("`{text}` is not a size such as 256MB"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1048576.0,
        "g" | "gb" => 1e9,
        "gib" => 1073741824.0,
        other => bail!("`{text}`: unknown unit `{other}` (use B, KB, MB, GB, KiB, MiB, GiB)"),
    };
    Ok((value * scale) as u64)
}

/// Runs `kaiyuan clean`.
pub fn run(args: CleanArgs) -> anyhow::Result<()> {
    // The configuration's text, read once: parsed, printed, and recorded
    // in the output's provenance.
    let (config_text, origin) = match &args.config {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --config {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (
            DEFAULT_PIPELINE.to_string(),
            "fixtures/pipeline.toml (built in)".to_string(),
        ),
    };
    let config = PipelineConfig::from_toml(&config_text, &origin)?;
    if args.print_config {
        print!("{config_text}");
        return Ok(());
    }
    let Some(output) = args.output.as_deref() else {
        bail!("kaiyuan clean needs --output DIR");
    };
    let memory_budget = parse_size(&args.memory_budget).context("--memory-budget")?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let started = Instant::now();
    let on_progress = |p: Progress| {
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "{} records ({:.0} docs/s), {:.1} MB ({:.1} MB/s), {} kept",
            p.records,
            p.records as f64 / seconds,
            p.bytes as f64 / 1e6,
            p.bytes as f64 / 1e6 / seconds,
            p.kept
        ));
        bar.tick();
    };
    let options = RunOptions {
        threads: args.threads,
        memory_budget,
        progress: Some(&on_progress),
        keep_parts: args.keep_parts,
    };
    std::fs::create_dir_all(output).with_context(|| format!("creating {}", output.display()))?;
    if let Some(shard) = &args.shard {
        let shard = Shard::parse(shard)?;
        let manifest = pipeline::run_shard(&config, &args.input, output, shard, &options)?;
        bar.finish_and_clear();
        eprintln!(
            "shard {}/{}: {} documents kept by the per-document stages in {:.1} s; run `kaiyuan clean --merge --output {}` once every shard is done",
            manifest.index,
            manifest.count,
            manifest.documents,
            manifest.seconds,
            output.display()
        );
        return Ok(());
    }
    let report = if args.merge {
        pipeline::merge(&config, output, &options)?
    } else {
        pipeline::run(&config, &args.input, output, &options)?
    };
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let settings: serde_json::Value =
        toml::from_str(&config_text).context("the pipeline configuration as settings")?;
    let inputs: Vec<PathBuf> = report.inputs.iter().map(PathBuf::from).collect();
    let roles: Vec<(&str, &Path)> = inputs.iter().map(|p| ("data", p.as_path())).collect();
    crate::provenance_cmd::record(
        output,
        "shards",
        serde_json::json!({"pipeline": settings}),
        &roles,
    )?;
    print_summary(&report, seconds);
    if args.json {
        let mb = report.stats.input_bytes as f64 / 1e6;
        let peak = crate::bench_generate::peak_rss_bytes().map_or(-1.0, |b| b as f64 / 1e6);
        println!(
            r#"{{"name":"pipeline","input_mb":{mb:.3},"seconds":{seconds:.3},"mbps":{:.3},"peak_rss_mb":{peak:.1},"kept":{},"rejected":{}}}"#,
            mb / seconds.max(1e-9),
            report.stats.kept,
            report.stats.rejected
        );
    }
    if !report.stats.balanced() {
        bail!(
            "records are unaccounted for: input {} ≠ kept {} + rejected {}",
            report.stats.input_records,
            report.stats.kept,
            report.stats.rejected
        );
    }
    Ok(())
}

fn print_summary(report: &Report, seconds: f64) {
    let s = &report.stats;
    eprintln!(
        "{:<20} {:>10} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "stage", "docs in", "docs out", "dropped", "modified", "MB in", "MB out"
    );
    for st in &s.stages {
        eprintln!(
            "{:<20} {:>10} {:>10} {:>10} {:>10} {:>12.2} {:>12.2}",
            st.name,
            st.docs_in,
            st.docs_out,
            st.dropped,
            st.modified,
            st.bytes_in as f64 / 1e6,
            st.bytes_out as f64 / 1e6
        );
    }
    eprintln!(
        "{} records, {:.1} MB in {:.1} s ({:.1} MB/s): {} kept in {} shard(s), {} rejected",
        s.input_records,
        s.input_bytes as f64 / 1e6,
        seconds,
        s.input_bytes as f64 / 1e6 / seconds.max(1e-9),
        s.kept,
        report.shards.len(),
        s.rejected
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("256MB").unwrap(), 256_000_000);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MB").is_err());
    }

    #[test]
    fn default_pipeline_parses() {
        PipelineConfig::from_toml(DEFAULT_PIPELINE, "fixtures/pipeline.toml").unwrap();
    }
}
