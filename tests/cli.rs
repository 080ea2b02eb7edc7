//! The people-facing commands, run as the real binary by real users against the real
//! apiserver: nobody types their own name, and every refusal reaches stderr with a
//! non-zero exit.

mod support;

use std::{process::Output, time::Duration};

use kube::{Api, api::PostParams};
use serde_json::json;
use summit_config::api::v1alpha1::{ChangePhase, ConfigChange, ConfigEntry};
use support::{Operator, env, eventually, grant, install_crds, namespace};

const WAIT: Duration = Duration::from_secs(30);

/// Runs `summit-config args...` as `user` in `ns`.
fn summit(user: &str, ns: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_summit-config"))
        .args(args)
        .arg("--namespace")
        .arg(ns)
        .arg("--kubeconfig")
        .arg(env().kubeconfig_as(user))
        .output()
        .expect("run summit-config")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn request_approve_and_reject_from_the_command_line() {
    let admin = env().admin().await;
    install_crds(&admin).await;
    let ns = namespace(&admin, "cli").await;
    grant(&admin, &ns, "alice", "summit-config-admin").await;
    grant(&admin, &ns, "bob", "summit-config-approver").await;
    let _operator = Operator::start(&ns);
    let entry: ConfigEntry = serde_json::from_value(json!({
        "apiVersion": "config.summit.io/v1alpha1",
        "kind": "ConfigEntry",
        "metadata": {"name": "payments"},
        "spec": {
            "configId": format!("tests/{ns}"),
            "data": {"pool": {"max": 10}},
            "environments": [{"name": "production", "approval": {"requiredApprovals": 1}}],
        },
    }))
    .expect("entry");
    Api::<ConfigEntry>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &entry)
        .await
        .expect("create entry");

    // alice proposes; the apiserver, not alice, says who she is.
    let patch = std::env::temp_dir().join(format!("{ns}-patch.yaml"));
    std::fs::write(&patch, "pool:\n  max: 20\n").expect("write patch");
    let patch = patch.to_str().expect("path");
    let set = summit(
        "alice",
        &ns,
        &[
            "patch",
            "payments",
            patch,
            "--env",
            "production",
            "-m",
            "more connections",
            "--name",
            "more",
        ],
    );
    assert!(set.status.success(), "{}", stderr(&set));
    assert!(
        stdout(&set).contains("requested by alice"),
        "{}",
        stdout(&set)
    );
    let changes: Api<ConfigChange> = Api::namespaced(admin.clone(), &ns);
    assert_eq!(
        changes.get("more").await.expect("change").spec.requested_by,
        "alice"
    );

    // Bad input is refused on stderr with a non-zero exit.
    let unknown = summit(
        "alice",
        &ns,
        &[
            "rollback", "payments", "1", "--env", "staging", "-m", "back",
        ],
    );
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("has no environment \"staging\" (it has production)"),
        "{}",
        stderr(&unknown)
    );
    let own = summit("alice", &ns, &["approve", "more"]);
    assert!(!own.status.success());
    assert!(
        stderr(&own).contains("nobody approves their own change"),
        "{}",
        stderr(&own)
    );

    // bob sees it pending and approves it.
    eventually("the change to be pending", WAIT, || async {
        let status = changes.get("more").await.ok()?.status?;
        (status.phase == Some(ChangePhase::Pending)).then_some(())
    })
    .await;
    let pending = summit("bob", &ns, &["pending", "--env", "production"]);
    assert!(pending.status.success(), "{}", stderr(&pending));
    assert!(stdout(&pending).contains("more"), "{}", stdout(&pending));
    assert!(stdout(&pending).contains("alice"), "{}", stdout(&pending));
    let approved = summit("bob", &ns, &["approve", "more", "--comment", "load tested"]);
    assert!(approved.status.success(), "{}", stderr(&approved));
    let change = eventually("the change to apply", WAIT, || async {
        let change = changes.get("more").await.ok()?;
        (change.status.as_ref()?.phase == Some(ChangePhase::Applied)).then_some(change)
    })
    .await;
    assert_eq!(change.spec.approvals[0].approver, "bob");
    assert_eq!(
        change.spec.approvals[0].comment.as_deref(),
        Some("load tested")
    );

    // A rejection is final, and a decided change takes no more decisions.
    let again = summit(
        "alice",
        &ns,
        &[
            "rollback",
            "payments",
            "1",
            "--env",
            "production",
            "-m",
            "back",
            "--name",
            "back",
        ],
    );
    assert!(again.status.success(), "{}", stderr(&again));
    let rejected = summit(
        "bob",
        &ns,
        &["reject", "back", "--reason", "not during the freeze"],
    );
    assert!(rejected.status.success(), "{}", stderr(&rejected));
    eventually("the change to be rejected", WAIT, || async {
        let status = changes.get("back").await.ok()?.status?;
        (status.phase == Some(ChangePhase::Rejected)).then_some(())
    })
    .await;
    let late = summit("bob", &ns, &["approve", "back"]);
    assert!(!late.status.success());
    assert!(stderr(&late).contains("is Rejected"), "{}", stderr(&late));
}
