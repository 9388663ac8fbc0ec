//! Multiple choice by log-likelihood, as lm-evaluation-harness scores it.
//!
//! # Prompts
//!
//! A question becomes one request per choice: a *context* (the task
//! description, `shots` solved examples, the question) and a
//! *continuation* (the answer). The formats are those of lm-eval 0.4's
//! default tasks, byte for byte (`fixtures/eval/mc` holds its
//! `--log_samples` output for 20 questions):
//!
//! - [`McFormat::Mmlu`]: description "The following are multiple choice
//!   questions (with answers) about {subject}.\n\n" (underscores in the
//!   subject become spaces), each question as
//!   `"{question.strip()}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\nAnswer:"`,
//!   continuations `" A"` … `" D"`.
//! - [`McFormat::CEval`] and [`McFormat::Cmmlu`]: the same layout ending
//!   `"答案："`, with each subject's Chinese description as lm-eval's task
//!   files give it (`mc/subjects.json`, 52 C-Eval and 67 CMMLU subjects).
//! - [`McFormat::Generic`]: the context as given, continuations
//!   `" {choice}"`.
//!
//! Solved examples are the first `shots` questions of the few-shot pool of
//! the same subject (lm-eval's `first_n` sampler over the `dev` split), each
//! `prompt + " " + answer`, joined and followed by a blank line.
//!
//! # Scoring
//!
//! As lm-eval's `HFLM`: whitespace at the end of the context moves to the
//! continuation; `context + continuation` and `context` are both encoded
//! with the tokenizer's special tokens (a BOS) unless the text already
//! starts with the BOS; the continuation's tokens are what the whole has
//! beyond the context's. The model reads `(context + continuation)` without
//! its last token, left-truncated to its maximum length, and the choice's
//! log-likelihood is the sum of its tokens' log-probabilities (f64).
//! `acc` takes the choice of highest log-likelihood (the first on a tie),
//! `acc_norm` divides by the choice's length in characters (for MMLU every
//! choice is one letter, so the two agree).
//!
//! Requests of the same shape (tokens, continuation length) run together in
//! batches; every row is fed the same calls whatever its batch, so results
//! are bit-identical for any batch size (a test checks it).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;

use kaiyuan_models::Model;
use kaiyuan_tokenizer::{EncodeOptions, Tokenizer};

use crate::perplexity::{CHUNK, TokenScore, score_rows};
use crate::{EvalError, Result};

mod load;

pub use load::{load_mc_dir, load_mc_file, load_mc_task};

/// Letters of the choices of the lettered formats.
const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

/// Tokens per forward call by default (rows × tokens).
const TOKENS_PER_BATCH: usize = 4096;

/// The prompt layout of a multiple-choice task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum McFormat {
    /// MMLU (lm-eval's `mmlu` default task): four choices, "Answer:".
    Mmlu,
    /// C-Eval (lm-eval's `ceval-valid`): four choices, "答案：".
    CEval,
    /// CMMLU (lm-eval's `cmmlu`): four choices, "答案：".
    Cmmlu,
    /// A context and free-text choices, each continuation `" " + choice`.
    Generic,
}

impl McFormat {
    /// The format's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mmlu => "mmlu",
            Self::CEval => "ceval",
            Self::Cmmlu => "cmmlu",
            Self::Generic => "generic",
        }
    }
}

impl std::str::FromStr for McFormat {
    type Err = EvalError;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "mmlu" => Self::Mmlu,
            "ceval" | "c-eval" => Self::CEval,
            "cmmlu" => Self::Cmmlu,
            "generic" | "jsonl" => Self::Generic,
            other => {
                return Err(EvalError::option(
                    "format",
                    format!("unknown `{other}`: expected mmlu, ceval, cmmlu or generic"),
                ));
            }
        })
    }
}

/// One question: its text, choices and the index of the right one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McQuestion {
    /// Where it came from, `file:line`, for messages and reports.
    pub source: String,
    /// Its layout.
    pub format: McFormat,
    /// The subject (MMLU `high_school_geography`, C-Eval `computer_network`);
    /// selects the description and the few-shot examples.
    pub subject: Option<String>,
    /// The question (for [`McFormat::Generic`], the whole context).
    pub question: String,
    /// The choices' texts (four for the lettered formats).
    pub choices: Vec<String>,
    /// Index of the right choice.
    pub gold: usize,
}

