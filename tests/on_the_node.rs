//! The installed operator living through what a node does to it: its leader killed
//! mid-burst, and a rotation whose consumer's new pod is slow to become ready. Needs
//! an environment with a node and the image loaded (`hack/e2e.sh` makes both): run
//! with `--features e2e`.

mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    coordination::v1::Lease,
    core::v1::{Pod, Secret},
};
use k8s_openapi::jiff::Timestamp;
use kube::{Api, api::ListParams};
use summit_config::api::v1alpha1::{
    ChangePhase, ConfigChange, ConfigEntry, EnvironmentPhase, SecretRotationPolicy,
};
use support::{WAIT, env, environment, eventually, install::*, postgres, run_ok};

/// How many entries the failover test makes, and how many changes it then proposes at
/// once (one to each entry).
const BURST: usize = 200;

/// Asserts that `sql`, which counts rows per config id, counts `n` for each entry of
/// the burst: none missing, none twice.
async fn per_entry(sql: &str, n: i64, what: &str) {
    let counts: Vec<(String, i64)> = sqlx::query_as(sql)
        .fetch_all(&postgres().await)
        .await
        .expect("count");
    assert_eq!(counts.len(), BURST, "not every entry {what}");
    let wrong: Vec<_> = counts.iter().filter(|(_, count)| *count != n).collect();
    assert!(wrong.is_empty(), "{what} other than {n} times: {wrong:?}");
}

/// The container of `pod`'s operator, as the node's containerd names it.
async fn container_of(pods: &Api<Pod>, pod: &str) -> String {
    let pod = pods.get(pod).await.expect("the leader's pod");
    let statuses = pod
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default();
    let id = statuses
        .first()
        .and_then(|c| c.container_id.clone())
        .expect("a container");
    id.trim_start_matches("containerd://").to_owned()
}

/// How many of `entries` run `version` in `development`.
fn live_at(entries: &[ConfigEntry], version: i64) -> usize {
    let live = |e: &&ConfigEntry| {
        environment(e, "development") == (Some(EnvironmentPhase::Applied), Some(version))
    };
    entries.iter().filter(live).count()
}

/// How many of `changes` are applied.
fn applied(changes: &[ConfigChange]) -> usize {
    let applied =
        |c: &&ConfigChange| c.status.as_ref().and_then(|s| s.phase) == Some(ChangePhase::Applied);
    changes.iter().filter(applied).count()
}

/// The Lease's holder and its last renewal, once it is held by someone.
async fn lease_now(leases: &Api<Lease>) -> Option<(String, Timestamp, Option<Timestamp>)> {
    let spec = leases.get_opt("summit-config-operator").await.ok()??.spec?;
    let holder = spec.holder_identity.filter(|h| !h.is_empty())?;
    Some((holder, spec.renew_time?.0, spec.acquire_time.map(|t| t.0)))
}

