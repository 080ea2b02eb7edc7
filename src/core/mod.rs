//! Pure decisions: no Kubernetes client, no database, no network and no clock. The
//! reconcilers gather what these functions need, call them, and carry out what they
//! decide.

pub mod approval;
pub mod change;
pub mod diff;
pub mod drift;
pub mod entry;
#[cfg(test)]
pub mod fixtures;
pub mod leadership;
pub mod ownership;
pub mod promotion;
pub mod render;
pub mod resolve;
pub mod rollout;
pub mod rotation;
pub mod vouching;

/// Why an object, or what it asks for, is refused: a condition reason and a message
/// naming the place and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub reason: &'static str,
    pub message: String,
}

/// What a failure means for the next attempt. Every error enum says which of these
/// each of its errors is, and the reconcile loops' error policy acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Something outside did not answer (a backend, the apiserver, a provider): retry,
    /// with backoff.
    Transient,
    /// Someone else moved first, or holds what was asked for: retry, with backoff,
    /// reading what they did; an operator or user may settle it meanwhile.
    Conflict,
    /// The object, or what it names, is wrong: nothing changes until it does.
    Invalid,
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

    /// One Event for everything normal a single pass did, in order: the last one
    /// names it, and each says its part. A pass that validated, recorded and applied
    /// an entry writes one Event, not four.
    pub fn summary(notes: impl IntoIterator<Item = Note>) -> Option<Note> {
        notes.into_iter().reduce(|summary, note| Note {
            warning: summary.warning || note.warning,
            reason: note.reason,
            message: format!("{}; {}", summary.message, note.message),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Note;

    #[test]
    fn a_summary_is_named_by_its_last_note_and_says_every_part() {
        let summary = Note::summary([
            Note::normal("VersionRecorded", "recorded version 2".into()),
            Note::normal("Applied", "applied version 2 to dev".into()),
        ]);
        assert_eq!(
            summary,
            Some(Note::normal(
                "Applied",
                "recorded version 2; applied version 2 to dev".into()
            ))
        );
        assert_eq!(Note::summary([]), None);
    }
}
