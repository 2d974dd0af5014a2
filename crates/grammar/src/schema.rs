//! JSON Schemas as a client sends them, made safe and strict before they become grammars.
//!
//! A schema is untrusted input that turns into an automaton: a wide or deep one costs memory
//! and time (and, in a recursive compiler, stack) in proportion to its size. [`strict_schema`]
//! walks it once, iteratively, checks it against [`SchemaLimits`] (the limits OpenAI's
//! structured outputs document, so a schema that works there works here), and closes every
//! object that lists its properties without saying whether others are allowed: an argument
//! object with keys the function does not take fails the call (`TypeError: unexpected
//! keyword argument`), so `additionalProperties` defaults to `false`, as in xgrammar's strict
//! mode. A schema that wants extra keys says `additionalProperties: true` or gives them a
//! schema.
//!
//! This module never recurses over the input: its depth is the client's to choose.

use serde_json::{Map, Value};

use crate::GrammarError;

/// How large a schema may be. Each limit, when exceeded, is named in the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaLimits {
    /// Object properties in the whole schema, every nested object and definition counted.
    pub max_properties: usize,
    /// `enum` values (and `const`s) in the whole schema.
    pub max_enum_values: usize,
    /// Nesting of subschemas below the root.
    pub max_depth: usize,
    /// JSON values of any kind in the schema document.
    pub max_nodes: usize,
}

impl Default for SchemaLimits {
    fn default() -> Self {
        Self {
            max_properties: 5_000,
            max_enum_values: 1_000,
            max_depth: 32,
            max_nodes: 50_000,
        }
    }
}

/// Keywords whose value is one subschema.
const SUBSCHEMA: &[&str] = &[
    "items",
    "additionalItems",
    "additionalProperties",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
];
/// Keywords whose value maps names to subschemas.
const SUBSCHEMA_MAP: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];
/// Keywords whose value is a list of subschemas (`allOf` apart: see [`strict_schema`]).
const SUBSCHEMA_LIST: &[&str] = &["anyOf", "oneOf", "prefixItems", "items"];

/// Checks `schema` against `limits` and returns it with `additionalProperties: false` added
/// to every object schema that names properties and says nothing of others.
///
/// The direct members of an `allOf` are left open: closing each would forbid the properties
/// the others name, and their conjunction is closed (or not) by the schema around them.
pub fn strict_schema(schema: &Value, limits: &SchemaLimits) -> Result<Value, GrammarError> {
    check_size(schema, limits)?;
    check_finite(schema)?;
    let mut schema = schema.clone();
    let mut properties = 0usize;
    let mut enum_values = 0usize;
    // (subschema, depth, whether it is a direct member of an `allOf`)
    let mut stack: Vec<(&mut Value, usize, bool)> = vec![(&mut schema, 0, false)];
    while let Some((node, depth, in_all_of)) = stack.pop() {
        let Value::Object(object) = node else {
            continue; // `true`, `false`, or a malformed node the compiler will name
        };
        if depth > limits.max_depth {
            return Err(too_large(format!(
                "the schema nests more than {} levels deep",
                limits.max_depth
            )));
        }
        if let Some(Value::Object(p)) = object.get("properties") {
            properties += p.len();
            if properties > limits.max_properties {
                return Err(too_large(format!(
                    "the schema has more than {} object properties in all",
                    limits.max_properties
                )));
            }
        }
        enum_values += match object.get("enum") {
            Some(Value::Array(values)) => values.len(),
            _ => 0,
        } + usize::from(object.contains_key("const"));
        if enum_values > limits.max_enum_values {
            return Err(too_large(format!(
                "the schema has more than {} enum values in all",
                limits.max_enum_values
            )));
        }
        if !in_all_of && names_properties(object) && !says_whether_open(object) {
            object.insert("additionalProperties".into(), Value::Bool(false));
        }
        push_children(object, depth, &mut stack);
    }
    Ok(schema)
}

fn push_children<'a>(
    object: &'a mut Map<String, Value>,
    depth: usize,
    stack: &mut Vec<(&'a mut Value, usize, bool)>,
) {
    for (key, value) in object.iter_mut() {
        let key = key.as_str();
        let in_all_of = key == "allOf";
        let kind = match &*value {
            Value::Object(_) if SUBSCHEMA_MAP.contains(&key) => Children::Map,
            Value::Object(_) if SUBSCHEMA.contains(&key) => Children::One,
            Value::Array(_) if in_all_of || SUBSCHEMA_LIST.contains(&key) => Children::List,
            _ => continue,
        };
        match (kind, value) {
            (Children::Map, Value::Object(map)) => {
                stack.extend(map.values_mut().map(|v| (v, depth + 1, false)));
            }
            (Children::List, Value::Array(list)) => {
                stack.extend(list.iter_mut().map(|v| (v, depth + 1, in_all_of)));
            }
            (_, value) => stack.push((value, depth + 1, false)),
        }
    }
}

