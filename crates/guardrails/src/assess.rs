//! Applying a compiled guardrail to a text: what each policy found, in Bedrock's
//! `GuardrailAssessment` shape, whether the guardrail intervenes, and the text with
//! anonymised spans masked (`{EMAIL}`, `{regex name}`).

use serde::Serialize;

use crate::pii::{self, PiiType};
use crate::policy::{Guardrail, PolicyAction, Source};

/// The result of one assessment.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// A policy with a BLOCK action found something: the caller answers with the
    /// guardrail's blocked message instead of the text.
    pub blocked: bool,
    /// Something was blocked or masked (Bedrock's `GUARDRAIL_INTERVENED`).
    pub intervened: bool,
    /// The text with every anonymised span masked.
    pub output: String,
    pub assessment: Assessment,
    pub usage: PolicyUnits,
}

/// `GuardrailAssessment`, for the policies Basalt enforces.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Assessment {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub word_policy: Option<WordPolicyAssessment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitive_information_policy: Option<SensitiveInformationPolicyAssessment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contextual_grounding_policy: Option<crate::grounding::ContextualGroundingPolicyAssessment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_policy: Option<crate::judge::TopicPolicyAssessment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_policy: Option<crate::judge::ContentPolicyAssessment>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WordPolicyAssessment {
    pub custom_words: Vec<CustomWord>,
    pub managed_word_lists: Vec<ManagedWord>,
}

