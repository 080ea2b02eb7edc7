//! The ConfigVersions an entry's history shows, from what the ledger recorded: the
//! newest few versions and every version live somewhere, each with where it is live
//! and the audit rows that belong to it. Pure: the reconcile reads, this decides.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::api::v1alpha1::{
    ANNOTATION_ENTRY, ANNOTATION_VERSION, AuditStep, ConfigEntry, ConfigVersion, ConfigVersionSpec,
    ConfigVersionStatus, LABEL_MANAGED_BY, MANAGED_BY, Time,
};
use crate::core::resolve::{checksum, sha256_hex};
use crate::store::{AppliedState, AuditEntry, Source, Version};

/// The environments a ConfigVersion is live in, comma-separated: what the cache of
/// ConfigVersions (metadata only) compares with an entry's status.
pub const ANNOTATION_LIVE_IN: &str = "config.summit.io/live-in";
/// The digest of a ConfigVersion's spec and status as the operator wrote them: what
/// the cache compares with what the operator would write now.
pub const ANNOTATION_DIGEST: &str = "config.summit.io/record-digest";

/// The object name of an entry's version: `<entry>-v<number>`, shortened with a hash
/// of the entry's name where that would be longer than a name may be.
pub fn object_name(entry: &str, version: i64) -> String {
    let suffix = format!("-v{version}");
    if entry.len() + suffix.len() <= 253 {
        return format!("{entry}{suffix}");
    }
    let hash = &sha256_hex(entry.as_bytes())[..10];
    format!("{}-{hash}{suffix}", &entry[..200])
}

/// What the ledger holds of one config id.
pub struct Recorded<'a> {
    pub versions: &'a [Version],
    pub applied: &'a [AppliedState],
    pub trail: &'a [AuditEntry],
}

/// The ConfigVersions `entry` should have: its `keep` newest versions and every one
/// live in an environment, oldest first.
pub fn history(entry: &ConfigEntry, recorded: &Recorded<'_>, keep: usize) -> Vec<ConfigVersion> {
    let mut live_in: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
    for applied in recorded.applied {
        live_in
            .entry(applied.version)
            .or_default()
            .insert(&applied.environment);
    }
    let newest: BTreeSet<i64> = recorded
        .versions
        .iter()
        .rev()
        .take(keep)
        .map(|v| v.version)
        .collect();
    recorded
        .versions
        .iter()
        .filter(|v| newest.contains(&v.version) || live_in.contains_key(&v.version))
        .map(|version| {
            let live = live_in.get(&version.version).cloned().unwrap_or_default();
            let audit = audit_of(version, recorded.trail);
            config_version(entry, version, live, audit)
        })
        .collect()
}

/// The changes (`namespace/name`) that made `version` or applied it.
fn changes_of(version: &Version, trail: &[AuditEntry]) -> BTreeSet<String> {
    let made = match &version.source {
        Source::Change { change } => Some(change.clone()),
        Source::Spec => None,
    };
    let applied = trail
        .iter()
        .filter(|e| e.row.version == Some(version.version) && event(e) == Some("applied"))
        .filter_map(|e| change(e).map(str::to_owned));
    made.into_iter().chain(applied).collect()
}

fn event(entry: &AuditEntry) -> Option<&str> {
    entry.row.changes.get("event").and_then(Value::as_str)
}

fn change(entry: &AuditEntry) -> Option<&str> {
    entry.row.changes.get("change").and_then(Value::as_str)
}

/// The rows of `version`: those recorded against it outside any change, and every row
/// of the changes that made or applied it (their requests and approvals are recorded
/// against the version they were proposed over).
fn audit_of(version: &Version, trail: &[AuditEntry]) -> Vec<AuditStep> {
    let changes = changes_of(version, trail);
    trail
        .iter()
        .filter(|e| match change(e) {
            Some(change) => changes.contains(change),
            None => e.row.version == Some(version.version),
        })
        .map(|e| AuditStep {
            time: Time(e.at),
            event: event(e).unwrap_or("note").to_owned(),
            actor: e.row.actor.clone(),
            environment: e
                .row
                .changes
                .get("environment")
                .and_then(Value::as_str)
                .map(str::to_owned),
            change: change(e).map(str::to_owned),
            message: (!e.row.message.is_empty()).then(|| e.row.message.clone()),
        })
        .collect()
}

