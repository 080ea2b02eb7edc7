//! The approval commands: propose a change (`set`, `patch`, `rollback`), `approve`,
//! `reject`, and list what is `pending`. Who is asking is never typed: the apiserver
//! says, through a SelfSubjectReview, and its admission policy checks it again.

use std::{io::Read, path::PathBuf};

use k8s_openapi::{
    NamespaceResourceScope, api::authentication::v1::SelfSubjectReview,
    apimachinery::pkg::apis::meta::v1::ObjectMeta, jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::client::{Error, Target, connect, request};
use super::output::{Progress, print_table};
use crate::api::v1alpha1::{ANNOTATION_CHECK, ANNOTATION_ROTATE};
use crate::{
    api::v1alpha1::{
        Approval, ChangePhase, ConfigChange, ConfigChangeSpec, ConfigEntry, DriftCheck,
        DriftCheckStatus, Rejection, SecretRotationPolicy, SplitSpec, Time,
    },
    core::resolve,
};

/// What a change proposes.
#[derive(Debug, Clone)]
pub enum Proposal {
    Data(PathBuf),
    Patch(PathBuf),
    RollbackTo(i64),
    Split(SplitSpec),
}

/// A proposal for one environment of an entry.
#[derive(clap::Args, Debug, Clone)]
pub struct Propose {
    /// The ConfigEntry to change.
    pub entry: String,
    /// The environment to change.
    #[arg(long = "env", short = 'e')]
    pub environment: String,
    /// Why: recorded in the audit trail.
    #[arg(long, short = 'm')]
    pub message: String,
    /// Name of the ConfigChange; generated from the entry and environment by default.
    #[arg(long)]
    pub name: Option<String>,
}

/// The user the apiserver authenticates us as, and their groups.
pub(super) async fn whoami(client: &Client) -> Result<(String, Vec<String>), Error> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(request("ask the apiserver who you are"))?;
    let user = review.status.and_then(|s| s.user_info).unwrap_or_default();
    let name = user
        .username
        .ok_or_else(|| Error::Invalid("the apiserver did not say who you are".into()))?;
    Ok((name, user.groups.unwrap_or_default()))
}

/// A JSON or YAML document from `path` (`-`: stdin).
pub(super) fn read_document(path: &PathBuf) -> Result<Value, Error> {
    let shown = path.display().to_string();
    let mut text = String::new();
    let read = if shown == "-" {
        std::io::stdin().read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text))
    };
    read.map_err(|source| Error::Read {
        path: shown.clone(),
        source,
    })?;
    serde_yaml_ng::from_str(&text).map_err(|source| Error::Parse {
        path: shown,
        source,
    })
}

/// Creates a ConfigChange proposing `proposal`, requested by whoever runs this.
pub async fn propose(target: &Target, propose: &Propose, proposal: Proposal) -> Result<(), Error> {
    let (client, namespace) = connect(target).await?;
    let entries: Api<ConfigEntry> = Api::namespaced(client.clone(), &namespace);
    let name = &propose.entry;
    let entry = entries
        .get_opt(name)
        .await
        .map_err(request(format!("read ConfigEntry {namespace}/{name}")))?
        .ok_or_else(|| Error::NotFound(format!("ConfigEntry {namespace}/{name} does not exist")))?;
    if entry.environment(&propose.environment).is_none() {
        return Err(Error::Invalid(format!(
            "ConfigEntry {name} has no environment {:?} (it has {})",
            propose.environment,
            entry.environment_names()
        )));
    }
    let (user, _) = whoami(&client).await?;
    let change = change_of(&entry, propose, proposal, &user)?;
    let created = Api::<ConfigChange>::namespaced(client, &namespace)
        .create(&PostParams::default(), &change)
        .await
        .map_err(request("create the ConfigChange"))?;
    println!(
        "configchange/{} created in {namespace}, requested by {user}",
        created.name_any()
    );
    Ok(())
}

