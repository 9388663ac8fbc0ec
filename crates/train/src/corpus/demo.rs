//! The dataset of `cargo xtask demo`: the embedded corpus of this crate
//! turned into a small end-to-end benchmark, from raw text that needs
//! cleaning to an evaluation suite whose questions the model never read.
//!
//! [`DemoDataset::generate`] draws, from one [`DemoConfig`]:
//!
//! - **training documents**: the [`Corpus`] of the same seed (facts,
//!   stories, translation pairs, arithmetic), except that its question
//!   documents become short-answer drills, `Question: …` / `Answer: Velmora`
//!   (`问题：…` / `答案： 维尔莫拉`), in the layout the multiple-choice
//!   evaluator scores (a space before every answer);
//! - **dirty records** interleaved with them for the cleaning stage:
//!   planted PII (e-mail addresses, mainland mobile and North American
//!   phone numbers, PRC resident ID numbers with valid check characters,
//!   payment card numbers with valid Luhn digits, IPv4 addresses) inside
//!   sentences about the world, exact duplicates, near duplicates (a few
//!   words changed, word/character 5-gram Jaccard ≥ 0.92 with the original),
//!   boilerplate lines (cookie and privacy notices, "enable JavaScript",
//!   terms of use, lorem ipsum) and broken lines (not JSON, no `text`, a
//!   `text` that is not a string);
//! - **multiple-choice questions** about the same facts, asked with
//!   wordings that occur nowhere in the training text (see
//!   [`DemoQuestion`]), four choices of the answer's type each, the gold
//!   position balanced over `0..4`;
//! - **held-out translation pairs**: sentences drawn from the world like
//!   the training pairs, kept only when neither side occurs in any training
//!   record;
//! - **validation documents** for perplexity, from the corpus's validation
//!   stream, disjoint from the training documents as texts.
//!
//! [`DemoDataset::write`] lays it out as described in `docs/demo.md`:
//! `raw/corpus.jsonl`, `planted.json`, `pipeline.toml` (a cleaning recipe
//! that removes what was planted and keeps the clean documents),
//! `eval/{mc,translation,validation}.jsonl`, `eval/suite.toml` and
//! `manifest.json` (the config, the counts and the SHA-256 of every other
//! file). The same config always gives the same bytes.
//!
//! # Example
//!
//! ```
//! use kaiyuan_train::corpus::demo::{DemoConfig, DemoDataset};
//!
//! let config = DemoConfig { training_documents: 600, ..DemoConfig::quick() };
//! let demo = DemoDataset::generate(&config)?;
//! assert!(demo.questions().len() >= 200);
//! assert!(demo.questions().iter().all(|q| q.choices.len() == 4));
//!
//! let dir = std::env::temp_dir().join(format!("kaiyuan-demo-doc-{}", std::process::id()));
//! let manifest = demo.write(&dir)?;
//! assert_eq!(manifest.seed, 0);
//! assert!(manifest.files.contains_key("raw/corpus.jsonl"));
//! assert!(dir.join("eval/suite.toml").is_file());
//! std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), kaiyuan_train::TrainError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    Animal, Color, Corpus, CorpusConfig, Craft, Document, DocumentKind, DocumentMix, Entity, Fact,
    Language, MAX_DOCUMENTS, Relation, Rng, Weekday, World, WorldConfig, check_document_count,
    facts_document, pick_language, question_facts, render,
};
use crate::{Result, TrainError};

// ===========================================================================
// Configuration
// ===========================================================================

/// The version tag written into `manifest.json`.
pub const FORMAT: &str = "kaiyuan.demo/1";

/// Most multiple-choice questions a config may ask for (the default world
/// offers 312; smaller numbers are a deterministic sample).
pub const MAX_QUESTIONS: usize = 10_000;

/// Most held-out translation pairs a config may ask for.
pub const MAX_HELD_OUT: usize = 10_000;

/// How many dirty records of each kind to plant.
///
/// ```
/// use kaiyuan_train::corpus::demo::DemoConfig;
///
/// let dirty = DemoConfig::full().dirty;
/// assert!(dirty.pii_records > 0 && dirty.broken_lines > 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DirtyConfig {
    /// Records holding one or two planted PII values in a sentence about a
    /// person or town.
    pub pii_records: usize,
    /// Exact copies of training documents, each after its original.
    pub exact_duplicates: usize,
    /// Copies of long training documents with a few words changed, each
    /// after its original.
    pub near_duplicates: usize,
    /// Records that are all boilerplate (lorem ipsum, cookie banners) or a
    /// paragraph of facts with boilerplate lines around it, alternately.
    pub boilerplate_records: usize,
    /// Lines the reader must reject: truncated JSON, plain text, a record
    /// without `text`, with a number, `null` or a list as `text`.
    pub broken_lines: usize,
}

/// Everything that determines a [`DemoDataset`].
///
/// [`DemoConfig::full`] (the default) has the size `cargo xtask train`
/// uses (4,800 training documents and 160 validation documents);
/// [`DemoConfig::quick`] is small enough for cleaning, tokenizer training,
/// a short training run and the evaluation to fit in a minute or two.
///
/// ```
/// use kaiyuan_train::corpus::demo::DemoConfig;
///
/// assert_eq!(DemoConfig::default(), DemoConfig::full());
/// assert!(DemoConfig::quick().validate().is_ok());
/// assert!(DemoConfig { questions: 0, ..DemoConfig::quick() }.validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DemoConfig {
    /// Seed of the world and of every record.
    pub seed: u64,
    /// Clean training documents, `1..=MAX_DOCUMENTS`.
    pub training_documents: usize,
    /// Validation documents for perplexity, `1..=MAX_DOCUMENTS`.
    pub validation_documents: usize,
    /// Multiple-choice questions, `1..=MAX_QUESTIONS` and at most what the
    /// world offers (312 for the default world).
    pub questions: usize,
    /// Held-out translation pairs, `1..=MAX_HELD_OUT`.
    pub held_out_translations: usize,
    /// The dirty records to plant.
    pub dirty: DirtyConfig,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self::full()
    }
}

impl DemoConfig {
    /// The full demo: 4,800 training documents (the default corpus size),
    /// 160 validation documents, 240 questions, 200 held-out pairs and 404
    /// dirty lines.
    ///
    /// ```
    /// use kaiyuan_train::corpus::demo::DemoConfig;
    ///
    /// assert_eq!(DemoConfig::full().training_documents, 4_800);
    /// ```
    pub fn full() -> Self {
        Self {
            seed: 0,
            training_documents: 4_800,
            validation_documents: 160,
            questions: 240,
            held_out_translations: 200,
            dirty: DirtyConfig {
                pii_records: 120,
                exact_duplicates: 100,
                near_duplicates: 100,
                boilerplate_records: 60,
                broken_lines: 24,
            },
        }
    }

    /// The quick demo: 2,000 training documents, 60 validation documents,
    /// 200 questions, 100 held-out pairs and 156 dirty lines.
    ///
    /// ```
    /// use kaiyuan_train::corpus::demo::DemoConfig;
    ///
    /// assert!(DemoConfig::quick().training_documents < DemoConfig::full().training_documents);
    /// ```
    pub fn quick() -> Self {
        Self {
            seed: 0,
            training_documents: 2_000,
            validation_documents: 60,
            questions: 200,
            held_out_translations: 100,
            dirty: DirtyConfig {
                pii_records: 48,
                exact_duplicates: 36,
                near_duplicates: 36,
                boilerplate_records: 24,
                broken_lines: 12,
            },
        }
    }

    /// Checks every count against its documented range (the number of
    /// questions the world offers is checked by [`DemoDataset::generate`]).
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidArgument`] naming the first field out of range.
    ///
    /// ```
    /// use kaiyuan_train::corpus::demo::DemoConfig;
    ///
    /// let mut config = DemoConfig::quick();
    /// config.dirty.exact_duplicates = config.training_documents;
    /// assert!(config.validate().is_err()); // copies need distinct originals
    /// ```
    pub fn validate(&self) -> Result<()> {
        check_document_count("training_documents", self.training_documents)?;
        check_document_count("validation_documents", self.validation_documents)?;
        if !(1..=MAX_QUESTIONS).contains(&self.questions) {
            return Err(TrainError::invalid(
                "questions",
                format!("{} is outside 1..={MAX_QUESTIONS}", self.questions),
            ));
        }
        if !(1..=MAX_HELD_OUT).contains(&self.held_out_translations) {
            return Err(TrainError::invalid(
                "held_out_translations",
                format!(
                    "{} is outside 1..={MAX_HELD_OUT}",
                    self.held_out_translations
                ),
            ));
        }
        let d = &self.dirty;
        let copies = d.exact_duplicates.saturating_add(d.near_duplicates);
        if copies > self.training_documents {
            return Err(TrainError::invalid(
                "dirty.exact_duplicates",
                format!(
                    "{copies} exact and near duplicates need as many distinct originals, \
                     but there are {} training documents",
                    self.training_documents
                ),
            ));
        }
        for (what, n) in [
            ("dirty.pii_records", d.pii_records),
            ("dirty.boilerplate_records", d.boilerplate_records),
            ("dirty.broken_lines", d.broken_lines),
        ] {
            if n > MAX_DOCUMENTS {
                return Err(TrainError::invalid(
                    what,
                    format!("{n} is outside 0..={MAX_DOCUMENTS}"),
                ));
            }
        }
        Ok(())
    }

    fn corpus(&self, documents: usize) -> CorpusConfig {
        CorpusConfig {
            seed: self.seed,
            documents,
            world: WorldConfig::default(),
            // More drills than the corpus's default (10 %): the questions
            // of the evaluation are about these facts.
            mix: DocumentMix {
                facts: 20,
                stories: 10,
                translations: 20,
                arithmetic: 15,
                questions: 35,
            },
        }
    }
}

// ===========================================================================
// Streams and text helpers
// ===========================================================================

const STREAM_DRILL: u64 = 0x0044_5249_4C4C; // "DRILL"
const STREAM_DRILL_VALIDATION: u64 = 0x0044_5256_414C; // "DRVAL"
const STREAM_HELD_OUT: u64 = 0x0048_454C_4454; // "HELDT"
const STREAM_QUESTIONS: u64 = 0x0051_5545_5354; // "QUEST"
const STREAM_PII: u64 = 0x0050_4949_5049; // "PIIPI"
const STREAM_COPIES: u64 = 0x0043_4F50_5953; // "COPYS"
const STREAM_BOILERPLATE: u64 = 0x0042_4F49_4C52; // "BOILR"
const STREAM_BROKEN: u64 = 0x0042_524F_4B4E; // "BROKN"
const STREAM_LAYOUT: u64 = 0x004C_4159_4F55; // "LAYOU"

