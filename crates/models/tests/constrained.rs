//! Constrained decoding on SmolLM2-135M-Instruct at temperature 1: every
//! sampled output matches the regex, is one of the choices, or parses as
//! JSON valid against the schema (checked by a small validator below, not
//! by the constraint's own regex). The default run draws
//! [`DEFAULT_SAMPLES`] seeds per constraint; `KAIYUAN_FULL=1` draws
//! [`FULL_SAMPLES`]. Each run prints mask time against decode time.
//!
//! Also: tokens of the real vocabulary that span a grammar boundary (`",`,
//! `"}`, `":`) are allowed exactly where the grammar allows them.

mod common;

use kaiyuan_models::ModelFiles;
use kaiyuan_models::chat::{ChatMessage, ChatRequest, ChatTemplate};
use kaiyuan_models::constrain::{Constraint, RegexConstraint, choices_regex, json_schema_regex};
use kaiyuan_models::generate::{FinishReason, GenerationConfig, generate};
use kaiyuan_models::sampling::SamplingParams;
use kaiyuan_tensor::DType;
use kaiyuan_tokenizer::{EncodeOptions, Tokenizer};
use serde_json::{Value, json};

const DEFAULT_SAMPLES: usize = 8;
const FULL_SAMPLES: usize = 200;

fn samples() -> usize {
    if common::full() {
        FULL_SAMPLES
    } else {
        DEFAULT_SAMPLES
    }
}

/// The schema of the JSON test: a string, an integer, an enum and a boolean.
/// Properties are listed alphabetically because `serde_json::Map` (built
/// without `preserve_order`) sorts them anyway, and the constraint follows
/// the map's order.
fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "age": {"type": "integer"},
            "color": {"enum": ["red", "green", "blue"]},
            "name": {"type": "string", "minLength": 1, "maxLength": 12},
            "student": {"type": "boolean"}
        },
        "required": ["name", "age", "color", "student"]
    })
}

/// Validates `value` against the subset of JSON schema used here: `type`
/// (object, string, integer, boolean), `properties`, `required`, no other
/// keys, `enum`, `minLength`/`maxLength` (in characters).
fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        return if options.contains(value) {
            Ok(())
        } else {
            Err(format!("{value} is not one of {options:?}"))
        };
    }
    match schema["type"].as_str() {
        Some("object") => {
            let obj = value
                .as_object()
                .ok_or(format!("{value} is not an object"))?;
            let props = schema["properties"].as_object().unwrap();
            for key in obj.keys() {
                if !props.contains_key(key) {
                    return Err(format!("unexpected key {key:?}"));
                }
            }
            for req in schema["required"].as_array().unwrap() {
                let req = req.as_str().unwrap();
                if !obj.contains_key(req) {
                    return Err(format!("missing required key {req:?}"));
                }
            }
            for (key, sub) in props {
                if let Some(v) = obj.get(key) {
                    validate(sub, v).map_err(|e| format!("{key}: {e}"))?;
                }
            }
            Ok(())
        }
        Some("string") => {
            let s = value.as_str().ok_or(format!("{value} is not a string"))?;
            let n = s.chars().count() as u64;
            let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0);
            let max = schema
                .get("maxLength")
                .and_then(Value::as_u64)
                .unwrap_or(u64::MAX);
            if n < min || n > max {
                return Err(format!("{s:?} has {n} characters, not {min}..={max}"));
            }
            Ok(())
        }
        Some("integer") => {
            if value.is_i64() || value.is_u64() {
                Ok(())
            } else {
                Err(format!("{value} is not an integer"))
            }
        }
        Some("boolean") => value
            .is_boolean()
            .then_some(())
            .ok_or(format!("{value} is not a boolean")),
        other => Err(format!("type {other:?} is not handled by this validator")),
    }
}

#[test]
fn the_validator_rejects_what_it_should() {
    let s = schema();
    let ok = json!({"name": "Ann", "age": 30, "color": "red", "student": false});
    assert_eq!(validate(&s, &ok), Ok(()));
    for bad in [
        json!({"name": "Ann", "age": 30, "color": "red"}),
        json!({"name": "", "age": 30, "color": "red", "student": false}),
        json!({"name": "Ann", "age": 3.5, "color": "red", "student": false}),
        json!({"name": "Ann", "age": 30, "color": "pink", "student": false}),
        json!({"name": "Ann", "age": 30, "color": "red", "student": 1}),
        json!({"name": "Ann", "age": 30, "color": "red", "student": true, "x": 1}),
        json!({"name": "Annabelle Lee-Smith", "age": 30, "color": "red", "student": true}),
    ] {
        assert!(validate(&s, &bad).is_err(), "{bad}");
    }
}

