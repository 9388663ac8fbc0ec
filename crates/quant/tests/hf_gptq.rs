//! The HF GPTQ layout: pack → unpack round trips (property tests over bits,
//! symmetry, act-order permutations and group sizes), the file round trip,
//! and the refusals of the writer and the loader.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::f16;
use kaiyuan_models::gptq_format::{self, CheckpointFormat, GptqConfig};
use kaiyuan_models::{ModelError, ModelFiles, Weights};
use kaiyuan_quant::QuantError;
use kaiyuan_quant::gptq::{GptqSettings, IntWeights};
use kaiyuan_quant::hf_gptq::{pack_gptq, pack_gptq_as, write_gptq_dir};
use kaiyuan_quant::model_quant::to_qmatrix;
use proptest::prelude::*;
use serde_json::{Value, json};

/// An [`IntWeights`] from a seed: random codes, f16-exact scales, zero
/// points in `min_zero..=maxq` (or the symmetric one), and for act-order a
/// random column order cut into groups.
#[allow(clippy::too_many_arguments)]
fn int_weights(
    bits: u8,
    rows: usize,
    cols: usize,
    group: usize,
    sym: bool,
    act_order: bool,
    min_zero: u32,
    seed: u64,
) -> IntWeights {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as u32
    };
    let maxq = (1u32 << bits) - 1;
    let groups = cols / group;
    let codes = (0..rows * cols).map(|_| (next() & maxq) as u8).collect();
    let scales = (0..rows * groups)
        .map(|_| f16::from_f32(1e-3 + (next() % 1000) as f32 * 1e-4).to_f64())
        .collect();
    let zeros = (0..rows * groups)
        .map(|_| {
            if sym {
                f64::from(maxq.div_ceil(2))
            } else {
                f64::from(min_zero + next() % (maxq + 1 - min_zero))
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..cols).collect();
    if act_order {
        for i in (1..cols).rev() {
            order.swap(i, next() as usize % (i + 1));
        }
    }
    let mut g_idx = vec![0u32; cols];
    for (k, &c) in order.iter().enumerate() {
        g_idx[c] = (k / group) as u32;
    }
    IntWeights {
        bits,
        group_size: group,
        sym,
        rows,
        cols,
        codes,
        scales,
        zeros,
        g_idx,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn pack_then_unpack_gives_the_quantizer_matrix(
        bits in prop_oneof![Just(4u8), Just(8u8)],
        rows_words in 1usize..4,
        groups in 1usize..4,
        group_words in 1usize..3,
        sym in any::<bool>(),
        act_order in any::<bool>(),
        v2 in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let rows = rows_words * 8;
        let group = group_words * 32;
        let cols = groups * group;
        let format = if v2 { CheckpointFormat::V2 } else { CheckpointFormat::V1 };
        let min_zero = if v2 { 0 } else { 1 };
        let q = int_weights(bits, rows, cols, group, sym, act_order, min_zero, seed);
        let t = pack_gptq_as(&q, format).unwrap();
        prop_assert_eq!(t.qweight.len(), cols * bits as usize / 32 * rows);
        prop_assert_eq!(t.qzeros.len(), groups * rows * bits as usize / 32);
        for r in 0..rows {
            for c in 0..cols {
                prop_assert_eq!(t.code(r, c), q.codes[r * cols + c]);
            }
            for g in 0..groups {
                let zero = format.zero_from_stored(t.stored_zero(g, r), bits);
                prop_assert_eq!(f64::from(zero), q.zeros[r * groups + g]);
            }
        }
        let loaded = t.to_qmatrix("layer", format).unwrap();
        let own = to_qmatrix(&q).unwrap();
        prop_assert_eq!(loaded.dequantize(), own.dequantize());
        // And the quantizer's f64 dequantization, with scales in f16.
        let expected: Vec<f32> = q
            .dequantize()
            .iter()
            .zip(0..)
            .map(|(_, i)| {
                let (r, c) = (i / cols, i % cols);
                let g = q.g_idx[c] as usize;
                let s = f16::from_f64(q.scales[r * groups + g]).to_f32();
                s * (f32::from(q.codes[i]) - q.zeros[r * groups + g] as f32)
            })
            .collect();
        prop_assert_eq!(loaded.dequantize(), expected);
    }
}

#[test]
fn v1_stores_zero_minus_one_and_v2_the_zero() {
    let q = int_weights(4, 8, 32, 32, true, false, 1, 7);
    // Symmetric 4-bit: zero 8, stored 7 in every field of every word.
    assert_eq!(pack_gptq(&q).unwrap().qzeros, vec![0x7777_7777]);
    assert_eq!(
        pack_gptq_as(&q, CheckpointFormat::V2).unwrap().qzeros,
        vec![0x8888_8888u32 as i32]
    );
    let q8 = int_weights(8, 8, 32, 32, true, false, 1, 7);
    assert_eq!(pack_gptq(&q8).unwrap().qzeros, vec![0x7f7f_7f7f; 2]);
}

fn message(e: QuantError) -> String {
    e.to_string()
}

#[test]
fn the_writer_refuses_what_the_layout_cannot_hold() {
    let mut q = int_weights(4, 8, 64, 32, false, true, 1, 3);
    q.zeros[5] = 0.0;
    let e = message(pack_gptq(&q).unwrap_err());
    assert!(
        e.contains("zero point 0 of row 2, group 1") && e.contains("gptq_v2"),
        "{e}"
    );
    assert!(pack_gptq_as(&q, CheckpointFormat::V2).is_ok());

    let mut q = int_weights(4, 8, 64, 32, false, false, 1, 3);
    q.bits = 3;
    assert!(message(pack_gptq(&q).unwrap_err()).contains("3 bits"));

    let q = int_weights(8, 6, 32, 32, true, false, 1, 3);
    assert!(message(pack_gptq(&q).unwrap_err()).contains("multiples of 4"));

    let mut q = int_weights(4, 8, 64, 32, true, false, 1, 3);
    q.g_idx[0] = 1;
    let e = message(pack_gptq(&q).unwrap_err());
    assert!(e.contains("group 0 31 columns"), "{e}");

    let mut q = int_weights(4, 8, 64, 32, true, false, 1, 3);
    q.scales[3] = 1e6;
    assert!(message(pack_gptq(&q).unwrap_err()).contains("not a finite f16"));

    let mut q = int_weights(4, 8, 64, 32, false, false, 1, 3);
    q.zeros[0] = 2.5;
    assert!(message(pack_gptq(&q).unwrap_err()).contains("whole number"));
}

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hf_gptq_{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn config() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "num_hidden_layers": 1,
        "vocab_size": 16,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 64,
    })
}

