//! An environment's `remove` list: keys taken out of its content after its overrides
//! apply. They are folded into the environment's merge patch as `null`s, exactly what
//! a `null` in `overrides` does, so a version records them the same way whichever way
//! they were written, and they survive apply methods that drop nulls.

use serde_json::{Map, Value};

use super::merge_patch;

/// A removal that cannot be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("remove {pointer:?}: {reason}")]
pub struct RemovalError {
    pub pointer: String,
    pub reason: String,
}

/// The environment's merge patch: `overrides` with a `null` at each removed key.
pub fn patch_with_removals(
    data: &Value,
    overrides: Option<&Value>,
    remove: &[String],
) -> Result<Value, RemovalError> {
    let mut patch = overrides
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    if remove.is_empty() {
        return Ok(patch);
    }
    let mut merged = data.clone();
    merge_patch(&mut merged, &patch);
    for pointer in remove {
        let error = |reason: String| RemovalError {
            pointer: pointer.clone(),
            reason,
        };
        let keys = parse(pointer).map_err(error)?;
        let Some((last, parents)) = keys.split_last() else {
            return Err(error("point at a key, such as /legacy".into()));
        };
        // Removals take keys out of objects; an array is replaced whole in overrides.
        let mut content = Some(&merged);
        for key in parents {
            content = content.and_then(|c| c.get(key.as_str()));
            if content.is_some_and(Value::is_array) {
                return Err(error(format!(
                    "{key:?} is an array: replace the whole array in overrides instead"
                )));
            }
        }
        // Removing what is not there is nothing to do (and must not add its parents).
        if content.and_then(|c| c.get(last.as_str())).is_none() {
            if let Some(Value::Object(object)) = lookup_mut(&mut patch, parents)
                && object.get(last).is_some_and(|v| !v.is_null())
            {
                return Err(error(
                    "overrides also set this key: keep the override or the removal".into(),
                ));
            }
            continue;
        }
        let mut node = &mut patch;
        for key in parents {
            let Value::Object(object) = node else {
                return Err(error("overrides replace a parent of this key".into()));
            };
            node = object
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            match node {
                Value::Object(_) => {}
                // Removed with its parent already.
                Value::Null => break,
                other => {
                    return Err(error(format!(
                        "overrides set {key:?} to {}, which has no keys to remove",
                        super::kind_of(other)
                    )));
                }
            }
        }
        if let Value::Object(object) = node {
            match object.get(last) {
                None | Some(Value::Null) => {
                    object.insert(last.clone(), Value::Null);
                }
                Some(_) => {
                    return Err(error(
                        "overrides also set this key: keep the override or the removal".into(),
                    ));
                }
            }
        }
    }
    Ok(patch)
}

/// The value at `keys` in `value`, if every step is an object key.
fn lookup_mut<'v>(value: &'v mut Value, keys: &[String]) -> Option<&'v mut Value> {
    keys.iter()
        .try_fold(value, |node, key| node.as_object_mut()?.get_mut(key))
}

/// The keys of a JSON Pointer (RFC 6901).
fn parse(pointer: &str) -> Result<Vec<String>, String> {
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err("a JSON Pointer starts with '/', such as /legacy or /pool/debug".into());
    };
    rest.split('/')
        .map(|token| {
            if token.replace("~0", "").replace("~1", "").contains('~') {
                return Err(format!(
                    "{token:?}: '~' is written ~0 and '/' is written ~1"
                ));
            }
            Ok(token.replace("~1", "/").replace("~0", "~"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resolved(
        data: Value,
        overrides: Option<Value>,
        remove: &[&str],
    ) -> Result<Value, RemovalError> {
        let remove: Vec<String> = remove.iter().map(|r| (*r).to_owned()).collect();
        let patch = patch_with_removals(&data, overrides.as_ref(), &remove)?;
        let mut content = data;
        merge_patch(&mut content, &patch);
        Ok(content)
    }

    #[test]
    fn removals_take_keys_out_like_nulls_do() {
        let data = json!({"legacy": true, "pool": {"max": 5, "debug": true}, "a/b": 1});
        assert_eq!(
            resolved(
                data.clone(),
                Some(json!({"pool": {"max": 9}})),
                &["/legacy", "/pool/debug", "/a~1b"]
            )
            .unwrap(),
            json!({"pool": {"max": 9}})
        );
        let with_nulls = resolved(
            data.clone(),
            Some(json!({"legacy": null, "pool": {"max": 9, "debug": null}, "a/b": null})),
            &[],
        )
        .unwrap();
        assert_eq!(with_nulls, json!({"pool": {"max": 9}}));
    }

    #[test]
    fn a_removal_folds_into_the_same_patch_a_null_would_be() {
        let data = json!({"legacy": true});
        let folded = patch_with_removals(&data, None, &["/legacy".into()]).unwrap();
        assert_eq!(folded, json!({"legacy": null}));
    }

    #[test]
    fn removing_what_is_not_there_changes_nothing() {
        assert_eq!(
            resolved(json!({"a": 1}), None, &["/missing/deeper"]).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            resolved(json!({}), Some(json!({"a": "text"})), &["/a/b"]).unwrap(),
            json!({"a": "text"})
        );
    }

    #[test]
    fn contradictions_and_arrays_are_refused() {
        let both = resolved(json!({"a": 1}), Some(json!({"a": 2})), &["/a"]).unwrap_err();
        assert!(
            both.reason.contains("keep the override or the removal"),
            "{both}"
        );
        let array = resolved(json!({"list": [{"x": 1}]}), None, &["/list/0"]).unwrap_err();
        assert!(array.reason.contains("is an array"), "{array}");
        let bad = resolved(json!({}), None, &["legacy"]).unwrap_err();
        assert!(bad.reason.contains("starts with '/'"), "{bad}");
        let tilde = resolved(json!({}), None, &["/a~2"]).unwrap_err();
        assert!(tilde.reason.contains("~0"), "{tilde}");
    }
}