/// A multiple-choice task: the questions to score and the pool of solved
/// examples few-shot prompts draw from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct McTask {
    /// Questions to score, in order.
    pub questions: Vec<McQuestion>,
    /// Few-shot examples (a `dev` split); a question takes the first `shots`
    /// of its own subject.
    pub fewshot: Vec<McQuestion>,
}

/// Options of [`evaluate_mc`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct McOptions {
    /// Solved examples before each question.
    pub shots: usize,
    /// Rows per forward call (default: about 4,096 tokens per call).
    pub batch_size: Option<usize>,
    /// Score only the first `limit` questions.
    pub limit: Option<usize>,
    /// Keep every choice's per-token log-probabilities in the report.
    pub per_token: bool,
}

/// One request: the text the model reads and the text it is scored on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McRequest {
    /// Description, examples and question.
    pub context: String,
    /// The answer as scored, e.g. `" A"`.
    pub continuation: String,
}

/// The score of one choice.
#[derive(Clone, Debug, PartialEq)]
pub struct ChoiceScore {
    /// Sum of the continuation tokens' log-probabilities (nats).
    pub loglikelihood: f64,
    /// Every continuation token is the model's most likely one.
    pub is_greedy: bool,
    /// Continuation tokens.
    pub tokens: usize,
    /// Per-token log-probabilities ([`McOptions::per_token`]).
    pub logprobs: Option<Vec<f64>>,
}

/// The result of one question.
#[derive(Clone, Debug, PartialEq)]
pub struct QuestionResult {
    /// `file:line` of the question.
    pub source: String,
    /// Its subject, if any.
    pub subject: Option<String>,
    /// One request per choice, as sent to the model.
    pub requests: Vec<McRequest>,
    /// One score per choice.
    pub choices: Vec<ChoiceScore>,
    /// Index of the right choice.
    pub gold: usize,
    /// The choice of highest log-likelihood.
    pub prediction: usize,
    /// The choice of highest log-likelihood per character.
    pub prediction_norm: usize,
    /// The context was cut on the left to fit the model.
    pub truncated: bool,
}

impl QuestionResult {
    /// 1 when the prediction is right.
    pub fn acc(&self) -> f64 {
        f64::from(u8::from(self.prediction == self.gold))
    }

    /// 1 when the length-normalised prediction is right.
    pub fn acc_norm(&self) -> f64 {
        f64::from(u8::from(self.prediction_norm == self.gold))
    }
}

/// A mean over questions with its standard error (`sd/√n`, `n − 1` in the
/// standard deviation, as lm-eval's `mean_stderr`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeanWithError {
    /// The mean.
    pub mean: f64,
    /// Its standard error (NaN for a single question).
    pub stderr: f64,
}

impl MeanWithError {
    /// The mean and standard error of `values`.
    pub fn of(values: impl Iterator<Item = f64>) -> Self {
        let values: Vec<f64> = values.collect();
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        Self {
            mean,
            stderr: (var / n).sqrt(),
        }
    }
}

/// Accuracy of one subject (or of all questions).
#[derive(Clone, Debug, PartialEq)]
pub struct SubjectScore {
    /// The subject (`None` for questions without one).
    pub subject: Option<String>,
    /// Questions scored.
    pub questions: usize,
    /// Accuracy.
    pub acc: MeanWithError,
    /// Length-normalised accuracy.
    pub acc_norm: MeanWithError,
}

/// What [`evaluate_mc`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct McReport {
    /// Solved examples before each question.
    pub shots: usize,
    /// Every question, in task order.
    pub questions: Vec<QuestionResult>,
    /// All questions together (each question weighs the same, as lm-eval's
    /// size-weighted group mean).
    pub overall: SubjectScore,
    /// Per subject, sorted by name.
    pub subjects: Vec<SubjectScore>,
    /// Questions whose context was cut to fit the model.
    pub truncated: usize,
}

