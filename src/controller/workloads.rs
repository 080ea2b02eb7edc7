//! The workloads that restart targets name, from watch caches: which checksum each
//! carries in its pod template, and whether its rollout of that template is complete.
//! A rollout is complete when the workload's controller has seen the template
//! (`observedGeneration`) and every desired pod runs it and is available — the rules
//! `kubectl rollout status` applies.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, StatefulSet},
    core::v1::PodTemplateSpec,
};
use kube::{
    Api, Client, Resource,
    runtime::reflector::{self, ObjectRef, Store, store::Writer},
};

use crate::api::v1alpha1::WorkloadKind;

/// Watch caches of the kinds a restart target may name.
#[derive(Clone)]
pub struct Workloads {
    pub deployments: Store<Deployment>,
    pub stateful_sets: Store<StatefulSet>,
    pub daemon_sets: Store<DaemonSet>,
}

/// What fills [`Workloads`].
pub struct Writers {
    pub deployments: Writer<Deployment>,
    pub stateful_sets: Writer<StatefulSet>,
    pub daemon_sets: Writer<DaemonSet>,
}

/// What the cache says about one workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// The annotations of its pod template.
    pub template_annotations: BTreeMap<String, String>,
    /// Whether every desired pod runs the current template and is available.
    pub rolled_out: bool,
    /// The labels its selector matches its pods by (`matchLabels`).
    pub selector: BTreeMap<String, String>,
}

impl Workload {
    /// Whether its pods run the template that carries `checksum` under `annotation`.
    pub fn runs(&self, annotation: &str, checksum: &str) -> bool {
        self.rolled_out && self.carries(annotation, checksum)
    }

    /// Whether its pod template carries `checksum` under `annotation`.
    pub fn carries(&self, annotation: &str, checksum: &str) -> bool {
        self.template_annotations
            .get(annotation)
            .map(String::as_str)
            == Some(checksum)
    }
}

impl Workloads {
    /// Empty caches, and what fills them.
    pub fn stores() -> (Self, Writers) {
        let (deployments, deployment_writer) = reflector::store();
        let (stateful_sets, stateful_set_writer) = reflector::store();
        let (daemon_sets, daemon_set_writer) = reflector::store();
        (
            Self {
                deployments,
                stateful_sets,
                daemon_sets,
            },
            Writers {
                deployments: deployment_writer,
                stateful_sets: stateful_set_writer,
                daemon_sets: daemon_set_writer,
            },
        )
    }

    /// The workload `kind` `namespace/name`, when the cache holds it.
    pub fn get(&self, kind: WorkloadKind, namespace: &str, name: &str) -> Option<Workload> {
        match kind {
            WorkloadKind::Deployment => self
                .deployments
                .get(&ObjectRef::new(name).within(namespace))
                .map(|d| deployment(&d)),
            WorkloadKind::StatefulSet => self
                .stateful_sets
                .get(&ObjectRef::new(name).within(namespace))
                .map(|s| stateful_set(&s)),
            WorkloadKind::DaemonSet => self
                .daemon_sets
                .get(&ObjectRef::new(name).within(namespace))
                .map(|d| daemon_set(&d)),
        }
    }

    /// The workload `kind` `namespace/name`, read from the apiserver.
    pub async fn fetch(
        client: &Client,
        kind: WorkloadKind,
        namespace: &str,
        name: &str,
    ) -> kube::Result<Option<Workload>> {
        Ok(match kind {
            WorkloadKind::Deployment => Api::<Deployment>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await?
                .map(|d| deployment(&d)),
            WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await?
                .map(|s| stateful_set(&s)),
            WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await?
                .map(|d| daemon_set(&d)),
        })
    }

    /// Waits until every cache has listed once.
    pub async fn wait_until_ready(
        &self,
    ) -> Result<(), kube::runtime::reflector::store::WriterDropped> {
        self.deployments.wait_until_ready().await?;
        self.stateful_sets.wait_until_ready().await?;
        self.daemon_sets.wait_until_ready().await
    }
}

fn template_annotations(template: &PodTemplateSpec) -> BTreeMap<String, String> {
    template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default()
}

