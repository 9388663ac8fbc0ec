//! GPTQ against an f64 NumPy transcription of the reference algorithm
//! (`fixtures/quant/gptq/make_gptq_reference.py`): one 16 × 320 layer with a
//! known Hessian under 21 settings (4/8 bits, symmetric or not, act-order or
//! not, group 64/32/160 or per channel, static groups, dead inputs, lazy
//! blocks of 32). Integer codes and `g_idx` must be identical, scales and
//! zeros within `|x − ref| ≤ 1e-6·|ref|`, and the loss within 1e-6 relative.

use std::path::PathBuf;

use kaiyuan_quant::gptq::{GptqSettings, gptq, rtn};
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/quant/gptq")
}

fn read_f32(name: &str) -> Vec<f64> {
    std::fs::read(dir().join(name))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .collect()
}

fn decode_codes(rows: &[Value], bits: u8) -> Vec<u8> {
    let width = if bits == 4 { 1 } else { 2 };
    let mut out = Vec::new();
    for row in rows {
        let s = row.as_str().unwrap();
        for i in (0..s.len()).step_by(width) {
            out.push(u8::from_str_radix(&s[i..i + width], 16).unwrap());
        }
    }
    out
}

fn flat(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect()
}

#[test]
fn gptq_matches_the_numpy_transcription() {
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("cases.json")).unwrap()).unwrap();
    let rows = cases["rows"].as_u64().unwrap() as usize;
    let cols = cases["cols"].as_u64().unwrap() as usize;
    let weight = read_f32("weight.f32");
    let hessian = read_f32("hessian.f32");
    let list = cases["cases"].as_array().unwrap();
    assert_eq!(list.len(), 21);
    for case in list {
        let s = &case["settings"];
        let group = s["groupsize"].as_i64().unwrap();
        let settings = GptqSettings {
            bits: s["bits"].as_u64().unwrap() as u8,
            group_size: (group > 0).then_some(group as usize),
            sym: s["sym"].as_bool().unwrap(),
            act_order: s["act_order"].as_bool().unwrap(),
            static_groups: s["static_groups"].as_bool().unwrap(),
            damp_percent: s["percdamp"].as_f64().unwrap(),
            block_size: s["blocksize"].as_u64().unwrap() as usize,
        };
        let mut h = hessian.clone();
        for d in s["dead_columns"].as_array().unwrap() {
            let d = d.as_u64().unwrap() as usize;
            for k in 0..cols {
                h[d * cols + k] = 0.0;
                h[k * cols + d] = 0.0;
            }
        }
        let (q, stats) = gptq("case", &weight, rows, cols, &h, &settings).unwrap();
        let want = &case["expected"];
        let label = format!("{settings:?}");
        let codes = decode_codes(want["codes"].as_array().unwrap(), settings.bits);
        let differing = q.codes.iter().zip(&codes).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{label}: {differing} codes differ");
        let g_idx: Vec<u32> = want["g_idx"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(q.g_idx, g_idx, "{label}: g_idx");
        for (what, ours, theirs) in [
            ("scales", &q.scales, flat(&want["scales"])),
            ("zeros", &q.zeros, flat(&want["zeros"])),
        ] {
            assert_eq!(ours.len(), theirs.len(), "{label}: {what} length");
            for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs(),
                    "{label}: {what}[{i}] = {a}, reference {b}"
                );
            }
        }
        let loss = want["loss"].as_f64().unwrap();
        assert!(
            (stats.loss - loss).abs() <= 1e-6 * loss,
            "{label}: loss {} vs {loss}",
            stats.loss
        );
        assert_eq!(stats.damp, want["damp"].as_f64().unwrap());
    }
}

/// ‖(W − Ŵ)·X‖² = (n/2)·tr(ΔW·H·ΔWᵀ): GPTQ must beat round-to-nearest on
/// the layer it was solved for.
#[test]
fn gptq_output_error_is_below_round_to_nearest() {
    let weight = read_f32("weight.f32");
    let hessian = read_f32("hessian.f32");
    let (rows, cols) = (16, 320);
    let output_error = |w_hat: &[f64]| -> f64 {
        let mut total = 0.0;
        for r in 0..rows {
            let d: Vec<f64> = (0..cols)
                .map(|c| weight[r * cols + c] - w_hat[r * cols + c])
                .collect();
            for i in 0..cols {
                let hd: f64 = (0..cols).map(|j| hessian[i * cols + j] * d[j]).sum();
                total += d[i] * hd;
            }
        }
        total
    };
    for act_order in [false, true] {
        let s = GptqSettings {
            bits: 4,
            group_size: Some(64),
            act_order,
            ..GptqSettings::default()
        };
        let (q, _) = gptq("layer", &weight, rows, cols, &hessian, &s).unwrap();
        let r = rtn("layer", &weight, rows, cols, &s).unwrap();
        let (eg, er) = (output_error(&q.dequantize()), output_error(&r.dequantize()));
        assert!(
            eg < 0.8 * er,
            "act_order {act_order}: GPTQ {eg} vs RTN {er}"
        );
    }
}

#[test]
fn bad_inputs_are_refused_with_the_reason() {
    let s = GptqSettings::default();
    let h = vec![1.0; 64 * 64];
    let mut w = vec![0.1; 2 * 64];
    let zero_group = GptqSettings {
        group_size: Some(0),
        ..s.clone()
    };
    let err = gptq("model.layers.0.mlp.down_proj", &w, 2, 64, &h, &zero_group).unwrap_err();
    assert!(err.to_string().contains("group_size"), "{err}");
    let s = GptqSettings {
        group_size: Some(32),
        ..s
    };
    w[5] = f64::NAN;
    let err = gptq("q_proj", &w, 2, 64, &h, &s).unwrap_err();
    assert!(err.to_string().contains("weight [0, 5] is NaN"), "{err}");
    w[5] = 0.1;
    let err = gptq("q_proj", &w, 2, 64, &h[..10], &s).unwrap_err();
    assert!(err.to_string().contains("Hessian has 10 values"), "{err}");
    let mut bad = vec![0.0; 64 * 64];
    bad[0] = f64::INFINITY;
    assert!(gptq("q_proj", &w, 2, 64, &bad, &s).is_err());
    let three = GptqSettings {
        bits: 3,
        ..s.clone()
    };
    assert!(
        rtn("x", &w, 2, 64, &three)
            .unwrap_err()
            .to_string()
            .contains("supported: 4, 8")
    );
    // An indefinite H is damped until it factorises (here at 1.0 of the mean diagonal).
    let mut indefinite = vec![0.0; 64 * 64];
    for i in 0..64 {
        indefinite[i * 64 + i] = 1.0;
    }
    indefinite[1] = 1.5;
    indefinite[64] = 1.5;
    let (_, stats) = gptq("x", &w, 2, 64, &indefinite, &s).unwrap();
    assert!(stats.damp > 0.01, "damping was raised: {}", stats.damp);
}
