//! The embedded default training corpus: a deterministic generator of
//! bilingual English/Chinese text about an invented world.
//!
//! `cargo xtask train` with no arguments trains on this corpus, so a fresh
//! checkout can train a small model without downloading anything. The text
//! is written by this module, from a seed, with structure a model of one to
//! ten million parameters can learn in minutes: a small fixed vocabulary,
//! facts that never contradict each other, translation pairs in one fixed
//! format, and sums whose answers are correct.
//!
//! # The world
//!
//! [`World::new`] draws, from the seed alone:
//!
//! - **lakes** (`Lake Osk` / `奥斯克湖`), into which some rivers flow;
//! - **rivers** (`the river Tarn` / `塔恩河`), each with a length in
//!   kilometres and a mouth (a lake or the sea);
//! - **towns** (`Velmora` / `维尔莫拉`), each on one river, known for one
//!   [`Craft`], with a market day ([`Weekday`]) and an emblem ([`Animal`]);
//! - **people** (`Ardo` / `阿尔多`), each living in a town, working at a
//!   craft, with an age, a pet (a [`Color`] and an [`Animal`]) and exactly one
//!   best friend (friendship is symmetric).
//!
//! Names are built from a fixed table of syllables, each with one Chinese
//! transliteration (`vel` ↔ `维尔`, `mo` ↔ `莫`, `ra` ↔ `拉`), so the
//! mapping from an English name to its Chinese name is itself learnable.
//! Names are unique across the whole world in both languages.
//!
//! Every attribute is stated as a [`Fact`]: one of eleven [`Relation`]s,
//! rendered by one fixed English template and one fixed Chinese template
//! ("The town of Velmora lies on the river Tarn." / "维尔莫拉镇坐落在塔恩河畔。").
//! Each rendering carries a prompt, an answer and a question, so an
//! evaluation can ask "Where does Ardo live?" and check the answer.
//!
//! # Documents
//!
//! A corpus is a list of [`Document`]s; each is one training example. The
//! kinds are mixed by the fixed ratio of [`DocumentMix`] (by default):
//!
//! | kind | share | what |
//! |---|---|---|
//! | [`DocumentKind::Facts`] | 30 % | a paragraph of facts about one town, person or river, or a few random facts |
//! | [`DocumentKind::Story`] | 25 % | a short story (market day, a river journey, a lost pet, an apprentice, a festival) that restates the facts it relies on |
//! | [`DocumentKind::Translation`] | 20 % | three to five `English: …` / `中文：…` sentence pairs |
//! | [`DocumentKind::Arithmetic`] | 15 % | sums, differences and products: symbols, number words, word problems |
//! | [`DocumentKind::Questions`] | 10 % | `Q: …` / `A: …` (or `问：…` / `答：…`) pairs about the facts |
//!
//! The ratio is exact: every block of `mix.total()` consecutive documents
//! holds each kind exactly its weight's number of times, in a shuffled
//! order. Facts, stories and questions are English (40 %), Chinese (40 %) or
//! both, English first (20 %); arithmetic is English or Chinese (50 % each);
//! translations are always bilingual.
//!
//! Chinese text uses Chinese punctuation (`，。：？、`) and never puts an
//! ASCII space next to a Chinese character. Numbers inside Chinese sentences
//! are Arabic digits, except in arithmetic, where they are also written as
//! Chinese numerals (十七加二十五等于四十二。).
//!
//! # Splits
//!
//! Training document `i` is generated from `(seed, "training", i)` alone, so
//! [`Corpus::document`] costs the same for any `i`. Validation documents come
//! from a separate stream `(seed, "validation", i)` over the same world, and
//! any validation text that also occurs in the training set is skipped, so
//! the two splits are disjoint as texts (they share facts by design: the
//! world is what a model should learn).
//!
//! # Determinism
//!
//! The generator uses only integer arithmetic, a SplitMix64 generator written
//! here, ordered containers and fixed tables, so a seed gives byte-identical
//! text on every platform and Rust version.
//!
//! # Extending
//!
//! - **A relation**: add a [`Relation`] variant, its English and Chinese
//!   templates in `World::build_facts`, its place in `World::facts_of`, and
//!   its pattern in the consistency test at the bottom of this file.
//! - **A story**: write a `fn(&World, &mut Rng) -> Bilingual` in the
//!   *Stories* section and add it to `STORIES`. Restate any fact the story
//!   relies on with `Sentences::fact`, never with a paraphrase, so the
//!   consistency test can check it.
//! - **A document kind**: add a [`DocumentKind`] variant, a weight in
//!   [`DocumentMix`], and a generator in the *Documents* section.
//! - **A bigger world**: raise the counts in [`WorldConfig`].
//!
//! # The demo dataset
//!
//! [`demo`] turns this corpus into the dataset of `cargo xtask demo`: raw
//! records with planted dirt for the cleaning stage, and evaluation files
//! (multiple-choice questions, held-out translation pairs, validation text)
//! whose question wording occurs in no training record.
//!
//! # Example
//!
//! ```
//! use kaiyuan_train::corpus::{documents, CorpusConfig};
//!
//! let config = CorpusConfig { documents: 50, ..CorpusConfig::default() };
//! let texts = documents(&config)?;
//! assert_eq!(texts.len(), 50);
//! assert_eq!(texts, documents(&config)?); // same seed, same text
//! # Ok::<(), kaiyuan_train::TrainError>(())
//! ```

use std::collections::BTreeSet;

use crate::{Result, TrainError};

pub mod demo;

// ===========================================================================
// Configuration
// ===========================================================================

/// Most towns a [`WorldConfig`] may ask for.
pub const MAX_TOWNS: usize = 32;
/// Most rivers a [`WorldConfig`] may ask for.
pub const MAX_RIVERS: usize = 16;
/// Most lakes a [`WorldConfig`] may ask for.
pub const MAX_LAKES: usize = 8;
/// Most people a [`WorldConfig`] may ask for.
pub const MAX_PEOPLE: usize = 256;
/// Most documents one split may hold.
pub const MAX_DOCUMENTS: usize = 10_000_000;
/// Largest [`DocumentMix::total`].
pub const MAX_MIX_TOTAL: u32 = 1_000;

/// How big the generated [`World`] is.
///
/// The default (8 towns, 4 rivers, 2 lakes, 24 people) states 160 facts,
/// few enough that a small model sees each one many times in a default run.
///
/// ```
/// use kaiyuan_train::corpus::WorldConfig;
///
/// assert!(WorldConfig::default().validate().is_ok());
/// assert!(WorldConfig { people: 5, ..WorldConfig::default() }.validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorldConfig {
    /// Number of towns, `1..=MAX_TOWNS`.
    pub towns: usize,
    /// Number of rivers, `1..=MAX_RIVERS` and at most `towns` (every river
    /// has a town on it).
    pub rivers: usize,
    /// Number of lakes, `0..=MAX_LAKES`; with none, every river flows into
    /// the sea.
    pub lakes: usize,
    /// Number of people, even (best friends come in pairs), `2..=MAX_PEOPLE`.
    pub people: usize,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            towns: 8,
            rivers: 4,
            lakes: 2,
            people: 24,
        }
    }
}

impl WorldConfig {
    /// Checks every count against its documented range.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidArgument`] naming the first field out of range.
    ///
    /// ```
    /// use kaiyuan_train::corpus::WorldConfig;
    ///
    /// let too_many_rivers = WorldConfig { towns: 2, rivers: 3, ..WorldConfig::default() };
    /// assert!(too_many_rivers.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_TOWNS).contains(&self.towns) {
            return Err(TrainError::invalid(
                "world.towns",
                format!("{} is outside 1..={MAX_TOWNS}", self.towns),
            ));
        }
        if !(1..=MAX_RIVERS.min(self.towns)).contains(&self.rivers) {
            return Err(TrainError::invalid(
                "world.rivers",
                format!(
                    "{} is outside 1..={} (at most {MAX_RIVERS}, and no more rivers than towns)",
                    self.rivers,
                    MAX_RIVERS.min(self.towns)
                ),
            ));
        }
        if self.lakes > MAX_LAKES {
            return Err(TrainError::invalid(
                "world.lakes",
                format!("{} is outside 0..={MAX_LAKES}", self.lakes),
            ));
        }
        if !(2..=MAX_PEOPLE).contains(&self.people) || !self.people.is_multiple_of(2) {
            return Err(TrainError::invalid(
                "world.people",
                format!(
                    "{} must be even and within 2..={MAX_PEOPLE} (best friends come in pairs)",
                    self.people
                ),
            ));
        }
        Ok(())
    }
}

/// Relative weights of the [`DocumentKind`]s.
///
/// Every block of [`DocumentMix::total`] consecutive documents holds exactly
/// `weight` documents of each kind. A weight of zero leaves the kind out.
///
/// ```
/// use kaiyuan_train::corpus::DocumentMix;
///
/// let mix = DocumentMix::default();
/// assert_eq!(mix.total(), 100);
/// assert_eq!((mix.facts, mix.stories, mix.translations), (30, 25, 20));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DocumentMix {
    /// Weight of [`DocumentKind::Facts`].
    pub facts: u32,
    /// Weight of [`DocumentKind::Story`].
    pub stories: u32,
    /// Weight of [`DocumentKind::Translation`].
    pub translations: u32,
    /// Weight of [`DocumentKind::Arithmetic`].
    pub arithmetic: u32,
    /// Weight of [`DocumentKind::Questions`].
    pub questions: u32,
}

impl Default for DocumentMix {
    fn default() -> Self {
        Self {
            facts: 30,
            stories: 25,
            translations: 20,
            arithmetic: 15,
            questions: 10,
        }
    }
}

impl DocumentMix {
    /// The weight of one kind.
    ///
    /// ```
    /// use kaiyuan_train::corpus::{DocumentKind, DocumentMix};
    ///
    /// assert_eq!(DocumentMix::default().weight(DocumentKind::Arithmetic), 15);
    /// ```
    pub fn weight(&self, kind: DocumentKind) -> u32 {
        match kind {
            DocumentKind::Facts => self.facts,
            DocumentKind::Story => self.stories,
            DocumentKind::Translation => self.translations,
            DocumentKind::Arithmetic => self.arithmetic,
            DocumentKind::Questions => self.questions,
        }
    }

    /// The sum of all weights (saturating), the length of one block of the
    /// exact ratio.
    ///
    /// ```
    /// use kaiyuan_train::corpus::DocumentMix;
    ///
    /// let only_sums = DocumentMix { facts: 0, stories: 0, translations: 0, arithmetic: 3, questions: 0 };
    /// assert_eq!(only_sums.total(), 3);
    /// ```
    pub fn total(&self) -> u32 {
        DocumentKind::ALL
            .iter()
            .fold(0u32, |sum, &kind| sum.saturating_add(self.weight(kind)))
    }

    /// Checks that the total is within `1..=MAX_MIX_TOTAL`.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidArgument`] for `mix` when all weights are zero or
    /// the total is too large.
    ///
    /// ```
    /// use kaiyuan_train::corpus::DocumentMix;
    ///
    /// let none = DocumentMix { facts: 0, stories: 0, translations: 0, arithmetic: 0, questions: 0 };
    /// assert!(none.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        let total = self.total();
        if !(1..=MAX_MIX_TOTAL).contains(&total) {
            return Err(TrainError::invalid(
                "mix",
                format!("the weights sum to {total}; they must sum to 1..={MAX_MIX_TOTAL}"),
            ));
        }
        Ok(())
    }
}

/// Everything that determines a corpus.
///
/// The default (seed 0, 4,800 documents, the default world and mix) is about
/// 1.5 MB of UTF-8 text (about one million characters).
///
/// ```
/// use kaiyuan_train::corpus::CorpusConfig;
///
/// let config = CorpusConfig { seed: 7, ..CorpusConfig::default() };
/// assert!(config.validate().is_ok());
/// assert!(CorpusConfig { documents: 0, ..config }.validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CorpusConfig {
    /// Seed of the world and of every document.
    pub seed: u64,
    /// Number of training documents, `1..=MAX_DOCUMENTS`.
    pub documents: usize,
    /// Size of the world.
    pub world: WorldConfig,
    /// Ratio of document kinds.
    pub mix: DocumentMix,
}

impl Default for CorpusConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            documents: DEFAULT_DOCUMENTS,
            world: WorldConfig::default(),
            mix: DocumentMix::default(),
        }
    }
}

/// Training documents in the default corpus.
const DEFAULT_DOCUMENTS: usize = 4_800;

impl CorpusConfig {
    /// Checks the document count, the world and the mix.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidArgument`] naming the first field out of range.
    ///
    /// ```
    /// use kaiyuan_train::corpus::CorpusConfig;
    ///
    /// assert!(CorpusConfig::default().validate().is_ok());
    /// ```
    pub fn validate(&self) -> Result<()> {
        check_document_count("documents", self.documents)?;
        self.world.validate()?;
        self.mix.validate()
    }
}

fn check_document_count(what: &str, count: usize) -> Result<()> {
    if !(1..=MAX_DOCUMENTS).contains(&count) {
        return Err(TrainError::invalid(
            what,
            format!("{count} documents requested; ask for 1..={MAX_DOCUMENTS}"),
        ));
    }
    Ok(())
}

// ===========================================================================
// Randomness
// ===========================================================================

/// SplitMix64 (Steele, Lea and Flood 2014): 64 bits of state, integer
/// arithmetic only, so every platform draws the same numbers.
#[derive(Debug, Clone)]
struct Rng {
    state: u64,
}

/// Stream tags, so the world, the schedule and each split draw independent
/// numbers from one seed.
const STREAM_WORLD: u64 = 0x0057_4F52_4C44; // "WORLD"
const STREAM_TRAINING: u64 = 0x0054_5241_494E; // "TRAIN"
const STREAM_VALIDATION: u64 = 0x0056_414C_4944; // "VALID"
const STREAM_SCHEDULE: u64 = 0x0053_4348_4544; // "SCHED"

/// The SplitMix64 output function, a bijection on `u64`.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator for item `index` of stream `stream` under `seed`.
    fn derive(seed: u64, stream: u64, index: u64) -> Self {
        let a = mix64(seed ^ mix64(stream.wrapping_add(0x9E37_79B9_7F4A_7C15)));
        Self {
            state: mix64(a ^ mix64(index.wrapping_add(0xD1B5_4A32_D192_ED03))),
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2⁻⁴⁰
    /// for the sizes used here). Returns 0 when `n` is 0.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi` (`lo` when `hi < lo`).
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo) as usize + 1) as u32
    }

    /// True with probability `percent`/100.
    fn percent(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty constant table.
    fn pick<T: Copy, const N: usize>(&mut self, table: &[T; N]) -> T {
        table[self.below(N)]
    }

    /// Fisher–Yates.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

// ===========================================================================
// Vocabulary
// ===========================================================================

/// Syllables of invented names and their fixed Chinese transliterations.
/// English spellings are distinct, and so are the Chinese ones.
const SYLLABLES: [(&str, &str); 47] = [
    ("ba", "巴"),
    ("bel", "贝尔"),
    ("bri", "布里"),
    ("da", "达"),
    ("dor", "多尔"),
    ("fen", "芬"),
    ("ga", "加"),
    ("gor", "戈尔"),
    ("ha", "哈"),
    ("ka", "卡"),
    ("kel", "凯尔"),
    ("ki", "基"),
    ("kor", "科尔"),
    ("li", "莉"),
    ("lin", "林"),
    ("lo", "洛"),
    ("lu", "卢"),
    ("ma", "玛"),
    ("mar", "马尔"),
    ("mi", "米"),
    ("mo", "莫"),
    ("na", "娜"),
    ("ne", "内"),
    ("nor", "诺尔"),
    ("os", "奥斯"),
    ("pa", "帕"),
    ("per", "佩尔"),
    ("ra", "拉"),
    ("ren", "伦"),
    ("ri", "里"),
    ("sa", "萨"),
    ("sel", "塞尔"),
    ("si", "西"),
    ("sten", "斯滕"),
    ("ta", "塔"),
    ("tarn", "塔恩"),
    ("ti", "蒂"),
    ("tor", "托尔"),
    ("ul", "乌尔"),
    ("va", "瓦"),
    ("vel", "维尔"),
    ("ven", "文"),
    ("wen", "温"),
    ("ya", "雅"),
    ("zo", "佐"),
    ("do", "多"),
    ("em", "埃姆"),
];

/// A name in both languages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name {
    /// English spelling, e.g. `Velmora`.
    pub english: String,
    /// Chinese rendering, e.g. `维尔莫拉`.
    pub chinese: String,
}

