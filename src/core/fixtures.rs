//! Objects for the core's unit tests, read from YAML.

use serde::de::DeserializeOwned;

use crate::api::v1alpha1::ConfigEntry;

/// A spec whose production environment raises the pool far above the base.
pub const PAYMENTS_SPEC: &str = r#"
configId: payments/database
data: {pool: {max: 10}}
environments:
  - name: development
  - name: production
    overrides: {pool: {max: 500}}
"#;

/// `text`, read as a `T`: a fixture that does not parse fails its test here.
pub fn yaml<T: DeserializeOwned>(text: &str) -> T {
    serde_yaml_ng::from_str(text)
        .unwrap_or_else(|error| panic!("the fixture does not parse: {error}\n{text}"))
}

/// The ConfigEntry `payments` in `namespace`, with `spec` (YAML: a flow mapping, or
/// the lines of a block).
pub fn entry_in(namespace: &str, spec: &str) -> ConfigEntry {
    let spec: Vec<String> = spec
        .trim()
        .lines()
        .map(|line| format!("  {line}"))
        .collect();
    yaml(&format!(
        "apiVersion: config.summit.io/v1alpha1\nkind: ConfigEntry\nmetadata: {{name: payments, namespace: {namespace}}}\nspec:\n{}\n",
        spec.join("\n")
    ))
}
