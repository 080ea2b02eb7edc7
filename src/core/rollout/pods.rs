//! What a canary consumer's pods say about the version it bakes: how often the pods
//! that run it restarted, and how many pods of an older version are still there.

use k8s_openapi::api::core::v1::Pod;

use crate::api::v1alpha1::{RestartTarget, WorkloadKind};

/// The pods of one canary consumer, counted against the version baking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pods {
    /// Container restarts of the pods that run the version.
    pub restarts: u32,
    /// Pods of an older version not yet finished, terminating ones included.
    pub older: u32,
}

/// Counts the pods of `target` among `pods` (those its selector matches, which may
/// include another workload's) against the version whose checksum their template
/// carries under `annotation`.
pub fn count(pods: &[Pod], target: &RestartTarget, annotation: &str, checksum: &str) -> Pods {
    let mut counted = Pods::default();
    for pod in pods.iter().filter(|pod| owned_by(pod, target)) {
        let annotations = pod.metadata.annotations.as_ref();
        let carried = annotations.and_then(|a| a.get(annotation));
        let status = pod.status.as_ref();
        if carried.map(String::as_str) == Some(checksum) {
            let containers = status.and_then(|s| s.container_statuses.as_deref());
            counted.restarts += containers
                .unwrap_or_default()
                .iter()
                .map(|c| u32::try_from(c.restart_count).unwrap_or(0))
                .sum::<u32>();
        } else {
            let phase = status.and_then(|s| s.phase.as_deref());
            if !matches!(phase, Some("Succeeded" | "Failed")) {
                counted.older += 1;
            }
        }
    }
    counted
}

/// Whether `target` owns `pod`: directly, or (a Deployment) through one of its
/// ReplicaSets, `<deployment>-<pod-template-hash>`.
fn owned_by(pod: &Pod, target: &RestartTarget) -> bool {
    let owners = pod.metadata.owner_references.as_deref().unwrap_or_default();
    owners.iter().any(|owner| match target.kind {
        WorkloadKind::Deployment => {
            let hash = owner.name.strip_prefix(&format!("{}-", target.name));
            owner.kind == "ReplicaSet" && hash.is_some_and(|h| !h.is_empty() && !h.contains('-'))
        }
        WorkloadKind::StatefulSet => owner.kind == "StatefulSet" && owner.name == target.name,
        WorkloadKind::DaemonSet => owner.kind == "DaemonSet" && owner.name == target.name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ANNOTATION: &str = "config.summit.io/restartedFor-api";

    fn target() -> RestartTarget {
        RestartTarget {
            kind: WorkloadKind::Deployment,
            name: "api-canary".into(),
        }
    }

    fn owned(owner: &str, checksum: &str, phase: &str, restarts: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "annotations": {ANNOTATION: checksum},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                     "name": owner, "uid": "u"}],
            },
            "status": {"phase": phase, "containerStatuses": [{
                "name": "app", "image": "app", "imageID": "", "ready": true,
                "restartCount": restarts,
            }]},
        }))
        .expect("a pod")
    }

    fn pod(checksum: &str, phase: &str, restarts: i32) -> Pod {
        owned("api-canary-5d8f7c", checksum, phase, restarts)
    }

    #[test]
    fn restarts_count_the_version_and_older_pods_count_until_they_finish() {
        let mut unannotated = pod("", "Running", 0);
        unannotated.metadata.annotations = None;
        let pods = [
            pod("new", "Running", 2),
            pod("new", "Running", 1),
            // Running or terminating, an older pod may still be scraped.
            pod("old", "Running", 7),
            unannotated,
            pod("old", "Succeeded", 0),
            pod("old", "Failed", 3),
        ];
        let counted = count(&pods, &target(), ANNOTATION, "new");
        assert_eq!(
            counted,
            Pods {
                restarts: 3,
                older: 2
            }
        );
        assert_eq!(count(&[], &target(), ANNOTATION, "new"), Pods::default());
    }

    #[test]
    fn pods_of_another_workload_the_selector_matches_do_not_count() {
        let pods = [
            // The main Deployment `api`, and one named like the canary's prefix.
            owned("api-7c9d6b", "old", "Running", 4),
            owned("api-canary-extra-5d8f7c", "old", "Running", 4),
            owned("api-canary-5d8f7c", "new", "Running", 1),
        ];
        let counted = count(&pods, &target(), ANNOTATION, "new");
        assert_eq!(
            counted,
            Pods {
                restarts: 1,
                older: 0
            }
        );
        let mut orphan = pod("old", "Running", 0);
        orphan.metadata.owner_references = None;
        assert_eq!(
            count(&[orphan], &target(), ANNOTATION, "new"),
            Pods::default()
        );
    }
}
