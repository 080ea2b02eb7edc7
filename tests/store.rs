//! The version store against the real PostgreSQL: a DriftCheck's pass reads every
//! recorded version it compares with in one query at most, and a ConfigChange finds the
//! version it recorded in one query.

mod support;

use std::collections::BTreeMap;

use prometheus_client::metrics::counter::Counter;
use serde_json::json;
use summit_config::store::{Claimant, NewVersion, Snapshot, Source, Stores, StoresConfig};
use support::env;

fn stores(requests: &Counter) -> Stores {
    Stores::new(StoresConfig {
        database: Some(env().var("DATABASE_URL").parse().expect("a PostgreSQL URL")),
        consul: None,
        cluster: None,
        postgres_requests: requests.clone(),
        consul_requests: Counter::default(),
    })
    .expect("stores")
}

fn claimant(namespace: &str, name: &str) -> Claimant {
    Claimant {
        namespace: namespace.into(),
        name: name.into(),
        uid: "uid-1".into(),
    }
}

#[tokio::test]
async fn versions_missing_from_the_cache_come_in_one_query_and_then_cost_none() {
    let config_id = format!("tests/store-{}", uuid::Uuid::new_v4());
    let writer = stores(&Counter::default());
    writer
        .claim(&config_id, &claimant("tests", "store"))
        .await
        .expect("claim the config id");
    for pool in [10, 20] {
        writer
            .record(&version_of(&config_id, claimant("tests", "store"), pool))
            .await
            .expect("record a version");
    }

    // A store that has read nothing yet, as after a restart.
    let requests = Counter::default();
    let reader = stores(&requests);
    let wanted = [
        (config_id.clone(), 1),
        (config_id.clone(), 2),
        (config_id.clone(), 99),
    ];
    reader.prefetch_versions(&wanted).await.expect("prefetch");
    assert_eq!(requests.get(), 1, "one query for every missing version");
    let second = reader
        .version(&config_id, 2)
        .await
        .expect("read")
        .expect("version 2");
    assert_eq!(second.snapshot.data, json!({"pool": 20}));
    assert_eq!(
        reader
            .version(&config_id, 1)
            .await
            .expect("read")
            .expect("version 1")
            .snapshot
            .data,
        json!({"pool": 10})
    );
    assert_eq!(requests.get(), 1, "cached versions cost no query");
    reader
        .prefetch_versions(&wanted[..2])
        .await
        .expect("prefetch");
    assert_eq!(requests.get(), 1, "nothing missing, nothing asked");
    assert!(
        reader
            .version(&config_id, 99)
            .await
            .expect("read")
            .is_none()
    );
}

#[tokio::test]
async fn the_version_a_change_recorded_is_found_by_its_id() {
    let config_id = format!("tests/store-{}", uuid::Uuid::new_v4());
    let stores = stores(&Counter::default());
    for (pool, source) in [
        (10, Source::Spec),
        (
            20,
            Source::Change {
                change: "team/raise@1".into(),
            },
        ),
        (30, Source::Spec),
    ] {
        stores
            .claim(&config_id, &claimant("tests", "store"))
            .await
            .expect("claim the config id");
        stores
            .record(&NewVersion {
                source,
                ..version_of(&config_id, claimant("tests", "store"), pool)
            })
            .await
            .expect("record a version");
    }
    let found = stores
        .recorded_by(&config_id, "team/raise@1")
        .await
        .expect("read")
        .expect("the change's version");
    assert_eq!(
        (found.version, found.snapshot.data),
        (2, json!({"pool": 20}))
    );
    assert!(
        stores
            .recorded_by(&config_id, "team/raise@2")
            .await
            .expect("read")
            .is_none(),
        "a recreated change (another uid) recorded nothing"
    );
}

/// A version of `config_id` from a spec, by `claimant`, whose content is `pool`.
fn version_of(config_id: &str, claimant: Claimant, pool: i64) -> NewVersion {
    let snapshot = Snapshot {
        data: json!({"pool": pool}),
        overrides: BTreeMap::from([("production".to_owned(), json!({}))]),
        secrets: serde_json::Value::Null,
    };
    NewVersion {
        config_id: config_id.to_owned(),
        claimant,
        checksum: snapshot.checksum(),
        snapshot,
        source: Source::Spec,
        created_by: "tests".into(),
        authors: vec!["tests".into()],
        message: format!("pool {pool}"),
        based_on: None,
    }
}

#[tokio::test]
async fn a_config_id_belongs_to_the_entry_that_claimed_it_in_postgresql() {
    use summit_config::store::{Application, Error, FloorUpdate};
    let config_id = format!("tests/claims-{}", uuid::Uuid::new_v4());
    let owner = claimant("team-a", "payments");
    let other = claimant("team-b", "payments");
    let store = stores(&Counter::default());

    // Checking takes nothing: a config id nobody recorded stays free.
    assert!(matches!(
        store.verify_claim(&config_id, &other).await,
        Err(Error::Unclaimed { .. })
    ));
    store
        .claim(&config_id, &owner)
        .await
        .expect("the first claim");
    store
        .record(&version_of(&config_id, owner.clone(), 1))
        .await
        .expect("the holder records");

    // Another entry, through a store that never saw the claim (another process, or
    // after a restart), is refused everything.
    let fresh = stores(&Counter::default());
    assert!(matches!(
        fresh.claim(&config_id, &other).await,
        Err(Error::Claimed(_))
    ));
    assert!(matches!(
        fresh
            .record(&version_of(&config_id, other.clone(), 2))
            .await,
        Err(Error::Claimed(_))
    ));
    let application = Application {
        change: None,
        config_id: config_id.clone(),
        claimant: other.clone(),
        environment: "production".into(),
        version: 1,
        checksum: "x".into(),
        actor: "mallory".into(),
        message: "take over".into(),
        forward_only: false,
        floor: FloorUpdate::Keep,
    };
    assert!(matches!(
        fresh.apply(&application).await,
        Err(Error::Claimed(_))
    ));
    assert!(matches!(
        fresh.forget(&config_id, &other).await,
        Err(Error::Claimed(_))
    ));
    assert!(fresh.applied(&config_id).await.expect("applied").is_empty());

    // The holder's entry, deleted and created again under its name, takes it back.
    let recreated = Claimant {
        uid: "uid-2".into(),
        ..owner.clone()
    };
    fresh
        .claim(&config_id, &recreated)
        .await
        .expect("the same entry, created again");
}
