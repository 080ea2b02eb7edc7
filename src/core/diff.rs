//! Where two JSON documents differ, as JSON paths: what a drift report and a `diff`
//! name, never the values.

use std::collections::BTreeSet;

use serde_json::Value;

/// The paths (`$.pool.max`) at which `a` and `b` differ: a key present in one only, or
/// a value that is not the same; objects are compared key by key, anything else whole.
pub fn changed_paths(a: &Value, b: &Value) -> Vec<String> {
    let mut paths = Vec::new();
    collect(a, b, "$", &mut paths);
    paths
}

fn collect(a: &Value, b: &Value, at: &str, paths: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let path = format!("{at}.{key}");
                match (a.get(key), b.get(key)) {
                    (Some(a), Some(b)) => collect(a, b, &path, paths),
                    _ => paths.push(path),
                }
            }
        }
        (a, b) if a != b => paths.push(at.to_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_the_keys_that_differ_are_named() {
        let a = json!({"host": "db", "pool": {"max": 10, "min": 1}, "old": true});
        let b = json!({"host": "db", "pool": {"max": 40, "min": 1}, "new": [1]});
        assert_eq!(changed_paths(&a, &b), ["$.new", "$.old", "$.pool.max"]);
        assert!(changed_paths(&a, &a).is_empty());
        assert_eq!(changed_paths(&json!(1), &json!("1")), ["$"]);
    }
}
