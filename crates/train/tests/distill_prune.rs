//! Distillation and pruning: the loss against PyTorch, a distilled student
//! against a label-only one, exact sparsity, and a structurally pruned
//! checkpoint whose logits equal transformers' on the same pruning.

mod common;

use common::{fixtures, out_dir};

use kaiyuan_models::safetensors_io::read_dir;
use kaiyuan_models::{Logits, Model, ModelConfig};
use kaiyuan_tensor::{DType, Tensor};
use kaiyuan_train::config::TrainConfig;
use kaiyuan_train::distill::distillation_loss;
use kaiyuan_train::prune::{apply_masks, layer_sparsity, magnitude_masks, structured};
use kaiyuan_train::trainer;
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("train/distill_prune_reference.json")).unwrap(),
    )
    .unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn distillation_loss_and_gradient_equal_pytorch() {
    let r = &reference()["distill"];
    let shape = [5, 11];
    let student = Tensor::from_vec(floats(&r["student"]), &shape)
        .unwrap()
        .with_grad();
    let teacher = Tensor::from_vec(floats(&r["teacher"]), &shape).unwrap();
    let loss = distillation_loss(&student, &teacher, r["temperature"].as_f64().unwrap()).unwrap();
    let want = r["loss"].as_f64().unwrap();
    let got = loss.to_scalar::<f64>().unwrap();
    assert!((got - want).abs() <= 1e-6, "{got} vs {want}");
    let grads = loss.backward().unwrap();
    let g = grads.get(&student).unwrap().to_vec::<f64>().unwrap();
    for (a, b) in g.iter().zip(floats(&r["grad"])) {
        assert!((a - b).abs() <= 1e-6 + 1e-6 * b.abs(), "{a} vs {b}");
    }
    // The teacher gets no gradient even when tracked elsewhere.
    let err = distillation_loss(&student, &Tensor::zeros(&[5, 10], DType::F64).unwrap(), 2.0)
        .unwrap_err();
    assert!(err.to_string().contains("vocabulary"), "{err}");
}

fn llama_fixture() -> (ModelConfig, Value, kaiyuan_models::Weights) {
    let dir = fixtures().join("models/llama");
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    (
        ModelConfig::from_json_str("llama", &text).unwrap(),
        serde_json::from_str(&text).unwrap(),
        read_dir(&dir).unwrap(),
    )
}

#[test]
fn magnitude_pruning_reaches_the_target_sparsity_exactly() {
    let (config, _, weights) = llama_fixture();
    let mut model = Model::new(config, &weights, DType::F32).unwrap();
    for sparsity in [0.0, 0.3, 0.5, 0.9] {
        let before = model.parameters();
        let masks = magnitude_masks(&model, sparsity).unwrap();
        apply_masks(&mut model, &masks).unwrap();
        let expected: usize = masks
            .iter()
            .map(|(_, m)| (sparsity * m.len() as f64).round() as usize)
            .sum();
        let (zeros, total) = layer_sparsity(&model).unwrap();
        assert_eq!(zeros, expected, "sparsity {sparsity} of {total}");
        // Every tensor individually is exact too, and the smallest survive nowhere.
        for (name, t) in model.parameters() {
            if let Some((_, mask)) = masks.iter().find(|(n, _)| *n == name) {
                let v = t.to_vec::<f32>().unwrap();
                let k = mask.iter().filter(|&&m| m).count();
                assert_eq!(k, (sparsity * v.len() as f64).round() as usize, "{name}");
                assert!(
                    v.iter()
                        .zip(mask)
                        .filter(|(_, m)| **m)
                        .all(|(x, _)| *x == 0.0),
                    "{name}"
                );
                // The pruned entries were the smallest in magnitude before pruning.
                let (_, original) = before.iter().find(|(n, _)| *n == name).unwrap();
                let original = original.to_vec::<f32>().unwrap();
                let largest_pruned = original
                    .iter()
                    .zip(mask)
                    .filter(|(_, m)| **m)
                    .map(|(x, _)| x.abs())
                    .fold(0.0f32, f32::max);
                let smallest_kept = original
                    .iter()
                    .zip(mask)
                    .filter(|(_, m)| !**m)
                    .map(|(x, _)| x.abs())
                    .fold(f32::INFINITY, f32::min);
                assert!(
                    largest_pruned <= smallest_kept,
                    "{name}: {largest_pruned} > {smallest_kept}"
                );
            }
        }
    }
}

