//! What happens to each environment when a ConfigEntry's spec records a version: it is
//! live already, a newer change wins, it goes live at once, or it waits for approval;
//! and what the environment's approval floor becomes.

use crate::{
    api::v1alpha1::ApprovalPolicy,
    core::approval::{Requirements, floor_change},
};

/// One environment, as the spec and the store see it.
#[derive(Clone, Debug)]
pub struct Environment<'a> {
    /// The newest version the spec recorded, and its checksum for this environment.
    pub latest: (i64, &'a str),
    /// The live version and its checksum, if anything is live.
    pub live: Option<(i64, &'a str)>,
    /// The spec's `approval` for this environment.
    pub spec_policy: Option<&'a ApprovalPolicy>,
    /// The recorded floor (`Some(None)`: recorded as needing no approval).
    pub floor: Option<Option<&'a ApprovalPolicy>>,
    pub requirements: &'a Requirements,
    /// Whether the environment stages its versions through a canary: once something
    /// is live, a version goes there only through a ConfigChange, which carries the
    /// canary, even where no approval is needed.
    pub staged: bool,
}

/// What to do with an environment.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// The spec's content is live.
    Live,
    /// A ConfigChange made a newer version live; it stays until the spec changes again.
    NewerLive { version: i64 },
    /// The newest version goes live without approval.
    Apply,
    /// A version waits for approval on a proposal; `policy` is the approval floor the
    /// proposal asks to lower, when the spec relaxes it.
    Propose {
        version: i64,
        policy: Option<ApprovalPolicy>,
    },
}

/// The step, and the floor to record now, if it changes (`Some(None)`: no approval).
#[derive(Clone, Debug, PartialEq)]
pub struct Promotion {
    pub step: Step,
    pub record_floor: Option<Option<ApprovalPolicy>>,
}

/// The policy a proposal records to relax the floor to what the spec asks: the spec's
/// own, or explicitly none.
pub fn relaxed_to(spec: Option<&ApprovalPolicy>) -> ApprovalPolicy {
    spec.cloned().unwrap_or(ApprovalPolicy {
        auto_approve: Some(true),
        required_approvals: None,
        approvers: Vec::new(),
        approver_groups: Vec::new(),
        pending_expiry: None,
    })
}

pub fn promote(environment: &Environment<'_>) -> Promotion {
    let (latest, checksum) = environment.latest;
    let relaxes = environment.requirements.relaxed_floor().is_some();
    let proposed_policy = relaxes.then(|| relaxed_to(environment.spec_policy));
    let step = match environment.live {
        Some((_, live)) if live == checksum => match proposed_policy {
            // Same content, weaker policy: the relaxation alone waits for approval, on
            // the newest version (the same content).
            Some(policy) => Step::Propose {
                version: latest,
                policy: Some(policy),
            },
            None => Step::Live,
        },
        Some((version, _)) if version > latest => Step::NewerLive { version },
        Some(_) if environment.staged => Step::Propose {
            version: latest,
            policy: proposed_policy,
        },
        _ if environment.requirements.auto_approves() => Step::Apply,
        _ => Step::Propose {
            version: latest,
            policy: proposed_policy,
        },
    };
    // A spec asking at least as much as the floor raises it at once, once something is
    // live to guard; an application records it with the version instead.
    let guarded = environment.live.is_some() && step != Step::Apply;
    Promotion {
        step,
        record_floor: guarded
            .then(|| floor_change(environment.floor, environment.spec_policy, None))
            .flatten(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> ApprovalPolicy {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn promote_with(
        live: Option<(i64, &str)>,
        spec: Option<&ApprovalPolicy>,
        floor: Option<Option<&ApprovalPolicy>>,
    ) -> Promotion {
        let recorded = floor.map(|f| (2, f));
        let requirements = Requirements::new("production", spec, recorded, &[]);
        promote(&Environment {
            latest: (3, "new"),
            live,
            spec_policy: spec,
            floor,
            requirements: &requirements,
            staged: false,
        })
    }

    #[test]
    fn an_unprotected_environment_applies_and_a_protected_one_proposes() {
        assert_eq!(promote_with(Some((2, "old")), None, None).step, Step::Apply);
        let one = policy("{}");
        assert_eq!(
            promote_with(Some((2, "old")), Some(&one), Some(Some(&one))).step,
            Step::Propose {
                version: 3,
                policy: None
            }
        );
    }

    #[test]
    fn a_spec_that_drops_its_policy_still_answers_to_the_floor() {
        let one = policy("{approverGroups: [summit:approvers]}");
        let promotion = promote_with(Some((2, "old")), None, Some(Some(&one)));
        assert_eq!(
            promotion.step,
            Step::Propose {
                version: 3,
                policy: Some(policy("{autoApprove: true}"))
            }
        );
        assert_eq!(promotion.record_floor, None);
    }

    #[test]
    fn relaxing_the_policy_alone_is_proposed_for_the_live_version() {
        let two = policy("{requiredApprovals: 2}");
        let one = policy("{}");
        let promotion = promote_with(Some((3, "new")), Some(&one), Some(Some(&two)));
        assert_eq!(
            promotion.step,
            Step::Propose {
                version: 3,
                policy: Some(one)
            }
        );
    }

    #[test]
    fn a_stronger_spec_raises_the_floor_at_once() {
        let one = policy("{}");
        let two = policy("{requiredApprovals: 2}");
        let promotion = promote_with(Some((3, "new")), Some(&two), Some(Some(&one)));
        assert_eq!(promotion.step, Step::Live);
        assert_eq!(promotion.record_floor, Some(Some(two.clone())));
        // Unchanged: nothing to write.
        let unchanged = promote_with(Some((3, "new")), Some(&two), Some(Some(&two)));
        assert_eq!(unchanged.record_floor, None);
        // Something live and no floor yet (recorded before floors existed): record it.
        let first = promote_with(Some((3, "new")), Some(&one), None);
        assert_eq!(first.record_floor, Some(Some(one)));
    }

    #[test]
    fn an_environment_that_needs_no_approval_records_no_floor() {
        assert_eq!(
            promote_with(Some((3, "new")), None, None).record_floor,
            None
        );
    }

    #[test]
    fn nothing_live_records_no_floor_until_something_goes_live() {
        let one = policy("{}");
        let promotion = promote_with(None, Some(&one), None);
        assert_eq!(promotion.record_floor, None);
        assert_eq!(
            promotion.step,
            Step::Propose {
                version: 3,
                policy: None
            }
        );
    }

    #[test]
    fn a_staged_environment_proposes_once_something_is_live() {
        let requirements = Requirements::new("production", None, None, &[]);
        let staged = |live| {
            promote(&Environment {
                latest: (3, "new"),
                live,
                spec_policy: None,
                floor: None,
                requirements: &requirements,
                staged: true,
            })
            .step
        };
        assert_eq!(
            staged(Some((2, "old"))),
            Step::Propose {
                version: 3,
                policy: None
            }
        );
        assert_eq!(
            staged(None),
            Step::Apply,
            "nothing live to compare a canary with"
        );
        assert_eq!(staged(Some((3, "new"))), Step::Live);
    }

    #[test]
    fn a_newer_change_stays_live() {
        assert_eq!(
            promote_with(Some((5, "other")), None, None).step,
            Step::NewerLive { version: 5 }
        );
    }
}
