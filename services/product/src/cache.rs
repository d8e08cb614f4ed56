//! An in-process cache of product views for `GetProduct`, the hottest read of
//! a shop: a product page is viewed far more often than it changes.
//!
//! Every write to a product announces it with `NOTIFY product_changed` in its
//! transaction; each replica listens (see `listen`) and forgets what changed
//! when the write commits, so replicas do not serve each other's stale views.
//! A replica also forgets its own writes at once, without waiting for the
//! round trip. While the listening connection is down nothing is served from
//! memory (a notification may have been missed). The TTL
//! (`PRODUCT_CACHE_TTL_MS`, 30 s by default, 0 turns the cache off) is the
//! safety net and bounds memory held by products nobody views any more. Stock
//! is never decided from here: reservations always lock the database row.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gocommerce_platform::Shutdown;
use gocommerce_platform::expiring::ExpiringMap;
use gocommerce_proto::product::v1 as pb;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use uuid::Uuid;

/// The channel product writes notify; the payload is a product id, or `*`
/// for "anything may have changed" (a bulk import).
pub const CHANNEL: &str = "product_changed";
pub const EVERYTHING: &str = "*";

#[derive(Debug)]
struct Inner {
    entries: ExpiringMap<Uuid, pb::Product, Instant>,
    /// Bumped by every invalidation. A read that began before one must not
    /// store what it read: it may be the value the invalidation replaced.
    generation: u64,
}

/// Product views by id, each kept for the TTL.
#[derive(Debug)]
pub struct ProductCache {
    ttl: Duration,
    capacity: usize,
    /// True while this replica hears other replicas' notifications.
    listening: AtomicBool,
    inner: Mutex<Inner>,
}

