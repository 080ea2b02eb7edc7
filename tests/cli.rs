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

/// Runs `summit-config args...` with no cluster at all.
fn offline(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_summit-config"))
        .args(args)
        .output()
        .expect("run summit-config")
}

/// A failure: one line on stderr naming `what`, and exit `code`.
fn fails(output: &Output, code: i32, what: &str) {
    let said = stderr(output);
    assert_eq!(output.status.code(), Some(code), "{said}");
    assert_eq!(said.trim_end().lines().count(), 1, "{said}");
    assert!(said.contains(what), "{said}");
}

#[tokio::test]
async fn schemas_secrets_and_drift_from_the_command_line() {
    // Registering a schema writes a ConfigMap: a team's own role for that.
    support::install::create_once(&[
        "clusterrole",
        "test-config-map-editor",
        "--verb=get,list,create,patch,update",
        "--resource=configmaps",
    ]);
    let roles = [
        ("alice", "summit-config-admin"),
        ("alice", "summit-config-secrets-admin"),
        ("alice", "test-config-map-editor"),
    ];
    let (s, _operator) = setup_with("cli-manage", &roles, &[]).await;
    let ns = s.ns.as_str();
    let file = |name: &str, text: &str| {
        let path = std::env::temp_dir().join(format!("{ns}-{name}"));
        std::fs::write(&path, text).expect("write a file");
        path.to_str().expect("path").to_owned()
    };

    // Offline: the operator's own rules, on files.
    let entry_file = |max: i64| {
        format!(
            "apiVersion: config.summit.io/v1alpha1\nkind: ConfigEntry\nmetadata: {{name: payments}}\n\
             spec:\n  configId: {id}\n  schemaRef: {{name: payments-schema, key: schema.json}}\n  \
             data: {{pool: {{max: 10}}}}\n  environments:\n  - {{name: production, overrides: {{pool: {{max: {max}}}}}}}\n",
            id = s.config_id()
        )
    };
    let schema = file(
        "schema.json",
        r#"{"type": "object", "properties": {"pool": {"properties": {"max": {"maximum": 100}}}}}"#,
    );
    let too_big = file("too-big.yaml", &entry_file(500));
    let checked = offline(&["schema", "validate", &too_big, "--schema", &schema]);
    fails(
        &checked,
        5,
        "$.pool.max: 500 is greater than the maximum of 100",
    );
    let fine = file("fine.yaml", &entry_file(50));
    let checked = offline(&["schema", "validate", &fine, "--schema", &schema]);
    assert!(checked.status.success(), "{}", stderr(&checked));
    let not_a_schema = file("not-a-schema.json", r#"{"type": "objekt"}"#);
    fails(
        &offline(&["schema", "validate", &not_a_schema]),
        5,
        "not a JSON Schema",
    );

    // Registered, the schema is what a schemaRef names; a broken one is never written.
    let register = ["schema", "register", "payments-schema"];
    fails(
        &summit(
            "alice",
            ns,
            &[&register[..], &[not_a_schema.as_str()]].concat(),
        ),
        5,
        "not a JSON Schema",
    );
    assert!(
        s.config_maps()
            .get_opt("payments-schema")
            .await
            .expect("read")
            .is_none()
    );
    let registered = summit("alice", ns, &[&register[..], &[schema.as_str()]].concat());
    assert!(registered.status.success(), "{}", stderr(&registered));
    let applied = env()
        .kubectl()
        .args(["apply", "-n", ns, "-f", &fine])
        .output()
        .expect("kubectl");
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    support::wait_for(
        &s.entries(),
        "payments",
        "validated against the registered schema",
        |e| {
            e.status
                .as_ref()
                .is_some_and(|s| s.latest_version == Some(1))
        },
    )
    .await;

    // A rotation policy, created and listed; mallory sees none of it.
    let new_policy = [
        "secret",
        "create",
        "payments-db",
        "--provider",
        "in-cluster",
        "--secret-id",
        "payments/db",
        "--target",
        "payments-db",
        "--interval",
        "30d",
        "--restart",
        "deployment/checkout",
    ];
    let created = summit("alice", ns, &new_policy);
    assert!(created.status.success(), "{}", stderr(&created));
    fails(&summit("alice", ns, &new_policy), 5, "already exists");
    let listed = summit("alice", ns, &["secret", "list"]);
    assert!(
        stdout(&listed)
            .lines()
            .any(|l| l.starts_with("payments-db") && l.contains("InCluster")),
        "{}",
        stdout(&listed)
    );
    fails(&summit("mallory", ns, &["secret", "list"]), 4, "forbidden");

    // A DriftCheck run now, then its report read back.
    let check = support::drift_check(
        "payments",
        json!({"entries": ["payments"], "interval": "10m"}),
    );
    create(&s.api(), &check).await;
    let detected = summit("alice", ns, &["drift", "detect", "payments"]);
    assert!(detected.status.success(), "{}", stderr(&detected));
    let report = summit("alice", ns, &["drift", "report", "payments"]);
    assert_eq!(
        stdout(&report).trim(),
        "no drift: every copy matches its recorded version"
    );
    fails(
        &summit("alice", ns, &["drift", "report", "nothing"]),
        3,
        "does not exist",
    );
}
