//! Bedrock's `RetrievalFilter`: conditions on a passage's metadata, checked while searching
//! (a passage that fails them is never a candidate, so `numberOfResults` still holds).

use serde_json::{Map, Value};

use crate::KnowledgeError;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Equals(String, Value),
    NotEquals(String, Value),
    GreaterThan(String, f64),
    GreaterThanOrEquals(String, f64),
    LessThan(String, f64),
    LessThanOrEquals(String, f64),
    In(String, Vec<Value>),
    NotIn(String, Vec<Value>),
    StartsWith(String, String),
    ListContains(String, Value),
    StringContains(String, String),
    AndAll(Vec<Filter>),
    OrAll(Vec<Filter>),
}

impl Filter {
    /// Reads a `RetrievalFilter` union; `param` names it in errors
    /// (`retrievalConfiguration.vectorSearchConfiguration.filter`).
    pub fn parse(v: &Value, param: &str) -> Result<Filter, KnowledgeError> {
        let invalid = |why: String| KnowledgeError::InvalidFilter {
            param: param.to_string(),
            why,
        };
        let object = v
            .as_object()
            .filter(|o| o.len() == 1)
            .ok_or_else(|| invalid("a filter is an object with exactly one member".into()))?;
        let Some((op, body)) = object.iter().next() else {
            return Err(invalid(
                "a filter is an object with exactly one member".into(),
            ));
        };
        let param = format!("{param}.{op}");
        if op == "andAll" || op == "orAll" {
            let items = body
                .as_array()
                .filter(|a| a.len() >= 2)
                .ok_or_else(|| invalid(format!("`{op}` takes a list of at least 2 filters")))?;
            let filters = items
                .iter()
                .enumerate()
                .map(|(i, f)| Filter::parse(f, &format!("{param}.{i}")))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if op == "andAll" {
                Filter::AndAll(filters)
            } else {
                Filter::OrAll(filters)
            });
        }
        let key = body
            .get("key")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| invalid(format!("`{op}` needs a `key` string")))?
            .to_string();
        let value = body
            .get("value")
            .ok_or_else(|| invalid(format!("`{op}` needs a `value`")))?;
        let number = || {
            value
                .as_f64()
                .ok_or_else(|| invalid(format!("`{op}` compares numbers: its value must be one")))
        };
        let string = || {
            value
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| invalid(format!("`{op}` takes a string value")))
        };
        let list = || {
            value
                .as_array()
                .cloned()
                .ok_or_else(|| invalid(format!("`{op}` takes a list value")))
        };
        Ok(match op.as_str() {
            "equals" => Filter::Equals(key, value.clone()),
            "notEquals" => Filter::NotEquals(key, value.clone()),
            "greaterThan" => Filter::GreaterThan(key, number()?),
            "greaterThanOrEquals" => Filter::GreaterThanOrEquals(key, number()?),
            "lessThan" => Filter::LessThan(key, number()?),
            "lessThanOrEquals" => Filter::LessThanOrEquals(key, number()?),
            "in" => Filter::In(key, list()?),
            "notIn" => Filter::NotIn(key, list()?),
            "startsWith" => Filter::StartsWith(key, string()?),
            "listContains" => Filter::ListContains(key, value.clone()),
            "stringContains" => Filter::StringContains(key, string()?),
            other => return Err(invalid(format!("`{other}` is not a filter operator"))),
        })
    }

    /// Whether a passage with `metadata` passes. A condition on an attribute the passage
    /// lacks fails, except the negative ones (`notEquals`, `notIn`), which pass.
    pub fn matches(&self, metadata: &Map<String, Value>) -> bool {
        self.matches_in(metadata, None)
    }

    /// [`Filter::matches`] over a passage's own metadata and, for keys it lacks, the
    /// attributes the index knows it by (`x-amz-bedrock-kb-data-source-id`, the source).
    pub fn matches_in(
        &self,
        metadata: &Map<String, Value>,
        implicit: Option<&Map<String, Value>>,
    ) -> bool {
        let attributes = Attributes { metadata, implicit };
        self.test(&attributes)
    }

    fn test(&self, metadata: &Attributes<'_>) -> bool {
        let number = |k: &str| metadata.get(k).and_then(Value::as_f64);
        match self {
            Filter::Equals(k, v) => metadata.get(k).is_some_and(|m| same(m, v)),
            Filter::NotEquals(k, v) => !metadata.get(k).is_some_and(|m| same(m, v)),
            Filter::GreaterThan(k, v) => number(k).is_some_and(|m| m > *v),
            Filter::GreaterThanOrEquals(k, v) => number(k).is_some_and(|m| m >= *v),
            Filter::LessThan(k, v) => number(k).is_some_and(|m| m < *v),
            Filter::LessThanOrEquals(k, v) => number(k).is_some_and(|m| m <= *v),
            Filter::In(k, vs) => metadata
                .get(k)
                .is_some_and(|m| vs.iter().any(|v| same(m, v))),
            Filter::NotIn(k, vs) => !metadata
                .get(k)
                .is_some_and(|m| vs.iter().any(|v| same(m, v))),
            Filter::StartsWith(k, p) => metadata
                .get(k)
                .and_then(Value::as_str)
                .is_some_and(|m| m.starts_with(p.as_str())),
            Filter::ListContains(k, v) => metadata
                .get(k)
                .and_then(Value::as_array)
                .is_some_and(|items| items.iter().any(|m| same(m, v))),
            Filter::StringContains(k, s) => match metadata.get(k) {
                Some(Value::String(m)) => m.contains(s.as_str()),
                Some(Value::Array(items)) => items
                    .iter()
                    .any(|m| m.as_str().is_some_and(|m| m.contains(s.as_str()))),
                _ => false,
            },
            Filter::AndAll(fs) => fs.iter().all(|f| f.test(metadata)),
            Filter::OrAll(fs) => fs.iter().any(|f| f.test(metadata)),
        }
    }
}

