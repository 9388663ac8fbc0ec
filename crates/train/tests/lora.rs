//! LoRA against PEFT 0.21.2 (fixtures/train/lora_peft, written by
//! fixtures/train/make_lora_reference.py): our adapter files are
//! byte-identical to PEFT's, adapted and merged logits match PEFT's, and a
//! LoRA training run freezes the base, saves adapters that reload exactly,
//! merges to base + scale·B·A and resumes bit-identically.

mod common;

use common::{out_dir, train};

use std::path::{Path, PathBuf};

use kaiyuan_models::model::lora_tensor_names;
use kaiyuan_models::{KvCache, Logits, LoraSettings, Model, ModelFiles, Weights};
use kaiyuan_tensor::{DType, Tensor};
use kaiyuan_train::config::TrainConfig;
use kaiyuan_train::lora::{
    self, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, LoraConfig, LoraSection,
};
use kaiyuan_train::trainer;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The fixtures of one PEFT case: (name, fixture model, target modules).
const CASES: [(&str, &str, &[&str]); 2] = [
    ("llama", "llama", &["q_proj", "v_proj"]),
    ("falcon_new", "falcon_new", &["query_key_value"]),
];

fn fixture_model(name: &str) -> Model {
    ModelFiles::open(root().join("fixtures/models").join(name))
        .unwrap()
        .take_model(DType::F32)
        .unwrap()
}

fn settings(targets: &[&str]) -> LoraSettings {
    LoraSettings {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        target_modules: targets.iter().map(|s| s.to_string()).collect(),
        use_rslora: false,
        seed: 7,
    }
}

fn section(targets: &[&str]) -> LoraSection {
    LoraSection {
        enabled: true,
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        target_modules: targets.iter().map(|s| s.to_string()).collect(),
        use_rslora: false,
    }
}

/// The script's closed form: for the k-th adapted module,
/// A[i,j] = 0.1·sin(0.7i + 0.3j + 1.1k + 0.5), B[i,j] = 0.1·cos(0.5i + 0.9j + 1.3k),
/// in f64, rounded to f32.
fn formula_weights(model: &mut Model, targets: &[&str]) -> Weights {
    model.attach_lora(&settings(targets)).unwrap();
    let shapes = model.lora_weights();
    let mut weights = Weights::new("formula");
    for (k, module) in model.lora_modules().iter().enumerate() {
        let (a_name, b_name) = lora_tensor_names(module);
        let k = k as f64;
        let fill = |name: &str, f: &dyn Fn(f64, f64) -> f64| {
            let shape = shapes.raw(name).unwrap().shape().to_vec();
            let mut values = Vec::with_capacity(shape[0] * shape[1]);
            for i in 0..shape[0] {
                for j in 0..shape[1] {
                    values.push(f(i as f64, j as f64) as f32);
                }
            }
            Tensor::from_vec(values, &shape).unwrap()
        };
        let a = fill(&a_name, &|i, j| {
            0.1 * (0.7 * i + 0.3 * j + 1.1 * k + 0.5).sin()
        });
        let b = fill(&b_name, &|i, j| 0.1 * (0.5 * i + 0.9 * j + 1.3 * k).cos());
        weights.insert(a_name, a);
        weights.insert(b_name, b);
    }
    model.remove_lora();
    weights
}

/// A fixture model with the formula adapters attached.
fn formula_model(model_name: &str, targets: &[&str]) -> Model {
    let mut model = fixture_model(model_name);
    let weights = formula_weights(&mut model, targets);
    model.load_lora(&settings(targets), &weights).unwrap();
    model
}

fn reference(name: &str) -> Weights {
    let mut w = Weights::new(name);
    kaiyuan_models::safetensors_io::read_file(
        &root()
            .join("fixtures/train/lora_peft")
            .join(name)
            .join("reference.safetensors"),
        &mut w,
    )
    .unwrap();
    w
}

