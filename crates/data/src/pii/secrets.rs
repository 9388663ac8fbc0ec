//! Credentials with a recognisable shape: cloud and SaaS API keys, JSON Web
//! Tokens and PEM private key blocks.
//!
//! One regular expression holds every shape; its literal prefixes (`AKIA`,
//! `ghp_`, `xox`, `sk-`, `AIza`, `eyJ`, `-----BEGIN`…) let the regex engine
//! skip ordinary prose with a vectorised literal search. Each match is then
//! checked by the rules of its shape.

use super::{Candidate, PiiKind, rank};
use crate::error::DataError;
use regex::Regex;

/// Every secret shape, tried leftmost-first.
const SECRETS: &str = concat!(
    // AWS access key ids (AKIA long-term, ASIA temporary, and the other
    // unique-id prefixes of IAM entities).
    r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}",
    // GitHub classic tokens and fine-grained personal access tokens.
    r"|gh[pousr]_[A-Za-z0-9]{36}",
    r"|github_pat_[A-Za-z0-9_]{40,255}",
    // Slack tokens and incoming-webhook URLs.
    r"|xox[abposr]-[A-Za-z0-9-]{10,250}",
    r"|https://hooks\.slack\.com/services/T[A-Za-z0-9]+/B[A-Za-z0-9]+/[A-Za-z0-9]+",
    // Stripe secret and restricted keys.
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{10,250}",
    // OpenAI-style keys (sk-…, sk-proj-…, sk-ant-…).
    r"|sk-[A-Za-z0-9_-]{20,250}",
    // Google API keys.
    r"|AIza[A-Za-z0-9_-]{35}",
    // JSON Web Tokens: header and payload are base64url JSON objects.
    r"|eyJ[A-Za-z0-9_-]{12,}\.eyJ[A-Za-z0-9_-]{12,}\.[A-Za-z0-9_-]*",
    // PEM / OpenSSH / PGP private key blocks (extended to their END line).
    r"|-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----",
);

/// The secret finder.
pub(crate) struct SecretMatcher {
    re: Regex,
}

/// Characters that may continue a token: a secret must not be the middle of
/// a longer token.
const fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

impl SecretMatcher {
    pub(crate) fn new() -> Result<Self, DataError> {
        let re = Regex::new(SECRETS).map_err(|e| DataError::Pattern {
            pattern: SECRETS.to_string(),
            message: e.to_string(),
        })?;
        Ok(SecretMatcher { re })
    }

    /// Adds every secret in `text` to `out`. (A cheaper prefilter in front
    /// of the regex, such as a scan for long token runs, measured slower:
    /// the regex's own literal prefilter is vectorised.)
    pub(crate) fn scan(&self, text: &str, out: &mut Vec<Candidate>) {
        let b = text.as_bytes();
        let mut pos = 0;
        while let Some(m) = self.re.find_at(text, pos) {
            let (s, e) = (m.start(), m.end());
            let end = if b[s] == b'-' {
                Some(pem_end(text, e))
            } else {
                check(text, s, e).then_some(e)
            };
            match end {
                Some(end) => {
                    out.push(Candidate {
                        start: s,
                        end,
                        kind: PiiKind::Secret,
                        rank: rank::SECRET,
                        group_before: None,
                    });
                    pos = end;
                }
                // A rejected match may hide one that starts inside it.
                None => pos = s + 1,
            }
            if pos >= text.len() {
                break;
            }
        }
    }
}

