//! Optimisers, clipping and schedules against PyTorch and transformers
//! (fixtures/train/make_optim_reference.py).

use kaiyuan_tensor::Tensor;
use kaiyuan_train::optim::{
    AdamW, AdamWConfig, ParamRef, Schedule, Sgd, SgdConfig, clip_grad_norm,
};
use serde_json::Value;

fn reference() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/train/optim_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn tensor(r: &Value, group: &Value, name: &str) -> Tensor {
    let shape: Vec<usize> = r["shapes"][name]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    Tensor::from_vec(floats(&group[name]), &shape).unwrap()
}

/// `|x − ref| ≤ atol + rtol·|ref|` element-wise.
fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= atol + rtol * w.abs(),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

fn run(r: &Value, key: &str, mut step: impl for<'a> FnMut(&mut [ParamRef<'a>], f64)) {
    let mut w = tensor(r, &r["params"], "w");
    let mut b = tensor(r, &r["params"], "b");
    let factors = floats(&r["lr_factors"]);
    for (k, expected) in r[key].as_array().unwrap().iter().enumerate() {
        let gw = tensor(r, &r["grads"][k], "w");
        let gb = tensor(r, &r["grads"][k], "b");
        step(
            &mut [("w", &mut w, &gw), ("b", &mut b, &gb)],
            factors[k] as f64,
        );
        for (name, t) in [("w", &w), ("b", &b)] {
            assert_close(
                &format!("{key} step {} {name}", k + 1),
                &t.to_vec::<f32>().unwrap(),
                &floats(&expected[name]),
                1e-6,
                1e-5,
            );
        }
    }
}

#[test]
fn adamw_steps_equal_torch() {
    let r = reference();
    let mut opt = AdamW::new(AdamWConfig {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
    });
    run(&r, "adamw", |params, factor| {
        opt.step(params, factor).unwrap()
    });
    assert_eq!(opt.steps(), 3);
}

#[test]
fn sgd_with_momentum_equals_torch() {
    let r = reference();
    let mut opt = Sgd::new(SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.01,
    });
    run(&r, "sgd", |params, factor| {
        opt.step(params, factor).unwrap()
    });
}

#[test]
fn clipping_equals_torch() {
    let r = reference();
    let mut gw = tensor(&r, &r["grads"][0], "w");
    let mut gb = tensor(&r, &r["grads"][0], "b");
    let norm = clip_grad_norm(&mut [&mut gw, &mut gb], 0.5).unwrap();
    let want = r["clip"]["norm"].as_f64().unwrap();
    assert!(
        (norm - want).abs() <= 1e-6 + 1e-5 * want,
        "{norm} vs {want}"
    );
    assert_close(
        "clip w",
        &gw.to_vec::<f32>().unwrap(),
        &floats(&r["clip"]["grads"]["w"]),
        1e-7,
        1e-5,
    );
    assert_close(
        "clip b",
        &gb.to_vec::<f32>().unwrap(),
        &floats(&r["clip"]["grads"]["b"]),
        1e-7,
        1e-5,
    );
    // Below the threshold nothing changes.
    let mut small = Tensor::from_vec(vec![0.1f32, 0.2], &[2]).unwrap();
    let before = small.to_vec::<f32>().unwrap();
    clip_grad_norm(&mut [&mut small], 10.0).unwrap();
    assert_eq!(small.to_vec::<f32>().unwrap(), before);
}

#[test]
fn schedules_equal_transformers() {
    let r = reference();
    let cases = [
        ("constant", Schedule::Constant { warmup_steps: 3 }),
        (
            "linear",
            Schedule::Linear {
                warmup_steps: 3,
                total_steps: 10,
            },
        ),
        (
            "cosine",
            Schedule::Cosine {
                warmup_steps: 3,
                total_steps: 10,
            },
        ),
    ];
    for (name, schedule) in cases {
        for (step, want) in r["schedules"][name].as_array().unwrap().iter().enumerate() {
            let want = want.as_f64().unwrap();
            let got = schedule.factor(step as u64);
            assert!(
                (got - want).abs() <= 1e-12,
                "{name} step {step}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn mismatched_gradients_and_bad_settings_are_errors() {
    let mut w = Tensor::from_vec(vec![1.0f32; 4], &[2, 2]).unwrap();
    let g = Tensor::from_vec(vec![1.0f32; 2], &[2]).unwrap();
    let err = AdamW::new(AdamWConfig::default())
        .step(&mut [("w", &mut w, &g)], 1.0)
        .unwrap_err();
    assert!(
        err.to_string().contains("`w`") && err.to_string().contains("shape"),
        "{err}"
    );
    let g = Tensor::from_vec(vec![1.0f32; 4], &[2, 2]).unwrap();
    let bad = AdamWConfig {
        beta1: 1.5,
        ..AdamWConfig::default()
    };
    let err = AdamW::new(bad)
        .step(&mut [("w", &mut w, &g)], 1.0)
        .unwrap_err();
    assert!(err.to_string().contains("beta1"), "{err}");
}
