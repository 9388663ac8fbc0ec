//! Reading multiple-choice questions from the files benchmarks publish.
//!
//! - MMLU CSV, as published (`{subject}_{dev,val,test}.csv`): no header,
//!   columns question, A, B, C, D, answer letter.
//! - C-Eval CSV (`{subject}_{dev,val,test}.csv`): a header naming `question`,
//!   `A`…`D`, `answer` (and `id`, `explanation`, ignored).
//! - CMMLU CSV: the same with `Question` and `Answer`.
//! - JSONL: `question`, `choices` (a list), `answer` (a letter or a 0-based
//!   index) and optional `subject`; or the generic `context`, `choices`,
//!   `gold` (index).
//!
//! Every problem names the file and line: a missing or extra column, an
//! answer outside the choices, invalid JSON. Nothing is skipped.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{McFormat, McQuestion, McTask, subject_of_path};
use crate::{EvalError, Result};

fn at(path: &Path, line: u64) -> String {
    format!("{}:{line}", path.display())
}

/// Index of an answer letter (`A` = 0) among `n` choices.
fn letter_index(letter: &str, n: usize) -> Option<usize> {
    let mut chars = letter.trim().chars();
    let c = chars.next()?;
    if chars.next().is_some() || !c.is_ascii_uppercase() {
        return None;
    }
    let i = (c as u8 - b'A') as usize;
    (i < n).then_some(i)
}

/// Reads the questions of one file (CSV or JSONL, chosen by extension; the
/// layout from the content unless `format` says).
///
/// ```
/// use kaiyuan_eval::mc::{McFormat, load_mc_file};
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/eval/mc/data");
/// let questions = load_mc_file(format!("{dir}/computer_security_test.csv"), None)?;
/// assert_eq!(questions.len(), 5);
/// assert_eq!(questions[0].format, McFormat::Mmlu);
/// assert_eq!(questions[0].subject.as_deref(), Some("computer_security"));
/// # Ok::<(), kaiyuan_eval::EvalError>(())
/// ```
///
/// # Errors
///
/// [`EvalError::InvalidInput`] naming `file:line` for an unreadable file,
/// a malformed row, a missing field or an answer outside the choices; an
/// unknown extension names the file.
pub fn load_mc_file(path: impl AsRef<Path>, format: Option<McFormat>) -> Result<Vec<McQuestion>> {
    let path = path.as_ref();
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let questions = match ext.to_ascii_lowercase().as_str() {
        "csv" => load_csv(path, format)?,
        "jsonl" | "json" => load_jsonl(path, format)?,
        _ => {
            return Err(EvalError::input(
                path.display().to_string(),
                "expected a .csv (MMLU, C-Eval, CMMLU) or .jsonl file",
            ));
        }
    };
    if questions.is_empty() {
        return Err(EvalError::input(
            path.display().to_string(),
            "holds no questions",
        ));
    }
    Ok(questions)
}

fn load_csv(path: &Path, format: Option<McFormat>) -> Result<Vec<McQuestion>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .map_err(|e| EvalError::input(path.display().to_string(), e.to_string()))?;
    let subject = subject_of_path(path);
    let mut out = Vec::new();
    // Column indices of question, A..D, answer.
    let mut columns: Option<[usize; 6]> = None;
    let mut detected = format;
    for (index, record) in reader.records().enumerate() {
        let line = index as u64 + 1;
        let record = record.map_err(|e| EvalError::input(at(path, line), e.to_string()))?;
        let line = record.position().map_or(line, |p| p.line());
        if index == 0 {
            let find = |name: &str| {
                record
                    .iter()
                    .position(|f| f.trim().eq_ignore_ascii_case(name))
            };
            if let (Some(q), Some(a)) = (find("question"), find("answer")) {
                let letters =
                    ["A", "B", "C", "D"].map(|l| record.iter().position(|f| f.trim() == l));
                let [Some(ca), Some(cb), Some(cc), Some(cd)] = letters else {
                    return Err(EvalError::input(
                        at(path, line),
                        "the header names question and answer but not all of the columns A, B, C, D",
                    ));
                };
                columns = Some([q, ca, cb, cc, cd, a]);
                if detected.is_none() {
                    let lower = record.get(q).is_some_and(|f| f.trim() == "question");
                    detected = Some(if lower {
                        McFormat::CEval
                    } else {
                        McFormat::Cmmlu
                    });
                }
                continue;
            }
        }
        let cols = columns.unwrap_or([0, 1, 2, 3, 4, 5]);
        let width = cols.iter().max().copied().unwrap_or(0) + 1;
        if record.len() < width || (columns.is_none() && record.len() != 6) {
            return Err(EvalError::input(
                at(path, line),
                format!(
                    "expected {} columns (question, A, B, C, D, answer), found {}",
                    if columns.is_none() { 6 } else { width },
                    record.len()
                ),
            ));
        }
        let field = |i: usize| record.get(cols[i]).unwrap_or("").to_string();
        let answer = field(5);
        let gold = letter_index(&answer, 4).ok_or_else(|| {
            EvalError::input(
                at(path, line),
                format!("answer `{answer}` is not one of A, B, C, D"),
            )
        })?;
        out.push(McQuestion {
            source: at(path, line),
            format: detected.unwrap_or(McFormat::Mmlu),
            subject: subject.clone(),
            question: field(0),
            choices: (1..5).map(field).collect(),
            gold,
        });
    }
    Ok(out)
}