/// A directory with one 4-bit act-order layer `m.layers.0.proj` (16 × 64,
/// group 32) and a dense tensor.
fn write_one(dir: &Path) -> IntWeights {
    let q = int_weights(4, 16, 64, 32, false, true, 1, 11);
    let settings = GptqSettings {
        bits: 4,
        group_size: Some(32),
        sym: false,
        act_order: true,
        ..GptqSettings::default()
    };
    let mut dense = Weights::new("test");
    dense.insert(
        "m.norm.weight",
        kaiyuan_tensor::Tensor::from_vec(vec![f16::ONE; 4], &[4]).unwrap(),
    );
    write_gptq_dir(
        dir,
        &config(),
        &dense,
        &[("m.layers.0.proj", &q)],
        &settings,
        CheckpointFormat::V1,
    )
    .unwrap();
    q
}

fn gptq_config(dir: &Path) -> GptqConfig {
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    GptqConfig::from_config("config.json", &serde_json::from_str(&text).unwrap())
        .unwrap()
        .unwrap()
}

#[test]
fn a_written_directory_reads_back() {
    let dir = tmp("roundtrip");
    let q = write_one(&dir);
    let config = gptq_config(&dir);
    assert_eq!(config.bits, 4);
    assert_eq!(config.group_size, Some(32));
    assert!(config.desc_act && !config.sym);
    assert_eq!(config.format, CheckpointFormat::V1);
    let weights = gptq_format::read_dir(&dir, &config).unwrap();
    let m = weights
        .quantized("m.layers.0.proj.weight", &[16, 64])
        .unwrap()
        .unwrap();
    assert_eq!(m.dequantize(), to_qmatrix(&q).unwrap().dequantize());
    assert!(weights.raw("m.norm.weight").is_some());
    assert!(weights.raw("m.layers.0.proj.qweight").is_none());
}

