//! Who wrote an entry's spec, as the apiserver authenticated them: the annotations the
//! chart's admission policies stamp from `request.userInfo` and refuse from clients.
//! Never a field manager, which any client names as it likes.

use kube::ResourceExt;

use crate::{
    api::v1alpha1::{ANNOTATION_SPEC_AUTHOR, ANNOTATION_SPEC_AUTHORS, ConfigEntry, Time},
    core::vouching::Vouching,
};

/// The author of a spec written without the chart's admission policies in place.
pub const UNKNOWN_AUTHOR: &str = "unknown (no spec-author annotation)";

/// Who last wrote the spec.
pub fn spec_author(entry: &ConfigEntry) -> String {
    entry
        .annotations()
        .get(ANNOTATION_SPEC_AUTHOR)
        .filter(|author| !author.is_empty())
        .cloned()
        .unwrap_or_else(|| UNKNOWN_AUTHOR.to_owned())
}

/// Everyone whose writes the spec holds since the operator last recorded it; empty when
/// nothing proves it: no list, the policies missing now, or the spec last written
/// before they were all in place (anyone could have set the list then).
pub fn spec_authors(entry: &ConfigEntry, vouching: &Vouching) -> Vec<String> {
    if !vouching.covers(last_written(entry).as_ref()) {
        return Vec::new();
    }
    listed(entry)
}

/// Whether a version whose authors are `recorded` holds everyone the entry lists, so
/// that the list can be emptied for the next version's writers.
pub fn all_recorded(entry: &ConfigEntry, recorded: &[String]) -> bool {
    let listed = listed(entry);
    !listed.is_empty() && listed.iter().all(|name| recorded.contains(name))
}

/// The names the spec-authors annotation lists, as they stand.
fn listed(entry: &ConfigEntry) -> Vec<String> {
    entry
        .annotations()
        .get(ANNOTATION_SPEC_AUTHORS)
        .map(|list| {
            list.lines()
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// When the object (not its status) was last written.
fn last_written(entry: &ConfigEntry) -> Option<Time> {
    entry
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| f.subresource.as_deref().unwrap_or_default().is_empty())
        .filter_map(|f| f.time.clone())
        .max_by_key(|t| t.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn entry(annotations: &str, written: &[(i64, Option<&str>)]) -> ConfigEntry {
        let fields: Vec<String> = written
            .iter()
            .map(|(second, subresource)| {
                let time = Timestamp::from_second(*second).unwrap();
                match subresource {
                    Some(sub) => format!("{{manager: m, time: '{time}', subresource: {sub}}}"),
                    None => format!("{{manager: m, time: '{time}'}}"),
                }
            })
            .collect();
        serde_yaml_ng::from_str(&format!(
            "metadata: {{name: e, namespace: n, annotations: {annotations}, managedFields: [{}]}}\nspec: {{configId: n/e, data: {{}}, environments: [{{name: development}}]}}",
            fields.join(", ")
        ))
        .unwrap()
    }

    fn at(second: i64) -> Vouching {
        Vouching::Since(Some(Time(Timestamp::from_second(second).unwrap())))
    }

    const STAMPED: &str = r#"{"config.summit.io/spec-author": alice, "config.summit.io/spec-authors": "alice\nbob\n"}"#;

    #[test]
    fn the_author_is_the_stamped_annotation_or_unknown() {
        assert_eq!(spec_author(&entry(STAMPED, &[])), "alice");
        assert_eq!(spec_author(&entry("{}", &[])), UNKNOWN_AUTHOR);
    }

    #[test]
    fn authors_count_only_when_written_under_the_policies() {
        let written_at_20 = entry(STAMPED, &[(20, None), (30, Some("status"))]);
        assert_eq!(spec_authors(&written_at_20, &at(10)), ["alice", "bob"]);
        // A status write after the policies proves nothing of the spec.
        assert!(spec_authors(&written_at_20, &at(25)).is_empty());
        assert!(spec_authors(&written_at_20, &Vouching::Missing("gone".into())).is_empty());
        assert_eq!(
            spec_authors(&written_at_20, &Vouching::NotRequired),
            ["alice", "bob"]
        );
    }

    #[test]
    fn the_list_is_emptied_only_once_a_version_holds_every_name() {
        let entry = entry(STAMPED, &[]);
        assert!(!all_recorded(&entry, &["alice".to_owned()]));
        assert!(all_recorded(
            &entry,
            &["alice".to_owned(), "bob".to_owned()]
        ));
        assert!(!all_recorded(&super::tests::entry("{}", &[]), &[]));
    }
}
