//! The ConfigChange through which an environment that needs approval asks for a spec
//! version: who asks, whether it may be asked yet, under which name, and what it
//! says while it waits.

use std::{sync::Arc, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::{
    api::v1alpha1::{
        ANNOTATION_CHANGE_AUTHORS, ApprovalPolicy, CONDITION_VALIDATED, ChangePhase, ConfigChange,
        ConfigChangeSpec, ConfigEntry, EnvironmentSpec, LABEL_MANAGED_BY, MANAGED_BY, Time,
        find_condition,
    },
    core::{
        approval::{self, Requirements},
        resolve::checksum,
        vouching::Vouching,
    },
};

/// What the operator proposes for an environment: a spec version, the approval floor
/// it would lower (when the spec relaxes it), and who asks.
#[derive(Clone, Debug, PartialEq)]
pub struct Proposal {
    pub version: i64,
    pub policy: Option<ApprovalPolicy>,
    /// The author of the spec edit: never the operator, so the author cannot approve it.
    pub requester: String,
    /// Everyone else whose writes the proposal carries: none of them approves it either.
    pub co_authors: Vec<String>,
}

/// Who wrote something: the one named, and everyone whose writes it holds.
#[derive(Clone, Copy, Debug)]
pub struct Writers<'a> {
    pub author: &'a str,
    pub authors: &'a [String],
}

impl Proposal {
    /// The proposal of `version`: asked by the version's author, or, when its content
    /// is live already and only the policy relaxes, by whoever relaxed the spec. It
    /// carries everyone whose writes it holds: the version's authors and the spec's
    /// writers since (a relaxation of the policy is no version's).
    pub fn new(
        (version, policy): (i64, Option<ApprovalPolicy>),
        content_live: bool,
        recorded: Writers<'_>,
        spec: Writers<'_>,
    ) -> Self {
        let requester = if content_live {
            spec.author
        } else {
            recorded.author
        };
        let mut co_authors = recorded.authors.to_vec();
        for name in spec.authors {
            if !co_authors.contains(name) {
                co_authors.push(name.clone());
            }
        }
        Self {
            version,
            policy,
            requester: requester.to_owned(),
            co_authors,
        }
    }
}

/// Why a version is not proposed yet, and when to look again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub message: String,
    pub retry: Option<Duration>,
}

/// Whether `version` may be proposed `now`: not when nothing proves who wrote it
/// (written before the admission policies that stamp authors were in place, so its
/// author could be anyone), nor while the policies that vouch for changes are missing
/// or settling (a proposal made then could never be trusted).
pub fn held(vouching: &Vouching, authors_proven: bool, version: i64, now: &Time) -> Option<Held> {
    if *vouching != Vouching::NotRequired && !authors_proven {
        return Some(Held {
            message: format!(
                "nothing proves who wrote version {version} (it was written while the admission policies that stamp a spec's authors were not in place), so nobody can tell who may not approve it; write the spec again (any edit) to propose it"
            ),
            retry: None,
        });
    }
    let wait = vouching.settling(now)?;
    let why = match vouching {
        Vouching::Missing(why) => why.as_str(),
        _ => "they were installed this very second",
    };
    Some(Held {
        message: format!(
            "version {version} waits for the admission policies before it is proposed: {why}"
        ),
        retry: Some(wait),
    })
}

/// Where the proposal of a version stands, among the ConfigChanges that exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Waiting for approval on this ConfigChange.
    Waiting(String),
    /// Ended without going live (rejected, expired or failed): not proposed again until
    /// the spec changes.
    Ended(String, ChangePhase),
    /// Not made yet: create it under this name.
    Create(String),
    /// Every name it may take is held by ConfigChanges that are not this proposal.
    Taken,
}

/// Finds the proposal among the ConfigChanges `existing` knows by name. Only this very
/// proposal will do: a look-alike someone else made, or one an earlier entry of the
/// same name left behind, must not collect the approvals meant for it; then the
/// proposal takes a name of its own, after the entry's uid. A proposal made while the
/// admission policies were missing can never be trusted: it is made again under the
/// next name. A relaxation is one proposal whoever writes the spec next.
pub fn choose(
    entry: &ConfigEntry,
    environment: &EnvironmentSpec,
    proposal: &Proposal,
    existing: impl Fn(&str) -> Option<Arc<ConfigChange>>,
) -> Choice {
    let uid = entry.uid().unwrap_or_default();
    let ours = |change: &ConfigChange| {
        change
            .owner_references()
            .iter()
            .any(|owner| owner.uid == uid && owner.controller == Some(true))
            && change.spec.version == Some(proposal.version)
            && (change.spec.requested_by == proposal.requester || proposal.policy.is_some())
            && change.spec.environment == environment.name
            && change.spec.approval_policy == proposal.policy
    };
    for name in names(entry, environment, proposal) {
        let Some(change) = existing(&name) else {
            return Choice::Create(name);
        };
        if !ours(&change) {
            continue;
        }
        let status = change.status.as_ref();
        match status.and_then(|s| s.phase) {
            Some(ChangePhase::Failed)
                if status
                    .and_then(|s| find_condition(&s.conditions, CONDITION_VALIDATED))
                    .is_some_and(|c| c.reason == "Unvouched") => {}
            Some(phase @ (ChangePhase::Rejected | ChangePhase::Expired | ChangePhase::Failed)) => {
                return Choice::Ended(name, phase);
            }
            _ => return Choice::Waiting(name),
        }
    }
    Choice::Taken
}