/// Taken before reading the database; `store` ignores a fill whose ticket
/// an invalidation has outdated.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl ProductCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            listening: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                entries: ExpiringMap::new(capacity),
                generation: 0,
            }),
        }
    }

    /// Configured on and currently hearing every replica's writes.
    pub fn enabled(&self) -> bool {
        self.configured() && self.listening.load(Ordering::Acquire)
    }

    fn configured(&self) -> bool {
        !self.ttl.is_zero() && self.capacity > 0
    }

    /// Whether notifications are heard. Either way everything cached is
    /// forgotten and reads in flight are outdated: when listening stops, a
    /// change may go unheard; when it starts again, a read that began in the
    /// gap may hold a value changed in the gap.
    fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
        self.clear();
    }

    /// Applies one notification's payload.
    fn apply(&self, payload: &str) {
        match Uuid::parse_str(payload) {
            Ok(id) => self.invalidate([id]),
            // `*` or anything unexpected: forgetting everything is always safe.
            Err(_) => self.clear(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map stays consistent through any panic of a holder (every
        // critical section is a single map operation), so poison is ignored.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached view, if it has not expired.
    pub fn get(&self, id: Uuid) -> Option<pb::Product> {
        if !self.enabled() {
            return None;
        }
        self.lock().entries.get(&id, Instant::now()).cloned()
    }

    pub fn ticket(&self) -> Ticket {
        Ticket(self.lock().generation)
    }

    /// Keeps a view read from the database after `ticket` was taken, unless
    /// something was invalidated meanwhile or the cache is full of live entries.
    pub fn store(&self, ticket: Ticket, id: Uuid, product: &pb::Product) {
        if !self.enabled() {
            return;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.generation == ticket.0 {
            inner
                .entries
                .insert(id, product.clone(), now + self.ttl, now);
        }
    }

    /// Forgets these products; called after a write to them committed.
    pub fn invalidate(&self, ids: impl IntoIterator<Item = Uuid>) {
        let mut inner = self.lock();
        inner.generation += 1;
        for id in ids {
            inner.entries.remove(&id);
        }
    }

    /// Forgets every product (after a bulk import).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.clear();
    }
}

/// The connection on which this replica hears every replica's product
/// changes (`LISTEN product_changed`), feeding the cache.
#[derive(Debug)]
pub struct ChangeListener {
    cache: Arc<ProductCache>,
    pool: PgPool,
    listener: Option<PgListener>,
}

impl ChangeListener {
    /// Subscribes before returning, so views read once the service is built
    /// are cached and kept fresh. Nothing to do when the cache is off.
    #[tracing::instrument(skip_all, err)]
    pub async fn connect(cache: Arc<ProductCache>, pool: PgPool) -> Result<Self, sqlx::Error> {
        let listener = if cache.configured() {
            let listener = subscribe(&pool).await?;
            cache.set_listening(true);
            Some(listener)
        } else {
            None
        };
        Ok(Self {
            cache,
            pool,
            listener,
        })
    }

    /// Applies notifications until shutdown, reconnecting after a lost
    /// connection; the cache serves nothing while it cannot listen.
    pub async fn run(mut self, shutdown: Shutdown) {
        if !self.cache.configured() {
            return;
        }
        loop {
            let Some(active) = self.listener.as_mut() else {
                match subscribe(&self.pool).await {
                    Ok(fresh) => {
                        self.listener = Some(fresh);
                        self.cache.set_listening(true);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "failed to listen for product changes, retrying");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            () = shutdown.wait() => break,
                        }
                    }
                }
                continue;
            };
            let next = tokio::select! {
                next = active.try_recv() => next,
                () = shutdown.wait() => break,
            };
            match next {
                Ok(Some(notification)) => self.cache.apply(notification.payload()),
                // The connection was lost (`Ok(None)`) or failed: stop serving
                // from memory until a fresh subscription is in place (whatever
                // changed in the gap went unheard, so the cache starts empty).
                lost => {
                    let error = lost.err().map(|e| e.to_string()).unwrap_or_default();
                    tracing::warn!(%error, "lost the product change listener, reconnecting");
                    self.cache.set_listening(false);
                    self.listener = None;
                }
            }
        }
        self.cache.set_listening(false);
    }
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listening(ttl: Duration, capacity: usize) -> ProductCache {
        let cache = ProductCache::new(ttl, capacity);
        cache.set_listening(true);
        cache
    }

    fn product(name: &str) -> pb::Product {
        pb::Product {
            name: name.to_owned(),
            ..pb::Product::default()
        }
    }

    #[test]
    fn a_stored_view_is_served_until_it_is_invalidated() {
        let cache = listening(Duration::from_secs(60), 10);
        let id = Uuid::new_v4();
        cache.store(cache.ticket(), id, &product("lamp"));
        assert_eq!(cache.get(id).map(|p| p.name).as_deref(), Some("lamp"));

        cache.invalidate([id]);

        assert_eq!(cache.get(id), None);
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_stored() {
        let cache = listening(Duration::from_secs(60), 10);
        let id = Uuid::new_v4();
        let ticket = cache.ticket();
        // An update commits and invalidates while the read is in flight.
        cache.invalidate([id]);

        cache.store(ticket, id, &product("old name"));

        assert_eq!(cache.get(id), None);
    }

    #[test]
    fn an_entry_expires_after_the_ttl() {
        let cache = listening(Duration::from_millis(20), 10);
        let id = Uuid::new_v4();
        cache.store(cache.ticket(), id, &product("lamp"));

        std::thread::sleep(Duration::from_millis(30));

        assert_eq!(cache.get(id), None);
    }

    #[test]
    fn a_zero_ttl_turns_the_cache_off() {
        let cache = listening(Duration::ZERO, 10);
        let id = Uuid::new_v4();
        cache.store(cache.ticket(), id, &product("lamp"));
        assert_eq!(cache.get(id), None);
    }

    #[test]
    fn a_full_cache_makes_room_only_from_expired_entries() {
        let cache = listening(Duration::from_millis(20), 2);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        cache.store(cache.ticket(), a, &product("a"));
        cache.store(cache.ticket(), b, &product("b"));

        cache.store(cache.ticket(), c, &product("c"));
        assert_eq!(cache.get(c), None, "no live entry is evicted");

        std::thread::sleep(Duration::from_millis(30));
        cache.store(cache.ticket(), c, &product("c"));
        assert_eq!(cache.get(c).map(|p| p.name).as_deref(), Some("c"));
    }

    #[test]
    fn clearing_forgets_everything_and_outdates_reads_in_flight() {
        let cache = listening(Duration::from_secs(60), 10);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        cache.store(cache.ticket(), a, &product("a"));
        let ticket = cache.ticket();

        cache.clear();
        cache.store(ticket, b, &product("b"));

        assert_eq!(cache.get(a), None);
        assert_eq!(cache.get(b), None);
    }

    #[test]
    fn nothing_is_served_while_changes_cannot_be_heard() {
        let cache = listening(Duration::from_secs(60), 10);
        let id = Uuid::new_v4();
        cache.store(cache.ticket(), id, &product("lamp"));

        cache.set_listening(false);
        assert_eq!(cache.get(id), None);
        cache.store(cache.ticket(), id, &product("lamp"));
        cache.set_listening(true);

        assert_eq!(
            cache.get(id),
            None,
            "what was cached before the gap is gone"
        );
    }

    #[test]
    fn a_notification_forgets_its_product_or_everything() {
        let cache = listening(Duration::from_secs(60), 10);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        cache.store(cache.ticket(), a, &product("a"));
        cache.store(cache.ticket(), b, &product("b"));

        cache.apply(&a.to_string());
        assert_eq!(cache.get(a), None);
        assert!(cache.get(b).is_some());

        cache.apply(EVERYTHING);
        assert_eq!(cache.get(b), None);
    }
}
