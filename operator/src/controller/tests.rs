//! The controller against kube's mocked client (tower-test): a small fake
//! API server keeps objects in memory, records every request and can be
//! told to fail some of them.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tower_test::mock;

use super::*;
use crate::crd::GoCommerce;
use crate::metrics::Metrics;
use crate::render::parse_resources;

const NAMESPACE: &str = "store";
const GC_COLLECTION: &str = "/apis/gocommerce.io/v1alpha1/namespaces/store/gocommerces";

#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

#[derive(Debug, Default)]
struct Fake {
    objects: BTreeMap<(String, String), Value>,
    requests: Vec<Recorded>,
    /// (method, path fragment, status code): matching requests fail.
    failures: Vec<(Method, String, u16)>,
    /// Whether workloads report every replica ready.
    ready: bool,
}

impl Fake {
    fn insert(&mut self, collection: &str, value: Value) {
        let name = value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.objects.insert((collection.to_owned(), name), value);
    }

    fn get(&self, collection: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(collection.to_owned(), name.to_owned()))
    }

    fn requests(&self, method: &Method, fragment: &str) -> Vec<Recorded> {
        self.requests
            .iter()
            .filter(|r| r.method == method && r.path.contains(fragment))
            .cloned()
            .collect()
    }

    fn applies(&self) -> Vec<Recorded> {
        self.requests
            .iter()
            .filter(|r| {
                r.method == Method::PATCH
                    && r.content_type.contains("apply-patch")
                    && !r.path.ends_with("/status")
            })
            .cloned()
            .collect()
    }

    fn events(&self) -> Vec<String> {
        self.requests(&Method::POST, "/events")
            .into_iter()
            .map(|r| r.body["reason"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "reason": reason, "message": message, "code": code}),
    )
}

/// `/api/v1/namespaces/ns/plural[/name[/sub]]` or the `/apis/group/version/…` form.
fn split(path: &str) -> (String, Option<String>, Option<String>) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let base = if parts.first() == Some(&"api") { 2 } else { 3 };
    // base → "namespaces", base+1 → ns, base+2 → plural
    let collection_len = base + 3;
    let collection = format!("/{}", parts[..collection_len.min(parts.len())].join("/"));
    (
        collection,
        parts.get(collection_len).map(|s| (*s).to_owned()),
        parts.get(collection_len + 1).map(|s| (*s).to_owned()),
    )
}

fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            let map = target.as_object_mut().expect("object");
            for (k, v) in fields {
                if v.is_null() {
                    map.remove(k);
                } else {
                    merge(map.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn workload_status(value: &Value, ready: bool) -> Value {
    let generation = value["metadata"]["generation"].clone();
    let replicas = value["spec"]["replicas"].as_i64().unwrap_or(1);
    if !ready {
        return json!({"observedGeneration": generation, "replicas": 0});
    }
    json!({"observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
           "updatedReplicas": replicas, "availableReplicas": replicas,
           "currentRevision": "r1", "updateRevision": "r1"})
}

fn answer(
    fake: &mut Fake,
    method: &Method,
    path: &str,
    content_type: &str,
    body: &Value,
) -> (u16, Value) {
    for (m, fragment, code) in &fake.failures {
        if m == method && path.contains(fragment.as_str()) {
            return status(*code, "Injected", &format!("injected failure for {path}"));
        }
    }
    let (collection, name, sub) = split(path);
    match (method.clone(), name) {
        (Method::GET, Some(name)) => match fake.get(&collection, &name) {
            Some(v) => (200, v.clone()),
            None => status(404, "NotFound", &format!("{name} not found")),
        },
        (Method::GET, None) => {
            let items: Vec<Value> = fake
                .objects
                .iter()
                .filter(|((c, _), _)| *c == collection)
                .map(|(_, v)| v.clone())
                .collect();
            (
                200,
                json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
            )
        }
        (Method::POST, None) => {
            let mut value = body.clone();
            let name = value["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if fake.get(&collection, &name).is_some() {
                return status(409, "AlreadyExists", &format!("{name} already exists"));
            }
            value["metadata"]["uid"] = json!(format!("uid-{name}"));
            value["metadata"]["resourceVersion"] = json!("1");
            fake.insert(&collection, value.clone());
            (201, value)
        }
        (Method::PATCH, Some(name)) => {
            let existing = fake.get(&collection, &name).cloned();
            let value = if content_type.contains("apply-patch") && sub.as_deref() == Some("status")
            {
                let Some(mut current) = existing else {
                    return status(404, "NotFound", &format!("{name} not found"));
                };
                current["status"] = body["status"].clone();
                current
            } else if content_type.contains("apply-patch") {
                let mut value = body.clone();
                let generation = existing.as_ref().map_or(1, |e| {
                    let g = e["metadata"]["generation"].as_i64().unwrap_or(1);
                    if e["spec"] == body["spec"] { g } else { g + 1 }
                });
                value["metadata"]["generation"] = json!(generation);
                value["metadata"]["uid"] = json!(format!("uid-{name}"));
                let kind = value["kind"].as_str().unwrap_or_default();
                if kind == "Deployment" || kind == "StatefulSet" {
                    value["status"] = workload_status(&value, fake.ready);
                }
                value
            } else if content_type.contains("merge-patch") {
                let Some(mut current) = existing else {
                    return status(404, "NotFound", &format!("{name} not found"));
                };
                merge(&mut current, body);
                current
            } else {
                // JSON patch: only the finalizer operations kube-runtime sends.
                let Some(mut current) = existing else {
                    return status(404, "NotFound", &format!("{name} not found"));
                };
                for op in body.as_array().into_iter().flatten() {
                    let op_path = op["path"].as_str().unwrap_or_default();
                    match op["op"].as_str() {
                        Some("add") if op_path == "/metadata/finalizers" => {
                            current["metadata"]["finalizers"] = op["value"].clone();
                        }
                        Some("add") if op_path == "/metadata/finalizers/-" => {
                            let list = current["metadata"]["finalizers"].as_array_mut();
                            list.expect("finalizers").push(op["value"].clone());
                        }
                        Some("remove") => {
                            let index: usize = op_path
                                .rsplit('/')
                                .next()
                                .and_then(|i| i.parse().ok())
                                .unwrap_or(0);
                            if let Some(list) = current["metadata"]["finalizers"].as_array_mut() {
                                list.remove(index);
                            }
                        }
                        _ => {}
                    }
                }
                current
            };
            fake.insert(&collection, value.clone());
            (200, value)
        }
        (Method::DELETE, Some(name)) => match fake.objects.remove(&(collection, name.clone())) {
            Some(v) => (200, v),
            None => status(404, "NotFound", &format!("{name} not found")),
        },
        (Method::DELETE, None) => {
            let removed: Vec<Value> = fake
                .objects
                .iter()
                .filter(|((c, _), _)| *c == collection)
                .map(|(_, v)| v.clone())
                .collect();
            fake.objects.retain(|(c, _), _| *c != collection);
            (
                200,
                json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": removed}),
            )
        }
        _ => status(405, "MethodNotAllowed", path),
    }
}

/// A client whose requests the fake answers.
fn client(fake: Arc<Mutex<Fake>>) -> Client {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        let mut handle = pin!(handle);
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let content_type = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let path = parts.uri.path().to_owned();
            let (code, response) = {
                let mut fake = fake.lock().expect("fake");
                fake.requests.push(Recorded {
                    method: parts.method.clone(),
                    path: path.clone(),
                    query: parts.uri.query().unwrap_or_default().to_owned(),
                    content_type: content_type.clone(),
                    body: body.clone(),
                });
                answer(&mut fake, &parts.method, &path, &content_type, &body)
            };
            let response = Response::builder()
                .status(StatusCode::from_u16(code).expect("status"))
                .body(Body::from(serde_json::to_vec(&response).expect("json")))
                .expect("response");
            send.send_response(response);
        }
    });
    Client::new(service, NAMESPACE)
}

fn context(fake: &Arc<Mutex<Fake>>) -> Arc<Context> {
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    Arc::new(Context::new(
        client(fake.clone()),
        metrics,
        Some("test".to_owned()),
        Settings::default(),
    ))
}

fn resource(yaml: &str, finalized: bool) -> GoCommerce {
    let mut gc = parse_resources("test", yaml)
        .expect("parses")
        .pop()
        .expect("one");
    gc.metadata.generation = Some(1);
    if finalized {
        gc.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    }
    gc
}

const MINIMAL: &str = include_str!("../../fixtures/minimal.yaml");
const EXTERNAL: &str = include_str!("../../fixtures/external.yaml");

