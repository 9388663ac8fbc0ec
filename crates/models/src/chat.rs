//! Chat templates: the Jinja templates of HF `tokenizer_config.json`
//! (`chat_template`), rendered as transformers'
//! `tokenizer.apply_chat_template(conversation, tools=…, add_generation_prompt=…, tokenize=False, **kwargs)`
//! renders them.
//!
//! The template runs in a [minijinja] environment set up like transformers'
//! sandbox: `trim_blocks` and `lstrip_blocks` on, a trailing newline of the
//! source dropped, loop controls (`{% break %}`, `{% continue %}`),
//! `namespace()`, `dict()`, `raise_exception(message)`, `strftime_now(format)`,
//! and transformers' own `tojson` filter (Python's `json.dumps` with
//! `ensure_ascii=False` and its `indent`, `separators`, `sort_keys`
//! arguments). Values print as Python prints them (`True`, `None`, `1.0`,
//! `['a', 1]`, `{'k': 'v'}`), and the usual Python string, dict and list
//! methods (`.strip()`, `.split()`, `.startswith()`, `.items()`, `.get()` …)
//! work through `minijinja-contrib`'s `pycompat`. Messages are normalised
//! as transformers does: keys whose value is `None` are dropped, and a
//! message's reasoning (`reasoning_content`, `thinking` or `reasoning`) is
//! available under both `thinking` and `reasoning_content`. The context holds
//! the tokenizer's special tokens (`bos_token`, `eos_token`, …), `messages`,
//! `tools` and `documents` (`None` when not given), `add_generation_prompt`,
//! and any extra variables (e.g. `enable_thinking`), which override the
//! special tokens.
//!
//! Values are [`Value`]s (minijinja's), whose maps keep their insertion
//! order: key order matters, since `tool | tojson` prints keys in order.
//! [`parse_json`] and [`ChatRequest::from_json`] keep the order of the JSON
//! text; [`json_value`] converts a `serde_json::Value`, whose objects (without
//! serde_json's `preserve_order` feature) iterate in sorted key order.
//!
//! Known differences from Jinja2 (none used by the templates tested in
//! `tests/chat.rs`): Python tuples are lists here (so `('a', 1)` prints as
//! `['a', 1]`), the `~` operator and `|string` of a container use
//! minijinja's spelling (`true`, `none`), `strftime_now` uses UTC, and
//! `{% generation %}` blocks render their content without tracking
//! assistant tokens.
//!
//! ```
//! use kaiyuan_models::chat::{ChatMessage, ChatRequest, ChatTemplate};
//!
//! let template = ChatTemplate::new(
//!     "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}\n{% endfor %}\
//!      {% if add_generation_prompt %}<|assistant|>{% endif %}",
//!     None,
//!     Some("</s>"),
//! )?;
//! let request = ChatRequest {
//!     add_generation_prompt: true,
//!     ..ChatRequest::new(vec![
//!         ChatMessage::new("system", "Be brief."),
//!         ChatMessage::new("user", "Hi!"),
//!     ])
//! };
//! assert_eq!(
//!     template.render(&request)?,
//!     "<|system|>Be brief.</s>\n<|user|>Hi!</s>\n<|assistant|>"
//! );
//! # Ok::<(), kaiyuan_models::ModelError>(())
//! ```

use std::fmt::Write as _;
use std::path::Path;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, ErrorKind};

use crate::error::{ModelError, Result};

pub use minijinja::Value;

/// The special tokens transformers passes to every template
/// (`PreTrainedTokenizerBase.SPECIAL_TOKENS_ATTRIBUTES`).
pub const SPECIAL_TOKEN_NAMES: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// The name of the template a single-template config or [`ChatTemplate::new`]
/// gets, and the one chosen when no tools are given.
pub const DEFAULT_TEMPLATE: &str = "default";
/// The template chosen, when a config has one by that name, for requests with tools.
pub const TOOL_USE_TEMPLATE: &str = "tool_use";

/// Parses JSON text into a [`Value`], keeping the order of object keys.
///
/// ```
/// let v = kaiyuan_models::chat::parse_json(r#"{"b": 1, "a": [true, null, 2.5]}"#)?;
/// let keys: Vec<String> = v.try_iter().unwrap().map(|k| k.to_string()).collect();
/// assert_eq!(keys, ["b", "a"]);
/// # Ok::<(), kaiyuan_models::ModelError>(())
/// ```
pub fn parse_json(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| ModelError::invalid("json", e.to_string()))
}

