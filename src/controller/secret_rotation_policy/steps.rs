//! The steps of a policy's life against its provider: first sight (adopt or create),
//! rotation, retirement of the previous value, and repair of a target edited by hand.

use kube::ResourceExt;

use super::{record, target};
use crate::{
    api::v1alpha1::{SecretRotationPolicy, SecretRotationPolicyStatus},
    controller::{Context, config_entry::restart, status::now},
    core::rotation::{self, Due, Happened, Progress, Retirement, Schedule},
    secrets::{self, CURRENT, PREVIOUS, Provider, SecretProvider, SecretValue, Selector, generate},
};

/// One reconcile's steps, updating `status` as each lands.
pub struct Run<'a> {
    pub policy: &'a SecretRotationPolicy,
    pub schedule: &'a Schedule,
    pub provider: &'a Provider,
    pub status: &'a mut SecretRotationPolicyStatus,
    pub progress: &'a mut Progress,
    pub ctx: &'a Context,
}

impl Run<'_> {
    /// Adopts or creates the secret, rotates when due, retires the previous value when
    /// it may, and puts back a target edited by hand.
    pub async fn step(&mut self) -> Result<(), secrets::Error> {
        if self.status.current_version.is_none() {
            self.adopt().await?;
        }
        match rotation::due(self.policy, self.status, self.schedule, &now()) {
            Due::No => {}
            Due::Waits(why) => self.progress.waiting = Some(why),
            Due::Rotate { request } => {
                self.rotate().await?;
                if request.is_some() {
                    self.status.last_handled_request = request;
                }
            }
        }
        self.retire().await?;
        // Last, so that a rotation or retirement this reconcile finishes comes first.
        target::repair(
            self.policy,
            self.provider,
            self.status,
            self.progress,
            self.ctx,
        )
        .await
    }

    /// First sight: takes the provider's current value, creating the secret if needed.
    async fn adopt(&mut self) -> Result<(), secrets::Error> {
        let (policy, provider) = (self.policy, self.provider);
        let secret_id = &policy.spec.secret_id;
        let first = generate(policy.spec.generator.as_ref())?;
        let token = format!("{}-initial", policy.uid().unwrap_or_default());
        let created = provider.create(secret_id, &first, &token).await?;
        let value = provider.read(secret_id, Selector::Stage(CURRENT)).await?;
        target::project(self.ctx, policy, &value, None).await?;
        rotation::adopted(self.status, &value.version_id, self.schedule, &now());
        let target = &policy.spec.target.name;
        let happened = Happened::adopted(created, secret_id, &value.version_id, target);
        let event = happened.notification;
        self.progress.happened.push(happened);
        record::record(self.ctx, policy, self.schedule, self.status, event).await;
        Ok(())
    }

    /// One rotation: a new version staged under a token derived from the policy and its
    /// rotation count (so a retry finds the same version), promoted, projected beside
    /// the previous value, and rolled out to the restart targets.
    async fn rotate(&mut self) -> Result<(), secrets::Error> {
        let (policy, provider, ctx) = (self.policy, self.provider, self.ctx);
        let secret_id = &policy.spec.secret_id;
        // The target is still the policy's, or nothing is staged and promoted that it
        // could not then project.
        target::still_ours(policy, ctx).await?;
        let count = self.status.rotation_count.unwrap_or(0) + 1;
        let token = rotation::token(&policy.uid().unwrap_or_default(), count);
        let started = std::time::Instant::now();
        let mut current = provider.read(secret_id, Selector::Stage(CURRENT)).await?;
        let new = self.staged(&token).await?;
        if current.version_id == new.version_id {
            // Promoted before a crash: the value it replaced is the previous one now.
            current = provider.read(secret_id, Selector::Stage(PREVIOUS)).await?;
        }
        self.promote(&current, &new).await?;
        target::project(ctx, policy, &new, Some(&current)).await?;
        ctx.secret_rotated(policy.spec.provider, secret_id);
        target::restart_consumers(ctx, policy, &new.version_id).await;
        let versions = (current.version_id.as_str(), new.version_id.as_str());
        rotation::rotated(self.status, versions, count, self.schedule, &now());
        ctx.metrics.rotation("success", started.elapsed());
        tracing::info!(secret_id, version = %new.version_id, "rotated");
        let happened = Happened::rotated(secret_id, &new.version_id, &current.version_id);
        self.progress.happened.push(happened);
        record::record(ctx, policy, self.schedule, self.status, "rotated").await;
        Ok(())
    }

    /// The version staged under `token`: found (a retry), made by the rotation
    /// function, or generated and staged here.
    async fn staged(&self, token: &str) -> Result<SecretValue, secrets::Error> {
        let (policy, provider) = (self.policy, self.provider);
        let secret_id = &policy.spec.secret_id;
        match provider.read(secret_id, Selector::Version(token)).await {
            Ok(staged) => Ok(staged),
            Err(secrets::Error::NotFound { .. } | secrets::Error::Unusable { .. }) => {
                match (provider, &policy.spec.rotation_function) {
                    (Provider::Aws(aws), Some(function)) => {
                        let version_id = aws.rotate_with(secret_id, function, token).await?;
                        provider
                            .read(secret_id, Selector::Version(&version_id))
                            .await
                    }
                    (_, Some(_)) => Err(secrets::Error::Refused {
                        provider: "the in-cluster store",
                        action: "rotate with a rotation function".into(),
                        detail: "only AWS Secrets Manager runs rotation functions".into(),
                    }),
                    // A missing secret shows up here as well: staging then says so.
                    (_, None) => {
                        let value = generate(policy.spec.generator.as_ref())?;
                        let version_id = provider.stage(secret_id, &value, token).await?;
                        Ok(SecretValue { version_id, value })
                    }
                }
            }
            Err(error) => Err(error),
        }
    }

    /// Makes `new` current. A rotation function sets, tests and promotes the value
    /// itself: it is projected only once it is current, never a value the database
    /// has not taken yet.
    async fn promote(
        &self,
        current: &SecretValue,
        new: &SecretValue,
    ) -> Result<(), secrets::Error> {
        let (policy, provider) = (self.policy, self.provider);
        let secret_id = &policy.spec.secret_id;
        if policy.spec.rotation_function.is_none() {
            return provider.promote(secret_id, &new.version_id).await;
        }
        if current.version_id == new.version_id {
            return Ok(());
        }
        let now_current = provider.read(secret_id, Selector::Stage(CURRENT)).await?;
        if now_current.version_id == new.version_id {
            return Ok(());
        }
        Err(secrets::Error::Unavailable {
            provider: "AWS Secrets Manager",
            action: format!("rotation of {secret_id:?} by its rotation function"),
            detail: format!("version {} is not current yet", new.version_id),
        })
    }

    /// Retires the previous value after the grace period, once every restart target
    /// runs the current one; restarts again those that do not yet.
    async fn retire(&mut self) -> Result<(), secrets::Error> {
        let (policy, provider, ctx) = (self.policy, self.provider, self.ctx);
        let (running, total) = target::consumers(ctx, policy, self.status);
        self.status.consumers_ready = Some(running);
        self.status.consumers_total = Some(total);
        match rotation::retirement(self.status, (running, total), &now()) {
            Retirement::NotYet => Ok(()),
            Retirement::Consumers(why) => {
                // Restarts held back by the rate limit, or that failed, go again.
                let version = self.status.current_version.clone().unwrap_or_default();
                target::restart_consumers(ctx, policy, &version).await;
                self.progress.waiting = Some(why);
                Ok(())
            }
            Retirement::Retire(previous) => {
                let secret_id = &policy.spec.secret_id;
                let version = self.status.current_version.as_deref().unwrap_or_default();
                let current = provider.read(secret_id, Selector::Version(version)).await?;
                target::project(ctx, policy, &current, None).await?;
                provider.retire(secret_id, &previous).await?;
                rotation::retired(self.status);
                let happened = Happened::retired(secret_id, &previous);
                self.progress.happened.push(happened);
                record::record(ctx, policy, self.schedule, self.status, "retired").await;
                Ok(())
            }
        }
    }
}

/// Restarts one workload for a policy, logging what fails: a restart that does not
/// land is tried again while the previous value waits for its consumers.
pub async fn restart_one(
    ctx: &Context,
    policy: &SecretRotationPolicy,
    target: &crate::api::v1alpha1::RestartTarget,
    version: &str,
) {
    let namespace = policy.namespace().unwrap_or_default();
    let annotation = target::restart_annotation(&policy.name_any());
    if let Err(error) = restart(ctx, &namespace, target, &annotation, version).await {
        tracing::warn!(%error, workload = %target.name, "cannot restart");
    }
}
