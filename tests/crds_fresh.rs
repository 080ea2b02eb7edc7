//! The committed CRDs in crds/ are exactly what the Rust types generate.

use std::{collections::BTreeSet, fs, path::Path};

use summit_config::api;

#[test]
fn committed_crds_match_the_rust_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut expected_files = BTreeSet::new();
    for crd in api::crds() {
        let file = api::crd_file_name(&crd);
        let generated = api::crd_yaml(&crd).expect("render CRD");
        let committed = fs::read_to_string(dir.join(&file)).unwrap_or_default();
        assert!(
            committed == generated,
            "crds/{file} is stale or missing: run `make crds` and commit the result"
        );
        expected_files.insert(file);
    }
    let present: BTreeSet<String> = fs::read_dir(&dir)
        .expect("crds/ exists")
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        present, expected_files,
        "crds/ holds files no type generates"
    );
}

#[test]
fn no_schema_carries_a_default() {
    for crd in api::crds() {
        let yaml = api::crd_yaml(&crd).expect("render CRD");
        assert!(
            !yaml.contains("default:"),
            "{} has a `default:`; GitOps tools would show it as permanent drift",
            api::crd_file_name(&crd)
        );
    }
}

#[test]
fn every_field_is_described() {
    fn undescribed(schema: &serde_json::Value, path: &str, found: &mut Vec<String>) {
        if let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, property) in properties {
                let here = format!("{path}.{name}");
                let top = matches!(here.as_str(), ".apiVersion" | ".kind" | ".metadata");
                if property.get("description").is_none() && !top {
                    found.push(here.clone());
                }
                undescribed(property, &here, found);
            }
        }
        if let Some(items) = schema.get("items") {
            undescribed(items, &format!("{path}[]"), found);
        }
    }
    for crd in api::crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema as JSON");
        let mut found = Vec::new();
        undescribed(&schema["openAPIV3Schema"], "", &mut found);
        // Condition's fields come described from k8s-openapi.
        found.retain(|path| !path.contains(".conditions[]"));
        assert!(
            found.is_empty(),
            "{} fields lack a description: {found:?}",
            crd.spec.names.kind
        );
    }
}
