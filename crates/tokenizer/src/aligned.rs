//! Text that remembers, for every byte, the span of the original input it
//! came from — so token offsets survive normalizers and pre-tokenizers that
//! rewrite text.

/// A piece of (possibly rewritten) text with a source span per byte.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Aligned {
    pub text: String,
    /// `spans[i]` is the original byte span of `text`'s byte `i`.
    pub spans: Vec<(usize, usize)>,
}

impl Aligned {
    /// `text` as found at byte `base` of the original.
    pub fn identity(text: &str, base: usize) -> Self {
        let mut spans = Vec::with_capacity(text.len());
        for (i, c) in text.char_indices() {
            let span = (base + i, base + i + c.len_utf8());
            spans.extend(std::iter::repeat_n(span, c.len_utf8()));
        }
        Self {
            text: text.to_owned(),
            spans,
        }
    }

    /// Appends `s`, every byte of it coming from `span`.
    pub fn push(&mut self, s: &str, span: (usize, usize)) {
        self.text.push_str(s);
        self.spans.extend(std::iter::repeat_n(span, s.len()));
    }

    /// Appends bytes `range` of `other` with their spans.
    pub fn push_from(&mut self, other: &Aligned, start: usize, end: usize) {
        self.text.push_str(&other.text[start..end]);
        self.spans.extend_from_slice(&other.spans[start..end]);
    }

    /// The sub-piece of bytes `start..end` (char boundaries).
    pub fn slice(&self, start: usize, end: usize) -> Aligned {
        Aligned {
            text: self.text[start..end].to_owned(),
            spans: self.spans[start..end].to_vec(),
        }
    }

    /// The original span of bytes `start..end` of this text.
    pub fn original(&self, start: usize, end: usize) -> (usize, usize) {
        if start >= end || self.spans.is_empty() {
            let at = self
                .spans
                .get(start)
                .or(self.spans.last())
                .map_or(0, |s| s.0);
            return (at, at);
        }
        (self.spans[start].0, self.spans[end - 1].1)
    }

    /// Maps every character through `f` (which may return several
    /// characters); each output character keeps its input character's span.
    pub fn map_chars(&self, mut f: impl FnMut(char, &mut String)) -> Aligned {
        let mut out = Aligned::default();
        let mut buffer = String::new();
        for (i, c) in self.text.char_indices() {
            buffer.clear();
            f(c, &mut buffer);
            out.push(&buffer, self.original(i, i + c.len_utf8()));
        }
        out
    }
}
