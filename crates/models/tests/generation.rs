//! Generation on a tiny fixture model with a tiny byte-level tokenizer:
//! streamed chunks, stop strings, batches, and sharded checkpoints.

mod common;

use std::collections::BTreeMap;

use kaiyuan_models::generate::{GenerationConfig, generate, generate_batch};
use kaiyuan_models::safetensors_io::{read_dir, write_file};
use kaiyuan_models::sampling::SamplingParams;
use kaiyuan_models::{Logits, ModelFiles, Weights};
use kaiyuan_tensor::DType;

/// The tiny fixture model `name`, copied into a scratch directory of its
/// own per call (tests run in parallel).
fn tiny(name: &str) -> ModelFiles {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = common::scratch_dir(&format!("generation-{name}-{call}"));
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
/// positions `inspect`'s estimate counts, in the KV dtype (an f16 model's
/// cache holds f16; an f32 model's f32 or, when asked, f16), never grows
/// past them, and gives the same logits as a cache that grows by doubling.
#[test]
fn a_reserved_cache_holds_what_the_estimate_counts_and_decodes_the_same() {
    let files = tiny("llama");
    let (prompt_len, new_tokens) = (5, 11);
    for (dtype, kv_dtype) in [
        (DType::F32, DType::F32),
        (DType::F16, DType::F32),
        (DType::F16, DType::F16),
        (DType::F32, DType::F16),
        (DType::F32, DType::BF16),
    ] {
        let estimate = kaiyuan_models::loader::memory_estimate(
            &files,
            dtype,
            kv_dtype,
            prompt_len + new_tokens,
        );
        let mut model = files.build(dtype).unwrap();
        model.set_kv_dtype(kv_dtype).unwrap();
        let dtype = (dtype, kv_dtype);
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

/// An f32 model with an f16 or bf16 KV cache: its prompt attends to the
/// rounded keys and values its decoding reads, so decoding token by token
/// agrees with running the whole sequence at once as closely as with an f32
/// cache (the products' summation order differs, not the inputs), while
/// the logits move from the f32 cache's by the storage type's precision.
#[test]
fn a_narrow_kv_cache_decodes_as_the_whole_sequence_runs() {
    let files = tiny("llama");
    let vocab = files.config.vocab_size as u32;
    let ids: Vec<u32> = (0..14u32).map(|i| (11 * i + 2) % vocab).collect();
    let prompt_len = 6;
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    let run = |kv_dtype: DType| {
        let mut model = files.build(DType::F32).unwrap();
        model.set_kv_dtype(kv_dtype).unwrap();
        let logits = |t: kaiyuan_tensor::Tensor| t.to_vec::<f32>().unwrap();
        let mut whole_cache = model.new_cache();
        let whole = logits(
            model
                .forward(std::slice::from_ref(&ids), &mut whole_cache, Logits::All)
                .unwrap(),
        );
        let mut cache = model.new_cache_for(ids.len());
        let mut stepped = logits(
            model
                .forward(&[ids[..prompt_len].to_vec()], &mut cache, Logits::All)
                .unwrap(),
        );
        for &id in &ids[prompt_len..] {
            stepped.extend(logits(
                model
                    .forward(&[vec![id]], &mut cache, Logits::Last)
                    .unwrap(),
            ));
        }
        (whole, stepped, cache.byte_size())
    };
    let (exact, exact_stepped, exact_bytes) = run(DType::F32);
    let noise = max_diff(&exact, &exact_stepped);
    assert!(
        noise <= 1e-5,
        "f32 cache: decoding differs from the whole sequence by {noise}"
    );
    for (kv_dtype, atol) in [(DType::F16, 5e-3f32), (DType::BF16, 5e-2)] {
        let (whole, stepped, bytes) = run(kv_dtype);
        let decode_gap = max_diff(&whole, &stepped);
        assert!(
            decode_gap <= 1e-5,
            "{kv_dtype:?}: decoding differs from the whole sequence by {decode_gap}"
        );
        let rounding = max_diff(&whole, &exact);
        assert!(
            rounding > 1e-5 && rounding <= atol,
            "{kv_dtype:?}: logits moved by {rounding} from the f32 cache's"
        );
        assert_eq!(bytes, exact_bytes / 2, "{kv_dtype:?}");
    }
}

/// A prompt longer than [`kaiyuan_models::PREFILL_CHUNK`] is prefilled in
/// near-equal chunks, with the same last logits as one forward call over it
/// and the same cache: the next decoded step agrees too.
#[test]
fn a_long_prompt_prefills_in_chunks_as_in_one_call() {
    let mut files = tiny("llama");
    let len = 2 * kaiyuan_models::PREFILL_CHUNK + 77;
    files.config.max_position_embeddings = len + 8;
    let model = files.build(DType::F32).unwrap();
    let vocab = model.config().vocab_size as u32;
    let prompt: Vec<u32> = (0..len as u32).map(|i| (13 * i + 5) % vocab).collect();
    let rows = [prompt];
    let mut chunked = model.new_cache_for(len + 1);
    let mut whole = model.new_cache_for(len + 1);
    let a = model.prefill(&rows, &mut chunked).unwrap();
    let b = model.forward(&rows, &mut whole, Logits::Last).unwrap();
    assert_eq!((chunked.len(), a.shape()), (len, b.shape()));
    let close = |a: &kaiyuan_tensor::Tensor, b: &kaiyuan_tensor::Tensor, what: &str| {
        let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs() - 1e-4 * y.abs())
            .fold(f32::MIN, f32::max);
        assert!(worst <= 1e-4, "{what}: |Δ| − 1e-4·|ref| reaches {worst}");
    };
    close(&a, &b, "prefill");
    let next = vec![vec![3u32]];
    let a = model.forward(&next, &mut chunked, Logits::Last).unwrap();
    let b = model.forward(&next, &mut whole, Logits::Last).unwrap();
    close(&a, &b, "first decoded step");
}
