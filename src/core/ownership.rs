//! Who may write what: a config id belongs to one ConfigEntry, and an object projected
//! for one (config id, environment) belongs to it alone.

use std::fmt;

use kube::ResourceExt;

use serde::{Deserialize, Serialize};

use crate::api::v1alpha1::ConfigEntry;

/// The ConfigEntry claiming (or holding) a config id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claimant {
    pub namespace: String,
    pub name: String,
    /// The entry's uid: an entry deleted and created again under its name has another.
    pub uid: String,
}

impl Claimant {
    /// The entry, as the holder of its config id.
    pub fn of(entry: &ConfigEntry) -> Self {
        Self {
            namespace: entry.namespace().unwrap_or_default(),
            name: entry.name_any(),
            uid: entry.uid().unwrap_or_default(),
        }
    }

    /// `namespace/name`, as versions and projected objects name their entry.
    pub fn entry(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl fmt::Display for Claimant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a claim on a config id does, given who holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimVerdict {
    /// Nobody holds it: the claimant takes it.
    Take,
    /// The claimant holds it already.
    Holds,
    /// The claimant's own entry, deleted and created again under its name (and so in
    /// its namespace): the claim moves to the new uid. What the old entry had approved
    /// stays guarded by the floors recorded for it.
    Renew,
    /// Another entry holds it.
    Refuse(ClaimRefused),
}

/// A config id held by another entry. Says which only within the holder's namespace:
/// another tenant learns nothing about who holds it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ClaimRefused {
    pub config_id: String,
    pub message: String,
}

pub fn claim(config_id: &str, holder: Option<&Claimant>, claimant: &Claimant) -> ClaimVerdict {
    let Some(holder) = holder else {
        return ClaimVerdict::Take;
    };
    if holder.namespace == claimant.namespace && holder.name == claimant.name {
        return if holder.uid == claimant.uid {
            ClaimVerdict::Holds
        } else {
            ClaimVerdict::Renew
        };
    }
    let message = if holder.namespace == claimant.namespace {
        format!(
            "configId {config_id:?} belongs to ConfigEntry {:?} in this namespace; give this entry another configId",
            holder.name
        )
    } else {
        format!(
            "configId {config_id:?} belongs to a ConfigEntry in another namespace; give this entry another configId"
        )
    };
    ClaimVerdict::Refuse(ClaimRefused {
        config_id: config_id.to_owned(),
        message,
    })
}

/// Checks that `config_id` starts with the prefix the operator reserves for
/// `namespace` (`prefix` with `{namespace}` replaced); an empty prefix allows any.
pub fn check_prefix(config_id: &str, namespace: &str, prefix: &str) -> Result<(), Refused> {
    let wanted = prefix.replace("{namespace}", namespace);
    if config_id.starts_with(&wanted) {
        return Ok(());
    }
    Err(Refused::OutsidePrefix {
        config_id: config_id.to_owned(),
        prefix: wanted,
        namespace: namespace.to_owned(),
    })
}

/// Why an entry may not write where it asks to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "configId {config_id:?} must start with {prefix:?}: the operator reserves config ids under that prefix for namespace {namespace}"
    )]
    OutsidePrefix {
        config_id: String,
        prefix: String,
        namespace: String,
    },

    #[error(
        "{target} is bound to environment {bound:?}, whose approved content it holds; environment {wanted:?} cannot project into it"
    )]
    BoundToEnvironment {
        target: Target,
        bound: String,
        wanted: String,
    },

    #[error(
        "{target} is bound to another configuration's environment; environment {wanted:?} cannot project into it"
    )]
    BoundToConfiguration { target: Target, wanted: String },
}

/// A projection target: a ConfigMap or Secret.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Target {
    pub kind: TargetKind,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TargetKind {
    ConfigMap,
    Secret,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::ConfigMap => "ConfigMap",
            TargetKind::Secret => "Secret",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// The (config id, environment) an object is projected for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Projection {
    pub config_id: String,
    pub environment: String,
}