/// A fake that holds `gc` and returns it with the recorded requests.
fn fake_with(gc: &GoCommerce) -> Arc<Mutex<Fake>> {
    let fake = Arc::new(Mutex::new(Fake::default()));
    fake.lock()
        .expect("fake")
        .insert(GC_COLLECTION, serde_json::to_value(gc).expect("json"));
    fake
}

fn stored_status(fake: &Arc<Mutex<Fake>>) -> Value {
    fake.lock()
        .expect("fake")
        .get(GC_COLLECTION, "shop")
        .expect("stored")["status"]
        .clone()
}

fn condition(status: &Value, type_: &str) -> (String, String) {
    let c = status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == type_)
        .expect("condition");
    (
        c["status"].as_str().unwrap().to_owned(),
        c["reason"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn the_finalizer_is_added_before_anything_else() {
    let gc = resource(MINIMAL, false);
    let fake = fake_with(&gc);
    let action = reconcile(Arc::new(gc), context(&fake))
        .await
        .expect("reconciles");
    assert_eq!(action, Action::await_change());
    let fake = fake.lock().expect("fake");
    assert_eq!(fake.requests.len(), 1, "{:?}", fake.requests);
    let patch = &fake.requests[0];
    assert_eq!(patch.method, Method::PATCH);
    assert!(patch.content_type.contains("json-patch"));
    assert_eq!(
        fake.get(GC_COLLECTION, "shop").unwrap()["metadata"]["finalizers"],
        json!([FINALIZER])
    );
}

#[tokio::test]
async fn a_new_resource_gets_secrets_every_object_and_a_status() {
    let gc = resource(MINIMAL, true);
    let fake = fake_with(&gc);
    let desired = crate::render::desired(&gc).expect("valid");
    let action = reconcile(Arc::new(gc), context(&fake))
        .await
        .expect("reconciles");
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(30)),
        "not ready yet: look again soon"
    );

    let f = fake.lock().expect("fake");
    let created: Vec<String> = f
        .requests(&Method::POST, "/secrets")
        .iter()
        .map(|r| r.body["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(created.len(), desired.generated.len());
    let jwt = f
        .get("/api/v1/namespaces/store/secrets", "shop-jwt")
        .expect("jwt secret");
    assert!(jwt["data"]["signing-key.pem"].is_string());
    assert_eq!(jwt["metadata"]["ownerReferences"][0]["name"], "shop");

    let applies = f.applies();
    assert_eq!(applies.len(), desired.objects.len());
    for apply in &applies {
        assert!(
            apply.query.contains("fieldManager=gocommerce-operator"),
            "{}",
            apply.query
        );
        assert!(apply.query.contains("force=true"), "{}", apply.query);
    }
    assert!(
        f.get("/apis/apps/v1/namespaces/store/deployments", "shop-gateway")
            .is_some()
    );
    assert!(
        f.get(
            "/apis/apps/v1/namespaces/store/statefulsets",
            "shop-pg-user"
        )
        .is_some()
    );

    let status_writes = f.requests(&Method::PATCH, "/gocommerces/shop/status");
    assert_eq!(status_writes.len(), 1);
    assert!(status_writes[0].content_type.contains("apply-patch"));
    assert!(
        status_writes[0]
            .query
            .contains("fieldManager=gocommerce-operator")
    );
    drop(f);

    let status = stored_status(&fake);
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(
        condition(&status, "Ready"),
        ("False".to_owned(), "ComponentsNotReady".to_owned())
    );
    assert_eq!(condition(&status, "Progressing").0, "True");
    assert_eq!(condition(&status, "Degraded").0, "False");
    assert_eq!(status["components"].as_array().unwrap().len(), 14);
    assert_eq!(status["gatewayNodePort"], 30080);
    assert_eq!(
        status["gatewayEndpoint"],
        "http://shop-gateway.store.svc:8080"
    );
    assert!(
        fake.lock()
            .expect("fake")
            .events()
            .contains(&"SecretsGenerated".to_owned())
    );
}

#[tokio::test]
async fn ready_workloads_make_the_resource_ready() {
    let gc = resource(MINIMAL, true);
    let fake = fake_with(&gc);
    fake.lock().expect("fake").ready = true;
    let action = reconcile(Arc::new(gc), context(&fake))
        .await
        .expect("reconciles");
    assert_eq!(action, Action::requeue(Settings::default().resync));
    let status = stored_status(&fake);
    assert_eq!(
        condition(&status, "Ready"),
        ("True".to_owned(), "AllComponentsReady".to_owned())
    );
    assert_eq!(condition(&status, "Progressing").0, "False");
    assert!(
        fake.lock()
            .expect("fake")
            .events()
            .contains(&"Ready".to_owned())
    );
}

#[tokio::test]
async fn an_update_keeps_secrets_applies_changes_and_prunes_what_is_gone() {
    let gc = resource(MINIMAL, true);
    let fake = fake_with(&gc);
    let ctx = context(&fake);
    // First reconcile with order at 3 replicas: a PDB exists.
    let mut scaled = gc.clone();
    scaled.spec.services.order.replicas = 3;
    fake.lock()
        .expect("fake")
        .insert(GC_COLLECTION, serde_json::to_value(&scaled).expect("json"));
    reconcile(Arc::new(scaled), ctx.clone())
        .await
        .expect("first reconcile");
    let pdbs = "/apis/policy/v1/namespaces/store/poddisruptionbudgets";
    let secrets_before: Vec<Value> = {
        let f = fake.lock().expect("fake");
        assert!(f.get(pdbs, "shop-order").is_some());
        f.objects
            .iter()
            .filter(|((c, _), _)| c.ends_with("/secrets"))
            .map(|(_, v)| v.clone())
            .collect()
    };

    // Back to one replica and a new image.
    let mut changed = gc.clone();
    changed.metadata.generation = Some(2);
    changed.spec.image = "ghcr.io/gocommerce/gocommerce:0.2.0".to_owned();
    fake.lock().expect("fake").requests.clear();
    fake.lock()
        .expect("fake")
        .insert(GC_COLLECTION, serde_json::to_value(&changed).expect("json"));
    reconcile(Arc::new(changed), ctx)
        .await
        .expect("second reconcile");

    let f = fake.lock().expect("fake");
    assert!(
        f.requests(&Method::POST, "/secrets").is_empty(),
        "secrets are never generated twice"
    );
    let secrets_after: Vec<Value> = f
        .objects
        .iter()
        .filter(|((c, _), _)| c.ends_with("/secrets"))
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(
        secrets_before, secrets_after,
        "existing secrets are never rewritten"
    );
    assert!(
        f.get(pdbs, "shop-order").is_none(),
        "the PDB of a single replica is pruned"
    );
    assert_eq!(
        f.requests(&Method::DELETE, "/poddisruptionbudgets/shop-order")
            .len(),
        1
    );
    let order = f
        .get("/apis/apps/v1/namespaces/store/deployments", "shop-order")
        .expect("deployment");
    assert_eq!(
        order["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/gocommerce/gocommerce:0.2.0"
    );
    assert_eq!(order["spec"]["replicas"], 1);
    assert!(f.events().contains(&"ComponentsRemoved".to_owned()));
    // Nothing the operator does not own is deleted: only the PDB went.
    assert_eq!(
        f.requests
            .iter()
            .filter(|r| r.method == Method::DELETE)
            .count(),
        1
    );
    drop(f);
    assert_eq!(stored_status(&fake)["observedGeneration"], 2);
}

#[tokio::test]
async fn objects_of_others_are_not_pruned() {
    let gc = resource(MINIMAL, true);
    let fake = fake_with(&gc);
    fake.lock().expect("fake").insert(
        "/api/v1/namespaces/store/configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "someone-elses", "namespace": "store",
                            "ownerReferences": [{"apiVersion": "v1", "kind": "Thing", "name": "x", "uid": "other"}]}}),
    );
    reconcile(Arc::new(gc), context(&fake))
        .await
        .expect("reconciles");
    let f = fake.lock().expect("fake");
    assert!(
        f.get("/api/v1/namespaces/store/configmaps", "someone-elses")
            .is_some()
    );
}