/// The ConfigChange that proposes `proposal` for `entry`, requested by `user`.
fn change_of(
    entry: &ConfigEntry,
    propose: &Propose,
    proposal: Proposal,
    user: &str,
) -> Result<ConfigChange, Error> {
    let (mut data, mut patch, mut rollback_to, mut split) = (None, None, None, None);
    match proposal {
        Proposal::Data(path) => data = Some(object(read_document(&path)?, &path)?),
        Proposal::Patch(path) => patch = Some(object(read_document(&path)?, &path)?),
        Proposal::RollbackTo(version) => rollback_to = Some(version),
        Proposal::Split(spec) => split = Some(spec),
    }
    // What the proposer saw live: a data change made against it is superseded, not
    // silently applied over, if the environment moves on first.
    let base_version = entry
        .status
        .as_ref()
        .and_then(|s| {
            s.environments
                .iter()
                .find(|e| e.name == propose.environment)
        })
        .and_then(|e| e.version);
    Ok(ConfigChange {
        metadata: ObjectMeta {
            name: propose.name.clone(),
            generate_name: propose
                .name
                .is_none()
                .then(|| format!("{}-{}-", propose.entry, propose.environment)),
            ..ObjectMeta::default()
        },
        spec: ConfigChangeSpec {
            config_entry: propose.entry.clone(),
            environment: propose.environment.clone(),
            data,
            patch,
            rollback_to,
            version: None,
            split,
            base_version,
            message: propose.message.clone(),
            requested_by: user.to_owned(),
            approval_policy: None,
            approvals: Vec::new(),
            rejection: None,
            rollout_decision: None,
        },
        status: None,
    })
}

fn object(value: Value, path: &std::path::Path) -> Result<Value, Error> {
    if value.is_object() {
        Ok(value)
    } else {
        Err(Error::Invalid(format!(
            "{} must hold an object, not {}",
            path.display(),
            resolve::kind_of(&value)
        )))
    }
}

/// Appends the caller's approval, or their rejection, to a ConfigChange.
pub async fn decide(
    target: &Target,
    name: &str,
    verdict: Result<Option<String>, String>,
) -> Result<(), Error> {
    let (client, namespace) = connect(target).await?;
    let (user, groups) = whoami(&client).await?;
    let changes: Api<ConfigChange> = Api::namespaced(client.clone(), &namespace);
    let entries: Api<ConfigEntry> = Api::namespaced(client, &namespace);
    // Another approver may append at the same moment: replace under the resourceVersion
    // read, and read again on a conflict.
    for _ in 0..5 {
        let mut change = changes
            .get_opt(name)
            .await
            .map_err(request(format!("read ConfigChange {namespace}/{name}")))?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "ConfigChange {namespace}/{name} does not exist; `summit-config pending` lists the waiting ones"
                ))
            })?;
        if let Some(phase) = change.status.as_ref().and_then(|s| s.phase)
            && !matches!(phase, ChangePhase::Pending)
        {
            return Err(Error::Invalid(format!(
                "ConfigChange {name} is {phase:?}; only pending changes can be approved or rejected"
            )));
        }
        let now = Some(Time(
            Timestamp::from_second(Timestamp::now().as_second())
                .unwrap_or_else(|_| Timestamp::now()),
        ));
        let action = match &verdict {
            Ok(comment) => {
                change.spec.approvals.push(Approval {
                    approver: user.clone(),
                    approved_at: now,
                    comment: comment.clone(),
                    groups: counted_groups(&entries, &change, &groups).await,
                });
                "approved"
            }
            Err(reason) => {
                change.spec.rejection = Some(Rejection {
                    rejected_by: user.clone(),
                    reason: reason.clone(),
                    rejected_at: now,
                });
                "rejected"
            }
        };
        match changes.replace(name, &PostParams::default(), &change).await {
            Ok(_) => {
                println!("configchange/{name} {action} by {user}");
                return Ok(());
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(request(format!("record your decision on {name}"))(error)),
        }
    }
    Err(Error::Invalid(format!(
        "ConfigChange {name} kept changing while recording your decision; try again"
    )))
}

/// The approver's groups the environment's policy counts approvals through; only those
/// go into the approval (the admission policy checks each is really theirs).
async fn counted_groups(
    entries: &Api<ConfigEntry>,
    change: &ConfigChange,
    groups: &[String],
) -> Vec<String> {
    let Ok(Some(entry)) = entries.get_opt(&change.spec.config_entry).await else {
        return Vec::new();
    };
    let listed: Vec<String> = entry
        .spec
        .environments
        .iter()
        .find(|e| e.name == change.spec.environment)
        .and_then(|e| e.approval.as_ref())
        .map(|p| p.approver_groups.clone())
        .unwrap_or_default();
    groups
        .iter()
        .filter(|g| listed.contains(g))
        .cloned()
        .collect()
}

