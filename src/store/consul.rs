//! Consul KV: the real-time copy, in the seed's layout under a configurable prefix:
//! `{prefix}/{configId}/latest`, `.../versions/{n}` and `.../applied/{environment}`.
//! Every write is a check-and-set on the key's modify index, and every read that a
//! write depends on is `?consistent`, so a stale writer never overwrites newer state.

use prometheus_client::metrics::counter::Counter;
use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use reqwest::{Client, RequestBuilder, Response, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{AppliedState, Error, Result, Version};

/// How often a check-and-set that lost a race is retried before giving up.
const CAS_ATTEMPTS: usize = 5;

/// Versions and applied state in Consul's KV store.
pub struct ConsulStore {
    http: Client,
    base: Url,
    prefix: String,
    /// Counts every HTTP request.
    requests: Counter,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    key: String,
    value: Option<String>,
    modify_index: u64,
}

/// How to reach Consul.
#[derive(Clone, Debug)]
pub struct ConsulConfig {
    /// The agent, e.g. `http://127.0.0.1:8500` or `https://consul.consul:8501`.
    pub address: Url,
    /// The key prefix under which versions are kept.
    pub prefix: String,
    /// The ACL token sent with every request.
    pub token: Option<SecretString>,
    /// PEM of the certificate authority that signed Consul's HTTPS certificate.
    pub ca_pem: Option<Vec<u8>>,
}

impl ConsulStore {
    /// A store talking to the agent `config` names.
    pub fn new(config: ConsulConfig, requests: Counter) -> Result<Self, reqwest::Error> {
        let mut http = Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2));
        if let Some(token) = &config.token {
            let mut value = reqwest::header::HeaderValue::from_str(token.expose_secret())
                .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
            value.set_sensitive(true);
            let headers = reqwest::header::HeaderMap::from_iter([(
                reqwest::header::HeaderName::from_static("x-consul-token"),
                value,
            )]);
            http = http.default_headers(headers);
        }
        if let Some(pem) = &config.ca_pem {
            http = http.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
        }
        Ok(Self {
            http: http.build()?,
            base: config.address,
            prefix: config.prefix.trim_matches('/').to_owned(),
            requests,
        })
    }

    fn key(&self, config_id: &str, rest: &str) -> String {
        format!("{}/{config_id}/{rest}", self.prefix)
    }

    fn url(&self, key: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("/v1/kv/{key}"));
        url
    }

    /// Reads entries at `key` (recursively when asked), consistently.
    async fn read(&self, key: &str, recurse: bool) -> Result<Vec<Entry>> {
        let mut url = self.url(key);
        url.query_pairs_mut().append_pair("consistent", "");
        if recurse {
            url.query_pairs_mut().append_pair("recurse", "");
        }
        let Some(response) = self.send(self.http.get(url), format!("read {key}")).await? else {
            return Ok(Vec::new());
        };
        response.json().await.map_err(|source| Error::Consul {
            action: format!("read {key}"),
            source,
        })
    }

    /// Sends a request; `None` for 404, an error for any other failure.
    async fn send(&self, request: RequestBuilder, action: String) -> Result<Option<Response>> {
        self.requests.inc();
        let response = request.send().await.map_err(|source| Error::Consul {
            action: action.clone(),
            source,
        })?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => Ok(Some(response)),
            status => Err(Error::ConsulStatus {
                action,
                status: status.as_u16(),
            }),
        }
    }

    async fn read_one<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>> {
        let entry = self
            .read(key, false)
            .await?
            .into_iter()
            .find(|e| e.key == key);
        entry.map(|e| Ok((decode(&e)?, e.modify_index))).transpose()
    }

    /// Writes `value` at `key` only if the key's modify index is still `index`
    /// (0: only if the key does not exist). Returns whether it was written.
    async fn check_and_set<T: Serialize>(&self, key: &str, value: &T, index: u64) -> Result<bool> {
        let mut url = self.url(key);
        url.query_pairs_mut().append_pair("cas", &index.to_string());
        let body = serde_json::to_vec(value).map_err(Error::Encode)?;
        let action = format!("write {key}");
        let response = self
            .send(self.http.put(url).body(body), action.clone())
            .await?;
        let text = match response {
            Some(response) => response
                .text()
                .await
                .map_err(|source| Error::Consul { action, source })?,
            None => {
                return Err(Error::ConsulStatus {
                    action,
                    status: 404,
                });
            }
        };
        Ok(text.trim() == "true")
    }

    /// Writes a version at `key` with check-and-set, or, when Consul refuses it as
    /// larger than its value limit, everything of it but its content. Returns whether
    /// it was written.
    async fn put_version(&self, key: &str, version: &Version, index: u64) -> Result<bool> {
        match self.check_and_set(key, version, index).await {
            Err(Error::ConsulStatus { status: 413, .. }) => {
                let size = serde_json::to_vec(version).map_or(0, |v| v.len());
                let summary = Summary::of(version, size);
                self.check_and_set(key, &summary, index).await
            }
            other => other,
        }
    }

    /// Points `latest` at `version` unless it already points at that or a newer one.
    async fn advance_latest(&self, version: &Version) -> Result<()> {
        let key = self.key(&version.config_id, "latest");
        for _ in 0..CAS_ATTEMPTS {
            let current = self.read_one::<Header>(&key).await?;
            if current
                .as_ref()
                .is_some_and(|(latest, _)| latest.version >= version.version)
            {
                return Ok(());
            }
            let index = current.map_or(0, |(_, index)| index);
            if self.put_version(&key, version, index).await? {
                return Ok(());
            }
        }
        Err(Error::ConsulStatus {
            action: format!("advance {key}: lost {CAS_ATTEMPTS} check-and-set races"),
            status: 409,
        })
    }

    /// What `latest` says, without the content.
    pub async fn latest_header(&self, config_id: &str) -> Result<Option<Header>> {
        Ok(self
            .read_one::<Header>(&self.key(config_id, "latest"))
            .await?
            .map(|(header, _)| header))
    }

    /// The versions Consul holds, without their content.
    pub async fn headers(&self, config_id: &str) -> Result<Vec<Header>> {
        let entries = self.read(&self.key(config_id, "versions/"), true).await?;
        let mut headers = entries
            .iter()
            .map(decode::<Header>)
            .collect::<Result<Vec<_>>>()?;
        headers.sort_by_key(|h| h.version);
        Ok(headers)
    }

    /// The key of one environment's applied state.
    pub fn applied_key(&self, config_id: &str, environment: &str) -> String {
        self.key(config_id, &format!("applied/{environment}"))
    }

    /// Every applied state under the prefix, by key, in one recursive read; a key that
    /// does not hold an applied state maps to `None`.
    pub async fn applied_everywhere(
        &self,
    ) -> Result<std::collections::BTreeMap<String, Option<AppliedState>>> {
        let entries = self.read(&format!("{}/", self.prefix), true).await?;
        Ok(entries
            .iter()
            .filter(|e| e.key.contains("/applied/"))
            .map(|e| (e.key.clone(), decode::<AppliedState>(e).ok()))
            .collect())
    }

    /// Writes an applied state with check-and-set unless the key already holds it.
    pub async fn write_applied(&self, applied: &AppliedState) -> Result<bool> {
        let key = self.key(
            &applied.config_id,
            &format!("applied/{}", applied.environment),
        );
        for _ in 0..CAS_ATTEMPTS {
            let current = self.read_one::<AppliedState>(&key).await?;
            if current.as_ref().is_some_and(|(state, _)| {
                state.version == applied.version && state.checksum == applied.checksum
            }) {
                return Ok(false);
            }
            let index = current.map_or(0, |(_, index)| index);
            if self.check_and_set(&key, applied, index).await? {
                return Ok(true);
            }
        }
        Err(Error::ConsulStatus {
            action: format!("write {key}: lost {CAS_ATTEMPTS} check-and-set races"),
            status: 409,
        })
    }
}

