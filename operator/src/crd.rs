//! The `GoCommerce` custom resource: its spec, its status and the
//! CustomResourceDefinition generated from them. Schema validation (ranges,
//! enums, patterns, CEL rules) lives here so that `kubectl apply` refuses a bad
//! spec before the operator ever sees it; the defaults make a resource with
//! only a name run on a kind cluster.

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSON,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::topology::Service;

/// The API group the project owns.
pub const GROUP: &str = "gocommerce.io";
/// The only served version.
pub const VERSION: &str = "v1alpha1";
/// The image every service runs unless the spec says otherwise.
pub const DEFAULT_IMAGE: &str = "ghcr.io/gocommerce/gocommerce:0.1.0";
/// The longest instance name whose derived object names stay valid DNS labels
/// (a StatefulSet's pods carry `<sts>-<10 char hash>` in a 63-char label).
pub const MAX_NAME_LEN: usize = 30;

/// Desired state of one GoCommerce installation: every service of the single
/// image, its databases, its broker and their wiring.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gocommerce.io",
    version = "v1alpha1",
    kind = "GoCommerce",
    plural = "gocommerces",
    shortname = "gc",
    category = "gocommerce",
    namespaced,
    status = "GoCommerceStatus",
    derive = "PartialEq",
    doc = "A GoCommerce installation: services, databases, broker and their wiring",
    validation = Rule::new("size(self.metadata.name) <= 30").message("metadata.name must be at most 30 characters: object names are derived from it"),
    // At creation only: an instance made before the rule must still take
    // updates, not least the removal of its finalizer when it is deleted.
    validation = Rule::new("oldSelf.hasValue() || !self.metadata.name.endsWith('-pg')").optional_old_self(true).message("metadata.name must not end in -pg: its objects would take the names of another instance's databases"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.gatewayEndpoint", priority = "1"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct GoCommerceSpec {
    /// The image of the `gocommerce` binary, run by every service.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^\S+$"))]
    pub image: String,

    /// When the kubelet pulls the image.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,

    /// Secrets (by name) holding registry credentials for the images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        inner(regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))
    )]
    pub image_pull_secrets: Vec<String>,

    /// The REST gateway and how clients reach it.
    #[serde(default)]
    pub gateway: GatewaySpec,

    /// The gRPC services behind the gateway.
    #[serde(default)]
    pub services: ServicesSpec,

    /// Where the services' databases live.
    #[serde(default)]
    pub postgres: PostgresSpec,

    /// The message broker.
    #[serde(default)]
    pub rabbitmq: RabbitMqSpec,

    /// Token lifetimes and the bootstrap administrator.
    #[serde(default)]
    pub auth: AuthSpec,

    /// Outgoing notification channels.
    #[serde(default)]
    pub notification: NotificationSpec,

    /// Logs and traces.
    #[serde(default)]
    pub telemetry: TelemetrySpec,

    /// NetworkPolicies around every pod of the installation.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,

    /// Graceful shutdown of the service pods.
    #[serde(default)]
    pub shutdown: ShutdownSpec,
}

fn default_image() -> String {
    DEFAULT_IMAGE.to_owned()
}

/// The kubelet's image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Replicas, resources and extra environment of one service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// Number of pods; 0 stops the service.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 50))]
    pub replicas: i32,

    /// CPU and memory; unset uses small defaults that fit a kind cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extra environment variables; they cannot override the variables the
    /// operator manages (addresses, URLs, credentials). A whole number in
    /// DATABASE_STARTUP_WAIT_SECONDS also lengthens the startup probe to that
    /// wait plus 120 seconds (180 at least).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,
}

fn one() -> i32 {
    1
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            replicas: 1,
            resources: None,
            env: Vec::new(),
        }
    }
}

/// The gateway: a workload plus the Service clients use.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.serviceType != 'ClusterIP' || !has(self.nodePort)").message("nodePort needs serviceType NodePort or LoadBalancer"))]
pub struct GatewaySpec {
    #[serde(flatten)]
    pub workload: WorkloadSpec,

    /// How the gateway's Service is exposed.
    #[serde(default = "default_service_type")]
    pub service_type: ServiceType,

    /// The node port; unset means 30080 (which kind-config.yaml maps to
    /// the host) for NodePort and a port Kubernetes picks for LoadBalancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
}

fn default_service_type() -> ServiceType {
    ServiceType::NodePort
}