/// A managed list's word found, as Bedrock reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManagedWord {
    #[serde(rename = "match")]
    pub matched: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub action: Reported,
    pub detected: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomWord {
    #[serde(rename = "match")]
    pub matched: String,
    pub action: Reported,
    pub detected: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SensitiveInformationPolicyAssessment {
    pub pii_entities: Vec<PiiEntity>,
    pub regexes: Vec<RegexFinding>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PiiEntity {
    #[serde(rename = "match")]
    pub matched: String,
    #[serde(rename = "type")]
    pub kind: PiiType,
    pub action: Reported,
    pub detected: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegexFinding {
    pub name: String,
    #[serde(rename = "match")]
    pub matched: String,
    pub regex: String,
    pub action: Reported,
    pub detected: bool,
}

impl Assessment {
    /// Adds another text's findings to these (one request's several content blocks make
    /// one assessment).
    pub fn absorb(&mut self, other: Assessment) {
        if let Some(w) = other.word_policy {
            let mine = self.word_policy.get_or_insert_with(Default::default);
            mine.custom_words.extend(w.custom_words);
            mine.managed_word_lists.extend(w.managed_word_lists);
        }
        if let Some(s) = other.sensitive_information_policy {
            let mine = self
                .sensitive_information_policy
                .get_or_insert_with(Default::default);
            mine.pii_entities.extend(s.pii_entities);
            mine.regexes.extend(s.regexes);
        }
        if let Some(t) = other.topic_policy {
            let mine = self.topic_policy.get_or_insert_with(Default::default);
            mine.topics.extend(t.topics);
        }
        if let Some(c) = other.content_policy {
            let mine = self.content_policy.get_or_insert_with(Default::default);
            mine.filters.extend(c.filters);
        }
        if let Some(g) = other.contextual_grounding_policy {
            let mine = self
                .contextual_grounding_policy
                .get_or_insert_with(Default::default);
            mine.filters.extend(g.filters);
        }
    }
}

/// What was done about a finding, as an assessment reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reported {
    Blocked,
    Anonymized,
    None,
}

impl From<PolicyAction> for Reported {
    fn from(a: PolicyAction) -> Self {
        match a {
            PolicyAction::Block => Reported::Blocked,
            PolicyAction::Anonymize => Reported::Anonymized,
            PolicyAction::None => Reported::None,
        }
    }
}

/// Text units (1,000 characters, rounded up) each policy assessed, as Bedrock meters them
/// (`GuardrailUsage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyUnits {
    pub word_policy_units: u64,
    pub sensitive_information_policy_units: u64,
    pub contextual_grounding_policy_units: u64,
    pub topic_policy_units: u64,
    pub content_policy_units: u64,
}

impl std::ops::AddAssign for PolicyUnits {
    fn add_assign(&mut self, other: Self) {
        self.word_policy_units += other.word_policy_units;
        self.sensitive_information_policy_units += other.sensitive_information_policy_units;
        self.contextual_grounding_policy_units += other.contextual_grounding_policy_units;
        self.topic_policy_units += other.topic_policy_units;
        self.content_policy_units += other.content_policy_units;
    }
}

/// Text units of `chars` characters: 1,000 each, rounded up, at least one.
pub fn text_units(chars: u64) -> u64 {
    chars.div_ceil(1000).max(1)
}

impl Guardrail {
    /// Assesses `text` flowing in `source`'s direction.
    pub fn assess(&self, text: &str, source: Source) -> Outcome {
        let mut blocked = false;
        let mut masks: Vec<(usize, usize, String)> = Vec::new();
        let mut act = |action: PolicyAction, start: usize, end: usize, mask: &str| match action {
            PolicyAction::Block => blocked = true,
            PolicyAction::Anonymize => masks.push((start, end, format!("{{{mask}}}"))),
            PolicyAction::None => {}
        };
        let units = text_units(text.chars().count() as u64);
        let mut assessment = Assessment::default();
        let mut usage = PolicyUnits::default();

        // A policy is evaluated (and billed) in a direction only if some entry of it
        // applies there.
        let words_apply = self.words.as_ref().is_some_and(|(_, directions)| {
            (0..directions.len()).any(|i| self.word_action(i, source).is_some())
        });
        let configured = self.pii_for(source);
        let sensitive_applies = !configured.is_empty()
            || self
                .regexes
                .iter()
                .any(|(config, _)| Guardrail::regex_action(config, source).is_some());

        if let Some((list, _)) = self.words.as_ref().filter(|_| words_apply) {
            usage.word_policy_units = units;
            let mut words = WordPolicyAssessment::default();
            for m in list.find(text) {
                let Some(action) = self.word_action(m.entry, source) else {
                    continue;
                };
                act(action, m.start, m.end, "");
                let matched = text[m.start..m.end].to_string();
                if m.entry < self.custom_words {
                    words.custom_words.push(CustomWord {
                        matched,
                        action: action.into(),
                        detected: true,
                    });
                } else {
                    words.managed_word_lists.push(ManagedWord {
                        matched,
                        kind: "PROFANITY",
                        action: action.into(),
                        detected: true,
                    });
                }
            }
            assessment.word_policy = Some(words);
        }

        if sensitive_applies {
            usage.sensitive_information_policy_units = units;
            let mut sensitive = SensitiveInformationPolicyAssessment::default();
            let types: Vec<PiiType> = configured.iter().map(|(t, _)| *t).collect();
            for found in pii::find_all(text, &types) {
                let Some(&(_, action)) = configured.iter().find(|(t, _)| *t == found.kind) else {
                    continue;
                };
                act(action, found.start, found.end, found.kind.name());
                sensitive.pii_entities.push(PiiEntity {
                    matched: text[found.start..found.end].to_string(),
                    kind: found.kind,
                    action: action.into(),
                    detected: true,
                });
            }
            for (config, regex) in &self.regexes {
                let Some(action) = Guardrail::regex_action(config, source) else {
                    continue;
                };
                for m in regex.find_iter(text).filter(|m| !m.is_empty()) {
                    act(action, m.start(), m.end(), &config.name);
                    sensitive.regexes.push(RegexFinding {
                        name: config.name.clone(),
                        matched: m.as_str().to_string(),
                        regex: config.pattern.clone(),
                        action: action.into(),
                        detected: true,
                    });
                }
            }
            assessment.sensitive_information_policy = Some(sensitive);
        }

        let intervened = blocked || !masks.is_empty();
        Outcome {
            blocked,
            intervened,
            output: apply_masks(text, masks),
            assessment,
            usage,
        }
    }
}

/// `text` with each span replaced by its mask; of overlapping spans the one that starts
/// first (then the longer) wins.
fn apply_masks(text: &str, mut masks: Vec<(usize, usize, String)>) -> String {
    masks.sort_by_key(|(start, end, _)| (*start, std::cmp::Reverse(*end)));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, mask) in masks {
        if start < at {
            continue;
        }
        out.push_str(&text[at..start]);
        out.push_str(&mask);
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policies;
    use serde_json::json;

    fn guardrail(config: serde_json::Value) -> Guardrail {
        let policies: Policies = serde_json::from_value(config).unwrap();
        Guardrail::compile(&policies).unwrap()
    }

    #[test]
    fn anonymises_and_reports_in_bedrocks_shape() {
        let g = guardrail(json!({
            "sensitiveInformationPolicyConfig": {
                "piiEntitiesConfig": [
                    {"type": "EMAIL", "action": "ANONYMIZE"},
                    {"type": "CREDIT_DEBIT_CARD_NUMBER", "action": "BLOCK", "inputAction": "ANONYMIZE"}
                ],
                "regexesConfig": [{"name": "ticket", "pattern": "TCK-\\d{4}", "action": "ANONYMIZE"}]
            }
        }));
        let text = "Mail a@b.io about TCK-1234, card 4111 1111 1111 1111.";
        let out = g.assess(text, Source::Input);
        assert!(out.intervened && !out.blocked);
        assert_eq!(
            out.output,
            "Mail {EMAIL} about {ticket}, card {CREDIT_DEBIT_CARD_NUMBER}."
        );
        assert_eq!(
            serde_json::to_value(&out.assessment).unwrap(),
            json!({"sensitiveInformationPolicy": {
                "piiEntities": [
                    {"match": "a@b.io", "type": "EMAIL", "action": "ANONYMIZED", "detected": true},
                    {"match": "4111 1111 1111 1111", "type": "CREDIT_DEBIT_CARD_NUMBER",
                     "action": "ANONYMIZED", "detected": true}
                ],
                "regexes": [{"name": "ticket", "match": "TCK-1234", "regex": "TCK-\\d{4}",
                             "action": "ANONYMIZED", "detected": true}]
            }})
        );
        // The card blocks on output.
        let out = g.assess(text, Source::Output);
        assert!(out.blocked && out.intervened);
        assert_eq!(out.usage.sensitive_information_policy_units, 1);
    }

    #[test]
    fn a_policy_with_nothing_for_a_direction_is_neither_run_nor_billed_there() {
        let g = guardrail(json!({
            "sensitiveInformationPolicyConfig": {
                "regexesConfig": [{"name": "city", "pattern": "Paris", "action": "ANONYMIZE",
                                   "inputEnabled": false}]
            }
        }));
        let input = g.assess("Paris", Source::Input);
        assert!(!input.intervened && input.assessment.sensitive_information_policy.is_none());
        assert_eq!(input.usage.sensitive_information_policy_units, 0);
        let output = g.assess("Paris", Source::Output);
        assert!(output.intervened);
        assert_eq!(output.usage.sensitive_information_policy_units, 1);
    }

    #[test]
    fn the_managed_profanity_list_blocks_and_reports_its_type() {
        let g = guardrail(json!({
            "wordPolicyConfig": {
                "wordsConfig": [{"text": "project phoenix"}],
                "managedWordListsConfig": [{"type": "PROFANITY", "outputEnabled": false}]
            }
        }));
        let out = g.assess("What the fuck is Project Phoenix?", Source::Input);
        assert!(out.blocked);
        assert_eq!(
            serde_json::to_value(out.assessment.word_policy.unwrap()).unwrap(),
            json!({
                "customWords": [{"match": "Project Phoenix", "action": "BLOCKED", "detected": true}],
                "managedWordLists": [{"match": "fuck", "type": "PROFANITY", "action": "BLOCKED",
                                      "detected": true}]
            })
        );
        // Whole words only, and only where the list applies.
        assert!(
            !g.assess("a classic shitake-free scunthorpe", Source::Input)
                .intervened
        );
        assert!(!g.assess("what the fuck", Source::Output).intervened);
    }

    #[test]
    fn words_block_and_disabled_directions_do_nothing() {
        let g = guardrail(json!({
            "wordPolicyConfig": {"wordsConfig": [
                {"text": "project phoenix"},
                {"text": "internal", "outputEnabled": false}
            ]}
        }));
        let out = g.assess("Tell me about Project Phoenix", Source::Input);
        assert!(out.blocked);
        assert_eq!(
            out.assessment.word_policy.unwrap().custom_words,
            [CustomWord {
                matched: "Project Phoenix".into(),
                action: Reported::Blocked,
                detected: true
            }]
        );
        assert!(!g.assess("an internal memo", Source::Output).intervened);
        assert!(g.assess("an internal memo", Source::Input).blocked);
        assert!(!g.assess("nothing to see", Source::Input).intervened);
    }

    #[test]
    fn bad_configurations_name_the_member() {
        let cases = [
            (
                json!({"sensitiveInformationPolicyConfig": {"regexesConfig": [
                    {"name": "a", "pattern": "ok", "action": "BLOCK"},
                    {"name": "b", "pattern": "(unclosed", "action": "BLOCK"}]}}),
                "sensitiveInformationPolicyConfig.regexesConfig.1.pattern",
            ),
            (
                json!({"sensitiveInformationPolicyConfig": {"piiEntitiesConfig": [
                    {"type": "EMAIL", "action": "ANONYMIZE"}, {"type": "PASSWORD", "action": "BLOCK"}]}}),
                "sensitiveInformationPolicyConfig.piiEntitiesConfig.1.type",
            ),
            (
                json!({"sensitiveInformationPolicyConfig": {"regexesConfig":
                    (0..11).map(|i| json!({"name": format!("r{i}"), "pattern": "x", "action": "BLOCK"})).collect::<Vec<_>>()}}),
                "sensitiveInformationPolicyConfig.regexesConfig",
            ),
            (
                json!({"sensitiveInformationPolicyConfig": {"regexesConfig": [
                    {"name": "big", "pattern": "a{1000}{1000}", "action": "BLOCK"}]}}),
                "sensitiveInformationPolicyConfig.regexesConfig.0.pattern",
            ),
            (
                json!({"wordPolicyConfig": {"wordsConfig":
                    (0..10_001).map(|i| json!({"text": format!("w{i}")})).collect::<Vec<_>>()}}),
                "wordPolicyConfig.wordsConfig",
            ),
        ];
        for (config, param) in cases {
            let policies: Policies = serde_json::from_value(config).unwrap();
            let e = match Guardrail::compile(&policies) {
                Ok(_) => panic!("{param}: accepted"),
                Err(e) => e,
            };
            assert_eq!(e.param.as_deref(), Some(param), "{}", e.message);
        }
    }

    #[test]
    fn a_hostile_pattern_runs_in_linear_time() {
        let g = guardrail(
            json!({"sensitiveInformationPolicyConfig": {"regexesConfig": [
            {"name": "evil", "pattern": "(a+)+$", "action": "BLOCK"}]}}),
        );
        // Exponential for a backtracking engine (no match, after trying every split of the
        // run of `a`s); one pass for this one.
        let text = format!("{}!", "a".repeat(100_000));
        assert!(!g.assess(&text, Source::Input).blocked);
        assert!(g.assess("aaa", Source::Input).blocked);
    }
}
