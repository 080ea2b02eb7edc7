//! A check's findings, the Events their changes call for, and its status.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    api::v1alpha1::{
        CONDITION_DRIFTED, CONDITION_READY, CONDITION_VALIDATED, Conditions, DriftCheckStatus,
        DriftFinding, DriftSource, Time,
    },
    core::Note,
};

/// Findings kept in status; the count says how many there were.
const REPORT_LIMIT: usize = 50;
/// The most paths a finding lists (the schema's limit); the last says how many more.
const PATHS_LIMIT: usize = 50;

/// One drifted copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub entry: String,
    pub environment: String,
    pub location: String,
    pub source: DriftSource,
    pub paths: Vec<String>,
    /// The checksum the copy should have: the content's, or for a Secret its keys'.
    pub expected_checksum: String,
    pub actual_checksum: Option<String>,
}

/// Entry, environment and location: what tells one finding from another.
pub type Place = (String, String, String);

impl Finding {
    pub fn place(&self) -> Place {
        (
            self.entry.clone(),
            self.environment.clone(),
            self.location.clone(),
        )
    }
}

/// A finding's paths, at most [`PATHS_LIMIT`]: a status the apiserver would refuse
/// would leave the check stuck.
pub fn bounded_paths(paths: &[String]) -> Vec<String> {
    if paths.len() <= PATHS_LIMIT {
        return paths.to_vec();
    }
    let mut kept = paths[..PATHS_LIMIT - 1].to_vec();
    kept.push(format!("... and {} more", paths.len() - (PATHS_LIMIT - 1)));
    kept
}

/// The report of `found`, each kept with the time it was first seen (from `previous`)
/// and, when `remediated`, restored `now`; sorted, and at most [`REPORT_LIMIT`] long.
/// Returns it with how many findings there were.
pub fn report(
    previous: &[DriftFinding],
    found: &[Finding],
    remediated: &BTreeSet<Place>,
    now: &Time,
) -> (Vec<DriftFinding>, usize) {
    let seen: BTreeMap<Place, &DriftFinding> = previous
        .iter()
        .map(|f| {
            let place = (f.entry.clone(), f.environment.clone(), f.location.clone());
            (place, f)
        })
        .collect();
    let mut report: Vec<DriftFinding> = found
        .iter()
        .map(|d| {
            let place = d.place();
            DriftFinding {
                entry: d.entry.clone(),
                environment: d.environment.clone(),
                location: d.location.clone(),
                paths: bounded_paths(&d.paths),
                expected_checksum: d.expected_checksum.clone(),
                actual_checksum: d.actual_checksum.clone(),
                first_seen: seen
                    .get(&place)
                    .map_or_else(|| now.clone(), |f| f.first_seen.clone()),
                remediated_at: remediated.contains(&place).then(|| now.clone()),
            }
        })
        .collect();
    report.sort_by(|a, b| {
        (&a.entry, &a.environment, &a.location).cmp(&(&b.entry, &b.environment, &b.location))
    });
    let count = report.len();
    report.truncate(REPORT_LIMIT);
    (report, count)
}

/// Events when an entry starts or stops drifting, and for each copy restored; none
/// while nothing changes.
pub fn notes(before: &[DriftFinding], after: &[DriftFinding]) -> Vec<Note> {
    let drifting = |findings: &[DriftFinding]| -> BTreeSet<String> {
        findings
            .iter()
            .filter(|f| f.remediated_at.is_none())
            .map(|f| f.entry.clone())
            .collect()
    };
    let (was, is) = (drifting(before), drifting(after));
    let mut notes = Vec::new();
    for entry in is.difference(&was) {
        let places: Vec<String> = after
            .iter()
            .filter(|f| &f.entry == entry)
            .map(|f| {
                format!(
                    "{} ({}) at {}",
                    f.environment,
                    f.paths.join(", "),
                    f.location
                )
            })
            .collect();
        let message = format!("{entry} drifted: {}", places.join("; "));
        notes.push(Note::warning("DriftDetected", message));
    }
    for entry in was.difference(&is) {
        let message = format!("{entry} matches its recorded version again");
        notes.push(Note::normal("DriftResolved", message));
    }
    for finding in after.iter().filter(|f| f.remediated_at.is_some()) {
        let sum = &finding.expected_checksum;
        let message = format!(
            "{} {}: {} restored to checksum {}",
            finding.entry,
            finding.environment,
            finding.location,
            &sum[..12.min(sum.len())]
        );
        notes.push(Note::normal("DriftRemediated", message));
    }
    notes
}

/// What a completed run found.
pub struct Run {
    pub generation: Option<i64>,
    /// The `Validated` message.
    pub summary: String,
    pub report: Vec<DriftFinding>,
    /// How many findings there were, beyond those the report keeps.
    pub count: usize,
    pub entries_checked: usize,
    /// The on-demand request (the check annotation) this run answered.
    pub request: Option<String>,
}

/// The status after `run`, starting from `current`. The findings and the check time
/// change only when the findings do: a quiet check costs no write.
pub fn status(current: &DriftCheckStatus, run: Run, now: Time) -> DriftCheckStatus {
    let mut next = current.clone();
    next.observed_generation = run.generation;
    let unresolved = run
        .report
        .iter()
        .filter(|f| f.remediated_at.is_none())
        .count();
    let same_findings = strip_times(&current.report) == strip_times(&run.report);
    if !same_findings || current.drifted.is_none() {
        next.last_check_time = Some(now.clone());
        next.report = run.report;
        next.drift_count = Some(i32::try_from(run.count).unwrap_or(i32::MAX));
        next.drifted = Some(unresolved > 0);
    }
    next.entries_checked = Some(i32::try_from(run.entries_checked).unwrap_or(i32::MAX));
    if run.request.is_some() {
        next.last_handled_request = run.request;
    }
    let drifted = next.drifted == Some(true);
    let drift_count = next.drift_count.unwrap_or(0);
    let mut conditions = Conditions::new(&mut next.conditions, run.generation, now);
    conditions.set(CONDITION_VALIDATED, true, "Valid", run.summary);
    if drifted {
        let message = format!("{drift_count} copies differ from their recorded version");
        conditions.set(CONDITION_DRIFTED, true, "DriftFound", message);
    } else {
        let message = "every copy matches its recorded version";
        conditions.set(CONDITION_DRIFTED, false, "NoDrift", message);
    }
    conditions.set(CONDITION_READY, true, "Checked", "the last check completed");
    conditions.summarize(None);
    next
}

/// A finding without its times, to tell whether two reports say the same.
type Seen = (String, String, String, Vec<String>, Option<String>, bool);

fn strip_times(findings: &[DriftFinding]) -> Vec<Seen> {
    findings
        .iter()
        .map(|f| {
            (
                f.entry.clone(),
                f.environment.clone(),
                f.location.clone(),
                f.paths.clone(),
                f.actual_checksum.clone(),
                f.remediated_at.is_some(),
            )
        })
        .collect()
}