/// True for a character that is a token on its own: CJK ideographs.
fn is_ideograph(c: char) -> bool {
    matches!(c, '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}' | '\u{F900}'..='\u{FAFF}')
}

/// The byte spans of the tokens of `text`, as the cleaner's MinHash sees
/// them: each CJK ideograph alone, and maximal runs of other letters and
/// digits; punctuation and spaces separate tokens.
fn token_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if is_ideograph(c) {
            if let Some(s) = start.take() {
                spans.push((s, i));
            }
            spans.push((i, i + c.len_utf8()));
        } else if c.is_alphanumeric() {
            start.get_or_insert(i);
        } else if let Some(s) = start.take() {
            spans.push((s, i));
        }
    }
    if let Some(s) = start {
        spans.push((s, text.len()));
    }
    spans
}

/// The lower-cased tokens of `text` (see [`token_spans`]).
fn tokens(text: &str) -> Vec<String> {
    token_spans(text)
        .into_iter()
        .map(|(a, b)| text[a..b].to_lowercase())
        .collect()
}

/// FNV-1a over the tokens of one n-gram, with a separator between tokens.
fn gram_hash(gram: &[String]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for token in gram {
        for b in token.bytes().chain(std::iter::once(0xFF)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    h
}

/// The set of `n`-token shingles of `text`; a text with fewer tokens has one
/// shingle of all of them.
fn shingles(text: &str, n: usize) -> HashSet<u64> {
    let t = tokens(text);
    if t.is_empty() {
        return HashSet::new();
    }
    if t.len() < n {
        return std::iter::once(gram_hash(&t)).collect();
    }
    t.windows(n).map(gram_hash).collect()
}

/// Jaccard similarity of the 5-token shingle sets of two texts.
fn jaccard5(a: &str, b: &str) -> f64 {
    let (a, b) = (shingles(a, 5), shingles(b, 5));
    let union = a.union(&b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(&b).count() as f64 / union as f64
}

fn json_line(value: &impl Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| TrainError::invalid("json", e.to_string()))
}

// ===========================================================================
// Training documents: the corpus with short-answer drills
// ===========================================================================

/// `Question: Where does Ardo live?` / `Answer: Velmora` pairs (Chinese
/// `问题：…` / `答案： 维尔莫拉`), each fact asked in one of the drill
/// wordings ([`drill_question`]); the evaluation asks with another ([`ask`]).
fn drill_document(world: &World, rng: &mut Rng) -> (Language, String) {
    let language = pick_language(rng);
    let facts = question_facts(world, rng);
    let wordings: Vec<(String, String)> = facts
        .iter()
        .map(|f| drill_question(f, rng.below(DRILL_WORDINGS)))
        .collect();
    let en: Vec<String> = facts
        .iter()
        .zip(&wordings)
        .map(|(f, (q, _))| format!("Question: {q}\nAnswer: {}", f.english.answer))
        .collect();
    let zh: Vec<String> = facts
        .iter()
        .zip(&wordings)
        .map(|(f, (_, q))| format!("问题：{q}\n答案： {}", f.chinese.answer))
        .collect();
    let text = super::Bilingual {
        en: en.join("\n"),
        zh: zh.join("\n"),
    };
    (language, render(text, language))
}

/// Wordings a drill asks a fact with: the fact's own question and two
/// paraphrases ([`drill_question`]). Seeing each relation asked several
/// ways is what lets a small model answer the evaluation's wording
/// ([`ask`]), which is none of these.
const DRILL_WORDINGS: usize = 3;

/// The English and Chinese question of `fact` in drill wording `variant`
/// (`0..DRILL_WORDINGS`; 0 is the fact's own question).
fn drill_question(fact: &Fact, variant: usize) -> (String, String) {
    if variant == 0 {
        return (fact.english.question.clone(), fact.chinese.question.clone());
    }
    let (s, z) = (&fact.subject.english, &fact.subject.chinese);
    let second = variant == 1;
    let (en, zh) = match fact.relation {
        Relation::TownRiver if second => (
            format!("Which river flows past {s}?"),
            format!("哪条河流经{z}镇？"),
        ),
        Relation::TownRiver => (
            format!("What river is {s} on?"),
            format!("{z}镇位于哪条河上？"),
        ),
        Relation::TownCraft if second => (
            format!("What craft is {s} known for?"),
            format!("{z}镇有什么手艺？"),
        ),
        Relation::TownCraft => (
            format!("What do the people of {s} make?"),
            format!("{z}镇人擅长做什么？"),
        ),
        Relation::TownMarket if second => (
            format!("When is the market in {s}?"),
            format!("{z}镇星期几赶集？"),
        ),
        Relation::TownMarket => (
            format!("Which day is market day in {s}?"),
            format!("{z}的集市在星期几？"),
        ),
        Relation::TownEmblem if second => (
            format!("What animal is the emblem of {s}?"),
            format!("{z}镇用什么动物作徽记？"),
        ),
        Relation::TownEmblem => (
            format!("Which animal stands for {s}?"),
            format!("哪种动物代表{z}镇？"),
        ),
        Relation::RiverLength if second => (
            format!("What is the length of the river {s}?"),
            format!("{z}河的长度是多少？"),
        ),
        Relation::RiverLength => (
            format!("How many kilometres long is the river {s}?"),
            format!("{z}河一共有多少公里长？"),
        ),
        Relation::RiverMouth if second => (
            format!("Where does the river {s} end?"),
            format!("{z}河最后流到哪里？"),
        ),
        Relation::RiverMouth => (
            format!("Into what does the river {s} flow?"),
            format!("{z}河注入哪里？"),
        ),
        Relation::PersonHome if second => (
            format!("Which town is {s} from?"),
            format!("{z}是哪个镇的人？"),
        ),
        Relation::PersonHome => (
            format!("Where is {s}'s home?"),
            format!("{z}住在哪个地方？"),
        ),
        Relation::PersonCraft if second => {
            (format!("What is {s}'s job?"), format!("{z}的工作是什么？"))
        }
        Relation::PersonCraft => (format!("What work does {s} do?"), format!("{z}干哪一行？")),
        Relation::PersonAge if second => {
            (format!("What is the age of {s}?"), format!("{z}多大年纪？"))
        }
        Relation::PersonAge => (
            format!("How many years old is {s}?"),
            format!("{z}今年几岁？"),
        ),
        Relation::PersonPet if second => (
            format!("What pet does {s} keep?"),
            format!("{z}养的宠物是什么？"),
        ),
        Relation::PersonPet => (
            format!("Which animal lives with {s}?"),
            format!("{z}家养了什么？"),
        ),
        Relation::PersonFriend if second => (
            format!("Who is the best friend of {s}?"),
            format!("{z}的好朋友是谁？"),
        ),
        Relation::PersonFriend => (
            format!("Whom is {s} best friends with?"),
            format!("谁和{z}是最好的朋友？"),
        ),
    };
    (en, zh)
}

/// Replaces every question document of `documents` by a drill from
/// `stream` (item `index` of the stream for document `index`).
fn with_drills(world: &World, seed: u64, stream: u64, documents: &mut [Document]) {
    for (index, document) in documents.iter_mut().enumerate() {
        if document.kind == DocumentKind::Questions {
            let mut rng = Rng::derive(seed, stream, index as u64);
            let (language, text) = drill_document(world, &mut rng);
            document.language = language;
            document.text = text;
        }
    }
}

// ===========================================================================
// Multiple-choice questions
// ===========================================================================

/// One four-way multiple-choice question about a fact of the world.
///
/// The evaluator (generic layout) scores each continuation `" " + choice`
/// after `context`, so the model is asked for the answer text itself.
/// `question` is worded differently from anything in the training records:
/// none of its token 8-grams (word 8-grams in English, character 8-grams in
/// Chinese; the whole question when it is shorter) occurs in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoQuestion {
    /// `mc-0001`, in file order.
    pub id: String,
    /// What the question asks.
    pub relation: Relation,
    /// [`Language::English`] or [`Language::Chinese`].
    pub language: Language,
    /// The bare question: `In which town does Ardo live?`
    pub question: String,
    /// What the model reads: `Question: {question}\nAnswer:` or
    /// `问题：{question}\n答案：`.
    pub context: String,
    /// Four distinct answers of the same type (towns, crafts, nearby
    /// numbers…).
    pub choices: Vec<String>,
    /// Index of the fact's answer in `choices`.
    pub gold: usize,
}

/// The snake_case name of a relation, the `subject` of a question.
fn relation_name(relation: Relation) -> &'static str {
    match relation {
        Relation::TownRiver => "town_river",
        Relation::TownCraft => "town_craft",
        Relation::TownMarket => "town_market",
        Relation::TownEmblem => "town_emblem",
        Relation::RiverLength => "river_length",
        Relation::RiverMouth => "river_mouth",
        Relation::PersonHome => "person_home",
        Relation::PersonCraft => "person_craft",
        Relation::PersonAge => "person_age",
        Relation::PersonPet => "person_pet",
        Relation::PersonFriend => "person_friend",
    }
}

/// The evaluation wording of a question about `fact`, English and Chinese.
/// `None` for a relation not asked (a river's mouth has too few
/// alternatives for four choices).
fn ask(fact: &Fact) -> Option<(String, String)> {
    let (s, z) = (&fact.subject.english, &fact.subject.chinese);
    Some(match fact.relation {
        Relation::TownRiver => (
            format!("On which river is the town of {s}?"),
            format!("{z}镇在哪条河边？"),
        ),
        Relation::TownCraft => (
            format!("What is the town of {s} famous for?"),
            format!("{z}镇以什么出名？"),
        ),
        Relation::TownMarket => (
            format!("On which day is the market held in {s}?"),
            format!("{z}镇哪天有集市？"),
        ),
        Relation::TownEmblem => (
            format!("Which animal is on the emblem of {s}?"),
            format!("{z}镇的徽记上画着什么动物？"),
        ),
        Relation::RiverLength => (
            format!("How many kilometres does the river {s} run?"),
            format!("{z}河全长多少公里？"),
        ),
        Relation::RiverMouth => return None,
        Relation::PersonHome => (
            format!("In which town does {s} live?"),
            format!("{z}的家在哪个镇？"),
        ),
        Relation::PersonCraft => (format!("What is {s}'s trade?"), format!("{z}从事哪一行？")),
        Relation::PersonAge => (format!("What age is {s}?"), format!("{z}几岁了？")),
        Relation::PersonPet => (
            format!("Which pet does {s} have?"),
            format!("{z}家里养的是什么宠物？"),
        ),
        Relation::PersonFriend => (
            format!("Who is the closest friend of {s}?"),
            format!("谁是{z}最要好的朋友？"),
        ),
    })
}

