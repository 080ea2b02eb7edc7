//! AWS secret references → Secrets, from cold: N secrets in Secrets Manager (moto,
//! through the real SDK), N entries with one environment each referencing one of them
//! (every version recorded, as always), and the operator started over them. Prints the
//! time until every Secret holds its value, the provider reads it took, and then what
//! an idle stretch costs: requests to every backend, provider reads included.
//!
//! The reference figure is External Secrets Operator's, measured on this machine
//! against the same moto and apiserver (1,000 ExternalSecrets, 12 workers, client rate
//! limit raised): 16.9 s.
//!
//!     make bench-secrets                      # 1,000 references
//!     make bench-secrets ENTRIES=10000
//!
//! (`cargo bench --bench secrets -- --entries N [--idle SECONDS]` against a running
//! `hack/env-up.sh`.)

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::PostParams};
use serde_json::json;
use summit_config::api::v1alpha1::ConfigEntry;
use support::{Operator, create_aws_secret, free_port, fresh_namespace, secrets_manager};

const BACKENDS: [&str; 4] = ["kubernetes", "postgres", "consul", "secretsmanager"];

#[tokio::main]
async fn main() {
    let Some(entries) = common::entries_argument("secrets", 1_000) else {
        return;
    };
    let idle = common::argument("--idle").unwrap_or(60);
    let (client, ns) = fresh_namespace("bench-secrets").await;
    let aws = secrets_manager().await;
    stream::iter(0..entries)
        .for_each_concurrent(16, |i| {
            let (aws, id) = (aws.clone(), secret_id(&ns, i));
            async move {
                let value = format!(r#"{{"user":"app-{i}","password":"password-{i}"}}"#);
                create_aws_secret(&aws, &id, &value).await;
            }
        })
        .await;
    let api: Api<ConfigEntry> = Api::namespaced(client.clone(), &ns);
    create_entries(&api, &ns, entries).await;

    let port = free_port();
    let started = Instant::now();
    let operator = Operator::start_with(&ns, &["--http-addr", &format!("127.0.0.1:{port}")]);
    let holds = |secret: &Secret| {
        let password = secret.data.as_ref().and_then(|d| d.get("DB_PASSWORD"));
        password.is_some_and(|v| v.0.starts_with(b"password-"))
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    common::watch_until(&secrets, entries, "every Secret", holds).await;
    let elapsed = started.elapsed();
    let converged = common::requests(port, &BACKENDS).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let settled = common::requests(port, &BACKENDS).await;
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let after_idle = common::requests(port, &BACKENDS).await;
    let writes = support::operator_writes(port).await;
    let peak_rss = common::proc_status(operator.pid(), "VmHWM:");
    drop(operator);

    println!("secrets: {entries} AWS secret references -> {entries} Secrets, from a cold start");
    println!("  time            {:.1} s", elapsed.as_secs_f64());
    println!(
        "  references/s    {:.0}",
        entries as f64 / elapsed.as_secs_f64()
    );
    println!("  reference       External Secrets Operator, same machine and parts: 16.9 s");
    let per_entry: Vec<String> = BACKENDS
        .iter()
        .zip(&converged)
        .map(|(backend, n)| format!("{backend} {:.2}", n / entries as f64))
        .collect();
    println!("  requests per reference  {}", per_entry.join(", "));
    let idle_requests: Vec<String> = BACKENDS
        .iter()
        .zip(settled.iter().zip(&after_idle))
        .map(|(backend, (before, after))| format!("{backend} {:.0}", after - before))
        .collect();
    println!("  idle {idle} s       {}", idle_requests.join(", "));
    println!("  apiserver writes, all told  {writes:.0}");
    println!("  operator RSS    {peak_rss} (peak)");
    println!("  machine         {}", common::machine());
}

fn secret_id(ns: &str, i: usize) -> String {
    format!("tests/{ns}/secret-{i}")
}

/// Entry `i` projects secret `i`'s password into Secret `entry-<i>-production`.
async fn create_entries(api: &Api<ConfigEntry>, ns: &str, count: usize) {
    stream::iter(0..count)
        .for_each_concurrent(16, |i| {
            let api = api.clone();
            async move {
                let entry: ConfigEntry = serde_json::from_value(json!({
                    "apiVersion": "config.summit.io/v1alpha1",
                    "kind": "ConfigEntry",
                    "metadata": {"name": format!("entry-{i}")},
                    "spec": {
                        "configId": format!("bench/{ns}/{i}"),
                        "data": {"index": i},
                        "secrets": {"DB_PASSWORD": {
                            "provider": "AwsSecretsManager",
                            "secretId": secret_id(ns, i),
                            "key": "password",
                        }},
                        "environments": [{"name": "production"}],
                    },
                }))
                .expect("entry");
                api.create(&PostParams::default(), &entry)
                    .await
                    .expect("create entry");
            }
        })
        .await;
}
