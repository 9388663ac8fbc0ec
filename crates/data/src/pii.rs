//! PII desensitisation: finds personal data and credentials in a document
//! and replaces each with a typed placeholder (`<EMAIL>`, `<PHONE>`…) or,
//! when configured, a keyed HMAC token (`<PHONE:3f2a9c1d0b7e>`).
//!
//! # What is found
//!
//! | kind | placeholder | recognised |
//! |---|---|---|
//! | [`PiiKind::Email`] | `<EMAIL>` | `local@domain.tld` (ASCII; TLD alphabetic or punycode) |
//! | [`PiiKind::Phone`] | `<PHONE>` | mainland mobile `1[3-9]x` (assigned prefixes) bare, `3-4-4` spaced or dashed, with optional `+86`/`0086`/`(+86)`; mainland landline with the area code set off (`010-12345678`, `(0755) 8888 6666`, `+86 10 8765 4321`) and an optional extension (`-801`, `转801`); North American numbers (`(415) 555-0132`, `415-555-0132`, `415.555.0132`, `+1 415 555 0132`, `1-415-…`, `001-415-…`, and bare `4155550132` after a phone word such as `call`, `tel`, `电话`) with an optional extension (`x123`, `ext. 123`); E.164 numbers `+<cc> …` of 8–15 digits |
//! | [`PiiKind::IdCn`] | `<ID_CN>` | PRC resident ID: 18 characters with a valid ISO 7064 MOD 11-2 check character (`X` included), birth date and province code, bare or grouped 6-8-4; 15-digit first-generation numbers (no check digit) with a valid date and province code, after words that name an ID (`身份证号`, `证件号码`, `ID number`…) |
//! | [`PiiKind::Card`] | `<CARD>` | payment cards of 12–19 digits (12 only for Maestro), bare or grouped by spaces or dashes, with a known issuer prefix for their length and a valid Luhn check |
//! | [`PiiKind::Ip`] | `<IP>` | IPv4 (octets ≤ 255) and IPv6 (full, compressed, IPv4-embedded); loopback and unspecified addresses are kept |
//! | [`PiiKind::Url`] | `<URL>` | URLs with a password (`https://user:pass@host`) or a credential parameter (`token=`, `access_token=`, `api_key=`, `key=`, `sig=`, `password=`…); the whole URL is replaced |
//! | [`PiiKind::Secret`] | `<SECRET>` | AWS access key ids, GitHub tokens (`ghp_`, `gho_`, `github_pat_`…), Slack tokens and webhooks, OpenAI-style `sk-…`, Google `AIza…`, Stripe `sk_live_…`, JWTs, PEM private key blocks through their END line |
//!
//! # Precision rules
//!
//! - Numbers are matched on explicit digit boundaries, not regex `\b`
//!   (a Han character is a word character, and `电话13812345678` has no
//!   word boundary): the character before a number may not be a letter or
//!   digit of a non-CJK script, `_`, `+`, `#` or a currency sign, nor a
//!   `.` or `-` after a digit; the character after may not be a letter or
//!   digit, nor a `.` or `-` before a digit, nor a thousands separator.
//!   A phone number inside a longer digit run is therefore not a phone.
//!   Han characters and punctuation may touch a number on either side.
//! - A number that fails its checksum is not an ID or a card. An 18-digit
//!   number that starts like a resident ID (province code, birth year) but
//!   is no valid one is not a card either.
//! - Grouped numbers are read as written: a run of digit groups that has a
//!   card's shape is a card or nothing (a 19-digit `4-4-4-4-3` number that
//!   fails Luhn is not a 16-digit card and three more digits), and a number
//!   in the middle of a run of short groups (`6596 0339 3965 5995`) is not
//!   a phone number unless the group before it belongs to another match.
//! - Dates, times, versions, prices, ISBNs and long invoice numbers do not
//!   have the shape of any phone number above. A phone, card or IPv4
//!   number right after words that name it as something else (`order`,
//!   `invoice`, `tracking`, `ISBN`, `version`, `订单号`, `发票号码`,
//!   `版本`…) is not reported.
//! - `https://user@host` is a URL with a user name, not an e-mail address,
//!   and not a credential (no password).
//! - When candidates overlap, the longer wins; at equal length a resident
//!   ID beats a card and a card beats a phone. The winner is chosen among
//!   all kinds before disabled kinds are dropped, so disabling a kind never
//!   turns part of it into another kind.
//! - Placeholders (`<PHONE>`, `<PHONE:3f2a9c1d0b7e>`) are never matched,
//!   and count as a digit at a number's boundary, so redacting redacted
//!   text changes nothing.
//!
//! Text that is not reported comes out byte-identical. Full-width digits
//! and internationalised e-mail addresses are not recognised.
//!
//! # Speed
//!
//! Nothing runs over the whole text but cheap scans: a SWAR loop for ASCII
//! digits (eight bytes at a time), `memchr` for `@` and `:` (a `:` followed
//! by `//` starts a URL), and one regex whose literal prefixes (`AKIA`,
//! `ghp_`, `eyJ`, `-----BEGIN`…) run as a vectorised literal search. The
//! parsers run only around those triggers, and the phone patterns only
//! where at least eight digits follow.
//!
//! ```
//! use kaiyuan_data::pii::{PiiConfig, PiiKind, PiiRedactor};
//! # fn main() -> kaiyuan_data::Result<()> {
//! let redactor = PiiRedactor::new(&PiiConfig::default())?;
//! let (text, found) = redactor.redact("请拨打13812345678或发邮件到 li.lei@example.com。订单号 20231005123456");
//! assert_eq!(text, "请拨打<PHONE>或发邮件到 <EMAIL>。订单号 20231005123456");
//! assert_eq!(found.iter().map(|m| m.kind).collect::<Vec<_>>(), [PiiKind::Phone, PiiKind::Email]);
//! # Ok(()) }
//! ```

