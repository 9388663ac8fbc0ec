//! ROUGE and the Porter stemmer against Google's rouge-score 0.1.2 and nltk
//! 3.10.4 on the committed references (`fixtures/eval/rouge/`, written by
//! `make_references.py` from `fixtures/eval/text_pairs/pairs.jsonl`):
//!
//! - every pair's rouge1/rouge2/rougeL/rougeLsum precision, recall and
//!   F-measure, single-reference (`score`) and two-reference
//!   (`score_multi`), with and without stemming, for rouge-score's tokenizer
//!   and (pairs with CJK text) for our CJK tokenizer, which the references
//!   feed to rouge-score as a tokenizer object;
//! - the same for multi-sentence documents (rougeLsum's union LCS);
//! - the corpus means (numpy's `np.mean` of the per-pair scores);
//! - the token lists of tricky strings, and nltk's stem of 4,000+ words.
//!
//! Scores must be within `1e-9` of the reference; tokens and stems must be
//! identical. A failure lists the first mismatches. (The scores are in fact
//! bit-identical — a repr-for-repr comparison of all pairs agreed — but
//! serde_json's default float parser is not correctly rounded, so the last
//! bit of a parsed reference can be off.)

mod common;

use common::{Mismatches, Pair, load_json, load_pairs, strings};
use kaiyuan_metrics::MetricsError;
use kaiyuan_metrics::porter;
use kaiyuan_metrics::rouge::{
    RougeOptions, RougeScorer, RougeScores, RougeTokenizer, RougeType, tokenize,
};
use serde_json::Value;
use std::collections::HashMap;

fn read_json(name: &str) -> Value {
    load_json(&format!("fixtures/eval/rouge/{name}"))
}

/// The text pairs by id.
fn pairs() -> HashMap<u64, Pair> {
    load_pairs().into_iter().map(|p| (p.id, p)).collect()
}

const TYPES: [RougeType; 4] = [
    RougeType::N(1),
    RougeType::N(2),
    RougeType::L,
    RougeType::LSum,
];

/// The four scorers of the references, keyed `"default"/"cjk"`,
/// `"nostem"/"stem"`.
fn scorers() -> HashMap<(String, String), RougeScorer> {
    let mut out = HashMap::new();
    for (tok, tokenizer) in [
        ("default", RougeTokenizer::Default),
        ("cjk", RougeTokenizer::Cjk),
    ] {
        for (stem, use_stemmer) in [("nostem", false), ("stem", true)] {
            let options = RougeOptions {
                types: TYPES.to_vec(),
                use_stemmer,
                tokenizer,
                split_summaries: false,
            };
            let scorer = RougeScorer::new(options).expect("valid options");
            out.insert((tok.to_string(), stem.to_string()), scorer);
        }
    }
    out
}

/// Compares scores with `expected`, `[[P, R, F]; 4]` in the order of
/// [`TYPES`].
fn check_scores(m: &mut Mismatches, what: &str, got: &RougeScores, expected: &Value) {
    for (i, t) in TYPES.iter().enumerate() {
        let s = got.get(*t).expect("requested type");
        for (j, (name, value)) in [
            ("precision", s.precision),
            ("recall", s.recall),
            ("fmeasure", s.fmeasure),
        ]
        .into_iter()
        .enumerate()
        {
            let exp = expected[i][j].as_f64().expect("number");
            m.float(|| format!("{what} {t} {name}"), value, exp);
        }
    }
}

/// Scores `hyp` against `refs` with every scorer the item has references
/// for, and compares.
fn check_item(
    label: &str,
    item: &Value,
    hyp: &str,
    refs: &[String],
    scorers: &mut HashMap<(String, String), RougeScorer>,
    m: &mut Mismatches,
) {
    for tok in ["default", "cjk"] {
        let Some(by_stem) = item.get(tok) else {
            continue;
        };
        for stem in ["nostem", "stem"] {
            let scorer = scorers
                .get_mut(&(tok.to_string(), stem.to_string()))
                .expect("scorer");
            let expected = &by_stem[stem];
            let single = scorer.score(&refs[0], hyp);
            let what = format!("{label} {tok}/{stem}");
            check_scores(m, &format!("{what} single"), &single, &expected["single"]);
            let multi = scorer.score_multi(refs, hyp).expect("two targets");
            check_scores(m, &format!("{what} multi"), &multi, &expected["multi"]);
        }
    }
}

/// [`check_item`] for items that hold their own `hyp` and `refs`.
fn check_own_items(
    what: &str,
    items: &Value,
    scorers: &mut HashMap<(String, String), RougeScorer>,
    m: &mut Mismatches,
) {
    for (i, item) in items.as_array().expect(what).iter().enumerate() {
        let hyp = item["hyp"].as_str().expect("hyp");
        let refs = strings(&item["refs"]);
        check_item(&format!("{what} {i}"), item, hyp, &refs, scorers, m);
    }
}

