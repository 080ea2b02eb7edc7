//! Rendering an environment's approved version into ConfigMaps and Secrets, and
//! applying them with server-side apply under the operator's field manager.
//!
//! Filled in with projection (issue 3); nothing here yet.
