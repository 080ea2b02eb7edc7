//! A staged environment against the apiserver alone: a spec edit there goes through a
//! ConfigChange that carries the canary, even with no approval needed; the version
//! reaches the canary ConfigMap and its consumer, never the main projection, and a
//! canary whose consumer is not ready at the end of the bake time is rolled back by
//! itself. (On a real node, with real pods becoming ready or not: tests/canary.rs.)

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, api::ListParams};
use serde_json::{Value, json};
use summit_config::api::v1alpha1::{ChangePhase, ConfigChange, RolloutStep};
use support::change as change_named;
use support::prometheus::Exporter;
use support::{
    WAIT, column_of, create, entry, eventually, merge, projected, refused, setup, try_create,
    try_merge, wait_for,
};

fn workload(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "busybox"}]},
            },
        },
    }))
    .expect("a Deployment")
}

fn staged(config_id: &str, bake: &str) -> Value {
    json!({
        "configId": config_id,
        "data": {"pool": 10},
        "environments": [{
            "name": "production",
            "rollout": {
                "canaryTargets": [{"kind": "Deployment", "name": "api-canary"}],
                "bakeTime": bake,
            },
        }],
    })
}

#[tokio::test]
async fn a_spec_edit_bakes_on_the_canary_and_an_unready_one_is_rolled_back() {
    let (s, _operator) = setup("rollout-spec").await;
    let deployments: Api<Deployment> = s.api();
    create(&deployments, &workload("api-canary")).await;
    create(&s.entries(), &entry("api", staged(&s.config_id(), "3s"))).await;
    let config_maps = s.config_maps();
    projected(&config_maps, "api-production-canary", |c| c["pool"] == 10).await;
    projected(&config_maps, "api-production", |c| c["pool"] == 10).await;
    let main = config_maps.get("api-production").await.expect("main");

    merge(&s.entries(), "api", json!({"spec": {"data": {"pool": 11}}})).await;
    projected(&config_maps, "api-production-canary", |c| c["pool"] == 11).await;
    let changes: Api<ConfigChange> = s.api();
    let change = eventually("the change carrying the canary", WAIT, || async {
        let list = changes.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|c| c.spec.config_entry == "api")
    })
    .await;
    let name = change.metadata.name.clone().expect("a name");
    let failed = wait_for(&changes, &name, "the canary rolled back", |c| {
        c.status.as_ref().and_then(|s| s.phase) == Some(ChangePhase::Failed)
    })
    .await;
    let status = failed.status.expect("status");
    assert_eq!(
        status.rollout.expect("rollout").step,
        RolloutStep::RolledBack
    );
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(ready.reason, "CanaryFailed");
    assert!(
        ready.message.contains("api-canary is not ready"),
        "{}",
        ready.message
    );
    projected(&config_maps, "api-production-canary", |c| c["pool"] == 10).await;
    let after = config_maps.get("api-production").await.expect("main");
    assert_eq!(
        after.metadata.resource_version,
        main.metadata.resource_version
    );
    // Each step is in the audit trail, against version 2; nothing applied it.
    let steps: Vec<String> = column_of(
        "SELECT (changes ->> 'event') || ' ' || version FROM config_audit WHERE config_id = $1 AND changes ->> 'event' IN ('canaryStarted', 'canaryRolledBack', 'applied') ORDER BY timestamp",
        &s.config_id(),
    )
    .await;
    assert_eq!(
        steps,
        ["applied 1", "canaryStarted 2", "canaryRolledBack 2"]
    );
}

#[tokio::test]
async fn a_rollout_needs_a_canary_and_a_bake_time() {
    let (s, _operator) = setup("rollout-invalid").await;
    let mut no_canary = staged(&s.config_id(), "30s");
    no_canary["environments"][0]["rollout"]["canaryTargets"] = json!([]);
    refused(
        try_create(&s.entries(), &entry("api", no_canary)).await,
        "canaryTargets",
    );
    let forever = staged(&s.config_id(), "soon");
    refused(
        try_create(&s.entries(), &entry("api", forever)).await,
        "bakeTime",
    );
}