fn reference_rows(reference: &Weights) -> Vec<Vec<u32>> {
    let ids = reference.raw("input_ids").unwrap();
    let t = ids.shape()[1];
    ids.to_vec::<i64>()
        .unwrap()
        .chunks(t)
        .map(|r| r.iter().map(|&x| x as u32).collect())
        .collect()
}

fn logits(model: &Model, rows: &[Vec<u32>]) -> Vec<f32> {
    let mut cache: KvCache = model.new_cache();
    model
        .forward(rows, &mut cache, Logits::All)
        .unwrap()
        .to_vec::<f32>()
        .unwrap()
}

/// Largest |got − want| − (atol + rtol·|want|); ≤ 0 passes.
fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = 0.0f32;
    let mut bad = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        worst = worst.max(err);
        if err > atol + rtol * w.abs() && bad.len() < 5 {
            bad.push((i, g, w));
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: max |Δ| {worst:e}; first mismatches {bad:?}"
    );
    worst
}

#[test]
fn adapter_files_are_byte_identical_to_peft() {
    for (name, model_name, targets) in CASES {
        let model = formula_model(model_name, targets);
        let dir = out_dir(&format!("lora-bytes-{name}"));
        let config = LoraConfig::from_section(
            &section(targets),
            Some(format!("fixtures/models/{model_name}")),
        );
        lora::save_adapter(&dir, &model, &config).unwrap();
        let peft = root().join("fixtures/train/lora_peft").join(name);
        for file in [ADAPTER_WEIGHTS_FILE, ADAPTER_CONFIG_FILE] {
            let ours = std::fs::read(dir.join(file)).unwrap();
            let theirs = std::fs::read(peft.join(file)).unwrap();
            assert!(
                ours == theirs,
                "{name}/{file} differs from PEFT's:\n{}\n---\n{}",
                String::from_utf8_lossy(&ours[..ours.len().min(1200)]),
                String::from_utf8_lossy(&theirs[..theirs.len().min(1200)])
            );
        }
        // And PEFT's files read back into the same config.
        let (read, weights) = lora::load_adapter(&peft).unwrap();
        assert_eq!(read, config);
        assert_eq!(weights.len(), 2 * model.lora_modules().len());
    }
}

#[test]
fn adapted_and_merged_logits_match_peft() {
    for (name, model_name, targets) in CASES {
        let reference = reference(name);
        let rows = reference_rows(&reference);
        let adapted_want = reference
            .raw("adapted_logits")
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        let merged_want = reference
            .raw("merged_logits")
            .unwrap()
            .to_vec::<f32>()
            .unwrap();

        // Our formula adapters, and PEFT's saved adapter loaded from disk.
        let mut ours = formula_model(model_name, targets);
        let mut loaded = fixture_model(model_name);
        let config = lora::attach_adapter(
            &mut loaded,
            &root().join("fixtures/train/lora_peft").join(name),
        )
        .unwrap();
        assert_eq!(config.rank, 4);
        let base = logits(&fixture_model(model_name), &rows);
        let adapted = logits(&ours, &rows);
        let worst = assert_close(
            &format!("{name} adapted"),
            &adapted,
            &adapted_want,
            1e-5,
            1e-4,
        );
        eprintln!("{name}: adapted logits max |Δ| vs PEFT {worst:e}");
        assert_eq!(logits(&loaded, &rows), adapted, "{name}: loaded vs built");
        // The adapter really changes the output.
        assert!(
            base.iter().zip(&adapted).any(|(a, b)| (a - b).abs() > 1e-2),
            "{name}: adapter has no effect"
        );

        let adapted_modules = ours.lora_modules().len();
        assert_eq!(ours.merge_lora().unwrap(), adapted_modules);
        assert!(!ours.has_lora());
        let merged = logits(&ours, &rows);
        let worst = assert_close(&format!("{name} merged"), &merged, &merged_want, 1e-5, 1e-4);
        eprintln!("{name}: merged logits max |Δ| vs PEFT {worst:e}");
    }
}

