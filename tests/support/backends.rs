//! The backends the operator writes to (PostgreSQL, Consul, moto's Secrets Manager),
//! read and tampered with as tests need, the faults tests inject into them, and the
//! operator's metrics.

use std::{collections::BTreeMap, process::Command};

use serde_json::{Value, json};

use super::{WAIT, env, eventually};

/// A connection pool to the environment's PostgreSQL.
pub async fn postgres() -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(env().var("DATABASE_URL"))
        .await
        .expect("connect to PostgreSQL")
}

/// How many rows of `table` belong to `config_id`.
pub async fn count_rows(table: &str, config_id: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {table} WHERE config_id = $1"
    ))
    .bind(config_id)
    .fetch_one(&postgres().await)
    .await
    .unwrap_or_else(|error| panic!("count {table} rows of {config_id}: {error}"))
}

/// The rows `sql` selects with its `$1` bound to `param` (mostly a config id).
pub async fn rows_of<T>(sql: &str, param: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(sql)
        .bind(param)
        .fetch_all(&postgres().await)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

/// The one column `sql` selects with its `$1` bound to `param`, row by row.
pub async fn column_of<T>(sql: &str, param: &str) -> Vec<T>
where
    T: sqlx::Type<sqlx::Postgres> + for<'r> sqlx::Decode<'r, sqlx::Postgres> + Send + Unpin,
{
    sqlx::query_scalar(sql)
        .bind(param)
        .fetch_all(&postgres().await)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

/// A request to the environment's Consul, with its ACL token.
pub fn consul_request(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match env().optional_var("CONSUL_HTTP_TOKEN_FILE") {
        Some(file) => {
            let token = std::fs::read_to_string(file).expect("read the Consul token");
            request.header("X-Consul-Token", token.trim())
        }
        None => request,
    }
}

/// A client for the environment's Consul, trusting its CA.
pub fn consul_client() -> reqwest::Client {
    let mut builder = reqwest::Client::builder();
    if let Some(file) = env().optional_var("CONSUL_CACERT") {
        let pem = std::fs::read(file).expect("read the Consul CA");
        builder =
            builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM"));
    }
    builder.build().expect("a Consul client")
}

/// A GET of `path` under Consul's KV API (`/v1/kv/<path>`), with the ACL token.
pub async fn consul(path: &str) -> reqwest::Response {
    let url = format!("{}/v1/kv/{path}", env().var("CONSUL_HTTP_ADDR"));
    consul_request(consul_client().get(&url))
        .send()
        .await
        .expect("reach Consul")
}

/// Writes `value` (as JSON) at `key` in Consul, as someone tampering with it would.
pub async fn consul_put(key: &str, value: &Value) {
    let url = format!("{}/v1/kv/{key}", env().var("CONSUL_HTTP_ADDR"));
    let response = consul_request(consul_client().put(&url))
        .body(value.to_string())
        .send()
        .await
        .expect("reach Consul");
    assert!(response.status().is_success(), "write {key}: {response:?}");
}

/// The value of one entry of a Consul KV listing, decoded from base64.
pub fn consul_value(entry: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(entry["Value"].as_str().unwrap_or_default())
        .expect("base64")
}

/// A Consul KV key's value (decoded) and modify index, read consistently.
pub async fn consul_get(key: &str) -> Option<(Value, u64)> {
    let response = consul(&format!("{key}?consistent")).await;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    let entries: Vec<Value> = response.json().await.expect("Consul JSON");
    let entry = entries.into_iter().next()?;
    Some((
        serde_json::from_slice(&consul_value(&entry)).expect("JSON value"),
        entry["ModifyIndex"].as_u64()?,
    ))
}

/// Every Consul key under a config id, decoded, with its modify index.
pub async fn consul_keys(config_id: &str) -> BTreeMap<String, Value> {
    let response = consul(&format!("summit/config/{config_id}/?recurse&consistent")).await;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return BTreeMap::new();
    }
    let entries: Vec<Value> = response.json().await.expect("Consul JSON");
    entries
        .into_iter()
        .map(|entry| {
            let value: Value = serde_json::from_slice(&consul_value(&entry)).unwrap_or(Value::Null);
            let key = entry["Key"].as_str().unwrap_or_default().to_owned();
            (key, json!({"value": value, "index": entry["ModifyIndex"]}))
        })
        .collect()
}

/// The sum of every sample whose line starts with `series` (a metric name, optionally
/// with some of its labels), scraped from the operator's /metrics on `port`.
pub async fn metric(port: u16, series: &str) -> f64 {
    series_sum(&metrics_text(port).await, series)
}

/// The operator's /metrics on `port`, as text.
pub async fn metrics_text(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("scrape metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The sum of every sample in the metrics `text` whose line starts with `series`.
pub fn series_sum(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(series))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        // An empty sum is -0.
        + 0.0
}

/// The operator's own count of its apiserver writes, scraped from /metrics on `port`.
pub async fn operator_writes(port: u16) -> f64 {
    metric(port, "summit_config_apiserver_writes_total").await
}

/// Waits until the operator on `port` has started a reconcile of a `kind` (ConfigEntry,
/// DriftCheck, ...) since it had started `started` of them, and has finished every one
/// it started: whatever woke the controller since then has been dealt with.
pub async fn reconciled_since(port: u16, kind: &str, started: f64) {
    eventually(&format!("a {kind} reconcile to finish"), WAIT, || async {
        let (started_now, finished) = reconciles(port, kind).await;
        (started_now > started && finished == started_now).then_some(())
    })
    .await;
}

/// How many reconciles of a `kind` the operator on `port` has started and finished.
pub async fn reconciles(port: u16, kind: &str) -> (f64, f64) {
    let labels = format!("{{kind=\"{kind}\"}}");
    (
        metric(port, &format!("summit_config_reconciles_total{labels}")).await,
        metric(
            port,
            &format!("summit_config_reconcile_duration_seconds_count{labels}"),
        )
        .await,
    )
}

/// A free local port for an operator's HTTP endpoints.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A client of moto's Secrets Manager, as the operator reaches it.
pub async fn secrets_manager() -> aws_sdk_secretsmanager::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(env().var("AWS_ENDPOINT_URL"))
        .region(aws_config::Region::new(env().var("AWS_REGION").to_owned()))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            env().var("AWS_ACCESS_KEY_ID"),
            env().var("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "tests",
        ))
        .load()
        .await;
    aws_sdk_secretsmanager::Client::new(&config)
}

