//! Pure decisions: no Kubernetes client, no database, no network and no clock. The
//! reconcilers gather what these functions need, call them, and carry out what they
//! decide.

pub mod approval;
pub mod change;
pub mod drift;
pub mod entry;
pub mod ownership;
pub mod promotion;
pub mod render;
pub mod resolve;
pub mod rotation;
pub mod vouching;

/// Why an object, or what it asks for, is refused: a condition reason and a message
/// naming the place and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub reason: &'static str,
    pub message: String,
}

/// An Event a decision calls for: its reason and message, and whether it warns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Note {
    pub fn normal(reason: &'static str, message: String) -> Self {
        Self {
            warning: false,
            reason,
            message,
        }
    }

    pub fn warning(reason: &'static str, message: String) -> Self {
        Self {
            warning: true,
            reason,
            message,
        }
    }
}