/// The rules of each shape beyond its pattern.
fn check(text: &str, s: usize, e: usize) -> bool {
    let b = text.as_bytes();
    let tok = &text[s..e];
    let before_ok = s == 0 || !(b[s - 1].is_ascii_alphanumeric() || b[s - 1] == b'_');
    let after_ok = e == b.len() || !is_token_char(b[e]);
    if tok.starts_with("https://") {
        return true;
    }
    if !before_ok || !after_ok {
        return false;
    }
    if let Some(body) = tok.strip_prefix("sk-") {
        // Mixed case and digits, as random keys have; `sk-learn-…` is a word.
        let has = |f: fn(&u8) -> bool| body.as_bytes().iter().any(f);
        return has(u8::is_ascii_digit)
            && has(u8::is_ascii_uppercase)
            && has(u8::is_ascii_lowercase);
    }
    if tok.starts_with("eyJ") {
        // The header must decode to a JSON object naming its algorithm.
        let header = tok.split('.').next().unwrap_or("");
        return base64url_decode(header)
            .is_some_and(|h| h.first() == Some(&b'{') && h.windows(5).any(|w| w == b"\"alg\""));
    }
    true
}

/// The end of a PEM block whose BEGIN line ends at `e`: the end of its
/// `-----END …-----` line when that follows within 64 KiB, else the end of
/// the run of base64 and header lines after the BEGIN line (a truncated
/// key).
fn pem_end(text: &str, e: usize) -> usize {
    let limit = (e + 65536).min(text.len());
    let b = text.as_bytes();
    if let Some(k) = memchr::memmem::find(&b[e..limit], b"-----END ") {
        let start = e + k + 9;
        if let Some(close) = memchr::memmem::find(&b[start..limit.min(start + 64)], b"-----") {
            return start + close + 5;
        }
    }
    // No END line: take the following lines while they look like the body
    // (base64, or `Proc-Type: 4,ENCRYPTED`-style headers).
    let is_body = |line: &str| {
        !line.trim().is_empty()
            && line.bytes().all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(c, b'+' | b'/' | b'=' | b' ' | b':' | b'-' | b',' | b'\t')
            })
    };
    let mut lines = text[e..limit].split_inclusive('\n');
    // The rest of the BEGIN line (normally just its newline).
    let mut pos = e + lines.next().map_or(0, str::len);
    let mut end = e;
    for line in lines {
        let content = line.trim_end_matches(['\r', '\n']);
        if !is_body(content) {
            break;
        }
        end = pos + content.len();
        pos += line.len();
    }
    end
}

/// Decodes unpadded base64url (at most 512 characters); `None` on other
/// characters.
fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() > 512 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(text: &str) -> Vec<&str> {
        let m = SecretMatcher::new().expect("pattern compiles");
        let mut out = Vec::new();
        m.scan(text, &mut out);
        out.iter().map(|c| &text[c.start..c.end]).collect()
    }

    #[test]
    fn shapes() {
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        for s in [
            "AKIAIOSFODNN7EXAMPLE",
            "ghp_0123456789abcdefghijABCDEFGHIJ012345",
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
            "sk-proj-Ab3dEfGh1jKlMnOpQrStUvWx",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",
            jwt,
        ] {
            assert_eq!(secrets(&format!("key: {s}.")), vec![s], "{s}");
            assert_eq!(secrets(&format!("密钥{s}，")), vec![s], "{s}");
        }
    }

    #[test]
    fn not_secrets() {
        for t in [
            "scikit-learn is sk-learn-compatible-with-everything",
            "task-0123456789abcdefABCDEFG",
            "XAKIAIOSFODNN7EXAMPLE",
            "AKIAIOSFODNN7EXAMPLEX",
            "eyJub3QiOiJhIGp3dCJ9.eyJ4IjoxfQ.abc",
        ] {
            assert!(secrets(t).is_empty(), "{t}: {:?}", secrets(t));
        }
    }

    #[test]
    fn pem_blocks() {
        let block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nabc+/=\n-----END RSA PRIVATE KEY-----";
        let text = format!("key:\n{block}\nthanks");
        assert_eq!(secrets(&text), vec![block]);
        let truncated =
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nAAAABG5vbmU=";
        let text = format!("{truncated}\n\nNext paragraph.");
        assert_eq!(secrets(&text), vec![truncated]);
    }
}
