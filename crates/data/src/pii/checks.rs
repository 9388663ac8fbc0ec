//! Checksums and plausibility rules for numeric identifiers: the Luhn check
//! of payment cards, the ISO 7064 MOD 11-2 check character of PRC resident
//! identity numbers, calendar dates and region codes, and the issuer
//! prefixes (IIN) and lengths of payment card brands.
//!
//! Each function takes ASCII digits (the caller has already removed
//! separators) and is checked against a naive transcription of its
//! definition by the property tests at the bottom of this file.

/// True when `digits` (ASCII digits only, at least two) passes the Luhn
/// check: doubling every second digit from the right, the digit sum is a
/// multiple of 10.
pub(crate) fn luhn_valid(digits: &[u8]) -> bool {
    if digits.len() < 2 {
        return false;
    }
    // Digit sums of 2·d for d in 0..=9.
    const DOUBLED: [u32; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    let mut sum = 0u32;
    for (i, &b) in digits.iter().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        let d = (b - b'0') as usize;
        sum += if i % 2 == 1 { DOUBLED[d] } else { d as u32 };
    }
    sum.is_multiple_of(10)
}

/// The ISO 7064 MOD 11-2 check character (`0`–`9` or `X`) of the first 17
/// digits of an 18-character PRC resident identity number (GB 11643-1999).
/// `None` when `first17` is not 17 ASCII digits.
pub(crate) fn ric_check_char(first17: &[u8]) -> Option<u8> {
    // Weights 2^(17-i) mod 11 for positions i = 0..16.
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    if first17.len() != 17 {
        return None;
    }
    let mut sum = 0u32;
    for (&b, &w) in first17.iter().zip(WEIGHTS.iter()) {
        if !b.is_ascii_digit() {
            return None;
        }
        sum += u32::from(b - b'0') * w;
    }
    let check = (12 - sum % 11) % 11;
    Some(if check == 10 {
        b'X'
    } else {
        b'0' + check as u8
    })
}

