//! `kaiyuan demo --quick` end to end through the built binary: every stage
//! runs, and the report's claims are checked again here from the files the
//! stages wrote — no planted PII value in the cleaned shards, the tokenizer
//! vocabulary or any greedy output; the planted duplicates and broken lines
//! gone; the validation loss at least 30 % below the corpus's unigram
//! entropy; an HTML report without scripts or URLs. A second run resumes
//! (every stage kept), a damaged stage is redone with the same numbers, and
//! the same seed gives the same numbers in another directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kaiyuan_tokenizer::Tokenizer;
use serde_json::Value;

fn demo(out: &Path, extra: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_kaiyuan"))
        .args(["demo", "--quick", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .expect("the kaiyuan binary runs");
    assert!(
        output.status.success(),
        "kaiyuan demo failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn scratch(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/test-scratch")
        .join(format!("demo-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The numbers of a report that do not depend on timing.
fn numbers(report: &Value) -> Value {
    let mut models = report["models"].clone();
    for m in models.as_array_mut().unwrap() {
        let m = m.as_object_mut().unwrap();
        for timing in ["prefill_tok_s", "decode_tok_s", "peak_rss_mib"] {
            m.remove(timing);
        }
    }
    serde_json::json!({
        "models": models,
        "checks": report["checks"],
        "cleaning": report["cleaning"],
        "final_val_loss": report["training"]["final_val_loss"],
        "unigram_entropy": report["training"]["unigram_entropy"],
    })
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn quick_demo_cleans_trains_quantizes_evaluates_and_resumes() {
    let out = scratch("quick");
    let first = demo(&out, &[]);
    let table = String::from_utf8_lossy(&first.stdout);
    for model in ["fp32", "int8", "gptq-int4"] {
        assert!(
            table.contains(model),
            "the final table names {model}:\n{table}"
        );
    }

    let report = json(&out.join("report.json"));
    assert_eq!(report["schema"], "kaiyuan.demo.report/1");
    assert_eq!(report["seed"], 0);
    assert!(
        report["dataset"]["counts"].is_object(),
        "{}",
        report["dataset"]
    );
    let planted = json(&out.join("data/planted.json"));
    let values: Vec<&str> = planted["pii"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_str().unwrap())
        .collect();
    assert!(
        values.len() >= 20,
        "only {} PII values planted",
        values.len()
    );

    // Cleaned shards: no planted value, no planted duplicate or broken line.
    let shard = std::fs::read_to_string(out.join("clean/shards/shard-00000.jsonl")).unwrap();
    let kept_ids: std::collections::HashSet<String> = shard
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(kept_ids.len() > 1000, "{} documents kept", kept_ids.len());
    for v in &values {
        assert!(
            !shard.contains(v),
            "planted PII {v:?} is in the cleaned shard"
        );
    }
    for list in ["exact_duplicates", "near_duplicates", "broken"] {
        let planted_list = planted[list].as_array().unwrap();
        assert!(!planted_list.is_empty(), "nothing planted in {list}");
        for item in planted_list {
            let id = item["record"].as_str().unwrap();
            assert!(
                !kept_ids.contains(id),
                "{list} record {id} survived cleaning"
            );
        }
    }
    // Deduplication keeps one copy: an original of a planted duplicate is
    // either kept or was itself rejected as a duplicate of an earlier
    // record (the generator repeats some documents), never for another
    // reason.
    let rejected = std::fs::read_to_string(out.join("clean/shards/rejected.jsonl")).unwrap();
    let rejected_stage: std::collections::HashMap<String, String> = rejected
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|v| {
            Some((
                v["id"].as_str()?.to_owned(),
                v["stage"].as_str()?.to_owned(),
            ))
        })
        .collect();
    for list in ["exact_duplicates", "near_duplicates"] {
        for copy in planted[list].as_array().unwrap() {
            let original = copy["original"].as_str().unwrap();
            if !kept_ids.contains(original) {
                let stage = &rejected_stage[original];
                assert!(
                    stage == "exact_dedup" || stage == "minhash_dedup",
                    "the original {original} of a planted duplicate was rejected by {stage}"
                );
            }
        }
        for copy in planted[list].as_array().unwrap() {
            let record = copy["record"].as_str().unwrap();
            assert!(
                rejected_stage.contains_key(record),
                "{record} is neither kept nor rejected"
            );
        }
    }

    // Tokenizer vocabulary.
    let tokenizer = Tokenizer::from_file(out.join("tokenizer/tokenizer.json")).unwrap();
    for id in 0..tokenizer.vocab_size() as u32 {
        let token = tokenizer.decode(&[id], false).unwrap();
        for v in &values {
            assert!(!token.contains(v), "token {id} {token:?} holds planted PII");
        }
    }

    // Every greedy output of every model, and the PII probe.
    let mut outputs = Vec::new();
    for report_path in [
        "eval/fp32/report.json",
        "eval/int8/report.json",
        "eval/gptq-int4/report.json",
        "eval/pii_probe/report/report.json",
    ] {
        let r = json(&out.join(report_path));
        for task in r["tasks"].as_array().unwrap() {
            if task["kind"] == "generation" {
                let all = task["details"]["outputs"].as_array().unwrap();
                assert_eq!(
                    all.len() as u64,
                    task["details"]["prompts"].as_u64().unwrap()
                );
                outputs.extend(all.iter().map(|o| o.as_str().unwrap().to_owned()));
            }
        }
    }
    let probes = std::fs::read_to_string(out.join("eval/pii_probe/pii_probe.jsonl")).unwrap();
    assert!(probes.lines().count() >= 20, "too few PII probes");
    assert!(outputs.len() > 300, "{} outputs", outputs.len());
    for o in &outputs {
        for v in &values {
            assert!(
                !o.contains(v),
                "a greedy output reproduces planted PII {v:?}: {o:?}"
            );
        }
    }

    // Training: the final validation loss (from metrics.jsonl) at least 30 %
    // below the unigram entropy of the cleaned corpus.
    let metrics = std::fs::read_to_string(out.join("train/metrics.jsonl")).unwrap();
    let final_val = metrics
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).unwrap()["val_loss"].as_f64())
        .expect("a validation loss");
    let training = &report["training"];
    assert_eq!(training["final_val_loss"].as_f64(), Some(final_val));
    let entropy = training["unigram_entropy"].as_f64().unwrap();
    assert!(entropy > 3.0, "unigram entropy {entropy}");
    assert!(
        final_val <= 0.7 * entropy,
        "final validation loss {final_val} is not 30 % below the unigram entropy {entropy}"
    );

    // The report agrees, and its HTML stands alone.
    let checks = &report["checks"];
    for zero in [
        "pii_in_shards",
        "pii_in_vocabulary",
        "pii_in_generations",
        "exact_duplicates_left",
        "near_duplicates_left",
        "broken_lines_kept",
    ] {
        assert_eq!(checks[zero], 0, "report check {zero}");
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("<polyline"));
    for banned in ["http://", "https://", "<script", "src=", "@import"] {
        assert!(!html.contains(banned), "report.html contains {banned:?}");
    }
    let questions = report["models"][0]["questions"].as_u64().unwrap();
    assert!(questions >= 200, "{questions} questions");

    // Provenance: each stage names its parents' manifests by hash.
    let eval_manifest = json(&out.join("eval/manifest.json"));
    let parents: Vec<&str> = eval_manifest["parents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["stage"].as_str().unwrap())
        .collect();
    assert_eq!(parents, ["data", "train", "quantize"]);
    let train_sha = eval_manifest["parents"][1]["manifest_sha256"]
        .as_str()
        .unwrap();
    let bytes = std::fs::read(out.join("train/manifest.json")).unwrap();
    use sha2::Digest;
    let actual: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(train_sha, actual);

    // Lineage: the manifests the commands themselves wrote lead from each
    // model's scores back to the raw corpus, and every link holds.
    for lineage in report["lineage"].as_array().unwrap() {
        assert_eq!(lineage["intact"], true, "{lineage}");
        let kinds: std::collections::BTreeSet<&str> = lineage["chain"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["kind"].as_str().unwrap())
            .collect();
        let mut expected = vec![
            "eval-report",
            "eval-set",
            "model",
            "shards",
            "tokenizer",
            "dataset",
        ];
        if lineage["model"] != "fp32" {
            expected.push("quantized");
        }
        for kind in expected {
            assert!(kinds.contains(kind), "{kind} missing from {lineage}");
        }
    }
    let quantized = json(&out.join("quantize/gptq-int4/provenance.json"));
    assert_eq!(quantized["kind"], "quantized");
    assert_eq!(quantized["settings"]["method"], "gptq");
    assert_eq!(quantized["inputs"][0]["role"], "model");
    assert_eq!(quantized["inputs"][0]["parent"]["kind"], "model");
    assert_eq!(quantized["inputs"][1]["role"], "calibration");
    assert_eq!(quantized["inputs"][1]["parent"]["kind"], "shards");
    let check = Command::new(env!("CARGO_BIN_EXE_kaiyuan"))
        .args(["provenance", out.join("eval/gptq-int4").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    // A changed weight file breaks the chain, and `kaiyuan provenance` says where.
    let weights = out.join("quantize/gptq-int4/model.safetensors");
    let original = std::fs::read(&weights).unwrap();
    let mut damaged = original.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    std::fs::write(&weights, &damaged).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_kaiyuan"))
        .args([
            "provenance",
            out.join("quantize/gptq-int4").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!check.status.success());
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(printed.contains("model.safetensors: changed"), "{printed}");
    std::fs::write(&weights, &original).unwrap();

    // A second run keeps every stage.
    let again = demo(&out, &[]);
    assert_eq!(
        stderr(&again).matches("done earlier, kept").count(),
        7,
        "{}",
        stderr(&again)
    );
    assert_eq!(numbers(&json(&out.join("report.json"))), numbers(&report));

    // An interrupted stage (a leftover .partial directory) and a damaged
    // finished one (a file changed after its manifest was written) are
    // redone; the stages before them are kept; the numbers are the same.
    std::fs::create_dir_all(out.join(".report.partial/junk")).unwrap();
    let eval_report = out.join("eval/fp32/report.json");
    std::fs::write(&eval_report, "{}").unwrap();
    let redo = demo(&out, &[]);
    let log = stderr(&redo);
    assert_eq!(log.matches("done earlier, kept").count(), 5, "{log}");
    assert!(
        log.contains("[6/7] eval: an earlier result differs"),
        "{log}"
    );
    assert!(!out.join(".report.partial").exists());
    assert_eq!(numbers(&json(&out.join("report.json"))), numbers(&report));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn the_same_seed_gives_the_same_numbers_and_another_seed_does_not() {
    let (a, b, c) = (scratch("seed-a"), scratch("seed-b"), scratch("seed-c"));
    demo(&a, &["--steps", "12"]);
    demo(&b, &["--steps", "12"]);
    demo(&c, &["--steps", "12", "--seed", "1"]);
    let (ra, rb, rc) = (
        json(&a.join("report.json")),
        json(&b.join("report.json")),
        json(&c.join("report.json")),
    );
    assert_eq!(numbers(&ra), numbers(&rb));
    assert_ne!(numbers(&ra), numbers(&rc));
    assert_eq!(
        (ra["seed"].clone(), rc["seed"].clone()),
        (0.into(), 1.into())
    );
    for file in [
        "train/final/model.safetensors",
        "quantize/gptq-int4/model.safetensors",
    ] {
        assert_eq!(
            std::fs::read(a.join(file)).unwrap(),
            std::fs::read(b.join(file)).unwrap(),
            "{file} differs between two runs of one seed"
        );
    }
    for dir in [a, b, c] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
