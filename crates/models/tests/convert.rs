//! Conversions between GGUF files and HF directories.
//!
//! - SmolLM2 (Q4_1 GGUF): GGUF → directory (`loader::write_hf_dir`) → GGUF
//!   (`gguf::write_model_gguf`) gives the same config, the same f32 weights
//!   bit for bit, the same token ids and the same greedy tokens as
//!   transformers; the Q/K rows written are those of the original file
//!   (llama.cpp's permutation re-applied exactly).
//! - The tiny LLaMA (plain and linear rope) and Qwen2 fixtures with a small
//!   byte-level tokenizer: directory → GGUF → load gives the same weights
//!   bit for bit, the same logits and the same tokenizer.
//! - What GGUF output does not support is refused by name.

mod common;

use std::path::Path;

use kaiyuan_models::config::Norm;
use kaiyuan_models::generate::{GenerationConfig, generate};
use kaiyuan_models::gguf::{GgufFile, MetadataValue, write_model_gguf};
use kaiyuan_models::loader::write_hf_dir;
use kaiyuan_models::{Logits, ModelError, ModelFiles, Weights};
use kaiyuan_tensor::{DType, Tensor};
use kaiyuan_tokenizer::{EncodeOptions, Tokenizer};
use serde_json::Value;

fn bits(t: &Tensor) -> Vec<u32> {
    t.cast(DType::F32)
        .unwrap()
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Same names, shapes and f32 bits.
fn assert_same_weights(a: &Weights, b: &Weights) {
    let names_a: Vec<&str> = a.names().collect();
    let names_b: Vec<&str> = b.names().collect();
    assert_eq!(names_a, names_b);
    for (name, ta) in a.iter() {
        let tb = b.raw(name).unwrap();
        assert_eq!(ta.shape(), tb.shape(), "{name}");
        assert!(bits(ta) == bits(tb), "{name}: values differ");
    }
}

fn assert_same_ids(a: &Tokenizer, b: &Tokenizer, texts: &[&str]) {
    for text in texts {
        for add_special_tokens in [false, true] {
            let options = EncodeOptions {
                add_special_tokens,
                ..Default::default()
            };
            let ia = a.encode_with(text, options).unwrap().ids;
            let ib = b.encode_with(text, options).unwrap().ids;
            assert_eq!(ia, ib, "{text:?} (add_special_tokens {add_special_tokens})");
        }
    }
}

#[test]
fn smollm2_gguf_to_directory_to_gguf_round_trips() {
    let Some(gguf) = common::smollm2() else {
        return;
    };
    let scratch = common::scratch_dir("convert-smollm2");
    let dir = scratch.join("dir");
    let back = scratch.join("back.gguf");
    let first = ModelFiles::open(&gguf).unwrap();
    write_hf_dir(&first, &first.weights, &dir).unwrap();
    let middle = ModelFiles::open(&dir).unwrap();
    write_model_gguf(&middle, &middle.weights, &back).unwrap();
    drop(middle);
    let mut second = ModelFiles::open(&back).unwrap();

    assert_eq!(second.config, first.config);
    assert_eq!(second.config_json, first.config_json);
    assert_same_weights(&first.weights, &second.weights);
    assert_eq!(second.chat_template(), first.chat_template());
    assert_eq!(second.license, first.license);
    assert_eq!(second.license.as_deref(), Some("apache-2.0"));
    assert_eq!(second.stop_token_ids(), first.stop_token_ids());
    let (ta, tb) = (
        first.tokenizer.as_ref().unwrap(),
        second.tokenizer.as_ref().unwrap(),
    );
    assert_eq!(ta.vocab_size(), tb.vocab_size());
    assert_same_ids(
        ta,
        tb,
        &[
            "Hello, world! 12345 tokens.",
            "<|im_start|>user\n长城有多长？<|im_end|>\n",
            "  spaces\tand\ttabs\n\n🦀 émigré",
        ],
    );

    // The rows of Q and K as stored equal the original file's (llama.cpp's
    // permutation re-applied); V is never permuted.
    let (g1, g2) = (
        GgufFile::open(&gguf).unwrap(),
        GgufFile::open(&back).unwrap(),
    );
    for name in [
        "blk.0.attn_q.weight",
        "blk.7.attn_k.weight",
        "blk.29.attn_v.weight",
    ] {
        let (a, b) = (g1.tensor(name).unwrap(), g2.tensor(name).unwrap());
        assert!(bits(&a) == bits(&b), "{name}: stored rows differ");
    }
    assert_eq!(
        g2.get("general.architecture")
            .and_then(MetadataValue::as_str),
        Some("llama")
    );
    assert_eq!(
        g2.get("tokenizer.ggml.model")
            .and_then(MetadataValue::as_str),
        Some("gpt2")
    );
    drop((g1, g2));

    // Greedy tokens of the reference's system-prompt case.
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(common::root().join("fixtures/models/smollm2_reference.json"))
            .unwrap(),
    )
    .unwrap();
    let case = &reference["cases"][2];
    let ids = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let prompt = ids(&case["prompt_ids"]);
    let expected: Vec<u32> = ids(&case["generated_ids"]).into_iter().take(24).collect();
    let stop = second.stop_token_ids();
    let tokenizer = second.tokenizer.take().unwrap();
    let model = second.take_model(DType::F32).unwrap();
    let config = GenerationConfig {
        max_new_tokens: expected.len(),
        stop_token_ids: stop,
        ..GenerationConfig::default()
    };
    let out = generate(&model, &tokenizer, &prompt, &config, None, |_| {}).unwrap();
    assert_eq!(
        out.tokens, expected,
        "greedy tokens after GGUF → dir → GGUF"
    );
    eprintln!(
        "round trip: {} tensors bit-identical, {} greedy tokens equal to transformers'",
        first.weights.len(),
        expected.len()
    );
}

