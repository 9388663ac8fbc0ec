//! The PII stage against its labelled reference set
//! (`fixtures/data/pii/pii_set.jsonl`, written by
//! `fixtures/data/pii/make_pii_set.py` with Faker and checked with
//! python-stdnum), plus tricky cases in English and Chinese and the
//! configuration errors.
//!
//! Scoring is by exact span: a found match is a true positive only when a
//! labelled span has the same kind, start and end byte. There is no
//! boundary slack, so a match that takes one character too many or too few
//! counts as both a false positive and a false negative.

use kaiyuan_data::pii::{PiiConfig, PiiKind, PiiMatch, PiiMode, PiiRedactor};
use kaiyuan_data::{DocContext, DocumentStage, Outcome};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

#[derive(Deserialize)]
struct Record {
    text: String,
    lang: String,
    spans: Vec<Span>,
    #[serde(default)]
    negatives: Vec<Negative>,
}

#[derive(Deserialize)]
struct Span {
    kind: String,
    start: usize,
    end: usize,
    value: String,
}

#[derive(Deserialize)]
struct Negative {
    what: String,
    value: String,
}

/// The committed set, or the file named by `PII_SET` (a set written by
/// `make_pii_set.py --seed N --out FILE`, for a held-out check).
fn fixture() -> PathBuf {
    match std::env::var_os("PII_SET") {
        Some(p) => PathBuf::from(p),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/data/pii/pii_set.jsonl")
        }
    }
}

fn load() -> Vec<Record> {
    let path = fixture();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

fn redactor() -> PiiRedactor {
    PiiRedactor::new(&PiiConfig::default()).expect("the default config is valid")
}

#[derive(Default, Clone, Copy)]
struct Score {
    tp: usize,
    fp: usize,
    fn_: usize,
}

impl Score {
    fn precision(self) -> f64 {
        if self.tp + self.fp == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fp) as f64
        }
    }
    fn recall(self) -> f64 {
        if self.tp + self.fn_ == 0 {
            1.0
        } else {
            self.tp as f64 / (self.tp + self.fn_) as f64
        }
    }
}

/// Per-kind precision and recall on the reference set, each at least 0.98;
/// records without personal data come out of `redact` byte-identical, and
/// records whose matches are all right come out with exactly their labelled
/// spans replaced.
#[test]
fn reference_set_precision_and_recall() {
    let records = load();
    assert!(records.len() >= 2000, "{} records", records.len());
    let r = redactor();
    let mut scores: BTreeMap<PiiKind, Score> = PiiKind::ALL
        .iter()
        .map(|&k| (k, Score::default()))
        .collect();
    let mut errors: Vec<String> = Vec::new();
    let mut changed: Vec<String> = Vec::new();
    let mut clean = 0usize;
    let mut negatives: BTreeMap<&str, usize> = BTreeMap::new();
    for (line, rec) in records.iter().enumerate() {
        let gold: HashSet<(PiiKind, usize, usize)> = rec
            .spans
            .iter()
            .map(|s| {
                let kind = PiiKind::from_name(&s.kind)
                    .unwrap_or_else(|| panic!("line {}: kind {}", line + 1, s.kind));
                assert_eq!(
                    &rec.text[s.start..s.end],
                    s.value,
                    "line {}: span offsets",
                    line + 1
                );
                (kind, s.start, s.end)
            })
            .collect();
        let found = r.find(&rec.text);
        let got: HashSet<(PiiKind, usize, usize)> =
            found.iter().map(|m| (m.kind, m.start, m.end)).collect();
        for &(k, s, e) in got.difference(&gold) {
            scores.entry(k).or_default().fp += 1;
            errors.push(format!(
                "line {} FP {k} {:?}  in {:?}",
                line + 1,
                &rec.text[s..e],
                rec.text
            ));
        }
        for &(k, s, e) in gold.difference(&got) {
            scores.entry(k).or_default().fn_ += 1;
            errors.push(format!(
                "line {} FN {k} {:?}  in {:?}",
                line + 1,
                &rec.text[s..e],
                rec.text
            ));
        }
        for &(k, _, _) in got.intersection(&gold) {
            scores.entry(k).or_default().tp += 1;
        }
        for n in &rec.negatives {
            assert!(
                rec.text.contains(&n.value),
                "line {}: negative {:?} not in the text",
                line + 1,
                n.value
            );
            *negatives.entry(n.what.as_str()).or_insert(0usize) += 1;
        }
        let (out, _) = r.redact(&rec.text);
        if rec.spans.is_empty() {
            clean += 1;
            if out != rec.text {
                changed.push(format!(
                    "line {} ({}): text without PII changed: {out:?}",
                    line + 1,
                    rec.lang
                ));
            }
        } else if got == gold {
            let mut expected = String::new();
            let mut last = 0;
            let mut spans: Vec<&Span> = rec.spans.iter().collect();
            spans.sort_by_key(|s| s.start);
            for s in spans {
                expected.push_str(&rec.text[last..s.start]);
                expected.push_str(PiiKind::from_name(&s.kind).map_or("", PiiKind::placeholder));
                last = s.end;
            }
            expected.push_str(&rec.text[last..]);
            if out != expected {
                changed.push(format!("line {}: {out:?} != {expected:?}", line + 1));
            }
        }
    }
    println!(
        "PII reference set: {} records ({clean} without PII), {} hard negatives: {negatives:?}",
        records.len(),
        negatives.values().sum::<usize>()
    );
    println!(
        "{:<8} {:>6} {:>5} {:>5} {:>9} {:>7}",
        "kind", "TP", "FP", "FN", "precision", "recall"
    );
    let mut total = Score::default();
    for (k, s) in &scores {
        println!(
            "{:<8} {:>6} {:>5} {:>5} {:>9.4} {:>7.4}",
            k.name(),
            s.tp,
            s.fp,
            s.fn_,
            s.precision(),
            s.recall()
        );
        total.tp += s.tp;
        total.fp += s.fp;
        total.fn_ += s.fn_;
    }
    println!(
        "{:<8} {:>6} {:>5} {:>5} {:>9.4} {:>7.4}",
        "all",
        total.tp,
        total.fp,
        total.fn_,
        total.precision(),
        total.recall()
    );
    for e in &errors {
        println!("{e}");
    }
    assert!(changed.is_empty(), "{}", changed.join("\n"));
    for (k, s) in &scores {
        assert!(s.tp > 100, "{k}: only {} labelled spans found", s.tp);
        assert!(
            s.precision() >= 0.98,
            "{k}: precision {:.4} < 0.98",
            s.precision()
        );
        assert!(s.recall() >= 0.98, "{k}: recall {:.4} < 0.98", s.recall());
    }
}

