//! Evaluation suites: several tasks in one TOML file, run on one model into
//! one report.
//!
//! ```toml
//! name = "smoke"
//!
//! [[task]]
//! kind = "perplexity"         # text or JSONL (field `text`)
//! name = "botchan"
//! data = "botchan_zh.txt"     # paths are relative to the suite file
//! context = 256
//!
//! [[task]]
//! kind = "mc"                 # MMLU / C-Eval / CMMLU CSV or JSONL, a file or a directory
//! name = "mmlu"
//! data = "mc/data"
//! shots = 1
//!
//! [[task]]
//! kind = "generation"         # JSONL: `prompt` and `reference` (a string or a list)
//! name = "translate"
//! data = "prompts.jsonl"
//! metrics = ["bleu", "chrf", "rouge", "exact_match", "f1"]
//! max_new_tokens = 32
//!
//! [[task]]
//! kind = "speed"
//! prompt_tokens = 128
//! decode_tokens = 32
//! ```
//!
//! Unknown keys are refused with the task they are in, so a misspelt option
//! never silently falls back to a default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{EvalError, Result};

/// A suite as written in TOML.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// The suite's name (shown in reports).
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// The tasks, run in order.
    #[serde(rename = "task")]
    pub tasks: Vec<TaskSpec>,
}

/// One task of a suite.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskSpec {
    /// Perplexity of a text file or a JSONL corpus.
    Perplexity {
        /// Name in the report [default: "perplexity"].
        #[serde(default = "default_perplexity_name")]
        name: String,
        /// Text or `.jsonl` file.
        data: PathBuf,
        /// The text field of a JSONL file.
        #[serde(default = "default_text_field")]
        field: String,
        /// Window length [default: the model's].
        context: Option<usize>,
        /// Stride [default: the context].
        stride: Option<usize>,
        /// lm-eval's rolling recipe instead of HF's sliding window.
        #[serde(default)]
        rolling: bool,
        /// Score only the first N documents.
        limit: Option<usize>,
    },
    /// Multiple choice by log-likelihood.
    Mc {
        /// Name in the report [default: "mc"].
        #[serde(default = "default_mc_name")]
        name: String,
        /// A question file or a benchmark directory.
        data: PathBuf,
        /// Few-shot examples [default: `{subject}_dev` beside `data`].
        fewshot: Option<PathBuf>,
        /// `mmlu`, `ceval`, `cmmlu` or `generic` [default: from the file].
        format: Option<String>,
        /// Solved examples per question.
        #[serde(default)]
        shots: usize,
        /// Score only the first N questions.
        limit: Option<usize>,
    },
    /// Generate from prompts and score the text against references.
    Generation {
        /// Name in the report [default: "generation"].
        #[serde(default = "default_generation_name")]
        name: String,
        /// JSONL with a prompt and one or more references per line.
        data: PathBuf,
        /// The prompt field.
        #[serde(default = "default_prompt_field")]
        prompt_field: String,
        /// The reference field (a string or a list of strings).
        #[serde(default = "default_reference_field")]
        reference_field: String,
        /// Metrics: `bleu`, `chrf`, `chrf++`, `rouge`, `exact_match`, `f1`.
        #[serde(default = "default_generation_metrics")]
        metrics: Vec<String>,
        /// Greedy tokens per prompt, at most.
        #[serde(default = "default_max_new_tokens")]
        max_new_tokens: usize,
        /// Strings that end a generation (e.g. "\n").
        #[serde(default)]
        stop: Vec<String>,
        /// BLEU tokenizer (`13a`, `intl`, `zh`, `char`, `none`).
        #[serde(default = "default_bleu_tokenize")]
        bleu_tokenize: String,
        /// ROUGE tokenizer (`default` or `cjk`).
        #[serde(default = "default_rouge_tokenize")]
        rouge_tokenize: String,
        /// Score only the first N prompts.
        limit: Option<usize>,
    },
    /// Time to first token, prefill and decode speed, peak memory.
    Speed {
        /// Name in the report [default: "speed"].
        #[serde(default = "default_speed_name")]
        name: String,
        /// Prompt tokens.
        #[serde(default = "default_prompt_tokens")]
        prompt_tokens: usize,
        /// Decoded tokens.
        #[serde(default = "default_decode_tokens")]
        decode_tokens: usize,
        /// Timed rounds.
        #[serde(default = "default_repeats")]
        repeats: usize,
    },
}

fn default_perplexity_name() -> String {
    "perplexity".into()
}
fn default_mc_name() -> String {
    "mc".into()
}
fn default_generation_name() -> String {
    "generation".into()
}
fn default_speed_name() -> String {
    "speed".into()
}
fn default_text_field() -> String {
    "text".into()
}
fn default_prompt_field() -> String {
    "prompt".into()
}
fn default_reference_field() -> String {
    "reference".into()
}
fn default_generation_metrics() -> Vec<String> {
    ["bleu", "chrf", "rouge"].map(String::from).to_vec()
}
fn default_max_new_tokens() -> usize {
    64
}
fn default_bleu_tokenize() -> String {
    "13a".into()
}
fn default_rouge_tokenize() -> String {
    "default".into()
}
fn default_prompt_tokens() -> usize {
    128
}
fn default_decode_tokens() -> usize {
    64
}
fn default_repeats() -> usize {
    5
}

