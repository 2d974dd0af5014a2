//! The built-in content classifier: a content filter that works without a guard model.
//!
//! It is alt-profanity-check's model (MIT, from PyPI; `scripts/fetch-models` exports its
//! scikit-learn pickles to plain numbers): TF-IDF over word unigrams, then five linear SVMs
//! whose margins are mapped to probabilities by sigmoid calibration and averaged. It was
//! trained to tell offensive and abusive language from the rest, so Basalt uses it for the
//! one category that is: INSULTS. The others (hate, sexual, violence, misconduct, prompt
//! attacks) still need a guard model: no classifier for them can be obtained here, and a
//! word model passed off as one would block the wrong things with confidence.
//!
//! Scoring is arithmetic over the text, linear in its length; this module reads no file
//! (the caller hands it the exported bytes) and never fails on a text.

use std::collections::HashMap;

use regex::Regex;
use serde::Deserialize;

use crate::judge::{Category, Level};

/// The format tag `scripts/convert-content-classifier` writes.
const FORMAT: &str = "basalt-tfidf-linear/1";

/// Probabilities at which the classifier's confidence steps up (LOW, MEDIUM, HIGH). 0.5 is
/// where the package's own `predict` says "offensive", so a HIGH-strength filter blocks
/// exactly what the package flags.
const THRESHOLDS: [(f64, Level); 3] = [(0.9, Level::High), (0.7, Level::Medium), (0.5, Level::Low)];

/// The exported model as written to disk.
#[derive(Deserialize)]
struct Exported {
    format: String,
    vocabulary: Vec<String>,
    idf: Vec<f64>,
    members: Vec<ExportedMember>,
}

#[derive(Deserialize)]
struct ExportedMember {
    coef: Vec<f64>,
    intercept: f64,
    sigmoid_a: f64,
    sigmoid_b: f64,
}

/// One calibrated fold: a linear SVM and the sigmoid that maps its margin to a probability.
struct Member {
    /// Per feature, the SVM's coefficient times the feature's idf: folding the idf in once
    /// saves a multiply per token and per fold.
    weights: Vec<f64>,
    intercept: f64,
    sigmoid_a: f64,
    sigmoid_b: f64,
}

pub struct ContentClassifier {
    vocabulary: HashMap<String, u32>,
    idf: Vec<f64>,
    members: Vec<Member>,
    /// scikit-learn's `(?u)\b\w\w+\b`: runs of two or more letters, digits or underscores,
    /// where Python's `\w` is exactly Unicode letters, numbers and `_`.
    tokens: Regex,
}

impl std::fmt::Debug for ContentClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentClassifier")
            .field("features", &self.idf.len())
            .field("members", &self.members.len())
            .finish()
    }
}

