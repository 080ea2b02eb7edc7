//! What the chart's admission policies prove, as the decisions see it: who requested
//! and approved a change, and who wrote a spec, can be trusted only while the policies
//! are in place, and only for objects written after they were.

use std::time::Duration;

use crate::api::v1alpha1::Time;

/// Whether the admission policies vouch for what they stamp and check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vouching {
    /// Not required (`--allow-unguarded`): every object is taken at its word.
    NotRequired,
    /// What is missing, or does not guard everything.
    Missing(String),
    /// Every policy is in place, the last one since this time: an object written
    /// before it may say anything.
    Since(Option<Time>),
}

/// How long a proposal waits when the policies are missing: they may come back.
const MISSING_RETRY: Duration = Duration::from_secs(10);
/// Object times have a second's grain, and the apiserver's clock may run a little
/// behind ours: an object written this close to the policies' install is not trusted.
const MARGIN_SECONDS: i64 = 2;

impl Vouching {
    /// Whether an object last written at `written` was written under the policies.
    pub fn covers(&self, written: Option<&Time>) -> bool {
        match self {
            Vouching::NotRequired | Vouching::Since(None) => true,
            Vouching::Missing(_) => false,
            Vouching::Since(Some(since)) => {
                written.is_some_and(|written| written.0.as_second() > since.0.as_second())
            }
        }
    }

    /// How long to wait before making an object whose trust rests on the policies, if
    /// one made `now` could never be trusted: the policies are missing, or were
    /// installed a moment ago.
    pub fn settling(&self, now: &Time) -> Option<Duration> {
        match self {
            Vouching::Missing(_) => Some(MISSING_RETRY),
            Vouching::Since(Some(since))
                if now.0.as_second() <= since.0.as_second() + MARGIN_SECONDS =>
            {
                Some(Duration::from_secs(1))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    #[test]
    fn only_objects_written_after_the_policies_are_covered() {
        let since = Vouching::Since(Some(at(10)));
        assert!(!since.covers(None));
        assert!(!since.covers(Some(&at(10))));
        assert!(since.covers(Some(&at(11))));
        assert!(Vouching::NotRequired.covers(None));
        assert!(Vouching::Since(None).covers(None));
        assert!(!Vouching::Missing("gone".into()).covers(Some(&at(11))));
    }

    #[test]
    fn nothing_is_made_while_the_policies_are_missing_or_settling() {
        let since = Vouching::Since(Some(at(10)));
        assert_eq!(since.settling(&at(12)), Some(Duration::from_secs(1)));
        assert_eq!(since.settling(&at(13)), None);
        assert_eq!(
            Vouching::Missing("gone".into()).settling(&at(13)),
            Some(MISSING_RETRY)
        );
        assert_eq!(Vouching::NotRequired.settling(&at(0)), None);
    }
}
