//! Supervised fine-tuning data: chat conversations in JSONL turned into
//! token ids and labels that put the loss on the assistant's tokens only.
//!
//! # Input
//!
//! One JSON object per line with `messages`, a non-empty list of
//! `{"role", "content", …}` objects: `role` is one of [`ROLES`], `content` a
//! string; a message's other fields (`tool_calls`, `reasoning_content`,
//! `name` …) are kept, in order, for the template; the record's other fields
//! are ignored. Blank lines are skipped. Every other line that cannot be used
//! (not UTF-8, not JSON, no `messages`, an unknown role, no assistant
//! message, a conversation the template cannot label…) becomes a
//! [`Rejected`] record naming the file, the 1-based line and the reason; none
//! is dropped silently, and [`write_rejects`] saves them as JSONL.
//!
//! # What gets labelled
//!
//! The conversation is rendered once with the chat template, without a
//! generation prompt, and tokenized as transformers'
//! `apply_chat_template(messages, tokenize=True)` does (the rendering encoded
//! with `add_special_tokens=False`): those are the ids. For each assistant
//! message the labelled text is what the model produces in that turn:
//!
//! - it **starts** right after the turn's *generation prompt*: the text that
//!   rendering the messages before it with `add_generation_prompt=True` adds
//!   (`<|im_start|>assistant\n` for ChatML templates). So Qwen3's empty
//!   `<think>\n\n</think>\n\n` block, which its template writes into the
//!   last assistant turn, is labelled, and the role header is not.
//! - it **ends** with the turn's end-of-turn token, the token the model
//!   must learn to stop on (`<|im_end|>`, `<|eot_id|>`, `</s>` …): the last
//!   *special* added token of the turn's text. Text after it (ChatML's
//!   newline between turns) is not labelled. A turn without any special
//!   token is labelled to its end.
//!
//! Token `t` is labelled with its own id when its byte span overlaps a
//! labelled span (as transformers' `return_assistant_tokens_mask` marks
//! tokens overlapping a `{% generation %}` span, so a token that straddles
//! the start of the content counts), and with [`IGNORE`] otherwise. Labels
//! are aligned with the ids (`labels[t]` is the target of position `t`;
//! [`crate::loss`] shifts them).
//!
//! This is what TRL's `assistant_only_loss` computes with a template whose
//! assistant turns are wrapped as
//! `<|im_start|>assistant\n{% generation %}…<|im_end|>{% endgeneration %}\n`;
//! `crates/train/tests/sft.rs` checks it token for token against
//! transformers on SmolLM2's and Qwen3's templates
//! (`fixtures/train/sft_reference.json`).
//!
//! # How the spans are found
//!
//! Without `{% generation %}` tags the template does not say where an
//! assistant turn lies, so it is found by rendering prefixes of the
//! conversation. With `P(k)` the rendering of the first `k` messages and
//! `F = P(n)` the whole conversation, assistant message `i`:
//!
//! 1. begins at `P(i).len()`, which requires `P(i)` to be a prefix of `F`
//!    (else the template renders earlier messages differently once later
//!    ones follow, and the conversation is refused), followed by its
//!    generation prompt, which `F` must repeat there;
//! 2. ends at `P(i + 1).len()` when `P(i + 1)` is a prefix of `F`: the turn's
//!    extent is then exact and the label runs to the end of its last special
//!    token. Templates such as Qwen3's render the last assistant turn
//!    differently (with an empty think block) from one that later messages
//!    follow, so `P(i + 1)` is not a prefix of `F`; then the turn ends before
//!    the next `P(j)` that is, and the label runs to the end of the first
//!    special token after the generation prompt. That is only accepted when
//!    the turn, rendered as the last one, holds exactly one special token;
//!    otherwise the end is ambiguous and the conversation is refused.
//!
//! A special token written literally inside an assistant message's content
//! (e.g. the text `<|im_end|>`) is tokenized as that special token, as
//! transformers does, and then counts as the turn's end.
//!
//! ```
//! use kaiyuan_models::chat::{ChatMessage, ChatTemplate};
//! use kaiyuan_tokenizer::Tokenizer;
//! use kaiyuan_train::loss::IGNORE;
//! use kaiyuan_train::sft::tokenize_chat;
//!
//! let template = ChatTemplate::new(
//!     "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}\
//!      {% if add_generation_prompt %}<|assistant|>{% endif %}",
//!     None,
//!     Some("<|end|>"),
//! )?;
//! let tokenizer = Tokenizer::from_json_str("inline", r#"{
//!     "added_tokens": [
//!         {"id": 0, "content": "<|user|>", "special": true},
//!         {"id": 1, "content": "<|assistant|>", "special": true},
//!         {"id": 2, "content": "<|end|>", "special": true}],
//!     "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
//!     "model": {"type": "BPE", "vocab": {"h": 3, "i": 4, "y": 5, "o": 6, "hi": 7, "yo": 8},
//!               "merges": [["h", "i"], ["y", "o"]]}}"#)?;
//! let messages = [ChatMessage::new("user", "hi"), ChatMessage::new("assistant", "yo")];
//! let example = tokenize_chat(&template, &tokenizer, &messages, None)?;
//! // <|user|> hi <|end|> <|assistant|> yo <|end|>
//! assert_eq!(example.ids, [0, 7, 2, 1, 8, 2]);
//! assert_eq!(example.labels, [IGNORE, IGNORE, IGNORE, IGNORE, 8, 2]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashSet;
use std::fmt;
use std::io::Write as _;
use std::ops::Range;
use std::path::Path;

