//! summit-config: a Kubernetes operator that records every approved version of a
//! configuration in PostgreSQL and Consul, projects it into ConfigMaps and Secrets,
//! rotates secrets, and reports approval and drift state in `status`.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod controller;
pub mod project;
pub mod resolve;
pub mod secrets;
pub mod store;
pub mod telemetry;
