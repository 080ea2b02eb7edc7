//! `config.summit.io/v1alpha1`: ConfigEntry, ConfigChange, SecretRotationPolicy and
//! DriftCheck, the ConfigVersions the operator records, with the status and condition types they share.

mod common;
mod config_change;
mod config_entry;
mod config_version;
mod drift_check;
pub mod free_form;
mod names;
mod secret_rotation_policy;

pub use common::*;
pub use config_change::*;
pub use config_entry::*;
pub use config_version::*;
pub use drift_check::*;
pub use names::*;
pub use secret_rotation_policy::*;