use kaiyuan_models::chat::{ChatMessage, ChatRequest, ChatTemplate, json_value};
use kaiyuan_tokenizer::{Encoding, Tokenizer};

use crate::loss::IGNORE;
use crate::{Result, TrainError};

/// The roles a message of a chat JSONL record may have.
pub const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// One training example: token ids and their labels, of equal length;
/// `labels[t]` is `ids[t]` where the loss applies and [`IGNORE`] elsewhere.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SftExample {
    /// Token ids of the rendered conversation.
    pub ids: Vec<u32>,
    /// `ids[t] as i64` on assistant tokens, [`IGNORE`] elsewhere.
    pub labels: Vec<i64>,
}

impl SftExample {
    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The number of labelled (not [`IGNORE`]) positions.
    pub fn labelled(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE).count()
    }
}

/// A rendered conversation and the byte spans of it that are labelled (see
/// the [module docs](self)), one per assistant message that renders to
/// something, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelledText {
    /// The template's rendering of the whole conversation (no generation prompt).
    pub text: String,
    /// Byte ranges of `text` the loss applies to.
    pub spans: Vec<Range<usize>>,
}

/// A conversation read from a chat JSONL file.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRecord {
    /// The 1-based line it was read from.
    pub line: usize,
    /// The line as read (without its line break).
    pub raw: String,
    /// Its messages, checked as the [module docs](self) describe.
    pub messages: Vec<ChatMessage>,
}

/// A line that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The file (or other source name) it came from.
    pub source: String,
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
    /// The line as read (invalid UTF-8 replaced by U+FFFD).
    pub raw: String,
}

impl fmt::Display for Rejected {
    /// `source:line: reason`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.source, self.line, self.reason)
    }
}

/// The conversations of a chat JSONL file and the lines rejected.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatJsonl {
    /// The file name (or other source name) used in [`Rejected`] records.
    pub source: String,
    /// The usable conversations, in file order.
    pub records: Vec<ChatRecord>,
    /// The unusable lines, in file order.
    pub rejected: Vec<Rejected>,
}

/// Tokenized examples and every line rejected on the way.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SftData {
    /// The examples, in file order.
    pub examples: Vec<SftExample>,
    /// The 1-based line each example came from.
    pub lines: Vec<usize>,
    /// Lines rejected when reading or tokenizing, in file order.
    pub rejected: Vec<Rejected>,
}

