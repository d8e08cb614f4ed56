//! `gocommerce-operator delete`: deletes one GoCommerce resource and waits
//! until it is gone. The chart runs it as a pre-delete hook while the
//! operator still runs: Helm would otherwise delete the operator along with
//! the resource, and nobody would remove the finalizer that honours
//! `postgres.deletionPolicy`, leaving the resource Terminating.

use std::time::Duration;

use kube::api::DeleteParams;
use kube::{Api, Client, ResourceExt};
use tracing::info;

use crate::crd::GoCommerce;

#[derive(Debug, thiserror::Error)]
pub enum UninstallError {
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    #[error(
        "gocommerce {namespace}/{name} still exists after {waited:?}: is the operator running? \
         (its finalizer frees the resource)"
    )]
    StillThere {
        namespace: String,
        name: String,
        waited: Duration,
    },
}

/// How often to look whether the resource is gone.
const POLL: Duration = Duration::from_secs(2);

/// Deletes `namespace/name` and waits up to `timeout` until it no longer
/// exists (another resource of the same name, created since, does not
/// count). A resource that does not exist is deleted already.
pub async fn delete_and_wait(
    client: Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), UninstallError> {
    let api: Api<GoCommerce> = Api::namespaced(client, namespace);
    let Some(uid) = delete(&api, name).await? else {
        info!(%namespace, %name, "gocommerce already deleted");
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match api.get_opt(name).await? {
            Some(gc) if gc.uid().as_deref() == Some(uid.as_str()) => {}
            _ => {
                info!(%namespace, %name, "gocommerce deleted");
                return Ok(());
            }
        }
        if tokio::time::Instant::now() + POLL > deadline {
            return Err(UninstallError::StillThere {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                waited: timeout,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Asks for the deletion; the uid of the resource being deleted, `None`
/// when there is none.
async fn delete(api: &Api<GoCommerce>, name: &str) -> Result<Option<String>, kube::Error> {
    match api.delete(name, &DeleteParams::default()).await {
        // Still there: its finalizer runs.
        Ok(either) => Ok(either.left().and_then(|gc| gc.uid())),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::Method;
    use serde_json::{Value, json};

    use super::*;
    use crate::testing::{client, status};

    const TIMEOUT: Duration = Duration::from_secs(60);

    fn shop(uid: &str) -> Value {
        json!({"apiVersion": "gocommerce.io/v1alpha1", "kind": "GoCommerce",
               "metadata": {"name": "shop", "namespace": "store", "uid": uid,
                            "deletionTimestamp": "2026-01-01T00:00:00Z",
                            "finalizers": ["gocommerce.io/cleanup"]},
               "spec": {}})
    }

    #[tokio::test(start_paused = true)]
    async fn deleting_waits_until_the_finalizer_has_let_the_resource_go() {
        // Arrange: the operator's cleanup takes three looks.
        let reads = Arc::new(AtomicUsize::new(0));
        let counted = reads.clone();
        let client = client(move |method, path, _| {
            assert!(
                path.ends_with("/namespaces/store/gocommerces/shop"),
                "{path}"
            );
            match *method {
                Method::DELETE => Some((200, shop("uid-1"))),
                _ if counted.fetch_add(1, Ordering::SeqCst) < 3 => Some((200, shop("uid-1"))),
                _ => Some(status(404, "NotFound")),
            }
        });
        let started = tokio::time::Instant::now();

        // Act
        let deleted = delete_and_wait(client, "store", "shop", TIMEOUT).await;

        // Assert
        assert!(deleted.is_ok(), "{deleted:?}");
        assert_eq!(reads.load(Ordering::SeqCst), 4);
        assert_eq!(started.elapsed(), POLL * 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_resource_that_does_not_exist_is_deleted_already() {
        // Arrange
        let client = client(|method, _, _| {
            assert_eq!(method, Method::DELETE, "nothing to wait for");
            Some(status(404, "NotFound"))
        });

        // Act
        let deleted = delete_and_wait(client, "store", "shop", TIMEOUT).await;

        // Assert
        assert!(deleted.is_ok(), "{deleted:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_resource_of_the_same_name_created_since_does_not_count() {
        // Arrange
        let client = client(|method, _, _| match *method {
            Method::DELETE => Some((200, shop("uid-1"))),
            _ => Some((200, shop("uid-2"))),
        });

        // Act
        let deleted = delete_and_wait(client, "store", "shop", TIMEOUT).await;

        // Assert
        assert!(deleted.is_ok(), "{deleted:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_resource_nobody_finalizes_is_reported_after_the_timeout() {
        // Arrange: no operator removes the finalizer.
        let client = client(|_, _, _| Some((200, shop("uid-1"))));
        let started = tokio::time::Instant::now();

        // Act
        let deleted = delete_and_wait(client, "store", "shop", TIMEOUT).await;

        // Assert
        assert!(
            matches!(deleted, Err(UninstallError::StillThere { .. })),
            "{deleted:?}"
        );
        assert!(started.elapsed() <= TIMEOUT, "{:?}", started.elapsed());
    }
}
