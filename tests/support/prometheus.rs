//! The environment's Prometheus, and metrics a test serves for it to scrape: a test
//! lists its own endpoint in the scrape targets (file discovery), labelled with the
//! namespace it speaks for, and sets the value Prometheus reads.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{Router, routing::get};
use serde_json::{Value, json};

use super::{WAIT, env, eventually};

/// A gauge `app_errors` served on 127.0.0.1 and scraped as a series of `namespace`.
pub struct Exporter {
    value: Arc<AtomicU64>,
    target: PathBuf,
    namespace: String,
}

impl Exporter {
    /// Serves `app_errors` = 0 and lists it for Prometheus under `namespace`.
    pub async fn start(namespace: &str) -> Self {
        let value = Arc::new(AtomicU64::new(0f64.to_bits()));
        let served = value.clone();
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let value = f64::from_bits(served.load(Ordering::Relaxed));
                async move { format!("# TYPE app_errors gauge\napp_errors {value}\n") }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the exporter");
        let address = listener.local_addr().expect("its address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let target =
            PathBuf::from(env().var("PROMETHEUS_TARGETS")).join(format!("{namespace}.json"));
        let listed =
            json!([{"targets": [address.to_string()], "labels": {"namespace": namespace}}]);
        // Written whole, then renamed: discovery never reads half a file.
        let partial = target.with_extension("part");
        std::fs::write(&partial, listed.to_string()).expect("write the scrape target");
        std::fs::rename(&partial, &target).expect("list the scrape target");
        let exporter = Self {
            value,
            target,
            namespace: namespace.to_owned(),
        };
        exporter.scraped(0.0).await;
        exporter
    }

    /// Serves `value`, and waits until Prometheus has read it.
    pub async fn set(&self, value: f64) {
        self.value.store(value.to_bits(), Ordering::Relaxed);
        self.scraped(value).await;
    }

    async fn scraped(&self, value: f64) {
        let query = format!("app_errors{{namespace={:?}}}", self.namespace);
        eventually("Prometheus to scrape the exporter", WAIT, || async {
            let got = query_value(&query).await?;
            (got == value).then_some(())
        })
        .await;
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.target);
    }
}

/// Prometheus's answer to an instant query, whole.
pub async fn ask(query: &str) -> Value {
    let url = format!("{}/api/v1/query", env().var("PROMETHEUS_URL"));
    let response = reqwest::Client::new()
        .post(url)
        .form(&[("query", query)])
        .send()
        .await
        .expect("Prometheus answers");
    response.json().await.expect("a JSON answer")
}

/// The value of an instant query that yields one sample, if it does.
pub async fn query_value(query: &str) -> Option<f64> {
    let body = ask(query).await;
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}