/// Rewrites `model.safetensors` of `dir` with `edit` applied to its
/// tensors (name → (dtype, shape, bytes)).
fn edit_file(
    dir: &Path,
    edit: impl FnOnce(&mut HashMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<_, _> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, (d, s, b))| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(&path, out).unwrap();
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v["quantization_config"]);
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
}

fn load_error(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let result = GptqConfig::from_config("config.json", &json)
        .and_then(|c| gptq_format::read_dir(dir, &c.unwrap()));
    match result {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_loader_names_the_file_and_tensor_it_refuses() {
    let dir = tmp("missing");
    write_one(&dir);
    edit_file(&dir, |t| {
        t.remove("m.layers.0.proj.qzeros");
    });
    let e = load_error(&dir);
    assert!(e.contains("missing tensor `m.layers.0.proj.qzeros`"), "{e}");

    let dir = tmp("shape");
    write_one(&dir);
    edit_file(&dir, |t| {
        let s = t.get_mut("m.layers.0.proj.scales").unwrap();
        s.1 = vec![1, 16];
        s.2.truncate(32);
    });
    let e = load_error(&dir);
    assert!(
        e.contains("m.layers.0.proj.scales") && e.contains("model.safetensors"),
        "{e}"
    );

    let dir = tmp("dtype");
    write_one(&dir);
    edit_file(&dir, |t| {
        t.get_mut("m.layers.0.proj.qweight").unwrap().0 = safetensors::Dtype::F32;
    });
    let e = load_error(&dir);
    assert!(e.contains("`m.layers.0.proj.qweight` has dtype F32"), "{e}");

    let dir = tmp("g_idx");
    write_one(&dir);
    edit_file(&dir, |t| {
        let g = t.get_mut("m.layers.0.proj.g_idx").unwrap();
        g.2[0..4].copy_from_slice(&7i32.to_le_bytes());
    });
    let e = load_error(&dir);
    assert!(
        e.contains("m.layers.0.proj") && e.contains("g_idx[0] = 7"),
        "{e}"
    );

    let dir = tmp("bits");
    write_one(&dir);
    edit_config(&dir, |q| q["bits"] = json!(3));
    assert!(load_error(&dir).contains("unsupported GPTQ with 3-bit codes"));

    let dir = tmp("group");
    write_one(&dir);
    edit_config(&dir, |q| q["group_size"] = json!(16));
    let e = load_error(&dir);
    assert!(e.contains("groups of 16"), "{e}");

    let dir = tmp("format");
    write_one(&dir);
    edit_config(&dir, |q| q["checkpoint_format"] = json!("marlin"));
    assert!(load_error(&dir).contains("checkpoint_format `marlin`"));

    let dir = tmp("method");
    write_one(&dir);
    edit_config(&dir, |q| q["quant_method"] = json!("awq"));
    let e = match ModelFiles::open(&dir) {
        Err(ModelError::Unsupported { what, .. }) => what,
        other => panic!("{other:?}"),
    };
    assert!(e.contains("quantization method `awq`"), "{e}");
}

#[test]
fn the_writer_checks_layers_against_the_settings_and_the_directory() {
    let q = int_weights(4, 8, 64, 32, true, false, 1, 5);
    let settings = GptqSettings {
        bits: 8,
        ..GptqSettings::default()
    };
    let dir = tmp("settings");
    let e = write_gptq_dir(
        &dir,
        &config(),
        &Weights::new("t"),
        &[("a.proj", &q)],
        &settings,
        CheckpointFormat::V1,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("a.proj") && e.contains("bits 4"), "{e}");

    let dir = tmp("sharded");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.safetensors.index.json"), "{}").unwrap();
    let settings = GptqSettings {
        bits: 4,
        group_size: Some(32),
        ..GptqSettings::default()
    };
    let e = write_gptq_dir(
        &dir,
        &config(),
        &Weights::new("t"),
        &[("a.proj", &q)],
        &settings,
        CheckpointFormat::V1,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("sharded"), "{e}");
}
