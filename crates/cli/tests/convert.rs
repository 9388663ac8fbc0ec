//! `kaiyuan convert` both ways on a tiny LLaMA fixture with a small
//! byte-level tokenizer: directory → GGUF → directory keeps the weights bit
//! for bit and the tokenizer, and `kaiyuan generate` prints the same text
//! from all three; bad requests fail with a message, never a panic.

#[path = "../../models/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Output};

use kaiyuan_models::ModelFiles;
use kaiyuan_tensor::DType;

fn kaiyuan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kaiyuan"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = kaiyuan(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kaiyuan {args:?} failed:\n{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = kaiyuan(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "kaiyuan {args:?} succeeded");
    assert!(
        !stderr.contains("panicked"),
        "kaiyuan {args:?} panicked:\n{stderr}"
    );
    stderr
}

fn f32_bits(files: &ModelFiles, name: &str) -> Vec<u32> {
    files
        .weights
        .raw(name)
        .unwrap()
        .cast(DType::F32)
        .unwrap()
        .to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn convert_directory_to_gguf_and_back() {
    let scratch = common::scratch_dir("cli-convert");
    let dir = scratch.join("tiny");
    common::tiny_model_dir("llama", &dir);
    let gguf = scratch.join("tiny.gguf");
    let back = scratch.join("back");
    ok(&["convert", "--model", s(&dir), "--output", s(&gguf)]);
    ok(&["convert", "--model", s(&gguf), "--output", s(&back)]);

    let (a, b) = (
        ModelFiles::open(&dir).unwrap(),
        ModelFiles::open(&back).unwrap(),
    );
    let names: Vec<&str> = a.weights.names().collect();
    assert_eq!(names, b.weights.names().collect::<Vec<_>>());
    for name in names {
        assert!(f32_bits(&a, name) == f32_bits(&b, name), "{name} differs");
    }
    assert_eq!(a.chat_template(), b.chat_template());
    let (ta, tb) = (a.tokenizer.as_ref().unwrap(), b.tokenizer.as_ref().unwrap());
    for text in ["the cat in a hat", "thin 42, the!"] {
        assert_eq!(
            ta.encode(text).unwrap().ids,
            tb.encode(text).unwrap().ids,
            "{text:?}"
        );
    }

    let generate = |model: &Path| {
        ok(&[
            "generate",
            "--model",
            s(model),
            "--prompt",
            "the cat",
            "--max-new-tokens",
            "12",
        ])
    };
    let text = generate(&dir);
    assert!(!text.trim().is_empty());
    assert_eq!(generate(&gguf), text, "GGUF");
    assert_eq!(generate(&back), text, "directory converted back");
    // f16 output is written as f16.
    let half = scratch.join("tiny-f16.gguf");
    ok(&[
        "convert",
        "--model",
        s(&dir),
        "--output",
        s(&half),
        "--dtype",
        "f16",
    ]);
    let h = ModelFiles::open(&half).unwrap();
    assert_eq!(
        h.weights.raw("model.embed_tokens.weight").unwrap().dtype(),
        DType::F16
    );
}

#[test]
fn convert_refuses_bad_requests_with_a_message() {
    let scratch = common::scratch_dir("cli-convert-bad");
    let dir = scratch.join("tiny");
    common::tiny_model_dir("llama", &dir);
    let err = fails(&[
        "convert",
        "--model",
        s(&dir),
        "--output",
        s(&scratch.join("x.bin")),
    ]);
    assert!(err.contains("*.gguf"), "{err}");
    let falcon = scratch.join("falcon");
    common::tiny_model_dir("falcon_mqa", &falcon);
    let err = fails(&[
        "convert",
        "--model",
        s(&falcon),
        "--output",
        s(&scratch.join("f.gguf")),
    ]);
    assert!(err.contains("FalconForCausalLM"), "{err}");
    let err = fails(&[
        "convert",
        "--model",
        s(&scratch.join("missing")),
        "--output",
        s(&scratch.join("m.gguf")),
    ]);
    assert!(err.contains("no such model"), "{err}");
}

/// A GGUF of block weights runs quantized by default (`inspect` counts
/// them as stored, `generate` runs them on the fused kernels) and dense
/// with `--dequantize`; both generate.
#[test]
fn gguf_blocks_run_quantized_unless_dequantize_is_given() {
    let scratch = common::scratch_dir("cli-gguf-blocks");
    let dir = scratch.join("tiny");
    common::tiny_model_dir("llama", &dir);
    let q4 = scratch.join("tiny-q4_0.gguf");
    ok(&[
        "quantize",
        "--model",
        s(&dir),
        "--method",
        "rtn",
        "--bits",
        "4",
        "--format",
        "gguf-q4_0",
        "--output",
        s(&q4),
    ]);
    let inspect = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["inspect", "--model", s(&q4), "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&ok(&args)).unwrap()
    };
    let (kept, dense) = (inspect(&[]), inspect(&["--dequantize"]));
    assert_eq!(kept["source"], "GGUF (block weights kept quantized)");
    assert_eq!(dense["source"], "GGUF");
    let bytes = |v: &serde_json::Value| v["weight_bytes"].as_u64().unwrap();
    assert!(
        4 * bytes(&kept) < bytes(&dense),
        "quantized {} vs dense {} bytes",
        bytes(&kept),
        bytes(&dense)
    );
    for extra in [None, Some("--dequantize")] {
        let mut args = vec![
            "generate",
            "--model",
            s(&q4),
            "--prompt",
            "the cat",
            "--max-new-tokens",
            "8",
        ];
        args.extend(extra);
        assert!(!ok(&args).trim().is_empty(), "{extra:?}");
    }
}
