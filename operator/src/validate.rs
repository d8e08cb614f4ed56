//! Validation of a `GoCommerce` resource beyond what its schema can say, and
//! of the Secrets it refers to. Two kinds of refusal: a spec that is wrong in
//! itself (the operator waits for it to change) and a spec that is fine but
//! cannot be honoured now, e.g. a referenced Secret is missing (the operator
//! reports `Degraded`, destroys nothing and looks again later).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::EnvVar;
use sha2::{Digest, Sha256};

use crate::crd::{
    GoCommerce, GoCommerceSpec, MAX_NAME_LEN, PostgresMode, RabbitMqMode, SecretKeyRef,
};
use crate::meta::{Owner, RESERVED_NAME_SUFFIX};
use crate::topology::Service;

/// Why a resource cannot be reconciled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The spec contradicts itself or the operator's rules.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The spec is valid but the cluster lacks something it names.
    #[error("{reason}: {message}")]
    Unsatisfiable { reason: String, message: String },
}

/// What the dereference step found for one referenced Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(BTreeMap<String, Vec<u8>>),
    Missing,
    /// Not looked up (rendering without a cluster): assumed to be right.
    Unknown,
}

/// The referenced Secrets, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Referenced {
    pub secrets: BTreeMap<String, Lookup>,
}

impl Referenced {
    fn get(&self, name: &str) -> &Lookup {
        self.secrets.get(name).unwrap_or(&Lookup::Unknown)
    }
}

/// The names of every Secret a spec refers to (and the operator must read).
pub fn referenced_secret_names(spec: &GoCommerceSpec) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    names.extend(spec.postgres.external_secret_name.clone());
    if spec.rabbitmq.mode == RabbitMqMode::External {
        names.extend(spec.rabbitmq.external_secret_name.clone());
    }
    names.extend(spec.auth.admin_secret_name.clone());
    for reference in notification_refs(spec) {
        names.insert(reference.name.clone());
    }
    names
}

fn notification_refs(spec: &GoCommerceSpec) -> impl Iterator<Item = &SecretKeyRef> {
    [
        spec.notification.smtp_url.as_ref(),
        spec.notification.sms_webhook_url.as_ref(),
        spec.notification.push_webhook_url.as_ref(),
    ]
    .into_iter()
    .flatten()
}

/// Facts about things outside the cluster that the build needs: ports to
/// open egress to and digests of referenced Secrets (to roll pods when one
/// changes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct External {
    /// Ports of external databases (external mode only).
    pub postgres_ports: BTreeSet<i32>,
    /// Port of the external broker (external mode only).
    pub amqp_port: Option<i32>,
    /// Ports the notification service sends to (SMTP and webhooks).
    pub notification_ports: BTreeSet<i32>,
    /// Digest of the referenced Secret data each service consumes.
    pub digests: BTreeMap<Service, String>,
}

/// A resource that passed validation, with everything the build needs.
#[derive(Debug, Clone)]
pub struct Validated<'a> {
    pub owner: Owner,
    pub spec: &'a GoCommerceSpec,
    pub external: External,
}

/// Variables the operator sets itself; extra env may not override them.
fn managed_env(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "RUST_LOG",
        "LOG_FORMAT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "ADMIN_ADDR",
        "AMQP_URL",
        "GATEWAY_ADDR",
        "SHUTDOWN_GRACE_SECONDS",
        "JWT_SIGNING_KEY",
        "JWT_ISSUER",
        "JWT_AUDIENCE",
        "ACCESS_TOKEN_TTL_SECONDS",
        "REFRESH_TOKEN_TTL_SECONDS",
        "GOCOMMERCE_ADMIN_EMAIL",
        "GOCOMMERCE_ADMIN_PASSWORD",
        "SMTP_URL",
        "SMTP_FROM",
        "SMS_WEBHOOK_URL",
        "PUSH_WEBHOOK_URL",
    ];
    if EXACT.contains(&name)
        || name.starts_with("GOCOMMERCE_DB_")
        || name.starts_with("GOCOMMERCE_AMQP_")
    {
        return true;
    }
    Service::ALL.iter().any(|s| {
        let prefix = s.env_prefix();
        [
            format!("{prefix}_URL"),
            format!("{prefix}_GRPC_ADDR"),
            format!("{prefix}_DATABASE_URL"),
        ]
        .iter()
        .any(|managed| managed == name)
    })
}

/// The variable that tells a service how long to wait for its database.
pub const DATABASE_STARTUP_WAIT: &str = "DATABASE_STARTUP_WAIT_SECONDS";
/// The services' own default for [`DATABASE_STARTUP_WAIT`].
pub const DEFAULT_DATABASE_STARTUP_WAIT_SECONDS: u64 = 60;

