//! Where each environment of an entry goes, and what it holds: rendered from the spec
//! before anything is written, so that the whole entry validates or nothing changes.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;
use serde_json::Value;

use super::validate::Refusal;
use crate::{
    api::v1alpha1::{ConfigEntry, ConfigFormat, EnvironmentSpec, SecretProvider},
    core::{
        Invalid,
        approval::Requirements,
        render::{RenderError, render},
        resolve::{Snapshot, checksum},
    },
};

/// One environment, fully rendered from the spec.
#[derive(Debug)]
pub struct Plan<'s> {
    pub spec: &'s EnvironmentSpec,
    /// Checksum of the environment's resolved content.
    pub checksum: String,
    pub format: ConfigFormat,
    pub namespace: String,
    pub name: String,
    pub data: BTreeMap<String, String>,
    /// What changes here need, when they need approval: its projections are bound to
    /// it, and pass only to an environment guarded at least as well.
    pub guard: Option<Requirements>,
}

/// Renders every environment of the spec, and checks that each projects into the
/// entry's namespace or one of `allowed`.
pub fn plan<'e>(
    entry: &'e ConfigEntry,
    snapshot: &Snapshot,
    allowed: &BTreeSet<String>,
) -> Result<Vec<Plan<'e>>, Refusal> {
    let mut plans = Vec::new();
    let mut failures = Vec::new();
    let mut at_fault = BTreeSet::new();
    let mut not_allowed = false;
    let mut bad_flags = false;
    for environment in &entry.spec.environments {
        let content = snapshot.resolve(&environment.name).unwrap_or(Value::Null);
        let format = environment
            .config_map
            .as_ref()
            .and_then(|t| t.format)
            .unwrap_or(ConfigFormat::Json);
        let (target_namespace, name) = config_map_target(entry, environment);
        let rendered = if target_allowed(entry, environment, allowed).is_err() {
            not_allowed = true;
            Err(not_allowed_message(&target_namespace))
        } else if let Some(problem) = badly_named(entry, environment, &name) {
            Err(problem)
        } else {
            render(&content, format).map_err(|error| {
                bad_flags |= matches!(error, RenderError::Flags(_));
                error.to_string()
            })
        };
        match rendered {
            Ok(data) => plans.push(Plan {
                spec: environment,
                checksum: snapshot
                    .environment_checksum(&environment.name)
                    .unwrap_or_else(|| checksum(&content)),
                format,
                namespace: target_namespace,
                name,
                data,
                guard: None,
            }),
            Err(error) => {
                failures.push(format!("environment {:?}: {error}", environment.name));
                at_fault.insert(environment.name.clone());
            }
        }
    }
    if failures.is_empty() {
        return Ok(plans);
    }
    let reason = match (not_allowed, bad_flags) {
        (true, _) => "TargetNotAllowed",
        (false, true) => "InvalidFlags",
        (false, false) => "RenderFailed",
    };
    Err(Refusal::of(reason, failures.join("; "), at_fault))
}

/// Why an environment's ConfigMap names cannot be used: the names the cluster ledger
/// keeps for itself, or a canary ConfigMap that is the environment's own.
fn badly_named(entry: &ConfigEntry, environment: &EnvironmentSpec, name: &str) -> Option<String> {
    let canary = crate::core::rollout::canary_config_map(entry, environment);
    let reserved = |n: &str| n.starts_with("summit-ledger-") || n.starts_with("summit-binding-");
    if let Some(taken) = [Some(name), canary.as_deref()]
        .into_iter()
        .flatten()
        .find(|n| reserved(n))
    {
        return Some(format!(
            "ConfigMap name {taken:?} is reserved for the operator's ledger (summit-ledger-*, summit-binding-*); choose another"
        ));
    }
    (canary.as_deref() == Some(name)).then(|| {
        format!("rollout.canaryConfigMap {name:?} is the environment's own ConfigMap; the canary needs one of its own")
    })
}

/// Whether `environment`'s ConfigMap may go where it points: the entry's own namespace,
/// or one of `allowed`.
pub fn target_allowed(
    entry: &ConfigEntry,
    environment: &EnvironmentSpec,
    allowed: &BTreeSet<String>,
) -> Result<(), Invalid> {
    let (target, _) = config_map_target(entry, environment);
    if target == entry.namespace().unwrap_or_default() || allowed.contains(&target) {
        return Ok(());
    }
    Err(Invalid {
        reason: "TargetNotAllowed",
        message: format!(
            "environment {:?}: {}",
            environment.name,
            not_allowed_message(&target)
        ),
    })
}

