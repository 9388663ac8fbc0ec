//! What a score was measured on: each task's data (SHA-256 of every file
//! or directory it reads) and settings, and one hash of both. Reports carry
//! it, and `eval compare` refuses to set scores side by side when their
//! tasks differ — a BLEU measured on other references, or accuracy with
//! other few-shot settings, is not a regression or an improvement.
//!
//! Suite reports (`kaiyuan.eval.report/1`) hold it per task under
//! `task_provenance.<task>`; single-task reports (`eval mc --json`, …)
//! under `provenance`.

use std::collections::BTreeMap;
use std::path::Path;

use kaiyuan_provenance::{digest_path, sha256_hex, short};
use serde_json::{Map, Value, json};

use crate::report::REPORT_SCHEMA;
use crate::{EvalError, Result};

/// The provenance of a task: `settings` (with the data paths taken out),
/// `data` (role → SHA-256 and size) and `sha256`, the hash of both.
///
/// ```
/// use kaiyuan_eval::task_provenance::task_provenance;
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/eval/mc/data");
/// let a = task_provenance(serde_json::json!({"shots": 0}), &[("data", dir.as_ref())])?;
/// let b = task_provenance(serde_json::json!({"shots": 5}), &[("data", dir.as_ref())])?;
/// assert_eq!(a["data"], b["data"]);
/// assert_ne!(a["sha256"], b["sha256"]);
/// # Ok::<(), kaiyuan_eval::EvalError>(())
/// ```
///
/// # Errors
///
/// [`EvalError::InvalidInput`] naming a data path that cannot be read.
pub fn task_provenance(settings: Value, data: &[(&str, &Path)]) -> Result<Value> {
    let mut hashed = Map::new();
    for (role, path) in data {
        let digest = digest_path(path)
            .map_err(|e| EvalError::input(path.display().to_string(), e.to_string()))?;
        hashed.insert(
            (*role).to_string(),
            json!({"sha256": digest.sha256, "bytes": digest.bytes}),
        );
    }
    let data = Value::Object(hashed);
    // serde_json keeps insertion order; hash a key-sorted copy.
    let canonical = json!({"settings": sorted(&settings), "data": sorted(&data)});
    let sha256 = sha256_hex(canonical.to_string().as_bytes());
    Ok(json!({"settings": settings, "data": data, "sha256": sha256}))
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let ordered: BTreeMap<&String, Value> =
                map.iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(ordered.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// The task of each metric: `task` of `task/metric` in a suite report, and
/// `""` (the report's one task) otherwise; with the task's provenance.
fn provenance_of<'a>(report: &'a Value, metric: &str) -> (String, Option<&'a Value>) {
    if report.get("schema").and_then(Value::as_str) == Some(REPORT_SCHEMA) {
        let task = metric.split_once('/').map_or(metric, |(t, _)| t);
        (
            task.to_string(),
            report.get("task_provenance").and_then(|p| p.get(task)),
        )
    } else {
        (String::new(), report.get("provenance"))
    }
}

/// Checks that every metric in `metrics` was measured on the same task
/// data with the same settings in reports `a` and `b`. A task without
/// provenance in either report is an error, or with `allow_unverified` a
/// warning in the returned list.
///
/// # Errors
///
/// [`EvalError::InvalidInput`] naming the task and each data file or
/// setting that differs, or the report that has no task provenance.
pub fn check_same_tasks(
    a: &Value,
    origin_a: &str,
    b: &Value,
    origin_b: &str,
    metrics: &[String],
    allow_unverified: bool,
) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    let mut checked = std::collections::BTreeSet::new();
    for metric in metrics {
        let (task, pa) = provenance_of(a, metric);
        let (_, pb) = provenance_of(b, metric);
        if !checked.insert(task.clone()) {
            continue;
        }
        let what = if task.is_empty() {
            format!("metric `{metric}`")
        } else {
            format!("task `{task}`")
        };
        let (pa, pb) = match (pa, pb) {
            (Some(pa), Some(pb)) => (pa, pb),
            (None, _) | (_, None) => {
                let missing = if pa.is_none() { origin_a } else { origin_b };
                if allow_unverified {
                    warnings.push(format!(
                        "{missing}: no task provenance for {what}; compared unverified"
                    ));
                    continue;
                }
                return Err(EvalError::input(
                    missing,
                    format!(
                        "no task provenance for {what}, so its task data and settings cannot be checked (re-run the evaluation with this version, or pass --unverified)"
                    ),
                ));
            }
        };
        if pa.get("sha256") == pb.get("sha256") {
            continue;
        }
        let differences = differences(pa, pb);
        return Err(EvalError::input(
            what,
            format!(
                "{origin_a} and {origin_b} were measured on different task data or settings, so their scores are not comparable: {}",
                if differences.is_empty() {
                    "their task hashes differ".to_string()
                } else {
                    differences.join("; ")
                }
            ),
        ));
    }
    Ok(warnings)
}

