//! Manifests: determinism, parents found inside, beside and above, stale
//! manifests refused as parents, verification and the chain.

use std::path::{Path, PathBuf};

use kaiyuan_provenance::{
    Manifest, ProvenanceError, chain, digest_file, digest_path, manifest_path, sha256_hex,
};
use proptest::prelude::*;
use serde_json::json;

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kaiyuan-provenance-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// raw.txt → shards/ (dir) → tokenizer.json (file) → model/ (dir).
fn pipeline(dir: &Path) {
    write(&dir.join("raw.txt"), "raw text\n");
    write(&dir.join("shards/a/part-0.jsonl"), "{\"text\":\"raw\"}\n");
    write(&dir.join("shards/report.json"), "{}\n");
    Manifest::new("shards", json!({"threads": 2}))
        .with_input("data", &dir.join("raw.txt"))
        .unwrap()
        .write(&dir.join("shards"))
        .unwrap();
    write(&dir.join("tokenizer.json"), "{\"model\":{}}");
    Manifest::new("tokenizer", json!({"vocab_size": 300}))
        .with_input("data", &dir.join("shards/a/part-0.jsonl"))
        .unwrap()
        .write(&dir.join("tokenizer.json"))
        .unwrap();
    write(&dir.join("model/config.json"), "{}");
    write(&dir.join("model/model.safetensors"), "weights");
    Manifest::new("checkpoint", json!({"steps": 10}))
        .with_input("data", &dir.join("shards/a/part-0.jsonl"))
        .unwrap()
        .with_input("tokenizer", &dir.join("tokenizer.json"))
        .unwrap()
        .write(&dir.join("model"))
        .unwrap();
}

#[test]
fn same_inputs_give_byte_identical_manifests() {
    let (a, b) = (scratch("same-a"), scratch("same-b"));
    pipeline(&a);
    pipeline(&b);
    // Recorded paths are relative, so the trees are interchangeable.
    let text = |d: &Path| std::fs::read_to_string(d.join("model/provenance.json")).unwrap();
    assert_eq!(text(&a), text(&b));
    pipeline(&a);
    assert_eq!(
        text(&a),
        text(&b),
        "re-running over the same inputs changes nothing"
    );
}

#[test]
fn parents_are_found_inside_beside_and_above() {
    let dir = scratch("parents");
    pipeline(&dir);
    let model = Manifest::read(&dir.join("model")).unwrap();
    assert_eq!(model.kind, "checkpoint");
    let kinds: Vec<_> = model
        .parents()
        .map(|(i, p)| (i.role.as_str(), p.kind.as_str()))
        .collect();
    assert_eq!(kinds, [("data", "shards"), ("tokenizer", "tokenizer")]);
    // The shard's parent is the `shards/` manifest two levels up.
    let (_, shards) = model.parents().next().unwrap();
    assert_eq!(shards.manifest, "../shards/provenance.json");
    assert_eq!(model.inputs[1].path, "../tokenizer.json");
    assert_eq!(
        shards.manifest_sha256,
        sha256_hex(&std::fs::read(dir.join("shards/provenance.json")).unwrap())
    );
    // A directory input hashes as its file list, without its manifest.
    let quantized = Manifest::new("quantized", json!({"bits": 4}))
        .with_input("model", &dir.join("model"))
        .unwrap();
    assert_eq!(
        quantized.inputs[0].parent.as_ref().unwrap().kind,
        "checkpoint"
    );
    assert_eq!(
        quantized.inputs[0].sha256,
        digest_path(&dir.join("model")).unwrap().sha256
    );
    assert_eq!(quantized.inputs[0].bytes, 2 + 7);
}

#[test]
fn a_changed_input_has_no_parent() {
    let dir = scratch("stale");
    pipeline(&dir);
    write(
        &dir.join("shards/a/part-0.jsonl"),
        "{\"text\":\"edited\"}\n",
    );
    let m = Manifest::new("tokenizer", json!({}))
        .with_input("data", &dir.join("shards/a/part-0.jsonl"))
        .unwrap();
    assert_eq!(
        m.inputs[0].parent, None,
        "the shards manifest no longer describes the file"
    );
    write(&dir.join("model/extra.bin"), "x");
    let m = Manifest::new("quantized", json!({}))
        .with_input("model", &dir.join("model"))
        .unwrap();
    assert_eq!(m.inputs[0].parent, None);
    // A file without any manifest around it is a raw input.
    let m = Manifest::new("x", json!({}))
        .with_input("data", &dir.join("raw.txt"))
        .unwrap();
    assert_eq!(m.inputs[0].parent, None);
}

#[test]
fn verify_names_changed_missing_and_extra_files() {
    let dir = scratch("verify");
    pipeline(&dir);
    let model = Manifest::read(&dir.join("model")).unwrap();
    assert!(model.verify(&dir.join("model")).unwrap().is_empty());
    write(&dir.join("model/model.safetensors"), "other weights");
    std::fs::remove_file(dir.join("model/config.json")).unwrap();
    write(&dir.join("model/notes.txt"), "n");
    let problems = model.verify(&dir.join("model")).unwrap();
    assert_eq!(
        problems,
        [
            "config.json: missing",
            "model.safetensors: changed",
            "notes.txt: not in the manifest"
        ]
    );
}

