//! The training loop end to end on tiny models: resume is bit-identical,
//! every architecture trains from scratch, bad input fails before training.

mod common;

use common::{out_dir, stopped_and_resumed, train};

use std::path::Path;

use kaiyuan_train::config::TrainConfig;
use kaiyuan_train::trainer;

/// A tiny run: 2 layers of width 32 on 300 documents, sequences of 16.
fn tiny(extra: &[&str]) -> TrainConfig {
    common::config(
        &[
            "hidden_size=32",
            "num_layers=2",
            "num_heads=4",
            "num_kv_heads=2",
            "intermediate_size=64",
            "max_position_embeddings=128",
            "vocab_size=320",
            "documents=300",
            "validation_documents=20",
            "seq_len=16",
            "batch_size=4",
            "max_steps=6",
            "warmup_steps=2",
            "eval_every=3",
            "eval_batches=2",
            "save_every=3",
            "keep_last=5",
            "lr=0.01",
        ],
        extra,
    )
}

fn bits(losses: &[f64]) -> Vec<u64> {
    losses.iter().map(|l| l.to_bits()).collect()
}

#[test]
fn resumed_runs_are_bit_identical_for_one_and_two_threads() {
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let whole_dir = out_dir(&format!("resume-whole-{threads}"));
            let whole = train(&tiny(&[]), &whole_dir, None, &[]);
            assert_eq!(whole.losses.len(), 6);
            let split_dir = out_dir(&format!("resume-split-{threads}"));
            let joined = stopped_and_resumed(&tiny(&["max_steps=3"]), &split_dir, 6);
            assert_eq!(
                bits(&joined),
                bits(&whole.losses),
                "{threads} threads: {joined:?} vs {:?}",
                whole.losses
            );
            // metrics.jsonl holds each step once.
            let metrics = std::fs::read_to_string(split_dir.join("metrics.jsonl")).unwrap();
            let steps = metrics.lines().filter(|l| l.contains("\"loss\"")).count();
            assert_eq!(steps, 6);
            assert!(split_dir.join("loss.svg").is_file());
            assert!(split_dir.join("final/model.safetensors").is_file());
        });
    }
}

#[test]
fn every_architecture_trains_from_scratch_and_the_loss_falls() {
    for arch in ["llama", "mistral", "qwen2", "falcon", "glm", "glm4"] {
        let config = tiny(&[
            &format!("architecture={arch}"),
            "max_steps=12",
            "save_every=0",
            "eval_every=0",
        ]);
        let dir = out_dir(&format!("arch-{arch}"));
        let report = train(&config, &dir, None, &[]);
        assert!(
            report.last_loss < report.first_loss - 0.3,
            "{arch}: {:?}",
            report.losses
        );
        // The final directory loads as a model again.
        let files = kaiyuan_models::ModelFiles::open(dir.join("final")).unwrap();
        assert_eq!(files.config.num_layers, 2, "{arch}");
    }
}

fn expect_error(config_text: &str, sets: &[&str], needle: &str) {
    // A case that unexpectedly passes must not run a long default training.
    let mut sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    sets.push("max_steps=1".into());
    let err = match TrainConfig::parse("test.toml", config_text, &sets) {
        Err(e) => e.to_string(),
        Ok(config) => {
            let dir = out_dir(&format!("bad-{}", needle.replace(' ', "_")));
            match trainer::run(&config, &dir, None, &[], &mut |_| {}) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("expected an error containing {needle:?}"),
            }
        }
    };
    assert!(err.contains(needle), "{err:?} does not contain {needle:?}");
}