#[test]
fn pairs_match_rouge_score() {
    let reference = read_json("rouge_pairs.json");
    let pairs = pairs();
    let mut scorers = scorers();
    let mut m = Mismatches::new("rouge-score");
    let items = reference["items"].as_array().expect("items");
    assert_eq!(items.len(), pairs.len());
    for item in items {
        let id = item["id"].as_u64().expect("id");
        let pair = &pairs[&id];
        check_item(
            &format!("pair {id}"),
            item,
            &pair.hyp,
            &pair.refs,
            &mut scorers,
            &mut m,
        );
    }
    check_own_items(
        "tricky pair",
        &reference["meta"]["tricky_pairs"],
        &mut scorers,
        &mut m,
    );
    m.finish("rouge_pairs.json");
}

#[test]
fn documents_match_rouge_score() {
    let reference = read_json("rouge_docs.json");
    let mut m = Mismatches::new("rouge-score");
    check_own_items("document", &reference["items"], &mut scorers(), &mut m);
    m.finish("rouge_docs.json");
}

#[test]
fn corpus_means_match_numpy() {
    let reference = read_json("rouge_pairs.json");
    let pairs = pairs();
    let mut ids: Vec<u64> = pairs.keys().copied().collect();
    ids.sort_unstable();
    let targets: Vec<&str> = ids.iter().map(|id| pairs[id].refs[0].as_str()).collect();
    let predictions: Vec<&str> = ids.iter().map(|id| pairs[id].hyp.as_str()).collect();
    let mut m = Mismatches::new("rouge-score");
    for ((tok, stem), mut scorer) in scorers() {
        let corpus = scorer
            .score_corpus(&targets, &predictions)
            .expect("same lengths");
        assert_eq!(corpus.per_pair.len(), ids.len());
        let expected = &reference["meta"]["means"][format!("{tok}/{stem}")];
        check_scores(
            &mut m,
            &format!("mean {tok}/{stem}"),
            &corpus.mean,
            expected,
        );
    }
    m.finish("corpus means");
}

#[test]
fn tokens_match_rouge_score() {
    let reference = read_json("rouge_pairs.json");
    let mut m = Mismatches::new("rouge-score");
    let entries = reference["meta"]["tokens"].as_array().expect("tokens");
    for entry in entries {
        let text = entry["text"].as_str().expect("text");
        for (tok, tokenizer) in [
            ("default", RougeTokenizer::Default),
            ("cjk", RougeTokenizer::Cjk),
        ] {
            for (stem, use_stemmer) in [("nostem", false), ("stem", true)] {
                m.eq(
                    || format!("{text:?} {tok}/{stem}"),
                    tokenize(text, tokenizer, use_stemmer),
                    strings(&entry[format!("{tok}/{stem}")]),
                );
            }
        }
    }
    m.finish("token lists");
    assert!(entries.len() >= 20);
}

#[test]
fn stems_match_nltk() {
    let reference = read_json("porter_stems.json");
    let items = reference["items"].as_array().expect("items");
    let mut m = Mismatches::new("nltk");
    for item in items {
        let word = item[0].as_str().expect("word");
        let expected = item[1].as_str().expect("stem");
        m.eq(
            || format!("{word:?}"),
            porter::stem(word).as_str(),
            expected,
        );
    }
    m.finish("porter_stems.json");
    assert!(items.len() > 4000);
}

#[test]
fn chinese_scores_zero_with_the_default_tokenizer() {
    let mut scorer = RougeScorer::new(RougeOptions::default()).expect("defaults");
    let s = scorer.score("他山之石，可以攻玉。", "他山之石，可以攻玉。");
    assert!(s.iter().all(|(_, s)| s.fmeasure == 0.0), "{s:?}");
    let mut cjk = RougeScorer::new(RougeOptions {
        tokenizer: RougeTokenizer::Cjk,
        ..RougeOptions::default()
    })
    .expect("options");
    let s = cjk.score("他山之石，可以攻玉。", "他山之石，可以攻玉。");
    assert!(s.iter().all(|(_, s)| s.fmeasure == 1.0), "{s:?}");
}

#[test]
fn errors() {
    for bad in ["rouge10", "rougeLSUM", "bleu", "rouge0"] {
        let err = bad.parse::<RougeType>().unwrap_err();
        assert!(matches!(err, MetricsError::InvalidOption { .. }), "{bad}");
        assert!(err.to_string().contains("rouge"), "{err}");
    }
    let mut scorer = RougeScorer::new(RougeOptions::default()).expect("defaults");
    let err = scorer
        .score_multi(&[] as &[String], "prediction")
        .unwrap_err();
    assert!(matches!(err, MetricsError::InvalidInput { .. }), "{err}");
}
