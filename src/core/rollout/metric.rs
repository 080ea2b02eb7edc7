//! A canary's metric checks: each query scoped to the entry's namespace, Prometheus's
//! answer read as one number, and the number held against its bounds. Pure: the change
//! controller asks Prometheus and brings the answers here.

use std::time::Duration;

use promql_parser::{
    label::{MatchOp, Matcher},
    parser::{self, Expr, VectorSelector},
};
use serde_json::Value;

use crate::api::v1alpha1::{MetricCheck, RolloutSpec};

/// How long after the bake's end a check may go unanswered (Prometheus down, no series
/// yet) before the canary fails for it.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(120);

/// What one check's query came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// The query came to this number.
    Value(f64),
    /// No series matched, or the value is NaN (say, 0/0 without traffic): no answer yet.
    Empty,
    /// The query cannot be answered as written: the canary fails.
    Refused(String),
    /// Prometheus could not be asked, or failed: ask again.
    Unreachable(String),
}

/// A check and what its query came to.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// The check, as the rollout declares it.
    pub check: MetricCheck,
    /// What its query came to this time.
    pub answer: Answer,
}

/// Checks that every metric query of `rollout` is PromQL the operator can hold to a
/// namespace.
pub fn checked(rollout: &RolloutSpec) -> Result<(), String> {
    let problems: Vec<String> = rollout
        .metrics
        .iter()
        .filter_map(|check| {
            let error = bounds(check)
                .err()
                .or_else(|| scoped(&check.query, "namespace", "checked").err())?;
            Some(format!("metric {:?}: {}", check.name, error.trim()))
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(problems.join("; "))
}

/// A bound as a number, if set.
fn bound(number: &Option<serde_json::Number>) -> Option<f64> {
    number.as_ref().and_then(serde_json::Number::as_f64)
}

/// A check's bounds: at least one, and not the wrong way round.
fn bounds(check: &MetricCheck) -> Result<(), String> {
    match (bound(&check.fail_above), bound(&check.fail_below)) {
        (None, None) => Err("it needs failAbove, failBelow or both".to_owned()),
        (Some(above), Some(below)) if above < below => Err(format!(
            "failAbove ({above}) is below failBelow ({below}): every value would fail"
        )),
        _ => Ok(()),
    }
}

/// `query` limited to series whose `label` is `namespace`: the matcher joins every
/// selector, so no part of the query reads another namespace. An empty `label` leaves
/// the query as written (a single-tenant Prometheus).
pub fn scoped(query: &str, label: &str, namespace: &str) -> Result<String, String> {
    let mut expr = parser::parse(query)?;
    if label.is_empty() {
        return Ok(query.to_owned());
    }
    let matcher = Matcher::new(MatchOp::Equal, label, namespace);
    scope(&mut expr, &matcher)?;
    Ok(expr.to_string())
}

fn scope(expr: &mut Expr, matcher: &Matcher) -> Result<(), String> {
    match expr {
        Expr::VectorSelector(selector) => held(selector, matcher),
        Expr::MatrixSelector(matrix) => held(&mut matrix.vs, matcher),
        Expr::Aggregate(aggregate) => {
            scope(&mut aggregate.expr, matcher)?;
            aggregate
                .param
                .as_mut()
                .map_or(Ok(()), |param| scope(param, matcher))
        }
        Expr::Unary(unary) => scope(&mut unary.expr, matcher),
        Expr::Binary(binary) => {
            scope(&mut binary.lhs, matcher)?;
            scope(&mut binary.rhs, matcher)
        }
        Expr::Paren(paren) => scope(&mut paren.expr, matcher),
        Expr::Subquery(subquery) => scope(&mut subquery.expr, matcher),
        Expr::Call(call) => call
            .args
            .args
            .iter_mut()
            .try_for_each(|arg| scope(arg, matcher)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
        Expr::Extension(_) => Err("extension expressions are not PromQL".to_owned()),
    }
}

/// Adds `matcher` to `selector`. Alternatives inside its braces (`{a="1" or b="2"}`)
/// parse here but are not PromQL that Prometheus runs.
fn held(selector: &mut VectorSelector, matcher: &Matcher) -> Result<(), String> {
    let matchers = &mut selector.matchers;
    if !matchers.or_matchers.is_empty() {
        return Err(format!(
            "`or` inside the braces of {selector} is not PromQL: join two selectors with `or`"
        ));
    }
    matchers.matchers.push(matcher.clone());
    Ok(())
}

/// Reads Prometheus's answer to an instant query: HTTP `status` and its JSON `body`.
pub fn answer(status: u16, body: &[u8]) -> Answer {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return Answer::Unreachable(format!("Prometheus answered HTTP {status} without JSON"));
    };
    if body["status"] != "success" {
        let kind = body["errorType"].as_str().unwrap_or("unknown");
        let error = body["error"].as_str().unwrap_or("no reason given");
        // `execution` failures (duplicate series while pods churn, too many samples)
        // come and go with the data: asked again, like a Prometheus that is down.
        return match kind {
            "bad_data" => Answer::Refused(format!("Prometheus refused it: {error}")),
            _ => Answer::Unreachable(format!("Prometheus failed ({kind}): {error}")),
        };
    }
    let data = &body["data"];
    let result = &data["result"];
    match data["resultType"].as_str() {
        Some("scalar") => number(&result[1]),
        Some("vector") => match result.as_array().map(Vec::as_slice) {
            Some([]) | None => Answer::Empty,
            Some([one]) => number(&one["value"][1]),
            Some(many) => Answer::Refused(format!(
                "it returned {} series where a check needs one number: aggregate them, e.g. with sum(...)",
                many.len()
            )),
        },
        Some(other) => Answer::Refused(format!(
            "it returned a {other} where a check needs one number"
        )),
        None => Answer::Unreachable("Prometheus answered without a result type".to_owned()),
    }
}

/// A sample value as Prometheus writes it: `"0.5"`, `"+Inf"`, `"NaN"`.
fn number(value: &Value) -> Answer {
    match value.as_str().map(str::parse::<f64>) {
        Some(Ok(value)) if !value.is_nan() => Answer::Value(value),
        _ => Answer::Empty,
    }
}

/// The first reading that fails the canary: a value out of bounds, or a query that
/// cannot be answered.
pub fn failed(readings: &[Reading]) -> Option<String> {
    readings.iter().find_map(|reading| {
        let name = &reading.check.name;
        match &reading.answer {
            Answer::Refused(why) => Some(format!("metric {name:?} cannot be asked: {why}")),
            Answer::Value(value) => breach(&reading.check, *value),
            Answer::Empty | Answer::Unreachable(_) => None,
        }
    })
}

fn breach(check: &MetricCheck, value: f64) -> Option<String> {
    let name = &check.name;
    if let Some(above) = bound(&check.fail_above).filter(|above| value > *above) {
        return Some(format!("metric {name:?} is {value}, above {above}"));
    }
    if let Some(below) = bound(&check.fail_below).filter(|below| value < *below) {
        return Some(format!("metric {name:?} is {value}, below {below}"));
    }
    None
}

/// The checks with no answer yet, and why: `"error-rate" (no series)`.
pub fn unanswered(readings: &[Reading]) -> Option<String> {
    let missing: Vec<String> = readings
        .iter()
        .filter_map(|reading| {
            let name = &reading.check.name;
            match &reading.answer {
                Answer::Empty => Some(format!("{name:?} (no series, or not a number)")),
                Answer::Unreachable(why) => Some(format!("{name:?} ({why})")),
                Answer::Value(_) | Answer::Refused(_) => None,
            }
        })
        .collect();
    (!missing.is_empty()).then(|| format!("metric {}", missing.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(above: Option<f64>, below: Option<f64>) -> MetricCheck {
        let number = |n: f64| serde_json::Number::from_f64(n).expect("finite");
        MetricCheck {
            name: "error-rate".into(),
            query: "sum(rate(errors_total[1m]))".into(),
            fail_above: above.map(number),
            fail_below: below.map(number),
        }
    }

    fn read(answer: Answer) -> Reading {
        Reading {
            check: check(Some(0.05), None),
            answer,
        }
    }

    #[test]
    fn every_selector_is_held_to_the_namespace() {
        let scoped = scoped(
            r#"sum(rate(http_requests_total{code=~"5.."}[1m])) / sum(rate(http_requests_total[1m] offset 5m))"#,
            "namespace",
            "team-a",
        )
        .unwrap();
        assert_eq!(
            scoped,
            r#"sum(rate(http_requests_total{code=~"5..",namespace="team-a"}[1m])) / sum(rate(http_requests_total{namespace="team-a"}[1m] offset 5m))"#
        );
    }

    #[test]
    fn a_query_naming_another_namespace_still_reads_only_its_own() {
        let scoped = scoped(
            r#"max(secret_metric{namespace="team-b"}) or vector(0)"#,
            "namespace",
            "team-a",
        )
        .unwrap();
        // Both must hold: no series does, so nothing of team-b is read.
        assert_eq!(
            scoped,
            r#"max(secret_metric{namespace="team-a",namespace="team-b"}) or vector(0)"#
        );
        let or = super::scoped(r#"up{job="a" or job="b"}"#, "namespace", "team-a");
        assert!(or.unwrap_err().contains("`or` inside the braces"));
    }

    #[test]
    fn subqueries_functions_and_unscoped_prometheus() {
        let scoped = scoped("max_over_time(deriv(queue_depth[2m])[10m:1m])", "ns", "x").unwrap();
        assert_eq!(
            scoped,
            r#"max_over_time(deriv(queue_depth{ns="x"}[2m])[10m:1m])"#
        );
        assert_eq!(super::scoped("up", "", "x").unwrap(), "up");
        assert!(super::scoped("sum(", "ns", "x").is_err());
    }

    #[test]
    fn queries_that_do_not_parse_are_named() {
        let mut rollout: RolloutSpec = serde_json::from_value(json!({
            "canaryTargets": [{"kind": "Deployment", "name": "a"}],
            "bakeTime": "1m",
            "metrics": [{"name": "latency", "query": "histogram_quantile(0.99,", "failAbove": 1}],
        }))
        .unwrap();
        let error = checked(&rollout).unwrap_err();
        assert!(error.starts_with("metric \"latency\": "), "{error}");
        rollout.metrics[0].query = "vector(1)".into();
        assert_eq!(checked(&rollout), Ok(()));
        rollout.metrics[0].fail_below = serde_json::Number::from_f64(2.0);
        let inverted = checked(&rollout).unwrap_err();
        assert!(
            inverted.contains("failAbove (1) is below failBelow (2)"),
            "{inverted}"
        );
    }

    #[test]
    fn prometheus_answers_are_read() {
        let vector = |result: Value| {
            let body =
                json!({"status": "success", "data": {"resultType": "vector", "result": result}});
            answer(200, body.to_string().as_bytes())
        };
        let sample = |v: &str| json!({"metric": {}, "value": [1.0, v]});
        assert_eq!(vector(json!([sample("0.25")])), Answer::Value(0.25));
        assert_eq!(
            vector(json!([sample("+Inf")])),
            Answer::Value(f64::INFINITY)
        );
        assert_eq!(vector(json!([sample("NaN")])), Answer::Empty);
        assert_eq!(vector(json!([])), Answer::Empty);
        let many = vector(json!([sample("1"), sample("2")]));
        assert!(
            matches!(many, Answer::Refused(ref why) if why.contains("2 series")),
            "{many:?}"
        );
        let scalar =
            json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}});
        assert_eq!(
            answer(200, scalar.to_string().as_bytes()),
            Answer::Value(3.0)
        );
        let bad = json!({"status": "error", "errorType": "bad_data", "error": "parse error"});
        assert!(matches!(
            answer(400, bad.to_string().as_bytes()),
            Answer::Refused(_)
        ));
        let down = json!({"status": "error", "errorType": "unavailable", "error": "starting"});
        assert!(matches!(
            answer(503, down.to_string().as_bytes()),
            Answer::Unreachable(_)
        ));
        assert!(matches!(answer(502, b"<html>"), Answer::Unreachable(_)));
    }

    #[test]
    fn values_out_of_bounds_or_refused_queries_fail() {
        assert_eq!(failed(&[read(Answer::Value(0.01))]), None);
        assert_eq!(
            failed(&[read(Answer::Value(0.2))]).unwrap(),
            "metric \"error-rate\" is 0.2, above 0.05"
        );
        let floor = Reading {
            check: check(None, Some(10.0)),
            answer: Answer::Value(3.0),
        };
        assert_eq!(
            failed(&[floor]).unwrap(),
            "metric \"error-rate\" is 3, below 10"
        );
        assert!(failed(&[read(Answer::Refused("bad".into()))]).is_some());
        assert_eq!(failed(&[read(Answer::Empty)]), None);
        assert_eq!(
            unanswered(&[read(Answer::Empty), read(Answer::Value(0.0))]).unwrap(),
            "metric \"error-rate\" (no series, or not a number)"
        );
        assert_eq!(unanswered(&[read(Answer::Value(0.0))]), None);
    }
}