impl Name {
    fn fixed(english: &str, chinese: &str) -> Self {
        Self {
            english: english.to_owned(),
            chinese: chinese.to_owned(),
        }
    }
}

/// A craft a town is known for and a person works at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Craft {
    /// Weavers weave bolts of cloth.
    Weaving,
    /// Potters make pots.
    Pottery,
    /// Smiths forge knives.
    Ironwork,
    /// Bakers bake bread.
    Baking,
    /// Fishers catch fish.
    Fishing,
    /// Carpenters make chairs.
    Carpentry,
    /// Tea makers pack boxes of tea.
    Tea,
    /// Paper makers make sheets of paper.
    Paper,
    /// Glassblowers blow glass cups.
    Glass,
    /// Dyers dye scarves.
    Dyeing,
}

/// Words for one craft, in both languages.
struct CraftWords {
    /// What a town is known for: "Velmora is known for its pottery."
    renown_en: &'static str,
    renown_zh: &'static str,
    /// Who works at it: "Ardo is a potter."
    worker_en: &'static str,
    worker_zh: &'static str,
    /// What one learns: "wanted to learn to make pots" / "想学制陶".
    skill_en: &'static str,
    skill_zh: &'static str,
    /// How goods come about, past tense: "made 3 pots" / "做了3个陶罐".
    made_en: &'static str,
    made_zh: &'static str,
    /// The goods, singular and plural, and the Chinese noun and measure word.
    item_en: &'static str,
    items_en: &'static str,
    item_zh: &'static str,
    measure_zh: &'static str,
}

impl Craft {
    /// Every craft, in declaration order.
    pub const ALL: [Craft; 10] = [
        Craft::Weaving,
        Craft::Pottery,
        Craft::Ironwork,
        Craft::Baking,
        Craft::Fishing,
        Craft::Carpentry,
        Craft::Tea,
        Craft::Paper,
        Craft::Glass,
        Craft::Dyeing,
    ];

    /// What a town known for this craft is known for, e.g. `pottery`.
    ///
    /// ```
    /// use kaiyuan_train::corpus::Craft;
    ///
    /// assert_eq!(Craft::Pottery.english(), "pottery");
    /// ```
    pub fn english(self) -> &'static str {
        self.words().renown_en
    }

    /// The Chinese of [`Craft::english`], e.g. `制陶`.
    ///
    /// ```
    /// use kaiyuan_train::corpus::Craft;
    ///
    /// assert_eq!(Craft::Pottery.chinese(), "制陶");
    /// ```
    pub fn chinese(self) -> &'static str {
        self.words().renown_zh
    }

    /// Someone who works at this craft, e.g. `potter`.
    ///
    /// ```
    /// use kaiyuan_train::corpus::Craft;
    ///
    /// assert_eq!(Craft::Ironwork.worker_english(), "smith");
    /// ```
    pub fn worker_english(self) -> &'static str {
        self.words().worker_en
    }

    /// The Chinese of [`Craft::worker_english`], e.g. `陶匠`.
    ///
    /// ```
    /// use kaiyuan_train::corpus::Craft;
    ///
    /// assert_eq!(Craft::Ironwork.worker_chinese(), "铁匠");
    /// ```
    pub fn worker_chinese(self) -> &'static str {
        self.words().worker_zh
    }

    fn words(self) -> &'static CraftWords {
        match self {
            Craft::Weaving => &CraftWords {
                renown_en: "weaving",
                renown_zh: "织布",
                worker_en: "weaver",
                worker_zh: "织工",
                skill_en: "weave",
                skill_zh: "织布",
                made_en: "wove",
                made_zh: "织了",
                item_en: "bolt of cloth",
                items_en: "bolts of cloth",
                item_zh: "布",
                measure_zh: "匹",
            },
            Craft::Pottery => &CraftWords {
                renown_en: "pottery",
                renown_zh: "制陶",
                worker_en: "potter",
                worker_zh: "陶匠",
                skill_en: "make pots",
                skill_zh: "制陶",
                made_en: "made",
                made_zh: "做了",
                item_en: "pot",
                items_en: "pots",
                item_zh: "陶罐",
                measure_zh: "个",
            },
            Craft::Ironwork => &CraftWords {
                renown_en: "ironwork",
                renown_zh: "打铁",
                worker_en: "smith",
                worker_zh: "铁匠",
                skill_en: "work iron",
                skill_zh: "打铁",
                made_en: "forged",
                made_zh: "打了",
                item_en: "knife",
                items_en: "knives",
                item_zh: "刀",
                measure_zh: "把",
            },
            Craft::Baking => &CraftWords {
                renown_en: "bread",
                renown_zh: "面包",
                worker_en: "baker",
                worker_zh: "面包师",
                skill_en: "bake bread",
                skill_zh: "做面包",
                made_en: "baked",
                made_zh: "烤了",
                item_en: "loaf of bread",
                items_en: "loaves of bread",
                item_zh: "面包",
                measure_zh: "个",
            },
            Craft::Fishing => &CraftWords {
                renown_en: "fish",
                renown_zh: "鱼",
                worker_en: "fisher",
                worker_zh: "渔民",
                skill_en: "fish",
                skill_zh: "捕鱼",
                made_en: "caught",
                made_zh: "捕了",
                item_en: "fish",
                items_en: "fish",
                item_zh: "鱼",
                measure_zh: "条",
            },
            Craft::Carpentry => &CraftWords {
                renown_en: "carpentry",
                renown_zh: "木工",
                worker_en: "carpenter",
                worker_zh: "木匠",
                skill_en: "make chairs",
                skill_zh: "做椅子",
                made_en: "built",
                made_zh: "做了",
                item_en: "chair",
                items_en: "chairs",
                item_zh: "椅子",
                measure_zh: "把",
            },
            Craft::Tea => &CraftWords {
                renown_en: "tea",
                renown_zh: "茶",
                worker_en: "tea maker",
                worker_zh: "制茶师",
                skill_en: "make tea",
                skill_zh: "制茶",
                made_en: "packed",
                made_zh: "装了",
                item_en: "box of tea",
                items_en: "boxes of tea",
                item_zh: "茶",
                measure_zh: "盒",
            },
            Craft::Paper => &CraftWords {
                renown_en: "paper",
                renown_zh: "造纸",
                worker_en: "paper maker",
                worker_zh: "造纸匠",
                skill_en: "make paper",
                skill_zh: "造纸",
                made_en: "made",
                made_zh: "造了",
                item_en: "sheet of paper",
                items_en: "sheets of paper",
                item_zh: "纸",
                measure_zh: "张",
            },
            Craft::Glass => &CraftWords {
                renown_en: "glass",
                renown_zh: "玻璃",
                worker_en: "glassblower",
                worker_zh: "玻璃匠",
                skill_en: "blow glass",
                skill_zh: "吹玻璃",
                made_en: "blew",
                made_zh: "吹了",
                item_en: "glass cup",
                items_en: "glass cups",
                item_zh: "玻璃杯",
                measure_zh: "个",
            },
            Craft::Dyeing => &CraftWords {
                renown_en: "dyed cloth",
                renown_zh: "染布",
                worker_en: "dyer",
                worker_zh: "染匠",
                skill_en: "dye cloth",
                skill_zh: "染布",
                made_en: "dyed",
                made_zh: "染了",
                item_en: "scarf",
                items_en: "scarves",
                item_zh: "围巾",
                measure_zh: "条",
            },
        }
    }
}

/// An animal: a town's emblem, a person's pet, a creature in a story.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Animal {
    /// 狐狸.
    Fox,
    /// 苍鹭.
    Heron,
    /// 山羊.
    Goat,
    /// 水獭.
    Otter,
    /// 乌鸦.
    Crow,
    /// 鹿.
    Deer,
    /// 猫头鹰.
    Owl,
    /// 猫.
    Cat,
    /// 马.
    Horse,
    /// 牛.
    Ox,
}

impl Animal {
    /// Every animal, in declaration order.
    pub const ALL: [Animal; 10] = [
        Animal::Fox,
        Animal::Heron,
        Animal::Goat,
        Animal::Otter,
        Animal::Crow,
        Animal::Deer,
        Animal::Owl,
        Animal::Cat,
        Animal::Horse,
        Animal::Ox,
    ];

    /// English singular, e.g. `heron`.
    ///
    /// ```
    /// use kaiyuan_train::corpus::Animal;
    ///
    /// assert_eq!(Animal::Heron.english(), "heron");
    /// ```
    pub fn english(self) -> &'static str {
        self.words().0
    }

    /// Chinese noun, e.g. `苍鹭`.
    ///
    /// ```
    /// use kaiyuan_train::corpus::Animal;
    ///
    /// assert_eq!(Animal::Heron.chinese(), "苍鹭");
    /// ```
    pub fn chinese(self) -> &'static str {
        self.words().1
    }

    /// The Chinese measure word: 只, 头 or 匹.
    fn measure(self) -> &'static str {
        self.words().2
    }

    fn words(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Animal::Fox => ("fox", "狐狸", "只"),
            Animal::Heron => ("heron", "苍鹭", "只"),
            Animal::Goat => ("goat", "山羊", "只"),
            Animal::Otter => ("otter", "水獭", "只"),
            Animal::Crow => ("crow", "乌鸦", "只"),
            Animal::Deer => ("deer", "鹿", "头"),
            Animal::Owl => ("owl", "猫头鹰", "只"),
            Animal::Cat => ("cat", "猫", "只"),
            Animal::Horse => ("horse", "马", "匹"),
            Animal::Ox => ("ox", "牛", "头"),
        }
    }
}

/// The colour of a pet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Color {
    /// 红色.
    Red,
    /// 白色.
    White,
    /// 黑色.
    Black,
    /// 灰色.
    Grey,
    /// 棕色.
    Brown,
    /// 金色.
    Golden,
}

impl Color {
    /// Every colour, in declaration order.
    pub const ALL: [Color; 6] = [
        Color::Red,
        Color::White,
        Color::Black,
        Color::Grey,
        Color::Brown,
        Color::Golden,
    ];

    /// English adjective, e.g. `grey`.
    ///
    /// ```
    /// use kaiyuan_train::corpus::Color;
    ///
    /// assert_eq!(Color::Grey.english(), "grey");
    /// ```
    pub fn english(self) -> &'static str {
        match self {
            Color::Red => "red",
            Color::White => "white",
            Color::Black => "black",
            Color::Grey => "grey",
            Color::Brown => "brown",
            Color::Golden => "golden",
        }
    }

    /// Chinese adjective, e.g. `灰色`.
    ///
    /// ```
    /// use kaiyuan_train::corpus::Color;
    ///
    /// assert_eq!(Color::Grey.chinese(), "灰色");
    /// ```
    pub fn chinese(self) -> &'static str {
        match self {
            Color::Red => "红色",
            Color::White => "白色",
            Color::Black => "黑色",
            Color::Grey => "灰色",
            Color::Brown => "棕色",
            Color::Golden => "金色",
        }
    }
}

/// A day of the week: a town's market day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Weekday {
    /// 星期一.
    Monday,
    /// 星期二.
    Tuesday,
    /// 星期三.
    Wednesday,
    /// 星期四.
    Thursday,
    /// 星期五.
    Friday,
    /// 星期六.
    Saturday,
    /// 星期日.
    Sunday,
}

impl Weekday {
    /// Every day, Monday first.
    pub const ALL: [Weekday; 7] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];

    /// English name, e.g. `Tuesday`.
    ///
    /// ```
    /// use kaiyuan_train::corpus::Weekday;
    ///
    /// assert_eq!(Weekday::Tuesday.english(), "Tuesday");
    /// ```
    pub fn english(self) -> &'static str {
        match self {
            Weekday::Monday => "Monday",
            Weekday::Tuesday => "Tuesday",
            Weekday::Wednesday => "Wednesday",
            Weekday::Thursday => "Thursday",
            Weekday::Friday => "Friday",
            Weekday::Saturday => "Saturday",
            Weekday::Sunday => "Sunday",
        }
    }

    /// Chinese name, e.g. `星期二`.
    ///
    /// ```
    /// use kaiyuan_train::corpus::Weekday;
    ///
    /// assert_eq!(Weekday::Tuesday.chinese(), "星期二");
    /// ```
    pub fn chinese(self) -> &'static str {
        match self {
            Weekday::Monday => "星期一",
            Weekday::Tuesday => "星期二",
            Weekday::Wednesday => "星期三",
            Weekday::Thursday => "星期四",
            Weekday::Friday => "星期五",
            Weekday::Saturday => "星期六",
            Weekday::Sunday => "星期日",
        }
    }
}

/// Seasons of stories, English and Chinese.
const SEASONS: [(&str, &str); 4] = [
    ("spring", "春天"),
    ("summer", "夏天"),
    ("autumn", "秋天"),
    ("winter", "冬天"),
];

/// Past time phrases opening event sentences, English and Chinese.
const TIMES: [(&str, &str); 6] = [
    ("Yesterday", "昨天"),
    ("Last week", "上个星期"),
    ("Last winter", "去年冬天"),
    ("Last spring", "去年春天"),
    ("That morning", "那天早上"),
    ("In the evening", "傍晚"),
];

/// `a` or `an` before `word`.
fn article(word: &str) -> &'static str {
    match word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

/// `word` with its first letter in upper case.
fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `A`, `A and B`, `A, B and C`.
fn english_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// `A`, `A和B`, `A、B和C`.
fn chinese_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{}和{last}", init.join("、")),
    }
}

// ===========================================================================
// Numbers in words
// ===========================================================================

const ENGLISH_ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const ENGLISH_TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];
const CHINESE_DIGITS: [&str; 10] = ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九"];

fn english_below_100(n: u32) -> String {
    let n = n % 100;
    if n < 20 {
        return ENGLISH_ONES[n as usize].to_owned();
    }
    let tens = ENGLISH_TENS[(n / 10) as usize];
    match n % 10 {
        0 => tens.to_owned(),
        ones => format!("{tens}-{}", ENGLISH_ONES[ones as usize]),
    }
}

fn english_below_1000(n: u32) -> String {
    let n = n % 1000;
    if n < 100 {
        return english_below_100(n);
    }
    let hundreds = format!("{} hundred", ENGLISH_ONES[(n / 100) as usize]);
    match n % 100 {
        0 => hundreds,
        rest => format!("{hundreds} and {}", english_below_100(rest)),
    }
}

/// British English words for `n` ("one hundred and forty-two"); digits from
/// 10,000 on.
fn english_number(n: u32) -> String {
    if n < 1000 {
        return english_below_1000(n);
    }
    if n >= 10_000 {
        return n.to_string();
    }
    let thousands = format!("{} thousand", ENGLISH_ONES[(n / 1000) as usize]);
    match n % 1000 {
        0 => thousands,
        rest if rest < 100 => format!("{thousands} and {}", english_below_100(rest)),
        rest => format!("{thousands} {}", english_below_1000(rest)),
    }
}

/// `一十五` style tens (after 百 or 千) for `1..=99`.
fn chinese_inner_below_100(n: u32) -> String {
    let n = n % 100;
    let mut out = String::new();
    if n >= 10 {
        out.push_str(CHINESE_DIGITS[(n / 10) as usize]);
        out.push('十');
    }
    if !n.is_multiple_of(10) {
        out.push_str(CHINESE_DIGITS[(n % 10) as usize]);
    }
    out
}

/// What follows 百: nothing, 零五, or 一十五.
fn chinese_after_hundreds(rest: u32) -> String {
    match rest % 100 {
        0 => String::new(),
        r if r < 10 => format!("零{}", CHINESE_DIGITS[r as usize]),
        r => chinese_inner_below_100(r),
    }
}

