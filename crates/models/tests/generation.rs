//! Generation on a tiny fixture model with a tiny byte-level tokenizer:
//! streamed chunks, stop strings, batches, and sharded checkpoints.

mod common;

use std::collections::BTreeMap;

use kaiyuan_models::generate::{GenerationConfig, generate, generate_batch};
use kaiyuan_models::safetensors_io::{read_dir, write_file};
use kaiyuan_models::sampling::SamplingParams;
use kaiyuan_models::{Logits, ModelFiles, Weights};
use kaiyuan_tensor::DType;

fn tiny(name: &str) -> ModelFiles {
    let dir = common::scratch_dir(&format!("generation-{name}"));
    common::tiny_model_dir(name, &dir);
    ModelFiles::open(&dir).unwrap()
}

/// Streamed chunks concatenate to the final text, for sampled outputs with
/// and without stop strings; a stop string cuts the text before it.
#[test]
fn streamed_chunks_concatenate_to_the_text() {
    let mut files = tiny("llama");
    let tokenizer = files.tokenizer.take().unwrap();
    let model = files.take_model(DType::F32).unwrap();
    let prompt = tokenizer.encode("hello world").unwrap().ids;
    let mut stopped = 0;
    for seed in 0..40u64 {
        for stop_strings in [
            vec![],
            vec!["e".to_string()],
            vec!["ab".to_string(), " t".to_string()],
        ] {
            let config = GenerationConfig {
                max_new_tokens: 24,
                sampling: SamplingParams {
                    temperature: 1.0,
                    seed: Some(seed),
                    ..SamplingParams::default()
                },
                stop_token_ids: vec![2],
                stop_strings: stop_strings.clone(),
            };
            let mut chunks = Vec::new();
            let out = generate(&model, &tokenizer, &prompt, &config, None, |c| {
                chunks.push(c.to_string())
            })
            .unwrap();
            assert_eq!(
                chunks.concat(),
                out.text,
                "seed {seed}, stops {stop_strings:?}"
            );
            let full = tokenizer.decode(&out.tokens, true).unwrap();
            match stop_strings
                .iter()
                .filter_map(|s| full.find(s.as_str()))
                .min()
            {
                Some(at) => {
                    stopped += 1;
                    assert_eq!(
                        out.text,
                        full[..at],
                        "seed {seed}: text is cut before the stop string"
                    );
                    for s in &stop_strings {
                        assert!(!out.text.contains(s.as_str()));
                    }
                }
                None => assert_eq!(out.text, full),
            }
        }
    }
    assert!(
        stopped > 10,
        "stop strings were hit only {stopped} times: the test lost its power"
    );
}

/// Greedy batched generation of prompts of different lengths equals
/// generating each alone.
#[test]
fn batched_generation_equals_one_prompt_at_a_time() {
    let mut files = tiny("qwen2_window");
    let tokenizer = files.tokenizer.take().unwrap();
    let model = files.take_model(DType::F32).unwrap();
    let prompts: Vec<Vec<u32>> = ["a", "the quick brown fox", "hello world, again and again"]
        .iter()
        .map(|t| tokenizer.encode(t).unwrap().ids)
        .collect();
    let config = GenerationConfig {
        max_new_tokens: 20,
        stop_token_ids: vec![2],
        ..GenerationConfig::default()
    };
    let batched = generate_batch(&model, &tokenizer, &prompts, &config).unwrap();
    for (prompt, b) in prompts.iter().zip(&batched) {
        let alone = generate(&model, &tokenizer, prompt, &config, None, |_| {}).unwrap();
        assert_eq!(b.tokens, alone.tokens);
        assert_eq!(b.text, alone.text);
        assert_eq!(b.finish_reason, alone.finish_reason);
    }
}

