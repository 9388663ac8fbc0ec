//! A model registry on disk: versioned model directories and a `current`
//! pointer that moves atomically.
//!
//! ```text
//! ROOT/
//!   versions/<name>/      one model directory per version (never changed)
//!   current -> versions/<name>    a symbolic link
//!   history.jsonl         one line per switch: {"time", "action", "from", "to"}
//! ```
//!
//! Switching writes a new link `current.next` beside `current` and renames
//! it over `current`; `rename(2)` replaces a link atomically, so a reader
//! (or a crash) sees the old version or the new one, never none. A stale
//! `current.next` left by a crash is removed by the next switch. The history
//! is appended after the switch; rollback goes to the version the last
//! switch came from.
//!
//! Promotion is gated by the caller (`kaiyuan registry promote` runs the A/B
//! comparison of [`crate::ab`] against the current version's report).

use std::path::{Path, PathBuf};

use crate::{EvalError, Result};

/// Environment variable that makes a switch stop, as a crash would, after the
/// new link is written and before it replaces `current` (for crash tests).
pub const CRASH_ENV: &str = "KAIYUAN_REGISTRY_CRASH_BEFORE_RENAME";

/// A registry rooted at a directory.
#[derive(Clone, Debug)]
pub struct Registry {
    root: PathBuf,
}

/// One version of the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The version's name (its directory under `versions/`).
    pub name: String,
    /// Its directory.
    pub path: PathBuf,
    /// Whether `current` points at it.
    pub current: bool,
}

fn io(path: &Path, e: std::io::Error) -> EvalError {
    EvalError::input(path.display().to_string(), e.to_string())
}

impl Registry {
    /// Opens (and creates when missing) the registry at `root`.
    ///
    /// ```
    /// use kaiyuan_eval::registry::Registry;
    /// let root = std::env::temp_dir().join(format!("kaiyuan-registry-doc-{}", std::process::id()));
    /// let registry = Registry::open(&root)?;
    /// assert!(registry.list()?.is_empty());
    /// # std::fs::remove_dir_all(&root).ok();
    /// # Ok::<(), kaiyuan_eval::EvalError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`EvalError::InvalidInput`] naming the directory when it cannot be
    /// created.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let versions = root.join("versions");
        std::fs::create_dir_all(&versions).map_err(|e| io(&versions, e))?;
        Ok(Self { root })
    }

    /// The directory of version `name`.
    pub fn version_path(&self, name: &str) -> PathBuf {
        self.root.join("versions").join(name)
    }

    /// The version `current` points at, if any.
    ///
    /// # Errors
    ///
    /// [`EvalError::InvalidInput`] when `current` exists but is not a link
    /// into `versions/`.
    pub fn current(&self) -> Result<Option<String>> {
        let link = self.root.join("current");
        match std::fs::read_link(&link) {
            Ok(target) => {
                let name = target
                    .strip_prefix("versions")
                    .ok()
                    .and_then(|p| p.to_str())
                    .filter(|n| !n.is_empty() && !n.contains('/'))
                    .ok_or_else(|| {
                        EvalError::input(
                            link.display().to_string(),
                            format!("points at {}, not at versions/<name>", target.display()),
                        )
                    })?;
                Ok(Some(name.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&link, e)),
        }
    }

    /// Every version, sorted by name.
    ///
    /// # Errors
    ///
    /// [`EvalError::InvalidInput`] when `versions/` cannot be read.
    pub fn list(&self) -> Result<Vec<Version>> {
        let dir = self.root.join("versions");
        let current = self.current()?;
        let mut out: Vec<Version> = std::fs::read_dir(&dir)
            .map_err(|e| io(&dir, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .map(|name| Version {
                path: dir.join(&name),
                current: current.as_deref() == Some(name.as_str()),
                name,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Points `current` at version `name` atomically and records the switch.
    ///
    /// # Errors
    ///
    /// [`EvalError::InvalidInput`] for a name that is not a directory under
    /// `versions/`, or a filesystem failure (named).
    pub fn switch(&self, name: &str, action: &str) -> Result<()> {
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            return Err(EvalError::input(
                "version",
                format!("`{name}` is not a plain directory name"),
            ));
        }
        let target = self.version_path(name);
        if !target.is_dir() {
            return Err(EvalError::input(
                "version",
                format!(
                    "`{name}` is not a version ({} is not a directory)",
                    target.display()
                ),
            ));
        }
        let from = self.current()?;
        let next = self.root.join("current.next");
        match std::fs::remove_file(&next) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&next, e)),
        }
        symlink(&Path::new("versions").join(name), &next)?;
        if std::env::var_os(CRASH_ENV).is_some() {
            // A crash test: die as a power cut would, before the rename.
            std::process::abort();
        }
        let current = self.root.join("current");
        std::fs::rename(&next, &current).map_err(|e| io(&current, e))?;
        self.record(action, from.as_deref(), name)
    }

    /// Appends one line to `history.jsonl`.
    fn record(&self, action: &str, from: Option<&str>, to: &str) -> Result<()> {
        use std::io::Write;
        let path = self.root.join("history.jsonl");
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let line = serde_json::json!({"time": time, "action": action, "from": from, "to": to});
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        writeln!(file, "{line}").map_err(|e| io(&path, e))
    }

    /// The version to roll back to. The history is replayed as a stack:
    /// a promotion pushes its version, a rollback pops one; the answer is
    /// the version below the top. So successive rollbacks walk back through
    /// the promotions (v3 → v2 → v1), never ping-pong.
    ///
    /// # Errors
    ///
    /// [`EvalError::InvalidInput`] when there is no current version or no
    /// earlier one in the history.
    pub fn previous(&self) -> Result<String> {
        let current = self
            .current()?
            .ok_or_else(|| EvalError::input("registry", "no current version to roll back from"))?;
        let path = self.root.join("history.jsonl");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut stack: Vec<String> = Vec::new();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            match (v["action"].as_str(), v["to"].as_str()) {
                (Some("rollback"), _) => {
                    stack.pop();
                }
                (_, Some(to)) => stack.push(to.to_string()),
                _ => {}
            }
        }
        match stack.as_slice() {
            [.., previous, top] if *top == current => Ok(previous.clone()),
            _ => Err(EvalError::input(
                path.display().to_string(),
                format!("no earlier version recorded before `{current}`"),
            )),
        }
    }

    /// Switches back to [`Registry::previous`]; returns its name.
    ///
    /// # Errors
    ///
    /// Those of [`Registry::previous`] and [`Registry::switch`].
    pub fn rollback(&self) -> Result<String> {
        let previous = self.previous()?;
        self.switch(&previous, "rollback")?;
        Ok(previous)
    }
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, link).map_err(|e| io(link, e))
}