impl TaskSpec {
    /// The task's name in reports.
    pub fn name(&self) -> &str {
        match self {
            Self::Perplexity { name, .. }
            | Self::Mc { name, .. }
            | Self::Generation { name, .. }
            | Self::Speed { name, .. } => name,
        }
    }

    /// The task's kind as written in TOML.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Perplexity { .. } => "perplexity",
            Self::Mc { .. } => "mc",
            Self::Generation { .. } => "generation",
            Self::Speed { .. } => "speed",
        }
    }

    /// The files or directories the task reads, by setting name.
    pub fn data_paths(&self) -> Vec<(&'static str, &Path)> {
        match self {
            Self::Perplexity { data, .. } | Self::Generation { data, .. } => vec![("data", data)],
            Self::Mc { data, fewshot, .. } => {
                let mut paths = vec![("data", data.as_path())];
                if let Some(f) = fewshot {
                    paths.push(("fewshot", f.as_path()));
                }
                paths
            }
            Self::Speed { .. } => Vec::new(),
        }
    }

    /// The task's [provenance](crate::task_provenance): its settings
    /// without its name and data paths, and the hashes of its data.
    ///
    /// # Errors
    ///
    /// [`EvalError::InvalidInput`] naming a data path that cannot be read.
    pub fn provenance(&self) -> Result<serde_json::Value> {
        let mut settings = serde_json::to_value(self)
            .map_err(|e| EvalError::input(format!("task `{}`", self.name()), e.to_string()))?;
        let data = self.data_paths();
        if let Some(map) = settings.as_object_mut() {
            map.remove("name");
            for (key, _) in &data {
                map.remove(*key);
            }
        }
        crate::task_provenance::task_provenance(settings, &data)
    }

    /// Makes the task's paths relative to `base` (the suite file's
    /// directory) unless they are absolute.
    fn resolve(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        match self {
            Self::Perplexity { data, .. } | Self::Generation { data, .. } => fix(data),
            Self::Mc { data, fewshot, .. } => {
                fix(data);
                if let Some(f) = fewshot {
                    fix(f);
                }
            }
            Self::Speed { .. } => {}
        }
    }
}

impl Suite {
    /// Parses a suite from TOML text; `origin` names it in errors and
    /// `base` is the directory relative paths start from.
    ///
    /// ```
    /// use kaiyuan_eval::suite::{Suite, TaskSpec};
    /// let suite = Suite::from_toml_str("s.toml", std::path::Path::new("/data"), r#"
    ///     name = "smoke"
    ///     [[task]]
    ///     kind = "mc"
    ///     data = "mmlu"
    ///     shots = 5
    /// "#)?;
    /// assert_eq!(suite.tasks[0].name(), "mc");
    /// let TaskSpec::Mc { data, shots, .. } = &suite.tasks[0] else { unreachable!() };
    /// assert_eq!((data.to_str(), *shots), (Some("/data/mmlu"), 5));
    /// # Ok::<(), kaiyuan_eval::EvalError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`EvalError::InvalidInput`] naming `origin` and the TOML error (which
    /// names the line and the unknown or mistyped key), or a suite without
    /// tasks, or two tasks with one name.
    pub fn from_toml_str(origin: &str, base: &Path, text: &str) -> Result<Self> {
        let mut suite: Suite =
            toml::from_str(text).map_err(|e| EvalError::input(origin, e.to_string()))?;
        if suite.tasks.is_empty() {
            return Err(EvalError::input(origin, "no [[task]] tables"));
        }
        let mut names = std::collections::BTreeSet::new();
        for task in &mut suite.tasks {
            if !names.insert(task.name().to_string()) {
                return Err(EvalError::input(
                    origin,
                    format!("two tasks are named `{}`: names must differ", task.name()),
                ));
            }
            task.resolve(base);
        }
        Ok(suite)
    }

    /// Reads a suite file.
    ///
    /// # Errors
    ///
    /// Those of [`Suite::from_toml_str`]; an unreadable file is named.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| EvalError::input(path.display().to_string(), e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml_str(&path.display().to_string(), base, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_kinds_are_refused_by_name() {
        let base = Path::new(".");
        let e = Suite::from_toml_str(
            "s.toml",
            base,
            "name = 'x'\n[[task]]\nkind = 'mc'\ndata = 'd'\nshot = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("s.toml") && e.contains("shot"), "{e}");
        let e = Suite::from_toml_str("s.toml", base, "name = 'x'\n[[task]]\nkind = 'vibes'\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("vibes"), "{e}");
        let e = Suite::from_toml_str("s.toml", base, "name = 'x'\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("task"), "{e}");
        let two = "name = 'x'\n[[task]]\nkind = 'speed'\n[[task]]\nkind = 'speed'\n";
        let e = Suite::from_toml_str("s.toml", base, two)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`speed`"), "{e}");
    }

    #[test]
    fn defaults_fill_in() {
        let suite = Suite::from_toml_str(
            "s.toml",
            Path::new("/b"),
            "name = 'x'\n[[task]]\nkind = 'generation'\ndata = '/abs/p.jsonl'\n",
        )
        .unwrap();
        let TaskSpec::Generation {
            data,
            metrics,
            max_new_tokens,
            ..
        } = &suite.tasks[0]
        else {
            panic!("{suite:?}");
        };
        assert_eq!(data, Path::new("/abs/p.jsonl"));
        assert_eq!(metrics, &["bleu", "chrf", "rouge"]);
        assert_eq!(*max_new_tokens, 64);
    }
}