/// Converts a `serde_json::Value` (objects iterate in serde_json's order,
/// sorted by key unless its `preserve_order` feature is on).
///
/// ```
/// let v = kaiyuan_models::chat::json_value(&serde_json::json!({"x": [1, "y"]}));
/// assert_eq!(v.get_attr("x")?.len(), Some(2));
/// # Ok::<(), minijinja::Error>(())
/// ```
pub fn json_value(value: &serde_json::Value) -> Value {
    Value::from_serialize(value)
}

/// One message of a conversation: its role, its content and any other fields
/// (`tool_calls`, `tool_call_id`, `name`, `reasoning_content`, `tools`,
/// `metadata` …), kept in order (templates may iterate over a message or
/// print it with `tojson`). A field whose value is `None` is dropped before
/// rendering, as transformers does.
///
/// ```
/// use kaiyuan_models::chat::{json_value, ChatMessage};
///
/// let call = json_value(&serde_json::json!([
///     {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}
/// ]));
/// let m = ChatMessage::new("assistant", "").with("tool_calls", call);
/// assert_eq!(m.role(), "assistant");
/// assert_eq!(m.fields().len(), 3);
/// assert!(m.get("tool_calls").is_some());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    fields: Vec<(String, Value)>,
}

impl ChatMessage {
    /// A message `{"role": role, "content": content}`.
    pub fn new(role: impl Into<String>, content: impl Into<Value>) -> Self {
        Self {
            fields: vec![
                ("role".to_owned(), Value::from(role.into())),
                ("content".to_owned(), content.into()),
            ],
        }
    }

    /// Sets the field `key`: replaced in place if present, else appended.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        let key = key.into();
        let value = value.into();
        match self.fields.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((key, value)),
        }
        self
    }

    /// The role (`system`, `user`, `assistant`, `tool`, …).
    pub fn role(&self) -> &str {
        self.get("role")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
    }

    /// The content (usually a string; a list of parts for multimodal templates).
    pub fn content(&self) -> Option<&Value> {
        self.get("content")
    }

    /// The field `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Every field, role and content included, in order.
    pub fn fields(&self) -> &[(String, Value)] {
        &self.fields
    }

    /// Reads a message from a map value (`{"role": …, "content": …, …}`),
    /// keeping its key order; `role` must be a string.
    pub fn from_value(value: &Value) -> Result<Self> {
        let bad = |msg: &str| ModelError::invalid("messages", msg.to_owned());
        if value.kind() != ValueKind::Map {
            return Err(bad(&format!(
                "a message must be a map, got {}",
                value.kind()
            )));
        }
        let mut fields = Vec::new();
        let keys = value.try_iter().map_err(|e| bad(&e.to_string()))?;
        for key in keys {
            let item = value.get_item(&key).map_err(|e| bad(&e.to_string()))?;
            match key.as_str() {
                Some(k) => fields.push((k.to_owned(), item)),
                None => return Err(bad(&format!("message keys must be strings, got {key}"))),
            }
        }
        let message = Self { fields };
        if message.get("role").and_then(|r| r.as_str()).is_none() {
            return Err(bad("a message needs a string `role`"));
        }
        Ok(message)
    }

    /// The message as the template sees it: `None` fields dropped and the
    /// reasoning aliased as transformers' `_alias_reasoning_fields` does.
    fn to_template_value(&self) -> Value {
        let mut entries: Vec<(String, Value)> = self
            .fields
            .iter()
            .filter(|(_, v)| !v.is_none())
            .cloned()
            .collect();
        let reasoning = ["reasoning_content", "thinking", "reasoning"]
            .iter()
            .find_map(|name| {
                entries
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            });
        if let Some(r) = reasoning {
            // {"thinking": r, **message, "reasoning_content": r}
            // "thinking" comes first, with the message's own value if it has one.
            let thinking = match entries.iter().position(|(k, _)| k == "thinking") {
                Some(i) => entries.remove(i),
                None => ("thinking".into(), r.clone()),
            };
            entries.insert(0, thinking);
            match entries.iter_mut().find(|(k, _)| k == "reasoning_content") {
                Some(slot) => slot.1 = r,
                None => entries.push(("reasoning_content".into(), r)),
            }
        }
        entries.into_iter().collect()
    }
}

