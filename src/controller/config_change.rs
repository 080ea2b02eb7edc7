//! The ConfigChange reconcile loop. This first version checks that the change names an
//! existing ConfigEntry and one of its environments; the approval workflow builds on it.

use std::{sync::Arc, time::Duration};

use kube::{ResourceExt, runtime::controller::Action};
use tracing::instrument;

use super::{
    Context, Error, Result, observed, requeue_after_error,
    status::{self, Invalid},
};
use crate::api::v1alpha1::{ConfigChange, ConfigEntry};

const KIND: &str = "ConfigChange";

#[instrument(skip_all, fields(namespace = change.namespace().unwrap_or_default(), name = change.name_any()))]
pub async fn reconcile(change: Arc<ConfigChange>, ctx: Arc<Context>) -> Result<Action> {
    observed(KIND, change.as_ref(), &ctx, reconcile_change(&change, &ctx)).await
}

pub fn error_policy(change: Arc<ConfigChange>, error: &Error, ctx: Arc<Context>) -> Action {
    requeue_after_error(KIND, change.as_ref(), error, &ctx)
}

async fn reconcile_change(change: &ConfigChange, ctx: &Context) -> Result<Action> {
    let namespace = change.namespace().unwrap_or_default();
    let entry_name = &change.spec.config_entry;
    let entry = ctx
        .namespaced::<ConfigEntry>(&namespace)
        .get_opt(entry_name)
        .await
        .map_err(Error::kube(format!(
            "read ConfigEntry {namespace}/{entry_name}"
        )))?;
    let verdict = check_target(change, entry.as_ref());
    status::report_validation(ctx, KIND, change, change.status.as_ref(), &verdict).await?;
    // A ConfigEntry applied after its change (GitOps tools apply in any order) is
    // picked up by polling until it exists.
    Ok(match verdict {
        Err(_) => Action::requeue(Duration::from_secs(30)),
        Ok(_) => Action::await_change(),
    })
}

/// Checks that the change targets an existing entry and one of its environments.
fn check_target(change: &ConfigChange, entry: Option<&ConfigEntry>) -> Result<String, Invalid> {
    let entry_name = &change.spec.config_entry;
    let entry = entry.ok_or_else(|| Invalid {
        reason: "EntryNotFound",
        message: format!(
            "spec.configEntry: ConfigEntry {entry_name:?} does not exist in this namespace"
        ),
    })?;
    let environment = &change.spec.environment;
    if !entry
        .spec
        .environments
        .iter()
        .any(|e| &e.name == environment)
    {
        let known: Vec<&str> = entry
            .spec
            .environments
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        return Err(Invalid {
            reason: "EnvironmentNotFound",
            message: format!(
                "spec.environment: ConfigEntry {entry_name:?} has no environment {environment:?} (it has {})",
                known.join(", ")
            ),
        });
    }
    Ok(format!(
        "targets environment {environment:?} of ConfigEntry {entry_name:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(yaml: &str) -> ConfigChange {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn entry() -> ConfigEntry {
        serde_yaml_ng::from_str(
            r#"
apiVersion: config.summit.io/v1alpha1
kind: ConfigEntry
metadata: {name: payments, namespace: team}
spec:
  configId: payments
  data: {}
  environments: [{name: development}, {name: production}]
"#,
        )
        .unwrap()
    }

    const CHANGE: &str = r#"
apiVersion: config.summit.io/v1alpha1
kind: ConfigChange
metadata: {name: raise-pool, namespace: team}
spec:
  configEntry: payments
  environment: staging
  patch: {pool: {max: 20}}
  message: more connections
  requestedBy: alice
"#;

    #[test]
    fn a_missing_entry_is_named() {
        let invalid = check_target(&change(CHANGE), None).unwrap_err();
        assert_eq!(invalid.reason, "EntryNotFound");
        assert!(
            invalid.message.contains("\"payments\" does not exist"),
            "{}",
            invalid.message
        );
    }

    #[test]
    fn an_unknown_environment_lists_the_known_ones() {
        let invalid = check_target(&change(CHANGE), Some(&entry())).unwrap_err();
        assert_eq!(
            invalid.message,
            "spec.environment: ConfigEntry \"payments\" has no environment \"staging\" (it has development, production)"
        );
    }

    #[test]
    fn a_known_environment_passes() {
        let change = change(&CHANGE.replace("staging", "production"));
        assert!(check_target(&change, Some(&entry())).is_ok());
    }
}