/// Chinese numerals for `n` (十七, 一百零五, 一千零一十); digits from 10,000 on.
fn chinese_number(n: u32) -> String {
    match n {
        0..=9 => CHINESE_DIGITS[n as usize].to_owned(),
        10..=19 => format!(
            "十{}",
            if n == 10 {
                ""
            } else {
                CHINESE_DIGITS[(n - 10) as usize]
            }
        ),
        20..=99 => chinese_inner_below_100(n),
        100..=999 => format!(
            "{}百{}",
            CHINESE_DIGITS[(n / 100) as usize],
            chinese_after_hundreds(n % 100)
        ),
        1000..=9999 => {
            let rest = n % 1000;
            let tail = match rest {
                0 => String::new(),
                1..=99 => format!(
                    "零{}",
                    chinese_after_hundreds(rest).trim_start_matches('零')
                ),
                _ => format!(
                    "{}百{}",
                    CHINESE_DIGITS[(rest / 100) as usize],
                    chinese_after_hundreds(rest % 100)
                ),
            };
            format!("{}千{tail}", CHINESE_DIGITS[(n / 1000) as usize])
        }
        _ => n.to_string(),
    }
}

// ===========================================================================
// The world
// ===========================================================================

/// A lake some rivers flow into.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lake {
    /// Bare name, e.g. `Osk` / `奥斯克`; sentences say `Lake Osk` / `奥斯克湖`.
    pub name: Name,
}

/// Where a river ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mouth {
    /// The sea (`the sea` / `大海`).
    Sea,
    /// The lake at this index of [`World::lakes`].
    Lake(usize),
}

/// A river.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct River {
    /// Bare name, e.g. `Tarn` / `塔恩`; sentences say `the river Tarn` / `塔恩河`.
    pub name: Name,
    /// Length, a multiple of 10 in `50..=800`.
    pub length_km: u32,
    /// Where it flows.
    pub mouth: Mouth,
}

/// A town.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Town {
    /// Name, e.g. `Velmora` / `维尔莫拉`.
    pub name: Name,
    /// Index into [`World::rivers`] of the river it lies on.
    pub river: usize,
    /// What it is known for.
    pub craft: Craft,
    /// Its market day.
    pub market_day: Weekday,
    /// Its emblem.
    pub emblem: Animal,
}

/// A person's pet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pet {
    /// Kind of animal.
    pub animal: Animal,
    /// Its colour.
    pub color: Color,
}

/// Grammatical gender of a person, for pronouns (she/he, 她/他).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gender {
    /// she, her, 她.
    Female,
    /// he, him, his, 他.
    Male,
}

impl Gender {
    fn subject(self) -> &'static str {
        match self {
            Gender::Female => "she",
            Gender::Male => "he",
        }
    }

    fn possessive(self) -> &'static str {
        match self {
            Gender::Female => "her",
            Gender::Male => "his",
        }
    }

    fn chinese(self) -> &'static str {
        match self {
            Gender::Female => "她",
            Gender::Male => "他",
        }
    }
}

/// A person.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Person {
    /// Given name, e.g. `Ardo` / `阿尔多`.
    pub name: Name,
    /// For pronouns.
    pub gender: Gender,
    /// Index into [`World::towns`] of the town the person lives in.
    pub home: usize,
    /// What the person works at.
    pub craft: Craft,
    /// Age in years, `18..=80`.
    pub age: u32,
    /// The person's pet.
    pub pet: Pet,
    /// Index into [`World::people`] of the best friend (whose best friend is
    /// this person).
    pub best_friend: usize,
}

/// What a [`Fact`] states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Relation {
    /// The town of Velmora lies on the river Tarn.
    TownRiver,
    /// Velmora is known for its pottery.
    TownCraft,
    /// Market day in Velmora is Tuesday.
    TownMarket,
    /// The emblem of Velmora is the heron.
    TownEmblem,
    /// The river Tarn is 240 kilometres long.
    RiverLength,
    /// The river Tarn flows into Lake Osk.
    RiverMouth,
    /// Ardo lives in Velmora.
    PersonHome,
    /// Ardo is a potter.
    PersonCraft,
    /// Ardo is 34 years old.
    PersonAge,
    /// Ardo keeps a grey goat.
    PersonPet,
    /// Ardo's best friend is Mira.
    PersonFriend,
}

/// One rendering of a fact in one language.
///
/// `text` is `prompt` followed by a completion that contains `answer`, so a
/// model can be scored on completing `prompt`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Statement {
    /// The whole sentence: `Ardo lives in Velmora.` / `阿尔多住在维尔莫拉。`
    pub text: String,
    /// The start of `text` before the answer: `Ardo lives in` / `阿尔多住在`.
    pub prompt: String,
    /// The answer: `Velmora` / `维尔莫拉`.
    pub answer: String,
    /// A question the answer answers: `Where does Ardo live?` / `阿尔多住在哪里？`
    pub question: String,
}

impl Statement {
    fn new(prompt: String, completion: String, answer: String, question: String) -> Self {
        Self {
            text: format!("{prompt}{completion}"),
            prompt,
            answer,
            question,
        }
    }

    /// What follows the prompt: ` Velmora.` / `维尔莫拉。`
    ///
    /// ```
    /// use kaiyuan_train::corpus::World;
    ///
    /// let world = World::new(0);
    /// let fact = &world.facts()[0];
    /// assert!(fact.english.completion().contains(&fact.english.answer));
    /// ```
    pub fn completion(&self) -> &str {
        self.text.get(self.prompt.len()..).unwrap_or("")
    }
}

/// One fact of the world, in both languages.
///
/// ```
/// use kaiyuan_train::corpus::{Relation, World};
///
/// let world = World::new(0);
/// let fact = world.facts().iter().find(|f| f.relation == Relation::PersonHome).unwrap();
/// let (english, chinese) = fact.pair();
/// assert!(english.starts_with(&fact.subject.english));
/// assert!(chinese.starts_with(&fact.subject.chinese));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fact {
    /// What kind of fact.
    pub relation: Relation,
    /// The town, river or person it is about.
    pub subject: Name,
    /// The English sentence.
    pub english: Statement,
    /// The Chinese sentence.
    pub chinese: Statement,
}

impl Fact {
    /// The `(english, chinese)` sentences.
    ///
    /// ```
    /// use kaiyuan_train::corpus::World;
    ///
    /// let world = World::new(0);
    /// let (english, chinese) = world.facts()[0].pair();
    /// assert!(english.ends_with('.') && chinese.ends_with('。'));
    /// ```
    pub fn pair(&self) -> (&str, &str) {
        (&self.english.text, &self.chinese.text)
    }
}

/// The invented world: lakes, rivers, towns, people and the facts about
/// them, all drawn from one seed.
///
/// ```
/// use kaiyuan_train::corpus::World;
///
/// let world = World::new(0);
/// assert_eq!(world, World::new(0));
/// assert_ne!(world, World::new(1));
/// assert_eq!(world.towns().len(), 8);
/// assert_eq!(world.facts().len(), 8 * 4 + 4 * 2 + 24 * 5);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct World {
    seed: u64,
    config: WorldConfig,
    lakes: Vec<Lake>,
    rivers: Vec<River>,
    towns: Vec<Town>,
    people: Vec<Person>,
    facts: Vec<Fact>,
}

/// The entity a group of facts is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entity {
    Town(usize),
    River(usize),
    Person(usize),
}

const FACTS_PER_TOWN: usize = 4;
const FACTS_PER_RIVER: usize = 2;
const FACTS_PER_PERSON: usize = 5;

/// Hands out names unique in both languages.
#[derive(Default)]
struct NameBook {
    english: BTreeSet<String>,
    chinese: BTreeSet<String>,
}

impl NameBook {
    /// A fresh name of `syllables` syllables, never the same syllable twice
    /// in a row; after every 64 collisions one more syllable, so this always
    /// ends.
    fn fresh(&mut self, rng: &mut Rng, syllables: usize) -> Name {
        let mut length = syllables.max(1);
        let mut attempts = 0u32;
        loop {
            let mut english = String::new();
            let mut chinese = String::new();
            let mut previous = SYLLABLES.len();
            let mut repeats = false;
            for _ in 0..length {
                let at = rng.below(SYLLABLES.len());
                let (en, zh) = SYLLABLES[at];
                repeats |= at == previous;
                previous = at;
                english.push_str(en);
                chinese.push_str(zh);
            }
            let english = capitalize(&english);
            if !repeats && !self.english.contains(&english) && !self.chinese.contains(&chinese) {
                self.english.insert(english.clone());
                self.chinese.insert(chinese.clone());
                return Name { english, chinese };
            }
            attempts += 1;
            if attempts.is_multiple_of(64) {
                length += 1;
            }
        }
    }
}

impl World {
    /// The world of `seed` with the default [`WorldConfig`].
    ///
    /// ```
    /// use kaiyuan_train::corpus::World;
    ///
    /// let world = World::new(42);
    /// assert_eq!(world.seed(), 42);
    /// assert_eq!(world.people().len(), 24);
    /// ```
    pub fn new(seed: u64) -> Self {
        Self::build(seed, WorldConfig::default())
    }

