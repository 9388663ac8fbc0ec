//! The pipeline end to end: nothing is lost, the output does not depend on
//! threads, shards or the memory budget, and MinHash finds injected near
//! duplicates.

use kaiyuan_data::minhash::MinHasher;
use kaiyuan_data::pipeline::{self, PipelineConfig, RunOptions, Shard};
use kaiyuan_data::report::Report;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kaiyuan-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read_report(dir: &Path) -> Report {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap()
}

/// Every output file's bytes, except report.json's timing.
fn outputs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() {
            continue;
        }
        if name == "report.json" {
            let mut report = read_report(dir);
            report.seconds = 0.0;
            out.insert(name, serde_json::to_vec(&report.stats).unwrap());
        } else {
            out.insert(name, std::fs::read(entry.path()).unwrap());
        }
    }
    out
}

fn rejected_codes(dir: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(dir.join("rejected.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["seq"].as_u64().unwrap(),
                v["code"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const CORPUS: &str = include_str!("../../../fixtures/tokenizer/train_corpus_en_zh.txt");

/// Documents of at least `words` words (or `words` characters for Chinese),
/// made by joining consecutive corpus lines (the corpus has one line of
/// Botchan or of a classical Chinese text per line).
fn documents(words: usize, separator: char) -> Vec<String> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut count = 0;
    for line in CORPUS.lines() {
        if !current.is_empty() {
            current.push(separator);
        }
        current.push_str(line);
        count += if line.is_ascii() {
            line.split_whitespace().count()
        } else {
            line.chars().count()
        };
        if count >= words {
            docs.push(std::mem::take(&mut current));
            count = 0;
        }
    }
    docs
}

#[test]
fn nothing_is_lost_on_a_corpus_of_broken_inputs() {
    let dir = temp_dir("broken");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    // a.jsonl: good lines and every kind of bad line.
    let mut a = std::fs::File::create(input.join("a.jsonl")).unwrap();
    writeln!(
        a,
        r#"{{"id": "good-1", "text": "A good English document about rivers.", "url": "x"}}"#
    )
    .unwrap();
    writeln!(a, r#"{{"id": "broken", "text": "unterminated"#).unwrap();
    writeln!(a, r#"{{"id": "num", "text": 42}}"#).unwrap();
    writeln!(a, r#"{{"id": "none", "body": "no text field"}}"#).unwrap();
    writeln!(a, r#"[1, 2, 3]"#).unwrap();
    writeln!(a).unwrap();
    a.write_all(b"{\"id\": \"latin1\", \"text\": \"caf\xe9\"}\n")
        .unwrap();
    writeln!(
        a,
        r#"{{"id": "good-2", "text": "一份关于河流的中文文档。"}}"#
    )
    .unwrap();
    drop(a);
    // big.jsonl: one 100 MB line between two good ones.
    let mut big = std::io::BufWriter::new(std::fs::File::create(input.join("big.jsonl")).unwrap());
    writeln!(
        big,
        r#"{{"id": "before-big", "text": "before the big line"}}"#
    )
    .unwrap();
    big.write_all(br#"{"id": "huge", "text": ""#).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..100 {
        big.write_all(&chunk).unwrap();
    }
    big.write_all(b"\"}\n").unwrap();
    writeln!(
        big,
        r#"{{"id": "after-big", "text": "after the big line"}}"#
    )
    .unwrap();
    drop(big);
    // empty.jsonl, and a truncated gzip of 200 lines.
    std::fs::File::create(input.join("empty.jsonl")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for i in 0..200 {
        writeln!(
            gz,
            r#"{{"id": "gz-{i}", "text": "compressed line number {i} with its own words {}"}}"#,
            i * 7919
        )
        .unwrap();
    }
    let gz = gz.finish().unwrap();
    std::fs::write(input.join("trunc.jsonl.gz"), &gz[..gz.len() * 2 / 3]).unwrap();
    // A zstd text file of paragraphs.
    let paragraphs =
        "First paragraph of plain text.\n\nSecond paragraph,\nstill second.\n\n\nThird.\n";
    std::fs::write(
        input.join("text.txt.zst"),
        zstd::encode_all(paragraphs.as_bytes(), 3).unwrap(),
    )
    .unwrap();

    let config = PipelineConfig::from_toml(
        "[input]\ninvalid_utf8 = \"reject\"\n[[stages]]\nkind = \"normalize\"\n[[stages]]\nkind = \"exact_dedup\"\n",
        "test",
    )
    .unwrap();
    let out = dir.join("out");
    let report = pipeline::run(
        &config,
        std::slice::from_ref(&input),
        &out,
        &RunOptions::default(),
    )
    .unwrap();
    let stats = &report.stats;
    assert!(
        stats.balanced(),
        "input {} != kept {} + rejected {}",
        stats.input_records,
        stats.kept,
        stats.rejected
    );
    let codes: Vec<String> = rejected_codes(&out).into_iter().map(|(_, c)| c).collect();
    for expected in [
        "input.malformed_json",
        "input.text_not_string",
        "input.missing_text",
        "input.not_an_object",
        "input.blank_line",
        "input.invalid_utf8",
        "input.too_long",
        "input.empty_file",
        "input.read_error",
    ] {
        assert!(
            codes.iter().any(|c| c == expected),
            "no `{expected}` in {codes:?}"
        );
    }
    // The rejects file holds exactly the rejected count, and shards the kept.
    assert_eq!(codes.len() as u64, stats.rejected);
    let kept_lines: usize = report
        .shards
        .iter()
        .map(|s| {
            std::fs::read_to_string(out.join(s))
                .unwrap()
                .lines()
                .count()
        })
        .sum();
    assert_eq!(kept_lines as u64, stats.kept);
    // The too-long record keeps a prefix and its length; the huge line was
    // never held whole (max_record_bytes is 16 MiB).
    let rejected = std::fs::read_to_string(out.join("rejected.jsonl")).unwrap();
    let huge = rejected
        .lines()
        .find(|l| l.contains("input.too_long"))
        .unwrap();
    let huge: serde_json::Value = serde_json::from_str(huge).unwrap();
    assert!(huge["raw_total_bytes"].as_u64().unwrap() > 100 << 20);
    assert!(huge["source"].as_str().unwrap().ends_with("big.jsonl:2"));
    // The truncated gzip gave its complete lines before the error.
    let gz_kept = std::fs::read_to_string(out.join(&report.shards[0]))
        .unwrap()
        .matches("\"gz-")
        .count();
    assert!(gz_kept > 50 && gz_kept < 200, "{gz_kept} gzip lines kept");
    // Other fields survive, and the kept text is the cleaned text.
    let shard = std::fs::read_to_string(out.join(&report.shards[0])).unwrap();
    assert!(
        shard.contains(
            r#"{"id":"good-1","text":"A good English document about rivers.","url":"x"}"#
        )
    );
    assert!(shard.contains("Second paragraph,\\nstill second."));
    // Reports carry their schema, and nothing temporary is left behind.
    assert_eq!(report.schema, "kaiyuan.data.report/1");
    assert!(out.join("report.md").exists());
    for entry in std::fs::read_dir(&out).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with('.') && name != "parts",
            "left behind: {name}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn corpus_jsonl(dir: &Path) -> PathBuf {
    // Real paragraphs, each twice in places (exact duplicates) and with
    // light edits (near duplicates).
    let path = dir.join("corpus.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for (i, line) in documents(60, '\n').iter().enumerate() {
        let line = line.as_str();
        writeln!(
            f,
            "{}",
            serde_json::json!({"id": format!("p{i}"), "text": line})
        )
        .unwrap();
        if i % 7 == 0 {
            writeln!(
                f,
                "{}",
                serde_json::json!({"id": format!("p{i}-copy"), "text": line.to_uppercase()})
            )
            .unwrap();
        }
        if i % 5 == 0 && line.split_whitespace().count() > 40 {
            let edited = format!("{line} Indeed.");
            writeln!(
                f,
                "{}",
                serde_json::json!({"id": format!("p{i}-edit"), "text": edited})
            )
            .unwrap();
        }
    }
    path
}

const DEDUP_CONFIG: &str = "[[stages]]\nkind = \"normalize\"\n[[stages]]\nkind = \"language\"\n[[stages]]\nkind = \"exact_dedup\"\n[[stages]]\nkind = \"minhash_dedup\"\n";

#[test]
fn output_is_identical_across_threads_shards_and_memory_budgets() {
    let dir = temp_dir("determinism");
    let input = corpus_jsonl(&dir);
    // The default pipeline: every per-document stage, then both dedups.
    let config = PipelineConfig::from_toml(
        include_str!("../../../fixtures/pipeline.toml"),
        "fixtures/pipeline.toml",
    )
    .unwrap();
    let run = |name: &str, options: RunOptions<'_>| {
        let out = dir.join(name);
        pipeline::run(&config, std::slice::from_ref(&input), &out, &options).unwrap();
        out
    };
    let one = run(
        "t1",
        RunOptions {
            threads: Some(1),
            ..RunOptions::default()
        },
    );
    let two = run(
        "t2",
        RunOptions {
            threads: Some(2),
            ..RunOptions::default()
        },
    );
    let tiny = run(
        "tiny",
        RunOptions {
            threads: Some(2),
            memory_budget: 64 << 10,
            ..RunOptions::default()
        },
    );
    let reference = outputs(&one);
    let report = read_report(&one);
    assert!(
        report
            .stats
            .rejections
            .get("exact_dedup.duplicate")
            .copied()
            .unwrap_or(0)
            > 30
    );
    assert!(
        report
            .stats
            .rejections
            .get("minhash_dedup.near_duplicate")
            .copied()
            .unwrap_or(0)
            > 30
    );
    assert_eq!(outputs(&two), reference, "1 vs 2 threads");
    assert_eq!(outputs(&tiny), reference, "256 MB vs 64 KB memory budget");
    // Three shards, merged, equal the single run.
    let sharded = dir.join("sharded");
    for index in 0..3 {
        let options = RunOptions {
            threads: Some(1),
            ..RunOptions::default()
        };
        pipeline::run_shard(
            &config,
            std::slice::from_ref(&input),
            &sharded,
            Shard { index, count: 3 },
            &options,
        )
        .unwrap();
    }
    pipeline::merge(&config, &sharded, &RunOptions::default()).unwrap();
    let merged = outputs(&sharded);
    for (name, bytes) in &reference {
        assert!(
            merged.get(name) == Some(bytes),
            "3 shards + merge vs one run: {name} differs"
        );
    }
    assert_eq!(
        merged.len(),
        reference.len(),
        "3 shards + merge vs one run: file sets differ"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn merge_refuses_missing_parts_and_other_configs() {
    let dir = temp_dir("merge-errors");
    let input = corpus_jsonl(&dir);
    let config = PipelineConfig::from_toml(DEDUP_CONFIG, "test").unwrap();
    let out = dir.join("out");
    pipeline::run_shard(
        &config,
        std::slice::from_ref(&input),
        &out,
        Shard { index: 0, count: 2 },
        &RunOptions::default(),
    )
    .unwrap();
    let err = pipeline::merge(&config, &out, &RunOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("parts [1] of 2 are missing"), "{err}");
    let other = PipelineConfig::from_toml("[[stages]]\nkind = \"exact_dedup\"\n", "other").unwrap();
    let err = pipeline::merge(&other, &out, &RunOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("different pipeline configuration"), "{err}");
    // A damaged part is an error, not a panic or a silent loss.
    pipeline::run_shard(
        &config,
        std::slice::from_ref(&input),
        &out,
        Shard { index: 1, count: 2 },
        &RunOptions::default(),
    )
    .unwrap();
    let band = out.join("parts/part-00000-of-00002/band-000.bin");
    let bytes = std::fs::read(&band).unwrap();
    std::fs::write(&band, &bytes[..bytes.len() - 8]).unwrap();
    let err = pipeline::merge(&config, &out, &RunOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("band-000.bin") && err.contains("damaged"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Near duplicates of known similarity: each real paragraph is followed by
/// a copy with a random share of its words replaced; the exact Jaccard of
/// the two shingle sets decides whether the copy should be dropped.
#[test]
fn minhash_recall_and_precision_on_injected_near_duplicates() {
    let dir = temp_dir("near-dups");
    let threshold = 0.8;
    let hasher = MinHasher::new(128, 5, 1);
    let docs = documents(80, ' ');
    let bases: Vec<&str> = docs
        .iter()
        .map(String::as_str)
        .filter(|l| l.is_ascii())
        .take(800)
        .collect();
    assert!(bases.len() >= 300);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let path = dir.join("near.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut truth = Vec::new();
    for (i, base) in bases.iter().enumerate() {
        let p = (next() % 1000) as f64 / 1000.0 * 0.07;
        let words: Vec<String> = base
            .split_whitespace()
            .map(|w| {
                if (next() % 10_000) as f64 / 10_000.0 < p {
                    format!("zq{}", next() % 1_000_000)
                } else {
                    w.to_string()
                }
            })
            .collect();
        let variant = words.join(" ");
        let a: HashSet<u64> = hasher.shingles(base).into_iter().collect();
        let b: HashSet<u64> = hasher.shingles(&variant).into_iter().collect();
        let jaccard = a.intersection(&b).count() as f64 / a.union(&b).count() as f64;
        writeln!(
            f,
            "{}",
            serde_json::json!({"id": format!("b{i}"), "text": base})
        )
        .unwrap();
        writeln!(
            f,
            "{}",
            serde_json::json!({"id": format!("v{i}"), "text": variant})
        )
        .unwrap();
        truth.push(jaccard);
    }
    drop(f);
    let config = PipelineConfig::from_toml(
        "[[stages]]\nkind = \"minhash_dedup\"\nthreshold = 0.8\n",
        "test",
    )
    .unwrap();
    let out = dir.join("out");
    pipeline::run(&config, &[path], &out, &RunOptions::default()).unwrap();
    let dropped: HashSet<u64> = rejected_codes(&out)
        .into_iter()
        .filter(|(_, c)| c == "minhash_dedup.near_duplicate")
        .map(|(s, _)| s)
        .collect();
    assert!(
        !(0..bases.len() as u64).any(|i| dropped.contains(&(2 * i))),
        "a base paragraph was dropped"
    );
    let (mut tp, mut fp, mut fn_, mut excluded) = (0, 0, 0, 0);
    for (i, &j) in truth.iter().enumerate() {
        if (j - threshold).abs() < 0.05 {
            excluded += 1;
            continue;
        }
        let predicted = dropped.contains(&(2 * i as u64 + 1));
        match (j >= threshold, predicted) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fn_ += 1,
            (false, false) => {}
        }
    }
    let recall = tp as f64 / (tp + fn_).max(1) as f64;
    let precision = tp as f64 / (tp + fp).max(1) as f64;
    let positives = truth.iter().filter(|&&j| j >= threshold + 0.05).count();
    let negatives = truth.iter().filter(|&&j| j < threshold - 0.05).count();
    println!(
        "pairs {}: {positives} ≥ t+0.05, {negatives} < t−0.05, {excluded} within ±0.05; tp {tp} fp {fp} fn {fn_}",
        truth.len()
    );
    println!("recall {recall:.4} precision {precision:.4}");
    assert!(
        positives >= 100 && negatives >= 100,
        "the corpus must have both kinds"
    );
    assert!(recall >= 0.95 && precision >= 0.95);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn decontamination_drops_documents_that_quote_evaluation_items() {
    let dir = temp_dir("decontam");
    let eval = dir.join("eval.jsonl");
    std::fs::write(
        &eval,
        r#"{"question": "Which river flows through the town of Dolima on its way to the sea?", "choices": ["Ya", "Yo"], "answer": 0}"#,
    )
    .unwrap();
    let input = dir.join("train.jsonl");
    std::fs::write(
        &input,
        [
            r#"{"id": "leak", "text": "Quiz night. Which river flows through the town of Dolima on its way to the sea? Answer: Ya."}"#,
            r#"{"id": "clean", "text": "The river Ya is long and slow; it flows through many towns on its way."}"#,
            r#"{"id": "zh", "text": "多利马镇在亚河边上，河水流向大海。"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let config = PipelineConfig::from_toml(
        &format!(
            "[[stages]]\nkind = \"decontaminate\"\nfiles = [{:?}]\nngram = 8\n",
            eval.display().to_string()
        ),
        "test",
    )
    .unwrap();
    let out = dir.join("out");
    let report = pipeline::run(&config, &[input], &out, &RunOptions::default()).unwrap();
    assert_eq!(report.stats.kept, 2);
    assert_eq!(
        rejected_codes(&out),
        [(0, "decontaminate.overlap".to_string())]
    );
    let err = PipelineConfig::from_toml(
        "[[stages]]\nkind = \"decontaminate\"\nfiles = [\"/nonexistent/eval.jsonl\"]\n",
        "test",
    )
    .unwrap()
    .build_stages()
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("/nonexistent/eval.jsonl"), "{err}");
    let err = PipelineConfig::from_toml(
        "[[stages]]\nkind = \"exact_dedup\"\n[[stages]]\nkind = \"normalize\"\n",
        "cfg.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("stages[1]"), "{err}");
    let err = PipelineConfig::from_toml(
        "[[stages]]\nkind = \"normalize\"\nfrom = \"nfc\"\n",
        "cfg.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("cfg.toml") && err.contains("from"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