#[test]
fn saved_adapters_reload_exactly() {
    let mut model = fixture_model("llama");
    model
        .attach_lora(&LoraSettings {
            dropout: 0.1,
            use_rslora: true,
            ..settings(&["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"])
        })
        .unwrap();
    // B starts at zero; give it values so the adapters matter.
    for (name, t) in model.trainable_mut() {
        if name.ends_with("lora_B.weight") {
            *t = Tensor::rand_uniform(t.shape(), -0.2, 0.2, 3).unwrap();
        }
    }
    let rows = vec![vec![1, 5, 9, 2, 77, 3], vec![4, 4, 8, 15, 16, 23]];
    let before = logits(&model, &rows);
    let dir = out_dir("lora-reload");
    let config = LoraConfig::from_section(
        &LoraSection {
            dropout: 0.1,
            use_rslora: true,
            ..section(&["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"])
        },
        None,
    );
    lora::save_adapter(&dir, &model, &config).unwrap();
    let mut again = fixture_model("llama");
    let read = lora::attach_adapter(&mut again, &dir).unwrap();
    assert_eq!(read, config);
    assert_eq!(again.lora_modules(), model.lora_modules());
    assert_eq!(logits(&again, &rows), before, "reloaded adapter logits");

    // Dropout only with a seed, and the same seed gives the same masks.
    again.set_lora_dropout_seed(Some(11));
    let dropped = logits(&again, &rows);
    assert_ne!(dropped, before);
    assert_eq!(logits(&again, &rows), dropped);
    again.set_lora_dropout_seed(Some(12));
    assert_ne!(logits(&again, &rows), dropped);
    again.set_lora_dropout_seed(None);
    assert_eq!(logits(&again, &rows), before);
}

#[test]
fn attach_initialises_like_peft_and_trains_only_adapters() {
    let mut model = fixture_model("llama");
    let base: Vec<(String, Tensor)> = model.parameters();
    let rows = vec![vec![3, 1, 4, 1, 5, 9, 2, 6]];
    let before = logits(&model, &rows);
    let attached = model.attach_lora(&settings(&["q_proj", "v_proj"])).unwrap();
    assert_eq!(
        attached,
        [
            "model.layers.0.self_attn.q_proj",
            "model.layers.0.self_attn.v_proj",
            "model.layers.1.self_attn.q_proj",
            "model.layers.1.self_attn.v_proj",
        ]
    );
    // B = 0: the model is unchanged.
    assert_eq!(logits(&model, &rows), before);
    let trainable = model.trainable_mut();
    assert_eq!(trainable.len(), 8);
    assert_eq!(
        trainable[0].0,
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    );
    for (name, t) in trainable {
        let values = t.to_vec::<f32>().unwrap();
        if name.ends_with("lora_A.weight") {
            // kaiming_uniform_(a=√5): U(−1/√in, 1/√in), in = 32.
            assert_eq!(t.shape(), [4, 32]);
            let bound = 1.0 / 32f32.sqrt();
            assert!(values.iter().all(|v| v.abs() <= bound));
            assert!(values.iter().any(|v| v.abs() > bound / 2.0));
        } else {
            assert!(values.iter().all(|&v| v == 0.0));
        }
    }
    // Same seed, same A; the base parameters are untouched.
    let mut twin = fixture_model("llama");
    twin.attach_lora(&settings(&["q_proj", "v_proj"])).unwrap();
    let a = model.lora_weights();
    let b = twin.lora_weights();
    for (name, t) in a.iter() {
        assert_eq!(
            t.to_vec::<f32>().unwrap(),
            b.raw(name).unwrap().to_vec::<f32>().unwrap()
        );
    }
    for ((n1, t1), (n2, t2)) in base.iter().zip(model.parameters()) {
        assert_eq!(n1, &n2);
        assert_eq!(t1.to_vec::<f32>().unwrap(), t2.to_vec::<f32>().unwrap());
    }
}

