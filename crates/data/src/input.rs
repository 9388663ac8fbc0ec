//! Reading input: JSONL or plain text, optionally gzip- or zstd-compressed,
//! split into records without losing any.
//!
//! Reading is two steps. [`RecordReader`] splits the byte stream into raw
//! records (lines, paragraphs or whole files) and numbers them; it is cheap
//! and sequential. [`parse_record`] turns one raw record into a
//! [`Document`] or a [`RejectedRecord`]; it is pure, so the pipeline runs
//! it on worker threads.
//!
//! Every raw record is accounted for: a line too long, a decompression
//! error, an empty file or a malformed JSON line becomes a rejected record
//! with its reason, so `records = kept + rejected` always holds. A
//! file-level problem (an empty file, a read or decompression error) counts
//! as one record of its own.

use crate::document::{Document, RawPayload, RejectedRecord};
use crate::error::{DataError, Result};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// How to read the input files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// `auto` (by extension, after any `.gz`/`.zst`: `.jsonl`, `.json` and
    /// `.ndjson` are JSONL, anything else plain text), `jsonl` or `text`.
    pub format: InputFormat,
    /// The JSONL field holding the text.
    pub text_field: String,
    /// The JSONL field holding the id (a string or number); records without
    /// one get `<file>:<line>`.
    pub id_field: String,
    /// For plain text: one document per `file`, per blank-line separated
    /// `paragraph`, or per `line`.
    pub text_unit: TextUnit,
    /// Invalid UTF-8: `repair` (replace with U+FFFD and count) or `reject`.
    pub invalid_utf8: Utf8Policy,
    /// Records longer than this many bytes are rejected (their first 64 KiB
    /// are kept in `rejected.jsonl`), without ever being held in memory
    /// whole.
    pub max_record_bytes: u64,
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            format: InputFormat::Auto,
            text_field: "text".into(),
            id_field: "id".into(),
            text_unit: TextUnit::Paragraph,
            invalid_utf8: Utf8Policy::Repair,
            max_record_bytes: 16 << 20,
        }
    }
}

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// Decide by file extension.
    Auto,
    /// One JSON object per line.
    Jsonl,
    /// Plain text.
    Text,
}

/// How plain text is cut into documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextUnit {
    /// The whole file is one document.
    File,
    /// Blank lines separate documents.
    Paragraph,
    /// Every non-blank line is a document.
    Line,
}

/// What to do with invalid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Utf8Policy {
    /// Replace invalid sequences with U+FFFD and count the record.
    Repair,
    /// Reject the record.
    Reject,
}

/// How much of an over-long record is kept in the rejects.
const KEPT_PREFIX_BYTES: usize = 64 << 10;

/// One record as split from the byte stream, before parsing.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    /// Position in the whole input.
    pub seq: u64,
    /// `<file>:<line>` or `<file>#<paragraph>`.
    pub source: String,
    /// Whether the bytes are a JSONL line or plain text.
    pub format: InputFormat,
    /// The bytes, or why the record cannot be used.
    pub content: RawContent,
}

/// The content of a raw record.
#[derive(Debug, Clone, PartialEq)]
pub enum RawContent {
    /// The record's bytes (without the line terminator).
    Bytes(Vec<u8>),
    /// A record the reader already rejected (too long, empty file, read or
    /// decompression error), with its code, reason and whatever bytes it had.
    Problem {
        /// `input.<rule>`.
        code: &'static str,
        /// A readable reason.
        reason: String,
        /// The bytes read (a prefix for an over-long record).
        payload: RawPayload,
    },
}

/// Lists the files under `paths`: files as given, directories walked
/// recursively in name order (hidden entries skipped).
pub fn expand_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
        if meta.is_dir() {
            walk(path, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            walk(&entry, files)?;
        } else {
            files.push(entry);
        }
    }
    Ok(())
}

