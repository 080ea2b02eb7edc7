//! The reading commands: `list`, `get`, `versions`, `diff` and `audit`. Everything is
//! read through the Kubernetes API (ConfigEntries and the ConfigVersions the operator
//! writes), so the caller's RBAC applies exactly as it does to kubectl.

use std::io::IsTerminal;

use kube::{Api, Client, ResourceExt, api::ListParams};
use serde_json::{Value, json};

use super::client::{Error, Target, connect, request};
use super::output::{Format, print_data, print_table};
use crate::{
    api::v1alpha1::{AuditStep, CONDITION_READY, ConfigEntry, ConfigVersion, find_condition},
    core::{diff::changed_paths, resolve::Snapshot},
};

/// The ConfigEntry `name`, or an error saying it does not exist.
async fn entry(client: &Client, namespace: &str, name: &str) -> Result<ConfigEntry, Error> {
    let entries: Api<ConfigEntry> = Api::namespaced(client.clone(), namespace);
    entries
        .get_opt(name)
        .await
        .map_err(request(format!("read ConfigEntry {namespace}/{name}")))?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "ConfigEntry {namespace}/{name} does not exist; `summit-config list -n {namespace}` lists them"
            ))
        })
}

/// The ConfigVersions of entry `name`, oldest first.
async fn versions_of(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<ConfigVersion>, Error> {
    let versions: Api<ConfigVersion> = Api::namespaced(client.clone(), namespace);
    let selected = ListParams::default().fields(&format!("spec.configEntry={name}"));
    let mut list = versions
        .list(&selected)
        .await
        .map_err(request(format!("list the versions of {namespace}/{name}")))?
        .items;
    if list.is_empty() {
        // Either no such entry, or nothing recorded yet: say which.
        entry(client, namespace, name).await?;
    }
    list.sort_by_key(|v| v.spec.version);
    Ok(list)
}

fn live_in(version: &ConfigVersion) -> String {
    let live = version.status.as_ref().and_then(|s| s.live_in.clone());
    live.unwrap_or_default()
}

/// `summit-config list`: the ConfigEntries of a namespace and where each stands.
pub async fn list(target: &Target, format: Format) -> Result<(), Error> {
    let (client, namespace) = connect(target).await?;
    let entries: Api<ConfigEntry> = Api::namespaced(client, &namespace);
    let list = entries
        .list(&ListParams::default())
        .await
        .map_err(request(format!("list ConfigEntries in {namespace}")))?;
    if print_data(format, &list.items) {
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .items
        .iter()
        .map(|e| {
            let status = e.status.clone().unwrap_or_default();
            let ready = find_condition(&status.conditions, CONDITION_READY)
                .map_or_else(|| "-".into(), |c| c.status.clone());
            vec![
                e.name_any(),
                e.spec.config_id.clone(),
                status
                    .latest_version
                    .map_or_else(|| "-".into(), |v| v.to_string()),
                ready,
                status.summary.unwrap_or_default(),
            ]
        })
        .collect();
    print_table(&["NAME", "CONFIG ID", "LATEST", "READY", "SUMMARY"], &rows);
    Ok(())
}

/// `summit-config get`: an entry's environments, or the content live in one.
pub async fn get(
    target: &Target,
    name: &str,
    environment: Option<&str>,
    format: Format,
) -> Result<(), Error> {
    let (client, namespace) = connect(target).await?;
    let found = entry(&client, &namespace, name).await?;
    let status = found.status.clone().unwrap_or_default();
    let Some(environment) = environment else {
        if print_data(format, &found) {
            return Ok(());
        }
        let rows: Vec<Vec<String>> = status
            .environments
            .iter()
            .map(|e| {
                vec![
                    e.name.clone(),
                    e.version.map_or_else(|| "-".into(), |v| v.to_string()),
                    e.phase.map_or_else(|| "-".into(), |p| format!("{p:?}")),
                    e.pending_version
                        .map_or_else(|| "-".into(), |v| v.to_string()),
                ]
            })
            .collect();
        print_table(&["ENVIRONMENT", "VERSION", "PHASE", "PENDING"], &rows);
        return Ok(());
    };
    let live = status.environments.iter().find(|e| e.name == environment);
    let Some(number) = live.and_then(|e| e.version) else {
        return Err(Error::NotFound(format!(
            "nothing of {namespace}/{name} is live in {environment}; `summit-config get {name}` lists its environments"
        )));
    };
    let versions = versions_of(&client, &namespace, name).await?;
    let version = pick(&versions, number, &namespace, name)?;
    let content = content(version, Some(environment));
    if !print_data(format, &content) {
        println!("{}", pretty(&content));
    }
    Ok(())
}

/// `summit-config versions`: an entry's recorded versions, newest last.
pub async fn versions(target: &Target, name: &str, format: Format) -> Result<(), Error> {
    let (client, namespace) = connect(target).await?;
    let versions = versions_of(&client, &namespace, name).await?;
    if print_data(format, &versions) {
        return Ok(());
    }
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            vec![
                v.spec.version.to_string(),
                live_in(v),
                v.spec.created_by.clone(),
                v.spec.created_at.0.to_string(),
                v.spec.message.clone(),
            ]
        })
        .collect();
    print_table(&["VERSION", "LIVE", "AUTHOR", "CREATED", "MESSAGE"], &rows);
    Ok(())
}

