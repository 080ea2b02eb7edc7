//! What of an object wakes its controller: a hash of it, compared with the one its
//! last wake had. An object whose hash did not change since is not reconciled again.

use kube::ResourceExt;

use crate::api::v1alpha1::{
    ANNOTATION_CHECK, ANNOTATION_SPEC_AUTHORS, ConfigEntry, DriftCheck, FINALIZER_CLEANUP,
};

/// What of an object wakes its controller: a hash of it, compared with the one its
/// last wake had.
pub type Wakes<K> = fn(&K) -> Option<u64>;

/// Hashes `parts` for a [`Wakes`], the same way on every thread.
fn hash_of(parts: impl std::hash::Hash) -> Option<u64> {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    Some(BuildHasherDefault::<DefaultHasher>::default().hash_one(parts))
}

/// An entry is reconciled again when someone writes it, never because it wrote its
/// own status, added its finalizer or emptied its list of spec writers once a version
/// held them: at 10,000 entries each such pass would add a cold start's worth of
/// reads. (The list only grows with a spec write, which changes the generation.)
pub fn entry_wakes(entry: &ConfigEntry) -> Option<u64> {
    let meta = &entry.metadata;
    let annotations = meta.annotations.iter().flatten();
    let annotations: Vec<_> = annotations
        .filter(|(key, _)| *key != ANNOTATION_SPEC_AUTHORS)
        .collect();
    // Its own finalizer is the operator's to add, with its first write of the entry.
    let finalizers = meta.finalizers.iter().flatten();
    let finalizers: Vec<_> = finalizers.filter(|f| *f != FINALIZER_CLEANUP).collect();
    hash_of((
        meta.generation,
        &meta.labels,
        annotations,
        finalizers,
        meta.deletion_timestamp.as_ref().map(|t| t.0),
    ))
}

/// A DriftCheck runs on its interval, on a spec change, or when asked (the check
/// annotation), and never because it wrote its own status: that would cost every
/// check a second pass.
pub fn check_wakes(check: &DriftCheck) -> Option<u64> {
    hash_of((
        check.metadata.generation,
        check.annotations().get(ANNOTATION_CHECK),
    ))
}