/// Every answer of the same type as the answer of `fact` (the answer
/// included), in one language: towns for a town, crafts for a craft,
/// numbers within a dozen (ages) or a hundred kilometres (lengths).
fn answer_pool(world: &World, fact: &Fact, chinese: bool) -> Vec<String> {
    let pick = |en: &str, zh: &str| {
        if chinese {
            zh.to_owned()
        } else {
            en.to_owned()
        }
    };
    let answer: u32 = fact.english.answer.parse().unwrap_or(0);
    match fact.relation {
        Relation::TownRiver => world
            .rivers()
            .iter()
            .map(|r| pick(&r.name.english, &r.name.chinese))
            .collect(),
        Relation::TownCraft => Craft::ALL
            .iter()
            .map(|c| pick(c.english(), c.chinese()))
            .collect(),
        Relation::TownMarket => Weekday::ALL
            .iter()
            .map(|d| pick(d.english(), d.chinese()))
            .collect(),
        Relation::TownEmblem => Animal::ALL
            .iter()
            .map(|a| pick(a.english(), a.chinese()))
            .collect(),
        Relation::RiverLength => (answer.saturating_sub(100).max(50)..=(answer + 100).min(800))
            .step_by(10)
            .map(|n| n.to_string())
            .collect(),
        Relation::RiverMouth => Vec::new(),
        Relation::PersonHome => world
            .towns()
            .iter()
            .map(|t| pick(&t.name.english, &t.name.chinese))
            .collect(),
        Relation::PersonCraft => Craft::ALL
            .iter()
            .map(|c| pick(c.worker_english(), c.worker_chinese()))
            .collect(),
        Relation::PersonAge => (answer.saturating_sub(12).max(18)..=(answer + 12).min(80))
            .map(|n| n.to_string())
            .collect(),
        Relation::PersonPet => Color::ALL
            .iter()
            .flat_map(|c| {
                Animal::ALL.iter().map(move |a| {
                    if chinese {
                        format!("{}的{}", c.chinese(), a.chinese())
                    } else {
                        format!("{} {}", c.english(), a.english())
                    }
                })
            })
            .collect(),
        Relation::PersonFriend => world
            .people()
            .iter()
            .map(|p| pick(&p.name.english, &p.name.chinese))
            .filter(|n| *n != pick(&fact.subject.english, &fact.subject.chinese))
            .collect(),
    }
}

/// All questions the world offers, then a sample of `count` in world order
/// with gold positions balanced over `0..4`.
fn questions(world: &World, seed: u64, count: usize) -> Result<Vec<DemoQuestion>> {
    struct Candidate<'w> {
        fact: &'w Fact,
        chinese: bool,
        question: String,
        pool: Vec<String>,
    }
    let mut candidates = Vec::new();
    for fact in world.facts() {
        let Some((en, zh)) = ask(fact) else {
            continue;
        };
        for (chinese, question) in [(false, en), (true, zh)] {
            let answer = if chinese {
                &fact.chinese.answer
            } else {
                &fact.english.answer
            };
            let mut pool: Vec<String> = answer_pool(world, fact, chinese)
                .into_iter()
                .filter(|c| c != answer)
                .collect::<BTreeSet<String>>()
                .into_iter()
                .collect();
            if pool.len() >= 3 {
                pool.insert(0, answer.clone());
                candidates.push(Candidate {
                    fact,
                    chinese,
                    question,
                    pool,
                });
            }
        }
    }
    if count > candidates.len() {
        return Err(TrainError::invalid(
            "questions",
            format!(
                "{count} questions asked for; the world offers {}",
                candidates.len()
            ),
        ));
    }
    let mut rng = Rng::derive(seed, STREAM_QUESTIONS, 0);
    let mut chosen: Vec<usize> = (0..candidates.len()).collect();
    rng.shuffle(&mut chosen);
    chosen.truncate(count);
    chosen.sort_unstable();
    let mut golds: Vec<usize> = (0..count).map(|i| i % 4).collect();
    rng.shuffle(&mut golds);
    let mut out = Vec::with_capacity(count);
    for (n, (&c, &gold)) in chosen.iter().zip(&golds).enumerate() {
        let candidate = &candidates[c];
        let mut others = candidate.pool[1..].to_vec();
        rng.shuffle(&mut others);
        others.truncate(3);
        others.insert(gold, candidate.pool[0].clone());
        let (language, context) = if candidate.chinese {
            (
                Language::Chinese,
                format!("问题：{}\n答案：", candidate.question),
            )
        } else {
            (
                Language::English,
                format!("Question: {}\nAnswer:", candidate.question),
            )
        };
        out.push(DemoQuestion {
            id: format!("mc-{:04}", n + 1),
            relation: candidate.fact.relation,
            language,
            question: candidate.question.clone(),
            context,
            choices: others,
            gold,
        });
    }
    Ok(out)
}

// ===========================================================================
// Held-out translation pairs
// ===========================================================================

/// Which way a held-out pair is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Direction {
    /// Prompt `English: {english}\n中文：`, reference the Chinese.
    #[serde(rename = "en-zh")]
    EnglishToChinese,
    /// Prompt `中文：{chinese}\nEnglish:`, reference the English.
    #[serde(rename = "zh-en")]
    ChineseToEnglish,
}

/// A sentence pair held out of training, asked in one direction in the
/// training corpus's translation format.
///
/// ```
/// use kaiyuan_train::corpus::demo::{DemoConfig, DemoDataset, Direction};
///
/// let demo = DemoDataset::generate(&DemoConfig { training_documents: 600, ..DemoConfig::quick() })?;
/// let pair = &demo.translations()[0];
/// assert_eq!(pair.direction, Direction::EnglishToChinese);
/// assert_eq!(pair.prompt(), format!("English: {}\n中文：", pair.english));
/// assert_eq!(pair.reference(), pair.chinese);
/// # Ok::<(), kaiyuan_train::TrainError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldOutPair {
    /// `tr-0001`, in file order.
    pub id: String,
    /// The English sentence.
    pub english: String,
    /// The Chinese sentence.
    pub chinese: String,
    /// Which side is the prompt (alternating, English to Chinese first).
    pub direction: Direction,
}

impl HeldOutPair {
    /// What the model is given: the source line and the target label, as
    /// translation documents write them.
    pub fn prompt(&self) -> String {
        match self.direction {
            Direction::EnglishToChinese => format!("English: {}\n中文：", self.english),
            Direction::ChineseToEnglish => format!("中文：{}\nEnglish:", self.chinese),
        }
    }

    /// The expected translation.
    pub fn reference(&self) -> &str {
        match self.direction {
            Direction::EnglishToChinese => &self.chinese,
            Direction::ChineseToEnglish => &self.english,
        }
    }
}

/// `count` event sentence pairs from their own stream, neither side of
/// which occurs in `haystack` (all training records), no two alike.
fn held_out_pairs(
    world: &World,
    seed: u64,
    count: usize,
    haystack: &str,
) -> Result<Vec<HeldOutPair>> {
    let mut out: Vec<HeldOutPair> = Vec::with_capacity(count);
    let mut seen = BTreeSet::new();
    let limit = count.saturating_mul(20).saturating_add(100);
    for index in 0..limit {
        if out.len() == count {
            break;
        }
        let mut rng = Rng::derive(seed, STREAM_HELD_OUT, index as u64);
        let pair = super::event(world, &mut rng);
        if haystack.contains(&pair.en)
            || haystack.contains(&pair.zh)
            || !seen.insert(pair.en.clone())
        {
            continue;
        }
        let n = out.len();
        out.push(HeldOutPair {
            id: format!("tr-{:04}", n + 1),
            english: pair.en,
            chinese: pair.zh,
            direction: if n.is_multiple_of(2) {
                Direction::EnglishToChinese
            } else {
                Direction::ChineseToEnglish
            },
        });
    }
    if out.len() < count {
        return Err(TrainError::invalid(
            "held_out_translations",
            format!(
                "only {} of {count} sentence pairs are absent from the training records",
                out.len()
            ),
        ));
    }
    Ok(out)
}

// ===========================================================================
// Dirty records
// ===========================================================================

/// A kind of planted personal data, named as the cleaner's PII stage names
/// what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    /// An e-mail address.
    Email,
    /// A mainland China mobile or a North American phone number.
    Phone,
    /// A PRC resident identity number (18 characters, valid check
    /// character).
    IdCn,
    /// A payment card number (known issuer prefix, valid Luhn digit).
    Card,
    /// An IPv4 address (never loopback or unspecified).
    Ip,
}

/// One planted PII value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlantedPii {
    /// The record id it is in.
    pub record: String,
    /// What it is.
    pub kind: PiiKind,
    /// How it is written: `email`, `cn_mobile`, `cn_mobile_spaced`,
    /// `cn_mobile_dashed`, `cn_mobile_plus86`, `nanp_parens`, `nanp_dashed`,
    /// `nanp_dotted`, `nanp_plus1`, `id_cn`, `card_visa`, `card_mastercard`,
    /// `card_unionpay` (with `_spaced`/`_dashed` when grouped), `ipv4`.
    pub format: String,
    /// The value exactly as it appears in the record's text.
    pub value: String,
}

/// A planted exact duplicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlantedCopy {
    /// The copy's record id (it comes after the original).
    pub record: String,
    /// The original's record id.
    pub original: String,
}

/// A planted near duplicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlantedNearCopy {
    /// The copy's record id (it comes after the original).
    pub record: String,
    /// The original's record id.
    pub original: String,
    /// How many tokens were replaced.
    pub changed_tokens: usize,
    /// Jaccard similarity of the 5-token shingle sets (at least 0.92).
    pub jaccard: f64,
}

/// A record with planted boilerplate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlantedBoilerplate {
    /// The record id.
    pub record: String,
    /// True when the record is nothing but boilerplate (it holds lorem
    /// ipsum, so C4's rule drops it whole); false for a paragraph of facts
    /// with boilerplate lines around it.
    pub whole_record: bool,
    /// The boilerplate lines, exactly as in the text.
    pub lines: Vec<String>,
}

/// What is wrong with a broken line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokenKind {
    /// A JSON object cut off in the middle.
    TruncatedJson,
    /// A line of plain text.
    NotJson,
    /// A JSON object without a `text` field.
    MissingText,
    /// `text` is a number.
    NumberText,
    /// `text` is `null`.
    NullText,
    /// `text` is a list of strings.
    ListText,
}

impl BrokenKind {
    const ALL: [BrokenKind; 6] = [
        BrokenKind::TruncatedJson,
        BrokenKind::NotJson,
        BrokenKind::MissingText,
        BrokenKind::NumberText,
        BrokenKind::NullText,
        BrokenKind::ListText,
    ];
}

/// A planted broken line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlantedBroken {
    /// 1-based line number in `raw/corpus.jsonl`.
    pub line: usize,
    /// The id the line would have had (it is in the line where the line
    /// is JSON that names one).
    pub record: String,
    /// What is wrong with it.
    pub problem: BrokenKind,
}

