//! Suite reports: JSON (schema `kaiyuan.eval.report/1`, the input of
//! `eval compare`), Markdown, and one self-contained HTML page (inline CSS
//! and SVG charts, no scripts, no external URLs: it opens offline).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::ab::Metric;
use crate::{EvalError, Result};

/// The JSON schema name of a suite report.
pub const REPORT_SCHEMA: &str = "kaiyuan.eval.report/1";

/// One task's results.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskReport {
    /// The task's name.
    pub name: String,
    /// Its kind (`perplexity`, `mc`, `generation`, `speed`).
    pub kind: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Metrics by name.
    pub metrics: BTreeMap<String, Metric>,
    /// Task-specific details (counts, per-subject scores, samples).
    pub details: Value,
    /// Bars for the HTML chart: label and value.
    pub chart: Vec<(String, f64)>,
    /// What the task measured on ([`crate::task_provenance`]); `Null` when
    /// unknown.
    pub provenance: Value,
}

/// A suite's results on one model.
#[derive(Clone, Debug, PartialEq)]
pub struct SuiteReport {
    /// The suite's name.
    pub suite: String,
    /// Its description.
    pub description: String,
    /// The model (as given on the command line).
    pub model: String,
    /// When the run finished (seconds since the Unix epoch).
    pub created_unix: u64,
    /// Every task, in suite order.
    pub tasks: Vec<TaskReport>,
}

fn finite(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

impl SuiteReport {
    /// The report as JSON: the tasks, and a flat `metrics` object named
    /// `task/metric` that `eval compare` reads.
    ///
    /// ```
    /// use kaiyuan_eval::ab::Metric;
    /// use kaiyuan_eval::report::{SuiteReport, TaskReport};
    /// let task = TaskReport { name: "mmlu".into(), kind: "mc".into(), seconds: 1.0,
    ///     metrics: [("acc".to_string(), Metric::mean(&[1.0, 0.0], true))].into(),
    ///     details: serde_json::Value::Null, chart: vec![], provenance: serde_json::Value::Null };
    /// let report = SuiteReport { suite: "s".into(), description: String::new(), model: "m".into(),
    ///     created_unix: 0, tasks: vec![task] };
    /// let json = report.to_json();
    /// assert_eq!(json["schema"], "kaiyuan.eval.report/1");
    /// assert_eq!(json["metrics"]["mmlu/acc"]["value"], 0.5);
    /// ```
    pub fn to_json(&self) -> Value {
        let mut flat = serde_json::Map::new();
        let provenance: serde_json::Map<String, Value> = self
            .tasks
            .iter()
            .filter(|t| !t.provenance.is_null())
            .map(|t| (t.name.clone(), t.provenance.clone()))
            .collect();
        let tasks: Vec<Value> = self
            .tasks
            .iter()
            .map(|t| {
                let mut metrics = serde_json::Map::new();
                for (name, m) in &t.metrics {
                    flat.insert(format!("{}/{name}", t.name), m.to_json());
                    metrics.insert(name.clone(), finite(m.value));
                }
                json!({"name": t.name, "kind": t.kind, "seconds": t.seconds, "metrics": metrics, "details": t.details})
            })
            .collect();
        json!({
            "schema": REPORT_SCHEMA,
            "suite": self.suite,
            "description": self.description,
            "model": self.model,
            "created_unix": self.created_unix,
            "kaiyuan_version": env!("CARGO_PKG_VERSION"),
            "tasks": tasks,
            "metrics": flat,
            "task_provenance": provenance,
        })
    }

    /// The report as Markdown: one table row per metric.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Evaluation: {} on {}\n", self.suite, self.model);
        if !self.description.is_empty() {
            let _ = writeln!(out, "{}\n", self.description);
        }
        let _ = writeln!(out, "| task | kind | metric | value | better | seconds |");
        let _ = writeln!(out, "|---|---|---|---:|---|---:|");
        for t in &self.tasks {
            for (name, m) in &t.metrics {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {:.2} |",
                    t.name,
                    t.kind,
                    name,
                    format_value(m.value),
                    if m.higher_is_better {
                        "higher"
                    } else {
                        "lower"
                    },
                    t.seconds
                );
            }
        }
        out
    }

    /// The report as one self-contained HTML page: a table per task and an
    /// inline SVG bar chart where the task has one.
    pub fn to_html(&self) -> String {
        let mut body = String::new();
        for t in &self.tasks {
            let _ = write!(
                body,
                "<section><h2>{} <small>{} · {:.2} s</small></h2><table><tr><th>metric</th><th>value</th><th>better</th><th>items</th></tr>",
                escape(&t.name),
                escape(&t.kind),
                t.seconds
            );
            for (name, m) in &t.metrics {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td class=num>{}</td><td>{}</td><td class=num>{}</td></tr>",
                    escape(name),
                    format_value(m.value),
                    if m.higher_is_better {
                        "↑ higher"
                    } else {
                        "↓ lower"
                    },
                    m.samples.len()
                );
            }
            body.push_str("</table>");
            if !t.chart.is_empty() {
                body.push_str(&bar_chart(&t.chart));
            }
            body.push_str("</section>\n");
        }
        format!(
            "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>{title}</title><style>{CSS}</style></head><body><h1>{title}</h1><p>{desc}</p>\n{body}</body></html>\n",
            title = escape(&format!("Evaluation: {} on {}", self.suite, self.model)),
            desc = escape(&self.description),
        )
    }

    /// Writes `report.json`, `report.md` and `report.html` into `dir`
    /// (created if missing), each through a temporary file renamed into
    /// place.
    ///
    /// # Errors
    ///
    /// [`EvalError::InvalidInput`] naming the file that could not be written.
    pub fn write_all(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)
            .map_err(|e| EvalError::input(dir.display().to_string(), e.to_string()))?;
        let json = serde_json::to_string_pretty(&self.to_json()).unwrap_or_default();
        for (name, text) in [
            ("report.json", json),
            ("report.md", self.to_markdown()),
            ("report.html", self.to_html()),
        ] {
            let path = dir.join(name);
            let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
            std::fs::write(&tmp, text)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| EvalError::input(path.display().to_string(), e.to_string()))?;
        }
        Ok(())
    }
}

