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

    /// Rewrites bytes `range` of the text with `dest`, HF's way: each new
    /// character comes with a change (`0` replaces the next old character,
    /// `-N` replaces it and removes the N after it, `1` is inserted and shares
    /// the span of the byte before it); `removed_first` old characters are
    /// dropped before the first new one.
    pub fn transform_range(
        &mut self,
        range: std::ops::Range<usize>,
        dest: impl IntoIterator<Item = (char, isize)>,
        removed_first: usize,
    ) {
        let old: Vec<char> = self.text[range.clone()].chars().collect();
        let mut old = old.into_iter();
        let mut offset = range.start
            + (&mut old)
                .take(removed_first)
                .map(char::len_utf8)
                .sum::<usize>();
        let mut text = String::new();
        let mut spans = Vec::new();
        for (c, change) in dest {
            let span = if change > 0 {
                if offset == 0 {
                    (0, 0)
                } else {
                    self.spans[offset - 1]
                }
            } else {
                self.spans.get(offset).copied().unwrap_or((0, 0))
            };
            if change <= 0 {
                offset += old.next().map_or(0, char::len_utf8);
            }
            if change < 0 {
                offset += (&mut old)
                    .take((-change) as usize)
                    .map(char::len_utf8)
                    .sum::<usize>();
            }
            text.push(c);
            spans.extend(std::iter::repeat_n(span, c.len_utf8()));
        }
        self.spans.splice(range.clone(), spans);
        self.text.replace_range(range, &text);
    }

    /// Rewrites the whole text (see [`Aligned::transform_range`]).
    pub fn transform(
        &mut self,
        dest: impl IntoIterator<Item = (char, isize)>,
        removed_first: usize,
    ) {
        self.transform_range(0..self.text.len(), dest, removed_first);
    }

    /// Puts `prefix` in front; it shares the span of the first character.
    pub fn prepend(&mut self, prefix: &str) {
        if let Some(first) = self.text.chars().next() {
            let dest: Vec<(char, isize)> = prefix
                .chars()
                .enumerate()
                .map(|(i, c)| (c, isize::from(i != 0)))
                .chain([(first, 1)])
                .collect();
            self.transform_range(0..first.len_utf8(), dest, 0);
        }
    }

    /// Replaces each of the byte ranges `matches` (sorted, disjoint) with
    /// `content`, which takes the span of the last character it replaces.
    pub fn replace_ranges(&mut self, matches: &[(usize, usize)], content: &str) {
        let mut shift: isize = 0;
        for &(a, b) in matches {
            let (a, b) = ((a as isize + shift) as usize, (b as isize + shift) as usize);
            let removed = self.text[a..b].chars().count();
            self.transform_range(a..b, content.chars().map(|c| (c, 1)), removed);
            shift += content.len() as isize - (b - a) as isize;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_and_replace_follow_hf_alignment() {
        let mut a = Aligned::identity("你好 x", 0);
        a.prepend(" ");
        assert_eq!(a.text, " 你好 x");
        assert_eq!(a.spans[0], (0, 3));
        assert_eq!(a.spans[1], (0, 3));
        assert_eq!(a.original(0, 1), (0, 3));
        let spaces: Vec<(usize, usize)> =
            a.text.match_indices(' ').map(|(i, _)| (i, i + 1)).collect();
        a.replace_ranges(&spaces, "▁");
        assert_eq!(a.text, "▁你好▁x");
        assert_eq!(a.original(0, 3), (0, 3));
        assert_eq!(a.original(9, 12), (6, 7));
    }
}
