//! `schema validate` (offline, on files, by the operator's own rules) and `schema
//! register` (a JSON Schema into a labelled ConfigMap that entries name in
//! `schemaRef`).

use std::{collections::BTreeMap, path::PathBuf};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use serde_json::Value;

use super::changes::read_document;
use super::client::{Error, Target, connect, request};
use crate::{
    api::v1alpha1::{ConfigEntry, FIELD_MANAGER, LABEL_SCHEMA},
    core::{
        entry::{
            SchemaSource,
            validate::{Refusal, renderable, validate},
        },
        resolve::CompiledSchema,
    },
};

/// A JSON Schema, compiled, or why it is not one.
fn compile(path: &PathBuf) -> Result<CompiledSchema, Error> {
    let schema = read_document(path)?;
    CompiledSchema::compile(&schema)
        .map_err(|error| Error::Invalid(format!("{}: not a JSON Schema: {error}", path.display())))
}

/// Checks one file: a ConfigEntry (its schema, inline or `--schema` for a `schemaRef`,
/// against every environment's resolved content, as the operator checks it), a JSON
/// Schema on its own, or a data document against `--schema`.
fn check(path: &PathBuf, schema: Option<&PathBuf>) -> Result<String, Error> {
    let shown = path.display();
    let document = read_document(path)?;
    if document.get("kind").and_then(Value::as_str) == Some("ConfigEntry") {
        let entry: ConfigEntry = serde_json::from_value(document).map_err(|error| {
            Error::Invalid(format!("{shown}: not a valid ConfigEntry: {error}"))
        })?;
        let source = match (&entry.spec.schema_ref, schema) {
            (None, _) => SchemaSource::Inline(entry.spec.schema.as_ref().map(|s| s.value())),
            (Some(reference), Some(schema)) => SchemaSource::Referenced {
                name: reference.name.clone(),
                key: reference.key.clone(),
                text: Some(
                    std::fs::read_to_string(schema).map_err(|source| Error::Read {
                        path: schema.display().to_string(),
                        source,
                    })?,
                ),
            },
            (Some(reference), None) => {
                return Err(Error::Invalid(format!(
                    "{shown}: its schema is in ConfigMap {} (spec.schemaRef); pass that schema with --schema FILE",
                    reference.name
                )));
            }
        };
        let refused = |refusal: Refusal| {
            let invalid = refusal.invalid;
            Error::Invalid(format!("{shown}: {}: {}", invalid.reason, invalid.message))
        };
        let message = validate(&entry.spec, source).map_err(refused)?;
        renderable(&entry.spec).map_err(refused)?;
        return Ok(message);
    }
    let Some(schema) = schema else {
        compile(path)?;
        return Ok("a valid JSON Schema".into());
    };
    let violations = compile(schema)?.violations(&document);
    if violations.is_empty() {
        return Ok(format!("satisfies {}", schema.display()));
    }
    let listed: Vec<String> = violations.iter().map(ToString::to_string).collect();
    Err(Error::Invalid(format!("{shown}: {}", listed.join("; "))))
}

/// `schema validate`: every file checked; one line per file, and the first failure
/// is the command's.
pub fn validate_files(files: &[PathBuf], schema: Option<&PathBuf>) -> Result<(), Error> {
    let mut failed = None;
    for path in files {
        match check(path, schema) {
            Ok(verdict) => println!("{}: {verdict}", path.display()),
            Err(error) if failed.is_none() => failed = Some(error),
            Err(error) => eprintln!("summit-config: {error}"),
        }
    }
    failed.map_or(Ok(()), Err)
}

/// `schema register`: the schema in ConfigMap `name` (key `key`), labelled so that the
/// operator watches it; refused before anything is written if it is not a JSON Schema.
pub async fn register(target: &Target, name: &str, file: &PathBuf, key: &str) -> Result<(), Error> {
    compile(file)?;
    let text = std::fs::read_to_string(file).map_err(|source| Error::Read {
        path: file.display().to_string(),
        source,
    })?;
    let (client, namespace) = connect(target).await?;
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                LABEL_SCHEMA.to_owned(),
                "true".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(key.to_owned(), text)])),
        ..ConfigMap::default()
    };
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    api.patch(
        name,
        &PatchParams::apply(&format!("{FIELD_MANAGER}-cli")),
        &Patch::Apply(&config_map),
    )
    .await
    .map_err(request(format!(
        "register schema ConfigMap {namespace}/{name}"
    )))?;
    println!("configmap/{name} holds the schema under {key:?}; name it in spec.schemaRef");
    Ok(())
}