fn found(text: &str) -> Vec<(PiiKind, &str)> {
    redactor()
        .find(text)
        .iter()
        .map(|m| (m.kind, m.as_str(text)))
        .collect()
}

#[test]
fn chinese_context_without_word_boundaries() {
    use PiiKind::*;
    assert_eq!(found("电话：13812345678"), [(Phone, "13812345678")]);
    assert_eq!(found("手机13812345678联系"), [(Phone, "13812345678")]);
    assert_eq!(
        found("身份证号11010519491231002X"),
        [(IdCn, "11010519491231002X")]
    );
    assert_eq!(
        found("身份证号码：11010519491231002x。"),
        [(IdCn, "11010519491231002x")]
    );
    assert_eq!(
        found("邮箱zhangsan@example.com谢谢"),
        [(Email, "zhangsan@example.com")]
    );
    assert_eq!(
        found("座机（0755）8888 6666转801，"),
        [(Phone, "（0755）8888 6666转801")]
    );
    assert_eq!(
        found("请拨打+86 138 1234 5678或(010)62345678"),
        [(Phone, "+86 138 1234 5678"), (Phone, "(010)62345678")]
    );
    assert_eq!(
        found("电话13812345678/13912345678"),
        [(Phone, "13812345678"), (Phone, "13912345678")]
    );
    assert_eq!(
        found("号码13812345678,13912345678"),
        [(Phone, "13812345678"), (Phone, "13912345678")]
    );
    assert_eq!(
        found("登录IP：192.168.1.20，端口8080"),
        [(Ip, "192.168.1.20")]
    );
    assert_eq!(
        found("卡号6222 0212 3456 7890 128已绑定"),
        [(Card, "6222 0212 3456 7890 128")]
    );
}

#[test]
fn chinese_hard_negatives() {
    for t in [
        "订单号：13812345678",
        "订单号20231005138123456789",
        "发票号码：04400180011112345678",
        "快递单号6259538768090981729已发货",
        "2023年10月5日下午3:30",
        "售价¥13,812.00元",
        "版本 2.10.1.4",
        "书号978-7-111-54742-6",
        "书号：7111547428",
        "身份证号11010519491231002",
        "身份证号110105194912310021",
        "编号110105194913310029",
        "共计12345678901人",
        "流水号 4111111111111111",
    ] {
        assert!(found(t).is_empty(), "{t}: {:?}", found(t));
    }
}

