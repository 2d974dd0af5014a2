//! Constrained decoding: which tokens may come next so that the output stays inside a
//! grammar (a JSON Schema, a tool-call format).
//!
//! A [`GrammarCompiler`] is built once per model from its vocabulary (the bytes each token
//! stands for) and compiles Lark-style grammars, with JSON Schemas embedded as `%json`,
//! into [`TokenConstraint`]s: one per generation, stepped token by token by the scheduler.
//! The heavy lifting (Earley parsing, lexer automata, the token trie) is llguidance's.
//!
//! This crate knows nothing of prompts, tools or API dialects: callers build the grammar
//! text, this crate only enforces it. Schemas are untrusted: [`json_rule`] bounds their size
//! first ([`schema`]), and compilation runs on a thread of its own with a stack sized for the
//! compiler's recursion, so no schema can overflow a caller's (runtime) thread.

#![forbid(unsafe_code)]

pub mod schema;

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GrammarError {
    /// The grammar or schema is invalid or cannot be satisfied.
    #[error("{0}")]
    Invalid(String),
    /// The constraint reached a state it cannot continue from: the grammar admits no
    /// finite output from here, or enforcing it ran out of its computation budget. The
    /// message is the grammar engine's own, for logs, not for clients.
    #[error("constrained decoding failed: {0}")]
    Failed(String),
}

/// Stack for one compilation: llguidance's schema and grammar compilers recurse over the
/// grammar's structure. Only touched pages are ever backed by memory.
const COMPILE_STACK_BYTES: usize = 256 << 20;

/// A token's meaning for the grammar.
pub enum Word {
    /// Text the token stands for.
    Bytes(Vec<u8>),
    /// A control token (`<|im_end|>`): never part of the text, so no grammar produces it;
    /// the name is for diagnostics.
    Special(String),
}

/// Compiles grammars for one vocabulary.
pub struct GrammarCompiler {
    factory: ParserFactory,
    vocab_size: usize,
}

/// The model's own tokeniser over plain bytes.
type Tokenize = Box<dyn Fn(&[u8]) -> Vec<u32> + Send + Sync>;

struct Vocabulary {
    trie: TokTrie,
    tokenize: Tokenize,
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        (self.tokenize)(s)
    }

    fn tokenize_is_canonical(&self) -> bool {
        true
    }
}

impl GrammarCompiler {
    /// `words[i]` is token `i`; `end_of_turn` is the token a finished grammar allows next;
    /// `tokenize` is the model's own tokeniser over plain bytes.
    pub fn new(
        words: Vec<Word>,
        end_of_turn: u32,
        tokenize: impl Fn(&[u8]) -> Vec<u32> + Send + Sync + 'static,
    ) -> Result<Self, GrammarError> {
        let vocab_size = words.len();
        if end_of_turn as usize >= vocab_size {
            return Err(GrammarError::Invalid(
                "end-of-turn token outside the vocabulary".into(),
            ));
        }
        let bytes: Vec<Vec<u8>> = words
            .into_iter()
            .map(|w| match w {
                Word::Bytes(b) => b,
                Word::Special(name) => {
                    let mut b = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    b.extend_from_slice(name.as_bytes());
                    b
                }
            })
            .collect();
        let info = TokRxInfo::new(vocab_size as u32, end_of_turn);
        let trie = TokTrie::from(&info, &bytes);
        let env: TokEnv = Arc::new(Vocabulary {
            trie,
            tokenize: Box::new(tokenize),
        });
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| GrammarError::Invalid(reason(e)))?;
        factory.quiet();
        // Errors reach logs and, through the engine, API responses: the parser's state and
        // the grammar's text are internals, and can be megabytes.
        factory.limits_mut().verbose_errors = false;
        Ok(Self {
            factory,
            vocab_size,
        })
    }

    /// Compiles a Lark-style grammar (llguidance's dialect; `%json {...}` embeds a schema)
    /// on a thread with a large stack, and computes its first mask there too, so that a
    /// grammar that cannot even start is an error now rather than in the middle of a
    /// generation. A panic inside the grammar engine is an error, not a crash.
    pub fn compile(&self, lark: &str) -> Result<TokenConstraint, GrammarError> {
        std::thread::scope(|scope| {
            let compiling = std::thread::Builder::new()
                .name("basalt-grammar".into())
                .stack_size(COMPILE_STACK_BYTES)
                .spawn_scoped(scope, || self.compile_here(lark))
                .map_err(|e| GrammarError::Failed(format!("cannot start a thread: {e}")))?;
            compiling
                .join()
                .map_err(|_| GrammarError::Failed("the grammar compiler panicked".into()))?
        })
    }

    fn compile_here(&self, lark: &str) -> Result<TokenConstraint, GrammarError> {
        let grammar = TopLevelGrammar::from_lark(lark.to_string());
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| GrammarError::Invalid(reason(e)))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(GrammarError::Invalid(reason(e)));
        }
        let mut constraint = TokenConstraint {
            matcher,
            vocab_size: self.vocab_size,
        };
        constraint.first_mask()?;
        Ok(constraint)
    }
}

/// One generation's progress through its grammar.
pub struct TokenConstraint {
    matcher: Matcher,
    vocab_size: usize,
}

impl std::fmt::Debug for TokenConstraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenConstraint")
    }
}

impl TokenConstraint {
    /// Whether any token can start the output: a grammar that admits no output at all is
    /// the caller's error, reported with the grammar engine's reason.
    fn first_mask(&mut self) -> Result<(), GrammarError> {
        match self.matcher.compute_mask_or_eos() {
            Ok(allowed) if allowed.num_set() > 0 => Ok(()),
            Ok(_) => Err(GrammarError::Invalid(
                "no output can satisfy the grammar".into(),
            )),
            Err(e) => Err(GrammarError::Invalid(reason(e))),
        }
    }