#[tokio::test]
async fn retained_secrets_are_adopted_again() {
    let gc = resource(MINIMAL, true);
    let fake = fake_with(&gc);
    fake.lock().expect("fake").insert(
        "/api/v1/namespaces/store/secrets",
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "shop-jwt", "namespace": "store",
                            "labels": {"app.kubernetes.io/instance": "shop", "app.kubernetes.io/managed-by": "gocommerce-operator"}},
               "data": {"signing-key.pem": "b2xk"}}),
    );
    reconcile(Arc::new(gc), context(&fake))
        .await
        .expect("reconciles");
    let f = fake.lock().expect("fake");
    let jwt = f
        .get("/api/v1/namespaces/store/secrets", "shop-jwt")
        .expect("kept");
    assert_eq!(
        jwt["data"]["signing-key.pem"], "b2xk",
        "the old key is kept"
    );
    assert_eq!(jwt["metadata"]["ownerReferences"][0]["name"], "shop");
}

#[tokio::test]
async fn an_invalid_spec_waits_for_a_change_and_applies_nothing() {
    let mut gc = resource(MINIMAL, true);
    gc.spec
        .services
        .user
        .env
        .push(k8s_openapi::api::core::v1::EnvVar {
            name: "AMQP_URL".to_owned(),
            value: Some("amqp://elsewhere".to_owned()),
            ..Default::default()
        });
    let fake = fake_with(&gc);
    let action = reconcile(Arc::new(gc), context(&fake))
        .await
        .expect("reconciles");
    assert_eq!(action, Action::await_change());
    assert!(fake.lock().expect("fake").applies().is_empty());
    let status = stored_status(&fake);
    assert_eq!(
        condition(&status, "Degraded"),
        ("True".to_owned(), "InvalidSpec".to_owned())
    );
    assert!(
        fake.lock()
            .expect("fake")
            .events()
            .contains(&"InvalidSpec".to_owned())
    );
}

