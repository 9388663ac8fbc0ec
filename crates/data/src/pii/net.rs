//! E-mail addresses, URLs that carry credentials or tokens, and IPv6
//! addresses. Each parser starts from a cheap trigger found with `memchr`
//! (`@`, `://`, `:`) and reads the characters around it.

use super::numbers::after_placeholder_open;
use super::{Candidate, PiiKind, rank};
use crate::text::is_cjk;
use std::net::Ipv6Addr;

/// Characters of an e-mail local part (the common unquoted subset of RFC
/// 5322 atoms).
fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-' | b'\'')
}

/// Characters of a domain name.
fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.'
}

/// The e-mail address around the `@` at byte `at`: a local part of at most
/// 64 characters without leading, trailing or doubled dots, and a domain of
/// at least two labels whose last label (the TLD) is alphabetic (or `xn--`
/// punycode). A dot that ends a sentence is not part of the domain.
pub(crate) fn email_at(text: &str, at: usize) -> Option<Candidate> {
    let b = text.as_bytes();
    let mut s = at;
    while s > 0 && at - s < 64 && is_local(b[s - 1]) {
        s -= 1;
    }
    // Quotes and dots may surround an address; they do not start one.
    while s < at && matches!(b[s], b'.' | b'\'') {
        s += 1;
    }
    if s == at || b[at - 1] == b'.' || b[s..at].windows(2).any(|w| w == b"..") {
        return None;
    }
    if s > 0 && is_local(b[s - 1]) {
        // Local part longer than 64 characters.
        return None;
    }
    if text[..s].ends_with("://") {
        // `https://user@host`: the user name of a URL, not a mailbox.
        return None;
    }
    let mut e = at + 1;
    while e < b.len() && e - at <= 253 && is_domain(b[e]) {
        e += 1;
    }
    // A placeholder glued to the domain stands for text that made the
    // domain invalid before it was redacted.
    if super::placeholder_starts_at(text, e) {
        return None;
    }
    while e > at + 1 && matches!(b[e - 1], b'.' | b'-') {
        e -= 1;
    }
    let domain = &text[at + 1..e];
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2
        || labels
            .iter()
            .any(|l| l.is_empty() || l.len() > 63 || l.starts_with('-') || l.ends_with('-'))
    {
        return None;
    }
    let tld = labels[labels.len() - 1];
    let tld_ok = (tld.len() >= 2 && tld.bytes().all(|c| c.is_ascii_alphabetic()))
        || (tld.len() > 4 && tld[..4].eq_ignore_ascii_case("xn--"));
    if !tld_ok || b.get(e).is_some_and(|&c| c == b'_' || c == b'@') {
        return None;
    }
    Some(Candidate {
        start: s,
        end: e,
        kind: PiiKind::Email,
        rank: rank::EMAIL,
        group_before: None,
    })
}

/// Query and fragment parameter names whose values are credentials
/// (compared ASCII case-insensitively).
const SECRET_PARAMS: &[&str] = &[
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "auth_token",
    "authtoken",
    "session_token",
    "x-amz-security-token",
    "api_key",
    "apikey",
    "api-key",
    "key",
    "secret",
    "client_secret",
    "app_secret",
    "password",
    "passwd",
    "pwd",
    "pass",
    "sig",
    "signature",
    "x-amz-signature",
    "x-goog-signature",
    "x-amz-credential",
    "auth",
    "session",
    "sessionid",
    "session_id",
    "jsessionid",
];

/// The longest URL read, in bytes after its `://`.
const MAX_URL: usize = 16 * 1024;

/// Characters a URL runs over (ASCII graphic characters except the ones
/// that delimit URLs in prose and markup).
fn is_url_char(b: u8) -> bool {
    b.is_ascii_graphic()
        && !matches!(
            b,
            b'<' | b'>' | b'"' | b'`' | b'{' | b'}' | b'|' | b'\\' | b'^'
        )
}