#[test]
fn structured_pruning_gives_the_logits_transformers_gives() {
    let r = &reference()["prune"];
    let (config, json, weights) = llama_fixture();
    let heads = r["drop_heads"].as_u64().unwrap() as usize;
    let channels = r["drop_channels"].as_u64().unwrap() as usize;
    let (new_json, new_weights) = structured(&json, &config, &weights, heads, channels).unwrap();
    assert_eq!(new_json["num_attention_heads"], 2);
    assert_eq!(new_json["intermediate_size"], 48);
    let new_config = ModelConfig::from_json_str("pruned", &new_json.to_string()).unwrap();
    let model = Model::new(new_config, &new_weights, DType::F32).unwrap();
    let ids: Vec<Vec<u32>> = r["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    let logits = model
        .forward(&ids, &mut model.new_cache(), Logits::All)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let want = floats(&r["logits"]);
    assert_eq!(logits.len(), want.len());
    for (i, (a, b)) in logits.iter().zip(&want).enumerate() {
        assert!(
            (*a as f64 - b).abs() <= 1e-4 + 1e-4 * b.abs(),
            "logit {i}: {a} vs {b}"
        );
    }
    // Refusals name the setting.
    let err = structured(
        &json,
        &ModelConfig::from_json_str("llama", &json.to_string()).unwrap(),
        &weights,
        1,
        0,
    )
    .unwrap_err();
    assert!(err.to_string().contains("prune.heads"), "{err}");
}

fn tiny(extra: &[&str]) -> TrainConfig {
    common::config(
        &[
            "num_layers=2",
            "num_heads=4",
            "num_kv_heads=2",
            "max_position_embeddings=64",
            "vocab_size=320",
            "documents=400",
            "validation_documents=40",
            "seq_len=32",
            "batch_size=8",
            "warmup_steps=5",
            "eval_every=0",
            "eval_batches=4",
            "save_every=0",
            "lr=0.01",
        ],
        extra,
    )
}

#[test]
fn a_distilled_student_beats_the_same_student_trained_on_labels() {
    let teacher_dir = out_dir("distill-teacher");
    let teacher = trainer::run(
        &tiny(&["hidden_size=64", "intermediate_size=160", "max_steps=150"]),
        &teacher_dir,
        None,
        &[],
        &mut |_| {},
    )
    .unwrap();
    let student = [
        "hidden_size=16",
        "intermediate_size=32",
        "num_heads=2",
        "num_kv_heads=1",
        "max_steps=40",
        "seed=0",
    ];
    let tokenizer = format!(
        "tokenizer.path={}",
        teacher_dir.join("final/tokenizer.json").display()
    );
    let mut plain: Vec<&str> = student.to_vec();
    plain.push(&tokenizer);
    let alone = trainer::run(
        &tiny(&plain),
        &out_dir("distill-alone"),
        None,
        &[],
        &mut |_| {},
    )
    .unwrap();
    let teacher_flag = format!("distill.teacher={}", teacher_dir.join("final").display());
    let mut distilled_sets = plain.clone();
    distilled_sets.extend([
        teacher_flag.as_str(),
        "distill.alpha=0.7",
        "distill.temperature=2.0",
    ]);
    let distilled = trainer::run(
        &tiny(&distilled_sets),
        &out_dir("distill-student"),
        None,
        &[],
        &mut |_| {},
    )
    .unwrap();
    let v = |r: &trainer::Report| r.validation.as_ref().unwrap().val_loss;
    eprintln!(
        "validation loss: teacher {:.4}, student on labels {:.4}, distilled student {:.4}",
        v(&teacher),
        v(&alone),
        v(&distilled)
    );
    assert!(
        v(&distilled) < v(&alone),
        "distilled {} vs labels only {}",
        v(&distilled),
        v(&alone)
    );
}
