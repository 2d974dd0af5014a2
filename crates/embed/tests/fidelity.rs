#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

//! Basalt's embeddings against sentence-transformers' (fixtures made once by
//! `scripts/oracle/make_embedding_fixtures.py`): the same word-piece counts, and a cosine
//! similarity of at least 0.9999 for each of 56 varied sentences (one word to far past the
//! 256-token limit, many scripts, emoji, code), batched or one at a time.

use std::path::PathBuf;

use basalt_embed::EmbeddingModel;

fn model_dir() -> PathBuf {
    let root = std::env::var_os("BASALT_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(basalt_catalog::default_models_dir);
    let dir = root.join("all-minilm-l6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run scripts/fetch-models",
        dir.display()
    );
    dir
}

fn fixtures() -> serde_json::Value {
    // The package directory as cargo gives it when it runs the test, not as compiled in: a
    // build directory shared by several checkouts can hold a binary compiled in another.
    let path = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("tests/fixtures/minilm.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y.powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn embeddings_match_sentence_transformers() {
    let model = EmbeddingModel::load(&model_dir()).unwrap();
    let fx = fixtures();
    assert_eq!(
        fx["max_seq_length"].as_u64().unwrap() as usize,
        model.max_tokens
    );
    let cases = fx["sentences"].as_array().unwrap();
    assert!(cases.len() >= 50);
    let texts: Vec<String> = cases
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    let batched = model.embed(&texts, true).unwrap();
    let mut worst = 1.0f64;
    for (i, (case, got)) in cases.iter().zip(&batched).enumerate() {
        let want: Vec<f64> = case["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(
            got.tokens as u64,
            case["tokens"].as_u64().unwrap(),
            "token count of #{i} {:?}",
            texts[i]
        );
        let cos = cosine(&got.vector, &want);
        worst = worst.min(cos);
        assert!(cos >= 0.9999, "#{i} {:?}: cosine {cos}", texts[i]);
    }
    // The long inputs were truncated, and said so.
    assert!(batched.iter().filter(|e| e.truncated).count() >= 2);
    // A text's embedding does not depend on what shares its batch.
    let alone = model.embed(&texts[1..2], true).unwrap();
    let diff: f32 = alone[0]
        .vector
        .iter()
        .zip(&batched[1].vector)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-5, "batched and alone differ by {diff}");
    eprintln!("worst cosine over {} sentences: {worst:.7}", cases.len());
}

#[test]
fn refusing_truncation_is_an_error_naming_the_input() {
    let model = EmbeddingModel::load(&model_dir()).unwrap();
    let long = "word ".repeat(400);
    let e = model.embed(&["short".into(), long], false).unwrap_err();
    assert!(e.to_string().contains("input 1"), "{e}");
}

#[test]
fn concurrent_requests_are_batched_and_answered_separately() {
    use basalt_embed::Embedder;
    let embedder = Embedder::start(EmbeddingModel::load(&model_dir()).unwrap(), 2).unwrap();
    let texts: Vec<Vec<String>> = (0..12)
        .map(|i| {
            vec![
                format!("Request {i} asks about lighthouses."),
                format!("and {i} more"),
            ]
        })
        .collect();
    // Submitted together, they share forward passes; each still gets exactly its own.
    let receivers: Vec<_> = texts
        .iter()
        .map(|t| embedder.submit(t.clone(), true).unwrap())
        .collect();
    for (t, rx) in texts.iter().zip(receivers) {
        let got = rx.blocking_recv().unwrap().unwrap();
        let alone = embedder.model.embed(t, true).unwrap();
        assert_eq!(got.len(), 2);
        for (a, b) in got.iter().zip(&alone) {
            let diff = a
                .vector
                .iter()
                .zip(&b.vector)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(diff < 1e-5);
        }
    }
    // One request that refuses truncation fails alone.
    let bad = embedder.submit(vec!["word ".repeat(400)], false).unwrap();
    let good = embedder.submit(vec!["fine".into()], false).unwrap();
    assert!(bad.blocking_recv().unwrap().is_err());
    assert!(good.blocking_recv().unwrap().is_ok());
}
