//! Pure decisions: no Kubernetes client, no database, no network and no clock. The
//! reconcilers gather what these functions need, call them, and carry out what they
//! decide.

pub mod approval;
pub mod ownership;
pub mod promotion;
pub mod render;
pub mod resolve;