mod checks;
mod net;
mod numbers;
mod secrets;

use crate::error::DataError;
use crate::stage::{DocContext, DocumentStage, Outcome};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// A kind of personal data or credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    /// An e-mail address.
    Email,
    /// A phone number (mainland China mobile or landline, North American,
    /// or international E.164).
    Phone,
    /// A PRC resident identity card number.
    IdCn,
    /// A payment card number.
    Card,
    /// An IPv4 or IPv6 address.
    Ip,
    /// A URL that carries a password or a credential parameter.
    Url,
    /// An API key, access token, JWT or private key block.
    Secret,
}

impl PiiKind {
    /// Every kind, in declaration order.
    pub const ALL: [PiiKind; 7] = [
        PiiKind::Email,
        PiiKind::Phone,
        PiiKind::IdCn,
        PiiKind::Card,
        PiiKind::Ip,
        PiiKind::Url,
        PiiKind::Secret,
    ];

    /// The stable lowercase name used in configs and reports: `email`,
    /// `phone`, `id_cn`, `card`, `ip`, `url`, `secret`.
    pub fn name(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::IdCn => "id_cn",
            PiiKind::Card => "card",
            PiiKind::Ip => "ip",
            PiiKind::Url => "url",
            PiiKind::Secret => "secret",
        }
    }

    /// The kind with this [`name`](Self::name).
    pub fn from_name(name: &str) -> Option<Self> {
        PiiKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The placeholder that replaces a match: `<EMAIL>`, `<PHONE>`,
    /// `<ID_CN>`, `<CARD>`, `<IP>`, `<URL>`, `<SECRET>`.
    ///
    /// ```
    /// use kaiyuan_data::pii::PiiKind;
    /// assert_eq!(PiiKind::IdCn.placeholder(), "<ID_CN>");
    /// ```
    pub fn placeholder(self) -> &'static str {
        match self {
            PiiKind::Email => "<EMAIL>",
            PiiKind::Phone => "<PHONE>",
            PiiKind::IdCn => "<ID_CN>",
            PiiKind::Card => "<CARD>",
            PiiKind::Ip => "<IP>",
            PiiKind::Url => "<URL>",
            PiiKind::Secret => "<SECRET>",
        }
    }

    /// The report counter of this kind: `pii.email`, `pii.phone`…
    pub fn counter(self) -> &'static str {
        match self {
            PiiKind::Email => "pii.email",
            PiiKind::Phone => "pii.phone",
            PiiKind::IdCn => "pii.id_cn",
            PiiKind::Card => "pii.card",
            PiiKind::Ip => "pii.ip",
            PiiKind::Url => "pii.url",
            PiiKind::Secret => "pii.secret",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for PiiKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How matches are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiMode {
    /// By the kind's placeholder, e.g. `<PHONE>`.
    #[default]
    Placeholder,
    /// By the kind and a truncated HMAC-SHA256 of the value under a secret
    /// key, e.g. `<PHONE:3f2a9c1d0b7e>`: equal values give equal tokens
    /// within a corpus, and the value cannot be recovered without the key.
    Hmac,
}

/// Settings of the PII stage.
///
/// ```
/// use kaiyuan_data::pii::{PiiConfig, PiiKind, PiiMode};
/// let config: PiiConfig = toml::from_str(r#"
///     kinds = ["email", "phone"]
///     mode = "hmac"
///     hmac_key_env = "KAIYUAN_PII_KEY"
/// "#).unwrap();
/// assert_eq!(config.kinds, [PiiKind::Email, PiiKind::Phone]);
/// assert_eq!(config.mode, PiiMode::Hmac);
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PiiConfig {
    /// The kinds to redact (default: all).
    pub kinds: Vec<PiiKind>,
    /// Placeholders (default) or keyed HMAC tokens.
    pub mode: PiiMode,
    /// The HMAC key itself (mode `hmac`; at least 16 bytes). Prefer
    /// [`hmac_key_env`](Self::hmac_key_env) so the key stays out of config
    /// files. Never serialised (a report that echoes its config does not
    /// leak it) and never shown by `Debug`.
    #[serde(skip_serializing)]
    pub hmac_key: Option<String>,
    /// The name of an environment variable that holds the HMAC key.
    pub hmac_key_env: Option<String>,
    /// Hex digits of the digest kept in an HMAC token (8–64, default 12).
    pub hmac_hex_chars: usize,
}

impl Default for PiiConfig {
    fn default() -> Self {
        PiiConfig {
            kinds: PiiKind::ALL.to_vec(),
            mode: PiiMode::Placeholder,
            hmac_key: None,
            hmac_key_env: None,
            hmac_hex_chars: 12,
        }
    }
}

impl std::fmt::Debug for PiiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiiConfig")
            .field("kinds", &self.kinds)
            .field("mode", &self.mode)
            .field("hmac_key", &self.hmac_key.as_ref().map(|_| "<redacted>"))
            .field("hmac_key_env", &self.hmac_key_env)
            .field("hmac_hex_chars", &self.hmac_hex_chars)
            .finish()
    }
}