/// Prints the changes waiting for approval.
pub async fn pending(target: &Target, environment: Option<&str>) -> Result<(), Error> {
    let (client, namespace) = connect(target).await?;
    let changes: Api<ConfigChange> = Api::namespaced(client, &namespace);
    let list = changes
        .list(&ListParams::default())
        .await
        .map_err(request(format!("list ConfigChanges in {namespace}")))?;
    let rows: Vec<Vec<String>> = list
        .items
        .iter()
        .filter(|c| {
            matches!(
                c.status.as_ref().and_then(|s| s.phase),
                None | Some(ChangePhase::Pending)
            )
        })
        .filter(|c| environment.is_none_or(|e| c.spec.environment == e))
        .map(|c| {
            let status = c.status.clone().unwrap_or_default();
            vec![
                c.name_any(),
                c.spec.config_entry.clone(),
                c.spec.environment.clone(),
                c.spec.requested_by.clone(),
                status.approvals_summary.unwrap_or_else(|| "-".into()),
                c.metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or_else(|| "-".into(), |t: &Time| t.0.to_string()),
                c.spec.message.clone(),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no pending changes in {namespace}");
        return Ok(());
    }
    print_table(
        &[
            "NAME",
            "ENTRY",
            "ENVIRONMENT",
            "REQUESTER",
            "APPROVALS",
            "REQUESTED",
            "MESSAGE",
        ],
        &rows,
    );
    Ok(())
}

/// Asks a SecretRotationPolicy to rotate now: a new value of its rotate annotation,
/// which the operator acts on once and reports in `status.lastHandledRequest`.
pub async fn rotate(target: &Target, policy: &str) -> Result<(), Error> {
    let (_, token) = ask::<SecretRotationPolicy>(target, policy, ANNOTATION_ROTATE).await?;
    println!(
        "secretrotationpolicy/{policy} asked to rotate ({token}); status.lastHandledRequest shows when it has"
    );
    Ok(())
}

/// Runs a DriftCheck now (its check annotation) and prints what it found.
pub async fn detect(target: &Target, check: &str) -> Result<(), Error> {
    let (checks, token) = ask::<DriftCheck>(target, check, ANNOTATION_CHECK).await?;
    let progress = Progress::on_terminal();
    for tick in 1..=60 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        progress.show(&format!(
            "waiting for DriftCheck {check} to report ({}s)",
            tick / 2
        ));
        let found = checks
            .get(check)
            .await
            .map_err(request(format!("read DriftCheck {check}")))?;
        let status = found.status.unwrap_or_default();
        if status.last_handled_request.as_deref() != Some(token.as_str()) {
            continue;
        }
        progress.clear();
        print_report(&status);
        return Ok(());
    }
    progress.clear();
    Err(Error::TimedOut(format!(
        "DriftCheck {check} did not report within 30s; is the operator running?"
    )))
}

/// Sets `annotation` of the `K` called `name` to a new token: how the operator is
/// asked to act on an object once. Returns the object's API and the token, which its
/// `status.lastHandledRequest` repeats once the operator has acted.
async fn ask<K>(target: &Target, name: &str, annotation: &str) -> Result<(Api<K>, String), Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let (client, namespace) = connect(target).await?;
    let api: Api<K> = Api::namespaced(client, &namespace);
    let token = format!("cli-{}", Timestamp::now().as_millisecond());
    let patch = serde_json::json!({"metadata": {"annotations": {annotation: token}}});
    let what = format!("set {annotation} of {} {namespace}/{name}", K::kind(&()));
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(request(what))?;
    Ok((api, token))
}

/// `drift report`: the DriftCheck's last report, without running it again.
pub async fn report(
    target: &Target,
    check: &str,
    format: super::output::Format,
) -> Result<(), Error> {
    let (client, namespace) = connect(target).await?;
    let checks: Api<DriftCheck> = Api::namespaced(client, &namespace);
    let found = checks
        .get_opt(check)
        .await
        .map_err(request(format!("read DriftCheck {namespace}/{check}")))?
        .ok_or_else(|| Error::NotFound(format!("DriftCheck {namespace}/{check} does not exist")))?;
    let status = found.status.unwrap_or_default();
    if super::output::print_data(format, &status) {
        return Ok(());
    }
    if status.last_check_time.is_none() {
        println!(
            "DriftCheck {check} has not run yet; `summit-config drift detect {check}` runs it now"
        );
        return Ok(());
    }
    print_report(&status);
    Ok(())
}

/// Where a check found drift, a row per finding, or that it found none.
fn print_report(status: &DriftCheckStatus) {
    if status.drifted != Some(true) {
        println!("no drift: every copy matches its recorded version");
        return;
    }
    let rows: Vec<Vec<String>> = status
        .report
        .iter()
        .map(|f| {
            let state = if f.remediated_at.is_some() {
                "remediated"
            } else {
                "drifted"
            };
            vec![
                f.entry.clone(),
                f.environment.clone(),
                f.location.clone(),
                f.paths.join(","),
                state.into(),
            ]
        })
        .collect();
    print_table(&["ENTRY", "ENVIRONMENT", "WHERE", "PATHS", "STATE"], &rows);
}
