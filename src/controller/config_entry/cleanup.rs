//! Deleting a ConfigEntry: its projections go with it, in every namespace, and with
//! `deletionPolicy: Delete` its applied state and Consul keys too. Versions and the
//! audit trail in PostgreSQL always stay: history is never rewritten.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;

use crate::controller::events::EventType;

use crate::api::v1alpha1::ANNOTATION_ENTRY;
use crate::core::{entry::config_map_target, ownership::Claimant};
use crate::{
    api::v1alpha1::{ConfigEntry, DeletionPolicy},
    controller::{Context, Error, Result},
};

pub async fn cleanup(entry: &ConfigEntry, ctx: &Context) -> Result<()> {
    let owner = format!(
        "{}/{}",
        entry.namespace().unwrap_or_default(),
        entry.name_any()
    );
    for environment in &entry.spec.environments {
        let (namespace, name) = config_map_target(entry, environment);
        let api = ctx.namespaced::<ConfigMap>(&namespace);
        let live = api
            .get_opt(&name)
            .await
            .map_err(Error::kube(format!("read ConfigMap {namespace}/{name}")))?;
        // Only what this entry projected: never a ConfigMap someone else owns.
        let ours = live.is_some_and(|cm| cm.annotations().get(ANNOTATION_ENTRY) == Some(&owner));
        if ours {
            api.delete(&name, &Default::default())
                .await
                .map_err(Error::kube(format!("delete ConfigMap {namespace}/{name}")))?;
            ctx.count_write("ConfigEntry", "configmap");
        }
    }
    let policy = entry.spec.deletion_policy.unwrap_or_default();
    if policy == DeletionPolicy::Delete {
        // Only the holder of the config id forgets its applied state and Consul keys; an
        // entry refused the config id leaves them alone.
        match ctx
            .stores
            .forget(&entry.spec.config_id, &Claimant::of(entry))
            .await
        {
            Ok(())
            | Err(crate::store::Error::Claimed(_) | crate::store::Error::Unclaimed { .. }) => {}
            Err(error) => return Err(Error::Store(error)),
        }
    }
    let note = match policy {
        DeletionPolicy::Retain => "projections removed; versions and Consul keys retained",
        DeletionPolicy::Delete => {
            "projections, applied state and Consul keys removed; versions and audit trail retained"
        }
    };
    ctx.publish(entry, EventType::Normal, "Deleted", note.to_owned())
        .await;
    Ok(())
}
