//! Turning resolved content into ConfigMap data: `config.json`, `config.yaml`, one
//! `KEY=value` entry per leaf, or flagd's `flags.json` (checked first). Pure; the whole render succeeds or nothing is written.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{
    api::v1alpha1::ConfigFormat,
    core::resolve::{canonical_json, kind_of},
};

/// The key of flag definitions in a ConfigMap of the `Flagd` format: the file flagd
/// and in-process providers are pointed at.
pub const FLAGD_KEY: &str = "flags.json";

/// The most a ConfigMap may hold (the apiserver refuses larger ones).
pub const CONFIG_MAP_LIMIT: usize = 1024 * 1024;

/// Why content cannot be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("the rendered ConfigMap is {size} bytes; ConfigMaps hold at most {CONFIG_MAP_LIMIT}")]
    TooLarge { size: usize },
    #[error("flattened keys {first:?} and {second:?} both become {key:?}; rename one of them")]
    KeyCollision {
        first: String,
        second: String,
        key: String,
    },
    #[error("the Env format needs a JSON object at the top, not {found}")]
    NotAnObject { found: &'static str },
    #[error("cannot render YAML: {0}")]
    Yaml(String),
    #[error("{} problem(s) in the flag definitions: {}", .0.len(), listed(.0))]
    Flags(Vec<super::flags::Problem>),
}

/// The first few problems, and how many more.
fn listed(problems: &[super::flags::Problem]) -> String {
    const LISTED: usize = 5;
    let shown: Vec<String> = problems
        .iter()
        .take(LISTED)
        .map(ToString::to_string)
        .collect();
    match problems.len().saturating_sub(LISTED) {
        0 => shown.join("; "),
        more => format!("{}; and {more} more", shown.join("; ")),
    }
}

/// Renders `content` as the ConfigMap `data` of the given format.
pub fn render(
    content: &Value,
    format: ConfigFormat,
) -> Result<BTreeMap<String, String>, RenderError> {
    let data = match format {
        ConfigFormat::Json => BTreeMap::from([("config.json".to_owned(), pretty_json(content))]),
        ConfigFormat::Yaml => {
            let yaml =
                serde_yaml_ng::to_string(content).map_err(|e| RenderError::Yaml(e.to_string()))?;
            BTreeMap::from([("config.yaml".to_owned(), yaml)])
        }
        ConfigFormat::Env => flatten(content)?,
        ConfigFormat::Flagd => {
            let problems = super::flags::problems(content);
            if !problems.is_empty() {
                return Err(RenderError::Flags(problems));
            }
            BTreeMap::from([(FLAGD_KEY.to_owned(), pretty_json(content))])
        }
    };
    let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > CONFIG_MAP_LIMIT {
        return Err(RenderError::TooLarge { size });
    }
    Ok(data)
}

/// Pretty JSON with sorted keys, so the same content always renders the same bytes.
fn pretty_json(content: &Value) -> String {
    let sorted: Value = serde_json::from_str(&canonical_json(content)).unwrap_or(Value::Null);
    let mut text = serde_json::to_string_pretty(&sorted).unwrap_or_default();
    text.push('\n');
    text
}

fn flatten(content: &Value) -> Result<BTreeMap<String, String>, RenderError> {
    let Value::Object(_) = content else {
        return Err(RenderError::NotAnObject {
            found: kind_of(content),
        });
    };
    let mut out = BTreeMap::new();
    let mut origins: BTreeMap<String, String> = BTreeMap::new();
    flatten_into(content, "", &mut out, &mut origins)?;
    Ok(out)
}

fn flatten_into(
    value: &Value,
    path: &str,
    out: &mut BTreeMap<String, String>,
    origins: &mut BTreeMap<String, String>,
) -> Result<(), RenderError> {
    let child = |segment: &str| {
        if path.is_empty() {
            segment.to_owned()
        } else {
            format!("{path}.{segment}")
        }
    };
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                flatten_into(value, &child(key), out, origins)?;
            }
        }
        Value::Array(items) => {
            for (i, value) in items.iter().enumerate() {
                flatten_into(value, &child(&i.to_string()), out, origins)?;
            }
        }
        leaf => {
            let key = env_key(path);
            if let Some(first) = origins.insert(key.clone(), path.to_owned()) {
                return Err(RenderError::KeyCollision {
                    first,
                    second: path.to_owned(),
                    key,
                });
            }
            let text = match leaf {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            out.insert(key, text);
        }
    }
    Ok(())
}

/// `pool.maxSize` → `POOL_MAXSIZE`: upper case, anything but letters and digits as `_`.
fn env_key(path: &str) -> String {
    path.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_is_pretty_and_sorted() {
        let data = render(
            &json!({"b": 1, "a": {"d": true, "c": null}}),
            ConfigFormat::Json,
        )
        .unwrap();
        assert_eq!(
            data["config.json"],
            "{\n  \"a\": {\n    \"c\": null,\n    \"d\": true\n  },\n  \"b\": 1\n}\n"
        );
    }

    #[test]
    fn yaml_renders_under_config_yaml() {
        let data = render(&json!({"pool": {"max": 10}}), ConfigFormat::Yaml).unwrap();
        assert_eq!(data["config.yaml"], "pool:\n  max: 10\n");
    }

    #[test]
    fn env_flattens_every_leaf() {
        let content = json!({"pool": {"max": 10, "hosts": ["a", "b"]}, "debug": false, "name": "x y", "none": null});
        let data = render(&content, ConfigFormat::Env).unwrap();
        assert_eq!(
            data,
            BTreeMap::from([
                ("DEBUG".to_owned(), "false".to_owned()),
                ("NAME".to_owned(), "x y".to_owned()),
                ("NONE".to_owned(), String::new()),
                ("POOL_HOSTS_0".to_owned(), "a".to_owned()),
                ("POOL_HOSTS_1".to_owned(), "b".to_owned()),
                ("POOL_MAX".to_owned(), "10".to_owned()),
            ])
        );
    }

    #[test]
    fn env_keys_that_collide_are_refused() {
        let error = render(&json!({"a": {"b": 1}, "a_b": 2}), ConfigFormat::Env).unwrap_err();
        assert!(
            matches!(error, RenderError::KeyCollision { ref key, .. } if key == "A_B"),
            "{error}"
        );
    }

    #[test]
    fn env_needs_an_object() {
        let error = render(&json!([1]), ConfigFormat::Env).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the Env format needs a JSON object at the top, not an array"
        );
    }

    #[test]
    fn a_render_over_the_limit_is_refused() {
        let big = "x".repeat(CONFIG_MAP_LIMIT);
        let error = render(&json!({ "blob": big }), ConfigFormat::Json).unwrap_err();
        assert!(matches!(error, RenderError::TooLarge { size } if size > CONFIG_MAP_LIMIT));
    }
}
