//! Round trips over arbitrary Unicode, and malformed files: clear errors
//! naming the file and the entry, never a panic.

use std::path::{Path, PathBuf};

use kaiyuan_tokenizer::{EncodeOptions, TiktokenSpec, Tokenizer};
use proptest::prelude::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/tokenizer")
        .join(name)
}

fn load(name: &str) -> Tokenizer {
    Tokenizer::from_file(fixture(name)).unwrap()
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(300))]

    /// Byte-level BPE gives back the input bytes exactly, whatever the text.
    #[test]
    fn byte_level_round_trip(text in any::<String>(), extra in "[ \\t\\n]{0,3}(<\\|endoftext\\|>)?[a-z中文😀]{0,4}") {
        let tok = load("hf_trained_en_zh.json");
        let text = format!("{text}{extra}");
        let enc = tok.encode(&text).unwrap();
        prop_assert_eq!(tok.decode(&enc.ids, false).unwrap(), text.clone());
        // Offsets are in order, inside the text and on character boundaries.
        for &(a, b) in &enc.offsets {
            prop_assert!(a <= b && b <= text.len() && text.is_char_boundary(a) && text.is_char_boundary(b));
        }
        // Special tokens as plain text round-trip too.
        let plain = tok.encode_with(&text, EncodeOptions { split_special_tokens: true, ..Default::default() }).unwrap();
        prop_assert_eq!(tok.decode(&plain.ids, false).unwrap(), text);
    }

    /// A SentencePiece-style vocabulary (Metaspace + byte fallback) gives back
    /// `normalize(s)`: here the text itself, as nothing is normalized and the
    /// decoder drops the prepended `▁`.
    #[test]
    fn metaspace_byte_fallback_round_trip(text in "[^ \\u{2581}][^\\u{2581}]{0,40}") {
        let tok = load("components/model_byte_fallback_mistral.json");
        let enc = tok.encode(&text).unwrap();
        prop_assert_eq!(tok.decode(&enc.ids, false).unwrap(), text);
    }

    /// Damaged tokenizer.json files load or fail with an error; never panic.
    #[test]
    fn damaged_tokenizer_json_never_panics(cut in 0usize..6000, flips in proptest::collection::vec((0usize..6000, any::<u8>()), 0..4)) {
        let mut bytes = std::fs::read(fixture("components/pre_split_isolated.json")).unwrap();
        for (at, b) in flips {
            let at = at % bytes.len();
            bytes[at] = b;
        }
        bytes.truncate(bytes.len().saturating_sub(cut % 200));
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(tok) = Tokenizer::from_json_str("damaged.json", &text) {
            let _ = tok.encode("some text, 一些文字 123");
        }
    }

    /// Damaged rank files load or fail with an error; never panic.
    #[test]
    fn damaged_rank_files_never_panic(lines in proptest::collection::vec("[A-Za-z0-9+/=]{0,8}( [0-9]{0,4})?", 0..30)) {
        let dir = std::env::temp_dir().join(format!("kaiyuan-ranks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("r{}.tiktoken", lines.len()));
        std::fs::write(&path, lines.join("\n")).unwrap();
        let spec = TiktokenSpec::known("r50k_base").unwrap();
        let _ = Tokenizer::from_tiktoken(&path, &spec);
    }
}

fn error_of(json: &str) -> String {
    Tokenizer::from_json_str("bad.json", json)
        .unwrap_err()
        .to_string()
}

#[test]
fn malformed_tokenizer_json_names_file_and_entry() {
    let e = error_of("{not json");
    assert!(
        e.contains("bad.json") && e.contains("invalid JSON") && e.contains("line 1"),
        "{e}"
    );
    let e = error_of(r#"{"model": {"type": "BPE", "vocab": {"a": 0}}}"#);
    assert!(e.contains("bad.json") && e.contains("model.merges"), "{e}");
    let e = error_of(
        r#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a c"]}}"#,
    );
    assert!(
        e.contains("merge 0") && e.contains("\"c\" is not in the vocabulary"),
        "{e}"
    );
    let e = error_of(r#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]}}"#);
    assert!(e.contains("merged token \"ab\""), "{e}");
    let e = error_of(r#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 0}, "merges": []}}"#);
    assert!(e.contains("id 0 is used twice"), "{e}");
    let e = error_of(r#"{"model": {"type": "BPE", "vocab": {"a": -1}, "merges": []}}"#);
    assert!(e.contains("vocab entry \"a\""), "{e}");
    // A u32 id far past the vocabulary is refused, not a 64 GB table.
    let e = error_of(r#"{"model": {"type": "BPE", "vocab": {"a": 4000000000}, "merges": []}}"#);
    assert!(
        e.contains("token \"a\"") && e.contains("id 4000000000 is too large"),
        "{e}"
    );
    let e = error_of(r#"{"model": {"type": "WordPiece", "vocab": {}}}"#);
    assert!(e.contains("unsupported model `WordPiece`"), "{e}");
    let e = error_of(
        r#"{"model": {"type": "BPE", "vocab": {}, "merges": []}, "normalizer": {"type": "BertNormalizer"}}"#,
    );
    assert!(e.contains("unsupported normalizer `BertNormalizer`"), "{e}");
    let e = error_of(
        r#"{"model": {"type": "BPE", "vocab": {}, "merges": []}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"}}}"#,
    );
    assert!(
        e.contains("does not compile") && e.contains("(unclosed"),
        "{e}"
    );
    let e = error_of(
        r#"{"model": {"type": "BPE", "vocab": {}, "merges": []}, "added_tokens": [{"content": "x"}]}"#,
    );
    assert!(e.contains("added_tokens[0]") && e.contains("id"), "{e}");
}

#[test]
fn malformed_rank_files_name_file_and_line() {
    let dir = std::env::temp_dir().join(format!("kaiyuan-bad-ranks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = TiktokenSpec::known("cl100k_base").unwrap();
    let full: Vec<String> = (0..=255u8)
        .map(|b| {
            use base64::Engine as _;
            format!(
                "{} {b}",
                base64::engine::general_purpose::STANDARD.encode([b])
            )
        })
        .collect();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "bad_base64",
            format!("{}\n!!!! 256", full.join("\n")),
            "line 257: bad base64",
        ),
        (
            "bad_rank",
            format!("{}\nYWI= x", full.join("\n")),
            "line 257: bad rank",
        ),
        (
            "duplicate_rank",
            format!("{}\nYWI= 5", full.join("\n")),
            "id 5 is used twice",
        ),
        (
            "duplicate_token",
            format!("{}\nYQ== 300", full.join("\n")),
            "same bytes as id 97",
        ),
        ("missing_byte", full[1..].join("\n"), "byte 0x00"),
        ("no_space", "YWI=".to_string(), "line 1: expected"),
    ];
    for (name, text, needle) in cases {
        let path = dir.join(format!("{name}.tiktoken"));
        std::fs::write(&path, text).unwrap();
        let e = Tokenizer::from_tiktoken(&path, &spec)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains(needle),
            "{name}: {e}"
        );
    }
    let missing = dir.join("absent.tiktoken");
    let e = Tokenizer::from_tiktoken(&missing, &spec)
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent.tiktoken"), "{e}");
}

#[test]
fn load_save_load_gives_identical_ids() {
    let dir = fixture("components");
    let text = "Hello world! 你好，世界。 It's 2025 — naïve café ①② <s> </s> 🙂";
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".expected.json") || name == "index.json" {
            continue;
        }
        let Ok(tok) = Tokenizer::from_file(entry.path()) else {
            continue;
        };
        let again = Tokenizer::from_json_str("saved", &tok.to_json().unwrap()).unwrap();
        assert_eq!(
            tok.encode(text).unwrap(),
            again.encode(text).unwrap(),
            "{name}"
        );
    }
}
