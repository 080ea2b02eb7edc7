//! AWS Secrets Manager through the AWS SDK: versions and their staging labels are
//! Secrets Manager's own, so a rotation is `PutSecretValue` (pending), then
//! `UpdateSecretVersionStage` (current), and later the previous label's removal.

use std::time::Duration;

use aws_sdk_secretsmanager::{
    Client,
    config::{Credentials, Region, retry::RetryConfig, timeout::TimeoutConfig},
    error::{ProvideErrorMetadata, SdkError},
};
use secrecy::{ExposeSecret, SecretString};

use super::{CURRENT, Error, PENDING, PREVIOUS, Result, SecretProvider, SecretValue, Selector};

const PROVIDER: &str = "AWS Secrets Manager";

/// Where and as whom to reach Secrets Manager.
#[derive(Clone, Debug, Default)]
pub struct AwsSettings {
    /// The region; the default chain's when unset.
    pub region: Option<String>,
    /// An endpoint instead of AWS's own (a local emulator, a VPC endpoint).
    pub endpoint_url: Option<String>,
    /// Static credentials (from a referenced Secret); the default chain when unset.
    pub credentials: Option<(String, SecretString)>,
}

/// A Secrets Manager client.
#[derive(Clone, Debug)]
pub struct AwsProvider {
    client: Client,
}

impl AwsProvider {
    /// A client for `settings`, with short timeouts and few retries: a reconcile must
    /// not hang on an unreachable endpoint, and the controller retries with backoff.
    pub async fn new(settings: &AwsSettings) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_timeout(Duration::from_secs(15))
                    .build(),
            );
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &settings.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some((access_key, secret_key)) = &settings.credentials {
            loader = loader.credentials_provider(Credentials::new(
                access_key,
                secret_key.expose_secret(),
                None,
                None,
                "summit-config-secret",
            ));
        }
        Self {
            client: Client::new(&loader.load().await),
        }
    }
}

/// Sorts an SDK failure into what the controller can act on. Only codes and the
/// service's message are kept: requests and responses are never formatted, so no value
/// can leak through an error.
fn classify<E>(
    action: &str,
    secret_id: &str,
    error: SdkError<E, aws_sdk_secretsmanager::config::http::HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let action = format!("{action} of {secret_id:?}");
    match &error {
        SdkError::DispatchFailure(failure) => Error::Unavailable {
            provider: PROVIDER,
            action,
            detail: if failure.is_timeout() {
                "timed out".into()
            } else {
                "cannot connect".into()
            },
        },
        SdkError::TimeoutError(_) => Error::Unavailable {
            provider: PROVIDER,
            action,
            detail: "timed out".into(),
        },
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown");
            let detail = format!("{code}: {}", service.err().message().unwrap_or(""));
            match code {
                "ResourceNotFoundException" => Error::NotFound {
                    provider: PROVIDER,
                    secret_id: secret_id.to_owned(),
                },
                "ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded" => {
                    Error::Throttled {
                        provider: PROVIDER,
                        action,
                    }
                }
                "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException" => Error::Denied {
                    provider: PROVIDER,
                    action,
                    detail,
                },
                "InternalServiceError" | "ServiceUnavailable" => Error::Unavailable {
                    provider: PROVIDER,
                    action,
                    detail,
                },
                _ => Error::Refused {
                    provider: PROVIDER,
                    action,
                    detail,
                },
            }
        }
        SdkError::ResponseError(_) => Error::Unavailable {
            provider: PROVIDER,
            action,
            detail: "an unreadable response".into(),
        },
        _ => Error::Refused {
            provider: PROVIDER,
            action,
            detail: "the request could not be built".into(),
        },
    }
}

impl AwsProvider {
    /// Asks Secrets Manager to rotate with `function` (a Lambda ARN), which creates,
    /// tests and promotes the new version itself; returns the new version's id.
    pub async fn rotate_with(
        &self,
        secret_id: &str,
        function: &str,
        token: &str,
    ) -> Result<String> {
        let output = self
            .client
            .rotate_secret()
            .secret_id(secret_id)
            .rotation_lambda_arn(function)
            .rotate_immediately(true)
            .client_request_token(token)
            .send()
            .await
            .map_err(|e| classify("RotateSecret", secret_id, e))?;
        Ok(output.version_id().unwrap_or(token).to_owned())
    }
}

