//! Parity with HF transformers on tiny random models of every architecture
//! (fixtures/models/make_references.py): logits of several sequences,
//! a left-padded batch, greedy generation, KV-cached decode and batching.

use std::path::{Path, PathBuf};

use kaiyuan_models::safetensors_io::read_dir;
use kaiyuan_models::{KvCache, Logits, Model, ModelConfig, Weights};
use kaiyuan_tensor::{DType, Tensor};

const VARIANTS: &[&str] = &[
    "llama",
    "llama_linear",
    "llama_dynamic",
    "llama_yarn",
    "llama3",
    "mistral_window",
    "qwen2_window",
    "falcon_mqa",
    "falcon_new",
    "falcon_sequential",
    "glm",
    "glm4",
];

/// |x − ref| ≤ ATOL + RTOL·|ref| for f32 logits.
const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/models")
        .join(name)
}

struct Reference {
    sequences: Vec<Vec<u32>>,
    greedy_prompt: Vec<u32>,
    greedy_tokens: Vec<u32>,
    tensors: Weights,
}

fn load(name: &str) -> (Model, Reference) {
    let dir = fixture(name);
    let config = ModelConfig::from_file(dir.join("config.json")).unwrap();
    let weights = read_dir(&dir).unwrap();
    let model = Model::new(config, &weights, DType::F32).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let mut tensors = Weights::new("reference");
    kaiyuan_models::safetensors_io::read_file(&dir.join("reference.safetensors"), &mut tensors)
        .unwrap();
    let reference = Reference {
        sequences: json["sequences"]
            .as_array()
            .unwrap()
            .iter()
            .map(ids)
            .collect(),
        greedy_prompt: ids(&json["greedy_prompt"]),
        greedy_tokens: ids(&json["greedy_tokens"]),
        tensors,
    };
    (model, reference)
}

fn assert_close(what: &str, actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let mut worst = 0.0f32;
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let err = (a - e).abs();
        assert!(
            err <= ATOL + RTOL * e.abs(),
            "{what}: element {i}: {a} vs reference {e} (|diff| {err})"
        );
        worst = worst.max(err);
    }
    assert!(worst.is_finite());
}

fn logits_rows(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

fn greedy(model: &Model, prompts: &[Vec<u32>], steps: usize) -> Vec<Vec<u32>> {
    let mut cache = model.new_cache();
    let mut out = vec![Vec::new(); prompts.len()];
    let mut logits = model.forward(prompts, &mut cache, Logits::Last).unwrap();
    for _ in 0..steps {
        let next: Vec<u32> = logits.argmax(-1, false).unwrap().to_vec::<u32>().unwrap();
        for (o, &n) in out.iter_mut().zip(&next) {
            o.push(n);
        }
        let rows: Vec<Vec<u32>> = next.iter().map(|&n| vec![n]).collect();
        logits = model.forward(&rows, &mut cache, Logits::Last).unwrap();
    }
    out
}

#[test]
fn logits_match_transformers() {
    for name in VARIANTS {
        let (model, reference) = load(name);
        for (i, seq) in reference.sequences.iter().enumerate() {
            let mut cache = model.new_cache();
            let logits = model
                .forward(std::slice::from_ref(seq), &mut cache, Logits::All)
                .unwrap();
            let expected = reference.tensors.raw(&format!("logits_{i}")).unwrap();
            assert_eq!(
                logits.shape()[1..],
                *expected.shape(),
                "{name} sequence {i}"
            );
            assert_close(
                &format!("{name} sequence {i} (length {})", seq.len()),
                &logits_rows(&logits),
                &expected.to_vec::<f32>().unwrap(),
            );
        }
    }
}

#[test]
fn left_padded_batch_matches_transformers() {
    for name in VARIANTS {
        let (model, reference) = load(name);
        let rows = vec![
            reference.sequences[0].clone(),
            reference.sequences[1].clone(),
        ];
        let mut cache = model.new_cache();
        let logits = model.forward(&rows, &mut cache, Logits::All).unwrap();
        let width = logits.shape()[1];
        for (r, row) in rows.iter().enumerate() {
            let real = logits
                .narrow(0, r, 1)
                .unwrap()
                .narrow(1, width - row.len(), row.len())
                .unwrap();
            let expected = reference
                .tensors
                .raw(&format!("padded_logits_{r}"))
                .unwrap();
            assert_close(
                &format!("{name} padded row {r}"),
                &logits_rows(&real.contiguous().expect("contiguous")),
                &expected.to_vec::<f32>().unwrap(),
            );
        }
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    for name in VARIANTS {
        let (model, reference) = load(name);
        let got = greedy(&model, std::slice::from_ref(&reference.greedy_prompt), 32);
        assert_eq!(got[0], reference.greedy_tokens, "{name}: greedy tokens");
    }
}

#[test]
fn cached_decode_equals_recomputation() {
    // Dynamic NTK changes the frequencies as the sequence grows, so keys
    // cached early keep their old rotation: as in transformers, cached and
    // one-pass logits differ past max_position_embeddings by design.
    for name in VARIANTS.iter().filter(|n| **n != "llama_dynamic") {
        let (model, reference) = load(name);
        let seq = &reference.sequences[2];
        let split = 7;
        let mut full_cache = model.new_cache();
        let full = model
            .forward(std::slice::from_ref(seq), &mut full_cache, Logits::All)
            .unwrap();
        let mut cache = KvCache::default();
        let mut pieces = vec![
            model
                .forward(&[seq[..split].to_vec()], &mut cache, Logits::All)
                .unwrap(),
        ];
        for &token in &seq[split..] {
            pieces.push(
                model
                    .forward(&[vec![token]], &mut cache, Logits::All)
                    .unwrap(),
            );
        }
        let refs: Vec<&Tensor> = pieces.iter().collect();
        let stepped = Tensor::concat(&refs, 1).unwrap();
        assert_close(
            &format!("{name}: cached decode vs one pass"),
            &logits_rows(&stepped),
            &logits_rows(&full),
        );
    }
}

#[test]
fn batched_greedy_equals_per_prompt_greedy() {
    // Dynamic NTK picks its frequencies from the longest row of the batch (as
    // transformers does), so batching changes its results by design.
    for name in VARIANTS.iter().filter(|n| **n != "llama_dynamic") {
        let (model, reference) = load(name);
        let prompts = vec![
            reference.sequences[0].clone(),
            reference.greedy_prompt.clone(),
            reference.sequences[2][..9].to_vec(),
        ];
        let batched = greedy(&model, &prompts, 12);
        for (p, prompt) in prompts.iter().enumerate() {
            let single = greedy(&model, std::slice::from_ref(prompt), 12);
            assert_eq!(batched[p], single[0], "{name}: prompt {p} batched vs alone");
        }
    }
}
