//! The built-in PostgreSQL and RabbitMQ StatefulSets and their headless
//! Services. Volumes come from claim templates and outlive the StatefulSets
//! unless `postgres.deletionPolicy` is `Delete`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ExecAction, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, Service as KubeService, ServicePort,
    ServiceSpec, TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::{DeletionPolicy, StorageSpec};
use crate::meta::{Component, component_labels, selector, selector_labels};
use crate::secrets;
use crate::topology::{AMQP_PORT, POSTGRES_PORT, Service};
use crate::validate::Validated;

use super::config::postgres_init_name;
use super::workloads::{
    container_security, env, pod_security, port, resources, scratch, secret_env,
};

/// uid of the `postgres` user in the official Alpine images.
const POSTGRES_UID: i64 = 70;
/// uid of the `rabbitmq` user in the official (Ubuntu) images.
const RABBITMQ_UID: i64 = 999;
const DATA_VOLUME: &str = "data";

/// The headless Service that gives a StatefulSet's pod a stable DNS name.
pub fn headless_service(
    v: &Validated<'_>,
    component: Component,
    number: i32,
    port_name: &str,
) -> KubeService {
    headless(
        v,
        component,
        component.object_name(&v.owner.name),
        ServicePort {
            name: Some(port_name.to_owned()),
            port: number,
            target_port: Some(IntOrString::Int(number)),
            protocol: Some("TCP".to_owned()),
            ..ServicePort::default()
        },
    )
}

/// A Service named `name` without a cluster IP: its DNS name answers with
/// the addresses of `component`'s ready pods.
pub fn headless(
    v: &Validated<'_>,
    component: Component,
    name: String,
    port: ServicePort,
) -> KubeService {
    let instance = v.owner.name.as_str();
    KubeService {
        metadata: v.owner.meta(name, component_labels(instance, component)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector_labels(instance, component)),
            ports: Some(vec![port]),
            ..ServiceSpec::default()
        }),
        ..KubeService::default()
    }
}

