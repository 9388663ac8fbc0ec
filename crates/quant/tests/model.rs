//! Whole-model quantization on the tiny fixture models of
//! `fixtures/models/` (LLaMA, Falcon with a fused qkv, GLM with a fused
//! gate/up, Qwen2):
//!
//! - every linear layer of every block ends up quantized, and the model's
//!   forward then runs the quantized kernels: its logits equal those of the
//!   same model holding the dequantized weights densely, up to the int8
//!   activation quantization of the kernels (`|x − ref| ≤ 0.05 + 0.05·|ref|`
//!   on logits of magnitude ~1);
//! - GPTQ's layer-wise output error on the calibration inputs is below
//!   round-to-nearest's for the layers overall;
//! - int8 stays much closer to the unquantized logits than int4;
//! - GPTQ without calibration data and NaN weights are refused, naming what
//!   is wrong.

use std::path::PathBuf;

use kaiyuan_models::{Logits, Model, ModelFiles};
use kaiyuan_quant::gptq::GptqSettings;
use kaiyuan_quant::model_quant::{Method, quantize_model};
use kaiyuan_tensor::{DType, Tensor};

fn load(name: &str) -> Model {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/models")
        .join(name);
    ModelFiles::open(&dir).unwrap().build(DType::F32).unwrap()
}

fn samples(vocab: usize, count: usize, len: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 33) % vocab as u64) as u32
                })
                .collect()
        })
        .collect()
}

fn logits(model: &Model, rows: &[Vec<u32>]) -> Vec<f32> {
    model
        .forward(rows, &mut model.new_cache(), Logits::All)
        .unwrap()
        .to_vec::<f32>()
        .unwrap()
}

/// The model with every quantized linear replaced by its dequantized dense
/// weight.
fn dequantized(model: &Model) -> Model {
    let mut dense = model.clone();
    for name in model.linear_modules() {
        let linear = model.linear(&name).unwrap();
        if let Some(q) = linear.quantized() {
            let w = Tensor::from_vec(q.dequantize(), &[q.rows(), q.cols()]).unwrap();
            dense.linear_mut(&name).unwrap().set_weight(w).unwrap();
        }
    }
    dense
}

fn max_violation(ours: &[f32], reference: &[f32], atol: f32, rtol: f32) -> f32 {
    ours.iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs() - (atol + rtol * b.abs()))
        .fold(f32::NEG_INFINITY, f32::max)
}

fn rms(a: &[f32], b: &[f32]) -> f32 {
    (a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>() / a.len() as f32).sqrt()
}

#[test]
fn quantized_models_run_the_kernels_on_every_linear() {
    for arch in ["llama", "falcon_new", "glm", "qwen2_window"] {
        let reference = load(arch);
        let vocab = reference.config().vocab_size;
        let calib = samples(vocab, 16, 24, 1);
        let eval = samples(vocab, 2, 16, 2);
        let want = logits(&reference, &eval);
        let mut errors = Vec::new();
        for (method, bits) in [(Method::Rtn, 8), (Method::Gptq, 4), (Method::Rtn, 4)] {
            let mut model = reference.clone();
            let settings = GptqSettings {
                bits,
                group_size: if bits == 8 { None } else { Some(32) },
                act_order: method == Method::Gptq,
                ..GptqSettings::default()
            };
            let mut progress = 0;
            let layers =
                quantize_model(&mut model, method, &settings, &[], Some(&calib), &mut |p| {
                    progress = p.done
                })
                .unwrap();
            let modules = reference.linear_modules();
            assert_eq!(layers.len(), modules.len(), "{arch}");
            assert_eq!(progress, modules.len(), "{arch}");
            for name in &modules {
                assert!(
                    model.linear(name).unwrap().quantized().is_some(),
                    "{arch}: {name}"
                );
            }
            let got = logits(&model, &eval);
            let dense = logits(&dequantized(&model), &eval);
            let v = max_violation(&got, &dense, 0.05, 0.05);
            assert!(
                v <= 0.0,
                "{arch} {method:?} {bits}-bit: kernels vs dequantized by {v}"
            );
            errors.push(rms(&got, &want));
            if method == Method::Gptq {
                let (gptq, rtn): (f64, f64) = layers
                    .iter()
                    .filter_map(|l| l.relative_output_error)
                    .fold((0.0, 0.0), |(a, b), (g, r)| (a + g, b + r));
                assert!(gptq < rtn, "{arch}: GPTQ layer error {gptq} vs RTN {rtn}");
            }
        }
        // int8 per channel is far closer to the unquantized model than int4.
        assert!(errors[0] < 0.5 * errors[2], "{arch}: rms errors {errors:?}");
    }
}

#[test]
fn bad_inputs_are_refused() {
    let mut model = load("llama");
    let settings = GptqSettings {
        group_size: Some(32),
        ..GptqSettings::default()
    };
    let err = quantize_model(&mut model, Method::Gptq, &settings, &[], None, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("calibration"), "{err}");

    let name = "model.layers.1.mlp.up_proj";
    let w = model.linear(name).unwrap().weight().clone();
    let mut values = w.to_vec::<f32>().unwrap();
    values[7] = f32::NAN;
    model
        .linear_mut(name)
        .unwrap()
        .set_weight(Tensor::from_vec(values, w.shape()).unwrap())
        .unwrap();
    let err = quantize_model(&mut model, Method::Rtn, &settings, &[], None, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains(name) && err.contains("NaN"), "{err}");

    // Skipped layers stay dense.
    let mut model = load("llama");
    let layers = quantize_model(
        &mut model,
        Method::Rtn,
        &settings,
        &["down_proj".to_string()],
        None,
        &mut |_| {},
    )
    .unwrap();
    assert!(layers.iter().all(|l| !l.name.ends_with("down_proj")));
    assert!(
        model
            .linear("model.layers.0.mlp.down_proj")
            .unwrap()
            .quantized()
            .is_none()
    );
}
