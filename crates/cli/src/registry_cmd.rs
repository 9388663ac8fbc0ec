//! `kaiyuan eval compare` and `kaiyuan registry`: the A/B gate and the
//! versioned model registry it guards.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use kaiyuan_eval::ab::{
    CompareOptions, MetricComparison, Threshold, compare_reports, metrics_of_report,
    unpaired_metrics,
};
use kaiyuan_eval::registry::Registry;
use kaiyuan_eval::task_provenance::check_same_tasks;

/// Exit status of a comparison that finds a significant regression beyond
/// the threshold (and of a promotion it refuses).
pub const REGRESSION: u8 = 1;

/// Arguments of `kaiyuan eval compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The baseline report (a `kaiyuan eval … --json` output).
    pub a: PathBuf,
    /// The candidate report.
    pub b: PathBuf,
    /// Largest allowed regression: relative (`1%`) or in the metric's units (`0.5`).
    #[arg(long, default_value = "1%")]
    pub max_regression: String,
    /// Paired-bootstrap resamples.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// Seed of the resampling.
    #[arg(long, default_value_t = 12345)]
    pub seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Compare even when a report has no task provenance (reports written
    /// by hand or by an older version). Reports whose task data or settings
    /// differ are never compared.
    #[arg(long)]
    pub unverified: bool,
}

fn read_report(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// Compares two reports; returns the rows and the names in one report only.
///
/// Metrics are compared only when both reports measured them on the same
/// task data with the same settings (their task provenance); without
/// `unverified`, a report that has none is refused too.
fn compare_files(
    a: &Path,
    b: &Path,
    options: &CompareOptions,
    unverified: bool,
) -> anyhow::Result<(Vec<MetricComparison>, Vec<String>)> {
    let (ra, rb) = (read_report(a)?, read_report(b)?);
    let (origin_a, origin_b) = (a.display().to_string(), b.display().to_string());
    let ma = metrics_of_report(&ra, &origin_a)?;
    let mb = metrics_of_report(&rb, &origin_b)?;
    let shared: Vec<String> = ma.keys().filter(|k| mb.contains_key(*k)).cloned().collect();
    for warning in check_same_tasks(&ra, &origin_a, &rb, &origin_b, &shared, unverified)? {
        eprintln!("warning: {warning}");
    }
    let rows = compare_reports(&ma, &mb, options)?;
    if rows.is_empty() {
        anyhow::bail!(
            "{} and {} have no metric in common",
            a.display(),
            b.display()
        );
    }
    Ok((rows, unpaired_metrics(&ma, &mb)))
}

fn print_table(rows: &[MetricComparison]) {
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>25}  verdict",
        "metric", "A", "B", "B − A", "95% CI (paired bootstrap)"
    );
    for r in rows {
        let ci = r
            .interval
            .map_or("n/a (no per-item values)".to_string(), |(lo, hi)| {
                format!("[{lo:+.4}, {hi:+.4}]")
            });
        let verdict = if r.fails_gate {
            "REGRESSION (beyond threshold)"
        } else if r.significant_regression {
            "worse, within threshold"
        } else if r
            .interval
            .is_some_and(|(lo, hi)| (lo > 0.0 && hi > 0.0) || (lo < 0.0 && hi < 0.0))
        {
            "better"
        } else {
            "no significant change"
        };
        let arrow = if r.higher_is_better { "↑" } else { "↓" };
        println!(
            "{:<28} {:>12.4} {:>12.4} {:>+12.4} {:>25}  {verdict}",
            format!("{} {arrow}", r.name),
            r.a,
            r.b,
            r.delta,
            ci
        );
    }
}

fn rows_json(rows: &[MetricComparison]) -> serde_json::Value {
    rows.iter()
        .map(|r| {
            serde_json::json!({
                "metric": r.name, "a": r.a, "b": r.b, "delta": r.delta,
                "ci95": r.interval.map(|(lo, hi)| [lo, hi]),
                "higher_is_better": r.higher_is_better,
                "significant_regression": r.significant_regression,
                "fails_gate": r.fails_gate,
            })
        })
        .collect()
}

