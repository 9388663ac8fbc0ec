//! Tidy checks over the whole workspace.
//!
//! - Dependency edges between workspace crates must be allowed by the table
//!   under "Crates and allowed dependencies" in `docs/architecture.md`; every
//!   workspace member must have a row.
//! - Every `unsafe` block and `unsafe impl` is preceded by a `// SAFETY:`
//!   comment, and no test is hidden with `#[ignore]` or `#[should_panic]`.
//!
//! The parsers are tested on inline inputs that contain violations, so these
//! checks are known to be able to fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (this test lives in `xtask/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

// ---------------------------------------------------------------------------
// Dependency edges
// ---------------------------------------------------------------------------

/// One row of the architecture table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    /// Directory relative to the root, e.g. `crates/tensor` or `xtask`.
    dir: String,
    /// Short names (directory names) of the crates this one may depend on.
    allowed: BTreeSet<String>,
}

/// The last path component: `crates/tensor` → `tensor`.
fn short_name(dir: &str) -> &str {
    dir.rsplit('/').next().unwrap_or(dir)
}

/// Splits a markdown table row `| a | b | c |` into trimmed cells.
fn cells(line: &str) -> Vec<String> {
    let line = line.trim();
    let inner = line.strip_prefix('|').unwrap_or(line);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    inner.split('|').map(|c| c.trim().to_owned()).collect()
}

/// Parses the dependency table of `docs/architecture.md`.
///
/// The table is the one whose header is `crate | owns | may depend on
/// (workspace)`. The crate cell names a directory in backticks. In the last
/// cell `all of the above` allows every crate of the earlier rows; otherwise
/// every word that is the short name of a crate in the table is allowed
/// (case-sensitive, so `(it runs the CLI)` allows nothing, while
/// `— (\`crates/cuda\` behind the \`cuda\` feature)` allows `cuda`); `none` and
/// `—` alone allow nothing.
fn parse_table(markdown: &str) -> Result<Vec<Row>, String> {
    let lines: Vec<&str> = markdown.lines().collect();
    let header = lines
        .iter()
        .position(|l| {
            let c: Vec<String> = cells(l).iter().map(|c| c.to_lowercase()).collect();
            l.trim_start().starts_with('|')
                && c.len() == 3
                && c[0] == "crate"
                && c[1] == "owns"
                && c[2] == "may depend on (workspace)"
        })
        .ok_or("no table with header `crate | owns | may depend on (workspace)`")?;
    let separator = lines.get(header + 1).copied().unwrap_or("");
    if !cells(separator)
        .iter()
        .all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':' | ' ')))
    {
        return Err(format!(
            "line {}: expected the table's separator row",
            header + 2
        ));
    }

    // First pass: the crate cells, so that the allowed lists can be matched
    // against every short name in the table.
    let mut raw = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(header + 2) {
        if !line.trim_start().starts_with('|') {
            break;
        }
        let c = cells(line);
        if c.len() != 3 {
            return Err(format!(
                "line {}: expected 3 cells, found {}",
                i + 1,
                c.len()
            ));
        }
        let dir = c[0]
            .trim_matches('`')
            .trim()
            .trim_end_matches('/')
            .to_owned();
        if dir.is_empty() || dir.contains(char::is_whitespace) {
            return Err(format!("line {}: bad crate cell `{}`", i + 1, c[0]));
        }
        raw.push((dir, c[2].clone()));
    }
    if raw.is_empty() {
        return Err("the dependency table has no rows".into());
    }
    let known: BTreeSet<String> = raw.iter().map(|(d, _)| short_name(d).to_owned()).collect();

    let mut rows: Vec<Row> = Vec::new();
    for (dir, deps) in raw {
        let mut allowed = BTreeSet::new();
        if deps.to_lowercase().contains("all of the above") {
            allowed.extend(rows.iter().map(|r| short_name(&r.dir).to_owned()));
        }
        for word in deps.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '/'))
        {
            let word = short_name(word);
            if known.contains(word) {
                allowed.insert(word.to_owned());
            }
        }
        rows.push(Row { dir, allowed });
    }
    Ok(rows)
}

/// A workspace member: its name and directory relative to the root.
#[derive(Debug, Clone)]
struct Member {
    name: String,
    dir: String,
}

