//! What the store's own types decide.

use super::Rotation;

fn rotation(provider: &str) -> Rotation {
    Rotation {
        secret_id: "db".into(),
        provider: provider.into(),
        policy: "team-a/database".into(),
        interval_days: 30,
        grace_days: 7,
        rotation_function: None,
        notify: Vec::new(),
        last_rotated_at: None,
        next_rotation_at: None,
        event: "rotated".into(),
        current_version: None,
        previous_version: None,
        actor: "operator".into(),
    }
}

#[test]
fn in_cluster_secrets_are_audited_per_namespace() {
    assert_eq!(rotation("InCluster").audit_id(), "secret:team-a/db");
    assert_eq!(rotation("AwsSecretsManager").audit_id(), "secret:db");
}
