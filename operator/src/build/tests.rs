//! Build tests from YAML fixtures: every object of every mode, probes,
//! security contexts, network policies and rollouts on change.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, EnvVar, Service as KubeService};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::crd::GoCommerce;
use crate::meta::{CONFIG_HASH_ANNOTATION, LABEL_COMPONENT, LABEL_INSTANCE};
use crate::render::parse_resources;
use crate::validate::{Lookup, Referenced, Rejection, validate};

const MINIMAL: &str = include_str!("../../fixtures/minimal.yaml");
const SHARED: &str = include_str!("../../fixtures/shared.yaml");
const EXTERNAL: &str = include_str!("../../fixtures/external.yaml");

fn resource(yaml: &str) -> GoCommerce {
    parse_resources("fixture", yaml)
        .expect("fixture parses")
        .pop()
        .expect("one resource")
}

fn external_secrets() -> Referenced {
    let secret = |pairs: &[(&str, &str)]| {
        Lookup::Found(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect(),
        )
    };
    let databases: Vec<(String, String)> = Service::BACKENDS
        .iter()
        .map(|s| {
            (
                s.name().to_owned(),
                format!("postgres://u:p@db.example.com:6432/{}", s.name()),
            )
        })
        .collect();
    let databases: Vec<(&str, &str)> = databases
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Referenced {
        secrets: BTreeMap::from([
            ("shop-databases".to_owned(), secret(&databases)),
            (
                "shop-broker".to_owned(),
                secret(&[("url", "amqps://u:p@mq.example.com/%2f")]),
            ),
            (
                "shop-admin".to_owned(),
                secret(&[("email", "admin@example.com"), ("password", "s3cret!!")]),
            ),
            (
                "shop-notify".to_owned(),
                secret(&[
                    ("smtp", "smtp://u:p@mail.example.com:587"),
                    ("sms", "https://sms.example.com/hook"),
                ]),
            ),
        ]),
    }
}

fn desired_with(gc: &GoCommerce, referenced: &Referenced) -> Desired {
    build(&validate(gc, referenced).expect("valid"))
}

fn desired(yaml: &str) -> Desired {
    let gc = resource(yaml);
    desired_with(&gc, &external_secrets())
}

fn deployment<'a>(d: &'a Desired, name: &str) -> &'a Deployment {
    match d.find("Deployment", name) {
        Some(Object::Deployment(o)) => o,
        _ => panic!("no deployment {name}"),
    }
}

fn stateful_set<'a>(d: &'a Desired, name: &str) -> &'a StatefulSet {
    match d.find("StatefulSet", name) {
        Some(Object::StatefulSet(o)) => o,
        _ => panic!("no statefulset {name}"),
    }
}

/// The settings of the instance's ConfigMap.
fn config_data(d: &Desired) -> &BTreeMap<String, String> {
    let Some(Object::ConfigMap(cm)) = d.find("ConfigMap", "shop-config") else {
        panic!("no config map");
    };
    cm.data.as_ref().unwrap()
}

fn service<'a>(d: &'a Desired, name: &str) -> &'a KubeService {
    match d.find("Service", name) {
        Some(Object::Service(o)) => o,
        _ => panic!("no service {name}"),
    }
}

fn policy<'a>(d: &'a Desired, name: &str) -> &'a NetworkPolicy {
    match d.find("NetworkPolicy", name) {
        Some(Object::NetworkPolicy(o)) => o,
        _ => panic!("no network policy {name}"),
    }
}

fn container(d: &Deployment) -> &Container {
    &d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
}

fn env_var<'a>(c: &'a Container, name: &str) -> Option<&'a EnvVar> {
    c.env.iter().flatten().find(|e| e.name == name)
}

fn names(d: &Desired, kind: &'static str) -> BTreeSet<String> {
    d.of_kind(kind).map(|o| o.name().to_owned()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The metadata of a Deployment's pods.
fn pod_meta(d: &Deployment) -> &ObjectMeta {
    d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap()
}

fn hash(d: &Deployment) -> String {
    pod_meta(d).annotations.as_ref().unwrap()[CONFIG_HASH_ANNOTATION].clone()
}

/// The components whose pods a policy's ingress admits on `port`.
fn admitted(p: &NetworkPolicy, port: i32) -> Option<BTreeSet<String>> {
    let spec = p.spec.as_ref().unwrap();
    let rule = spec.ingress.iter().flatten().find(|r| {
        r.ports.iter().flatten().any(|p| {
            p.port == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port))
        })
    })?;
    Some(
        rule.from
            .iter()
            .flatten()
            .map(|peer| {
                peer.pod_selector
                    .as_ref()
                    .and_then(|s| s.match_labels.as_ref())
                    .and_then(|l| l.get(LABEL_COMPONENT).cloned())
                    .unwrap_or_else(|| "*".to_owned())
            })
            .collect(),
    )
}