#[test]
fn english_cases() {
    use PiiKind::*;
    assert_eq!(found("Call (415) 555-0132."), [(Phone, "(415) 555-0132")]);
    assert_eq!(
        found("Call +1 415 555 0132 ext. 12, thanks"),
        [(Phone, "+1 415 555 0132 ext. 12")]
    );
    assert_eq!(
        found("Phone: 559.857.4890x68288"),
        [(Phone, "559.857.4890x68288")]
    );
    assert_eq!(
        found("fax 001-562-828-3038;"),
        [(Phone, "001-562-828-3038")]
    );
    assert_eq!(
        found("London +44 20 7946 0958."),
        [(Phone, "+44 20 7946 0958")]
    );
    assert_eq!(
        found("Visa 4111-1111-1111-1111 exp 04/27"),
        [(Card, "4111-1111-1111-1111")]
    );
    assert_eq!(
        found("Amex 3782 822463 10005."),
        [(Card, "3782 822463 10005")]
    );
    assert_eq!(
        found("from 2001:db8::8a2e:370:7334 and 10.0.0.1:22"),
        [(Ip, "2001:db8::8a2e:370:7334"), (Ip, "10.0.0.1")]
    );
    assert_eq!(
        found("db: postgres://admin:s3cret@db.example.com:5432/app."),
        [(Url, "postgres://admin:s3cret@db.example.com:5432/app")]
    );
    assert_eq!(
        found("see https://api.example.com/v1?user=1&api_key=AbC123xyz)"),
        [(Url, "https://api.example.com/v1?user=1&api_key=AbC123xyz")]
    );
    assert_eq!(
        found("AWS key AKIAIOSFODNN7EXAMPLE."),
        [(Secret, "AKIAIOSFODNN7EXAMPLE")]
    );
    let pem =
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----";
    assert_eq!(found(&format!("key:\n{pem}\nbye")), [(Secret, pem)]);
}

#[test]
fn english_hard_negatives() {
    for t in [
        "Released on 2023-10-05 at 14:30:05.",
        "Date 20231005, time 12:30.",
        "Version 10.0.19041.1 and v1.2.3.4 and Python 3.11.4",
        "It costs $1,299.99 or 13,812,345,678 yen.",
        "ISBN 978-1-4028-9462-6, ISBN-10: 0306406152, ISBN 7111547428",
        "Order #4155550132 and order number 4111111111111111.",
        "Invoice INV-2023-000123 and tracking number 14155550132.",
        "Card 4111 1111 1111 1112 fails Luhn.",
        "Pi is 3.14159265358979 and e is 2.718281828.",
        "uuid 550e8400-e29b-41d4-a716-446655440000, mac 00:1A:2B:3C:4D:5E",
        "Listen on 127.0.0.1:8080 or 0.0.0.0 or ::1.",
        "Use std::vec::Vec and scikit-learn (sk-learn) for a risk-free task-force.",
        "https://example.com/search?q=key&page=2 and https://user@example.com/",
        "A 20-digit number 12345678901234567890 and 0.13812345678.",
    ] {
        assert!(found(t).is_empty(), "{t}: {:?}", found(t));
    }
}

#[test]
fn overlaps_choose_the_specific_kind() {
    use PiiKind::*;
    // QQ mail: the phone number is the local part.
    assert_eq!(
        found("邮箱13812345678@qq.com"),
        [(Email, "13812345678@qq.com")]
    );
    // Credentials in a URL: the URL, not the e-mail-looking tail.
    assert_eq!(
        found("https://bob:pw@mail.example.com/"),
        [(Url, "https://bob:pw@mail.example.com/")]
    );
    // A key inside a token URL: the URL.
    let u = "https://x.example.com/?key=AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe";
    assert_eq!(found(u), [(Url, u)]);
}

#[test]
fn disabled_kinds_are_kept_and_do_not_leak_into_others() {
    let config = PiiConfig {
        kinds: vec![PiiKind::Email],
        ..PiiConfig::default()
    };
    let r = PiiRedactor::new(&config).expect("valid");
    let text = "https://bob:pw@mail.example.com/ 13812345678 a@b.com";
    let (out, m) = r.redact(text);
    assert_eq!(out, "https://bob:pw@mail.example.com/ 13812345678 <EMAIL>");
    assert_eq!(
        m,
        [PiiMatch {
            kind: PiiKind::Email,
            start: 45,
            end: 52
        }]
    );
}

