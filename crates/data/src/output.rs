//! Writing outputs atomically: every file is written beside its final name
//! and renamed into place once complete, so a reader never sees half a
//! shard or report, and a crashed run leaves the previous outputs intact.

use crate::error::{DataError, Result};
use serde::Deserialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A file being written under a temporary name; [`AtomicFile::commit`]
/// flushes, syncs and renames it. Dropped uncommitted, it deletes itself.
pub struct AtomicFile {
    temp: PathBuf,
    path: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Starts writing `path` (as `.<name>.tmp-<pid>` in the same directory).
    pub fn create(path: &Path) -> Result<Self> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("output");
        let temp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let file = File::create(&temp).map_err(|e| DataError::io(&temp, e))?;
        Ok(AtomicFile {
            temp,
            path: path.to_path_buf(),
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Finishes the file and renames it into place.
    pub fn commit(mut self) -> Result<()> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let file = writer
            .into_inner()
            .map_err(|e| DataError::io(&self.temp, e.into_error()))?;
        file.sync_all().map_err(|e| DataError::io(&self.temp, e))?;
        std::fs::rename(&self.temp, &self.path).map_err(|e| DataError::io(&self.path, e))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.writer {
            Some(w) => w.write(buf),
            None => Err(std::io::Error::other("file already committed")),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match &mut self.writer {
            Some(w) => w.write_all(buf),
            None => Err(std::io::Error::other("file already committed")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.writer {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes).map_err(|e| DataError::io(path, e))?;
    file.commit()
}

/// Output settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Start a new shard once a shard holds this many (uncompressed) bytes.
    pub shard_bytes: u64,
    /// `none` (default), `gzip` or `zstd`; compressed shards are named
    /// `shard-00000.jsonl.gz` / `.jsonl.zst`.
    pub compression: Compression,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            shard_bytes: 256 << 20,
            compression: Compression::None,
        }
    }
}

/// Shard compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain JSONL.
    None,
    /// gzip (level 6).
    Gzip,
    /// zstd (level 3).
    Zstd,
}

impl Compression {
    fn extension(self) -> &'static str {
        match self {
            Compression::None => "jsonl",
            Compression::Gzip => "jsonl.gz",
            Compression::Zstd => "jsonl.zst",
        }
    }
}

enum ShardSink {
    Plain(AtomicFile),
    Gzip(flate2::write::GzEncoder<AtomicFile>),
    Zstd(zstd::stream::write::Encoder<'static, AtomicFile>),
}

impl ShardSink {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            ShardSink::Plain(f) => f.write_all(bytes),
            ShardSink::Gzip(f) => f.write_all(bytes),
            ShardSink::Zstd(f) => f.write_all(bytes),
        }
    }

    fn finish(self) -> std::io::Result<AtomicFile> {
        match self {
            ShardSink::Plain(f) => Ok(f),
            ShardSink::Gzip(f) => f.finish(),
            ShardSink::Zstd(f) => f.finish(),
        }
    }
}

/// Writes kept documents into size-bounded shards `shard-00000.jsonl`, …
pub struct ShardWriter {
    dir: PathBuf,
    config: OutputConfig,
    current: Option<(ShardSink, u64)>,
    /// Paths of the shards written so far.
    pub shards: Vec<PathBuf>,
    /// Documents written.
    pub documents: u64,
}

impl ShardWriter {
    /// A writer into `dir` (which must exist).
    pub fn new(dir: &Path, config: &OutputConfig) -> Self {
        ShardWriter {
            dir: dir.to_path_buf(),
            config: config.clone(),
            current: None,
            shards: Vec::new(),
            documents: 0,
        }
    }

    /// Appends one JSON line (without its newline).
    pub fn write_line(&mut self, line: &[u8]) -> Result<()> {
        if self
            .current
            .as_ref()
            .is_some_and(|(_, bytes)| *bytes >= self.config.shard_bytes)
        {
            self.close_current()?;
        }
        if self.current.is_none() {
            let path = self.dir.join(format!(
                "shard-{:05}.{}",
                self.shards.len(),
                self.config.compression.extension()
            ));
            let file = AtomicFile::create(&path)?;
            let sink = match self.config.compression {
                Compression::None => ShardSink::Plain(file),
                Compression::Gzip => ShardSink::Gzip(flate2::write::GzEncoder::new(
                    file,
                    flate2::Compression::new(6),
                )),
                Compression::Zstd => ShardSink::Zstd(
                    zstd::stream::write::Encoder::new(file, 3)
                        .map_err(|e| DataError::io(&path, e))?,
                ),
            };
            self.shards.push(path);
            self.current = Some((sink, 0));
        }
        let path = self.shards.last().cloned().unwrap_or_default();
        if let Some((sink, bytes)) = &mut self.current {
            sink.write_all(line)
                .and_then(|()| sink.write_all(b"\n"))
                .map_err(|e| DataError::io(&path, e))?;
            *bytes += line.len() as u64 + 1;
        }
        self.documents += 1;
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some((sink, _)) = self.current.take() {
            let path = self.shards.last().cloned().unwrap_or_default();
            sink.finish()
                .map_err(|e| DataError::io(&path, e))?
                .commit()?;
        }
        Ok(())
    }

    /// Closes the last shard and removes shards of an earlier run in the
    /// same directory that this run did not overwrite.
    pub fn finish(mut self) -> Result<Vec<PathBuf>> {
        self.close_current()?;
        let written: std::collections::HashSet<PathBuf> = self.shards.iter().cloned().collect();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let is_shard = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("shard-") && n.contains(".jsonl"));
                if is_shard && !written.contains(&path) {
                    std::fs::remove_file(&path).map_err(|e| DataError::io(&path, e))?;
                }
            }
        }
        Ok(self.shards)
    }
}
