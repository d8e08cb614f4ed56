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
    /// The SMTP server refused the recipient for good (see
    /// [`refuses_the_recipient`]).
    #[error("smtp: {0}")]
    SmtpRefused(String),
    #[error("webhook: {0}")]
    Webhook(String),
    /// The provider refused the message for good (see [`refused_for_good`]).
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
            let said = e.to_string();
            match e.status() {
                Some(code) if refuses_the_recipient(code.into(), &said) => {
                    ChannelError::SmtpRefused(said)
                }
                _ => ChannelError::Smtp(said),
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

/// Whether an SMTP server's answer `code` (with its text `said`) refuses
/// the recipient's mailbox, which sending again cannot change: 550 (no such
/// mailbox), 551 (not local) or 553 (a name not allowed), unless its
/// enhanced status (RFC 3463) puts the cause elsewhere, as 5.7.x (relaying
/// denied) puts it in our setup. Every other refusal, a failed login (535),
/// TLS required (530), a message too large (552) or a policy (554), is about
/// our setup or the message: it is retried and dead-lettered, so that it can
/// be replayed once that is fixed.
fn refuses_the_recipient(code: u16, said: &str) -> bool {
    let enhanced = said.split_whitespace().find(|word| {
        let parts: Vec<&str> = word.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    });
    matches!(code, 550 | 551 | 553) && enhanced.is_none_or(|status| status.starts_with("5.1."))
}

/// Whether a webhook's answer refuses the message itself for good: a bad
/// request (400), a recipient gone (410) or a message it cannot take (422).
/// A 401, 403 or 404 is our token or URL, and a 408 or 429 passes: those
/// are retried and dead-lettered, to be replayed.
fn refused_for_good(status: reqwest::StatusCode) -> bool {
    matches!(
        status,
        reqwest::StatusCode::BAD_REQUEST
            | reqwest::StatusCode::GONE
            | reqwest::StatusCode::UNPROCESSABLE_ENTITY
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_refuses_for_good_only_what_is_wrong_with_the_message() {
        use reqwest::StatusCode;

        assert!(refused_for_good(StatusCode::BAD_REQUEST));
        assert!(refused_for_good(StatusCode::GONE));
        assert!(refused_for_good(StatusCode::UNPROCESSABLE_ENTITY));
        for ours in [
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
            StatusCode::NOT_FOUND,
            StatusCode::REQUEST_TIMEOUT,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            assert!(!refused_for_good(ours), "{ours}");
        }
    }

    #[test]
    fn an_smtp_server_refuses_for_good_only_the_recipients_mailbox() {
        let refused = |code, said| refuses_the_recipient(code, said);

        assert!(refused(550, "permanent error (550): 5.1.1 no such mailbox"));
        assert!(refused(
            553,
            "permanent error (553): mailbox name not allowed"
        ));
        assert!(refused(551, "permanent error (551): 5.1.6 moved"));
        assert!(!refused(
            550,
            "permanent error (550): 5.7.1 relaying denied"
        ));
        assert!(!refused(
            535,
            "permanent error (535): 5.7.8 bad credentials"
        ));
        assert!(!refused(530, "permanent error (530): must issue STARTTLS"));
        assert!(!refused(552, "permanent error (552): message too large"));
        assert!(!refused(554, "permanent error (554): transaction failed"));
        assert!(!refused(450, "transient error (450): mailbox busy"));
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
