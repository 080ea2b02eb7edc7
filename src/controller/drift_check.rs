//! The DriftCheck reconcile loop. This first version checks the interval; detection and
//! remediation build on it.

use std::{sync::Arc, time::Duration};

use kube::{ResourceExt, runtime::controller::Action};
use tracing::instrument;

use super::{
    Context, Error, Result, observed, requeue_after_error,
    status::{self, Invalid},
};
use crate::api::v1alpha1::{DriftCheck, DriftCheckSpec, parse_duration};

const KIND: &str = "DriftCheck";
const DEFAULT_INTERVAL: &str = "5m";
const SHORTEST_INTERVAL: Duration = Duration::from_secs(10);

#[instrument(skip_all, fields(namespace = check.namespace().unwrap_or_default(), name = check.name_any()))]
pub async fn reconcile(check: Arc<DriftCheck>, ctx: Arc<Context>) -> Result<Action> {
    observed(KIND, check.as_ref(), &ctx, async {
        let verdict = check_interval(&check.spec);
        status::report_validation(
            ctx.as_ref(),
            KIND,
            check.as_ref(),
            check.status.as_ref(),
            &verdict,
        )
        .await?;
        Ok(Action::await_change())
    })
    .await
}

pub fn error_policy(check: Arc<DriftCheck>, error: &Error, ctx: Arc<Context>) -> Action {
    requeue_after_error(KIND, check.as_ref(), error, &ctx)
}

fn check_interval(spec: &DriftCheckSpec) -> Result<String, Invalid> {
    let text = spec.interval.as_deref().unwrap_or(DEFAULT_INTERVAL);
    let interval = parse_duration(text).map_err(|error| Invalid {
        reason: "InvalidDuration",
        message: format!("spec.interval: {error}"),
    })?;
    if interval < SHORTEST_INTERVAL {
        return Err(Invalid {
            reason: "InvalidDuration",
            message: format!("spec.interval {text} is shorter than the 10s minimum"),
        });
    }
    Ok(format!("checks every {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> DriftCheckSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn the_default_interval_is_five_minutes() {
        assert_eq!(check_interval(&spec("{}")), Ok("checks every 5m".into()));
    }

    #[test]
    fn an_interval_under_ten_seconds_is_refused() {
        let invalid = check_interval(&spec("interval: 5s")).unwrap_err();
        assert_eq!(
            invalid.message,
            "spec.interval 5s is shorter than the 10s minimum"
        );
    }
}
