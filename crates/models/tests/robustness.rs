//! Bad inputs give errors that name what is wrong, and loaders never panic:
//! missing and misshapen tensors, unknown architectures, invalid config
//! fields, truncated or corrupted safetensors, prompts longer than the
//! context, invalid constraints, ids outside the vocabulary; plus property
//! tests that random byte mutations and truncations of a valid safetensors
//! file and of a valid `config.json` give `Ok` or `Err`, never a panic.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kaiyuan_models::constrain::{Constraint, RegexConstraint, json_schema_regex};
use kaiyuan_models::generate::{GenerationConfig, generate, generate_batch, token_logprobs};
use kaiyuan_models::safetensors_io::{read_dir, write_file};
use kaiyuan_models::{ModelConfig, ModelError, ModelFiles, Weights};
use kaiyuan_tensor::{DType, Tensor};
use kaiyuan_tokenizer::Tokenizer;
use proptest::prelude::*;
use serde_json::{Value, json};

/// A scratch copy of the tiny LLaMA fixture with the tiny tokenizer.
fn tiny_dir(name: &str) -> PathBuf {
    let dir = common::scratch_dir(&format!("robustness-{name}"));
    common::tiny_model_dir("llama", &dir);
    dir
}

fn rewrite_weights(dir: &Path, edit: impl FnOnce(&mut Weights)) {
    let mut weights = read_dir(dir).unwrap();
    edit(&mut weights);
    write_file(&dir.join("model.safetensors"), &weights, &BTreeMap::new()).unwrap();
}

fn llama_config() -> Value {
    let path = common::root().join("fixtures/models/llama/config.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn config_error(config: &Value) -> ModelError {
    ModelConfig::from_json_str("config.json", &config.to_string()).unwrap_err()
}

#[test]
fn missing_tensor_is_named() {
    let dir = tiny_dir("missing");
    let name = "model.layers.1.mlp.down_proj.weight";
    rewrite_weights(&dir, |w| {
        w.remove(name).unwrap();
    });
    let files = ModelFiles::open(&dir).unwrap();
    let err = files.build(DType::F32).unwrap_err();
    assert!(
        matches!(&err, ModelError::MissingTensor { name: n, .. } if n == name),
        "{err}"
    );
    assert!(err.to_string().contains(name), "{err}");
}

#[test]
fn wrong_shape_names_the_tensor_and_both_shapes() {
    let dir = tiny_dir("shape");
    let name = "model.layers.0.self_attn.q_proj.weight";
    rewrite_weights(&dir, |w| {
        w.insert(
            name,
            Tensor::from_vec(vec![0f32; 32 * 16], &[32, 16]).unwrap(),
        );
    });
    let err = ModelFiles::open(&dir)
        .unwrap()
        .build(DType::F32)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, ModelError::TensorShape { name: n, expected, actual, .. }
            if n == name && expected == &[32, 32] && actual == &[32, 16]),
        "{msg}"
    );
    assert!(
        msg.contains(name) && msg.contains("[32, 16]") && msg.contains("[32, 32]"),
        "{msg}"
    );
}

