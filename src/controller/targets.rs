//! Whether an environment may write a projection target: an object projected for one
//! (config id, environment) is written by no other, so a protected environment's
//! consumers never read another environment's content.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{Context, Error, Result};
use crate::api::v1alpha1::{ANNOTATION_CONFIG_ID, ANNOTATION_ENTRY, LABEL_ENVIRONMENT};
use crate::{
    api::v1alpha1::ConfigEntry,
    core::{
        approval::Requirements,
        ownership::{Claimant, Projection, Target, may_write},
    },
};

/// Who the live object says it was projected for, when that is not `wanted` of
/// `entry` (`namespace/name`): another entry, another config id or another
/// environment. `None` when it is this environment's own, or says nothing.
pub fn foreign_holder(live: &ObjectMeta, entry: &str, wanted: &Projection) -> Option<String> {
    let annotations = live.annotations.as_ref();
    let annotation = |key: &str| annotations.and_then(|a| a.get(key));
    let environment = live
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_ENVIRONMENT))
        .or_else(|| annotation(LABEL_ENVIRONMENT));
    match annotation(ANNOTATION_ENTRY) {
        None => Some("nobody in summit-config".to_owned()),
        Some(holder) if holder != entry => Some(format!("ConfigEntry {holder}")),
        Some(_) if annotation(ANNOTATION_CONFIG_ID).is_some_and(|id| *id != wanted.config_id) => {
            Some(format!("another configId of ConfigEntry {entry}"))
        }
        Some(_) => environment
            .filter(|e| **e != wanted.environment)
            .map(|e| format!("environment {e:?} of ConfigEntry {entry}")),
    }
}

/// One projection target about to be written for an environment of an entry, and what
/// the environment needs (`guard`) when its changes need approval.
pub struct Write<'a> {
    pub entry: &'a ConfigEntry,
    pub target: Target,
    pub wanted: Projection,
    pub guard: Option<&'a Requirements>,
}

impl Write<'_> {
    /// Refuses a live object someone else holds, and binds the target to a protected
    /// environment even when nothing is written (once: bindings are cached), so that
    /// objects projected before bindings existed are bound too.
    pub async fn admit(&self, ctx: &Context, live: Option<&ObjectMeta>) -> Result<()> {
        let owner = Claimant::of(self.entry);
        if let Some(live) = live
            && let Some(holder) = foreign_holder(live, &owner.entry(), &self.wanted)
        {
            return Err(Error::NotOwned {
                object: self.target.to_string(),
                holder,
            });
        }
        if self.guard.is_some() {
            check_binding(ctx, &owner, &self.target, &self.wanted, self.guard).await?;
        }
        Ok(())
    }

    /// Checks, just before writing, that no protected environment holds the target.
    pub async fn prepare(&self, ctx: &Context) -> Result<()> {
        if self.guard.is_none() {
            let owner = Claimant::of(self.entry);
            check_binding(ctx, &owner, &self.target, &self.wanted, None).await?;
        }
        Ok(())
    }
}

/// Checks, before a write, that no other environment is bound to `target`. An
/// environment that needs approval (`guard`: what it needs) binds it to itself first,
/// and takes over another environment's binding only when both belong to the same
/// ConfigEntry (`entry`, by namespace and name: the same `approve` verb guards both),
/// or the holder was deleted from the same namespace, and it is guarded at least as
/// well as that one's recorded approval floor: an object whose consumers ran approved
/// content never receives content approved less strictly.
pub async fn check_binding(
    ctx: &Context,
    entry: &Claimant,
    target: &Target,
    wanted: &Projection,
    guard: Option<&Requirements>,
) -> Result<()> {
    let Some(guard) = guard else {
        let bound = ctx.stores.binding(target).await.map_err(Error::Store)?;
        return may_write(target, bound.as_ref(), wanted).map_err(Error::TargetBound);
    };
    let bound = ctx
        .stores
        .bind(target, wanted)
        .await
        .map_err(Error::Store)?;
    if bound == *wanted {
        return Ok(());
    }
    let holder = ctx
        .stores
        .holder(&bound.config_id)
        .await
        .map_err(Error::Store)?;
    let same_entry = holder
        .as_ref()
        .is_some_and(|h| h.namespace == entry.namespace && h.name == entry.name);
    // An entry of the same namespace may take over what a deleted entry left behind,
    // when it is guarded at least as well: nothing is left of the holder to protect
    // but its approved content, which the floor comparison below guards.
    let holder_gone = match &holder {
        Some(h) if h.namespace == entry.namespace && !same_entry => ctx
            .namespaced::<ConfigEntry>(&h.namespace)
            .get_opt(&h.name)
            .await
            .map_err(Error::kube(format!("read ConfigEntry {h}")))?
            .is_none(),
        _ => false,
    };
    if !same_entry && !holder_gone {
        return may_write(target, Some(&bound), wanted).map_err(Error::TargetBound);
    }
    let floors = ctx
        .stores
        .floors(&bound.config_id)
        .await
        .map_err(Error::Store)?;
    let floor = floors.iter().find(|f| f.environment == bound.environment);
    if guard.guards_at_least(floor.and_then(|f| f.policy.as_ref())) {
        ctx.stores
            .rebind(target, &bound, wanted)
            .await
            .map_err(Error::Store)?;
        return Ok(());
    }
    may_write(target, Some(&bound), wanted).map_err(Error::TargetBound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(yaml: &str) -> ObjectMeta {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn production() -> Projection {
        Projection {
            config_id: "payments".into(),
            environment: "production".into(),
        }
    }

    #[test]
    fn only_the_same_entry_and_environment_may_write() {
        let own = meta(
            "{labels: {config.summit.io/environment: production}, annotations: {config.summit.io/entry: team/payments, config.summit.io/config-id: payments}}",
        );
        assert_eq!(foreign_holder(&own, "team/payments", &production()), None);
        let development = Projection {
            environment: "development".into(),
            ..production()
        };
        assert_eq!(
            foreign_holder(&own, "team/payments", &development).as_deref(),
            Some("environment \"production\" of ConfigEntry team/payments")
        );
        assert_eq!(
            foreign_holder(&own, "team/other", &production()).as_deref(),
            Some("ConfigEntry team/payments")
        );
        assert_eq!(
            foreign_holder(&meta("{}"), "team/payments", &production()).as_deref(),
            Some("nobody in summit-config")
        );
    }

    #[test]
    fn secrets_name_their_environment_in_an_annotation() {
        let secret = meta(
            "{annotations: {config.summit.io/entry: team/payments, config.summit.io/environment: production}}",
        );
        let development = Projection {
            environment: "development".into(),
            ..production()
        };
        assert!(foreign_holder(&secret, "team/payments", &development).is_some());
    }
}
