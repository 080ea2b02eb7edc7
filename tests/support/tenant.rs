//! A namespace per test, who may do what there, and an operator watching it.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        authorization::v1::SubjectAccessReview,
        core::v1::{ConfigMap, Namespace, Secret},
        rbac::v1::{ClusterRole, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams, PostParams},
    runtime::wait::{await_condition, conditions},
};
use summit_config::api::v1alpha1::{ConfigChange, ConfigEntry};

use super::{Operator, WAIT, approve, env};

/// A fresh namespace for one test, the chart's roles granted there to some users, and
/// the admin's and those users' access to it.
pub struct Tenant {
    pub ns: String,
    admin: Client,
}

impl Tenant {
    /// A fresh namespace named after `test` (the CRDs installed first), each of `roles`
    /// (user, ClusterRole: `summit-config-admin`, `summit-config-approver`, ...) granted
    /// in it.
    pub async fn new(test: &str, roles: &[(&str, &str)]) -> Self {
        let admin = env().admin().await;
        install_crds(&admin).await;
        let ns = namespace(&admin, test).await;
        for (user, role) in roles {
            grant(&admin, &ns, user, role).await;
        }
        Self { ns, admin }
    }

    /// A config id of this namespace's own, so that tests share the backends without
    /// meeting.
    pub fn config_id(&self) -> String {
        format!("tests/{}", self.ns)
    }

    /// The admin's client.
    pub fn admin(&self) -> Client {
        self.admin.clone()
    }

    /// Objects of kind `K` in the namespace, as the admin.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    /// Objects of kind `K` in the namespace, as `user` (alice, bob, carol, mallory).
    pub async fn api_as<K>(&self, user: &str) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(env().client_as(user).await, &self.ns)
    }

    /// The namespace's ConfigEntries, as the admin.
    pub fn entries(&self) -> Api<ConfigEntry> {
        self.api()
    }

    /// The namespace's ConfigChanges, as the admin.
    pub fn changes(&self) -> Api<ConfigChange> {
        self.api()
    }

    /// The namespace's ConfigMaps, as the admin.
    pub fn config_maps(&self) -> Api<ConfigMap> {
        self.api()
    }

    /// The namespace's Secrets, as the admin.
    pub fn secrets(&self) -> Api<Secret> {
        self.api()
    }

    /// The namespace's ConfigEntries, as `user`.
    pub async fn entries_as(&self, user: &str) -> Api<ConfigEntry> {
        self.api_as(user).await
    }

    /// The namespace's ConfigChanges, as `user`.
    pub async fn changes_as(&self, user: &str) -> Api<ConfigChange> {
        self.api_as(user).await
    }

    /// The built `summit-config` as `user` in this namespace: its exit code, stdout and
    /// stderr.
    pub fn summit_as(&self, user: &str, args: &[&str]) -> (i32, String, String) {
        let output = super::summit(&super::env().kubeconfig_as(user), &self.ns, args)
            .output()
            .expect("run summit-config");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// `user`, one of the summit:approvers, approves change `name`; the apiserver must
    /// take the approval.
    pub async fn approves(&self, user: &str, name: &str) -> ConfigChange {
        approve(
            &self.changes_as(user).await,
            name,
            user,
            &["summit:approvers"],
        )
        .await
        .unwrap_or_else(|error| panic!("{user} approves {name}: {error}"))
    }
}

/// A fresh namespace for `test` and an operator watching it: how most tests start.
pub async fn setup(test: &str) -> (Tenant, Operator) {
    setup_with(test, &[], &[]).await
}

/// Like [`setup`], with `roles` granted in the namespace and extra operator arguments.
pub async fn setup_with(
    test: &str,
    roles: &[(&str, &str)],
    operator_args: &[&str],
) -> (Tenant, Operator) {
    let tenant = Tenant::new(test, roles).await;
    let operator = Operator::start_with(&tenant.ns, operator_args);
    (tenant, operator)
}

/// An admin client, the CRDs installed, and a new namespace for `test`: for what needs
/// no [`Tenant`] (the benches).
pub async fn fresh_namespace(test: &str) -> (Client, String) {
    let tenant = Tenant::new(test, &[]).await;
    (tenant.admin(), tenant.ns)
}

/// Installs (or updates) the CRDs with server-side apply and waits until they are served.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in summit_config::api::crds() {
        let name = crd.metadata.name.clone().expect("CRD name");
        crds.patch(
            &name,
            &PatchParams::apply("summit-config-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|error| panic!("apply CRD {name}: {error}"));
        tokio::time::timeout(
            WAIT,
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not established within {WAIT:?}"))
        .expect("watch CRD");
    }
}

/// Binds `user` to one of the chart's ClusterRoles (`summit-config-admin`,
/// `summit-config-approver`, ...) within `ns`.
pub async fn grant(client: &Client, ns: &str, user: &str, role: &str) {
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{user}-{role}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .expect("role binding");
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|error| panic!("grant {role} to {user} in {ns}: {error}"));
    let honoured = async {
        while !honours(client, ns, user, role).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(WAIT, honoured)
        .await
        .unwrap_or_else(|_| panic!("the authorizer ignores {role} for {user} in {ns}"));
}

/// Whether the apiserver's authorizer lets `user` do all that ClusterRole `role` allows
/// within `ns`. It reads bindings and roles from its own caches, so a grant takes effect
/// a moment after it is written.
async fn honours(client: &Client, ns: &str, user: &str, role: &str) -> bool {
    let Ok(role) = Api::<ClusterRole>::all(client.clone()).get(role).await else {
        return false;
    };
    let reviews = Api::<SubjectAccessReview>::all(client.clone());
    let rules = role.rules.unwrap_or_default();
    let attributes = rules.iter().flat_map(|rule| {
        let groups = rule.api_groups.iter().flatten();
        groups.flat_map(move |group| {
            rule.resources.iter().flatten().flat_map(move |resource| {
                rule.verbs.iter().map(move |verb| {
                    serde_json::json!({
                        "namespace": ns, "group": group, "resource": resource, "verb": verb,
                    })
                })
            })
        })
    });
    for attributes in attributes {
        let review: SubjectAccessReview = serde_json::from_value(serde_json::json!({
            "spec": {"user": user, "groups": ["system:authenticated"], "resourceAttributes": attributes},
        }))
        .expect("review");
        let answer = reviews.create(&PostParams::default(), &review).await;
        if !answer.is_ok_and(|r| r.status.is_some_and(|s| s.allowed)) {
            return false;
        }
    }
    true
}

/// Creates a fresh namespace for one test, named after it.
pub async fn namespace(client: &Client, test: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{}-{}-{}",
        test.replace('_', "-").chars().take(40).collect::<String>(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|error| panic!("create namespace {name}: {error}"));
    name
}
