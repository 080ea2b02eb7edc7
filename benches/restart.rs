//! Restarts the operator over N converged entries and measures what the restart
//! costs: how long until it is ready and has checked every entry, and every request
//! it sent meanwhile, by backend. A restart over converged entries should write
//! nothing anywhere (Lease renewals aside: the bench runs one replica without leader
//! election).
//!
//!     make bench-restart                    # 1,000 entries
//!     make bench-restart ENTRIES=10000
//!
//! (`cargo bench --bench restart -- --entries N` against a running `hack/env-up.sh`.)

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, ResourceExt,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use summit_config::api::v1alpha1::ConfigEntry;
use support::{Operator, eventually, free_port, fresh_namespace, operator_writes};

const BACKENDS: [&str; 3] = ["kubernetes", "postgres", "consul"];

/// How many entries are created while the restarted operator re-checks the others.
const FRESH: usize = 20;

#[tokio::main]
async fn main() {
    let Some(entries) = common::entries_argument("restart", 1_000) else {
        return;
    };
    let (client, ns) = fresh_namespace("bench-restart").await;
    let api: Api<ConfigEntry> = Api::namespaced(client.clone(), &ns);
    common::create_entries(&api, &ns, entries).await;
    let port = free_port();
    let http = ["--http-addr".to_owned(), format!("127.0.0.1:{port}")];
    let http: Vec<&str> = http.iter().map(String::as_str).collect();
    let operator = Operator::start_with(&ns, &http);
    common::wait_converged(&api, entries).await;
    drop(operator);
    let before = statuses(&api).await;

    // The restart: ready, then every entry reconciled once and finished.
    let started = Instant::now();
    let operator = Operator::start_with(&ns, &http);
    let limit = Duration::from_secs(120 + entries as u64 / 20);
    eventually("the operator to be ready", limit, || async {
        let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await;
        ready.ok()?.status().is_success().then_some(())
    })
    .await;
    let ready = started.elapsed();
    // New work while the resync runs: entries created one every half second, each
    // timed from its creation to its ConfigMap.
    let fresh = tokio::spawn(fresh_entries(api.clone(), ns.clone(), FRESH));
    eventually("every entry checked", limit, || async {
        let (begun, finished) = support::reconciles(port, "ConfigEntry").await;
        (finished >= entries as f64 && finished == begun).then_some(())
    })
    .await;
    let checked = started.elapsed();
    let mut fresh = fresh.await.expect("new entries");
    fresh.sort();
    let writes = operator_writes(port).await;
    let metrics = support::metrics_text(port).await;
    let written: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("summit_config_apiserver_writes_total{"))
        .collect();
    let requests: Vec<_> = BACKENDS
        .iter()
        .zip(common::requests(port, &BACKENDS).await)
        .collect();
    let peak_rss = common::proc_status(operator.pid(), "VmHWM:");
    drop(operator);
    let after = statuses(&api).await;
    let rewritten: Vec<_> = before
        .iter()
        .filter(|(name, status)| after.get(*name) != Some(status))
        .collect();

    println!("restart: the operator restarted over {entries} converged entries x 2 environments");
    println!("  ready           {:.1} s", ready.as_secs_f64());
    println!("  every entry checked  {:.1} s", checked.as_secs_f64());
    let at = |q: f64| fresh[((fresh.len() as f64 * q).ceil() as usize).clamp(1, fresh.len()) - 1];
    println!(
        "  {FRESH} new entries during it, created to ConfigMap: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        millis(at(0.5)),
        millis(at(0.99)),
        millis(at(1.0))
    );
    println!("  apiserver writes     {writes:.0} (Events not counted; the new entries' aside)");
    for line in written {
        println!("    {line}");
    }
    println!("  statuses that changed  {}", rewritten.len());
    if let Some((name, status)) = rewritten.first() {
        println!("    {name} before: {status}");
        println!(
            "    {name} after:  {}",
            after.get(*name).cloned().unwrap_or_default()
        );
    }
    for (backend, total) in requests {
        println!(
            "  {backend:<12} {total:.0} requests, {:.2} per entry (a watch counts once)",
            total / entries as f64
        );
    }
    println!("  operator RSS    {peak_rss} (peak)");
    println!("  machine         {}", common::machine());
}

/// Every entry's status, as JSON, by name.
async fn statuses(api: &Api<ConfigEntry>) -> std::collections::BTreeMap<String, String> {
    let list = api.list(&Default::default()).await.expect("list entries");
    list.items
        .into_iter()
        .map(|e| {
            let status = serde_json::to_string(&e.status).expect("status JSON");
            (kube::ResourceExt::name_any(&e), status)
        })
        .collect()
}

/// Creates `count` entries, one every half second, and returns for each the time from
/// its creation to its development ConfigMap, seen through a watch.
async fn fresh_entries(api: Api<ConfigEntry>, ns: String, count: usize) -> Vec<Duration> {
    let config_maps: Api<ConfigMap> = Api::namespaced(api.clone().into_client(), &ns);
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let noted = seen.clone();
    let watching = tokio::spawn(async move {
        let mut events = watcher(config_maps, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(config_map)) = events.next().await {
            let mut seen = noted.lock().expect("seen");
            seen.entry(config_map.name_any())
                .or_insert_with(Instant::now);
        }
    });
    let mut created = Vec::new();
    for k in 0..count {
        let name = format!("fresh-{k}");
        let entry: ConfigEntry = serde_json::from_value(json!({
            "apiVersion": "config.summit.io/v1alpha1",
            "kind": "ConfigEntry",
            "metadata": {"name": name},
            "spec": {
                "configId": format!("bench/{ns}/{name}"),
                "data": {"fresh": k},
                "environments": [{"name": "development"}],
            },
        }))
        .expect("entry");
        let at = Instant::now();
        api.create(&PostParams::default(), &entry)
            .await
            .expect("create entry");
        created.push((format!("{name}-development"), at));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut latencies = Vec::new();
    for (config_map, at) in created {
        let live = || seen.lock().expect("seen").get(&config_map).copied();
        let what = format!("{config_map} created");
        let live = eventually(&what, Duration::from_secs(120), || async { live() }).await;
        latencies.push(live.saturating_duration_since(at));
    }
    watching.abort();
    latencies
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
