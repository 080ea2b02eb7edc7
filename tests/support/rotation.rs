//! What the secret tests share: reading Secrets Manager as the operator left it, and
//! SecretRotationPolicies.

use aws_sdk_secretsmanager::Client as SecretsManager;
use kube::Api;
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{SecretRotationPolicy, SecretRotationPolicyStatus};

use tokio::sync::{Mutex, MutexGuard};

use super::{
    Operator, Tenant, annotate, create_aws_secret, policy_where, secrets_manager, setup_with,
};

/// The value at a stage, and its version id.
pub async fn aws_value(aws: &SecretsManager, id: &str, stage: &str) -> (String, String) {
    let output = aws
        .get_secret_value()
        .secret_id(id)
        .version_stage(stage)
        .send()
        .await
        .unwrap_or_else(|e| panic!("read {id} at {stage}: {e:?}"));
    (
        output.secret_string().expect("a string").to_owned(),
        output.version_id().expect("a version").to_owned(),
    )
}

/// A policy that rotates `secret_id` of `provider` daily into Secret `target`, keeps
/// the previous value an hour, and takes a rotation asked for a second after the last.
pub fn daily(provider: &str, secret_id: &str, target: &str) -> Value {
    json!({
        "provider": provider,
        "secretId": secret_id,
        "rotationInterval": "1d",
        "gracePeriod": "1h",
        "minimumInterval": "1s",
        "target": {"name": target},
    })
}

/// Waits until policy `name` has adopted or created its secret, and returns its status.
pub async fn adopted(
    policies: &Api<SecretRotationPolicy>,
    name: &str,
) -> SecretRotationPolicyStatus {
    policy_where(policies, name, |s| s.current_version.is_some()).await
}

/// Asks for a rotation of policy `name`, naming the request `request`.
pub async fn request_rotation(policies: &Api<SecretRotationPolicy>, name: &str, request: &str) {
    annotate(policies, name, "config.summit.io/rotate", request).await;
}

/// One test at a time uses moto: the tests share its one account, and one pauses it.
static MOTO: Mutex<()> = Mutex::const_new(());

/// A test's turn with moto: a namespace with an operator watching it (see
/// [`setup_with`]), and Secrets Manager through the real SDK.
pub struct WithMoto {
    pub s: Tenant,
    pub operator: Operator,
    pub aws: SecretsManager,
    _turn: MutexGuard<'static, ()>,
}

/// Waits for moto's turn, for a test that sets itself up.
pub async fn moto_turn() -> MutexGuard<'static, ()> {
    MOTO.lock().await
}

/// Waits for moto's turn, then sets up `test` with `operator_args`.
pub async fn with_moto(test: &str, operator_args: &[&str]) -> WithMoto {
    let turn = MOTO.lock().await;
    let (s, operator) = setup_with(test, &[], operator_args).await;
    let aws = secrets_manager().await;
    WithMoto {
        s,
        operator,
        aws,
        _turn: turn,
    }
}

impl WithMoto {
    /// Creates `tests/<namespace>/<name>` holding `value` in Secrets Manager; returns
    /// its id.
    pub async fn secret(&self, name: &str, value: &str) -> String {
        let id = format!("tests/{}/{name}", self.s.ns);
        create_aws_secret(&self.aws, &id, value).await;
        id
    }
}

/// An in-cluster policy rotating Secret `name` daily, keeping the previous value under
/// `token-previous` for a second, and after that until Deployment `consumer` runs the
/// new one.
pub fn in_cluster_held_by(name: &str, consumer: &str) -> Value {
    json!({
        "provider": "InCluster",
        "secretId": name,
        "rotationInterval": "1d",
        "gracePeriod": "1s",
        "minimumInterval": "1s",
        "target": {"name": name, "key": "token", "previousKey": "token-previous"},
        "restartTargets": [{"kind": "Deployment", "name": consumer}],
    })
}