struct Smol {
    files: ModelFiles,
    model: kaiyuan_models::Model,
    tokenizer: Tokenizer,
    stop: Vec<u32>,
}

fn load() -> Option<Smol> {
    let path = common::smollm2()?;
    let mut files = ModelFiles::open(path).unwrap();
    let stop = files.stop_token_ids();
    let tokenizer = files.tokenizer.take().unwrap();
    let model = files.take_model(DType::F32).unwrap();
    Some(Smol {
        files,
        model,
        tokenizer,
        stop,
    })
}

impl Smol {
    fn prompt(&self, user: &str) -> Vec<u32> {
        let tc = self.files.tokenizer_config.as_ref().unwrap();
        let template = ChatTemplate::new(
            self.files.chat_template().unwrap(),
            tc["bos_token"].as_str(),
            tc["eos_token"].as_str(),
        )
        .unwrap();
        let text = template
            .render(&ChatRequest {
                add_generation_prompt: true,
                ..ChatRequest::new(vec![ChatMessage::new("user", user)])
            })
            .unwrap();
        self.tokenizer
            .encode_with(
                &text,
                EncodeOptions {
                    add_special_tokens: false,
                    ..Default::default()
                },
            )
            .unwrap()
            .ids
    }

    /// Samples `n` outputs under `pattern`; returns their texts and finish
    /// reasons, printing timings.
    fn sample(
        &self,
        what: &str,
        user: &str,
        pattern: &str,
        n: usize,
        max_new_tokens: usize,
    ) -> Vec<(String, FinishReason)> {
        let prompt = self.prompt(user);
        let (mut mask, mut decode, mut tokens) = (0.0, 0.0, 0);
        let mut out = Vec::new();
        for seed in 0..n as u64 {
            let mut c = RegexConstraint::new(pattern, &self.tokenizer, &self.stop).unwrap();
            let config = GenerationConfig {
                max_new_tokens,
                sampling: SamplingParams {
                    temperature: 1.0,
                    seed: Some(seed),
                    ..SamplingParams::default()
                },
                stop_token_ids: self.stop.clone(),
                stop_strings: Vec::new(),
            };
            let result = generate(
                &self.model,
                &self.tokenizer,
                &prompt,
                &config,
                Some(&mut c as &mut dyn Constraint),
                |_| {},
            )
            .unwrap();
            mask += result.mask_seconds;
            decode += result.decode_seconds;
            tokens += result.tokens.len();
            out.push((result.text, result.finish_reason));
        }
        eprintln!(
            "{what}: {n} samples, {tokens} tokens; mask {:.3} s of decode {:.3} s = {:.1}% ({:.2} ms per step)",
            mask,
            decode,
            100.0 * mask / decode.max(1e-9),
            1000.0 * mask / tokens.max(1) as f64
        );
        out
    }
}

#[test]
fn sampled_outputs_satisfy_regex_choices_and_json_schema() {
    let Some(smol) = load() else { return };
    let n = samples();
    let mut outputs: Vec<(String, String)> = Vec::new();

    // A date.
    let date = "[0-9]{4}-[0-9]{2}-[0-9]{2}";
    let re = regex_like(date);
    for (text, reason) in smol.sample(
        "regex",
        "When did the first person land on the Moon? Give the date.",
        date,
        n,
        16,
    ) {
        assert!(re.matches(&text), "{text:?} does not match {date}");
        assert_ne!(reason, FinishReason::Length, "{text:?}");
        outputs.push(("date".into(), text));
    }

    // Choices.
    let choices: Vec<String> = ["positive", "negative", "neutral"]
        .map(String::from)
        .to_vec();
    let pattern = choices_regex(&choices).unwrap();
    for (text, reason) in smol.sample(
        "choices",
        "Is the sentiment of \"I loved this film!\" positive, negative or neutral?",
        &pattern,
        n,
        8,
    ) {
        assert!(choices.contains(&text), "{text:?} is not a choice");
        assert_ne!(reason, FinishReason::Length, "{text:?}");
        outputs.push(("choice".into(), text));
    }

    // JSON.
    let schema = schema();
    let pattern = json_schema_regex(&schema).unwrap();
    for (text, reason) in smol.sample(
        "json",
        "Describe a student as JSON with name, age, favourite color and whether they are a student.",
        &pattern,
        n,
        48,
    ) {
        assert_ne!(reason, FinishReason::Length, "{text:?} was cut");
        let value: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        validate(&schema, &value).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        outputs.push(("json".into(), text));
    }
    for (kind, text) in outputs.iter().step_by((outputs.len() / 12).max(1)) {
        eprintln!("  {kind}: {text}");
    }
}