#[test]
fn minimal_resource_builds_every_object_of_per_service_mode() {
    let d = desired(MINIMAL);
    let services = [
        "gateway",
        "auth",
        "user",
        "product",
        "order",
        "payment",
        "notification",
    ];
    let dbs = [
        "auth",
        "user",
        "product",
        "order",
        "payment",
        "notification",
    ];

    let deployments: Vec<String> = services.iter().map(|s| format!("shop-{s}")).collect();
    assert_eq!(
        names(&d, "Deployment"),
        deployments
            .iter()
            .map(String::as_str)
            .map(str::to_owned)
            .collect()
    );
    let mut sts: BTreeSet<String> = dbs.iter().map(|s| format!("shop-pg-{s}")).collect();
    sts.insert("shop-rabbitmq".to_owned());
    assert_eq!(names(&d, "StatefulSet"), sts);
    let mut svcs: BTreeSet<String> = sts.clone();
    svcs.extend(deployments.iter().cloned());
    svcs.extend(
        Service::BACKENDS
            .iter()
            .map(|s| format!("shop-{}-pods", s.name())),
    );
    assert_eq!(names(&d, "Service"), svcs);
    assert_eq!(names(&d, "ConfigMap"), set(&["shop-config"]));
    assert!(
        names(&d, "PodDisruptionBudget").is_empty(),
        "one replica needs no PDB"
    );
    assert_eq!(d.of_kind("NetworkPolicy").count(), 2 + 7 + 6 + 1);

    let generated: BTreeSet<String> = d.generated.iter().map(|g| g.name.clone()).collect();
    let mut expected: BTreeSet<String> = dbs.iter().map(|s| format!("shop-pg-{s}")).collect();
    expected.extend(["shop-jwt".to_owned(), "shop-rabbitmq".to_owned()]);
    assert_eq!(generated, expected);

    // Policies first, workloads after what they read.
    let kinds: Vec<&str> = d.objects.iter().map(Object::kind).collect();
    let first = |k: &str| kinds.iter().position(|x| *x == k).unwrap();
    assert!(first("NetworkPolicy") < first("ConfigMap"));
    assert!(first("ConfigMap") < first("StatefulSet"));
    assert!(first("StatefulSet") < first("Deployment"));

    for object in &d.objects {
        let value = object.to_value();
        assert_eq!(value["metadata"]["namespace"], "store");
        assert_eq!(value["metadata"]["labels"][LABEL_INSTANCE], "shop");
        assert_eq!(
            value["metadata"]["ownerReferences"][0]["kind"],
            "GoCommerce"
        );
        assert_eq!(value["metadata"]["ownerReferences"][0]["controller"], true);
        assert!(value["apiVersion"].is_string() && value["kind"].is_string());
    }
    assert_eq!(d.components.len(), 7 + 7);
}

#[test]
fn deployments_run_the_single_image_with_the_service_as_argument() {
    let d = desired(MINIMAL);
    for s in Service::ALL {
        let dep = deployment(&d, &format!("shop-{s}"));
        let c = container(dep);
        assert_eq!(c.args, Some(vec![s.name().to_owned()]));
        assert_eq!(c.image.as_deref(), Some(crate::crd::DEFAULT_IMAGE));
        assert_eq!(dep.spec.as_ref().unwrap().replicas, Some(1));
        assert_eq!(
            c.env_from.as_ref().unwrap()[0]
                .config_map_ref
                .as_ref()
                .unwrap()
                .name,
            "shop-config"
        );
    }
}

#[test]
fn grpc_services_use_native_grpc_probes_and_the_gateway_http() {
    let d = desired(MINIMAL);
    for s in Service::BACKENDS {
        let c = container(deployment(&d, &format!("shop-{s}")));
        let readiness = c.readiness_probe.as_ref().unwrap().grpc.as_ref().unwrap();
        assert_eq!(readiness.port, s.port());
        assert_eq!(
            readiness.service, None,
            "readiness asks the empty service name"
        );
        let liveness = c.liveness_probe.as_ref().unwrap().grpc.as_ref().unwrap();
        assert_eq!(liveness.service.as_deref(), Some("liveness"));
        let startup = c.startup_probe.as_ref().unwrap();
        assert_eq!(
            startup.grpc.as_ref().unwrap().service.as_deref(),
            Some("liveness")
        );
        assert!(startup.failure_threshold.unwrap() * startup.period_seconds.unwrap() >= 120);
    }
    let c = container(deployment(&d, "shop-gateway"));
    let http = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let get = p.as_ref().unwrap().http_get.as_ref().unwrap();
        (get.path.clone().unwrap(), get.port.clone())
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    assert_eq!(
        http(&c.readiness_probe),
        ("/readyz".to_owned(), IntOrString::Int(8080))
    );
    assert_eq!(
        http(&c.liveness_probe),
        ("/healthz".to_owned(), IntOrString::Int(8080))
    );
    assert!(c.startup_probe.as_ref().unwrap().http_get.is_some());
}