/// A passage's attributes: its metadata first, then the index's own.
struct Attributes<'a> {
    metadata: &'a Map<String, Value>,
    implicit: Option<&'a Map<String, Value>>,
}

impl Attributes<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.metadata
            .get(key)
            .or_else(|| self.implicit.and_then(|m| m.get(key)))
    }
}

/// JSON equality with numbers compared by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn passes(filter: Value, metadata: Value) -> bool {
        let f = Filter::parse(&filter, "filter").unwrap();
        f.matches(metadata.as_object().unwrap())
    }

    #[test]
    fn each_operator() {
        let m = json!({"year": 2021, "genre": "drama", "tags": ["a", "bc"], "title": "The Sea"});
        assert!(passes(
            json!({"equals": {"key": "year", "value": 2021.0}}),
            m.clone()
        ));
        assert!(!passes(
            json!({"equals": {"key": "missing", "value": 1}}),
            m.clone()
        ));
        assert!(passes(
            json!({"notEquals": {"key": "missing", "value": 1}}),
            m.clone()
        ));
        assert!(passes(
            json!({"greaterThan": {"key": "year", "value": 2020}}),
            m.clone()
        ));
        assert!(!passes(
            json!({"lessThan": {"key": "year", "value": 2021}}),
            m.clone()
        ));
        assert!(passes(
            json!({"lessThanOrEquals": {"key": "year", "value": 2021}}),
            m.clone()
        ));
        assert!(passes(
            json!({"in": {"key": "genre", "value": ["comedy", "drama"]}}),
            m.clone()
        ));
        assert!(!passes(
            json!({"notIn": {"key": "genre", "value": ["drama"]}}),
            m.clone()
        ));
        assert!(passes(
            json!({"startsWith": {"key": "title", "value": "The"}}),
            m.clone()
        ));
        assert!(passes(
            json!({"listContains": {"key": "tags", "value": "bc"}}),
            m.clone()
        ));
        assert!(passes(
            json!({"stringContains": {"key": "tags", "value": "c"}}),
            m.clone()
        ));
        assert!(passes(
            json!({"andAll": [{"equals": {"key": "genre", "value": "drama"}},
                              {"orAll": [{"equals": {"key": "year", "value": 1999}},
                                         {"greaterThanOrEquals": {"key": "year", "value": 2021}}]}]}),
            m
        ));
    }

    #[test]
    fn malformed_filters_name_what_is_wrong() {
        for (bad, why) in [
            (
                json!({"greaterThan": {"key": "year", "value": "2020"}}),
                "numbers",
            ),
            (json!({"in": {"key": "genre", "value": "drama"}}), "list"),
            (
                json!({"andAll": [{"equals": {"key": "a", "value": 1}}]}),
                "at least 2",
            ),
            (
                json!({"equals": {"key": "a", "value": 1}, "in": {}}),
                "exactly one",
            ),
            (
                json!({"like": {"key": "a", "value": "x"}}),
                "not a filter operator",
            ),
            (json!({"equals": {"value": 1}}), "`key`"),
        ] {
            let e = Filter::parse(&bad, "f").unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }
}
