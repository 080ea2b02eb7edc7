//! The version store: PostgreSQL (history and audit), Consul (distribution), the
//! in-memory store, and the composite that orders and degrades them.
//!
//! Filled in with versions (issue 3); nothing here yet.