/// Directory → GGUF → load for a tiny fixture: weights bit for bit, equal
/// logits, the same tokenizer, chat template and special ids.
fn tiny_round_trip(fixture: &str, edit_config: impl Fn(&mut Value)) {
    let scratch = common::scratch_dir(&format!("convert-{fixture}"));
    let dir = scratch.join("dir");
    common::tiny_model_dir(fixture, &dir);
    let config_path = dir.join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    edit_config(&mut config);
    std::fs::write(&config_path, config.to_string()).unwrap();

    let gguf = scratch.join("model.gguf");
    let files = ModelFiles::open(&dir).unwrap();
    write_model_gguf(&files, &files.weights, &gguf).unwrap();
    let back = ModelFiles::open(&gguf).unwrap();
    // The source has no `eos_token_id`; the GGUF gets the tokenizer's. GGUF
    // holds the epsilon as an f32.
    let mut expected_config = files.config.clone();
    expected_config.eos_token_ids = vec![2];
    if let Norm::Rms(eps) = expected_config.norm {
        expected_config.norm = Norm::Rms(f64::from(eps as f32));
    }
    assert_eq!(back.config, expected_config, "{fixture}");
    let mut expected_weights = files.weights.clone();
    if files.config.tie_word_embeddings {
        expected_weights.remove("lm_head.weight");
    }
    assert_same_weights(&expected_weights, &back.weights);
    assert_eq!(back.chat_template(), Some(common::TINY_CHAT_TEMPLATE));
    assert_eq!(back.stop_token_ids(), vec![2]);
    assert_same_ids(
        files.tokenizer.as_ref().unwrap(),
        back.tokenizer.as_ref().unwrap(),
        &[
            "the cat in a hat",
            " the  thin, 42!",
            "<|user|>\nhi</s>\n<|assistant|>\n",
        ],
    );
    let ids = vec![1, 5, 9, 44, 46, 12, 3, 30, 48, 7];
    let logits = |f: &ModelFiles| {
        let model = f.build(DType::F32).unwrap();
        let mut cache = model.new_cache();
        bits(
            &model
                .forward(std::slice::from_ref(&ids), &mut cache, Logits::All)
                .unwrap(),
        )
    };
    assert!(logits(&files) == logits(&back), "{fixture}: logits differ");
}

#[test]
fn tiny_llama_directory_to_gguf_round_trips() {
    tiny_round_trip("llama", |_| {});
}

