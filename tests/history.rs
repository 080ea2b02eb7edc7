//! Every recorded version as a ConfigVersion, read with kubectl and the reader's own
//! RBAC: alice reads the history and its audit, mallory reads nothing, nobody but the
//! operator writes one, and only the newest few (and the live ones) are kept.

mod support;

use std::process::Command;

use serde_json::{Value, json};
use summit_config::api::v1alpha1::{ChangePhase, ConfigVersion};
use support::{
    Tenant, WAIT, append_approval, change, change_in, create, entry, env, eventually, merge,
    refused, setup_with, try_create, try_merge, wait_for, with_fields,
};

/// The real kubectl as `user`, in the tenant's namespace.
fn kubectl_as(s: &Tenant, user: &str, args: &[&str]) -> std::process::Output {
    Command::new(format!("{}/kubectl", env().var("SUMMIT_TOOLS_BIN")))
        .env("KUBECONFIG", env().kubeconfig_as(user))
        .args(["--namespace", &s.ns])
        .args(args)
        .output()
        .expect("run kubectl")
}

/// alice writes `payments` (development auto-approves, production needs two
/// approvals), asks for a bigger pool in production, and bob and carol approve it.
async fn approved_by_bob_and_carol(
    test: &str,
    operator_args: &[&str],
) -> (Tenant, support::Operator) {
    let roles = [
        ("alice", "summit-config-admin"),
        ("bob", "summit-config-approver"),
        ("carol", "summit-config-approver"),
    ];
    let (s, operator) = setup_with(test, &roles, operator_args).await;
    let spec = json!({
        "configId": s.config_id(),
        "data": {"host": "db", "pool": {"max": 10}},
        "environments": [
            {"name": "development"},
            {"name": "production", "approval": {"requiredApprovals": 2}},
        ],
    });
    create(&s.entries_as("alice").await, &entry("payments", spec)).await;
    let request = json!({"configEntry": "payments", "environment": "production",
                         "message": "a bigger pool", "data": {"host": "db", "pool": {"max": 40}}});
    let bigger = change("bigger-pool", "alice", with_fields(request, json!({})));
    create(&s.changes_as("alice").await, &bigger).await;
    for approver in ["bob", "carol"] {
        let approval = json!({"approver": approver, "comment": format!("{approver} checked")});
        append_approval(&s.changes_as(approver).await, "bigger-pool", approval)
            .await
            .expect("an approval");
    }
    change_in(&s.changes(), "bigger-pool", ChangePhase::Applied).await;
    (s, operator)
}

/// Waits until ConfigVersion `name` satisfies `ready`, read as `user` with kubectl.
async fn version_as(s: &Tenant, user: &str, name: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let what = format!("ConfigVersion {name} as {user} sees it");
    eventually(&what, WAIT, || async {
        let output = kubectl_as(s, user, &["get", "configversion", name, "-o", "json"]);
        let object: Value = serde_json::from_slice(&output.stdout).ok()?;
        ready(&object).then_some(object)
    })
    .await
}

