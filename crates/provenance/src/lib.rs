//! Provenance manifests: what an artefact was made from.
//!
//! Every artefact Kaiyuan writes — cleaned shards, a tokenizer, a training
//! checkpoint, a quantized model, an evaluation report — gets a small JSON
//! manifest (schema [`SCHEMA`]) beside it:
//!
//! - `kind` (`shards`, `tokenizer`, `checkpoint`, `model`, `quantized`,
//!   `eval-report`, …), the `tool` and its version, and the `settings` the
//!   command ran with (its configuration as JSON);
//! - `inputs`: each input file or directory by role, with its SHA-256 and
//!   size, and — when that input has a manifest of its own — the *parent*:
//!   the path and SHA-256 of the parent's manifest file;
//! - `outputs`: SHA-256 and size of every file of the artefact.
//!
//! A directory artefact keeps its manifest inside as [`MANIFEST_FILE`]; a
//! single-file artefact (a `tokenizer.json`, a `.gguf`) keeps it beside as
//! `<file>`[`MANIFEST_SUFFIX`]. Manifests are written last and atomically,
//! so one that exists describes a complete artefact. They hold no clock
//! time, so the same inputs and settings give byte-identical manifests.
//!
//! Following the parents from an evaluation report gives the chain
//! raw data → shards → tokenizer → model → quantized model → scores
//! ([`chain`]); [`Manifest::verify`] re-hashes an artefact's files.
//!
//! ```
//! use kaiyuan_provenance::{Manifest, chain};
//! let dir = std::env::temp_dir().join(format!("kaiyuan-provenance-doc-{}", std::process::id()));
//! std::fs::create_dir_all(dir.join("shards"))?;
//! std::fs::write(dir.join("raw.txt"), "some raw text\n")?;
//! std::fs::write(dir.join("shards/part-0.jsonl"), "{\"text\": \"some raw text\"}\n")?;
//! // The cleaning step describes its output directory …
//! Manifest::new("shards", serde_json::json!({"dedup": "minhash"}))
//!     .with_input("data", &dir.join("raw.txt"))?
//!     .write(&dir.join("shards"))?;
//! // … and a later step that reads one of its files finds it as the parent.
//! std::fs::write(dir.join("tokenizer.json"), "{}")?;
//! let tokenizer = Manifest::new("tokenizer", serde_json::json!({"vocab_size": 512}))
//!     .with_input("data", &dir.join("shards/part-0.jsonl"))?;
//! assert_eq!(tokenizer.inputs[0].parent.as_ref().unwrap().kind, "shards");
//! tokenizer.write(&dir.join("tokenizer.json"))?;
//! let links = chain(&dir.join("tokenizer.json"))?;
//! assert_eq!(links.iter().map(|l| l.manifest.kind.as_str()).collect::<Vec<_>>(), ["tokenizer", "shards"]);
//! assert!(links.iter().all(|l| l.problems.is_empty()));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// The schema tag of a manifest.
pub const SCHEMA: &str = "kaiyuan.provenance/1";
/// A directory artefact's manifest, inside it.
pub const MANIFEST_FILE: &str = "provenance.json";
/// Appended to a single-file artefact's name for its manifest.
pub const MANIFEST_SUFFIX: &str = ".provenance.json";
/// How many directory levels above a file input are searched for the
/// manifest of the directory artefact that holds it.
const PARENT_SEARCH_DEPTH: usize = 4;

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvenanceError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file that should be a manifest is not one.
    #[error("{path}: not a provenance manifest: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, ProvenanceError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProvenanceError + '_ {
    move |source| ProvenanceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// SHA-256 (lower-case hex) and size of a file or directory.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Digest {
    /// SHA-256 in lower-case hex.
    pub sha256: String,
    /// Size in bytes (a directory: of all its files).
    pub bytes: u64,
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// SHA-256 and size of one file, read in 1 MiB pieces.
///
/// # Errors
///
/// [`ProvenanceError::Io`] naming the file.
pub fn digest_file(path: &Path) -> Result<Digest> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        bytes += n as u64;
    }
    Ok(Digest {
        sha256: hex(&hasher.finalize()),
        bytes,
    })
}

