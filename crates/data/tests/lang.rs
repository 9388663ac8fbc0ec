//! Language identification against 1,686 labelled lines
//! (fixtures/data/lang/lang_set.jsonl: UDHR in 33 languages, Botchan,
//! chinese-poetry; built by fixtures/data/lang/make_lang_set.py).

use kaiyuan_data::{Language, identify};

#[test]
fn accuracy_on_labelled_lines_is_at_least_0_97() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/data/lang/lang_set.jsonl"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let labels = [Language::Zh, Language::En, Language::Other];
    let mut confusion = [[0usize; 3]; 3];
    let mut misses = Vec::new();
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let gold = Language::from_code(record["label"].as_str().unwrap()).unwrap();
        let text = record["text"].as_str().unwrap();
        let guess = identify(text);
        assert!(
            (0.0..=1.0).contains(&guess.score),
            "score {} out of range",
            guess.score
        );
        let g = labels.iter().position(|&l| l == gold).unwrap();
        let p = labels.iter().position(|&l| l == guess.language).unwrap();
        confusion[g][p] += 1;
        if g != p && misses.len() < 10 {
            misses.push(format!(
                "{} → {:?}: {}",
                record["source"],
                guess.language,
                text.chars().take(80).collect::<String>()
            ));
        }
    }
    let total: usize = confusion.iter().flatten().sum();
    let correct: usize = (0..3).map(|i| confusion[i][i]).sum();
    let accuracy = correct as f64 / total as f64;
    println!("gold \\ guess   zh    en  other");
    for (i, l) in labels.iter().enumerate() {
        println!(
            "{:<12} {:>5} {:>5} {:>6}",
            l.code(),
            confusion[i][0],
            confusion[i][1],
            confusion[i][2]
        );
    }
    println!("accuracy {accuracy:.4} on {total} lines");
    for m in &misses {
        println!("  {m}");
    }
    assert!(total >= 1000);
    assert!(accuracy >= 0.97, "accuracy {accuracy:.4} < 0.97");
}
