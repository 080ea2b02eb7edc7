//! Which replica of the operator leads: decided from the Lease as last read, this
//! replica's identity, and this replica's own monotonic clock. Another replica's clock
//! is never trusted: a lease has expired when its record has not changed for a whole
//! lease duration as this replica watched it.

use std::time::{Duration, Instant};

/// How long a lease lasts and how its holder keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// A holder whose record has not changed for this long may be replaced.
    pub lease: Duration,
    /// A holder that has not renewed for this long stops leading. Shorter than
    /// `lease`: the holder has stopped before any other replica may take over.
    pub renew_deadline: Duration,
    /// How often each replica reads the lease and renews or tries to take it.
    pub retry: Duration,
}

impl Timing {
    /// Timing for a lease of `lease`: renewed every fifth of it, given up after two
    /// thirds of it without a renewal.
    pub fn for_lease(lease: Duration) -> Self {
        Self {
            lease,
            renew_deadline: lease * 2 / 3,
            retry: lease / 5,
        }
    }
}

/// The part of a Lease that says who holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The holder's identity; `None` or empty when the lease was released.
    pub holder: Option<String>,
    /// The holder's last renewal, as it wrote it: only compared for change.
    pub renewed: Option<String>,
}

impl Record {
    fn held_by(&self) -> Option<&str> {
        self.holder.as_deref().filter(|holder| !holder.is_empty())
    }
}

/// The lease as this replica last saw it, and since when it has looked so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub record: Record,
    pub since: Instant,
}

/// Remembers `record`, read at `now`: a record unchanged since `previous` keeps the
/// time it was first seen.
pub fn observe(previous: Option<Seen>, record: Record, now: Instant) -> Seen {
    match previous {
        Some(seen) if seen.record == record => seen,
        _ => Seen { record, since: now },
    }
}

/// What to do about the lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Write the lease as this replica's: there is none, it was released, it has
    /// expired, or it is already this replica's (a renewal).
    Take,
    /// Another replica holds it; look again after this long.
    Wait(Duration),
}

/// What `identity` does at `now` with the lease as `seen` (`None`: there is none).
pub fn step(identity: &str, seen: Option<&Seen>, now: Instant, timing: &Timing) -> Step {
    let Some(seen) = seen else {
        return Step::Take;
    };
    match seen.record.held_by() {
        None => Step::Take,
        Some(holder) if holder == identity => Step::Take,
        Some(_) => {
            let expires = seen.since + timing.lease;
            match expires.checked_duration_since(now) {
                Some(left) if !left.is_zero() => Step::Wait(left.min(timing.retry)),
                _ => Step::Take,
            }
        }
    }
}

/// Until when a replica leads after a write of the lease sent at `sent` succeeded.
/// Measured from the sending, not the answer: the lease may have been written at any
/// time between the two.
pub fn leads_until(sent: Instant, timing: &Timing) -> Instant {
    sent + timing.renew_deadline
}

/// How many times the lease changed hands, once `identity` has written it.
pub fn transitions(identity: &str, seen: Option<&Seen>, before: i32) -> i32 {
    match seen.and_then(|seen| seen.record.held_by()) {
        Some(holder) if holder == identity => before,
        Some(_) => before + 1,
        None => before,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "operator-a";

    fn timing() -> Timing {
        Timing::for_lease(Duration::from_secs(15))
    }

    fn seen(holder: Option<&str>, since: Instant) -> Seen {
        Seen {
            record: Record {
                holder: holder.map(str::to_owned),
                renewed: Some("t0".into()),
            },
            since,
        }
    }

    #[test]
    fn timing_gives_up_before_anyone_may_take_over() {
        let timing = timing();
        assert_eq!(timing.renew_deadline, Duration::from_secs(10));
        assert_eq!(timing.retry, Duration::from_secs(3));
        assert!(timing.renew_deadline < timing.lease);
    }

    #[test]
    fn each_lease_leads_to_one_step() {
        let start = Instant::now();
        let secs = Duration::from_secs;
        let cases = [
            ("no lease", None, start, Step::Take),
            ("released", Some(seen(None, start)), start, Step::Take),
            (
                "released, empty",
                Some(seen(Some(""), start)),
                start,
                Step::Take,
            ),
            (
                "ours: renew",
                Some(seen(Some(ME), start)),
                start,
                Step::Take,
            ),
            (
                "another's, just seen",
                Some(seen(Some("operator-b"), start)),
                start,
                Step::Wait(secs(3)),
            ),
            (
                "another's, about to expire",
                Some(seen(Some("operator-b"), start)),
                start + secs(14),
                Step::Wait(secs(1)),
            ),
            (
                "another's, unchanged for a lease",
                Some(seen(Some("operator-b"), start)),
                start + secs(15),
                Step::Take,
            ),
        ];
        for (case, seen, now, wanted) in cases {
            assert_eq!(step(ME, seen.as_ref(), now, &timing()), wanted, "{case}");
        }
    }

    #[test]
    fn a_renewal_starts_the_wait_again() {
        let start = Instant::now();
        let later = start + Duration::from_secs(10);
        let first = observe(None, seen(Some("operator-b"), start).record, start);
        let unchanged = observe(Some(first.clone()), first.record.clone(), later);
        assert_eq!(unchanged.since, start, "an unchanged record keeps its age");
        let renewed = Record {
            renewed: Some("t1".into()),
            ..first.record.clone()
        };
        let renewed = observe(Some(unchanged), renewed, later);
        assert_eq!(renewed.since, later);
        let at = later + Duration::from_secs(14);
        assert_eq!(
            step(ME, Some(&renewed), at, &timing()),
            Step::Wait(Duration::from_secs(1))
        );
    }

    #[test]
    fn leading_ends_at_the_renew_deadline_from_the_sending() {
        let sent = Instant::now();
        assert_eq!(leads_until(sent, &timing()), sent + Duration::from_secs(10));
    }

    #[test]
    fn a_transition_is_counted_when_the_holder_changes() {
        let now = Instant::now();
        let cases = [
            (None, 3),
            (Some(seen(None, now)), 3),
            (Some(seen(Some(ME), now)), 3),
            (Some(seen(Some("operator-b"), now)), 4),
        ];
        for (seen, wanted) in cases {
            assert_eq!(transitions(ME, seen.as_ref(), 3), wanted, "{seen:?}");
        }
    }
}
