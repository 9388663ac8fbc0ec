//! What a run did: counts and bytes per stage, rejections per rule,
//! counters, histograms; written as `report.json` (schema
//! `kaiyuan.data.report/1`), `report.md` and SVG charts.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The report's schema name and version.
pub const REPORT_SCHEMA: &str = "kaiyuan.data.report/1";

/// Counts for one stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageStats {
    /// The stage name.
    pub name: String,
    /// Documents that reached the stage.
    pub docs_in: u64,
    /// Documents it passed on.
    pub docs_out: u64,
    /// Documents whose text it changed.
    pub modified: u64,
    /// Documents it dropped.
    pub dropped: u64,
    /// UTF-8 bytes of text that reached it.
    pub bytes_in: u64,
    /// UTF-8 bytes of text it passed on.
    pub bytes_out: u64,
}

/// A histogram over log₂ buckets of a non-negative integer: bucket 0 holds
/// 0, bucket k holds `[2^(k−1), 2^k)`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Log2Histogram {
    /// Counts per bucket.
    pub counts: Vec<u64>,
}

impl Log2Histogram {
    /// Adds one value.
    pub fn add(&mut self, value: u64) {
        let bucket = (64 - value.leading_zeros()) as usize;
        if self.counts.len() <= bucket {
            self.counts.resize(bucket + 1, 0);
        }
        self.counts[bucket] += 1;
    }

    /// Adds another histogram.
    pub fn merge(&mut self, other: &Log2Histogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    fn labelled(&self) -> Vec<(String, u64)> {
        self.counts
            .iter()
            .enumerate()
            .map(|(k, &n)| {
                (
                    if k == 0 {
                        "0".to_string()
                    } else {
                        format!("<{}", human_count(1u64 << k))
                    },
                    n,
                )
            })
            .collect()
    }
}

fn human_count(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{}M", n >> 20)
    } else if n >= 1 << 10 {
        format!("{}K", n >> 10)
    } else {
        n.to_string()
    }
}

/// A deterministic sample of a metric's values: the `capacity` values whose
/// record `seq` hashes lowest. Mergeable across shards, and independent of
/// thread counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    /// Values seen.
    pub count: u64,
    /// (priority, value) pairs kept, sorted by priority.
    pub sample: Vec<(u64, f64)>,
}

const SAMPLE_CAPACITY: usize = 4096;

impl MetricSample {
    /// Adds the value of record `seq`.
    pub fn add(&mut self, seq: u64, value: f64) {
        self.count += 1;
        let priority = xxhash_rust::xxh3::xxh3_64(&seq.to_le_bytes());
        if self.sample.len() >= SAMPLE_CAPACITY
            && self.sample.last().is_some_and(|&(p, _)| priority >= p)
        {
            return;
        }
        let at = self.sample.partition_point(|&(p, _)| p < priority);
        self.sample.insert(at, (priority, value));
        self.sample.truncate(SAMPLE_CAPACITY);
    }

    /// Adds another sample.
    pub fn merge(&mut self, other: &MetricSample) {
        self.count += other.count;
        let mut all: Vec<(u64, f64)> = self.sample.iter().chain(&other.sample).copied().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        all.truncate(SAMPLE_CAPACITY);
        self.sample = all;
    }

    /// 20 equal-width bins over the sample's range, with labels.
    fn binned(&self) -> Vec<(String, u64)> {
        let values: Vec<f64> = self
            .sample
            .iter()
            .map(|&(_, v)| v)
            .filter(|v| v.is_finite())
            .collect();
        let (Some(min), Some(max)) = (
            values.iter().copied().reduce(f64::min),
            values.iter().copied().reduce(f64::max),
        ) else {
            return Vec::new();
        };
        let bins = 20usize;
        let width = if max > min {
            (max - min) / bins as f64
        } else {
            1.0
        };
        let mut counts = vec![0u64; bins];
        for v in values {
            let k = (((v - min) / width) as usize).min(bins - 1);
            counts[k] += 1;
        }
        counts
            .into_iter()
            .enumerate()
            .map(|(k, n)| (format!("{:.3}", min + width * k as f64), n))
            .collect()
    }
}