static SUBJECTS: LazyLock<BTreeMap<String, BTreeMap<String, String>>> = LazyLock::new(|| {
    // The table is generated (fixtures/eval/mc/make_subjects.py) and parsed by
    // a test; an unreadable table leaves every Chinese subject unknown, which
    // `description` reports.
    let value: serde_json::Value =
        serde_json::from_str(include_str!("mc/subjects.json")).unwrap_or_default();
    let mut out = BTreeMap::new();
    for family in ["ceval", "cmmlu"] {
        let table = value
            .get(family)
            .and_then(|t| t.as_object())
            .map(|t| {
                t.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        out.insert(family.to_string(), table);
    }
    out
});

/// The description lm-eval puts before a question of `format` on `subject`.
///
/// ```
/// use kaiyuan_eval::mc::{McFormat, description};
/// assert_eq!(
///     description(McFormat::Mmlu, Some("high_school_geography"))?,
///     "The following are multiple choice questions (with answers) about high school geography.\n\n"
/// );
/// assert!(description(McFormat::CEval, Some("computer_network"))?.starts_with("以下是中国关于计算机网络"));
/// # Ok::<(), kaiyuan_eval::EvalError>(())
/// ```
///
/// # Errors
///
/// [`EvalError::InvalidInput`] for a lettered format without a subject, or
/// a C-Eval / CMMLU subject lm-eval does not know.
pub fn description(format: McFormat, subject: Option<&str>) -> Result<String> {
    let family = match format {
        McFormat::Generic => return Ok(String::new()),
        McFormat::Mmlu => {
            let subject = subject.ok_or_else(|| {
                EvalError::input("subject", "an MMLU question needs a subject for its header")
            })?;
            return Ok(format!(
                "The following are multiple choice questions (with answers) about {}.\n\n",
                subject.replace('_', " ")
            ));
        }
        McFormat::CEval => "ceval",
        McFormat::Cmmlu => "cmmlu",
    };
    let subject = subject.ok_or_else(|| {
        EvalError::input("subject", format!("a {family} question needs a subject"))
    })?;
    SUBJECTS
        .get(family)
        .and_then(|t| t.get(subject))
        .cloned()
        .ok_or_else(|| {
            EvalError::input(
                "subject",
                format!("`{subject}` is not a {family} subject known to lm-eval 0.4.13"),
            )
        })
}

/// Python's `str.isspace` for one character (Unicode White_Space plus the
/// information separators U+001C..U+001F).
fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The prompt of a question without its answer.
fn question_text(q: &McQuestion) -> Result<String> {
    if q.format == McFormat::Generic {
        return Ok(q.question.clone());
    }
    if q.choices.len() != 4 {
        return Err(EvalError::input(
            &q.source,
            format!(
                "{} questions have 4 choices, found {}",
                q.format.name(),
                q.choices.len()
            ),
        ));
    }
    let mut text = q.question.trim_matches(python_space).to_string();
    for (letter, choice) in LETTERS.iter().zip(&q.choices) {
        text.push('\n');
        text.push_str(letter);
        text.push_str(". ");
        text.push_str(choice);
    }
    text.push_str(if q.format == McFormat::Mmlu {
        "\nAnswer:"
    } else {
        "\n答案："
    });
    Ok(text)
}

/// The continuation of choice `i`, without its leading space.
fn answer_text(q: &McQuestion, i: usize) -> &str {
    match q.format {
        McFormat::Generic => q.choices.get(i).map_or("", String::as_str),
        _ => LETTERS.get(i).copied().unwrap_or(""),
    }
}

/// The requests of `question` (one per choice) with `shots` solved examples
/// from `fewshot`, exactly as lm-eval builds them.
///
/// ```
/// use kaiyuan_eval::mc::{McFormat, McQuestion, build_requests};
/// let q = McQuestion {
///     source: "q.csv:1".into(),
///     format: McFormat::Mmlu,
///     subject: Some("anatomy".into()),
///     question: " Which organ pumps blood? ".into(),
///     choices: ["Lung", "Heart", "Liver", "Skin"].map(String::from).to_vec(),
///     gold: 1,
/// };
/// let requests = build_requests(&q, &[], 0)?;
/// assert_eq!(requests[1].continuation, " B");
/// assert!(requests[0].context.ends_with("about anatomy.\n\nWhich organ pumps blood?\nA. Lung\nB. Heart\nC. Liver\nD. Skin\nAnswer:"));
/// # Ok::<(), kaiyuan_eval::EvalError>(())
/// ```
///
/// # Errors
///
/// [`EvalError::InvalidInput`] naming the question's source when it has the
/// wrong number of choices, or fewer than `shots` examples of its subject
/// exist; those of [`description`].
pub fn build_requests(
    question: &McQuestion,
    fewshot: &[McQuestion],
    shots: usize,
) -> Result<Vec<McRequest>> {
    let mut context = description(question.format, question.subject.as_deref())?;
    if shots > 0 {
        let examples: Vec<&McQuestion> = fewshot
            .iter()
            .filter(|e| e.subject == question.subject && e.format == question.format)
            .take(shots)
            .collect();
        if examples.len() < shots {
            return Err(EvalError::input(
                &question.source,
                format!(
                    "{shots} few-shot examples asked for, but the few-shot pool has {} of subject `{}`",
                    examples.len(),
                    question.subject.as_deref().unwrap_or("(none)")
                ),
            ));
        }
        let mut solved = Vec::with_capacity(shots);
        for e in examples {
            solved.push(format!("{} {}", question_text(e)?, answer_text(e, e.gold)));
        }
        context.push_str(&solved.join("\n\n"));
        context.push_str("\n\n");
    }
    context.push_str(&question_text(question)?);
    Ok((0..question.choices.len())
        .map(|i| McRequest {
            context: context.clone(),
            continuation: format!(" {}", answer_text(question, i)),
        })
        .collect())
}

/// Token ids of a request as lm-eval's `HFLM` makes them: `(context,
/// continuation)` (see the module docs). `bos` conditions an empty context.
///
/// ```
/// use kaiyuan_eval::mc::{McRequest, encode_request};
/// use kaiyuan_tokenizer::Tokenizer;
/// let json = r#"{"model": {"type": "BPE", "vocab": {"a": 0, " ": 1, "b": 2}, "merges": []}}"#;
/// let tok = Tokenizer::from_json_str("inline", json)?;
/// let request = McRequest { context: "a ".into(), continuation: "b".into() };
/// // The context's trailing space moves to the continuation.
/// assert_eq!(encode_request(&tok, None, &request)?, (vec![0], vec![1, 2]));
/// # Ok::<(), kaiyuan_eval::EvalError>(())
/// ```
///
/// # Errors
///
/// [`EvalError::InvalidInput`] for an empty context without `bos`; tokenizer
/// errors.
pub fn encode_request(
    tokenizer: &Tokenizer,
    bos: Option<u32>,
    request: &McRequest,
) -> Result<(Vec<u32>, Vec<u32>)> {
    let trimmed = request.context.trim_end_matches(python_space);
    if trimmed.is_empty() {
        let bos = bos.ok_or_else(|| {
            EvalError::input(
                "context",
                "an empty context needs the model's bos_token_id to condition on",
            )
        })?;
        let options = EncodeOptions {
            add_special_tokens: false,
            split_special_tokens: false,
        };
        let cont = tokenizer.encode_with(&request.continuation, options)?.ids;
        return Ok(if cont.first() == Some(&bos) {
            (cont[..1].to_vec(), cont[1..].to_vec())
        } else {
            (vec![bos], cont)
        });
    }
    let spaces = &request.context[trimmed.len()..];
    let continuation = format!("{spaces}{}", request.continuation);
    let bos_text = bos.and_then(|b| tokenizer.id_to_token(b));
    let options = EncodeOptions {
        add_special_tokens: !bos_text.is_some_and(|t| !t.is_empty() && trimmed.starts_with(&t)),
        split_special_tokens: false,
    };
    let whole = tokenizer
        .encode_with(&format!("{trimmed}{continuation}"), options)?
        .ids;
    let context = tokenizer.encode_with(trimmed, options)?.ids;
    let cont = whole.get(context.len()..).unwrap_or_default().to_vec();
    Ok((context, cont))
}

/// Scores a multiple-choice task with `model`: every question's requests
/// ([`build_requests`]), their log-likelihoods, `acc` and `acc_norm`, per
/// subject and overall.
///
/// ```
/// use kaiyuan_eval::mc::{McOptions, McTask, evaluate_mc, load_mc_file};
/// use kaiyuan_models::ModelFiles;
/// use kaiyuan_tensor::DType;
///
/// let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/eval/mc");
/// let mut files = ModelFiles::open(format!("{fixtures}/model"))?;
/// let model = files.take_model(DType::F32)?;
/// let task = McTask {
///     questions: load_mc_file(format!("{fixtures}/data/computer_network_val.csv"), None)?,
///     fewshot: load_mc_file(format!("{fixtures}/data/computer_network_dev.csv"), None)?,
/// };
/// let report = evaluate_mc(&model, files.require_tokenizer()?, &task, &McOptions { shots: 1, ..Default::default() })?;
/// assert_eq!(report.overall.questions, 3);
/// # Ok::<(), kaiyuan_eval::EvalError>(())
/// ```
///
/// # Errors
///
/// Those of [`build_requests`]; [`EvalError::InvalidInput`] naming the
/// question when a choice encodes to no tokens or the continuation alone
/// exceeds the model; [`EvalError::InvalidOption`] for a zero batch size or
/// an empty task; [`EvalError::NotANumber`] for a NaN log-probability; model
/// errors.
pub fn evaluate_mc(
    model: &Model,
    tokenizer: &Tokenizer,
    task: &McTask,
    options: &McOptions,
) -> Result<McReport> {
    let questions = &task.questions[..options
        .limit
        .unwrap_or(usize::MAX)
        .min(task.questions.len())];
    if questions.is_empty() {
        return Err(EvalError::option("task", "no questions to score"));
    }
    if options.batch_size == Some(0) {
        return Err(EvalError::option("batch_size", "must be at least 1"));
    }
    let config = model.config();
    let max_len = config.max_position_embeddings;
    let bos = config.bos_token_id;

    // Every request as (question, choice, row tokens, first scored, truncated).
    struct Row {
        question: usize,
        choice: usize,
        tokens: Vec<u32>,
        first: usize,
        truncated: bool,
    }
    let mut requests = Vec::with_capacity(questions.len());
    let mut rows = Vec::new();
    for (qi, q) in questions.iter().enumerate() {
        let reqs = build_requests(q, &task.fewshot, options.shots)?;
        for (ci, request) in reqs.iter().enumerate() {
            let (context, cont) = encode_request(tokenizer, bos, request)?;
            if cont.is_empty() {
                return Err(EvalError::input(
                    &q.source,
                    format!(
                        "choice {ci} ({:?}) encodes to no tokens",
                        request.continuation
                    ),
                ));
            }
            if cont.len() > max_len {
                return Err(EvalError::input(
                    &q.source,
                    format!(
                        "choice {ci} has {} tokens, more than the model's {max_len} positions",
                        cont.len()
                    ),
                ));
            }
            let mut tokens = context;
            tokens.extend_from_slice(&cont);
            let truncated = tokens.len() > max_len + 1;
            if truncated {
                tokens.drain(..tokens.len() - (max_len + 1));
            }
            if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= config.vocab_size) {
                return Err(EvalError::input(
                    &q.source,
                    format!(
                        "token id {bad} is outside the model's vocabulary of {}",
                        config.vocab_size
                    ),
                ));
            }
            let first = tokens.len() - cont.len();
            rows.push(Row {
                question: qi,
                choice: ci,
                tokens,
                first,
                truncated,
            });
        }
        requests.push(reqs);
    }

    // Batches of rows of one shape, longest first (as lm-eval orders them).
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(rows[i].tokens.len()), rows[i].first, i));
    let mut scores: Vec<Option<Vec<TokenScore>>> = vec![None; rows.len()];
    let mut start = 0;
    while start < order.len() {
        let shape = |i: usize| (rows[i].tokens.len(), rows[i].first);
        let head = shape(order[start]);
        let limit = options
            .batch_size
            .unwrap_or_else(|| (TOKENS_PER_BATCH / head.0.max(1)).max(1));
        let mut end = start + 1;
        while end < order.len() && end - start < limit && shape(order[end]) == head {
            end += 1;
        }
        let batch: Vec<&[u32]> = order[start..end]
            .iter()
            .map(|&i| rows[i].tokens.as_slice())
            .collect();
        for (&i, row) in order[start..end]
            .iter()
            .zip(score_rows(model, &batch, head.1, CHUNK)?)
        {
            scores[i] = Some(row);
        }
        start = end;
    }

    let mut results: Vec<QuestionResult> = questions
        .iter()
        .zip(requests)
        .map(|(q, requests)| QuestionResult {
            source: q.source.clone(),
            subject: q.subject.clone(),
            requests,
            choices: Vec::with_capacity(q.choices.len()),
            gold: q.gold,
            prediction: 0,
            prediction_norm: 0,
            truncated: false,
        })
        .collect();
    for (row, score) in rows.iter().zip(scores) {
        let score = score.unwrap_or_default();
        let result = &mut results[row.question];
        if let Some(k) = score.iter().position(|s| s.logprob.is_nan()) {
            return Err(EvalError::NotANumber {
                position: row.first + k,
            });
        }
        debug_assert_eq!(result.choices.len(), row.choice);
        result.truncated |= row.truncated;
        result.choices.push(ChoiceScore {
            loglikelihood: score.iter().map(|s| s.logprob).sum(),
            is_greedy: score.iter().all(|s| s.greedy),
            tokens: score.len(),
            logprobs: options
                .per_token
                .then(|| score.iter().map(|s| s.logprob).collect()),
        });
    }
    for (result, q) in results.iter_mut().zip(questions) {
        let lls: Vec<f64> = result.choices.iter().map(|c| c.loglikelihood).collect();
        result.prediction = first_argmax(&lls);
        let normed: Vec<f64> = lls
            .iter()
            .enumerate()
            .map(|(i, ll)| ll / answer_text(q, i).chars().count().max(1) as f64)
            .collect();
        result.prediction_norm = first_argmax(&normed);
    }
    Ok(summarise(options.shots, results))
}

