//! Documents as the pipeline carries them, and rejected records.

use serde_json::{Map, Value};

/// A document read from the input.
///
/// `seq` is the record's position in the whole input (all files, in the
/// order given, counting every record including rejected ones). It orders
/// the output and decides which copy of a duplicate is kept, so the result
/// does not depend on thread counts or on how a run is sharded.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The record's position in the whole input.
    pub seq: u64,
    /// The id: the configured id field as a string, or `<file>:<line>` when
    /// the record has none.
    pub id: String,
    /// The text.
    pub text: String,
    /// The record's other fields, in their original order (the text field
    /// is put back in its place when the record is written).
    pub fields: Map<String, Value>,
    /// Where the record came from: `<file>:<line>` (1-based) or
    /// `<file>#<paragraph>` for plain text.
    pub source: String,
}

impl Document {
    /// The JSON record written to a shard: the original fields with the
    /// text field replaced by `text` (added if the record had none, as for
    /// plain-text input) and the id field set.
    pub fn to_record(&self, text_field: &str, id_field: &str, text: &str) -> Map<String, Value> {
        let mut record = self.fields.clone();
        if !record.contains_key(id_field) {
            record.insert(id_field.to_string(), Value::String(self.id.clone()));
        }
        record.insert(text_field.to_string(), Value::String(text.to_string()));
        record
    }
}

/// A record that did not make it into the output, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRecord {
    /// The record's position in the whole input (see [`Document::seq`]).
    pub seq: u64,
    /// The stage that rejected it (`input`, `normalize`, `gopher_quality`,
    /// `minhash_dedup`…).
    pub stage: String,
    /// The rule, `<stage>.<rule>` (e.g. `input.malformed_json`).
    pub code: String,
    /// A readable reason with the measured value or parser message.
    pub reason: String,
    /// `<file>:<line>` or `<file>#<paragraph>`.
    pub source: String,
    /// The document id when one was known.
    pub id: Option<String>,
    /// What was rejected: the JSON record when it parsed, otherwise the raw
    /// line (see [`RawPayload`]).
    pub payload: RawPayload,
}

/// The content of a rejected record.
#[derive(Debug, Clone, PartialEq)]
pub enum RawPayload {
    /// A parsed JSON record.
    Record(Map<String, Value>),
    /// Raw bytes, stored as text when they are UTF-8 and as base64
    /// otherwise; `total_bytes` is the original length when only a prefix
    /// was kept (a line above `max_record_bytes`).
    Raw {
        /// The kept bytes (a prefix when the line was too long).
        bytes: Vec<u8>,
        /// The length of the whole line.
        total_bytes: u64,
    },
    /// Nothing (an empty file, a decompression error at a record boundary).
    None,
}

impl RejectedRecord {
    /// The JSON line written to `rejected.jsonl`, consuming the record
    /// (no copy of a large payload).
    pub fn into_json(self) -> Value {
        let RejectedRecord {
            seq,
            stage,
            code,
            reason,
            source,
            id,
            payload,
        } = self;
        let mut out = Map::new();
        out.insert("seq".into(), Value::from(seq));
        out.insert("stage".into(), Value::String(stage));
        out.insert("code".into(), Value::String(code));
        out.insert("reason".into(), Value::String(reason));
        out.insert("source".into(), Value::String(source));
        if let Some(id) = id {
            out.insert("id".into(), Value::String(id));
        }
        match payload {
            RawPayload::Record(record) => {
                out.insert("record".into(), Value::Object(record));
            }
            RawPayload::Raw { bytes, total_bytes } => {
                let len = bytes.len();
                match String::from_utf8(bytes) {
                    Ok(text) => out.insert("raw".into(), Value::String(text)),
                    Err(e) => {
                        use base64::Engine as _;
                        let encoded =
                            base64::engine::general_purpose::STANDARD.encode(e.as_bytes());
                        out.insert("raw_base64".into(), Value::String(encoded))
                    }
                };
                if total_bytes as usize != len {
                    out.insert("raw_total_bytes".into(), Value::from(total_bytes));
                }
            }
            RawPayload::None => {}
        }
        Value::Object(out)
    }

    /// The JSON line written to `rejected.jsonl` (a copy; see
    /// [`RejectedRecord::into_json`]).
    pub fn to_json(&self) -> Value {
        self.clone().into_json()
    }
}
