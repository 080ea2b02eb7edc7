//! Converges N ConfigEntries from cold against the real control plane, PostgreSQL and
//! Consul, and prints the time, entries per second, the operator's peak RSS and its
//! apiserver writes per entry, with the machine it ran on; beside them, the write
//! ceiling measured in the same run (`common/ceiling.rs`), and the operator's share of
//! it.
//!
//!     make bench                       # 1,000 entries
//!     make bench ENTRIES=10000
//!
//! (`cargo bench --bench converge -- --entries N` against a running `hack/env-up.sh`.)

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

#[path = "common/ceiling.rs"]
mod ceiling;

#[path = "common/unrelated.rs"]
mod unrelated;

use std::time::Instant;

use kube::Api;
use summit_config::api::v1alpha1::{ConfigEntry, ConfigVersion};
use support::{Operator, free_port, fresh_namespace, metric, operator_writes};

/// How many objects of 1 MiB that are none of its business the operator meets once it
/// converged.
const UNRELATED: usize = 1_000;

#[tokio::main]
async fn main() {
    let Some(entries) = common::entries_argument("converge", 1_000) else {
        return;
    };
    // The ceiling first, in a namespace of its own that the operator does not watch.
    let (client, ceiling_ns) = fresh_namespace("bench-ceiling").await;
    let ceiling = ceiling::measure(&client, &ceiling_ns, entries).await;
    let (client, ns) = fresh_namespace("bench-converge").await;
    let api: Api<ConfigEntry> = Api::namespaced(client.clone(), &ns);

    // Everything exists before the operator starts: a cold start over a full cluster.
    common::create_entries(&api, &ns, entries).await;

    let port = free_port();
    let busy = common::machine_busy_seconds();
    let started = Instant::now();
    let operator = Operator::start_with(&ns, &["--http-addr", &format!("127.0.0.1:{port}")]);
    common::wait_converged(&api, entries).await;
    let elapsed = started.elapsed();
    wait_for_history(&client, &ns, entries).await;
    let history = started.elapsed();

    let writes = operator_writes(port).await;
    let per_entry = |total: f64| total / entries as f64;
    let backends = ["kubernetes", "postgres", "consul"];
    let totals = common::requests(port, &backends).await;
    let requests: Vec<_> = backends
        .iter()
        .zip(totals.into_iter().map(per_entry))
        .collect();
    let series = "summit_config_reconciles_total{kind=\"ConfigEntry\"}";
    let reconciles = per_entry(metric(port, series).await);
    let peak_rss = common::proc_status(operator.pid(), "VmHWM:");
    let cpu = common::cpu_seconds(operator.pid());
    let busy = common::machine_busy_seconds() - busy;

    // Then a cluster full of large objects that are none of its business.
    let unrelated = unrelated::cost(&client, &ns, UNRELATED, (operator.pid(), port)).await;
    drop(operator);

    println!("converge: {entries} entries x 2 environments, from a cold start of the operator");
    let (seconds, rate) = (
        elapsed.as_secs_f64(),
        entries as f64 / elapsed.as_secs_f64(),
    );
    println!("  time            {seconds:.1} s\n  entries/s       {rate:.0}");
    println!(
        "  history         {:.1} s: every version a ConfigVersion, live where it is",
        history.as_secs_f64()
    );
    println!("  operator RSS    {peak_rss} (peak)");
    println!(
        "  CPU             operator {cpu:.1} s, whole machine {busy:.1} s of {:.1} s available",
        elapsed.as_secs_f64()
            * std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
    );
    println!(
        "  apiserver writes per entry  {:.2} (status, ConfigMaps, ConfigVersion; Events not counted)",
        writes / entries as f64
    );
    let requests: Vec<String> = requests
        .iter()
        .map(|(b, n)| format!("{b} {n:.1}"))
        .collect();
    println!("  requests per entry  {}", requests.join(", "));
    println!("  reconciles per entry  {reconciles:.1}");
    println!(
        "  unrelated       {UNRELATED} objects of 1 MiB (ConfigMaps, Secrets) in its namespace: RSS {:+.1} MiB, {:.0} requests",
        unrelated.rss_mib, unrelated.requests
    );
    print_share(entries, elapsed, ceiling);
    println!("  machine         {}", common::machine());
}

/// The write ceiling measured in the same run, and the operator's share of it.
fn print_share(entries: usize, elapsed: std::time::Duration, ceiling: std::time::Duration) {
    let rate = |time: std::time::Duration| entries as f64 / time.as_secs_f64();
    println!(
        "  ceiling         {:.1} s, {:.0} entries/s: the same minimum writes by a naive client",
        ceiling.as_secs_f64(),
        rate(ceiling)
    );
    println!(
        "  of the ceiling  {:.0}%",
        100.0 * rate(elapsed) / rate(ceiling)
    );
}

/// Waits until every entry's version is readable as a ConfigVersion, live in both
/// environments: the history the operator writes after converging.
async fn wait_for_history(client: &kube::Client, ns: &str, entries: usize) {
    let versions: Api<ConfigVersion> = Api::namespaced(client.clone(), ns);
    let both = Some("development,production");
    common::watch_until(&versions, entries, "every entry's history", |v| {
        v.status.as_ref().and_then(|s| s.live_in.as_deref()) == both
    })
    .await;
}
