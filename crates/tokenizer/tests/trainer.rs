//! Our BPE trainer against HF's `BpeTrainer` on the same corpus and settings
//! (`fixtures/tokenizer/train_settings_en_zh.json`): same vocabulary, same
//! merges in the same order, and the same ids when encoding.

use std::path::{Path, PathBuf};

use kaiyuan_tokenizer::{BpeTrainer, Tokenizer};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/tokenizer")
        .join(name)
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// HF reads a text file line by line, each line with its `\n` one sequence.
fn hf_lines(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

#[test]
fn trained_vocabulary_and_merges_equal_hf() {
    let settings = json(&fixture("train_settings_en_zh.json"));
    let trainer_settings = &settings["trainer"];
    let corpus = std::fs::read_to_string(fixture("train_corpus_en_zh.txt")).unwrap();
    let trainer = BpeTrainer {
        vocab_size: trainer_settings["vocab_size"].as_u64().unwrap() as usize,
        min_frequency: trainer_settings["min_frequency"].as_u64().unwrap(),
        special_tokens: trainer_settings["special_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect(),
        pattern: None,
    };
    let ours = trainer.train(&hf_lines(&corpus)).unwrap();
    let ours_json: Value = serde_json::from_str(&ours.to_json().unwrap()).unwrap();
    let hf = json(&fixture("hf_trained_en_zh.json"));
    assert_eq!(
        ours_json["model"]["vocab"], hf["model"]["vocab"],
        "vocabularies differ"
    );
    let normalize = |merges: &Value| -> Vec<String> {
        merges
            .as_array()
            .unwrap()
            .iter()
            .map(|m| match m {
                Value::String(s) => s.clone(),
                Value::Array(p) => format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()),
                other => panic!("merge {other}"),
            })
            .collect()
    };
    let (a, b) = (
        normalize(&ours_json["model"]["merges"]),
        normalize(&hf["model"]["merges"]),
    );
    let first_difference = a.iter().zip(&b).position(|(x, y)| x != y);
    assert_eq!(
        a.len(),
        b.len(),
        "merge counts differ; first difference at {first_difference:?}"
    );
    assert_eq!(first_difference, None, "merges differ");
    // Our file loads and encodes as HF's does.
    let theirs = Tokenizer::from_file(fixture("hf_trained_en_zh.json")).unwrap();
    for line in hf_lines(&corpus).iter().step_by(97) {
        assert_eq!(ours.encode(line).unwrap(), theirs.encode(line).unwrap());
    }
}

#[test]
fn training_is_deterministic_and_respects_vocab_size() {
    let corpus = std::fs::read_to_string(fixture("train_corpus_en_zh.txt")).unwrap();
    let lines = hf_lines(&corpus);
    let trainer = BpeTrainer {
        vocab_size: 600,
        min_frequency: 2,
        special_tokens: vec!["<|endoftext|>".into()],
        pattern: Some(
            r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+".into(),
        ),
    };
    let a = trainer.train(&lines[..2000]).unwrap();
    let b = trainer.train(&lines[..2000]).unwrap();
    assert_eq!(a.to_json().unwrap(), b.to_json().unwrap());
    assert_eq!(a.vocab_size(), 600);
    let text = "Botchan 坊っちゃん, 子曰：学而时习之。";
    let ids = a.encode(text).unwrap().ids;
    assert_eq!(a.decode(&ids, false).unwrap(), text);
}
