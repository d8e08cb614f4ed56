//! The desired objects of an installation, computed by pure functions from a
//! validated resource. Nothing here talks to a cluster: the controller
//! applies what this returns, `render` prints it and the tests inspect it.

mod config;
mod datastores;
mod policies;
mod workloads;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service as KubeService};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use serde::Serialize;

use crate::crd::{GoCommerceSpec, PostgresMode, RabbitMqMode};
use crate::meta::Component;
use crate::secrets::{self, GeneratedSecret};
use crate::topology::Service;
use crate::validate::Validated;

pub use config::{config_map_name, postgres_init_name};

/// An object the operator applies with server-side apply.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    ConfigMap(ConfigMap),
    Service(KubeService),
    StatefulSet(StatefulSet),
    Deployment(Deployment),
    PodDisruptionBudget(PodDisruptionBudget),
    NetworkPolicy(NetworkPolicy),
}

/// The kinds the operator applies, in apply order: policies first so that no
/// pod ever runs unprotected, workloads after the configuration they read.
pub const APPLIED_KINDS: [&str; 6] = [
    "NetworkPolicy",
    "ConfigMap",
    "Service",
    "StatefulSet",
    "Deployment",
    "PodDisruptionBudget",
];

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::ConfigMap(_) => "ConfigMap",
            Object::Service(_) => "Service",
            Object::StatefulSet(_) => "StatefulSet",
            Object::Deployment(_) => "Deployment",
            Object::PodDisruptionBudget(_) => "PodDisruptionBudget",
            Object::NetworkPolicy(_) => "NetworkPolicy",
        }
    }

    pub fn name(&self) -> &str {
        let meta = match self {
            Object::ConfigMap(o) => o.meta(),
            Object::Service(o) => o.meta(),
            Object::StatefulSet(o) => o.meta(),
            Object::Deployment(o) => o.meta(),
            Object::PodDisruptionBudget(o) => o.meta(),
            Object::NetworkPolicy(o) => o.meta(),
        };
        meta.name.as_deref().unwrap_or_default()
    }

    /// The object as JSON, with `apiVersion` and `kind` (the form server-side
    /// apply and `render` need).
    pub fn to_value(&self) -> serde_json::Value {
        fn typed<K: Resource<DynamicType = ()> + Serialize>(object: &K) -> serde_json::Value {
            let mut value = serde_json::to_value(object).unwrap_or_default();
            if let Some(map) = value.as_object_mut() {
                map.insert("apiVersion".into(), K::api_version(&()).into());
                map.insert("kind".into(), K::kind(&()).into());
            }
            value
        }
        match self {
            Object::ConfigMap(o) => typed(o),
            Object::Service(o) => typed(o),
            Object::StatefulSet(o) => typed(o),
            Object::Deployment(o) => typed(o),
            Object::PodDisruptionBudget(o) => typed(o),
            Object::NetworkPolicy(o) => typed(o),
        }
    }
}

/// Everything an installation consists of.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Secrets to create when missing, never to update.
    pub generated: Vec<GeneratedSecret>,
    /// Objects to apply, in order.
    pub objects: Vec<Object>,
    /// The workloads whose replicas the status reports.
    pub components: Vec<Component>,
}

impl Desired {
    /// The applied objects of one kind.
    pub fn of_kind(&self, kind: &'static str) -> impl Iterator<Item = &Object> + '_ {
        self.objects.iter().filter(move |o| o.kind() == kind)
    }

    /// An applied object by kind and name.
    pub fn find(&self, kind: &str, name: &str) -> Option<&Object> {
        self.objects
            .iter()
            .find(|o| o.kind() == kind && o.name() == name)
    }
}

/// The Secrets an installation generates; a function of the name and the
/// modes only, so that cleanup can find them even when the spec is invalid.
pub fn generated_secrets(instance: &str, spec: &GoCommerceSpec) -> Vec<GeneratedSecret> {
    let mut generated = vec![secrets::jwt_secret(instance)];
    if spec.postgres.mode == PostgresMode::Shared {
        generated.push(secrets::postgres_admin_secret(instance));
    }
    if spec.postgres.mode != PostgresMode::External {
        for service in Service::ALL.into_iter().filter(|s| s.owns_database()) {
            generated.push(secrets::database_secret(instance, service));
        }
    }
    if spec.rabbitmq.mode == RabbitMqMode::BuiltIn {
        generated.push(secrets::rabbitmq_secret(instance));
    }
    generated
}

/// Builds every object of a validated resource.
pub fn build(v: &Validated<'_>) -> Desired {
    let instance = v.owner.name.as_str();
    let spec = v.spec;
    let generated = generated_secrets(instance, spec);
    let mut components = Vec::new();
    let mut objects = Vec::new();

    if spec.network_policy.enabled {
        objects.extend(
            policies::network_policies(v)
                .into_iter()
                .map(Object::NetworkPolicy),
        );
    }

    let config = config::config_map(v);
    let config_digest = config::digest(&config);
    objects.push(Object::ConfigMap(config));

    match spec.postgres.mode {
        PostgresMode::PerService => {
            for service in Service::ALL.into_iter().filter(|s| s.owns_database()) {
                let component = Component::Postgres(service);
                objects.push(Object::Service(datastores::headless_service(
                    v,
                    component,
                    crate::topology::POSTGRES_PORT,
                    "postgres",
                )));
                objects.push(Object::StatefulSet(datastores::postgres(v, component)));
                components.push(component);
            }
        }
        PostgresMode::Shared => {
            objects.push(Object::ConfigMap(config::postgres_init(v)));
            let component = Component::SharedPostgres;
            objects.push(Object::Service(datastores::headless_service(
                v,
                component,
                crate::topology::POSTGRES_PORT,
                "postgres",
            )));
            objects.push(Object::StatefulSet(datastores::postgres(v, component)));
            components.push(component);
        }
        PostgresMode::External => {}
    }

    if spec.rabbitmq.mode == RabbitMqMode::BuiltIn {
        objects.push(Object::Service(datastores::headless_service(
            v,
            Component::RabbitMq,
            crate::topology::AMQP_PORT,
            "amqp",
        )));
        objects.push(Object::StatefulSet(datastores::rabbitmq(v)));
        components.push(Component::RabbitMq);
    }

    for service in Service::ALL {
        objects.push(Object::Service(workloads::service(v, service)));
        if service.is_grpc() {
            objects.push(Object::Service(workloads::pods_service(v, service)));
        }
        objects.push(Object::Deployment(workloads::deployment(
            v,
            service,
            &config_digest,
        )));
        if let Some(pdb) = workloads::disruption_budget(v, service) {
            objects.push(Object::PodDisruptionBudget(pdb));
        }
        components.push(Component::Service(service));
    }

    let order = |o: &Object| APPLIED_KINDS.iter().position(|k| *k == o.kind());
    objects.sort_by_key(order);
    Desired {
        generated,
        objects,
        components,
    }
}

#[cfg(test)]
mod tests;
