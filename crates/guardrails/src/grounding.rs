//! Contextual grounding and relevance, Bedrock's checks on a RAG answer: how well the answer
//! is supported by its grounding source, and how well it answers the query, each a score in
//! [0, 1] held against a configured threshold.
//!
//! The scores come from sentence embeddings, which the caller computes (this crate runs no
//! model) and hands over as vectors:
//! - grounding is the support of the answer's *least* supported sentence: for each answer
//!   sentence, its best cosine similarity to any sentence of the source; the answer's score
//!   is the lowest of those, so one invented claim is enough to fail it;
//! - relevance is the cosine similarity of the whole answer to the query.
//!
//! Cosine similarities below zero count as zero. This is a similarity judge, not an
//! entailment model: it catches answers about something else, not subtle contradictions.

use basalt_types::BasaltError;
use serde::{Deserialize, Serialize};

use crate::assess::Reported;
use crate::policy::PolicyAction;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextualGroundingPolicyConfig {
    pub filters_config: Vec<GroundingFilterConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroundingFilterConfig {
    #[serde(rename = "type")]
    pub kind: GroundingFilterType,
    pub threshold: f64,
    /// `BLOCK` (the default) or `NONE` (report only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<PolicyAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GroundingFilterType {
    Grounding,
    Relevance,
}

/// Checks a configuration as Bedrock validates it: one filter of each type at most,
/// thresholds from 0 to 0.99, actions `BLOCK` or `NONE`.
pub fn validate(config: &ContextualGroundingPolicyConfig) -> Result<(), BasaltError> {
    const PARAM: &str = "contextualGroundingPolicyConfig.filtersConfig";
    if config.filters_config.is_empty() || config.filters_config.len() > 2 {
        return Err(BasaltError::invalid(
            PARAM,
            "a contextual grounding policy has one or two filters",
        ));
    }
    for (i, f) in config.filters_config.iter().enumerate() {
        if !(0.0..=0.99).contains(&f.threshold) {
            return Err(BasaltError::invalid(
                format!("{PARAM}.{i}.threshold"),
                "a threshold is from 0 to 0.99",
            ));
        }
        if f.action == Some(PolicyAction::Anonymize) {
            return Err(BasaltError::invalid(
                format!("{PARAM}.{i}.action"),
                "a grounding filter's action is BLOCK or NONE",
            ));
        }
        if config.filters_config[..i].iter().any(|g| g.kind == f.kind) {
            return Err(BasaltError::invalid(
                format!("{PARAM}.{i}.type"),
                "each filter type may appear once",
            ));
        }
    }
    Ok(())
}

/// The sentences of a text, for grounding: split after `.`, `!`, `?` or a line break, empty
/// pieces dropped. A text without a sentence end is one sentence.
pub fn sentences(text: &str) -> Vec<&str> {
    text.split_inclusive(['.', '!', '?', '\n'])
        .map(str::trim)
        .filter(|s| s.chars().any(char::is_alphanumeric))
        .collect()
}

/// Cosine similarity, clamped to [0, 1].
pub fn similarity(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na.sqrt() * nb.sqrt())).clamp(0.0, 1.0)
}

/// The embeddings a grounding check reads.
pub struct Embedded<'a> {
    /// One per sentence of the answer.
    pub answer_sentences: &'a [Vec<f32>],
    /// One per sentence of the grounding source.
    pub source_sentences: &'a [Vec<f32>],
    pub answer: &'a [f32],
    pub query: Option<&'a [f32]>,
}