impl ChatJsonl {
    /// Reads the chat JSONL file at `path`. Only failing to read the file is
    /// an error; bad lines end up in [`ChatJsonl::rejected`].
    ///
    /// ```no_run
    /// let data = kaiyuan_train::sft::ChatJsonl::read("chats.jsonl")?;
    /// for r in &data.rejected {
    ///     eprintln!("skipped {r}");
    /// }
    /// # Ok::<(), kaiyuan_train::TrainError>(())
    /// ```
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|e| TrainError::invalid("chat JSONL", format!("{}: {e}", path.display())))?;
        Ok(Self::parse_bytes(path.display().to_string(), &bytes))
    }

    /// Parses chat JSONL text; `source` names it in [`Rejected`] records.
    ///
    /// ```
    /// use kaiyuan_train::sft::ChatJsonl;
    ///
    /// let text = concat!(
    ///     r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#,
    ///     "\n\nnot json\n",
    ///     r#"{"id": 7, "messages": [{"role": "user", "content": "alone"}]}"#,
    /// );
    /// let data = ChatJsonl::parse("chats.jsonl", text);
    /// assert_eq!(data.records.len(), 1);
    /// assert_eq!(data.records[0].messages[1].role(), "assistant");
    /// let lines: Vec<usize> = data.rejected.iter().map(|r| r.line).collect();
    /// assert_eq!(lines, [3, 4]);
    /// assert!(data.rejected[1].to_string().starts_with("chats.jsonl:4: no assistant message"));
    /// ```
    pub fn parse(source: impl Into<String>, text: &str) -> Self {
        Self::parse_bytes(source.into(), text.as_bytes())
    }

    fn parse_bytes(source: String, bytes: &[u8]) -> Self {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let mut records = Vec::new();
        let mut rejected = Vec::new();
        for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let number = index + 1;
            let outcome = match std::str::from_utf8(line) {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => parse_record(text).map(|messages| (text.to_owned(), messages)),
                Err(e) => Err(format!("not valid UTF-8: {e}")),
            };
            match outcome {
                Ok((raw, messages)) => records.push(ChatRecord {
                    line: number,
                    raw,
                    messages,
                }),
                Err(reason) => rejected.push(Rejected {
                    source: source.clone(),
                    line: number,
                    reason,
                    raw: String::from_utf8_lossy(line).into_owned(),
                }),
            }
        }
        Self {
            source,
            records,
            rejected,
        }
    }

    /// Tokenizes every record with [`tokenize_chat`]; records that fail
    /// join the rejected lines (the reason is the error), which come back
    /// sorted by line.
    ///
    /// ```
    /// # use kaiyuan_models::chat::ChatTemplate;
    /// # use kaiyuan_tokenizer::Tokenizer;
    /// # let template = ChatTemplate::new(
    /// #     "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}\
    /// #      {% if add_generation_prompt %}<|assistant|>{% endif %}", None, None)?;
    /// # let tokenizer = Tokenizer::from_json_str("inline", r#"{
    /// #     "added_tokens": [
    /// #         {"id": 0, "content": "<|user|>", "special": true},
    /// #         {"id": 1, "content": "<|assistant|>", "special": true},
    /// #         {"id": 2, "content": "<|end|>", "special": true}],
    /// #     "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
    /// #     "model": {"type": "BPE", "vocab": {"h": 3, "i": 4, "y": 5, "o": 6, "hi": 7, "yo": 8},
    /// #               "merges": [["h", "i"], ["y", "o"]]}}"#)?;
    /// use kaiyuan_train::sft::ChatJsonl;
    ///
    /// let text = concat!(
    ///     r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#,
    ///     "\n",
    ///     r#"{"messages": [{"role": "human", "content": "hi"}]}"#,
    ///     "\n",
    ///     r#"{"messages": [{"role": "user", "content": "hihihi"}, {"role": "assistant", "content": "yo"}]}"#,
    /// );
    /// let data = ChatJsonl::parse("chats.jsonl", text).tokenize(&template, &tokenizer, Some(5));
    /// assert_eq!(data.lines, [1]); // line 3 has no assistant token within 5 tokens
    /// assert_eq!(data.examples[0].ids, [0, 7, 2, 1, 8]);
    /// assert_eq!(data.rejected.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn tokenize(
        &self,
        template: &ChatTemplate,
        tokenizer: &Tokenizer,
        max_len: Option<usize>,
    ) -> SftData {
        let mut data = SftData {
            rejected: self.rejected.clone(),
            ..SftData::default()
        };
        for record in &self.records {
            match tokenize_chat(template, tokenizer, &record.messages, max_len) {
                Ok(example) => {
                    data.examples.push(example);
                    data.lines.push(record.line);
                }
                Err(e) => data.rejected.push(Rejected {
                    source: self.source.clone(),
                    line: record.line,
                    reason: e.to_string(),
                    raw: record.raw.clone(),
                }),
            }
        }
        data.rejected.sort_by_key(|r| r.line);
        data
    }
}