#[tokio::test]
async fn alice_reads_the_history_and_its_audit_and_mallory_reads_nothing() {
    let (s, _operator) = approved_by_bob_and_carol("history-read", &[]).await;
    let live_in = |v: &Value| v["status"]["liveIn"].as_str().map(str::to_owned);
    let v2 = version_as(&s, "alice", "payments-v2", |v| {
        live_in(v).as_deref() == Some("production")
    })
    .await;
    assert_eq!(
        v2["spec"]["data"],
        json!({"host": "db", "pool": {"max": 40}})
    );
    assert_eq!(v2["spec"]["configId"], s.config_id());
    let steps: Vec<(String, String)> = v2["status"]["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .map(|s| {
            (
                s["event"].as_str().unwrap().to_owned(),
                s["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let step = |event: &str, actor: &str| (event.to_owned(), actor.to_owned());
    for expected in [
        step("requested", "alice"),
        step("approved", "bob"),
        step("approved", "carol"),
    ] {
        assert!(steps.contains(&expected), "{expected:?} not in {steps:?}");
    }
    assert!(
        steps.iter().any(|(event, _)| event == "applied"),
        "{steps:?}"
    );
    version_as(&s, "alice", "payments-v1", |v| {
        live_in(v).as_deref() == Some("development")
    })
    .await;

    // The table kubectl prints: config id, version, where it is live, author.
    let table = kubectl_as(&s, "alice", &["get", "configversions"]);
    let table = String::from_utf8_lossy(&table.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("payments-v2"))
        .unwrap_or_else(|| panic!("no payments-v2 in:\n{table}"));
    for column in [s.config_id().as_str(), "2", "production"] {
        assert!(
            row.split_whitespace().any(|c| c == column),
            "{column} not in {row}"
        );
    }

    // mallory holds no role here: not a name, not a count.
    let denied = kubectl_as(&s, "mallory", &["get", "configversions"]);
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("forbidden"), "{stderr}");
    assert!(denied.stdout.is_empty());
}

#[tokio::test]
async fn nobody_but_the_operator_writes_a_config_version() {
    let (s, _operator) = approved_by_bob_and_carol("history-guarded", &[]).await;
    let before = version_as(&s, "alice", "payments-v2", |v| {
        v["status"]["liveIn"] == "production"
    })
    .await;
    let versions = s.api::<ConfigVersion>();

    // The cluster admin is held by the admission policy like anyone else.
    let forged = json!({"spec": {"data": {"host": "evil"}}, "status": {"liveIn": "production"}});
    refused(
        try_merge(&versions, "payments-v2", forged).await,
        "written by the summit-config operator alone",
    );
    let mut fake: ConfigVersion = serde_json::from_value(before.clone()).expect("a ConfigVersion");
    fake.metadata = kube::api::ObjectMeta {
        name: Some("payments-v3".into()),
        ..Default::default()
    };
    refused(
        try_create(&versions, &fake).await,
        "written by the summit-config operator alone",
    );
    let deleted = versions.delete("payments-v2", &Default::default()).await;
    refused(
        deleted.map(|_| ()),
        "written by the summit-config operator alone",
    );
    // alice's role reads them and writes nothing.
    let alice = s.api_as::<ConfigVersion>("alice").await;
    refused(
        alice
            .delete("payments-v2", &Default::default())
            .await
            .map(|_| ()),
        "forbidden",
    );

    let after = version_as(&s, "alice", "payments-v2", |_| true).await;
    assert_eq!(before["spec"], after["spec"]);
    assert_eq!(before["status"], after["status"]);
    assert_eq!(
        before["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );
    assert!(
        versions
            .get_opt("payments-v3")
            .await
            .expect("read")
            .is_none()
    );
}

#[tokio::test]
async fn only_the_newest_versions_and_the_live_ones_are_kept() {
    let (s, _operator) = approved_by_bob_and_carol("history-kept", &["--history-keep", "2"]).await;
    // Three more versions in development; production stays on version 2.
    for (max, version) in [(11, 3), (12, 4), (13, 5)] {
        let data = json!({"spec": {"data": {"host": "db", "pool": {"max": max}}}});
        merge(&s.entries_as("alice").await, "payments", data).await;
        wait_for(&s.entries(), "payments", "the edit recorded", |e| {
            e.status.as_ref().and_then(|s| s.latest_version) == Some(version)
        })
        .await;
    }
    let versions = s.api::<ConfigVersion>();
    let kept = eventually("the history to keep versions 2, 4 and 5", WAIT, || async {
        let list = versions.list(&Default::default()).await.ok()?;
        let mut kept: Vec<i64> = list.items.iter().map(|v| v.spec.version).collect();
        kept.sort();
        (kept == [2, 4, 5]).then_some(list)
    })
    .await;
    let live: Vec<_> = kept
        .items
        .iter()
        .map(|v| {
            v.status
                .as_ref()
                .and_then(|s| s.live_in.clone())
                .unwrap_or_default()
        })
        .collect();
    assert!(live.contains(&"production".to_owned()), "{live:?}");
    assert!(live.contains(&"development".to_owned()), "{live:?}");
}

/// A failure is one line on stderr, with `code`, saying `what`.
fn fails(result: (i32, String, String), code: i32, what: &str) {
    let (status, _, stderr) = result;
    assert_eq!(status, code, "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(what), "{stderr}");
}

#[tokio::test]
async fn the_command_line_reads_history_as_its_caller() {
    let (s, _operator) = approved_by_bob_and_carol("history-cli", &[]).await;
    version_as(&s, "alice", "payments-v2", |v| {
        v["status"]["liveIn"] == "production"
    })
    .await;

    let (code, versions, _) = s.summit_as("alice", &["versions", "payments"]);
    assert_eq!(code, 0);
    let numbers: Vec<&str> = versions
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(numbers, ["1", "2"], "{versions}");

    // Exactly the changed key, then the unified diff.
    let (code, diff, _) = s.summit_as(
        "alice",
        &["diff", "payments", "1", "2", "--env", "production"],
    );
    assert_eq!(code, 0);
    assert_eq!(diff.lines().next(), Some("changed: $.pool.max"), "{diff}");
    assert!(
        diff.contains("-    \"max\": 10") && diff.contains("+    \"max\": 40"),
        "{diff}"
    );
    let (_, live, _) = s.summit_as(
        "alice",
        &["diff", "payments", "1", "--env", "production", "-o", "json"],
    );
    let live: Value = serde_json::from_str(&live).expect("JSON");
    assert_eq!(live["to"], 2);
    assert_eq!(live["changed"], json!(["$.pool.max"]));

    // The audit names the proposer and both approvers.
    let (code, audit, _) = s.summit_as("alice", &["audit", "payments", "--version", "2"]);
    assert_eq!(code, 0);
    for (event, actor) in [
        ("requested", "alice"),
        ("approved", "bob"),
        ("approved", "carol"),
    ] {
        assert!(
            audit
                .lines()
                .any(|l| l.split_whitespace().any(|c| c == event)
                    && l.split_whitespace().any(|c| c == actor)),
            "{event} by {actor} not in\n{audit}"
        );
    }

    // mallory has no role here; bad input says what is wrong, in one line, with its code.
    fails(
        s.summit_as("mallory", &["versions", "payments"]),
        4,
        "forbidden",
    );
    fails(
        s.summit_as("mallory", &["audit", "payments"]),
        4,
        "forbidden",
    );
    fails(
        s.summit_as("alice", &["diff", "payments", "1", "9"]),
        3,
        "has no version 9",
    );
    fails(
        s.summit_as("alice", &["versions", "nothing-here"]),
        3,
        "does not exist",
    );
    fails(
        s.summit_as("bob", &["approve", "bigger-pool"]),
        5,
        "only pending changes",
    );
}

#[tokio::test]
async fn kubectl_finds_the_plugin() {
    let (s, _operator) = approved_by_bob_and_carol("history-plugin", &[]).await;
    let plugins = tempfile::tempdir().expect("a folder on PATH");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_summit-config"),
        plugins.path().join("kubectl-summit"),
    )
    .expect("kubectl-summit");
    let path = format!(
        "{}:{}",
        plugins.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new(format!("{}/kubectl", env().var("SUMMIT_TOOLS_BIN")))
        .env("KUBECONFIG", env().kubeconfig_as("alice"))
        .env("PATH", path)
        .args(["summit", "list", "--namespace", &s.ns])
        .output()
        .expect("kubectl summit");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("payments"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(row.contains(&s.config_id()), "{row}");
}

#[tokio::test]
async fn versions_watch_prints_each_new_version() {
    use std::io::Read;
    use std::sync::{Arc, Mutex};

    let (s, _operator) = approved_by_bob_and_carol("history-watch", &[]).await;
    version_as(&s, "alice", "payments-v2", |_| true).await;
    let mut watching = support::summit(
        &env().kubeconfig_as("alice"),
        &s.ns,
        &["versions", "payments", "--watch"],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .expect("summit-config versions --watch");
    let printed = Arc::new(Mutex::new(String::new()));
    let mut stdout = watching.stdout.take().expect("stdout");
    let sink = printed.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(read @ 1..) = stdout.read(&mut chunk) {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..read]));
        }
    });
    let shows = |version: &str| {
        let printed = printed.lock().unwrap().clone();
        printed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(version))
    };
    eventually("the first table", WAIT, || async {
        shows("2").then_some(())
    })
    .await;
    assert!(!shows("3"));
    let data = json!({"spec": {"data": {"host": "db", "pool": {"max": 11}}}});
    merge(&s.entries_as("alice").await, "payments", data).await;
    eventually("version 3 printed by the watch", WAIT, || async {
        shows("3").then_some(())
    })
    .await;
    watching.kill().expect("stop the watch");
    let _ = watching.wait();
}
