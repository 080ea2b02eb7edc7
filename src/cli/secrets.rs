//! `secret create` (a SecretRotationPolicy: the secret, its target and its schedule)
//! and `secret list`. Values never pass through the command line: the operator
//! generates them, or the provider holds them.

use kube::{
    Api, ResourceExt,
    api::{ListParams, PostParams},
};

use super::client::{Error, Target, connect, request};
use super::output::{Format, print_data, print_table};
use crate::api::v1alpha1::{
    RestartTarget, RotationTarget, SecretProvider, SecretRotationPolicy, SecretRotationPolicySpec,
    WorkloadKind,
};

/// What `secret create` asks for.
#[derive(clap::Args, Debug, Clone)]
pub struct NewSecret {
    /// Name of the SecretRotationPolicy.
    pub name: String,
    /// Where the secret lives.
    #[arg(long, value_enum)]
    pub provider: Provider,
    /// The provider's id of the secret (a name or ARN in AWS Secrets Manager).
    #[arg(long)]
    pub secret_id: String,
    /// The Secret, in this namespace, that receives the current and previous values.
    #[arg(long = "target")]
    pub target_secret: String,
    /// Time between rotations, e.g. `90d`.
    #[arg(long, default_value = "90d")]
    pub interval: String,
    /// How long the previous value stays valid after a rotation, e.g. `7d`.
    #[arg(long)]
    pub grace_period: Option<String>,
    /// Workloads to restart after a rotation, as `deployment/NAME`,
    /// `statefulset/NAME` or `daemonset/NAME`; repeatable.
    #[arg(long = "restart", value_parser = restart_target)]
    pub restart: Vec<RestartTarget>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Provider {
    AwsSecretsManager,
    InCluster,
}

fn restart_target(text: &str) -> Result<RestartTarget, String> {
    let (kind, name) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not KIND/NAME, e.g. deployment/checkout"))?;
    let kind = match kind.to_ascii_lowercase().as_str() {
        "deployment" | "deploy" => WorkloadKind::Deployment,
        "statefulset" | "sts" => WorkloadKind::StatefulSet,
        "daemonset" | "ds" => WorkloadKind::DaemonSet,
        other => {
            return Err(format!(
                "{other:?} is not deployment, statefulset or daemonset"
            ));
        }
    };
    Ok(RestartTarget {
        kind,
        name: name.to_owned(),
    })
}

/// `secret create`: a SecretRotationPolicy, which the operator acts on at once (a
/// first value is generated or adopted, then rotated on schedule).
pub async fn create(target: &Target, new: &NewSecret) -> Result<(), Error> {
    let (client, namespace) = connect(target).await?;
    let spec = SecretRotationPolicySpec {
        provider: match new.provider {
            Provider::AwsSecretsManager => SecretProvider::AwsSecretsManager,
            Provider::InCluster => SecretProvider::InCluster,
        },
        secret_id: new.secret_id.clone(),
        aws: None,
        rotation_interval: new.interval.clone(),
        grace_period: new.grace_period.clone(),
        minimum_interval: None,
        rotation_function: None,
        generator: None,
        target: RotationTarget {
            name: new.target_secret.clone(),
            key: None,
            previous_key: None,
        },
        restart_targets: new.restart.clone(),
        notifications: None,
        suspend: None,
    };
    let policy = SecretRotationPolicy::new(&new.name, spec);
    let api: Api<SecretRotationPolicy> = Api::namespaced(client, &namespace);
    api.create(&PostParams::default(), &policy)
        .await
        .map_err(request(format!(
            "create SecretRotationPolicy {namespace}/{}",
            new.name
        )))?;
    println!(
        "secretrotationpolicy/{} created in {namespace}; `summit-config secret list` shows its versions",
        new.name
    );
    Ok(())
}

/// `secret list`: the namespace's rotation policies, their versions and schedule.
pub async fn list(target: &Target, format: Format) -> Result<(), Error> {
    let (client, namespace) = connect(target).await?;
    let api: Api<SecretRotationPolicy> = Api::namespaced(client, &namespace);
    let policies = api
        .list(&ListParams::default())
        .await
        .map_err(request(format!(
            "list SecretRotationPolicies in {namespace}"
        )))?;
    if print_data(format, &policies.items) {
        return Ok(());
    }
    let time = |t: &Option<crate::api::v1alpha1::Time>| {
        t.as_ref().map_or_else(|| "-".into(), |t| t.0.to_string())
    };
    let rows: Vec<Vec<String>> = policies
        .items
        .iter()
        .map(|p| {
            let status = p.status.clone().unwrap_or_default();
            vec![
                p.name_any(),
                format!("{:?}", p.spec.provider),
                p.spec.secret_id.clone(),
                p.spec.target.name.clone(),
                status.current_version.unwrap_or_else(|| "-".into()),
                time(&status.last_rotation_time),
                time(&status.next_rotation_time),
            ]
        })
        .collect();
    print_table(
        &[
            "NAME",
            "PROVIDER",
            "SECRET ID",
            "TARGET",
            "CURRENT",
            "ROTATED",
            "NEXT",
        ],
        &rows,
    );
    Ok(())
}
