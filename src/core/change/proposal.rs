//! What a change proposes: new content built on what its environment runs, or a
//! recorded version as it is; and whether that content is valid.

use serde_json::Value;

use super::Decision;
use crate::{
    api::v1alpha1::{ChangePhase, ConfigChangeSpec, ConfigFormat},
    core::{
        Invalid,
        render::render,
        resolve::{CompiledSchema, Snapshot, merge_patch},
        rollout::split,
    },
};

/// A recorded version, as a change's decisions see it.
#[derive(Clone, Copy, Debug)]
pub struct Recorded<'a> {
    pub number: i64,
    pub snapshot: &'a Snapshot,
}

/// What the store knows that a change's proposal depends on.
#[derive(Clone, Copy, Debug)]
pub struct Known<'a> {
    pub config_id: &'a str,
    /// The newest version of the config id.
    pub latest: Recorded<'a>,
    /// The version live in the change's environment, if any.
    pub applied: Option<i64>,
    /// The newest version the entry's spec recorded, as its status says.
    pub spec_latest: Option<i64>,
    /// The version this change recorded on an earlier attempt.
    pub own: Option<Recorded<'a>>,
    /// The content the environment runs (the newest version's when nothing runs).
    pub live: Option<&'a Snapshot>,
    /// The version `rollbackTo` or `version` names, if recorded.
    pub named: Option<Recorded<'a>>,
}

impl Known<'_> {
    /// The version the environment runs, or the newest when it runs none.
    pub fn live_version(&self) -> i64 {
        self.applied.unwrap_or(self.latest.number)
    }
}

/// What a change brings live.
#[derive(Clone, Debug, PartialEq)]
pub enum Proposal {
    /// New content, recorded as a new version when the change applies.
    New(Snapshot),
    /// A version already recorded, as it is.
    Promote { version: i64, snapshot: Snapshot },
}

impl Proposal {
    pub fn snapshot(&self) -> &Snapshot {
        match self {
            Proposal::New(snapshot) | Proposal::Promote { snapshot, .. } => snapshot,
        }
    }

    pub fn promoted(&self) -> Option<i64> {
        match self {
            Proposal::New(_) => None,
            Proposal::Promote { version, .. } => Some(*version),
        }
    }
}

/// Builds what the change proposes, or the decision that ends it.
pub fn propose(
    spec: &ConfigChangeSpec,
    base: i64,
    known: &Known<'_>,
) -> Result<Proposal, Box<Decision>> {
    let live_version = known.live_version();
    // A retry after this change recorded its version: apply that version if it never
    // went live, finish if it is live, and never revert whatever came after it.
    if let Some(own) = known.own {
        if live_version > own.number {
            return Err(Box::new(Decision::end(
                ChangePhase::Superseded,
                "Superseded",
                format!(
                    "version {live_version} went live after this change's version {}",
                    own.number
                ),
            )));
        }
        return Ok(Proposal::Promote {
            version: own.number,
            snapshot: own.snapshot.clone(),
        });
    }
    // Build on what the environment runs, not on a newer version waiting here.
    let mut snapshot = known.live.unwrap_or(known.latest.snapshot).clone();
    if let Some(data) = &spec.data {
        if live_version != base {
            return Err(Box::new(Decision::end(
                ChangePhase::Superseded,
                "Superseded",
                format!(
                    "proposed against version {base}, but version {live_version} was recorded since; propose again against the newest version"
                ),
            )));
        }
        snapshot.data = data.clone();
        return Ok(Proposal::New(snapshot));
    }
    if let Some(patch) = &spec.patch {
        merge_patch(&mut snapshot.data, patch);
        return Ok(Proposal::New(snapshot));
    }
    if let Some(split) = &spec.split {
        // The first step; the change controller records each later one as it goes.
        let first = split.steps.first().copied().unwrap_or(100);
        snapshot.data = split::at_share(&snapshot.data, split, first)
            .map_err(|invalid| Box::new(Decision::failed(invalid)))?;
        return Ok(Proposal::New(snapshot));
    }
    let Some(wanted) = spec.rollback_to.or(spec.version) else {
        return Ok(Proposal::New(snapshot));
    };
    if spec.version.is_some() {
        superseded_promotion(spec, wanted, known)?;
    }
    let Some(named) = known.named else {
        let field = if spec.version.is_some() {
            "spec.version"
        } else {
            "spec.rollbackTo"
        };
        return Err(Box::new(Decision::failed(Invalid {
            reason: "VersionNotFound",
            message: format!(
                "{field}: {} has no version {wanted} (the newest is {})",
                known.config_id, known.latest.number
            ),
        })));
    };
    Ok(if spec.version.is_some() {
        Proposal::Promote {
            version: named.number,
            snapshot: named.snapshot.clone(),
        }
    } else {
        Proposal::New(named.snapshot.clone())
    })
}

/// A promotion of spec version `wanted` that something newer already replaced.
fn superseded_promotion(
    spec: &ConfigChangeSpec,
    wanted: i64,
    known: &Known<'_>,
) -> Result<(), Box<Decision>> {
    if let Some(newer) = known.spec_latest.filter(|v| *v > wanted) {
        return Err(Box::new(Decision::end(
            ChangePhase::Superseded,
            "Superseded",
            format!("the ConfigEntry's spec has recorded version {newer} since version {wanted}"),
        )));
    }
    if known.applied.is_some_and(|v| v > wanted) {
        return Err(Box::new(Decision::end(
            ChangePhase::Superseded,
            "Superseded",
            format!(
                "{} already runs version {}, newer than version {wanted}",
                spec.environment,
                known.live_version()
            ),
        )));
    }
    Ok(())
}

/// Checks the proposed content of an environment against the entry's schema (as
/// compiled, with where it came from), and that it renders into the environment's
/// ConfigMap.
pub fn check_content(
    content: &Value,
    environment: &str,
    schema: Result<Option<(CompiledSchema, String)>, Invalid>,
    format: ConfigFormat,
) -> Result<String, Box<Decision>> {
    let schema = schema.map_err(|invalid| Box::new(Decision::failed(invalid)))?;
    if let Some((schema, origin)) = schema {
        let violations = schema.violations(content);
        if !violations.is_empty() {
            let errors: Vec<String> = violations.iter().map(ToString::to_string).collect();
            return Err(Box::new(Decision {
                validation_errors: errors.clone(),
                ..Decision::failed(Invalid {
                    reason: "SchemaViolation",
                    message: format!(
                        "the proposed content of {environment} violates {origin}: {}",
                        errors.join("; ")
                    ),
                })
            }));
        }
    }
    render(content, format).map_err(|error| {
        let flags = matches!(error, crate::core::render::RenderError::Flags(_));
        Box::new(Decision::failed(Invalid {
            reason: if flags {
                "InvalidFlags"
            } else {
                "RenderFailed"
            },
            message: format!("the proposed content of {environment} cannot be projected: {error}"),
        }))
    })?;
    Ok(format!(
        "the proposed content of {environment} satisfies the entry's schema"
    ))
}
