//! Names, labels and owner references shared by every object the operator
//! creates, so that selectors, pruning and garbage collection agree.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;

use crate::crd::GoCommerce;
use crate::topology::Service;

/// The field manager of every server-side apply and the reporter of events.
pub const MANAGER: &str = "gocommerce-operator";
/// The finalizer that honours `postgres.deletionPolicy`.
pub const FINALIZER: &str = "gocommerce.io/cleanup";
/// Pod template annotation whose change rolls a workload.
pub const CONFIG_HASH_ANNOTATION: &str = "gocommerce.io/config-hash";

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";

/// What may not end an instance's name: the databases of instance `x` are
/// named `x-pg-<service>`, which are the names of the services of an
/// instance `x-pg` in the same namespace.
pub const RESERVED_NAME_SUFFIX: &str = "-pg";

/// A component of an installation: a service, a database or the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Service(Service),
    /// The PostgreSQL instance of one service (perService mode).
    Postgres(Service),
    /// The one PostgreSQL instance of shared mode.
    SharedPostgres,
    RabbitMq,
}

impl Component {
    /// The value of the component label, also the suffix of object names.
    pub fn label(self) -> String {
        match self {
            Component::Service(s) => s.name().to_owned(),
            Component::Postgres(s) => format!("postgres-{}", s.name()),
            Component::SharedPostgres => "postgres".to_owned(),
            Component::RabbitMq => "rabbitmq".to_owned(),
        }
    }

    /// The name of the component's workload and Service.
    pub fn object_name(self, instance: &str) -> String {
        match self {
            Component::Service(s) => format!("{instance}-{}", s.name()),
            // Short "pg" keeps StatefulSet pod labels under 63 characters.
            Component::Postgres(s) => format!("{instance}-pg-{}", s.name()),
            Component::SharedPostgres => format!("{instance}-pg"),
            Component::RabbitMq => format!("{instance}-rabbitmq"),
        }
    }
}

/// The labels every object of an instance carries.
pub fn instance_labels(instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_owned(), "gocommerce".to_owned()),
        (LABEL_INSTANCE.to_owned(), instance.to_owned()),
        (LABEL_MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (LABEL_PART_OF.to_owned(), "gocommerce".to_owned()),
    ])
}

/// The labels of one component's objects.
pub fn component_labels(instance: &str, component: Component) -> BTreeMap<String, String> {
    let mut labels = instance_labels(instance);
    labels.insert(LABEL_COMPONENT.to_owned(), component.label());
    labels
}

/// The immutable pod selector of one component (no managed-by or part-of,
/// so that those labels may change without recreating workloads).
pub fn selector_labels(instance: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_owned(), "gocommerce".to_owned()),
        (LABEL_INSTANCE.to_owned(), instance.to_owned()),
        (LABEL_COMPONENT.to_owned(), component.label()),
    ])
}

pub fn selector(instance: &str, component: Component) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(instance, component)),
        ..LabelSelector::default()
    }
}

/// Selects every pod of an instance.
pub fn instance_selector(instance: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([
            (LABEL_NAME.to_owned(), "gocommerce".to_owned()),
            (LABEL_INSTANCE.to_owned(), instance.to_owned()),
        ])),
        ..LabelSelector::default()
    }
}

/// The label selector string that finds every object of an instance.
pub fn instance_label_query(instance: &str) -> String {
    format!("{LABEL_INSTANCE}={instance},{LABEL_MANAGED_BY}={MANAGER}")
}

/// Where objects go and whom they belong to.
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    pub name: String,
    pub namespace: String,
    pub reference: OwnerReference,
}

impl Owner {
    /// The owner of an instance's objects; `None` when the resource has no
    /// name, namespace or uid yet (it was not read from a cluster or a file).
    pub fn of(gc: &GoCommerce) -> Option<Owner> {
        Some(Owner {
            name: gc.metadata.name.clone()?,
            namespace: gc.metadata.namespace.clone()?,
            reference: gc.controller_owner_ref(&())?,
        })
    }

    /// Metadata of an object of this instance.
    pub fn meta(&self, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![self.reference.clone()]),
            ..ObjectMeta::default()
        }
    }
}