/// The URL whose `://` is at byte `k`, when it carries a password in its
/// user information (`scheme://user:pass@host`) or a credential parameter
/// (`?token=…`, `&api_key=…`, `#access_token=…`; see [`SECRET_PARAMS`]).
/// The URL ends at whitespace, a non-ASCII character or a delimiter;
/// trailing sentence punctuation and unbalanced closing brackets are not
/// part of it.
pub(crate) fn url_at(text: &str, k: usize) -> Option<Candidate> {
    let b = text.as_bytes();
    let mut s = k;
    while s > 0 && (b[s - 1].is_ascii_alphanumeric() || matches!(b[s - 1], b'+' | b'.' | b'-')) {
        s -= 1;
    }
    while s < k && !b[s].is_ascii_alphabetic() {
        s += 1;
    }
    // The scheme must start a word: `000http://` is not a URL start.
    if s == k || k - s > 32 || (s > 0 && b[s - 1].is_ascii_alphanumeric()) {
        return None;
    }
    // URLs nested in URLs (`?next=https://…`) are each read from their
    // `://`; the cap keeps that linear on pathological input.
    let limit = b.len().min(k + MAX_URL);
    let mut e = k + 3;
    while e < limit && is_url_char(b[e]) {
        e += 1;
    }
    // Trailing punctuation and unbalanced closing brackets.
    let (mut parens, mut brackets) = (0i64, 0i64);
    for &c in &b[s..e] {
        match c {
            b'(' => parens += 1,
            b')' => parens -= 1,
            b'[' => brackets += 1,
            b']' => brackets -= 1,
            _ => {}
        }
    }
    while e > k + 3 {
        let trim = match b[e - 1] {
            b'.' | b',' | b';' | b':' | b'!' | b'?' | b'\'' | b'*' => true,
            b')' if parens < 0 => {
                parens += 1;
                true
            }
            b']' if brackets < 0 => {
                brackets += 1;
                true
            }
            _ => false,
        };
        if !trim {
            break;
        }
        e -= 1;
    }
    let rest = &text[k + 3..e];
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..auth_end];
    let has_password = authority.rfind('@').is_some_and(|at| {
        let userinfo = &authority[..at];
        userinfo.find(':').is_some_and(|c| c + 1 < userinfo.len())
    });
    let has_secret_param = rest[auth_end..]
        .find(['?', '#'])
        .map(|q| &rest[auth_end + q + 1..])
        .is_some_and(|query| {
            query.split(['&', ';', '?', '#']).any(|pair| {
                pair.split_once('=').is_some_and(|(name, value)| {
                    !value.is_empty() && SECRET_PARAMS.iter().any(|p| name.eq_ignore_ascii_case(p))
                })
            })
        });
    (has_password || has_secret_param).then_some(Candidate {
        start: s,
        end: e,
        kind: PiiKind::Url,
        rank: rank::URL,
        group_before: None,
    })
}

fn is_v6_char(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b':' || b == b'.'
}

