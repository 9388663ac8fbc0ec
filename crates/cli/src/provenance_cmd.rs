//! Provenance manifests written by the commands (`kaiyuan_provenance`), and
//! `kaiyuan provenance PATH`, which prints an artefact's chain back to its
//! raw inputs and checks every link.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use kaiyuan_provenance::{Manifest, chain, short};
use serde_json::{Value, json};

/// Writes the manifest of `artefact` (kind, settings, inputs by role) last,
/// after the artefact is complete.
pub(crate) fn record(
    artefact: &Path,
    kind: &str,
    settings: Value,
    inputs: &[(&str, &Path)],
) -> anyhow::Result<PathBuf> {
    let mut manifest = Manifest::new(kind, settings);
    for (role, path) in inputs {
        manifest
            .add_input(role, path)
            .with_context(|| format!("recording the provenance of {}", artefact.display()))?;
    }
    manifest
        .write(artefact)
        .with_context(|| format!("writing the provenance of {}", artefact.display()))
}

/// Arguments of `kaiyuan provenance`.
#[derive(Debug, Args)]
pub struct ProvenanceArgs {
    /// An artefact (a directory or file Kaiyuan wrote) or its manifest.
    pub path: PathBuf,
    /// Print the chain as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `kaiyuan provenance`: exit 0 when every link holds, 1 otherwise.
pub fn run(args: &ProvenanceArgs) -> anyhow::Result<ExitCode> {
    let links = chain(&args.path)?;
    let intact = links.iter().all(|l| l.problems.is_empty());
    if args.json {
        let items: Vec<Value> = links
            .iter()
            .map(|l| {
                json!({
                    "depth": l.depth,
                    "manifest": l.manifest_path.display().to_string(),
                    "manifest_sha256": l.manifest_sha256,
                    "kind": l.manifest.kind,
                    "tool": l.manifest.tool,
                    "inputs": l.manifest.inputs,
                    "problems": l.problems,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"schema": "kaiyuan.provenance.chain/1", "intact": intact, "chain": items})
            )?
        );
    } else {
        for link in &links {
            let indent = "  ".repeat(link.depth);
            println!(
                "{indent}{} {} ({}, {})",
                link.manifest.kind,
                link.manifest_path.display(),
                short(&link.manifest_sha256),
                link.manifest.tool
            );
            for input in &link.manifest.inputs {
                let parent = input
                    .parent
                    .as_ref()
                    .map_or(String::new(), |p| format!(" ← {}", p.kind));
                println!(
                    "{indent}  {:<12} {} {} ({} bytes){parent}",
                    input.role,
                    short(&input.sha256),
                    input.path,
                    input.bytes
                );
            }
            for problem in &link.problems {
                println!("{indent}  PROBLEM: {problem}");
            }
        }
        println!(
            "{}",
            if intact {
                "intact: every file matches its manifest and every recorded parent is unchanged"
            } else {
                "NOT INTACT: see the problems above"
            }
        );
    }
    Ok(if intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