/// Shortest accepted HMAC key, in bytes.
const MIN_KEY_BYTES: usize = 16;

/// One piece of personal data found in a text: its kind and byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PiiMatch {
    /// What it is.
    pub kind: PiiKind,
    /// Byte offset of its first byte.
    pub start: usize,
    /// Byte offset just past its last byte.
    pub end: usize,
}

impl PiiMatch {
    /// The matched text; `text` is the text the match was found in.
    pub fn as_str<'a>(&self, text: &'a str) -> &'a str {
        &text[self.start..self.end]
    }
}

/// The names of our placeholders, as they appear after `<`.
const PLACEHOLDER_NAMES: [&str; 7] = ["EMAIL", "PHONE", "ID_CN", "CARD", "IP", "URL", "SECRET"];

/// True when a placeholder (`<PHONE>` or `<PHONE:3f2a9c1d0b7e>`) ends at
/// byte `p` of `text`.
pub(crate) fn placeholder_ends_at(text: &str, p: usize) -> bool {
    let b = &text.as_bytes()[..p];
    let Some(inner) = b.strip_suffix(b">") else {
        return false;
    };
    let hex = inner
        .iter()
        .rev()
        .take_while(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        .count();
    let inner = match inner[..inner.len() - hex].strip_suffix(b":") {
        Some(name) if hex > 0 => name,
        _ => inner,
    };
    PLACEHOLDER_NAMES.iter().any(|n| {
        inner.len() > n.len()
            && inner.ends_with(n.as_bytes())
            && inner[inner.len() - n.len() - 1] == b'<'
    })
}

/// True when a placeholder (`<PHONE>` or `<PHONE:3f2a9c1d0b7e>`) starts at
/// byte `p` of `text`.
pub(crate) fn placeholder_starts_at(text: &str, p: usize) -> bool {
    let Some(rest) = text.as_bytes().get(p..).and_then(|r| r.strip_prefix(b"<")) else {
        return false;
    };
    PLACEHOLDER_NAMES.iter().any(|n| {
        rest.strip_prefix(n.as_bytes()).is_some_and(|tail| {
            tail.first() == Some(&b'>')
                || tail.strip_prefix(b":").is_some_and(|h| {
                    let hex = h
                        .iter()
                        .take_while(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
                        .count();
                    hex > 0 && h.get(hex) == Some(&b'>')
                })
        })
    })
}

/// A possible match before overlaps are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) kind: PiiKind,
    /// Tie-break between overlapping candidates of equal length.
    pub(crate) rank: u8,
    /// For a number that follows a short space-separated digit group (as
    /// in the middle of `6596 0339 3965 5995`), the start of that group: the
    /// candidate stands only if the group is part of another match.
    pub(crate) group_before: Option<usize>,
}

/// Ranks of candidates (higher wins at equal length).
pub(crate) mod rank {
    pub(crate) const SECRET: u8 = 70;
    pub(crate) const URL: u8 = 60;
    pub(crate) const ID18: u8 = 50;
    /// A 15-digit ID is only proposed after words that name an ID, so it
    /// beats a card reading of the same digits.
    pub(crate) const ID15: u8 = 45;
    pub(crate) const CARD: u8 = 40;
    pub(crate) const EMAIL: u8 = 20;
    pub(crate) const PHONE: u8 = 10;
    pub(crate) const IP: u8 = 10;
}

enum Replacement {
    Placeholder,
    Hmac { mac: Hmac<Sha256>, hex_chars: usize },
}

/// Finds and replaces personal data; see the [module documentation](self).
/// Also a [`DocumentStage`] named `pii`.
pub struct PiiRedactor {
    enabled: [bool; 7],
    numbers: numbers::NumberMatcher,
    secrets: secrets::SecretMatcher,
    replacement: Replacement,
}

impl std::fmt::Debug for PiiRedactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<PiiKind> = PiiKind::ALL
            .into_iter()
            .filter(|k| self.enabled[k.index()])
            .collect();
        let mode = match self.replacement {
            Replacement::Placeholder => "placeholder",
            Replacement::Hmac { .. } => "hmac",
        };
        f.debug_struct("PiiRedactor")
            .field("kinds", &kinds)
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}