/// Every file under `dir` by `/`-separated relative path, with its digest;
/// the directory's own [`MANIFEST_FILE`] is left out.
///
/// # Errors
///
/// [`ProvenanceError::Io`] naming the file or directory that could not be
/// read.
pub fn digest_tree(dir: &Path) -> Result<BTreeMap<String, Digest>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Digest>) -> Result<()> {
        let mut entries = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(io(dir))?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out)?;
                continue;
            }
            let rel = relative_name(root, &path);
            if rel != MANIFEST_FILE {
                out.insert(rel, digest_file(&path)?);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

fn relative_name(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The digest of a set of files: SHA-256 of their `path\tsha256\n` lines in
/// path order, and their total size.
fn tree_digest(files: &BTreeMap<String, Digest>) -> Digest {
    let mut hasher = Sha256::new();
    for (name, d) in files {
        hasher.update(name.as_bytes());
        hasher.update(b"\t");
        hasher.update(d.sha256.as_bytes());
        hasher.update(b"\n");
    }
    Digest {
        sha256: hex(&hasher.finalize()),
        bytes: files.values().map(|d| d.bytes).sum(),
    }
}

/// The digest of a file, or of a directory as the digest of its file list
/// ([`digest_tree`]), so a directory hashes the same wherever it lies.
///
/// # Errors
///
/// [`ProvenanceError::Io`] naming what could not be read.
pub fn digest_path(path: &Path) -> Result<Digest> {
    if path.is_dir() {
        Ok(tree_digest(&digest_tree(path)?))
    } else {
        digest_file(path)
    }
}

/// Where the manifest of `artefact` lives: `DIR/provenance.json` for a
/// directory, `FILE.provenance.json` for a file.
pub fn manifest_path(artefact: &Path) -> PathBuf {
    if artefact.is_dir() {
        artefact.join(MANIFEST_FILE)
    } else {
        let mut name = artefact.as_os_str().to_os_string();
        name.push(MANIFEST_SUFFIX);
        PathBuf::from(name)
    }
}

/// The manifest of an input that has one.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Parent {
    /// The parent artefact's kind.
    pub kind: String,
    /// Its manifest file: as found while building, relative to the
    /// child's manifest directory once written.
    pub manifest: String,
    /// SHA-256 of that manifest file's bytes.
    pub manifest_sha256: String,
}

/// One input of an artefact.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Input {
    /// What the input was for (`data`, `tokenizer`, `model`, `calibration`,
    /// `suite`, …).
    pub role: String,
    /// Its path: as given while building, relative to the manifest's
    /// directory once written.
    pub path: String,
    /// SHA-256 of the file, or of the directory's file list.
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// The input's own manifest, when it has one that still describes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Parent>,
}

impl Input {
    /// Hashes `path` and looks for its manifest: inside a directory, beside
    /// a file (`FILE.provenance.json`), or in a directory above a file that
    /// lists it among its outputs with the same hash. A manifest that no
    /// longer matches the input's bytes is not a parent.
    ///
    /// # Errors
    ///
    /// [`ProvenanceError::Io`] when the input cannot be read;
    /// [`ProvenanceError::Invalid`] for a manifest that does not parse.
    pub fn of(role: &str, path: &Path) -> Result<Self> {
        let digest = digest_path(path)?;
        let parent = find_parent(path, &digest)?;
        Ok(Self {
            role: role.to_string(),
            path: path.display().to_string(),
            sha256: digest.sha256,
            bytes: digest.bytes,
            parent,
        })
    }
}

