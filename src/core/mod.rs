//! Pure decisions: no Kubernetes client, no database, no network and no clock. The
//! reconcilers gather what these functions need, call them, and carry out what they
//! decide.

pub mod approval;
pub mod change;
pub mod ownership;
pub mod promotion;
pub mod render;
pub mod resolve;

/// Why an object, or what it asks for, is refused: a condition reason and a message
/// naming the place and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub reason: &'static str,
    pub message: String,
}