/// Human-readable differences between two task provenances.
fn differences(a: &Value, b: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let empty = Map::new();
    let object = |v: &Value, key: &str| -> Map<String, Value> {
        v.get(key)
            .and_then(Value::as_object)
            .unwrap_or(&empty)
            .clone()
    };
    let (da, db) = (object(a, "data"), object(b, "data"));
    let keys: std::collections::BTreeSet<&String> = da.keys().chain(db.keys()).collect();
    for key in keys {
        let sha = |m: &Map<String, Value>| {
            m.get(key.as_str())
                .and_then(|d| d.get("sha256"))
                .and_then(Value::as_str)
                .map(|s| short(s).to_string())
        };
        let (ha, hb) = (sha(&da), sha(&db));
        if ha != hb {
            out.push(format!(
                "{key} data differs (sha256 {} vs {})",
                ha.as_deref().unwrap_or("absent"),
                hb.as_deref().unwrap_or("absent")
            ));
        }
    }
    let (sa, sb) = (object(a, "settings"), object(b, "settings"));
    let keys: std::collections::BTreeSet<&String> = sa.keys().chain(sb.keys()).collect();
    for key in keys {
        let (va, vb) = (sa.get(key.as_str()), sb.get(key.as_str()));
        if va != vb {
            let show = |v: Option<&Value>| v.map_or("absent".to_string(), Value::to_string);
            out.push(format!("setting `{key}`: {} vs {}", show(va), show(vb)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(task_sha: &str, settings: Value) -> Value {
        json!({
            "schema": REPORT_SCHEMA,
            "metrics": {"mc/acc": {}},
            "task_provenance": {"mc": {"settings": settings, "data": {"data": {"sha256": task_sha, "bytes": 1}}, "sha256": format!("{task_sha}{settings}")}},
        })
    }

    #[test]
    fn same_tasks_pass_and_differences_are_named() {
        let metrics = vec!["mc/acc".to_string()];
        let a = report("aaaa", json!({"shots": 0}));
        assert!(
            check_same_tasks(&a, "a.json", &a.clone(), "b.json", &metrics, false)
                .unwrap()
                .is_empty()
        );
        let b = report("bbbb", json!({"shots": 5}));
        let err = check_same_tasks(&a, "a.json", &b, "b.json", &metrics, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("task `mc`"), "{err}");
        assert!(
            err.contains("data data differs (sha256 aaaa vs bbbb)"),
            "{err}"
        );
        assert!(err.contains("setting `shots`: 0 vs 5"), "{err}");
        let mut bare = a.clone();
        bare.as_object_mut().unwrap().remove("task_provenance");
        let err = check_same_tasks(&a, "a.json", &bare, "b.json", &metrics, false)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("b.json: no task provenance"), "{err}");
        let warnings = check_same_tasks(&bare, "a.json", &a, "b.json", &metrics, true).unwrap();
        assert_eq!(
            warnings,
            ["a.json: no task provenance for task `mc`; compared unverified"]
        );
    }

    #[test]
    fn single_task_reports_use_their_one_provenance() {
        let p = task_provenance(json!({"tokenize": "13a"}), &[]).unwrap();
        let q = task_provenance(json!({"tokenize": "zh"}), &[]).unwrap();
        let a = json!({"schema": "kaiyuan.eval.bleu/1", "provenance": p});
        let b = json!({"schema": "kaiyuan.eval.bleu/1", "provenance": q});
        let metrics = vec!["bleu".to_string()];
        check_same_tasks(&a, "a", &a, "b", &metrics, false).unwrap();
        let err = check_same_tasks(&a, "a", &b, "b", &metrics, true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("setting `tokenize`: \"13a\" vs \"zh\""),
            "{err}"
        );
    }

    #[test]
    fn the_hash_ignores_key_order() {
        let a = task_provenance(json!({"x": 1, "y": {"b": 2, "a": 1}}), &[]).unwrap();
        let b = task_provenance(json!({"y": {"a": 1, "b": 2}, "x": 1}), &[]).unwrap();
        assert_eq!(a["sha256"], b["sha256"]);
    }
}
