//! Converges N ConfigEntries from cold against the real control plane, PostgreSQL and
//! Consul, and prints the time, entries per second, the operator's peak RSS and its
//! apiserver writes per entry, with the machine it ran on.
//!
//!     make bench                       # 1,000 entries
//!     make bench ENTRIES=10000
//!
//! (`cargo bench --bench converge -- --entries N` against a running `hack/env-up.sh`.)

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    collections::HashSet,
    net::TcpListener,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use kube::{
    Api, ResourceExt,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use summit_config::api::v1alpha1::ConfigEntry;
use support::{Operator, env, install_crds, namespace, operator_writes};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --all-targets` runs bench targets too; only `cargo bench` measures.
    if !args.iter().any(|a| a == "--bench") {
        println!("converge: a benchmark; run it with `make bench`");
        return;
    }
    let entries: usize = args
        .iter()
        .position(|a| a == "--entries")
        .and_then(|i| args.get(i + 1))
        .map_or(1_000, |n| n.parse().expect("--entries takes a number"));

    let client = env().admin().await;
    install_crds(&client).await;
    let ns = namespace(&client, "bench-converge").await;
    let api: Api<ConfigEntry> = Api::namespaced(client.clone(), &ns);

    // Everything exists before the operator starts: a cold start over a full cluster.
    stream::iter(0..entries)
        .map(|i| {
            let api = api.clone();
            let ns = ns.clone();
            async move {
                let entry: ConfigEntry = serde_json::from_value(json!({
                    "apiVersion": "config.summit.io/v1alpha1",
                    "kind": "ConfigEntry",
                    "metadata": {"name": format!("entry-{i}")},
                    "spec": {
                        "configId": format!("bench/{ns}/{i}"),
                        "schema": {"type": "object", "properties": {"pool": {"properties": {"max": {"maximum": 100}}}}},
                        "data": {"index": i, "pool": {"max": 10}},
                        "environments": [
                            {"name": "development"},
                            {"name": "production", "overrides": {"pool": {"max": 50}}},
                        ],
                    },
                }))
                .expect("entry");
                api.create(&PostParams::default(), &entry).await.expect("create entry");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;

    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let started = Instant::now();
    let operator = Operator::start_with(&ns, &["--http-addr", &format!("127.0.0.1:{port}")]);
    // Follow the entries with a watch rather than listing them over and over: at
    // 10,000 entries the lists would cost the apiserver more than the operator does.
    let limit = Duration::from_secs(120 + entries as u64 / 5);
    let mut converged = HashSet::new();
    let mut changes = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let watching = async {
        while converged.len() < entries {
            let entry = changes
                .next()
                .await
                .expect("the watch goes on")
                .expect("watch entries");
            let done = entry
                .status
                .as_ref()
                .is_some_and(|s| s.latest_version == Some(1) && s.observed_generation == Some(1));
            if done {
                converged.insert(entry.name_any());
            }
        }
    };
    tokio::time::timeout(limit, watching)
        .await
        .unwrap_or_else(|_| {
            panic!("timed out after {limit:?} waiting for every entry to converge")
        });
    let elapsed = started.elapsed();

    let writes = operator_writes(port).await;
    let peak_rss = proc_status(operator.pid(), "VmHWM:");
    drop(operator);

    println!("converge: {entries} entries x 2 environments, from a cold start of the operator");
    println!("  time            {:.1} s", elapsed.as_secs_f64());
    println!(
        "  entries/s       {:.0}",
        entries as f64 / elapsed.as_secs_f64()
    );
    println!("  operator RSS    {peak_rss} (peak)");
    println!(
        "  apiserver writes per entry  {:.2} (status + ConfigMaps, Events not counted)",
        writes / entries as f64
    );
    println!("  machine         {}", machine());
}

fn proc_status(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .map(|l| l[field.len()..].trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = proc_meminfo();
    format!("{cores} cores ({cpu}), {memory} memory")
}

fn proc_meminfo() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.trim_start_matches("MemTotal:").trim().to_owned())
        })
        .unwrap_or_default()
}