#[test]
fn every_pod_follows_the_restricted_profile() {
    let d = desired(MINIMAL);
    let mut pods = Vec::new();
    for object in &d.objects {
        match object {
            Object::Deployment(o) => pods.push((o.spec.as_ref().unwrap().template.clone(), true)),
            Object::StatefulSet(o) => pods.push((
                o.spec.as_ref().unwrap().template.clone(),
                o.metadata.name.as_deref() != Some("shop-rabbitmq"),
            )),
            _ => {}
        }
    }
    assert_eq!(pods.len(), 14);
    for (template, read_only) in pods {
        let spec = template.spec.unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        let pod = spec.security_context.unwrap();
        assert_eq!(pod.run_as_non_root, Some(true));
        assert!(pod.run_as_user.unwrap() > 0);
        assert_eq!(pod.seccomp_profile.unwrap().type_, "RuntimeDefault");
        for c in spec.containers {
            let sc = c.security_context.unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(sc.run_as_non_root, Some(true));
            assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
            assert_eq!(sc.read_only_root_filesystem, Some(read_only), "{}", c.name);
            assert!(c.resources.unwrap().limits.unwrap().contains_key("memory"));
            assert!(
                c.readiness_probe.is_some()
                    && c.liveness_probe.is_some()
                    && c.startup_probe.is_some()
            );
        }
    }
}

#[test]
fn datastore_pods_fix_volume_ownership_only_when_the_volume_root_is_wrong() {
    // Arrange
    let modes = [MINIMAL, SHARED];

    for yaml in modes {
        // Act
        let d = desired(yaml);

        // Assert
        let datastores = names(&d, "StatefulSet");
        assert!(datastores.contains("shop-rabbitmq"), "{datastores:?}");
        for name in datastores {
            let sts = stateful_set(&d, &name);
            let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
            let security = pod.security_context.as_ref().unwrap();
            assert!(security.fs_group.is_some(), "{name}");
            assert_eq!(
                security.fs_group_change_policy.as_deref(),
                Some("OnRootMismatch"),
                "{name}"
            );
        }
    }
}

#[test]
fn graceful_shutdown_follows_the_spec() {
    let d = desired(EXTERNAL);
    let dep = deployment(&d, "shop-order");
    let pod = dep.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.termination_grace_period_seconds, Some(45));
    let sleep = container(dep)
        .lifecycle
        .as_ref()
        .unwrap()
        .pre_stop
        .as_ref()
        .unwrap()
        .sleep
        .as_ref()
        .unwrap();
    assert_eq!(sleep.seconds, 10);
    match d.find("ConfigMap", "shop-config") {
        Some(Object::ConfigMap(cm)) => {
            assert_eq!(cm.data.as_ref().unwrap()["SHUTDOWN_GRACE_SECONDS"], "33");
        }
        _ => panic!("no config map"),
    }
}

