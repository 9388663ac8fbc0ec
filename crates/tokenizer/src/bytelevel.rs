//! GPT-2's reversible map from bytes to printable characters, used by
//! byte-level BPE vocabularies to store arbitrary bytes as JSON strings.

use std::sync::OnceLock;

/// The character that stands for each byte: printable Latin-1 bytes stand for
/// themselves; the other 68 bytes take the code points from U+0100 upward in
/// byte order.
pub fn byte_to_char() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let printable =
            |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        let mut table = ['\0'; 256];
        let mut next = 0x100u32;
        for b in 0..=255u8 {
            table[b as usize] = if printable(b) {
                char::from(b)
            } else {
                let c = char::from_u32(next).unwrap_or('\u{FFFD}');
                next += 1;
                c
            };
        }
        table
    })
}

/// The byte a character of the byte-level alphabet stands for.
pub fn char_to_byte(c: char) -> Option<u8> {
    static TABLE: OnceLock<rustc_hash::FxHashMap<char, u8>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            byte_to_char()
                .iter()
                .enumerate()
                .map(|(b, &c)| (c, b as u8))
                .collect()
        })
        .get(&c)
        .copied()
}

/// Decodes a byte-level token string to its bytes; `None` if a character is
/// outside the alphabet.
pub fn decode_token(token: &str) -> Option<Vec<u8>> {
    token.chars().map(char_to_byte).collect()
}

/// Encodes bytes as a byte-level token string.
pub fn encode_bytes(bytes: &[u8]) -> String {
    let table = byte_to_char();
    bytes.iter().map(|&b| table[b as usize]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_is_a_bijection_matching_gpt2() {
        let table = byte_to_char();
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(table[b'a' as usize], 'a');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(table[b as usize]), Some(b));
        }
        assert_eq!(decode_token("Ġhello"), Some(b" hello".to_vec()));
        assert_eq!(encode_bytes(" hi\n".as_bytes()), "ĠhiĊ");
        assert_eq!(decode_token("中"), None);
    }
}