/// `staged`, with its canary judged by `metrics` as well.
fn measured(config_id: &str, bake: &str, metrics: Value) -> Value {
    let mut spec = staged(config_id, bake);
    spec["environments"][0]["rollout"]["metrics"] = metrics;
    spec
}

/// The entry's ConfigChange once it has failed, and the reason its Ready condition gives.
async fn failed_change(changes: &Api<ConfigChange>, entry: &str) -> (ConfigChange, String) {
    let failed = eventually("the canary rolled back", WAIT, || async {
        let list = changes.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|c| {
            let phase = c.status.as_ref().and_then(|s| s.phase);
            c.spec.config_entry == entry && phase == Some(ChangePhase::Failed)
        })
    })
    .await;
    let status = failed.status.as_ref().expect("status");
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    let message = ready.expect("Ready").message.clone();
    (failed, message)
}

#[tokio::test]
async fn a_metric_out_of_bounds_rolls_the_canary_back_before_the_bake_ends() {
    let (s, _operator) = setup("rollout-metric").await;
    let errors = Exporter::start(&s.ns).await;
    // No canary workload: no pod of an older version serves, so the metric speaks for
    // the version from the first look (on a node, once the canary pods run it).
    let metrics = json!([{"name": "errors", "query": "max(app_errors)", "failAbove": 0}]);
    let spec = measured(&s.config_id(), "10m", metrics);
    create(&s.entries(), &entry("api", spec)).await;
    let config_maps = s.config_maps();
    projected(&config_maps, "api-production", |c| c["pool"] == 10).await;
    let main = config_maps.get("api-production").await.expect("main");

    errors.set(5.0).await;
    merge(&s.entries(), "api", json!({"spec": {"data": {"pool": 11}}})).await;
    // Ten minutes of bake: only the metric can end it within the wait.
    let (failed, message) = failed_change(&s.api(), "api").await;
    assert!(
        message.contains(": metric \"errors\" is 5, above 0;"),
        "{message}"
    );
    let rollout = failed.status.and_then(|s| s.rollout).expect("rollout");
    assert_eq!(rollout.step, RolloutStep::RolledBack);
    projected(&config_maps, "api-production-canary", |c| c["pool"] == 10).await;
    let after = config_maps.get("api-production").await.expect("main");
    assert_eq!(
        after.metadata.resource_version,
        main.metadata.resource_version
    );
}

#[tokio::test]
async fn a_metric_query_reads_its_own_namespace_and_nothing_else() {
    let roles = [("mallory", "summit-config-admin")];
    let (s, _operator) = support::setup_with("rollout-peek", &roles, &[]).await;
    // Another tenant's series, which mallory's queries reach for by name and by sum.
    let victim = format!("{}-victim", s.ns);
    let theirs = Exporter::start(&victim).await;
    theirs.set(5.0).await;
    let _ours = Exporter::start(&s.ns).await;
    let peek = format!("max(app_errors{{namespace=\"{victim}\"}}) or vector(0)");
    let metrics = json!([
        {"name": "peek", "query": peek, "failAbove": 1},
        {"name": "sum", "query": "sum(app_errors)", "failAbove": 1},
    ]);
    let mallory = s.entries_as("mallory").await;
    create(
        &mallory,
        &entry("api", measured(&s.config_id(), "3s", metrics)),
    )
    .await;
    projected(&s.config_maps(), "api-production", |c| c["pool"] == 10).await;
    merge(&mallory, "api", json!({"spec": {"data": {"pool": 11}}})).await;
    // Held to her namespace, both queries come to 0: the canary fails only because its
    // consumer does not exist, and no status names the other tenant's value.
    let (_, message) = failed_change(&s.api(), "api").await;
    assert!(message.contains("api-canary does not exist"), "{message}");
    assert!(!message.contains("is 5"), "{message}");

    // A query that does not parse is refused before any version waits on it.
    let broken = json!([{"name": "broken", "query": "sum(rate(", "failAbove": 1}]);
    let spec = json!({"spec": measured(&s.config_id(), "3s", broken)});
    merge(&s.entries(), "api", spec).await;
    let entries = s.entries();
    let invalid = wait_for(&entries, "api", "refused as InvalidMetric", |e| {
        let conditions = e.status.as_ref().map(|s| s.conditions.as_slice());
        conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.reason == "InvalidMetric")
    })
    .await;
    let conditions = invalid.status.expect("status").conditions;
    let refused = conditions.iter().find(|c| c.reason == "InvalidMetric");
    let message = &refused.expect("InvalidMetric").message;
    assert!(
        message.starts_with("environment \"production\": metric \"broken\": "),
        "{message}"
    );
}