/// Where a keyword keeps its subschemas.
#[derive(Clone, Copy)]
enum Children {
    One,
    Map,
    List,
}

fn names_properties(object: &Map<String, Value>) -> bool {
    matches!(object.get("properties"), Some(Value::Object(p)) if !p.is_empty())
}

fn says_whether_open(object: &Map<String, Value>) -> bool {
    object.contains_key("additionalProperties") || object.contains_key("unevaluatedProperties")
}

/// Refuses a schema that no finite JSON value satisfies because a value it requires must
/// contain itself: a required property or a non-empty array whose schema `$ref`s back to an
/// enclosing one, or `$ref`s that only lead to each other. The grammar compiler accepts such
/// schemas and the output could then never end.
///
/// This is a least fixpoint over the document's subschemas ("productive": some finite value
/// satisfies it, as far as this check can tell). Only local references (`#`, `#/...`) are
/// followed; anything it does not model counts as satisfiable, so it refuses only what is
/// certainly infinite. A document whose fixpoint has not settled after [`MAX_ROUNDS`]
/// rounds is let through rather than judged on half an answer.
fn check_finite(schema: &Value) -> Result<(), GrammarError> {
    let nodes = subschemas(schema);
    let index: std::collections::HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, (pointer, _))| (pointer.as_str(), i))
        .collect();
    let mut productive = vec![false; nodes.len()];
    for _ in 0..MAX_ROUNDS {
        let mut changed = false;
        for (i, (pointer, node)) in nodes.iter().enumerate() {
            if !productive[i] && satisfiable(pointer, node, &index, &productive) {
                productive[i] = true;
                changed = true;
            }
        }
        if !changed {
            return match productive.first() {
                Some(false) => Err(GrammarError::Invalid(
                    "no finite JSON value satisfies the schema: a value it requires must \
                     contain itself (a required recursive `$ref`, or `$ref`s that only lead \
                     to each other)"
                        .into(),
                )),
                _ => Ok(()),
            };
        }
    }
    Ok(())
}

const MAX_ROUNDS: usize = 64;