/// A dependency of one member on another, by package name.
#[derive(Debug, Clone)]
struct Edge {
    from: String,
    to: String,
    kind: String,
}

/// Every edge that the table does not allow, and every member without a row.
fn violations(rows: &[Row], members: &[Member], edges: &[Edge]) -> Vec<String> {
    let mut out = Vec::new();
    let row_of: BTreeMap<&str, &Row> = members
        .iter()
        .filter_map(|m| Some((m.name.as_str(), rows.iter().find(|r| r.dir == m.dir)?)))
        .collect();
    for m in members {
        if !row_of.contains_key(m.name.as_str()) {
            out.push(format!(
                "workspace member `{}` ({}) has no row in the table of docs/architecture.md",
                m.name, m.dir
            ));
        }
    }
    for e in edges {
        let (Some(from), Some(to)) = (row_of.get(e.from.as_str()), row_of.get(e.to.as_str()))
        else {
            continue; // reported above
        };
        if !from.allowed.contains(short_name(&to.dir)) {
            out.push(format!(
                "`{}` ({}) has a {} dependency on `{}` ({}), which docs/architecture.md does not allow",
                e.from, from.dir, e.kind, e.to, to.dir
            ));
        }
    }
    out
}

/// Reads the workspace members and their edges from `cargo metadata`.
fn workspace_graph(root: &Path) -> (Vec<Member>, Vec<Edge>) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(root.join("Cargo.toml"))
        .output()
        .expect("cargo metadata starts");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let root_dir = PathBuf::from(meta["workspace_root"].as_str().expect("workspace_root"));
    let member_ids: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let packages: Vec<&serde_json::Value> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| member_ids.contains(id)))
        .collect();

    let dir_of = |manifest: &Path| -> String {
        let dir = manifest.parent().expect("a manifest has a directory");
        let rel = dir.strip_prefix(&root_dir).unwrap_or(dir);
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/")
    };
    let mut members = Vec::new();
    let mut by_dir: BTreeMap<PathBuf, String> = BTreeMap::new();
    for p in &packages {
        let name = p["name"].as_str().expect("package name").to_owned();
        let manifest = PathBuf::from(p["manifest_path"].as_str().expect("manifest_path"));
        by_dir.insert(
            manifest.parent().expect("manifest dir").to_path_buf(),
            name.clone(),
        );
        members.push(Member {
            name,
            dir: dir_of(&manifest),
        });
    }
    let member_names: BTreeSet<String> = members.iter().map(|m| m.name.clone()).collect();

    let mut edges = Vec::new();
    for p in &packages {
        let from = p["name"].as_str().expect("package name");
        for dep in p["dependencies"].as_array().expect("dependencies") {
            // A path dependency is matched by directory, anything else by name.
            let to = match dep["path"].as_str() {
                Some(path) => by_dir.get(Path::new(path)).cloned(),
                None => dep["name"]
                    .as_str()
                    .filter(|n| member_names.contains(*n))
                    .map(str::to_owned),
            };
            let Some(to) = to else { continue };
            let kind = dep["kind"].as_str().unwrap_or("normal").to_owned();
            edges.push(Edge {
                from: from.to_owned(),
                to,
                kind,
            });
        }
    }
    (members, edges)
}

#[test]
fn dependency_edges_follow_architecture_md() {
    let root = root();
    let doc = std::fs::read_to_string(root.join("docs/architecture.md"))
        .expect("docs/architecture.md is readable");
    let rows = parse_table(&doc).unwrap_or_else(|e| panic!("docs/architecture.md: {e}"));
    let (members, edges) = workspace_graph(&root);
    assert!(!members.is_empty(), "cargo metadata listed no members");
    let problems = violations(&rows, &members, &edges);
    assert!(
        problems.is_empty(),
        "dependency tidy check failed:\n  {}",
        problems.join("\n  ")
    );
}

/// A table in the documented format, used by the self-checks below.
const SAMPLE_TABLE: &str = "\
# Architecture

## Crates and allowed dependencies

| crate | owns | may depend on (workspace) |
|---|---|---|
| `crates/tensor` | tensors | — (`crates/cuda` behind the `cuda` feature) |
| `crates/cuda` | kernels | — |
| `crates/tokenizer` | BPE | — |
| `crates/models` | architectures | tensor, tokenizer |
| `crates/data` | cleaning | tokenizer (token counts) |
| `crates/cli` | the binary | all of the above |
| `xtask` | orchestration only | none (it runs the CLI) |

