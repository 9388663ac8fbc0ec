//! Token shards: flat files of token ids for training, read memory-mapped.
//!
//! Layout (little-endian; see `docs/formats.md`):
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `KYTOKENS` |
//! | 8..12 | format version, `1` |
//! | 12..16 | bytes per token, `2` (u16) or `4` (u32) |
//! | 16..20 | end-of-document id written after every document |
//! | 20..24 | reserved, `0` |
//! | 24..32 | number of tokens |
//! | 32.. | the tokens |
//!
//! Writers write to a temporary file and rename it into place when
//! finished, so a shard is either complete or absent.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::{Result, TokenizerError};

/// The first eight bytes of every shard.
pub const SHARD_MAGIC: &[u8; 8] = b"KYTOKENS";
/// The format version this crate writes and reads.
pub const SHARD_VERSION: u32 = 1;
const HEADER: usize = 32;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TokenizerError + '_ {
    move |source| TokenizerError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes one shard.
pub struct ShardWriter {
    path: PathBuf,
    temp: PathBuf,
    out: BufWriter<std::fs::File>,
    token_bytes: u32,
    eos: u32,
    count: u64,
}

impl ShardWriter {
    /// Starts a shard at `path` for a vocabulary of `vocab_size` ids (u16
    /// tokens when they fit, else u32) with `eos` between documents.
    pub fn create(path: impl AsRef<Path>, vocab_size: usize, eos: u32) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let temp = path.with_extension("partial");
        let file = std::fs::File::create(&temp).map_err(io(&temp))?;
        let token_bytes = if vocab_size <= 1 << 16 { 2 } else { 4 };
        if token_bytes == 2 && eos > u32::from(u16::MAX) {
            return Err(TokenizerError::Invalid(format!(
                "end-of-document id {eos} does not fit in u16 tokens"
            )));
        }
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; HEADER]).map_err(io(&temp))?;
        Ok(Self {
            path,
            temp,
            out,
            token_bytes,
            eos,
            count: 0,
        })
    }

    /// Appends one document's ids followed by the end-of-document id.
    pub fn write_document(&mut self, ids: &[u32]) -> Result<()> {
        for &id in ids.iter().chain(std::iter::once(&self.eos)) {
            if self.token_bytes == 2 {
                let small = u16::try_from(id).map_err(|_| {
                    TokenizerError::Invalid(format!("id {id} does not fit in a u16 shard"))
                })?;
                self.out
                    .write_all(&small.to_le_bytes())
                    .map_err(io(&self.temp))?;
            } else {
                self.out
                    .write_all(&id.to_le_bytes())
                    .map_err(io(&self.temp))?;
            }
        }
        self.count += ids.len() as u64 + 1;
        Ok(())
    }

    /// Number of tokens written so far (end-of-document ids included).
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes the header and moves the shard into place.
    pub fn finish(mut self) -> Result<PathBuf> {
        use std::io::{Seek, SeekFrom};
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(SHARD_MAGIC);
        header.extend_from_slice(&SHARD_VERSION.to_le_bytes());
        header.extend_from_slice(&self.token_bytes.to_le_bytes());
        header.extend_from_slice(&self.eos.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&self.count.to_le_bytes());
        self.out.flush().map_err(io(&self.temp))?;
        let mut file = self.out.into_inner().map_err(|e| TokenizerError::Io {
            path: self.temp.clone(),
            source: e.into_error(),
        })?;
        file.seek(SeekFrom::Start(0)).map_err(io(&self.temp))?;
        file.write_all(&header).map_err(io(&self.temp))?;
        file.sync_all().map_err(io(&self.temp))?;
        std::fs::rename(&self.temp, &self.path).map_err(io(&self.path))?;
        Ok(self.path)
    }
}

/// A shard opened for reading (memory-mapped).
pub struct Shard {
    map: memmap2::Mmap,
    token_bytes: u32,
    eos: u32,
    count: usize,
}

impl Shard {
    /// Opens and checks a shard: magic, version, token width, and that the
    /// file holds exactly the tokens the header announces.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(io(path))?;
        // SAFETY: the map is read-only; shards are written to a temporary file
        // and renamed into place, so a finished shard is not modified while
        // mapped (a concurrent external writer would be a misuse we cannot detect).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io(path))?;
        let bad = |reason: String| {
            TokenizerError::bad_entry(&path.display().to_string(), "header", reason)
        };
        if map.len() < HEADER || &map[..8] != SHARD_MAGIC {
            return Err(bad("not a token shard (magic `KYTOKENS` missing)".into()));
        }
        let word = |at: usize| u32::from_le_bytes([map[at], map[at + 1], map[at + 2], map[at + 3]]);
        let version = word(8);
        if version != SHARD_VERSION {
            return Err(bad(format!(
                "format version {version}, this build reads {SHARD_VERSION}"
            )));
        }
        let token_bytes = word(12);
        if token_bytes != 2 && token_bytes != 4 {
            return Err(bad(format!(
                "{token_bytes} bytes per token (expected 2 or 4)"
            )));
        }
        let mut count_bytes = [0u8; 8];
        count_bytes.copy_from_slice(&map[24..32]);
        let count = u64::from_le_bytes(count_bytes);
        let expected = (count as u128) * u128::from(token_bytes) + HEADER as u128;
        if expected != map.len() as u128 {
            return Err(bad(format!(
                "header announces {count} tokens ({expected} bytes) but the file has {} bytes",
                map.len()
            )));
        }
        Ok(Self {
            eos: word(16),
            token_bytes,
            count: count as usize,
            map,
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the shard holds no token.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The end-of-document id.
    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// Token `i` (`None` past the end).
    pub fn get(&self, i: usize) -> Option<u32> {
        if i >= self.count {
            return None;
        }
        let at = HEADER + i * self.token_bytes as usize;
        let b = &self.map[at..at + self.token_bytes as usize];
        Some(match b {
            [a, b] => u32::from(u16::from_le_bytes([*a, *b])),
            [a, b, c, d] => u32::from_le_bytes([*a, *b, *c, *d]),
            _ => return None,
        })
    }

    /// Tokens `start..end` copied out as u32 (clamped to the shard).
    pub fn range(&self, start: usize, end: usize) -> Vec<u32> {
        (start.min(self.count)..end.min(self.count))
            .filter_map(|i| self.get(i))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_round_trip_and_reject_damage() {
        let dir = std::env::temp_dir().join(format!("kaiyuan-shard-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (vocab, ids) in [
            (50_000usize, vec![1u32, 2, 49_999]),
            (100_000, vec![70_000, 3]),
        ] {
            let path = dir.join(format!("s{vocab}.bin"));
            let mut w = ShardWriter::create(&path, vocab, 0).unwrap();
            w.write_document(&ids).unwrap();
            w.write_document(&[]).unwrap();
            assert_eq!(w.finish().unwrap(), path);
            let s = Shard::open(&path).unwrap();
            let mut want = ids.clone();
            want.extend([0, 0]);
            assert_eq!(s.range(0, 100), want);
            assert_eq!(s.eos(), 0);
            // Truncation is detected.
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
            let e = Shard::open(&path).err().unwrap().to_string();
            assert!(
                e.contains("announces") && e.contains(&path.display().to_string()),
                "{e}"
            );
            std::fs::write(&path, b"garbage").unwrap();
            assert!(
                Shard::open(&path)
                    .err()
                    .unwrap()
                    .to_string()
                    .contains("magic")
            );
        }
        let mut w = ShardWriter::create(dir.join("small.bin"), 10, 0).unwrap();
        assert!(w.write_document(&[70_000]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