/// The IPv6 address around the `:` at byte `c`, and the end of the run of
/// address characters examined (so the caller skips the other colons in it).
///
/// Accepted: what `std::net::Ipv6Addr` parses (full, `::`-compressed and
/// IPv4-embedded forms) with at least one decimal digit, at least two
/// groups, and, in the uncompressed 8-group form, at least one group of
/// three or more hex digits (so that byte dumps like `00:11:22:…` are not
/// addresses). Loopback (`::1`) and unspecified (`::`) addresses are not
/// personal data. A zone (`%eth0`), port or prefix length after it is not
/// part of it; the characters around it must not be letters, digits or
/// underscores.
pub(crate) fn ipv6_at(text: &str, c: usize) -> (Option<Candidate>, usize) {
    let b = text.as_bytes();
    let mut s = c;
    while s > 0 && is_v6_char(b[s - 1]) {
        s -= 1;
    }
    let mut e = c + 1;
    while e < b.len() && is_v6_char(b[e]) {
        e += 1;
    }
    let run_end = e;
    // Drop a leading single colon or dots, and trailing dots or a single
    // colon ("addr:2001:db8::1", "…::1." at the end of a sentence).
    while s < e && b[s] == b'.' {
        s += 1;
    }
    if b[s..e].starts_with(b":") && !b[s..e].starts_with(b"::") {
        s += 1;
    }
    while e > s && b[e - 1] == b'.' {
        e -= 1;
    }
    if b[s..e].ends_with(b":") && !b[s..e].ends_with(b"::") {
        e -= 1;
    }
    let token = &text[s..e];
    if token.len() < 3 || token.len() > 45 {
        return (None, run_end);
    }
    let Ok(addr) = token.parse::<Ipv6Addr>() else {
        return (None, run_end);
    };
    if addr.is_loopback() || addr.is_unspecified() || !token.bytes().any(|x| x.is_ascii_digit()) {
        return (None, run_end);
    }
    let groups: Vec<&str> = token.split(':').filter(|g| !g.is_empty()).collect();
    let compressed = token.contains("::");
    if groups.len() < 2 || (!compressed && groups.iter().all(|g| g.len() <= 2)) {
        return (None, run_end);
    }
    let word =
        |ch: Option<char>| ch.is_some_and(|ch| (ch.is_alphanumeric() && !is_cjk(ch)) || ch == '_');
    if word(text[..s].chars().next_back()) || word(text[e..].chars().next()) {
        return (None, run_end);
    }
    if text[..s].ends_with(':') && after_placeholder_open(&text[..s - 1]) {
        return (None, run_end);
    }
    (
        Some(Candidate {
            start: s,
            end: e,
            kind: PiiKind::Ip,
            rank: rank::IP,
            group_before: None,
        }),
        run_end,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(text: &str) -> Option<&str> {
        let at = text.find('@')?;
        email_at(text, at).map(|c| &text[c.start..c.end])
    }

    fn url(text: &str) -> Option<&str> {
        let k = text.find("://")?;
        url_at(text, k).map(|c| &text[c.start..c.end])
    }

    fn ipv6(text: &str) -> Option<&str> {
        let c = text.find(':')?;
        ipv6_at(text, c).0.map(|m| &text[m.start..m.end])
    }

    #[test]
    fn emails() {
        assert_eq!(
            email("邮箱zhangsan@example.com谢谢"),
            Some("zhangsan@example.com")
        );
        assert_eq!(
            email("mail john.doe+x@mail.example.co.uk."),
            Some("john.doe+x@mail.example.co.uk")
        );
        assert_eq!(email("<a.b@c.io>"), Some("a.b@c.io"));
        assert_eq!(email("13812345678@qq.com"), Some("13812345678@qq.com"));
        assert_eq!(email("@handle"), None);
        assert_eq!(email("root@localhost"), None);
        assert_eq!(email("a..b@c.com"), None);
        assert_eq!(email("x@1.2.3.4"), None);
        assert_eq!(email("https://user@example.com/"), None);
    }

    #[test]
    fn urls() {
        assert_eq!(
            url("see https://user:pass@host.example.com/x."),
            Some("https://user:pass@host.example.com/x")
        );
        assert_eq!(
            url("(https://a.com/?a=1&token=abc)"),
            Some("https://a.com/?a=1&token=abc")
        );
        assert_eq!(
            url("见https://a.com/cb#access_token=xyz。"),
            Some("https://a.com/cb#access_token=xyz")
        );
        assert_eq!(
            url("postgres://:pw@db:5432/app"),
            Some("postgres://:pw@db:5432/app")
        );
        assert_eq!(url("https://a.com/?page=2&sort=asc"), None);
        assert_eq!(url("https://user@host.com/"), None);
        assert_eq!(url("https://a.com/?token="), None);
        assert_eq!(
            url("https://en.wikipedia.org/wiki/Key_(cryptography)"),
            None
        );
    }

    #[test]
    fn ipv6s() {
        assert_eq!(ipv6("at 2001:db8::1."), Some("2001:db8::1"));
        assert_eq!(
            ipv6("[fe80::1ff:fe23:4567:890a]:8080"),
            Some("fe80::1ff:fe23:4567:890a")
        );
        assert_eq!(
            ipv6("addr:2001:db8:85a3::8a2e:370:7334"),
            Some("2001:db8:85a3::8a2e:370:7334")
        );
        assert_eq!(ipv6("::ffff:192.0.2.128"), Some("::ffff:192.0.2.128"));
        assert_eq!(
            ipv6("9450:85b:63a0:29a5:adb5:5557:e6:a305"),
            Some("9450:85b:63a0:29a5:adb5:5557:e6:a305")
        );
        assert_eq!(ipv6("12:30:45"), None);
        assert_eq!(ipv6("00:1a:2b:3c:4d:5e"), None);
        assert_eq!(ipv6("00:11:22:33:44:55:66:77"), None);
        assert_eq!(ipv6("::1"), None);
        assert_eq!(ipv6("std::vector"), None);
        assert_eq!(ipv6("Abc::Def"), None);
        assert_eq!(ipv6("<PHONE:3f2a9c1d0b7e>"), None);
    }
}
