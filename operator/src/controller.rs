//! The reconcile pipeline: dereference the Secrets a resource names →
//! validate → build the desired objects → create missing generated Secrets →
//! server-side apply everything under one field manager → prune what is no
//! longer desired → write the status (server-side apply too). A finalizer
//! honours `postgres.deletionPolicy` when the resource is deleted.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, ObjectReference, PersistentVolumeClaim, Secret, Service as KubeService,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::build::{self, Desired, Object};
use crate::conditions::{self, DEGRADED, Observation, READY};
use crate::crd::{ComponentStatus, DeletionPolicy, GoCommerce};
use crate::meta::{
    Component, FINALIZER, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGER, Owner,
    instance_label_query,
};
use crate::metrics::Metrics;
use crate::secrets::{GeneratedSecret, SecretError};
use crate::status;
use crate::topology::Service;
use crate::validate::{self, Lookup, Referenced, Rejection};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    #[error("generated secret: {0}")]
    Secret(#[from] SecretError),
    #[error("the resource has no namespace")]
    NoNamespace,
}

impl Error {
    /// A short label for the errors metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.kind(),
                _ => "finalizer",
            },
            Error::Secret(_) => "secret",
            Error::NoNamespace => "no_namespace",
        }
    }
}

/// Settings of the reconcile loop.
#[derive(Debug, Clone)]
pub struct Settings {
    /// When to look again at a resource that is fine.
    pub resync: Duration,
    /// When to look again at a resource that cannot be honoured.
    pub retry_unsatisfiable: Duration,
    /// First delay after an error; doubled per consecutive error.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resync: Duration::from_secs(300),
            retry_unsatisfiable: Duration::from_secs(60),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// Shared state of every reconcile.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub settings: Settings,
    /// Consecutive failures per resource, for the error backoff.
    failures: Arc<Mutex<HashMap<String, u32>>>,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        instance: Option<String>,
        settings: Settings,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_owned(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            settings,
            failures: Arc::default(),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // A panic elsewhere cannot leave the map inconsistent: use it anyway.
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn key(gc: &GoCommerce) -> String {
    format!("{}/{}", gc.namespace().unwrap_or_default(), gc.name_any())
}

/// Delay before retrying after `failures` consecutive errors: exponential,
/// capped.
pub fn backoff(settings: &Settings, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    settings
        .backoff_base
        .saturating_mul(1u32 << exponent)
        .min(settings.backoff_max)
}

/// The controller's error policy: log, count and back off.
pub fn error_policy(gc: Arc<GoCommerce>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = {
        let mut map = ctx.failures();
        let entry = map.entry(key(&gc)).or_insert(0);
        *entry += 1;
        *entry
    };
    let delay = backoff(&ctx.settings, failures);
    warn!(resource = %key(&gc), %error, failures, delay_seconds = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// Reconciles one resource.
#[tracing::instrument(skip_all, fields(resource = %key(&gc), generation = gc.metadata.generation))]
pub async fn reconcile(gc: Arc<GoCommerce>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = gc.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<GoCommerce> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, gc.clone(), |event| async {
        match event {
            finalizer::Event::Apply(gc) => apply(&gc, &ctx).await,
            finalizer::Event::Cleanup(gc) => cleanup(&gc, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .observe(started.elapsed(), result.as_ref().err().map(Error::kind));
    match &result {
        Ok(_) => {
            ctx.failures().remove(&key(&gc));
        }
        Err(error) => {
            publish(
                &ctx,
                &gc,
                EventType::Warning,
                "ReconcileFailed",
                "Reconcile",
                error.to_string(),
            )
            .await;
        }
    }
    result
}

/// Publishes an event; failing to do so must not fail the reconcile.
async fn publish(
    ctx: &Context,
    gc: &GoCommerce,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let reference: ObjectReference = gc.object_ref(&());
    let mut note = note;
    // The API refuses notes over 1 kB.
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &reference).await {
        warn!(resource = %key(gc), %error, reason, "cannot publish event");
    }
}

/// Reads every Secret the spec refers to.
async fn dereference(
    client: &Client,
    namespace: &str,
    gc: &GoCommerce,
) -> Result<Referenced, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut referenced = Referenced::default();
    for name in validate::referenced_secret_names(&gc.spec) {
        let lookup = match api.get_opt(&name).await? {
            None => Lookup::Missing,
            Some(secret) => Lookup::Found(
                secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect(),
            ),
        };
        referenced.secrets.insert(name, lookup);
    }
    Ok(referenced)
}

async fn apply(gc: &GoCommerce, ctx: &Context) -> Result<Action, Error> {
    let namespace = gc.namespace().ok_or(Error::NoNamespace)?;
    let referenced = dereference(&ctx.client, &namespace, gc).await?;
    let validated = match validate::validate(gc, &referenced) {
        Ok(v) => v,
        Err(Rejection::InvalidSpec(message)) => {
            info!(resource = %key(gc), %message, "invalid spec, waiting for a change");
            report(ctx, gc, &Observation::InvalidSpec { message }, None).await?;
            return Ok(Action::await_change());
        }
        Err(Rejection::Unsatisfiable { reason, message }) => {
            return unsatisfiable(ctx, gc, reason, message).await;
        }
    };
    let desired = build::build(&validated);
    let owner = &validated.owner;

    let created = ensure_secrets(&ctx.client, owner, &desired.generated).await?;
    if !created.is_empty() {
        publish(
            ctx,
            gc,
            EventType::Normal,
            "SecretsGenerated",
            "CreateSecret",
            format!("generated {}", created.join(", ")),
        )
        .await;
    }

    let mut applied = Applied::default();
    for object in &desired.objects {
        match applied.apply(&ctx.client, &namespace, object).await {
            Ok(()) => {}
            Err(kube::Error::Api(status)) if status.code == 422 => {
                // The API server refuses what the schema let through (a taken
                // node port, a bad quantity): nothing more is applied and
                // nothing is deleted until the spec or the cluster changes.
                let message = format!("{} {}: {}", object.kind(), object.name(), status.message);
                return unsatisfiable(ctx, gc, "ApplyRejected".to_owned(), message).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
    let removed = prune(&ctx.client, owner, &desired).await?;
    if !removed.is_empty() {
        publish(
            ctx,
            gc,
            EventType::Normal,
            "ComponentsRemoved",
            "Prune",
            format!("deleted {}", removed.join(", ")),
        )
        .await;
    }

    let components = component_statuses(&owner.name, &desired, &applied);
    let all_ready = components.iter().all(conditions::component_ready);
    let gateway = applied.gateway.as_ref().map(status::gateway_endpoint);
    report(ctx, gc, &Observation::Applied { components }, gateway).await?;
    // Owned workloads trigger reconciles as they progress; the resync only
    // repairs drift nobody announced.
    Ok(Action::requeue(if all_ready {
        ctx.settings.resync
    } else {
        ctx.settings.resync.min(Duration::from_secs(30))
    }))
}

async fn unsatisfiable(
    ctx: &Context,
    gc: &GoCommerce,
    reason: String,
    message: String,
) -> Result<Action, Error> {
    warn!(resource = %key(gc), %reason, %message, "spec cannot be honoured");
    report(
        ctx,
        gc,
        &Observation::Unsatisfiable { reason, message },
        None,
    )
    .await?;
    Ok(Action::requeue(ctx.settings.retry_unsatisfiable))
}

/// Writes the status and announces transitions of `Ready` and `Degraded`.
async fn report(
    ctx: &Context,
    gc: &GoCommerce,
    observation: &Observation,
    gateway: Option<(Option<String>, Option<i32>)>,
) -> Result<(), Error> {
    let namespace = gc.namespace().ok_or(Error::NoNamespace)?;
    let next = status::next(gc, observation, gateway, Time(Timestamp::now()));
    let before = gc.status.clone().unwrap_or_default().conditions;
    let api: Api<GoCommerce> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": GoCommerce::api_version(&()),
        "kind": GoCommerce::kind(&()),
        "status": next,
    });
    api.patch_status(
        &gc.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;

    let became = |type_: &str, value: &str| {
        conditions::status_of(&next.conditions, type_) == Some(value)
            && conditions::status_of(&before, type_) != Some(value)
    };
    if became(READY, "True") {
        publish(
            ctx,
            gc,
            EventType::Normal,
            "Ready",
            "Reconcile",
            "every component is ready".to_owned(),
        )
        .await;
    }
    if became(DEGRADED, "True")
        && let Some(c) = next.conditions.iter().find(|c| c.type_ == DEGRADED)
    {
        publish(
            ctx,
            gc,
            EventType::Warning,
            &c.reason,
            "Reconcile",
            c.message.clone(),
        )
        .await;
    }
    Ok(())
}

/// Creates the generated Secrets that do not exist yet, and takes back those
/// a deletion with `Retain` left behind. Existing values are never touched.
async fn ensure_secrets(
    client: &Client,
    owner: &Owner,
    generated: &[GeneratedSecret],
) -> Result<Vec<String>, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &owner.namespace);
    let mut created = Vec::new();
    for wanted in generated {
        match api.get_opt(&wanted.name).await? {
            None => {
                let secret = wanted.materialize(owner, &mut rand::rngs::OsRng)?;
                match api.create(&PostParams::default(), &secret).await {
                    Ok(_) => created.push(wanted.name.clone()),
                    // Another replica or an earlier attempt won the race.
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Some(existing) => {
                let ours = existing.labels().get(LABEL_MANAGED_BY).map(String::as_str)
                    == Some(MANAGER)
                    && existing.labels().get(LABEL_INSTANCE) == Some(&owner.name);
                let owned = existing
                    .owner_references()
                    .iter()
                    .any(|r| r.uid == owner.reference.uid);
                if ours && !owned {
                    let patch = serde_json::json!({
                        "metadata": {"ownerReferences": [owner.reference]}
                    });
                    api.patch(&wanted.name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                }
            }
        }
    }
    Ok(created)
}

async fn ssa<K>(client: &Client, namespace: &str, object: &K) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
}

/// The workloads and the gateway Service as the API server returned them
/// from the apply: their status is current.
#[derive(Debug, Default)]
struct Applied {
    deployments: HashMap<String, Deployment>,
    stateful_sets: HashMap<String, StatefulSet>,
    gateway: Option<KubeService>,
}

impl Applied {
    async fn apply(
        &mut self,
        client: &Client,
        namespace: &str,
        object: &Object,
    ) -> Result<(), kube::Error> {
        match object {
            Object::ConfigMap(o) => drop(ssa(client, namespace, o).await?),
            Object::Service(o) => {
                let returned = ssa(client, namespace, o).await?;
                if o.labels().get(LABEL_COMPONENT).map(String::as_str)
                    == Some(Service::Gateway.name())
                {
                    self.gateway = Some(returned);
                }
            }
            Object::StatefulSet(o) => {
                let returned = ssa(client, namespace, o).await?;
                self.stateful_sets.insert(o.name_any(), returned);
            }
            Object::Deployment(o) => {
                let returned = ssa(client, namespace, o).await?;
                self.deployments.insert(o.name_any(), returned);
            }
            Object::PodDisruptionBudget(o) => drop(ssa(client, namespace, o).await?),
            Object::NetworkPolicy(o) => drop(ssa(client, namespace, o).await?),
        }
        Ok(())
    }
}

fn component_statuses(
    instance: &str,
    desired: &Desired,
    applied: &Applied,
) -> Vec<ComponentStatus> {
    desired
        .components
        .iter()
        .map(|component| {
            let name = component.object_name(instance);
            let label = component.label();
            match component {
                Component::Service(_) => applied.deployments.get(&name).map_or_else(
                    || missing(label.clone(), "Deployment"),
                    |d| status::deployment_status(label.clone(), d),
                ),
                _ => applied.stateful_sets.get(&name).map_or_else(
                    || missing(label.clone(), "StatefulSet"),
                    |s| status::stateful_set_status(label.clone(), s),
                ),
            }
        })
        .collect()
}

fn missing(name: String, kind: &str) -> ComponentStatus {
    ComponentStatus {
        name,
        kind: kind.to_owned(),
        desired_replicas: 1,
        ready_replicas: 0,
        updated: false,
    }
}

async fn prune_kind<K>(
    client: &Client,
    owner: &Owner,
    keep: &BTreeSet<&str>,
) -> Result<Vec<String>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &owner.namespace);
    let list = api
        .list(&ListParams::default().labels(&instance_label_query(&owner.name)))
        .await?;
    let mut removed = Vec::new();
    for item in list.items {
        let name = item.meta().name.clone().unwrap_or_default();
        let owned = item
            .meta()
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == owner.reference.uid);
        if owned && !keep.contains(name.as_str()) {
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => removed.push(format!("{} {name}", K::kind(&()))),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(removed)
}

/// Deletes the instance's objects that are no longer desired (a PDB after a
/// scale-down, a policy after disabling them, …). Generated Secrets and
/// volumes are never pruned.
async fn prune(client: &Client, owner: &Owner, desired: &Desired) -> Result<Vec<String>, Error> {
    let names = |kind: &'static str| -> BTreeSet<&str> {
        desired.of_kind(kind).map(Object::name).collect()
    };
    let mut removed = Vec::new();
    removed.extend(prune_kind::<NetworkPolicy>(client, owner, &names("NetworkPolicy")).await?);
    removed.extend(prune_kind::<ConfigMap>(client, owner, &names("ConfigMap")).await?);
    removed.extend(
        prune_kind::<PodDisruptionBudget>(client, owner, &names("PodDisruptionBudget")).await?,
    );
    removed.extend(prune_kind::<Deployment>(client, owner, &names("Deployment")).await?);
    removed.extend(prune_kind::<StatefulSet>(client, owner, &names("StatefulSet")).await?);
    removed.extend(prune_kind::<KubeService>(client, owner, &names("Service")).await?);
    Ok(removed)
}

/// Runs when the resource is deleted: with `Delete` the volumes go; with
/// `Retain` the volumes stay and so do the generated Secrets that open them
/// (their owner reference is dropped so garbage collection spares them).
async fn cleanup(gc: &GoCommerce, ctx: &Context) -> Result<Action, Error> {
    let namespace = gc.namespace().ok_or(Error::NoNamespace)?;
    let instance = gc.name_any();
    match gc.spec.postgres.deletion_policy {
        DeletionPolicy::Delete => {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
            api.delete_collection(
                &DeleteParams::background(),
                &ListParams::default().labels(&instance_label_query(&instance)),
            )
            .await?;
            info!(resource = %key(gc), "volumes deleted");
            publish(
                ctx,
                gc,
                EventType::Normal,
                "VolumesDeleted",
                "Cleanup",
                "deletionPolicy Delete: volumes deleted".to_owned(),
            )
            .await;
        }
        DeletionPolicy::Retain => {
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
            let patch = serde_json::json!({"metadata": {"ownerReferences": null}});
            let mut kept = Vec::new();
            for secret in build::generated_secrets(&instance, &gc.spec) {
                match api
                    .patch(&secret.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => kept.push(secret.name),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            info!(resource = %key(gc), secrets = ?kept, "volumes and credentials retained");
            publish(
                ctx,
                gc,
                EventType::Normal,
                "VolumesRetained",
                "Cleanup",
                format!(
                    "deletionPolicy Retain: volumes and secrets {} kept",
                    kept.join(", ")
                ),
            )
            .await;
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests;
