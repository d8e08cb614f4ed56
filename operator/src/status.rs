//! The resource's status, computed from the objects the API server returned
//! when they were applied: per-component replicas, the gateway's endpoint,
//! the conditions and the generation they describe.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Service as KubeService;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::conditions::{self, Observation};
use crate::crd::{ComponentStatus, GoCommerce, GoCommerceStatus};
use crate::topology::GATEWAY_PORT;

/// A Deployment's replicas; `updated` once the controller has seen the
/// latest generation and every replica runs the latest template.
pub fn deployment_status(name: String, d: &Deployment) -> ComponentStatus {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    let seen = match (d.metadata.generation, status.observed_generation) {
        (Some(generation), Some(observed)) => observed >= generation,
        _ => false,
    };
    let updated_replicas = status.updated_replicas.unwrap_or(0);
    // Old pods still terminating count in `replicas` during a rollout.
    let total = status.replicas.unwrap_or(0);
    ComponentStatus {
        name,
        kind: "Deployment".to_owned(),
        desired_replicas: desired,
        ready_replicas: status.ready_replicas.unwrap_or(0),
        updated: seen && updated_replicas >= desired && total <= desired,
    }
}

/// A StatefulSet's replicas.
pub fn stateful_set_status(name: String, s: &StatefulSet) -> ComponentStatus {
    let desired = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = s.status.clone().unwrap_or_default();
    let seen = match (s.metadata.generation, status.observed_generation) {
        (Some(generation), Some(observed)) => observed >= generation,
        _ => false,
    };
    let same_revision = match (&status.current_revision, &status.update_revision) {
        (Some(current), Some(update)) => current == update,
        _ => status.updated_replicas.unwrap_or(0) >= desired,
    };
    ComponentStatus {
        name,
        kind: "StatefulSet".to_owned(),
        desired_replicas: desired,
        ready_replicas: status.ready_replicas.unwrap_or(0),
        updated: seen && same_revision,
    }
}

/// Where clients reach the gateway: the load balancer's address once it has
/// one, else the in-cluster URL; and the node port if any.
pub fn gateway_endpoint(service: &KubeService) -> (Option<String>, Option<i32>) {
    let name = service.metadata.name.clone().unwrap_or_default();
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let node_port = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|ports| ports.iter().find_map(|p| p.node_port));
    let balancer = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .and_then(|ingress| ingress.first())
        .and_then(|i| i.hostname.clone().or_else(|| i.ip.clone()));
    let endpoint = match balancer {
        Some(host) => format!("http://{host}:{GATEWAY_PORT}"),
        None => format!("http://{name}.{namespace}.svc:{GATEWAY_PORT}"),
    };
    (Some(endpoint), node_port)
}

/// The new status: conditions from `observation`, components and endpoint
/// when given, the rest kept from the current status.
pub fn next(
    gc: &GoCommerce,
    observation: &Observation,
    gateway: Option<(Option<String>, Option<i32>)>,
    now: Time,
) -> GoCommerceStatus {
    let previous = gc.status.clone().unwrap_or_default();
    let conditions = conditions::compute(
        &previous.conditions,
        observation,
        gc.metadata.generation,
        now,
    );
    let components = match observation {
        Observation::Applied { components } => components.clone(),
        _ => previous.components.clone(),
    };
    let (gateway_endpoint, gateway_node_port) = gateway.unwrap_or((
        previous.gateway_endpoint.clone(),
        previous.gateway_node_port,
    ));
    GoCommerceStatus {
        observed_generation: gc.metadata.generation,
        conditions,
        components,
        gateway_endpoint,
        gateway_node_port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn deployment(
        generation: i64,
        observed: i64,
        replicas: i32,
        updated: i32,
        ready: i32,
        total: i32,
    ) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                updated_replicas: Some(updated),
                ready_replicas: Some(ready),
                replicas: Some(total),
                ..DeploymentStatus::default()
            }),
        }
    }

    #[test]
    fn deployment_is_updated_only_when_rollout_finished() {
        let done = deployment_status("auth".into(), &deployment(2, 2, 2, 2, 2, 2));
        assert!(done.updated);
        assert_eq!((done.desired_replicas, done.ready_replicas), (2, 2));
        assert!(!deployment_status("a".into(), &deployment(3, 2, 2, 2, 2, 2)).updated);
        assert!(!deployment_status("a".into(), &deployment(2, 2, 2, 1, 2, 3)).updated);
        assert!(!deployment_status("a".into(), &deployment(2, 2, 2, 2, 2, 3)).updated);
    }
}