/// Checks one JSONL line; the error is the reason it is rejected.
fn parse_record(line: &str) -> std::result::Result<Vec<ChatMessage>, String> {
    use serde_json::Value as Json;
    fn kind(v: &Json) -> &'static str {
        match v {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
    let value: Json = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Json::Object(record) = &value else {
        return Err(format!("expected a JSON object, got {}", kind(&value)));
    };
    let list = match record.get("messages") {
        None => return Err("missing `messages`".to_owned()),
        Some(Json::Array(list)) => list,
        Some(other) => return Err(format!("`messages` must be an array, got {}", kind(other))),
    };
    if list.is_empty() {
        return Err("`messages` is empty".to_owned());
    }
    let mut messages = Vec::with_capacity(list.len());
    for (k, message) in list.iter().enumerate() {
        let Json::Object(fields) = message else {
            return Err(format!(
                "messages[{k}] must be an object, got {}",
                kind(message)
            ));
        };
        match fields.get("role") {
            Some(Json::String(role)) if ROLES.contains(&role.as_str()) => {}
            Some(Json::String(role)) => {
                return Err(format!(
                    "messages[{k}] has role {role:?}; expected one of {}",
                    ROLES.join(", ")
                ));
            }
            None => return Err(format!("messages[{k}] has no `role`")),
            Some(other) => {
                return Err(format!(
                    "messages[{k}]: `role` must be a string, got {}",
                    kind(other)
                ));
            }
        }
        match fields.get("content") {
            Some(Json::String(_)) => {}
            None => return Err(format!("messages[{k}] has no `content`")),
            Some(other) => {
                return Err(format!(
                    "messages[{k}]: `content` must be a string, got {}",
                    kind(other)
                ));
            }
        }
        let message = ChatMessage::from_value(&json_value(message))
            .map_err(|e| format!("messages[{k}]: {e}"))?;
        messages.push(message);
    }
    if !messages.iter().any(|m| m.role() == "assistant") {
        return Err(NO_ASSISTANT.to_owned());
    }
    Ok(messages)
}

const NO_ASSISTANT: &str = "no assistant message (nothing to train on)";

/// Writes rejected lines as JSONL, one `{"source", "line", "reason", "raw"}`
/// object per line, creating or truncating the file at `path`.
///
/// ```no_run
/// use kaiyuan_train::sft::{ChatJsonl, write_rejects};
///
/// let data = ChatJsonl::read("chats.jsonl")?;
/// write_rejects("chats.rejected.jsonl", &data.rejected)?;
/// # Ok::<(), kaiyuan_train::TrainError>(())
/// ```
pub fn write_rejects(path: impl AsRef<Path>, rejected: &[Rejected]) -> Result<()> {
    let path = path.as_ref();
    let io =
        |e: std::io::Error| TrainError::invalid("rejects file", format!("{}: {e}", path.display()));
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    for r in rejected {
        let record = serde_json::json!({
            "source": r.source,
            "line": r.line,
            "reason": r.reason,
            "raw": r.raw,
        });
        writeln!(out, "{record}").map_err(io)?;
    }
    out.flush().map_err(io)
}

/// Renders `messages` with `template` (no generation prompt), tokenizes
/// the rendering without added special tokens, and labels the assistant
/// turns as the [module docs](self) describe; with `max_len`, keeps the
/// first `max_len` tokens and their labels.
///
/// Errors: no assistant message; a template that renders the messages
/// before an assistant message differently once later ones follow, or
/// whose assistant turns do not start with its generation prompt, or whose
/// turn ends cannot be told apart; a template or tokenizer failure; no
/// labelled token left (e.g. after truncation); `max_len` of 0.
///
/// ```
/// # use kaiyuan_models::chat::{ChatMessage, ChatTemplate};
/// # use kaiyuan_tokenizer::Tokenizer;
/// # use kaiyuan_train::loss::IGNORE;
/// # let template = ChatTemplate::new(
/// #     "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}\
/// #      {% if add_generation_prompt %}<|assistant|>{% endif %}", None, None)?;
/// # let tokenizer = Tokenizer::from_json_str("inline", r#"{
/// #     "added_tokens": [
/// #         {"id": 0, "content": "<|user|>", "special": true},
/// #         {"id": 1, "content": "<|assistant|>", "special": true},
/// #         {"id": 2, "content": "<|end|>", "special": true}],
/// #     "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
/// #     "model": {"type": "BPE", "vocab": {"h": 3, "i": 4, "y": 5, "o": 6, "hi": 7, "yo": 8},
/// #               "merges": [["h", "i"], ["y", "o"]]}}"#)?;
/// use kaiyuan_train::sft::tokenize_chat;
///
/// let messages = [
///     ChatMessage::new("user", "hi"),
///     ChatMessage::new("assistant", "yo"),
///     ChatMessage::new("user", "hi"),
///     ChatMessage::new("assistant", "yoyo"),
/// ];
/// let full = tokenize_chat(&template, &tokenizer, &messages, None)?;
/// let cut = tokenize_chat(&template, &tokenizer, &messages, Some(8))?;
/// assert_eq!(cut.ids, full.ids[..8]);
/// assert_eq!(cut.labels, [IGNORE, IGNORE, IGNORE, IGNORE, 8, 2, IGNORE, IGNORE]);
/// assert!(tokenize_chat(&template, &tokenizer, &messages[..1], None).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn tokenize_chat(
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    messages: &[ChatMessage],
    max_len: Option<usize>,
) -> Result<SftExample> {
    tokenize_request(
        template,
        tokenizer,
        &ChatRequest::new(messages.to_vec()),
        max_len,
    )
}