/// Everything a run (or one shard of it) counted. Shard reports add up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Records read (lines, paragraphs or files, plus one per file-level
    /// problem), over all shards.
    pub input_records: u64,
    /// Bytes of decompressed input read.
    pub input_bytes: u64,
    /// Documents written to the shards.
    pub kept: u64,
    /// UTF-8 bytes of text written.
    pub kept_text_bytes: u64,
    /// Records written to `rejected.jsonl`.
    pub rejected: u64,
    /// Per-stage counts, in pipeline order.
    pub stages: Vec<StageStats>,
    /// Rejected records per rule code.
    pub rejections: BTreeMap<String, u64>,
    /// Counters recorded by stages (PII found per kind, UTF-8 repairs…).
    pub counters: BTreeMap<String, u64>,
    /// Text length in characters of documents read.
    pub input_length_chars: Log2Histogram,
    /// Text length in characters of documents kept.
    pub kept_length_chars: Log2Histogram,
    /// Samples of the metrics recorded by stages.
    pub metrics: BTreeMap<String, MetricSample>,
}

impl Stats {
    /// The stage entry named `name`, created (at the end) if missing.
    pub fn stage_mut(&mut self, name: &str) -> &mut StageStats {
        if let Some(at) = self.stages.iter().position(|s| s.name == name) {
            return &mut self.stages[at];
        }
        self.stages.push(StageStats {
            name: name.to_string(),
            ..StageStats::default()
        });
        let last = self.stages.len() - 1;
        &mut self.stages[last]
    }

    /// Adds a rejection by `code`.
    pub fn reject(&mut self, code: &str) {
        self.rejected += 1;
        *self.rejections.entry(code.to_string()).or_default() += 1;
    }

    /// Adds another shard's stats.
    pub fn merge(&mut self, other: &Stats) {
        self.input_records += other.input_records;
        self.input_bytes += other.input_bytes;
        self.kept += other.kept;
        self.kept_text_bytes += other.kept_text_bytes;
        self.rejected += other.rejected;
        for stage in &other.stages {
            let s = self.stage_mut(&stage.name);
            s.docs_in += stage.docs_in;
            s.docs_out += stage.docs_out;
            s.modified += stage.modified;
            s.dropped += stage.dropped;
            s.bytes_in += stage.bytes_in;
            s.bytes_out += stage.bytes_out;
        }
        for (code, n) in &other.rejections {
            *self.rejections.entry(code.clone()).or_default() += n;
        }
        for (name, n) in &other.counters {
            *self.counters.entry(name.clone()).or_default() += n;
        }
        self.input_length_chars.merge(&other.input_length_chars);
        self.kept_length_chars.merge(&other.kept_length_chars);
        for (name, sample) in &other.metrics {
            self.metrics.entry(name.clone()).or_default().merge(sample);
        }
    }

    /// True when every record is accounted for: `input_records = kept + rejected`.
    pub fn balanced(&self) -> bool {
        self.input_records == self.kept + self.rejected
    }
}

/// The `report.json` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Always [`REPORT_SCHEMA`].
    pub schema: String,
    /// Input paths, in order.
    pub inputs: Vec<String>,
    /// Shard files written.
    pub shards: Vec<String>,
    /// Seconds the run took (merge included; summed over shards for a
    /// sharded run's per-document phase).
    pub seconds: f64,
    /// The counts.
    pub stats: Stats,
}

