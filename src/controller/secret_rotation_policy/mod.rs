//! The SecretRotationPolicy reconcile loop. A policy adopts (or creates) its secret,
//! projects the current value into its target Secret, and rotates on schedule or on
//! demand: generate, stage, promote, project the new value beside the previous one,
//! roll the restart targets, and retire the previous value only once the grace period
//! has passed and every restart target runs the new one. The schedule lives in status,
//! so it survives restarts; every step is idempotent, so a crash repeats nothing.
//! When and whether each step happens is decided in
//! [`core::rotation`](crate::core::rotation).

mod record;
mod steps;
mod target;

use std::{sync::Arc, time::Duration};

use kube::{ResourceExt, runtime::controller::Action};
use tracing::instrument;

use super::{
    Context, Error, Result, observed, requeue_after_error,
    status::{self, now},
};
use crate::controller::events::EventType;
use crate::{
    api::v1alpha1::{
        SecretProvider as ProviderKind, SecretRotationPolicy, SecretRotationPolicySpec,
    },
    core::rotation::{self, Progress},
    secrets::{self, Provider},
};

const KIND: &str = "SecretRotationPolicy";

/// How often a policy refused its target looks again: a foreign Secret may go away,
/// or be handed over by labelling it, without this policy hearing of it.
const TARGET_RECHECK: Duration = Duration::from_secs(300);

#[instrument(skip_all, fields(namespace = policy.namespace().unwrap_or_default(), name = policy.name_any()))]
pub async fn reconcile(policy: Arc<SecretRotationPolicy>, ctx: Arc<Context>) -> Result<Action> {
    observed(KIND, policy.as_ref(), &ctx, reconcile_policy(&policy, &ctx)).await
}

pub fn error_policy(policy: Arc<SecretRotationPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    requeue_after_error(KIND, policy.as_ref(), error, &ctx)
}

async fn reconcile_policy(policy: &SecretRotationPolicy, ctx: &Context) -> Result<Action> {
    let current = policy.status.clone().unwrap_or_default();
    let checked = match rotation::check_schedule(&policy.spec) {
        Ok(schedule) => target::check(policy, ctx).await?.map(|()| schedule),
        Err(invalid) => Err(invalid),
    };
    let schedule = match checked {
        Ok(schedule) => schedule,
        Err(invalid) => {
            let refused_target = invalid.reason == target::REASON_NOT_OWNED;
            status::report_validation(ctx, KIND, policy, policy.status.as_ref(), &Err(invalid))
                .await?;
            return Ok(if refused_target {
                Action::requeue(TARGET_RECHECK)
            } else {
                Action::await_change()
            });
        }
    };
    let mut next = current.clone();
    let mut progress = Progress::default();
    let namespace = policy.namespace().unwrap_or_default();
    let outcome = match provider_for(ctx, &namespace, &policy.spec).await {
        Ok(provider) => {
            let mut run = steps::Run {
                policy,
                schedule: &schedule,
                provider: &provider,
                status: &mut next,
                progress: &mut progress,
                ctx,
            };
            run.step().await
        }
        Err(error) => Err(error),
    };
    if outcome.is_err() {
        ctx.metrics.rotation("failure", Duration::ZERO);
    }
    let failure = outcome.as_ref().err().map(|e| (e.label(), e.to_string()));
    let (next, failed) = rotation::status(
        &current,
        next,
        (&schedule, &policy.spec.target.name),
        &progress,
        failure,
        (policy.metadata.generation, now()),
    );
    status::apply_status(ctx, KIND, policy, policy.status.as_ref(), &next).await?;
    for happened in progress.happened.into_iter().chain(failed) {
        let kind = if happened.note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let note = happened.note;
        ctx.publish(policy, kind, note.reason, note.message).await;
        record::notify(ctx, policy, &next, happened.notification);
    }
    outcome.map_err(Error::Secret)?;
    let waiting = progress.waiting.is_some();
    Ok(Action::requeue(rotation::requeue(&next, waiting, &now())))
}

/// The provider a policy names, with its settings.
async fn provider_for(
    ctx: &Context,
    namespace: &str,
    spec: &SecretRotationPolicySpec,
) -> Result<Provider, secrets::Error> {
    match spec.provider {
        ProviderKind::InCluster => Ok(Provider::InCluster(Box::new(
            secrets::InClusterProvider::new(ctx.client.clone(), namespace),
        ))),
        ProviderKind::AwsSecretsManager => ctx
            .aws_provider(namespace, &spec.secret_id, spec.aws.as_ref())
            .await
            .map(Provider::Aws),
    }
}