impl ConsulStore {
    /// Removes a config id's keys (`latest`, `versions/`, `applied/`); keys of other
    /// config ids below it are left alone.
    pub async fn forget(&self, config_id: &str) -> Result<()> {
        for (rest, recurse) in [("latest", false), ("versions/", true), ("applied/", true)] {
            let key = self.key(config_id, rest);
            let mut url = self.url(&key);
            if recurse {
                url.query_pairs_mut().append_pair("recurse", "");
            }
            self.send(self.http.delete(url), format!("delete {key}"))
                .await?;
        }
        Ok(())
    }
}

/// What the operator reads of a version key: its number and checksum, and why its
/// content is not there, when it is not.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    pub version: i64,
    pub checksum: String,
    #[serde(default)]
    pub content_omitted: Option<String>,
}

/// A version larger than Consul's value limit, as Consul keeps it: everything but its
/// content, which PostgreSQL keeps.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary<'v> {
    config_id: &'v str,
    version: i64,
    owner: &'v str,
    checksum: &'v str,
    #[serde(flatten)]
    source: &'v super::Source,
    created_by: &'v str,
    created_at: k8s_openapi::jiff::Timestamp,
    message: &'v str,
    content_omitted: String,
}

impl<'v> Summary<'v> {
    fn of(version: &'v Version, size: usize) -> Self {
        Self {
            config_id: &version.config_id,
            version: version.version,
            owner: &version.owner,
            checksum: &version.checksum,
            source: &version.source,
            created_by: &version.created_by,
            created_at: version.created_at,
            message: &version.message,
            content_omitted: format!(
                "the version is {size} bytes, more than Consul's value limit; PostgreSQL holds its content"
            ),
        }
    }
}

fn decode<T: DeserializeOwned>(entry: &Entry) -> Result<T> {
    let invalid = |reason: String| Error::ConsulValue {
        key: entry.key.clone(),
        reason,
    };
    let raw = entry
        .value
        .as_deref()
        .ok_or_else(|| invalid("the key is empty".into()))?;
    let bytes = STANDARD.decode(raw).map_err(|e| invalid(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))
}

