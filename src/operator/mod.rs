//! The operator process: its settings, its connections, the HTTP endpoints and the
//! controllers, until SIGTERM or Ctrl-C.

mod connect;
mod error;
mod leader;
mod settings;

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

pub use error::Error;
use leader::Candidate;
pub use settings::Settings;

use crate::{
    controller,
    store::Stores,
    telemetry::{self, Health, Metrics},
};

/// Runs the operator.
pub async fn run(settings: Settings) -> Result<(), Error> {
    let metrics = Arc::new(Metrics::default());
    let client = connect::client(
        settings.kubeconfig.as_deref(),
        metrics.requests_to("kubernetes"),
    )
    .await?;
    let health = Arc::new(Health {
        metrics: metrics.clone(),
        ready: false.into(),
    });
    let http = tokio::spawn(telemetry::serve(settings.http_addr, health.clone()));

    let stores = settings.stores(&metrics, &client)?;
    if let Some(cluster) = &stores.cluster {
        tracing::info!(
            namespace = %cluster.namespace,
            "no --database-url: the record is kept in the cluster, as ConfigMaps"
        );
    }
    let stores = Arc::new(Stores::new(stores).map_err(Error::Store)?);
    connect::wait_for_crds(&client, Duration::from_secs(settings.crd_wait_seconds)).await?;
    let identity = connect::whoami(&client).await?;
    // Unique per process: a restarted container of the same pod waits for the lease
    // like any other replica rather than taking up its crashed predecessor's.
    let process = uuid::Uuid::new_v4();
    let pod = std::env::var("POD_NAME").unwrap_or_else(|_| identity.clone());
    let candidate = settings.candidate(&client, format!("{pod}_{process}"))?;
    let launch = settings.launch(stores, metrics, identity)?;
    let controllers = async {
        match candidate {
            None => run_controllers(client, launch, &health).await,
            Some(candidate) => lead(candidate, client, launch, &health).await,
        }
    };
    tokio::select! {
        result = controllers => result,
        served = http => match served {
            Ok(Err(source)) => Err(Error::Http(source)),
            _ => Err(Error::HttpStopped),
        },
    }
}

/// Runs the controllers until SIGTERM or Ctrl-C; ready once their caches are full.
async fn run_controllers(
    client: kube::Client,
    launch: controller::Launch,
    health: &Health,
) -> Result<(), Error> {
    let ready = || health.ready.store(true, Ordering::Relaxed);
    Ok(controller::run(client, launch, ready).await?)
}

/// Stands by until this replica leads, then runs the controllers while it does. A
/// replica that stops leading stops at once, with an error: its pod restarts, and
/// stands by again. On SIGTERM or Ctrl-C the lease is given up, for the next leader.
async fn lead(
    candidate: Candidate,
    client: kube::Client,
    launch: controller::Launch,
    health: &Health,
) -> Result<(), Error> {
    let (mut leading, campaign) = candidate.clone().campaign();
    // A replica standing by is as ready as a leader: it serves and can take over.
    health.ready.store(true, Ordering::Relaxed);
    tracing::info!(lease = %candidate.lease, identity = %candidate.identity, "standing by for the leader lease");
    tokio::select! {
        () = leading.acquired() => {}
        () = shutdown() => {
            campaign.abort();
            return Ok(());
        }
    }
    let result = tokio::select! {
        result = run_controllers(client, launch, health) => result,
        () = leading.lost() => Err(Error::LeadershipLost),
    };
    campaign.abort();
    if result.is_ok() {
        candidate.release().await;
    }
    result
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
