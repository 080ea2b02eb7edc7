//! The people-facing commands, run as the real binary by real users against the real
//! apiserver: nobody types their own name, and every refusal reaches stderr with a
//! non-zero exit.

mod support;

use std::process::Output;

use serde_json::json;
use summit_config::api::v1alpha1::ChangePhase;
use support::{change_in, create, entry, env, setup_with};

/// Runs `summit-config args...` as `user` in `ns`.
fn summit(user: &str, ns: &str, args: &[&str]) -> Output {
    support::summit(&env().kubeconfig_as(user), ns, args)
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
    let roles = [
        ("alice", "summit-config-admin"),
        ("bob", "summit-config-approver"),
    ];
    let (s, _operator) = setup_with("cli", &roles, &[]).await;
    let ns = s.ns.as_str();
    let spec = json!({
        "configId": s.config_id(),
        "data": {"pool": {"max": 10}},
        "environments": [{"name": "production", "approval": {"requiredApprovals": 1}}],
    });
    create(&s.entries(), &entry("payments", spec)).await;

    // alice proposes; the apiserver, not alice, says who she is.
    let patch = std::env::temp_dir().join(format!("{ns}-patch.yaml"));
    std::fs::write(&patch, "pool:\n  max: 20\n").expect("write patch");
    let patch = patch.to_str().expect("path");
    let set = summit(
        "alice",
        ns,
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
    let changes = s.changes();
    assert_eq!(
        changes.get("more").await.expect("change").spec.requested_by,
        "alice"
    );

    // Bad input is refused on stderr with a non-zero exit.
    let unknown = summit(
        "alice",
        ns,
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
    let own = summit("alice", ns, &["approve", "more"]);
    assert!(!own.status.success());
    assert!(
        stderr(&own).contains("nobody approves their own change"),
        "{}",
        stderr(&own)
    );

    // bob sees it pending and approves it.
    change_in(&changes, "more", ChangePhase::Pending).await;
    let pending = summit("bob", ns, &["pending", "--env", "production"]);
    assert!(pending.status.success(), "{}", stderr(&pending));
    assert!(stdout(&pending).contains("more"), "{}", stdout(&pending));
    assert!(stdout(&pending).contains("alice"), "{}", stdout(&pending));
    let approved = summit("bob", ns, &["approve", "more", "--comment", "load tested"]);
    assert!(approved.status.success(), "{}", stderr(&approved));
    let change = change_in(&changes, "more", ChangePhase::Applied).await;
    assert_eq!(change.spec.approvals[0].approver, "bob");
    assert_eq!(
        change.spec.approvals[0].comment.as_deref(),
        Some("load tested")
    );

    // A rejection is final, and a decided change takes no more decisions.
    let again = summit(
        "alice",
        ns,
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
        ns,
        &["reject", "back", "--reason", "not during the freeze"],
    );
    assert!(rejected.status.success(), "{}", stderr(&rejected));
    change_in(&changes, "back", ChangePhase::Rejected).await;
    let late = summit("bob", ns, &["approve", "back"]);
    assert!(!late.status.success());
    assert!(stderr(&late).contains("is Rejected"), "{}", stderr(&late));
}