#[tokio::test]
async fn a_leader_killed_mid_burst_is_replaced_and_no_change_is_lost_or_recorded_twice() {
    let installed = Installed::install().await;
    let admin = env().admin().await;
    let namespace = "burst";
    create_once(&["namespace", namespace]);
    let entries: Api<ConfigEntry> = Api::namespaced(admin.clone(), namespace);
    for i in 0..BURST {
        let spec = serde_json::json!({
            "configId": format!("{namespace}/entry-{i}"),
            "data": {"i": i},
            "environments": [{"name": "development"}],
        });
        support::create(&entries, &support::entry(&format!("entry-{i}"), spec)).await;
    }
    eventually(
        "every entry live at v1",
        Duration::from_secs(120),
        || async {
            let list = entries.list(&ListParams::default()).await.ok()?;
            (live_at(&list.items, 1) == BURST).then_some(())
        },
    )
    .await;

    // The burst: a change proposed to each entry at once.
    let changes: Api<ConfigChange> = Api::namespaced(admin.clone(), namespace);
    for i in 0..BURST {
        let spec = serde_json::json!({
            "configEntry": format!("entry-{i}"),
            "environment": "development",
            "patch": {"changed": true},
        });
        let change = support::change(&format!("entry-{i}-changed"), "admin", spec);
        support::create(&changes, &change).await;
    }
    eventually("a quarter of the changes applied", WAIT, || async {
        let list = changes.list(&ListParams::default()).await.ok()?;
        (applied(&list.items) >= BURST / 4).then_some(())
    })
    .await;

    // kill -9 of the leader's process, on the node, as a crash would.
    let pods: Api<Pod> = Api::namespaced(admin.clone(), SYSTEM);
    let (pod, process) = leader(&admin, &operator_pods(&pods).await).await;
    let container = container_of(&pods, &pod).await;
    let killed = Instant::now();
    run_ok(
        Command::new("ctr")
            .args(["--address", env().var("SUMMIT_NODE_CONTAINERD")])
            .args([
                "-n", "k8s.io", "tasks", "kill", "--signal", "SIGKILL", &container,
            ]),
    );
    let leases: Api<Lease> = Api::namespaced(admin.clone(), SYSTEM);
    let (_, last_renewal, _) = lease_now(&leases).await.expect("the dead leader's lease");

    // The other replica takes over once the lease expires: a lease duration after the
    // dead leader's last renewal, give or take the delivery of a watch event and one
    // write (and this test's polling).
    let lease = Duration::from_secs(15);
    let (successor, acquired) = eventually("another process leads", lease + SLACK, || async {
        let (holder, _, acquired) = lease_now(&leases).await?;
        (!holder.ends_with(&process)).then_some((holder, acquired?))
    })
    .await;
    let after_kill = killed.elapsed();
    let handover = acquired.duration_since(last_renewal);
    eprintln!(
        "{successor} leads {after_kill:?} after the kill, {handover:?} after the last renewal"
    );
    assert!(
        handover.unsigned_abs() <= lease + SLACK,
        "the lease was taken {handover:?} after its last renewal"
    );

    // Every change ends applied, each entry live at v2: each version recorded and
    // applied exactly once.
    eventually("every change applied", Duration::from_secs(120), || async {
        let changes = changes.list(&ListParams::default()).await.ok()?;
        let entries = entries.list(&ListParams::default()).await.ok()?;
        (applied(&changes.items) == BURST && live_at(&entries.items, 2) == BURST).then_some(())
    })
    .await;
    let versions = "SELECT config_id, count(DISTINCT version) FROM config_versions
         WHERE config_id LIKE 'burst/%' GROUP BY config_id";
    per_entry(versions, 2, "recorded").await;
    let recorded = "SELECT config_id, count(*) FROM config_versions
         WHERE config_id LIKE 'burst/%' GROUP BY config_id";
    per_entry(recorded, 2, "recorded").await;
    let applications = "SELECT config_id, count(*) FROM config_audit
         WHERE config_id LIKE 'burst/%' AND changes ->> 'event' = 'applied' GROUP BY config_id";
    per_entry(applications, 2, "applied").await;
    installed.uninstall();
}

/// What the failover test allows past the lease duration: a watch event's delivery,
/// one write, and this test's own polling.
const SLACK: Duration = Duration::from_secs(1);

/// A Deployment whose pods become ready only once a test says so (`touch /tmp/ready`
/// in them), mounting Secret `secret`.
fn held_consumer(name: &str, secret: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 65532},
                    "containers": [{
                        "name": "app",
                        "image": "docker.io/library/busybox:1.36",
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["sleep", "2147483647"],
                        "readinessProbe": {
                            "exec": {"command": ["test", "-f", "/tmp/ready"]},
                            "periodSeconds": 1,
                        },
                        "volumeMounts": [{"name": "token", "mountPath": "/etc/token", "readOnly": true}],
                    }],
                    "volumes": [{"name": "token", "secret": {"secretName": secret, "optional": true}}],
                },
            },
        },
    }))
    .expect("a Deployment")
}

/// Makes every pod of `app` that is not ready yet ready; returns how many it made so.
async fn make_ready(pods: &Api<Pod>, app: &str) -> usize {
    let list = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("pods");
    let waiting = list.items.into_iter().filter(|pod| {
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        running && !ready
    });
    let mut made = 0;
    for pod in waiting {
        let name = pod.metadata.name.expect("a name");
        let touched = env()
            .kubectl()
            .args(["-n", DEMO, "exec", &name, "--", "touch", "/tmp/ready"])
            .output()
            .expect("kubectl exec");
        made += usize::from(touched.status.success());
    }
    made
}

