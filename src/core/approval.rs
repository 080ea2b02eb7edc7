//! Where a change is approved: the policies an environment answers to, how strong one
//! policy is beside another, and which approvals count.
//!
//! An environment answers to every one of its requirements at once: the policy its
//! spec names, the floor recorded when its live version went live (a spec that was
//! edited, or deleted and created again, cannot lower it by itself), and the platform's
//! floors for environments of its name. A change is approved when each requirement has
//! the approvals it asks for.

use std::{collections::BTreeSet, fmt};

use serde::{Deserialize, Serialize};

use crate::api::v1alpha1::{Approval, ApprovalPolicy, IgnoredApproval};

/// Approvals a policy requires: none for `None` (no policy), `autoApprove` or zero
/// required approvals; one unless it says otherwise.
pub fn required(policy: Option<&ApprovalPolicy>) -> usize {
    match policy {
        None => 0,
        Some(p) if p.auto_approve == Some(true) => 0,
        Some(p) => usize::try_from(p.required_approvals.unwrap_or(1)).unwrap_or(0),
    }
}

/// Whether `a` asks at least as much as `b`: as many approvals or more, from the same
/// people or fewer. A policy naming nobody admits anyone who may approve, so it is
/// weaker than one naming someone.
pub fn at_least_as_strong(a: Option<&ApprovalPolicy>, b: Option<&ApprovalPolicy>) -> bool {
    let (needed_a, needed_b) = (required(a), required(b));
    if needed_b == 0 {
        return true;
    }
    if needed_a < needed_b {
        return false;
    }
    match (a, b) {
        (Some(a), Some(b)) => {
            let names_anyone =
                |p: &ApprovalPolicy| p.approvers.is_empty() && p.approver_groups.is_empty();
            if names_anyone(b) {
                return true;
            }
            !names_anyone(a)
                && a.approvers.iter().all(|u| b.approvers.contains(u))
                && a.approver_groups
                    .iter()
                    .all(|g| b.approver_groups.contains(g))
        }
        _ => false,
    }
}

/// One sentence for a policy: "2 approvals from bob or group summit:approvers".
pub fn describe(policy: Option<&ApprovalPolicy>) -> String {
    let needed = required(policy);
    if needed == 0 {
        return "no approval".to_owned();
    }
    let count = if needed == 1 {
        "1 approval".to_owned()
    } else {
        format!("{needed} approvals")
    };
    let names: Vec<String> = policy
        .map(|p| {
            p.approvers
                .iter()
                .cloned()
                .chain(p.approver_groups.iter().map(|g| format!("group {g}")))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        count
    } else {
        format!("{count} from {}", names.join(" or "))
    }
}

/// A platform's approval floor: every environment whose name matches `environments`
/// (a pattern where `*` matches any run of characters) answers to `policy`, whatever
/// its entry's spec says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformFloor {
    pub environments: String,
    #[serde(flatten)]
    pub policy: ApprovalPolicy,
}

impl PlatformFloor {
    pub fn covers(&self, environment: &str) -> bool {
        glob_matches(&self.environments, environment)
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Where a requirement comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The environment's `approval` in its entry's spec.
    Spec,
    /// The policy recorded when `version` went live in the environment.
    Recorded { version: i64 },
    /// A platform floor for environments matching the pattern.
    Platform { environments: String },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Spec => write!(f, "the environment's policy"),
            Origin::Recorded { version } => {
                write!(f, "the policy recorded when version {version} went live")
            }
            Origin::Platform { environments } => {
                write!(f, "the platform's floor for {environments}")
            }
        }
    }
}

/// One policy an environment answers to.
#[derive(Clone, Debug, PartialEq)]
pub struct Requirement {
    pub origin: Origin,
    /// `None`: no approval needed.
    pub policy: Option<ApprovalPolicy>,
}

impl Requirement {
    fn required(&self) -> usize {
        required(self.policy.as_ref())
    }

