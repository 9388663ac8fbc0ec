//! A small parser for flat JSON objects: `{"key": value, …}` where every value
//! is a string, a number, `true`, `false` or `null`.
//!
//! Benchmarks (ours and the Python peers) print one such object per line.
//! xtask avoids a serde dependency to stay quick to build, and these lines
//! need nothing more.

use std::fmt;

/// A value of a flat JSON object.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string, with escapes decoded.
    Str(String),
    /// A number.
    Num(f64),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// A flat JSON object, keys in the order they appear.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Object {
    fields: Vec<(String, Value)>,
}

impl Object {
    /// The value of `key` (the last one if the key repeats).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The string value of `key`, if it is a string.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The numeric value of `key`, if it is a number.
    pub fn num(&self, key: &str) -> Option<f64> {
        match self.get(key)? {
            Value::Num(n) => Some(*n),
            _ => None,
        }
    }
}

/// Why a line is not a flat JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Byte offset in the input where the problem was found.
    pub offset: usize,
    /// What was expected or found.
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.message, self.offset)
    }
}

impl std::error::Error for Error {}

/// Parses `text` (surrounding whitespace allowed) as one flat JSON object.
pub fn parse(text: &str) -> Result<Object, Error> {
    let mut p = Parser {
        src: text.as_bytes(),
        pos: 0,
    };
    let object = p.object()?;
    p.skip_ws();
    if p.pos != p.src.len() {
        return Err(p.error("trailing characters after the object"));
    }
    Ok(object)
}