/// Everything planted for the cleaning stage, as `planted.json` holds it;
/// every list is in file order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Planted {
    /// Planted PII values.
    pub pii: Vec<PlantedPii>,
    /// Exact duplicates and their originals.
    pub exact_duplicates: Vec<PlantedCopy>,
    /// Near duplicates and their originals.
    pub near_duplicates: Vec<PlantedNearCopy>,
    /// Records with boilerplate.
    pub boilerplate: Vec<PlantedBoilerplate>,
    /// Broken lines.
    pub broken: Vec<PlantedBroken>,
}

/// Mainland mobile prefixes the cleaner knows as assigned.
const MOBILE_PREFIXES: [u32; 16] = [
    130, 133, 135, 136, 138, 139, 150, 151, 153, 158, 159, 177, 180, 186, 188, 199,
];
/// Province codes of PRC resident ID numbers.
const PROVINCES: [u32; 14] = [11, 12, 31, 32, 33, 35, 37, 41, 42, 44, 50, 51, 53, 61];
const EMAIL_DOMAINS: [&str; 4] = [
    "example.com",
    "mail.example.org",
    "post.example.net",
    "inbox.example.cn",
];

fn digits(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.below(10) as u8))
        .collect()
}

/// The Luhn check digit for `payload` (ASCII digits).
fn luhn_digit(payload: &str) -> char {
    let sum: u32 = payload
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let d2 = d * 2;
                if d2 > 9 { d2 - 9 } else { d2 }
            } else {
                d
            }
        })
        .sum();
    char::from(b'0' + ((10 - sum % 10) % 10) as u8)
}

/// The ISO 7064 MOD 11-2 check character of 17 ASCII digits.
fn ric_check(first17: &str) -> char {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17
        .bytes()
        .zip(WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    match (12 - sum % 11) % 11 {
        10 => 'X',
        c => char::from(b'0' + c as u8),
    }
}

/// Four-digit groups joined by `sep`.
fn grouped(number: &str, sep: &str) -> String {
    number
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(sep)
}

/// A fresh value of `kind`: `(format, value)`.
fn pii_value(kind: PiiKind, rng: &mut Rng, person: &str, town: &str) -> (String, String) {
    match kind {
        PiiKind::Email => {
            let local = format!(
                "{}.{}{}",
                person.to_lowercase(),
                town.to_lowercase(),
                rng.range(1, 99)
            );
            (
                "email".into(),
                format!("{local}@{}", rng.pick(&EMAIL_DOMAINS)),
            )
        }
        PiiKind::Phone if rng.percent(50) => {
            let number = format!("{}{}", rng.pick(&MOBILE_PREFIXES), digits(rng, 8));
            let (a, b, c) = (&number[..3], &number[3..7], &number[7..]);
            match rng.below(4) {
                0 => ("cn_mobile".into(), number.clone()),
                1 => ("cn_mobile_spaced".into(), format!("{a} {b} {c}")),
                2 => ("cn_mobile_dashed".into(), format!("{a}-{b}-{c}")),
                _ => ("cn_mobile_plus86".into(), format!("+86 {number}")),
            }
        }
        PiiKind::Phone => {
            let area = format!("{}{}", rng.range(2, 9), digits(rng, 2));
            let exchange = format!("{}{}", rng.range(2, 9), digits(rng, 2));
            let line = digits(rng, 4);
            match rng.below(4) {
                0 => ("nanp_parens".into(), format!("({area}) {exchange}-{line}")),
                1 => ("nanp_dashed".into(), format!("{area}-{exchange}-{line}")),
                2 => ("nanp_dotted".into(), format!("{area}.{exchange}.{line}")),
                _ => ("nanp_plus1".into(), format!("+1 {area} {exchange} {line}")),
            }
        }
        PiiKind::IdCn => {
            let year = rng.range(1950, 2005);
            let first17 = format!(
                "{}{}{year}{:02}{:02}{}",
                rng.pick(&PROVINCES),
                digits(rng, 4),
                rng.range(1, 12),
                rng.range(1, 28),
                digits(rng, 3)
            );
            let check = ric_check(&first17);
            ("id_cn".into(), format!("{first17}{check}"))
        }
        PiiKind::Card => {
            let (brand, payload) = match rng.below(3) {
                0 => ("visa", format!("4{}", digits(rng, 14))),
                1 => (
                    "mastercard",
                    format!("5{}{}", rng.range(1, 5), digits(rng, 13)),
                ),
                _ => ("unionpay", format!("62{}", digits(rng, 13))),
            };
            let number = format!("{payload}{}", luhn_digit(&payload));
            match rng.below(3) {
                0 => (format!("card_{brand}"), number),
                1 => (format!("card_{brand}_spaced"), grouped(&number, " ")),
                _ => (format!("card_{brand}_dashed"), grouped(&number, "-")),
            }
        }
        PiiKind::Ip => {
            let mut a = rng.range(11, 223);
            if a == 127 {
                a = 128;
            }
            (
                "ipv4".into(),
                format!(
                    "{a}.{}.{}.{}",
                    rng.range(0, 255),
                    rng.range(0, 255),
                    rng.range(1, 254)
                ),
            )
        }
    }
}

/// A sentence about person `pi` that carries `value`.
fn pii_sentence(
    world: &World,
    pi: usize,
    kind: PiiKind,
    format: &str,
    value: &str,
    chinese: bool,
) -> String {
    let p = &world.people()[pi];
    let (pn, pz) = (&p.name.english, &p.name.chinese);
    let town = &world.towns()[p.home];
    let (t, tz) = (&town.name.english, &town.name.chinese);
    let words = p.craft.words();
    match (kind, chinese) {
        (PiiKind::Email, false) => {
            format!("To buy {} from {pn}, write to {value}.", words.items_en)
        }
        (PiiKind::Email, true) => format!("想买{pz}的{}，可以写信到{value}。", words.item_zh),
        (PiiKind::Phone, false) if format.starts_with("nanp") => {
            format!("{pn}'s cousin abroad can be reached at {value}.")
        }
        (PiiKind::Phone, true) if format.starts_with("nanp") => {
            format!("{pz}在海外的表亲的电话是{value}。")
        }
        (PiiKind::Phone, false) => format!("You can call {pn} on {value} after the market closes."),
        (PiiKind::Phone, true) => format!("{pz}的电话是{value}，集市散了以后可以打。"),
        (PiiKind::IdCn, false) => format!("{pn}'s ID number is {value}."),
        (PiiKind::IdCn, true) => format!("{pz}的身份证号是{value}。"),
        (PiiKind::Card, false) => format!("{pn} paid for a new boat with card {value}."),
        (PiiKind::Card, true) => format!("{pz}用银行卡{value}付了新船的钱。"),
        (PiiKind::Ip, false) => format!(
            "The notice board of {t} was last updated from {value} on {}.",
            town.market_day.english()
        ),
        (PiiKind::Ip, true) => format!("{tz}的公告栏上次是从{value}更新的。"),
    }
}

/// Kinds in the order records cycle through them (phones twice: mainland
/// and North American formats are drawn half and half).
const PII_CYCLE: [PiiKind; 6] = [
    PiiKind::Email,
    PiiKind::Phone,
    PiiKind::IdCn,
    PiiKind::Card,
    PiiKind::Ip,
    PiiKind::Phone,
];

/// PII record `index`: a few facts about a person, then one or two
/// sentences carrying planted values. Returns the text and the values.
fn pii_record(world: &World, seed: u64, index: usize) -> (String, Vec<(PiiKind, String, String)>) {
    let mut rng = Rng::derive(seed, STREAM_PII, index as u64);
    let chinese = rng.percent(50);
    let pi = rng.below(world.people().len());
    let mut facts: Vec<&Fact> = world.facts_of(Entity::Person(pi)).iter().collect();
    rng.shuffle(&mut facts);
    facts.truncate(2 + rng.below(2));
    let mut sentences: Vec<String> = facts
        .iter()
        .map(|f| {
            if chinese {
                f.chinese.text.clone()
            } else {
                f.english.text.clone()
            }
        })
        .collect();
    let mut kinds = vec![PII_CYCLE[index % PII_CYCLE.len()]];
    if rng.percent(40) {
        kinds.push(rng.pick(&PII_CYCLE));
    }
    let person = &world.people()[pi];
    let town = &world.towns()[person.home].name.english;
    let mut values = Vec::new();
    for kind in kinds {
        let (format, value) = pii_value(kind, &mut rng, &person.name.english, town);
        sentences.push(pii_sentence(world, pi, kind, &format, &value, chinese));
        values.push((kind, format, value));
    }
    let text = if chinese {
        sentences.concat()
    } else {
        sentences.join(" ")
    };
    (text, values)
}

const BOILERPLATE_EN: [&str; 5] = [
    "This site uses cookies to improve your experience. By continuing to browse, you agree to our cookie policy.",
    "Please enable JavaScript in your browser to see the rest of this page.",
    "By using this site you accept our terms of use and privacy policy.",
    "Copyright 2026 River Towns Notice Board. All rights reserved. Terms of use.",
    "We use cookies to remember your settings. Read our privacy policy to learn more.",
];
const BOILERPLATE_ZH: [&str; 3] = [
    "本网站使用Cookie来改善您的体验，继续浏览即表示您同意我们的隐私政策。",
    "请在浏览器中启用JavaScript以查看本页的其余内容。",
    "使用本网站即表示您接受我们的使用条款。",
];
const LOREM: [&str; 3] = [
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.",
    "Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat.",
    "Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur.",
];

/// Boilerplate record `index`: even ones are all boilerplate (with lorem
/// ipsum), odd ones a paragraph of facts with a notice line before and
/// after. Returns the text, whether it is all boilerplate, and the
/// boilerplate lines.
fn boilerplate_record(world: &World, seed: u64, index: usize) -> (String, bool, Vec<String>) {
    let mut rng = Rng::derive(seed, STREAM_BOILERPLATE, index as u64);
    if index.is_multiple_of(2) {
        let mut lines = vec![rng.pick(&BOILERPLATE_EN).to_owned()];
        let lorem = 1 + rng.below(LOREM.len());
        lines.extend(LOREM.iter().take(lorem).map(|s| (*s).to_owned()));
        if rng.percent(50) {
            lines.push(rng.pick(&BOILERPLATE_ZH).to_owned());
        }
        (lines.join("\n"), true, lines)
    } else {
        let (language, body) = facts_document(world, &mut rng);
        let table: &[&str] = if language == Language::Chinese {
            &BOILERPLATE_ZH
        } else {
            &BOILERPLATE_EN
        };
        let before = table[rng.below(table.len())].to_owned();
        let after = table[rng.below(table.len())].to_owned();
        let text = format!("{before}\n{body}\n{after}");
        (text, false, vec![before, after])
    }
}

/// Least 5-gram Jaccard similarity of a near duplicate to its original:
/// clearly above the 0.9 the issue asks for and the cleaner's 0.8.
const NEAR_JACCARD: f64 = 0.92;

/// Words a near duplicate may put in place of a word (English) and
/// characters in place of a character (Chinese).
const SWAP_WORDS: [&str; 8] = [
    "quietly", "often", "slowly", "gladly", "early", "later", "again", "together",
];
const SWAP_CHARS: [char; 8] = ['也', '又', '很', '都', '还', '就', '才', '再'];

/// `text` with up to `changes` tokens (a Chinese character or an English
/// word of three letters or more) replaced, away from the ends, and how
/// many were; `None` when the text has too few tokens or none to replace.
fn near_copy(text: &str, changes: usize, rng: &mut Rng) -> Option<(String, usize)> {
    let spans = token_spans(text);
    if spans.len() < 20 {
        return None;
    }
    let replaceable = |(a, b): (usize, usize)| {
        let token = &text[a..b];
        token.chars().all(is_ideograph)
            || (token.len() >= 3 && token.bytes().all(|c| c.is_ascii_alphabetic()))
    };
    // Distinct positions, spread out so each change costs at most five
    // shingles of its own.
    let mut positions: BTreeSet<usize> = BTreeSet::new();
    let mut attempts = 0;
    while positions.len() < changes && attempts < 200 {
        attempts += 1;
        let p = 5 + rng.below(spans.len() - 10);
        if replaceable(spans[p]) && positions.iter().all(|&q| p.abs_diff(q) >= 5) {
            positions.insert(p);
        }
    }
    if positions.is_empty() {
        return None;
    }
    let mut out = text.to_owned();
    for &p in positions.iter().rev() {
        let (a, b) = spans[p];
        let old = &text[a..b];
        let new = if old.chars().next().is_some_and(is_ideograph) {
            let mut c = rng.pick(&SWAP_CHARS);
            if old.starts_with(c) {
                c = SWAP_CHARS[(SWAP_CHARS.iter().position(|&x| x == c).unwrap_or(0) + 1) % 8];
            }
            c.to_string()
        } else {
            let mut w = rng.pick(&SWAP_WORDS);
            if old.eq_ignore_ascii_case(w) {
                w = "then";
            }
            w.to_owned()
        };
        out.replace_range(a..b, &new);
    }
    Some((out, positions.len()))
}

// ===========================================================================
// Layout
// ===========================================================================

/// One line of `raw/corpus.jsonl` before ids are given out.
enum Item {
    Clean(usize),
    Pii(String, Vec<(PiiKind, String, String)>),
    Exact(usize),
    Near {
        original: usize,
        text: String,
        changed: usize,
        jaccard: f64,
    },
    Boilerplate(String, bool, Vec<String>),
    Broken(BrokenKind, String),
}

#[derive(Serialize)]
struct RawRecord<'a> {
    id: &'a str,
    text: &'a str,
}

