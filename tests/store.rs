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

#[tokio::test]
async fn writers_racing_on_the_cluster_ledger_never_share_a_number_nor_move_back() {
    use futures::future::join_all;
    use summit_config::store::{
        Application, ClusterLedger, Error, FloorUpdate, History, Ownership,
    };
    let client = env().operator_client().await;
    // Two operators' worth of writers on one ledger, as after a leader change that
    // overlapped.
    let ledgers = [
        ClusterLedger::new(client.clone(), "summit-system"),
        ClusterLedger::new(client, "summit-system"),
    ];
    let config_id = format!("tests/race-{}", uuid::Uuid::new_v4());
    let owner = claimant("team-a", "payments");
    ledgers[0]
        .claim(&config_id, &owner, true)
        .await
        .expect("claim");

    let records = (0..8).map(|pool| {
        let ledger = &ledgers[pool as usize % 2];
        let new = version_of(&config_id, owner.clone(), pool);
        async move { ledger.record(&new).await }
    });
    let recorded: Vec<(i64, i64)> = join_all(records)
        .await
        .into_iter()
        .zip(0..)
        .map(|(recorded, pool)| {
            let recorded = recorded.expect("recorded");
            assert!(recorded.created);
            (recorded.version.version, pool)
        })
        .collect();
    let mut numbers: Vec<i64> = recorded.iter().map(|(number, _)| *number).collect();
    numbers.sort();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
    // The newest content again is the version it already is.
    let (newest, pool) = recorded.iter().max().copied().expect("a newest");
    let again = ledgers[1]
        .record(&version_of(&config_id, owner.clone(), pool))
        .await
        .expect("recorded");
    assert_eq!((again.created, again.version.version), (false, newest));
    let listed = ledgers[0].versions(&config_id).await.expect("versions");
    assert_eq!(listed.len(), 8);

    // Two applications racing: the environment ends on the newer one.
    let application = |version: i64| Application {
        config_id: config_id.clone(),
        claimant: owner.clone(),
        environment: "production".into(),
        version,
        checksum: format!("sum-{version}"),
        actor: "tests".into(),
        message: format!("version {version}"),
        change: None,
        forward_only: true,
        floor: FloorUpdate::Keep,
    };
    let (older, newer) = (application(3), application(5));
    let (a, b) = tokio::join!(ledgers[0].apply(&older), ledgers[1].apply(&newer));
    assert!(b.is_ok(), "{b:?}");
    assert!(
        matches!(a, Ok(Some(_)) | Err(Error::Superseded { .. })),
        "{a:?}"
    );
    let applied = ledgers[0].applied(&config_id).await.expect("applied");
    assert_eq!(applied[0].version, 5);

    // Another entry holds nothing here.
    let other = version_of(&config_id, claimant("team-b", "payments"), 99);
    assert!(matches!(
        ledgers[0].record(&other).await,
        Err(Error::Claimed(_))
    ));
}