/// What to render: the conversation, the tools, and the variables of
/// `apply_chat_template`.
///
/// ```
/// use kaiyuan_models::chat::ChatRequest;
///
/// let r = ChatRequest::from_json(r#"{
///     "messages": [{"role": "user", "content": "Hi"}],
///     "add_generation_prompt": true,
///     "enable_thinking": false
/// }"#)?;
/// assert_eq!(r.messages[0].role(), "user");
/// assert!(r.add_generation_prompt);
/// assert_eq!(r.extra[0].0, "enable_thinking");
/// # Ok::<(), kaiyuan_models::ModelError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// JSON schemas of the tools (`{"type": "function", "function": {…}}`);
    /// `None` renders `tools` as `None` and picks the default template.
    pub tools: Option<Vec<Value>>,
    /// Documents for retrieval-augmented templates (`None` when not given).
    pub documents: Option<Vec<Value>>,
    /// Whether to end with the header of an assistant turn.
    pub add_generation_prompt: bool,
    /// Further template variables (`enable_thinking`, `date_string`, …), in
    /// order; they override the special tokens of the same name.
    pub extra: Vec<(String, Value)>,
}

impl ChatRequest {
    /// A request for `messages`, without tools or generation prompt.
    pub fn new(messages: Vec<ChatMessage>) -> Self {
        Self {
            messages,
            ..Self::default()
        }
    }

    /// Parses a request from JSON text, keeping key order: `messages`
    /// (required), `tools`, `documents`, `add_generation_prompt` (a boolean),
    /// and every other key as an extra variable.
    pub fn from_json(text: &str) -> Result<Self> {
        Self::from_value(&parse_json(text)?)
    }

    /// Reads a request from a map value; see [`ChatRequest::from_json`].
    pub fn from_value(value: &Value) -> Result<Self> {
        let bad = |name: &str, msg: String| ModelError::invalid(name, msg);
        if value.kind() != ValueKind::Map {
            return Err(bad(
                "request",
                format!("must be a map, got {}", value.kind()),
            ));
        }
        let mut request = Self::default();
        let mut has_messages = false;
        let keys = value
            .try_iter()
            .map_err(|e| bad("request", e.to_string()))?;
        for key in keys {
            let item = value
                .get_item(&key)
                .map_err(|e| bad("request", e.to_string()))?;
            let list = |name: &str| -> Result<Option<Vec<Value>>> {
                match item.kind() {
                    ValueKind::None => Ok(None),
                    ValueKind::Seq => Ok(Some(
                        item.try_iter()
                            .map_err(|e| bad(name, e.to_string()))?
                            .collect(),
                    )),
                    other => Err(bad(name, format!("must be a list, got {other}"))),
                }
            };
            match key.as_str() {
                Some("messages") => {
                    has_messages = true;
                    request.messages = list("messages")?
                        .unwrap_or_default()
                        .iter()
                        .map(ChatMessage::from_value)
                        .collect::<Result<_>>()?;
                }
                Some("tools") => request.tools = list("tools")?,
                Some("documents") => request.documents = list("documents")?,
                Some("add_generation_prompt") => {
                    if item.kind() != ValueKind::Bool {
                        return Err(bad(
                            "add_generation_prompt",
                            format!("must be a boolean, got {}", item.kind()),
                        ));
                    }
                    request.add_generation_prompt = item.is_true();
                }
                Some(k) => request.extra.push((k.to_owned(), item)),
                None => return Err(bad("request", format!("keys must be strings, got {key}"))),
            }
        }
        if !has_messages {
            return Err(bad("messages", "the request has no `messages`".into()));
        }
        Ok(request)
    }
}