/// Index of the first largest value (numpy's `argmax`).
fn first_argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

fn score_of(subject: Option<String>, results: &[&QuestionResult]) -> SubjectScore {
    SubjectScore {
        subject,
        questions: results.len(),
        acc: MeanWithError::of(results.iter().map(|r| r.acc())),
        acc_norm: MeanWithError::of(results.iter().map(|r| r.acc_norm())),
    }
}

fn summarise(shots: usize, questions: Vec<QuestionResult>) -> McReport {
    let mut by_subject: BTreeMap<Option<String>, Vec<&QuestionResult>> = BTreeMap::new();
    for r in &questions {
        by_subject.entry(r.subject.clone()).or_default().push(r);
    }
    let subjects = by_subject
        .into_iter()
        .map(|(subject, rs)| score_of(subject, &rs))
        .collect();
    let all: Vec<&QuestionResult> = questions.iter().collect();
    let overall = score_of(None, &all);
    let truncated = questions.iter().filter(|r| r.truncated).count();
    McReport {
        shots,
        overall,
        subjects,
        truncated,
        questions,
    }
}

/// The subject a file's name gives: `high_school_geography_test.csv` →
/// `high_school_geography` (a `_test`, `_val`, `_validation` or `_dev`
/// suffix is dropped).
pub fn subject_of_path(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    let subject = ["_test", "_validation", "_val", "_dev"]
        .iter()
        .find_map(|s| stem.strip_suffix(s))
        .unwrap_or(stem);
    (!subject.is_empty()).then(|| subject.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_table_parses_and_is_complete() {
        assert_eq!(SUBJECTS["ceval"].len(), 52);
        assert_eq!(SUBJECTS["cmmlu"].len(), 67);
        assert!(SUBJECTS["cmmlu"]["agronomy"].ends_with("请直接给出正确答案的选项。\n\n"));
    }

    #[test]
    fn python_strip_rules() {
        assert_eq!(" \u{1f}a b\u{3000}\n".trim_matches(python_space), "a b");
        assert!(!python_space('\u{200b}'));
    }

    #[test]
    fn argmax_takes_the_first_of_ties() {
        assert_eq!(first_argmax(&[-1.0, -0.5, -0.5]), 1);
        assert_eq!(first_argmax(&[f64::NEG_INFINITY; 3]), 0);
    }

    #[test]
    fn subjects_come_from_file_names() {
        let s = |p: &str| subject_of_path(Path::new(p));
        assert_eq!(s("data/anatomy_test.csv").as_deref(), Some("anatomy"));
        assert_eq!(
            s("computer_network_val.csv").as_deref(),
            Some("computer_network")
        );
        assert_eq!(s("x/questions.jsonl").as_deref(), Some("questions"));
    }

    #[test]
    fn unknown_chinese_subjects_are_named() {
        let err = description(McFormat::CEval, Some("astrology")).unwrap_err();
        assert!(err.to_string().contains("astrology"), "{err}");
    }
}