/// The line for a broken record, given its would-be id and a text to
/// borrow from.
fn broken_line(kind: BrokenKind, id: &str, text: &str) -> Result<String> {
    Ok(match kind {
        BrokenKind::TruncatedJson => {
            let whole = json_line(&RawRecord { id, text })?;
            let mut cut = whole.len() * 2 / 3;
            while !whole.is_char_boundary(cut) {
                cut -= 1;
            }
            whole[..cut].to_owned()
        }
        BrokenKind::NotJson => text.lines().next().unwrap_or(text).to_owned(),
        BrokenKind::MissingText => json_line(&serde_json::json!({ "id": id, "body": text }))?,
        BrokenKind::NumberText => json_line(&serde_json::json!({ "id": id, "text": 42 }))?,
        BrokenKind::NullText => json_line(&serde_json::json!({ "id": id, "text": null }))?,
        BrokenKind::ListText => {
            let parts: Vec<&str> = text.lines().collect();
            json_line(&serde_json::json!({ "id": id, "text": parts }))?
        }
    })
}

// ===========================================================================
// The dataset
// ===========================================================================

/// The generated demo dataset, in memory.
///
/// ```
/// use kaiyuan_train::corpus::demo::{DemoConfig, DemoDataset};
///
/// let config = DemoConfig { training_documents: 600, ..DemoConfig::quick() };
/// let demo = DemoDataset::generate(&config)?;
/// assert_eq!(demo.training().len(), 600);
/// assert_eq!(demo.planted().pii.is_empty(), false);
/// assert_eq!(demo.raw_lines().len(), 600 + 48 + 36 + 36 + 24 + 12);
/// # Ok::<(), kaiyuan_train::TrainError>(())
/// ```
#[derive(Debug, Clone)]
pub struct DemoDataset {
    config: DemoConfig,
    world: World,
    training: Vec<Document>,
    raw_lines: Vec<String>,
    planted: Planted,
    questions: Vec<DemoQuestion>,
    translations: Vec<HeldOutPair>,
    validation: Vec<Document>,
}

/// Sizes of what was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoCounts {
    /// Lines of `raw/corpus.jsonl`.
    pub raw_lines: usize,
    /// Clean training documents among them.
    pub training_documents: usize,
    /// Planted PII values.
    pub pii_values: usize,
    /// Records with planted PII.
    pub pii_records: usize,
    /// Exact duplicates.
    pub exact_duplicates: usize,
    /// Near duplicates.
    pub near_duplicates: usize,
    /// Records with boilerplate.
    pub boilerplate_records: usize,
    /// Broken lines.
    pub broken_lines: usize,
    /// Validation documents.
    pub validation_documents: usize,
    /// Multiple-choice questions.
    pub questions: usize,
    /// Held-out translation pairs.
    pub translations: usize,
}

/// Size and SHA-256 of one written file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Length in bytes.
    pub bytes: u64,
    /// Lower-case hexadecimal SHA-256 of the contents.
    pub sha256: String,
}

/// `manifest.json`: what was generated, from what, and a digest of every
/// other file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoManifest {
    /// [`FORMAT`].
    pub format: String,
    /// The seed.
    pub seed: u64,
    /// The whole config.
    pub config: DemoConfig,
    /// Sizes.
    pub counts: DemoCounts,
    /// Digests by path relative to the dataset directory
    /// (`raw/corpus.jsonl`, `planted.json`, `eval/mc.jsonl`,
    /// `eval/translation.jsonl`, `eval/validation.jsonl`, `eval/suite.toml`,
    /// `pipeline.toml`).
    pub files: BTreeMap<String, FileDigest>,
}

impl DemoDataset {
    /// Generates the dataset of `config`.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidArgument`] when `config` fails
    /// [`DemoConfig::validate`], asks for more questions than the world
    /// offers, or for more near duplicates or held-out pairs than can be
    /// found.
    ///
    /// ```
    /// use kaiyuan_train::corpus::demo::{DemoConfig, DemoDataset};
    ///
    /// assert!(DemoDataset::generate(&DemoConfig { questions: 100_000, ..DemoConfig::quick() }).is_err());
    /// ```
    pub fn generate(config: &DemoConfig) -> Result<Self> {
        config.validate()?;
        let seed = config.seed;
        let corpus = Corpus::new(&config.corpus(config.training_documents))?;
        let world = corpus.world().clone();
        let mut training = corpus.training();
        with_drills(&world, seed, STREAM_DRILL, &mut training);

        let questions = questions(&world, seed, config.questions)?;
        let (raw_lines, planted, haystack) = Self::layout(config, &world, &training)?;
        let translations = held_out_pairs(&world, seed, config.held_out_translations, &haystack)?;

        // Validation: the corpus's validation stream with the same drills,
        // minus any text that is a training document.
        let seen: BTreeSet<&str> = training.iter().map(|d| d.text.as_str()).collect();
        let margin = config.validation_documents / 4 + 16;
        let mut candidates = corpus.validation(config.validation_documents + margin)?;
        with_drills(&world, seed, STREAM_DRILL_VALIDATION, &mut candidates);
        let validation: Vec<Document> = candidates
            .into_iter()
            .filter(|d| !seen.contains(d.text.as_str()))
            .take(config.validation_documents)
            .collect();
        if validation.len() < config.validation_documents {
            return Err(TrainError::invalid(
                "validation_documents",
                format!(
                    "only {} of {} validation documents differ from the training set",
                    validation.len(),
                    config.validation_documents
                ),
            ));
        }
        Ok(Self {
            config: *config,
            world,
            training,
            raw_lines,
            planted,
            questions,
            translations,
            validation,
        })
    }