#[test]
fn unknown_or_missing_architecture_is_refused() {
    let mut c = llama_config();
    c["architectures"] = json!(["BertModel"]);
    let err = config_error(&c);
    assert!(matches!(err, ModelError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("BertModel"), "{err}");
    c["architectures"] = json!([]);
    assert!(config_error(&c).to_string().contains("architectures"));
    // The directory loader says the same.
    let dir = tiny_dir("arch");
    c["architectures"] = json!(["GPT2LMHeadModel"]);
    std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
    let err = ModelFiles::open(&dir).unwrap_err();
    assert!(err.to_string().contains("GPT2LMHeadModel"), "{err}");
}

#[test]
fn invalid_config_fields_are_named() {
    let field_of = |err: &ModelError| match err {
        ModelError::Config { field, .. } => field.clone(),
        other => panic!("expected a config error, got {other}"),
    };
    let base = llama_config();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = base.clone();
        edit(&mut c);
        config_error(&c)
    };
    let err = with(&|c| c["num_key_value_heads"] = json!(3));
    assert_eq!(field_of(&err), "num_key_value_heads", "{err}");
    assert!(err.to_string().contains("divide"), "{err}");
    let err = with(&|c| c["num_key_value_heads"] = json!(0));
    assert_eq!(field_of(&err), "num_key_value_heads", "{err}");
    let err = with(&|c| c["hidden_size"] = json!(0));
    assert_eq!(field_of(&err), "hidden_size", "{err}");
    let err = with(&|c| {
        c.as_object_mut().unwrap().remove("intermediate_size");
    });
    assert_eq!(field_of(&err), "intermediate_size", "{err}");
    let err = with(&|c| c["hidden_act"] = json!("relu6"));
    assert!(err.to_string().contains("relu6"), "{err}");

    // rope_parameters: wrong type, unknown rope type, missing factor,
    // non-positive theta, odd rotary dimension.
    let err = with(&|c| c["rope_parameters"] = json!("fast"));
    assert!(field_of(&err).starts_with("rope_parameters"), "{err}");
    let err = with(&|c| c["rope_parameters"] = json!({"rope_type": "bogus", "rope_theta": 1e4}));
    assert!(err.to_string().contains("bogus"), "{err}");
    let err = with(&|c| c["rope_parameters"] = json!({"rope_type": "linear", "rope_theta": 1e4}));
    assert!(err.to_string().contains("factor"), "{err}");
    let err = with(&|c| c["rope_parameters"] = json!({"rope_type": "default", "rope_theta": -5.0}));
    assert!(field_of(&err).contains("rope_theta"), "{err}");
    let err = with(&|c| c["rope_parameters"] = json!({"rope_type": "linear", "factor": "two"}));
    assert!(field_of(&err).contains("factor"), "{err}");
    let err = with(&|c| c["partial_rotary_factor"] = json!(0.1));
    assert!(err.to_string().contains("rotary"), "{err}");
    let err = with(&|c| c["eos_token_id"] = json!(-1));
    assert_eq!(field_of(&err), "eos_token_id", "{err}");

    // Sizes no real model has are refused before anything is allocated.
    let err = with(&|c| c["num_hidden_layers"] = json!(1u64 << 40));
    assert_eq!(field_of(&err), "num_hidden_layers", "{err}");
    let err = with(&|c| c["vocab_size"] = json!(u64::MAX));
    assert_eq!(field_of(&err), "vocab_size", "{err}");
}

/// Bytes of a safetensors file with `header` (JSON) and `data`.
fn safetensors_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn open_error(dir: &Path, bytes: &[u8]) -> String {
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    let err = ModelFiles::open(dir).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::Format { .. } | ModelError::Unsupported { .. }
        ),
        "{err:?}"
    );
    err.to_string()
}

#[test]
fn truncated_and_corrupted_safetensors_are_refused() {
    let dir = tiny_dir("safetensors");
    let valid = std::fs::read(dir.join("model.safetensors")).unwrap();
    // Truncated in the data, in the header and in the length prefix.
    for cut in [valid.len() - 1, valid.len() / 2, 100, 5, 0] {
        let msg = open_error(&dir, &valid[..cut]);
        assert!(msg.contains("model.safetensors"), "cut {cut}: {msg}");
    }
    // A header claiming more bytes than the file holds.
    let header =
        r#"{"model.embed_tokens.weight":{"dtype":"F32","shape":[80,32],"data_offsets":[0,10240]}}"#;
    let msg = open_error(&dir, &safetensors_bytes(header, &[0u8; 64]));
    assert!(msg.contains("header"), "{msg}");
    // A length prefix larger than the file.
    let mut bytes = safetensors_bytes(header, &[0u8; 64]);
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    open_error(&dir, &bytes);
    // Garbage instead of JSON; offsets that disagree with the shape.
    open_error(&dir, &safetensors_bytes("{not json at all}", &[]));
    let header = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#;
    open_error(&dir, &safetensors_bytes(header, &[0u8; 16]));
    // An unsupported dtype is named.
    let header = r#"{"w":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}}"#;
    let msg = open_error(&dir, &safetensors_bytes(header, &[0u8; 4]));
    assert!(msg.contains("I8") && msg.contains('w'), "{msg}");
}

fn tiny_model() -> (kaiyuan_models::Model, Tokenizer) {
    let dir = tiny_dir("model");
    let mut files = ModelFiles::open(&dir).unwrap();
    let tokenizer = files.tokenizer.take().unwrap();
    (files.take_model(DType::F32).unwrap(), tokenizer)
}