/// Runs `kaiyuan eval compare`: exit 0 unless a metric regresses
/// significantly beyond the threshold (then [`REGRESSION`]).
pub fn compare_cmd(args: &CompareArgs) -> anyhow::Result<ExitCode> {
    let options = CompareOptions {
        max_regression: args.max_regression.parse::<Threshold>()?,
        resamples: args.resamples,
        seed: args.seed,
    };
    let (rows, unpaired) = compare_files(&args.a, &args.b, &options, args.unverified)?;
    let failed = rows.iter().any(|r| r.fails_gate);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "schema": "kaiyuan.eval.compare/1",
                "a": args.a.display().to_string(), "b": args.b.display().to_string(),
                "max_regression": args.max_regression, "resamples": args.resamples,
                "metrics": rows_json(&rows), "unpaired": unpaired, "passed": !failed,
            })
        );
    } else {
        print_table(&rows);
        if !unpaired.is_empty() {
            println!("in one report only (not compared): {}", unpaired.join(", "));
        }
        println!(
            "{}",
            if failed {
                "FAIL: significant regression beyond the threshold"
            } else {
                "PASS"
            }
        );
    }
    Ok(if failed {
        ExitCode::from(REGRESSION)
    } else {
        ExitCode::SUCCESS
    })
}

/// Arguments of `kaiyuan registry`.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// The registry's directory (created when missing).
    #[arg(long, global = true, default_value = "registry")]
    pub root: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub action: RegistryAction,
}

/// The actions of `kaiyuan registry`.
#[derive(Debug, Subcommand)]
pub enum RegistryAction {
    /// List the versions, marking the current one.
    List,
    /// Make a version current, if its evaluation does not regress.
    Promote(PromoteArgs),
    /// Point `current` back at the version it was switched from.
    Rollback,
}

/// Arguments of `kaiyuan registry promote`.
#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The version's name (a directory under ROOT/versions/).
    pub version: String,
    /// Copy this model directory in as the version first.
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// The version's evaluation report, kept as versions/NAME/eval.json
    /// [default: the one already there].
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Largest allowed regression against the current version's report.
    #[arg(long, default_value = "1%")]
    pub max_regression: String,
    /// Promote without the comparison (no report needed).
    #[arg(long)]
    pub force: bool,
}

/// Copies directory `from` to `to` (which must not exist) through a
/// temporary sibling renamed into place.
fn copy_dir_atomic(from: &Path, to: &Path) -> anyhow::Result<()> {
    if to.exists() {
        anyhow::bail!(
            "{} exists already: versions are never overwritten",
            to.display()
        );
    }
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    let tmp = to.with_file_name(name);
    let _ = std::fs::remove_dir_all(&tmp);
    copy_tree(from, &tmp)?;
    std::fs::rename(&tmp, to).with_context(|| format!("renaming into {}", to.display()))
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Runs `kaiyuan registry …`.
pub fn registry_cmd(args: &RegistryArgs) -> anyhow::Result<ExitCode> {
    let registry = Registry::open(&args.root)?;
    match &args.action {
        RegistryAction::List => {
            for v in registry.list()? {
                println!("{} {}", if v.current { "*" } else { " " }, v.name);
            }
        }
        RegistryAction::Rollback => {
            let from = registry.current()?.unwrap_or_default();
            let to = registry.rollback()?;
            println!("current: {from} → {to}");
        }
        RegistryAction::Promote(p) => {
            let dir = registry.version_path(&p.version);
            if let Some(from) = &p.from {
                copy_dir_atomic(from, &dir)?;
            }
            if let Some(report) = &p.report {
                crate::write_atomic(
                    &dir.join("eval.json"),
                    std::fs::read(report)
                        .with_context(|| format!("reading {}", report.display()))?,
                )?;
            }
            let current = registry.current()?;
            if let (Some(current), false) = (&current, p.force) {
                let baseline = registry.version_path(current).join("eval.json");
                let candidate = dir.join("eval.json");
                if baseline.is_file() {
                    if !candidate.is_file() {
                        anyhow::bail!(
                            "the current version `{current}` has an evaluation report and `{}` has none: pass --report (or --force)",
                            p.version
                        );
                    }
                    let options = CompareOptions {
                        max_regression: p.max_regression.parse()?,
                        ..CompareOptions::default()
                    };
                    let (rows, _) = compare_files(&baseline, &candidate, &options, false)?;
                    print_table(&rows);
                    if rows.iter().any(|r| r.fails_gate) {
                        println!(
                            "refused: `{}` regresses against `{current}`; current stays `{current}`",
                            p.version
                        );
                        return Ok(ExitCode::from(REGRESSION));
                    }
                }
            }
            registry.switch(&p.version, "promote")?;
            println!(
                "current: {} → {}",
                current.as_deref().unwrap_or("(none)"),
                p.version
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