/// Whether the workload's controller has acted on its newest spec.
fn observed<K: Resource>(workload: &K, observed_generation: Option<i64>) -> bool {
    match (workload.meta().generation, observed_generation) {
        (Some(generation), Some(observed)) => observed >= generation,
        (None, _) => true,
        (Some(_), None) => false,
    }
}

fn deployment(deployment: &Deployment) -> Workload {
    let desired = deployment.spec.replicas.unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let updated = status.updated_replicas.unwrap_or(0);
    let rolled_out = observed(deployment, status.observed_generation)
        && updated >= desired
        && status.replicas.unwrap_or(0) <= updated
        && status.available_replicas.unwrap_or(0) >= updated;
    Workload {
        template_annotations: template_annotations(&deployment.spec.template),
        rolled_out,
        selector: deployment
            .spec
            .selector
            .match_labels
            .clone()
            .unwrap_or_default(),
    }
}

fn stateful_set(stateful_set: &StatefulSet) -> Workload {
    let desired = stateful_set.spec.replicas.unwrap_or(1);
    let status = stateful_set.status.clone().unwrap_or_default();
    let rolled_out = observed(stateful_set, status.observed_generation)
        && status.updated_replicas.unwrap_or(0) >= desired
        && status.ready_replicas.unwrap_or(0) >= desired;
    Workload {
        template_annotations: template_annotations(&stateful_set.spec.template),
        rolled_out,
        selector: stateful_set
            .spec
            .selector
            .match_labels
            .clone()
            .unwrap_or_default(),
    }
}

fn daemon_set(daemon_set: &DaemonSet) -> Workload {
    let status = daemon_set.status.clone().unwrap_or_default();
    let desired = status.desired_number_scheduled;
    let rolled_out = observed(daemon_set, status.observed_generation)
        && status.updated_number_scheduled.unwrap_or(0) >= desired
        && status.number_available.unwrap_or(0) >= desired;
    Workload {
        template_annotations: template_annotations(&daemon_set.spec.template),
        rolled_out,
        selector: daemon_set
            .spec
            .selector
            .match_labels
            .clone()
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment_with(status: serde_json::Value) -> Workload {
        let value = json!({
            "metadata": {"name": "api", "namespace": "a", "generation": 3},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "api"}},
                "template": {"metadata": {"annotations": {"checksum.config.summit.io/e": "abc"}}},
            },
            "status": status,
        });
        deployment(&serde_json::from_value(value).expect("a Deployment"))
    }

    #[test]
    fn a_deployment_is_rolled_out_when_every_replica_runs_the_observed_template() {
        let done = deployment_with(json!({
            "observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
        }));
        assert!(done.runs("checksum.config.summit.io/e", "abc"));
        assert_eq!(done.selector.get("app").map(String::as_str), Some("api"));
        assert!(!done.runs("checksum.config.summit.io/e", "other"));
        assert!(!done.runs("checksum.config.summit.io/f", "abc"));
    }

    #[test]
    fn a_deployment_is_rolling_while_any_rule_fails() {
        for status in [
            // The controller has not seen the newest template.
            json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
            // One replica still runs the old template.
            json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}),
            // Not every desired replica is updated.
            json!({"observedGeneration": 3, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}),
            // Updated but not available yet.
            json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
            // No status at all.
            json!({}),
        ] {
            let workload = deployment_with(status.clone());
            assert!(!workload.rolled_out, "{status}");
            assert!(workload.carries("checksum.config.summit.io/e", "abc"));
        }
    }

    #[test]
    fn stateful_sets_and_daemon_sets_follow_their_own_counters() {
        let stateful: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "db", "generation": 1},
            "spec": {"replicas": 3, "selector": {}, "serviceName": "db", "template": {}},
            "status": {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 2},
        }))
        .expect("a StatefulSet");
        assert!(!stateful_set(&stateful).rolled_out, "one pod is not ready");

        let daemon: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "agent", "generation": 4},
            "spec": {"selector": {}, "template": {}},
            "status": {
                "observedGeneration": 4, "desiredNumberScheduled": 5, "currentNumberScheduled": 5,
                "numberMisscheduled": 0, "numberReady": 5, "updatedNumberScheduled": 5, "numberAvailable": 5,
            },
        }))
        .expect("a DaemonSet");
        assert!(daemon_set(&daemon).rolled_out);
    }
}
