//! Approval → ConfigMap under churn: N entries whose production needs one approval,
//! and a stream of ConfigChanges at a steady rate (10 a second by default), each
//! requested by alice and approved by bob as soon as it waits for him. For each, the
//! time from bob's approval being sent to the production ConfigMap holding the
//! approved content, seen through a watch; printed as percentiles.
//!
//!     make bench-latency                     # 1,000 entries, 300 changes
//!     make bench-latency ENTRIES=10000
//!
//! (`cargo bench --bench latency -- --entries N [--changes M] [--rate R]` against a
//! running `hack/env-up.sh`.)

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use summit_config::api::v1alpha1::{ChangePhase, ConfigChange, ConfigEntry};
use support::{WAIT, approve, change, config_json, create, eventually, free_port, setup_with};

/// What the watches saw, and when: ConfigChanges waiting for approval, and each
/// `churn` value each ConfigMap held (0 before any change).
#[derive(Default)]
struct Seen {
    pending: HashMap<String, Instant>,
    churn: HashMap<(String, i64), Instant>,
}

type Shared = Arc<Mutex<Seen>>;

#[tokio::main]
async fn main() {
    let Some(entries) = common::entries_argument("latency", 1_000) else {
        return;
    };
    let changes: usize = common::argument("--changes").unwrap_or(300);
    let rate: f64 = common::argument("--rate").unwrap_or(10.0);
    let roles = [
        ("alice", "summit-config-admin"),
        ("bob", "summit-config-approver"),
    ];
    let port = free_port();
    let http = format!("127.0.0.1:{port}");
    let (s, operator) = setup_with("bench-latency", &roles, &["--http-addr", &http]).await;
    let seen = Shared::default();
    watch(&s.changes(), &s.config_maps(), &seen);

    // N entries, each with version 1 approved and live in production.
    let entries_api: Api<ConfigEntry> = s.entries();
    let approval = json!({"requiredApprovals": 1});
    common::create_entries_with(&entries_api, &s.ns, entries, approval).await;
    let bob = s.changes_as("bob").await;
    let proposals = eventually("every entry's first proposal", setup_limit(entries), || {
        let seen = seen.clone();
        async move {
            let pending: Vec<String> = seen.lock().expect("seen").pending.keys().cloned().collect();
            (pending.len() >= entries).then_some(pending)
        }
    })
    .await;
    stream::iter(proposals)
        .for_each_concurrent(16, |name| {
            let bob = bob.clone();
            async move {
                approve(&bob, &name, "bob", &["summit:approvers"])
                    .await
                    .unwrap_or_else(|error| panic!("bob approves {name}: {error}"));
            }
        })
        .await;
    eventually("production live everywhere", setup_limit(entries), || {
        let seen = seen.clone();
        async move {
            let seen = seen.lock().expect("seen");
            let live = seen
                .churn
                .keys()
                .filter(|(name, _)| name.ends_with("-production"));
            let live = live.count();
            (live >= entries).then_some(())
        }
    })
    .await;

    // The churn: one change every 1/rate seconds, each to an entry of its own (round
    // robin), approved as soon as it waits.
    let alice = s.changes_as("alice").await;
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut tasks = Vec::new();
    for k in 0..changes {
        tokio::time::sleep_until((started + interval * k as u32).into()).await;
        let (alice, bob, seen) = (alice.clone(), bob.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            one_change(&alice, &bob, &seen, k, entries).await
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.push(task.await.expect("a change"));
    }
    let churn = changes as f64 / started.elapsed().as_secs_f64();
    let peak_rss = common::proc_status(operator.pid(), "VmHWM:");
    drop(operator);
    latencies.sort();

    println!(
        "latency: approval -> production ConfigMap updated, {entries} entries x 2 environments"
    );
    println!(
        "  churn           {changes} changes at {churn:.1}/s (requested by alice, approved by bob)"
    );
    for (label, q) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99)] {
        println!(
            "  {label}             {:.0} ms",
            millis(percentile(&latencies, q))
        );
    }
    println!(
        "  max             {:.0} ms",
        millis(*latencies.last().expect("a sample"))
    );
    println!("  measured from   the approval request sent, to the ConfigMap seen through a watch");
    println!("  operator RSS    {peak_rss} (peak)");
    println!("  machine         {}", common::machine());
}

/// alice asks for production of entry `k % entries` to take churn value `k + 1`; bob
/// approves once it waits for him. Returns the approval's latency.
async fn one_change(
    alice: &Api<ConfigChange>,
    bob: &Api<ConfigChange>,
    seen: &Shared,
    k: usize,
    entries: usize,
) -> Duration {
    let entry = format!("entry-{}", k % entries);
    let name = format!("churn-{k}");
    let value = k as i64 + 1;
    let spec = json!({
        "configEntry": entry,
        "environment": "production",
        "patch": {"churn": value},
    });
    create(alice, &change(&name, "alice", spec)).await;
    let waiting = || seen.lock().expect("seen").pending.contains_key(&name);
    eventually(&format!("{name} to wait for approval"), WAIT, || async {
        waiting().then_some(())
    })
    .await;
    let sent = Instant::now();
    approve(bob, &name, "bob", &["summit:approvers"])
        .await
        .unwrap_or_else(|error| panic!("bob approves {name}: {error}"));
    let key = (format!("{entry}-production"), value);
    let live = || seen.lock().expect("seen").churn.get(&key).copied();
    let at = eventually(&format!("{name} live"), WAIT, || async { live() }).await;
    at.saturating_duration_since(sent)
}

/// Follows ConfigChanges and ConfigMaps in tasks of their own, noting when each change
/// first waits for approval and when each ConfigMap first holds each churn value.
fn watch(changes: &Api<ConfigChange>, config_maps: &Api<ConfigMap>, seen: &Shared) {
    let (changes, shared) = (changes.clone(), seen.clone());
    tokio::spawn(async move {
        let mut events = watcher(changes, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(change)) = events.next().await {
            let phase = change.status.as_ref().and_then(|s| s.phase);
            if phase == Some(ChangePhase::Pending) {
                let mut seen = shared.lock().expect("seen");
                seen.pending
                    .entry(change.name_any())
                    .or_insert_with(Instant::now);
            }
        }
    });
    let (config_maps, shared) = (config_maps.clone(), seen.clone());
    tokio::spawn(async move {
        let mut events = watcher(config_maps, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(config_map)) = events.next().await {
            if let Some(content) = config_json(&config_map) {
                let value = content["churn"].as_i64().unwrap_or(0);
                let mut seen = shared.lock().expect("seen");
                let key = (config_map.name_any(), value);
                seen.churn.entry(key).or_insert_with(Instant::now);
            }
        }
    });
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn setup_limit(entries: usize) -> Duration {
    Duration::from_secs(120 + entries as u64 / 10)
}
