//! Percentage rollouts of a feature flag: each step of a split gives the flag a flagd
//! `fractional` targeting that serves the split's variant to a share of targeting keys
//! and the flag's default variant to the rest. Pure: the change controller records
//! each step as a version, bakes it, and moves on or puts the flag back.

use serde_json::{Map, Value, json};

use crate::{
    api::v1alpha1::{ConfigFormat, EnvironmentSpec, RolloutSpec, SplitSpec},
    core::Invalid,
};

fn invalid(message: String) -> Invalid {
    Invalid {
        reason: "InvalidSplit",
        message,
    }
}

/// The environment's rollout, which sets the bake time and failure rules between
/// steps; a split needs it, and flags to split.
pub fn rollout_of(environment: &EnvironmentSpec) -> Result<&RolloutSpec, Invalid> {
    let format = environment.config_map.as_ref().and_then(|c| c.format);
    if format != Some(ConfigFormat::Flagd) {
        return Err(invalid(format!(
            "spec.split: environment {:?} does not project flags (its configMap.format is not Flagd)",
            environment.name
        )));
    }
    environment.rollout.as_ref().ok_or_else(|| {
        invalid(format!(
            "spec.split: environment {:?} declares no rollout; a split bakes each step with its bake time and failure rules",
            environment.name
        ))
    })
}

/// Checks a split before a step goes live: its environment can carry it, and the
/// step's base `data` reaches the environment's resolved `content` unhidden.
pub fn check(
    split: &SplitSpec,
    environment: &EnvironmentSpec,
    data: &Value,
    content: &Value,
) -> Result<(), Invalid> {
    rollout_of(environment)?;
    match share_of(data, split) {
        Some(share) => takes_effect(content, split, share, &environment.name),
        // The flag as it was before the split: a rollback's version.
        None => Ok(()),
    }
}

/// The flag definitions `data`, with the split's flag serving its variant to `share`
/// percent of targeting keys and its default variant to the rest.
pub fn at_share(data: &Value, split: &SplitSpec, share: i32) -> Result<Value, Invalid> {
    let flag = flag(data, &split.flag)?;
    let variants = flag.get("variants").and_then(Value::as_object);
    if !variants.is_some_and(|v| v.contains_key(&split.variant)) {
        let known = variants.map(names).unwrap_or_default();
        return Err(invalid(format!(
            "spec.split.variant: flag {:?} has no variant {:?} (it has {known})",
            split.flag, split.variant
        )));
    }
    let Some(default) = flag.get("defaultVariant").and_then(Value::as_str) else {
        return Err(invalid(format!(
            "spec.split.flag: flag {:?} has no defaultVariant to move a share from",
            split.flag
        )));
    };
    if default == split.variant {
        return Err(invalid(format!(
            "spec.split.variant: {:?} is flag {:?}'s default variant; a split moves a share from the default variant to another",
            split.variant, split.flag
        )));
    }
    let share = share.clamp(0, 100);
    let buckets: Vec<Value> = [(split.variant.as_str(), share), (default, 100 - share)]
        .into_iter()
        .filter(|(_, weight)| *weight > 0)
        .map(|(variant, weight)| json!([variant, weight]))
        .collect();
    let mut next = data.clone();
    next["flags"][&split.flag]["targeting"] = json!({ "fractional": buckets });
    Ok(next)
}

/// The share, in percent, the split's variant holds in `data`'s targeting of its
/// flag, if that targeting is a split the operator wrote.
pub fn share_of(data: &Value, split: &SplitSpec) -> Option<i32> {
    let buckets = data["flags"][&split.flag]["targeting"]["fractional"].as_array()?;
    let mut share = Some(0);
    for bucket in buckets {
        let variant = bucket.get(0)?.as_str()?;
        let weight = i32::try_from(bucket.get(1)?.as_i64()?).ok()?;
        if variant == split.variant {
            share = Some(weight);
        }
    }
    share
}

/// The share after `share`: the split's first step when nothing is split yet, `None`
/// after the last.
pub fn next_share(split: &SplitSpec, share: Option<i32>) -> Option<i32> {
    match share {
        None => split.steps.first().copied(),
        Some(share) => split.steps.iter().copied().find(|step| *step > share),
    }
}

/// `data` with the split's flag defined as in `before` (the content live before the
/// split began), whatever else changed since.
pub fn restored(data: &Value, before: &Value, flag: &str) -> Value {
    let mut next = data.clone();
    match before["flags"].get(flag) {
        Some(definition) => next["flags"][flag] = definition.clone(),
        None => {
            if let Some(flags) = next["flags"].as_object_mut() {
                flags.remove(flag);
            }
        }
    }
    next
}

