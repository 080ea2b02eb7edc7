//! The Helm chart as `helm template` renders it with the real helm: the operator's
//! integrity settings reach its command line, and a values file that would leave
//! approvals unguarded is refused unless it says so.

mod support;

use std::process::Output;

use serde_json::Value;
use summit_config::core::approval::PlatformFloor;
use support::env;

fn template(values: &[&str]) -> Output {
    let mut command = std::process::Command::new(format!("{}/helm", env().var("SUMMIT_TOOLS_BIN")));
    command
        .args([
            "template",
            "summit",
            concat!(env!("CARGO_MANIFEST_DIR"), "/charts/summit-config"),
        ])
        .args(["--namespace", "summit-system", "--kube-version", "1.37.0"]);
    for value in values {
        command.args(["--set-json", value]);
    }
    command.output().expect("run helm template")
}

/// Every rendered document, as JSON.
fn documents(output: &Output) -> Vec<Value> {
    assert!(
        output.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    text.split("\n---")
        .filter_map(|doc| serde_yaml_ng::from_str::<Value>(doc).ok())
        .filter(|doc| doc.is_object())
        .collect()
}

fn operator_args(documents: &[Value]) -> Vec<String> {
    let deployment = documents
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("the operator's Deployment");
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("a string").to_owned())
        .collect()
}

fn arg<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{flag}=")))
}

#[test]
fn by_default_ids_are_namespaced_and_every_guard_is_installed() {
    let docs = documents(&template(&[]));
    let args = operator_args(&docs);
    assert_eq!(arg(&args, "--config-id-prefix"), Some("{namespace}/"));
    assert_eq!(arg(&args, "--approval-floors"), Some("[]"));
    assert!(!args.iter().any(|a| a == "--allow-unguarded"));
    let named = |kind: &str, name: &str| {
        docs.iter()
            .any(|d| d["kind"] == kind && d["metadata"]["name"] == name)
    };
    for name in [
        "summit-config-change-identity",
        "summit-config-approval-policy",
        "summit-config-spec-author",
    ] {
        assert!(named("ValidatingAdmissionPolicy", name), "{name}");
        assert!(
            named("ValidatingAdmissionPolicyBinding", name),
            "{name} binding"
        );
    }
    assert!(named(
        "MutatingAdmissionPolicy",
        "summit-config-spec-author"
    ));
    assert!(named(
        "MutatingAdmissionPolicyBinding",
        "summit-config-spec-author"
    ));
    // The operator's service account alone may propose on another user's behalf.
    let identity = docs
        .iter()
        .find(|d| {
            d["kind"] == "ValidatingAdmissionPolicy"
                && d["metadata"]["name"] == "summit-config-change-identity"
        })
        .expect("the change-identity policy");
    let operator = identity["spec"]["variables"]
        .as_array()
        .expect("variables")
        .iter()
        .find(|v| v["name"] == "operator")
        .expect("the operator variable");
    assert_eq!(
        operator["expression"],
        "'system:serviceaccount:summit-system:summit-operator'"
    );
}

#[test]
fn platform_floors_reach_the_operator_as_it_reads_them() {
    let docs = documents(&template(&[
        r#"approvalFloors=[{"environments":"prod*","requiredApprovals":2,"approverGroups":["platform:approvers"]}]"#,
    ]));
    let args = operator_args(&docs);
    let floors: Vec<PlatformFloor> =
        serde_json::from_str(arg(&args, "--approval-floors").expect("the flag")).expect("floors");
    assert_eq!(floors.len(), 1);
    assert!(floors[0].covers("production"));
    assert_eq!(floors[0].policy.required_approvals, Some(2));
}

#[test]
fn turning_the_admission_policies_off_must_be_meant() {
    let refused = template(&["admissionPolicy.enabled=false"]);
    assert!(!refused.status.success(), "rendered without the guards");
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("admissionPolicy.allowUnguarded=true"),
        "{message}"
    );

    let meant = documents(&template(&[
        "admissionPolicy.enabled=false",
        "admissionPolicy.allowUnguarded=true",
    ]));
    assert!(
        operator_args(&meant)
            .iter()
            .any(|a| a == "--allow-unguarded")
    );
    assert!(
        !meant
            .iter()
            .any(|d| d["kind"] == "ValidatingAdmissionPolicy")
    );
}

#[test]
fn two_replicas_elect_a_leader_on_a_lease_in_their_own_namespace() {
    let docs = documents(&template(&[]));
    let args = operator_args(&docs);
    assert!(args.iter().any(|a| a == "--leader-elect"), "{args:?}");
    assert_eq!(arg(&args, "--lease-duration-seconds"), Some("15"));
    let find = |kind: &str| {
        let found = docs.iter().find(|d| d["kind"] == kind);
        found.unwrap_or_else(|| panic!("no {kind}")).clone()
    };
    let deployment = find("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let namespace = env
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "POD_NAMESPACE");
    assert!(namespace.is_some(), "{env}");
    assert_eq!(find("PodDisruptionBudget")["spec"]["maxUnavailable"], 1);
    // Leases are reachable in the release's namespace alone.
    let lease_rule = |doc: &Value| {
        let rules = doc["rules"].as_array().cloned().unwrap_or_default();
        rules
            .iter()
            .any(|r| r["apiGroups"][0] == "coordination.k8s.io")
    };
    let role = find("Role");
    assert!(lease_rule(&role), "{role}");
    assert_eq!(role["metadata"]["namespace"], "summit-system");
    let mut cluster_wide = docs.iter().filter(|d| d["kind"] == "ClusterRole");
    assert!(
        !cluster_wide.any(lease_rule),
        "a ClusterRole reaches leases"
    );
}

#[test]
fn values_are_checked_against_the_schema_before_anything_renders() {
    for (values, complaint) in [
        (
            r#"operator={"replicaz":2}"#,
            "additional properties 'replicaz' not allowed",
        ),
        (r#"operator.replicas=-1"#, "/operator/replicas"),
        (r#"consul.address="consul:8500""#, "/consul/address"),
        (
            r#"operator.image.pullPolicy="Sometimes""#,
            "/operator/image/pullPolicy",
        ),
    ] {
        let refused = template(&[values]);
        assert!(!refused.status.success(), "{values} rendered");
        let message = String::from_utf8_lossy(&refused.stderr);
        assert!(message.contains(complaint), "{values}: {message}");
    }
}

#[test]
fn the_design_alerts_ship_as_a_prometheus_rule_when_asked() {
    let plain = documents(&template(&[]));
    assert!(!plain.iter().any(|d| d["kind"] == "PrometheusRule"));
    let docs = documents(&template(&["metrics.prometheusRule.enabled=true"]));
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    let alerts: Vec<&str> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert_eq!(
        alerts,
        [
            "SummitConfigDriftDetected",
            "SummitConfigSecretRotationFailed",
            "SummitConfigApprovalStalled",
            "SummitConfigBackendDown",
            "SummitConfigCanaryRolledBack",
        ]
    );
    // Prometheus itself checks them: expressions, durations, templates.
    let rules = tempfile::NamedTempFile::new().expect("a rules file");
    let groups = serde_json::json!({"groups": rule["spec"]["groups"]});
    std::fs::write(
        rules.path(),
        serde_yaml_ng::to_string(&groups).expect("YAML"),
    )
    .expect("write");
    let promtool = format!("{}/promtool", env().var("SUMMIT_TOOLS_BIN"));
    let checked = std::process::Command::new(promtool)
        .args(["check", "rules"])
        .arg(rules.path())
        .output()
        .expect("run promtool");
    assert!(
        checked.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