impl ConsulStore {
    /// Keeps a version PostgreSQL numbered, and moves `latest` up to it.
    pub async fn store_version(&self, version: &Version) -> Result<()> {
        let key = self.key(&version.config_id, &format!("versions/{}", version.version));
        if !self.put_version(&key, version, 0).await? {
            // Versions are immutable: an existing key must hold the same content.
            let existing = self.read_one::<Header>(&key).await?;
            if existing.is_some_and(|(v, _)| v.checksum != version.checksum) {
                return Err(Error::Diverged {
                    config_id: version.config_id.clone(),
                    version: version.version,
                    backend: "consul",
                });
            }
        }
        self.advance_latest(version).await
    }

    /// Writes an environment's applied state as given.
    pub async fn store_applied(&self, applied: &AppliedState) -> Result<()> {
        self.write_applied(applied).await.map(|_| ())
    }

    /// A config id's applied state per environment.
    pub async fn applied(&self, config_id: &str) -> Result<Vec<AppliedState>> {
        let entries = self.read(&self.key(config_id, "applied/"), true).await?;
        let mut applied = entries
            .iter()
            .map(decode::<AppliedState>)
            .collect::<Result<Vec<_>>>()?;
        applied.sort_by(|a, b| a.environment.cmp(&b.environment));
        Ok(applied)
    }
}

/// The most a transaction carries: Consul refuses more than 64 operations, or a body
/// over 512 KiB; a sync that needs more goes key by key.
const TXN_OPS: usize = 64;
const TXN_BYTES: usize = 384 * 1024;

/// One check-and-set of a transaction.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TxnOp {
    #[serde(rename = "KV")]
    kv: TxnKv,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TxnKv {
    verb: &'static str,
    key: String,
    value: String,
    index: u64,
}

impl ConsulStore {
    /// Brings a config id's keys up to `recorded` (oldest first) and `applied` with one
    /// recursive read and, when anything is missing or behind, one transaction of
    /// check-and-sets. `None` when that cannot be done at once (a key changed since
    /// the read, or too much to write): the caller then goes key by key.
    pub async fn sync_at_once(
        &self,
        config_id: &str,
        recorded: &[Version],
        applied: &[AppliedState],
    ) -> Result<Option<super::ConsulSync>> {
        let base = self.key(config_id, "");
        let held = self.read(&base, true).await?;
        let held_at = |rest: &str| {
            held.iter()
                .find(|e| e.key.strip_prefix(&base) == Some(rest))
        };
        let mut report = super::ConsulSync::default();
        let mut ops = Vec::new();
        for version in recorded {
            let key = format!("versions/{}", version.version);
            match held_at(&key) {
                Some(entry) => {
                    if decode::<Header>(entry)?.checksum != version.checksum {
                        return Err(Error::Diverged {
                            config_id: config_id.to_owned(),
                            version: version.version,
                            backend: "consul",
                        });
                    }
                }
                None => {
                    ops.push(self.cas(config_id, &key, version, 0)?);
                    report.versions_written += 1;
                }
            }
        }
        if let Some(newest) = recorded.last() {
            let latest = held_at("latest");
            let current = latest.map(decode::<Header>).transpose()?;
            match current {
                Some(header) if header.version >= newest.version => {
                    report.content_omitted = (header.version == newest.version)
                        .then_some(header.content_omitted)
                        .flatten()
                        .map(|why| (header.version, why));
                }
                _ => {
                    let index = latest.map_or(0, |e| e.modify_index);
                    ops.push(self.cas(config_id, "latest", newest, index)?);
                }
            }
        }
        for state in applied {
            let key = format!("applied/{}", state.environment);
            let entry = held_at(&key);
            let current = entry.map(decode::<AppliedState>).transpose().ok().flatten();
            if current.is_none_or(|c| c.version != state.version || c.checksum != state.checksum) {
                ops.push(self.cas(config_id, &key, state, entry.map_or(0, |e| e.modify_index))?);
                report.applied_written += 1;
            }
        }
        if ops.is_empty() {
            return Ok(Some(report));
        }
        let body = serde_json::to_vec(&ops).map_err(Error::Encode)?;
        if ops.len() > TXN_OPS || body.len() > TXN_BYTES {
            return Ok(None);
        }
        let mut url = self.base.clone();
        url.set_path("/v1/txn");
        let action = format!("write {base} in one transaction");
        match self.send(self.http.put(url).body(body), action).await {
            Ok(Some(_)) => Ok(Some(report)),
            // A check-and-set lost a race, or Consul found it too large after all.
            Ok(None)
            | Err(Error::ConsulStatus {
                status: 409 | 413, ..
            }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn cas<T: Serialize>(
        &self,
        config_id: &str,
        rest: &str,
        value: &T,
        index: u64,
    ) -> Result<TxnOp> {
        let value = serde_json::to_vec(value).map_err(Error::Encode)?;
        Ok(TxnOp {
            kv: TxnKv {
                verb: "cas",
                key: self.key(config_id, rest),
                value: STANDARD.encode(value),
                index,
            },
        })
    }
}