    /// The world of `seed` with the given sizes.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidArgument`] when `config` fails
    /// [`WorldConfig::validate`].
    ///
    /// ```
    /// use kaiyuan_train::corpus::{World, WorldConfig};
    ///
    /// let small = WorldConfig { towns: 3, rivers: 2, lakes: 0, people: 6 };
    /// let world = World::generate(5, &small)?;
    /// assert_eq!(world.people().len(), 6);
    /// assert_eq!(World::generate(5, &WorldConfig::default())?, World::new(5));
    /// # Ok::<(), kaiyuan_train::TrainError>(())
    /// ```
    pub fn generate(seed: u64, config: &WorldConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self::build(seed, *config))
    }

    /// Draws the world; `config` must be valid.
    fn build(seed: u64, config: WorldConfig) -> Self {
        let mut rng = Rng::derive(seed, STREAM_WORLD, 0);
        let mut names = NameBook::default();

        let lakes: Vec<Lake> = (0..config.lakes)
            .map(|_| Lake {
                name: names.fresh(&mut rng, 2),
            })
            .collect();

        let rivers: Vec<River> = (0..config.rivers)
            .map(|_| {
                let syllables = 1 + rng.below(2);
                let name = names.fresh(&mut rng, syllables);
                let length_km = 10 * rng.range(5, 80);
                let mouth = if lakes.is_empty() || rng.percent(34) {
                    Mouth::Sea
                } else {
                    Mouth::Lake(rng.below(lakes.len()))
                };
                River {
                    name,
                    length_km,
                    mouth,
                }
            })
            .collect();

        // Distinct crafts while there are enough; every river gets a town.
        let mut crafts = Craft::ALL;
        rng.shuffle(&mut crafts);
        let towns: Vec<Town> = (0..config.towns)
            .map(|i| {
                let syllables = 2 + rng.below(2);
                let name = names.fresh(&mut rng, syllables);
                let river = if i < rivers.len() {
                    i
                } else {
                    rng.below(rivers.len())
                };
                Town {
                    name,
                    river,
                    craft: crafts[i % crafts.len()],
                    market_day: rng.pick(&Weekday::ALL),
                    emblem: rng.pick(&Animal::ALL),
                }
            })
            .collect();

        // Every town gets a resident while there are enough people.
        let mut homes: Vec<usize> = (0..config.people)
            .map(|i| {
                if i < towns.len() {
                    i
                } else {
                    rng.below(towns.len())
                }
            })
            .collect();
        rng.shuffle(&mut homes);
        let mut people: Vec<Person> = homes
            .iter()
            .map(|&home| {
                let name = names.fresh(&mut rng, 2);
                let craft = if rng.percent(50) {
                    towns[home].craft
                } else {
                    rng.pick(&Craft::ALL)
                };
                Person {
                    name,
                    gender: if rng.percent(50) {
                        Gender::Female
                    } else {
                        Gender::Male
                    },
                    home,
                    craft,
                    age: rng.range(18, 80),
                    pet: Pet {
                        animal: rng.pick(&Animal::ALL),
                        color: rng.pick(&Color::ALL),
                    },
                    best_friend: 0,
                }
            })
            .collect();
        let mut order: Vec<usize> = (0..people.len()).collect();
        rng.shuffle(&mut order);
        for pair in order.chunks_exact(2) {
            if let [a, b] = *pair {
                people[a].best_friend = b;
                people[b].best_friend = a;
            }
        }

        let mut world = Self {
            seed,
            config,
            lakes,
            rivers,
            towns,
            people,
            facts: Vec::new(),
        };
        world.facts = world.build_facts();
        world
    }

    /// Every fact, towns first, then rivers, then people, in the order of
    /// [`World::facts_of`].
    fn build_facts(&self) -> Vec<Fact> {
        let mut facts = Vec::new();
        for town in &self.towns {
            let (t, tz) = (&town.name.english, &town.name.chinese);
            let river = &self.rivers[town.river].name;
            let craft = town.craft;
            let (day, animal) = (town.market_day, town.emblem);
            facts.push(Fact {
                relation: Relation::TownRiver,
                subject: town.name.clone(),
                english: Statement::new(
                    format!("The town of {t} lies on the river"),
                    format!(" {}.", river.english),
                    river.english.clone(),
                    format!("Which river does {t} lie on?"),
                ),
                chinese: Statement::new(
                    format!("{tz}镇坐落在"),
                    format!("{}河畔。", river.chinese),
                    river.chinese.clone(),
                    format!("{tz}镇坐落在哪条河畔？"),
                ),
            });
            facts.push(Fact {
                relation: Relation::TownCraft,
                subject: town.name.clone(),
                english: Statement::new(
                    format!("{t} is known for its"),
                    format!(" {}.", craft.english()),
                    craft.english().to_owned(),
                    format!("What is {t} known for?"),
                ),
                chinese: Statement::new(
                    format!("{tz}以"),
                    format!("{}闻名。", craft.chinese()),
                    craft.chinese().to_owned(),
                    format!("{tz}以什么闻名？"),
                ),
            });
            facts.push(Fact {
                relation: Relation::TownMarket,
                subject: town.name.clone(),
                english: Statement::new(
                    format!("Market day in {t} is"),
                    format!(" {}.", day.english()),
                    day.english().to_owned(),
                    format!("What is market day in {t}?"),
                ),
                chinese: Statement::new(
                    format!("{tz}的集市日是"),
                    format!("{}。", day.chinese()),
                    day.chinese().to_owned(),
                    format!("{tz}的集市日是星期几？"),
                ),
            });
            facts.push(Fact {
                relation: Relation::TownEmblem,
                subject: town.name.clone(),
                english: Statement::new(
                    format!("The emblem of {t} is the"),
                    format!(" {}.", animal.english()),
                    animal.english().to_owned(),
                    format!("What is the emblem of {t}?"),
                ),
                chinese: Statement::new(
                    format!("{tz}的徽记是"),
                    format!("{}。", animal.chinese()),
                    animal.chinese().to_owned(),
                    format!("{tz}的徽记是什么？"),
                ),
            });
        }
        for river in &self.rivers {
            let (r, rz) = (&river.name.english, &river.name.chinese);
            let km = river.length_km;
            let mouth = self.mouth_name(river.mouth);
            facts.push(Fact {
                relation: Relation::RiverLength,
                subject: river.name.clone(),
                english: Statement::new(
                    format!("The river {r} is"),
                    format!(" {km} kilometres long."),
                    km.to_string(),
                    format!("How long is the river {r}?"),
                ),
                chinese: Statement::new(
                    format!("{rz}河长"),
                    format!("{km}公里。"),
                    km.to_string(),
                    format!("{rz}河有多长？"),
                ),
            });
            facts.push(Fact {
                relation: Relation::RiverMouth,
                subject: river.name.clone(),
                english: Statement::new(
                    format!("The river {r} flows into"),
                    format!(" {}.", mouth.english),
                    mouth.english.clone(),
                    format!("Where does the river {r} flow?"),
                ),
                chinese: Statement::new(
                    format!("{rz}河流入"),
                    format!("{}。", mouth.chinese),
                    mouth.chinese.clone(),
                    format!("{rz}河流入哪里？"),
                ),
            });
        }
        for person in &self.people {
            let (p, pz) = (&person.name.english, &person.name.chinese);
            let home = &self.towns[person.home].name;
            let craft = person.craft;
            let worker = craft.worker_english();
            let age = person.age;
            let pet = person.pet;
            let pet_en = format!("{} {}", pet.color.english(), pet.animal.english());
            let pet_zh = format!("{}的{}", pet.color.chinese(), pet.animal.chinese());
            let friend = &self.people[person.best_friend].name;
            facts.push(Fact {
                relation: Relation::PersonHome,
                subject: person.name.clone(),
                english: Statement::new(
                    format!("{p} lives in"),
                    format!(" {}.", home.english),
                    home.english.clone(),
                    format!("Where does {p} live?"),
                ),
                chinese: Statement::new(
                    format!("{pz}住在"),
                    format!("{}。", home.chinese),
                    home.chinese.clone(),
                    format!("{pz}住在哪里？"),
                ),
            });
            facts.push(Fact {
                relation: Relation::PersonCraft,
                subject: person.name.clone(),
                english: Statement::new(
                    format!("{p} is {}", article(worker)),
                    format!(" {worker}."),
                    worker.to_owned(),
                    format!("What does {p} do?"),
                ),
                chinese: Statement::new(
                    format!("{pz}是一名"),
                    format!("{}。", craft.worker_chinese()),
                    craft.worker_chinese().to_owned(),
                    format!("{pz}是做什么的？"),
                ),
            });
            facts.push(Fact {
                relation: Relation::PersonAge,
                subject: person.name.clone(),
                english: Statement::new(
                    format!("{p} is"),
                    format!(" {age} years old."),
                    age.to_string(),
                    format!("How old is {p}?"),
                ),
                chinese: Statement::new(
                    format!("{pz}今年"),
                    format!("{age}岁。"),
                    age.to_string(),
                    format!("{pz}今年多大？"),
                ),
            });
            facts.push(Fact {
                relation: Relation::PersonPet,
                subject: person.name.clone(),
                english: Statement::new(
                    format!("{p} keeps {}", article(&pet_en)),
                    format!(" {pet_en}."),
                    pet_en.clone(),
                    format!("What animal does {p} keep?"),
                ),
                chinese: Statement::new(
                    format!("{pz}养着"),
                    format!("一{}{pet_zh}。", pet.animal.measure()),
                    pet_zh,
                    format!("{pz}养着什么动物？"),
                ),
            });
            facts.push(Fact {
                relation: Relation::PersonFriend,
                subject: person.name.clone(),
                english: Statement::new(
                    format!("{p}'s best friend is"),
                    format!(" {}.", friend.english),
                    friend.english.clone(),
                    format!("Who is {p}'s best friend?"),
                ),
                chinese: Statement::new(
                    format!("{pz}最好的朋友是"),
                    format!("{}。", friend.chinese),
                    friend.chinese.clone(),
                    format!("{pz}最好的朋友是谁？"),
                ),
            });
        }
        facts
    }

    /// `Lake Osk` / `奥斯克湖`, or `the sea` / `大海`.
    fn mouth_name(&self, mouth: Mouth) -> Name {
        match mouth {
            Mouth::Lake(i) => match self.lakes.get(i) {
                Some(lake) => Name {
                    english: format!("Lake {}", lake.name.english),
                    chinese: format!("{}湖", lake.name.chinese),
                },
                None => Name::fixed("the sea", "大海"),
            },
            Mouth::Sea => Name::fixed("the sea", "大海"),
        }
    }

    /// The seed the world was drawn from.
    ///
    /// ```
    /// use kaiyuan_train::corpus::World;
    ///
    /// assert_eq!(World::new(3).seed(), 3);
    /// ```
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The sizes the world was drawn with.
    ///
    /// ```
    /// use kaiyuan_train::corpus::{World, WorldConfig};
    ///
    /// assert_eq!(*World::new(0).config(), WorldConfig::default());
    /// ```
    pub fn config(&self) -> &WorldConfig {
        &self.config
    }

    /// The lakes.
    ///
    /// ```
    /// use kaiyuan_train::corpus::World;
    ///
    /// assert_eq!(World::new(0).lakes().len(), 2);
    /// ```
    pub fn lakes(&self) -> &[Lake] {
        &self.lakes
    }

    /// The rivers.
    ///
    /// ```
    /// use kaiyuan_train::corpus::World;
    ///
    /// let world = World::new(0);
    /// assert!(world.rivers().iter().all(|r| r.length_km % 10 == 0));
    /// ```
    pub fn rivers(&self) -> &[River] {
        &self.rivers
    }

    /// The towns.
    ///
    /// ```
    /// use kaiyuan_train::corpus::World;
    ///
    /// let world = World::new(0);
    /// assert!(world.towns().iter().all(|t| t.river < world.rivers().len()));
    /// ```
    pub fn towns(&self) -> &[Town] {
        &self.towns
    }

    /// The people.
    ///
    /// ```
    /// use kaiyuan_train::corpus::World;
    ///
    /// let world = World::new(0);
    /// for (i, person) in world.people().iter().enumerate() {
    ///     assert_eq!(world.people()[person.best_friend].best_friend, i);
    /// }
    /// ```
    pub fn people(&self) -> &[Person] {
        &self.people
    }

    /// Every fact: four per town, two per river, five per person.
    ///
    /// ```
    /// use kaiyuan_train::corpus::World;
    ///
    /// for fact in World::new(0).facts() {
    ///     assert!(fact.english.text.starts_with(&fact.english.prompt));
    ///     assert!(fact.chinese.text.starts_with(&fact.chinese.prompt));
    /// }
    /// ```
    pub fn facts(&self) -> &[Fact] {
        &self.facts
    }

    /// The facts whose subject is called `name` in either language.
    ///
    /// ```
    /// use kaiyuan_train::corpus::World;
    ///
    /// let world = World::new(0);
    /// let town = &world.towns()[0].name;
    /// assert_eq!(world.facts_about(&town.english).len(), 4);
    /// assert_eq!(world.facts_about(&town.chinese).len(), 4);
    /// assert!(world.facts_about("Atlantis").is_empty());
    /// ```
    pub fn facts_about(&self, name: &str) -> Vec<&Fact> {
        self.facts
            .iter()
            .filter(|f| f.subject.english == name || f.subject.chinese == name)
            .collect()
    }

    /// The facts about one entity (empty for an index out of range).
    fn facts_of(&self, entity: Entity) -> &[Fact] {
        let rivers_start = self.towns.len() * FACTS_PER_TOWN;
        let people_start = rivers_start + self.rivers.len() * FACTS_PER_RIVER;
        let (start, len) = match entity {
            Entity::Town(i) => (i * FACTS_PER_TOWN, FACTS_PER_TOWN),
            Entity::River(i) => (rivers_start + i * FACTS_PER_RIVER, FACTS_PER_RIVER),
            Entity::Person(i) => (people_start + i * FACTS_PER_PERSON, FACTS_PER_PERSON),
        };
        self.facts.get(start..start + len).unwrap_or(&[])
    }

    /// The fact of `relation` about `entity`, if the entity has one.
    fn fact(&self, entity: Entity, relation: Relation) -> Option<&Fact> {
        self.facts_of(entity)
            .iter()
            .find(|f| f.relation == relation)
    }

    /// Indices of the people living in town `t`, in index order.
    fn residents(&self, t: usize) -> Vec<usize> {
        (0..self.people.len())
            .filter(|&i| self.people[i].home == t)
            .collect()
    }

    /// Indices of the towns on river `r`, in index order.
    fn towns_on(&self, r: usize) -> Vec<usize> {
        (0..self.towns.len())
            .filter(|&i| self.towns[i].river == r)
            .collect()
    }
}

// ===========================================================================
// Sentences
// ===========================================================================

/// A text in both languages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Bilingual {
    en: String,
    zh: String,
}

/// Builds a paragraph sentence by sentence in both languages: English
/// sentences are joined by a space, Chinese ones by nothing.
#[derive(Debug, Default)]
struct Sentences {
    en: Vec<String>,
    zh: Vec<String>,
}

impl Sentences {
    fn say(&mut self, en: impl Into<String>, zh: impl Into<String>) {
        self.en.push(en.into());
        self.zh.push(zh.into());
    }

    /// Restates a fact in its canonical form.
    fn fact(&mut self, fact: Option<&Fact>) {
        if let Some(fact) = fact {
            self.say(fact.english.text.clone(), fact.chinese.text.clone());
        }
    }

    fn paragraph(self) -> Bilingual {
        Bilingual {
            en: self.en.join(" "),
            zh: self.zh.concat(),
        }
    }
}

/// "Ardo, Mira and Tesk live in Velmora." for the residents of a town.
fn residents_sentence(world: &World, t: usize) -> Option<(String, String)> {
    let residents = world.residents(t);
    let town = &world.towns.get(t)?.name;
    let en: Vec<&str> = residents
        .iter()
        .map(|&i| world.people[i].name.english.as_str())
        .collect();
    let zh: Vec<&str> = residents
        .iter()
        .map(|&i| world.people[i].name.chinese.as_str())
        .collect();
    match en.len() {
        0 => None,
        1 => Some((
            format!("{} lives in {}.", en[0], town.english),
            format!("{}住在{}。", zh[0], town.chinese),
        )),
        _ => Some((
            format!("{} live in {}.", english_list(&en), town.english),
            format!("{}住在{}。", chinese_list(&zh), town.chinese),
        )),
    }
}

/// "The river Tarn flows past Velmora and Brisk." for the towns on a river.
fn towns_on_sentence(world: &World, r: usize) -> Option<(String, String)> {
    let river = &world.rivers.get(r)?.name;
    let towns = world.towns_on(r);
    if towns.is_empty() {
        return None;
    }
    let en: Vec<&str> = towns
        .iter()
        .map(|&i| world.towns[i].name.english.as_str())
        .collect();
    let zh: Vec<&str> = towns
        .iter()
        .map(|&i| world.towns[i].name.chinese.as_str())
        .collect();
    Some((
        format!(
            "The river {} flows past {}.",
            river.english,
            english_list(&en)
        ),
        format!("{}河流经{}。", river.chinese, chinese_list(&zh)),
    ))
}

/// One event sentence pair: "Yesterday, Ardo visited Mira in Brisk." /
/// "昨天，阿尔多去布里斯克看望了米拉。" Consistent with the world: people
/// sell their own goods, visit their real best friend, feed their own pet.
fn event(world: &World, rng: &mut Rng) -> Bilingual {
    let (time_en, time_zh) = if rng.percent(15) {
        let day = rng.pick(&Weekday::ALL);
        (format!("On {}", day.english()), day.chinese().to_owned())
    } else {
        let (en, zh) = rng.pick(&TIMES);
        (en.to_owned(), zh.to_owned())
    };
    let pi = rng.below(world.people.len());
    let p = &world.people[pi];
    let (pn, pz) = (&p.name.english, &p.name.chinese);
    let home = &world.towns[p.home];
    let own_river = &world.rivers[home.river].name;
    let pet = p.pet;
    let (animal, measure) = (pet.animal, pet.animal.measure());

    if rng.percent(25) {
        // The person's pet does something.
        let subject_en = format!("{pn}'s {} {}", pet.color.english(), animal.english());
        let subject_zh = format!(
            "{pz}那{measure}{}的{}",
            pet.color.chinese(),
            animal.chinese()
        );
        let (en, zh) = match rng.below(5) {
            0 => ("slept under a tree".to_owned(), "在树下睡着了".to_owned()),
            1 => ("ran across the fields".to_owned(), "跑过了田野".to_owned()),
            2 => (
                format!("drank from the river {}", own_river.english),
                format!("在{}河边喝了水", own_river.chinese),
            ),
            3 => (
                format!("followed {pn} to the market"),
                format!("跟着{pz}去了集市"),
            ),
            _ => (
                format!("hid in the reeds by the river {}", own_river.english),
                format!("躲进了{}河边的芦苇丛", own_river.chinese),
            ),
        };
        return Bilingual {
            en: format!("{time_en}, {subject_en} {en}."),
            zh: format!("{time_zh}，{subject_zh}{zh}。"),
        };
    }

    let words = p.craft.words();
    let friend = &world.people[p.best_friend];
    let (fname, fz) = (&friend.name.english, &friend.name.chinese);
    let friend_home = &world.towns[friend.home].name;
    let (en, zh) = match rng.below(12) {
        0 => {
            let town = &world.towns[rng.below(world.towns.len())].name;
            let goods = rng.pick(&Craft::ALL).words();
            (
                format!(
                    "bought some {} at the market in {}",
                    goods.items_en, town.english
                ),
                format!("在{}的集市上买了一些{}", town.chinese, goods.item_zh),
            )
        }
        1 => (
            format!("sold some {} in {}", words.items_en, home.name.english),
            format!("在{}卖了一些{}", home.name.chinese, words.item_zh),
        ),
        2 => (
            format!("visited {fname} in {}", friend_home.english),
            format!("去{}看望了{fz}", friend_home.chinese),
        ),
        3 => {
            let river = &world.rivers[rng.below(world.rivers.len())].name;
            (
                format!("crossed the river {} by boat", river.english),
                format!("坐船渡过了{}河", river.chinese),
            )
        }
        4 => (
            format!("walked along the river {}", own_river.english),
            format!("沿着{}河散了步", own_river.chinese),
        ),
        5 => (
            format!(
                "fed {} {} {}",
                p.gender.possessive(),
                pet.color.english(),
                animal.english()
            ),
            format!(
                "喂了{}那{measure}{}的{}",
                p.gender.chinese(),
                pet.color.chinese(),
                animal.chinese()
            ),
        ),
        6 => (
            format!("wrote a letter to {fname}"),
            format!("给{fz}写了一封信"),
        ),
        7 => {
            let seen = rng.pick(&Animal::ALL);
            let town = &world.towns[rng.below(world.towns.len())].name;
            (
                format!(
                    "saw {} {} near {}",
                    article(seen.english()),
                    seen.english(),
                    town.english
                ),
                format!(
                    "在{}附近看见了一{}{}",
                    town.chinese,
                    seen.measure(),
                    seen.chinese()
                ),
            )
        }
        8 => (
            format!("{} some {} for {fname}", words.made_en, words.items_en),
            format!("为{fz}{}一些{}", words.made_zh, words.item_zh),
        ),
        9 => (
            format!("rested by the river {}", own_river.english),
            format!("在{}河边休息了一会儿", own_river.chinese),
        ),
        10 => {
            let teacher = &world.people[rng.below(world.people.len())];
            if teacher.craft != p.craft {
                let taught = teacher.craft.words();
                (
                    format!(
                        "learned to {} from {}",
                        taught.skill_en, teacher.name.english
                    ),
                    format!("跟{}学了{}", teacher.name.chinese, taught.skill_zh),
                )
            } else {
                (
                    format!("went home to {}", home.name.english),
                    format!("回到了{}", home.name.chinese),
                )
            }
        }
        _ => (
            format!("went home to {}", home.name.english),
            format!("回到了{}", home.name.chinese),
        ),
    };
    Bilingual {
        en: format!("{time_en}, {pn} {en}."),
        zh: format!("{time_zh}，{pz}{zh}。"),
    }
}

// ===========================================================================
// Stories
// ===========================================================================

/// A story generator: a short multi-sentence story about world entities,
/// in both languages, consistent with the facts.
type StoryFn = fn(&World, &mut Rng) -> Bilingual;

/// Every story, drawn uniformly.
const STORIES: [StoryFn; 5] = [
    story_market,
    story_river,
    story_lost_pet,
    story_apprentice,
    story_festival,
];