/// The gateway's node port when the spec names none and the type is NodePort.
pub const DEFAULT_NODE_PORT: i32 = 30080;

impl Default for GatewaySpec {
    fn default() -> Self {
        GatewaySpec {
            workload: WorkloadSpec::default(),
            service_type: default_service_type(),
            node_port: None,
        }
    }
}

/// Kubernetes Service types the gateway may use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    ClusterIP,
    #[default]
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// One workload per gRPC service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicesSpec {
    #[serde(default)]
    pub auth: WorkloadSpec,
    #[serde(default)]
    pub user: WorkloadSpec,
    #[serde(default)]
    pub product: WorkloadSpec,
    #[serde(default)]
    pub order: WorkloadSpec,
    #[serde(default)]
    pub payment: WorkloadSpec,
    #[serde(default)]
    pub notification: WorkloadSpec,
}

impl GoCommerceSpec {
    /// The workload settings of any service, gateway included.
    pub fn workload(&self, service: Service) -> &WorkloadSpec {
        match service {
            Service::Gateway => &self.gateway.workload,
            Service::Auth => &self.services.auth,
            Service::User => &self.services.user,
            Service::Product => &self.services.product,
            Service::Order => &self.services.order,
            Service::Payment => &self.services.payment,
            Service::Notification => &self.services.notification,
        }
    }
}

/// Where the databases live.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PostgresMode {
    /// One PostgreSQL StatefulSet per database-owning service.
    #[default]
    PerService,
    /// One PostgreSQL StatefulSet holding every service's database, each
    /// with its own role.
    Shared,
    /// Databases outside the cluster's control: a Secret holds one
    /// connection URL per service (keys `auth`, `user`, …).
    External,
}

/// What happens to database volumes when the GoCommerce resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the volumes and the credentials that open them; a resource
    /// created again with the same name finds its data.
    #[default]
    Retain,
    /// Delete the volumes with the resource.
    Delete,
}

/// A persistent volume request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each volume, as a Kubernetes quantity.
    #[serde(default = "default_storage_size")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub size: String,

    /// The StorageClass; unset uses the cluster's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

fn default_storage_size() -> String {
    "1Gi".to_owned()
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

/// PostgreSQL for the database-owning services.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'external' || has(self.externalSecretName)").message("externalSecretName is required when mode is external"))]
#[x_kube(validation = Rule::new("self.mode == 'external' || !has(self.externalSecretName)").message("externalSecretName is only used when mode is external"))]
pub struct PostgresSpec {
    /// perService, shared or external; fixed once created because switching
    /// would leave the data behind.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("postgres.mode cannot be changed"))]
    pub mode: PostgresMode,

    /// The PostgreSQL image of built-in instances (an official `postgres`
    /// image: its entrypoint and uid 70 are assumed).
    #[serde(default = "default_postgres_image")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^\S+$"))]
    pub image: String,

    /// Volumes of built-in instances; fixed once created because a
    /// StatefulSet's volume claim templates cannot change.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("postgres.storage cannot be changed: the volumes already exist (resize their PersistentVolumeClaims instead)"))]
    pub storage: StorageSpec,

    /// Resources of each built-in instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// What deleting the resource does to the volumes.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// In external mode: the Secret with one connection URL per service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub external_secret_name: Option<String>,
}

fn default_postgres_image() -> String {
    "postgres:17-alpine".to_owned()
}

impl Default for PostgresSpec {
    fn default() -> Self {
        PostgresSpec {
            mode: PostgresMode::PerService,
            image: default_postgres_image(),
            storage: StorageSpec::default(),
            resources: None,
            deletion_policy: DeletionPolicy::Retain,
            external_secret_name: None,
        }
    }
}

/// Whether the operator runs the broker.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RabbitMqMode {
    /// A single-node RabbitMQ StatefulSet.
    #[default]
    BuiltIn,
    /// A broker elsewhere: a Secret holds its AMQP URL (key `url`).
    External,
}

/// RabbitMQ for the services that publish or consume events.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'external' || has(self.externalSecretName)").message("externalSecretName is required when mode is external"))]
pub struct RabbitMqSpec {
    #[serde(default)]
    pub mode: RabbitMqMode,

    /// The RabbitMQ image of the built-in broker (an official `rabbitmq`
    /// image: uid 999 is assumed).
    #[serde(default = "default_rabbitmq_image")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^\S+$"))]
    pub image: String,