impl Report {
    /// The Markdown summary: totals, the per-stage table, rejections per
    /// rule, counters, and links to the SVG charts.
    pub fn to_markdown(&self, charts: &[(String, String)]) -> String {
        let s = &self.stats;
        let mut md = String::new();
        md.push_str("# Data pipeline report\n\n");
        md.push_str(&format!(
            "Schema `{}`. Inputs: {}.\n\n",
            self.schema,
            self.inputs.join(", ")
        ));
        md.push_str(&format!(
            "| input records | input bytes | kept | rejected | kept text bytes | balanced |\n|---:|---:|---:|---:|---:|---|\n| {} | {} | {} | {} | {} | {} |\n\n",
            s.input_records,
            s.input_bytes,
            s.kept,
            s.rejected,
            s.kept_text_bytes,
            if s.balanced() { "yes" } else { "NO" }
        ));
        md.push_str("## Stages\n\n| stage | docs in | docs out | dropped | modified | bytes in | bytes out |\n|---|---:|---:|---:|---:|---:|---:|\n");
        for st in &s.stages {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                st.name,
                st.docs_in,
                st.docs_out,
                st.dropped,
                st.modified,
                st.bytes_in,
                st.bytes_out
            ));
        }
        md.push_str("\n## Rejections by rule\n\n| rule | records |\n|---|---:|\n");
        for (code, n) in &s.rejections {
            md.push_str(&format!("| `{code}` | {n} |\n"));
        }
        if !s.counters.is_empty() {
            md.push_str("\n## Counters\n\n| counter | value |\n|---|---:|\n");
            for (name, n) in &s.counters {
                md.push_str(&format!("| `{name}` | {n} |\n"));
            }
        }
        if !charts.is_empty() {
            md.push_str("\n## Histograms\n\n");
            for (title, file) in charts {
                md.push_str(&format!("### {title}\n\n![{title}]({file})\n\n"));
            }
        }
        md
    }

    /// The SVG charts as (title, file name, SVG text).
    pub fn charts(&self) -> Vec<(String, String, String)> {
        let s = &self.stats;
        let mut out = vec![
            (
                "Document length (characters), input".to_string(),
                "hist-length-input.svg".to_string(),
                bar_chart_svg(
                    "Document length (characters), input",
                    &s.input_length_chars.labelled(),
                ),
            ),
            (
                "Document length (characters), kept".to_string(),
                "hist-length-kept.svg".to_string(),
                bar_chart_svg(
                    "Document length (characters), kept",
                    &s.kept_length_chars.labelled(),
                ),
            ),
        ];
        for (name, sample) in &s.metrics {
            let file = format!(
                "hist-{}.svg",
                name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
            );
            let title = format!(
                "{name} (sample of {} of {} values)",
                sample.sample.len(),
                sample.count
            );
            out.push((title.clone(), file, bar_chart_svg(&title, &sample.binned())));
        }
        out
    }
}

/// A self-contained SVG bar chart (no scripts, fonts or external URLs).
pub fn bar_chart_svg(title: &str, bars: &[(String, u64)]) -> String {
    let (width, height, left, bottom, top) = (720.0f64, 320.0f64, 60.0f64, 60.0f64, 30.0f64);
    let max = bars.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let n = bars.len().max(1) as f64;
    let slot = (width - left - 10.0) / n;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"10\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"13\">{}</text>\n",
        width / 2.0,
        xml_escape(title)
    );
    let plot_h = height - bottom - top;
    svg.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\n",
        height - bottom,
        width - 10.0,
        height - bottom,
        left - 4.0,
        top + 4.0,
        max as u64,
        left - 4.0,
        height - bottom
    ));
    for (i, (label, count)) in bars.iter().enumerate() {
        let h = *count as f64 / max * plot_h;
        let x = left + i as f64 * slot;
        svg.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#4472c4\"><title>{}: {}</title></rect>\n",
            x + 1.0,
            height - bottom - h,
            (slot - 2.0).max(1.0),
            h,
            xml_escape(label),
            count
        ));
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" transform=\"rotate(45 {:.1} {:.1})\">{}</text>\n",
            x + slot / 2.0,
            height - bottom + 12.0,
            x + slot / 2.0,
            height - bottom + 12.0,
            xml_escape(label)
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