/// The names a proposal may take, in order: `<entry>-<environment>-v<version>`, then
/// the same after the entry's uid (another entry of this name, or someone else, holds
/// the first), then numbered after it (proposals the admission policies could not
/// vouch for hold the others).
fn names(entry: &ConfigEntry, environment: &EnvironmentSpec, proposal: &Proposal) -> Vec<String> {
    let base = base_name(
        &entry.name_any(),
        &environment.name,
        proposal.version,
        proposal.policy.as_ref(),
    );
    let uid: String = entry.uid().unwrap_or_default().chars().take(8).collect();
    let suffixed = |suffix: String| -> String {
        base.chars()
            .take(253 - suffix.len())
            .chain(suffix.chars())
            .collect()
    };
    let mut names = vec![base.clone(), suffixed(format!("-{uid}"))];
    names.extend((2..=4).map(|n| suffixed(format!("-{uid}-{n}"))));
    names
}

/// `<entry>-<environment>-v<version>`, with `-p<hash>` of the policy a relaxation
/// proposes, shortened to fit an object name.
fn base_name(
    entry: &str,
    environment: &str,
    version: i64,
    policy: Option<&ApprovalPolicy>,
) -> String {
    let relaxation = policy
        .map(|p| format!("-p{}", &checksum(&serde_json::json!(p))[..8]))
        .unwrap_or_default();
    let suffix = format!("-{environment}-v{version}{relaxation}");
    let room = 253usize.saturating_sub(suffix.len());
    let entry: String = entry.chars().take(room).collect();
    format!("{}{suffix}", entry.trim_end_matches(['-', '.']))
}

/// The ConfigChange that asks for `proposal`, named `name`: made by the operator,
/// owned by the entry, on behalf of the author of the spec edit, with the entry's
/// labels (whatever selects the entry — an operator's `--watch-label-selector`, a
/// team's queries — selects its proposals).
pub fn change(
    entry: &ConfigEntry,
    environment: &EnvironmentSpec,
    proposal: &Proposal,
    name: &str,
) -> ConfigChange {
    let version = proposal.version;
    let relaxing = proposal
        .policy
        .as_ref()
        .map(|p| {
            format!(
                ", and relaxes its approval policy to {}",
                approval::describe(Some(p))
            )
        })
        .unwrap_or_default();
    let labels = entry
        .labels()
        .clone()
        .into_iter()
        .chain([(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned())])
        .collect();
    let annotations = (!proposal.co_authors.is_empty()).then(|| {
        [(
            ANNOTATION_CHANGE_AUTHORS.to_owned(),
            proposal.co_authors.join("\n"),
        )]
        .into_iter()
        .collect()
    });
    ConfigChange {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: entry.namespace(),
            owner_references: entry.controller_owner_ref(&()).map(|r| vec![r]),
            annotations,
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: ConfigChangeSpec {
            config_entry: entry.name_any(),
            environment: environment.name.clone(),
            data: None,
            patch: None,
            rollback_to: None,
            version: Some(version),
            split: None,
            approval_policy: proposal.policy.clone(),
            base_version: None,
            message: format!(
                "spec of ConfigEntry {} (generation {}) recorded version {version}{relaxing}",
                entry.name_any(),
                entry.metadata.generation.unwrap_or(0)
            ),
            requested_by: proposal.requester.clone(),
            approvals: Vec::new(),
            rejection: None,
            rollout_decision: None,
        },
        status: None,
    }
}

/// What an environment says of its proposal.
pub fn message(choice: &Choice, proposal: &Proposal, requirements: &Requirements) -> String {
    let version = proposal.version;
    match choice {
        Choice::Waiting(change) | Choice::Create(change) => match &proposal.policy {
            Some(relaxed) => format!(
                "version {version} waits for approval on ConfigChange {change}: the spec asks for {} where {} holds until it is approved; the live version stays",
                approval::describe(Some(relaxed)),
                approval::describe(requirements.relaxed_floor().and_then(|r| r.policy.as_ref()))
            ),
            None => format!(
                "version {version} waits for {} approval(s) on ConfigChange {change}; the live version stays",
                requirements.required()
            ),
        },
        Choice::Ended(change, phase) => format!(
            "version {version} was {} on ConfigChange {change}; the live version stays until the content changes again",
            format!("{phase:?}").to_lowercase()
        ),
        Choice::Taken => format!(
            "cannot propose version {version}: ConfigChanges named like its proposal exist and are not this entry's; delete them so the proposal can be made"
        ),
    }
}

#[cfg(test)]
mod tests;