#[tokio::test]
async fn a_rotated_secret_keeps_its_previous_value_until_the_consumers_new_pods_are_ready() {
    let installed = Installed::install().await;
    let admin = env().admin().await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), DEMO);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), DEMO);
    support::create(&deployments, &held_consumer("token-consumer", "token")).await;
    eventually("the first consumer pod ready", WAIT, || async {
        make_ready(&pods, "token-consumer").await;
        let d = deployments.get("token-consumer").await.ok()?;
        (d.status?.ready_replicas == Some(1)).then_some(())
    })
    .await;

    let policies: Api<SecretRotationPolicy> = Api::namespaced(admin.clone(), DEMO);
    let spec = support::rotation::in_cluster_held_by("token", "token-consumer");
    support::create(&policies, &support::policy("token", spec)).await;
    support::policy_where(&policies, "token", |p| p.current_version.is_some()).await;
    // Whatever the first projection rolled, it finishes first.
    eventually("the consumer settled", WAIT, || async {
        make_ready(&pods, "token-consumer").await;
        let d = deployments.get("token-consumer").await.ok()?;
        let s = d.status?;
        (s.observed_generation == d.metadata.generation
            && s.updated_replicas == Some(1)
            && s.ready_replicas == Some(1)
            && s.replicas == Some(1))
        .then_some(())
    })
    .await;

    // A rotation: the new value and the previous one side by side, and a rollout whose
    // new pod is not ready.
    support::annotate(&policies, "token", "config.summit.io/rotate", "now").await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), DEMO);
    support::secret_where(&secrets, "token", |d| d.contains_key("token-previous")).await;
    support::policy_where(&policies, "token", |p| {
        p.consumers_total == Some(1)
            && p.previous_retires_at
                .as_ref()
                .is_some_and(|at| at.0 < k8s_openapi::jiff::Timestamp::now())
    })
    .await;
    support::sleep_through_window().await;
    let held = support::secret_where(&secrets, "token", |_| true).await;
    assert!(
        held.contains_key("token-previous"),
        "retired while the new pod was not ready"
    );
    let rolling = deployments.get("token-consumer").await.expect("consumer");
    let status = rolling.status.expect("a status");
    assert_eq!(
        (status.replicas, status.ready_replicas),
        (Some(2), Some(1)),
        "the old pod serves while the new one is not ready"
    );

    // The new pod becomes ready, the rollout completes: the previous value goes.
    eventually("the previous value retired", WAIT, || async {
        make_ready(&pods, "token-consumer").await;
        let data = support::secret_where(&secrets, "token", |_| true).await;
        (!data.contains_key("token-previous")).then_some(())
    })
    .await;
    installed.uninstall();
}

/// Drops, inside the node, what pod `ip` sends to the apiserver: a leader cut off from
/// it as by a broken network. Mended on drop.
struct Cut {
    rule: Vec<String>,
}

impl Cut {
    fn off(ip: &str) -> Self {
        let api = env().var("KUBE_APISERVER").trim_start_matches("https://");
        let (host, port) = api.split_once(':').expect("host:port");
        let rule = [
            "FORWARD", "-s", ip, "-d", host, "-p", "tcp", "--dport", port, "-j", "DROP",
        ];
        let cut = Self {
            rule: rule.map(str::to_owned).to_vec(),
        };
        run_ok(&mut cut.iptables("-I"));
        cut
    }

    fn iptables(&self, verb: &str) -> Command {
        let netns = format!("/var/run/netns/summit-{}", env().var("SUMMIT_ENV_NAME"));
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={netns}"))
            .args(["--", "iptables", verb])
            .args(&self.rule);
        command
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        let _ = self.iptables("-D").output();
    }
}

/// How many times `pod`'s operator container has restarted.
async fn restarts(pods: &Api<Pod>, pod: &str) -> i32 {
    let pod = pods.get(pod).await.expect("the pod");
    let statuses = pod
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default();
    statuses.first().map_or(0, |c| c.restart_count)
}

#[tokio::test]
async fn a_leader_cut_off_from_the_apiserver_stops_before_another_takes_over() {
    let installed = Installed::install().await;
    let admin = env().admin().await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), SYSTEM);
    let (pod, process) = leader(&admin, &operator_pods(&pods).await).await;
    let before = restarts(&pods, &pod).await;
    let ip = pods
        .get(&pod)
        .await
        .expect("pod")
        .status
        .and_then(|s| s.pod_ip)
        .expect("an IP");

    let cut = Cut::off(&ip);
    let started = std::time::Instant::now();
    let lease = Duration::from_secs(15);
    let leases: Api<Lease> = Api::namespaced(admin.clone(), SYSTEM);
    let holder = || async {
        let lease = leases.get("summit-config-operator").await.ok()?;
        lease.spec?.holder_identity.filter(|h| !h.is_empty())
    };
    // When the cut-off leader stops, and when another leads: a bounded poll.
    let (mut stopped, mut replaced) = (None, None);
    while stopped.is_none() || replaced.is_none() {
        assert!(
            started.elapsed() < lease * 2,
            "stopped {stopped:?}, replaced {replaced:?}"
        );
        if stopped.is_none() && restarts(&pods, &pod).await > before {
            stopped = Some(started.elapsed());
        }
        let successor = holder().await.is_some_and(|h| !h.ends_with(&process));
        if replaced.is_none() && successor {
            replaced = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("cut off: the leader stopped after {stopped:?}, another led after {replaced:?}");
    assert!(
        stopped < replaced,
        "another led before the cut-off leader stopped"
    );
    drop(cut);
    installed.uninstall();
}