impl PiiRedactor {
    /// Builds a redactor. Refuses an empty kind list, HMAC mode without a
    /// key (an unkeyed hash of an 11-digit phone number is reversed by
    /// hashing all of them), a key shorter than 16 bytes, a key given both
    /// inline and by environment variable, an unset key variable, a key in
    /// placeholder mode, and a digest length outside 8–64.
    ///
    /// ```
    /// use kaiyuan_data::pii::{PiiConfig, PiiMode, PiiRedactor};
    /// let config = PiiConfig { mode: PiiMode::Hmac, ..PiiConfig::default() };
    /// let err = PiiRedactor::new(&config).unwrap_err();
    /// assert!(err.to_string().contains("hmac_key"));
    ///
    /// let config = PiiConfig {
    ///     mode: PiiMode::Hmac,
    ///     hmac_key: Some("0123456789abcdef0123456789abcdef".into()),
    ///     ..PiiConfig::default()
    /// };
    /// let redactor = PiiRedactor::new(&config).unwrap();
    /// let (out, _) = redactor.redact("call 415-555-0132");
    /// assert!(out.starts_with("call <PHONE:") && out.len() == "call <PHONE:>".len() + 12);
    /// ```
    pub fn new(config: &PiiConfig) -> Result<PiiRedactor, DataError> {
        if config.kinds.is_empty() {
            return Err(DataError::config(
                "pii.kinds",
                "is empty; list the kinds to redact or remove the pii stage",
            ));
        }
        let mut enabled = [false; 7];
        for k in &config.kinds {
            enabled[k.index()] = true;
        }
        let replacement = match config.mode {
            PiiMode::Placeholder => {
                if config.hmac_key.is_some() || config.hmac_key_env.is_some() {
                    let field = if config.hmac_key.is_some() {
                        "pii.hmac_key"
                    } else {
                        "pii.hmac_key_env"
                    };
                    return Err(DataError::config(
                        field,
                        "is set but `mode` is `placeholder`; set `mode = \"hmac\"` to use the key, or remove it",
                    ));
                }
                Replacement::Placeholder
            }
            PiiMode::Hmac => {
                if !(8..=64).contains(&config.hmac_hex_chars) {
                    return Err(DataError::config(
                        "pii.hmac_hex_chars",
                        format!("is {}; use 8 to 64 hex digits", config.hmac_hex_chars),
                    ));
                }
                let key = hmac_key(config)?;
                let mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
                    .map_err(|e| DataError::config("pii.hmac_key", e.to_string()))?;
                Replacement::Hmac {
                    mac,
                    hex_chars: config.hmac_hex_chars,
                }
            }
        };
        Ok(PiiRedactor {
            enabled,
            numbers: numbers::NumberMatcher::new()?,
            secrets: secrets::SecretMatcher::new()?,
            replacement,
        })
    }