#[tokio::test]
async fn a_missing_external_secret_degrades_without_touching_anything() {
    let gc = resource(EXTERNAL, true);
    let fake = fake_with(&gc);
    let action = reconcile(Arc::new(gc), context(&fake))
        .await
        .expect("reconciles");
    assert_eq!(
        action,
        Action::requeue(Settings::default().retry_unsatisfiable)
    );
    let f = fake.lock().expect("fake");
    assert!(f.applies().is_empty());
    assert!(f.requests.iter().all(|r| r.method != Method::DELETE
        && !(r.method == Method::POST && r.path.ends_with("/secrets"))));
    drop(f);
    let status = stored_status(&fake);
    assert_eq!(
        condition(&status, "Degraded"),
        ("True".to_owned(), "SecretMissing".to_owned())
    );
}

#[tokio::test]
async fn a_spec_the_api_server_refuses_is_degraded_and_nothing_is_pruned() {
    let gc = resource(MINIMAL, true);
    let fake = fake_with(&gc);
    fake.lock().expect("fake").failures.push((
        Method::PATCH,
        "/services/shop-gateway".to_owned(),
        422,
    ));
    let action = reconcile(Arc::new(gc), context(&fake))
        .await
        .expect("reconciles");
    assert_eq!(
        action,
        Action::requeue(Settings::default().retry_unsatisfiable)
    );
    let f = fake.lock().expect("fake");
    assert!(
        f.requests.iter().all(|r| r.method != Method::DELETE),
        "nothing is deleted"
    );
    assert!(
        f.requests(&Method::PATCH, "/deployments/").is_empty(),
        "applying stopped at the refusal"
    );
    drop(f);
    let status = stored_status(&fake);
    assert_eq!(
        condition(&status, "Degraded"),
        ("True".to_owned(), "ApplyRejected".to_owned())
    );
}

#[tokio::test]
async fn errors_back_off_exponentially_and_reset_on_success() {
    let gc = resource(MINIMAL, true);
    let fake = fake_with(&gc);
    let ctx = context(&fake);
    fake.lock()
        .expect("fake")
        .failures
        .push((Method::PATCH, "/deployments/".to_owned(), 500));
    let gc = Arc::new(gc);
    let mut delays = Vec::new();
    for _ in 0..3 {
        let error = reconcile(gc.clone(), ctx.clone()).await.expect_err("fails");
        assert_eq!(error.kind(), "kube");
        delays.push(error_policy(gc.clone(), &error, ctx.clone()));
    }
    assert_eq!(
        delays,
        vec![
            Action::requeue(Duration::from_secs(5)),
            Action::requeue(Duration::from_secs(10)),
            Action::requeue(Duration::from_secs(20)),
        ]
    );
    assert_eq!(ctx.metrics.reconciles("error"), 3);
    assert!(
        fake.lock()
            .expect("fake")
            .events()
            .contains(&"ReconcileFailed".to_owned())
    );

    fake.lock().expect("fake").failures.clear();
    reconcile(gc.clone(), ctx.clone()).await.expect("recovers");
    assert_eq!(ctx.metrics.reconciles("success"), 1);
    fake.lock()
        .expect("fake")
        .failures
        .push((Method::PATCH, "/deployments/".to_owned(), 500));
    let error = reconcile(gc.clone(), ctx.clone())
        .await
        .expect_err("fails again");
    assert_eq!(
        error_policy(gc, &error, ctx),
        Action::requeue(Duration::from_secs(5))
    );
}

