//! Values kept in memory for long, as their JSON: what the stores remember, and the
//! projected ConfigMaps the entry controller caches. Parsed, a version's content is a
//! tree of `serde_json` maps, and every map, however small, holds a B-tree node of
//! several hundred bytes; a Kubernetes object's metadata is much the same. As JSON
//! text they take a fraction of that. At 10,000 entries the difference is most of the
//! operator's memory, and unpacking a value costs microseconds on the reconcile that
//! reads one.

use std::marker::PhantomData;

use serde::{Serialize, de::DeserializeOwned};

/// A `T` kept as its compact JSON.
pub(crate) struct Packed<T> {
    json: Box<[u8]>,
    kind: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> Packed<T> {
    pub(crate) fn new(value: &T) -> Self {
        let json = serde_json::to_vec(value).expect("a remembered value serializes");
        Self {
            json: json.into_boxed_slice(),
            kind: PhantomData,
        }
    }

    pub(crate) fn get(&self) -> T {
        serde_json::from_slice(&self.json).expect("a packed value reads back")
    }
}

impl<T> Clone for Packed<T> {
    fn clone(&self) -> Self {
        Self {
            json: self.json.clone(),
            kind: PhantomData,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::store::{Snapshot, Source, Version};

    #[test]
    fn a_version_reads_back_exactly_as_packed() {
        let version = Version {
            config_id: "team-a/payments".to_owned(),
            version: 7,
            owner: "team-a/payments".to_owned(),
            snapshot: Snapshot {
                data: json!({"pool": {"max": 10, "ratio": 0.1}, "names": ["a", "b"]}),
                overrides: BTreeMap::from([("prod".to_owned(), json!({"pool": {"max": 50}}))]),
                secrets: serde_json::Value::Null,
            },
            checksum: "sha256:00".to_owned(),
            source: Source::Change {
                change: "raise-pool".to_owned(),
            },
            created_by: "alice".to_owned(),
            authors: vec!["alice".to_owned()],
            created_at: "2026-11-30T17:46:09.123456789Z".parse().expect("timestamp"),
            message: "raise the pool".to_owned(),
        };
        assert_eq!(Packed::new(&version).get(), version);
    }
}