#[test]
fn stage_counts_and_keeps() {
    let r = redactor();
    assert_eq!(r.name(), "pii");
    let mut ctx = DocContext::default();
    assert_eq!(
        r.apply("No personal data here: 2023-10-05, v1.2.3.", &mut ctx),
        Outcome::Keep
    );
    assert!(ctx.counters.is_empty());
    let out = r.apply("a@b.com, c@d.org, 13812345678", &mut ctx);
    assert_eq!(out, Outcome::Replace("<EMAIL>, <EMAIL>, <PHONE>".into()));
    assert_eq!(ctx.counters, [("pii.email", 2), ("pii.phone", 1)]);
}

#[test]
fn hmac_tokens_are_keyed_and_stable() {
    let config = |key: &str| PiiConfig {
        mode: PiiMode::Hmac,
        hmac_key: Some(key.to_string()),
        ..PiiConfig::default()
    };
    let a = PiiRedactor::new(&config("first key, 32 bytes long.......")).expect("valid");
    let b = PiiRedactor::new(&config("second key, 32 bytes long......")).expect("valid");
    let (x, _) = a.redact("call 138-1234-5678 or +86 13812345678");
    let tokens: Vec<&str> = x.split(' ').filter(|w| w.starts_with("<PHONE:")).collect();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0].len(), "<PHONE:>".len() + 12);
    assert!(tokens[0][7..19].bytes().all(|c| c.is_ascii_hexdigit()));
    // One number, two spellings: one token (digits are hashed without
    // separators, and the +86 form keeps its country code).
    let (y, _) = a.redact("138-1234-5678 / 13812345678");
    let ys: Vec<&str> = y.split(" / ").collect();
    assert_eq!(ys[0], ys[1]);
    // Another key, another token.
    let (z, _) = b.redact("138-1234-5678");
    assert_ne!(z, ys[0]);
    // Deterministic.
    assert_eq!(a.redact("x@y.com").0, a.redact("X@Y.COM").0);
}

fn config_error(config: PiiConfig) -> String {
    PiiRedactor::new(&config)
        .expect_err("config must be refused")
        .to_string()
}

#[test]
fn configuration_errors() {
    let hmac = PiiConfig {
        mode: PiiMode::Hmac,
        ..PiiConfig::default()
    };
    let e = config_error(hmac.clone());
    assert!(e.contains("hmac_key") && e.contains("reversed"), "{e}");
    let e = config_error(PiiConfig {
        hmac_key: Some("short".into()),
        ..hmac.clone()
    });
    assert!(e.contains("hmac_key") && e.contains("16"), "{e}");
    let e = config_error(PiiConfig {
        hmac_key: Some("0123456789abcdef0123".into()),
        hmac_key_env: Some("X".into()),
        ..hmac.clone()
    });
    assert!(e.contains("hmac_key_env"), "{e}");
    let e = config_error(PiiConfig {
        hmac_key_env: Some("KAIYUAN_TEST_PII_KEY_THAT_IS_NOT_SET".into()),
        ..hmac.clone()
    });
    assert!(e.contains("KAIYUAN_TEST_PII_KEY_THAT_IS_NOT_SET"), "{e}");
    let e = config_error(PiiConfig {
        hmac_key: Some("0123456789abcdef0123".into()),
        ..PiiConfig::default()
    });
    assert!(e.contains("hmac_key") && e.contains("placeholder"), "{e}");
    let e = config_error(PiiConfig {
        hmac_key: Some("0123456789abcdef0123".into()),
        hmac_hex_chars: 4,
        ..hmac
    });
    assert!(e.contains("hmac_hex_chars"), "{e}");
    let e = config_error(PiiConfig {
        kinds: vec![],
        ..PiiConfig::default()
    });
    assert!(e.contains("kinds"), "{e}");
}

#[test]
fn config_parsing() {
    let c: PiiConfig = toml::from_str("").expect("empty config");
    assert_eq!(c, PiiConfig::default());
    let e =
        toml::from_str::<PiiConfig>("kinds = [\"email\"]\nmystery = 1").expect_err("unknown field");
    assert!(e.to_string().contains("mystery"), "{e}");
    let e = toml::from_str::<PiiConfig>("mode = \"sha256\"").expect_err("unkeyed hash mode");
    assert!(e.to_string().contains("hmac"), "{e}");
    let e = toml::from_str::<PiiConfig>("kinds = [\"ssn\"]").expect_err("unknown kind");
    assert!(e.to_string().contains("id_cn"), "{e}");
    // The key never shows in debug output or serialised configs.
    let c = PiiConfig {
        hmac_key: Some("super secret key value".into()),
        ..PiiConfig::default()
    };
    assert!(!format!("{c:?}").contains("super secret"));
    assert!(
        !toml::to_string(&c)
            .expect("serialises")
            .contains("super secret")
    );
}
