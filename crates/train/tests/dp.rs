//! DP-SGD: clipping against a direct per-example computation, the
//! unclipped sum against the batched gradient, the noise's scale and
//! determinism, ε against Opacus, and the exposure of planted canaries with
//! and without DP.

mod common;

use common::out_dir;

use std::path::Path;

use kaiyuan_models::safetensors_io::read_dir;
use kaiyuan_models::{Model, ModelConfig};
use kaiyuan_tensor::{DType, Tensor};
use kaiyuan_tokenizer::Tokenizer;
use kaiyuan_train::config::TrainConfig;
use kaiyuan_train::dp::{
    DpConfig, clip_factor, epsilon, exposure, poisson_batch, private_gradient,
};
use kaiyuan_train::loss::causal_lm_loss;
use kaiyuan_train::trainer;

fn fixture_model() -> Model {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/llama");
    let config = ModelConfig::from_file(dir.join("config.json")).unwrap();
    Model::new(config, &read_dir(&dir).unwrap(), DType::F32).unwrap()
}

fn examples() -> Vec<Vec<u32>> {
    (0..4u32)
        .map(|e| (0..10).map(|i| 2 + (e * 17 + i * 5) % 70).collect())
        .collect()
}

/// Gradients of the mean loss of `rows` (batched), as f64 vectors.
fn batched_gradient(model: &Model, rows: &[Vec<u32>]) -> Vec<Vec<f64>> {
    let mut m = model.clone();
    let leaves = m.track_gradients();
    let labels: Vec<Vec<i64>> = rows
        .iter()
        .map(|r| r.iter().map(|&x| x as i64).collect())
        .collect();
    let loss = causal_lm_loss(&m, rows, &labels).unwrap();
    let grads = loss.backward().unwrap();
    leaves
        .iter()
        .map(|(_, l)| {
            grads
                .get(l)
                .unwrap()
                .cast(DType::F64)
                .unwrap()
                .to_vec::<f64>()
                .unwrap()
        })
        .collect()
}

fn flat(ts: &[Tensor]) -> Vec<Vec<f64>> {
    ts.iter()
        .map(|t| t.cast(DType::F64).unwrap().to_vec::<f64>().unwrap())
        .collect()
}

fn assert_close(a: &[Vec<f64>], b: &[Vec<f64>], atol: f64, rtol: f64) {
    for (x, y) in a.iter().zip(b) {
        for (p, q) in x.iter().zip(y) {
            assert!((p - q).abs() <= atol + rtol * q.abs(), "{p} vs {q}");
        }
    }
}

#[test]
fn clipping_equals_a_direct_per_example_computation() {
    let model = fixture_model();
    let rows = examples();
    let config = DpConfig {
        enabled: true,
        noise_multiplier: 0.0,
        max_grad_norm: 0.05,
        delta: 1e-5,
    };
    let mut m = model.clone();
    let (private, info) = private_gradient(&mut m, &rows, &config, 4.0, 0, 0).unwrap();
    // Direct: each example alone through a batch of one, its norm, the factor.
    let mut expected: Option<Vec<Vec<f64>>> = None;
    for (row, &norm) in rows.iter().zip(&info.norms) {
        let g = batched_gradient(&model, std::slice::from_ref(row));
        let direct_norm = g.iter().flatten().map(|x| x * x).sum::<f64>().sqrt();
        assert!((direct_norm - norm).abs() <= 1e-9 + 1e-6 * norm);
        assert!(
            direct_norm > config.max_grad_norm,
            "the bound must bind for this test"
        );
        let f = (config.max_grad_norm / (direct_norm + 1e-6)).min(1.0);
        let scaled: Vec<Vec<f64>> = g
            .iter()
            .map(|v| v.iter().map(|x| x * f / 4.0).collect())
            .collect();
        expected = Some(match expected {
            None => scaled,
            Some(acc) => acc
                .iter()
                .zip(&scaled)
                .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x + y).collect())
                .collect(),
        });
    }
    assert_close(&flat(&private), &expected.unwrap(), 1e-7, 1e-5);
    // The clipped per-example gradients have norm C: the sum's norm is at most B·C / B.
    let total = flat(&private)
        .iter()
        .flatten()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt();
    assert!(total <= config.max_grad_norm + 1e-6);
    assert_eq!(clip_factor(0.5, 1.0), 1.0);
}

#[test]
fn without_clipping_or_noise_the_sum_is_the_batch_gradient() {
    let model = fixture_model();
    let rows = examples();
    let config = DpConfig {
        enabled: true,
        noise_multiplier: 0.0,
        max_grad_norm: 1e9,
        delta: 1e-5,
    };
    let (private, _) = private_gradient(&mut model.clone(), &rows, &config, 4.0, 0, 0).unwrap();
    assert_close(
        &flat(&private),
        &batched_gradient(&model, &rows),
        1e-6,
        1e-4,
    );
}