#[cfg(not(unix))]
fn symlink(_target: &Path, link: &Path) -> Result<()> {
    Err(EvalError::input(
        link.display().to_string(),
        "the registry's `current` link needs a Unix filesystem",
    ))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn registry(tag: &str) -> Registry {
        let root =
            std::env::temp_dir().join(format!("kaiyuan-registry-{tag}-{}", std::process::id()));
        std::fs::remove_dir_all(&root).ok();
        let r = Registry::open(&root).unwrap();
        for v in ["v1", "v2", "v3"] {
            std::fs::create_dir_all(r.version_path(v)).unwrap();
        }
        r
    }

    #[test]
    fn switch_list_and_roll_back() {
        let r = registry("switch");
        assert_eq!(r.current().unwrap(), None);
        r.switch("v1", "promote").unwrap();
        r.switch("v2", "promote").unwrap();
        r.switch("v3", "promote").unwrap();
        let listed: Vec<(String, bool)> = r
            .list()
            .unwrap()
            .into_iter()
            .map(|v| (v.name, v.current))
            .collect();
        assert_eq!(
            listed,
            [
                ("v1".into(), false),
                ("v2".into(), false),
                ("v3".into(), true)
            ]
        );
        assert_eq!(r.rollback().unwrap(), "v2");
        assert_eq!(r.current().unwrap().as_deref(), Some("v2"));
        assert_eq!(r.rollback().unwrap(), "v1");
        assert!(r.rollback().is_err(), "nothing before v1");
        assert!(
            r.switch("v9", "promote")
                .unwrap_err()
                .to_string()
                .contains("v9")
        );
        assert!(r.switch("../x", "promote").is_err());
    }

    #[test]
    fn a_stale_next_link_is_replaced() {
        let r = registry("stale");
        r.switch("v1", "promote").unwrap();
        symlink(Path::new("versions/v3"), &r.root.join("current.next")).unwrap();
        assert_eq!(r.current().unwrap().as_deref(), Some("v1"));
        r.switch("v2", "promote").unwrap();
        assert_eq!(r.current().unwrap().as_deref(), Some("v2"));
    }
}
