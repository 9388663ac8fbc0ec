//! The HF GPTQ layout against an external reader: two tiny LLaMA
//! checkpoints written by [`write_gptq_dir`] from seeded random weights
//! (`fixtures/quant/gptq_interop/<variant>/`), dequantized by GPTQModel's
//! safetensors-level `dequantize_model` (`make_reference.py` beside them,
//! output `reference.safetensors`).
//!
//! - the writer is deterministic: regenerating from the seed gives the
//!   committed bytes;
//! - loading the committed checkpoint through `ModelFiles::open` gives
//!   quantized layers whose `QMatrix::dequantize` equals GPTQModel's f32
//!   weights exactly (both are an f16 scale times an integer below 256 in
//!   magnitude, exact in f32), and the model runs.
//!
//! `KAIYUAN_BLESS_GPTQ_INTEROP=1 cargo test -p kaiyuan-quant --test
//! gptq_interop` rewrites the checkpoints (then rerun `make_reference.py`).

use std::path::{Path, PathBuf};

use half::f16;
use kaiyuan_models::gptq_format::CheckpointFormat;
use kaiyuan_models::model::Logits;
use kaiyuan_models::{ModelFiles, Weights};
use kaiyuan_quant::gptq::{GptqSettings, IntWeights, gptq, rtn};
use kaiyuan_quant::hf_gptq::write_gptq_dir;
use kaiyuan_quant::model_quant::to_qmatrix;
use kaiyuan_tensor::{DType, Tensor};
use serde_json::{Value, json};

const SEED: u64 = 20_261_129;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/quant/gptq_interop")
}

/// splitmix64: a fixed, dependency-free generator.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Approximately normal: the sum of 12 uniforms minus 6 (only
    /// additions, so the values are the same on every machine).
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
    }

    /// `n` values of `std`·normal, rounded to f16 as a checkpoint stores them.
    fn f16_values(&mut self, n: usize, std: f64) -> Vec<f64> {
        (0..n)
            .map(|_| f16::from_f64(std * self.normal()).to_f64())
            .collect()
    }
}

const HIDDEN: usize = 32;
const INTERMEDIATE: usize = 64;
const LAYERS: usize = 2;
const HEADS: usize = 2;
const KV_HEADS: usize = 1;
const HEAD_DIM: usize = 16;
const VOCAB: usize = 48;

fn model_config() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": false,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": 64,
        "mlp_bias": false,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": 1e-06,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "tie_word_embeddings": true,
        "vocab_size": VOCAB,
    })
}

/// The variants: directory name, settings, whether GPTQ (with act-order
/// when the settings say so) or round-to-nearest.
fn variants() -> Vec<(&'static str, GptqSettings, bool)> {
    vec![
        (
            "int4_g32_asym_act_order",
            GptqSettings {
                bits: 4,
                group_size: Some(32),
                sym: false,
                act_order: true,
                ..GptqSettings::default()
            },
            true,
        ),
        (
            "int8_per_channel_sym",
            GptqSettings {
                bits: 8,
                group_size: None,
                sym: true,
                ..GptqSettings::default()
            },
            false,
        ),
    ]
}

fn linear_shapes() -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    for i in 0..LAYERS {
        let p = format!("model.layers.{i}");
        for (m, rows, cols) in [
            ("self_attn.q_proj", HEADS * HEAD_DIM, HIDDEN),
            ("self_attn.k_proj", KV_HEADS * HEAD_DIM, HIDDEN),
            ("self_attn.v_proj", KV_HEADS * HEAD_DIM, HIDDEN),
            ("self_attn.o_proj", HIDDEN, HEADS * HEAD_DIM),
            ("mlp.gate_proj", INTERMEDIATE, HIDDEN),
            ("mlp.up_proj", INTERMEDIATE, HIDDEN),
            ("mlp.down_proj", HIDDEN, INTERMEDIATE),
        ] {
            out.push((format!("{p}.{m}"), rows, cols));
        }
    }
    out
}

/// H = 2/n·XᵀX of n seeded inputs whose columns have different scales, so
/// that act-order visits them out of order.
fn hessian(rng: &mut Rng, cols: usize) -> Vec<f64> {
    let n = 64;
    let col_scale: Vec<f64> = (0..cols).map(|_| 0.25 + 2.0 * rng.uniform()).collect();
    let x: Vec<f64> = (0..n * cols)
        .map(|i| col_scale[i % cols] * rng.normal())
        .collect();
    let mut h = vec![0.0; cols * cols];
    for i in 0..cols {
        for j in 0..cols {
            let s: f64 = (0..n).map(|t| x[t * cols + i] * x[t * cols + j]).sum();
            h[i * cols + j] = 2.0 / n as f64 * s;
        }
    }
    h
}