impl SecretProvider for AwsProvider {
    async fn read(&self, secret_id: &str, at: Selector<'_>) -> Result<SecretValue> {
        let request = self.client.get_secret_value().secret_id(secret_id);
        let request = match at {
            Selector::Stage(stage) => request.version_stage(stage),
            Selector::Version(version) => request.version_id(version),
        };
        let output = request
            .send()
            .await
            .map_err(|e| classify("GetSecretValue", secret_id, e))?;
        let version_id = output.version_id().unwrap_or_default().to_owned();
        let value = output.secret_string().ok_or_else(|| Error::Unusable {
            provider: PROVIDER,
            secret_id: secret_id.to_owned(),
            what: "a binary value; only string values are supported".into(),
        })?;
        Ok(SecretValue {
            version_id,
            value: SecretString::from(value.to_owned()),
        })
    }

    async fn create(&self, secret_id: &str, value: &SecretString, token: &str) -> Result<bool> {
        let created = self
            .client
            .create_secret()
            .name(secret_id)
            .secret_string(value.expose_secret())
            .client_request_token(token)
            .description("managed by summit-config")
            .send()
            .await;
        match created {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(service))
                if service.err().code() == Some("ResourceExistsException") =>
            {
                Ok(false)
            }
            Err(error) => Err(classify("CreateSecret", secret_id, error)),
        }
    }

    async fn stage(&self, secret_id: &str, value: &SecretString, token: &str) -> Result<String> {
        let output = self
            .client
            .put_secret_value()
            .secret_id(secret_id)
            .secret_string(value.expose_secret())
            .client_request_token(token)
            .version_stages(PENDING)
            .send()
            .await
            .map_err(|e| classify("PutSecretValue", secret_id, e))?;
        Ok(output.version_id().unwrap_or(token).to_owned())
    }

    async fn promote(&self, secret_id: &str, version_id: &str) -> Result<()> {
        let current = self.read(secret_id, Selector::Stage(CURRENT)).await?;
        if current.version_id == version_id {
            return Ok(());
        }
        self.client
            .update_secret_version_stage()
            .secret_id(secret_id)
            .version_stage(CURRENT)
            .move_to_version_id(version_id)
            .remove_from_version_id(&current.version_id)
            .send()
            .await
            .map_err(|e| classify("UpdateSecretVersionStage", secret_id, e))?;
        // The pending label has done its job.
        self.client
            .update_secret_version_stage()
            .secret_id(secret_id)
            .version_stage(PENDING)
            .remove_from_version_id(version_id)
            .send()
            .await
            .map_err(|e| classify("UpdateSecretVersionStage", secret_id, e))?;
        Ok(())
    }

    async fn retire(&self, secret_id: &str, version_id: &str) -> Result<()> {
        let removed = self
            .client
            .update_secret_version_stage()
            .secret_id(secret_id)
            .version_stage(PREVIOUS)
            .remove_from_version_id(version_id)
            .send()
            .await;
        match removed {
            Ok(_) => Ok(()),
            // Already retired (or moved on by a later rotation).
            Err(SdkError::ServiceError(service))
                if service.err().code() == Some("InvalidParameterException") =>
            {
                Ok(())
            }
            Err(error) => Err(classify("UpdateSecretVersionStage", secret_id, error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_secretsmanager::{
        config::http::HttpResponse, error::ErrorMetadata,
        operation::get_secret_value::GetSecretValueError,
    };
    use aws_smithy_types::body::SdkBody;

    use super::*;

    fn answered(code: &str) -> Error {
        let error = GetSecretValueError::generic(
            ErrorMetadata::builder()
                .code(code)
                .message("from the service")
                .build(),
        );
        let response = HttpResponse::new(400.try_into().expect("a status"), SdkBody::empty());
        classify(
            "read",
            "team-a/db",
            SdkError::service_error(error, response),
        )
    }

    #[test]
    fn throttling_is_transient_and_says_so() {
        for code in ["ThrottlingException", "TooManyRequestsException"] {
            let error = answered(code);
            assert_eq!(error.label(), "ProviderThrottled");
            assert_eq!(error.class(), crate::core::Class::Transient);
        }
    }

    #[test]
    fn a_lost_secret_or_a_denial_is_not_transient() {
        let lost = answered("ResourceNotFoundException");
        assert_eq!(lost.label(), "SecretNotFound");
        assert_eq!(lost.class(), crate::core::Class::Invalid);
        let denied = answered("AccessDeniedException");
        assert_eq!(denied.label(), "AccessDenied");
        assert_eq!(denied.class(), crate::core::Class::Invalid);
        assert_eq!(
            answered("InternalServiceError").label(),
            "ProviderUnavailable"
        );
    }
}