/// Creates a secret in moto, as someone would before the operator adopts or reads it.
pub async fn create_aws_secret(aws: &aws_sdk_secretsmanager::Client, id: &str, value: &str) {
    aws.create_secret()
        .name(id)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create {id} in moto: {e:?}"));
}

/// Stops (SIGKILL), starts, pauses (SIGSTOP) or resumes one service of the
/// environment: `postgres`, `consul`, `moto`, ...
pub fn env_ctl(action: &str, service: &str) {
    let dir = env().dir();
    let root = dir.parent().expect("environment root");
    let status = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/hack/env-ctl.sh"))
        .args([env().var("SUMMIT_ENV_NAME"), action, service])
        .env("SUMMIT_ENV_ROOT", root)
        .status()
        .expect("run hack/env-ctl.sh");
    assert!(status.success(), "env-ctl.sh {action} {service} failed");
}

/// A service a fault test stopped or paused. [`Fault::end`] brings it back, and so
/// does the end of the scope: a failing test never leaves the environment broken for
/// the tests after it.
pub struct Fault {
    service: &'static str,
    /// What brings the service back: `start` or `resume`.
    undo: &'static str,
    ended: bool,
}

/// Stops `service` (SIGKILL), as a crash would, until the fault ends: started again,
/// it has lost what it held in memory.
pub fn stop(service: &'static str) -> Fault {
    env_ctl("stop", service);
    Fault {
        service,
        undo: "start",
        ended: false,
    }
}

/// Pauses `service` (SIGSTOP) until the fault ends: it hangs and keeps its state, as an
/// overloaded or partitioned service does.
pub fn pause(service: &'static str) -> Fault {
    env_ctl("pause", service);
    Fault {
        service,
        undo: "resume",
        ended: false,
    }
}

impl Fault {
    /// Starts or resumes the service again.
    pub fn end(mut self) {
        env_ctl(self.undo, self.service);
        self.ended = true;
    }
}

impl Drop for Fault {
    fn drop(&mut self) {
        if !self.ended {
            env_ctl(self.undo, self.service);
        }
    }
}