Prose after the table.
";

fn member(name: &str, dir: &str) -> Member {
    Member {
        name: name.into(),
        dir: dir.into(),
    }
}

fn edge(from: &str, to: &str) -> Edge {
    Edge {
        from: from.into(),
        to: to.into(),
        kind: "normal".into(),
    }
}

fn set(words: &[&str]) -> BTreeSet<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[test]
fn table_parser_reads_every_form_of_the_last_cell() {
    let rows = parse_table(SAMPLE_TABLE).unwrap();
    let allowed: BTreeMap<&str, &BTreeSet<String>> =
        rows.iter().map(|r| (r.dir.as_str(), &r.allowed)).collect();
    assert_eq!(allowed.len(), 7);
    assert_eq!(*allowed["crates/tensor"], set(&["cuda"]));
    assert_eq!(*allowed["crates/cuda"], set(&[]));
    assert_eq!(*allowed["crates/models"], set(&["tensor", "tokenizer"]));
    assert_eq!(*allowed["crates/data"], set(&["tokenizer"]));
    assert_eq!(
        *allowed["crates/cli"],
        set(&["tensor", "cuda", "tokenizer", "models", "data"])
    );
    assert_eq!(*allowed["xtask"], set(&[]));
}

#[test]
fn table_check_reports_forbidden_edges_and_missing_rows() {
    let rows = parse_table(SAMPLE_TABLE).unwrap();
    let members = [
        member("kaiyuan-tensor", "crates/tensor"),
        member("kaiyuan-tokenizer", "crates/tokenizer"),
        member("kaiyuan-models", "crates/models"),
        member("kaiyuan-cli", "crates/cli"),
        member("xtask", "xtask"),
        member("kaiyuan-stray", "crates/stray"),
    ];
    let allowed = [
        edge("kaiyuan-models", "kaiyuan-tensor"),
        edge("kaiyuan-models", "kaiyuan-tokenizer"),
        edge("kaiyuan-cli", "kaiyuan-models"),
        edge("kaiyuan-cli", "kaiyuan-tensor"),
    ];
    let listed = &members[..members.len() - 1];
    assert_eq!(violations(&rows, listed, &allowed), Vec::<String>::new());

    let forbidden = [
        edge("kaiyuan-tokenizer", "kaiyuan-models"),
        edge("xtask", "kaiyuan-cli"),
    ];
    let all: Vec<Edge> = allowed.iter().chain(&forbidden).cloned().collect();
    let problems = violations(&rows, &members, &all);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems.iter().any(|p| p.contains("`kaiyuan-stray`")));
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("`kaiyuan-tokenizer`") && p.contains("`kaiyuan-models`"))
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("`xtask`") && p.contains("`kaiyuan-cli`"))
    );
}

#[test]
fn table_parser_rejects_a_missing_table() {
    assert!(parse_table("# Architecture\n\nNo table here.\n").is_err());
    let header_only = "| crate | owns | may depend on (workspace) |\n|---|---|---|\n";
    assert!(parse_table(header_only).is_err());
}

// ---------------------------------------------------------------------------
// Source checks
// ---------------------------------------------------------------------------

/// The most lines of a statement that may sit between a `// SAFETY:` comment
/// and the line holding its `unsafe` (as in `let x =` on the line above).
const CONTINUATION_LINES: usize = 3;

