//! Training on a CUDA device against the same training on the CPU: the loss
//! and every parameter gradient of one batch, then whole runs of the
//! training loop (loss per step, checkpoints that load on the CPU, resume).
//!
//! Runs with kaiyuan-cuda's `emulator` feature (CI: the kernels on the CPU)
//! or `cuda` (a GPU); skips visibly without a device and fails instead under
//! `REQUIRE_GPU=1`. Tolerances `|x − ref| ≤ atol + rtol·|ref|`: the loss
//! atol 1e-5, rtol 1e-5; gradients atol 1e-5, rtol 1e-3 (f32, sums in
//! another order); run losses rtol 2e-3 after six optimiser steps.
#![cfg(any(feature = "cuda", feature = "emulator"))]

mod common;

use common::{out_dir, stopped_and_resumed, train};

use kaiyuan_models::Model;
use kaiyuan_tensor::{DType, Device, check_device};
use kaiyuan_train::config::TrainConfig;

const GPU: Device = Device::Cuda(0);

fn gpu(test: &str) -> bool {
    match check_device(GPU) {
        Ok(()) => true,
        Err(error) => {
            if std::env::var("REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("{test}: REQUIRE_GPU=1 but {error}");
            }
            eprintln!("SKIPPED {test}: {error}");
            false
        }
    }
}

/// A tiny LLaMA-style run whose head dim (32) the fused attention takes.
fn tiny(extra: &[&str]) -> TrainConfig {
    common::config(
        &[
            "hidden_size=64",
            "num_layers=2",
            "num_heads=2",
            "num_kv_heads=1",
            "intermediate_size=96",
            "max_position_embeddings=64",
            "vocab_size=300",
            "documents=200",
            "validation_documents=10",
            "seq_len=16",
            "batch_size=2",
            "max_steps=6",
            "warmup_steps=2",
            "eval_every=3",
            "eval_batches=1",
            "save_every=3",
            "keep_last=3",
            "lr=0.01",
        ],
        extra,
    )
}

fn close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= atol + rtol * w.abs(),
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

#[test]
fn one_batch_loss_and_every_gradient_match_the_cpu() {
    if !gpu("gradients") {
        return;
    }
    let config = tiny(&[]);
    let json = kaiyuan_train::init::hf_config(&config.model, 300, Some(1), Some(2)).unwrap();
    let model_config =
        kaiyuan_models::ModelConfig::from_json_str("tiny", &json.to_string()).unwrap();
    let mut cpu: Model = kaiyuan_train::init::init_model(&model_config, 0.05, 7).unwrap();
    let mut dev = cpu.clone();
    dev.to_device(GPU).unwrap();
    assert_eq!(dev.device(), GPU);
    let ids: Vec<Vec<u32>> = vec![
        (0..16).map(|i| (i * 37 + 5) % 300).collect(),
        (0..16).map(|i| (i * 11 + 90) % 300).collect(),
    ];
    let mut labels: Vec<Vec<i64>> = ids
        .iter()
        .map(|r| r.iter().map(|&i| i64::from(i)).collect())
        .collect();
    labels[1][3] = kaiyuan_train::loss::IGNORE;
    let mut grads = Vec::new();
    for model in [&mut cpu, &mut dev] {
        let leaves = model.track_gradients();
        let loss = kaiyuan_train::loss::causal_lm_loss(model, &ids, &labels).unwrap();
        let g = loss.backward().unwrap();
        let per_leaf: Vec<(String, Vec<f32>)> = leaves
            .iter()
            .map(|(name, leaf)| {
                let grad = g
                    .get(leaf)
                    .unwrap_or_else(|| panic!("no gradient for {name}"));
                (
                    name.clone(),
                    grad.to_device(Device::Cpu)
                        .unwrap()
                        .cast(DType::F32)
                        .unwrap()
                        .to_vec()
                        .unwrap(),
                )
            })
            .collect();
        grads.push((loss.to_scalar::<f32>().unwrap(), per_leaf));
        model.stop_tracking_gradients();
    }
    let (want_loss, want) = &grads[0];
    let (got_loss, got) = &grads[1];
    close("loss", &[*got_loss], &[*want_loss], 1e-5, 1e-5);
    assert_eq!(got.len(), want.len());
    for ((name, g), (_, w)) in got.iter().zip(want) {
        close(name, g, w, 1e-5, 1e-3);
    }
}

#[test]
fn training_runs_on_the_device_as_on_the_cpu_and_checkpoints_load_anywhere() {
    if !gpu("training loop") {
        return;
    }
    let on_cpu = train(&tiny(&[]), &out_dir("cuda-cpu-run"), None, &[]);
    let dir = out_dir("cuda-device-run");
    let on_device = train(&tiny(&["train.device=cuda"]), &dir, None, &[]);
    assert_eq!(on_device.losses.len(), on_cpu.losses.len());
    for (step, (d, c)) in on_device.losses.iter().zip(&on_cpu.losses).enumerate() {
        assert!(
            (d - c).abs() <= 2e-3 * c.abs(),
            "step {}: device loss {d}, cpu loss {c}",
            step + 1
        );
    }
    // The final model is written from the host, loadable by anything.
    assert!(dir.join("final/model.safetensors").is_file());
    // Resuming a device run continues it (on the device, as saved).
    let split = out_dir("cuda-device-split");
    let joined = stopped_and_resumed(&tiny(&["train.device=cuda", "max_steps=3"]), &split, 6);
    for (step, (j, w)) in joined.iter().zip(&on_device.losses).enumerate() {
        assert!(
            (j - w).abs() <= 1e-6 * w.abs(),
            "step {}: resumed {j}, uninterrupted {w}",
            step + 1
        );
    }
}

#[test]
fn device_training_refuses_what_runs_on_the_cpu_only() {
    for (extra, needle) in [("optimizer=sgd", "SGD"), ("dp.enabled=true", "DP-SGD")] {
        let error = TrainConfig::parse(
            "test",
            "",
            &["train.device=cuda".to_string(), extra.to_string()],
        )
        .and_then(|c| c.validate().map(|()| c))
        .unwrap_err();
        assert!(error.to_string().contains(needle), "{extra}: {error}");
    }
    let error = TrainConfig::parse("test", "", &["train.device=gpu".to_string()])
        .and_then(|c| c.validate().map(|()| c))
        .unwrap_err();
    assert!(error.to_string().contains("train.device"), "{error}");
}

#[test]
fn mixed_precision_on_the_device() {
    if !gpu("mixed precision") {
        return;
    }
    let on_cpu = train(
        &tiny(&["precision=bf16"]),
        &out_dir("cuda-mixed-cpu"),
        None,
        &[],
    );
    let on_device = train(
        &tiny(&["precision=bf16", "train.device=cuda"]),
        &out_dir("cuda-mixed-device"),
        None,
        &[],
    );
    // The same bf16 step on both devices, rounded in different orders.
    for (step, (d, c)) in on_device.losses.iter().zip(&on_cpu.losses).enumerate() {
        assert!(
            (d - c).abs() <= 3e-2 * c.abs(),
            "step {}: device loss {d}, cpu loss {c}",
            step + 1
        );
    }
    assert!(
        on_device.last_loss < on_device.first_loss,
        "{:?}",
        on_device.losses
    );
}