    /// Why `approval` does not count here, if it does not.
    fn refuses(&self, approval: &Approval) -> Option<String> {
        let policy = self.policy.as_ref()?;
        let (users, groups) = (&policy.approvers, &policy.approver_groups);
        if users.is_empty() && groups.is_empty() {
            return None;
        }
        let listed = users.contains(&approval.approver)
            || approval.groups.iter().any(|g| groups.contains(g));
        (!listed).then(|| {
            format!(
                "not among the approvers of {} (users: {}; groups: {})",
                self.origin,
                list(users),
                list(groups)
            )
        })
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// People whose approvals never count for a change, and why: its requester, and the
/// authors of any other spec version it brings live.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Excluded {
    people: Vec<(String, String)>,
}

impl Excluded {
    pub fn requester(requester: &str) -> Self {
        let mut excluded = Self::default();
        excluded.add(
            requester,
            "the requester cannot approve their own change".to_owned(),
        );
        excluded
    }

    pub fn add(&mut self, who: &str, why: String) {
        if !self.people.iter().any(|(w, _)| w == who) {
            self.people.push((who.to_owned(), why));
        }
    }

    fn reason(&self, who: &str) -> Option<&str> {
        self.people
            .iter()
            .find(|(w, _)| w == who)
            .map(|(_, why)| why.as_str())
    }
}

/// Every requirement an environment answers to.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Requirements {
    pub all: Vec<Requirement>,
}

impl Requirements {
    /// What an environment answers to: its spec's policy, the floor recorded for it
    /// (if anything went live there) and the platform floors covering its name.
    pub fn new(
        environment: &str,
        spec: Option<&ApprovalPolicy>,
        recorded: Option<(i64, Option<&ApprovalPolicy>)>,
        platform: &[PlatformFloor],
    ) -> Self {
        let mut all = vec![Requirement {
            origin: Origin::Spec,
            policy: spec.cloned(),
        }];
        if let Some((version, policy)) = recorded
            && !at_least_as_strong(spec, policy)
        {
            all.push(Requirement {
                origin: Origin::Recorded { version },
                policy: policy.cloned(),
            });
        }
        for floor in platform.iter().filter(|f| f.covers(environment)) {
            all.push(Requirement {
                origin: Origin::Platform {
                    environments: floor.environments.clone(),
                },
                policy: Some(floor.policy.clone()),
            });
        }
        Self { all }
    }

    /// Whether changes go live without any approval: the same count a ConfigChange's
    /// approvals go through, of none. Every way a change arrives (a spec edit, a
    /// ConfigChange, a rollback) is approved by [`Requirements::count`] alone.
    pub fn auto_approves(&self) -> bool {
        self.count(&[], &Excluded::default()).approved()
    }

    /// The most approvals any requirement asks for.
    pub fn required(&self) -> usize {
        self.all
            .iter()
            .map(Requirement::required)
            .max()
            .unwrap_or(0)
    }

    /// Whether changes answering to these requirements answer to `policy` too: one of
    /// them asks at least as much.
    pub fn guards_at_least(&self, policy: Option<&ApprovalPolicy>) -> bool {
        self.all
            .iter()
            .any(|r| at_least_as_strong(r.policy.as_ref(), policy))
    }

    /// The recorded floor the spec does not meet, if any: the spec asks for less than
    /// what held when the live version went live.
    pub fn relaxed_floor(&self) -> Option<&Requirement> {
        self.all
            .iter()
            .find(|r| matches!(r.origin, Origin::Recorded { .. }))
    }

