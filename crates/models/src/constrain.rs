//! Constrained decoding: outputs that must match a regular expression, one
//! of a list of choices, or a JSON schema.
//!
//! The constraint is compiled once to a byte-level DFA (`regex-automata`).
//! At each step the mask allows a token exactly when feeding its bytes
//! (see [`Tokenizer::token_bytes`]) from the current state leaves the DFA
//! alive, so tokens that span a grammar boundary (`",` or `"}`) are handled
//! like any other; end-of-sequence tokens are allowed only in accepting
//! states.

use kaiyuan_tokenizer::Tokenizer;
use regex_automata::dfa::{Automaton, dense};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};
use serde_json::Value;

use crate::sampling::TokenMask;
use crate::{ModelError, Result};

/// A per-step restriction of the tokens that may be sampled.
pub trait Constraint {
    /// The tokens allowed next, over a vocabulary of `vocab_size` ids.
    fn allowed(&mut self, vocab_size: usize) -> Result<TokenMask>;
    /// Records that `token` was chosen.
    fn advance(&mut self, token: u32) -> Result<()>;
    /// Whether the output is complete and nothing may follow.
    fn is_complete(&self) -> bool;
}

/// A regular-expression constraint over the whole generated text.
pub struct RegexConstraint {
    dfa: dense::DFA<Vec<u32>>,
    /// Bytes of each id (None: never allowed, e.g. unused ids).
    token_bytes: Vec<Option<Box<[u8]>>>,
    stop_ids: Vec<u32>,
    state: StateID,
    finished: bool,
    pattern: String,
}

impl std::fmt::Debug for RegexConstraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegexConstraint")
            .field("pattern", &self.pattern)
            .field("finished", &self.finished)
            .finish()
    }
}

/// Largest DFA a constraint may compile to.
const DFA_SIZE_LIMIT: usize = 256 << 20;

impl RegexConstraint {
    /// Compiles `pattern` (Rust `regex` syntax, matched against the whole
    /// output) for `tokenizer`'s vocabulary; `stop_ids` (EOS, end-of-turn)
    /// are allowed only once the text matches.
    pub fn new(pattern: &str, tokenizer: &Tokenizer, stop_ids: &[u32]) -> Result<Self> {
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .start_kind(regex_automata::dfa::StartKind::Anchored)
                    .match_kind(MatchKind::All)
                    .dfa_size_limit(Some(DFA_SIZE_LIMIT))
                    .determinize_size_limit(Some(DFA_SIZE_LIMIT)),
            )
            .build(&format!("^(?:{pattern})$"))
            .map_err(|e| ModelError::invalid("--regex", format!("{pattern:?}: {e}")))?;
        let vocab = tokenizer.vocab_size();
        let token_bytes = (0..vocab as u32)
            .map(|id| {
                if stop_ids.contains(&id) {
                    return None;
                }
                if tokenizer
                    .added_tokens()
                    .iter()
                    .any(|t| t.id == id && t.special)
                {
                    return None;
                }
                tokenizer
                    .token_bytes(id)
                    .filter(|b| !b.is_empty())
                    .map(Vec::into_boxed_slice)
            })
            .collect();
        let state = dfa
            .start_state(&start::Config::new().anchored(Anchored::Yes))
            .map_err(|e| ModelError::invalid("--regex", format!("{pattern:?}: {e}")))?;
        Ok(Self {
            dfa,
            token_bytes,
            stop_ids: stop_ids.to_vec(),
            state,
            finished: false,
            pattern: pattern.to_string(),
        })
    }

    /// The pattern.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    fn walk(&self, mut state: StateID, bytes: &[u8]) -> Option<StateID> {
        for &b in bytes {
            state = self.dfa.next_state(state, b);
            if self.dfa.is_dead_state(state) || self.dfa.is_quit_state(state) {
                return None;
            }
        }
        Some(state)
    }

    fn accepting(&self, state: StateID) -> bool {
        let end = self.dfa.next_eoi_state(state);
        self.dfa.is_match_state(end)
    }

    fn can_continue(&self, state: StateID) -> bool {
        (0..=255u8).any(|b| {
            let next = self.dfa.next_state(state, b);
            !(self.dfa.is_dead_state(next) || self.dfa.is_quit_state(next))
        })
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        let Ok(start) = self
            .dfa
            .start_state(&start::Config::new().anchored(Anchored::Yes))
        else {
            return false;
        };
        self.walk(start, text.as_bytes())
            .is_some_and(|s| self.accepting(s))
    }
}

impl Constraint for RegexConstraint {
    fn allowed(&mut self, vocab_size: usize) -> Result<TokenMask> {
        let mut allowed = vec![false; vocab_size];
        if !self.finished {
            for (id, bytes) in self.token_bytes.iter().enumerate().take(vocab_size) {
                if let Some(bytes) = bytes {
                    allowed[id] = self.walk(self.state, bytes).is_some();
                }
            }
            if self.accepting(self.state) {
                for &id in &self.stop_ids {
                    if let Some(slot) = allowed.get_mut(id as usize) {
                        *slot = true;
                    }
                }
            }
        }
        if !allowed.iter().any(|&a| a) {
            return Err(ModelError::invalid(
                "constraint",
                format!(
                    "no token of the vocabulary can continue {:?} here",
                    self.pattern
                ),
            ));
        }
        Ok(TokenMask::from_bools(&allowed))
    }