#[tokio::test]
async fn a_change_never_stages_a_canary_where_its_entry_may_not_project() {
    let roles = [("mallory", "summit-config-admin")];
    let (s, _operator) = support::setup_with("rollout-retarget", &roles, &[]).await;
    let victim = support::namespace(&s.admin(), "rollout-victim").await;
    let mallory = s.entries_as("mallory").await;
    create(&mallory, &entry("api", staged(&s.config_id(), "3s"))).await;
    projected(&s.config_maps(), "api-production", |c| c["pool"] == 10).await;
    // She points production at the other tenant's namespace (the rollout as it was),
    // then asks for a version there: its canary would read that namespace's workloads.
    let mut moved = staged(&s.config_id(), "3s");
    moved["environments"][0]["configMap"] = json!({"namespace": victim});
    merge(&mallory, "api", json!({"spec": moved})).await;
    let proposal = json!({"configEntry": "api", "environment": "production", "data": {"pool": 11}});
    create(
        &s.changes_as("mallory").await,
        &change_named("peek", "mallory", proposal),
    )
    .await;
    let changes: Api<ConfigChange> = s.api();
    let failed = support::change_in(&changes, "peek", ChangePhase::Failed).await;
    let status = failed.status.expect("status");
    assert!(
        status.rollout.is_none(),
        "nothing staged: {:?}",
        status.rollout
    );
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    let message = &ready.expect("Ready").message;
    assert!(
        message.contains(&format!("target namespace {victim:?} is not allowed")),
        "{message}"
    );
}