#[test]
fn backoff_is_capped() {
    let settings = Settings::default();
    assert_eq!(backoff(&settings, 1), Duration::from_secs(5));
    assert_eq!(backoff(&settings, 7), Duration::from_secs(300));
    assert_eq!(backoff(&settings, 1000), Duration::from_secs(300));
}

fn deleting(mut gc: GoCommerce) -> GoCommerce {
    gc.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    gc
}

#[tokio::test]
async fn deleting_with_delete_policy_removes_volumes_then_the_finalizer() {
    let mut gc = resource(MINIMAL, true);
    gc.spec.postgres.deletion_policy = crate::crd::DeletionPolicy::Delete;
    let gc = deleting(gc);
    let fake = fake_with(&gc);
    fake.lock().expect("fake").insert(
        "/api/v1/namespaces/store/persistentvolumeclaims",
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data-shop-pg-auth-0"}}),
    );
    let action = reconcile(Arc::new(gc), context(&fake))
        .await
        .expect("cleans up");
    assert_eq!(action, Action::await_change());
    let f = fake.lock().expect("fake");
    let deletes = f.requests(&Method::DELETE, "/persistentvolumeclaims");
    assert_eq!(deletes.len(), 1);
    assert!(
        deletes[0]
            .query
            .contains("labelSelector=app.kubernetes.io%2Finstance%3Dshop"),
        "{}",
        deletes[0].query
    );
    assert!(
        f.get(
            "/api/v1/namespaces/store/persistentvolumeclaims",
            "data-shop-pg-auth-0"
        )
        .is_none()
    );
    assert_eq!(
        f.get(GC_COLLECTION, "shop").unwrap()["metadata"]["finalizers"],
        json!([])
    );
    assert!(f.events().contains(&"VolumesDeleted".to_owned()));
    // Deletion is finalizer work only: nothing is applied.
    assert!(f.applies().is_empty());
}

#[tokio::test]
async fn deleting_with_retain_policy_keeps_volumes_and_frees_the_secrets() {
    let gc = deleting(resource(MINIMAL, true));
    let fake = fake_with(&gc);
    let owner = json!([{"apiVersion": "gocommerce.io/v1alpha1", "kind": "GoCommerce", "name": "shop", "uid": gc.metadata.uid}]);
    for name in ["shop-jwt", "shop-pg-auth"] {
        fake.lock().expect("fake").insert(
            "/api/v1/namespaces/store/secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "ownerReferences": owner}}),
        );
    }
    reconcile(Arc::new(gc), context(&fake))
        .await
        .expect("cleans up");
    let f = fake.lock().expect("fake");
    assert!(
        f.requests(&Method::DELETE, "/persistentvolumeclaims")
            .is_empty()
    );
    for name in ["shop-jwt", "shop-pg-auth"] {
        let secret = f
            .get("/api/v1/namespaces/store/secrets", name)
            .expect("kept");
        assert!(
            secret["metadata"].get("ownerReferences").is_none(),
            "{name} must survive garbage collection"
        );
    }
    assert_eq!(
        f.get(GC_COLLECTION, "shop").unwrap()["metadata"]["finalizers"],
        json!([])
    );
    assert!(f.events().contains(&"VolumesRetained".to_owned()));
}

#[tokio::test]
async fn a_failed_cleanup_keeps_the_finalizer() {
    let mut gc = resource(MINIMAL, true);
    gc.spec.postgres.deletion_policy = crate::crd::DeletionPolicy::Delete;
    let gc = deleting(gc);
    let fake = fake_with(&gc);
    fake.lock().expect("fake").failures.push((
        Method::DELETE,
        "/persistentvolumeclaims".to_owned(),
        500,
    ));
    reconcile(Arc::new(gc), context(&fake))
        .await
        .expect_err("cleanup fails");
    let f = fake.lock().expect("fake");
    assert_eq!(
        f.get(GC_COLLECTION, "shop").unwrap()["metadata"]["finalizers"],
        json!([FINALIZER])
    );
}