    fn advance(&mut self, token: u32) -> Result<()> {
        if self.stop_ids.contains(&token) {
            self.finished = true;
            return Ok(());
        }
        let bytes = self
            .token_bytes
            .get(token as usize)
            .and_then(|b| b.as_deref())
            .ok_or_else(|| {
                ModelError::invalid(
                    "token",
                    format!("id {token} is not allowed by the constraint"),
                )
            })?;
        self.state = self.walk(self.state, bytes).ok_or_else(|| {
            ModelError::invalid(
                "token",
                format!("id {token} leaves the pattern {:?}", self.pattern),
            )
        })?;
        Ok(())
    }

    fn is_complete(&self) -> bool {
        self.finished || (self.accepting(self.state) && !self.can_continue(self.state))
    }
}

/// A regex matching exactly one of `choices`.
pub fn choices_regex(choices: &[String]) -> Result<String> {
    if choices.is_empty() {
        return Err(ModelError::invalid("--choices", "no choices given"));
    }
    Ok(choices
        .iter()
        .map(|c| regex_syntax::escape(c))
        .collect::<Vec<_>>()
        .join("|"))
}

/// Optional single space between JSON tokens.
const WS: &str = "[ ]?";
/// A JSON string: no control characters, escapes allowed.
const JSON_STRING_BODY: &str = r#"(?:[^"\\\x00-\x1F\x7F]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})"#;
const JSON_INTEGER: &str = r"-?(?:0|[1-9][0-9]{0,15})";
const JSON_NUMBER: &str = r"-?(?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,16})?(?:[eE][+-]?[0-9]{1,3})?";

/// Compiles a JSON schema (the subset below) to a regex whose matches are
/// exactly the compact-ish JSON texts that validate.
///
/// Supported: `type` object (`properties` in order, `required`; others
/// optional; no additional properties), array (`items`, `minItems`,
/// `maxItems`), string (`minLength`, `maxLength`, `pattern`, `format`
/// date/time/date-time/uuid), integer, number, boolean, null; `enum`,
/// `const`, `anyOf`/`oneOf`, local `$ref` to `#/$defs/…` or
/// `#/definitions/…`. Anything else is refused by name.
pub fn json_schema_regex(schema: &Value) -> Result<String> {
    SchemaCompiler {
        root: schema,
        depth: 0,
    }
    .compile(schema)
}

struct SchemaCompiler<'a> {
    root: &'a Value,
    depth: usize,
}

fn schema_error(message: impl Into<String>) -> ModelError {
    ModelError::invalid("--json-schema", message)
}

fn json_literal_regex(value: &Value) -> String {
    regex_syntax::escape(&value.to_string())
}