/// Cursor over the input bytes.
struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> Error {
        Error {
            offset: self.pos,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), Error> {
        self.skip_ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(format!("expected `{}`", byte as char)))
        }
    }

    fn object(&mut self) -> Result<Object, Error> {
        self.expect(b'{')?;
        let mut object = Object::default();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(object);
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key"));
            }
            let key = self.string()?;
            self.expect(b':')?;
            let value = self.value()?;
            object.fields.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(object);
                }
                _ => return Err(self.error("expected `,` or `}`")),
            }
        }
    }

    fn value(&mut self) -> Result<Value, Error> {
        self.skip_ws();
        match self.peek() {
            Some(b'"') => self.string().map(Value::Str),
            Some(b'-' | b'0'..=b'9') => self.number().map(Value::Num),
            Some(b't') => self.keyword("true", Value::Bool(true)),
            Some(b'f') => self.keyword("false", Value::Bool(false)),
            Some(b'n') => self.keyword("null", Value::Null),
            Some(b'{' | b'[') => Err(self.error("nested objects and arrays are not supported")),
            Some(_) => Err(self.error("expected a value")),
            None => Err(self.error("unexpected end of input")),
        }
    }

    fn keyword(&mut self, word: &str, value: Value) -> Result<Value, Error> {
        if self.src[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("expected a value"))
        }
    }

    /// A JSON number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Result<f64, Error> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            let from = p.pos;
            while matches!(p.peek(), Some(b'0'..=b'9')) {
                p.pos += 1;
            }
            p.pos - from
        };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        let n = digits(self);
        if n == 0 || (n > 1 && self.src[int_start] == b'0') {
            return Err(self.error("malformed number"));
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if digits(self) == 0 {
                return Err(self.error("malformed number: no digits after `.`"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(self.error("malformed number: no digits in exponent"));
            }
        }
        // The slice holds only ASCII digits, signs, `.` and `e`.
        let text = std::str::from_utf8(&self.src[start..self.pos])
            .map_err(|_| self.error("malformed number"))?;
        text.parse()
            .map_err(|_| self.error(format!("malformed number `{text}`")))
    }

    /// A string starting at the opening quote; escapes are decoded.
    fn string(&mut self) -> Result<String, Error> {
        self.pos += 1; // opening quote
        let mut out = Vec::new();
        loop {
            let Some(byte) = self.peek() else {
                return Err(self.error("unterminated string"));
            };
            self.pos += 1;
            match byte {
                b'"' => break,
                b'\\' => {
                    let Some(esc) = self.peek() else {
                        return Err(self.error("unterminated string"));
                    };
                    self.pos += 1;
                    let decoded = match esc {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return Err(self.error("unknown escape")),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(decoded.encode_utf8(&mut buf).as_bytes());
                }
                0x00..=0x1f => return Err(self.error("control character in string")),
                _ => out.push(byte),
            }
        }
        // The input is a `&str` and escapes were encoded as UTF-8, so this
        // cannot fail; map the error anyway rather than unwrap.
        String::from_utf8(out).map_err(|_| self.error("invalid UTF-8 in string"))
    }

    /// The `XXXX` after `\u`, joining a surrogate pair when one follows.
    fn unicode_escape(&mut self) -> Result<char, Error> {
        let first = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&first) {
            if !self.src[self.pos..].starts_with(b"\\u") {
                return Err(self.error("unpaired surrogate"));
            }
            self.pos += 2;
            let second = self.hex4()?;
            if !(0xDC00..0xE000).contains(&second) {
                return Err(self.error("unpaired surrogate"));
            }
            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        } else {
            first
        };
        char::from_u32(code).ok_or_else(|| self.error("invalid \\u escape"))
    }

    fn hex4(&mut self) -> Result<u32, Error> {
        let digits = self
            .src
            .get(self.pos..self.pos + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error("expected four hex digits after \\u"))?;
        let value = u32::from_str_radix(digits, 16)
            .map_err(|_| self.error("expected four hex digits after \\u"))?;
        self.pos += 4;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_benchmark_line() {
        let line = r#"{"area":"gemm","name":"sgemm","size":1024,"threads":1,"median_s":0.01,"gflops":123.4}"#;
        let o = parse(line).unwrap();
        assert_eq!(o.str("area"), Some("gemm"));
        assert_eq!(o.str("name"), Some("sgemm"));
        assert_eq!(o.num("size"), Some(1024.0));
        assert_eq!(o.num("threads"), Some(1.0));
        assert_eq!(o.num("median_s"), Some(0.01));
        assert_eq!(o.num("gflops"), Some(123.4));
        assert_eq!(o.num("gbps"), None);
        assert_eq!(o.str("size"), None, "a number is not a string");
    }

    #[test]
    fn parses_whitespace_literals_and_exponents() {
        let o = parse(
            " { \"a\" : -1.5e-3 , \"b\": true, \"c\":false,\"d\" :null, \"e\": 0, \"f\": 2E+2 }\n",
        )
        .unwrap();
        assert_eq!(o.num("a"), Some(-1.5e-3));
        assert_eq!(o.get("b"), Some(&Value::Bool(true)));
        assert_eq!(o.get("c"), Some(&Value::Bool(false)));
        assert_eq!(o.get("d"), Some(&Value::Null));
        assert_eq!(o.num("e"), Some(0.0));
        assert_eq!(o.num("f"), Some(200.0));
        assert_eq!(parse("{}").unwrap(), Object::default());
    }

    #[test]
    fn decodes_string_escapes() {
        let o = parse(r#"{"s":"a\"b\\c\/d\n\t\u00e9\u5f00\ud83d\ude00 raw 源"}"#).unwrap();
        assert_eq!(o.str("s"), Some("a\"b\\c/d\n\té开😀 raw 源"));
    }

    #[test]
    fn later_duplicate_key_wins() {
        let o = parse(r#"{"k":1,"k":2}"#).unwrap();
        assert_eq!(o.num("k"), Some(2.0));
    }

    #[test]
    fn rejects_malformed_input() {
        for bad in [
            "",
            "[]",
            "{",
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{"a":1 "b":2}"#,
            r#"{a:1}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":+1}"#,
            r#"{"a":tru}"#,
            r#"{"a":"unterminated}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"\ud83d"}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":{"b":1}}"#,
            r#"{"a":[1]}"#,
            r#"{"a":1} x"#,
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn error_names_the_offset() {
        let err = parse(r#"{"a":1 "b":2}"#).unwrap_err();
        assert_eq!(err.offset, 7);
        assert!(err.to_string().contains("byte 7"), "{err}");
    }
}