    /// Interleaves the clean documents with the dirty records; returns the
    /// lines, what was planted, and every record's text joined (for the
    /// held-out search).
    fn layout(
        config: &DemoConfig,
        world: &World,
        training: &[Document],
    ) -> Result<(Vec<String>, Planted, String)> {
        let seed = config.seed;
        let n = training.len();
        let d = &config.dirty;
        // (slot, sequence, item): dirty item at slot s comes after clean
        // document s.
        let mut items: Vec<(usize, usize, Item)> = (0..n).map(|i| (i, 0, Item::Clean(i))).collect();
        let mut sequence = 0;
        let mut place = |items: &mut Vec<(usize, usize, Item)>, slot: usize, item: Item| {
            sequence += 1;
            items.push((slot, sequence, item));
        };
        let mut layout = Rng::derive(seed, STREAM_LAYOUT, 0);

        for i in 0..d.pii_records {
            let (text, values) = pii_record(world, seed, i);
            let slot = layout.below(n);
            place(&mut items, slot, Item::Pii(text, values));
        }

        let mut copies = Rng::derive(seed, STREAM_COPIES, 0);
        let mut originals: Vec<usize> = (0..n).collect();
        copies.shuffle(&mut originals);
        let mut originals = originals.into_iter();
        for _ in 0..d.exact_duplicates {
            let Some(original) = originals.next() else {
                break;
            };
            let slot = original + layout.below(n - original);
            place(&mut items, slot, Item::Exact(original));
        }
        let mut near = 0;
        for original in originals.by_ref() {
            if near == d.near_duplicates {
                break;
            }
            let text = &training[original].text;
            let count = token_spans(text).len();
            let changes = (1 + count / 300).min(3);
            let found = [changes, 1].into_iter().find_map(|k| {
                let (copy, changed) = near_copy(text, k, &mut copies)?;
                let j = jaccard5(text, &copy);
                (j >= NEAR_JACCARD && copy != *text).then_some((copy, changed, j))
            });
            if let Some((copy, changed, jaccard)) = found {
                near += 1;
                let slot = original + layout.below(n - original);
                place(
                    &mut items,
                    slot,
                    Item::Near {
                        original,
                        text: copy,
                        changed,
                        jaccard,
                    },
                );
            }
        }
        if near < d.near_duplicates {
            return Err(TrainError::invalid(
                "dirty.near_duplicates",
                format!(
                    "only {near} of {} training documents are long enough for a near duplicate",
                    d.near_duplicates
                ),
            ));
        }

        for i in 0..d.boilerplate_records {
            let (text, whole, lines) = boilerplate_record(world, seed, i);
            let slot = layout.below(n);
            place(&mut items, slot, Item::Boilerplate(text, whole, lines));
        }
        for i in 0..d.broken_lines {
            let mut rng = Rng::derive(seed, STREAM_BROKEN, i as u64);
            let text = training[rng.below(n)].text.clone();
            let kind = BrokenKind::ALL[i % BrokenKind::ALL.len()];
            let slot = layout.below(n);
            place(&mut items, slot, Item::Broken(kind, text));
        }
        items.sort_by_key(|&(slot, sequence, _)| (slot, sequence));

        let id = |line: usize| format!("demo-{:06}", line + 1);
        let mut clean_id = vec![String::new(); n];
        for (line, (_, _, item)) in items.iter().enumerate() {
            if let Item::Clean(i) = item {
                clean_id[*i] = id(line);
            }
        }
        let mut lines = Vec::with_capacity(items.len());
        let mut planted = Planted::default();
        let mut haystack = String::new();
        for (line, (_, _, item)) in items.iter().enumerate() {
            let record = id(line);
            let text: &str = match item {
                Item::Clean(i) | Item::Exact(i) => &training[*i].text,
                Item::Pii(text, _) | Item::Near { text, .. } | Item::Boilerplate(text, _, _) => {
                    text
                }
                Item::Broken(kind, text) => {
                    lines.push(broken_line(*kind, &record, text)?);
                    planted.broken.push(PlantedBroken {
                        line: line + 1,
                        record,
                        problem: *kind,
                    });
                    continue;
                }
            };
            lines.push(json_line(&RawRecord { id: &record, text })?);
            haystack.push_str(text);
            haystack.push('\n');
            match item {
                Item::Pii(_, values) => {
                    for (kind, format, value) in values {
                        planted.pii.push(PlantedPii {
                            record: record.clone(),
                            kind: *kind,
                            format: format.clone(),
                            value: value.clone(),
                        });
                    }
                }
                Item::Exact(i) => planted.exact_duplicates.push(PlantedCopy {
                    record,
                    original: clean_id[*i].clone(),
                }),
                Item::Near {
                    original,
                    changed,
                    jaccard,
                    ..
                } => planted.near_duplicates.push(PlantedNearCopy {
                    record,
                    original: clean_id[*original].clone(),
                    changed_tokens: *changed,
                    jaccard: *jaccard,
                }),
                Item::Boilerplate(_, whole, boiler) => {
                    planted.boilerplate.push(PlantedBoilerplate {
                        record,
                        whole_record: *whole,
                        lines: boiler.clone(),
                    })
                }
                Item::Clean(_) | Item::Broken(..) => {}
            }
        }
        Ok((lines, planted, haystack))
    }

    /// The config it was generated from.
    pub fn config(&self) -> &DemoConfig {
        &self.config
    }

    /// The world every record is about.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The clean training documents, in order (each is one line of
    /// `raw/corpus.jsonl`).
    pub fn training(&self) -> &[Document] {
        &self.training
    }

    /// The lines of `raw/corpus.jsonl`, without their newlines.
    pub fn raw_lines(&self) -> &[String] {
        &self.raw_lines
    }

    /// What was planted for the cleaning stage.
    pub fn planted(&self) -> &Planted {
        &self.planted
    }

    /// The multiple-choice questions.
    pub fn questions(&self) -> &[DemoQuestion] {
        &self.questions
    }

    /// The held-out translation pairs.
    pub fn translations(&self) -> &[HeldOutPair] {
        &self.translations
    }

    /// The validation documents.
    pub fn validation(&self) -> &[Document] {
        &self.validation
    }

    /// The contents of every file but the manifest, by relative path.
    fn files(&self) -> Result<Vec<(&'static str, String)>> {
        let mut raw = self.raw_lines.join("\n");
        raw.push('\n');

        let mut planted = serde_json::to_string_pretty(&self.planted)
            .map_err(|e| TrainError::invalid("json", e.to_string()))?;
        planted.push('\n');

        #[derive(Serialize)]
        struct McLine<'a> {
            id: &'a str,
            subject: &'a str,
            language: &'a str,
            context: &'a str,
            choices: &'a [String],
            gold: usize,
        }
        let mut mc = String::new();
        for q in &self.questions {
            mc.push_str(&json_line(&McLine {
                id: &q.id,
                subject: relation_name(q.relation),
                language: if q.language == Language::Chinese {
                    "zh"
                } else {
                    "en"
                },
                context: &q.context,
                choices: &q.choices,
                gold: q.gold,
            })?);
            mc.push('\n');
        }

        #[derive(Serialize)]
        struct TranslationLine<'a> {
            id: &'a str,
            direction: Direction,
            prompt: &'a str,
            reference: [&'a str; 1],
        }
        let mut translation = String::new();
        for pair in &self.translations {
            translation.push_str(&json_line(&TranslationLine {
                id: &pair.id,
                direction: pair.direction,
                prompt: &pair.prompt(),
                reference: [pair.reference()],
            })?);
            translation.push('\n');
        }

        #[derive(Serialize)]
        struct TextLine<'a> {
            kind: &'a str,
            text: &'a str,
        }
        let mut validation = String::new();
        for d in &self.validation {
            validation.push_str(&json_line(&TextLine {
                kind: d.kind.name(),
                text: &d.text,
            })?);
            validation.push('\n');
        }

        Ok(vec![
            ("raw/corpus.jsonl", raw),
            ("planted.json", planted),
            ("eval/mc.jsonl", mc),
            ("eval/translation.jsonl", translation),
            ("eval/validation.jsonl", validation),
            ("eval/suite.toml", SUITE.to_owned()),
            ("pipeline.toml", PIPELINE.to_owned()),
        ])
    }

    /// The sizes of the dataset.
    ///
    /// ```
    /// use kaiyuan_train::corpus::demo::{DemoConfig, DemoDataset};
    ///
    /// let demo = DemoDataset::generate(&DemoConfig { training_documents: 600, ..DemoConfig::quick() })?;
    /// assert_eq!(demo.counts().questions, 200);
    /// # Ok::<(), kaiyuan_train::TrainError>(())
    /// ```
    pub fn counts(&self) -> DemoCounts {
        let planted = &self.planted;
        let pii_records: BTreeSet<&str> = planted.pii.iter().map(|p| p.record.as_str()).collect();
        DemoCounts {
            raw_lines: self.raw_lines.len(),
            training_documents: self.training.len(),
            pii_values: planted.pii.len(),
            pii_records: pii_records.len(),
            exact_duplicates: planted.exact_duplicates.len(),
            near_duplicates: planted.near_duplicates.len(),
            boilerplate_records: planted.boilerplate.len(),
            broken_lines: planted.broken.len(),
            validation_documents: self.validation.len(),
            questions: self.questions.len(),
            translations: self.translations.len(),
        }
    }

    /// Writes the dataset into `dir` (created if missing): every file is
    /// written to a temporary name and renamed into place, the manifest
    /// last, so a reader that finds `manifest.json` finds every file it
    /// lists.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidArgument`] naming the path that could not be
    /// created or written.
    ///
    /// ```
    /// use kaiyuan_train::corpus::demo::{DemoConfig, DemoDataset};
    ///
    /// let demo = DemoDataset::generate(&DemoConfig { training_documents: 600, ..DemoConfig::quick() })?;
    /// let dir = std::env::temp_dir().join(format!("kaiyuan-demo-write-{}", std::process::id()));
    /// let manifest = demo.write(&dir)?;
    /// assert_eq!(manifest.files.len(), 7);
    /// assert_eq!(manifest.counts, demo.counts());
    /// std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), kaiyuan_train::TrainError>(())
    /// ```
    pub fn write(&self, dir: &Path) -> Result<DemoManifest> {
        let mut files = BTreeMap::new();
        for (name, contents) in self.files()? {
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    TrainError::invalid(parent.display().to_string(), e.to_string())
                })?;
            }
            crate::checkpoint::write_atomic(&path, contents.as_bytes())?;
            let digest = Sha256::digest(contents.as_bytes());
            let sha256: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            files.insert(
                name.to_owned(),
                FileDigest {
                    bytes: contents.len() as u64,
                    sha256,
                },
            );
        }
        let manifest = DemoManifest {
            format: FORMAT.to_owned(),
            seed: self.config.seed,
            config: self.config,
            counts: self.counts(),
            files,
        };
        let mut json = serde_json::to_string_pretty(&manifest)
            .map_err(|e| TrainError::invalid("json", e.to_string()))?;
        json.push('\n');
        crate::checkpoint::write_atomic(&dir.join("manifest.json"), json.as_bytes())?;
        Ok(manifest)
    }
}

/// `pipeline.toml`: the cleaning recipe for `raw/corpus.jsonl` (the
/// `kaiyuan.data.pipeline/1` schema of `fixtures/pipeline.toml`). It keeps
/// the stages that remove what was planted (PII placeholders, C4's
/// boilerplate and lorem-ipsum rules, exact and MinHash dedup) and leaves
/// out the web-text quality filters: Gopher's repetition and quality rules
/// and C4's sentence and line-length minimums reject most of this
/// deliberately repetitive synthetic text (with the default pipeline more
/// than 80 % of the clean documents of the quick demo are dropped, nearly
/// every facts paragraph, drill and sum among them; with this one about
/// 17 %, as exact or near duplicates of earlier documents).
const PIPELINE: &str = r#"# Cleaning recipe of the demo dataset (kaiyuan.demo/1), written by
# kaiyuan_train::corpus::demo: the stages that remove what planted.json lists,
# without the web-text quality filters, which reject most synthetic text.
schema = "kaiyuan.data.pipeline/1"

[[stages]]
kind = "normalize"

[[stages]]
kind = "language"          # so the Chinese policy phrases (隐私政策, 使用条款) apply
keep = ["zh", "en", "other"]
min_score = 0.0

[[stages]]
kind = "pii"
mode = "placeholder"

[[stages]]
kind = "c4_quality"        # boilerplate lines out, lorem-ipsum pages dropped
filter_no_terminal_punct = false
min_num_sentences = -1
min_words_per_line = -1
zh = { min_words_per_line = -1, min_num_sentences = -1 }

[[stages]]
kind = "exact_dedup"
normalize = true

[[stages]]
kind = "minhash_dedup"
num_perm = 128
ngram = 5
threshold = 0.8
verify = true
"#;