impl SchemaCompiler<'_> {
    fn compile(&mut self, schema: &Value) -> Result<String> {
        self.depth += 1;
        if self.depth > 32 {
            return Err(schema_error(
                "schema nests deeper than 32 levels (recursive $ref?)",
            ));
        }
        let out = self.compile_inner(schema);
        self.depth -= 1;
        out
    }

    fn compile_inner(&mut self, schema: &Value) -> Result<String> {
        let obj = match schema {
            Value::Bool(true) => return Err(schema_error("`true` (any value) is not supported")),
            Value::Object(o) => o,
            other => {
                return Err(schema_error(format!(
                    "expected a schema object, got {other}"
                )));
            }
        };
        if let Some(reference) = obj.get("$ref") {
            let path = reference
                .as_str()
                .ok_or_else(|| schema_error("$ref must be a string"))?;
            let target = path
                .strip_prefix('#')
                .and_then(|p| self.root.pointer(p))
                .ok_or_else(|| {
                    schema_error(format!("$ref {path:?} does not resolve inside the schema"))
                })?;
            return self.compile(target);
        }
        if let Some(c) = obj.get("const") {
            return Ok(json_literal_regex(c));
        }
        if let Some(values) = obj.get("enum") {
            let values = values
                .as_array()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| schema_error("enum must be a non-empty array"))?;
            return Ok(format!(
                "(?:{})",
                values
                    .iter()
                    .map(json_literal_regex)
                    .collect::<Vec<_>>()
                    .join("|")
            ));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(options) = obj.get(key) {
                let options = options
                    .as_array()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| schema_error(format!("{key} must be a non-empty array")))?;
                let parts = options
                    .iter()
                    .map(|o| self.compile(o))
                    .collect::<Result<Vec<_>>>()?;
                return Ok(format!("(?:{})", parts.join("|")));
            }
        }
        let ty = match obj.get("type") {
            Some(Value::String(t)) => t.as_str(),
            Some(Value::Array(types)) => {
                let parts = types
                    .iter()
                    .map(|t| {
                        let mut single = obj.clone();
                        single.insert("type".into(), t.clone());
                        self.compile(&Value::Object(single))
                    })
                    .collect::<Result<Vec<_>>>()?;
                return Ok(format!("(?:{})", parts.join("|")));
            }
            None if obj.contains_key("properties") => "object",
            None => return Err(schema_error(format!("schema without `type`: {schema}"))),
            Some(other) => {
                return Err(schema_error(format!(
                    "`type` must be a string, got {other}"
                )));
            }
        };
        let count = |key: &str| -> Result<Option<usize>> {
            match obj.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(|n| Some(n as usize))
                    .ok_or_else(|| schema_error(format!("`{key}` must be a non-negative integer"))),
            }
        };
        Ok(match ty {
            "string" => {
                if let Some(p) = obj.get("pattern").and_then(Value::as_str) {
                    let inner = p.trim_start_matches('^').trim_end_matches('$');
                    return Ok(format!("\"(?:{inner})\""));
                }
                if let Some(format) = obj.get("format").and_then(Value::as_str) {
                    let body = match format {
                        "date" => r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])",
                        "time" => {
                            r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})?"
                        }
                        "date-time" => {
                            r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})?"
                        }
                        "uuid" => {
                            r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
                        }
                        other => {
                            return Err(schema_error(format!(
                                "string format `{other}` is not supported"
                            )));
                        }
                    };
                    return Ok(format!("\"{body}\""));
                }
                let min = count("minLength")?.unwrap_or(0);
                match count("maxLength")? {
                    Some(max) if max < min => {
                        return Err(schema_error(format!("maxLength {max} < minLength {min}")));
                    }
                    Some(max) => format!("\"{JSON_STRING_BODY}{{{min},{max}}}\""),
                    None => format!("\"{JSON_STRING_BODY}{{{min},}}\""),
                }
            }
            "integer" => JSON_INTEGER.to_string(),
            "number" => JSON_NUMBER.to_string(),
            "boolean" => "(?:true|false)".to_string(),
            "null" => "null".to_string(),
            "array" => {
                let item = match obj.get("items") {
                    Some(items) => self.compile(items)?,
                    None => return Err(schema_error("array without `items` is not supported")),
                };
                let min = count("minItems")?.unwrap_or(0);
                let max = count("maxItems")?;
                if max.is_some_and(|m| m < min) {
                    return Err(schema_error("maxItems < minItems"));
                }
                let sep = format!("{WS},{WS}");
                let rest = match (min, max) {
                    (_, Some(0)) => return Ok(format!("\\[{WS}\\]")),
                    (0, None) => format!("(?:{item}(?:{sep}{item})*)?"),
                    (0, Some(m)) => format!("(?:{item}(?:{sep}{item}){{0,{}}})?", m - 1),
                    (n, None) => format!("{item}(?:{sep}{item}){{{},}}", n - 1),
                    (n, Some(m)) => format!("{item}(?:{sep}{item}){{{},{}}}", n - 1, m - 1),
                };
                format!("\\[{WS}{rest}{WS}\\]")
            }
            "object" => {
                let props = match obj.get("properties") {
                    Some(Value::Object(p)) => p,
                    None => {
                        return Err(schema_error("object without `properties` is not supported"));
                    }
                    Some(_) => return Err(schema_error("`properties` must be an object")),
                };
                let required: Vec<&str> = obj
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut members = Vec::new();
                for (name, sub) in props {
                    let key = regex_syntax::escape(&Value::String(name.clone()).to_string());
                    members.push((
                        format!("{key}{WS}:{WS}{}", self.compile(sub)?),
                        required.contains(&name.as_str()),
                    ));
                }
                if members.is_empty() {
                    return Ok(format!("\\{{{WS}\\}}"));
                }
                if members.iter().any(|(_, req)| !req)
                    && members.iter().filter(|(_, r)| !r).count() > 8
                {
                    return Err(schema_error(
                        "more than 8 optional properties in one object",
                    ));
                }
                object_regex(&members)
            }
            other => return Err(schema_error(format!("type `{other}` is not supported"))),
        })
    }
}

/// Members in order; optional ones may be left out, with commas only
/// between members that are present.
fn object_regex(members: &[(String, bool)]) -> String {
    // Alternatives by which member comes first; after the first, each later
    // member is `,member` (required) or `(?:,member)?` (optional).
    let sep = format!("{WS},{WS}");
    let mut alternatives = Vec::new();
    for first in 0..members.len() {
        if members[..first].iter().any(|(_, required)| *required) {
            break;
        }
        let mut alt = members[first].0.clone();
        for (member, required) in &members[first + 1..] {
            if *required {
                alt.push_str(&format!("{sep}{member}"));
            } else {
                alt.push_str(&format!("(?:{sep}{member})?"));
            }
        }
        alternatives.push(alt);
    }
    let body = alternatives.join("|");
    if members.iter().all(|(_, required)| !required) {
        format!("\\{{{WS}(?:{body})?{WS}\\}}")
    } else {
        format!("\\{{{WS}(?:{body}){WS}\\}}")
    }
}
