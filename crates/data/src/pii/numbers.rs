//! Numeric PII: phone numbers, PRC resident IDs, payment cards and IPv4
//! addresses.
//!
//! The scanner visits each run of ASCII digits once. A run, together with a
//! `+` or an opening parenthesis right before it, is a possible start; the
//! parsers below are anchored there and each proposes at most one candidate,
//! which must pass its checksum or plausibility rules and the boundary rules
//! ([`left_ok`], [`right_ok`]). Overlapping candidates are resolved by the
//! caller.

use super::checks;
use super::{Candidate, PiiKind, placeholder_ends_at, placeholder_starts_at, rank};
use crate::error::DataError;
use crate::text::is_cjk;
use regex::Regex;

/// Longest phone number the phone patterns can match, in bytes (with room
/// for full-width parentheses and an extension).
const WINDOW: usize = 72;

/// The anchored phone patterns.
pub(crate) struct NumberMatcher {
    /// Mainland China mobile numbers, with an optional +86 / 0086 prefix.
    mobile: Regex,
    /// Mainland China landlines: area code set off by a separator or
    /// parentheses, or written after +86.
    landline: Regex,
    /// North American numbers (NANP), with an optional +1 / 1 / 001 prefix
    /// and an extension.
    nanp: Regex,
}

const MOBILE: &str = r"^(?:(?:\+86|0086)[ -]?|[(（]\+?86[)）] ?)?1[3-9][0-9](?:[0-9]{8}|-[0-9]{4}-[0-9]{4}| [0-9]{4} [0-9]{4})";

/// Mainland landlines. Area codes (after the trunk `0`): 10, 2x, and the
/// three-digit codes 3xx–9xx whose second digit is not 0, except 701
/// (Yingtan) and 901–909 (Xinjiang), the only ones that have it; the local
/// number starts with 2–9.
const LANDLINE: &str = concat!(
    r"^(?:(?:\+86|0086)[ -]?(?:\(0\) ?)?(?:10|2[0-9]|[3-9][1-9][0-9]|701|90[1-9])[ -]?",
    r"|[(（]0(?:10|2[0-9]|[3-9][1-9][0-9]|701|90[1-9])[)）] ?",
    r"|0(?:10|2[0-9]|[3-9][1-9][0-9]|701|90[1-9])[ -])",
    r"(?:[2-9][0-9]{6,7}|[2-9][0-9]{3}[ -][0-9]{4}|[2-9][0-9]{2}[ -][0-9]{4})",
    r"(?:(?:-|转|分机|ext\.? ?| ?x)[0-9]{1,5})?",
);

const NANP: &str = r"^(?:\+1[ .-]?|1[ .-]|001[ .-])?(?:\([2-9][0-9]{2}\) ?[2-9][0-9]{2}[ .-]?[0-9]{4}|[2-9][0-9]{2}-[2-9][0-9]{2}-[0-9]{4}|[2-9][0-9]{2}\.[2-9][0-9]{2}\.[0-9]{4}|[2-9][0-9]{2} [2-9][0-9]{2} [0-9]{4}|[2-9][0-9]{2}[2-9][0-9]{2}[0-9]{4})(?: ?x[0-9]{1,6}| ?(?:ext\.?|extension) ?[0-9]{1,6})?";

fn compile(pattern: &str) -> Result<Regex, DataError> {
    Regex::new(pattern).map_err(|e| DataError::Pattern {
        pattern: pattern.to_string(),
        message: e.to_string(),
    })
}

impl NumberMatcher {
    pub(crate) fn new() -> Result<Self, DataError> {
        Ok(NumberMatcher {
            mobile: compile(MOBILE)?,
            landline: compile(LANDLINE)?,
            nanp: compile(NANP)?,
        })
    }

    /// Adds the candidates of every digit run of `text` to `out`.
    pub(crate) fn scan(&self, text: &str, out: &mut Vec<Candidate>) {
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let Some(run) = next_digit(b, i) else {
                break;
            };
            self.candidates_at_run(text, run, out);
            i = run;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
    }