/// The dense tensors and the quantized layers of `variant`.
fn build(settings: &GptqSettings, use_gptq: bool) -> (Weights, Vec<(String, IntWeights)>) {
    let mut rng = Rng(SEED);
    let mut dense = Weights::new("generated");
    let f16_tensor = |v: Vec<f64>, shape: &[usize]| {
        let v: Vec<f16> = v.into_iter().map(f16::from_f64).collect();
        Tensor::from_vec(v, shape).unwrap()
    };
    dense.insert(
        "model.embed_tokens.weight",
        f16_tensor(rng.f16_values(VOCAB * HIDDEN, 0.5), &[VOCAB, HIDDEN]),
    );
    let norm = |rng: &mut Rng| {
        f16_tensor(
            (0..HIDDEN).map(|_| 1.0 + 0.1 * rng.normal()).collect(),
            &[HIDDEN],
        )
    };
    for i in 0..LAYERS {
        dense.insert(
            format!("model.layers.{i}.input_layernorm.weight"),
            norm(&mut rng),
        );
        dense.insert(
            format!("model.layers.{i}.post_attention_layernorm.weight"),
            norm(&mut rng),
        );
    }
    dense.insert("model.norm.weight", norm(&mut rng));
    let mut layers = Vec::new();
    for (name, rows, cols) in linear_shapes() {
        let w = rng.f16_values(rows * cols, 1.0 / (cols as f64).sqrt());
        let q = if use_gptq {
            let h = hessian(&mut rng, cols);
            gptq(&name, &w, rows, cols, &h, settings).unwrap().0
        } else {
            rtn(&name, &w, rows, cols, settings).unwrap()
        };
        layers.push((name, q));
    }
    (dense, layers)
}

fn write_variant(dir: &Path, settings: &GptqSettings, use_gptq: bool) {
    let (dense, layers) = build(settings, use_gptq);
    let refs: Vec<(&str, &IntWeights)> = layers.iter().map(|(n, q)| (n.as_str(), q)).collect();
    write_gptq_dir(
        dir,
        &model_config(),
        &dense,
        &refs,
        settings,
        CheckpointFormat::V1,
    )
    .unwrap();
}

#[test]
fn regenerating_from_the_seed_gives_the_committed_bytes() {
    let bless = std::env::var("KAIYUAN_BLESS_GPTQ_INTEROP").as_deref() == Ok("1");
    for (name, settings, use_gptq) in variants() {
        let committed = fixture_dir().join(name);
        if bless {
            write_variant(&committed, &settings, use_gptq);
            continue;
        }
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gptq_interop_{name}"));
        write_variant(&out, &settings, use_gptq);
        for file in ["config.json", "model.safetensors"] {
            let ours = std::fs::read(out.join(file)).unwrap();
            let theirs = std::fs::read(committed.join(file)).unwrap();
            assert!(
                ours == theirs,
                "{name}/{file}: regenerated bytes differ from the committed fixture ({} vs {} bytes)",
                ours.len(),
                theirs.len()
            );
        }
    }
}

fn read_reference(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, view.shape().to_vec(), values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn the_committed_checkpoints_load_and_match_gptqmodel_exactly() {
    for (name, settings, use_gptq) in variants() {
        let dir = fixture_dir().join(name);
        let files = ModelFiles::open(&dir).unwrap();
        let reference = read_reference(&dir.join("reference.safetensors"));
        let quantized: Vec<(&str, _)> = files.weights.quantized_iter().collect();
        assert_eq!(quantized.len(), LAYERS * 7, "{name}");
        assert_eq!(reference.len(), quantized.len(), "{name}");
        // What the quantizer itself installs for these weights.
        let (_, layers) = build(&settings, use_gptq);
        let mut permuted = 0;
        for ((qname, matrix), (rname, shape, values)) in quantized.iter().zip(&reference) {
            assert_eq!(qname, rname, "{name}");
            assert_eq!(shape, &[matrix.rows(), matrix.cols()], "{name}: {qname}");
            let ours = matrix.dequantize();
            let mismatches: Vec<String> = ours
                .iter()
                .zip(values)
                .enumerate()
                .filter(|(_, (a, b))| a.to_bits() != b.to_bits())
                .take(5)
                .map(|(i, (a, b))| {
                    format!(
                        "[{}, {}]: ours {a}, GPTQModel {b}",
                        i / shape[1],
                        i % shape[1]
                    )
                })
                .collect();
            assert!(mismatches.is_empty(), "{name}: {qname}: {mismatches:?}");
            let module = qname.strip_suffix(".weight").unwrap();
            let (_, q) = layers.iter().find(|(n, _)| n == module).unwrap();
            assert_eq!(to_qmatrix(q).unwrap().dequantize(), ours, "{name}: {qname}");
            if q.g_idx
                .iter()
                .enumerate()
                .any(|(c, &g)| g as usize != c / q.group_size)
            {
                permuted += 1;
            }
        }
        if settings.act_order {
            assert!(permuted > 0, "{name}: act-order left every g_idx trivial");
        }
        let model = files.build(DType::F32).unwrap();
        let mut cache = model.new_cache();
        let logits = model
            .forward(&[vec![1, 5, 9, 20]], &mut cache, Logits::All)
            .unwrap();
        assert_eq!(logits.shape(), &[1, 4, VOCAB]);
        assert!(
            logits
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .all(|v| v.is_finite())
        );
    }
}