/// The database wait an extra `env` sets, in seconds, if it sets one as a
/// literal value (the last one wins, as in a pod). A value from a reference
/// cannot be read here and counts as unset, as an empty one does for the
/// service. Refused, with why, if the service would refuse it at start.
pub fn database_startup_wait(env: &[EnvVar]) -> Result<Option<u64>, String> {
    let Some(var) = env.iter().rev().find(|v| v.name == DATABASE_STARTUP_WAIT) else {
        return Ok(None);
    };
    let Some(value) = var
        .value
        .as_deref()
        .filter(|v| !v.is_empty() && var.value_from.is_none())
    else {
        return Ok(None);
    };
    // Trimmed as the services trim it.
    value.trim().parse().map(Some).map_err(|_| {
        format!("{DATABASE_STARTUP_WAIT} must be a whole number of seconds, got {value:?}")
    })
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Checks the spec itself: the rules the schema cannot express, and the
/// schema's cross-field CEL rules again (for `render`, which has no API server).
pub fn validate_spec(gc: &GoCommerce) -> Result<(), Rejection> {
    let invalid = |m: String| Err(Rejection::InvalidSpec(m));
    let name = gc.metadata.name.as_deref().unwrap_or_default();
    if !is_dns_label(name) || name.len() > MAX_NAME_LEN {
        return invalid(format!(
            "metadata.name {name:?} must be a DNS label of at most {MAX_NAME_LEN} characters"
        ));
    }
    if let Some(other) = name.strip_suffix(RESERVED_NAME_SUFFIX) {
        return invalid(format!(
            "metadata.name {name:?} must not end in {RESERVED_NAME_SUFFIX}: its objects would take \
             the names of the databases of an instance named {other:?}"
        ));
    }
    let spec = &gc.spec;
    for service in Service::ALL {
        let env = &spec.workload(service).env;
        for var in env {
            if managed_env(&var.name) {
                return invalid(format!(
                    "env {} of {service} is managed by the operator and cannot be overridden",
                    var.name
                ));
            }
        }
        if let Err(why) = database_startup_wait(env) {
            return invalid(format!("env of {service}: {why}"));
        }
    }
    match (spec.postgres.mode, &spec.postgres.external_secret_name) {
        (PostgresMode::External, None) => {
            return invalid("postgres.externalSecretName is required when mode is external".into());
        }
        (PostgresMode::PerService | PostgresMode::Shared, Some(_)) => {
            return invalid(
                "postgres.externalSecretName is only used when mode is external".into(),
            );
        }
        _ => {}
    }
    if spec.rabbitmq.mode == RabbitMqMode::External && spec.rabbitmq.external_secret_name.is_none()
    {
        return invalid("rabbitmq.externalSecretName is required when mode is external".into());
    }
    if spec.auth.refresh_token_ttl_seconds <= spec.auth.access_token_ttl_seconds {
        return invalid("auth: refresh tokens must outlive access tokens".into());
    }
    if spec.shutdown.pre_stop_sleep_seconds >= spec.shutdown.termination_grace_period_seconds {
        return invalid(
            "shutdown.preStopSleepSeconds must be shorter than terminationGracePeriodSeconds"
                .into(),
        );
    }
    if spec.gateway.service_type == crate::crd::ServiceType::ClusterIP
        && spec.gateway.node_port.is_some()
    {
        return invalid("gateway.nodePort needs serviceType NodePort or LoadBalancer".into());
    }
    Ok(())
}

/// Validates the resource and what it refers to.
pub fn validate<'a>(
    gc: &'a GoCommerce,
    referenced: &Referenced,
) -> Result<Validated<'a>, Rejection> {
    validate_spec(gc)?;
    let owner = Owner::of(gc)
        .ok_or_else(|| Rejection::InvalidSpec("the resource has no namespace or uid".to_owned()))?;
    let spec = &gc.spec;
    let mut external = External::default();
    let mut consumed: BTreeMap<Service, Vec<(&str, &str)>> = BTreeMap::new();

    if let (PostgresMode::External, Some(secret)) =
        (spec.postgres.mode, &spec.postgres.external_secret_name)
    {
        for service in Service::ALL.into_iter().filter(|s| s.owns_database()) {
            let url = required_key(referenced, secret, service.name())?;
            if let Some(url) = url {
                external.postgres_ports.insert(url_port(
                    &url,
                    &["postgres", "postgresql"],
                    secret,
                    service.name(),
                )?);
            }
            consumed
                .entry(service)
                .or_default()
                .push((secret, service.name()));
        }
    }
    if let (RabbitMqMode::External, Some(secret)) =
        (spec.rabbitmq.mode, &spec.rabbitmq.external_secret_name)
    {
        if let Some(url) = required_key(referenced, secret, "url")? {
            external.amqp_port = Some(url_port(&url, &["amqp", "amqps"], secret, "url")?);
        }
        for service in Service::ALL.into_iter().filter(|s| s.uses_broker()) {
            consumed.entry(service).or_default().push((secret, "url"));
        }
    }
    if let Some(secret) = &spec.auth.admin_secret_name {
        for key in ["email", "password"] {
            required_key(referenced, secret, key)?;
            consumed
                .entry(Service::Auth)
                .or_default()
                .push((secret, key));
        }
    }
    for reference in notification_refs(spec) {
        if let Some(url) = required_key(referenced, &reference.name, &reference.key)? {
            let schemes = ["smtp", "smtps", "http", "https"];
            external.notification_ports.insert(url_port(
                &url,
                &schemes,
                &reference.name,
                &reference.key,
            )?);
        }
        consumed
            .entry(Service::Notification)
            .or_default()
            .push((&reference.name, &reference.key));
    }
    if !spec.notification_is_empty() && external.notification_ports.is_empty() {
        // Values not known (render): open the channels' usual ports.
        external.notification_ports.extend([25, 465, 587, 443, 80]);
    }
    for (service, keys) in consumed {
        external.digests.insert(service, digest(referenced, &keys));
    }
    Ok(Validated {
        owner,
        spec,
        external,
    })
}

