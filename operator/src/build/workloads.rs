//! The services' Deployments, Services and PodDisruptionBudgets, and the pod
//! hardening (restricted Pod Security profile) every workload shares.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, GRPCAction, HTTPGetAction, Lifecycle, LifecycleHandler,
    LocalObjectReference, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext,
    Service as KubeService, ServicePort, ServiceSpec, SleepAction, TopologySpreadConstraint,
    Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use crate::crd::{DEFAULT_NODE_PORT, PostgresMode, RabbitMqMode, ServiceType};
use crate::meta::{CONFIG_HASH_ANNOTATION, Component, component_labels, selector, selector_labels};
use crate::secrets;
use crate::topology::{ADMIN_PORT, AMQP_PORT, POSTGRES_PORT, Service};
use crate::validate::{
    DEFAULT_DATABASE_STARTUP_WAIT_SECONDS, Validated, database_startup_wait, hex,
};

use super::config::config_map_name;

/// The uid and gid of the `gocommerce` image (distroless "nonroot").
pub const APP_UID: i64 = 65532;

/// Pod-level settings of the restricted profile.
pub(super) fn pod_security(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// Container-level settings of the restricted profile.
pub(super) fn container_security(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(read_only_root),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

/// A writable scratch directory on an otherwise read-only root.
pub(super) fn scratch(name: &str, path: &str) -> (Volume, VolumeMount) {
    (
        Volume {
            name: name.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("64Mi".to_owned())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
        VolumeMount {
            name: name.to_owned(),
            mount_path: path.to_owned(),
            ..VolumeMount::default()
        },
    )
}

pub(super) fn resources(cpu: &str, memory: &str, memory_limit: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity(memory_limit.to_owned()),
        )])),
        ..ResourceRequirements::default()
    }
}

pub(super) fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

pub(super) fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

pub(super) fn port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: number,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

/// Spreads replicas over nodes when the cluster has several.
pub(super) fn spread(instance: &str, component: Component) -> Vec<TopologySpreadConstraint> {
    vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "kubernetes.io/hostname".to_owned(),
        when_unsatisfiable: "ScheduleAnyway".to_owned(),
        label_selector: Some(selector(instance, component)),
        ..TopologySpreadConstraint::default()
    }]
}

/// The host of a service's database.
pub fn database_host(v: &Validated<'_>, service: Service) -> String {
    let component = match v.spec.postgres.mode {
        PostgresMode::Shared => Component::SharedPostgres,
        PostgresMode::PerService | PostgresMode::External => Component::Postgres(service),
    };
    format!(
        "{}.{}.svc",
        component.object_name(&v.owner.name),
        v.owner.namespace
    )
}

/// The variables of one service that are not in the shared ConfigMap:
/// credentials and the URLs built from them. Kubernetes expands `$(VAR)`
/// from variables defined earlier in the list, so passwords never appear in
/// the pod spec.
pub fn service_env(v: &Validated<'_>, service: Service) -> Vec<EnvVar> {
    let instance = v.owner.name.as_str();
    let spec = v.spec;
    let mut vars = Vec::new();
    if service.owns_database() {
        let url_var = format!("{}_DATABASE_URL", service.env_prefix());
        match (&spec.postgres.mode, &spec.postgres.external_secret_name) {
            (PostgresMode::External, Some(secret)) => {
                vars.push(secret_env(&url_var, secret, service.name()));
            }
            _ => {
                vars.push(secret_env(
                    "GOCOMMERCE_DB_PASSWORD",
                    &secrets::database_secret_name(instance, service),
                    secrets::PASSWORD_KEY,
                ));
                let db = service.database();
                vars.push(env(
                    &url_var,
                    format!(
                        "postgres://{db}:$(GOCOMMERCE_DB_PASSWORD)@{}:{POSTGRES_PORT}/{db}",
                        database_host(v, service)
                    ),
                ));
            }
        }
    }
    if service.uses_broker() {
        match (&spec.rabbitmq.mode, &spec.rabbitmq.external_secret_name) {
            (RabbitMqMode::External, Some(secret)) => {
                vars.push(secret_env("AMQP_URL", secret, "url"));
            }
            _ => {
                vars.push(secret_env(
                    "GOCOMMERCE_AMQP_PASSWORD",
                    &secrets::rabbitmq_secret_name(instance),
                    secrets::PASSWORD_KEY,
                ));
                vars.push(env(
                    "AMQP_URL",
                    format!(
                        "amqp://{}:$(GOCOMMERCE_AMQP_PASSWORD)@{}.{}.svc:{AMQP_PORT}/%2f",
                        secrets::RABBITMQ_USER,
                        Component::RabbitMq.object_name(instance),
                        v.owner.namespace
                    ),
                ));
            }
        }
    }
    match service {
        Service::Auth => {
            vars.push(secret_env(
                "JWT_SIGNING_KEY",
                &secrets::jwt_secret_name(instance),
                secrets::JWT_KEY,
            ));
            if let Some(secret) = &spec.auth.admin_secret_name {
                vars.push(secret_env("GOCOMMERCE_ADMIN_EMAIL", secret, "email"));
                vars.push(secret_env("GOCOMMERCE_ADMIN_PASSWORD", secret, "password"));
            }
        }
        Service::Notification => {
            let n = &spec.notification;
            for (var, reference) in [
                ("SMTP_URL", &n.smtp_url),
                ("SMS_WEBHOOK_URL", &n.sms_webhook_url),
                ("PUSH_WEBHOOK_URL", &n.push_webhook_url),
            ] {
                if let Some(r) = reference {
                    vars.push(secret_env(var, &r.name, &r.key));
                }
            }
        }
        _ => {}
    }
    vars.extend(spec.workload(service).env.iter().cloned());
    vars
}