    /// The built-in broker's volume; fixed once created because a
    /// StatefulSet's volume claim templates cannot change.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("rabbitmq.storage cannot be changed: the volume already exists (resize its PersistentVolumeClaim instead)"))]
    pub storage: StorageSpec,

    /// Resources of the built-in broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// In external mode: the Secret whose key `url` is the AMQP URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub external_secret_name: Option<String>,
}

fn default_rabbitmq_image() -> String {
    "rabbitmq:4.1".to_owned()
}

impl Default for RabbitMqSpec {
    fn default() -> Self {
        RabbitMqSpec {
            mode: RabbitMqMode::BuiltIn,
            image: default_rabbitmq_image(),
            storage: StorageSpec::default(),
            resources: None,
            external_secret_name: None,
        }
    }
}

/// Tokens and the bootstrap administrator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.refreshTokenTtlSeconds > self.accessTokenTtlSeconds").message("refresh tokens must outlive access tokens"))]
pub struct AuthSpec {
    /// Access token lifetime.
    #[serde(default = "default_access_ttl")]
    #[schemars(range(min = 60, max = 86400))]
    pub access_token_ttl_seconds: i64,

    /// Absolute lifetime of a refresh-token family.
    #[serde(default = "default_refresh_ttl")]
    #[schemars(range(min = 3600, max = 31536000))]
    pub refresh_token_ttl_seconds: i64,

    /// `iss` of every token; unset keeps the binary's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub issuer: Option<String>,

    /// `aud` of access tokens; unset keeps the binary's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub audience: Option<String>,

    /// A Secret with keys `email` and `password`: the administrator created
    /// (or promoted) when auth starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub admin_secret_name: Option<String>,
}

fn default_access_ttl() -> i64 {
    900
}

fn default_refresh_ttl() -> i64 {
    2_592_000
}

impl Default for AuthSpec {
    fn default() -> Self {
        AuthSpec {
            access_token_ttl_seconds: default_access_ttl(),
            refresh_token_ttl_seconds: default_refresh_ttl(),
            issuer: None,
            audience: None,
            admin_secret_name: None,
        }
    }
}

/// A key of a Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Where notifications go; every channel is optional and its URL, which may
/// carry credentials, comes from a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationSpec {
    /// `SMTP_URL`, e.g. `smtp://user:pass@mail.example.com:587`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_url: Option<SecretKeyRef>,

    /// `SMTP_FROM`, the sender of e-mails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 320))]
    pub smtp_from: Option<String>,

    /// `SMS_WEBHOOK_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms_webhook_url: Option<SecretKeyRef>,

    /// `PUSH_WEBHOOK_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_webhook_url: Option<SecretKeyRef>,
}

/// Log line format of the services.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Json => "json",
            LogFormat::Pretty => "pretty",
        }
    }
}

/// Logs and traces of every service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelemetrySpec {
    /// `RUST_LOG` filter directives.
    #[serde(default = "default_log_level")]
    #[schemars(
        length(min = 1, max = 1024),
        regex(pattern = r"^[A-Za-z0-9_:=,.\-\[\]{}*]+$")
    )]
    pub log_level: String,

    /// `LOG_FORMAT`.
    #[serde(default)]
    pub log_format: LogFormat,

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (OTLP/gRPC); unset disables export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), regex(pattern = r"^https?://[^\s/]+(:[0-9]+)?/?$"))]
    pub otlp_endpoint: Option<String>,
}

fn default_log_level() -> String {
    "info".to_owned()
}

impl Default for TelemetrySpec {
    fn default() -> Self {
        TelemetrySpec {
            log_level: default_log_level(),
            log_format: LogFormat::Json,
            otlp_endpoint: None,
        }
    }
}

/// NetworkPolicies of the installation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Deny by default and open only the paths GoCommerce uses.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        NetworkPolicySpec { enabled: true }
    }
}

/// How service pods stop.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.preStopSleepSeconds < self.terminationGracePeriodSeconds").message("preStopSleepSeconds must be shorter than terminationGracePeriodSeconds"))]
pub struct ShutdownSpec {
    /// Time between SIGTERM and SIGKILL; it must cover the preStop delay and
    /// the binary's own drain (`SHUTDOWN_GRACE_SECONDS`, set to what is left).
    #[serde(default = "default_grace")]
    #[schemars(range(min = 5, max = 600))]
    pub termination_grace_period_seconds: i64,

