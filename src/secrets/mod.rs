//! The secret provider trait and its implementations (AWS Secrets Manager,
//! in-cluster).
//!
//! Filled in with secret references and rotation (issue 5); nothing here yet.