/// Reads `candidate` if it is one of our manifests; other JSON files of the
/// same name are not ours and are passed over.
fn read_if_manifest(candidate: &Path) -> Result<Option<(Manifest, String)>> {
    if !candidate.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(candidate).map_err(io(candidate))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| ProvenanceError::Invalid {
        path: candidate.to_path_buf(),
        message: e.to_string(),
    })?;
    if value.get("schema").and_then(Value::as_str) != Some(SCHEMA) {
        return Ok(None);
    }
    let manifest = Manifest::from_value(candidate, value)?;
    Ok(Some((manifest, sha256_hex(&bytes))))
}

fn find_parent(path: &Path, digest: &Digest) -> Result<Option<Parent>> {
    let found = |manifest: &Manifest, at: &Path, sha: String| Parent {
        kind: manifest.kind.clone(),
        manifest: at.display().to_string(),
        manifest_sha256: sha,
    };
    if path.is_dir() {
        let at = path.join(MANIFEST_FILE);
        if let Some((m, sha)) = read_if_manifest(&at)?
            && tree_digest(&m.outputs) == *digest
        {
            return Ok(Some(found(&m, &at, sha)));
        }
        return Ok(None);
    }
    let beside = manifest_path(path);
    if let Some((m, sha)) = read_if_manifest(&beside)?
        && m.outputs.values().any(|d| d == digest)
    {
        return Ok(Some(found(&m, &beside, sha)));
    }
    for dir in path.ancestors().skip(1).take(PARENT_SEARCH_DEPTH) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let at = dir.join(MANIFEST_FILE);
        if let Some((m, sha)) = read_if_manifest(&at)? {
            let name = relative_name(dir, path);
            if m.outputs.get(&name) == Some(digest) {
                return Ok(Some(found(&m, &at, sha)));
            }
        }
    }
    Ok(None)
}

/// A provenance manifest (see the crate docs).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// What the artefact is.
    pub kind: String,
    /// The program and version that wrote it.
    pub tool: String,
    /// The settings it ran with.
    pub settings: Value,
    /// What it was made from.
    pub inputs: Vec<Input>,
    /// The artefact's files: for a directory by relative path, for a file
    /// by its name.
    pub outputs: BTreeMap<String, Digest>,
}

impl Manifest {
    /// A manifest of `kind` made with `settings`, by this version of
    /// Kaiyuan, with no inputs yet.
    pub fn new(kind: &str, settings: Value) -> Self {
        Self {
            schema: SCHEMA.to_string(),
            kind: kind.to_string(),
            tool: format!("kaiyuan {}", env!("CARGO_PKG_VERSION")),
            settings,
            inputs: Vec::new(),
            outputs: BTreeMap::new(),
        }
    }

    /// Adds an input (see [`Input::of`]).
    ///
    /// # Errors
    ///
    /// As [`Input::of`].
    pub fn with_input(mut self, role: &str, path: &Path) -> Result<Self> {
        self.add_input(role, path)?;
        Ok(self)
    }

    /// Adds an input (see [`Input::of`]).
    ///
    /// # Errors
    ///
    /// As [`Input::of`].
    pub fn add_input(&mut self, role: &str, path: &Path) -> Result<()> {
        self.inputs.push(Input::of(role, path)?);
        Ok(())
    }