#[test]
fn the_chain_walks_back_to_raw_data_and_flags_rewritten_parents() {
    let dir = scratch("chain");
    pipeline(&dir);
    let links = chain(&dir.join("model")).unwrap();
    let kinds: Vec<_> = links
        .iter()
        .map(|l| (l.depth, l.manifest.kind.as_str()))
        .collect();
    // The shards manifest is reached twice (directly and through the
    // tokenizer) and listed once.
    assert_eq!(kinds, [(0, "checkpoint"), (1, "shards"), (1, "tokenizer")]);
    assert!(links.iter().all(|l| l.problems.is_empty()), "{links:?}");
    // Recorded relative paths are resolved without `dir/..` detours.
    assert_eq!(
        links[2].manifest_path,
        dir.join("tokenizer.json.provenance.json")
    );
    // The tree can move as a whole.
    let moved = dir.with_file_name(format!(
        "{}-moved",
        dir.file_name().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_dir_all(&moved);
    std::fs::rename(&dir, &moved).unwrap();
    let again = chain(&moved.join("model")).unwrap();
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|l| l.problems.is_empty()), "{again:?}");
    std::fs::rename(&moved, &dir).unwrap();
    // Starting from the manifest file itself gives the same chain.
    assert_eq!(chain(&dir.join("model/provenance.json")).unwrap(), links);
    // Rewriting the shards' manifest breaks the recorded link.
    Manifest::new("shards", json!({"threads": 1}))
        .with_input("data", &dir.join("raw.txt"))
        .unwrap()
        .write(&dir.join("shards"))
        .unwrap();
    let links = chain(&dir.join("model")).unwrap();
    assert!(
        links[1].problems[0].contains("changed since it was recorded"),
        "{:?}",
        links[1]
    );
    std::fs::remove_dir_all(dir.join("shards")).unwrap();
    let links = chain(&dir.join("tokenizer.json")).unwrap();
    assert!(links[1].problems[0].ends_with("is gone"), "{:?}", links[1]);
}

#[test]
fn bad_manifests_are_errors_that_name_the_file_and_foreign_ones_are_ignored() {
    let dir = scratch("bad");
    write(&dir.join("data/x.txt"), "x");
    write(&dir.join("data/provenance.json"), "{not json");
    let err = Manifest::new("k", json!({}))
        .with_input("data", &dir.join("data/x.txt"))
        .unwrap_err();
    assert!(matches!(err, ProvenanceError::Invalid { .. }));
    assert!(err.to_string().contains("data/provenance.json"), "{err}");
    // Someone else's provenance.json is not a parent and not an error.
    write(
        &dir.join("data/provenance.json"),
        "{\"schema\": \"other/1\"}",
    );
    let m = Manifest::new("k", json!({}))
        .with_input("data", &dir.join("data/x.txt"))
        .unwrap();
    assert_eq!(m.inputs[0].parent, None);
    let err = Manifest::read(&dir.join("data")).unwrap_err();
    assert!(err.to_string().contains("schema is `other/1`"), "{err}");
    let err = Manifest::read(&dir.join("nowhere")).unwrap_err();
    assert!(matches!(err, ProvenanceError::Io { .. }), "{err}");
    let err = Manifest::new("k", json!({}))
        .with_input("data", &dir.join("missing.txt"))
        .unwrap_err();
    assert!(err.to_string().contains("missing.txt"), "{err}");
}

#[test]
fn manifests_of_files_sit_beside_them() {
    let dir = scratch("beside");
    write(&dir.join("m.gguf"), "GGUF");
    let at = Manifest::new("quantized", json!({}))
        .write(&dir.join("m.gguf"))
        .unwrap();
    assert_eq!(at, dir.join("m.gguf.provenance.json"));
    assert_eq!(manifest_path(&dir.join("m.gguf")), at);
    let m = Manifest::read(&dir.join("m.gguf")).unwrap();
    assert_eq!(
        m.outputs["m.gguf"],
        digest_file(&dir.join("m.gguf")).unwrap()
    );
    assert!(m.verify(&dir.join("m.gguf")).unwrap().is_empty());
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// The streaming digest equals the one-shot hash, across the 1 MiB
    /// read boundary.
    #[test]
    fn streaming_digest_equals_one_shot(len in prop_oneof![0usize..4096, (1usize << 20) - 3..(1usize << 20) + 3], seed in any::<u8>()) {
        let dir = scratch("prop");
        let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let path = dir.join("f.bin");
        std::fs::write(&path, &bytes).unwrap();
        let d = digest_file(&path).unwrap();
        prop_assert_eq!(d.sha256, sha256_hex(&bytes));
        prop_assert_eq!(d.bytes, len as u64);
    }
}
