//! The controllers in the test's own process, over the in-memory ledger: a reconcile
//! run against the real apiserver (RBAC and admission policies on), with what it
//! recorded read from the ledger itself rather than from PostgreSQL.

use std::sync::Arc;

use clap::Parser;
use summit_config::{
    controller,
    operator::Settings,
    store::{MemoryStore, Stores},
    telemetry::Metrics,
};
use tokio::{sync::oneshot, task::JoinHandle};

use super::{WAIT, env, grant_secrets};

/// Who the chart's operator service account is, as the apiserver names it.
const OPERATOR: &str = "system:serviceaccount:summit-system:summit-config-operator";

/// The operator's command line, as `summit-config operator` reads it.
#[derive(Parser)]
struct Command {
    #[command(flatten)]
    settings: Settings,
}

/// The controllers of an operator watching one namespace, running in this process with
/// the chart's RBAC; stopped on drop.
pub struct InProcess {
    /// Everything the controllers recorded.
    pub ledger: MemoryStore,
    controllers: JoinHandle<()>,
}

impl InProcess {
    /// Starts the controllers for `namespace` over a fresh in-memory ledger; returns once
    /// the caches they read are full.
    pub async fn start(namespace: &str) -> Self {
        grant_secrets(namespace);
        let settings = Command::parse_from([
            "summit-config",
            "--namespace",
            namespace,
            "--secret-namespaces",
            namespace,
            "--restart-interval-seconds",
            "1",
        ])
        .settings;
        let ledger = MemoryStore::default();
        let stores = Arc::new(Stores::over(Box::new(ledger.clone())));
        let metrics = Arc::new(Metrics::default());
        let launch = settings
            .launch(stores, metrics, OPERATOR.to_owned())
            .expect("the settings launch");
        let client = env().operator_client().await;
        let (ready, started) = oneshot::channel();
        let controllers = tokio::spawn(async move {
            let ready = move || {
                let _ = ready.send(());
            };
            controller::run(client, launch, ready)
                .await
                .expect("the controllers run");
        });
        tokio::time::timeout(WAIT, started)
            .await
            .expect("the caches fill in time")
            .expect("the controllers start");
        Self {
            ledger,
            controllers,
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.controllers.abort();
    }
}
