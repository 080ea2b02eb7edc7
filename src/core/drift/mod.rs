//! Where drift is computed: which copies a DriftCheck covers, what each copy should
//! hold (the version its entry's status names as live), where a copy differs, and the
//! report, Events and status that follow. The DriftCheck controller reads the copies
//! and carries out remediation.

mod compare;
mod report;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

pub use compare::{
    LiveSecret, applied_paths, config_map_matches, config_map_paths, differing_paths, secret_paths,
};
pub use report::{Finding, Run, bounded_paths, notes, report, status};

use crate::{
    api::v1alpha1::{ConfigEntry, DriftCheck, DriftCheckSpec, DriftSource, parse_duration},
    core::Invalid,
};

const DEFAULT_INTERVAL: &str = "5m";
/// The shortest interval a check may ask for.
pub const SHORTEST_INTERVAL: Duration = Duration::from_secs(10);

/// The check's interval, and the `Validated` message that says it.
pub fn check_interval(spec: &DriftCheckSpec) -> Result<(Duration, String), Invalid> {
    let text = spec.interval.as_deref().unwrap_or(DEFAULT_INTERVAL);
    let interval = parse_duration(text).map_err(|error| Invalid {
        reason: "InvalidDuration",
        message: format!("spec.interval: {error}"),
    })?;
    if interval < SHORTEST_INTERVAL {
        return Err(Invalid {
            reason: "InvalidDuration",
            message: format!("spec.interval {text} is shorter than the 10s minimum"),
        });
    }
    Ok((interval, format!("checks every {text}")))
}

/// What a copy should hold: the version live in an environment, and its checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub config_id: String,
    pub environment: String,
    pub version: i64,
    pub checksum: String,
}

/// What each environment `check` covers of `entry` should hold, from the entry's
/// status: what the operator applied. Environments with nothing live yet have no copy.
pub fn wanted(check: &DriftCheck, entry: &ConfigEntry) -> Vec<Want> {
    let Some(status) = entry.status.as_ref() else {
        return Vec::new();
    };
    entry
        .spec
        .environments
        .iter()
        .filter(|environment| names_environment(&check.spec, &environment.name))
        .filter_map(|environment| {
            let live = status
                .environments
                .iter()
                .find(|e| e.name == environment.name)?;
            Some(Want {
                config_id: entry.spec.config_id.clone(),
                environment: environment.name.clone(),
                version: live.version?,
                checksum: live.checksum.clone()?,
            })
        })
        .collect()
}

/// Whether `check` covers `environment` of `entry` for `source`.
pub fn covers(
    check: &DriftCheck,
    entry: &ConfigEntry,
    environment: &str,
    source: DriftSource,
) -> bool {
    selects(check, entry)
        && reads(&check.spec, source)
        && names_environment(&check.spec, environment)
}

/// Whether the check reads copies from `source`.
pub fn reads(spec: &DriftCheckSpec, source: DriftSource) -> bool {
    spec.sources.as_ref().is_none_or(|s| s.contains(&source))
}

fn names_environment(spec: &DriftCheckSpec, environment: &str) -> bool {
    spec.environments
        .as_ref()
        .is_none_or(|envs| envs.iter().any(|e| e.0 == environment))
}

/// Whether `check` names `entry`: by name, by label, or (with neither) every entry of
/// its namespace.
pub fn selects(check: &DriftCheck, entry: &ConfigEntry) -> bool {
    check.namespace() == entry.namespace()
        && match (&check.spec.entries, &check.spec.selector) {
            (Some(names), _) => names.iter().any(|n| n.0 == entry.name_any()),
            (None, Some(selector)) => matches_selector(selector, entry.labels()),
            (None, None) => true,
        }
}

/// Whether `labels` satisfy a label selector (matchLabels and matchExpressions).
fn matches_selector(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expression = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_label && by_expression
}

/// The metric label of a source.
pub fn source_label(source: DriftSource) -> &'static str {
    match source {
        DriftSource::Kubernetes => "kubernetes",
        DriftSource::Consul => "consul",
        DriftSource::Postgres => "postgres",
    }
}

#[cfg(test)]
mod tests;
