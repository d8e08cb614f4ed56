//! Live order status. Every status change notifies a PostgreSQL channel in
//! the transaction that makes it, so a watcher on any replica hears about
//! changes made on any other. One listener per process fans the
//! notifications out to the open `WatchOrder` streams.

use std::time::Duration;

use gocommerce_platform::Shutdown;
use gocommerce_platform::db::Db;
use gocommerce_proto::order::v1 as pb;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use crate::convert;
use crate::db::{self, STATUS_CHANNEL};
use crate::domain::Status;

/// A fallback poll, in case a notification was missed while reconnecting.
const POLL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Watchers {
    sender: broadcast::Sender<Uuid>,
}

impl Watchers {
    /// Starts the process's listener.
    pub fn spawn(pool: PgPool, shutdown: Shutdown) -> Self {
        let (sender, _) = broadcast::channel(1024);
        let forward = sender.clone();
        tokio::spawn(async move {
            while !shutdown.is_triggered() {
                let listened = async {
                    let mut listener = PgListener::connect_with(&pool).await?;
                    listener.listen(STATUS_CHANNEL).await?;
                    loop {
                        let notification = tokio::select! {
                            notification = listener.recv() => notification?,
                            () = shutdown.wait() => return Ok::<(), sqlx::Error>(()),
                        };
                        if let Ok(id) = Uuid::parse_str(notification.payload()) {
                            // No receivers is fine: nobody is watching.
                            let _ = forward.send(id);
                        }
                    }
                }
                .await;
                if let Err(error) = listened {
                    tracing::warn!(%error, "order status listener failed, reconnecting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
        Self { sender }
    }

    /// Streams the order's current status, then each change, until a final
    /// status, the client going away, or shutdown.
    pub fn watch(
        &self,
        database: Db,
        order_id: Uuid,
        shutdown: Shutdown,
    ) -> mpsc::Receiver<Result<pb::WatchOrderResponse, tonic::Status>> {
        // Subscribe before reading, so no change between the two is missed.
        let mut changes = self.sender.subscribe();
        let (out, receiver) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut last_id = 0;
            let mut first = true;
            loop {
                let entries = match database.acquire().await {
                    Ok(mut conn) => {
                        let entries = db::history(&mut conn, order_id, last_id).await;
                        if entries.is_ok() {
                            conn.keep();
                        }
                        entries
                    }
                    Err(error) => Err(error.into()),
                };
                let entries = match entries {
                    Ok(entries) => entries,
                    Err(error) => {
                        let _ = out.send(Err(tonic::Status::from(error))).await;
                        return;
                    }
                };
                // The first message is the current status alone; then every change.
                let to_send: Vec<_> = if first {
                    entries.last().cloned().into_iter().collect()
                } else {
                    entries.clone()
                };
                first = false;
                if let Some(last) = entries.last() {
                    last_id = last.id;
                }
                for entry in to_send {
                    let status = Status::parse(&entry.to_status).unwrap_or(Status::Pending);
                    let message = pb::WatchOrderResponse {
                        order_id: order_id.to_string(),
                        status: status.to_proto() as i32,
                        change: Some(convert::history_to_proto(&entry)),
                        is_final: status.is_final(),
                    };
                    if out.send(Ok(message)).await.is_err() {
                        tracing::debug!(order_id = %order_id, "watcher went away");
                        return;
                    }
                    if status.is_final() {
                        return;
                    }
                }
                loop {
                    tokio::select! {
                        changed = changes.recv() => match changed {
                            Ok(id) if id == order_id => break,
                            Ok(_) => continue,
                            Err(broadcast::error::RecvError::Lagged(_)) => break,
                            Err(broadcast::error::RecvError::Closed) => return,
                        },
                        () = tokio::time::sleep(POLL) => break,
                        () = out.closed() => {
                            tracing::debug!(order_id = %order_id, "watcher went away");
                            return;
                        }
                        () = shutdown.wait() => return,
                    }
                }
            }
        });
        receiver
    }
}
