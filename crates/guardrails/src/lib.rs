//! Guardrails: the policies a Bedrock guardrail configures, enforced on text.
//!
//! A guardrail is stored as Bedrock's `CreateGuardrail` policy configuration ([`Policies`]),
//! compiled once ([`Guardrail::compile`], which enforces Bedrock's limits and names the
//! member at fault), then applied to a prompt or an answer ([`Guardrail::assess`]): denied
//! words ([`words`]), sensitive information found by pattern, check digit and context
//! ([`pii`]) and custom regexes, each blocking or masking, reported in Bedrock's
//! `GuardrailAssessment` shape with the text units it metered. The policies that need a
//! model are split the same way: [`judge`] writes the guard model's question and reads its
//! verdict (denied topics, content filters, names and addresses), [`grounding`] scores
//! embeddings; the server runs the models.
//!
//! One content filter needs no guard model: [`classifier`] scores INSULTS with a linear
//! model over word counts, arithmetic the crate does itself.
//!
//! This crate does no I/O, runs no neural model and holds no state: the platform stores
//! guardrails, loads the classifier's numbers and decides where to apply them. Nothing here
//! may take more than linear time in the text, whatever a tenant configures (the `regex`
//! crate guarantees it for patterns).

#![forbid(unsafe_code)]

mod assess;
pub mod classifier;
pub mod grounding;
pub mod judge;
pub mod pii;
mod policy;
pub mod words;

pub use assess::{
    text_units, Assessment, CustomWord, ManagedWord, Outcome, PiiEntity, PolicyUnits, RegexFinding,
    Reported, SensitiveInformationPolicyAssessment, WordPolicyAssessment,
};
pub use classifier::ContentClassifier;
pub use pii::PiiType;
pub use policy::{
    Directions, Guardrail, ManagedWordListConfig, PiiEntityConfig, Policies, PolicyAction,
    RegexConfig, SensitiveInformationPolicyConfig, Source, WordConfig, WordPolicyConfig,
    MAX_PATTERN_CHARS, MAX_REGEXES, MAX_WORDS,
};