/// A person takes goods to market and trades with the best friend.
fn story_market(world: &World, rng: &mut Rng) -> Bilingual {
    let pi = rng.below(world.people.len());
    let p = &world.people[pi];
    let (pn, pz) = (&p.name.english, &p.name.chinese);
    let town = &world.towns[p.home];
    let (t, tz) = (&town.name.english, &town.name.chinese);
    let (day, day_zh) = (town.market_day.english(), town.market_day.chinese());
    let fi = p.best_friend;
    let f = &world.people[fi];
    let (fname, fz) = (&f.name.english, &f.name.chinese);
    let words = p.craft.words();
    let their = f.craft.words();

    let mut s = Sentences::default();
    s.fact(world.fact(Entity::Person(pi), Relation::PersonHome));
    s.fact(world.fact(Entity::Person(pi), Relation::PersonCraft));
    s.say(
        format!(
            "Every {day}, {pn} takes {} {} to the market in {t}.",
            p.gender.possessive(),
            words.items_en
        ),
        format!(
            "每逢{day_zh}，{pz}都会把{}带到{tz}的集市上去卖。",
            words.item_zh
        ),
    );
    if f.home == p.home {
        s.say(
            format!("One {day}, {pn}'s best friend {fname} came to the market too."),
            format!("有一个{day_zh}，{pz}最好的朋友{fz}也来到了集市。"),
        );
    } else {
        let ft = &world.towns[f.home].name;
        s.say(
            format!(
                "One {day}, {pn}'s best friend {fname} came to the market from {}.",
                ft.english
            ),
            format!(
                "有一个{day_zh}，{pz}最好的朋友{fz}从{}来到了集市。",
                ft.chinese
            ),
        );
    }
    s.fact(world.fact(Entity::Person(fi), Relation::PersonCraft));
    if f.craft == p.craft {
        s.say(
            format!(
                "The two friends compared their {} and praised each other's work.",
                words.items_en
            ),
            format!(
                "两个朋友比了比各自的{}，互相称赞对方的手艺。",
                words.item_zh
            ),
        );
    } else {
        s.say(
            format!(
                "{} brought some {} to trade.",
                capitalize(f.gender.subject()),
                their.items_en
            ),
            format!("{}带来了一些{}。", f.gender.chinese(), their.item_zh),
        );
        s.say(
            format!(
                "The two friends traded {} for {} and laughed all afternoon.",
                words.items_en, their.items_en
            ),
            format!(
                "两个朋友用{}换了{}，整个下午都有说有笑。",
                words.item_zh, their.item_zh
            ),
        );
    }
    s.say(
        format!("In the evening, {pn} went home happy."),
        format!("傍晚，{pz}高高兴兴地回家了。"),
    );
    s.paragraph()
}

/// A person rows down the home river, perhaps to another town on it.
fn story_river(world: &World, rng: &mut Rng) -> Bilingual {
    let pi = rng.below(world.people.len());
    let p = &world.people[pi];
    let (pn, pz) = (&p.name.english, &p.name.chinese);
    let (she, she_zh) = (capitalize(p.gender.subject()), p.gender.chinese());
    let town = &world.towns[p.home];
    let (t, tz) = (&town.name.english, &town.name.chinese);
    let ri = town.river;
    let river = &world.rivers[ri].name;
    let pet = p.pet;
    let (season, season_zh) = rng.pick(&SEASONS);

    let mut s = Sentences::default();
    s.say(
        format!(
            "One {season} morning, {pn} set out from {t} in a small boat with {} {} {}.",
            p.gender.possessive(),
            pet.color.english(),
            pet.animal.english()
        ),
        format!(
            "一个{season_zh}的早上，{pz}带着{she_zh}那{}{}的{}，坐小船从{tz}出发了。",
            pet.animal.measure(),
            pet.color.chinese(),
            pet.animal.chinese()
        ),
    );
    s.say(
        format!("{she} rowed down the river {}.", river.english),
        format!("{she_zh}沿着{}河顺流而下。", river.chinese),
    );
    let others: Vec<usize> = world
        .towns_on(ri)
        .into_iter()
        .filter(|&i| i != p.home)
        .collect();
    if others.is_empty() {
        s.say(
            format!(
                "At noon {} rested in the shade of a willow.",
                p.gender.subject()
            ),
            format!("中午，{she_zh}在一棵柳树下休息。"),
        );
    } else {
        let t2 = others[rng.below(others.len())];
        let other = &world.towns[t2];
        let goods = other.craft.words();
        s.say(
            format!(
                "At noon {} reached {}.",
                p.gender.subject(),
                other.name.english
            ),
            format!("中午，{she_zh}到了{}。", other.name.chinese),
        );
        s.fact(world.fact(Entity::Town(t2), Relation::TownCraft));
        s.say(
            format!(
                "There {} bought some {}.",
                p.gender.subject(),
                goods.items_en
            ),
            format!("{she_zh}在那里买了一些{}。", goods.item_zh),
        );
    }
    s.fact(world.fact(Entity::River(ri), Relation::RiverLength));
    s.fact(world.fact(Entity::River(ri), Relation::RiverMouth));
    s.say(
        format!("{pn} watched the water for a long time and then rowed home to {t}."),
        format!("{pz}看了很久的河水，然后划船回到了{tz}。"),
    );
    s.paragraph()
}

/// A pet goes missing and the best friend helps find it.
fn story_lost_pet(world: &World, rng: &mut Rng) -> Bilingual {
    let pi = rng.below(world.people.len());
    let p = &world.people[pi];
    let (pn, pz) = (&p.name.english, &p.name.chinese);
    let town = &world.towns[p.home];
    let river = &world.rivers[town.river].name;
    let f = &world.people[p.best_friend];
    let (fname, fz) = (&f.name.english, &f.name.chinese);
    let (animal, animal_zh) = (p.pet.animal.english(), p.pet.animal.chinese());
    let they_zh = if p.gender == Gender::Female && f.gender == Gender::Female {
        "她们"
    } else {
        "他们"
    };

    let mut s = Sentences::default();
    s.fact(world.fact(Entity::Person(pi), Relation::PersonPet));
    s.say(
        format!("One evening, the {animal} did not come home."),
        format!(
            "一天傍晚，那{}{animal_zh}没有回家。",
            p.pet.animal.measure()
        ),
    );
    s.say(
        format!(
            "{pn} looked for it all over {}, but it was nowhere to be found.",
            town.name.english
        ),
        format!("{pz}找遍了{}，可是哪里都找不到它。", town.name.chinese),
    );
    s.fact(world.fact(Entity::Person(pi), Relation::PersonFriend));
    s.say(
        format!("{} asked {fname} for help.", capitalize(p.gender.subject())),
        format!("{}请{fz}来帮忙。", p.gender.chinese()),
    );
    s.say(
        format!(
            "{fname} and {pn} searched along the river {} until dark.",
            river.english
        ),
        format!("{fz}和{pz}沿着{}河一直找到天黑。", river.chinese),
    );
    s.say(
        format!("At last they found the {animal} asleep under an old bridge."),
        format!("最后，{they_zh}发现{animal_zh}在一座旧桥下睡着了。"),
    );
    s.say(
        format!("{pn} thanked {fname} and led the {animal} home."),
        format!("{pz}谢过{fz}，把{animal_zh}带回了家。"),
    );
    s.paragraph()
}

/// A person learns another's craft; falls back to the market story when
/// everyone works at the same craft.
fn story_apprentice(world: &World, rng: &mut Rng) -> Bilingual {
    let qi = rng.below(world.people.len());
    let q = &world.people[qi];
    let different: Vec<usize> = (0..world.people.len())
        .filter(|&i| world.people[i].craft != q.craft)
        .collect();
    let older: Vec<usize> = different
        .iter()
        .copied()
        .filter(|&i| world.people[i].age > q.age)
        .collect();
    let candidates = if older.is_empty() { different } else { older };
    if candidates.is_empty() {
        return story_market(world, rng);
    }
    let pi = candidates[rng.below(candidates.len())];
    let p = &world.people[pi];
    let (pn, pz) = (&p.name.english, &p.name.chinese);
    let (qn, qz) = (&q.name.english, &q.name.chinese);
    let (qt, pt) = (&world.towns[q.home].name, &world.towns[p.home].name);
    let skill = p.craft.words();

    let mut s = Sentences::default();
    s.fact(world.fact(Entity::Person(qi), Relation::PersonAge));
    s.say(
        format!("{qn} wanted to learn to {}.", skill.skill_en),
        format!("{qz}想学{}。", skill.skill_zh),
    );
    if q.home == p.home {
        s.say(
            format!(
                "So {} went to find {pn}, who also lives in {}.",
                q.gender.subject(),
                pt.english
            ),
            format!(
                "于是，{}去找同样住在{}的{pz}。",
                q.gender.chinese(),
                pt.chinese
            ),
        );
    } else {
        s.say(
            format!(
                "So {} travelled from {} to {} to find {pn}.",
                q.gender.subject(),
                qt.english,
                pt.english
            ),
            format!(
                "于是，{}从{}来到{}，去找{pz}。",
                q.gender.chinese(),
                qt.chinese,
                pt.chinese
            ),
        );
    }
    s.fact(world.fact(Entity::Person(pi), Relation::PersonCraft));
    s.fact(world.fact(Entity::Person(pi), Relation::PersonAge));
    s.say(
        format!("Every day {qn} watched {pn} work and practised again and again."),
        format!("每天，{qz}都看着{pz}干活，一遍又一遍地练习。"),
    );
    s.say(
        format!("By winter, {qn} could {} well too.", skill.skill_en),
        format!("到了冬天，{qz}也学会了{}。", skill.skill_zh),
    );
    if q.home == p.home {
        s.say(
            format!("{qn} thanked {pn} and went home."),
            format!("{qz}谢过{pz}，回家了。"),
        );
    } else {
        s.say(
            format!("{qn} thanked {pn} and went home to {}.", qt.english),
            format!("{qz}谢过{pz}，回到了{}。", qt.chinese),
        );
    }
    s.paragraph()
}

/// A town's festival for its emblem.
fn story_festival(world: &World, rng: &mut Rng) -> Bilingual {
    let ti = rng.below(world.towns.len());
    let town = &world.towns[ti];
    let (t, tz) = (&town.name.english, &town.name.chinese);
    let river = &world.rivers[town.river].name;
    let (emblem, emblem_zh, measure) = (
        town.emblem.english(),
        town.emblem.chinese(),
        town.emblem.measure(),
    );
    let goods = town.craft.words();
    let mut residents = world.residents(ti);
    rng.shuffle(&mut residents);

    let mut s = Sentences::default();
    s.fact(world.fact(Entity::Town(ti), Relation::TownRiver));
    s.fact(world.fact(Entity::Town(ti), Relation::TownEmblem));
    s.say(
        format!("Every year, the people of {t} hold a festival for the {emblem}."),
        format!("每年，{tz}的人们都会为{emblem_zh}举行节日。"),
    );
    s.say(
        format!(
            "Lanterns hang along the river {}, and the {}s of {t} show their finest {}.",
            river.english, goods.worker_en, goods.items_en
        ),
        format!(
            "{}河边挂满了灯笼，{tz}的{}们拿出最好的{}。",
            river.chinese, goods.worker_zh, goods.item_zh
        ),
    );
    match residents.as_slice() {
        [] => s.say(
            format!("This year a great paper {emblem} is carried through the streets."),
            format!("今年，一{measure}纸做的大{emblem_zh}被抬着走过街道。"),
        ),
        [a] => {
            let a = &world.people[*a].name;
            s.say(
                format!(
                    "This year {} carries a great paper {emblem} through the streets.",
                    a.english
                ),
                format!(
                    "今年，{}抬着一{measure}纸做的大{emblem_zh}走过街道。",
                    a.chinese
                ),
            );
        }
        [a, b, ..] => {
            let (a, b) = (&world.people[*a].name, &world.people[*b].name);
            s.say(
                format!(
                    "This year {} and {} carry a great paper {emblem} through the streets.",
                    a.english, b.english
                ),
                format!(
                    "今年，{}和{}抬着一{measure}纸做的大{emblem_zh}走过街道。",
                    a.chinese, b.chinese
                ),
            );
        }
    }
    s.say(
        "Children run after it and shout with joy.",
        "孩子们跟在后面，高兴地喊叫。",
    );
    s.say(
        format!(
            "When night falls, everyone sits by the river {} and eats together.",
            river.english
        ),
        format!("夜幕降临时，大家坐在{}河边一起吃饭。", river.chinese),
    );
    s.paragraph()
}

// ===========================================================================
// Arithmetic
// ===========================================================================

/// An arithmetic operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
}

impl Op {
    fn apply(self, a: u32, b: u32) -> u32 {
        match self {
            Op::Add => a + b,
            Op::Sub => a.saturating_sub(b),
            Op::Mul => a * b,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Op::Add => "+",
            Op::Sub => "-",
            Op::Mul => "×",
        }
    }

    fn english(self) -> &'static str {
        match self {
            Op::Add => "plus",
            Op::Sub => "minus",
            Op::Mul => "times",
        }
    }

    fn chinese(self) -> &'static str {
        match self {
            Op::Add => "加",
            Op::Sub => "减",
            Op::Mul => "乘以",
        }
    }
}

/// A random problem: sums of `1..=99`, differences within `1..=99` with a
/// non-negative result, products of `2..=12`; word problems use smaller
/// numbers (`small`).
fn problem(rng: &mut Rng, small: bool) -> (Op, u32, u32) {
    let top = if small { 30 } else { 99 };
    match rng.below(10) {
        0..=3 => (Op::Add, rng.range(1, top), rng.range(1, top)),
        4..=6 => {
            let a = rng.range(2, top);
            (Op::Sub, a, rng.range(1, a - 1))
        }
        _ => (Op::Mul, rng.range(2, 12), rng.range(2, 12)),
    }
}

/// `item` or `items` for `n`.
fn count_en(n: u32, words: &CraftWords) -> String {
    if n == 1 {
        format!("1 {}", words.item_en)
    } else {
        format!("{n} {}", words.items_en)
    }
}

/// A word problem about a person's own goods.
fn word_problem(world: &World, rng: &mut Rng, chinese: bool) -> String {
    let p = &world.people[rng.below(world.people.len())];
    let (pn, pz) = (&p.name.english, &p.name.chinese);
    let w = p.craft.words();
    let m = w.measure_zh;
    let (op, a, b) = problem(rng, true);
    let c = op.apply(a, b);
    match (op, chinese) {
        (Op::Add, false) => format!(
            "{pn} {made} {} in the morning and {} in the afternoon, so {pn} {made} {} in all.",
            count_en(a, w),
            count_en(b, w),
            count_en(c, w),
            made = w.made_en
        ),
        (Op::Add, true) => format!(
            "{pz}上午{made}{a}{m}{item}，下午{made}{b}{m}{item}，一共{made}{c}{m}{item}。",
            made = w.made_zh,
            item = w.item_zh
        ),
        (Op::Sub, false) => format!(
            "{pn} had {} and sold {b}, so {pn} has {c} left.",
            count_en(a, w)
        ),
        (Op::Sub, true) => format!("{pz}有{a}{m}{}，卖掉了{b}{m}，还剩{c}{m}。", w.item_zh),
        (Op::Mul, false) => format!(
            "{pn} sells {} every day. In {b} days, {pn} sells {}.",
            count_en(a, w),
            count_en(c, w)
        ),
        (Op::Mul, true) => format!(
            "{pz}每天卖{a}{m}{item}，{b}天一共卖{c}{m}{item}。",
            item = w.item_zh
        ),
    }
}

/// `17 + 25 = 42`.
fn symbolic(op: Op, a: u32, b: u32) -> String {
    format!("{a} {} {b} = {}", op.symbol(), op.apply(a, b))
}

/// `Seventeen plus twenty-five equals forty-two.` / `十七加二十五等于四十二。`
/// (or `17加25等于42。` when `digits`).
fn in_words(op: Op, a: u32, b: u32, chinese: bool, digits: bool) -> String {
    let c = op.apply(a, b);
    match (chinese, digits) {
        (false, _) => format!(
            "{} {} {} equals {}.",
            capitalize(&english_number(a)),
            op.english(),
            english_number(b),
            english_number(c)
        ),
        (true, false) => format!(
            "{}{}{}等于{}。",
            chinese_number(a),
            op.chinese(),
            chinese_number(b),
            chinese_number(c)
        ),
        (true, true) => format!("{a}{}{b}等于{c}。", op.chinese()),
    }
}

