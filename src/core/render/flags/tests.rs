use serde_json::{Value, json};

use super::*;

fn rollout(weights: (u64, u64)) -> Value {
    json!({
        "$schema": "https://flagd.dev/schema/v0/flags.json",
        "flags": {
            "new-checkout": {
                "state": "ENABLED",
                "variants": {"on": true, "off": false},
                "defaultVariant": "off",
                "targeting": {"fractional": [["on", weights.0], ["off", weights.1]]},
                "metadata": {"owner": "payments"},
            },
            "banner-color": {
                "state": "DISABLED",
                "variants": {"red": "#f00", "blue": "#00f"},
                "defaultVariant": "red",
                "targeting": {"if": [{"$ref": "beta-users"}, "blue", null]},
            },
        },
        "$evaluators": {"beta-users": {"ends_with": [{"var": "email"}, "@example.com"]}},
        "metadata": {"flagSetId": "payments"},
    })
}

fn paths(document: &Value) -> Vec<String> {
    problems(document).into_iter().map(|p| p.path).collect()
}

#[test]
fn a_well_formed_document_has_no_problems() {
    assert_eq!(problems(&rollout((10, 90))), []);
    let bucketed = json!({"flags": {"f": {"state": "ENABLED", "variants": {"a": 1, "b": 2},
        "defaultVariant": "a", "targeting": {"fractional": [
            {"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}, ["a"], ["b", 3]]}}}});
    assert_eq!(problems(&bucketed), []);
    let versioned = json!({"flags": {"f": {"state": "ENABLED", "variants": {"a": 1},
        "defaultVariant": "a", "targeting": {"if": [{"sem_ver": [{"var": "version"}, ">=", "1.2.0"]}, "a", null]}}}});
    assert_eq!(problems(&versioned), []);
}

#[test]
fn a_default_variant_that_does_not_exist_is_named_by_its_path() {
    let mut document = rollout((10, 90));
    document["flags"]["new-checkout"]["defaultVariant"] = json!("maybe");
    let found = problems(&document);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, "$.flags[\"new-checkout\"].defaultVariant");
    assert!(
        found[0].message.contains("\"maybe\" does not exist"),
        "{}",
        found[0]
    );
}

#[test]
fn an_unknown_operation_is_named_by_its_path() {
    let mut document = rollout((10, 90));
    document["flags"]["banner-color"]["targeting"] =
        json!({"if": [{"regex_match": [{"var": "email"}, ".*"]}, "blue", null]});
    assert_eq!(
        paths(&document),
        ["$.flags[\"banner-color\"].targeting.if[0].regex_match"]
    );
}

#[test]
fn fractional_buckets_name_existing_variants_with_whole_weights() {
    let document = |targeting: Value| {
        json!({"flags": {"f": {"state": "ENABLED", "variants": {"on": true, "off": false},
            "defaultVariant": "off", "targeting": targeting}}})
    };
    let cases = [
        (
            json!({"fractional": [["on", 10], ["of", 90]]}),
            "$.flags.f.targeting.fractional[1][0]",
        ),
        (
            json!({"fractional": [["on", 10.5], ["off", 90]]}),
            "$.flags.f.targeting.fractional[0][1]",
        ),
        (
            json!({"fractional": [["on", -1], ["off", 90]]}),
            "$.flags.f.targeting.fractional[0][1]",
        ),
        (
            json!({"fractional": [["on", 0], ["off", 0]]}),
            "$.flags.f.targeting.fractional",
        ),
        (json!({"fractional": []}), "$.flags.f.targeting.fractional"),
        (
            json!({"fractional": [["on", 1, 2]]}),
            "$.flags.f.targeting.fractional[0]",
        ),
    ];
    for (targeting, path) in cases {
        assert_eq!(paths(&document(targeting.clone())), [path], "{targeting}");
    }
}

#[test]
fn the_shape_of_flags_and_variants_is_checked() {
    let flag = |flag: Value| json!({"flags": {"f": flag}});
    let cases = [
        (
            json!({"variants": {"a": 1}, "defaultVariant": "a"}),
            "$.flags.f.state",
        ),
        (
            json!({"state": "ON", "variants": {"a": 1}, "defaultVariant": "a"}),
            "$.flags.f.state",
        ),
        (
            json!({"state": "ENABLED", "defaultVariant": "a"}),
            "$.flags.f.variants",
        ),
        (
            json!({"state": "ENABLED", "variants": {"a": 1, "b": "2"}, "defaultVariant": "a"}),
            "$.flags.f.variants.b",
        ),
        (
            json!({"state": "ENABLED", "variants": {"a": [1]}, "defaultVariant": "a"}),
            "$.flags.f.variants.a",
        ),
        (
            json!({"state": "ENABLED", "variants": {"a": 1}}),
            "$.flags.f.defaultVariant",
        ),
        (
            json!({"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a", "rules": {}}),
            "$.flags.f.rules",
        ),
        (
            json!({"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a", "targeting": {"if": [], "or": []}}),
            "$.flags.f.targeting",
        ),
        (
            json!({"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a", "metadata": {"x": {}}}),
            "$.flags.f.metadata.x",
        ),
    ];
    for (flag_value, path) in cases {
        assert_eq!(paths(&flag(flag_value.clone())), [path], "{flag_value}");
    }
    let no_variants = json!({"state": "ENABLED", "variants": {}, "defaultVariant": "a"});
    assert_eq!(
        paths(&flag(no_variants)),
        ["$.flags.f.variants", "$.flags.f.defaultVariant"]
    );
}

#[test]
fn the_document_needs_flags_and_known_references() {
    assert_eq!(paths(&json!({"flag": {}})), ["$.flag", "$"]);
    assert_eq!(paths(&json!([])), ["$"]);
    let mut document = rollout((10, 90));
    document["flags"]["banner-color"]["targeting"] =
        json!({"if": [{"$ref": "gamma"}, "blue", null]});
    assert_eq!(
        paths(&document),
        ["$.flags[\"banner-color\"].targeting.if[0].$ref"]
    );
}