    /// The personal data in `text`: non-overlapping, sorted by start, of the
    /// enabled kinds. Deterministic; see the module documentation for the
    /// rules.
    ///
    /// ```
    /// use kaiyuan_data::pii::{PiiConfig, PiiKind, PiiRedactor};
    /// let r = PiiRedactor::new(&PiiConfig::default()).unwrap();
    /// let text = "身份证号11010519491231002X，卡号 4111 1111 1111 1111";
    /// let found: Vec<_> = r.find(text).iter().map(|m| (m.kind, m.as_str(text))).collect();
    /// assert_eq!(found, [(PiiKind::IdCn, "11010519491231002X"), (PiiKind::Card, "4111 1111 1111 1111")]);
    /// ```
    pub fn find(&self, text: &str) -> Vec<PiiMatch> {
        let mut cands = Vec::new();
        self.candidates(text, &mut cands);
        resolve(cands)
            .into_iter()
            .filter(|c| self.enabled[c.kind.index()])
            .map(|c| PiiMatch {
                kind: c.kind,
                start: c.start,
                end: c.end,
            })
            .collect()
    }

    /// Every candidate of every kind, unresolved.
    fn candidates(&self, text: &str, out: &mut Vec<Candidate>) {
        let b = text.as_bytes();
        self.numbers.scan(text, out);
        for at in memchr::memchr_iter(b'@', b) {
            out.extend(net::email_at(text, at));
        }
        let mut next = 0;
        for c in memchr::memchr_iter(b':', b) {
            if b[c + 1..].starts_with(b"//") {
                out.extend(net::url_at(text, c));
            }
            if c < next {
                continue;
            }
            let (cand, run_end) = net::ipv6_at(text, c);
            out.extend(cand);
            next = run_end;
        }
        self.secrets.scan(text, out);
    }

    /// `text` with every match replaced, and the matches (offsets into
    /// `text`). Borrows `text` when nothing was found.
    ///
    /// ```
    /// use kaiyuan_data::pii::{PiiConfig, PiiRedactor};
    /// let r = PiiRedactor::new(&PiiConfig::default()).unwrap();
    /// let (out, found) = r.redact("Mail bob@example.org or call (415) 555-0132; ISBN 978-7-111-54742-6.");
    /// assert_eq!(out, "Mail <EMAIL> or call <PHONE>; ISBN 978-7-111-54742-6.");
    /// assert_eq!(found.len(), 2);
    /// ```
    pub fn redact<'a>(&self, text: &'a str) -> (Cow<'a, str>, Vec<PiiMatch>) {
        let matches = self.find(text);
        if matches.is_empty() {
            return (Cow::Borrowed(text), matches);
        }
        let mut out = String::with_capacity(text.len() + 16 * matches.len());
        let mut last = 0;
        for m in &matches {
            out.push_str(&text[last..m.start]);
            self.push_replacement(&mut out, m.kind, m.as_str(text));
            last = m.end;
        }
        out.push_str(&text[last..]);
        (Cow::Owned(out), matches)
    }

    /// Appends the replacement of a `kind` match with text `value`.
    fn push_replacement(&self, out: &mut String, kind: PiiKind, value: &str) {
        match &self.replacement {
            Replacement::Placeholder => out.push_str(kind.placeholder()),
            Replacement::Hmac { mac, hex_chars } => {
                let mut mac = mac.clone();
                mac.update(kind.name().as_bytes());
                mac.update(&[0]);
                mac.update(canonical(kind, value).as_bytes());
                let digest = mac.finalize().into_bytes();
                let placeholder = kind.placeholder();
                out.push_str(&placeholder[..placeholder.len() - 1]);
                out.push(':');
                const HEX: &[u8; 16] = b"0123456789abcdef";
                for i in 0..*hex_chars {
                    let byte = digest[i / 2];
                    let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 15 };
                    out.push(char::from(HEX[usize::from(nibble)]));
                }
                out.push('>');
            }
        }
    }
}

/// The form of a value that is hashed, so that one number written two ways
/// gets one token: digits (and an ID's `X`) for phones, IDs and cards,
/// ASCII lower case for e-mail addresses, the text itself otherwise.
fn canonical(kind: PiiKind, value: &str) -> Cow<'_, str> {
    match kind {
        PiiKind::Phone | PiiKind::IdCn | PiiKind::Card => Cow::Owned(
            value
                .chars()
                .filter(|c| c.is_ascii_digit() || *c == 'X' || *c == 'x')
                .map(|c| c.to_ascii_uppercase())
                .collect(),
        ),
        PiiKind::Email => Cow::Owned(value.to_ascii_lowercase()),
        _ => Cow::Borrowed(value),
    }
}

