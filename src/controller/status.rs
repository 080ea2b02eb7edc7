//! Writing `status` with server-side apply, only when it changed.

use k8s_openapi::{NamespaceResourceScope, jiff::Timestamp};
use kube::{
    Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use super::{Context, Error, Result};
use crate::api::v1alpha1::FIELD_MANAGER;
use crate::core::Invalid;
use crate::{api::v1alpha1::Time, telemetry::WriteLabels};

/// The current time as a Kubernetes timestamp, truncated to whole seconds as the
/// apiserver stores it, so that comparing a status with its stored copy works.
pub fn now() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// Applies `status` to `object` unless it equals `current`. Returns whether it wrote.
pub async fn apply_status<K, S>(
    ctx: &Context,
    kind: &'static str,
    object: &K,
    current: Option<&S>,
    status: &S,
) -> Result<bool>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(false);
    }
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": serde_json::to_value(status).map_err(Error::EncodeStatus)?,
    });
    ctx.namespaced::<K>(&namespace)
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
        .map_err(Error::kube(format!(
            "apply status of {kind} {namespace}/{name}"
        )))?;
    ctx.metrics
        .apiserver_writes
        .get_or_create(&WriteLabels {
            kind,
            target: "status",
        })
        .inc();
    Ok(true)
}

/// What every status of ours carries.
pub trait ObjectStatus: Clone + Default + Serialize + PartialEq {
    fn conditions_mut(&mut self) -> &mut Vec<crate::api::v1alpha1::Condition>;
    fn set_observed_generation(&mut self, generation: Option<i64>);
}

macro_rules! object_status {
    ($($status:ty),*) => {$(
        impl ObjectStatus for $status {
            fn conditions_mut(&mut self) -> &mut Vec<crate::api::v1alpha1::Condition> {
                &mut self.conditions
            }
            fn set_observed_generation(&mut self, generation: Option<i64>) {
                self.observed_generation = generation;
            }
        }
    )*};
}

object_status!(
    crate::api::v1alpha1::ConfigEntryStatus,
    crate::api::v1alpha1::ConfigChangeStatus,
    crate::api::v1alpha1::SecretRotationPolicyStatus,
    crate::api::v1alpha1::DriftCheckStatus
);

/// Records the `Validated` verdict and `observedGeneration` in `status`, writing only
/// when something changed, and publishes an Event when the verdict or its message changes.
pub async fn report_validation<K, S>(
    ctx: &Context,
    kind: &'static str,
    object: &K,
    current: Option<&S>,
    verdict: &Result<String, Invalid>,
) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: ObjectStatus,
{
    use crate::api::v1alpha1::{CONDITION_VALIDATED, Conditions, find_condition};
    use crate::controller::events::EventType;

    let generation = object.meta().generation;
    let mut next = current.cloned().unwrap_or_default();
    next.set_observed_generation(generation);
    let (passed, reason, message) = match verdict {
        Ok(message) => (true, "Valid", message.clone()),
        Err(invalid) => (false, invalid.reason, invalid.message.clone()),
    };
    let before = find_condition(next.conditions_mut(), CONDITION_VALIDATED)
        .map(|c| (c.status == "True", c.message.clone()));
    let mut conditions = Conditions::new(next.conditions_mut(), generation, now());
    conditions.set(CONDITION_VALIDATED, passed, reason, &message);
    conditions.summarize(None);
    apply_status(ctx, kind, object, current, &next).await?;
    if before != Some((passed, message.clone())) {
        let (type_, event_reason) = if passed {
            (EventType::Normal, "Validated")
        } else {
            (EventType::Warning, "ValidationFailed")
        };
        ctx.publish(object, type_, event_reason, message).await;
    }
    Ok(())
}