fn grpc_probe(service: Service, health: &str, period: i32, failures: i32) -> Probe {
    Probe {
        grpc: Some(GRPCAction {
            port: service.port(),
            // An empty name asks for the server's overall readiness.
            service: (!health.is_empty()).then(|| health.to_owned()),
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn http_probe(path: &str, port: i32, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(port),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// How often the startup probe asks.
const STARTUP_PERIOD_SECONDS: u64 = 2;
/// What a start may take once its database answers: migrations and the rest.
const START_AFTER_DATABASE_SECONDS: u64 = 120;

/// How long the startup probe lets a service start: the wait for its database
/// it was given (its own default, 60 s, unless its `env` sets
/// `DATABASE_STARTUP_WAIT_SECONDS`), then two minutes, and never less than the
/// default's three minutes (a shorter wait leaves migrations as long). Without
/// this, a longer wait would be cut short by the kubelet restarting the pod,
/// since the gRPC port only opens after migrations.
pub fn startup_budget_seconds(service: Service, env: &[EnvVar]) -> u64 {
    // A service without a database (the gateway) gets the default's budget.
    let set = database_startup_wait(env)
        .ok()
        .flatten()
        .filter(|_| service.owns_database());
    set.unwrap_or_default()
        .max(DEFAULT_DATABASE_STARTUP_WAIT_SECONDS)
        .saturating_add(START_AFTER_DATABASE_SECONDS)
}

/// Startup, liveness and readiness probes: native gRPC health for the gRPC
/// services (`liveness` for liveness, the empty name for readiness), HTTP for
/// the gateway. The startup probe allows `startup_budget` seconds.
pub fn probes(service: Service, startup_budget: u64) -> (Probe, Probe, Probe) {
    let period = STARTUP_PERIOD_SECONDS as i32;
    let failures =
        i32::try_from(startup_budget.div_ceil(STARTUP_PERIOD_SECONDS)).unwrap_or(i32::MAX);
    if service.is_grpc() {
        (
            grpc_probe(service, "liveness", period, failures),
            grpc_probe(service, "liveness", 10, 3),
            grpc_probe(service, "", 5, 3),
        )
    } else {
        (
            http_probe("/healthz", service.port(), period, failures),
            http_probe("/healthz", service.port(), 10, 3),
            http_probe("/readyz", service.port(), 5, 3),
        )
    }
}

/// The pod template's config hash: the shared configuration, the referenced
/// Secrets the service reads and its own variables.
pub fn config_hash(
    v: &Validated<'_>,
    service: Service,
    config_digest: &str,
    vars: &[EnvVar],
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(config_digest.as_bytes());
    hasher.update([0]);
    if let Some(d) = v.external.digests.get(&service) {
        hasher.update(d.as_bytes());
    }
    hasher.update([0]);
    hasher.update(serde_json::to_vec(vars).unwrap_or_default());
    hex(&hasher.finalize())[..16].to_owned()
}

/// One service's Deployment: the single image with `args: [<service>]`.
pub fn deployment(v: &Validated<'_>, service: Service, config_digest: &str) -> Deployment {
    let instance = v.owner.name.as_str();
    let spec = v.spec;
    let workload = spec.workload(service);
    let component = Component::Service(service);
    let vars = service_env(v, service);
    let hash = config_hash(v, service, config_digest, &vars);
    let (startup, liveness, readiness) =
        probes(service, startup_budget_seconds(service, &workload.env));
    let (tmp_volume, tmp_mount) = scratch("tmp", "/tmp");
    let mut ports = vec![port(
        if service.is_grpc() { "grpc" } else { "http" },
        service.port(),
    )];
    ports.push(port("admin", ADMIN_PORT));
    let pre_stop = spec.shutdown.pre_stop_sleep_seconds;

    let container = Container {
        name: service.name().to_owned(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some(spec.image_pull_policy.as_str().to_owned()),
        args: Some(vec![service.name().to_owned()]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: config_map_name(instance),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        env: Some(vars),
        ports: Some(ports),
        startup_probe: Some(startup),
        liveness_probe: Some(liveness),
        readiness_probe: Some(readiness),
        resources: Some(
            workload
                .resources
                .clone()
                .unwrap_or_else(|| resources("50m", "64Mi", "256Mi")),
        ),
        security_context: Some(container_security(true)),
        lifecycle: (pre_stop > 0).then(|| Lifecycle {
            // Lets endpoints drop the pod before the process stops accepting.
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: pre_stop }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        volume_mounts: Some(vec![tmp_mount]),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    };

    Deployment {
        metadata: v.owner.meta(
            component.object_name(instance),
            component_labels(instance, component),
        ),
        spec: Some(DeploymentSpec {
            replicas: Some(workload.replicas),
            revision_history_limit: Some(5),
            selector: selector(instance, component),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(component_labels(instance, component)),
                    annotations: Some(BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_owned(), hash)])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(pod_security(APP_UID)),
                    termination_grace_period_seconds: Some(
                        spec.shutdown.termination_grace_period_seconds,
                    ),
                    image_pull_secrets: (!spec.image_pull_secrets.is_empty()).then(|| {
                        spec.image_pull_secrets
                            .iter()
                            .map(|name| LocalObjectReference { name: name.clone() })
                            .collect()
                    }),
                    topology_spread_constraints: Some(spread(instance, component)),
                    volumes: Some(vec![tmp_volume]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The Service in front of a Deployment.
pub fn service(v: &Validated<'_>, service: Service) -> KubeService {
    let instance = v.owner.name.as_str();
    let component = Component::Service(service);
    let mut main = ServicePort {
        name: Some(if service.is_grpc() { "grpc" } else { "http" }.to_owned()),
        port: service.port(),
        target_port: Some(IntOrString::Int(service.port())),
        protocol: Some("TCP".to_owned()),
        app_protocol: service.is_grpc().then(|| "kubernetes.io/h2c".to_owned()),
        ..ServicePort::default()
    };
    let mut type_ = ServiceType::ClusterIP;
    if service == Service::Gateway {
        type_ = v.spec.gateway.service_type;
        main.node_port = match type_ {
            ServiceType::ClusterIP => None,
            ServiceType::NodePort => Some(v.spec.gateway.node_port.unwrap_or(DEFAULT_NODE_PORT)),
            ServiceType::LoadBalancer => v.spec.gateway.node_port,
        };
    }
    let admin = ServicePort {
        name: Some("admin".to_owned()),
        port: ADMIN_PORT,
        target_port: Some(IntOrString::Int(ADMIN_PORT)),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    };
    KubeService {
        metadata: v.owner.meta(
            component.object_name(instance),
            component_labels(instance, component),
        ),
        spec: Some(ServiceSpec {
            type_: Some(type_.as_str().to_owned()),
            selector: Some(selector_labels(instance, component)),
            ports: Some(vec![main, admin]),
            ..ServiceSpec::default()
        }),
        ..KubeService::default()
    }
}

/// The name of a gRPC service's headless Service.
pub fn pods_service_name(instance: &str, service: Service) -> String {
    format!("{}-pods", Component::Service(service).object_name(instance))
}

/// A headless Service for a gRPC service's callers: its DNS name answers
/// with the address of every ready pod, and the callers spread their calls
/// over them (`platform::grpc::endpoints`). Through the ClusterIP Service
/// each caller's one long-lived HTTP/2 connection would pin all its calls to
/// one pod, whatever the replicas. It is a Service of its own because a
/// Service's clusterIP cannot change once set.
pub fn pods_service(v: &Validated<'_>, service: Service) -> KubeService {
    super::datastores::headless(
        v,
        Component::Service(service),
        pods_service_name(&v.owner.name, service),
        ServicePort {
            name: Some("grpc".to_owned()),
            port: service.port(),
            target_port: Some(IntOrString::Int(service.port())),
            protocol: Some("TCP".to_owned()),
            app_protocol: Some("kubernetes.io/h2c".to_owned()),
            ..ServicePort::default()
        },
    )
}

/// A PodDisruptionBudget for services with more than one replica: voluntary
/// evictions take one pod at a time.
pub fn disruption_budget(v: &Validated<'_>, service: Service) -> Option<PodDisruptionBudget> {
    if v.spec.workload(service).replicas <= 1 {
        return None;
    }
    let instance = v.owner.name.as_str();
    let component = Component::Service(service);
    Some(PodDisruptionBudget {
        metadata: v.owner.meta(
            component.object_name(instance),
            component_labels(instance, component),
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selector(instance, component)),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}