#[test]
fn services_expose_grpc_and_admin_ports_and_the_gateway_a_node_port() {
    let d = desired(MINIMAL);
    let gw = service(&d, "shop-gateway").spec.as_ref().unwrap();
    assert_eq!(gw.type_.as_deref(), Some("NodePort"));
    let ports = gw.ports.as_ref().unwrap();
    assert_eq!((ports[0].port, ports[0].node_port), (8080, Some(30080)));
    assert_eq!(ports[1].port, 9090);
    let auth = service(&d, "shop-auth").spec.as_ref().unwrap();
    assert_eq!(auth.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(auth.ports.as_ref().unwrap()[0].port, 50051);
    assert_eq!(
        auth.ports.as_ref().unwrap()[0].app_protocol.as_deref(),
        Some("kubernetes.io/h2c")
    );
    for name in ["shop-pg-auth", "shop-rabbitmq"] {
        assert_eq!(
            service(&d, name)
                .spec
                .as_ref()
                .unwrap()
                .cluster_ip
                .as_deref(),
            Some("None")
        );
    }
}

#[test]
fn callers_reach_each_grpc_service_through_a_headless_service_listing_its_ready_pods() {
    let d = desired(MINIMAL);
    let data = config_data(&d);

    for backend in Service::BACKENDS {
        let name = format!("shop-{}-pods", backend.name());
        let pods = service(&d, &name);
        let spec = pods.spec.as_ref().unwrap();
        let deployment = deployment(&d, &format!("shop-{}", backend.name()));
        let pod_labels = pod_meta(deployment).labels.as_ref().unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"), "{name}");
        assert_ne!(spec.publish_not_ready_addresses, Some(true), "{name}");
        let selector = spec.selector.as_ref().unwrap();
        assert!(
            selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "{name} selects the pods of its Deployment"
        );
        let ports = spec.ports.as_ref().unwrap();
        assert_eq!(ports.len(), 1, "{name}");
        assert_eq!(ports[0].port, backend.port());
        assert_eq!(ports[0].app_protocol.as_deref(), Some("kubernetes.io/h2c"));
        assert_eq!(
            data[&format!("{}_URL", backend.env_prefix())],
            format!("http://{name}.store.svc:{}", backend.port())
        );
    }
    assert!(d.find("Service", "shop-gateway-pods").is_none());
}

#[test]
fn per_service_databases_have_volumes_credentials_and_urls() {
    let d = desired(MINIMAL);
    let sts = stateful_set(&d, "shop-pg-order").spec.as_ref().unwrap();
    assert_eq!(sts.service_name.as_deref(), Some("shop-pg-order"));
    let claim = &sts.volume_claim_templates.as_ref().unwrap()[0];
    assert_eq!(
        claim.metadata.labels.as_ref().unwrap()[LABEL_INSTANCE],
        "shop"
    );
    let requests = claim
        .spec
        .as_ref()
        .unwrap()
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap();
    assert_eq!(requests["storage"].0, "1Gi");
    let retention = sts
        .persistent_volume_claim_retention_policy
        .as_ref()
        .unwrap();
    assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
    let pg = &sts.template.spec.as_ref().unwrap().containers[0];
    let user = env_var(pg, "POSTGRES_USER").unwrap();
    assert_eq!(
        user.value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap()
            .name,
        "shop-pg-order"
    );
    assert_eq!(
        env_var(pg, "POSTGRES_DB").unwrap().value.as_deref(),
        Some("gocommerce_order")
    );

    let order = container(deployment(&d, "shop-order"));
    let vars: Vec<&str> = order
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    let pw = vars
        .iter()
        .position(|n| *n == "GOCOMMERCE_DB_PASSWORD")
        .unwrap();
    let url = vars
        .iter()
        .position(|n| *n == "ORDER_DATABASE_URL")
        .unwrap();
    assert!(
        pw < url,
        "the password must be defined before the URL that expands it"
    );
    assert_eq!(
        env_var(order, "ORDER_DATABASE_URL")
            .unwrap()
            .value
            .as_deref(),
        Some(
            "postgres://gocommerce_order:$(GOCOMMERCE_DB_PASSWORD)@shop-pg-order.store.svc:5432/gocommerce_order"
        )
    );
    assert!(
        env_var(order, "AMQP_URL")
            .unwrap()
            .value
            .as_deref()
            .unwrap()
            .contains("@shop-rabbitmq.store.svc:5672/")
    );
    let gateway = container(deployment(&d, "shop-gateway"));
    assert!(
        env_var(gateway, "AMQP_URL").is_none()
            && gateway
                .env
                .iter()
                .flatten()
                .all(|e| !e.name.ends_with("_DATABASE_URL"))
    );
    let auth = container(deployment(&d, "shop-auth"));
    let jwt = env_var(auth, "JWT_SIGNING_KEY")
        .unwrap()
        .value_from
        .as_ref()
        .unwrap();
    assert_eq!(jwt.secret_key_ref.as_ref().unwrap().name, "shop-jwt");
}

#[test]
fn config_map_wires_every_service_by_cluster_dns() {
    let d = desired(MINIMAL);
    let data = config_data(&d);
    assert_eq!(
        data["PAYMENT_URL"],
        "http://shop-payment-pods.store.svc:50055"
    );
    assert_eq!(data["PAYMENT_GRPC_ADDR"], "0.0.0.0:50055");
    assert_eq!(data["ADMIN_ADDR"], "0.0.0.0:9090");
    assert_eq!(data["GATEWAY_ADDR"], "0.0.0.0:8080");
    assert_eq!(data["LOG_FORMAT"], "json");
    assert_eq!(data["ACCESS_TOKEN_TTL_SECONDS"], "900");
    assert!(!data.contains_key("OTEL_EXPORTER_OTLP_ENDPOINT"));
}

#[test]
fn shared_mode_runs_one_instance_with_a_role_per_service() {
    let d = desired(SHARED);
    assert_eq!(names(&d, "StatefulSet"), set(&["shop-pg", "shop-rabbitmq"]));
    assert_eq!(
        names(&d, "ConfigMap"),
        set(&["shop-config", "shop-pg-init"])
    );
    let generated: BTreeSet<String> = d.generated.iter().map(|g| g.name.clone()).collect();
    assert!(generated.contains("shop-pg-admin") && generated.contains("shop-pg-payment"));

    let sts = stateful_set(&d, "shop-pg").spec.as_ref().unwrap();
    let pod = sts.template.spec.as_ref().unwrap();
    let pg = &pod.containers[0];
    for s in Service::BACKENDS {
        let var = env_var(pg, &format!("GOCOMMERCE_{}_PASSWORD", s.env_prefix())).unwrap();
        assert_eq!(
            var.value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            format!("shop-pg-{s}")
        );
    }
    assert!(
        pg.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == "/docker-entrypoint-initdb.d")
    );
    assert!(pod.volumes.iter().flatten().any(|v| {
        v.config_map
            .as_ref()
            .is_some_and(|c| c.name == "shop-pg-init")
    }));
    let claim = &sts.volume_claim_templates.as_ref().unwrap()[0]
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        sts.persistent_volume_claim_retention_policy
            .as_ref()
            .unwrap()
            .when_deleted
            .as_deref(),
        Some("Delete")
    );
    let Some(Object::ConfigMap(init)) = d.find("ConfigMap", "shop-pg-init") else {
        panic!("no init script");
    };
    let script = init.data.as_ref().unwrap().values().next().unwrap();
    assert!(script.contains("for svc in auth user product order payment notification; do"));
    assert!(script.contains("CREATE DATABASE :\"role\" OWNER :\"role\";"));

    let user = container(deployment(&d, "shop-user"));
    assert!(
        env_var(user, "USER_DATABASE_URL")
            .unwrap()
            .value
            .as_deref()
            .unwrap()
            .contains("@shop-pg.store.svc:5432/gocommerce_user")
    );
    // Extra env is appended and keeps its value.
    let order = container(deployment(&d, "shop-order"));
    assert_eq!(
        env_var(order, "DATABASE_MAX_CONNECTIONS")
            .unwrap()
            .value
            .as_deref(),
        Some("20")
    );

    let db_policy = policy(&d, "shop-pg");
    assert_eq!(
        admitted(db_policy, 5432),
        Some(set(&[
            "auth",
            "user",
            "product",
            "order",
            "payment",
            "notification"
        ]))
    );
}