/// `eval/suite.toml`; paths are relative to it.
const SUITE: &str = r#"# The evaluation suite of the demo dataset (kaiyuan.demo/1), written by
# kaiyuan_train::corpus::demo. Paths are relative to this file.
name = "demo"
description = "Perplexity on held-out documents, questions about the invented world's facts (worded as in no training record), held-out English/Chinese translation, and speed."

[[task]]
kind = "perplexity"
name = "validation"
data = "validation.jsonl"

[[task]]
kind = "mc"
name = "world_facts"
data = "mc.jsonl"
format = "generic"
shots = 0

[[task]]
kind = "generation"
name = "translation"
data = "translation.jsonl"
metrics = ["bleu", "chrf", "rouge"]
max_new_tokens = 64
stop = ["\n"]
bleu_tokenize = "zh"
rouge_tokenize = "cjk"

[[task]]
kind = "speed"
prompt_tokens = 64
decode_tokens = 32
repeats = 3
"#;

// ===========================================================================
// Tests
// ===========================================================================

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn quick() -> &'static DemoDataset {
        static DEMO: OnceLock<DemoDataset> = OnceLock::new();
        DEMO.get_or_init(|| DemoDataset::generate(&DemoConfig::quick()).expect("quick demo"))
    }

    /// Every text of the raw corpus that the reader will accept.
    fn record_texts(demo: &DemoDataset) -> Vec<String> {
        demo.raw_lines()
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned))
            .collect()
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("kaiyuan-demo-test-{}-{name}", std::process::id()))
    }

    fn read_all(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for name in [
            "raw/corpus.jsonl",
            "planted.json",
            "eval/mc.jsonl",
            "eval/translation.jsonl",
            "eval/validation.jsonl",
            "eval/suite.toml",
            "pipeline.toml",
            "manifest.json",
        ] {
            out.insert(name.to_owned(), std::fs::read(dir.join(name)).expect(name));
        }
        out
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let config = DemoConfig {
            training_documents: 600,
            ..DemoConfig::quick()
        };
        let (a, b, c) = (temp_dir("a"), temp_dir("b"), temp_dir("c"));
        let ma = DemoDataset::generate(&config).unwrap().write(&a).unwrap();
        let mb = DemoDataset::generate(&config).unwrap().write(&b).unwrap();
        let mc = DemoDataset::generate(&DemoConfig { seed: 1, ..config })
            .unwrap()
            .write(&c)
            .unwrap();
        let (fa, fb, fc) = (read_all(&a), read_all(&b), read_all(&c));
        assert_eq!(fa, fb);
        assert_eq!(ma, mb);
        for name in [
            "raw/corpus.jsonl",
            "planted.json",
            "eval/mc.jsonl",
            "eval/translation.jsonl",
        ] {
            assert_ne!(fa[name], fc[name], "{name}");
        }
        assert_ne!(ma.files, mc.files);
        // The manifest's digests are those of the files.
        for (name, digest) in &ma.files {
            let bytes = &fa[name];
            assert_eq!(digest.bytes, bytes.len() as u64);
            let hex: String = Sha256::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(digest.sha256, hex, "{name}");
        }
        let parsed: DemoManifest = serde_json::from_slice(&fa["manifest.json"]).unwrap();
        assert_eq!(parsed, ma);
        assert_eq!(parsed.format, FORMAT);
        // No temporary files are left behind.
        for dir in [&a, &b, &c] {
            for sub in [dir.clone(), dir.join("raw"), dir.join("eval")] {
                for entry in std::fs::read_dir(&sub).unwrap() {
                    let name = entry.unwrap().file_name();
                    assert!(!name.to_string_lossy().starts_with('.'), "{name:?}");
                }
            }
            std::fs::remove_dir_all(dir).ok();
        }
    }

    #[test]
    fn questions_are_four_way_correct_and_balanced() {
        let demo = quick();
        let asked = demo.questions();
        assert_eq!(asked.len(), 200);
        let mut golds = [0usize; 4];
        let mut languages = BTreeMap::new();
        let mut relations = BTreeSet::new();
        for q in asked {
            assert_eq!(q.choices.len(), 4, "{q:?}");
            let distinct: BTreeSet<&String> = q.choices.iter().collect();
            assert_eq!(distinct.len(), 4, "{q:?}");
            golds[q.gold] += 1;
            *languages.entry(q.language).or_insert(0) += 1;
            relations.insert(q.relation);
            // The gold choice is the answer of the fact asked about.
            let fact = demo
                .world()
                .facts()
                .iter()
                .find(|f| {
                    f.relation == q.relation
                        && match q.language {
                            Language::Chinese => q.question.contains(&f.subject.chinese),
                            _ => q.question.contains(&f.subject.english),
                        }
                        && ask(f).is_some_and(|(en, zh)| en == q.question || zh == q.question)
                })
                .expect("the question asks about a fact");
            let answer = match q.language {
                Language::Chinese => &fact.chinese.answer,
                _ => &fact.english.answer,
            };
            assert_eq!(&q.choices[q.gold], answer, "{q:?}");
            let scaffold = match q.language {
                Language::Chinese => format!("问题：{}\n答案：", q.question),
                _ => format!("Question: {}\nAnswer:", q.question),
            };
            assert_eq!(q.context, scaffold);
            // Distractors are of the answer's type.
            let pool = answer_pool(demo.world(), fact, q.language == Language::Chinese);
            assert!(q.choices.iter().all(|c| pool.contains(c)), "{q:?}");
        }
        assert!(golds.iter().all(|&g| g == 50), "{golds:?}");
        assert!(languages.values().all(|&n| n >= 80), "{languages:?}");
        assert!(relations.len() >= 9, "{relations:?}");
        // The default world offers 312: every fact but a river's mouth,
        // in both languages.
        assert!(questions(demo.world(), 0, 312).is_ok());
        assert!(questions(demo.world(), 0, 313).is_err());
    }

    /// Which token n-grams occur in a set of texts, built per `n` on demand.
    struct GramIndex {
        token_lists: Vec<Vec<String>>,
        sets: BTreeMap<usize, HashSet<u64>>,
    }

    impl GramIndex {
        fn new(texts: &[String]) -> Self {
            Self {
                token_lists: texts.iter().map(|t| tokens(t)).collect(),
                sets: BTreeMap::new(),
            }
        }

        /// True when an n-gram of `text` (n = 8, or the whole text when it
        /// is shorter) occurs in the indexed texts.
        fn overlaps(&mut self, text: &str) -> bool {
            let t = tokens(text);
            let n = t.len().clamp(1, 8);
            let lists = &self.token_lists;
            let set = self.sets.entry(n).or_insert_with(|| {
                lists
                    .iter()
                    .flat_map(|l| l.windows(n).map(gram_hash))
                    .collect()
            });
            t.windows(n).any(|g| set.contains(&gram_hash(g)))
        }
    }

    /// Asserts that no question the world of `demo` offers (the sample
    /// written and every other) shares an n-gram with a training record.
    fn assert_wording_unseen(demo: &DemoDataset) -> GramIndex {
        let mut index = GramIndex::new(&record_texts(demo));
        for q in demo.questions() {
            assert!(
                !index.overlaps(&q.question),
                "{:?} shares an n-gram with training",
                q.question
            );
        }
        for fact in demo.world().facts() {
            if let Some((en, zh)) = ask(fact) {
                assert!(!index.overlaps(&en), "{en:?}");
                assert!(!index.overlaps(&zh), "{zh:?}");
            }
        }
        index
    }

    #[test]
    fn question_wording_never_appears_in_training() {
        let demo = quick();
        let mut index = assert_wording_unseen(demo);
        // The check can fail: the drills' own wording is caught, in both
        // languages, and so is a fact sentence.
        let fact = &demo.world().facts()[0];
        assert!(index.overlaps(&fact.english.question));
        assert!(index.overlaps(&fact.chinese.question));
        assert!(index.overlaps(&fact.chinese.text));
        assert!(!index.overlaps("In which valley does nobody live at all?"));
    }

    #[test]
    fn held_out_translations_are_not_in_training() {
        let demo = quick();
        let texts = record_texts(demo);
        assert_eq!(demo.translations().len(), 100);
        let mut directions = BTreeMap::new();
        for pair in demo.translations() {
            for text in &texts {
                assert!(
                    !text.contains(&pair.english),
                    "{:?} is in training",
                    pair.english
                );
                assert!(
                    !text.contains(&pair.chinese),
                    "{:?} is in training",
                    pair.chinese
                );
            }
            *directions.entry(pair.direction).or_insert(0) += 1;
            assert!(pair.prompt().starts_with("English: ") || pair.prompt().starts_with("中文："));
        }
        assert_eq!(directions.len(), 2);
        assert!(directions.values().all(|&n| n == 50));
        // Training does hold pairs in the same format.
        assert!(
            demo.training()
                .iter()
                .any(|d| d.text.contains("English: ") && d.text.contains("\n中文："))
        );
    }

    #[test]
    fn planted_pii_is_in_its_record_and_well_formed() {
        let demo = quick();
        let by_id: BTreeMap<String, String> = demo
            .raw_lines()
            .iter()
            .filter_map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                Some((
                    v.get("id")?.as_str()?.to_owned(),
                    v.get("text")?.as_str()?.to_owned(),
                ))
            })
            .collect();
        let planted = &demo.planted().pii;
        assert!(planted.len() >= demo.config().dirty.pii_records);
        let kinds: BTreeSet<PiiKind> = planted.iter().map(|p| p.kind).collect();
        assert_eq!(kinds.len(), 5);
        let formats: BTreeSet<&str> = planted.iter().map(|p| p.format.as_str()).collect();
        assert!(formats.iter().any(|f| f.starts_with("cn_mobile")));
        assert!(formats.iter().any(|f| f.starts_with("nanp")));
        for p in planted {
            assert!(by_id[&p.record].contains(&p.value), "{p:?}");
            let digits: String = p.value.chars().filter(char::is_ascii_digit).collect();
            match p.kind {
                PiiKind::IdCn => {
                    assert_eq!(p.value.len(), 18);
                    assert_eq!(
                        ric_check(&p.value[..17]),
                        p.value.chars().last().unwrap_or(' ')
                    );
                    let month: u32 = p.value[10..12].parse().unwrap();
                    assert!((1..=12).contains(&month));
                }
                PiiKind::Card => {
                    assert_eq!(digits.len(), 16);
                    assert_eq!(
                        luhn_digit(&digits[..15]),
                        digits.chars().last().unwrap_or(' ')
                    );
                    assert!(luhn_naive(&digits), "{p:?}");
                }
                PiiKind::Phone if p.format.starts_with("cn") => {
                    let national = &digits[digits.len() - 11..];
                    assert!(MOBILE_PREFIXES.contains(&national[..3].parse().unwrap()));
                }
                PiiKind::Phone => assert!(digits.len() == 10 || digits.len() == 11),
                PiiKind::Ip => {
                    let octets: Vec<u32> = p.value.split('.').map(|o| o.parse().unwrap()).collect();
                    assert_eq!(octets.len(), 4);
                    assert!(octets.iter().all(|&o| o <= 255) && octets[0] != 127 && octets[0] != 0);
                }
                PiiKind::Email => {
                    let (local, domain) = p.value.split_once('@').unwrap();
                    assert!(!local.is_empty() && domain.contains('.'));
                    assert!(p.value.is_ascii());
                }
            }
        }
        // Values are never found in clean training documents.
        for p in planted {
            assert!(demo.training().iter().all(|d| !d.text.contains(&p.value)));
        }
    }

    /// The Luhn check written from its definition.
    fn luhn_naive(number: &str) -> bool {
        let mut sum = 0;
        for (i, c) in number.chars().rev().enumerate() {
            let mut d = c.to_digit(10).unwrap();
            if i % 2 == 1 {
                d *= 2;
                if d > 9 {
                    d -= 9;
                }
            }
            sum += d;
        }
        sum % 10 == 0
    }

    #[test]
    fn checksums_match_known_values() {
        // GB 11643-1999's example and a standard Visa test number.
        assert_eq!(ric_check("11010519491231002"), 'X');
        assert_eq!(luhn_digit("411111111111111"), '1');
        assert!(luhn_naive("4111111111111111"));
        assert!(!luhn_naive("4111111111111112"));
    }

    #[test]
    fn duplicates_copy_their_originals() {
        let demo = quick();
        let position: BTreeMap<String, (usize, String)> = demo
            .raw_lines()
            .iter()
            .enumerate()
            .filter_map(|(i, line)| {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                Some((
                    v.get("id")?.as_str()?.to_owned(),
                    (i, v.get("text")?.as_str()?.to_owned()),
                ))
            })
            .collect();
        let planted = demo.planted();
        assert_eq!(planted.exact_duplicates.len(), 36);
        assert_eq!(planted.near_duplicates.len(), 36);
        for copy in &planted.exact_duplicates {
            let (at, text) = &position[&copy.record];
            let (original_at, original) = &position[&copy.original];
            assert_eq!(text, original);
            assert!(at > original_at);
        }
        for copy in &planted.near_duplicates {
            let (at, text) = &position[&copy.record];
            let (original_at, original) = &position[&copy.original];
            assert_ne!(text, original);
            assert!(at > original_at);
            let j = jaccard5(text, original);
            assert!(j >= NEAR_JACCARD, "{j} for {}", copy.record);
            assert_eq!(j, copy.jaccard);
            // A few tokens replaced one for one, nothing else.
            let (t, o) = (tokens(text), tokens(original));
            assert_eq!(t.len(), o.len());
            let changed = t.iter().zip(&o).filter(|(a, b)| a != b).count();
            assert_eq!(changed, copy.changed_tokens);
            assert!((1..=3).contains(&changed));
        }
        // Originals are distinct, and all are clean training documents.
        let originals: BTreeSet<&str> = planted
            .exact_duplicates
            .iter()
            .map(|c| c.original.as_str())
            .chain(planted.near_duplicates.iter().map(|c| c.original.as_str()))
            .collect();
        assert_eq!(originals.len(), 72);
        let clean: BTreeSet<&str> = demo.training().iter().map(|d| d.text.as_str()).collect();
        assert!(
            originals
                .iter()
                .all(|id| clean.contains(position[*id].1.as_str()))
        );
    }

    #[test]
    fn jaccard_counts_shingles() {
        assert_eq!(jaccard5("a b c d e f", "a b c d e f"), 1.0);
        // Six tokens, two shingles; one change at the end keeps one of three.
        assert!((jaccard5("a b c d e f", "a b c d e g") - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            tokens("Ardo's 3 pots，维尔莫拉。"),
            ["ardo", "s", "3", "pots", "维", "尔", "莫", "拉"]
        );
    }

    #[test]
    fn boilerplate_and_broken_lines_are_planted() {
        let demo = quick();
        let lines = demo.raw_lines();
        let planted = demo.planted();
        assert_eq!(planted.boilerplate.len(), 24);
        assert!(planted.boilerplate.iter().any(|b| b.whole_record));
        assert!(planted.boilerplate.iter().any(|b| !b.whole_record));
        let texts: BTreeMap<String, String> = lines
            .iter()
            .filter_map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                Some((
                    v.get("id")?.as_str()?.to_owned(),
                    v.get("text")?.as_str()?.to_owned(),
                ))
            })
            .collect();
        for b in &planted.boilerplate {
            let text = &texts[&b.record];
            for line in &b.lines {
                assert!(text.lines().any(|l| l == line), "{line:?}");
                let lower = line.to_lowercase();
                let marked = [
                    "cookie",
                    "javascript",
                    "terms of use",
                    "privacy policy",
                    "隐私政策",
                    "使用条款",
                ]
                .iter()
                .any(|w| lower.contains(w));
                // Lines of a boilerplate-only record may be lorem ipsum,
                // which C4 drops with the whole record.
                assert!(marked || b.whole_record, "{line:?}");
            }
            assert_eq!(b.whole_record, text.to_lowercase().contains("lorem ipsum"));
            if !b.whole_record {
                assert!(text.lines().count() > b.lines.len());
            }
        }
        assert_eq!(planted.broken.len(), 12);
        for broken in &planted.broken {
            let line = &lines[broken.line - 1];
            let parsed = serde_json::from_str::<serde_json::Value>(line);
            match broken.problem {
                BrokenKind::TruncatedJson | BrokenKind::NotJson => {
                    assert!(parsed.is_err(), "{line}")
                }
                BrokenKind::MissingText => assert!(parsed.unwrap().get("text").is_none()),
                _ => assert!(!parsed.unwrap()["text"].is_string(), "{line}"),
            }
        }
        // Every other line is a record with a string text and a unique id.
        let ok = lines
            .iter()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .is_ok_and(|v| v["text"].is_string() && v["id"].is_string())
            })
            .count();
        assert_eq!(ok + planted.broken.len(), lines.len());
        assert_eq!(texts.len(), ok);
    }

    #[test]
    fn training_and_validation_are_disjoint_drilled_corpora() {
        let demo = quick();
        assert_eq!(demo.training().len(), 2_000);
        let drills = demo
            .training()
            .iter()
            .filter(|d| d.kind == DocumentKind::Questions)
            .count();
        // The demo's mix: 35 % of the documents are drills.
        assert_eq!(drills, 700);
        for d in demo
            .training()
            .iter()
            .filter(|d| d.kind == DocumentKind::Questions)
        {
            assert!(
                d.text.starts_with("Question: ") || d.text.starts_with("问题："),
                "{}",
                d.text
            );
            assert!(!d.text.contains("Q: ") && !d.text.contains("问："));
        }
        // Drills answer with the answer alone, one space after the label.
        let fact = &demo.world().facts()[0];
        let drill = format!(
            "Question: {}\nAnswer: {}",
            fact.english.question, fact.english.answer
        );
        let drill_zh = format!(
            "问题：{}\n答案： {}",
            fact.chinese.question, fact.chinese.answer
        );
        let all: String = demo.training().iter().map(|d| d.text.as_str()).collect();
        assert!(all.contains(&drill) || all.contains(&drill_zh));
        // The other kinds are the corpus's own documents.
        let corpus = Corpus::new(&DemoConfig::quick().corpus(2_000))
            .unwrap()
            .training();
        for (a, b) in demo.training().iter().zip(&corpus) {
            if a.kind != DocumentKind::Questions {
                assert_eq!(a, b);
            }
        }
        assert_eq!(demo.validation().len(), 60);
        let training: BTreeSet<&str> = demo.training().iter().map(|d| d.text.as_str()).collect();
        assert!(
            demo.validation()
                .iter()
                .all(|d| !training.contains(d.text.as_str()))
        );
    }

    #[test]
    fn suite_names_the_written_files() {
        let value: toml::Value = toml::from_str(SUITE).unwrap();
        let tasks = value["task"].as_array().unwrap();
        let kinds: Vec<&str> = tasks.iter().map(|t| t["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["perplexity", "mc", "generation", "speed"]);
        let data: Vec<&str> = tasks
            .iter()
            .filter_map(|t| t.get("data")?.as_str())
            .collect();
        assert_eq!(data, ["validation.jsonl", "mc.jsonl", "translation.jsonl"]);
    }

    #[test]
    fn pipeline_keeps_the_cleaning_stages() {
        let value: toml::Value = toml::from_str(PIPELINE).unwrap();
        assert_eq!(value["schema"].as_str(), Some("kaiyuan.data.pipeline/1"));
        let stages: Vec<&str> = value["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            stages,
            [
                "normalize",
                "language",
                "pii",
                "c4_quality",
                "exact_dedup",
                "minhash_dedup"
            ]
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        let invalid = |config: DemoConfig, field: &str| match DemoDataset::generate(&config) {
            Err(TrainError::InvalidArgument { what, .. }) => assert_eq!(what, field),
            other => panic!(
                "expected an invalid `{field}`, got {:?}",
                other.map(|d| d.counts())
            ),
        };
        let q = DemoConfig::quick();
        invalid(
            DemoConfig {
                training_documents: 0,
                ..q
            },
            "training_documents",
        );
        invalid(
            DemoConfig {
                validation_documents: 0,
                ..q
            },
            "validation_documents",
        );
        invalid(DemoConfig { questions: 0, ..q }, "questions");
        invalid(
            DemoConfig {
                questions: 400,
                ..q
            },
            "questions",
        );
        invalid(
            DemoConfig {
                held_out_translations: 0,
                ..q
            },
            "held_out_translations",
        );
        let mut too_many = q;
        too_many.dirty.exact_duplicates = q.training_documents;
        invalid(too_many, "dirty.exact_duplicates");
        let mut short = DemoConfig {
            training_documents: 60,
            ..q
        };
        short.dirty.exact_duplicates = 0;
        short.dirty.near_duplicates = 60;
        invalid(short, "dirty.near_duplicates");
    }

    #[test]
    fn presets_generate_for_several_seeds() {
        for seed in 1..=4 {
            let demo = DemoDataset::generate(&DemoConfig {
                seed,
                ..DemoConfig::quick()
            })
            .unwrap();
            assert_eq!(demo.counts().near_duplicates, 36);
            assert_wording_unseen(&demo);
        }
    }

    #[test]
    fn full_config_generates() {
        let demo = DemoDataset::generate(&DemoConfig::full()).unwrap();
        let counts = demo.counts();
        assert_eq!(counts.training_documents, 4_800);
        assert_eq!(counts.questions, 240);
        assert_eq!(counts.translations, 200);
        assert_eq!(counts.validation_documents, 160);
        assert_eq!(counts.raw_lines, 4_800 + 120 + 100 + 100 + 60 + 24);
    }
}