/// The HMAC key from the config or its environment variable.
fn hmac_key(config: &PiiConfig) -> Result<String, DataError> {
    match (&config.hmac_key, &config.hmac_key_env) {
        (Some(_), Some(_)) => Err(DataError::config(
            "pii.hmac_key",
            "and `hmac_key_env` are both set; give the key one way",
        )),
        (None, None) => Err(DataError::config(
            "pii.hmac_key",
            "mode `hmac` needs a secret key: set `hmac_key` or `hmac_key_env` (hashing without a key is refused: \
             an unkeyed hash of a phone number or ID is reversed by hashing every possible number)",
        )),
        (Some(key), None) => check_key_len("pii.hmac_key", key.clone()),
        (None, Some(var)) => match std::env::var(var) {
            Ok(key) if !key.is_empty() => check_key_len("pii.hmac_key_env", key),
            Ok(_) => Err(DataError::config(
                "pii.hmac_key_env",
                format!("environment variable `{var}` is empty"),
            )),
            Err(e) => Err(DataError::config(
                "pii.hmac_key_env",
                format!("environment variable `{var}`: {e}"),
            )),
        },
    }
}

fn check_key_len(what: &str, key: String) -> Result<String, DataError> {
    if key.len() < MIN_KEY_BYTES {
        return Err(DataError::config(
            what,
            format!(
                "the HMAC key is {} bytes; use at least {MIN_KEY_BYTES} random bytes",
                key.len()
            ),
        ));
    }
    Ok(key)
}

/// Chooses non-overlapping candidates: within each group of overlapping
/// candidates, longest first, then higher rank, then earlier start, then
/// kind order; then drops numbers that continue an unmatched run of short
/// digit groups ([`Candidate::group_before`]). Returns them sorted by start.
fn resolve(mut cands: Vec<Candidate>) -> Vec<Candidate> {
    cands.sort_by_key(|c| (c.start, std::cmp::Reverse(c.end), c.kind));
    cands.dedup();
    let mut out = Vec::with_capacity(cands.len());
    let mut i = 0;
    while i < cands.len() {
        let mut j = i + 1;
        let mut group_end = cands[i].end;
        while j < cands.len() && cands[j].start < group_end {
            group_end = group_end.max(cands[j].end);
            j += 1;
        }
        if j == i + 1 {
            out.push(cands[i]);
        } else {
            let mut group = cands[i..j].to_vec();
            group.sort_by_key(|c| {
                (
                    std::cmp::Reverse(c.end - c.start),
                    std::cmp::Reverse(c.rank),
                    c.start,
                    c.kind,
                )
            });
            // Chosen intervals by start; they never overlap each other.
            let mut chosen: BTreeMap<usize, Candidate> = BTreeMap::new();
            for c in group {
                let clash = chosen
                    .range(..c.end)
                    .next_back()
                    .is_some_and(|(_, p)| p.end > c.start);
                if !clash {
                    chosen.insert(c.start, c);
                }
            }
            out.extend(chosen.into_values());
        }
        i = j;
    }
    // A number in the middle of a run of short digit groups stands only if
    // the group before it belongs to a kept match. Every match that could
    // cover that group starts before the number, so one pass in start order
    // decides.
    let mut kept: Vec<Candidate> = Vec::with_capacity(out.len());
    for c in out {
        let stands = c.group_before.is_none_or(|g| {
            let k = kept.partition_point(|m| m.start <= g);
            k > 0 && kept[k - 1].end + 1 >= c.start
        });
        if stands {
            kept.push(c);
        }
    }
    kept
}