/// The format of `path` under `config` (resolving `auto` by extension).
pub fn format_of(path: &Path, config: &InputConfig) -> InputFormat {
    if config.format != InputFormat::Auto {
        return config.format;
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let stem = name
        .strip_suffix(".gz")
        .or_else(|| name.strip_suffix(".zst"))
        .unwrap_or(&name);
    if stem.ends_with(".jsonl") || stem.ends_with(".json") || stem.ends_with(".ndjson") {
        InputFormat::Jsonl
    } else {
        InputFormat::Text
    }
}

/// Opens a file, decompressing gzip or zstd when its first bytes say so
/// (whatever its extension).
pub fn open_decompressed(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let head = reader.fill_buf().map_err(|e| DataError::io(path, e))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        let decoder = flate2::bufread::MultiGzDecoder::new(reader);
        Ok(Box::new(BufReader::with_capacity(1 << 20, decoder)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder =
            zstd::stream::read::Decoder::with_buffer(reader).map_err(|e| DataError::io(path, e))?;
        Ok(Box::new(BufReader::with_capacity(1 << 20, decoder)))
    } else {
        Ok(Box::new(reader))
    }
}

/// Splits the input files into numbered raw records.
///
/// Iterating yields every record of every file in order; errors opening a
/// file become a rejected record too, so the iterator itself never fails.
pub struct RecordReader {
    files: Vec<PathBuf>,
    config: InputConfig,
    file_index: usize,
    current: Option<FileState>,
    next_seq: u64,
    /// Bytes read from the (decompressed) input so far.
    pub bytes_read: u64,
}

struct FileState {
    reader: Box<dyn BufRead + Send>,
    name: String,
    format: InputFormat,
    line: u64,
    paragraph: u64,
    any_record: bool,
    done: bool,
}

impl RecordReader {
    /// A reader over `files` (already expanded) with `config`.
    pub fn new(files: Vec<PathBuf>, config: &InputConfig) -> Self {
        RecordReader {
            files,
            config: config.clone(),
            file_index: 0,
            current: None,
            next_seq: 0,
            bytes_read: 0,
        }
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn problem(
        &mut self,
        source: String,
        format: InputFormat,
        code: &'static str,
        reason: String,
        payload: RawPayload,
    ) -> RawRecord {
        RawRecord {
            seq: self.take_seq(),
            source,
            format,
            content: RawContent::Problem {
                code,
                reason,
                payload,
            },
        }
    }

    /// A record of `bytes`, or an `input.too_long` rejection when the
    /// record's full length `total` exceeded `max_record_bytes`.
    fn record(
        &mut self,
        source: String,
        format: InputFormat,
        bytes: Vec<u8>,
        total: u64,
        truncated: bool,
    ) -> RawRecord {
        if truncated {
            let max = self.config.max_record_bytes;
            return too_long(self, source, format, bytes, total, max);
        }
        let seq = self.take_seq();
        RawRecord {
            seq,
            source,
            format,
            content: RawContent::Bytes(bytes),
        }
    }

    /// Reads the next record of the current file; `None` at its end.
    fn next_in_file(&mut self) -> Option<RawRecord> {
        let max = self.config.max_record_bytes;
        let unit = self.config.text_unit;
        let state = self.current.as_mut()?;
        if state.done {
            return None;
        }
        let format = state.format;
        let mut buf = Vec::new();
        loop {
            let start_line = state.line + 1;
            let read = match (format, unit) {
                (InputFormat::Text | InputFormat::Auto, TextUnit::File) => {
                    read_bounded(&mut state.reader, None, max, &mut buf)
                }
                _ => read_bounded(&mut state.reader, Some(b'\n'), max, &mut buf),
            };
            match read {
                Ok(None) => {
                    state.done = true;
                    if !state.any_record && buf.is_empty() {
                        let source = state.name.clone();
                        return Some(self.problem(
                            source,
                            format,
                            "input.empty_file",
                            "the file holds no records".into(),
                            RawPayload::None,
                        ));
                    }
                    return None;
                }
                Ok(Some(total)) => {
                    self.bytes_read += total;
                    state.line += if matches!(
                        (format, unit),
                        (InputFormat::Text | InputFormat::Auto, TextUnit::File)
                    ) {
                        0
                    } else {
                        1
                    };
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                    if start_line == 1 && buf.starts_with(b"\xEF\xBB\xBF") {
                        buf.drain(..3);
                    }
                    let truncated = total > max;
                    match (format, unit) {
                        (InputFormat::Jsonl, _) => {
                            state.any_record = true;
                            let source = format!("{}:{}", state.name, start_line);
                            if truncated {
                                return Some(too_long(self, source, format, buf, total, max));
                            }
                            if buf.iter().all(u8::is_ascii_whitespace) {
                                return Some(self.problem(
                                    source,
                                    format,
                                    "input.blank_line",
                                    "blank line".into(),
                                    RawPayload::Raw {
                                        total_bytes: buf.len() as u64,
                                        bytes: buf,
                                    },
                                ));
                            }
                            let seq = self.take_seq();
                            return Some(RawRecord {
                                seq,
                                source,
                                format,
                                content: RawContent::Bytes(buf),
                            });
                        }
                        (InputFormat::Text | InputFormat::Auto, TextUnit::File) => {
                            state.done = true;
                            state.any_record = true;
                            let source = state.name.clone();
                            return Some(self.record(source, format, buf, total, truncated));
                        }
                        (InputFormat::Text | InputFormat::Auto, TextUnit::Line) => {
                            if buf.iter().all(u8::is_ascii_whitespace) {
                                buf.clear();
                                continue;
                            }
                            state.any_record = true;
                            let source = format!("{}:{}", state.name, start_line);
                            return Some(self.record(source, format, buf, total, truncated));
                        }
                        (InputFormat::Text | InputFormat::Auto, TextUnit::Paragraph) => {
                            // Accumulate lines until a blank one.
                            let mut paragraph = std::mem::take(&mut buf);
                            if paragraph.iter().all(u8::is_ascii_whitespace) {
                                continue;
                            }
                            let mut para_total = total;
                            let mut over = truncated;
                            loop {
                                let mut next = Vec::new();
                                match read_bounded(&mut state.reader, Some(b'\n'), max, &mut next) {
                                    Ok(Some(n)) => {
                                        self.bytes_read += n;
                                        state.line += 1;
                                        if next.last() == Some(&b'\r') {
                                            next.pop();
                                        }
                                        if next.iter().all(u8::is_ascii_whitespace) {
                                            break;
                                        }
                                        para_total += n + 1;
                                        if !over && paragraph.len() as u64 + 1 + n <= max {
                                            paragraph.push(b'\n');
                                            paragraph.extend_from_slice(&next);
                                        } else {
                                            over = true;
                                            let room =
                                                KEPT_PREFIX_BYTES.saturating_sub(paragraph.len());
                                            paragraph.truncate(KEPT_PREFIX_BYTES);
                                            paragraph
                                                .extend_from_slice(&next[..next.len().min(room)]);
                                        }
                                    }
                                    Ok(None) => {
                                        state.done = true;
                                        break;
                                    }
                                    Err(e) => {
                                        state.done = true;
                                        let source =
                                            format!("{}#{}", state.name, state.paragraph + 1);
                                        state.paragraph += 1;
                                        return Some(self.problem(
                                            source,
                                            format,
                                            "input.read_error",
                                            format!("reading stopped inside this paragraph: {e}"),
                                            RawPayload::Raw {
                                                total_bytes: para_total,
                                                bytes: paragraph,
                                            },
                                        ));
                                    }
                                }
                            }
                            state.any_record = true;
                            state.paragraph += 1;
                            let source =
                                format!("{}#{} (line {})", state.name, state.paragraph, start_line);
                            return Some(self.record(source, format, paragraph, para_total, over));
                        }
                    }
                }
                Err(e) => {
                    state.done = true;
                    let source = format!("{}:{}", state.name, start_line);
                    let partial = std::mem::take(&mut buf);
                    let payload = if partial.is_empty() {
                        RawPayload::None
                    } else {
                        RawPayload::Raw {
                            total_bytes: partial.len() as u64,
                            bytes: partial,
                        }
                    };
                    let records = state.line;
                    return Some(self.problem(
                        source,
                        format,
                        "input.read_error",
                        format!("reading stopped after {records} complete lines: {e}"),
                        payload,
                    ));
                }
            }
        }
    }
}

fn too_long(
    reader: &mut RecordReader,
    source: String,
    format: InputFormat,
    mut bytes: Vec<u8>,
    total: u64,
    max: u64,
) -> RawRecord {
    bytes.truncate(KEPT_PREFIX_BYTES);
    reader.problem(
        source,
        format,
        "input.too_long",
        format!(
            "record of {total} bytes exceeds max_record_bytes = {max} (first {} bytes kept)",
            bytes.len()
        ),
        RawPayload::Raw {
            bytes,
            total_bytes: total,
        },
    )
}

impl Iterator for RecordReader {
    type Item = RawRecord;

    fn next(&mut self) -> Option<RawRecord> {
        loop {
            if self.current.is_some() {
                if let Some(record) = self.next_in_file() {
                    return Some(record);
                }
                self.current = None;
            }
            let path = self.files.get(self.file_index)?.clone();
            self.file_index += 1;
            let name = path.display().to_string();
            let format = format_of(&path, &self.config);
            match open_decompressed(&path) {
                Ok(reader) => {
                    self.current = Some(FileState {
                        reader,
                        name,
                        format,
                        line: 0,
                        paragraph: 0,
                        any_record: false,
                        done: false,
                    });
                }
                Err(e) => {
                    return Some(self.problem(
                        name,
                        format,
                        "input.open_error",
                        e.to_string(),
                        RawPayload::None,
                    ));
                }
            }
        }
    }
}

/// Reads up to and excluding `delimiter` (or to the end of input when
/// `None`), keeping at most `max + 1` bytes in `buf` but consuming the whole
/// record. Returns the record's full length, or `None` at end of input.
fn read_bounded(
    reader: &mut dyn BufRead,
    delimiter: Option<u8>,
    max: u64,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<u64>> {
    buf.clear();
    let keep_limit = (max as usize).saturating_add(1);
    let mut total: u64 = 0;
    let mut seen_any = false;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(if seen_any { Some(total) } else { None });
        }
        seen_any = true;
        let (take, found) = match delimiter.and_then(|d| memchr::memchr(d, chunk)) {
            Some(at) => (at, true),
            None => (chunk.len(), false),
        };
        let room = keep_limit.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..take.min(room)]);
        total += take as u64;
        let consumed = if found { take + 1 } else { take };
        reader.consume(consumed);
        if found {
            return Ok(Some(total));
        }
    }
}