/// An independent whole-string matcher for the test's own checks: the
/// `regex` crate is not a dependency, so `regex_automata`'s meta regex
/// (anchored at both ends) stands in for it.
fn regex_like(pattern: &str) -> FullMatch {
    FullMatch(regex_automata::meta::Regex::new(&format!("^(?:{pattern})$")).unwrap())
}

struct FullMatch(regex_automata::meta::Regex);

impl FullMatch {
    fn matches(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
}

/// Walks `text` through the constraint token by token (as the tokenizer
/// splits it).
fn advance_text(c: &mut RegexConstraint, tok: &Tokenizer, text: &str) {
    for id in tok.encode(text).unwrap().ids {
        c.advance(id).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    }
}

#[test]
fn tokens_spanning_grammar_boundaries_are_allowed_with_the_real_vocabulary() {
    let Some(path) = common::smollm2() else {
        return;
    };
    let files = ModelFiles::open(path).unwrap();
    let tok = files.tokenizer.as_ref().unwrap();
    let stop = files.stop_token_ids();
    let vocab = files.config.vocab_size;
    let id = |t: &str| {
        let ids = tok.encode(t).unwrap().ids;
        assert_eq!(ids.len(), 1, "{t:?} is one token of SmolLM2: {ids:?}");
        ids[0]
    };
    let (quote_comma, quote_brace, quote_colon_quote) = (id("\","), id("\"}"), id("\":\""));
    let pattern = json_schema_regex(&schema()).unwrap();

    let mut c = RegexConstraint::new(&pattern, tok, &stop).unwrap();
    advance_text(&mut c, tok, "{\"age");
    let mask = c.allowed(vocab).unwrap();
    assert!(mask.is_allowed(id("\":")), "`\":` after the key");
    assert!(
        !mask.is_allowed(quote_colon_quote),
        "`\":\"` is not an integer"
    );
    assert!(!mask.is_allowed(quote_comma) && !mask.is_allowed(quote_brace));
    advance_text(&mut c, tok, "\":7,\"color");
    let mask = c.allowed(vocab).unwrap();
    assert!(
        mask.is_allowed(quote_colon_quote),
        "`\":\"` opens the enum string"
    );
    advance_text(&mut c, tok, "\":\"blue");
    let mask = c.allowed(vocab).unwrap();
    assert!(
        mask.is_allowed(quote_comma),
        "`\",` closes the enum and the member"
    );
    assert!(
        !mask.is_allowed(quote_brace),
        "`\"}}` would drop required members"
    );
    assert!(
        stop.iter().all(|&s| !mask.is_allowed(s)),
        "no EOS inside the object"
    );
    advance_text(&mut c, tok, "\",\"name\":\"Bob");
    let mask = c.allowed(vocab).unwrap();
    assert!(mask.is_allowed(quote_comma) && !mask.is_allowed(quote_brace));
    advance_text(&mut c, tok, "\",\"student\":true");
    let mask = c.allowed(vocab).unwrap();
    assert!(mask.is_allowed(id("}")) && !mask.is_allowed(quote_comma));
    assert!(stop.iter().all(|&s| !mask.is_allowed(s)));
    advance_text(&mut c, tok, "}");
    assert!(c.is_complete());

    // An enum value closing the object in one token: `"}` after `"c":"red`.
    let pattern = json_schema_regex(&json!({
        "type": "object",
        "properties": {"c": {"enum": ["red", "green"]}},
        "required": ["c"]
    }))
    .unwrap();
    let mut c = RegexConstraint::new(&pattern, tok, &stop).unwrap();
    advance_text(&mut c, tok, "{\"c\":\"red");
    let mask = c.allowed(vocab).unwrap();
    assert!(mask.is_allowed(quote_brace) && !mask.is_allowed(quote_comma));

    // Choices: a token spanning a whole choice, and prefixes of several.
    let choices: Vec<String> = ["yes", "no", "not sure"].map(String::from).to_vec();
    let mut c = RegexConstraint::new(&choices_regex(&choices).unwrap(), tok, &stop).unwrap();
    let mask = c.allowed(vocab).unwrap();
    for t in ["yes", "no", "not", "n"] {
        assert!(mask.is_allowed(id(t)), "{t:?} starts a choice");
    }
    for t in ["maybe", "y es", " yes"] {
        let first = tok.encode(t).unwrap().ids[0];
        let text = tok.decode(&[first], false).unwrap();
        assert_eq!(
            mask.is_allowed(first),
            choices.iter().any(|c| c.starts_with(&text)),
            "{t:?} → first token {text:?}"
        );
    }
    advance_text(&mut c, tok, "no");
    // "no" is complete but "not sure" may follow: EOS and "t" both allowed.
    let mask = c.allowed(vocab).unwrap();
    assert!(stop.iter().all(|&s| mask.is_allowed(s)));
    assert!(mask.is_allowed(id("t")) && !c.is_complete());
}
