//! One DriftCheck over N ConfigEntries (2,000 by default, two environments each)
//! against the real control plane, PostgreSQL and Consul: how long a pass takes and how
//! many requests it sends to each backend, as the operator counts them
//! (`summit_config_backend_requests_total`), with the machine it ran on.
//!
//!     make bench-drift                 # 2,000 entries
//!     make bench-drift ENTRIES=5000
//!
//! (`cargo bench --bench drift -- --entries N` against a running `hack/env-up.sh`.)

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::time::{Duration, Instant};

use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use summit_config::api::v1alpha1::{ConfigEntry, DriftCheck};
use support::{Operator, eventually, free_port, fresh_namespace, metric};

const BACKENDS: [&str; 3] = ["kubernetes", "consul", "postgres"];
/// Passes measured after the first one.
const PASSES: usize = 5;

#[tokio::main]
async fn main() {
    let Some(entries) = common::entries_argument("drift", 2_000) else {
        return;
    };
    let (client, ns) = fresh_namespace("bench-drift").await;
    let api: Api<ConfigEntry> = Api::namespaced(client.clone(), &ns);
    common::create_entries(&api, &ns, entries).await;
    let port = free_port();
    let operator = Operator::start_with(&ns, &["--http-addr", &format!("127.0.0.1:{port}")]);
    common::wait_converged(&api, entries).await;

    // A check over every entry of the namespace, asked for by hand only.
    let checks: Api<DriftCheck> = Api::namespaced(client.clone(), &ns);
    let check: DriftCheck = serde_json::from_value(json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "DriftCheck",
        "metadata": {"name": "everything"},
        "spec": {"interval": "24h", "remediation": "Report"},
    }))
    .expect("check");
    checks
        .create(&PostParams::default(), &check)
        .await
        .expect("create the check");
    let limit = Duration::from_secs(120);
    eventually("the first pass", limit, || async {
        let status = checks.get("everything").await.ok()?.status?;
        (status.entries_checked == Some(entries as i32)).then_some(())
    })
    .await;

    // A restarted operator knows no recorded version yet: its first pass reads them.
    drop(operator);
    let operator = Operator::start_with(&ns, &["--http-addr", &format!("127.0.0.1:{port}")]);
    eventually("the operator to be ready", limit, || async {
        reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .ok()?
            .status()
            .is_success()
            .then_some(())
    })
    .await;
    settle(port).await;
    let cold = pass(&checks, port, "cold").await;
    let mut warm = Vec::new();
    for n in 0..PASSES {
        warm.push(pass(&checks, port, &format!("warm-{n}")).await);
    }
    let peak_rss = common::proc_status(operator.pid(), "VmHWM:");
    drop(operator);

    println!(
        "drift: one DriftCheck over {entries} entries x 2 environments ({} ConfigMaps, Consul keys and applied-state rows)",
        entries * 2
    );
    let report = |what: &str, passes: &[Pass]| {
        let n = passes.len() as f64;
        let mean = |f: &dyn Fn(&Pass) -> f64| passes.iter().map(f).sum::<f64>() / n;
        println!(
            "  {what}: {:.3} s per pass (the operator's measure), {:.3} s from request to status",
            mean(&|p| p.measured),
            mean(&|p| p.seen.as_secs_f64())
        );
        for (i, backend) in BACKENDS.iter().enumerate() {
            println!(
                "    {backend:<12} {:.1} requests per pass",
                mean(&|p| p.requests[i])
            );
        }
    };
    report("first pass after a restart", std::slice::from_ref(&cold));
    report(&format!("next {PASSES} passes"), &warm);
    println!("  operator RSS    {peak_rss} (peak)");
    println!("  machine         {}", common::machine());
}

/// What one pass cost.
struct Pass {
    /// The pass as the operator timed it.
    measured: f64,
    /// From asking to seeing the status report it.
    seen: Duration,
    /// Requests to each of [`BACKENDS`].
    requests: [f64; 3],
}

/// Asks for a check and waits for it to report, counting the operator's requests.
async fn pass(checks: &Api<DriftCheck>, port: u16, request: &str) -> Pass {
    let before = counts(port).await;
    let started = Instant::now();
    let ask = json!({"metadata": {"annotations": {"config.summit.io/check": request}}});
    checks
        .patch("everything", &PatchParams::default(), &Patch::Merge(&ask))
        .await
        .expect("ask for a check");
    let status = eventually(
        &format!("pass {request}"),
        Duration::from_secs(120),
        || async {
            let status = checks.get("everything").await.ok()?.status?;
            (status.last_handled_request.as_deref() == Some(request)).then_some(status)
        },
    )
    .await;
    let seen = started.elapsed();
    assert_eq!(status.drifted, Some(false), "{:?}", status.report);
    settle(port).await;
    let after = counts(port).await;
    let mut requests = [0.0; 3];
    for (i, count) in requests.iter_mut().enumerate() {
        *count = after[i] - before[i];
    }
    Pass {
        measured: metric(port, "summit_config_drift_check_duration_seconds").await,
        seen,
        requests,
    }
}

/// Requests sent so far to each backend.
async fn counts(port: u16) -> [f64; 3] {
    let mut counts = [0.0; 3];
    for (count, backend) in counts.iter_mut().zip(BACKENDS) {
        *count = metric(
            port,
            &format!("summit_config_backend_requests_total{{backend=\"{backend}\"}}"),
        )
        .await;
    }
    counts
}

/// Waits until the operator sends nothing for a second, so that a pass's count holds
/// that pass alone.
async fn settle(port: u16) {
    let mut last = counts(port).await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = counts(port).await;
        if now == last {
            return;
        }
        last = now;
    }
}