fn claim(instance: &str, component: Component, storage: &StorageSpec) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_owned()),
            // Labels let the finalizer find the claims of an instance.
            labels: Some(component_labels(instance, component)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(storage.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

fn retention(policy: DeletionPolicy) -> StatefulSetPersistentVolumeClaimRetentionPolicy {
    let when_deleted = match policy {
        DeletionPolicy::Retain => "Retain",
        DeletionPolicy::Delete => "Delete",
    };
    StatefulSetPersistentVolumeClaimRetentionPolicy {
        when_deleted: Some(when_deleted.to_owned()),
        when_scaled: Some("Retain".to_owned()),
    }
}

fn exec_probe(command: &[&str], period: i32, failures: i32, timeout: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(command.iter().map(|s| (*s).to_owned()).collect()),
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(timeout),
        ..Probe::default()
    }
}

fn tcp_probe(number: i32, period: i32, failures: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(number),
            ..TCPSocketAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// The restricted profile, with the volume's ownership fixed only when its
/// root is wrong: by default the kubelet chmods every file on each mount,
/// which opens RabbitMQ's `.erlang.cookie` to the group, and Erlang then
/// refuses to start.
fn datastore_pod_security(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        fs_group_change_policy: Some("OnRootMismatch".to_owned()),
        ..pod_security(uid)
    }
}

fn stateful_set(
    v: &Validated<'_>,
    component: Component,
    container: Container,
    uid: i64,
    volumes: Vec<Volume>,
    storage: &StorageSpec,
    policy: DeletionPolicy,
) -> StatefulSet {
    let instance = v.owner.name.as_str();
    let name = component.object_name(instance);
    StatefulSet {
        metadata: v
            .owner
            .meta(name.clone(), component_labels(instance, component)),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name),
            selector: selector(instance, component),
            persistent_volume_claim_retention_policy: Some(retention(policy)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(component_labels(instance, component)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(datastore_pod_security(uid)),
                    termination_grace_period_seconds: Some(60),
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim(instance, component, storage)]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// A PostgreSQL instance: one per service, or the shared one.
pub fn postgres(v: &Validated<'_>, component: Component) -> StatefulSet {
    let instance = v.owner.name.as_str();
    let spec = &v.spec.postgres;
    let (run_volume, run_mount) = scratch("run", "/var/run/postgresql");
    let (tmp_volume, tmp_mount) = scratch("tmp", "/tmp");
    let mut mounts = vec![
        VolumeMount {
            name: DATA_VOLUME.to_owned(),
            mount_path: "/var/lib/postgresql/data".to_owned(),
            ..VolumeMount::default()
        },
        run_mount,
        tmp_mount,
    ];
    let mut volumes = vec![run_volume, tmp_volume];
    // A subdirectory: the volume's root may hold lost+found, which initdb refuses.
    let mut vars = vec![env("PGDATA", "/var/lib/postgresql/data/pgdata")];
    match component {
        Component::Postgres(service) => {
            let secret = secrets::database_secret_name(instance, service);
            vars.push(secret_env("POSTGRES_USER", &secret, secrets::USERNAME_KEY));
            vars.push(secret_env(
                "POSTGRES_PASSWORD",
                &secret,
                secrets::PASSWORD_KEY,
            ));
            vars.push(env("POSTGRES_DB", service.database()));
        }
        _ => {
            let admin = secrets::postgres_admin_secret_name(instance);
            vars.push(secret_env("POSTGRES_USER", &admin, secrets::USERNAME_KEY));
            vars.push(secret_env(
                "POSTGRES_PASSWORD",
                &admin,
                secrets::PASSWORD_KEY,
            ));
            for service in Service::ALL.into_iter().filter(|s| s.owns_database()) {
                vars.push(secret_env(
                    &format!("GOCOMMERCE_{}_PASSWORD", service.env_prefix()),
                    &secrets::database_secret_name(instance, service),
                    secrets::PASSWORD_KEY,
                ));
            }
            mounts.push(VolumeMount {
                name: "init".to_owned(),
                mount_path: "/docker-entrypoint-initdb.d".to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
            volumes.push(Volume {
                name: "init".to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: postgres_init_name(instance),
                    default_mode: Some(0o555),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            });
        }
    }
    let ready = ["pg_isready", "-h", "127.0.0.1", "-p", "5432"];
    let container = Container {
        name: "postgres".to_owned(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        env: Some(vars),
        ports: Some(vec![port("postgres", POSTGRES_PORT)]),
        startup_probe: Some(exec_probe(&ready, 2, 90, 2)),
        liveness_probe: Some(tcp_probe(POSTGRES_PORT, 10, 6)),
        readiness_probe: Some(exec_probe(&ready, 5, 3, 2)),
        resources: Some(
            spec.resources
                .clone()
                .unwrap_or_else(|| resources("100m", "128Mi", "512Mi")),
        ),
        security_context: Some(container_security(true)),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    stateful_set(
        v,
        component,
        container,
        POSTGRES_UID,
        volumes,
        &spec.storage,
        spec.deletion_policy,
    )
}

/// The single-node built-in broker.
pub fn rabbitmq(v: &Validated<'_>) -> StatefulSet {
    let instance = v.owner.name.as_str();
    let spec = &v.spec.rabbitmq;
    let secret = secrets::rabbitmq_secret_name(instance);
    let container = Container {
        name: "rabbitmq".to_owned(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        env: Some(vec![
            secret_env("RABBITMQ_DEFAULT_USER", &secret, secrets::USERNAME_KEY),
            secret_env("RABBITMQ_DEFAULT_PASS", &secret, secrets::PASSWORD_KEY),
        ]),
        ports: Some(vec![port("amqp", AMQP_PORT)]),
        startup_probe: Some(tcp_probe(AMQP_PORT, 5, 60)),
        liveness_probe: Some(tcp_probe(AMQP_PORT, 15, 4)),
        readiness_probe: Some(exec_probe(
            &["rabbitmq-diagnostics", "-q", "ping"],
            15,
            3,
            10,
        )),
        resources: Some(
            spec.resources
                .clone()
                .unwrap_or_else(|| resources("100m", "256Mi", "1Gi")),
        ),
        // The image's entrypoint and plugin tooling write under /etc/rabbitmq
        // and /var/log/rabbitmq; the rest of the restricted profile applies.
        security_context: Some(container_security(false)),
        volume_mounts: Some(vec![VolumeMount {
            name: DATA_VOLUME.to_owned(),
            mount_path: "/var/lib/rabbitmq".to_owned(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    // The broker's volume follows the databases' policy: its queues hold
    // events not yet consumed.
    stateful_set(
        v,
        Component::RabbitMq,
        container,
        RABBITMQ_UID,
        Vec::new(),
        &spec.storage,
        v.spec.postgres.deletion_policy,
    )
}