// ===========================================================================
// Documents
// ===========================================================================

/// What a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DocumentKind {
    /// A paragraph of facts about one town, person or river, or a few facts
    /// about anything.
    Facts,
    /// A short story that restates the facts it relies on.
    Story,
    /// `English: …` / `中文：…` sentence pairs, either language first.
    Translation,
    /// Sums, differences and products in symbols, words and word problems.
    Arithmetic,
    /// `Q: …` / `A: …` pairs about facts (`问：…` / `答：…` in Chinese).
    Questions,
}

impl DocumentKind {
    /// Every kind, in the order the schedule assigns slots.
    pub const ALL: [DocumentKind; 5] = [
        DocumentKind::Facts,
        DocumentKind::Story,
        DocumentKind::Translation,
        DocumentKind::Arithmetic,
        DocumentKind::Questions,
    ];

    /// A short lower-case name, e.g. `translation`.
    ///
    /// ```
    /// use kaiyuan_train::corpus::DocumentKind;
    ///
    /// assert_eq!(DocumentKind::Questions.name(), "questions");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            DocumentKind::Facts => "facts",
            DocumentKind::Story => "story",
            DocumentKind::Translation => "translation",
            DocumentKind::Arithmetic => "arithmetic",
            DocumentKind::Questions => "questions",
        }
    }
}

/// The language(s) of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Language {
    /// English only (arithmetic symbols aside).
    English,
    /// Chinese only (digits and arithmetic symbols aside).
    Chinese,
    /// Both: the English text, a newline, then the same text in Chinese; or
    /// interleaved translation pairs.
    Bilingual,
}

/// One training example.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Document {
    /// What it is.
    pub kind: DocumentKind,
    /// Its language(s).
    pub language: Language,
    /// The text: never empty, no leading or trailing whitespace, lines
    /// separated by `\n`.
    pub text: String,
}

/// Which split a document belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    Training,
    Validation,
}

impl Split {
    fn stream(self) -> u64 {
        match self {
            Split::Training => STREAM_TRAINING,
            Split::Validation => STREAM_VALIDATION,
        }
    }
}

/// English 40 %, Chinese 40 %, both 20 %.
fn pick_language(rng: &mut Rng) -> Language {
    match rng.below(10) {
        0..=3 => Language::English,
        4..=7 => Language::Chinese,
        _ => Language::Bilingual,
    }
}

fn render(text: Bilingual, language: Language) -> String {
    match language {
        Language::English => text.en,
        Language::Chinese => text.zh,
        Language::Bilingual => format!("{}\n{}", text.en, text.zh),
    }
}

/// A random entity whose facts a paragraph or question block is about, or
/// `None` for "a few facts about anything".
fn pick_subject(world: &World, rng: &mut Rng) -> Option<Entity> {
    match rng.below(100) {
        0..=29 => Some(Entity::Town(rng.below(world.towns.len()))),
        30..=74 => Some(Entity::Person(rng.below(world.people.len()))),
        75..=84 => Some(Entity::River(rng.below(world.rivers.len()))),
        _ => None,
    }
}

/// `count` distinct random facts from the whole world.
fn random_facts<'w>(world: &'w World, rng: &mut Rng, count: usize) -> Vec<&'w Fact> {
    let mut indices: Vec<usize> = (0..world.facts.len()).collect();
    rng.shuffle(&mut indices);
    indices
        .into_iter()
        .take(count)
        .filter_map(|i| world.facts.get(i))
        .collect()
}

fn facts_document(world: &World, rng: &mut Rng) -> (Language, String) {
    let language = pick_language(rng);
    let mut lines: Vec<(String, String)> = Vec::new();
    match pick_subject(world, rng) {
        Some(entity) => {
            let mut facts: Vec<&Fact> = world.facts_of(entity).iter().collect();
            rng.shuffle(&mut facts);
            if let Entity::Person(_) = entity {
                let keep = 3 + rng.below(3);
                facts.truncate(keep);
            }
            lines.extend(
                facts
                    .into_iter()
                    .map(|f| (f.english.text.clone(), f.chinese.text.clone())),
            );
            let extra = match entity {
                Entity::Town(t) => residents_sentence(world, t),
                Entity::River(r) => towns_on_sentence(world, r),
                Entity::Person(_) => None,
            };
            if let Some(extra) = extra {
                let at = rng.below(lines.len() + 1);
                lines.insert(at, extra);
            }
        }
        None => {
            let count = 4 + rng.below(3);
            lines.extend(
                random_facts(world, rng, count)
                    .into_iter()
                    .map(|f| (f.english.text.clone(), f.chinese.text.clone())),
            );
        }
    }
    let mut s = Sentences::default();
    for (en, zh) in lines {
        s.say(en, zh);
    }
    (language, render(s.paragraph(), language))
}

fn story_document(world: &World, rng: &mut Rng) -> (Language, String) {
    let language = pick_language(rng);
    let story = STORIES[rng.below(STORIES.len())];
    (language, render(story(world, rng), language))
}

fn translation_document(world: &World, rng: &mut Rng) -> (Language, String) {
    let chinese_first = rng.percent(30);
    let pairs = 3 + rng.below(3);
    let blocks: Vec<String> = (0..pairs)
        .map(|_| {
            let pair = if rng.percent(35) {
                let fact = &world.facts[rng.below(world.facts.len())];
                Bilingual {
                    en: fact.english.text.clone(),
                    zh: fact.chinese.text.clone(),
                }
            } else {
                event(world, rng)
            };
            if chinese_first {
                format!("中文：{}\nEnglish: {}", pair.zh, pair.en)
            } else {
                format!("English: {}\n中文：{}", pair.en, pair.zh)
            }
        })
        .collect();
    (Language::Bilingual, blocks.join("\n\n"))
}

fn arithmetic_document(world: &World, rng: &mut Rng) -> (Language, String) {
    let chinese = rng.percent(50);
    let items = 4 + rng.below(3);
    let mut lines = Vec::new();
    for _ in 0..items {
        let digits = chinese && rng.percent(30);
        match rng.below(100) {
            0..=24 => {
                let (op, a, b) = problem(rng, false);
                lines.push(symbolic(op, a, b));
            }
            25..=49 => {
                let (op, a, b) = problem(rng, false);
                lines.push(symbolic(op, a, b));
                lines.push(in_words(op, a, b, chinese, digits));
            }
            50..=69 => {
                let (op, a, b) = problem(rng, false);
                lines.push(in_words(op, a, b, chinese, digits));
            }
            _ => lines.push(word_problem(world, rng, chinese)),
        }
    }
    let language = if chinese {
        Language::Chinese
    } else {
        Language::English
    };
    (language, lines.join("\n"))
}

/// Three to five facts for a question document: about one town, person or
/// river, or drawn at random.
fn question_facts<'w>(world: &'w World, rng: &mut Rng) -> Vec<&'w Fact> {
    let count = 3 + rng.below(3);
    match pick_subject(world, rng) {
        Some(entity) => {
            let mut facts: Vec<&Fact> = world.facts_of(entity).iter().collect();
            rng.shuffle(&mut facts);
            facts.truncate(count);
            facts
        }
        None => random_facts(world, rng, count),
    }
}

fn questions_document(world: &World, rng: &mut Rng) -> (Language, String) {
    let language = pick_language(rng);
    let facts = question_facts(world, rng);
    let en: Vec<String> = facts
        .iter()
        .map(|f| format!("Q: {}\nA: {}", f.english.question, f.english.text))
        .collect();
    let zh: Vec<String> = facts
        .iter()
        .map(|f| format!("问：{}\n答：{}", f.chinese.question, f.chinese.text))
        .collect();
    let text = Bilingual {
        en: en.join("\n"),
        zh: zh.join("\n"),
    };
    (language, render(text, language))
}

/// A corpus: a world and the documents drawn from it.
///
/// ```
/// use kaiyuan_train::corpus::{Corpus, CorpusConfig, DocumentKind};
///
/// let corpus = Corpus::new(&CorpusConfig { documents: 200, ..CorpusConfig::default() })?;
/// let training = corpus.training();
/// assert_eq!(training.len(), 200);
/// // The ratio is exact per block of 100 documents.
/// let stories = training.iter().filter(|d| d.kind == DocumentKind::Story).count();
/// assert_eq!(stories, 50);
/// assert_eq!(corpus.document(7)?, training[7]);
/// # Ok::<(), kaiyuan_train::TrainError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corpus {
    config: CorpusConfig,
    world: World,
}

impl Corpus {
    /// Checks `config` and draws its world.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidArgument`] when `config` fails
    /// [`CorpusConfig::validate`].
    ///
    /// ```
    /// use kaiyuan_train::corpus::{Corpus, CorpusConfig};
    ///
    /// assert!(Corpus::new(&CorpusConfig::default()).is_ok());
    /// assert!(Corpus::new(&CorpusConfig { documents: 0, ..CorpusConfig::default() }).is_err());
    /// ```
    pub fn new(config: &CorpusConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config: *config,
            world: World::build(config.seed, config.world),
        })
    }

    /// The configuration.
    ///
    /// ```
    /// use kaiyuan_train::corpus::{Corpus, CorpusConfig};
    ///
    /// let corpus = Corpus::new(&CorpusConfig::default())?;
    /// assert_eq!(*corpus.config(), CorpusConfig::default());
    /// # Ok::<(), kaiyuan_train::TrainError>(())
    /// ```
    pub fn config(&self) -> &CorpusConfig {
        &self.config
    }

    /// The world every document is about.
    ///
    /// ```
    /// use kaiyuan_train::corpus::{Corpus, CorpusConfig, World};
    ///
    /// let corpus = Corpus::new(&CorpusConfig { seed: 9, ..CorpusConfig::default() })?;
    /// assert_eq!(*corpus.world(), World::new(9));
    /// # Ok::<(), kaiyuan_train::TrainError>(())
    /// ```
    pub fn world(&self) -> &World {
        &self.world
    }

    /// Training document `index`, generated on its own (the same text as
    /// `self.training()[index]`).
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidArgument`] for `index` when it is not below
    /// `config.documents`.
    ///
    /// ```
    /// use kaiyuan_train::corpus::{Corpus, CorpusConfig};
    ///
    /// let corpus = Corpus::new(&CorpusConfig { documents: 10, ..CorpusConfig::default() })?;
    /// assert!(!corpus.document(9)?.text.is_empty());
    /// assert!(corpus.document(10).is_err());
    /// # Ok::<(), kaiyuan_train::TrainError>(())
    /// ```
    pub fn document(&self, index: usize) -> Result<Document> {
        if index >= self.config.documents {
            return Err(TrainError::invalid(
                "index",
                format!(
                    "document {index} requested from a corpus of {} documents",
                    self.config.documents
                ),
            ));
        }
        let block_len = self.block_len();
        let kinds = self.schedule(Split::Training, index / block_len);
        let kind = kinds
            .get(index % block_len)
            .copied()
            .unwrap_or(DocumentKind::Facts);
        Ok(self.generate(Split::Training, index, kind))
    }

    /// Every training document, in order.
    ///
    /// ```
    /// use kaiyuan_train::corpus::{Corpus, CorpusConfig};
    ///
    /// let corpus = Corpus::new(&CorpusConfig { documents: 30, ..CorpusConfig::default() })?;
    /// assert!(corpus.training().iter().all(|d| !d.text.is_empty()));
    /// # Ok::<(), kaiyuan_train::TrainError>(())
    /// ```
    pub fn training(&self) -> Vec<Document> {
        self.split(Split::Training, self.config.documents)
    }

    /// `count` validation documents: drawn from their own stream over the
    /// same world, with the same ratio of kinds, skipping any text that is
    /// also a training document. Deterministic for a given config and count,
    /// and a prefix of any longer request.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidArgument`] for `count` outside
    /// `1..=MAX_DOCUMENTS`, or when too many candidates collide with
    /// training documents (not seen with any valid config).
    ///
    /// ```
    /// use kaiyuan_train::corpus::{Corpus, CorpusConfig};
    ///
    /// let corpus = Corpus::new(&CorpusConfig { documents: 100, ..CorpusConfig::default() })?;
    /// let validation = corpus.validation(20)?;
    /// assert_eq!(validation.len(), 20);
    /// let training = corpus.training();
    /// assert!(validation.iter().all(|v| training.iter().all(|t| t.text != v.text)));
    /// # Ok::<(), kaiyuan_train::TrainError>(())
    /// ```
    pub fn validation(&self, count: usize) -> Result<Vec<Document>> {
        check_document_count("count", count)?;
        let training = self.training();
        let seen: BTreeSet<&str> = training.iter().map(|d| d.text.as_str()).collect();
        let block_len = self.block_len();
        // A candidate collides only when it repeats a training text; allow
        // one collision per document asked for and a margin.
        let limit = count.saturating_mul(2).saturating_add(64);
        let mut out = Vec::with_capacity(count);
        let mut kinds = Vec::new();
        for index in 0..limit {
            if out.len() == count {
                break;
            }
            if index % block_len == 0 {
                kinds = self.schedule(Split::Validation, index / block_len);
            }
            let kind = kinds
                .get(index % block_len)
                .copied()
                .unwrap_or(DocumentKind::Facts);
            let document = self.generate(Split::Validation, index, kind);
            if !seen.contains(document.text.as_str()) {
                out.push(document);
            }
        }
        if out.len() < count {
            return Err(TrainError::invalid(
                "count",
                format!(
                    "only {} of {count} validation documents differ from the training set",
                    out.len()
                ),
            ));
        }
        Ok(out)
    }

    /// Documents `0..count` of a split.
    fn split(&self, split: Split, count: usize) -> Vec<Document> {
        let block_len = self.block_len();
        let mut out = Vec::with_capacity(count);
        let mut kinds = Vec::new();
        for index in 0..count {
            if index % block_len == 0 {
                kinds = self.schedule(split, index / block_len);
            }
            let kind = kinds
                .get(index % block_len)
                .copied()
                .unwrap_or(DocumentKind::Facts);
            out.push(self.generate(split, index, kind));
        }
        out
    }

    /// Length of one block of the exact ratio (at least 1).
    fn block_len(&self) -> usize {
        (self.config.mix.total() as usize).max(1)
    }

    /// The kinds of one block, each kind `weight` times, shuffled.
    fn schedule(&self, split: Split, block: usize) -> Vec<DocumentKind> {
        let mut kinds: Vec<DocumentKind> = DocumentKind::ALL
            .iter()
            .flat_map(|&kind| std::iter::repeat_n(kind, self.config.mix.weight(kind) as usize))
            .collect();
        let mut rng = Rng::derive(
            self.config.seed,
            STREAM_SCHEDULE ^ split.stream(),
            block as u64,
        );
        rng.shuffle(&mut kinds);
        kinds
    }

    fn generate(&self, split: Split, index: usize, kind: DocumentKind) -> Document {
        let mut rng = Rng::derive(self.config.seed, split.stream(), index as u64);
        let world = &self.world;
        let (language, text) = match kind {
            DocumentKind::Facts => facts_document(world, &mut rng),
            DocumentKind::Story => story_document(world, &mut rng),
            DocumentKind::Translation => translation_document(world, &mut rng),
            DocumentKind::Arithmetic => arithmetic_document(world, &mut rng),
            DocumentKind::Questions => questions_document(world, &mut rng),
        };
        Document {
            kind,
            language,
            text,
        }
    }
}