impl DocumentStage for PiiRedactor {
    fn name(&self) -> &'static str {
        "pii"
    }

    /// Replaces the document's personal data; counts matches per kind
    /// (`pii.email`, `pii.phone`…). Keeps the text when nothing was found.
    fn apply(&self, text: &str, ctx: &mut DocContext) -> Outcome {
        let (out, matches) = self.redact(text);
        let mut counts = [0u64; 7];
        for m in &matches {
            counts[m.kind.index()] += 1;
        }
        for k in PiiKind::ALL {
            if counts[k.index()] > 0 {
                ctx.count(k.counter(), counts[k.index()]);
            }
        }
        match out {
            Cow::Owned(s) if s != text => Outcome::Replace(s),
            _ => Outcome::Keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> PiiRedactor {
        PiiRedactor::new(&PiiConfig::default()).expect("default config is valid")
    }

    /// The reference finder: tries the number parsers at every character
    /// boundary and every trigger parser at every position of its trigger
    /// byte, with no prefilter, gate or skipping (no digit-run scan, no
    /// phone gate, no IPv6 run skipping), then resolves
    /// overlaps the same way. The fast path must agree with it.
    fn find_reference(r: &PiiRedactor, text: &str) -> Vec<PiiMatch> {
        let mut cands = Vec::new();
        for p in (0..text.len()).filter(|&p| text.is_char_boundary(p)) {
            let c = text[p..].chars().next().unwrap_or(' ');
            if c.is_ascii_digit() || matches!(c, '+' | '(' | '（') {
                r.numbers.candidates_at_ungated(text, p, &mut cands);
            }
            if c == '@' {
                cands.extend(net::email_at(text, p));
            }
            if text[p..].starts_with("://") {
                cands.extend(net::url_at(text, p));
            }
            if c == ':' {
                cands.extend(net::ipv6_at(text, p).0);
            }
        }
        r.secrets.scan(text, &mut cands);
        resolve(cands)
            .into_iter()
            .filter(|c| r.enabled[c.kind.index()])
            .map(|c| PiiMatch {
                kind: c.kind,
                start: c.start,
                end: c.end,
            })
            .collect()
    }

    #[test]
    fn resolve_prefers_longer_then_rank() {
        let c = |start, end, kind, rank| Candidate {
            start,
            end,
            kind,
            rank,
            group_before: None,
        };
        let got = resolve(vec![
            c(0, 11, PiiKind::Phone, rank::PHONE),
            c(0, 18, PiiKind::IdCn, rank::ID18),
            c(20, 35, PiiKind::Card, rank::CARD),
            c(20, 35, PiiKind::IdCn, rank::ID15),
            c(30, 40, PiiKind::Phone, rank::PHONE),
            c(41, 52, PiiKind::Card, rank::CARD),
            c(41, 52, PiiKind::Phone, rank::PHONE),
        ]);
        assert_eq!(
            got,
            vec![
                c(0, 18, PiiKind::IdCn, rank::ID18),
                c(20, 35, PiiKind::IdCn, rank::ID15),
                c(41, 52, PiiKind::Card, rank::CARD),
            ]
        );
    }

    /// Inputs the idempotence property tests once shrank to: redacting the
    /// output again finds nothing.
    #[test]
    fn idempotent_regressions() {
        let r = redactor();
        for text in [
            "(0755) 8888 6666+2 000-0000",
            "(200)200-0000 130 0000 0000 ",
            "4111 1111 1111 1111 0.0.0.1 ",
            "+20 00 0000, 2002000000 ",
            "+2-0000 000http://:a@/?_=",
            "a@b.com.13812345678",
            "11010519491231002X.13812345678",
        ] {
            let (once, _) = r.redact(text);
            assert_eq!(r.find(&once), [], "{text:?} → {once:?}");
        }
    }

    #[test]
    fn short_group_runs() {
        let r = redactor();
        let kinds = |t: &str| {
            r.find(t)
                .iter()
                .map(|m| m.as_str(t).to_string())
                .collect::<Vec<_>>()
        };
        // The middle of a card-like run of groups is no landline.
        assert!(kinds("ref 6596 0339 3965 5995").is_empty());
        // After a matched number, a spaced number stands (and again after
        // its placeholder).
        assert_eq!(
            kinds("(0755) 8888 6666 138 1234 5678"),
            ["(0755) 8888 6666", "138 1234 5678"]
        );
        assert_eq!(kinds("<PHONE> 138 1234 5678"), ["138 1234 5678"]);
        assert_eq!(
            kinds("13812345678 0755 8888 6666"),
            ["13812345678", "0755 8888 6666"]
        );
    }

    #[test]
    fn reference_agrees_on_examples() {
        let r = redactor();
        for text in [
            "(+86)13812345678 +86 138 1234 5678 call (415) 555-0132 or +44 20 7946 0958.",
            "IP 192.168.1.1:8080, v1.2.3.4, 2001:db8::1, user:pw@x https://a:b@c.com/?token=1",
            "身份证号11010519491231002X，卡号 4111 1111 1111 1111，电话010-12345678转801。",
        ] {
            assert_eq!(r.find(text), find_reference(&r, text), "{text}");
        }
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        /// Fragments that build texts full of near-misses and real matches.
        fn fragment() -> impl Strategy<Value = String> {
            prop_oneof![
                "[0-9]{1,20}",
                "[0-9 .:()+-]{1,24}",
                "\\+?[0-9]{1,4}[ -][0-9]{2,4}[ -][0-9]{3,4}",
                "1[3-9][0-9]{9}",
                "[0-9a-f:]{2,30}",
                "[a-z.]{1,8}@[a-z]{1,8}\\.[a-z]{2,3}",
                "https?://[a-z:@]{1,12}/\\?[a-z_]{1,8}=[a-z0-9]{0,6}",
                "[a-zA-Z ,.;]{0,12}",
                "[电话号码订单身份证：，。（）]{1,4}",
                Just("4111 1111 1111 1111".to_string()),
                Just("11010519491231002X".to_string()),
                Just("<PHONE:3f2a9c1d0b7e>".to_string()),
                Just("(0755) 8888 6666".to_string()),
                "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9]{2,4})?",
                "(\\+86 |0086|（\\+86）)?1[3-9][0-9][ -]?[0-9]{4}[ -]?[0-9]{4}",
                "\\(?[2-9][0-9]{2}\\)?[ .-]?[2-9][0-9]{2}[ .-]?[0-9]{4}( ?x[0-9]{1,4})?",
                "(AKIA[A-Z0-9]{16}|ghp_[A-Za-z0-9]{36}|sk-[A-Za-z0-9]{20,30}|xoxb-[0-9a-z-]{10,20}|AIza[A-Za-z0-9_-]{35})",
                Just("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig".to_string()),
                Just("-----BEGIN PRIVATE KEY-----\nMIIBVQ==\n".to_string()),
                Just("ISBN 7111547428".to_string()),
                Just("订单号".to_string()),
                Just("身份证".to_string()),
            ]
        }

        fn separator() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(" ".to_string()),
                Just("\n".to_string()),
                Just(", ".to_string()),
                Just("。".to_string()),
                Just("，".to_string()),
                Just(" (".to_string()),
                Just(") ".to_string()),
                Just("; ".to_string()),
            ]
        }

        fn placeholder() -> impl Strategy<Value = String> {
            (
                proptest::sample::select(PiiKind::ALL.to_vec()),
                proptest::option::of("[0-9a-f]{8,16}"),
            )
                .prop_map(|(k, hex)| match hex {
                    None => k.placeholder().to_string(),
                    Some(h) => format!("{}:{h}>", &k.placeholder()[..k.placeholder().len() - 1]),
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn fast_path_matches_reference(parts in proptest::collection::vec(fragment(), 1..8)) {
                let text = parts.concat();
                let r = redactor();
                prop_assert_eq!(r.find(&text), find_reference(&r, &text));
            }

            #[test]
            fn matches_are_sorted_disjoint_and_on_boundaries(parts in proptest::collection::vec(fragment(), 1..8)) {
                let text = parts.concat();
                let found = redactor().find(&text);
                for w in found.windows(2) {
                    prop_assert!(w[0].end <= w[1].start);
                }
                for m in &found {
                    prop_assert!(m.start < m.end && text.is_char_boundary(m.start) && text.is_char_boundary(m.end));
                }
            }

            /// Redacting redacted text changes nothing. Fragments are joined
            /// by separators, as in text: PII glued to other PII without one
            /// (`(0755) 8888 6666+2 000-0000`) may be segmented differently
            /// once one part is a placeholder, and is covered by the
            /// placeholder test below instead.
            #[test]
            fn redaction_is_idempotent(parts in proptest::collection::vec((fragment(), separator()), 1..8)) {
                let text: String = parts.iter().map(|(f, s)| format!("{f}{s}")).collect();
                let r = redactor();
                let (once, _) = r.redact(&text);
                let (twice, again) = r.redact(&once);
                prop_assert!(again.is_empty(), "{:?} → {:?} still has {:?}", text, once, again);
                prop_assert_eq!(&once, &twice);
            }

            #[test]
            fn hmac_redaction_is_idempotent(parts in proptest::collection::vec((fragment(), separator()), 1..8)) {
                let text: String = parts.iter().map(|(f, s)| format!("{f}{s}")).collect();
                let config = PiiConfig {
                    mode: PiiMode::Hmac,
                    hmac_key: Some("proptest key 0123456789".into()),
                    ..PiiConfig::default()
                };
                let r = PiiRedactor::new(&config).expect("valid config");
                let (once, _) = r.redact(&text);
                let (_, again) = r.redact(&once);
                prop_assert!(again.is_empty(), "{:?} → {:?} still has {:?}", text, once, again);
            }

            /// A placeholder anywhere, even glued to digits or inside a URL,
            /// is never part of a match.
            #[test]
            fn placeholders_are_never_matched(
                parts in proptest::collection::vec((fragment(), placeholder()), 1..8),
            ) {
                let mut text = String::new();
                let mut spans = Vec::new();
                for (f, p) in &parts {
                    text.push_str(f);
                    spans.push((text.len(), text.len() + p.len()));
                    text.push_str(p);
                }
                for m in redactor().find(&text) {
                    for &(s, e) in &spans {
                        prop_assert!(m.end <= s || e <= m.start, "{:?}: {:?} overlaps {:?}", text, m, &text[s..e]);
                    }
                }
            }

            #[test]
            fn text_without_triggers_is_unchanged(text in "[^0-9@:\\-]{0,300}") {
                let (out, found) = redactor().redact(&text);
                prop_assert!(found.is_empty());
                prop_assert!(matches!(out, Cow::Borrowed(_)));
            }
        }
    }
}