/// Every subschema with its JSON pointer (the root first, at `""`).
fn subschemas(root: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), root)];
    while let Some((pointer, node)) = stack.pop() {
        if let Value::Object(object) = node {
            for (key, value) in object {
                let here = format!("{pointer}/{}", escape(key));
                match value {
                    Value::Object(map) if SUBSCHEMA_MAP.contains(&key.as_str()) => {
                        for (name, child) in map {
                            stack.push((format!("{here}/{}", escape(name)), child));
                        }
                    }
                    Value::Object(_) if SUBSCHEMA.contains(&key.as_str()) => {
                        stack.push((here, value));
                    }
                    Value::Array(list)
                        if key == "allOf" || SUBSCHEMA_LIST.contains(&key.as_str()) =>
                    {
                        for (i, child) in list.iter().enumerate() {
                            stack.push((format!("{here}/{i}"), child));
                        }
                    }
                    _ => {}
                }
            }
        }
        out.push((pointer, node));
    }
    out
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Whether `node` (at `pointer`) has a finite value, given which subschemas are known to.
fn satisfiable(
    pointer: &str,
    node: &Value,
    index: &std::collections::HashMap<&str, usize>,
    productive: &[bool],
) -> bool {
    let Value::Object(object) = node else {
        return node.as_bool() != Some(false);
    };
    let known = |child: String| index.get(child.as_str()).is_none_or(|&i| productive[i]);
    if let Some(target) = object.get("$ref").and_then(Value::as_str) {
        if let Some(local) = target.strip_prefix('#') {
            if !known(local.to_string()) {
                return false;
            }
        }
    }
    let list = |key: &str| match object.get(key) {
        Some(Value::Array(items)) => Some(items.len()),
        _ => None,
    };
    if let Some(n) = list("allOf") {
        if !(0..n).all(|i| known(format!("{pointer}/allOf/{i}"))) {
            return false;
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(n) = list(key) {
            if !(0..n).any(|i| known(format!("{pointer}/{key}/{i}"))) {
                return false;
            }
        }
    }
    if let Some(Value::Array(required)) = object.get("required") {
        let has = |name: &str| matches!(object.get("properties"), Some(Value::Object(p)) if p.contains_key(name));
        let all = required
            .iter()
            .filter_map(Value::as_str)
            .filter(|n| has(n))
            .all(|name| known(format!("{pointer}/properties/{}", escape(name))));
        if !all {
            return false;
        }
    }
    let min_items = object.get("minItems").and_then(Value::as_u64).unwrap_or(0);
    let items_needed = min_items > 0 && object.get("items").is_some_and(Value::is_object);
    !items_needed || known(format!("{pointer}/items"))
}

/// Counts the document's values and its nesting without recursion.
fn check_size(schema: &Value, limits: &SchemaLimits) -> Result<(), GrammarError> {
    let mut nodes = 0usize;
    let mut stack = vec![schema];
    while let Some(value) = stack.pop() {
        nodes += 1;
        if nodes > limits.max_nodes {
            return Err(too_large(format!(
                "the schema has more than {} JSON values",
                limits.max_nodes
            )));
        }
        match value {
            Value::Array(a) => stack.extend(a.iter()),
            Value::Object(o) => stack.extend(o.values()),
            _ => {}
        }
    }
    Ok(())
}

fn too_large(what: String) -> GrammarError {
    GrammarError::Invalid(format!("{what}; simplify it or split it"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn strict(v: Value) -> Value {
        strict_schema(&v, &SchemaLimits::default()).unwrap()
    }

    #[test]
    fn objects_that_name_properties_are_closed_unless_they_say_otherwise() {
        let s = strict(json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "where": {"type": "object", "properties": {"lat": {"type": "number"}}},
                "tags": {"type": "array", "items": {"type": "object", "properties": {"k": {}}}},
                "open": {"type": "object", "properties": {"a": {}}, "additionalProperties": true},
                "typed": {"type": "object", "properties": {"a": {}}, "additionalProperties": {"type": "integer"}},
                "any": {"type": "object"},
            },
            "$defs": {"d": {"properties": {"x": {}}}},
            "anyOf": [{"properties": {"y": {}}}],
        }));
        assert_eq!(s["additionalProperties"], json!(false));
        let p = &s["properties"];
        assert_eq!(p["where"]["additionalProperties"], json!(false));
        assert_eq!(p["tags"]["items"]["additionalProperties"], json!(false));
        assert_eq!(p["open"]["additionalProperties"], json!(true));
        assert_eq!(
            p["typed"]["additionalProperties"],
            json!({"type": "integer"})
        );
        // An object that names no properties stays a free-form object.
        assert!(p["any"].get("additionalProperties").is_none());
        assert_eq!(s["$defs"]["d"]["additionalProperties"], json!(false));
        assert_eq!(s["anyOf"][0]["additionalProperties"], json!(false));
        // Property schemas are not objects just because they sit under `properties`.
        assert!(p["city"].get("additionalProperties").is_none());
    }

    #[test]
    fn all_of_members_stay_open_so_their_conjunction_is_satisfiable() {
        let s = strict(json!({
            "allOf": [{"properties": {"a": {}}}, {"properties": {"b": {}}}],
        }));
        assert!(s["allOf"][0].get("additionalProperties").is_none());
        assert!(s["allOf"][1].get("additionalProperties").is_none());
    }

    #[test]
    fn limits_are_named_when_exceeded() {
        let limits = SchemaLimits::default();
        let wide: Map<String, Value> = (0..limits.max_properties + 1)
            .map(|i| (format!("p{i}"), json!({"type": "string"})))
            .collect();
        let e = strict_schema(&json!({"properties": wide}), &limits).unwrap_err();
        assert!(e.to_string().contains("5000 object properties"), "{e}");

        let values: Vec<Value> = (0..limits.max_enum_values + 1).map(Value::from).collect();
        let e = strict_schema(&json!({"enum": values}), &limits).unwrap_err();
        assert!(e.to_string().contains("enum values"), "{e}");

        let mut deep = json!({"type": "string"});
        for _ in 0..limits.max_depth + 1 {
            deep = json!({"type": "array", "items": deep});
        }
        let e = strict_schema(&deep, &limits).unwrap_err();
        assert!(e.to_string().contains("levels deep"), "{e}");

        let many: Vec<Value> = (0..limits.max_nodes).map(Value::from).collect();
        let e = strict_schema(&json!({"examples": many}), &limits).unwrap_err();
        assert!(e.to_string().contains("JSON values"), "{e}");
    }

    #[test]
    fn a_schema_at_the_limits_passes() {
        let limits = SchemaLimits::default();
        let wide: Map<String, Value> = (0..limits.max_properties)
            .map(|i| (format!("p{i}"), json!({"type": "string"})))
            .collect();
        assert!(strict_schema(&json!({"properties": wide}), &limits).is_ok());
    }
}
