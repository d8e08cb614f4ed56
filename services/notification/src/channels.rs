//! The transports: email over SMTP (lettre), SMS and push over HTTP webhooks.
//! A transport that is not configured is reported as such, so the
//! notification is recorded as skipped rather than silently dropped.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::json;
use uuid::Uuid;

use crate::config::NotificationConfig;

/// How long one send may take before it gives up.
pub const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("invalid SMTP_URL: {0}")]
    SmtpUrl(String),
    #[error("invalid SMTP_FROM: {0}")]
    From(String),
    #[error("invalid recipient address {0:?}")]
    Recipient(String),
    #[error("smtp: {0}")]
    Smtp(String),
    /// The SMTP server refused the email for good (a 5xx answer).
    #[error("smtp: {0}")]
    SmtpRefused(String),
    #[error("webhook: {0}")]
    Webhook(String),
    /// The provider refused the request for good (a 4xx answer).
    #[error("webhook: {0}")]
    WebhookRefused(String),
}

impl ChannelError {
    /// Whether sending again would be refused the same way: a retry can only
    /// repeat it, so the notification is not retried.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Recipient(_) | Self::SmtpRefused(_) | Self::WebhookRefused(_)
        )
    }
}

#[derive(Clone)]
struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

/// A plain SMTP transport for `smtp://[user:password@]host[:port]`. TLS is
/// left to the network (a relay on the same node or a mesh); lettre's TLS
/// would bring a second crypto stack into the build.
fn smtp_transport(url: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>, ChannelError> {
    let bad = |why: &str| {
        ChannelError::SmtpUrl(format!(
            "{why}: expected smtp://[user:password@]host[:port]"
        ))
    };
    let rest = url
        .strip_prefix("smtp://")
        .ok_or_else(|| bad("not an smtp:// URL"))?;
    let rest = rest.trim_end_matches('/');
    let (credentials, address) = match rest.rsplit_once('@') {
        Some((credentials, address)) => (Some(credentials), address),
        None => (None, rest),
    };
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().map_err(|_| bad("bad port"))?),
        None => (address, 25),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    // Connections are kept and reused (checked with a NOOP first): a new one
    // per email cost a TCP handshake, the greeting, EHLO and QUIT each time.
    // As many as the consumer sends at once.
    let pool =
        lettre::transport::smtp::PoolConfig::new().max_size(u32::from(crate::consumer::PREFETCH));
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .timeout(Some(TIMEOUT))
        .pool_config(pool);
    if let Some(credentials) = credentials {
        let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
        builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
            user.to_owned(),
            password.to_owned(),
        ));
    }
    Ok(builder.build())
}

/// The configured transports.
#[derive(Clone)]
pub struct Channels {
    mailer: Option<Mailer>,
    sms: Option<String>,
    push: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels")
            .field("email", &self.mailer.is_some())
            .field("sms", &self.sms.is_some())
            .field("push", &self.push.is_some())
            .finish()
    }
}

impl Channels {
    pub fn from_config(config: &NotificationConfig) -> Result<Self, ChannelError> {
        let mailer =
            match &config.smtp_url {
                None => None,
                Some(url) => Some(Mailer {
                    transport: smtp_transport(url)?,
                    from: config.smtp_from.parse().map_err(
                        |e: lettre::address::AddressError| ChannelError::From(e.to_string()),
                    )?,
                }),
            };
        Ok(Self {
            mailer,
            sms: config.sms_webhook_url.clone(),
            push: config.push_webhook_url.clone(),
            http: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .build()
                .map_err(|e| ChannelError::Webhook(e.to_string()))?,
        })
    }

    pub fn has_email(&self) -> bool {
        self.mailer.is_some()
    }

    pub fn has_sms(&self) -> bool {
        self.sms.is_some()
    }

    pub fn has_push(&self) -> bool {
        self.push.is_some()
    }

    #[tracing::instrument(skip_all, err)]
    pub async fn send_email(
        &self,
        to: &str,
        subject: &str,
        body: &str,
    ) -> Result<(), ChannelError> {
        let mailer = self
            .mailer
            .as_ref()
            .ok_or_else(|| ChannelError::Smtp("email is not configured".to_owned()))?;
        let to: Mailbox = to
            .parse()
            .map_err(|_| ChannelError::Recipient(to.to_owned()))?;
        let message = Message::builder()
            .from(mailer.from.clone())
            .to(to)
            .subject(subject)
            .body(body.to_owned())
            .map_err(|e| ChannelError::Smtp(e.to_string()))?;
        mailer.transport.send(message).await.map(drop).map_err(|e| {
            if e.is_permanent() {
                ChannelError::SmtpRefused(e.to_string())
            } else {
                ChannelError::Smtp(e.to_string())
            }
        })
    }

    #[tracing::instrument(skip_all, err)]
    pub async fn send_sms(&self, phone: &str, text: &str) -> Result<(), ChannelError> {
        let url = self
            .sms
            .as_ref()
            .ok_or_else(|| ChannelError::Webhook("sms is not configured".to_owned()))?;
        self.post(url, &json!({"to": phone, "text": text})).await
    }

    #[tracing::instrument(skip_all, err)]
    pub async fn send_push(
        &self,
        user_id: Uuid,
        title: &str,
        body: &str,
    ) -> Result<(), ChannelError> {
        let url = self
            .push
            .as_ref()
            .ok_or_else(|| ChannelError::Webhook("push is not configured".to_owned()))?;
        self.post(
            url,
            &json!({"user_id": user_id, "title": title, "body": body}),
        )
        .await
    }

    async fn post(&self, url: &str, body: &serde_json::Value) -> Result<(), ChannelError> {
        let response = self
            .http
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(|e| ChannelError::Webhook(e.to_string()))?;
        let status = response.status();
        let said = format!("the provider answered {status}");
        if status.is_success() {
            Ok(())
        } else if refused_for_good(status) {
            Err(ChannelError::WebhookRefused(said))
        } else {
            Err(ChannelError::Webhook(said))
        }
    }
}

/// A 4xx answer says the request itself is wrong, so it would be refused
/// again, except a timeout (408) or a rate limit (429), which pass.
fn refused_for_good(status: reqwest::StatusCode) -> bool {
    status.is_client_error()
        && !matches!(
            status,
            reqwest::StatusCode::REQUEST_TIMEOUT | reqwest::StatusCode::TOO_MANY_REQUESTS
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhooks_client_errors_are_final_but_timeouts_and_rate_limits() {
        use reqwest::StatusCode;

        assert!(refused_for_good(StatusCode::BAD_REQUEST));
        assert!(refused_for_good(StatusCode::NOT_FOUND));
        assert!(!refused_for_good(StatusCode::REQUEST_TIMEOUT));
        assert!(!refused_for_good(StatusCode::TOO_MANY_REQUESTS));
        assert!(!refused_for_good(StatusCode::SERVICE_UNAVAILABLE));
    }

    // A pooled transport starts its cleanup task on the runtime.
    #[tokio::test]
    async fn smtp_urls_parse_and_bad_ones_say_why() {
        assert!(smtp_transport("smtp://127.0.0.1:2525").is_ok());
        assert!(smtp_transport("smtp://user:secret@mail.internal").is_ok());
        assert!(smtp_transport("http://mail").is_err());
        assert!(smtp_transport("smtp://mail:port").is_err());
        assert!(smtp_transport("smtp://").is_err());
    }
}
