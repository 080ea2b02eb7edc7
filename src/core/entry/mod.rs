//! ConfigEntry decisions: whether an entry validates, where each environment goes and
//! what it holds, who wrote it, what it proposes, and the status it reports.

pub mod authors;
pub mod plan;
pub mod proposal;
pub mod status;
pub mod validate;

pub use plan::{Plan, config_map_target, plan, references_secret, secret_target, target_allowed};
pub use validate::{Refusal, SchemaSource};