/// The texts of the training documents of `config`.
///
/// # Errors
///
/// [`TrainError::InvalidArgument`] when `config` fails
/// [`CorpusConfig::validate`] (for example zero documents).
///
/// ```
/// use kaiyuan_train::corpus::{documents, CorpusConfig};
///
/// let texts = documents(&CorpusConfig { documents: 20, ..CorpusConfig::default() })?;
/// assert_eq!(texts.len(), 20);
/// assert!(documents(&CorpusConfig { documents: 0, ..CorpusConfig::default() }).is_err());
/// # Ok::<(), kaiyuan_train::TrainError>(())
/// ```
pub fn documents(config: &CorpusConfig) -> Result<Vec<String>> {
    Ok(Corpus::new(config)?
        .training()
        .into_iter()
        .map(|d| d.text)
        .collect())
}

/// The texts of `count` validation documents of `config`, disjoint from
/// [`documents`] (see [`Corpus::validation`]).
///
/// # Errors
///
/// [`TrainError::InvalidArgument`] when `config` fails
/// [`CorpusConfig::validate`] or `count` is outside `1..=MAX_DOCUMENTS`.
///
/// ```
/// use kaiyuan_train::corpus::{documents, validation_documents, CorpusConfig};
///
/// let config = CorpusConfig { documents: 50, ..CorpusConfig::default() };
/// let held_out = validation_documents(&config, 10)?;
/// let training = documents(&config)?;
/// assert!(held_out.iter().all(|v| !training.contains(v)));
/// # Ok::<(), kaiyuan_train::TrainError>(())
/// ```
pub fn validation_documents(config: &CorpusConfig, count: usize) -> Result<Vec<String>> {
    Ok(Corpus::new(config)?
        .validation(count)?
        .into_iter()
        .map(|d| d.text)
        .collect())
}