/// [`tokenize_chat`] for a whole [`ChatRequest`], so that `tools`,
/// `documents` and extra template variables reach every rendering;
/// `request.add_generation_prompt` is ignored.
///
/// ```
/// # use kaiyuan_models::chat::{ChatMessage, ChatRequest, ChatTemplate};
/// # use kaiyuan_tokenizer::Tokenizer;
/// # let tokenizer = Tokenizer::from_json_str("inline", r#"{
/// #     "added_tokens": [
/// #         {"id": 0, "content": "<|user|>", "special": true},
/// #         {"id": 1, "content": "<|assistant|>", "special": true},
/// #         {"id": 2, "content": "<|end|>", "special": true}],
/// #     "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
/// #     "model": {"type": "BPE", "vocab": {"h": 3, "i": 4, "y": 5, "o": 6, "hi": 7, "yo": 8},
/// #               "merges": [["h", "i"], ["y", "o"]]}}"#)?;
/// use kaiyuan_train::sft::tokenize_request;
///
/// let template = ChatTemplate::new(
///     "{% if greeting %}hi{% endif %}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}\
///      {% if add_generation_prompt %}<|assistant|>{% endif %}", None, None)?;
/// let mut request = ChatRequest::new(vec![
///     ChatMessage::new("user", "hi"),
///     ChatMessage::new("assistant", "yo"),
/// ]);
/// request.extra.push(("greeting".into(), true.into()));
/// let example = tokenize_request(&template, &tokenizer, &request, None)?;
/// assert_eq!(example.ids, [7, 0, 7, 2, 1, 8, 2]);
/// assert_eq!(example.labelled(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn tokenize_request(
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    request: &ChatRequest,
    max_len: Option<usize>,
) -> Result<SftExample> {
    if max_len == Some(0) {
        return Err(TrainError::invalid("max_len", "must be at least 1"));
    }
    let (labelled, encoding) = label(template, tokenizer, request)?;
    let Encoding { mut ids, offsets } = encoding;
    let mut labels = token_labels(&ids, &offsets, &labelled.spans);
    let Some(first) = labels.iter().position(|&l| l != IGNORE) else {
        return Err(TrainError::invalid(
            "conversation",
            "its assistant messages render to no token",
        ));
    };
    if let Some(max) = max_len {
        if first >= max {
            return Err(TrainError::invalid(
                "conversation",
                format!(
                    "no assistant token within the first {max} tokens (max_len); \
                     the first is token {first} of {}",
                    ids.len()
                ),
            ));
        }
        ids.truncate(max);
        labels.truncate(max);
    }
    Ok(SftExample { ids, labels })
}

