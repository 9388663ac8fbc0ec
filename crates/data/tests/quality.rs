//! The quality filters against datatrove 0.10.1's decisions on the committed
//! reference corpus (`fixtures/data/filters/`, written by
//! `make_references.py`): every document's keep/drop decision and reason for
//! Gopher quality, Gopher repetition, C4 (and the text C4 leaves), FineWeb
//! and the C4 bad-words rules, plus datatrove's English word split itself.

use kaiyuan_data::quality::{
    BadWords, BadWordsConfig, C4Quality, C4QualityConfig, FineWebQuality, FineWebQualityConfig,
    GopherQuality, GopherQualityConfig, GopherRepetition, GopherRepetitionConfig, count_sentences,
    split_words,
};
use kaiyuan_data::{DocContext, DocumentStage, Outcome};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/data/filters")
        .join(name)
}

fn read_jsonl_gz(name: &str) -> Vec<Value> {
    let path = fixture(name);
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .map(|l| {
            let l = l.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::from_str(&l).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

/// datatrove's reason string for one of our rejection codes.
fn datatrove_reason(code: &str) -> String {
    let (stage, rule) = code.split_once('.').unwrap_or(("", code));
    match (stage, rule) {
        ("gopher_quality", r) => match r {
            "short_doc" => "gopher_short_doc",
            "long_doc" => "gopher_long_doc",
            "mean_word_length_below" => "gopher_below_avg_threshold",
            "mean_word_length_above" => "gopher_above_avg_threshold",
            "hash_ratio" => "gopher_too_many_hashes",
            "ellipsis_ratio" => "gopher_too_many_ellipsis",
            "bullet_lines" => "gopher_too_many_bullets",
            "ellipsis_lines" => "gopher_too_many_end_ellipsis",
            "alpha_words" => "gopher_below_alpha_threshold",
            "stop_words" => "gopher_enough_stop_words",
            other => other,
        }
        .to_string(),
        ("bad_words", "found") => "document_removed_with_badwords".to_string(),
        (_, r) => r.to_string(),
    }
}

#[derive(Default)]
struct Tally {
    agree: usize,
    total: usize,
    keep: usize,
    mismatches: Vec<String>,
}

impl Tally {
    fn check(&mut self, id: u64, ok: bool, keep: bool, describe: impl FnOnce() -> String) {
        self.total += 1;
        self.keep += usize::from(keep);
        if ok {
            self.agree += 1;
        } else if self.mismatches.len() < 5 {
            self.mismatches.push(format!("doc {id}: {}", describe()));
        }
    }
}

fn short(s: &str) -> String {
    let t: String = s.chars().take(160).collect();
    format!("{t:?}{}", if s.chars().count() > 160 { "…" } else { "" })
}

#[test]
fn decisions_equal_datatrove() {
    let docs = read_jsonl_gz("reference.jsonl.gz");
    assert!(
        docs.len() >= 1000,
        "only {} reference documents",
        docs.len()
    );
    let list = |name: &str| BadWordsConfig {
        files: vec![fixture(name).to_string_lossy().to_string()],
        ..Default::default()
    };
    let stages: Vec<(&str, Box<dyn DocumentStage>)> = vec![
        (
            "gopher_quality",
            Box::new(GopherQuality::new(GopherQualityConfig::default()).expect("gopher quality")),
        ),
        (
            "gopher_repetition",
            Box::new(
                GopherRepetition::new(GopherRepetitionConfig::default())
                    .expect("gopher repetition"),
            ),
        ),
        (
            "c4_quality",
            Box::new(C4Quality::new(C4QualityConfig::default()).expect("c4")),
        ),
        (
            "fineweb_quality",
            Box::new(FineWebQuality::new(FineWebQualityConfig::default()).expect("fineweb")),
        ),
        (
            "c4_badwords",
            Box::new(BadWords::new(list("badwords_test_en.txt")).expect("bad words en")),
        ),
        (
            "c4_badwords_zh",
            Box::new(BadWords::new(list("badwords_test_zh.txt")).expect("bad words zh")),
        ),
    ];
    let mut tallies: Vec<Tally> = stages.iter().map(|_| Tally::default()).collect();
    let mut c4_text = Tally::default();
    let mut words = Tally::default();
    let mut real = 0usize;
    for doc in &docs {
        let id = doc["id"].as_u64().unwrap_or(0);
        let text = doc["text"].as_str().expect("text");
        real += usize::from(doc["derived"].is_null());
        for ((name, stage), tally) in stages.iter().zip(tallies.iter_mut()) {
            let want = &doc[*name];
            let want_keep = want["keep"].as_bool().expect("keep");
            let want_reason = want["reason"].as_str().unwrap_or("");
            let mut ctx = DocContext::default();
            let outcome = stage.apply(text, &mut ctx);
            let (keep, reason, new_text) = match &outcome {
                Outcome::Keep => (true, String::new(), text.to_string()),
                Outcome::Replace(t) => (true, String::new(), t.clone()),
                Outcome::Drop(r) => (false, datatrove_reason(r.code), String::new()),
            };
            let ok = keep == want_keep && (keep || reason == want_reason);
            tally.check(id, ok, want_keep, || {
                format!(
                    "datatrove {want_keep}/{want_reason:?}, ours {outcome:?}; text {}",
                    short(text)
                )
            });
            if *name == "c4_quality" && want_keep && keep {
                let want_text = want["text"].as_str().expect("c4 text");
                c4_text.check(id, new_text == want_text, true, || {
                    format!("datatrove {}, ours {}", short(want_text), short(&new_text))
                });
            }
        }
        let ours = split_words(text);
        let digest = hex(&Sha256::digest(ours.join("\0").as_bytes()));
        let want_n = doc["n_words"].as_u64().unwrap_or(0) as usize;
        let want_sha = doc["words_sha256"].as_str().unwrap_or("");
        words.check(id, ours.len() == want_n && digest == want_sha, true, || {
            format!(
                "{} words vs datatrove's {want_n}; text {}",
                ours.len(),
                short(text)
            )
        });
    }
    println!(
        "{} reference documents ({real} real, {} derived)",
        docs.len(),
        docs.len() - real
    );
    let mut failed = false;
    let rows = stages.iter().map(|(n, _)| *n).zip(tallies.iter()).chain([
        ("c4_quality text", &c4_text),
        ("english word split", &words),
    ]);
    for (name, t) in rows {
        println!(
            "{name:20} agree {}/{} (datatrove keeps {}, drops {})",
            t.agree,
            t.total,
            t.keep,
            t.total - t.keep
        );
        for m in &t.mismatches {
            println!("    {m}");
        }
        failed |= t.agree != t.total;
    }
    assert!(!failed, "decisions differ from datatrove's (see above)");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn english_word_split_equals_spacy() {
    let cases = read_jsonl_gz("tokenizer_cases.jsonl.gz");
    assert!(cases.len() >= 1000);
    let mut bad_tokens = Vec::new();
    let mut bad_sentences = Vec::new();
    for case in &cases {
        let text = case["text"].as_str().expect("text");
        let want: Vec<&str> = case["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let ours = split_words(text);
        if ours != want {
            bad_tokens.push(format!("{text:?}: spaCy {want:?}, ours {ours:?}"));
        }
        if !text.is_empty() {
            let want = case["sentences"].as_u64().unwrap_or(0) as usize;
            let got = count_sentences(text);
            if got != want {
                bad_sentences.push(format!("{text:?}: spaCy {want}, ours {got}"));
            }
        }
    }
    println!(
        "tokens agree {}/{}, sentence counts agree {}/{}",
        cases.len() - bad_tokens.len(),
        cases.len(),
        cases.len() - bad_sentences.len(),
        cases.len()
    );
    for m in bad_tokens
        .iter()
        .take(10)
        .chain(bad_sentences.iter().take(10))
    {
        println!("    {m}");
    }
    assert!(bad_tokens.is_empty() && bad_sentences.is_empty());
}

mod properties {
    use super::*;
    use kaiyuan_data::Language;
    use proptest::prelude::*;

    fn stages() -> Vec<Box<dyn DocumentStage>> {
        vec![
            Box::new(GopherQuality::new(GopherQualityConfig::default()).expect("gq")),
            Box::new(GopherRepetition::new(GopherRepetitionConfig::default()).expect("gr")),
            Box::new(C4Quality::new(C4QualityConfig::default()).expect("c4")),
            Box::new(
                C4Quality::new(C4QualityConfig {
                    split_paragraph: false,
                    ..Default::default()
                })
                .expect("c4s"),
            ),
            Box::new(FineWebQuality::new(FineWebQualityConfig::default()).expect("fw")),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The word split covers every non-whitespace character, in order.
        #[test]
        fn words_cover_the_text(text in "[a-zA-Z0-9 \n\t.,;:!?'\"()\\[\\]{}<>/+*=#$%&@^_~|-]{0,60}|[ a-z.…中文，。？！“”'’:)(\u{a0}\u{3000}é°©😀-]{0,40}") {
            let words = split_words(&text);
            let joined: String = words.concat();
            let want: String = text.chars().filter(|c| !matches!(c, ' ' | '\n' | '\t' | '\u{a0}' | '\u{3000}')).collect();
            prop_assert_eq!(joined, want);
            prop_assert!(words.iter().all(|w| !w.is_empty()));
        }

        /// No stage panics, in either variant; C4 (by lines) only removes text.
        #[test]
        fn stages_never_panic(text in "\\PC{0,200}", zh in any::<bool>()) {
            for (i, stage) in stages().iter().enumerate() {
                let mut ctx = DocContext { language: Some(if zh { Language::Zh } else { Language::En }), ..DocContext::default() };
                if let Outcome::Replace(t) = stage.apply(&text, &mut ctx) {
                    prop_assert!(i != 2 || t.len() <= text.len());
                }
            }
        }
    }
}
