//! JSON Schema validation with messages that name the JSON path.

use std::fmt;

use jsonschema::Validator;
use serde_json::Value;

/// A JSON Schema, checked against its meta-schema and compiled once.
pub struct CompiledSchema {
    validator: Validator,
}

/// A schema that is not a valid JSON Schema.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a valid JSON Schema: {path}: {message}")]
pub struct SchemaError {
    /// Where in the schema the problem is, as a JSONPath.
    pub path: String,
    pub message: String,
}

/// One way a document breaks a schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Where in the document, as a JSONPath such as `$.pool.max` or `$.hosts[2]`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl CompiledSchema {
    /// Compiles a schema. References are resolved only within the schema itself: a
    /// schema never makes the operator fetch a URL or read a file.
    pub fn compile(schema: &Value) -> Result<Self, SchemaError> {
        if !schema.is_object() && !schema.is_boolean() {
            return Err(SchemaError {
                path: "$".to_owned(),
                message: "a schema must be an object or a boolean".to_owned(),
            });
        }
        jsonschema::validator_for(schema)
            .map(|validator| Self { validator })
            .map_err(|error| SchemaError {
                // The schema is the instance its meta-schema validates: the instance
                // path is where in the user's schema the problem is.
                path: json_path(error.instance_path().as_str()),
                message: error.to_string(),
            })
    }

    /// Every violation of the schema by `document`, in the validator's order.
    pub fn violations(&self, document: &Value) -> Vec<Violation> {
        self.validator
            .iter_errors(document)
            .map(|error| Violation {
                path: json_path(error.instance_path().as_str()),
                message: error.to_string(),
            })
            .collect()
    }
}

/// Turns a JSON pointer (`/pool/max`, `/hosts/2`) into a JSONPath (`$.pool.max`,
/// `$.hosts[2]`), quoting keys that are not plain identifiers.
pub fn json_path(pointer: &str) -> String {
    let mut path = String::from("$");
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            path.push_str(&format!("[{segment}]"));
        } else if !segment.is_empty()
            && segment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            path.push('.');
            path.push_str(&segment);
        } else {
            path.push_str(&format!("[{segment:?}]"));
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_become_json_paths() {
        assert_eq!(json_path(""), "$");
        assert_eq!(json_path("/pool/max"), "$.pool.max");
        assert_eq!(json_path("/hosts/2/name"), "$.hosts[2].name");
        assert_eq!(json_path("/a~1b/c d"), "$[\"a/b\"][\"c d\"]");
    }

    #[test]
    fn violations_name_the_path_and_the_rule() {
        let schema = CompiledSchema::compile(&json!({
            "type": "object",
            "required": ["host"],
            "properties": {
                "host": {"type": "string"},
                "ports": {"type": "array", "items": {"type": "integer", "minimum": 1}}
            }
        }))
        .unwrap();
        let violations = schema.violations(&json!({"ports": [80, 0]}));
        let rendered: Vec<String> = violations.iter().map(ToString::to_string).collect();
        assert!(
            rendered.contains(&"$: \"host\" is a required property".to_owned()),
            "{rendered:?}"
        );
        assert!(
            rendered.contains(&"$.ports[1]: 0 is less than the minimum of 1".to_owned()),
            "{rendered:?}"
        );
    }

    #[test]
    fn a_document_that_fits_has_no_violations() {
        let schema = CompiledSchema::compile(&json!({"type": "object"})).unwrap();
        assert!(schema.violations(&json!({"anything": true})).is_empty());
    }

    #[test]
    fn an_invalid_schema_is_refused_with_its_path() {
        let error = CompiledSchema::compile(
            &json!({"type": "object", "properties": {"a": {"type": "strnig"}}}),
        )
        .err()
        .unwrap();
        assert!(
            error.to_string().starts_with("not a valid JSON Schema: "),
            "{error}"
        );
        assert!(error.path.contains("properties"), "{error:?}");
    }

    #[test]
    fn a_schema_that_is_not_an_object_is_refused() {
        assert!(CompiledSchema::compile(&json!("string")).is_err());
    }
}