fn load_jsonl(path: &Path, format: Option<McFormat>) -> Result<Vec<McQuestion>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EvalError::input(path.display().to_string(), e.to_string()))?;
    let mut out = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index as u64 + 1;
        let here = at(path, line);
        if raw.trim().is_empty() {
            return Err(EvalError::input(
                here,
                "empty line (one JSON object per line expected)",
            ));
        }
        let value: Value =
            serde_json::from_str(raw).map_err(|e| EvalError::input(&here, e.to_string()))?;
        out.push(question_from_json(&value, format, here)?);
    }
    Ok(out)
}

fn question_from_json(value: &Value, format: Option<McFormat>, here: String) -> Result<McQuestion> {
    let text = |key: &str| value.get(key).and_then(Value::as_str);
    let choices: Vec<String> = value
        .get("choices")
        .and_then(Value::as_array)
        .ok_or_else(|| EvalError::input(&here, "missing field `choices` (a list of strings)"))?
        .iter()
        .map(|c| c.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or_else(|| EvalError::input(&here, "`choices` must hold only strings"))?;
    if choices.len() < 2 {
        return Err(EvalError::input(
            &here,
            format!("needs at least 2 choices, found {}", choices.len()),
        ));
    }
    let (question, answer_key, default_format) = match (text("question"), text("context")) {
        (Some(q), _) => (q, "answer", McFormat::Mmlu),
        (None, Some(c)) => (c, "gold", McFormat::Generic),
        (None, None) => {
            return Err(EvalError::input(
                &here,
                "missing field `question` (or `context` for a generic task)",
            ));
        }
    };
    let answer = value
        .get(answer_key)
        .or_else(|| {
            value.get(if answer_key == "answer" {
                "gold"
            } else {
                "answer"
            })
        })
        .ok_or_else(|| EvalError::input(&here, format!("missing field `{answer_key}`")))?;
    let gold = match answer {
        Value::Number(n) => n
            .as_u64()
            .map(|i| i as usize)
            .filter(|&i| i < choices.len()),
        Value::String(s) => letter_index(s, choices.len()),
        _ => None,
    }
    .ok_or_else(|| {
        EvalError::input(
            &here,
            format!(
                "answer {answer} is neither a letter nor an index among {} choices",
                choices.len()
            ),
        )
    })?;
    Ok(McQuestion {
        source: here,
        format: format.unwrap_or(default_format),
        subject: text("subject").map(str::to_string),
        question: question.to_string(),
        choices,
        gold,
    })
}

/// Reads a benchmark directory: questions from every `*_test` and `*_val`
/// file (CSV or JSONL, sorted by name), few-shot examples from every `*_dev`
/// file. C-Eval publishes answers for `val` only, so a directory holding
/// both scores `val` when `test` files carry no answer column.
///
/// ```
/// use kaiyuan_eval::mc::load_mc_dir;
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/eval/mc/data");
/// let task = load_mc_dir(dir, None)?;
/// assert_eq!(task.questions.len(), 20);
/// assert_eq!(task.fewshot.len(), 12);
/// # Ok::<(), kaiyuan_eval::EvalError>(())
/// ```
///
/// # Errors
///
/// [`EvalError::InvalidInput`] when the directory cannot be read or holds no
/// question file; those of [`load_mc_file`].
pub fn load_mc_dir(dir: impl AsRef<Path>, format: Option<McFormat>) -> Result<McTask> {
    let dir = dir.as_ref();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| EvalError::input(dir.display().to_string(), e.to_string()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("csv" | "jsonl")
            )
        })
        .collect();
    files.sort();
    let stem = |p: &Path| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string()
    };
    let mut task = McTask::default();
    for file in &files {
        let name = stem(file);
        if name.ends_with("_dev") {
            task.fewshot.extend(load_mc_file(file, format)?);
        } else if name.ends_with("_test") || name.ends_with("_val") || name.ends_with("_validation")
        {
            task.questions.extend(load_mc_file(file, format)?);
        }
    }
    if task.questions.is_empty() {
        return Err(EvalError::input(
            dir.display().to_string(),
            "holds no *_test or *_val question file (.csv or .jsonl)",
        ));
    }
    Ok(task)
}