/// The rendering of `request`'s conversation and its labelled byte spans
/// (see the [module docs](self)); the same errors as [`tokenize_chat`]
/// except those about truncation.
///
/// ```
/// # use kaiyuan_models::chat::{ChatMessage, ChatRequest, ChatTemplate};
/// # use kaiyuan_tokenizer::Tokenizer;
/// # let tokenizer = Tokenizer::from_json_str("inline", r#"{
/// #     "added_tokens": [
/// #         {"id": 0, "content": "<|user|>", "special": true},
/// #         {"id": 1, "content": "<|assistant|>", "special": true},
/// #         {"id": 2, "content": "<|end|>", "special": true}],
/// #     "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
/// #     "model": {"type": "BPE", "vocab": {"h": 3, "i": 4, "y": 5, "o": 6, "hi": 7, "yo": 8},
/// #               "merges": [["h", "i"], ["y", "o"]]}}"#)?;
/// use kaiyuan_train::sft::assistant_spans;
///
/// let template = ChatTemplate::new(
///     "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}\
///      {% if add_generation_prompt %}<|assistant|>{% endif %}", None, None)?;
/// let request = ChatRequest::new(vec![
///     ChatMessage::new("user", "hi"),
///     ChatMessage::new("assistant", "yo"),
/// ]);
/// let labelled = assistant_spans(&template, &tokenizer, &request)?;
/// let spans: Vec<&str> = labelled.spans.iter().map(|s| &labelled.text[s.clone()]).collect();
/// assert_eq!(spans, ["yo<|end|>"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn assistant_spans(
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    request: &ChatRequest,
) -> Result<LabelledText> {
    label(template, tokenizer, request).map(|(labelled, _)| labelled)
}

/// Renders the first `k` messages of `request`; the error says what failed.
fn render_prefix(
    template: &ChatTemplate,
    request: &ChatRequest,
    k: usize,
    generation_prompt: bool,
) -> std::result::Result<String, String> {
    let prefix = ChatRequest {
        messages: request.messages[..k].to_vec(),
        tools: request.tools.clone(),
        documents: request.documents.clone(),
        add_generation_prompt: generation_prompt,
        extra: request.extra.clone(),
    };
    template.render(&prefix).map_err(|e| {
        let what = if k == request.messages.len() {
            "the conversation".to_owned()
        } else {
            format!("the first {k} messages")
        };
        let prompt = if generation_prompt {
            " with a generation prompt"
        } else {
            ""
        };
        format!("rendering {what}{prompt}: {e}")
    })
}

