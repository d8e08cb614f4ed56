//! The REST routes, one module per backend service, and the conversions they
//! share. Each module after `auth` exposes `router()` and an `Api` OpenAPI
//! fragment; both are merged here and in `openapi::document`.

use axum::Router;

use crate::startup::AppState;

pub mod auth;
pub mod catalog;
pub mod notifications;
pub mod orders;
pub mod users;

/// Every service's routes but auth's (which carry the auth rate limit).
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(orders::router())
        .merge(notifications::router())
        .merge(users::router())
        .merge(catalog::router())
}

/// Every service's OpenAPI fragment but auth's (which is in `ApiDoc`).
pub fn openapi_fragments() -> Vec<utoipa::openapi::OpenApi> {
    use utoipa::OpenApi as _;
    vec![
        orders::Api::openapi(),
        notifications::Api::openapi(),
        users::Api::openapi(),
        catalog::Api::openapi(),
    ]
}

/// The OpenAPI pattern of every currency: exactly the ISO 4217 codes the
/// platform accepts (a unit test keeps the two equal).
pub const CURRENCY_PATTERN: &str = "^(?:AED|AFN|ALL|AMD|ANG|AOA|ARS|AUD|AWG|AZN|BAM|BBD|BDT|BGN|BHD|BIF|BMD|BND|BOB|BRL|BSD|BTN|BWP|BYN|BZD|CAD|CDF|CHF|CLP|CNY|COP|CRC|CUP|CVE|CZK|DJF|DKK|DOP|DZD|EGP|ERN|ETB|EUR|FJD|FKP|GBP|GEL|GHS|GIP|GMD|GNF|GTQ|GYD|HKD|HNL|HTG|HUF|IDR|ILS|INR|IQD|IRR|ISK|JMD|JOD|JPY|KES|KGS|KHR|KMF|KPW|KRW|KWD|KYD|KZT|LAK|LBP|LKR|LRD|LSL|LYD|MAD|MDL|MGA|MKD|MMK|MNT|MOP|MRU|MUR|MVR|MWK|MXN|MYR|MZN|NAD|NGN|NIO|NOK|NPR|NZD|OMR|PAB|PEN|PGK|PHP|PKR|PLN|PYG|QAR|RON|RSD|RUB|RWF|SAR|SBD|SCR|SDG|SEK|SGD|SHP|SLE|SOS|SRD|SSP|STN|SVC|SYP|SZL|THB|TJS|TMT|TND|TOP|TRY|TTD|TWD|TZS|UAH|UGX|USD|UYU|UZS|VED|VES|VND|VUV|WST|XAF|XCD|XOF|XPF|YER|ZAR|ZMW|ZWG)$";

/// The schema of every currency field and parameter.
pub fn currency_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(CURRENCY_PATTERN))
        .description(Some("ISO 4217 code, upper case"))
        .examples(["USD"])
        .build()
}

/// The most a product may cost, in minor units.
pub const MAX_PRICE: i64 = 1_000_000_000_000;

/// An amount of money in integer minor units of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Money {
    /// Minor units (cents for USD); never a float.
    #[serde(deserialize_with = "crate::extract::whole::deserialize")]
    #[schema(example = 2599)]
    pub amount: i64,
    /// ISO 4217 code, upper case.
    #[schema(schema_with = currency_schema)]
    pub currency: String,
}

/// A product's price: 0 to 10^12 minor units of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Minor units (cents for USD); never a float.
    #[serde(deserialize_with = "crate::extract::whole::deserialize")]
    #[schema(example = 2599, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub amount: i64,
    /// ISO 4217 code, upper case.
    #[schema(schema_with = currency_schema)]
    pub currency: String,
}

impl From<Price> for Money {
    fn from(price: Price) -> Self {
        Self {
            amount: price.amount,
            currency: price.currency,
        }
    }
}

impl From<Option<gocommerce_proto::common::v1::Money>> for Money {
    fn from(money: Option<gocommerce_proto::common::v1::Money>) -> Self {
        let money = money.unwrap_or_default();
        Self {
            amount: money.amount,
            currency: money.currency,
        }
    }
}

/// A protobuf timestamp as RFC 3339 with millisecond precision, in UTC.
pub fn rfc3339(ts: prost_types::Timestamp) -> String {
    gocommerce_platform::time::from_timestamp(&ts)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}