    /// Sets every logit the grammar does not allow next to minus infinity. Once the
    /// grammar is complete, only the end-of-turn token remains.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<(), GrammarError> {
        let allowed = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| GrammarError::Failed(reason(e)))?;
        if allowed.num_set() == 0 {
            return Err(GrammarError::Failed(
                "no token can continue the output".into(),
            ));
        }
        let n = logits.len().min(self.vocab_size);
        for (i, l) in logits.iter_mut().enumerate().take(n) {
            if !allowed.is_allowed(i as u32) {
                *l = f32::NEG_INFINITY;
            }
        }
        for l in logits.iter_mut().skip(n) {
            *l = f32::NEG_INFINITY;
        }
        Ok(())
    }

    /// Advances past a sampled token (which [`TokenConstraint::mask`] allowed).
    pub fn commit(&mut self, token: u32) -> Result<(), GrammarError> {
        self.matcher
            .consume_token(token)
            .map_err(|e| GrammarError::Failed(reason(e)))
    }

    /// Whether the output so far is a complete sentence of the grammar.
    pub fn is_complete(&mut self) -> bool {
        self.matcher.is_stopped() || self.matcher.is_accepting().unwrap_or(false)
    }
}

/// The grammar engine's message, cut to a length a client or a log line can take: it can
/// quote the schema, which may be megabytes.
fn reason(e: impl std::fmt::Display) -> String {
    const MAX_CHARS: usize = 400;
    let text = e.to_string();
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// A JSON Schema as a Lark rule body: `%json {...}`, with compact separators and no free
/// whitespace, so a small model cannot wander off into endless spaces. The schema is checked
/// against the default [`schema::SchemaLimits`] and made strict ([`schema::strict_schema`]).
pub fn json_rule(schema: &serde_json::Value) -> Result<String, GrammarError> {
    let strict = schema::strict_schema(schema, &schema::SchemaLimits::default())?;
    let mut schema = match strict {
        serde_json::Value::Object(m) => m,
        serde_json::Value::Bool(true) => serde_json::Map::new(),
        _ => {
            return Err(GrammarError::Invalid(
                "a JSON Schema must be an object".into(),
            ))
        }
    };
    schema.insert(
        "x-guidance".into(),
        serde_json::json!({
            "whitespace_flexible": false,
            "item_separator": ", ",
            "key_separator": ": ",
        }),
    );
    Ok(format!("%json {}", serde_json::Value::Object(schema)))
}

/// A Lark string literal for `s`.
pub fn lark_literal(s: &str) -> String {
    // JSON string syntax is a subset Lark's lexer accepts for literals.
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary: every byte is a token, plus a few multi-byte tokens and an
    /// end-of-turn control token.
    fn compiler() -> GrammarCompiler {
        let mut words: Vec<Word> = (0u8..=255).map(|b| Word::Bytes(vec![b])).collect();
        for w in ["{\"", "\": ", "true", "false", "null", "name", "\"}"] {
            words.push(Word::Bytes(w.as_bytes().to_vec()));
        }
        words.push(Word::Special("<|end|>".into()));
        let eot = (words.len() - 1) as u32;
        GrammarCompiler::new(words, eot, |b| b.iter().map(|&x| x as u32).collect()).unwrap()
    }

    /// Greedy decoding where the "model" prefers the tokens of `wanted` in order, falling
    /// back to the first allowed token: the grammar decides what comes out.
    fn decode(c: &mut TokenConstraint, vocab: usize, wanted: &[u8], limit: usize) -> Vec<u8> {
        let eot = (vocab - 1) as u32;
        let mut out = Vec::new();
        for step in 0..limit {
            let mut logits = vec![0.0f32; vocab];
            if let Some(&b) = wanted.get(step) {
                logits[b as usize] = 10.0;
            }
            logits[eot as usize] = 5.0;
            c.mask(&mut logits).unwrap();
            let best = (0..vocab)
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
                .unwrap() as u32;
            if best == eot {
                break;
            }
            c.commit(best).unwrap();
            out.push(best as u8);
        }
        out
    }

    #[test]
    fn json_schema_output_always_parses_and_validates() {
        let c = compiler();
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer"}},
            "required": ["ok", "n"],
            "additionalProperties": false,
        });
        let mut k = c
            .compile(&format!("start: {}", json_rule(&schema).unwrap()))
            .unwrap();
        // The "model" wants to write prose; the grammar makes it JSON.
        let out = decode(&mut k, c.vocab_size, b"Sure! Here it is", 200);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        // An integer, though serde_json reads `-0` as a float.
        let n = v["n"].as_f64().unwrap();
        assert!(v["ok"].is_boolean() && n.fract() == 0.0, "{v}");
        assert_eq!(v.as_object().unwrap().len(), 2);
        assert!(k.is_complete());
    }

    #[test]
    fn alternatives_and_literals() {
        let c = compiler();
        let lark = format!(
            "start: {} | {}",
            lark_literal("<call>\"x\"</call>"),
            lark_literal("no")
        );
        let mut k = c.compile(&lark).unwrap();
        let out = decode(&mut k, c.vocab_size, b"n", 50);
        assert_eq!(out, b"no");
    }

    #[test]
    fn bad_grammars_and_schemas_are_errors() {
        let c = compiler();
        assert!(c.compile("start: (").is_err());
        let bad = serde_json::json!({"type": "object", "properties": {"a": {"type": "nonsense"}}});
        assert!(c
            .compile(&format!("start: {}", json_rule(&bad).unwrap()))
            .is_err());
        assert!(json_rule(&serde_json::json!([1])).is_err());
    }
}