fn label(
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    request: &ChatRequest,
) -> Result<(LabelledText, Encoding)> {
    let messages = &request.messages;
    let n = messages.len();
    if !messages.iter().any(|m| m.role() == "assistant") {
        return Err(TrainError::invalid("conversation", NO_ASSISTANT));
    }
    let template_error = |message: String| TrainError::invalid("chat template", message);
    let full = render_prefix(template, request, n, false).map_err(template_error)?;
    let encoding = tokenizer.encode(&full)?;
    let special: HashSet<u32> = tokenizer
        .added_tokens()
        .iter()
        .filter(|t| t.special)
        .map(|t| t.id)
        .collect();
    // prefixes[k]: the rendering of the first k messages, once asked for
    // (Err: the template refused it).
    let mut prefixes: Vec<Option<std::result::Result<String, String>>> = vec![None; n + 1];
    prefixes[n] = Some(Ok(full.clone()));
    let mut prefix = |k: usize| -> std::result::Result<String, String> {
        prefixes[k]
            .get_or_insert_with(|| render_prefix(template, request, k, false))
            .clone()
    };
    let bad = |i: usize, message: String| {
        TrainError::invalid(
            "conversation",
            format!("assistant message {} (of {n}): {message}", i + 1),
        )
    };
    let mut spans = Vec::new();
    for (i, _) in messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role() == "assistant")
    {
        let before = prefix(i).map_err(template_error)?;
        if !full.starts_with(&before) {
            return Err(bad(
                i,
                "the template renders the messages before it differently once later \
                 messages follow (the rendering of a prefix of the conversation is not a \
                 prefix of the whole), so its turn cannot be located"
                    .to_owned(),
            ));
        }
        let prompted = render_prefix(template, request, i, true).map_err(template_error)?;
        let Some(header) = prompted.strip_prefix(before.as_str()) else {
            return Err(bad(
                i,
                "adding the generation prompt changes the text before it".to_owned(),
            ));
        };
        if !full[before.len()..].starts_with(header) {
            return Err(bad(
                i,
                format!("its turn does not start with the generation prompt {header:?}"),
            ));
        }
        let start = before.len() + header.len();
        // The first later prefix that the whole rendering extends: the turn
        // (and any messages up to j) ends there. j = n always qualifies.
        let (j, limit) = (i + 1..=n)
            .find_map(|j| {
                prefix(j)
                    .ok()
                    .filter(|p| p.len() >= start && full.starts_with(p.as_str()))
                    .map(|p| (j, p.len()))
            })
            .unwrap_or((n, full.len()));
        let inside: Vec<(usize, usize)> = encoding
            .ids
            .iter()
            .zip(&encoding.offsets)
            .filter(|&(id, &(a, b))| special.contains(id) && a >= start && b <= limit)
            .map(|(_, &span)| span)
            .collect();
        let end = if j == i + 1 {
            // The turn is exactly full[before.len()..limit].
            inside.last().map_or(limit, |&(_, b)| b)
        } else {
            let alone = prefix(i + 1).map_err(template_error)?;
            let tail = alone
                .strip_prefix(before.as_str())
                .and_then(|t| t.strip_prefix(header))
                .ok_or_else(|| {
                    bad(
                        i,
                        "rendered as the last message, its turn does not follow the \
                         messages before it and the generation prompt"
                            .to_owned(),
                    )
                })?;
            let count = tokenizer
                .encode(tail)?
                .ids
                .iter()
                .filter(|id| special.contains(id))
                .count();
            match (count, inside.first()) {
                (1, Some(&(_, b))) => b,
                _ => {
                    return Err(bad(
                        i,
                        format!(
                            "cannot tell where its turn ends: the template renders it \
                             differently once later messages follow, and rendered as the \
                             last message it holds {count} special tokens (need exactly one, \
                             its end-of-turn token)"
                        ),
                    ));
                }
            }
        };
        if end > start {
            spans.push(start..end);
        }
    }
    Ok((LabelledText { text: full, spans }, encoding))
}

/// Labels: a token's id where its byte span overlaps one of `spans` (sorted,
/// disjoint), [`IGNORE`] elsewhere; one pass, as transformers'
/// `return_assistant_tokens_mask` does.
fn token_labels(ids: &[u32], offsets: &[(usize, usize)], spans: &[Range<usize>]) -> Vec<i64> {
    let mut labels = Vec::with_capacity(ids.len());
    let mut k = 0;
    for (&id, &(a, b)) in ids.iter().zip(offsets) {
        while k < spans.len() && a >= spans[k].end {
            k += 1;
        }
        let inside = k < spans.len() && b > spans[k].start;
        labels.push(if inside { i64::from(id) } else { IGNORE });
    }
    labels
}