/// Why a projection may not go into `namespace`.
pub fn not_allowed_message(namespace: &str) -> String {
    format!(
        "target namespace {namespace:?} is not allowed; the operator projects into an entry's own namespace and those it is configured to allow"
    )
}

/// Where an environment's ConfigMap goes (see [`placed`]).
pub fn config_map_target(entry: &ConfigEntry, environment: &EnvironmentSpec) -> (String, String) {
    let target = environment.config_map.as_ref();
    placed(entry, environment, target.map(|t| (&t.namespace, &t.name)))
}

/// Where an environment's Secret goes (see [`placed`]).
pub fn secret_target(entry: &ConfigEntry, environment: &EnvironmentSpec) -> (String, String) {
    let target = environment.secret.as_ref();
    placed(entry, environment, target.map(|t| (&t.namespace, &t.name)))
}

/// Whether the spec references `secret_id` of `provider`, in any environment.
pub fn references_secret(entry: &ConfigEntry, provider: SecretProvider, secret_id: &str) -> bool {
    let environments = entry.spec.environments.iter();
    let mut references = entry
        .spec
        .secrets
        .values()
        .chain(environments.flat_map(|e| e.secrets.values()));
    references.any(|r| r.provider == provider && r.secret_id == secret_id)
}

/// `(namespace, name)` of an environment's projection: as its target gives them, or
/// `<entry>-<environment>` in the entry's namespace.
fn placed(
    entry: &ConfigEntry,
    environment: &EnvironmentSpec,
    target: Option<(&Option<String>, &Option<String>)>,
) -> (String, String) {
    let (namespace, name) = target.unwrap_or((&None, &None));
    (
        namespace
            .clone()
            .unwrap_or_else(|| entry.namespace().unwrap_or_default()),
        name.clone()
            .unwrap_or_else(|| format!("{}-{}", entry.name_any(), environment.name)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(yaml: &str) -> ConfigEntry {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    const ENTRY: &str = r#"
apiVersion: config.summit.io/v1alpha1
kind: ConfigEntry
metadata: {name: payments, namespace: team-a}
spec:
  configId: team-a/payments
  data: {a: 1}
  environments:
    - name: development
    - name: production
      configMap: {namespace: shared, name: payments-config, format: Yaml}
"#;

    #[test]
    fn targets_default_to_entry_and_environment_in_the_entry_namespace() {
        let entry = entry(ENTRY);
        let [development, production] = &entry.spec.environments[..] else {
            panic!("two environments")
        };
        type Target = fn(&ConfigEntry, &EnvironmentSpec) -> (String, String);
        let cases: [(Target, _, _); 4] = [
            (
                config_map_target,
                development,
                ("team-a", "payments-development"),
            ),
            (
                secret_target,
                development,
                ("team-a", "payments-development"),
            ),
            (config_map_target, production, ("shared", "payments-config")),
            (secret_target, production, ("team-a", "payments-production")),
        ];
        for (target, environment, (namespace, name)) in cases {
            let wanted = (namespace.to_owned(), name.to_owned());
            assert_eq!(target(&entry, environment), wanted, "{}", environment.name);
        }
    }

    #[test]
    fn a_target_outside_the_allowed_namespaces_refuses_its_environment_only() {
        let entry = entry(ENTRY);
        let snapshot = Snapshot::from_spec(&entry.spec);
        let refusal = plan(&entry, &snapshot, &BTreeSet::new()).unwrap_err();
        assert_eq!(refusal.invalid.reason, "TargetNotAllowed");
        assert!(refusal.invalid.message.contains("\"shared\""));
        assert_eq!(
            refusal.environments,
            BTreeSet::from(["production".to_owned()])
        );
        let allowed = BTreeSet::from(["shared".to_owned()]);
        let plans = plan(&entry, &snapshot, &allowed).unwrap();
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[1].format, ConfigFormat::Yaml);
        assert_eq!(
            Some(plans[0].checksum.as_str()),
            snapshot.environment_checksum("development").as_deref()
        );
    }
}