impl ContentClassifier {
    /// Reads an exported model, checking that every array has the vocabulary's length and
    /// every number is finite.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let exported: Exported =
            serde_json::from_slice(bytes).map_err(|e| format!("not an exported model: {e}"))?;
        if exported.format != FORMAT {
            return Err(format!(
                "format `{}` is not `{FORMAT}`: re-export it with scripts/fetch-models",
                exported.format
            ));
        }
        let features = exported.vocabulary.len();
        if features == 0 || features > u32::MAX as usize || exported.idf.len() != features {
            return Err("the vocabulary and idf weights differ in length".into());
        }
        if exported.members.is_empty() {
            return Err("the model has no calibrated members".into());
        }
        let finite = |xs: &[f64]| xs.iter().all(|x| x.is_finite());
        if !finite(&exported.idf) {
            return Err("an idf weight is not a finite number".into());
        }
        let mut members = Vec::with_capacity(exported.members.len());
        for (i, m) in exported.members.into_iter().enumerate() {
            if m.coef.len() != features
                || !finite(&m.coef)
                || !finite(&[m.intercept, m.sigmoid_a, m.sigmoid_b])
            {
                return Err(format!(
                    "member {i}: {features} finite coefficients and a finite intercept and \
                     sigmoid are needed"
                ));
            }
            let weights = m
                .coef
                .iter()
                .zip(&exported.idf)
                .map(|(c, w)| c * w)
                .collect();
            members.push(Member {
                weights,
                intercept: m.intercept,
                sigmoid_a: m.sigmoid_a,
                sigmoid_b: m.sigmoid_b,
            });
        }
        let mut vocabulary = HashMap::with_capacity(features);
        for (index, word) in exported.vocabulary.into_iter().enumerate() {
            if vocabulary.insert(word, index as u32).is_some() {
                return Err("the vocabulary repeats a word".into());
            }
        }
        let tokens = Regex::new(r"[\p{L}\p{N}_]{2,}").map_err(|e| e.to_string())?;
        Ok(Self {
            vocabulary,
            idf: exported.idf,
            members,
            tokens,
        })
    }

    /// Whether this classifier rates `category`.
    pub fn covers(category: Category) -> bool {
        category == Category::Insults
    }

    /// The probability that `text` is offensive, as the package's `predict_prob` gives it.
    pub fn probability(&self, text: &str) -> f64 {
        let lowered = text.to_lowercase();
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for token in self.tokens.find_iter(&lowered) {
            if let Some(&feature) = self.vocabulary.get(token.as_str()) {
                *counts.entry(feature).or_insert(0) += 1;
            }
        }
        // The TF-IDF vector is counts times idf, scaled to unit length; a text with no known
        // word is the zero vector and scores the intercepts alone.
        let norm = counts
            .iter()
            .map(|(&f, &n)| (n as f64 * self.idf[f as usize]).powi(2))
            .sum::<f64>()
            .sqrt();
        let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        let total: f64 = self
            .members
            .iter()
            .map(|m| {
                let dot: f64 = counts
                    .iter()
                    .map(|(&f, &n)| n as f64 * m.weights[f as usize])
                    .sum();
                let margin = dot * scale + m.intercept;
                1.0 / (1.0 + (m.sigmoid_a * margin + m.sigmoid_b).exp())
            })
            .sum();
        total / self.members.len() as f64
    }

    /// The classifier's confidence that `text` belongs to a category it covers.
    pub fn confidence(&self, text: &str) -> Level {
        let p = self.probability(text);
        THRESHOLDS
            .iter()
            .find(|(at, _)| p >= *at)
            .map_or(Level::None, |(_, level)| *level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A three-word model: `idiot` and `moron` offensive, `hello` not.
    fn tiny() -> ContentClassifier {
        let json = serde_json::json!({
            "format": FORMAT,
            "vocabulary": ["idiot", "hello", "moron"],
            "idf": [2.0, 1.0, 3.0],
            "members": [
                {"coef": [3.0, -1.0, 3.0], "intercept": -0.5, "sigmoid_a": -4.0, "sigmoid_b": 0.0},
                {"coef": [2.0, -2.0, 4.0], "intercept": -0.5, "sigmoid_a": -4.0, "sigmoid_b": 0.0},
            ],
        });
        ContentClassifier::from_json(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn scores_follow_the_words() {
        let c = tiny();
        assert!(c.probability("You IDIOT!") > 0.9);
        assert!(c.probability("hello there") < 0.2);
        assert_eq!(c.confidence("hello"), Level::None);
        assert_eq!(c.confidence("idiot"), Level::High);
        // Unknown words only: the zero vector, the intercepts alone.
        let expected = 1.0 / (1.0 + (-4.0f64 * -0.5).exp());
        assert!((c.probability("nothing known here") - expected).abs() < 1e-12);
        assert_eq!(c.probability(""), c.probability("!!! ???"));
    }

    #[test]
    fn tokens_are_runs_of_two_or_more_word_characters() {
        let c = tiny();
        // `idiot_x` is one token (underscore is a word character), not `idiot`.
        assert_eq!(c.probability("idiot_x"), c.probability("zzz"));
        assert!(c.probability("(idiot)") > 0.9);
        // Counts matter only through the unit-length vector: repeating a text changes nothing.
        assert!(
            (c.probability("moron hello") - c.probability("moron hello moron hello")).abs() < 1e-12
        );
    }

    #[test]
    fn malformed_exports_are_refused() {
        let bad = [
            serde_json::json!({"format": "other", "vocabulary": ["a"], "idf": [1.0], "members": []}),
            serde_json::json!({"format": FORMAT, "vocabulary": ["ab"], "idf": [1.0, 2.0], "members": []}),
            serde_json::json!({"format": FORMAT, "vocabulary": ["ab"], "idf": [1.0], "members": []}),
            serde_json::json!({"format": FORMAT, "vocabulary": ["ab"], "idf": [1.0],
                "members": [{"coef": [1.0, 2.0], "intercept": 0.0, "sigmoid_a": 1.0, "sigmoid_b": 0.0}]}),
            serde_json::json!({"format": FORMAT, "vocabulary": ["ab", "ab"], "idf": [1.0, 1.0],
                "members": [{"coef": [1.0, 2.0], "intercept": 0.0, "sigmoid_a": 1.0, "sigmoid_b": 0.0}]}),
        ];
        for json in bad {
            assert!(
                ContentClassifier::from_json(json.to_string().as_bytes()).is_err(),
                "{json}"
            );
        }
        assert!(ContentClassifier::from_json(b"not json").is_err());
    }
}