// ===========================================================================
// Tests
// ===========================================================================

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use super::*;

    fn small(documents: usize) -> CorpusConfig {
        CorpusConfig {
            documents,
            ..CorpusConfig::default()
        }
    }

    fn default_training() -> (Corpus, Vec<Document>) {
        let corpus = Corpus::new(&CorpusConfig::default()).expect("the default config is valid");
        let training = corpus.training();
        (corpus, training)
    }

    /// Chinese characters and Chinese (full-width) punctuation.
    fn is_cjk(c: char) -> bool {
        matches!(c, '\u{3000}'..='\u{303F}' | '\u{4E00}'..='\u{9FFF}' | '\u{FF00}'..='\u{FFEF}')
    }

    fn has_cjk(text: &str) -> bool {
        text.chars().any(is_cjk)
    }

    fn has_latin(text: &str) -> bool {
        text.chars().any(|c| c.is_ascii_alphabetic())
    }

    // ----- parsing back ----------------------------------------------------

    fn parse_english_number(words: &str) -> Option<u32> {
        let mut total = 0;
        let mut current = 0;
        for word in words.split([' ', '-']) {
            let word = word.to_lowercase();
            if let Some(n) = ENGLISH_ONES.iter().position(|&w| w == word) {
                current += n as u32;
            } else if let Some(n) = ENGLISH_TENS
                .iter()
                .position(|&w| !w.is_empty() && w == word)
            {
                current += 10 * n as u32;
            } else if word == "hundred" {
                current *= 100;
            } else if word == "thousand" {
                total += current * 1000;
                current = 0;
            } else if word != "and" {
                return None;
            }
        }
        Some(total + current)
    }

    fn parse_chinese_number(text: &str) -> Option<u32> {
        if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
            return text.parse().ok();
        }
        let mut total = 0;
        let mut current = 0;
        for c in text.chars() {
            let units = match c {
                '十' => 10,
                '百' => 100,
                '千' => 1000,
                '零' => continue,
                _ => {
                    let digit = CHINESE_DIGITS.iter().position(|d| d.starts_with(c))?;
                    current = digit as u32;
                    continue;
                }
            };
            total += if current == 0 && units == 10 {
                1
            } else {
                current
            } * units;
            current = 0;
        }
        if text.is_empty() {
            return None;
        }
        Some(total + current)
    }

    fn apply(op: &str, a: u32, b: u32) -> Option<u32> {
        match op {
            "+" | "plus" | "加" => Some(a + b),
            "-" | "minus" | "减" => a.checked_sub(b),
            "×" | "times" | "乘以" => Some(a * b),
            _ => None,
        }
    }

    fn digit_runs(line: &str) -> Vec<u32> {
        line.split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse().ok())
            .collect()
    }

    /// Checks one arithmetic line and names what kind of line it was.
    fn check_arithmetic_line(line: &str) -> &'static str {
        if let Some((left, c)) = line.split_once(" = ") {
            let parts: Vec<&str> = left.split(' ').collect();
            let [a, op, b] = parts[..] else {
                panic!("symbolic line {line:?}");
            };
            let (a, b, c): (u32, u32, u32) =
                (a.parse().unwrap(), b.parse().unwrap(), c.parse().unwrap());
            assert_eq!(apply(op, a, b), Some(c), "{line:?}");
            return "symbolic";
        }
        if let Some((left, c)) = line.split_once(" equals ") {
            let c = parse_english_number(c.trim_end_matches('.')).unwrap();
            for op in ["plus", "minus", "times"] {
                if let Some((a, b)) = left.split_once(&format!(" {op} ")) {
                    let a = parse_english_number(a).unwrap();
                    let b = parse_english_number(b).unwrap();
                    assert_eq!(apply(op, a, b), Some(c), "{line:?}");
                    return "english words";
                }
            }
            panic!("no operator in {line:?}");
        }
        if let Some((left, c)) = line.split_once("等于") {
            let c = parse_chinese_number(c.trim_end_matches('。')).unwrap();
            for op in ["乘以", "加", "减"] {
                if let Some((a, b)) = left.split_once(op) {
                    let a = parse_chinese_number(a).unwrap();
                    let b = parse_chinese_number(b).unwrap();
                    assert_eq!(apply(op, a, b), Some(c), "{line:?}");
                    return "chinese words";
                }
            }
            panic!("no operator in {line:?}");
        }
        let numbers = digit_runs(line);
        let [a, b, c] = numbers[..] else {
            panic!("word problem without three numbers: {line:?}");
        };
        let op = if line.contains("every day") || line.contains("每天") {
            "×"
        } else if line.contains(" left.") || line.contains("还剩") {
            "-"
        } else if line.contains("in all.") || line.contains("一共") {
            "+"
        } else {
            panic!("unrecognised arithmetic line {line:?}");
        };
        assert_eq!(apply(op, a, b), Some(c), "{line:?}");
        "word problem"
    }

    /// Sentences of a document, labels (`Q: `, `答：`, `English: `…) removed.
    fn sentences(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for line in text.lines() {
            let mut line = line;
            for label in ["Q: ", "A: ", "English: ", "问：", "答：", "中文："] {
                line = line.strip_prefix(label).unwrap_or(line);
            }
            let chinese = has_cjk(line);
            let mut current = String::new();
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                current.push(c);
                let end = if chinese {
                    matches!(c, '。' | '？' | '！')
                } else {
                    matches!(c, '.' | '?' | '!') && chars.peek().is_none_or(|&n| n == ' ')
                };
                if end {
                    out.push(current.trim().to_owned());
                    current.clear();
                }
            }
            if !current.trim().is_empty() {
                out.push(current.trim().to_owned());
            }
        }
        out
    }

    /// `pre{X}mid{Y}post` → `(X, Y)`.
    fn match_template<'s>(
        sentence: &'s str,
        pre: &str,
        mid: &str,
        post: &str,
    ) -> Option<(&'s str, &'s str)> {
        sentence
            .strip_prefix(pre)?
            .strip_suffix(post)?
            .split_once(mid)
    }

    /// Splits `A, B and C` or `A、B和C`.
    fn split_list(list: &str) -> Vec<&str> {
        list.split([',', '、'])
            .flat_map(|part| part.split(" and "))
            .flat_map(|part| part.split('和'))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The sentence templates of every relation, `(pre, mid, post)`, English
    /// then Chinese.
    fn templates(relation: Relation) -> Vec<(&'static str, &'static str, &'static str)> {
        match relation {
            Relation::TownRiver => vec![
                ("The town of ", " lies on the river ", "."),
                ("", "镇坐落在", "河畔。"),
            ],
            Relation::TownCraft => vec![("", " is known for its ", "."), ("", "以", "闻名。")],
            Relation::TownMarket => vec![("Market day in ", " is ", "."), ("", "的集市日是", "。")],
            Relation::TownEmblem => {
                vec![("The emblem of ", " is the ", "."), ("", "的徽记是", "。")]
            }
            Relation::RiverLength => vec![
                ("The river ", " is ", " kilometres long."),
                ("", "河长", "公里。"),
            ],
            Relation::RiverMouth => vec![("The river ", " flows into ", "."), ("", "河流入", "。")],
            Relation::PersonHome => vec![("", " lives in ", "."), ("", "住在", "。")],
            Relation::PersonCraft => vec![
                ("", " is a ", "."),
                ("", " is an ", "."),
                ("", "是一名", "。"),
            ],
            Relation::PersonAge => vec![("", " is ", " years old."), ("", "今年", "岁。")],
            Relation::PersonPet => vec![
                ("", " keeps a ", "."),
                ("", " keeps an ", "."),
                ("", "养着", "。"),
            ],
            Relation::PersonFriend => {
                vec![("", "'s best friend is ", "."), ("", "最好的朋友是", "。")]
            }
        }
    }

    const RELATIONS: [Relation; 11] = [
        Relation::TownRiver,
        Relation::TownCraft,
        Relation::TownMarket,
        Relation::TownEmblem,
        Relation::RiverLength,
        Relation::RiverMouth,
        Relation::PersonHome,
        Relation::PersonCraft,
        Relation::PersonAge,
        Relation::PersonPet,
        Relation::PersonFriend,
    ];

    // ----- the tests -------------------------------------------------------

    #[test]
    fn same_seed_same_text_and_different_seed_different_world() {
        let config = small(400);
        assert_eq!(documents(&config).unwrap(), documents(&config).unwrap());
        assert_eq!(World::new(3), World::new(3));
        let other = CorpusConfig { seed: 1, ..config };
        assert_ne!(World::new(0).facts(), World::new(1).facts());
        assert_ne!(documents(&config).unwrap(), documents(&other).unwrap());
        // Document i does not depend on how many documents are asked for.
        let longer = documents(&small(600)).unwrap();
        assert_eq!(documents(&config).unwrap()[..], longer[..400]);
        let corpus = Corpus::new(&config).unwrap();
        assert_eq!(corpus.document(399).unwrap(), corpus.training()[399]);
    }

    /// FNV-1a, to pin the default corpus to golden values.
    fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
        bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
        })
    }

    #[test]
    fn default_corpus_matches_golden_values() {
        // Pins the default corpus on every platform. A deliberate change of
        // the generator changes these: update them in the same commit.
        let world = World::new(0);
        assert_eq!(
            world.facts()[0].pair(),
            (
                "The town of Makatarn lies on the river Doba.",
                "玛卡塔恩镇坐落在多巴河畔。"
            )
        );
        let joined = documents(&CorpusConfig::default()).unwrap().join("\n");
        assert_eq!(joined.len(), 1_501_048);
        assert_eq!(fnv1a(joined.bytes()), 0x8599_8a51_a98c_203f);
        assert_eq!(mix64(1), 0x5692_161D_100B_05E5);
    }

    #[test]
    fn kinds_follow_the_exact_ratio() {
        let (corpus, training) = default_training();
        let mix = corpus.config().mix;
        let blocks = training.len() / mix.total() as usize;
        assert_eq!(training.len() % mix.total() as usize, 0);
        for kind in DocumentKind::ALL {
            let count = training.iter().filter(|d| d.kind == kind).count();
            assert_eq!(count, blocks * mix.weight(kind) as usize, "{}", kind.name());
        }
        let only = CorpusConfig {
            mix: DocumentMix {
                facts: 0,
                stories: 0,
                translations: 0,
                arithmetic: 1,
                questions: 0,
            },
            ..small(20)
        };
        let sums = Corpus::new(&only).unwrap().training();
        assert!(sums.iter().all(|d| d.kind == DocumentKind::Arithmetic));
    }

    #[test]
    fn both_languages_in_expected_proportions() {
        let (_, training) = default_training();
        let n = training.len() as f64;
        let with_cjk = training.iter().filter(|d| has_cjk(&d.text)).count() as f64 / n;
        let with_latin = training.iter().filter(|d| has_latin(&d.text)).count() as f64 / n;
        let chinese_only = training.iter().filter(|d| !has_latin(&d.text)).count() as f64 / n;
        let english_only = training.iter().filter(|d| !has_cjk(&d.text)).count() as f64 / n;
        // Expected: 0.65·0.6 + 0.2 + 0.15·0.5 ≈ 0.665 contain each language,
        // ≈ 0.335 contain only one of them.
        assert!((0.6..0.73).contains(&with_cjk), "{with_cjk}");
        assert!((0.6..0.73).contains(&with_latin), "{with_latin}");
        assert!((0.28..0.4).contains(&chinese_only), "{chinese_only}");
        assert!((0.28..0.4).contains(&english_only), "{english_only}");
        for d in &training {
            match d.language {
                Language::English => assert!(!has_cjk(&d.text), "{}", d.text),
                Language::Chinese => assert!(!has_latin(&d.text), "{}", d.text),
                Language::Bilingual => assert!(has_cjk(&d.text) && has_latin(&d.text)),
            }
        }
        // Characters: Chinese is a large share of the text, not a sprinkle.
        let cjk: usize = training
            .iter()
            .map(|d| d.text.chars().filter(|&c| is_cjk(c)).count())
            .sum();
        let latin: usize = training
            .iter()
            .map(|d| d.text.chars().filter(char::is_ascii_alphabetic).count())
            .sum();
        let ratio = cjk as f64 / latin as f64;
        assert!((0.2..0.6).contains(&ratio), "CJK/latin characters {ratio}");
    }

    #[test]
    fn every_arithmetic_statement_is_correct() {
        let (_, training) = default_training();
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for d in training
            .iter()
            .filter(|d| d.kind == DocumentKind::Arithmetic)
        {
            for line in d.text.lines() {
                *kinds.entry(check_arithmetic_line(line)).or_default() += 1;
            }
        }
        for kind in ["symbolic", "english words", "chinese words", "word problem"] {
            assert!(
                kinds.get(kind).copied().unwrap_or(0) > 100,
                "{kind}: {kinds:?}"
            );
        }
    }

    #[test]
    fn number_words_round_trip() {
        for n in 0..10_000 {
            assert_eq!(
                parse_english_number(&english_number(n)),
                Some(n),
                "{}",
                english_number(n)
            );
            assert_eq!(
                parse_chinese_number(&chinese_number(n)),
                Some(n),
                "{}",
                chinese_number(n)
            );
        }
        assert_eq!(english_number(142), "one hundred and forty-two");
        assert_eq!(english_number(1005), "one thousand and five");
        assert_eq!(english_number(2310), "two thousand three hundred and ten");
        let chinese = [
            (10, "十"),
            (17, "十七"),
            (25, "二十五"),
            (42, "四十二"),
            (105, "一百零五"),
            (110, "一百一十"),
            (115, "一百一十五"),
            (1005, "一千零五"),
            (1010, "一千零一十"),
            (1100, "一千一百"),
            (2048, "二千零四十八"),
        ];
        for (n, words) in chinese {
            assert_eq!(chinese_number(n), words);
        }
        assert_eq!(english_number(12_345), "12345");
        assert_eq!(chinese_number(12_345), "12345");
    }

    #[test]
    fn facts_agree_across_languages() {
        for seed in 0..20 {
            let world = World::new(seed);
            for fact in world.facts() {
                for (statement, subject, end) in [
                    (&fact.english, &fact.subject.english, "."),
                    (&fact.chinese, &fact.subject.chinese, "。"),
                ] {
                    assert!(statement.text.starts_with(&statement.prompt));
                    assert!(statement.text.ends_with(end));
                    assert!(
                        statement.completion().contains(&statement.answer),
                        "{statement:?}"
                    );
                    assert!(statement.prompt.contains(subject.as_str()));
                    assert!(statement.question.contains(subject.as_str()));
                    assert!(statement.question.ends_with(['?', '？']));
                }
                // Both renderings match their relation's templates with the
                // same subject, and the answers are translations of each
                // other by the world's own tables.
                let templates = templates(fact.relation);
                let en = templates
                    .iter()
                    .find_map(|&(a, b, c)| match_template(&fact.english.text, a, b, c))
                    .expect("English fact matches its template");
                let zh = templates
                    .iter()
                    .find_map(|&(a, b, c)| match_template(&fact.chinese.text, a, b, c))
                    .expect("Chinese fact matches its template");
                assert_eq!(en.0, fact.subject.english);
                assert_eq!(zh.0, fact.subject.chinese);
                let expected = expected_answers(&world, fact);
                assert_eq!(
                    (fact.english.answer.as_str(), fact.chinese.answer.as_str()),
                    (expected.0.as_str(), expected.1.as_str())
                );
            }
        }
    }

    /// The answer of a fact, from the world's structure rather than its text.
    fn expected_answers(world: &World, fact: &Fact) -> (String, String) {
        let town = world.towns().iter().find(|t| t.name == fact.subject);
        let river = world.rivers().iter().find(|r| r.name == fact.subject);
        let person = world.people().iter().find(|p| p.name == fact.subject);
        let name = |n: &Name| (n.english.clone(), n.chinese.clone());
        let words = |en: &str, zh: &str| (en.to_owned(), zh.to_owned());
        match (fact.relation, town, river, person) {
            (Relation::TownRiver, Some(t), _, _) => name(&world.rivers()[t.river].name),
            (Relation::TownCraft, Some(t), _, _) => words(t.craft.english(), t.craft.chinese()),
            (Relation::TownMarket, Some(t), _, _) => {
                words(t.market_day.english(), t.market_day.chinese())
            }
            (Relation::TownEmblem, Some(t), _, _) => words(t.emblem.english(), t.emblem.chinese()),
            (Relation::RiverLength, _, Some(r), _) => {
                (r.length_km.to_string(), r.length_km.to_string())
            }
            (Relation::RiverMouth, _, Some(r), _) => match r.mouth {
                Mouth::Sea => words("the sea", "大海"),
                Mouth::Lake(i) => {
                    let lake = &world.lakes()[i].name;
                    (
                        format!("Lake {}", lake.english),
                        format!("{}湖", lake.chinese),
                    )
                }
            },
            (Relation::PersonHome, _, _, Some(p)) => name(&world.towns()[p.home].name),
            (Relation::PersonCraft, _, _, Some(p)) => {
                words(p.craft.worker_english(), p.craft.worker_chinese())
            }
            (Relation::PersonAge, _, _, Some(p)) => (p.age.to_string(), p.age.to_string()),
            (Relation::PersonPet, _, _, Some(p)) => (
                format!("{} {}", p.pet.color.english(), p.pet.animal.english()),
                format!("{}的{}", p.pet.color.chinese(), p.pet.animal.chinese()),
            ),
            (Relation::PersonFriend, _, _, Some(p)) => name(&world.people()[p.best_friend].name),
            _ => panic!("fact about an unknown subject: {fact:?}"),
        }
    }

    #[test]
    fn every_fact_sentence_in_the_corpus_is_true() {
        let (corpus, training) = default_training();
        let world = corpus.world();
        let mut canonical: BTreeMap<(Relation, &str), &Fact> = BTreeMap::new();
        for fact in world.facts() {
            canonical.insert((fact.relation, fact.subject.english.as_str()), fact);
            canonical.insert((fact.relation, fact.subject.chinese.as_str()), fact);
        }
        let home_of: BTreeMap<&str, &str> = world
            .people()
            .iter()
            .flat_map(|p| {
                let town = &world.towns()[p.home].name;
                [
                    (p.name.english.as_str(), town.english.as_str()),
                    (p.name.chinese.as_str(), town.chinese.as_str()),
                ]
            })
            .collect();
        let mut checked: BTreeMap<(Relation, bool), usize> = BTreeMap::new();
        let mut river_lists = 0;
        for d in &training {
            for sentence in sentences(&d.text) {
                let chinese = has_cjk(&sentence);
                for relation in RELATIONS {
                    for (pre, mid, post) in templates(relation) {
                        let Some((x, y)) = match_template(&sentence, pre, mid, post) else {
                            continue;
                        };
                        if relation == Relation::PersonHome {
                            // Also "A, B and C live in T." / "A、B和C住在T。"
                            let people = split_list(x);
                            if people.iter().all(|p| home_of.contains_key(p)) {
                                for p in people {
                                    assert_eq!(home_of[p], y, "{sentence:?}");
                                }
                                *checked.entry((relation, chinese)).or_default() += 1;
                            }
                        } else if let Some(fact) = canonical.get(&(relation, x)) {
                            let expected = if chinese {
                                &fact.chinese.text
                            } else {
                                &fact.english.text
                            };
                            assert_eq!(&sentence, expected, "in {:?}", d.text);
                            *checked.entry((relation, chinese)).or_default() += 1;
                        }
                    }
                }
                if let Some((r, list)) =
                    match_template(&sentence, "The river ", " flows past ", ".")
                        .or_else(|| match_template(&sentence, "", "河流经", "。"))
                {
                    let ri = world
                        .rivers()
                        .iter()
                        .position(|river| river.name.english == r || river.name.chinese == r)
                        .expect("a known river");
                    let mut listed: Vec<&str> = split_list(list);
                    listed.sort_unstable();
                    let mut expected: Vec<&str> = world
                        .towns_on(ri)
                        .into_iter()
                        .map(|t| {
                            let n = &world.towns()[t].name;
                            if chinese {
                                n.chinese.as_str()
                            } else {
                                n.english.as_str()
                            }
                        })
                        .collect();
                    expected.sort_unstable();
                    assert_eq!(listed, expected, "{sentence:?}");
                    river_lists += 1;
                }
            }
        }
        for relation in RELATIONS {
            for chinese in [false, true] {
                let n = checked.get(&(relation, chinese)).copied().unwrap_or(0);
                assert!(
                    n >= 50,
                    "{relation:?} chinese={chinese}: only {n} sentences checked"
                );
            }
        }
        assert!(river_lists > 20);
    }

    #[test]
    fn stories_use_the_world() {
        let world = World::new(0);
        for seed in 0..300 {
            let mut rng = Rng::derive(0, 77, seed);
            for story in STORIES {
                let text = story(&world, &mut rng);
                assert!(text.en.split(". ").count() >= 5, "{}", text.en);
                assert!(text.zh.matches('。').count() >= 5, "{}", text.zh);
                // Every capitalised word is a sentence start, a weekday, a
                // season-free known word, or a name of the world.
                let names: BTreeSet<&str> = world
                    .towns()
                    .iter()
                    .map(|t| t.name.english.as_str())
                    .chain(world.rivers().iter().map(|r| r.name.english.as_str()))
                    .chain(world.lakes().iter().map(|l| l.name.english.as_str()))
                    .chain(world.people().iter().map(|p| p.name.english.as_str()))
                    .collect();
                for sentence in sentences(&text.en) {
                    for word in sentence.split(' ').skip(1) {
                        let word = word
                            .trim_matches(|c: char| !c.is_alphanumeric())
                            .trim_end_matches("'s");
                        if word.starts_with(char::is_uppercase) {
                            assert!(
                                names.contains(word)
                                    || Weekday::ALL.iter().any(|d| d.english() == word)
                                    || word == "Lake",
                                "unknown name {word:?} in {sentence:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn documents_are_clean() {
        let (_, training) = default_training();
        for d in &training {
            assert!(!d.text.is_empty());
            assert_eq!(
                d.text.trim(),
                d.text,
                "surrounding whitespace: {:?}",
                d.text
            );
            assert!(!d.text.contains("  "), "double space: {:?}", d.text);
            assert!(!d.text.contains('\t') && !d.text.contains('\r'));
            assert!(!d.text.contains("\n\n\n"));
            let chars: Vec<char> = d.text.chars().collect();
            for w in chars.windows(2) {
                let (a, b) = (w[0], w[1]);
                // No ASCII space next to Chinese, no ASCII punctuation after it.
                assert!(
                    !((a == ' ' && is_cjk(b)) || (is_cjk(a) && b == ' ')),
                    "space beside CJK: {:?}",
                    d.text
                );
                assert!(
                    !(is_cjk(a) && matches!(b, ',' | '.' | ':' | ';' | '?' | '!')),
                    "ASCII punctuation after CJK: {:?}",
                    d.text
                );
            }
            // Every line of Chinese ends with Chinese punctuation or is a sum.
            for line in d.text.lines().filter(|l| has_cjk(l)) {
                assert!(line.ends_with(['。', '？']), "{line:?}");
            }
        }
    }

    #[test]
    fn names_are_unique_and_clean() {
        for seed in 0..50 {
            let world = World::new(seed);
            let names: Vec<&Name> = world
                .towns()
                .iter()
                .map(|t| &t.name)
                .chain(world.rivers().iter().map(|r| &r.name))
                .chain(world.lakes().iter().map(|l| &l.name))
                .chain(world.people().iter().map(|p| &p.name))
                .collect();
            let english: BTreeSet<&str> = names.iter().map(|n| n.english.as_str()).collect();
            let chinese: BTreeSet<&str> = names.iter().map(|n| n.chinese.as_str()).collect();
            assert_eq!(english.len(), names.len());
            assert_eq!(chinese.len(), names.len());
            for n in names {
                assert!(n.english.chars().all(|c| c.is_ascii_alphabetic()));
                assert!(n.english.starts_with(char::is_uppercase));
                assert!(n.chinese.chars().all(is_cjk));
            }
        }
        let english: BTreeSet<&str> = SYLLABLES.iter().map(|s| s.0).collect();
        let chinese: BTreeSet<&str> = SYLLABLES.iter().map(|s| s.1).collect();
        assert_eq!(english.len(), SYLLABLES.len());
        assert_eq!(chinese.len(), SYLLABLES.len());
    }

    #[test]
    fn world_structure_is_sound() {
        for seed in 0..50 {
            let config = WorldConfig {
                towns: 1 + (seed as usize % 12),
                rivers: 1,
                lakes: seed as usize % 3,
                people: 2 * (1 + seed as usize % 20),
            };
            let world = World::generate(seed, &config).unwrap();
            assert_eq!(
                world.facts().len(),
                config.towns * 4 + config.rivers * 2 + config.people * 5
            );
            for (i, p) in world.people().iter().enumerate() {
                assert_ne!(p.best_friend, i);
                assert_eq!(world.people()[p.best_friend].best_friend, i);
                assert!((18..=80).contains(&p.age));
                assert!(p.home < world.towns().len());
            }
            for r in 0..world.rivers().len() {
                assert!(!world.towns_on(r).is_empty());
            }
            let residents: usize = (0..world.towns().len())
                .map(|t| world.residents(t).len())
                .sum();
            assert_eq!(residents, config.people);
            // Every document kind can be drawn from small worlds too.
            let corpus = Corpus::new(&CorpusConfig {
                seed,
                documents: 100,
                world: config,
                mix: DocumentMix::default(),
            })
            .unwrap();
            assert!(corpus.training().iter().all(|d| !d.text.is_empty()));
        }
        let world = World::new(0);
        let crafts: BTreeSet<Craft> = world.towns().iter().map(|t| t.craft).collect();
        assert_eq!(
            crafts.len(),
            world.towns().len(),
            "towns have distinct crafts"
        );
        assert!(world.towns().iter().all(|t| {
            !world
                .residents(world.towns().iter().position(|x| x == t).unwrap())
                .is_empty()
        }));
    }

    #[test]
    fn default_corpus_size_and_speed() {
        let start = Instant::now();
        let (_, training) = default_training();
        let elapsed = start.elapsed();
        let bytes: usize = training.iter().map(|d| d.text.len()).sum();
        assert!((1_000_000..=2_000_000).contains(&bytes), "{bytes} bytes");
        assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    }

    #[test]
    fn validation_is_disjoint_deterministic_and_from_the_same_world() {
        let config = small(1_000);
        let corpus = Corpus::new(&config).unwrap();
        let validation = corpus.validation(300).unwrap();
        assert_eq!(validation.len(), 300);
        assert_eq!(validation, corpus.validation(300).unwrap());
        assert_eq!(validation[..100], corpus.validation(100).unwrap()[..]);
        let training: BTreeSet<String> = corpus.training().into_iter().map(|d| d.text).collect();
        assert!(validation.iter().all(|d| !training.contains(&d.text)));
        let texts = validation_documents(&config, 300).unwrap();
        assert_eq!(
            texts,
            validation
                .iter()
                .map(|d| d.text.clone())
                .collect::<Vec<_>>()
        );
        // Same world: some validation fact sentences are training facts.
        let facts: BTreeSet<&str> = corpus
            .world()
            .facts()
            .iter()
            .map(|f| f.english.text.as_str())
            .collect();
        assert!(validation.iter().any(|d| {
            sentences(&d.text)
                .iter()
                .any(|s| facts.contains(s.as_str()))
        }));
        for kind in DocumentKind::ALL {
            assert!(validation.iter().any(|d| d.kind == kind));
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        let invalid = |r: Result<Vec<String>>, field: &str| match r {
            Err(TrainError::InvalidArgument { what, .. }) => assert_eq!(what, field),
            other => panic!("expected an invalid `{field}`, got {other:?}"),
        };
        invalid(documents(&small(0)), "documents");
        invalid(documents(&small(MAX_DOCUMENTS + 1)), "documents");
        invalid(validation_documents(&small(10), 0), "count");
        let world = |w: WorldConfig| CorpusConfig {
            world: w,
            ..small(10)
        };
        let base = WorldConfig::default();
        invalid(
            documents(&world(WorldConfig { towns: 0, ..base })),
            "world.towns",
        );
        invalid(
            documents(&world(WorldConfig {
                towns: MAX_TOWNS + 1,
                ..base
            })),
            "world.towns",
        );
        invalid(
            documents(&world(WorldConfig { rivers: 0, ..base })),
            "world.rivers",
        );
        invalid(
            documents(&world(WorldConfig {
                towns: 2,
                rivers: 3,
                ..base
            })),
            "world.rivers",
        );
        invalid(
            documents(&world(WorldConfig {
                lakes: MAX_LAKES + 1,
                ..base
            })),
            "world.lakes",
        );
        invalid(
            documents(&world(WorldConfig { people: 7, ..base })),
            "world.people",
        );
        invalid(
            documents(&world(WorldConfig { people: 0, ..base })),
            "world.people",
        );
        let zero = DocumentMix {
            facts: 0,
            stories: 0,
            translations: 0,
            arithmetic: 0,
            questions: 0,
        };
        invalid(
            documents(&CorpusConfig {
                mix: zero,
                ..small(10)
            }),
            "mix",
        );
        let huge = DocumentMix {
            facts: u32::MAX,
            ..DocumentMix::default()
        };
        invalid(
            documents(&CorpusConfig {
                mix: huge,
                ..small(10)
            }),
            "mix",
        );
        assert!(World::generate(0, &WorldConfig { people: 3, ..base }).is_err());
        let corpus = Corpus::new(&small(10)).unwrap();
        assert!(matches!(
            corpus.document(10),
            Err(TrainError::InvalidArgument { .. })
        ));
        // The largest world still generates.
        let largest = WorldConfig {
            towns: MAX_TOWNS,
            rivers: MAX_RIVERS,
            lakes: MAX_LAKES,
            people: MAX_PEOPLE,
        };
        assert_eq!(
            World::generate(1, &largest).unwrap().people().len(),
            MAX_PEOPLE
        );
    }

    #[test]
    fn rng_is_uniform_enough_and_stable() {
        let mut rng = Rng::derive(0, STREAM_WORLD, 0);
        let mut counts = [0u32; 10];
        for _ in 0..10_000 {
            counts[rng.below(10)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (900..1100).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.range(5, 5), 5);
        assert_eq!(rng.range(5, 1), 5);
        let mut a = Rng::derive(0, STREAM_TRAINING, 1);
        let mut b = Rng::derive(0, STREAM_TRAINING, 2);
        assert_ne!(a.next_u64(), b.next_u64());
    }
}
