//! The ConfigMap of non-secret settings every service reads, its digest (the
//! pod template annotation that rolls workloads when it changes) and the
//! init script of shared-mode PostgreSQL.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};

use crate::meta::{Component, component_labels, instance_labels};
use crate::topology::{ADMIN_PORT, GATEWAY_PORT, Service};
use crate::validate::{Validated, hex};

pub fn config_map_name(instance: &str) -> String {
    format!("{instance}-config")
}

pub fn postgres_init_name(instance: &str) -> String {
    format!("{instance}-pg-init")
}

/// How long the binary drains after SIGTERM: what the grace period leaves
/// after the preStop delay, minus a margin for exiting.
pub fn drain_seconds(grace: i64, pre_stop: i64) -> i64 {
    (grace - pre_stop - 2).max(1)
}

/// The URL other pods reach a gRPC service at: its headless Service, whose
/// name resolves to every ready pod.
pub fn service_url(v: &Validated<'_>, service: Service) -> String {
    format!(
        "http://{}.{}.svc:{}",
        super::workloads::pods_service_name(&v.owner.name, service),
        v.owner.namespace,
        service.port()
    )
}

/// Settings shared by every service, as environment variables.
pub fn config_map(v: &Validated<'_>) -> ConfigMap {
    let spec = v.spec;
    let mut data = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        data.insert(k.to_owned(), v);
    };
    set("RUST_LOG", spec.telemetry.log_level.clone());
    set("LOG_FORMAT", spec.telemetry.log_format.as_str().to_owned());
    if let Some(endpoint) = &spec.telemetry.otlp_endpoint {
        set("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone());
    }
    set("ADMIN_ADDR", format!("0.0.0.0:{ADMIN_PORT}"));
    set("GATEWAY_ADDR", format!("0.0.0.0:{GATEWAY_PORT}"));
    set(
        "SHUTDOWN_GRACE_SECONDS",
        drain_seconds(
            spec.shutdown.termination_grace_period_seconds,
            spec.shutdown.pre_stop_sleep_seconds,
        )
        .to_string(),
    );
    for service in Service::BACKENDS {
        let prefix = service.env_prefix();
        set(
            &format!("{prefix}_GRPC_ADDR"),
            format!("0.0.0.0:{}", service.port()),
        );
        set(&format!("{prefix}_URL"), service_url(v, service));
    }
    set(
        "ACCESS_TOKEN_TTL_SECONDS",
        spec.auth.access_token_ttl_seconds.to_string(),
    );
    set(
        "REFRESH_TOKEN_TTL_SECONDS",
        spec.auth.refresh_token_ttl_seconds.to_string(),
    );
    if let Some(issuer) = &spec.auth.issuer {
        set("JWT_ISSUER", issuer.clone());
    }
    if let Some(audience) = &spec.auth.audience {
        set("JWT_AUDIENCE", audience.clone());
    }
    if let Some(from) = &spec.notification.smtp_from {
        set("SMTP_FROM", from.clone());
    }
    ConfigMap {
        metadata: v.owner.meta(
            config_map_name(&v.owner.name),
            instance_labels(&v.owner.name),
        ),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// A digest of the ConfigMap's data.
pub fn digest(config: &ConfigMap) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in config.data.iter().flatten() {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    hex(&hasher.finalize())
}

/// Creates one role and one database per service on the first start of the
/// shared instance; each role owns only its database, which no one else may
/// connect to.
fn init_script() -> String {
    let services: Vec<&str> = Service::ALL
        .into_iter()
        .filter(|s| s.owns_database())
        .map(Service::name)
        .collect();
    format!(
        "#!/bin/sh\nset -eu\nfor svc in {}; do\n{INIT_LOOP_BODY}",
        services.join(" ")
    )
}

const INIT_LOOP_BODY: &str = r#"  var="GOCOMMERCE_$(echo "$svc" | tr 'a-z' 'A-Z')_PASSWORD"
  eval "pw=\${$var}"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v role="gocommerce_$svc" -v pw="$pw" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'pw';
CREATE DATABASE :"role" OWNER :"role";
REVOKE ALL ON DATABASE :"role" FROM PUBLIC;
SQL
done
"#;

/// The init script of shared-mode PostgreSQL.
pub fn postgres_init(v: &Validated<'_>) -> ConfigMap {
    ConfigMap {
        metadata: v.owner.meta(
            postgres_init_name(&v.owner.name),
            component_labels(&v.owner.name, Component::SharedPostgres),
        ),
        data: Some(BTreeMap::from([(
            "10-gocommerce-databases.sh".to_owned(),
            init_script(),
        )])),
        ..ConfigMap::default()
    }
}
