//! What the benchmarks share: their arguments, a namespace full of entries, waiting for
//! the operator to converge them, and the machine they ran on.

#![allow(dead_code)] // each bench uses its own part of this module

use std::{
    collections::HashSet,
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

/// `--entries N` from the command line, or `default`; `None` when not run by `cargo
/// bench` (`cargo test --all-targets` runs bench targets too, and only `cargo bench`
/// measures).
pub fn entries_argument(name: &str, default: usize) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("{name}: a benchmark; run it with `make bench`");
        return None;
    }
    Some(argument("--entries").unwrap_or(default))
}

/// `name VALUE` from the command line, if given and of the right type.
pub fn argument<T: std::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1)?.parse().ok()
}

/// Creates `count` entries with two environments each in `ns`.
pub async fn create_entries(api: &Api<ConfigEntry>, ns: &str, count: usize) {
    create_entries_with(api, ns, count, json!(null)).await;
}

/// Creates `count` entries with two environments each in `ns`, production with the
/// approval policy `production_approval` (none when null).
pub async fn create_entries_with(
    api: &Api<ConfigEntry>,
    ns: &str,
    count: usize,
    production_approval: serde_json::Value,
) {
    stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            let approval = production_approval.clone();
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
                            production(approval),
                        ],
                    },
                }))
                .expect("entry");
                api.create(&PostParams::default(), &entry)
                    .await
                    .expect("create entry");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

/// The production environment of the bench's entries, with `approval` unless null.
fn production(approval: serde_json::Value) -> serde_json::Value {
    let mut production = json!({"name": "production", "overrides": {"pool": {"max": 50}}});
    if !approval.is_null() {
        production["approval"] = approval;
    }
    production
}

/// Waits until every one of `count` entries recorded and reported its first version.
/// Follows the entries with a watch rather than listing them over and over: at 10,000
/// entries the lists would cost the apiserver more than the operator does.
pub async fn wait_converged(api: &Api<ConfigEntry>, count: usize) -> Duration {
    let converged = |entry: &ConfigEntry| {
        entry.status.as_ref().is_some_and(|s| {
            s.latest_version == Some(1)
                && s.observed_generation == Some(1)
                && s.environments.iter().all(|e| e.version == Some(1))
        })
    };
    watch_until(api, count, "every entry to converge", converged).await
}

/// Waits, through a watch, until `count` objects of `api` have each once satisfied
/// `done`; returns how long that took.
pub async fn watch_until<K>(
    api: &Api<K>,
    count: usize,
    what: &str,
    done: impl Fn(&K) -> bool,
) -> Duration
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let started = Instant::now();
    let limit = Duration::from_secs(120 + count as u64 / 5);
    let mut finished = HashSet::new();
    let mut changes = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let watching = async {
        while finished.len() < count {
            let object = changes
                .next()
                .await
                .expect("the watch goes on")
                .expect("watch");
            if done(&object) {
                finished.insert(object.name_any());
            }
        }
    };
    tokio::time::timeout(limit, watching)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for {what}"));
    started.elapsed()
}

/// The requests the operator on `port` sent to each of `backends` so far.
pub async fn requests(port: u16, backends: &[&str]) -> Vec<f64> {
    let mut totals = Vec::new();
    for backend in backends {
        let series = format!("summit_config_backend_requests_total{{backend=\"{backend}\"}}");
        totals.push(crate::support::metric(port, &series).await);
    }
    totals
}

pub fn proc_status(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .map(|l| l[field.len()..].trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The resident memory of process `pid` now, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let kib = proc_status(pid, "VmRSS:");
    let kib = kib.trim_end_matches("kB").trim().parse::<f64>();
    kib.map_or(f64::NAN, |kib| kib / 1024.0)
}

/// CPU seconds (user + system) process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds the whole machine was busy so far (every core, idle and iowait aside).
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: f64 = cpu.iter().sum();
    let idle = cpu.get(3).unwrap_or(&0.0) + cpu.get(4).unwrap_or(&0.0);
    (total - idle) / 100.0
}

pub fn machine() -> String {
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