/// Grounding and relevance scores, as the module docs define them.
pub fn scores(e: &Embedded<'_>) -> (f64, Option<f64>) {
    let grounding = e
        .answer_sentences
        .iter()
        .map(|s| {
            e.source_sentences
                .iter()
                .map(|src| similarity(s, src))
                .fold(0.0, f64::max)
        })
        .fold(1.0, f64::min);
    let grounding = if e.answer_sentences.is_empty() {
        0.0
    } else {
        grounding
    };
    (grounding, e.query.map(|q| similarity(e.answer, q)))
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ContextualGroundingPolicyAssessment {
    pub filters: Vec<GroundingFilter>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroundingFilter {
    #[serde(rename = "type")]
    pub kind: GroundingFilterType,
    pub threshold: f64,
    pub score: f64,
    pub action: Reported,
    pub detected: bool,
}

/// The policy's verdict on scores: each enabled filter whose score falls below its
/// threshold is detected, and blocks unless its action is `NONE`. Relevance needs a query;
/// without one it is not assessed.
pub fn assess(
    config: &ContextualGroundingPolicyConfig,
    grounding: f64,
    relevance: Option<f64>,
) -> (ContextualGroundingPolicyAssessment, bool) {
    let mut out = ContextualGroundingPolicyAssessment::default();
    let mut blocked = false;
    for f in &config.filters_config {
        if f.enabled == Some(false) {
            continue;
        }
        let score = match f.kind {
            GroundingFilterType::Grounding => grounding,
            GroundingFilterType::Relevance => match relevance {
                Some(r) => r,
                None => continue,
            },
        };
        let detected = score < f.threshold;
        let blocks = detected && f.action != Some(PolicyAction::None);
        blocked |= blocks;
        out.filters.push(GroundingFilter {
            kind: f.kind,
            threshold: f.threshold,
            // Bedrock reports two decimals.
            score: (score * 100.0).round() / 100.0,
            action: if blocks {
                Reported::Blocked
            } else {
                Reported::None
            },
            detected,
        });
    }
    (out, blocked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(threshold: f64) -> ContextualGroundingPolicyConfig {
        serde_json::from_value(serde_json::json!({"filtersConfig": [
            {"type": "GROUNDING", "threshold": threshold},
            {"type": "RELEVANCE", "threshold": threshold, "action": "NONE"}
        ]}))
        .unwrap()
    }

    #[test]
    fn sentences_and_similarity() {
        assert_eq!(
            sentences("Paris is big. Is it?\nYes!  ... "),
            ["Paris is big.", "Is it?", "Yes!"]
        );
        assert_eq!(sentences("no end"), ["no end"]);
        assert!((similarity(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-9);
        assert_eq!(similarity(&[1.0, 0.0], &[-1.0, 0.0]), 0.0);
        assert_eq!(similarity(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn the_least_supported_sentence_sets_the_grounding_score() {
        let source = [vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0]];
        let answer = [0.0, 0.0, 1.0];
        let supported = [vec![1.0, 0.1, 0.0]];
        let (g, r) = scores(&Embedded {
            answer_sentences: &supported,
            source_sentences: &source,
            answer: &answer,
            query: None,
        });
        assert!(g > 0.99 && r.is_none());
        // One sentence the source does not support fails the whole answer.
        let invented = [vec![1.0, 0.0, 0.0], vec![0.0, 0.0, 1.0]];
        let (g, r) = scores(&Embedded {
            answer_sentences: &invented,
            source_sentences: &source,
            answer: &answer,
            query: Some(&answer),
        });
        assert_eq!((g, r), (0.0, Some(1.0)));
    }

    #[test]
    fn below_the_threshold_blocks_unless_the_action_is_none() {
        let (a, blocked) = assess(&config(0.5), 0.3, Some(0.2));
        assert!(blocked);
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!({"filters": [
                {"type": "GROUNDING", "threshold": 0.5, "score": 0.3, "action": "BLOCKED", "detected": true},
                {"type": "RELEVANCE", "threshold": 0.5, "score": 0.2, "action": "NONE", "detected": true}
            ]})
        );
        let (_, blocked) = assess(&config(0.5), 0.7, Some(0.1));
        assert!(!blocked);
        // Relevance needs a query.
        assert_eq!(assess(&config(0.5), 0.7, None).0.filters.len(), 1);
    }

    #[test]
    fn bad_configurations_name_their_field() {
        let bad = |v: serde_json::Value| {
            let c: ContextualGroundingPolicyConfig = serde_json::from_value(v).unwrap();
            validate(&c).unwrap_err().param
        };
        assert_eq!(
            bad(serde_json::json!({"filtersConfig": [{"type": "GROUNDING", "threshold": 1.5}]})),
            Some("contextualGroundingPolicyConfig.filtersConfig.0.threshold".into())
        );
        assert_eq!(
            bad(serde_json::json!({"filtersConfig": [
                {"type": "GROUNDING", "threshold": 0.5}, {"type": "GROUNDING", "threshold": 0.6}]})),
            Some("contextualGroundingPolicyConfig.filtersConfig.1.type".into())
        );
        assert!(validate(&config(0.5)).is_ok());
    }
}
