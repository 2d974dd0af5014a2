#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

//! Schemas as an attacker or a careless client writes them: too wide, self-referential,
//! unsatisfiable, exponential. Each is refused with a reason when it is compiled (never a
//! crash, never the grammar engine's internals); and mutated schemas in bulk either compile
//! into a constraint that can be stepped, or are refused.

use basalt_fuzz::{mutate_json, Budget, Rng};
use basalt_grammar::{json_rule, GrammarCompiler, GrammarError, TokenConstraint, Word};
use serde_json::{json, Map, Value};

/// Every byte is a token, plus a few JSON-ish multi-byte tokens and an end-of-turn token.
fn compiler() -> (GrammarCompiler, usize) {
    let mut words: Vec<Word> = (0u8..=255).map(|b| Word::Bytes(vec![b])).collect();
    for w in [
        "{\"", "\": ", "\", \"", "\"}", "true", "false", "null", "[", "]",
    ] {
        words.push(Word::Bytes(w.as_bytes().to_vec()));
    }
    words.push(Word::Special("<|end|>".into()));
    let vocab = words.len();
    let eot = (vocab - 1) as u32;
    let c = GrammarCompiler::new(words, eot, |b| b.iter().map(|&x| x as u32).collect()).unwrap();
    (c, vocab)
}

fn compile(c: &GrammarCompiler, schema: &Value) -> Result<TokenConstraint, GrammarError> {
    c.compile(&format!("start: {}", json_rule(schema)?))
}

/// Steps a constraint greedily (the first allowed token) until it completes or `steps` run
/// out; returns the first error.
fn step(k: &mut TokenConstraint, vocab: usize, steps: usize) -> Result<(), GrammarError> {
    for _ in 0..steps {
        let mut logits = vec![0.0f32; vocab];
        k.mask(&mut logits)?;
        let Some(t) = logits.iter().position(|l| l.is_finite()) else {
            return Ok(());
        };
        if t == vocab - 1 {
            return Ok(());
        }
        k.commit(t as u32)?;
    }
    Ok(())
}

fn refused(c: &GrammarCompiler, schema: Value) -> String {
    match compile(c, &schema) {
        Err(GrammarError::Invalid(m)) => m,
        Err(e) => panic!("refused as a failure, not as invalid: {e}"),
        Ok(_) => panic!("compiled: {schema}"),
    }
}

#[test]
fn a_schema_too_wide_for_the_limits_is_refused_naming_the_limit() {
    let (c, _) = compiler();
    let props: Map<String, Value> = (0..7000)
        .map(|i| (format!("p{i}"), json!({"type": "string"})))
        .collect();
    let required: Vec<String> = (0..7000).map(|i| format!("p{i}")).collect();
    let m = refused(
        &c,
        json!({"type": "object", "properties": props, "required": required}),
    );
    assert!(m.contains("5000 object properties"), "{m}");
}

#[test]
fn a_wide_schema_within_the_limits_compiles_without_exhausting_any_stack() {
    let (c, vocab) = compiler();
    let props: Map<String, Value> = (0..4000)
        .map(|i| (format!("p{i}"), json!({"type": "string"})))
        .collect();
    let required: Vec<String> = (0..4000).map(|i| format!("p{i}")).collect();
    // Compiled from a thread with a small stack, as a runtime worker's would be.
    let handle = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let mut k = compile(
                &c,
                &json!({"type": "object", "properties": props, "required": required}),
            )
            .unwrap();
            step(&mut k, vocab, 20).unwrap();
        })
        .unwrap();
    handle.join().unwrap();
}

#[test]
fn self_references_and_cycles_that_admit_no_finite_output_are_refused() {
    let (c, _) = compiler();
    let cases = [
        json!({"type": "object", "properties": {"x": {"$ref": "#"}}, "required": ["x"]}),
        json!({"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}},
                              "required": ["next"]}},
               "$ref": "#/$defs/n"}),
        json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
    ];
    for schema in cases {
        let m = refused(&c, schema.clone());
        assert!(!m.is_empty(), "{schema}");
        // The engine's state and the grammar's text are not in the reason.
        assert!(m.len() < 2000, "{} bytes: {m}", m.len());
    }
}

#[test]
fn an_exponential_pattern_is_refused_or_stays_bounded() {
    let (c, vocab) = compiler();
    let schema = json!({"type": "object", "properties": {"s": {"type": "string",
        "pattern": "^((a{1000}){1000}){1000}$"}}, "required": ["s"]});
    match compile(&c, &schema) {
        Err(GrammarError::Invalid(m)) => assert!(m.len() < 2000, "{m}"),
        Err(e) => panic!("{e}"),
        // If it compiles, stepping it must stay within the engine's budget: an error
        // from the budget is what the scheduler turns into a client error.
        Ok(mut k) => {
            let _ = step(&mut k, vocab, 50);
        }
    }
}

#[test]
fn recursive_schemas_with_a_way_out_still_compile() {
    let (c, vocab) = compiler();
    let tree = json!({"$defs": {"node": {"type": "object", "properties": {
        "name": {"type": "string"},
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "required": ["name"]}}, "$ref": "#/$defs/node"});
    let mut k = compile(&c, &tree).unwrap();
    step(&mut k, vocab, 30).unwrap();
}

#[test]
fn mutated_schemas_compile_and_step_or_are_refused() {
    let (c, vocab) = compiler();
    let seeds = [
        json!({"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
               "unit": {"enum": ["C", "F"]}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
               "required": ["city"]}),
        json!({"type": "array", "items": {"anyOf": [{"type": "number"}, {"type": "null"},
               {"type": "string", "pattern": "^[a-z]{2,5}$"}]}, "minItems": 1, "maxItems": 3}),
        json!({"$defs": {"p": {"type": "object", "properties": {"x": {"type": "number"}}}},
               "type": "object", "properties": {"a": {"$ref": "#/$defs/p"}, "b": {"const": 3}},
               "additionalProperties": {"type": "boolean"}}),
        json!({"allOf": [{"properties": {"a": {"type": "string"}}}, {"required": ["a"]}]}),
    ];
    let ran = Budget::new(400, 20).run(0x5EED_0003, |i, rng: &mut Rng| {
        let schema = mutate_json(&seeds[i % seeds.len()], rng);
        match compile(&c, &schema) {
            Ok(mut k) => {
                // Stepping may end the constraint with an error (a budget spent), which
                // the scheduler reports as the client's; what it must not do is panic.
                let _ = step(&mut k, vocab, 8);
            }
            Err(GrammarError::Invalid(m)) => assert!(m.len() < 4000, "{} bytes", m.len()),
            Err(e) => panic!("{schema}: {e}"),
        }
    });
    assert!(ran >= seeds.len());
}
