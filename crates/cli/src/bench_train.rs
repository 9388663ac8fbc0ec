//! `kaiyuan bench train`: training steps per second of a LLaMA-style model
//! built from scratch, the same model, batch and sequence length that
//! `fixtures/bench/train_torch.py` trains with PyTorch.
//!
//! Each timed step is forward, backward and one AdamW update on a random
//! batch; the first step is a warm-up. Prints tokens/s (median over steps)
//! and the achieved GFLOP/s counted as 6 · parameters · tokens. With
//! `--device cuda` the whole step runs on the GPU.

use std::time::Instant;

use kaiyuan_models::ModelConfig;
use kaiyuan_tensor::{Tensor, no_grad};
use kaiyuan_train::config::ModelSection;
use kaiyuan_train::init::{SplitMix64, hf_config, init_model};
use kaiyuan_train::loss::causal_lm_loss;
use kaiyuan_train::optim::{AdamW, AdamWConfig, ParamRef};

/// The benchmark model: hidden 256, 4 layers, 8 heads (4 KV), MLP 688,
/// vocabulary 2048 — written once here and in the Python peer.
pub fn bench_model() -> ModelSection {
    ModelSection {
        hidden_size: 256,
        num_layers: 4,
        num_heads: 8,
        num_kv_heads: 4,
        intermediate_size: 688,
        max_position_embeddings: 256,
        ..ModelSection::default()
    }
}

/// Vocabulary of the benchmark model.
pub const VOCAB: usize = 2048;

/// Runs the benchmark: `steps` timed steps of `batch` × `seq` tokens, in
/// f32 or, with `mixed`, forward and backward in that dtype on f32
/// parameters.
pub fn run(
    steps: usize,
    batch: usize,
    seq: usize,
    threads: usize,
    mixed: Option<kaiyuan_tensor::DType>,
    json: bool,
) -> anyhow::Result<()> {
    let section = bench_model();
    let config_json = hf_config(&section, VOCAB, Some(0), Some(0))?;
    let config = ModelConfig::from_json_str("bench", &config_json.to_string())?;
    let mut model = init_model(&config, 0.02, 0)?;
    // `--device cuda`: parameters, moments and the whole step on the GPU
    // (reading the loss each step waits for the step's kernels).
    crate::device_arg::place(&mut model)?;
    let device = crate::device_arg::current();
    let precision = mixed.map_or("f32".to_string(), |d| format!("{d} mixed"));
    let params: usize = model.parameters().iter().map(|(_, t)| t.elem_count()).sum();
    let mut opt = AdamW::new(AdamWConfig {
        lr: 1e-3,
        ..AdamWConfig::default()
    });
    let mut rng = SplitMix64::new(1);
    let mut seconds = Vec::new();
    let mut last_loss = 0.0f32;
    for step in 0..=steps {
        let ids: Vec<Vec<u32>> = (0..batch)
            .map(|_| (0..seq).map(|_| rng.below(VOCAB as u64) as u32).collect())
            .collect();
        let labels: Vec<Vec<i64>> = ids
            .iter()
            .map(|r| r.iter().map(|&x| i64::from(x)).collect())
            .collect();
        let start = Instant::now();
        // Mixed precision: forward and backward on a low-precision copy of
        // the f32 parameters the optimiser updates (as `train.precision`).
        let mut low_precision = match mixed {
            Some(dtype) => Some(model.to_dtype(dtype)?),
            None => None,
        };
        let compute = low_precision.as_mut().unwrap_or(&mut model);
        let leaves = compute.track_gradients();
        let loss = causal_lm_loss(compute, &ids, &labels)?;
        let grads = loss.backward()?;
        compute.stop_tracking_gradients();
        drop(low_precision);
        // The value without the graph, which holds the parameters' leaves
        // (a device optimiser updates parameters in place once nothing
        // else shares them).
        let loss_value = loss.detach();
        drop(loss);
        let grads: Vec<Tensor> = leaves
            .iter()
            .map(|(_, l)| {
                grads
                    .get(l)
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("no gradient"))
            })
            .collect::<anyhow::Result<_>>()?;
        drop(leaves);
        {
            let mut slots = model.trainable_mut();
            let mut refs: Vec<ParamRef<'_>> = slots
                .iter_mut()
                .zip(&grads)
                .map(|((n, p), g)| (n.as_str(), &mut **p, g))
                .collect();
            no_grad(|| opt.step(&mut refs, 1.0))?;
        }
        last_loss = loss_value
            .cast(kaiyuan_tensor::DType::F32)?
            .to_scalar::<f32>()?;
        if step > 0 {
            seconds.push(start.elapsed().as_secs_f64());
        }
    }
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    let tokens = (batch * seq) as f64;
    let tokens_per_second = tokens / median;
    let gflops = 6.0 * params as f64 * tokens / median / 1e9;
    if json {
        println!(
            "{{\"impl\":\"kaiyuan\",\"device\":\"{device}\",\"precision\":\"{precision}\",\"threads\":{threads},\"batch\":{batch},\"seq\":{seq},\"params\":{params},\"steps\":{steps},\"median_step_s\":{median},\"tokens_per_s\":{tokens_per_second},\"gflops\":{gflops},\"loss\":{last_loss}}}"
        );
    } else {
        println!(
            "kaiyuan train step on {device} ({precision}): {params} parameters, batch {batch} x {seq}, {threads} threads: median {median:.3} s/step, {tokens_per_second:.0} tokens/s, {gflops:.1} GFLOP/s (6·N·tokens)"
        );
    }
    Ok(())
}