/// True for a Gregorian calendar date.
pub(crate) fn valid_date(year: u32, month: u32, day: u32) -> bool {
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// The value of a run of ASCII digits (at most 9 of them).
pub(crate) fn digits_value(digits: &[u8]) -> u32 {
    digits
        .iter()
        .fold(0u32, |acc, &b| acc * 10 + u32::from(b.wrapping_sub(b'0')))
}

/// True when the first two digits are a PRC province-level division code
/// (GB/T 2260): 11–15, 21–23, 31–37, 41–46, 50–54, 61–65, and 71, 81, 82,
/// 83 (Taiwan, Hong Kong, Macao and the residence permits of their
/// residents).
pub(crate) fn plausible_region(digits: &[u8]) -> bool {
    if digits.len() < 6 {
        return false;
    }
    matches!(digits_value(&digits[..2]), 11..=15 | 21..=23 | 31..=37 | 41..=46 | 50..=54 | 61..=65 | 71 | 81..=83)
}

/// True for an 18-character resident identity number: 17 ASCII digits and a
/// check character (`X` or `x` for ten), a plausible region code, a birth
/// date between 1880 and 2099 that exists, and a correct MOD 11-2 check.
pub(crate) fn valid_ric18(id: &[u8]) -> bool {
    ric18_shaped(id) && ric_check_char(&id[..17]) == Some(id[17].to_ascii_uppercase())
}

/// True when 18 characters start like a resident identity number: a
/// plausible region code and a birth year between 1880 and 2099, whatever
/// the date and check character that follow.
pub(crate) fn ric18_prefix_shaped(id: &[u8]) -> bool {
    id.len() == 18
        && plausible_region(id)
        && id[6..10].iter().all(u8::is_ascii_digit)
        && (1880..=2099).contains(&digits_value(&id[6..10]))
}

/// True when 18 characters have the structure of a resident identity number
/// (a plausible region code and an existing birth date between 1880 and
/// 2099), whatever their check character.
pub(crate) fn ric18_shaped(id: &[u8]) -> bool {
    if !ric18_prefix_shaped(id) || !id[10..14].iter().all(u8::is_ascii_digit) {
        return false;
    }
    valid_date(
        digits_value(&id[6..10]),
        digits_value(&id[10..12]),
        digits_value(&id[12..14]),
    )
}

/// True for a 15-digit resident identity number of the first generation
/// (issued until 2004, no check digit): a plausible region code and a valid
/// birth date `YYMMDD` in the 1900s.
pub(crate) fn valid_ric15(id: &[u8]) -> bool {
    id.len() == 15
        && id.iter().all(u8::is_ascii_digit)
        && plausible_region(id)
        && valid_date(
            1900 + digits_value(&id[6..8]),
            digits_value(&id[8..10]),
            digits_value(&id[10..12]),
        )
}

/// True when a payment card number (ASCII digits) has a known issuer prefix
/// for its length. The table follows ISO/IEC 7812 issuer identification
/// numbers as the networks publish them and as card-type detection tables
/// (creditcardjs, which Faker follows) list them: Visa 4 (13, 16, 19
/// digits); Mastercard 51–55 and 2221–2720 (16); American Express 34, 37
/// (15); Diners Club 300–305, 309, 36, 38, 39 (14–19); Discover 6011,
/// 644–649, 65, 622126–622925 (16–19); JCB 35 (16–19; JCB's own range is
/// 3528–3589) and 2131, 1800 (15); UnionPay 62, 81 (16–19); Mir 2200–2204;
/// RuPay 60, 508, 82; Troy 9792; Maestro 5018, 5020, 5038, 5893, 6304, 6390,
/// 6759, 6761–6763, 56–58 and 0604 (12–19).
pub(crate) fn known_card_prefix(digits: &[u8]) -> bool {
    let len = digits.len();
    if !(12..=19).contains(&len) {
        return false;
    }
    let p = |n: usize| digits_value(&digits[..n]);
    let (p1, p2, p3, p4, p6) = (p(1), p(2), p(3), p(4), p(6));
    let maestro = matches!(
        p4,
        604 | 5018 | 5020 | 5038 | 5893 | 6304 | 6390 | 6759 | 6761..=6763
    ) || matches!(p2, 56..=58);
    if maestro {
        return true;
    }
    if len < 13 {
        return false;
    }
    match p1 {
        // Visa.
        4 => matches!(len, 13 | 16 | 19),
        // JCB (15-digit, 2131 and 1800), Mastercard 2-series, Mir.
        1 | 2 => {
            (len == 15 && matches!(p4, 2131 | 1800))
                || (len == 16 && (2221..=2720).contains(&p4))
                || ((16..=19).contains(&len) && (2200..=2204).contains(&p4))
        }
        3 => match p2 {
            // American Express.
            34 | 37 => len == 15,
            // Diners Club International (300–305, 309, 36, 38, 39).
            30 | 36 | 38 | 39 => {
                (p2 != 30 || matches!(p3, 300..=305 | 309)) && (14..=19).contains(&len)
            }
            // JCB.
            35 => (16..=19).contains(&len),
            _ => false,
        },
        // Mastercard, RuPay 508.
        5 => ((51..=55).contains(&p2) || p3 == 508) && len == 16,
        // Discover, UnionPay, RuPay, Troy-like 6-series.
        6 => {
            (16..=19).contains(&len)
                && (p4 == 6011
                    || (644..=649).contains(&p3)
                    || p2 == 65
                    || p2 == 62
                    || p2 == 60
                    || (622126..=622925).contains(&p6))
        }
        // UnionPay 81, RuPay 81/82.
        8 => matches!(p2, 81 | 82) && (16..=19).contains(&len),
        // Troy.
        9 => p4 == 9792 && len == 16,
        _ => false,
    }
}

/// True for a payment card number: a known prefix for its length and a
/// valid Luhn check.
pub(crate) fn valid_card(digits: &[u8]) -> bool {
    known_card_prefix(digits) && luhn_valid(digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Luhn from its definition: double every second digit from the right,
    /// add the digits of every product, sum.
    fn luhn_naive(s: &str) -> bool {
        s.len() >= 2
            && s.chars()
                .rev()
                .enumerate()
                .map(|(i, c)| {
                    let d = c.to_digit(10).unwrap_or(0) * if i % 2 == 1 { 2 } else { 1 };
                    d / 10 + d % 10
                })
                .sum::<u32>()
                % 10
                == 0
    }

    /// ISO 7064 MOD 11-2 from its definition: sum of d_i · 2^(17-i) plus the
    /// check value is ≡ 1 (mod 11).
    fn ric_naive(first17: &str) -> char {
        let s: u64 = first17
            .chars()
            .enumerate()
            .map(|(i, c)| u64::from(c.to_digit(10).unwrap_or(0)) * (1u64 << (17 - i)))
            .sum();
        let check = (0..11u64).find(|c| (s + c) % 11 == 1).unwrap_or(0);
        if check == 10 {
            'X'
        } else {
            char::from(b'0' + check as u8)
        }
    }

    #[test]
    fn known_values() {
        assert!(luhn_valid(b"4111111111111111"));
        assert!(!luhn_valid(b"4111111111111112"));
        assert!(luhn_valid(b"79927398713"));
        assert_eq!(ric_check_char(b"11010519491231002"), Some(b'X'));
        assert!(valid_ric18(b"11010519491231002X"));
        assert!(valid_ric18(b"11010519491231002x"));
        assert!(!valid_ric18(b"110105194912310021"));
        // Checksum right but 31 February.
        let mut id = b"11010519490231002".to_vec();
        id.push(ric_check_char(&id).unwrap_or(b'0'));
        assert!(!valid_ric18(&id));
        assert!(valid_ric15(b"110105491231002"));
        assert!(!valid_ric15(b"110105491331002"));
        assert!(valid_card(b"4111111111111111"));
        assert!(valid_card(b"378282246310005"));
        assert!(valid_card(b"6011111111111117"));
        assert!(valid_card(b"3530111333300000"));
        assert!(valid_card(b"5555555555554444"));
        assert!(valid_card(b"2223003122003222"));
        assert!(valid_card(b"6200000000000005"));
        assert!(!valid_card(b"1234567812345670"));
        assert!(valid_date(2024, 2, 29));
        assert!(!valid_date(2023, 2, 29));
        assert!(!valid_date(1900, 2, 29));
        assert!(valid_date(2000, 2, 29));
    }

    proptest! {
        #[test]
        fn luhn_matches_naive(s in "[0-9]{2,24}") {
            prop_assert_eq!(luhn_valid(s.as_bytes()), luhn_naive(&s));
        }

        #[test]
        fn ric_check_matches_naive(s in "[0-9]{17}") {
            prop_assert_eq!(ric_check_char(s.as_bytes()).map(char::from), Some(ric_naive(&s)));
        }
    }
}