/// The part of a line before a `//` comment.
fn code_part(line: &str) -> &str {
    line.find("//").map_or(line, |i| &line[..i])
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether `code` opens an `unsafe` block or an `unsafe impl`.
fn has_unsafe(code: &str) -> bool {
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(i) = code[from..].find("unsafe") {
        let start = from + i;
        let end = start + "unsafe".len();
        from = end;
        let whole_word = (start == 0 || !is_ident(bytes[start - 1]))
            && !bytes.get(end).is_some_and(|&b| is_ident(b));
        if !whole_word {
            continue;
        }
        let rest = code[end..].trim_start();
        if rest.starts_with('{') {
            return true;
        }
        let is_impl = rest
            .strip_prefix("impl")
            .is_some_and(|after| !after.bytes().next().is_some_and(is_ident));
        if is_impl {
            return true;
        }
    }
    false
}

/// Whether a `// SAFETY:` comment documents the `unsafe` on line `index`.
///
/// The comment may sit on that line, or in the comment and attribute lines
/// directly above it, or above a few continuation lines of the same statement
/// (lines not ending in `;`, `,`, `{` or `}`). A blank line ends the search.
fn has_safety_comment(lines: &[&str], index: usize) -> bool {
    let is_safety = |l: &str| l.find("//").is_some_and(|i| l[i..].contains("SAFETY:"));
    if is_safety(lines[index]) {
        return true;
    }
    let mut continuation = 0;
    for line in lines[..index].iter().rev() {
        if is_safety(line) {
            return true;
        }
        let trimmed = line.trim();
        if trimmed.starts_with("//") || trimmed.starts_with("#[") {
            continue;
        }
        let code = code_part(line).trim_end();
        if code.is_empty() || code.ends_with([';', ',', '{', '}']) {
            return false;
        }
        continuation += 1;
        if continuation > CONTINUATION_LINES {
            return false;
        }
    }
    false
}

/// Problems in one source file, as `file:line: message`.
fn scan_source(file: &str, text: &str) -> Vec<String> {
    let ignore = concat!("#[", "ignore");
    let should_panic = concat!("#[", "should_panic");
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = code_part(line);
        let trimmed = code.trim_start();
        if has_unsafe(code) && !has_safety_comment(&lines, i) {
            out.push(format!(
                "{file}:{}: `unsafe` without a `// SAFETY:` comment above it",
                i + 1
            ));
        }
        if trimmed.starts_with(ignore) {
            out.push(format!("{file}:{}: tests must not be ignored", i + 1));
        }
        if trimmed.starts_with(should_panic) {
            out.push(format!(
                "{file}:{}: `should_panic` is not allowed; return and check an error instead",
                i + 1
            ));
        }
    }
    out
}

/// Every `.rs` file under `dir`, skipping hidden directories and `target`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if !name.starts_with('.') && name != "target" {
                rust_files(&path, out);
            }
        } else if kind.is_file() && name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn sources_are_tidy() {
    let root = root();
    let mut files = Vec::new();
    for dir in ["crates", "xtask"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(
        !files.is_empty(),
        "no Rust sources found under crates/ and xtask/"
    );
    let mut problems = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let rel = path.strip_prefix(&root).unwrap_or(path);
        problems.extend(scan_source(&rel.display().to_string(), &text));
    }
    assert!(
        problems.is_empty(),
        "source tidy check failed:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn scanner_reports_each_kind_of_problem() {
    let unsafe_block = concat!("unsafe", " {");
    let unsafe_impl = concat!("unsafe", " impl");
    let source = [
        "fn ok() {".to_owned(),
        "    // SAFETY: the pointer is valid for one read.".to_owned(),
        format!("    let x = {unsafe_block} *p }};"),
        "    // SAFETY: documented above the statement it belongs to.".to_owned(),
        "    let w =".to_owned(),
        format!("        {unsafe_block} *p }};"),
        format!("    let v = {unsafe_block} *p }}; // SAFETY: same line."),
        "}".to_owned(),
        "// SAFETY: long explanations may span".to_owned(),
        "// several lines of comment.".to_owned(),
        "#[allow(dead_code)]".to_owned(),
        format!("{unsafe_impl} Send for Ok {{}}"),
        "fn bad() {".to_owned(),
        format!("    let y = {unsafe_block} *q }};"),
        "}".to_owned(),
        format!("{unsafe_impl} Sync for Bad {{}}"),
        "// SAFETY: a blank line separates this from the block.".to_owned(),
        String::new(),
        format!("{unsafe_block} bad() }}"),
        "unsafe fn declared() {}".to_owned(),
        "let unsafe_count = 1; // unsafe { in a comment".to_owned(),
        format!("#[{}]", "ignore"),
        format!("#[{}(expected = \"boom\")]", "should_panic"),
    ]
    .join("\n");
    let problems = scan_source("x.rs", &source);
    let at: Vec<&str> = problems
        .iter()
        .map(|p| p.split(": ").next().unwrap())
        .collect();
    assert_eq!(
        at,
        ["x.rs:14", "x.rs:16", "x.rs:19", "x.rs:22", "x.rs:23"],
        "{problems:#?}"
    );
}
