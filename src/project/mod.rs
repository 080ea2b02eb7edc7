//! Rendering an environment's applied version into ConfigMaps, and applying them with
//! server-side apply under the operator's field manager.

mod config_map;
mod render;
mod secret;

pub use config_map::{
    ANNOTATION_CHECKSUM, ANNOTATION_CONFIG_ID, ANNOTATION_ENTRY, ANNOTATION_VERSION,
    LABEL_ENVIRONMENT, LABEL_MANAGED_BY, MANAGED_BY, ProjectedConfigMap, desired_config_map,
    needs_apply,
};
pub use render::{CONFIG_MAP_LIMIT, RenderError, render};
pub use secret::{ANNOTATION_SECRETS_CHECKSUM, ProjectedSecret, desired_secret, key_checksums};