/// Version `number` among `versions`, or an error naming the ones there are.
fn pick<'a>(
    versions: &'a [ConfigVersion],
    number: i64,
    namespace: &str,
    name: &str,
) -> Result<&'a ConfigVersion, Error> {
    versions
        .iter()
        .find(|v| v.spec.version == number)
        .ok_or_else(|| {
            let kept: Vec<String> = versions.iter().map(|v| v.spec.version.to_string()).collect();
            Error::NotFound(format!(
                "{namespace}/{name} has no version {number} in its history (it has {}); `summit-config versions {name}` lists them",
                if kept.is_empty() { "none".to_owned() } else { kept.join(", ") }
            ))
        })
}

/// What a version holds: for one environment, its resolved content; otherwise the base
/// data and every environment's overrides.
fn content(version: &ConfigVersion, environment: Option<&str>) -> Value {
    let data = version.spec.data.value();
    let overrides = version.spec.overrides.value();
    match environment {
        Some(environment) => {
            let snapshot = Snapshot {
                data,
                overrides: serde_json::from_value(overrides).unwrap_or_default(),
                secrets: Value::Null,
            };
            snapshot.resolve(environment).unwrap_or(Value::Null)
        }
        None => json!({"data": data, "overrides": overrides}),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// `summit-config diff`: what changed between two versions, or between a version and
/// what is live (in `--env`, or the newest version without it).
pub async fn diff(
    target: &Target,
    name: &str,
    (from, to): (i64, Option<i64>),
    environment: Option<&str>,
    format: Format,
) -> Result<(), Error> {
    let (client, namespace) = connect(target).await?;
    let versions = versions_of(&client, &namespace, name).await?;
    let to = match (to, environment) {
        (Some(to), _) => to,
        (None, Some(environment)) => {
            let live = versions
                .iter()
                .find(|v| live_in(v).split(',').any(|e| e == environment));
            live.map(|v| v.spec.version).ok_or_else(|| {
                Error::NotFound(format!(
                    "nothing of {namespace}/{name} is live in {environment}"
                ))
            })?
        }
        (None, None) => versions.last().map_or(0, |v| v.spec.version),
    };
    let (old, new) = (
        pick(&versions, from, &namespace, name)?,
        pick(&versions, to, &namespace, name)?,
    );
    let (old, new) = (content(old, environment), content(new, environment));
    let changed = changed_paths(&old, &new);
    let shown = json!({"from": from, "to": to, "environment": environment, "changed": changed});
    if print_data(format, &shown) {
        return Ok(());
    }
    if changed.is_empty() {
        println!("versions {from} and {to} hold the same content");
        return Ok(());
    }
    println!("changed: {}", changed.join(", "));
    let place = environment.map_or_else(String::new, |e| format!(" ({e})"));
    let (old_text, new_text) = (pretty(&old) + "\n", pretty(&new) + "\n");
    let unified = similar::TextDiff::from_lines(&old_text, &new_text)
        .unified_diff()
        .header(
            &format!("{name} v{from}{place}"),
            &format!("{name} v{to}{place}"),
        )
        .to_string();
    let colour = std::io::stdout().is_terminal();
    for line in unified.lines() {
        let code = match line.chars().next() {
            _ if !colour => None,
            Some('-') if !line.starts_with("---") => Some("31"),
            Some('+') if !line.starts_with("+++") => Some("32"),
            Some('@') => Some("36"),
            _ => None,
        };
        match code {
            Some(code) => println!("\x1b[{code}m{line}\x1b[0m"),
            None => println!("{line}"),
        }
    }
    Ok(())
}

/// `summit-config audit`: who did what to an entry's versions, oldest first.
pub async fn audit(
    target: &Target,
    name: &str,
    version: Option<i64>,
    format: Format,
) -> Result<(), Error> {
    let (client, namespace) = connect(target).await?;
    let versions = versions_of(&client, &namespace, name).await?;
    let chosen: Vec<&ConfigVersion> = match version {
        Some(number) => vec![pick(&versions, number, &namespace, name)?],
        None => versions.iter().collect(),
    };
    let mut steps: Vec<(i64, &AuditStep)> = chosen
        .iter()
        .flat_map(|v| {
            let steps = v.status.iter().flat_map(|s| s.audit.iter());
            steps.map(|step| (v.spec.version, step))
        })
        .collect();
    steps.sort_by_key(|(number, step)| (step.time.0, *number));
    if format != Format::Table {
        let rows: Vec<Value> = steps
            .iter()
            .map(|(number, step)| json!({"version": number, "step": step}))
            .collect();
        print_data(format, &rows);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|(number, step)| {
            vec![
                step.time.0.to_string(),
                number.to_string(),
                step.event.clone(),
                step.actor.clone(),
                step.environment.clone().unwrap_or_else(|| "-".into()),
                step.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "TIME",
            "VERSION",
            "EVENT",
            "ACTOR",
            "ENVIRONMENT",
            "MESSAGE",
        ],
        &rows,
    );
    Ok(())
}