    /// Counts `approvals` against every requirement.
    pub fn count(&self, approvals: &[Approval], excluded: &Excluded) -> Tally {
        let mut tally = Tally {
            required: self.required(),
            ..Tally::default()
        };
        let mut seen = BTreeSet::new();
        let mut counted_per_requirement = vec![0usize; self.all.len()];
        for approval in approvals {
            let who = &approval.approver;
            let ignore = |reason: String| IgnoredApproval {
                approver: who.clone(),
                reason,
            };
            if let Some(why) = excluded.reason(who) {
                tally.ignored.push(ignore(why.to_owned()));
                continue;
            }
            if !seen.insert(who.clone()) {
                tally.ignored.push(ignore("counted once already".into()));
                continue;
            }
            let mut counts_somewhere = false;
            let mut refusal = None;
            for (i, requirement) in self.all.iter().enumerate() {
                match requirement.refuses(approval) {
                    None if requirement.required() > 0 => {
                        counted_per_requirement[i] += 1;
                        counts_somewhere = true;
                    }
                    None => {}
                    Some(why) => refusal = refusal.or(Some(why)),
                }
            }
            match refusal {
                Some(why) if !counts_somewhere => tally.ignored.push(ignore(why)),
                _ => tally.counted.push(who.clone()),
            }
        }
        for (requirement, counted) in self.all.iter().zip(counted_per_requirement) {
            let missing = requirement.required().saturating_sub(counted);
            if missing > 0 {
                tally.missing.push(Missing {
                    approvals: missing,
                    policy: describe(requirement.policy.as_ref()),
                    origin: requirement.origin.clone(),
                });
            }
        }
        tally
    }
}

/// Approvals one requirement still lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub approvals: usize,
    pub policy: String,
    pub origin: Origin,
}

/// Which approvals counted, which did not and why, and what is still missing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    /// The most approvals any requirement asks for.
    pub required: usize,
    /// Approvers who counted toward at least one requirement, in order.
    pub counted: Vec<String>,
    pub ignored: Vec<IgnoredApproval>,
    pub missing: Vec<Missing>,
}

impl Tally {
    pub fn approved(&self) -> bool {
        self.missing.is_empty()
    }

    /// For `counted/required` in `kubectl get`: how far the least satisfied
    /// requirement is from `required`.
    pub fn counted_toward_required(&self) -> usize {
        let worst = self.missing.iter().map(|m| m.approvals).max().unwrap_or(0);
        self.required.saturating_sub(worst)
    }

    /// "waiting for 1 more approval (1 approval from group summit:approvers, by the
    /// platform's floor for prod*)", one clause per requirement still short.
    pub fn waiting_message(&self) -> String {
        let clauses: Vec<String> = self
            .missing
            .iter()
            .map(|m| {
                format!(
                    "{} more approval(s) for {} ({})",
                    m.approvals, m.origin, m.policy
                )
            })
            .collect();
        format!("waiting for {}", clauses.join(" and "))
    }
}

/// The approval floor an environment keeps after a version goes live there: what the
/// change proposed, if it proposed a policy; otherwise the spec's policy when it asks
/// at least as much as the current floor; otherwise the current floor.
pub fn floor_after(
    current: Option<Option<&ApprovalPolicy>>,
    spec: Option<&ApprovalPolicy>,
    proposed: Option<&ApprovalPolicy>,
) -> Option<ApprovalPolicy> {
    if let Some(proposed) = proposed {
        return Some(proposed.clone());
    }
    match current {
        Some(floor) if !at_least_as_strong(spec, floor) => floor.cloned(),
        _ => spec.cloned(),
    }
}

/// The floor to record when a version goes live, if it differs from the current one
/// (`Some(None)`: record that no approval is needed).
pub fn floor_change(
    current: Option<Option<&ApprovalPolicy>>,
    spec: Option<&ApprovalPolicy>,
    proposed: Option<&ApprovalPolicy>,
) -> Option<Option<ApprovalPolicy>> {
    let after = floor_after(current, spec, proposed);
    // No floor yet and none needed, or none needed either way: nothing worth a row.
    let needs_none = required(after.as_ref()) == 0;
    if needs_none && current.is_none_or(|current| required(current) == 0) {
        return None;
    }
    (current != Some(after.as_ref())).then_some(after)
}

#[cfg(test)]
mod tests;