    /// The candidates whose first digit run starts at byte `run`.
    pub(crate) fn candidates_at_run(&self, text: &str, run: usize, out: &mut Vec<Candidate>) {
        // Starts: the run itself, and a `+`, `(` or `（` (or `(+`) before it.
        let mut starts = [run; 3];
        let mut n = 1;
        let mut p = run;
        for _ in 0..2 {
            match text[..p].chars().next_back() {
                Some(c @ ('+' | '(' | '（')) => {
                    p -= c.len_utf8();
                    starts[n] = p;
                    n += 1;
                }
                _ => break,
            }
        }
        for &s in &starts[..n] {
            self.candidates_at(text, s, out);
        }
    }

    /// The candidates that start exactly at byte `start`.
    pub(crate) fn candidates_at(&self, text: &str, start: usize, out: &mut Vec<Candidate>) {
        self.candidates_at_gated(text, start, out, true);
    }

    /// [`candidates_at`](Self::candidates_at) without the cheap
    /// [`phone_possible`] gate, for the reference finder of the tests.
    #[cfg(test)]
    pub(crate) fn candidates_at_ungated(&self, text: &str, start: usize, out: &mut Vec<Candidate>) {
        self.candidates_at_gated(text, start, out, false);
    }

    fn candidates_at_gated(&self, text: &str, start: usize, out: &mut Vec<Candidate>, gate: bool) {
        if !left_ok(text, start) {
            return;
        }
        let bytes = text.as_bytes();
        let first = bytes[start];
        let group_before = group_before(bytes, start);
        let mut push = |end: usize, kind: PiiKind, rank: u8| {
            out.push(Candidate {
                start,
                end,
                kind,
                rank,
                group_before,
            })
        };
        if first.is_ascii_digit() {
            if let Some((end, r)) = resident_id(text, start)
                && right_ok(text, end)
            {
                push(end, PiiKind::IdCn, r);
            }
            if let Some(end) = card(text, start)
                && !negative_context(text, start)
            {
                push(end, PiiKind::Card, rank::CARD);
            }
            if let Some(end) = ipv4(text, start)
                && !negative_context(text, start)
            {
                push(end, PiiKind::Ip, rank::IP);
            }
        }
        if gate && !phone_possible(bytes, start) {
            return;
        }
        if let Some(end) = self.phone(text, start)
            && !negative_context(text, start)
        {
            push(end, PiiKind::Phone, rank::PHONE);
        }
    }

    /// The end of the longest phone number starting at `start`.
    fn phone(&self, text: &str, start: usize) -> Option<usize> {
        let mut wend = (start + WINDOW).min(text.len());
        while !text.is_char_boundary(wend) {
            wend -= 1;
        }
        let window = &text[start..wend];
        let bytes = text.as_bytes();
        let mut best: Option<usize> = None;
        let mut offer = |end: usize| {
            if right_ok(text, end) && best.is_none_or(|b| end > b) {
                best = Some(end);
            }
        };
        if let Some(m) = self.mobile.find(window) {
            // The three digits after the (optional) country code must be an
            // assigned mobile prefix.
            let digits: Vec<u8> = m.as_str().bytes().filter(u8::is_ascii_digit).collect();
            if digits.len() >= 11 && mobile_prefix(&digits[digits.len() - 11..]) {
                offer(start + m.end());
            }
        }
        if let Some(m) = self.landline.find(window) {
            let s = m.as_str();
            let balanced = s.matches('(').count() == s.matches(')').count()
                && s.matches('（').count() == s.matches('）').count();
            if balanced {
                offer(start + m.end());
            }
        }
        if let Some(m) = self.nanp.find(window) {
            // Ten bare digits are also hash constants and account ids: a
            // phone number only after a phone word.
            let bare = m.len() == 10 && m.as_str().bytes().all(|c| c.is_ascii_digit());
            if !bare || phone_word_before(text, start) {
                offer(start + m.end());
            }
        }
        if bytes[start] == b'+'
            && let Some(end) = international(text, start)
        {
            offer(end);
        }
        best
    }
}

