//! Asks Prometheus the metric queries of a canary, each held to the entry's namespace
//! first, and reads the answers ([`crate::core::rollout::metric`]).

use std::time::Duration;

use crate::controller::Context;
use crate::{
    api::v1alpha1::{MetricCheck, RolloutSpec},
    core::rollout::metric::{self, Answer, Reading},
};

/// How long one query may take before it counts as unanswered this time.
const ASK_WITHIN: Duration = Duration::from_secs(5);

/// How long Prometheus itself may evaluate one: a little less, so it gives up first.
const PROMETHEUS_TIMEOUT: &str = "4s";

/// What each metric check of `rollout` comes to now, for consumers in `namespace`.
pub async fn readings(rollout: &RolloutSpec, namespace: &str, ctx: &Context) -> Vec<Reading> {
    let mut readings = Vec::with_capacity(rollout.metrics.len());
    for check in &rollout.metrics {
        let answer = ask(check, namespace, ctx).await;
        readings.push(Reading {
            check: check.clone(),
            answer,
        });
    }
    readings
}

async fn ask(check: &MetricCheck, namespace: &str, ctx: &Context) -> Answer {
    let Some(prometheus) = &ctx.settings.prometheus else {
        return Answer::Refused(
            "the operator runs without a Prometheus to ask (the chart's prometheus.url)".into(),
        );
    };
    let query = match metric::scoped(&check.query, &prometheus.namespace_label, namespace) {
        Ok(query) => query,
        Err(error) => return Answer::Refused(format!("it is not PromQL: {}", error.trim())),
    };
    let url = format!("{}/api/v1/query", prometheus.url);
    let sent = ctx
        .http
        .post(url)
        .form(&[("query", query.as_str()), ("timeout", PROMETHEUS_TIMEOUT)])
        .timeout(ASK_WITHIN)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(error) => return unreachable("cannot be reached", &error),
    };
    let status = response.status().as_u16();
    match response.bytes().await {
        Ok(body) => metric::answer(status, &body),
        Err(error) => unreachable("broke off its answer", &error),
    }
}

/// What a tenant reads when Prometheus could not be asked: what went wrong, without the
/// operator's own address for Prometheus, which goes to the operator's log alone.
fn unreachable(what: &str, error: &reqwest::Error) -> Answer {
    tracing::warn!(%error, "Prometheus {what}");
    let why = if error.is_timeout() {
        "no answer in time"
    } else if error.is_connect() {
        "no connection"
    } else {
        "the request failed"
    };
    Answer::Unreachable(format!("Prometheus {what} ({why})"))
}