#[test]
fn tiny_llama_linear_rope_directory_to_gguf_round_trips() {
    tiny_round_trip("llama_linear", |_| {});
}

#[test]
fn tiny_qwen2_directory_to_gguf_round_trips() {
    tiny_round_trip("qwen2_window", |c| {
        c["use_sliding_window"] = Value::Bool(false);
    });
}

thread_local! {
    /// Hook calls on this thread (other tests load GGUF files in parallel).
    static HOOK_CALLS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn count_hook_call() {
    HOOK_CALLS.with(|calls| calls.set(calls.get() + 1));
}

/// Opening a GGUF model runs the registered hook once, between the
/// tokenizer and the weights, and the model it gives still has its
/// tokenizer although the file's vocabulary arrays were dropped; a
/// directory does not run it.
#[test]
fn the_before_weights_hook_runs_once_per_gguf_load() {
    use kaiyuan_models::loader::set_before_weights_hook;
    let scratch = common::scratch_dir("convert-hook");
    let dir = scratch.join("dir");
    common::tiny_model_dir("llama", &dir);
    assert!(set_before_weights_hook(count_hook_call));
    assert!(!set_before_weights_hook(count_hook_call), "set once");
    let from_dir = ModelFiles::open(&dir).unwrap();
    assert_eq!(HOOK_CALLS.with(std::cell::Cell::get), 0);
    let gguf = scratch.join("model.gguf");
    write_model_gguf(&from_dir, &from_dir.weights, &gguf).unwrap();
    let from_gguf = ModelFiles::open(&gguf).unwrap();
    assert_eq!(HOOK_CALLS.with(std::cell::Cell::get), 1);
    let (a, b) = (
        from_dir.tokenizer.as_ref().unwrap(),
        from_gguf.tokenizer.as_ref().unwrap(),
    );
    assert_eq!(a.vocab_size(), b.vocab_size());
    assert_same_ids(a, b, &["Hello, world!", "长城 émigré 🦀"]);
    assert_same_weights(&from_dir.weights, &from_gguf.weights);
}

fn refusal(fixture: &str, edit: impl Fn(&Path)) -> String {
    let scratch = common::scratch_dir(&format!("convert-refuse-{fixture}"));
    let dir = scratch.join("dir");
    common::tiny_model_dir(fixture, &dir);
    edit(&dir);
    let files = ModelFiles::open(&dir).unwrap();
    let out = scratch.join("model.gguf");
    let err = write_model_gguf(&files, &files.weights, &out).unwrap_err();
    assert!(!out.exists(), "no partial file is left");
    err.to_string()
}

#[test]
fn unsupported_models_are_refused_by_name() {
    let msg = refusal("falcon_mqa", |_| {});
    assert!(msg.contains("FalconForCausalLM"), "{msg}");
    let msg = refusal("qwen2_window", |_| {});
    assert!(msg.contains("sliding-window"), "{msg}");
    let msg = refusal("llama3", |_| {});
    assert!(msg.contains("Llama3"), "{msg}");
    let msg = refusal("llama", |d| {
        std::fs::remove_file(d.join("tokenizer.json")).unwrap()
    });
    assert!(msg.contains("no tokenizer.json"), "{msg}");
    let msg = refusal("llama", |d| {
        let path = d.join("tokenizer.json");
        let mut t: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        t["pre_tokenizer"] = serde_json::json!({"type": "Whitespace"});
        std::fs::write(&path, t.to_string()).unwrap();
    });
    assert!(
        msg.contains("pre-tokenizer") && msg.contains("Whitespace"),
        "{msg}"
    );
    // An extra tensor without a llama.cpp name.
    let scratch = common::scratch_dir("convert-refuse-extra");
    let dir = scratch.join("dir");
    common::tiny_model_dir("llama", &dir);
    let mut files = ModelFiles::open(&dir).unwrap();
    files.weights.insert(
        "model.extra.weight",
        Tensor::from_vec(vec![0f32; 4], &[4]).unwrap(),
    );
    let err = write_model_gguf(&files, &files.weights, &scratch.join("x.gguf")).unwrap_err();
    assert!(
        matches!(&err, ModelError::Unsupported { what, .. } if what.contains("model.extra.weight")),
        "{err}"
    );
}
