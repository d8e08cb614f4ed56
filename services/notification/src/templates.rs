//! What each event says on each channel. An event a customer need not hear
//! about (order.created, payment.succeeded, payment.failed: the order's own
//! paid or cancelled event says it better) renders nothing.

use std::borrow::Cow;

use gocommerce_proto::common::v1::Money;
use gocommerce_proto::events::v1::event_envelope::Payload;
use gocommerce_proto::events::v1::{EventEnvelope, OrderLine};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub subject: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub title: String,
    pub body: String,
}

/// An event's messages for one user, per channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub user_id: Uuid,
    /// A security notice: sent on its channels whatever the user's channel
    /// preferences say, as a change they did not make must reach them.
    pub security: bool,
    pub email: Option<Email>,
    pub sms: Option<String>,
    pub push: Option<Push>,
    /// Text the messages carry that the notification's record must not
    /// keep: a reset token, with which whoever reads it could take over the
    /// account until it runs out. The record holds [`REDACTED`] in its place.
    pub secret: Option<String>,
}

/// What a record holds in place of a message's secret.
pub const REDACTED: &str = "[redacted]";

impl Rendered {
    /// `text` as the notification's record keeps it: without the secret.
    pub fn for_record<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match &self.secret {
            Some(secret) if !secret.is_empty() && text.contains(secret.as_str()) => {
                Cow::Owned(text.replace(secret.as_str(), REDACTED))
            }
            _ => Cow::Borrowed(text),
        }
    }

    /// The body this event sends on `channel`.
    pub fn body(&self, channel: &str) -> Option<&str> {
        match channel {
            "email" => self.email.as_ref().map(|e| e.body.as_str()),
            "sms" => self.sms.as_deref(),
            "push" => self.push.as_ref().map(|p| p.body.as_str()),
            _ => None,
        }
    }
}

/// Where the messages send people, from the service's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    /// A shop's page for choosing a new password (`PASSWORD_RESET_URL`): a
    /// reset email links to it with the token as the `token` query
    /// parameter. Unset: the email holds the token and names the API route.
    pub password_reset: Option<String>,
}

impl Links {
    /// `password_reset` with `token=<token>` added to its query. The token
    /// is URL-safe base64, so it needs no escaping.
    fn password_reset(&self, token: &str) -> Option<String> {
        self.password_reset.as_ref().map(|url| {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}token={token}")
        })
    }
}

/// `USD 25.99`: minor units in the currency's own exponent.
pub fn format_money(money: Option<&Money>) -> String {
    let Some(money) = money else {
        return String::new();
    };
    let exponent = match money.currency.as_str() {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    };
    if exponent == 0 {
        return format!("{} {}", money.currency, money.amount);
    }
    let scale = 10_i64.pow(exponent);
    let sign = if money.amount < 0 { "-" } else { "" };
    let amount = money.amount.unsigned_abs();
    let scale = scale.unsigned_abs();
    format!(
        "{} {sign}{}.{:0width$}",
        money.currency,
        amount / scale,
        amount % scale,
        width = exponent as usize
    )
}