#[test]
fn generation_refuses_bad_prompts_and_ids() {
    let (model, tok) = tiny_model();
    let context = model.config().max_position_embeddings;
    let config = GenerationConfig {
        max_new_tokens: 4,
        ..GenerationConfig::default()
    };
    let long = vec![5u32; context];
    let err = generate(&model, &tok, &long, &config, None, |_| {}).unwrap_err();
    assert!(
        matches!(&err, ModelError::InvalidArgument { name, message }
            if name == "prompt" && message.contains("context")),
        "{err}"
    );
    let err = generate(&model, &tok, &[], &config, None, |_| {}).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    let err = generate_batch(&model, &tok, &[vec![1, 2], long.clone()], &config).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");
    let err = token_logprobs(&model, &vec![3u32; context + 1]).unwrap_err();
    assert!(err.to_string().contains("context"), "{err}");

    // Ids outside the vocabulary of 80.
    for bad in [80u32, 1000, u32::MAX] {
        let err = generate(&model, &tok, &[1, bad], &config, None, |_| {}).unwrap_err();
        assert!(err.to_string().contains(&bad.to_string()), "{err}");
        let err = generate_batch(&model, &tok, &[vec![1, 2], vec![bad]], &config).unwrap_err();
        assert!(err.to_string().contains(&bad.to_string()), "{err}");
        let err = token_logprobs(&model, &[1, 2, bad]).unwrap_err();
        assert!(err.to_string().contains(&bad.to_string()), "{err}");
        assert!(tok.decode(&[bad], false).is_err());
    }
    // A constraint told of a token it does not know.
    let mut c = RegexConstraint::new("[a-z]+", &tok, &[2]).unwrap();
    assert!(c.advance(1_000_000).is_err());
    assert!(c.advance(30).is_err(), "a digit leaves [a-z]+");
    assert!(c.advance(3).is_ok());
}

#[test]
fn invalid_regexes_and_unsupported_schemas_are_refused() {
    let tok = Tokenizer::from_json_str("tiny", &common::tiny_tokenizer_json()).unwrap();
    for bad in ["(", "[a-", "a{3,2}", r"\p{NotAProperty}"] {
        let err = RegexConstraint::new(bad, &tok, &[2]).unwrap_err();
        assert!(
            matches!(&err, ModelError::InvalidArgument { name, .. } if name == "--regex"),
            "{bad}: {err}"
        );
    }
    // A pattern the vocabulary cannot spell fails at the first mask.
    let mut c = RegexConstraint::new("ÿ+", &tok, &[2]).unwrap();
    let err = c.allowed(80).unwrap_err();
    assert!(err.to_string().contains("no token"), "{err}");
    for (schema, what) in [
        (json!(true), "true"),
        (json!({"type": "string", "format": "email"}), "email"),
        (json!({"type": "array"}), "items"),
        (json!({"type": "object"}), "properties"),
        (json!({"type": "tuple"}), "tuple"),
        (json!({"enum": []}), "enum"),
        (json!({"$ref": "#/$defs/missing"}), "missing"),
        (
            json!({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
            "deeper",
        ),
        (
            json!({"type": "string", "minLength": 3, "maxLength": 2}),
            "maxLength",
        ),
        (json!({"type": "string", "maxLength": -1}), "maxLength"),
    ] {
        let err = json_schema_regex(&schema).unwrap_err();
        assert!(
            matches!(&err, ModelError::InvalidArgument { name, .. } if name == "--json-schema"),
            "{schema}: {err}"
        );
        assert!(err.to_string().contains(what), "{schema}: {err}");
    }
}

// ---------------------------------------------------------------- proptests --

/// Opens `bytes` as the directory's weights; when they load, builds the
/// model too. Any panic fails the property.
fn exercise_safetensors(dir: &Path, bytes: &[u8]) {
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    if let Ok(files) = ModelFiles::open(dir) {
        let _ = files.build(DType::F32);
    }
}

fn exercise_config(text: &str) {
    if let Ok(c) = ModelConfig::from_json_str("config.json", text) {
        let _ = c.parameter_count();
        let _ = c.kv_bytes_per_token(4);
    }
}

/// Values that stress a config field.
fn odd_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(null)),
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(-1)),
        Just(json!(3)),
        Just(json!(1.5)),
        Just(json!(1u64 << 33)),
        Just(json!(u64::MAX)),
        Just(json!(f64::MAX)),
        Just(json!(-1e300)),
        Just(json!("")),
        Just(json!("linear")),
        Just(json!(true)),
        Just(json!([])),
        Just(json!([1, 2, 3])),
        Just(json!({})),
        Just(json!({"rope_type": "yarn", "factor": 0.0})),
        Just(json!({"rope_type": "llama3", "factor": 8.0})),
        Just(json!({"rope_type": "dynamic", "factor": -2.0, "rope_theta": 1e-300})),
        Just(json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 0})),
        Just(
            json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
        ),
    ]
}

