#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

//! The built-in content classifier against the package it came from: for each of the
//! fixtures `scripts/oracle/make_content_classifier_fixtures.py` made with
//! alt-profanity-check's own `predict_prob` (empty and blank texts, insults, profanity,
//! near-misses like `assassin`, identifiers with underscores, accents, combining marks,
//! other scripts, emoji, long texts), Basalt's probability on the model
//! `scripts/fetch-models` exported agrees to 1e-9.

use std::path::PathBuf;

use basalt_guardrails::ContentClassifier;

fn classifier() -> ContentClassifier {
    let root = std::env::var_os("BASALT_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(basalt_catalog::default_models_dir);
    let path = root.join("content-classifier/classifier.json");
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}: run scripts/fetch-models", path.display()));
    ContentClassifier::from_json(&bytes).unwrap()
}

#[derive(serde::Deserialize)]
struct Fixture {
    text: String,
    probability: f64,
}

fn fixtures() -> Vec<Fixture> {
    let path = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("tests/fixtures/content-classifier.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn probabilities_match_the_package() {
    let classifier = classifier();
    let fixtures = fixtures();
    assert!(fixtures.len() >= 30);
    let mut offensive = 0;
    for f in &fixtures {
        let p = classifier.probability(&f.text);
        assert!(
            (p - f.probability).abs() < 1e-9,
            "{:?}: Basalt {p}, alt-profanity-check {}",
            f.text,
            f.probability
        );
        offensive += usize::from(p >= 0.5);
    }
    // The fixtures hold both kinds, so agreement is not agreement on a constant.
    assert!(offensive >= 10 && offensive <= fixtures.len() - 10);
}