fn lines(items: &[OrderLine]) -> String {
    items
        .iter()
        .map(|i| {
            format!(
                "  {} x {} at {} = {}",
                i.quantity,
                i.name,
                format_money(i.unit_price.as_ref()),
                format_money(i.line_total.as_ref())
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `2026-12-07 15:10 UTC`.
fn utc_minute(at: Option<&prost_types::Timestamp>) -> String {
    at.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

fn user(raw: &str) -> Option<Uuid> {
    Uuid::parse_str(raw).ok()
}

/// The messages for an event, or None when it notifies nobody.
pub fn render(envelope: &EventEnvelope, links: &Links) -> Option<Rendered> {
    match envelope.payload.as_ref()? {
        Payload::UserRegistered(e) => Some(Rendered {
            user_id: user(&e.user_id)?,
            security: false,
            secret: None,
            email: Some(Email {
                subject: format!("Welcome to GoCommerce, {}", e.name),
                body: format!(
                    "Hello {},\n\nyour GoCommerce account {} is ready.\n\nHappy shopping!\n",
                    e.name, e.email
                ),
            }),
            sms: None,
            push: None,
        }),
        Payload::UserPasswordChanged(e) => Some(Rendered {
            user_id: user(&e.user_id)?,
            security: true,
            secret: None,
            email: Some(Email {
                subject: "Your GoCommerce password was changed".to_owned(),
                body: format!(
                    "Hello {},\n\nthe password of your GoCommerce account {} was just changed, \
                     and every session signed in with the old password was ended.\n\n\
                     If that was not you, someone else knows your password: contact us at once.\n",
                    e.name, e.email
                ),
            }),
            sms: None,
            push: None,
        }),
        Payload::UserPasswordResetRequested(e) => {
            let (how, what) = match links.password_reset(&e.token) {
                Some(link) => ("open this link", link),
                None => (
                    "send this token with it to POST /v1/auth/password-reset/confirm",
                    e.token.clone(),
                ),
            };
            Some(Rendered {
                user_id: user(&e.user_id)?,
                security: true,
                secret: Some(e.token.clone()),
                email: Some(Email {
                    subject: "Reset your GoCommerce password".to_owned(),
                    body: format!(
                        "Hello {},\n\nsomeone asked to reset the password of your GoCommerce account {}. \
                         To choose a new one, {how}; it works once, until {}:\n\n{what}\n\n\
                         If that was not you, ignore this email: your password stays as it is.\n",
                        e.name,
                        e.email,
                        utc_minute(e.expires_at.as_ref()),
                    ),
                }),
                sms: None,
                push: None,
            })
        }
        Payload::OrderPaid(e) => {
            let total = format_money(e.total.as_ref());
            Some(Rendered {
                user_id: user(&e.user_id)?,
                security: false,
                secret: None,
                email: Some(Email {
                    subject: format!("Order {} confirmed", e.order_id),
                    body: format!(
                        "Thank you for your order {}.\n\n{}\n\nTotal: {total}\n\nWe will tell you when it ships.\n",
                        e.order_id,
                        lines(&e.items)
                    ),
                }),
                sms: Some(format!(
                    "GoCommerce: order {} confirmed, total {total}.",
                    e.order_id
                )),
                push: Some(Push {
                    title: "Order confirmed".to_owned(),
                    body: format!("Order {} is paid: {total}.", e.order_id),
                }),
            })
        }
        Payload::OrderCancelled(e) => {
            let refund = e
                .refund_amount
                .as_ref()
                .filter(|m| m.amount > 0)
                .map(|m| format!("\n\nA refund of {} is on its way.", format_money(Some(m))))
                .unwrap_or_default();
            Some(Rendered {
                user_id: user(&e.user_id)?,
                security: false,
                secret: None,
                email: Some(Email {
                    subject: format!("Order {} cancelled", e.order_id),
                    body: format!(
                        "Your order {} was cancelled: {}.\n\n{}\n\nTotal: {}{refund}\n",
                        e.order_id,
                        e.reason,
                        lines(&e.items),
                        format_money(e.total.as_ref())
                    ),
                }),
                sms: Some(format!(
                    "GoCommerce: order {} was cancelled ({}).",
                    e.order_id, e.reason
                )),
                push: Some(Push {
                    title: "Order cancelled".to_owned(),
                    body: format!("Order {} was cancelled: {}.", e.order_id, e.reason),
                }),
            })
        }
        Payload::OrderShipped(e) => Some(Rendered {
            user_id: user(&e.user_id)?,
            security: false,
            secret: None,
            email: Some(Email {
                subject: format!("Order {} shipped", e.order_id),
                body: format!(
                    "Your order {} is on its way with {} (tracking number {}).\n\n{}\n",
                    e.order_id,
                    e.carrier,
                    e.tracking_number,
                    lines(&e.items)
                ),
            }),
            sms: Some(format!(
                "GoCommerce: order {} shipped with {}, tracking {}.",
                e.order_id, e.carrier, e.tracking_number
            )),
            push: Some(Push {
                title: "Order shipped".to_owned(),
                body: format!("Order {} shipped with {}.", e.order_id, e.carrier),
            }),
        }),
        Payload::OrderDelivered(e) => Some(Rendered {
            user_id: user(&e.user_id)?,
            security: false,
            secret: None,
            email: Some(Email {
                subject: format!("Order {} delivered", e.order_id),
                body: format!(
                    "Your order {} was delivered. Enjoy!\n\n{}\n",
                    e.order_id,
                    lines(&e.items)
                ),
            }),
            sms: None,
            push: Some(Push {
                title: "Order delivered".to_owned(),
                body: format!("Order {} was delivered.", e.order_id),
            }),
        }),
        Payload::PaymentRefunded(e) => {
            let amount = format_money(e.amount.as_ref());
            Some(Rendered {
                user_id: user(&e.user_id)?,
                security: false,
                secret: None,
                email: Some(Email {
                    subject: format!("Refund of {amount} for order {}", e.order_id),
                    body: format!(
                        "We refunded {amount} for order {} ({}). Refunded so far: {}.\n",
                        e.order_id,
                        e.reason,
                        format_money(e.refunded_total.as_ref())
                    ),
                }),
                sms: Some(format!(
                    "GoCommerce: {amount} refunded for order {}.",
                    e.order_id
                )),
                push: None,
            })
        }
        Payload::OrderCreated(_) | Payload::PaymentSucceeded(_) | Payload::PaymentFailed(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gocommerce_proto::events::v1::OrderPaid;

    fn usd(amount: i64) -> Option<Money> {
        Some(Money {
            amount,
            currency: "USD".to_owned(),
        })
    }

    #[test]
    fn money_is_written_in_the_currencys_own_units() {
        assert_eq!(format_money(usd(2599).as_ref()), "USD 25.99");
        assert_eq!(format_money(usd(5).as_ref()), "USD 0.05");
        let yen = Money {
            amount: 1200,
            currency: "JPY".to_owned(),
        };
        assert_eq!(format_money(Some(&yen)), "JPY 1200");
        let dinar = Money {
            amount: 1500,
            currency: "KWD".to_owned(),
        };
        assert_eq!(format_money(Some(&dinar)), "KWD 1.500");
    }

    #[test]
    fn the_order_confirmation_names_the_order_its_items_and_total() {
        let order_id = Uuid::new_v4().to_string();
        let envelope = EventEnvelope {
            payload: Some(Payload::OrderPaid(OrderPaid {
                order_id: order_id.clone(),
                user_id: Uuid::new_v4().to_string(),
                items: vec![OrderLine {
                    name: "Difference Engine".to_owned(),
                    quantity: 2,
                    unit_price: usd(1000),
                    line_total: usd(2000),
                    ..OrderLine::default()
                }],
                total: usd(2000),
                ..OrderPaid::default()
            })),
            ..EventEnvelope::default()
        };

        let rendered = render(&envelope, &Links::default()).expect("order.paid notifies");

        let email = rendered.email.expect("an email");
        assert!(email.subject.contains(&order_id));
        assert!(
            email
                .body
                .contains("2 x Difference Engine at USD 10.00 = USD 20.00")
        );
        assert!(email.body.contains("Total: USD 20.00"));
        assert!(rendered.sms.expect("an sms").contains(&order_id));
        assert!(rendered.push.is_some());
    }

    #[test]
    fn a_reset_email_carries_the_token_and_when_it_runs_out_whatever_the_preferences() {
        let user_id = Uuid::new_v4();
        let envelope = EventEnvelope {
            payload: Some(Payload::UserPasswordResetRequested(
                gocommerce_proto::events::v1::UserPasswordResetRequested {
                    user_id: user_id.to_string(),
                    email: "ada@example.com".to_owned(),
                    name: "Ada".to_owned(),
                    token: "gcp_secret".to_owned(),
                    expires_at: Some(prost_types::Timestamp {
                        seconds: 1_796_656_200,
                        nanos: 0,
                    }),
                },
            )),
            ..EventEnvelope::default()
        };

        let rendered = render(&envelope, &Links::default()).expect("rendered");

        assert_eq!(rendered.user_id, user_id);
        assert!(rendered.security);
        let email = rendered.email.expect("an email");
        assert!(email.body.contains("\n\ngcp_secret\n\n"), "{}", email.body);
        assert!(
            email.body.contains("until 2026-12-07 15:10 UTC"),
            "{}",
            email.body
        );
        assert_eq!(rendered.sms, None, "a secret goes by email only");
        assert_eq!(rendered.push, None);
    }

    #[test]
    fn with_a_reset_page_configured_the_email_links_to_it_with_the_token() {
        let envelope = EventEnvelope {
            payload: Some(Payload::UserPasswordResetRequested(
                gocommerce_proto::events::v1::UserPasswordResetRequested {
                    user_id: Uuid::new_v4().to_string(),
                    token: "gcp_secret".to_owned(),
                    ..Default::default()
                },
            )),
            ..EventEnvelope::default()
        };
        let page = |url: &str| Links {
            password_reset: Some(url.to_owned()),
        };

        let plain = render(&envelope, &page("https://shop.example/reset")).expect("rendered");
        let with_query =
            render(&envelope, &page("https://shop.example/account?step=reset")).expect("rendered");

        let body = plain.email.expect("an email").body;
        assert!(body.contains("open this link"), "{body}");
        assert!(
            body.contains("\n\nhttps://shop.example/reset?token=gcp_secret\n\n"),
            "{body}"
        );
        let body = with_query.email.expect("an email").body;
        assert!(
            body.contains("https://shop.example/account?step=reset&token=gcp_secret"),
            "{body}"
        );
    }

    #[test]
    fn a_reset_emails_record_holds_the_body_without_the_token_in_text_or_link() {
        let envelope = |token: &str| EventEnvelope {
            payload: Some(Payload::UserPasswordResetRequested(
                gocommerce_proto::events::v1::UserPasswordResetRequested {
                    user_id: Uuid::new_v4().to_string(),
                    token: token.to_owned(),
                    ..Default::default()
                },
            )),
            ..EventEnvelope::default()
        };
        let linked = Links {
            password_reset: Some("https://shop.example/reset".to_owned()),
        };

        for links in [Links::default(), linked] {
            let rendered = render(&envelope("gcp_secret"), &links).expect("rendered");
            let body = &rendered.email.as_ref().expect("an email").body;
            let record = rendered.for_record(body);

            assert!(!record.contains("gcp_secret"), "{record}");
            assert_eq!(record, body.replace("gcp_secret", "[redacted]"));
        }
        let paid = EventEnvelope {
            payload: Some(Payload::OrderPaid(OrderPaid {
                user_id: Uuid::new_v4().to_string(),
                ..OrderPaid::default()
            })),
            ..EventEnvelope::default()
        };
        let paid = render(&paid, &Links::default()).expect("rendered");
        let body = &paid.email.as_ref().expect("an email").body;
        assert!(
            matches!(paid.for_record(body), Cow::Borrowed(_)),
            "no secret, nothing changed"
        );
    }

    #[test]
    fn events_a_customer_need_not_hear_about_render_nothing() {
        let envelope = EventEnvelope {
            payload: Some(Payload::PaymentSucceeded(Default::default())),
            ..EventEnvelope::default()
        };
        assert_eq!(render(&envelope, &Links::default()), None);
    }
}