const FIELDS: [&str; 20] = [
    "architectures",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_parameters",
    "rope_scaling",
    "rope_theta",
    "partial_rotary_factor",
    "sliding_window",
    "use_sliding_window",
    "max_window_layers",
    "layer_types",
    "eos_token_id",
    "hidden_act",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_safetensors_never_panic(
        flips in prop::collection::vec((0usize..4096, any::<u8>()), 1..6),
        cut in prop::option::of(0usize..1 << 20),
    ) {
        let dir = common::root().join("target/test-scratch/robustness-prop-safetensors");
        if !dir.join("config.json").exists() {
            common::tiny_model_dir("llama", &dir);
        }
        let valid = std::fs::read(
            common::root().join("fixtures/models/llama/model.safetensors"),
        ).unwrap();
        let header_end = 8 + u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
        let mut bytes = valid.clone();
        for (at, value) in flips {
            // Mostly the header (where mutations matter), sometimes the data.
            let at = if at % 4 == 0 { at * 97 % bytes.len() } else { at % header_end };
            bytes[at] = value;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut % (valid.len() + 1));
        }
        exercise_safetensors(&dir, &bytes);
    }

    #[test]
    fn mutated_config_bytes_never_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = llama_config().to_string().into_bytes();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Some(cut) = cut {
            let n = cut.index(bytes.len() + 1);
            bytes.truncate(n);
        }
        exercise_config(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn odd_config_values_never_panic(
        edits in prop::collection::vec((0usize..FIELDS.len(), odd_value()), 1..5),
        arch in prop::sample::select(vec![
            "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
            "FalconForCausalLM", "GlmForCausalLM", "Glm4ForCausalLM",
        ]),
    ) {
        let mut c = llama_config();
        c["architectures"] = json!([arch]);
        for (field, value) in edits {
            c[FIELDS[field]] = value;
        }
        exercise_config(&c.to_string());
    }
}

/// Copying a directory's weights into huge-page memory (the default of
/// `ModelFiles::open`) gives the same tensors, dtypes and logits as reading
/// them in place from the file's map.
#[test]
fn resident_and_in_place_directory_loads_agree() {
    let dir = tiny_dir("resident");
    rewrite_weights(&dir, |w| {
        // Tensors of every in-place dtype, at odd sizes.
        let extra = Tensor::rand_uniform(&[3, 5], -1.0, 1.0, 9).unwrap();
        w.insert("extra.f16", extra.cast(DType::F16).unwrap());
        w.insert("extra.bf16", extra.cast(DType::BF16).unwrap());
        w.insert("extra.f32", extra);
    });
    let values = |w: &Weights| -> Vec<(String, DType, Vec<usize>, Vec<u32>)> {
        let mut out: Vec<_> = w
            .iter()
            .map(|(name, t)| {
                let v = t.cast(DType::F32).unwrap().to_vec::<f32>().unwrap();
                (
                    name.to_string(),
                    t.dtype(),
                    t.shape().to_vec(),
                    v.iter().map(|x| x.to_bits()).collect(),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    };
    let in_place = read_dir(&dir).unwrap();
    let resident = kaiyuan_models::safetensors_io::read_dir_resident(&dir).unwrap();
    assert!(in_place.iter().count() > 3);
    assert_eq!(values(&resident), values(&in_place));
    // Whole models: the same logits.
    let ids = [1u32, 5, 9, 2];
    let logits = |files: ModelFiles| -> Vec<f32> {
        let model = files.build(DType::F32).unwrap();
        let mut cache = model.new_cache();
        model
            .forward(&[ids.to_vec()], &mut cache, kaiyuan_models::Logits::All)
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
    };
    assert_eq!(
        logits(ModelFiles::open(&dir).unwrap()),
        logits(ModelFiles::open_in_place(&dir, false).unwrap())
    );
}
