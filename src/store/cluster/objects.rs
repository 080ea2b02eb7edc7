//! The ledger's objects: ConfigMaps in the operator's namespace, one JSON record
//! each. Versions and audit pages are immutable once written; books and bindings
//! change only by a replace guarded by their resourceVersion.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{ListParams, ObjectMeta, PostParams},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::core::resolve::sha256_hex;
use crate::store::{Error, Result};

/// What a ledger object is: the label `config.summit.io/ledger` says.
pub const LABEL_LEDGER: &str = "config.summit.io/ledger";
/// Which config id (or target) an object belongs to, as a digest.
const LABEL_KEY: &str = "config.summit.io/ledger-key";
/// The config id or target, readable.
const ANNOTATION_OF: &str = "config.summit.io/ledger-of";
/// The data key holding the record.
const RECORD: &str = "record.json";

/// The kinds of ledger object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Book,
    Version,
    Page,
    Binding,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Book => "book",
            Kind::Version => "version",
            Kind::Page => "audit-page",
            Kind::Binding => "binding",
        }
    }

    fn immutable(self) -> bool {
        matches!(self, Kind::Version | Kind::Page)
    }
}

/// Where an object lives: its name, its kind, and what it belongs to.
#[derive(Clone, Debug)]
pub struct Place {
    pub name: String,
    kind: Kind,
    key: String,
    of: String,
}

impl Place {
    /// A config id's book, one of its versions, or one of its audit pages.
    pub fn of_config(config_id: &str, kind: Kind, number: i64) -> Self {
        let key = key(config_id);
        let name = match kind {
            Kind::Version => format!("summit-ledger-{key}-v{number}"),
            Kind::Page => format!("summit-ledger-{key}-a{number}"),
            Kind::Book | Kind::Binding => format!("summit-ledger-{key}"),
        };
        Self {
            name,
            kind,
            key,
            of: config_id.to_owned(),
        }
    }

    /// A projection target's binding.
    pub fn binding(target: &str) -> Self {
        let key = key(target);
        Self {
            name: format!("summit-binding-{key}"),
            kind: Kind::Binding,
            key,
            of: target.to_owned(),
        }
    }
}

/// The first 20 hex digits of the SHA-256 of a config id or target: names are short
/// and valid whatever the id holds, and a collision is checked on read.
fn key(of: &str) -> String {
    sha256_hex(of.as_bytes())[..20].to_owned()
}

/// A record read back, with the resourceVersion that guards replacing it.
pub struct Read<T> {
    pub record: T,
    pub resource_version: String,
}

/// The ConfigMaps of the ledger's namespace.
#[derive(Clone)]
pub struct Objects {
    api: Api<ConfigMap>,
    namespace: String,
}

impl Objects {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
        }
    }

    pub async fn read<T: DeserializeOwned>(&self, place: &Place) -> Result<Option<Read<T>>> {
        let found = self.api.get_opt(&place.name).await;
        let found = found.map_err(|source| self.failed("read", place, source))?;
        found.map(|object| self.decode(place, object)).transpose()
    }

    /// Every record of `kind` belonging to `of` (a config id), in one list.
    pub async fn list<T: DeserializeOwned>(&self, of: &str, kind: Kind) -> Result<Vec<T>> {
        let place = Place::of_config(of, kind, 0);
        let selector = format!("{LABEL_LEDGER}={},{LABEL_KEY}={}", kind.label(), place.key);
        let listed = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await;
        let listed = listed.map_err(|source| self.failed("list", &place, source))?;
        let records = listed.items.into_iter().map(|object| {
            let place = Place {
                name: object.metadata.name.clone().unwrap_or_default(),
                ..place.clone()
            };
            self.decode(&place, object).map(|read| read.record)
        });
        records.collect()
    }

    /// Creates the object; returns false when one of its name exists already.
    pub async fn create<T: Serialize>(&self, place: &Place, record: &T) -> Result<bool> {
        let object = self.encode(place, record, None)?;
        match self.api.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(source) => Err(self.failed("create", place, source)),
        }
    }

    /// Replaces the object if it still is at `resource_version` (creates it when
    /// `None`); returns false when another write came first.
    pub async fn replace<T: Serialize>(
        &self,
        place: &Place,
        record: &T,
        resource_version: Option<String>,
    ) -> Result<bool> {
        let Some(resource_version) = resource_version else {
            return self.create(place, record).await;
        };
        let object = self.encode(place, record, Some(resource_version))?;
        match self
            .api
            .replace(&place.name, &PostParams::default(), &object)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(false),
            Err(source) => Err(self.failed("replace", place, source)),
        }
    }

    fn encode<T: Serialize>(
        &self,
        place: &Place,
        record: &T,
        resource_version: Option<String>,
    ) -> Result<ConfigMap> {
        let json = serde_json::to_string(record).map_err(Error::Encode)?;
        let labels = BTreeMap::from([
            (LABEL_LEDGER.to_owned(), place.kind.label().to_owned()),
            (LABEL_KEY.to_owned(), place.key.clone()),
            (
                "app.kubernetes.io/part-of".to_owned(),
                "summit-config".to_owned(),
            ),
        ]);
        Ok(ConfigMap {
            metadata: ObjectMeta {
                name: Some(place.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(labels),
                annotations: Some(BTreeMap::from([(
                    ANNOTATION_OF.to_owned(),
                    place.of.clone(),
                )])),
                resource_version,
                ..ObjectMeta::default()
            },
            immutable: place.kind.immutable().then_some(true),
            data: Some(BTreeMap::from([(RECORD.to_owned(), json)])),
            ..ConfigMap::default()
        })
    }

    fn decode<T: DeserializeOwned>(&self, place: &Place, object: ConfigMap) -> Result<Read<T>> {
        let corrupt = |reason: String| Error::LedgerObject {
            object: format!("{}/{}", self.namespace, place.name),
            reason,
        };
        let meta = &object.metadata;
        let labelled = meta.labels.as_ref().and_then(|l| l.get(LABEL_LEDGER));
        if labelled.map(String::as_str) != Some(place.kind.label()) {
            return Err(corrupt(format!(
                "it is not labelled {LABEL_LEDGER}={}",
                place.kind.label()
            )));
        }
        let of = meta.annotations.as_ref().and_then(|a| a.get(ANNOTATION_OF));
        if of != Some(&place.of) {
            return Err(corrupt(format!("it belongs to {of:?}, not {:?}", place.of)));
        }
        let json = object.data.as_ref().and_then(|d| d.get(RECORD));
        let json = json.ok_or_else(|| corrupt(format!("it has no {RECORD}")))?;
        let record = serde_json::from_str(json).map_err(|e| corrupt(e.to_string()))?;
        Ok(Read {
            record,
            resource_version: meta.resource_version.clone().unwrap_or_default(),
        })
    }

    fn failed(&self, action: &str, place: &Place, source: kube::Error) -> Error {
        if let kube::Error::Api(status) = &source
            && matches!(status.code, 413 | 422)
        {
            return Error::LedgerObject {
                object: format!("{}/{}", self.namespace, place.name),
                reason: format!(
                    "the apiserver refused to {action} it ({}): a config id's record outgrew what one object holds; use PostgreSQL for this much history",
                    status.message
                ),
            };
        }
        Error::Cluster {
            action: format!("{action} ledger object {}/{}", self.namespace, place.name),
            source,
        }
    }
}