/// Checks that an environment's resolved `content` carries the split at `share`: an
/// override of the flag in the environment would hide it.
pub fn takes_effect(
    content: &Value,
    split: &SplitSpec,
    share: i32,
    environment: &str,
) -> Result<(), Invalid> {
    if share_of(content, split) == Some(share) {
        return Ok(());
    }
    Err(invalid(format!(
        "spec.split.flag: environment {environment:?} overrides flag {:?}, which would hide the split; move the flag's definition to the entry's data",
        split.flag
    )))
}

fn flag<'a>(data: &'a Value, key: &str) -> Result<&'a Map<String, Value>, Invalid> {
    let Some(flags) = data.get("flags").and_then(Value::as_object) else {
        return Err(invalid(
            "spec.split.flag: the content defines no flags (no `flags` object)".into(),
        ));
    };
    flags.get(key).and_then(Value::as_object).ok_or_else(|| {
        invalid(format!(
            "spec.split.flag: no flag {key:?} in the content (it defines {})",
            names(flags)
        ))
    })
}

fn names(map: &Map<String, Value>) -> String {
    let names: Vec<String> = map.keys().map(|k| format!("{k:?}")).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(steps: &[i32]) -> SplitSpec {
        SplitSpec {
            flag: "new-checkout".into(),
            variant: "on".into(),
            steps: steps.to_vec(),
        }
    }

    fn flags() -> Value {
        json!({"flags": {
            "new-checkout": {
                "state": "ENABLED",
                "variants": {"on": true, "off": false},
                "defaultVariant": "off",
                "targeting": {"if": [{"==": [{"var": "plan"}, "beta"]}, "on"]},
            },
            "other": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"},
        }})
    }

    #[test]
    fn each_step_is_a_fractional_split_against_the_default_variant() {
        let ten = at_share(&flags(), &split(&[10, 50, 100]), 10).unwrap();
        assert_eq!(
            ten["flags"]["new-checkout"]["targeting"],
            json!({"fractional": [["on", 10], ["off", 90]]})
        );
        assert_eq!(ten["flags"]["other"], flags()["flags"]["other"]);
        let all = at_share(&flags(), &split(&[100]), 100).unwrap();
        assert_eq!(
            all["flags"]["new-checkout"]["targeting"],
            json!({"fractional": [["on", 100]]}),
            "no bucket of weight zero"
        );
        assert_eq!(share_of(&ten, &split(&[10])), Some(10));
        assert_eq!(share_of(&all, &split(&[100])), Some(100));
        assert_eq!(share_of(&flags(), &split(&[10])), None);
    }

    #[test]
    fn steps_go_up_in_order_and_end_after_the_last() {
        let split = split(&[10, 50, 100]);
        assert_eq!(next_share(&split, None), Some(10));
        assert_eq!(next_share(&split, Some(10)), Some(50));
        assert_eq!(next_share(&split, Some(50)), Some(100));
        assert_eq!(next_share(&split, Some(100)), None);
    }

    #[test]
    fn a_rollback_puts_the_flag_back_and_keeps_the_rest() {
        let before = flags();
        let mut now = at_share(&before, &split(&[50]), 50).unwrap();
        now["flags"]["other"]["defaultVariant"] = json!("b");
        let back = restored(&now, &before, "new-checkout");
        assert_eq!(
            back["flags"]["new-checkout"],
            before["flags"]["new-checkout"]
        );
        assert_eq!(back["flags"]["other"]["defaultVariant"], "b");
    }

    #[test]
    fn a_split_of_what_is_not_there_names_the_field() {
        let unknown_flag = SplitSpec {
            flag: "nope".into(),
            ..split(&[10])
        };
        let error = at_share(&flags(), &unknown_flag, 10).unwrap_err();
        assert_eq!(error.reason, "InvalidSplit");
        assert_eq!(
            error.message,
            "spec.split.flag: no flag \"nope\" in the content (it defines \"new-checkout\", \"other\")"
        );
        let unknown_variant = SplitSpec {
            variant: "maybe".into(),
            ..split(&[10])
        };
        let error = at_share(&flags(), &unknown_variant, 10).unwrap_err();
        assert_eq!(
            error.message,
            "spec.split.variant: flag \"new-checkout\" has no variant \"maybe\" (it has \"off\", \"on\")"
        );
        let the_default = SplitSpec {
            variant: "off".into(),
            ..split(&[10])
        };
        let error = at_share(&flags(), &the_default, 10).unwrap_err();
        assert!(
            error.message.contains("default variant"),
            "{}",
            error.message
        );
        let error = at_share(&json!({"host": "db"}), &split(&[10]), 10).unwrap_err();
        assert!(
            error.message.contains("no `flags` object"),
            "{}",
            error.message
        );
    }

    #[test]
    fn an_override_that_hides_the_split_is_named() {
        let content = flags();
        let error = takes_effect(&content, &split(&[10]), 10, "production").unwrap_err();
        assert!(error.message.contains("overrides flag \"new-checkout\""));
        let split_content = at_share(&content, &split(&[10]), 10).unwrap();
        assert!(takes_effect(&split_content, &split(&[10]), 10, "production").is_ok());
    }
}