const CSS: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
td.num{text-align:right;font-variant-numeric:tabular-nums}small{color:#777;font-weight:normal}\
svg text{font:12px system-ui,sans-serif}";

fn format_value(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v.abs() >= 1e6 {
        format!("{v:.4e}")
    } else {
        format!("{v:.4}")
    }
}

/// Text safe inside HTML elements and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A horizontal bar chart as inline SVG (bars scaled to the largest value).
fn bar_chart(bars: &[(String, f64)]) -> String {
    let (label_w, bar_w, row_h) = (220.0, 360.0, 22.0);
    let max = bars
        .iter()
        .map(|(_, v)| *v)
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let height = row_h * bars.len() as f64 + 8.0;
    let mut svg = format!(
        "<svg role=img width=\"{}\" height=\"{height}\" viewBox=\"0 0 {} {height}\">",
        label_w + bar_w + 90.0,
        label_w + bar_w + 90.0
    );
    for (i, (label, value)) in bars.iter().enumerate() {
        let y = 4.0 + row_h * i as f64;
        let w = if max > 0.0 && value.is_finite() {
            (value / max * bar_w).max(0.0)
        } else {
            0.0
        };
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=end>{}</text><rect x=\"{label_w}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\" fill=\"#4a7fb5\"/><text x=\"{}\" y=\"{}\">{}</text>",
            label_w - 6.0,
            y + 15.0,
            escape(label),
            row_h - 6.0,
            label_w + w + 6.0,
            y + 15.0,
            format_value(*value)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> SuiteReport {
        let mut metrics = BTreeMap::new();
        metrics.insert("acc".to_string(), Metric::mean(&[1.0, 0.0, 1.0], true));
        SuiteReport {
            suite: "smoke <&>".into(),
            description: "a \"test\"".into(),
            model: "m".into(),
            created_unix: 1,
            tasks: vec![TaskReport {
                name: "mmlu".into(),
                kind: "mc".into(),
                seconds: 0.5,
                metrics,
                details: Value::Null,
                provenance: Value::Null,
                chart: vec![("anatomy".into(), 0.5), ("<law>".into(), 1.0)],
            }],
        }
    }

    #[test]
    fn html_is_self_contained_and_escaped() {
        let html = report().to_html();
        assert!(
            !html.contains("http://") && !html.contains("https://") && !html.contains("<script")
        );
        assert!(html.contains("smoke &lt;&amp;&gt;") && html.contains("&lt;law&gt;"));
        assert!(html.contains("<svg") && html.matches("<rect").count() == 2);
    }

    #[test]
    fn markdown_and_json_carry_every_metric() {
        let r = report();
        assert!(
            r.to_markdown()
                .contains("| mmlu | mc | acc | 0.6667 | higher |")
        );
        let json = r.to_json();
        assert_eq!(
            json["metrics"]["mmlu/acc"]["samples"]
                .as_array()
                .map(Vec::len),
            Some(3)
        );
        assert_eq!(json["tasks"][0]["metrics"]["acc"], json!(2.0 / 3.0));
    }

    #[test]
    fn files_are_written_atomically_into_place() {
        let dir = std::env::temp_dir().join(format!("kaiyuan-report-{}", std::process::id()));
        report().write_all(&dir).unwrap();
        for name in ["report.json", "report.md", "report.html"] {
            assert!(dir.join(name).is_file(), "{name}");
        }
        let leftovers = std::fs::read_dir(&dir).unwrap().filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().contains(".tmp"))
        });
        assert_eq!(leftovers.count(), 0);
        std::fs::remove_dir_all(&dir).ok();
    }
}