/// A parsed record and what parsing had to repair.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRecord {
    /// The document.
    pub document: Document,
    /// True when invalid UTF-8 was replaced with U+FFFD.
    pub repaired_utf8: bool,
}

/// Turns a raw record into a document, or says why it cannot be one.
///
/// ```
/// use kaiyuan_data::input::{parse_record, InputConfig, InputFormat, RawContent, RawRecord};
/// let raw = RawRecord { seq: 0, source: "a.jsonl:1".into(), format: InputFormat::Jsonl,
///     content: RawContent::Bytes(br#"{"id": 7, "text": "hello", "lang": "en"}"#.to_vec()) };
/// let parsed = parse_record(raw, &InputConfig::default()).unwrap();
/// assert_eq!(parsed.document.id, "7");
/// assert_eq!(parsed.document.text, "hello");
/// ```
pub fn parse_record(
    raw: RawRecord,
    config: &InputConfig,
) -> std::result::Result<ParsedRecord, Box<RejectedRecord>> {
    let RawRecord {
        seq,
        source,
        format,
        content,
    } = raw;
    let reject = |code: &str, reason: String, payload: RawPayload, id: Option<String>| {
        Box::new(RejectedRecord {
            seq,
            stage: "input".into(),
            code: code.into(),
            reason,
            source: source.clone(),
            id,
            payload,
        })
    };
    let bytes = match content {
        RawContent::Bytes(bytes) => bytes,
        RawContent::Problem {
            code,
            reason,
            payload,
        } => return Err(reject(code, reason, payload, None)),
    };
    let (text, repaired_utf8) = match String::from_utf8(bytes) {
        Ok(text) => (text, false),
        Err(e) => {
            let valid_up_to = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            if config.invalid_utf8 == Utf8Policy::Reject {
                return Err(reject(
                    "input.invalid_utf8",
                    format!("invalid UTF-8 at byte {valid_up_to}"),
                    RawPayload::Raw {
                        total_bytes: bytes.len() as u64,
                        bytes,
                    },
                    None,
                ));
            }
            (String::from_utf8_lossy(&bytes).into_owned(), true)
        }
    };
    if format != InputFormat::Jsonl {
        let id = source.clone();
        let document = Document {
            seq,
            id,
            text,
            fields: Map::new(),
            source,
        };
        return Ok(ParsedRecord {
            document,
            repaired_utf8,
        });
    }
    let value: Value = match serde_json::from_str(&text) {
        Ok(value) => value,
        Err(e) => {
            return Err(reject(
                "input.malformed_json",
                format!("malformed JSON: {e}"),
                RawPayload::Raw {
                    total_bytes: text.len() as u64,
                    bytes: text.into_bytes(),
                },
                None,
            ));
        }
    };
    let Value::Object(mut fields) = value else {
        return Err(reject(
            "input.not_an_object",
            "the line is JSON but not an object".into(),
            RawPayload::Raw {
                total_bytes: text.len() as u64,
                bytes: text.into_bytes(),
            },
            None,
        ));
    };
    let id = match fields.get(&config.id_field) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let text = match fields.get_mut(&config.text_field) {
        Some(Value::String(s)) => std::mem::take(s),
        Some(other) => {
            let kind = json_kind(other);
            return Err(reject(
                "input.text_not_string",
                format!("field `{}` is {kind}, not a string", config.text_field),
                RawPayload::Record(fields),
                id,
            ));
        }
        None => {
            return Err(reject(
                "input.missing_text",
                format!("no field `{}`", config.text_field),
                RawPayload::Record(fields),
                id,
            ));
        }
    };
    let id = id.unwrap_or_else(|| source.clone());
    let document = Document {
        seq,
        id,
        text,
        fields,
        source,
    };
    Ok(ParsedRecord {
        document,
        repaired_utf8,
    })
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