#[test]
fn replicas_above_one_get_a_disruption_budget() {
    let d = desired(SHARED);
    assert_eq!(
        names(&d, "PodDisruptionBudget"),
        set(&["shop-gateway", "shop-order"])
    );
    let Some(Object::PodDisruptionBudget(pdb)) = d.find("PodDisruptionBudget", "shop-order") else {
        panic!("no pdb");
    };
    let spec = pdb.spec.as_ref().unwrap();
    assert_eq!(
        spec.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    assert_eq!(
        spec.selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()[LABEL_COMPONENT],
        "order"
    );
    assert_eq!(
        deployment(&d, "shop-gateway")
            .spec
            .as_ref()
            .unwrap()
            .replicas,
        Some(3)
    );
    let gw = service(&d, "shop-gateway").spec.as_ref().unwrap();
    assert_eq!(gw.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(gw.ports.as_ref().unwrap()[0].node_port, None);
}

#[test]
fn external_mode_reads_urls_from_secrets_and_runs_no_datastore() {
    let d = desired(EXTERNAL);
    assert!(names(&d, "StatefulSet").is_empty());
    assert_eq!(
        d.generated
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>(),
        vec!["shop-jwt"]
    );
    let product = container(deployment(&d, "shop-product"));
    let url = env_var(product, "PRODUCT_DATABASE_URL")
        .unwrap()
        .value_from
        .as_ref()
        .unwrap();
    let key = url.secret_key_ref.as_ref().unwrap();
    assert_eq!(
        (key.name.as_str(), key.key.as_str()),
        ("shop-databases", "product")
    );
    let amqp = env_var(product, "AMQP_URL")
        .unwrap()
        .value_from
        .as_ref()
        .unwrap();
    assert_eq!(amqp.secret_key_ref.as_ref().unwrap().name, "shop-broker");
    assert_eq!(
        product.image.as_deref(),
        Some("registry.example.com/gocommerce:1.2.3")
    );
    assert_eq!(product.image_pull_policy.as_deref(), Some("Always"));

    let auth = container(deployment(&d, "shop-auth"));
    assert!(
        env_var(auth, "GOCOMMERCE_ADMIN_EMAIL").is_some()
            && env_var(auth, "GOCOMMERCE_ADMIN_PASSWORD").is_some()
    );
    let notification = container(deployment(&d, "shop-notification"));
    assert!(
        env_var(notification, "SMTP_URL").is_some()
            && env_var(notification, "SMS_WEBHOOK_URL").is_some()
    );
    assert!(env_var(notification, "PUSH_WEBHOOK_URL").is_none());

    let data = config_data(&d);
    assert_eq!(
        data["OTEL_EXPORTER_OTLP_ENDPOINT"],
        "http://otel-collector.observability:4317"
    );
    assert_eq!(data["JWT_ISSUER"], "https://shop.example.com");
    assert_eq!(data["SMTP_FROM"], "Shop <noreply@shop.example.com>");
    assert_eq!(data["RUST_LOG"], "debug");

    // Egress to the outside is limited to the ports the URLs name.
    let egress_ports = |name: &str| -> BTreeSet<i32> {
        policy(&d, name)
            .spec
            .as_ref()
            .unwrap()
            .egress
            .iter()
            .flatten()
            .filter(|r| r.to.is_none())
            .flat_map(|r| r.ports.iter().flatten())
            .filter_map(|p| match p.port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => Some(n),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        egress_ports("shop-product"),
        BTreeSet::from([6432, 5671, 4317])
    );
    assert_eq!(
        egress_ports("shop-notification"),
        BTreeSet::from([6432, 5671, 587, 443, 4317])
    );
    assert_eq!(egress_ports("shop-gateway"), BTreeSet::from([4317]));
}

#[test]
fn network_policies_deny_by_default_and_admit_only_callers() {
    let d = desired(MINIMAL);
    let deny = policy(&d, "shop-default-deny").spec.as_ref().unwrap();
    assert_eq!(
        deny.policy_types,
        Some(vec!["Ingress".to_owned(), "Egress".to_owned()])
    );
    assert!(deny.ingress.as_ref().unwrap().is_empty() && deny.egress.as_ref().unwrap().is_empty());
    assert!(
        !deny
            .pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()
            .contains_key(LABEL_COMPONENT)
    );

    let dns = policy(&d, "shop-allow-dns").spec.as_ref().unwrap();
    let dns_ports: Vec<(i32, String)> = dns.egress.as_ref().unwrap()[0]
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                match p.port {
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => n,
                    _ => 0,
                },
                p.protocol.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        dns_ports,
        vec![(53, "UDP".to_owned()), (53, "TCP".to_owned())]
    );

    assert_eq!(
        admitted(policy(&d, "shop-gateway"), 8080),
        Some(BTreeSet::new()),
        "open to every client"
    );
    assert_eq!(
        admitted(policy(&d, "shop-user"), 50052),
        Some(set(&["gateway", "auth", "order", "notification"]))
    );
    assert_eq!(
        admitted(policy(&d, "shop-product"), 50053),
        Some(set(&["gateway", "order"]))
    );
    assert_eq!(
        admitted(policy(&d, "shop-auth"), 50051),
        Some(set(&["gateway"]))
    );
    assert_eq!(
        admitted(policy(&d, "shop-auth"), 9090),
        Some(set(&["*"])),
        "metrics from any namespace"
    );
    assert_eq!(
        admitted(policy(&d, "shop-pg-payment"), 5432),
        Some(set(&["payment"]))
    );
    assert_eq!(
        admitted(policy(&d, "shop-rabbitmq"), 5672),
        Some(set(&[
            "auth",
            "user",
            "product",
            "order",
            "payment",
            "notification"
        ]))
    );
    assert_eq!(admitted(policy(&d, "shop-pg-payment"), 5672), None);

    // Egress of order: its callees, its database, the broker.
    let egress: BTreeSet<String> = policy(&d, "shop-order")
        .spec
        .as_ref()
        .unwrap()
        .egress
        .iter()
        .flatten()
        .flat_map(|r| r.to.iter().flatten())
        .filter_map(|p| {
            p.pod_selector
                .as_ref()?
                .match_labels
                .as_ref()?
                .get(LABEL_COMPONENT)
                .cloned()
        })
        .collect();
    assert_eq!(
        egress,
        set(&["product", "payment", "user", "postgres-order", "rabbitmq"])
    );
}

#[test]
fn network_policies_can_be_disabled() {
    let mut gc = resource(MINIMAL);
    gc.spec.network_policy.enabled = false;
    let d = desired_with(&gc, &Referenced::default());
    assert_eq!(d.of_kind("NetworkPolicy").count(), 0);
}

fn hashes(d: &Desired) -> BTreeMap<String, String> {
    d.of_kind("Deployment")
        .map(|o| match o {
            Object::Deployment(dep) => (o.name().to_owned(), hash(dep)),
            _ => unreachable!("filtered by kind"),
        })
        .collect()
}

#[test]
fn a_config_change_rolls_every_service() {
    let gc = resource(MINIMAL);
    let before = hashes(&desired_with(&gc, &Referenced::default()));
    let mut changed = gc.clone();
    changed.spec.telemetry.log_level = "debug".to_owned();
    let after = hashes(&desired_with(&changed, &Referenced::default()));
    for (name, h) in &before {
        assert_ne!(h, &after[name], "{name} must roll");
    }
}

#[test]
fn replicas_and_image_changes_do_not_touch_the_config_hash() {
    let gc = resource(MINIMAL);
    let before = desired_with(&gc, &Referenced::default());
    let mut changed = gc.clone();
    changed.spec.services.order.replicas = 4;
    changed.spec.image = "ghcr.io/gocommerce/gocommerce:0.2.0".to_owned();
    let after = desired_with(&changed, &Referenced::default());
    assert_eq!(hashes(&before), hashes(&after));
    // The image itself changes the template, which rolls the pods.
    assert_eq!(
        container(deployment(&after, "shop-order")).image.as_deref(),
        Some("ghcr.io/gocommerce/gocommerce:0.2.0")
    );
    assert_eq!(
        deployment(&after, "shop-order")
            .spec
            .as_ref()
            .unwrap()
            .replicas,
        Some(4)
    );
}

#[test]
fn a_changed_external_secret_rolls_only_its_consumers() {
    let gc = resource(EXTERNAL);
    let before = hashes(&desired_with(&gc, &external_secrets()));
    let mut referenced = external_secrets();
    referenced.secrets.insert(
        "shop-admin".to_owned(),
        Lookup::Found(BTreeMap::from([
            ("email".to_owned(), b"root@example.com".to_vec()),
            ("password".to_owned(), b"another".to_vec()),
        ])),
    );
    let after = hashes(&desired_with(&gc, &referenced));
    for (name, h) in &before {
        assert_eq!(h != &after[name], name == "shop-auth", "{name}");
    }
}

#[test]
fn managed_variables_cannot_be_overridden() {
    let mut gc = resource(MINIMAL);
    gc.spec.services.auth.env.push(EnvVar {
        name: "AUTH_DATABASE_URL".to_owned(),
        value: Some("postgres://elsewhere".to_owned()),
        ..EnvVar::default()
    });
    match validate(&gc, &Referenced::default()) {
        Err(Rejection::InvalidSpec(message)) => {
            assert!(message.contains("AUTH_DATABASE_URL"), "{message}")
        }
        other => panic!("expected an invalid spec, got {other:?}"),
    }
}

/// The seconds a container's startup probe allows before the pod is restarted.
fn startup_allowance(c: &Container) -> i32 {
    let probe = c.startup_probe.as_ref().unwrap();
    probe.period_seconds.unwrap() * probe.failure_threshold.unwrap()
}

fn literal(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

#[test]
fn every_service_gets_three_minutes_to_start_by_default() {
    let d = desired(MINIMAL);
    for s in Service::ALL {
        let c = container(deployment(&d, &format!("shop-{s}")));
        assert_eq!(startup_allowance(c), 180, "{s}");
    }
}

#[test]
fn a_longer_database_wait_in_env_lengthens_that_services_startup_probe() {
    let mut gc = resource(MINIMAL);
    let wait = |value: &str| literal("DATABASE_STARTUP_WAIT_SECONDS", value);
    // The last of two wins, as in a pod.
    gc.spec.services.order.env = vec![wait("30"), wait(" 600 ")];
    gc.spec.services.product.env = vec![wait("0")];
    // Empty is unset, for the operator as for the service.
    gc.spec.services.payment.env = vec![wait("")];
    // A reference cannot be read here: the default's budget stays.
    gc.spec.services.user.env = vec![EnvVar {
        name: "DATABASE_STARTUP_WAIT_SECONDS".to_owned(),
        value_from: Some(k8s_openapi::api::core::v1::EnvVarSource::default()),
        ..EnvVar::default()
    }];
    // The gateway has no database to wait for.
    gc.spec.gateway.workload.env = vec![wait("600")];

    let d = desired_with(&gc, &external_secrets());

    let allowance = |name: &str| startup_allowance(container(deployment(&d, name)));
    assert_eq!(allowance("shop-order"), 720, "the wait and two minutes");
    assert_eq!(
        allowance("shop-product"),
        180,
        "never shorter than the default"
    );
    assert_eq!(allowance("shop-user"), 180);
    assert_eq!(allowance("shop-gateway"), 180);
    assert_eq!(allowance("shop-payment"), 180);
}

#[test]
fn a_database_wait_that_is_not_a_number_of_seconds_is_refused() {
    let mut gc = resource(MINIMAL);
    gc.spec.services.payment.env = vec![literal("DATABASE_STARTUP_WAIT_SECONDS", "5m")];
    match validate(&gc, &Referenced::default()) {
        Err(Rejection::InvalidSpec(message)) => {
            assert!(message.contains("payment"), "{message}");
            assert!(
                message.contains("DATABASE_STARTUP_WAIT_SECONDS"),
                "{message}"
            );
            assert!(message.contains("\"5m\""), "{message}");
        }
        other => panic!("expected an invalid spec, got {other:?}"),
    }
}

/// A change that makes a resource invalid.
type Mutation = Box<dyn Fn(&mut GoCommerce)>;

#[test]
fn schema_rules_are_checked_again_without_an_api_server() {
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "name",
            Box::new(|gc| gc.metadata.name = Some("a-name-that-is-far-too-long-for-us".to_owned())),
        ),
        (
            "externalSecretName",
            Box::new(|gc| gc.spec.postgres.mode = crate::crd::PostgresMode::External),
        ),
        (
            "-pg",
            Box::new(|gc| gc.metadata.name = Some("shop-pg".to_owned())),
        ),
        (
            "outlive",
            Box::new(|gc| gc.spec.auth.refresh_token_ttl_seconds = 60),
        ),
        (
            "preStop",
            Box::new(|gc| gc.spec.shutdown.pre_stop_sleep_seconds = 30),
        ),
        (
            "nodePort",
            Box::new(|gc| {
                gc.spec.gateway.service_type = crate::crd::ServiceType::ClusterIP;
                gc.spec.gateway.node_port = Some(30001);
            }),
        ),
    ];
    for (needle, mutate) in cases {
        let mut gc = resource(MINIMAL);
        mutate(&mut gc);
        match validate(&gc, &Referenced::default()) {
            Err(Rejection::InvalidSpec(message)) => {
                assert!(message.contains(needle), "{needle}: {message}")
            }
            other => panic!("{needle}: expected an invalid spec, got {other:?}"),
        }
    }
}

#[test]
fn missing_or_wrong_referenced_secrets_are_unsatisfiable() {
    let gc = resource(EXTERNAL);
    let reason = |referenced: Referenced| match validate(&gc, &referenced) {
        Err(Rejection::Unsatisfiable { reason, message }) => (reason, message),
        other => panic!("expected unsatisfiable, got {other:?}"),
    };
    let mut missing = external_secrets();
    missing
        .secrets
        .insert("shop-broker".to_owned(), Lookup::Missing);
    assert_eq!(reason(missing).0, "SecretMissing");

    let mut no_key = external_secrets();
    no_key.secrets.insert(
        "shop-admin".to_owned(),
        Lookup::Found(BTreeMap::from([("email".to_owned(), b"a@b.c".to_vec())])),
    );
    let (why, message) = reason(no_key);
    assert_eq!(why, "SecretKeyMissing");
    assert!(message.contains("password"), "{message}");

    let mut wrong = external_secrets();
    wrong.secrets.insert(
        "shop-broker".to_owned(),
        Lookup::Found(BTreeMap::from([("url".to_owned(), b"http://mq".to_vec())])),
    );
    assert_eq!(reason(wrong).0, "SecretValueInvalid");
}

#[test]
fn generated_secrets_follow_the_modes() {
    let count = |yaml: &str| generated_secrets("shop", &resource(yaml).spec).len();
    assert_eq!(count(MINIMAL), 1 + 6 + 1);
    assert_eq!(count(SHARED), 1 + 1 + 6 + 1);
    assert_eq!(count(EXTERNAL), 1);
}

/// Every (kind, name) an instance may own in any mode, generated Secrets
/// included; `None` when validation refuses the name.
fn owned_names(name: &str) -> Option<BTreeSet<(String, String)>> {
    let mut owned = BTreeSet::new();
    for yaml in [MINIMAL, SHARED, EXTERNAL] {
        let mut gc = resource(yaml);
        gc.metadata.name = Some(name.to_owned());
        let Ok(v) = validate(&gc, &Referenced::default()) else {
            return None;
        };
        let d = build(&v);
        owned.extend(
            d.objects
                .iter()
                .map(|o| (o.kind().to_owned(), o.name().to_owned())),
        );
        owned.extend(
            d.generated
                .iter()
                .map(|g| ("Secret".to_owned(), g.name.clone())),
        );
    }
    Some(owned)
}

#[test]
fn no_two_accepted_instance_names_own_an_object_of_the_same_name() {
    // Arrange: names of the objects of `shop` are `shop-<a>-<b>…`; only an
    // instance named `shop-<a>` (or `shop-<a>-<b>`, …) can own one of them.
    let shop = owned_names("shop").expect("shop is a valid name");
    let mut others = BTreeSet::new();
    for (_, name) in &shop {
        let rest = name
            .strip_prefix("shop-")
            .expect("named after the instance");
        for (at, _) in rest.match_indices('-') {
            others.insert(format!("shop-{}", &rest[..at]));
        }
        others.insert(format!("shop-{rest}"));
    }

    // Act
    let refused: Vec<&String> = others.iter().filter(|o| owned_names(o).is_none()).collect();
    let clashes: Vec<(String, String)> = others
        .iter()
        .filter_map(|o| owned_names(o))
        .flat_map(|owned| shop.intersection(&owned).cloned().collect::<Vec<_>>())
        .collect();

    // Assert
    assert!(clashes.is_empty(), "{clashes:?}");
    assert_eq!(refused, vec!["shop-pg"]);
}
