//! The admission policies approvals depend on. Nothing but the apiserver binds a
//! ConfigChange's requester and approvals, and a spec edit's author, to real users: the
//! chart's policies do it. Without them anyone could sign as anyone, so the operator
//! applies no ConfigChange while any of them is missing, and never one created before
//! they were all in place.

use std::sync::Arc;

use futures::{Stream, StreamExt};

use crate::core::vouching::Vouching;
use k8s_openapi::{
    api::admissionregistration::v1::{
        MatchResources, MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding,
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::{
    Api, Client, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store, store::WriterDropped},
        watcher,
    },
};

/// What the admission policies prove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarded {
    /// Who requested and who approved a ConfigChange, and who may relax a policy.
    Changes,
    /// Who wrote a ConfigEntry's spec.
    Authors,
}

impl Guarded {
    /// The chart's ValidatingAdmissionPolicies that prove it, each with a binding of the
    /// same name.
    fn validating(self) -> &'static [&'static str] {
        match self {
            Guarded::Changes => &[
                "summit-config-change-identity",
                "summit-config-approval-policy",
            ],
            Guarded::Authors => &["summit-config-spec-author"],
        }
    }

    /// The chart's MutatingAdmissionPolicies that prove it, each with a binding of the
    /// same name.
    fn mutating(self) -> &'static [&'static str] {
        match self {
            Guarded::Changes => &[],
            Guarded::Authors => &["summit-config-spec-author"],
        }
    }
}

/// Caches of the admission policies and their bindings.
#[derive(Clone)]
pub struct Guards {
    required: bool,
    validating: Store<ValidatingAdmissionPolicy>,
    validating_bindings: Store<ValidatingAdmissionPolicyBinding>,
    mutating: Store<MutatingAdmissionPolicy>,
    mutating_bindings: Store<MutatingAdmissionPolicyBinding>,
}

impl Guards {
    /// Starts watching the policies (when `required`) in a task of their own, so the
    /// caches fill before any reconcile needs them: the caches, and a stream that yields
    /// whenever one of them changes.
    pub fn watch(
        client: &Client,
        required: bool,
    ) -> (Self, impl Stream<Item = ()> + Send + 'static) {
        let (validating, a) = watch_all::<ValidatingAdmissionPolicy>(client);
        let (validating_bindings, b) = watch_all::<ValidatingAdmissionPolicyBinding>(client);
        let (mutating, c) = watch_all::<MutatingAdmissionPolicy>(client);
        let (mutating_bindings, d) = watch_all::<MutatingAdmissionPolicyBinding>(client);
        let (sender, changes) = futures::channel::mpsc::unbounded();
        if required {
            let watches = futures::stream::select_all([a, b, c, d]);
            tokio::spawn(watches.for_each(move |()| {
                let _ = sender.unbounded_send(());
                std::future::ready(())
            }));
        }
        (
            Self {
                required,
                validating,
                validating_bindings,
                mutating,
                mutating_bindings,
            },
            changes,
        )
    }

    pub async fn wait_until_ready(&self) -> Result<(), WriterDropped> {
        if !self.required {
            return Ok(());
        }
        self.validating.wait_until_ready().await?;
        self.validating_bindings.wait_until_ready().await?;
        self.mutating.wait_until_ready().await?;
        self.mutating_bindings.wait_until_ready().await
    }

    /// Whether every guard of `what` is in place, and since when.
    pub fn verdict(&self, what: Guarded) -> Vouching {
        if !self.required {
            return Vouching::NotRequired;
        }
        let mut since: Option<Time> = None;
        let mut newest = |meta: &ObjectMeta| {
            if let Some(created) = &meta.creation_timestamp
                && since.as_ref().is_none_or(|s| s.0 < created.0)
            {
                since = Some(created.clone());
            }
        };
        for &name in what.validating() {
            let Some(policy) = get(&self.validating, name) else {
                return missing("ValidatingAdmissionPolicy", name);
            };
            let Some(binding) = get(&self.validating_bindings, name) else {
                return missing("ValidatingAdmissionPolicyBinding", name);
            };
            let spec = &binding.spec;
            if spec.policy_name != name {
                return Vouching::Missing(format!(
                    "the ValidatingAdmissionPolicyBinding {name} does not bind the policy {name}"
                ));
            }
            if !spec.validation_actions.iter().any(|a| a == "Deny") {
                return Vouching::Missing(format!(
                    "the ValidatingAdmissionPolicyBinding {name} does not deny what the policy refuses (validationActions lacks Deny)"
                ));
            }
            if spec.match_resources.as_ref().is_some_and(narrows) {
                return Vouching::Missing(format!(
                    "the ValidatingAdmissionPolicyBinding {name} narrows what it matches (matchResources), so some objects go unguarded"
                ));
            }
            newest(&policy.metadata);
            newest(&binding.metadata);
        }
        for &name in what.mutating() {
            let Some(policy) = get(&self.mutating, name) else {
                return missing("MutatingAdmissionPolicy", name);
            };
            let Some(binding) = get(&self.mutating_bindings, name) else {
                return missing("MutatingAdmissionPolicyBinding", name);
            };
            let spec = binding.spec.as_ref();
            if spec.is_none_or(|s| s.policy_name.as_deref() != Some(name)) {
                return Vouching::Missing(format!(
                    "the MutatingAdmissionPolicyBinding {name} does not bind the policy {name}"
                ));
            }
            if spec
                .and_then(|s| s.match_resources.as_ref())
                .is_some_and(narrows)
            {
                return Vouching::Missing(format!(
                    "the MutatingAdmissionPolicyBinding {name} narrows what it matches (matchResources), so some objects go unguarded"
                ));
            }
            newest(&policy.metadata);
            newest(&binding.metadata);
        }
        Vouching::Since(since)
    }
}

fn missing(kind: &str, name: &str) -> Vouching {
    Vouching::Missing(format!(
        "the {kind} {name} is missing: without it nothing proves who requested or approved a change; install the chart with admissionPolicy.enabled=true"
    ))
}

/// Whether a binding's `matchResources` leaves some of what the policy matches out.
fn narrows(resources: &MatchResources) -> bool {
    let selects =
        |selector: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>| {
            selector.as_ref().is_some_and(|s| {
                s.match_labels.as_ref().is_some_and(|l| !l.is_empty())
                    || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
            })
        };
    selects(&resources.namespace_selector)
        || selects(&resources.object_selector)
        || resources
            .resource_rules
            .as_ref()
            .is_some_and(|r| !r.is_empty())
        || resources
            .exclude_resource_rules
            .as_ref()
            .is_some_and(|r| !r.is_empty())
}

fn get<K>(store: &Store<K>, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    store.get(&ObjectRef::new(name))
}

fn watch_all<K>(client: &Client) -> (Store<K>, futures::stream::BoxStream<'static, ()>)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let events = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects()
        .map(|_| ())
        .boxed();
    (store, events)
}