fn config_version(
    entry: &ConfigEntry,
    version: &Version,
    live: BTreeSet<&str>,
    audit: Vec<AuditStep>,
) -> ConfigVersion {
    let snapshot = &version.snapshot;
    let spec = ConfigVersionSpec {
        config_id: version.config_id.clone(),
        config_entry: entry.name_any(),
        version: version.version,
        checksum: version.checksum.clone(),
        created_by: version.created_by.clone(),
        authors: version.authors.clone(),
        created_at: Time(version.created_at),
        message: version.message.clone(),
        change: match &version.source {
            Source::Change { change } => Some(change.clone()),
            Source::Spec => None,
        },
        data: (&snapshot.data).into(),
        overrides: json!(snapshot.overrides).into(),
        secrets: (!snapshot.secrets.is_null()).then(|| (&snapshot.secrets).into()),
    };
    let live_in = live.into_iter().collect::<Vec<_>>().join(",");
    let status = ConfigVersionStatus {
        live_in: (!live_in.is_empty()).then(|| live_in.clone()),
        audit,
    };
    let digest = checksum(&json!({"spec": spec, "status": status}));
    let namespace = entry.namespace().unwrap_or_default();
    let mut object = ConfigVersion::new(&object_name(&entry.name_any(), version.version), spec);
    object.metadata = ObjectMeta {
        namespace: Some(namespace.clone()),
        labels: Some(BTreeMap::from([(
            LABEL_MANAGED_BY.to_owned(),
            MANAGED_BY.to_owned(),
        )])),
        annotations: Some(BTreeMap::from([
            (
                ANNOTATION_ENTRY.to_owned(),
                format!("{namespace}/{}", entry.name_any()),
            ),
            (ANNOTATION_VERSION.to_owned(), version.version.to_string()),
            (ANNOTATION_LIVE_IN.to_owned(), live_in),
            (ANNOTATION_DIGEST.to_owned(), digest),
        ])),
        ..object.metadata
    };
    object.status = Some(status);
    object
}

/// The version numbers an entry's history can show, by its status: the `keep` newest
/// up to its latest, and every version live somewhere. Numbers run from 1 without
/// gaps, so these are all the ledger need be asked for.
pub fn wanted_numbers(entry: &ConfigEntry, keep: usize) -> Vec<i64> {
    let Some(status) = &entry.status else {
        return Vec::new();
    };
    let latest = status.latest_version.unwrap_or(0);
    let oldest = (latest - keep as i64 + 1).max(1);
    let live = status.environments.iter().filter_map(|e| e.version);
    let numbers: BTreeSet<i64> = (oldest..=latest).chain(live).collect();
    numbers.into_iter().collect()
}

/// Whether an entry's status says what the cached ConfigVersions say: a version for
/// its latest, each version live exactly where the status has it, and none that
/// retention (`keep`) would drop. When it does, nothing was recorded or applied since
/// the history was written, and the ledger need not be read. `cached`: (version
/// number, live-in annotation) of each.
pub fn up_to_date(entry: &ConfigEntry, cached: &[(i64, String)], keep: usize) -> bool {
    let Some(status) = &entry.status else {
        return cached.is_empty();
    };
    let mut live: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
    for environment in &status.environments {
        if let Some(version) = environment.version {
            live.entry(version).or_default().insert(&environment.name);
        }
    }
    let has = |number: i64| cached.iter().any(|(v, _)| *v == number);
    let wanted = wanted_numbers(entry, keep);
    status.latest_version.is_none_or(has)
        && cached.iter().all(|(version, _)| wanted.contains(version))
        && live.keys().all(|v| has(*v))
        && cached.iter().all(|(version, live_in)| {
            let want = live.get(version).cloned().unwrap_or_default();
            let have: BTreeSet<&str> = live_in.split(',').filter(|e| !e.is_empty()).collect();
            want == have
        })
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