#[test]
fn bad_targets_and_unsupported_configs_are_clear_errors() {
    let mut model = fixture_model("llama");
    let err = model
        .attach_lora(&settings(&["q_proj", "qkv_proj"]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`qkv_proj`"), "{err}");
    assert!(!err.contains("`q_proj`"), "{err}");
    for module in [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "down_proj",
    ] {
        assert!(err.contains(module), "{err}");
    }
    assert!(!model.has_lora(), "a failed attach attaches nothing");
    // PEFT's rule needs a whole name component: `proj` is not `q_proj`.
    let err = model
        .attach_lora(&settings(&["proj"]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`proj`"), "{err}");
    // A full or partial dotted name works.
    let attached = model
        .attach_lora(&settings(&["layers.1.self_attn.q_proj"]))
        .unwrap();
    assert_eq!(attached, ["model.layers.1.self_attn.q_proj"]);
    assert!(
        model
            .attach_lora(&settings(&["v_proj"]))
            .unwrap_err()
            .to_string()
            .contains("already attached")
    );
    // Falcon's fused projection is one module.
    let mut falcon = fixture_model("falcon_new");
    let err = falcon
        .attach_lora(&settings(&["q_proj"]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("query_key_value"), "{err}");

    // Wrong tensors for the adapter.
    let mut m = fixture_model("llama");
    let mut w = formula_weights(&mut m, &["q_proj", "v_proj"]);
    let err = m
        .load_lora(&settings(&["q_proj"]), &w)
        .unwrap_err()
        .to_string();
    assert!(err.contains("v_proj.lora_A.weight"), "{err}");
    assert!(!m.has_lora());
    w.remove("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
    let err = m
        .load_lora(&settings(&["q_proj", "v_proj"]), &w)
        .unwrap_err()
        .to_string();
    assert!(err.contains("q_proj.lora_B.weight"), "{err}");

    // Adapter configs with features we do not implement.
    let good = LoraConfig::from_section(&section(&["q_proj"]), None)
        .to_json()
        .unwrap();
    for (from, to, field) in [
        ("\"use_dora\": false", "\"use_dora\": true", "use_dora"),
        ("\"bias\": \"none\"", "\"bias\": \"all\"", "bias"),
        (
            "\"target_modules\": [\n    \"q_proj\"\n  ]",
            "\"target_modules\": \".*q_proj\"",
            "regular expression",
        ),
        (
            "\"rank_pattern\": {}",
            "\"rank_pattern\": {\"q_proj\": 2}",
            "rank_pattern",
        ),
        ("\"peft_type\": \"LORA\"", "\"peft_type\": \"IA3\"", "IA3"),
    ] {
        assert!(good.contains(from), "{from}");
        let err = LoraConfig::from_json("test", &good.replace(from, to))
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{field}: {err}");
    }

    // The [lora] section is checked with the config.
    let err = TrainConfig::parse("test", "[lora]\nenabled = true\nrank = 0", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("lora.rank"), "{err}");
    let err = TrainConfig::parse("test", "[lora]\nenabled = true\ndropout = 1.0", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("lora.dropout"), "{err}");
    let err = TrainConfig::parse("test", "[lora]\nranks = 4", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("ranks"), "{err}");
}

/// A tiny run (as in tests/trainer.rs).
fn tiny(extra: &[&str]) -> TrainConfig {
    common::config(
        &[
            "hidden_size=32",
            "num_layers=2",
            "num_heads=4",
            "num_kv_heads=2",
            "intermediate_size=64",
            "max_position_embeddings=64",
            "vocab_size=320",
            "documents=300",
            "validation_documents=20",
            "seq_len=16",
            "batch_size=4",
            "max_steps=1",
            "warmup_steps=0",
            "eval_every=0",
            "eval_batches=2",
            "save_every=2",
            "keep_last=5",
            "lr=0.01",
        ],
        extra,
    )
}

fn read_weights(path: &Path) -> Weights {
    let mut w = Weights::new(path.display().to_string());
    kaiyuan_models::safetensors_io::read_file(path, &mut w).unwrap();
    w
}

fn load_dir(dir: &Path) -> Model {
    ModelFiles::open(dir)
        .unwrap()
        .take_model(DType::F32)
        .unwrap()
}

#[test]
fn training_freezes_the_base_and_merges_to_base_plus_scaled_update() {
    // A base model with a tokenizer: one full step from scratch.
    let base_run = out_dir("lora-train-base");
    train(&tiny(&[]), &base_run, None, &[]);
    let base_dir = base_run.join("final");
    let init = format!("model.init={}", base_dir.display());

    let run = out_dir("lora-train");
    let lora_sets = [
        init.as_str(),
        "lora.enabled=true",
        "lora.rank=4",
        "lora.alpha=8",
        "lora.dropout=0.1",
        "lora.target_modules=[\"q_proj\", \"v_proj\", \"down_proj\"]",
        "max_steps=4",
        "lr=0.02",
    ];
    let report = train(&tiny(&lora_sets), &run, None, &[]);
    assert_eq!(report.losses.len(), 4);
    // Only the adapters train: 2 layers × (q: 4·32 + 32·4, v: 4·32 + 16·4,
    // down: 4·64 + 32·4).
    assert_eq!(report.parameters, 2 * (256 + 192 + 384));

    // The base weights are bit-identical to before.
    let before = std::fs::read(base_dir.join("model.safetensors")).unwrap();
    for dir in [run.join("final"), run.join("checkpoint-2")] {
        assert!(
            std::fs::read(dir.join("model.safetensors")).unwrap() == before,
            "{} changed the base weights",
            dir.display()
        );
        assert!(dir.join("adapter").join(ADAPTER_CONFIG_FILE).is_file());
        assert!(dir.join("adapter").join(ADAPTER_WEIGHTS_FILE).is_file());
    }
    let (config, adapter) = lora::load_adapter(&run.join("final/adapter")).unwrap();
    assert_eq!(config.rank, 4);
    assert_eq!(config.dropout, 0.1);
    assert_eq!(
        config.base_model_name_or_path.as_deref(),
        Some(base_dir.display().to_string().as_str())
    );
    assert!(
        adapter
            .iter()
            .filter(|(n, _)| n.ends_with("lora_B.weight"))
            .all(|(_, t)| t.to_vec::<f32>().unwrap().iter().any(|&v| v != 0.0)),
        "every B moved away from zero"
    );

    // merged/ = base + scale·B·A, tensor by tensor …
    let scale = 8.0 / 4.0;
    let base_weights = read_weights(&base_dir.join("model.safetensors"));
    let merged_weights = read_weights(&run.join("merged/model.safetensors"));
    let mut checked = 0;
    for (name, merged) in merged_weights.iter() {
        let base = base_weights.raw(name).unwrap().to_vec::<f32>().unwrap();
        let merged = merged.to_vec::<f32>().unwrap();
        let module = name.trim_end_matches(".weight");
        let (a_name, b_name) = lora_tensor_names(module);
        match (adapter.raw(&a_name), adapter.raw(&b_name)) {
            (Some(a), Some(b)) => {
                let (r, input) = (a.shape()[0], a.shape()[1]);
                let out = b.shape()[0];
                let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
                let mut want = base.clone();
                for o in 0..out {
                    for i in 0..input {
                        let d: f64 = (0..r)
                            .map(|k| f64::from(b[o * r + k]) * f64::from(a[k * input + i]))
                            .sum();
                        want[o * input + i] += (scale * d) as f32;
                    }
                }
                assert_close(name, &merged, &want, 1e-6, 1e-6);
                assert_ne!(merged, base, "{name} merged nothing");
                checked += 1;
            }
            _ => assert!(merged == base, "{name} is not adapted but changed"),
        }
    }
    assert_eq!(checked, 6);

    // … and its logits are the base + adapter's.
    let rows = vec![
        vec![5, 17, 33, 2, 250, 9, 41, 7],
        vec![1, 2, 3, 4, 5, 6, 7, 8],
    ];
    let mut adapted = load_dir(&base_dir);
    lora::attach_adapter(&mut adapted, &run.join("final/adapter")).unwrap();
    let merged = load_dir(&run.join("merged"));
    let worst = assert_close(
        "merged vs adapted",
        &logits(&merged, &rows),
        &logits(&adapted, &rows),
        1e-5,
        0.0,
    );
    eprintln!("merged vs base+adapter logits: max |Δ| {worst:e}");
    let base_logits = logits(&load_dir(&base_dir), &rows);
    assert_ne!(base_logits, logits(&adapted, &rows));
}

#[test]
fn lora_runs_resume_bit_identically() {
    let base_run = out_dir("lora-resume-base");
    train(&tiny(&[]), &base_run, None, &[]);
    let init = format!("model.init={}", base_run.join("final").display());
    let sets = [
        init.as_str(),
        "lora.enabled=true",
        "lora.dropout=0.2",
        "lora.target_modules=[\"q_proj\", \"v_proj\"]",
        "max_steps=4",
        "save_every=2",
        // The first half stops at step 2 without changing the schedule.
        "schedule=constant",
    ];
    let whole_dir = out_dir("lora-resume-whole");
    let whole = train(&tiny(&sets), &whole_dir, None, &[]);
    // Dropout is on in training: without it the second loss differs (the
    // first does not, B being 0).
    let mut no_dropout = sets.to_vec();
    no_dropout.extend(["lora.dropout=0", "max_steps=2"]);
    let plain = train(&tiny(&no_dropout), &out_dir("lora-resume-plain"), None, &[]);
    assert_eq!(plain.losses[0], whole.losses[0]);
    assert_ne!(plain.losses[1], whole.losses[1]);
    let split_dir = out_dir("lora-resume-split");
    let mut first_sets = sets.to_vec();
    first_sets.push("max_steps=2");
    let first = train(&tiny(&first_sets), &split_dir, None, &[]);
    let rest = train(
        &tiny(&sets),
        &split_dir,
        Some(&split_dir),
        &["max_steps=4".to_string()],
    );
    let joined: Vec<u64> = first
        .losses
        .iter()
        .chain(&rest.losses)
        .map(|l| l.to_bits())
        .collect();
    let whole_bits: Vec<u64> = whole.losses.iter().map(|l| l.to_bits()).collect();
    assert_eq!(joined, whole_bits);
    for file in [ADAPTER_WEIGHTS_FILE, ADAPTER_CONFIG_FILE] {
        assert!(
            std::fs::read(whole_dir.join("final/adapter").join(file)).unwrap()
                == std::fs::read(split_dir.join("final/adapter").join(file)).unwrap(),
            "{file}"
        );
    }
}

#[test]
fn unknown_target_fails_before_training() {
    let base_run = out_dir("lora-badtarget-base");
    train(&tiny(&[]), &base_run, None, &[]);
    let init = format!("model.init={}", base_run.join("final").display());
    let config = tiny(&[
        init.as_str(),
        "lora.enabled=true",
        "lora.target_modules=[\"q_proj\", \"c_attn\"]",
    ]);
    let out = out_dir("lora-badtarget");
    let mut steps = 0;
    let err = trainer::run(&config, &out, None, &[], &mut |e| {
        if matches!(e, trainer::Event::Step(_)) {
            steps += 1;
        }
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("`c_attn`") && err.contains("o_proj"), "{err}");
    assert_eq!(steps, 0);
}