/// A chat template (or a set of named ones, as a `tokenizer_config.json`
/// may hold), compiled once, with the tokenizer's special tokens.
///
/// ```
/// use kaiyuan_models::chat::{ChatMessage, ChatRequest, ChatTemplate};
///
/// let config = r#"{
///   "chat_template": [
///     {"name": "default", "template": "{% for m in messages %}{{ m.content }}{% endfor %}"},
///     {"name": "tool_use", "template": "{{ tools | length }} tools: {{ tools[0] | tojson }}"}
///   ],
///   "bos_token": {"content": "<s>", "lstrip": false},
///   "eos_token": "</s>"
/// }"#;
/// let t = ChatTemplate::from_tokenizer_config(config)?;
/// let mut r = ChatRequest::new(vec![ChatMessage::new("user", "hi")]);
/// assert_eq!(t.render(&r)?, "hi");
/// r.tools = Some(vec![kaiyuan_models::chat::parse_json(r#"{"name": "f", "n": 1.0}"#)?]);
/// assert_eq!(t.render(&r)?, r#"1 tools: {"name": "f", "n": 1.0}"#);
/// assert_eq!(t.special_token("bos_token"), Some("<s>"));
/// # Ok::<(), kaiyuan_models::ModelError>(())
/// ```
pub struct ChatTemplate {
    env: Environment<'static>,
    names: Vec<String>,
    special_tokens: Vec<(String, String)>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("names", &self.names)
            .field("special_tokens", &self.special_tokens)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source` as the template named [`DEFAULT_TEMPLATE`], with
    /// the given `bos_token` and `eos_token` (`None`: not defined).
    pub fn new(source: &str, bos_token: Option<&str>, eos_token: Option<&str>) -> Result<Self> {
        let mut special = Vec::new();
        if let Some(bos) = bos_token {
            special.push(("bos_token".to_owned(), bos.to_owned()));
        }
        if let Some(eos) = eos_token {
            special.push(("eos_token".to_owned(), eos.to_owned()));
        }
        Self::from_named(
            vec![(DEFAULT_TEMPLATE.to_owned(), source.to_owned())],
            special,
        )
    }

    /// Compiles named templates (a `tokenizer_config.json` list of
    /// `{"name", "template"}`) with special tokens `(name, content)`.
    pub fn from_named(
        templates: Vec<(String, String)>,
        special_tokens: Vec<(String, String)>,
    ) -> Result<Self> {
        if templates.is_empty() {
            return Err(ModelError::Template {
                message: "no chat template given".into(),
            });
        }
        let mut env = environment();
        let mut names = Vec::with_capacity(templates.len());
        for (name, source) in templates {
            if names.contains(&name) {
                return Err(ModelError::Template {
                    message: format!("two templates named `{name}`"),
                });
            }
            env.add_template_owned(name.clone(), rewrite_generation_tags(&source))
                .map_err(|e| template_error(&name, &e))?;
            names.push(name);
        }
        Ok(Self {
            env,
            names,
            special_tokens,
        })
    }

    /// Reads `chat_template` and the special tokens from a HF
    /// `tokenizer_config.json`, given as JSON text (starting with `{`), as
    /// the path of the file, or as the model directory holding it. In a
    /// directory, `chat_template.jinja` (transformers' newer layout) takes
    /// precedence over the config's `chat_template`, and
    /// `additional_chat_templates/<name>.jinja` add named templates.
    ///
    /// `chat_template` may be a string or a list of `{"name", "template"}`;
    /// special tokens may be strings or `{"content": …}` objects.
    pub fn from_tokenizer_config(path_or_json: &str) -> Result<Self> {
        let trimmed = path_or_json.trim_start();
        let (origin, text, dir) = if trimmed.starts_with('{') {
            (
                "tokenizer_config.json".to_owned(),
                path_or_json.to_owned(),
                None,
            )
        } else {
            let path = Path::new(path_or_json);
            let (file, dir) = if path.is_dir() {
                (path.join("tokenizer_config.json"), Some(path.to_path_buf()))
            } else {
                (path.to_path_buf(), None)
            };
            let text = std::fs::read_to_string(&file).map_err(|e| ModelError::io(&file, e))?;
            (file.display().to_string(), text, dir)
        };
        let config: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::format(&origin, e.to_string()))?;
        let mut templates = Vec::new();
        match config.get("chat_template") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(s)) => {
                templates.push((DEFAULT_TEMPLATE.to_owned(), s.clone()));
            }
            Some(serde_json::Value::Array(list)) => {
                for item in list {
                    let name = item.get("name").and_then(|v| v.as_str());
                    let source = item.get("template").and_then(|v| v.as_str());
                    match (name, source) {
                        (Some(n), Some(s)) => templates.push((n.to_owned(), s.to_owned())),
                        _ => {
                            return Err(ModelError::config(
                                &origin,
                                "chat_template",
                                "list entries need string `name` and `template`",
                            ));
                        }
                    }
                }
            }
            Some(_) => {
                return Err(ModelError::config(
                    &origin,
                    "chat_template",
                    "must be a string or a list of {name, template}",
                ));
            }
        }
        if let Some(dir) = dir {
            let main = dir.join("chat_template.jinja");
            if main.is_file() {
                let s = std::fs::read_to_string(&main).map_err(|e| ModelError::io(&main, e))?;
                templates.retain(|(n, _)| n != DEFAULT_TEMPLATE);
                templates.insert(0, (DEFAULT_TEMPLATE.to_owned(), s));
            }
            let extra_dir = dir.join("additional_chat_templates");
            if let Ok(entries) = std::fs::read_dir(&extra_dir) {
                let mut files: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
                files.sort();
                for f in files {
                    let Some(name) = f
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.strip_suffix(".jinja"))
                    else {
                        continue;
                    };
                    let s = std::fs::read_to_string(&f).map_err(|e| ModelError::io(&f, e))?;
                    templates.retain(|(n, _)| n != name);
                    templates.push((name.to_owned(), s));
                }
            }
        }
        if templates.is_empty() {
            return Err(ModelError::config(&origin, "chat_template", "missing"));
        }
        let mut special = Vec::new();
        for name in SPECIAL_TOKEN_NAMES {
            let content = match config.get(name) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Object(o)) => match o.get("content") {
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    _ => {
                        return Err(ModelError::config(
                            &origin,
                            name,
                            "an AddedToken object needs a string `content`",
                        ));
                    }
                },
                None | Some(serde_json::Value::Null) => None,
                Some(_) => {
                    return Err(ModelError::config(
                        &origin,
                        name,
                        "must be a string, an AddedToken object or null",
                    ));
                }
            };
            if let Some(c) = content {
                special.push((name.to_owned(), c));
            }
        }
        Self::from_named(templates, special)
    }

    /// Sets (or replaces) a special token or any other variable every
    /// rendering sees, e.g. `("pad_token", "<pad>")`.
    pub fn with_special_token(mut self, name: &str, content: &str) -> Self {
        match self.special_tokens.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = content.to_owned(),
            None => self
                .special_tokens
                .push((name.to_owned(), content.to_owned())),
        }
        self
    }

    /// The special token `name` (`"bos_token"`, …), if set.
    pub fn special_token(&self, name: &str) -> Option<&str> {
        self.special_tokens
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.as_str())
    }

    /// The special tokens, in the order they are set.
    pub fn special_tokens(&self) -> &[(String, String)] {
        &self.special_tokens
    }

    /// The names of the templates, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Fixes the time `strftime_now` formats (seconds since the Unix epoch,
    /// UTC), for reproducible renderings; by default it reads the clock.
    pub fn with_fixed_time(mut self, unix_seconds: i64) -> Self {
        self.env.add_function("strftime_now", move |format: &str| {
            strftime(format, unix_seconds)
        });
        self
    }

    /// Which template `request` uses, as transformers' `get_chat_template`:
    /// the only one; else [`TOOL_USE_TEMPLATE`] when tools are given and it
    /// exists; else [`DEFAULT_TEMPLATE`].
    pub fn select(&self, request: &ChatRequest) -> Result<&str> {
        if let [only] = self.names.as_slice() {
            return Ok(only);
        }
        let has = |n: &str| self.names.iter().any(|x| x == n);
        if request.tools.is_some() && has(TOOL_USE_TEMPLATE) {
            return Ok(TOOL_USE_TEMPLATE);
        }
        if has(DEFAULT_TEMPLATE) {
            return Ok(DEFAULT_TEMPLATE);
        }
        Err(ModelError::Template {
            message: format!(
                "several chat templates and none named `default`; pick one of {:?}",
                self.names
            ),
        })
    }

    /// Renders `request` with the template [`ChatTemplate::select`] picks.
    pub fn render(&self, request: &ChatRequest) -> Result<String> {
        let name = self.select(request)?.to_owned();
        self.render_with(&name, request)
    }

    /// Renders `request` with the template called `name`.
    pub fn render_with(&self, name: &str, request: &ChatRequest) -> Result<String> {
        let template = self
            .env
            .get_template(name)
            .map_err(|_| ModelError::Template {
                message: format!("no template named `{name}` (have {:?})", self.names),
            })?;
        let mut context: Vec<(String, Value)> = self
            .special_tokens
            .iter()
            .map(|(n, c)| (n.clone(), Value::from(c.as_str())))
            .collect();
        let mut set = |key: &str, value: Value| match context.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => context.push((key.to_owned(), value)),
        };
        for (k, v) in &request.extra {
            set(k, v.clone());
        }
        let messages: Vec<Value> = request
            .messages
            .iter()
            .map(ChatMessage::to_template_value)
            .collect();
        set("messages", Value::from(messages));
        let list = |l: &Option<Vec<Value>>| match l {
            Some(v) => Value::from(v.clone()),
            None => Value::from(()),
        };
        set("tools", list(&request.tools));
        set("documents", list(&request.documents));
        set(
            "add_generation_prompt",
            Value::from(request.add_generation_prompt),
        );
        let ctx: Value = context.into_iter().collect();
        template.render(ctx).map_err(|e| template_error(name, &e))
    }
}

fn template_error(name: &str, e: &Error) -> ModelError {
    let mut message = format!("`{name}`: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = write!(message, ": {s}");
        source = s.source();
    }
    ModelError::Template { message }
}

// ------------------------------------------------------------ environment --

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(|out, _state, value| {
        let mut s = String::new();
        py_str(value, &mut s);
        out.write_str(&s).map_err(Error::from)
    });
    env.add_filter("tojson", tojson);
    env.add_filter("string", |v: Value| {
        let mut s = String::new();
        py_str(&v, &mut s);
        s
    });
    env.add_function(
        "raise_exception",
        |message: String| -> std::result::Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message))
        },
    );
    env.add_function("strftime_now", |format: &str| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        strftime(format, now)
    });
    env
}

/// Rewrites transformers' `{% generation %}…{% endgeneration %}` extension
/// tags (assistant-mask tracking) into a plain `if true` block with the same
/// whitespace control.
fn rewrite_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(pos) = rest.find("{%") {
        out.push_str(&rest[..pos]);
        let tag = &rest[pos..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let (lead, body) = match inner.chars().next() {
            Some(c @ ('-' | '+')) => (c.to_string(), &inner[1..]),
            _ => (String::new(), inner),
        };
        let (body, trail) = match body.strip_suffix('-') {
            Some(b) => (b, "-"),
            None => (body, ""),
        };
        let replacement = match body.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => {
                let _ = write!(out, "{{%{lead} {r} {trail}%}}");
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

// ------------------------------------------------------- Python printing --

/// `str(value)` in Python: strings as they are, everything else as `repr`.
fn py_str(value: &Value, out: &mut String) {
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::String => out.push_str(value.as_str().unwrap_or_default()),
        _ => py_repr(value, out),
    }
}

/// `repr(value)` in Python, for JSON-like values.
fn py_repr(value: &Value, out: &mut String) {
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number => {
            if value.is_integer() {
                let _ = write!(out, "{value}");
            } else {
                py_float(f64::try_from(value.clone()).unwrap_or(f64::NAN), out, false);
            }
        }
        ValueKind::String => py_str_repr(value.as_str().unwrap_or_default(), out),
        ValueKind::Map => {
            out.push('{');
            if let Ok(keys) = value.try_iter() {
                for (i, k) in keys.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_repr(&k, out);
                    out.push_str(": ");
                    py_repr(&value.get_item(&k).unwrap_or_default(), out);
                }
            }
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            if let Ok(items) = value.try_iter() {
                for (i, item) in items.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_repr(&item, out);
                }
            }
            out.push(']');
        }
        _ => {
            let _ = write!(out, "{value}");
        }
    }
}

/// Whether Python's `str.isprintable()` is false for `c` (control, format,
/// separator other than space, private use): `repr` escapes those.
fn py_unprintable(c: char) -> bool {
    let u = c as u32;
    c.is_control()
        || matches!(
            u,
            0xA0 | 0xAD
                | 0x600..=0x605
                | 0x61C
                | 0x6DD
                | 0x70F
                | 0x1680
                | 0x180E
                | 0x2000..=0x200F
                | 0x2028..=0x202F
                | 0x205F..=0x2064
                | 0x2066..=0x206F
                | 0x3000
                | 0xE000..=0xF8FF
                | 0xFEFF
                | 0xFFF9..=0xFFFB
                | 0x110BD
                | 0x1D173..=0x1D17A
                | 0xE0001
                | 0xE0020..=0xE007F
                | 0xF0000..
        )
}

fn py_str_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if py_unprintable(c) => {
                let u = c as u32;
                let _ = if u < 0x100 {
                    write!(out, "\\x{u:02x}")
                } else if u < 0x10000 {
                    write!(out, "\\u{u:04x}")
                } else {
                    write!(out, "\\U{u:08x}")
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Python's `repr(float)`: the shortest digits that round-trip, positional
/// for exponents in [-4, 16), else `d.ddde±XX`; `json` spells the
/// non-finite values `NaN`/`Infinity`, Python `nan`/`inf`.
fn py_float(x: f64, out: &mut String, json: bool) {
    if x.is_nan() {
        out.push_str(if json { "NaN" } else { "nan" });
        return;
    }
    if x.is_infinite() {
        let s = match (json, x > 0.0) {
            (true, true) => "Infinity",
            (true, false) => "-Infinity",
            (false, true) => "inf",
            (false, false) => "-inf",
        };
        out.push_str(s);
        return;
    }
    // `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    out.push_str(sign);
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        if exp < 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        } else if exp + 1 >= n {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', (exp + 1 - n) as usize));
            out.push_str(".0");
        } else {
            let point = (exp + 1) as usize;
            out.push_str(&digits[..point]);
            out.push('.');
            out.push_str(&digits[point..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
}

// ---------------------------------------------------------------- tojson --

struct JsonOptions {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`, arguments by name or (the first
/// three) by position.
fn tojson(
    value: &Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    separators: Option<Value>,
    kwargs: Kwargs,
) -> std::result::Result<String, Error> {
    let pick =
        |positional: Option<Value>, name: &str| -> std::result::Result<Option<Value>, Error> {
            let named: Option<Value> = kwargs.get(name)?;
            Ok(named.or(positional))
        };
    let ensure_ascii = pick(ensure_ascii, "ensure_ascii")?.is_some_and(|v| v.is_true());
    let sort_keys = pick(None, "sort_keys")?.is_some_and(|v| v.is_true());
    let indent = match pick(indent, "indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or_default().to_owned()),
        Some(v) => match v.as_i64() {
            Some(n) => Some(" ".repeat(n.max(0) as usize)),
            None => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: indent must be an integer or a string, got {v}"),
                ));
            }
        },
    };
    let (item_sep, key_sep) = match pick(separators, "separators")? {
        Some(v) if !v.is_none() => {
            let parts: Vec<String> = v
                .try_iter()?
                .map(|p| p.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .unwrap_or_default();
            match <[String; 2]>::try_from(parts) {
                Ok([a, b]) => (a, b),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be two strings",
                    ));
                }
            }
        }
        _ if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        _ => (", ".to_owned(), ": ".to_owned()),
    };
    kwargs.assert_all_used()?;
    let opts = JsonOptions {
        ensure_ascii,
        indent,
        item_sep,
        key_sep,
        sort_keys,
    };
    let mut out = String::new();
    json_dump(value, &opts, 0, &mut out)?;
    Ok(out)
}

fn json_newline(opts: &JsonOptions, level: usize, out: &mut String) {
    if let Some(indent) = &opts.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(indent);
        }
    }
}

fn json_dump(
    value: &Value,
    opts: &JsonOptions,
    level: usize,
    out: &mut String,
) -> std::result::Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: Object of type Undefined is not JSON serializable",
            ));
        }
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if value.is_integer() {
                let _ = write!(out, "{value}");
            } else {
                py_float(f64::try_from(value.clone())?, out, true);
            }
        }
        ValueKind::String => {
            json_string(value.as_str().unwrap_or_default(), opts.ensure_ascii, out)
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            json_newline(opts, level + 1, out);
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                    json_newline(opts, level + 1, out);
                }
                json_dump(item, opts, level + 1, out)?;
            }
            json_newline(opts, level, out);
            out.push(']');
        }
        ValueKind::Map => {
            let mut entries: Vec<(String, Value)> = Vec::new();
            for k in value.try_iter()? {
                let item = value.get_item(&k)?;
                entries.push((json_key(&k)?, item));
            }
            if opts.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            if entries.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            json_newline(opts, level + 1, out);
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                    json_newline(opts, level + 1, out);
                }
                json_string(k, opts.ensure_ascii, out);
                out.push_str(&opts.key_sep);
                json_dump(v, opts, level + 1, out)?;
            }
            json_newline(opts, level, out);
            out.push('}');
        }
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: a value of kind {other} is not JSON serializable"),
            ));
        }
    }
    Ok(())
}

/// A dict key as `json.dumps` converts it: strings as they are, numbers,
/// booleans and `None` spelled as JSON.
fn json_key(k: &Value) -> std::result::Result<String, Error> {
    Ok(match k.kind() {
        ValueKind::String => k.as_str().unwrap_or_default().to_owned(),
        ValueKind::None => "null".to_owned(),
        ValueKind::Bool => (if k.is_true() { "true" } else { "false" }).to_owned(),
        ValueKind::Number if k.is_integer() => k.to_string(),
        ValueKind::Number => {
            let mut s = String::new();
            py_float(f64::try_from(k.clone())?, &mut s, true);
            s
        }
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: keys must be str, int, float, bool or None, not {other}"),
            ));
        }
    })
}

/// A JSON string as Python's encoder writes it.
fn json_string(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && !(' '..='~').contains(&c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// -------------------------------------------------------------- strftime --

/// Days since 1970-01-01 → (year, month 1–12, day 1–31) (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month 1–12, day 1–31) → days since 1970-01-01 (Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A subset of C's `strftime` (what chat templates use: `%d %b %Y`, `%B`,
/// `%A`, `%H:%M`, …; glibc's `%-d` form drops the padding), in UTC.
fn strftime(format: &str, unix_seconds: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let yday = days - days_from_civil(year, 1, 1);
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let unpadded = chars.peek() == Some(&'-');
        if unpadded {
            chars.next();
        }
        let num = |out: &mut String, v: i64, width: usize| {
            if unpadded {
                let _ = write!(out, "{v}");
            } else {
                let _ = write!(out, "{v:0width$}");
            }
        };
        match chars.next() {
            Some('Y') => {
                let _ = write!(out, "{year}");
            }
            Some('y') => num(&mut out, year.rem_euclid(100), 2),
            Some('m') => num(&mut out, i64::from(month), 2),
            Some('d') => num(&mut out, i64::from(day), 2),
            Some('e') => {
                let _ = write!(out, "{day:2}");
            }
            Some('j') => num(&mut out, yday + 1, 3),
            Some('H') => num(&mut out, hour, 2),
            Some('I') => num(&mut out, (hour + 11) % 12 + 1, 2),
            Some('M') => num(&mut out, minute, 2),
            Some('S') => num(&mut out, second, 2),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('B') => out.push_str(month_name),
            Some('b') | Some('h') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('u') => {
                let _ = write!(out, "{}", weekday + 1);
            }
            Some('w') => {
                let _ = write!(out, "{}", (weekday + 1) % 7);
            }
            Some('F') => {
                let _ = write!(out, "{year}-{month:02}-{day:02}");
            }
            Some('T') => {
                let _ = write!(out, "{hour:02}:{minute:02}:{second:02}");
            }
            Some('Z') | Some('z') => {} // naive local time in Python: empty
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                if unpadded {
                    out.push('-');
                }
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (2.5e-7, "2.5e-07"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789.0, "123456789.0"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-0.0, "-0.0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (12.5, "12.5"),
        ];
        for (x, want) in cases {
            let mut s = String::new();
            py_float(x, &mut s, false);
            assert_eq!(s, want, "{x:e}");
        }
    }

    #[test]
    fn strftime_known_dates() {
        // 2024-07-26 12:34:56 UTC, a Friday, day 208 of a leap year.
        let t = 1_721_997_296;
        assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(
            strftime("%A %B %-d, %H:%M:%S %j %%", t),
            "Friday July 26, 12:34:56 208 %"
        );
        assert_eq!(strftime("%Y-%m-%d", 0), "1970-01-01");
        assert_eq!(strftime("%Y-%m-%d %a", -86_400), "1969-12-31 Wed");
        assert_eq!(strftime("%j", 1_709_251_200), "061"); // 2024-03-01
    }

    #[test]
    fn generation_tags_become_if_blocks() {
        assert_eq!(
            rewrite_generation_tags(
                "a{%- generation %}b{% endgeneration -%}c{% if x %}{% endif %}"
            ),
            "a{%- if true %}b{% endif -%}c{% if x %}{% endif %}"
        );
    }
}
