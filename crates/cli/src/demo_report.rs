//! The demo's report: what each stage made, the checks the end-to-end test
//! asserts, the loss curve and the model comparison, as JSON
//! (`kaiyuan.demo.report/1`), Markdown, a self-contained HTML page (inline
//! CSS and SVG, no scripts, no URLs) and a plain-text table.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use kaiyuan_tokenizer::Tokenizer;
use serde_json::{Value, json};

use crate::demo_cmd::{
    CLEAN_SHARDS, DATASET_MANIFEST, STAGES, VARIANTS, digest_file, read_manifest, read_planted,
    shards,
};

/// The schema tag of `report.json`.
const SCHEMA: &str = "kaiyuan.demo.report/1";

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Every `(id, text)` of the JSONL shards under `clean`, in order.
fn shard_texts(clean: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for path in shards(clean)? {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
            out.push((
                v["id"].as_str().unwrap_or_default().to_owned(),
                v["text"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    Ok(out)
}

/// Unigram entropy (nats per token) of the documents as the trainer sees
/// them: each document's ids followed by one end-of-text token.
fn unigram_entropy(tokenizer: &Tokenizer, texts: &[(String, String)]) -> Result<f64> {
    let eos = tokenizer.token_to_id(kaiyuan_train::trainer::EOS_TOKEN);
    let mut counts: HashMap<u32, u64> = HashMap::new();
    let mut total = 0u64;
    for (_, text) in texts {
        for id in tokenizer.encode(text)?.ids {
            *counts.entry(id).or_default() += 1;
            total += 1;
        }
        if let Some(eos) = eos {
            *counts.entry(eos).or_default() += 1;
            total += 1;
        }
    }
    let n = total.max(1) as f64;
    // Summed in id order: a hash map's order would change the last bits
    // from run to run.
    let mut by_id: Vec<(u32, u64)> = counts.into_iter().collect();
    by_id.sort_unstable();
    Ok(by_id
        .into_iter()
        .map(|(_, c)| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum())
}

/// Every greedy output of an eval report's generation tasks.
fn generations(report: &Value) -> Vec<String> {
    report["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|task| task["details"]["outputs"].as_array().into_iter().flatten())
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// The value of `metric` in the first task of `kind` of an eval report.
fn metric(report: &Value, kind: &str, metric: &str) -> Option<f64> {
    report["tasks"]
        .as_array()?
        .iter()
        .find(|t| t["kind"] == kind)
        .and_then(|t| t["metrics"][metric].as_f64())
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

/// Builds the report from the finished stages under `out` and writes
/// `report.{json,md,html}` and `table.txt` into `dir`.
pub(crate) fn write(out: &Path, dir: &Path) -> Result<()> {
    let report = build(out)?;
    crate::write_atomic(
        &dir.join("report.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    crate::write_atomic(&dir.join("report.md"), markdown(&report))?;
    crate::write_atomic(&dir.join("report.html"), html(&report))?;
    crate::write_atomic(&dir.join("table.txt"), table(&report))?;
    Ok(())
}

fn build(out: &Path) -> Result<Value> {
    let stage = |s: &str| out.join(s);

    // Provenance: the chain of manifests.
    let mut provenance = Vec::new();
    for name in STAGES.iter().take(STAGES.len() - 1) {
        let m = read_manifest(&stage(name))?;
        provenance.push(json!({
            "stage": name,
            "manifest_sha256": digest_file(&stage(name).join("manifest.json"))?.sha256,
            "key": m.key,
            "tool": m.tool,
            "parents": m.parents,
            "files": m.outputs.len(),
            "seconds": m.seconds,
        }));
    }

    // Cleaning, and what became of the planted dirt.
    let planted = read_planted(&stage("data"))?;
    let dataset = read_json(&stage("data").join(DATASET_MANIFEST))?;
    let clean_report = read_json(&stage("clean").join(CLEAN_SHARDS).join("report.json"))?;
    let kept = shard_texts(&stage("clean").join(CLEAN_SHARDS))?;
    let kept_ids: std::collections::HashSet<&str> =
        kept.iter().map(|(id, _)| id.as_str()).collect();
    let pii_values: Vec<&str> = planted.pii.iter().map(|p| p.value.as_str()).collect();
    let pii_in_shards = pii_values
        .iter()
        .filter(|v| kept.iter().any(|(_, t)| t.contains(*v)))
        .count();
    let exact_left = planted
        .exact_duplicates
        .iter()
        .filter(|c| kept_ids.contains(c.record.as_str()))
        .count();
    let near_left = planted
        .near_duplicates
        .iter()
        .filter(|c| kept_ids.contains(c.record.as_str()))
        .count();
    let broken_kept = planted
        .broken
        .iter()
        .filter(|b| kept_ids.contains(b.record.as_str()))
        .count();

    // The tokenizer's vocabulary.
    let tokenizer_path = stage("tokenizer").join("tokenizer.json");
    let tokenizer = Tokenizer::from_file(&tokenizer_path)
        .with_context(|| format!("loading {}", tokenizer_path.display()))?;
    let vocab: Vec<String> = (0..tokenizer.vocab_size() as u32)
        .filter_map(|id| tokenizer.decode(&[id], false).ok())
        .collect();
    let pii_in_vocab = pii_values
        .iter()
        .filter(|v| vocab.iter().any(|t| t.contains(*v)))
        .count();

    // Training.
    let metrics_path = stage("train").join("metrics.jsonl");
    let metrics_text = std::fs::read_to_string(&metrics_path)
        .with_context(|| format!("reading {}", metrics_path.display()))?;
    let mut loss_curve = Vec::new();
    let mut val_curve = Vec::new();
    for line in metrics_text.lines() {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}: a line is not JSON", metrics_path.display()))?;
        if let (Some(step), Some(loss)) = (v["step"].as_u64(), v["loss"].as_f64()) {
            loss_curve.push(json!([step, loss]));
        }
        if let (Some(step), Some(loss)) = (v["step"].as_u64(), v["val_loss"].as_f64()) {
            val_curve.push(json!([step, loss]));
        }
    }
    let final_val = val_curve.last().and_then(|v| v[1].as_f64());
    let entropy = unigram_entropy(&tokenizer, &kept)?;
    let below = final_val.map(|v| 1.0 - v / entropy);

    // Models.
    let mut models = Vec::new();
    let mut outputs = Vec::new();
    for (name, from, sub) in VARIANTS {
        let r = read_json(&stage("eval").join(name).join("report.json"))?;
        outputs.extend(generations(&r));
        models.push(json!({
            "model": name,
            "bytes": dir_bytes(&stage(from).join(sub)),
            "perplexity": metric(&r, "perplexity", "perplexity"),
            "mc_acc": metric(&r, "mc", "acc"),
            "mc_acc_norm": metric(&r, "mc", "acc_norm"),
            "bleu": metric(&r, "generation", "bleu"),
            "chrf": metric(&r, "generation", "chrf"),
            "rougeL": metric(&r, "generation", "rougeL"),
            "prefill_tok_s": metric(&r, "speed", "prefill_tok_s"),
            "decode_tok_s": metric(&r, "speed", "decode_tok_s"),
            "peak_rss_mib": metric(&r, "speed", "peak_rss_mib"),
            "questions": r["tasks"].as_array().and_then(|t| t.iter().find(|t| t["kind"] == "mc")).map(|t| t["details"]["questions"].clone()),
        }));
    }
    let probe = read_json(&stage("eval").join("pii_probe/report/report.json"))?;
    let probe_outputs = generations(&probe);
    outputs.extend(probe_outputs.iter().cloned());
    let pii_in_generations = pii_values
        .iter()
        .filter(|v| outputs.iter().any(|o| o.contains(*v)))
        .count();

    // Lineage: each evaluated model's chain of command manifests, from its
    // scores back to the raw corpus.
    let mut lineage = Vec::new();
    let root = out.canonicalize().unwrap_or_else(|_| out.to_path_buf());
    for (name, _, _) in VARIANTS {
        let links = kaiyuan_provenance::chain(&stage("eval").join(name))
            .with_context(|| format!("the provenance chain of eval/{name}"))?;
        let items: Vec<Value> = links
            .iter()
            .map(|l| {
                let at = l
                    .manifest_path
                    .canonicalize()
                    .unwrap_or_else(|_| l.manifest_path.clone());
                json!({
                    "depth": l.depth,
                    "kind": l.manifest.kind,
                    "manifest": at.strip_prefix(&root).unwrap_or(&at).display().to_string(),
                    "manifest_sha256": l.manifest_sha256,
                    "problems": l.problems,
                })
            })
            .collect();
        lineage.push(json!({
            "model": name,
            "intact": links.iter().all(|l| l.problems.is_empty()),
            "chain": items,
        }));
    }

    let stats = &clean_report["stats"];
    Ok(json!({
        "schema": SCHEMA,
        "tool": format!("kaiyuan {}", env!("CARGO_PKG_VERSION")),
        "seed": dataset["seed"],
        "dataset": { "config": dataset["config"], "counts": dataset["counts"] },
        "provenance": provenance,
        "lineage": lineage,
        "cleaning": {
            "input_records": stats["input_records"],
            "kept": stats["kept"],
            "rejected": stats["rejected"],
            "stages": stats["stages"],
            "rejections": stats["rejections"],
        },
        "checks": {
            "pii_values_planted": pii_values.len(),
            "pii_in_shards": pii_in_shards,
            "pii_in_vocabulary": pii_in_vocab,
            "pii_in_generations": pii_in_generations,
            "pii_probe_prompts": probe_outputs.len(),
            "generations_checked": outputs.len(),
            "exact_duplicates_planted": planted.exact_duplicates.len(),
            "exact_duplicates_left": exact_left,
            "near_duplicates_planted": planted.near_duplicates.len(),
            "near_duplicates_left": near_left,
            "broken_lines_planted": planted.broken.len(),
            "broken_lines_kept": broken_kept,
        },
        "training": {
            "steps": loss_curve.last().map(|v| v[0].clone()),
            "final_val_loss": final_val,
            "unigram_entropy": entropy,
            "val_loss_below_unigram": below,
            "loss_curve": loss_curve,
            "val_curve": val_curve,
        },
        "models": models,
    }))
}

fn num(v: &Value, digits: usize) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.digits$}"),
        None => "–".into(),
    }
}

fn mib(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |b| {
        format!("{:.2}", b / f64::from(1u32 << 20))
    })
}

/// Rows of the model comparison: header, then one row per model.
fn model_rows(report: &Value) -> Vec<Vec<String>> {
    let mut rows = vec![
        [
            "model",
            "size MiB",
            "perplexity",
            "MC acc",
            "BLEU",
            "chrF",
            "ROUGE-L",
            "decode tok/s",
            "peak RSS MiB",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for m in report["models"].as_array().into_iter().flatten() {
        rows.push(vec![
            m["model"].as_str().unwrap_or_default().to_owned(),
            mib(&m["bytes"]),
            num(&m["perplexity"], 3),
            num(&m["mc_acc"], 3),
            num(&m["bleu"], 2),
            num(&m["chrf"], 2),
            num(&m["rougeL"], 3),
            num(&m["decode_tok_s"], 0),
            num(&m["peak_rss_mib"], 0),
        ]);
    }
    rows
}

fn check_lines(report: &Value) -> Vec<String> {
    let c = &report["checks"];
    let t = &report["training"];
    vec![
        format!(
            "planted PII values: {} — in cleaned shards {}, in the tokenizer vocabulary {}, in {} greedy outputs {}",
            c["pii_values_planted"],
            c["pii_in_shards"],
            c["pii_in_vocabulary"],
            c["generations_checked"],
            c["pii_in_generations"]
        ),
        format!(
            "planted duplicates left: exact {} of {}, near {} of {}; broken lines kept: {} of {}",
            c["exact_duplicates_left"],
            c["exact_duplicates_planted"],
            c["near_duplicates_left"],
            c["near_duplicates_planted"],
            c["broken_lines_kept"],
            c["broken_lines_planted"]
        ),
        format!(
            "final validation loss {} nats/token, unigram entropy {} nats/token: {} below",
            num(&t["final_val_loss"], 3),
            num(&t["unigram_entropy"], 3),
            t["val_loss_below_unigram"]
                .as_f64()
                .map_or("–".into(), |b| format!("{:.1} %", b * 100.0))
        ),
    ]
}

/// The plain-text table printed at the end of the demo.
fn table(report: &Value) -> String {
    let rows = model_rows(report);
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut s = String::new();
    for (n, row) in rows.iter().enumerate() {
        for (i, cell) in row.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            if i == 0 {
                let _ = write!(s, "{cell}{}", " ".repeat(pad));
            } else {
                let _ = write!(s, "  {}{cell}", " ".repeat(pad));
            }
        }
        s.push('\n');
        if n == 0 {
            s += &"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1));
            s.push('\n');
        }
    }
    for line in check_lines(report) {
        s += &line;
        s.push('\n');
    }
    s
}

fn markdown(report: &Value) -> String {
    let mut s = String::from("# Kaiyuan demo report\n\n");
    let _ = writeln!(
        s,
        "Seed {}, {}.\n",
        report["seed"],
        report["tool"].as_str().unwrap_or_default()
    );
    s += "## Models\n\n";
    let rows = model_rows(report);
    for (n, row) in rows.iter().enumerate() {
        s += &format!("| {} |\n", row.join(" | "));
        if n == 0 {
            s += &format!("|{}\n", "---|".repeat(row.len()));
        }
    }
    s += "\n## Checks\n\n";
    for line in check_lines(report) {
        let _ = writeln!(s, "- {line}");
    }
    s += "\n## Cleaning\n\n| stage | docs in | docs out | dropped | modified |\n|---|---:|---:|---:|---:|\n";
    for st in report["cleaning"]["stages"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            st["name"].as_str().unwrap_or_default(),
            st["docs_in"],
            st["docs_out"],
            st["dropped"],
            st["modified"]
        );
    }
    s +=
        "\n## Provenance\n\n| stage | manifest SHA-256 | parents | seconds |\n|---|---|---|---:|\n";
    for p in report["provenance"].as_array().into_iter().flatten() {
        let parents: Vec<String> = p["parents"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|q| {
                format!(
                    "{} `{}`",
                    q["stage"].as_str().unwrap_or_default(),
                    &q["manifest_sha256"].as_str().unwrap_or_default()
                        [..12.min(q["manifest_sha256"].as_str().unwrap_or_default().len())]
                )
            })
            .collect();
        let sha = p["manifest_sha256"].as_str().unwrap_or_default();
        let _ = writeln!(
            s,
            "| {} | `{}` | {} | {} |",
            p["stage"].as_str().unwrap_or_default(),
            &sha[..12.min(sha.len())],
            parents.join(", "),
            num(&p["seconds"], 1)
        );
    }
    s += "\n## Lineage\n\nEach model's scores back to the raw corpus, through the manifests the commands wrote (`kaiyuan provenance eval/<model>` prints and checks the same chain).\n";
    for l in report["lineage"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "\n**{}** ({}):\n",
            l["model"].as_str().unwrap_or_default(),
            if l["intact"].as_bool() == Some(true) {
                "intact"
            } else {
                "NOT INTACT"
            }
        );
        for link in l["chain"].as_array().into_iter().flatten() {
            let sha = link["manifest_sha256"].as_str().unwrap_or_default();
            let _ = writeln!(
                s,
                "{}- {} `{}` `{}`",
                "  ".repeat(link["depth"].as_u64().unwrap_or(0) as usize),
                link["kind"].as_str().unwrap_or_default(),
                link["manifest"].as_str().unwrap_or_default(),
                &sha[..12.min(sha.len())]
            );
        }
    }
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One line of a chart: its label, its colour and its (x, y) points.
struct Series<'a> {
    label: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

/// An SVG line chart (the training and validation loss).
fn line_chart(series: &[Series<'_>]) -> String {
    let (w, h, left, bottom, top, right) = (640.0, 300.0, 56.0, 36.0, 16.0, 16.0);
    let points: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    if points.is_empty() {
        return "<p>No loss values were recorded.</p>".into();
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, 0.0f64, f64::MIN);
    for &(x, y) in &points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let (x1, y1) = (x1.max(x0 + 1.0), y1.max(y0 + 1e-9));
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let sy = |y: f64| top + (1.0 - (y - y0) / (y1 - y0)) * (h - top - bottom);
    let mut s = format!(
        "<svg viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\">\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#444\"/>\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"#444\"/>",
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for k in 0..=4 {
        let y = y0 + (y1 - y0) * f64::from(k) / 4.0;
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{y:.2}</text>",
            left - 4.0,
            sy(y) + 4.0
        );
    }
    for k in 0..=4 {
        let x = x0 + (x1 - x0) * f64::from(k) / 4.0;
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{x:.0}</text>",
            sx(x),
            h - bottom + 16.0
        );
    }
    for (
        i,
        Series {
            label,
            color,
            points,
        },
    ) in series.iter().enumerate()
    {
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"{color}\">{}</text>",
            path.join(" "),
            w - right - 150.0,
            top + 14.0 * (i as f64 + 1.0),
            escape(label)
        );
    }
    s += "</svg>";
    s
}

/// An SVG bar chart, one bar per model, of one metric.
fn bar_chart(title: &str, bars: &[(String, f64)]) -> String {
    let (w, bar_h, gap, label_w) = (420.0, 20.0, 8.0, 90.0);
    let h = bars.len() as f64 * (bar_h + gap) + 24.0;
    let max = bars.iter().map(|b| b.1).fold(0.0f64, f64::max).max(1e-12);
    let mut s = format!(
        "<svg viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\">\
         <text x=\"0\" y=\"14\" font-size=\"13\" font-weight=\"bold\">{}</text>",
        escape(title)
    );
    for (i, (name, v)) in bars.iter().enumerate() {
        let y = 22.0 + i as f64 * (bar_h + gap);
        let len = (w - label_w - 70.0) * v / max;
        let _ = write!(
            s,
            "<text x=\"0\" y=\"{:.1}\" font-size=\"12\">{}</text>\
             <rect x=\"{label_w}\" y=\"{y:.1}\" width=\"{len:.1}\" height=\"{bar_h}\" fill=\"#3b6ea5\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\">{v:.3}</text>",
            y + 14.0,
            escape(name),
            label_w + len + 4.0,
            y + 14.0
        );
    }
    s += "</svg>";
    s
}

fn html(report: &Value) -> String {
    let curve = |key: &str| -> Vec<(f64, f64)> {
        report["training"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
            .collect()
    };
    let mut s = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Kaiyuan demo report</title><style>\
         body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}\
         table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}\
         td:first-child,th:first-child,td.text{text-align:left}code{font-size:90%}\
         </style></head><body><h1>Kaiyuan demo report</h1>",
    );
    let _ = write!(
        s,
        "<p>Seed {}, {}.</p><h2>Checks</h2><ul>",
        report["seed"],
        escape(report["tool"].as_str().unwrap_or_default())
    );
    for line in check_lines(report) {
        let _ = write!(s, "<li>{}</li>", escape(&line));
    }
    s += "</ul><h2>Training loss</h2>";
    s += &line_chart(&[
        Series {
            label: "training loss",
            color: "#3b6ea5",
            points: curve("loss_curve"),
        },
        Series {
            label: "validation loss",
            color: "#c0392b",
            points: curve("val_curve"),
        },
    ]);
    s += "<h2>Models</h2><table>";
    for (n, row) in model_rows(report).iter().enumerate() {
        let tag = if n == 0 { "th" } else { "td" };
        s += "<tr>";
        for cell in row {
            let _ = write!(s, "<{tag}>{}</{tag}>", escape(cell));
        }
        s += "</tr>";
    }
    s += "</table>";
    let models: Vec<&Value> = report["models"].as_array().into_iter().flatten().collect();
    for (key, title) in [
        ("mc_acc", "Multiple-choice accuracy"),
        ("bleu", "BLEU on held-out translations"),
        ("perplexity", "Perplexity (lower is better)"),
        ("decode_tok_s", "Decode tokens/s"),
    ] {
        let bars: Vec<(String, f64)> = models
            .iter()
            .filter_map(|m| Some((m["model"].as_str()?.to_owned(), m[key].as_f64()?)))
            .collect();
        if !bars.is_empty() {
            s += &bar_chart(title, &bars);
        }
    }
    s += "<h2>Cleaning</h2><table><tr><th>stage</th><th>docs in</th><th>docs out</th><th>dropped</th><th>modified</th></tr>";
    for st in report["cleaning"]["stages"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(st["name"].as_str().unwrap_or_default()),
            st["docs_in"],
            st["docs_out"],
            st["dropped"],
            st["modified"]
        );
    }
    s += "</table><h2>Provenance</h2><table><tr><th>stage</th><th>manifest SHA-256</th><th>parents</th><th>seconds</th></tr>";
    let mut short: BTreeMap<String, String> = BTreeMap::new();
    for p in report["provenance"].as_array().into_iter().flatten() {
        let sha = p["manifest_sha256"].as_str().unwrap_or_default();
        short.insert(sha.to_owned(), sha.chars().take(12).collect());
        let parents: Vec<String> = p["parents"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|q| {
                let stage = q["stage"].as_str().unwrap_or_default();
                let sha: String = q["manifest_sha256"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(12)
                    .collect();
                format!("{} <code>{}</code>", escape(stage), escape(&sha))
            })
            .collect();
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"text\"><code>{}</code></td><td class=\"text\">{}</td><td>{}</td></tr>",
            escape(p["stage"].as_str().unwrap_or_default()),
            escape(short.get(sha).map_or("", String::as_str)),
            parents.join(", "),
            num(&p["seconds"], 1)
        );
    }
    s += "</table><h2>Lineage</h2><p>Each model's scores back to the raw corpus, through the manifests the commands wrote.</p>";
    for l in report["lineage"].as_array().into_iter().flatten() {
        let _ = write!(
            s,
            "<h3>{} ({})</h3><ul>",
            escape(l["model"].as_str().unwrap_or_default()),
            if l["intact"].as_bool() == Some(true) {
                "intact"
            } else {
                "NOT INTACT"
            }
        );
        let mut depth = 0u64;
        for link in l["chain"].as_array().into_iter().flatten() {
            let d = link["depth"].as_u64().unwrap_or(0);
            while depth < d {
                s += "<ul>";
                depth += 1;
            }
            while depth > d {
                s += "</ul>";
                depth -= 1;
            }
            let sha: String = link["manifest_sha256"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(12)
                .collect();
            let _ = write!(
                s,
                "<li>{} <code>{}</code> <code>{}</code></li>",
                escape(link["kind"].as_str().unwrap_or_default()),
                escape(link["manifest"].as_str().unwrap_or_default()),
                escape(&sha)
            );
        }
        while depth > 0 {
            s += "</ul>";
            depth -= 1;
        }
        s += "</ul>";
    }
    s += "</body></html>\n";
    s
}