/// A checkpoint split into shards with `model.safetensors.index.json` loads
/// to the same logits; an index naming a missing shard or tensor is refused.
#[test]
fn sharded_checkpoints_load_like_single_files() {
    let src = common::root().join("fixtures/models/llama");
    let single = read_dir(&src).unwrap();
    let dir = common::scratch_dir("generation-sharded");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let names: Vec<String> = single.names().map(str::to_string).collect();
    let mut shards = [Weights::new("a"), Weights::new("b")];
    let mut map = serde_json::Map::new();
    for (i, name) in names.iter().enumerate() {
        let shard = i % 2;
        shards[shard].insert(name.clone(), single.raw(name).unwrap().clone());
        map.insert(
            name.clone(),
            serde_json::json!(format!("model-0000{}-of-00002.safetensors", shard + 1)),
        );
    }
    for (i, shard) in shards.iter().enumerate() {
        write_file(
            &dir.join(format!("model-0000{}-of-00002.safetensors", i + 1)),
            shard,
            &BTreeMap::new(),
        )
        .unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let logits = |path: &std::path::Path| {
        let mut files = ModelFiles::open(path).unwrap();
        let model = files.take_model(DType::F32).unwrap();
        let mut cache = model.new_cache();
        model
            .forward(&[vec![5, 9, 13, 7, 2, 40]], &mut cache, Logits::All)
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
    };
    assert_eq!(logits(&dir), logits(&src));
    // An index that names a tensor no shard holds.
    let mut bad = serde_json::Map::new();
    bad.insert(
        "model.extra.weight".into(),
        serde_json::json!("model-00001-of-00002.safetensors"),
    );
    let mut full = map.clone();
    full.extend(bad);
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({"weight_map": full}).to_string(),
    )
    .unwrap();
    let err = ModelFiles::open(&dir).unwrap_err().to_string();
    assert!(err.contains("model.extra.weight"), "{err}");
    // An index that points outside the directory.
    map.insert("x".into(), serde_json::json!("../elsewhere.safetensors"));
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({"weight_map": map}).to_string(),
    )
    .unwrap();
    let err = ModelFiles::open(&dir).unwrap_err().to_string();
    assert!(err.contains("inside the model directory"), "{err}");
}

/// A cache made with room for the whole generation holds exactly the
/// positions `inspect`'s estimate counts (in f32 for an f16 model too, the
/// type the CPU cache keeps), never grows past them, and gives the same
/// logits as a cache that grows by doubling.
#[test]
fn a_reserved_cache_holds_what_the_estimate_counts_and_decodes_the_same() {
    let files = tiny("llama");
    let (prompt_len, new_tokens) = (5, 11);
    for dtype in [DType::F32, DType::F16] {
        let estimate =
            kaiyuan_models::loader::memory_estimate(&files, dtype, prompt_len + new_tokens);
        let model = files.build(dtype).unwrap();
        let vocab = model.config().vocab_size as u32;
        let prompt: Vec<u32> = (0..prompt_len as u32)
            .map(|i| (7 * i + 3) % vocab)
            .collect();
        let mut reserved = model.new_cache_for(prompt_len + new_tokens);
        let mut growing = model.new_cache();
        let mut next = vec![prompt.clone()];
        for step in 0..new_tokens {
            let a = model.forward(&next, &mut reserved, Logits::Last).unwrap();
            let b = model.forward(&next, &mut growing, Logits::Last).unwrap();
            let (a, b) = (
                a.cast(DType::F32).unwrap().to_vec::<f32>().unwrap(),
                b.cast(DType::F32).unwrap().to_vec::<f32>().unwrap(),
            );
            assert_eq!(a, b, "{dtype:?} step {step}");
            if step == 0 {
                assert_eq!(reserved.byte_size(), estimate.kv_cache, "{dtype:?}");
            }
            let id = (step as u32 * 5 + 1) % vocab;
            next = vec![vec![id]];
        }
        assert_eq!(reserved.len(), prompt_len + new_tokens - 1);
        assert_eq!(reserved.byte_size(), estimate.kv_cache, "{dtype:?}: grew");
        assert!(
            growing.byte_size() > estimate.kv_cache,
            "{dtype:?}: the growing cache doubled"
        );
    }
}
