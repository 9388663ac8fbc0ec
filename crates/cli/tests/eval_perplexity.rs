//! `kaiyuan eval perplexity` end to end on a tiny model directory: the
//! random LLaMA of `fixtures/models/llama` (vocabulary 80, context 64) with a
//! byte-level BPE `tokenizer.json` written here (73 byte symbols, 5 merges,
//! a `<s>` BOS added by its post-processor: exactly 80 ids), scoring the
//! English lines of `fixtures/eval/botchan_zh.txt`. The binary's JSON must
//! equal the library's report for the same ids, and the ids must start with
//! the BOS.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use kaiyuan_eval::{PerplexityOptions, encode_text, perplexity};
use kaiyuan_models::ModelFiles;
use kaiyuan_tensor::DType;
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// GPT-2's byte-to-unicode map for the bytes used here.
fn byte_symbol(b: u8) -> char {
    match b {
        b' ' => 'Ġ',
        b'\n' => 'Ċ',
        33..=126 => b as char,
        _ => panic!("byte {b} is not in the test alphabet"),
    }
}

const ALPHABET: &str =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \n.,';\"!?-:";

/// A byte-level BPE tokenizer.json with exactly 80 ids.
fn tokenizer_json() -> Value {
    let mut vocab = serde_json::Map::new();
    vocab.insert("<pad>".into(), json!(0));
    vocab.insert("<s>".into(), json!(1));
    for b in ALPHABET.bytes() {
        let id = vocab.len();
        vocab.insert(byte_symbol(b).to_string(), json!(id));
    }
    let merges = [("t", "h"), ("h", "e"), ("Ġ", "t"), ("i", "n"), ("Ġ", "a")];
    for (a, b) in merges {
        let id = vocab.len();
        vocab.insert(format!("{a}{b}"), json!(id));
    }
    assert_eq!(vocab.len(), 80);
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "<pad>"), special(1, "<s>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab,
            "merges": merges.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>()
        }
    })
}

/// The model directory and text file, written once under the target dir.
fn setup() -> (PathBuf, PathBuf) {
    static SETUP: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    SETUP.get_or_init(write_setup).clone()
}

fn write_setup() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("eval_perplexity_llama");
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = root().join("fixtures/models/llama");
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(name), dir.join(name)).unwrap();
    }
    std::fs::write(
        dir.join("tokenizer.json"),
        serde_json::to_string_pretty(&tokenizer_json()).unwrap(),
    )
    .unwrap();
    let source = std::fs::read_to_string(root().join("fixtures/eval/botchan_zh.txt")).unwrap();
    let text: String = source
        .lines()
        .filter(|l| l.is_ascii())
        .flat_map(|l| l.chars().chain(['\n']))
        .collect();
    assert!(text.len() > 800, "{} bytes of English", text.len());
    assert!(
        text.chars().all(|c| ALPHABET.contains(c)),
        "text outside the alphabet"
    );
    let text_path = dir.join("botchan_en.txt");
    std::fs::write(&text_path, text).unwrap();
    (dir, text_path)
}

fn kaiyuan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kaiyuan"))
        .args(args)
        .output()
        .expect("run kaiyuan")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(1.0)
}

#[test]
fn json_output_equals_the_library_report() {
    let (dir, text) = setup();
    let (d, t) = (dir.to_str().unwrap(), text.to_str().unwrap());
    let out = kaiyuan(&[
        "eval",
        "perplexity",
        "--model",
        d,
        "--text",
        t,
        "--context",
        "64",
        "--stride",
        "24",
        "--per-token",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let got: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));

    let files = ModelFiles::open(&dir).unwrap();
    let ids = encode_text(
        files.require_tokenizer().unwrap(),
        &std::fs::read_to_string(&text).unwrap(),
    )
    .unwrap();
    assert_eq!(ids[0], 1, "the post-processor's BOS comes first");
    assert!(ids.iter().any(|&i| i >= 75), "merges are used");
    let model = ModelFiles::open(&dir)
        .unwrap()
        .take_model(DType::F32)
        .unwrap();
    let options = PerplexityOptions {
        context: Some(64),
        stride: Some(24),
        per_token: true,
        batch_size: None,
        rolling: false,
    };
    let report = perplexity(&model, &ids, &options).unwrap();

    assert_eq!(got["tokens_scored"].as_u64(), Some(ids.len() as u64 - 1));
    assert_eq!(
        got["tokens_scored"].as_u64(),
        Some(report.tokens_scored as u64)
    );
    assert_eq!(got["context"].as_u64(), Some(64));
    assert_eq!(got["stride"].as_u64(), Some(24));
    for key in ["perplexity", "nll_sum", "nll_mean"] {
        let value = got[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {got}"));
        let expected = match key {
            "perplexity" => report.perplexity,
            "nll_sum" => report.nll_sum,
            _ => report.nll_mean,
        };
        assert!(close(value, expected), "{key}: {value} vs {expected}");
    }
    assert!(report.perplexity > 1.0 && report.perplexity.is_finite());
    let logprobs: Vec<f32> = got["logprobs"]
        .as_array()
        .expect("logprobs with --per-token")
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(Some(&logprobs), report.logprobs.as_ref());

    // Without --per-token there is no logprobs field.
    let out = kaiyuan(&["eval", "perplexity", "--model", d, "--text", t, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain: Value = serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert!(plain.get("logprobs").is_none(), "{plain}");
    assert_eq!(
        plain["context"].as_u64(),
        Some(64),
        "the model's context by default"
    );
}

#[test]
fn human_output_and_errors() {
    let (dir, text) = setup();
    let (d, t) = (dir.to_str().unwrap(), text.to_str().unwrap());
    let out = kaiyuan(&[
        "eval",
        "perplexity",
        "--model",
        d,
        "--text",
        t,
        "--stride",
        "16",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("perplexity "), "{stdout}");
    assert!(stdout.contains("context 64, stride 16"), "{stdout}");

    let out = kaiyuan(&[
        "eval",
        "perplexity",
        "--model",
        d,
        "--text",
        t,
        "--stride",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid option `stride`"), "{stderr}");

    let out = kaiyuan(&[
        "eval",
        "perplexity",
        "--model",
        d,
        "--text",
        t,
        "--context",
        "65",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`context`") && stderr.contains("64"),
        "{stderr}"
    );

    let missing = dir.join("no-such-text.txt");
    let out = kaiyuan(&[
        "eval",
        "perplexity",
        "--model",
        d,
        "--text",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-text.txt"), "{stderr}");

    let out = kaiyuan(&["eval", "rouge", "--whatever"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unexpected argument '--whatever'"),
        "{stderr}"
    );
}
