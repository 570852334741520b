//! Structured output: the final answer as a JSON value that validates
//! against the box's schema.

use serde_json::Value;

/// A compiled output schema.
pub struct OutputSchema {
    schema: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for OutputSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputSchema")
            .field("schema", &self.schema)
            .finish()
    }
}

impl Clone for OutputSchema {
    fn clone(&self) -> Self {
        // The schema compiled once already, so compiling again cannot fail.
        OutputSchema::compile(self.schema.clone()).expect("schema compiled before")
    }
}

impl OutputSchema {
    /// Compiles a JSON Schema; an invalid schema is an error.
    pub fn compile(schema: Value) -> Result<Self, String> {
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| format!("invalid output schema: {e}"))?;
        Ok(OutputSchema { schema, validator })
    }

    /// The schema.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Finds the JSON value in `answer` and validates it. The errors are
    /// meant for the model: where, and what is wrong.
    pub fn check(&self, answer: &str) -> Result<Value, Vec<String>> {
        let value = extract_json(answer).ok_or_else(|| {
            vec!["the answer contains no JSON value; reply with only the JSON".to_string()]
        })?;
        let errors: Vec<String> = self
            .validator
            .iter_errors(&value)
            .map(|e| {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() { "/".into() } else { at };
                format!("at {at}: {e}")
            })
            .collect();
        if errors.is_empty() {
            Ok(value)
        } else {
            Err(errors)
        }
    }
}

/// The JSON value in a model's answer: the whole text, a fenced code
/// block, or the outermost `{...}` / `[...]`.
pub fn extract_json(text: &str) -> Option<Value> {
    let trimmed = text.trim();
    if let Ok(v) = serde_json::from_str(trimmed) {
        return Some(v);
    }
    if let Some(start) = trimmed.find("```") {
        let after = &trimmed[start + 3..];
        let body = after.split_once('\n').map_or(after, |(_, b)| b);
        if let Some(end) = body.find("```") {
            if let Ok(v) = serde_json::from_str(body[..end].trim()) {
                return Some(v);
            }
        }
    }
    for (open, close) in [('{', '}'), ('[', ']')] {
        if let (Some(s), Some(e)) = (trimmed.find(open), trimmed.rfind(close)) {
            if s < e {
                if let Ok(v) = serde_json::from_str(&trimmed[s..=e]) {
                    return Some(v);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extracts_from_prose_and_fences() {
        assert_eq!(extract_json(" {\"a\":1} "), Some(json!({"a": 1})));
        assert_eq!(
            extract_json("Here:\n```json\n{\"a\": [1]}\n```\nbye"),
            Some(json!({"a": [1]}))
        );
        assert_eq!(extract_json("result is {\"b\":2}."), Some(json!({"b": 2})));
        assert_eq!(extract_json("no json here"), None);
    }

    #[test]
    fn validation_errors_name_the_place() {
        let s = OutputSchema::compile(json!({
            "type": "object",
            "properties": {"count": {"type": "integer"}},
            "required": ["count"]
        }))
        .unwrap();
        assert_eq!(s.check("{\"count\": 3}").unwrap(), json!({"count": 3}));
        let errs = s.check("{\"count\": \"three\"}").unwrap_err();
        assert!(errs[0].contains("/count"), "{errs:?}");
        assert!(s.check("{}").unwrap_err()[0].contains("count"));
        assert!(OutputSchema::compile(json!({"type": 12})).is_err());
    }
}
