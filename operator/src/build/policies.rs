//! NetworkPolicies: every pod of the installation is denied by default; the
//! gateway is open to clients, each service to its callers only, each
//! database to its service only, the broker to its users only, DNS to all.

use std::collections::BTreeSet;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::{PostgresMode, RabbitMqMode};
use crate::meta::{Component, instance_labels, instance_selector, selector};
use crate::topology::{ADMIN_PORT, AMQP_PORT, POSTGRES_PORT, Service};
use crate::validate::Validated;

fn tcp(number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some("TCP".to_owned()),
        ..NetworkPolicyPort::default()
    }
}

fn pods(instance: &str, component: Component) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(selector(instance, component)),
        ..NetworkPolicyPeer::default()
    }
}

/// Any pod in any namespace (for metrics scrapers).
fn any_pod() -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
        ..NetworkPolicyPeer::default()
    }
}

fn policy(
    v: &Validated<'_>,
    name: String,
    pod_selector: LabelSelector,
    ingress: Vec<NetworkPolicyIngressRule>,
    egress: Vec<NetworkPolicyEgressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: v.owner.meta(name, instance_labels(&v.owner.name)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pod_selector),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    }
}

/// The database component of a service, if the operator runs it.
fn database_of(v: &Validated<'_>, service: Service) -> Option<Component> {
    match v.spec.postgres.mode {
        PostgresMode::PerService => Some(Component::Postgres(service)),
        PostgresMode::Shared => Some(Component::SharedPostgres),
        PostgresMode::External => None,
    }
}

fn service_policy(v: &Validated<'_>, service: Service) -> NetworkPolicy {
    let instance = v.owner.name.as_str();
    let component = Component::Service(service);
    let clients = if service == Service::Gateway {
        // Clients come from anywhere: other pods, node ports, load balancers.
        NetworkPolicyIngressRule {
            ports: Some(vec![tcp(service.port())]),
            from: None,
        }
    } else {
        NetworkPolicyIngressRule {
            ports: Some(vec![tcp(service.port())]),
            from: Some(
                service
                    .callers()
                    .into_iter()
                    .map(|caller| pods(instance, Component::Service(caller)))
                    .collect(),
            ),
        }
    };
    let scrape = NetworkPolicyIngressRule {
        ports: Some(vec![tcp(ADMIN_PORT)]),
        from: Some(vec![any_pod()]),
    };

    let mut egress: Vec<NetworkPolicyEgressRule> = service
        .callees()
        .iter()
        .map(|callee| NetworkPolicyEgressRule {
            to: Some(vec![pods(instance, Component::Service(*callee))]),
            ports: Some(vec![tcp(callee.port())]),
        })
        .collect();
    if service.owns_database() {
        match database_of(v, service) {
            Some(db) => egress.push(NetworkPolicyEgressRule {
                to: Some(vec![pods(instance, db)]),
                ports: Some(vec![tcp(POSTGRES_PORT)]),
            }),
            None => egress.push(anywhere_on(&v.external.postgres_ports, POSTGRES_PORT)),
        }
    }
    if service.uses_broker() {
        egress.push(match v.spec.rabbitmq.mode {
            RabbitMqMode::BuiltIn => NetworkPolicyEgressRule {
                to: Some(vec![pods(instance, Component::RabbitMq)]),
                ports: Some(vec![tcp(AMQP_PORT)]),
            },
            RabbitMqMode::External => {
                anywhere_on(&v.external.amqp_port.into_iter().collect(), AMQP_PORT)
            }
        });
    }
    if service == Service::Notification && !v.external.notification_ports.is_empty() {
        egress.push(anywhere_on(&v.external.notification_ports, 443));
    }
    if let Some(port) = v.spec.telemetry.otlp_endpoint.as_deref().map(otlp_port) {
        egress.push(anywhere_on(&BTreeSet::from([port]), port));
    }
    policy(
        v,
        component.object_name(instance),
        selector(instance, component),
        vec![clients, scrape],
        egress,
    )
}

/// Egress to any address on the given ports (`fallback` when none is known):
/// external endpoints have no pod selector, and their addresses are not known
/// to the cluster.
fn anywhere_on(ports: &BTreeSet<i32>, fallback: i32) -> NetworkPolicyEgressRule {
    let ports: Vec<NetworkPolicyPort> = if ports.is_empty() {
        vec![tcp(fallback)]
    } else {
        ports.iter().copied().map(tcp).collect()
    };
    NetworkPolicyEgressRule {
        to: None,
        ports: Some(ports),
    }
}

/// The port of an OTLP endpoint URL (4317 when it names none).
fn otlp_port(endpoint: &str) -> i32 {
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .trim_end_matches('/');
    authority
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .map_or(4317, i32::from)
}

fn datastore_policy(
    v: &Validated<'_>,
    component: Component,
    clients: &[Service],
    number: i32,
) -> NetworkPolicy {
    let instance = v.owner.name.as_str();
    policy(
        v,
        component.object_name(instance),
        selector(instance, component),
        vec![NetworkPolicyIngressRule {
            ports: Some(vec![tcp(number)]),
            from: Some(
                clients
                    .iter()
                    .map(|s| pods(instance, Component::Service(*s)))
                    .collect(),
            ),
        }],
        Vec::new(),
    )
}

/// Every NetworkPolicy of an installation.
pub fn network_policies(v: &Validated<'_>) -> Vec<NetworkPolicy> {
    let instance = v.owner.name.as_str();
    let dns_port = |protocol: &str| NetworkPolicyPort {
        port: Some(IntOrString::Int(53)),
        protocol: Some(protocol.to_owned()),
        ..NetworkPolicyPort::default()
    };
    let mut policies = vec![
        policy(
            v,
            format!("{instance}-default-deny"),
            instance_selector(instance),
            Vec::new(),
            Vec::new(),
        ),
        policy(
            v,
            format!("{instance}-allow-dns"),
            instance_selector(instance),
            Vec::new(),
            vec![NetworkPolicyEgressRule {
                to: None,
                ports: Some(vec![dns_port("UDP"), dns_port("TCP")]),
            }],
        ),
    ];
    // The policy of the DNS rule only allows egress; its empty ingress list
    // keeps ingress denied, which the per-component policies then open.
    for service in Service::ALL {
        policies.push(service_policy(v, service));
    }
    let owners: Vec<Service> = Service::ALL
        .into_iter()
        .filter(|s| s.owns_database())
        .collect();
    match v.spec.postgres.mode {
        PostgresMode::PerService => {
            for service in &owners {
                policies.push(datastore_policy(
                    v,
                    Component::Postgres(*service),
                    &[*service],
                    POSTGRES_PORT,
                ));
            }
        }
        PostgresMode::Shared => policies.push(datastore_policy(
            v,
            Component::SharedPostgres,
            &owners,
            POSTGRES_PORT,
        )),
        PostgresMode::External => {}
    }
    if v.spec.rabbitmq.mode == RabbitMqMode::BuiltIn {
        let users: Vec<Service> = Service::ALL
            .into_iter()
            .filter(|s| s.uses_broker())
            .collect();
        policies.push(datastore_policy(v, Component::RabbitMq, &users, AMQP_PORT));
    }
    policies
}