impl GoCommerceSpec {
    fn notification_is_empty(&self) -> bool {
        notification_refs(self).next().is_none()
    }
}

/// The value of `key` in Secret `name`: `Ok(None)` when it cannot be known.
fn required_key(
    referenced: &Referenced,
    name: &str,
    key: &str,
) -> Result<Option<String>, Rejection> {
    match referenced.get(name) {
        Lookup::Unknown => Ok(None),
        Lookup::Missing => Err(Rejection::Unsatisfiable {
            reason: "SecretMissing".to_owned(),
            message: format!("secret {name} does not exist"),
        }),
        Lookup::Found(data) => {
            match data.get(key) {
                None => Err(Rejection::Unsatisfiable {
                    reason: "SecretKeyMissing".to_owned(),
                    message: format!("secret {name} has no key {key}"),
                }),
                Some(value) => String::from_utf8(value.clone()).map(Some).map_err(|_| {
                    Rejection::Unsatisfiable {
                        reason: "SecretValueInvalid".to_owned(),
                        message: format!("key {key} of secret {name} is not UTF-8"),
                    }
                }),
            }
        }
    }
}

/// The port of a URL with one of `schemes`, defaulting by scheme.
fn url_port(url: &str, schemes: &[&str], secret: &str, key: &str) -> Result<i32, Rejection> {
    let bad = |why: &str| Rejection::Unsatisfiable {
        reason: "SecretValueInvalid".to_owned(),
        message: format!("key {key} of secret {secret} {why}"),
    };
    let (scheme, rest) = url
        .trim()
        .split_once("://")
        .ok_or_else(|| bad("is not a URL"))?;
    if !schemes.contains(&scheme) {
        return Err(bad(&format!(
            "must use one of the schemes {}",
            schemes.join(", ")
        )));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if host_port.is_empty() {
        return Err(bad("has no host"));
    }
    // A bracketed IPv6 host contains colons of its own.
    let port_part = match host_port.rsplit_once(']') {
        Some((_, after)) => after.strip_prefix(':'),
        None => host_port.rsplit_once(':').map(|(_, p)| p),
    };
    match port_part {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .map(i32::from)
            .ok_or_else(|| bad("has an invalid port")),
        None => Ok(match scheme {
            "postgres" | "postgresql" => 5432,
            "amqp" => 5672,
            "amqps" => 5671,
            "smtp" => 25,
            "smtps" => 465,
            "http" => 80,
            _ => 443,
        }),
    }
}

/// A digest of the referenced values a service consumes.
fn digest(referenced: &Referenced, keys: &[(&str, &str)]) -> String {
    let mut hasher = Sha256::new();
    for (name, key) in keys {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(key.as_bytes());
        hasher.update([0]);
        if let Lookup::Found(data) = referenced.get(name)
            && let Some(value) = data.get(*key)
        {
            hasher.update(value);
        }
        hasher.update([0xff]);
    }
    hex(&hasher.finalize())
}

/// Lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_ports_default_by_scheme_and_parse_explicit_ones() {
        let port = |url: &str, schemes: &[&str]| url_port(url, schemes, "s", "k");
        assert_eq!(
            port("postgres://u:p@db.example.com/x", &["postgres"]),
            Ok(5432)
        );
        assert_eq!(port("postgres://u:p@db:6432/x", &["postgres"]), Ok(6432));
        assert_eq!(port("amqps://u:p@[::1]/%2f", &["amqps"]), Ok(5671));
        assert_eq!(port("amqp://u:p@[::1]:5673/%2f", &["amqp"]), Ok(5673));
        assert_eq!(port("https://hooks.example.com/sms", &["https"]), Ok(443));
        assert!(port("mysql://db/x", &["postgres"]).is_err());
        assert!(port("postgres://db:99999/x", &["postgres"]).is_err());
        assert!(port("not a url", &["postgres"]).is_err());
    }

    #[test]
    fn managed_variables_are_recognised() {
        for name in [
            "AUTH_DATABASE_URL",
            "USER_URL",
            "AMQP_URL",
            "JWT_SIGNING_KEY",
            "GOCOMMERCE_DB_PASSWORD",
        ] {
            assert!(managed_env(name), "{name}");
        }
        for name in [
            "DATABASE_MAX_CONNECTIONS",
            "GATEWAY_BODY_LIMIT_BYTES",
            "MY_FLAG",
        ] {
            assert!(!managed_env(name), "{name}");
        }
    }
}