/// The position of the first ASCII digit at or after `from`. Tests eight
/// bytes at a time: a byte is a digit when it lies strictly between 0x2F
/// and 0x3A, which the SWAR expression below checks for all eight lanes at
/// once (bytes ≥ 0x80 are excluded by the `!w` term).
pub(crate) fn next_digit(b: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 128;
    let mut i = from;
    while i + 8 <= b.len() {
        let mut lane = [0u8; 8];
        lane.copy_from_slice(&b[i..i + 8]);
        let w = u64::from_le_bytes(lane);
        let low7 = w & (ONES * 127);
        // Lanes above 0x2F: low7 + (127 - 0x2F) carries into bit 7; lanes
        // below 0x3A: (127 + 0x3A) - low7 keeps bit 7. No lane overflows
        // into its neighbour, since each term stays below 256.
        let hits = (ONES * (127 + 0x3A) - low7) & !w & (low7 + ONES * (127 - 0x2F)) & HIGH;
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b[i..].iter().position(u8::is_ascii_digit).map(|k| i + k)
}

/// A cheap necessary condition for every phone pattern at `start`: at least
/// 8 ASCII digits (the fewest any pattern has: `+` and 7 more) before the
/// first byte that cannot occur in a phone number before its extension
/// (an ASCII byte other than a digit, space, `-`, `.`, `(`, `)` or `+`).
/// Digit-dense text (tables, dates, prices) then skips the regexes.
fn phone_possible(b: &[u8], start: usize) -> bool {
    let mut digits = 0;
    for &c in b[start..].iter().take(WINDOW) {
        match c {
            b'0'..=b'9' => {
                digits += 1;
                if digits >= 8 {
                    return true;
                }
            }
            b' ' | b'-' | b'.' | b'(' | b')' | b'+' | 0x80..=0xFF => {}
            _ => return false,
        }
    }
    false
}

/// True for an assigned mainland mobile prefix (the first three of eleven
/// digits): 13x, 145, 147–149, 150–153, 155–159, 162, 165–167, 170–178,
/// 18x, 19x.
fn mobile_prefix(national: &[u8]) -> bool {
    matches!(checks::digits_value(&national[..3]),
        130..=139 | 145 | 147..=149 | 150..=153 | 155..=159 | 162 | 165..=167 | 170..=178 | 180..=199)
}

/// An international number in E.164 style: `+`, a country code other than
/// 1 and 86 (those have their own patterns), and digit groups separated by
/// single spaces, dots or dashes (a group may be parenthesised), 8 to 15
/// digits in all. Takes the most groups that fit in 15 digits and end on a
/// boundary.
fn international(text: &str, start: usize) -> Option<usize> {
    let b = text.as_bytes();
    let mut i = start + 1;
    let first = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == first || b[first] == b'0' || b[first] == b'1' || b[first..].starts_with(b"86") {
        return None;
    }
    // (end of group, digits so far) for each group.
    let mut ends: Vec<(usize, usize)> = vec![(i, i - first)];
    let mut digits = i - first;
    loop {
        let mut j = i;
        if j < b.len() && matches!(b[j], b' ' | b'.' | b'-') {
            j += 1;
        }
        let paren = j < b.len() && b[j] == b'(';
        if paren {
            j += 1;
        }
        let g = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j == g || (paren && (j - g > 4 || j >= b.len() || b[j] != b')')) {
            break;
        }
        digits += j - g;
        if paren {
            j += 1;
        }
        i = j;
        ends.push((i, digits));
        if digits > 15 || ends.len() > 8 {
            break;
        }
    }
    ends.iter()
        .rev()
        .find(|&&(end, d)| (8..=15).contains(&d) && right_ok(text, end))
        .map(|&(end, _)| end)
}

/// An 18-character resident ID (bare, or grouped 6-8-4 with single spaces
/// or dashes) or a 15-digit first-generation ID, with its rank. A 15-digit
/// number has no check digit (only its date and province code can be
/// checked), so it is an ID only after words that name one
/// ([`id_context`]).
fn resident_id(text: &str, start: usize) -> Option<(usize, u8)> {
    let b = text.as_bytes();
    let run = b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
    let at = |i: usize| b.get(start + i).copied();
    if (run == 17 && matches!(at(17), Some(b'X' | b'x'))) || run == 18 {
        return checks::valid_ric18(&b[start..start + 18]).then_some((start + 18, rank::ID18));
    }
    if run == 15 {
        let ok = checks::valid_ric15(&b[start..start + 15]) && id_context(text, start);
        return ok.then_some((start + 15, rank::ID15));
    }
    if run == 6 {
        let sep = at(6)?;
        if !matches!(sep, b' ' | b'-') {
            return None;
        }
        let date = b.get(start + 7..start + 15)?;
        let tail = b.get(start + 16..start + 20)?;
        if !date.iter().all(u8::is_ascii_digit)
            || at(15) != Some(sep)
            || !tail[..3].iter().all(u8::is_ascii_digit)
            || !(tail[3].is_ascii_digit() || matches!(tail[3], b'X' | b'x'))
        {
            return None;
        }
        let mut id = Vec::with_capacity(18);
        id.extend_from_slice(&b[start..start + 6]);
        id.extend_from_slice(date);
        id.extend_from_slice(tail);
        return checks::valid_ric18(&id).then_some((start + 20, rank::ID18));
    }
    None
}

/// A payment card number with a known issuer prefix for its length and a
/// valid Luhn check: 12–19 digits bare, or in groups separated by one kind
/// of separator (space or dash): groups of four with a last group of one to
/// four digits, or 4-6-4 / 4-6-5 (Diners Club, American Express).
///
/// The groups are read as written: when the whole run of groups has a card
/// shape, only it is tried (a 19-digit `4-4-4-4-3` number that fails Luhn
/// is not a 16-digit card and three more digits); when it is longer than a
/// card (a card and then a year), the longest card-shaped prefix that
/// passes is taken. A group that goes on as another number (`12/25`,
/// `0.0.0.1`, `2023-10-05` after spaces) is not part of the run.
///
/// An 18-digit number that starts like a resident ID (province code and
/// birth year) is not a card even when the rest of it is no valid ID: it is
/// a mistyped or made-up ID, and 18-digit cards are rare.
fn card(text: &str, start: usize) -> Option<usize> {
    let b = text.as_bytes();
    let run = b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
    let end_ok = |end: usize| right_ok(text, end);
    if (12..=19).contains(&run) {
        let end = start + run;
        let digits = &b[start..end];
        let id_shaped = run == 18 && checks::ric18_prefix_shaped(digits);
        return (!id_shaped && checks::valid_card(digits) && end_ok(end)).then_some(end);
    }
    if run != 4 {
        return None;
    }
    let sep = *b.get(start + 4)?;
    if sep != b' ' && sep != b'-' {
        return None;
    }
    // Groups: (start, len).
    let mut groups: Vec<(usize, usize)> = vec![(start, 4)];
    let mut i = start + 4;
    while groups.len() < 6 && i < b.len() && b[i] == sep {
        let g = i + 1;
        let len = b[g..].iter().take_while(|c| c.is_ascii_digit()).count();
        // A group that goes on as another kind of number (a date `12/25`,
        // an address `0.0.0.1`, a time, a decimal) is not part of the run.
        let next = b.get(g + len).copied();
        let continues = matches!(next, Some(b'/' | b'.' | b':' | b',' | b'-'))
            && next != Some(sep)
            && b.get(g + len + 1).is_some_and(u8::is_ascii_digit);
        if len == 0 || continues {
            break;
        }
        groups.push((g, len));
        i = g + len;
    }
    let shape_ok = |groups: &[(usize, usize)]| {
        let total: usize = groups.iter().map(|g| g.1).sum();
        let shape = match groups {
            [(_, 4), (_, 6), (_, 4 | 5)] => true,
            [init @ .., last] => init.iter().all(|g| g.1 == 4) && (1..=4).contains(&last.1),
            [] => false,
        };
        groups.len() >= 3 && shape && (12..=19).contains(&total)
    };
    let mut digits = Vec::with_capacity(19);
    let full = groups.len();
    let lengths = if shape_ok(&groups) {
        full..=full
    } else {
        3..=full.saturating_sub(1)
    };
    for k in lengths.rev() {
        if !shape_ok(&groups[..k]) {
            continue;
        }
        digits.clear();
        for &(g, len) in &groups[..k] {
            digits.extend_from_slice(&b[g..g + len]);
        }
        let (g, len) = groups[k - 1];
        let end = g + len;
        if checks::valid_card(&digits) && end_ok(end) {
            return Some(end);
        }
    }
    None
}

/// A dotted-quad IPv4 address other than loopback (127/8) and 0.0.0.0.
/// A port (`:8080`) or prefix length (`/24`) after it is not part of it.
fn ipv4(text: &str, start: usize) -> Option<usize> {
    let b = text.as_bytes();
    let mut i = start;
    let mut octets = [0u32; 4];
    for (k, octet) in octets.iter_mut().enumerate() {
        if k > 0 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let len = b[i.min(b.len())..]
            .iter()
            .take(4)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if !(1..=3).contains(&len) {
            return None;
        }
        *octet = checks::digits_value(&b[i..i + len]);
        if *octet > 255 {
            return None;
        }
        i += len;
    }
    if octets[0] == 127 || octets == [0, 0, 0, 0] || !right_ok(text, i) {
        return None;
    }
    Some(i)
}

/// When `start` begins a space-separated group of at most four digits that
/// follows another such group, the start of that group. In
/// `6596 0339 3965 5995` the number at `0339` is no phone number: the
/// overlap resolver drops such a candidate unless the group before it
/// belongs to another match (`(0755) 8888 6666 138 1234 5678`). A complete
/// number before the space (`13812345678 13912345678`) is no such group.
fn group_before(b: &[u8], start: usize) -> Option<usize> {
    if start < 2 || b[start - 1] != b' ' || !b[start - 2].is_ascii_digit() {
        return None;
    }
    let before = b[..start - 1]
        .iter()
        .rev()
        .take(5)
        .take_while(|c| c.is_ascii_digit())
        .count();
    let run = b[start..]
        .iter()
        .take(5)
        .take_while(|c| c.is_ascii_digit())
        .count();
    (before <= 4 && run <= 4 && b.get(start + run) == Some(&b' ')).then(|| start - 1 - before)
}

/// Full-width digits (U+FF10–U+FF19) continue a number like ASCII digits.
fn is_fullwidth_digit(c: char) -> bool {
    ('０'..='９').contains(&c)
}

/// Whether a number may start at byte `p`: the character before it is not
/// a letter or digit of a non-CJK script, an underscore, a currency or `#`
/// sign, a `+`, or a `.` or `-` that follows a digit (which would make the
/// candidate the tail of a longer number), and `p` is not inside a
/// placeholder such as `<PHONE:3f2a9c1d0b7e>`. Han characters may touch a
/// number: `电话13812345678`. A placeholder counts as a digit, so that text
/// rejected next to a number is rejected next to its placeholder too.
pub(crate) fn left_ok(text: &str, p: usize) -> bool {
    if placeholder_ends_at(text, p) {
        return false;
    }
    let mut before = text[..p].chars().rev();
    let Some(c) = before.next() else { return true };
    if (c.is_alphanumeric() && !is_cjk(c)) || is_fullwidth_digit(c) {
        return false;
    }
    match c {
        '_' | '+' | '#' | '＃' | '$' | '＄' | '¥' | '￥' | '€' | '£' => false,
        '.' | '-' => {
            !(placeholder_ends_at(text, p - 1)
                || matches!(before.next(), Some(d) if d.is_ascii_digit()))
        }
        ':' => !after_placeholder_open(&text[..p - 1]),
        _ => true,
    }
}

/// True when `s` ends with `<` and an upper-case placeholder name, as in
/// `<PHONE`.
pub(crate) fn after_placeholder_open(s: &str) -> bool {
    let b = s.as_bytes();
    let name = b
        .iter()
        .rev()
        .take_while(|c| c.is_ascii_uppercase() || **c == b'_')
        .count();
    name >= 2 && b.len() > name && b[b.len() - name - 1] == b'<'
}

/// Whether a number may end at byte `e`: the character after it is not a
/// letter or digit of a non-CJK script or an underscore, not a `.` or `-`
/// followed by a digit (a decimal, a longer code), and not a thousands
/// separator (`,` and exactly three digits). A placeholder counts as a
/// digit.
pub(crate) fn right_ok(text: &str, e: usize) -> bool {
    if placeholder_starts_at(text, e) {
        return false;
    }
    let mut after = text[e..].chars();
    let Some(c) = after.next() else { return true };
    if (c.is_alphanumeric() && !is_cjk(c)) || is_fullwidth_digit(c) || c == '_' {
        return false;
    }
    match c {
        '.' | '-' => {
            !(placeholder_starts_at(text, e + 1)
                || matches!(after.next(), Some(d) if d.is_ascii_digit()))
        }
        ',' => {
            let rest = &text.as_bytes()[e + 1..];
            let thousands = rest.len() >= 3
                && rest[..3].iter().all(u8::is_ascii_digit)
                && !rest.get(3).is_some_and(u8::is_ascii_digit);
            !thousands
        }
        _ => true,
    }
}

/// Words that, right before a number, say it is not personal data: order,
/// invoice, tracking, ISBN and serial numbers, versions.
const NEGATIVE_CONTEXT: &[&str] = &[
    "order",
    "orders",
    "invoice",
    "tracking",
    "isbn",
    "isbn-10",
    "isbn-13",
    "issn",
    "sku",
    "serial",
    "transaction",
    "txn",
    "receipt",
    "confirmation",
    "ticket",
    "version",
    "ver",
    "build",
    "订单",
    "单号",
    "编号",
    "发票",
    "流水号",
    "书号",
    "序列号",
    "批号",
    "版本",
    "合同号",
    "条码",
    "条形码",
    "货号",
    "型号",
    "工单",
    "运单",
    "快递单",
    "账单",
    "票号",
];

/// Words that, right before a number, name it as an identity number.
const ID_CONTEXT: &[&str] = &["身份证", "身份", "证件", "id", "identity", "identification"];

/// Connective words skipped while looking for a context word: `Order No.`,
/// `ID number is`, `订单号码为`.
const CONNECTIVES: &[&str] = &[
    "number", "num.", "num", "no.", "no", "nr.", "nr", "id", "is", "was", "号码", "号", "码", "为",
    "是", "代码",
];

/// True when the words right before byte `start` end with one of `roots`,
/// after dropping separators (spaces, `:`, `#`, `=`, opening brackets and
/// quotes) and up to three [`CONNECTIVES`]. Words compare ASCII
/// case-insensitively, and an ASCII word must start a word of the text. The
/// search stays within 48 bytes and does not cross a sentence end.
fn context_is(text: &str, start: usize, roots: &[&str]) -> bool {
    let mut from = start.saturating_sub(48);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let mut s = &text[from..start];
    for _ in 0..4 {
        s = s.trim_end_matches(|c: char| {
            c.is_whitespace()
                || matches!(
                    c,
                    ':' | '：' | '#' | '＃' | '=' | '(' | '（' | '"' | '\'' | '“' | '['
                )
        });
        if roots.iter().any(|w| ends_with_word(s, w)) {
            return true;
        }
        match CONNECTIVES.iter().find(|w| ends_with_word(s, w)) {
            Some(w) => s = &s[..s.len() - w.len()],
            None => return false,
        }
    }
    false
}

/// True when the words right before byte `start` mark the number as an
/// order, invoice, ISBN, version… number (see [`NEGATIVE_CONTEXT`]).
pub(crate) fn negative_context(text: &str, start: usize) -> bool {
    context_is(text, start, NEGATIVE_CONTEXT)
}

/// True when the words right before byte `start` name an identity number
/// (`身份证号`, `证件号码：`, `ID number`, `Citizen ID`…) and no negative
/// context applies (`Order ID` is not one).
pub(crate) fn id_context(text: &str, start: usize) -> bool {
    context_is(text, start, ID_CONTEXT) && !negative_context(text, start)
}

/// Words that announce a phone number.
const PHONE_WORDS: &[&str] = &[
    "call",
    "called",
    "calling",
    "phone",
    "phones",
    "telephone",
    "tel",
    "mobile",
    "cell",
    "cellphone",
    "fax",
    "contact",
    "reach",
    "dial",
    "text",
    "sms",
    "whatsapp",
    "number",
    "hotline",
    "voicemail",
    "电话",
    "手机",
    "联系",
    "致电",
    "拨打",
    "热线",
    "号码",
    "传真",
    "座机",
];

/// True when a [`PHONE_WORDS`] word occurs in the 48 bytes before `start`
/// on the same line (ASCII words compare case-insensitively and must be
/// whole words; the name in a `<PHONE>` placeholder is no word).
fn phone_word_before(text: &str, start: usize) -> bool {
    let mut from = start.saturating_sub(48);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let s = &text.as_bytes()[from..start];
    let s = memchr::memrchr(b'\n', s).map_or(s, |k| &s[k + 1..]);
    // ASCII words, split at every other byte; `<PHONE>` is a placeholder,
    // not a word.
    let mut i = 0;
    while i < s.len() {
        if !s[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let w = i;
        while i < s.len() && s[i].is_ascii_alphanumeric() {
            i += 1;
        }
        let word = &s[w..i];
        let placeholder = w > 0 && s[w - 1] == b'<';
        if !placeholder
            && PHONE_WORDS
                .iter()
                .any(|p| p.is_ascii() && word.eq_ignore_ascii_case(p.as_bytes()))
        {
            return true;
        }
    }
    PHONE_WORDS
        .iter()
        .filter(|p| !p.is_ascii())
        .any(|p| s.windows(p.len()).any(|x| x == p.as_bytes()))
}

/// `s` ends with `word` (ASCII case-insensitively), and an ASCII `word` is
/// not the tail of a longer ASCII word.
fn ends_with_word(s: &str, word: &str) -> bool {
    let (sb, wb) = (s.as_bytes(), word.as_bytes());
    if sb.len() < wb.len() || !sb[sb.len() - wb.len()..].eq_ignore_ascii_case(wb) {
        return false;
    }
    let head = &sb[..sb.len() - wb.len()];
    !(wb[0].is_ascii_alphabetic() && head.last().is_some_and(u8::is_ascii_alphanumeric))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phones(text: &str) -> Vec<&str> {
        let m = NumberMatcher::new().expect("patterns compile");
        let mut out = Vec::new();
        m.scan(text, &mut out);
        super::super::resolve(out)
            .iter()
            .filter(|c| c.kind == PiiKind::Phone)
            .map(|c| &text[c.start..c.end])
            .collect()
    }

    #[test]
    fn phone_shapes() {
        for p in [
            "13812345678",
            "+86 138 1234 5678",
            "+86-13812345678",
            "0086 13812345678",
            "(+86)13812345678",
            "（+86）138-1234-5678",
            "010-62345678",
            "(0755) 8888 6666",
            "0701-6234567",
            "(0903)2345678",
            "（0755）88886666",
            "0755-8888-6666",
            "+86 10 8765 4321",
            "021-6543210",
            "010-62345678转801",
            "(415) 555-0132",
            "415-555-0132",
            "415.555.0132",
            "+1 415 555 0132",
            "+1-540-611-0704x6563",
            "001-459-329-2244x696",
            "(249)381-7410x409",
            "7758983867",
            "+44 20 7946 0958",
            "+49-30-12345678",
            "+33 1 23 45 67 89",
        ] {
            let text = format!("电话{p}，call {p}.");
            assert_eq!(phones(&text), vec![p, p], "{text}");
        }
    }

    #[test]
    fn not_phones() {
        for t in [
            "2023-10-05",
            "20231005",
            "2023年10月5日",
            "12:30:45",
            "v1.2.3",
            "$1,299.99",
            "订单号13812345678",
            "Order #4155550132",
            "ISBN 7111547428",
            "978-7-111-54742-6",
            "0.13812345678",
            "138123456789",
            "013812345678",
            "1381234567",
            "12345678901234567890",
            "ab13812345678",
            "13812345678ab",
            "138-1234-56789",
            "01012345678",
            "2654435761",
            "0604 3430 8238",
            "0301-2345678",
        ] {
            assert!(phones(t).is_empty(), "{t}: {:?}", phones(t));
        }
    }

    proptest::proptest! {
        #[test]
        fn next_digit_matches_naive(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), from in 0usize..64) {
            let from = from.min(bytes.len());
            let naive = bytes[from..].iter().position(u8::is_ascii_digit).map(|k| from + k);
            proptest::prop_assert_eq!(next_digit(&bytes, from), naive);
        }
    }

    #[test]
    fn contexts() {
        assert!(negative_context("订单号：", 12));
        assert!(negative_context("Order No. ", 10));
        assert!(negative_context("ISBN-13: ", 9));
        assert!(negative_context("tracking number is ", 19));
        assert!(!negative_context("Tel. No. ", 9));
        assert!(!negative_context("reorder", 7));
        assert!(!negative_context("电话：", 9));
        assert!(!negative_context("ok order. (", 11));
        assert!(id_context("身份证号码：", 18));
        assert!(id_context("Her resident ID is ", 19));
        assert!(id_context("ID number: ", 11));
        assert!(id_context("公民身份号码", 18));
        assert!(!id_context("Order ID: ", 10));
        assert!(!id_context("paid ", 5));
        assert!(after_placeholder_open("x <PHONE"));
        assert!(!after_placeholder_open("PHONE"));
    }
}