/// Reads a task from a question file or a benchmark directory
/// ([`load_mc_dir`]) with its few-shot pool: `fewshot` when given, else for
/// a file `{subject}_dev.{ext}` beside it (needed only when `shots > 0`).
///
/// ```
/// use kaiyuan_eval::mc::load_mc_task;
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/eval/mc/data");
/// let task = load_mc_task(format!("{dir}/computer_security_test.csv"), None, None, 3)?;
/// assert_eq!((task.questions.len(), task.fewshot.len()), (5, 3));
/// # Ok::<(), kaiyuan_eval::EvalError>(())
/// ```
///
/// # Errors
///
/// Those of [`load_mc_file`] and [`load_mc_dir`];
/// [`EvalError::InvalidInput`] naming the file when `shots > 0` and no
/// few-shot file is given or found beside it.
pub fn load_mc_task(
    path: impl AsRef<Path>,
    fewshot: Option<&Path>,
    format: Option<McFormat>,
    shots: usize,
) -> Result<McTask> {
    let path = path.as_ref();
    let mut task = if path.is_dir() {
        load_mc_dir(path, format)?
    } else {
        McTask {
            questions: load_mc_file(path, format)?,
            fewshot: Vec::new(),
        }
    };
    if let Some(f) = fewshot {
        task.fewshot = load_mc_file(f, format)?;
    } else if shots > 0 && !path.is_dir() {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("csv");
        let dev = subject_of_path(path)
            .map(|s| path.with_file_name(format!("{s}_dev.{ext}")))
            .filter(|p| p.is_file())
            .ok_or_else(|| {
                EvalError::input(
                    path.display().to_string(),
                    format!("{shots}-shot prompts need few-shot examples: no {{subject}}_dev file beside it (pass a few-shot file)"),
                )
            })?;
        task.fewshot = load_mc_file(dev, format)?;
    }
    Ok(task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, content: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kaiyuan-mc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn error(result: Result<Vec<McQuestion>>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let p = write("bad_test.csv", "q,a,b,c,d,A\nq2,a,b,c,d,E\n");
        let e = error(load_mc_file(&p, None));
        assert!(e.contains("bad_test.csv:2") && e.contains("`E`"), "{e}");
        let p = write("short_test.csv", "q,a,b,c,A\n");
        let e = error(load_mc_file(&p, None));
        assert!(
            e.contains("short_test.csv:1") && e.contains("found 5"),
            "{e}"
        );
        let p = write(
            "x.jsonl",
            "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 2}\n",
        );
        let e = error(load_mc_file(&p, None));
        assert!(e.contains("x.jsonl:1") && e.contains("2 choices"), "{e}");
        let p = write("y.jsonl", "{\"question\": \"q\", \"answer\": 0}\n");
        assert!(error(load_mc_file(&p, None)).contains("`choices`"));
        let p = write(
            "z.jsonl",
            "{\"context\": \"c\", \"choices\": [\"a\", \"b\"], \"gold\": 1}\n\n",
        );
        let e = error(load_mc_file(&p, None));
        assert!(e.contains("z.jsonl:2") && e.contains("empty line"), "{e}");
    }

    #[test]
    fn headers_choose_ceval_or_cmmlu() {
        let p = write(
            "law_val.csv",
            "id,question,A,B,C,D,answer,explanation\n0,q,a,b,c,d,B,\n",
        );
        let q = load_mc_file(&p, None).unwrap();
        assert_eq!((q[0].format, q[0].gold), (McFormat::CEval, 1));
        assert_eq!(q[0].source, format!("{}:2", p.display()));
        let p = write("law_test.csv", ",Question,A,B,C,D,Answer\n0,q,a,b,c,d,D\n");
        let q = load_mc_file(&p, None).unwrap();
        assert_eq!((q[0].format, q[0].gold), (McFormat::Cmmlu, 3));
        let p = write(
            "g.jsonl",
            "{\"context\": \"c\", \"choices\": [\"x\", \"y\", \"z\"], \"gold\": 2}\n",
        );
        let q = load_mc_file(&p, None).unwrap();
        assert_eq!(
            (q[0].format, q[0].gold, q[0].subject.clone()),
            (McFormat::Generic, 2, None)
        );
    }
}
