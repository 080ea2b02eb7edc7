//! The operator process: its settings, its connections, the HTTP endpoints and the
//! controllers, until SIGTERM or Ctrl-C.

mod connect;
mod error;
mod settings;

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

pub use error::Error;
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

    let stores = Arc::new(Stores::new(settings.stores(&metrics)?).map_err(Error::Store)?);
    if !stores.is_durable() {
        tracing::warn!(
            "no --database-url: versions are kept in memory only and are lost when the operator \
             restarts; use this for demos only"
        );
    }
    connect::wait_for_crds(&client, Duration::from_secs(settings.crd_wait_seconds)).await?;
    let identity = connect::whoami(&client).await?;
    let launch = settings.launch(stores, metrics, identity)?;
    let ready = || health.ready.store(true, Ordering::Relaxed);
    tokio::select! {
        result = controller::run(client, launch, ready) => Ok(result?),
        served = http => match served {
            Ok(Err(source)) => Err(Error::Http(source)),
            _ => Err(Error::HttpStopped),
        },
    }
}