#[test]
fn noise_has_the_configured_scale_and_is_fixed_by_seed_and_step() {
    let model = fixture_model();
    let config = DpConfig {
        enabled: true,
        noise_multiplier: 2.0,
        max_grad_norm: 0.5,
        delta: 1e-5,
    };
    let (a, info) = private_gradient(&mut model.clone(), &[], &config, 1.0, 7, 3).unwrap();
    assert_eq!(info.batch, 0);
    let values: Vec<f64> = flat(&a).into_iter().flatten().collect();
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
    assert!(
        (std - 1.0).abs() < 0.03 && mean.abs() < 0.03,
        "mean {mean}, std {std} over {n}"
    );
    let (b, _) = private_gradient(&mut model.clone(), &[], &config, 1.0, 7, 3).unwrap();
    assert_eq!(flat(&a), flat(&b));
    let (c, _) = private_gradient(&mut model.clone(), &[], &config, 1.0, 7, 4).unwrap();
    assert_ne!(flat(&a), flat(&c));
    // Poisson batches: the expected size, fixed by (seed, step).
    let sizes: Vec<usize> = (0..200)
        .map(|s| poisson_batch(1000, 0.01, 1, s).len())
        .collect();
    let mean = sizes.iter().sum::<usize>() as f64 / 200.0;
    assert!((mean - 10.0).abs() < 1.0, "mean batch {mean}");
    assert_eq!(
        poisson_batch(1000, 0.01, 1, 5),
        poisson_batch(1000, 0.01, 1, 5)
    );
}

#[test]
fn epsilon_matches_opacus_for_the_reference_setting() {
    let config = DpConfig {
        enabled: true,
        noise_multiplier: 1.1,
        max_grad_norm: 1.0,
        delta: 1e-5,
    };
    let eps = epsilon(&config, 0.01, 10_000).unwrap();
    // Opacus 1.6.0: 5.63199236854841 (fixtures/train/dp_rdp.json).
    assert!((eps - 5.63199236854841).abs() < 1e-9, "{eps}");
}

#[test]
fn canaries_are_less_exposed_with_dp() {
    // Training text: the embedded corpus plus a canary repeated 40 times.
    let dir = out_dir("canary");
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = kaiyuan_train::corpus::Corpus::new(&kaiyuan_train::corpus::CorpusConfig {
        documents: 300,
        ..Default::default()
    })
    .unwrap();
    let prefix = "The secret code of the vault is";
    let secret = " 7 3 9 1 4.";
    let mut lines: Vec<String> = corpus
        .training()
        .into_iter()
        .map(|d| serde_json::json!({"text": d.text}).to_string())
        .collect();
    for i in 0..40 {
        lines.insert(
            i * 7,
            serde_json::json!({"text": format!("{prefix}{secret}")}).to_string(),
        );
    }
    let data = dir.join("data.jsonl");
    std::fs::write(&data, lines.join("\n")).unwrap();
    let base = |extra: &[&str]| -> TrainConfig {
        let mut sets: Vec<String> = [
            "hidden_size=64",
            "num_layers=2",
            "num_heads=4",
            "num_kv_heads=2",
            "intermediate_size=128",
            "max_position_embeddings=64",
            "vocab_size=400",
            "seq_len=32",
            "batch_size=8",
            "max_steps=400",
            "warmup_steps=5",
            "eval_every=0",
            "save_every=0",
            "lr=0.01",
            "validation_fraction=0.05",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        sets.push(format!("source={}", data.display()));
        sets.extend(extra.iter().map(|s| s.to_string()));
        TrainConfig::parse("test", "", &sets).unwrap()
    };
    let plain_dir = dir.join("plain");
    trainer::run(&base(&[]), &plain_dir, None, &[], &mut |_| {}).unwrap();
    let dp_dir = dir.join("dp");
    let tokenizer_flag = format!(
        "tokenizer.path={}",
        plain_dir.join("final/tokenizer.json").display()
    );
    trainer::run(
        &base(&[
            "dp.enabled=true",
            "dp.noise_multiplier=1.1",
            "dp.max_grad_norm=1.0",
            &tokenizer_flag,
        ]),
        &dp_dir,
        None,
        &[],
        &mut |_| {},
    )
    .unwrap();

    let tokenizer = Tokenizer::from_file(plain_dir.join("final/tokenizer.json")).unwrap();
    let encode = |s: &str| tokenizer.encode(s).unwrap().ids;
    let mut rng = kaiyuan_train::init::SplitMix64::new(42);
    let candidates: Vec<Vec<u32>> = (0..200)
        .map(|_| {
            let digits: Vec<String> = (0..5).map(|_| rng.below(10).to_string()).collect();
            format!(" {}.", digits.join(" "))
        })
        .filter(|c| c != secret)
        .map(|c| encode(&c))
        .collect();
    let load = |d: &Path| {
        kaiyuan_models::ModelFiles::open(d.join("final"))
            .unwrap()
            .take_model(DType::F32)
            .unwrap()
    };
    let plain = exposure(
        &load(&plain_dir),
        &encode(prefix),
        &encode(secret),
        &candidates,
    )
    .unwrap();
    let private = exposure(
        &load(&dp_dir),
        &encode(prefix),
        &encode(secret),
        &candidates,
    )
    .unwrap();
    let eps = std::fs::read_to_string(dp_dir.join("metrics.jsonl")).unwrap();
    let last_eps = eps
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["epsilon"].as_f64())
        .next_back()
        .unwrap();
    eprintln!(
        "canary exposure (max {:.2} bits): without DP {plain:.2}, with DP (σ=1.1, C=1, ε={last_eps:.1} at δ=1e-5) {private:.2}",
        ((candidates.len() + 1) as f64).log2()
    );
    assert!(
        plain > private,
        "exposure without DP {plain} vs with {private}"
    );
}