#[test]
fn bad_input_fails_before_training_with_a_clear_error() {
    expect_error("[train]\nlearning_rate = 1", &[], "learning_rate");
    expect_error("", &["bogus=1"], "bogus");
    expect_error(
        "",
        &["hidden_size=30", "num_heads=4"],
        "do not divide hidden_size",
    );
    expect_error("", &["num_kv_heads=4"], "num_kv_heads");
    expect_error("", &["seq_len=1"], "seq_len");
    expect_error("", &["architecture=gpt5"], "gpt5");
    // An empty corpus (a JSONL file of rejected lines).
    let dir = out_dir("empty-corpus");
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data.jsonl");
    std::fs::write(&data, "{\"content\": \"no text field\"}\nnot json\n").unwrap();
    let config = tiny(&[&format!("source={}", data.display()), "vocab_size=300"]);
    let err = trainer::run(&config, &dir.join("out"), None, &[], &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty") || err.contains("too small"), "{err}");
    // A corrupted checkpoint.
    let run_dir = out_dir("corrupt");
    train(&tiny(&["max_steps=3"]), &run_dir, None, &[]);
    let weights = run_dir.join("checkpoint-3/model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = trainer::run(&tiny(&[]), &run_dir, Some(&run_dir), &[], &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn vocabulary_smaller_than_the_tokenizer_is_refused() {
    // Fine-tune a tiny fixture model (vocabulary 80) with a tokenizer of 320 tokens.
    let first = out_dir("vocab-tokenizer");
    train(&tiny(&["max_steps=1", "save_every=0"]), &first, None, &[]);
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/llama");
    let tokenizer = first.join("final/tokenizer.json");
    let config = tiny(&[
        &format!("init={}", model.display()),
        &format!("tokenizer.path={}", tokenizer.display()),
    ]);
    let err = trainer::run(&config, &out_dir("vocab-run"), None, &[], &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("smaller than the tokenizer"), "{err}");
}

#[test]
fn supervised_fine_tuning_on_chat_jsonl_learns_answers_and_keeps_rejects() {
    // A base model with a ChatML template.
    let base = out_dir("sft-base");
    train(&tiny(&["max_steps=2", "save_every=0"]), &base, None, &[]);
    let template = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    std::fs::write(
        base.join("final/tokenizer_config.json"),
        serde_json::json!({"chat_template": template, "eos_token": "<|endoftext|>"}).to_string(),
    )
    .unwrap();
    // Questions about the embedded world, answered by its facts.
    let world = kaiyuan_train::corpus::World::new(0);
    let mut lines: Vec<String> = world
        .facts()
        .iter()
        .take(60)
        .map(|f| {
            serde_json::json!({"messages": [
                {"role": "user", "content": f.english.question},
                {"role": "assistant", "content": f.english.text},
            ]})
            .to_string()
        })
        .collect();
    lines.insert(3, "{\"messages\": []}".to_string());
    lines.insert(9, "not json".to_string());
    let data = base.join("chat.jsonl");
    std::fs::write(&data, lines.join("\n")).unwrap();
    let out = out_dir("sft-run");
    let config = tiny(&[
        &format!("init={}", base.join("final").display()),
        "format=chat",
        &format!("source={}", data.display()),
        "seq_len=128",
        "max_steps=30",
        "validation_fraction=0.1",
        "save_every=0",
    ]);
    let report = train(&config, &out, None, &[]);
    assert_eq!(report.rejected, 2);
    let rejects = std::fs::read_to_string(out.join("rejected.jsonl")).unwrap();
    assert_eq!(rejects.lines().count(), 2);
    assert!(
        rejects.contains("chat.jsonl:4") && rejects.contains("chat.jsonl:10"),
        "{rejects}"
    );
    assert!(
        report.last_loss < report.first_loss * 0.7,
        "{:?}",
        report.losses
    );
    assert!(report.validation.is_some());
}

#[test]
fn checkpoints_and_the_final_model_record_their_provenance() {
    use kaiyuan_provenance::{Manifest, chain};
    use kaiyuan_train::corpus::{Corpus, CorpusConfig};
    // Training data in a directory whose manifest lists it (as `clean` writes).
    let data_dir = out_dir("provenance-data");
    std::fs::create_dir_all(data_dir.join("shards")).unwrap();
    let corpus = Corpus::new(&CorpusConfig {
        seed: 0,
        documents: 300,
        ..CorpusConfig::default()
    })
    .unwrap();
    let lines: Vec<String> = corpus
        .training()
        .iter()
        .map(|d| serde_json::json!({ "text": d.text }).to_string())
        .collect();
    let shard = data_dir.join("shards/shard-00000.jsonl");
    std::fs::write(&shard, lines.join("\n") + "\n").unwrap();
    Manifest::new("shards", serde_json::json!({"test": true}))
        .write(&data_dir.join("shards"))
        .unwrap();

    let out = out_dir("provenance-run");
    let config = tiny(&[&format!("source={}", shard.display()), "max_steps=3"]);
    train(&config, &out, None, &[]);
    let checkpoint = Manifest::read(&out.join("checkpoint-3")).unwrap();
    assert_eq!(checkpoint.kind, "checkpoint");
    assert_eq!(checkpoint.settings["train"]["max_steps"], 3);
    assert_eq!(checkpoint.inputs.len(), 1, "{:?}", checkpoint.inputs);
    assert_eq!(checkpoint.inputs[0].role, "data");
    assert_eq!(checkpoint.inputs[0].parent.as_ref().unwrap().kind, "shards");
    assert!(
        checkpoint
            .verify(&out.join("checkpoint-3"))
            .unwrap()
            .is_empty()
    );
    let links = chain(&out.join("final")).unwrap();
    let kinds: Vec<&str> = links.iter().map(|l| l.manifest.kind.as_str()).collect();
    assert_eq!(kinds, ["model", "shards"]);
    assert!(links.iter().all(|l| l.problems.is_empty()), "{links:?}");
    assert!(!out.join("final.tmp").exists());

    // A resumed run names the checkpoint it continued from.
    train(&config, &out, Some(&out), &["max_steps=6".to_string()]);
    let resumed = Manifest::read(&out.join("checkpoint-6")).unwrap();
    let from = resumed
        .inputs
        .iter()
        .find(|i| i.role == "resumed-from")
        .expect("a resumed-from input");
    assert_eq!(from.parent.as_ref().unwrap().kind, "checkpoint");
    assert_eq!(from.path, "../checkpoint-3");
}

#[test]
fn mixed_precision_resumes_bit_identically_and_tracks_f32() {
    let f32_run = train(&tiny(&[]), &out_dir("mixed-f32"), None, &[]);
    let whole = train(
        &tiny(&["precision=bf16"]),
        &out_dir("mixed-whole"),
        None,
        &[],
    );
    let split_dir = out_dir("mixed-split");
    let joined = stopped_and_resumed(&tiny(&["precision=bf16", "max_steps=3"]), &split_dir, 6);
    // f32 parameters and moments are what a checkpoint holds, and the bf16
    // copy is made from them each step: resuming changes nothing.
    assert_eq!(bits(&joined), bits(&whole.losses));
    for (step, (b, f)) in whole.losses.iter().zip(&f32_run.losses).enumerate() {
        assert!(
            (b - f).abs() <= 0.05 * f,
            "step {}: bf16 {b}, f32 {f}",
            step + 1
        );
        if step > 0 {
            assert_ne!(
                b.to_bits(),
                f.to_bits(),
                "step {}: bf16 computed nothing in bf16",
                step + 1
            );
        }
    }
    // The checkpoint's weights are the f32 parameters.
    let weights = std::fs::read(split_dir.join("final/model.safetensors")).unwrap();
    let text = String::from_utf8_lossy(&weights[..4096.min(weights.len())]).into_owned();
    assert!(text.contains("\"F32\""), "final weights are not f32");
}
