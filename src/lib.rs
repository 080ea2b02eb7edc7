//! summit-config: a Kubernetes operator that records every approved version of a
//! configuration in PostgreSQL and Consul, projects it into ConfigMaps and Secrets,
//! rotates secrets, and reports approval and drift state in `status`.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod controller;
pub mod core;
pub mod operator;
pub mod secrets;
pub mod store;
pub mod telemetry;

/// Chooses ring for every TLS client in the process (kube, sqlx, reqwest, the AWS SDK):
/// the AWS SDK compiles in a second crypto provider, so rustls cannot choose by itself.
/// Call once, first thing.
pub fn install_crypto_provider() {
    // Already installed (tests call it from every helper) is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