    /// Delay before SIGTERM so that endpoints stop sending traffic first.
    #[serde(default = "default_pre_stop")]
    #[schemars(range(min = 0, max = 120))]
    pub pre_stop_sleep_seconds: i64,
}

fn default_grace() -> i64 {
    30
}

fn default_pre_stop() -> i64 {
    5
}

impl Default for ShutdownSpec {
    fn default() -> Self {
        ShutdownSpec {
            termination_grace_period_seconds: default_grace(),
            pre_stop_sleep_seconds: default_pre_stop(),
        }
    }
}

/// Observed state, written by the operator only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GoCommerceStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,

    /// Desired and ready replicas of every workload.
    #[serde(default)]
    pub components: Vec<ComponentStatus>,

    /// Where the gateway answers: the load balancer's address when there is
    /// one, else the in-cluster URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_endpoint: Option<String>,

    /// The gateway's node port, for NodePort and LoadBalancer Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_node_port: Option<i32>,
}

/// Replicas of one workload.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// The workload's name, e.g. `gateway` or `postgres-auth`.
    pub name: String,
    /// `Deployment` or `StatefulSet`.
    pub kind: String,
    pub desired_replicas: i32,
    pub ready_replicas: i32,
    /// Whether the latest pod template has rolled out to every replica.
    pub updated: bool,
}

impl GoCommerce {
    /// The generated CustomResourceDefinition. `spec` is made optional with
    /// an empty default so that a resource with only a name is accepted and
    /// then filled in by the API server's defaulting.
    pub fn definition() -> CustomResourceDefinition {
        let mut crd = <GoCommerce as CustomResourceExt>::crd();
        for version in &mut crd.spec.versions {
            let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            else {
                continue;
            };
            if let Some(required) = schema.required.as_mut() {
                required.retain(|field| field != "spec");
            }
            if let Some(spec) = schema.properties.as_mut().and_then(|p| p.get_mut("spec")) {
                spec.default = Some(JSON(serde_json::json!({})));
            }
        }
        crd
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;

    use super::*;
    use crate::meta::RESERVED_NAME_SUFFIX;

    /// The schema of `spec.<path…>` in the served version.
    fn spec_property(path: &[&str]) -> JSONSchemaProps {
        let crd = GoCommerce::definition();
        let mut node = crd.spec.versions[0]
            .schema
            .clone()
            .and_then(|s| s.open_api_v3_schema)
            .expect("a schema");
        for name in std::iter::once(&"spec").chain(path) {
            node = node
                .properties
                .and_then(|mut p| p.remove(*name))
                .unwrap_or_else(|| panic!("no property {name} in spec.{}", path.join(".")));
        }
        node
    }

    #[test]
    fn the_schema_refuses_instance_names_that_take_another_instances_database_names() {
        // Arrange
        let crd = GoCommerce::definition();

        // Act
        let rules = crd.spec.versions[0]
            .schema
            .clone()
            .and_then(|s| s.open_api_v3_schema)
            .and_then(|s| s.x_kubernetes_validations)
            .unwrap_or_default();

        // Assert
        let wanted =
            format!("oldSelf.hasValue() || !self.metadata.name.endsWith('{RESERVED_NAME_SUFFIX}')");
        let rule = rules.iter().find(|r| r.rule == wanted);
        assert!(rule.is_some(), "{rules:?}");
        assert_eq!(
            rule.and_then(|r| r.optional_old_self),
            Some(true),
            "checked at creation only, so existing instances still take updates"
        );
    }

    #[test]
    fn storage_of_the_datastores_cannot_change_once_created() {
        // Arrange
        let paths = [["postgres", "storage"], ["rabbitmq", "storage"]];

        for path in paths {
            // Act
            let rules = spec_property(&path)
                .x_kubernetes_validations
                .unwrap_or_default();

            // Assert
            let rule = rules
                .iter()
                .find(|r| r.rule == "self == oldSelf")
                .unwrap_or_else(|| panic!("{} has no transition rule: {rules:?}", path.join(".")));
            let message = rule.message.as_deref().unwrap_or_default();
            assert!(
                message.starts_with(&format!("{} cannot be changed", path.join("."))),
                "{message}"
            );
        }
    }
}