/// Whether environment `wanted` may write `target`, given the environment it is bound
/// to, if any: an object bound to one (config id, environment) is written by no other.
pub fn may_write(
    target: &Target,
    bound: Option<&Projection>,
    wanted: &Projection,
) -> Result<(), Refused> {
    let (target, wanted_environment) = (target.clone(), wanted.environment.clone());
    match bound {
        Some(bound) if bound == wanted => Ok(()),
        Some(bound) if bound.config_id == wanted.config_id => Err(Refused::BoundToEnvironment {
            target,
            bound: bound.environment.clone(),
            wanted: wanted_environment,
        }),
        Some(_) => Err(Refused::BoundToConfiguration {
            target,
            wanted: wanted_environment,
        }),
        None => Ok(()),
    }
}

/// The targets that two environments of one spec name alike: each object is projected
/// for one environment only.
pub fn shared_targets(targets: &[(String, Target)]) -> Vec<(&str, &str, &Target)> {
    let mut shared = Vec::new();
    for (i, (first, target)) in targets.iter().enumerate() {
        for (second, other) in &targets[i + 1..] {
            if target == other && first != second {
                shared.push((first.as_str(), second.as_str(), target));
            }
        }
    }
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimant(namespace: &str, name: &str, uid: &str) -> Claimant {
        Claimant {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    #[test]
    fn a_config_id_is_taken_once_and_renewed_only_by_its_own_entry() {
        let a = claimant("team-a", "payments", "1");
        assert_eq!(claim("x", None, &a), ClaimVerdict::Take);
        assert_eq!(claim("x", Some(&a), &a), ClaimVerdict::Holds);
        let recreated = claimant("team-a", "payments", "2");
        assert_eq!(claim("x", Some(&a), &recreated), ClaimVerdict::Renew);
        let ClaimVerdict::Refuse(other_namespace) =
            claim("x", Some(&a), &claimant("team-b", "payments", "3"))
        else {
            panic!("another namespace took the config id");
        };
        assert!(
            !other_namespace.message.contains("team-a"),
            "{}",
            other_namespace.message
        );
        assert!(
            !other_namespace.message.contains("payments\""),
            "{}",
            other_namespace.message
        );
        let ClaimVerdict::Refuse(same_namespace) =
            claim("x", Some(&a), &claimant("team-a", "copy", "4"))
        else {
            panic!("another entry took the config id");
        };
        assert!(same_namespace.message.contains("\"payments\""));
    }

    #[test]
    fn prefixes_are_per_namespace() {
        assert!(check_prefix("team-a/payments", "team-a", "{namespace}/").is_ok());
        assert!(check_prefix("payments", "team-a", "").is_ok());
        let refused = check_prefix("team-b/payments", "team-a", "{namespace}/").unwrap_err();
        assert!(
            refused.to_string().contains("must start with \"team-a/\""),
            "{refused}"
        );
    }

    fn target(name: &str) -> Target {
        Target {
            kind: TargetKind::ConfigMap,
            namespace: "team".into(),
            name: name.into(),
        }
    }

    fn projection(environment: &str) -> Projection {
        Projection {
            config_id: "x".into(),
            environment: environment.into(),
        }
    }

    #[test]
    fn an_object_bound_to_one_environment_refuses_the_others() {
        let production = projection("production");
        let t = target("payments-production");
        assert!(may_write(&t, Some(&production), &production).is_ok());
        assert!(may_write(&t, None, &projection("development")).is_ok());
        let refused = may_write(&t, Some(&production), &projection("development")).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "ConfigMap team/payments-production is bound to environment \"production\", whose approved content it holds; environment \"development\" cannot project into it"
        );
    }

    #[test]
    fn two_environments_naming_one_object_are_found() {
        let targets = vec![
            ("development".to_owned(), target("shared")),
            ("production".to_owned(), target("shared")),
            ("staging".to_owned(), target("staging")),
        ];
        let shared = shared_targets(&targets);
        assert_eq!(shared.len(), 1);
        assert_eq!((shared[0].0, shared[0].1), ("development", "production"));
    }
}