    /// Hashes the artefact's files into `outputs` and writes the manifest
    /// atomically to [`manifest_path`]`(artefact)`, returning that path.
    ///
    /// # Errors
    ///
    /// [`ProvenanceError::Io`] naming the file that could not be read or
    /// written.
    pub fn write(mut self, artefact: &Path) -> Result<PathBuf> {
        self.outputs = outputs_of(artefact)?;
        let path = manifest_path(artefact);
        let base = path.parent().unwrap_or(Path::new("."));
        for input in &mut self.inputs {
            input.path = relative_to(Path::new(&input.path), base);
            if let Some(parent) = &mut input.parent {
                parent.manifest = relative_to(Path::new(&parent.manifest), base);
            }
        }
        let text = serde_json::to_string_pretty(&self).map_err(|e| ProvenanceError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })? + "\n";
        let mut tmp_name = path.as_os_str().to_os_string();
        tmp_name.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp_name);
        std::fs::write(&tmp, text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(path)
    }

    /// Reads the manifest of `artefact` (a directory, a file with a
    /// manifest beside it, or a manifest file itself).
    ///
    /// # Errors
    ///
    /// [`ProvenanceError::Io`] when there is none;
    /// [`ProvenanceError::Invalid`] when it does not parse.
    pub fn read(artefact: &Path) -> Result<Self> {
        let path = locate(artefact);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        Self::from_bytes(&path, &bytes)
    }

    /// Parses the bytes of the manifest file at `path` (named in errors).
    fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| ProvenanceError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_value(path, value)
    }

    fn from_value(path: &Path, value: Value) -> Result<Self> {
        let found = value.get("schema").and_then(Value::as_str).unwrap_or("");
        if found != SCHEMA {
            return Err(ProvenanceError::Invalid {
                path: path.to_path_buf(),
                message: format!("schema is `{found}`, expected `{SCHEMA}`"),
            });
        }
        serde_json::from_value(value).map_err(|e| ProvenanceError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Re-hashes `artefact` and lists what differs from `outputs`: files
    /// changed, missing or not in the manifest. Empty when intact.
    ///
    /// # Errors
    ///
    /// [`ProvenanceError::Io`] when the artefact cannot be read.
    pub fn verify(&self, artefact: &Path) -> Result<Vec<String>> {
        if !artefact.exists() {
            return Ok(vec![format!("{} is missing", artefact.display())]);
        }
        let now = outputs_of(artefact)?;
        let mut problems = Vec::new();
        for (name, d) in &self.outputs {
            match now.get(name) {
                None => problems.push(format!("{name}: missing")),
                Some(n) if n != d => problems.push(format!("{name}: changed")),
                Some(_) => {}
            }
        }
        for name in now.keys().filter(|n| !self.outputs.contains_key(*n)) {
            problems.push(format!("{name}: not in the manifest"));
        }
        Ok(problems)
    }

    /// The inputs that have a manifest of their own.
    pub fn parents(&self) -> impl Iterator<Item = (&Input, &Parent)> {
        self.inputs
            .iter()
            .filter_map(|i| i.parent.as_ref().map(|p| (i, p)))
    }
}

/// The components of `path` with `.` dropped and `dir/..` pairs removed
/// (lexically: recorded paths name artefacts, not symbolic links).
fn normal(p: &Path) -> Vec<std::path::Component<'_>> {
    let mut out: Vec<std::path::Component<'_>> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir
                if matches!(out.last(), Some(std::path::Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `path` relative to the directory `base` (with `..` where needed), `/`
/// separated, so a tree of artefacts can move as a whole; the absolute path
/// when the two share no root.
fn relative_to(path: &Path, base: &Path) -> String {
    let (Ok(path), Ok(base)) = (std::path::absolute(path), std::path::absolute(base)) else {
        return path.display().to_string();
    };
    let (p, b) = (normal(&path), normal(&base));
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if common == 0 {
        return path.display().to_string();
    }
    let mut parts: Vec<String> = vec!["..".to_string(); b.len() - common];
    parts.extend(
        p[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

/// Where a path recorded in the manifest at `manifest` points: relative
/// paths start from the manifest's directory.
fn resolve(recorded: &str, manifest: &Path) -> PathBuf {
    let recorded = Path::new(recorded);
    let joined = if recorded.is_absolute() {
        recorded.to_path_buf()
    } else {
        manifest.parent().unwrap_or(Path::new(".")).join(recorded)
    };
    normal(&joined).iter().collect()
}

/// The manifest file of an artefact, or the path itself when it already
/// names a manifest.
fn locate(artefact: &Path) -> PathBuf {
    let name = artefact
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if artefact.is_file() && (name == MANIFEST_FILE || name.ends_with(MANIFEST_SUFFIX)) {
        artefact.to_path_buf()
    } else {
        manifest_path(artefact)
    }
}

fn outputs_of(artefact: &Path) -> Result<BTreeMap<String, Digest>> {
    if artefact.is_dir() {
        digest_tree(artefact)
    } else {
        let name = artefact
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(BTreeMap::from([(name, digest_file(artefact)?)]))
    }
}

/// One artefact on the way back from an artefact to its raw inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Link {
    /// Steps from the artefact [`chain`] started at (0 for itself).
    pub depth: usize,
    /// The manifest file.
    pub manifest_path: PathBuf,
    /// SHA-256 of the manifest file.
    pub manifest_sha256: String,
    /// The manifest.
    pub manifest: Manifest,
    /// What does not hold: the manifest changed since its child recorded
    /// it, or (for the artefact itself) its files differ from `outputs`.
    pub problems: Vec<String>,
}

/// The artefact's manifest and, depth first, the manifests of its parents
/// and theirs, each once, found at the paths the children recorded. The
/// artefact's own files are re-hashed ([`Manifest::verify`]); a parent
/// whose manifest has changed or gone since is reported in `problems`.
///
/// # Errors
///
/// [`ProvenanceError::Io`] or [`ProvenanceError::Invalid`] when the
/// artefact's own manifest cannot be read.
pub fn chain(artefact: &Path) -> Result<Vec<Link>> {
    let path = locate(artefact);
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let manifest = Manifest::from_bytes(&path, &bytes)?;
    let target = if path == artefact {
        artefact_of(&path)
    } else {
        artefact.to_path_buf()
    };
    let problems = manifest.verify(&target)?;
    let mut links = vec![Link {
        depth: 0,
        manifest_path: path,
        manifest_sha256: sha256_hex(&bytes),
        manifest,
        problems,
    }];
    let mut seen: BTreeSet<String> = BTreeSet::from([links[0].manifest_sha256.clone()]);
    let mut i = 0;
    while i < links.len() {
        let depth = links[i].depth + 1;
        let child = links[i].manifest_path.clone();
        let parents: Vec<Parent> = links[i]
            .manifest
            .parents()
            .map(|(_, p)| p.clone())
            .collect();
        let mut found = Vec::new();
        for parent in parents {
            if !seen.insert(parent.manifest_sha256.clone()) {
                continue;
            }
            let at = resolve(&parent.manifest, &child);
            let link = match std::fs::read(&at) {
                Ok(bytes) => {
                    let sha = sha256_hex(&bytes);
                    let manifest = Manifest::from_bytes(&at, &bytes)?;
                    let problems = if sha == parent.manifest_sha256 {
                        Vec::new()
                    } else {
                        vec![format!(
                            "{} changed since it was recorded ({} then, {} now)",
                            at.display(),
                            short(&parent.manifest_sha256),
                            short(&sha)
                        )]
                    };
                    Link {
                        depth,
                        manifest_path: at,
                        manifest_sha256: sha,
                        manifest,
                        problems,
                    }
                }
                Err(_) => Link {
                    depth,
                    manifest_path: at.clone(),
                    manifest_sha256: parent.manifest_sha256.clone(),
                    manifest: Manifest::new(&parent.kind, Value::Null),
                    problems: vec![format!("{} is gone", at.display())],
                },
            };
            found.push(link);
        }
        // Depth first: the parents follow their child.
        for (k, link) in found.into_iter().enumerate() {
            links.insert(i + 1 + k, link);
        }
        i += 1;
    }
    Ok(links)
}

/// The artefact a manifest file describes.
fn artefact_of(manifest: &Path) -> PathBuf {
    let name = manifest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == MANIFEST_FILE {
        manifest.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        let s = manifest.as_os_str().to_string_lossy();
        PathBuf::from(s.strip_suffix(MANIFEST_SUFFIX).unwrap_or(&s))
    }
}

/// The first 12 hex digits of a hash, for messages.
pub fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}