#[tokio::test]
async fn scoped_queries_are_promql_that_prometheus_runs() {
    // What the operator sends is its own rendering of the tenant's query: Prometheus
    // must read it as the same query, held to the namespace.
    // Each query, and how many selectors it has: every one must be held.
    let queries = [
        (
            r#"sum(rate(http_requests_total{code=~"5..",job!="x"}[1m30s])) / sum(rate(http_requests_total[5m] offset 1h))"#,
            2,
        ),
        (
            r#"histogram_quantile(0.99, sum by (le) (rate(latency_bucket{path="/a\"b"}[2m])))"#,
            1,
        ),
        (
            r#"max_over_time(deriv(queue_depth[2m])[10m:1m]) > bool 3"#,
            1,
        ),
        (
            r#"-avg without (pod) (up{job="a"}) + on (instance) group_left count(up @ start())"#,
            2,
        ),
        (
            r#"label_replace(up, "x", "$1", "job", "(.*)") unless absent(up)"#,
            2,
        ),
        (r#"topk(1, {__name__=~"app_.+"}) or vector(0)"#, 1),
    ];
    for (query, selectors) in queries {
        let scoped = summit_config::core::rollout::metric::scoped(query, "namespace", "team-a")
            .expect("scoped");
        let answer = support::prometheus::ask(&scoped).await;
        assert_eq!(answer["status"], "success", "{query} → {scoped}: {answer}");
        let held = scoped.matches(r#"namespace="team-a""#).count();
        assert_eq!(held, selectors, "{scoped}");
    }
}

/// The ConfigChange carrying version `version` to the canary, once it bakes there.
async fn baking(changes: &Api<ConfigChange>, version: i64) -> String {
    let what = format!("version {version} on the canary");
    let change = eventually(&what, WAIT, || async {
        let list = changes.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|c| {
            let rollout = c.status.as_ref().and_then(|s| s.rollout.as_ref());
            rollout.is_some_and(|r| r.version == version && r.step == RolloutStep::Canary)
        })
    })
    .await;
    change.metadata.name.expect("a name")
}

#[tokio::test]
async fn an_approver_promotes_or_aborts_a_canary_and_nobody_else_can() {
    let roles = [
        ("alice", "summit-config-admin"),
        ("bob", "summit-config-approver"),
        ("carol", "summit-config-approver"),
    ];
    let (s, _operator) = support::setup_with("rollout-decide", &roles, &[]).await;
    let deployments: Api<Deployment> = s.api();
    create(&deployments, &workload("api-canary")).await;
    create(&s.entries(), &entry("api", staged(&s.config_id(), "10m"))).await;
    let config_maps = s.config_maps();
    projected(&config_maps, "api-production", |c| c["pool"] == 10).await;
    let changes: Api<ConfigChange> = s.api();

    merge(&s.entries(), "api", json!({"spec": {"data": {"pool": 11}}})).await;
    let change = baking(&changes, 2).await;
    let before = changes.get(&change).await.expect("the change");
    // mallory holds no role; alice edits but may not approve.
    let (code, _, stderr) =
        s.summit_as("mallory", &["rollout", "promote", &change, "--reason", "x"]);
    assert_eq!(code, 4, "{stderr}");
    let (code, _, stderr) = s.summit_as("alice", &["rollout", "promote", &change, "--reason", "x"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("may not promote or abort"), "{stderr}");
    let unchanged = changes.get(&change).await.expect("the change");
    assert_eq!(unchanged.spec, before.spec);
    // Nor may alice skip the canary by editing the rollout away, or shortening it.
    let alice = s.entries_as("alice").await;
    let away = json!({"spec": {"environments": [{"name": "production"}]}});
    refused(
        try_merge(&alice, "api", away).await,
        "may not change or remove the staged rollout",
    );

    let (code, _, stderr) =
        s.summit_as("bob", &["rollout", "abort", &change, "--reason", "p99 up"]);
    assert_eq!(code, 0, "{stderr}");
    let failed = wait_for(&changes, &change, "aborted", |c| {
        c.status.as_ref().and_then(|s| s.phase) == Some(ChangePhase::Failed)
    })
    .await;
    let message = failed
        .status
        .and_then(|s| s.rollout)
        .and_then(|r| r.message);
    assert_eq!(message.as_deref(), Some("aborted by bob: p99 up"));
    projected(&config_maps, "api-production-canary", |c| c["pool"] == 10).await;
    let (code, _, stderr) = s.summit_as("carol", &["rollout", "promote", &change, "--reason", "x"]);
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.contains("neither on a canary nor splitting"),
        "{stderr}"
    );
    // Around the CLI, the admission policy refuses a decision on a change that is not
    // baking.
    let nowhere = json!({"configEntry": "api", "environment": "staging", "data": {"pool": 1}});
    create(
        &s.changes_as("alice").await,
        &change_named("nowhere", "alice", nowhere),
    )
    .await;
    wait_for(&changes, "nowhere", "refused", |c| {
        c.status.as_ref().and_then(|s| s.phase) == Some(ChangePhase::Failed)
    })
    .await;
    let decision = json!({"spec": {"rolloutDecision": {"action": "Promote", "decidedBy": "carol", "reason": "x"}}});
    refused(
        try_merge(&s.changes_as("carol").await, "nowhere", decision).await,
        "only a version baking on its canary",
    );

    merge(&s.entries(), "api", json!({"spec": {"data": {"pool": 12}}})).await;
    let change = baking(&changes, 3).await;
    let (code, _, stderr) = s.summit_as(
        "carol",
        &["rollout", "promote", &change, "--reason", "clean"],
    );
    assert_eq!(code, 0, "{stderr}");
    projected(&config_maps, "api-production", |c| c["pool"] == 12).await;
    let applied = changes.get(&change).await.expect("the change");
    let rollout = applied.status.and_then(|s| s.rollout).expect("rollout");
    assert_eq!(rollout.step, RolloutStep::Promoted);
    assert_eq!(rollout.message.as_deref(), Some("promoted by carol: clean"));
}
