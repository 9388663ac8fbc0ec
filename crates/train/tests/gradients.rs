//! Loss and every parameter gradient of a tiny model of each architecture
//! against PyTorch's `loss.backward()` (fixtures/train/make_grad_references.py),
//! within `|g − ref| ≤ 1e-5 + 1e-4·|ref|` in f32.

mod common;

use common::fixtures;

use kaiyuan_models::safetensors_io::{read_dir, read_file};
use kaiyuan_models::{Model, ModelConfig, Weights};
use kaiyuan_tensor::DType;
use kaiyuan_train::loss::causal_lm_loss;

const ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-4;

fn close(x: f64, r: f64) -> bool {
    (x - r).abs() <= ATOL + RTOL * r.abs()
}

#[test]
fn gradients_match_pytorch_for_every_architecture() {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("train/grads/reference.json")).unwrap(),
    )
    .unwrap();
    let models = reference["models"].as_object().unwrap();
    assert_eq!(models.len(), 10);
    for (name, case) in models {
        let dir = fixtures().join("models").join(name);
        let config = ModelConfig::from_file(dir.join("config.json")).unwrap();
        let mut model = Model::new(config, &read_dir(&dir).unwrap(), DType::F32).unwrap();
        let leaves = model.track_gradients();
        let rows = |key: &str| -> Vec<Vec<i64>> {
            case[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    r.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_i64().unwrap())
                        .collect()
                })
                .collect()
        };
        let ids: Vec<Vec<u32>> = rows("ids")
            .into_iter()
            .map(|r| r.into_iter().map(|x| x as u32).collect())
            .collect();
        let labels = rows("labels");
        let loss = causal_lm_loss(&model, &ids, &labels).unwrap();
        let value = loss.to_scalar::<f32>().unwrap() as f64;
        let expected = case["loss"].as_f64().unwrap();
        assert!(close(value, expected), "{name}: loss {value} vs {expected}");
        let grads = loss.backward().unwrap();

        let mut reference = Weights::new("reference gradients");
        read_file(
            &fixtures().join(format!("train/grads/{name}.safetensors")),
            &mut reference,
        )
        .unwrap();
        let names: Vec<&str> = case["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let ours: Vec<&str> = leaves.iter().map(|(n, _)| n.as_str()).collect();
        let mut sorted_ours = ours.clone();
        sorted_ours.sort_unstable();
        let mut sorted_ref = names.clone();
        sorted_ref.sort_unstable();
        assert_eq!(sorted_ours, sorted_ref, "{name}: parameter names");
        for (param, leaf) in &leaves {
            let want = reference.raw(&format!("grad.{param}")).unwrap();
            let got = grads
                .get(leaf)
                .unwrap_or_else(|| panic!("{name}: no gradient for {param}"));
            assert_eq!(got.shape(), want.shape(), "{name}: {param}");
            let (got, want) = (got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
            let worst = got
                .iter()
                .zip(&want)
                .map(|(&g, &w)| ((g - w).abs() as f64, w as f64))
                .find(|&(diff, w)| diff > ATOL + RTOL * w.abs());
            assert!(worst.is_none(), "{name}: {param}: |g − ref| = {:?}", worst);
        }
    }
}
