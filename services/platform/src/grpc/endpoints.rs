//! The addresses a channel's host name resolves to, one HTTP/2 connection
//! to each, and the round robin that spreads calls over them.
//!
//! A single connection to a Kubernetes Service's virtual IP pins every call
//! of a client to the one pod kube-proxy chose when it connected: scaling a
//! service out would then relieve nothing. So a channel resolves the name
//! itself (the operator names headless Services, whose DNS answers list the
//! ready pods), keeps a connection per address, and resolves again every
//! `refresh`, or at once when an address fails to connect. An address that
//! failed is tried after the others until the next resolution, so a pod
//! that went away costs one call's connect attempt, not one call in N.
//! A host that is an IP address is one endpoint and never resolved again.
//!
//! A connection counts as made once the peer has answered a first PING, so
//! a listener that never speaks HTTP/2 fails the connect timeout instead of
//! holding calls until their deadline.
//!
//! After a connect to an address, or a first lookup, has failed, the calls
//! of the next `backoff` fail at once instead of trying again (gRPC's
//! initial connection backoff is the same second): a service that is down,
//! or scaled to zero, then costs each caller a quick UNAVAILABLE, not a
//! connect attempt or a DNS query, and a warning, per call.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use tonic::Status;

/// How long connecting to one address may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The least time between two resolutions, however many connects fail.
const MIN_REFRESH_GAP: Duration = Duration::from_secs(1);
/// hyper's windows: large enough that a response of a few MiB does not wait
/// for window updates.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// How a connection checks that its server is still there.
#[derive(Debug, Clone, Copy)]
pub struct KeepAlive {
    pub interval: Duration,
    /// How long a ping may go unanswered before the connection is given up.
    pub timeout: Duration,
}

impl Default for KeepAlive {
    /// A ping every 30 s, given up after hyper's default of 20 s.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(20),
        }
    }
}

/// The future a [`Resolve`] returns.
pub type Resolving = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// Turns a service's host name and port into the addresses of its
/// instances.
pub trait Resolve: Send + Sync + 'static {
    fn resolve(&self, host: &str, port: u16) -> Resolving;
}

/// The system's resolver (`getaddrinfo`: `/etc/hosts`, then DNS).
#[derive(Debug, Clone, Copy, Default)]
pub struct Dns;

impl Resolve for Dns {
    fn resolve(&self, host: &str, port: u16) -> Resolving {
        let host = host.to_owned();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    }
}

/// How a channel finds and keeps its connections.
#[derive(Clone)]
pub struct ChannelOptions {
    pub keep_alive: KeepAlive,
    /// How often the host name is resolved again, to follow instances that
    /// come and go.
    pub refresh: Duration,
    /// How long after a failed connect to an address (or a failed first
    /// lookup) calls fail at once rather than try it again.
    pub backoff: Duration,
    pub resolver: Arc<dyn Resolve>,
}

impl Default for ChannelOptions {
    /// Resolved every 10 s, twice the TTL CoreDNS gives a Service's
    /// records; a failure held for 1 s.
    fn default() -> Self {
        Self {
            keep_alive: KeepAlive::default(),
            refresh: Duration::from_secs(10),
            backoff: Duration::from_secs(1),
            resolver: Arc::new(Dns),
        }
    }
}

impl std::fmt::Debug for ChannelOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelOptions")
            .field("keep_alive", &self.keep_alive)
            .field("refresh", &self.refresh)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// When an attempt of one kind (a connect, a first lookup) last failed. A
/// call notes it before it waits for another call's attempt; if it changed
/// meanwhile, the call shares that failure instead of trying again in turn,
/// each waiting out a timeout the last one already met. A call that comes
/// within the backoff of the last failure shares it too.
#[derive(Default)]
struct Failures(Mutex<Option<Instant>>);

impl Failures {
    fn last(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether one failed after `last`.
    fn since(&self, last: Option<Instant>) -> bool {
        self.last() != last
    }

    /// Records one; before the lock is released, for the calls waiting on it.
    fn record(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }
}

/// Whether `last` (a failure, if any) is less than `backoff` ago.
fn within(last: Option<Instant>, backoff: Duration) -> bool {
    last.is_some_and(|last| last.elapsed() < backoff)
}

/// The endpoints of one host, shared by a channel's clones.
pub(super) struct Endpoints {
    /// The host as written in the URL, for messages.
    name: String,
    /// The host to resolve (an IPv6 address without its brackets) and the
    /// port to connect to.
    host: String,
    port: u16,
    /// The host is an IP address: one endpoint, never resolved.
    fixed: bool,
    options: ChannelOptions,
    list: Mutex<Arc<[Arc<Endpoint>]>>,
    /// The round robin's position.
    next: AtomicUsize,
    /// Held while resolving, so that the calls waiting for addresses share
    /// one lookup.
    resolving: tokio::sync::Mutex<()>,
    /// First lookups that failed or found nothing.
    failed_lookups: Failures,
    /// Wakes the refresh task before its time.
    refresh_now: Arc<Notify>,
}

impl Endpoints {
    pub(super) fn new(name: &str, host: &str, port: u16, options: ChannelOptions) -> Self {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip = host.parse::<IpAddr>().ok();
        let list: Arc<[Arc<Endpoint>]> = match ip {
            Some(ip) => Arc::new([Arc::new(Endpoint::new(SocketAddr::new(ip, port)))]),
            None => Arc::new([]),
        };
        crate::metrics::client_endpoints(name, list.len());
        Self {
            name: name.to_owned(),
            host: host.to_owned(),
            port,
            fixed: ip.is_some(),
            options,
            list: Mutex::new(list),
            next: AtomicUsize::new(0),
            resolving: tokio::sync::Mutex::new(()),
            failed_lookups: Failures::default(),
            refresh_now: Arc::new(Notify::new()),
        }
    }

    /// A sender that may open a stream now, on the next address in turn
    /// that has or makes a usable connection. Nothing has been sent when this
    /// fails, so every address is tried: those that failed lately last.
    pub(super) async fn ready_sender(self: &Arc<Self>) -> Result<SendRequest<Bytes>, Status> {
        let mut list = self.current();
        if list.is_empty() {
            // Boxed, as every rare path on the way to a call is: a future
            // holds room for all its awaits, and every call moves it.
            list = Box::pin(self.first_list()).await?;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut failed_lately = Vec::new();
        let mut last_error = None;
        for turn in 0..list.len() {
            let endpoint = &list[(start + turn) % list.len()];
            if endpoint.down.load(Ordering::Relaxed) {
                failed_lately.push(endpoint);
                continue;
            }
            match self.sender_from(endpoint).await {
                Ok(sender) => return Ok(sender),
                Err(status) => last_error = Some(status),
            }
        }
        for endpoint in failed_lately {
            match self.sender_from(endpoint).await {
                Ok(sender) => return Ok(sender),
                Err(status) => last_error = Some(status),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            Status::unavailable(format!("{} resolves to no address", self.name))
        }))
    }

    /// A sender from `endpoint`, or why not, the endpoint then marked down.
    async fn sender_from(&self, endpoint: &Arc<Endpoint>) -> Result<SendRequest<Bytes>, Status> {
        let sender = endpoint.ready_sender(&self.name, &self.options).await;
        if sender.is_err() {
            endpoint.down.store(true, Ordering::Relaxed);
            // Only a name can learn of other addresses.
            if !self.fixed {
                self.refresh_now.notify_one();
            }
        }
        sender
    }

    fn current(&self) -> Arc<[Arc<Endpoint>]> {
        self.list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The addresses, resolved now unless a call that waited here before
    /// this one has done it; the first resolution that finds any starts the
    /// task that keeps them fresh.
    async fn first_list(self: &Arc<Self>) -> Result<Arc<[Arc<Endpoint>]>, Status> {
        let resolved_just_now =
            || Status::unavailable(format!("{} could not be resolved just now", self.name));
        let seen = self.failed_lookups.last();
        if within(seen, self.options.backoff) {
            return Err(resolved_just_now());
        }
        let _resolving = self.resolving.lock().await;
        let list = self.current();
        if !list.is_empty() {
            return Ok(list);
        }
        // The calls that waited for a lookup that found nothing (a service
        // none of whose pods is ready yet) share its answer rather than each
        // asking again in turn.
        if self.failed_lookups.since(seen) {
            return Err(resolved_just_now());
        }
        let addresses = self
            .resolve()
            .await
            .and_then(|addresses| {
                if addresses.is_empty() {
                    Err(Status::unavailable(format!(
                        "{} resolves to no address",
                        self.name
                    )))
                } else {
                    Ok(addresses)
                }
            })
            .inspect_err(|_| self.failed_lookups.record())?;
        self.replace(addresses);
        tokio::spawn(refresh(
            Arc::downgrade(self),
            self.refresh_now.clone(),
            self.options.refresh,
        ));
        Ok(self.current())
    }

    // A warning, not an error: the caller's failure is what gets reported.
    #[tracing::instrument(skip_all, fields(host = %self.name), err(level = tracing::Level::WARN))]
    async fn resolve(&self) -> Result<Vec<SocketAddr>, Status> {
        let mut addresses = self
            .options
            .resolver
            .resolve(&self.host, self.port)
            .await
            .map_err(|error| {
                Status::unavailable(format!("cannot resolve {}: {error}", self.name))
            })?;
        addresses.sort_unstable();
        addresses.dedup();
        Ok(addresses)
    }

    /// Makes `addresses` the list, keeping the endpoints (and connections)
    /// of those it already had. Every address gets another chance: one that
    /// failed and is still listed may have come back.
    fn replace(&self, addresses: Vec<SocketAddr>) {
        let mut list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        let next: Arc<[Arc<Endpoint>]> = addresses
            .into_iter()
            .map(
                |address| match list.iter().find(|endpoint| endpoint.address == address) {
                    Some(kept) => {
                        kept.down.store(false, Ordering::Relaxed);
                        kept.clone()
                    }
                    None => Arc::new(Endpoint::new(address)),
                },
            )
            .collect();
        if next.len() != list.len()
            || next
                .iter()
                .zip(list.iter())
                .any(|(a, b)| a.address != b.address)
        {
            tracing::debug!(
                host = %self.name,
                addresses = ?next.iter().map(|endpoint| endpoint.address).collect::<Vec<_>>(),
                "grpc addresses changed"
            );
        }
        crate::metrics::client_endpoints(&self.name, next.len());
        *list = next;
    }
}

/// Resolves the channel's name every `every`, or sooner when woken, for
/// as long as the channel exists. A failed or empty answer keeps the
/// addresses known: a DNS hiccup must not take a service's clients down.
async fn refresh(endpoints: Weak<Endpoints>, wake: Arc<Notify>, every: Duration) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = wake.notified() => {}
        }
        let Some(endpoints) = endpoints.upgrade() else {
            return;
        };
        match endpoints.resolve().await {
            Ok(addresses) if !addresses.is_empty() => endpoints.replace(addresses),
            Ok(_) => {
                tracing::warn!(host = %endpoints.name, "resolves to no address, keeping the last ones")
            }
            // `resolve` has logged it.
            Err(_) => {}
        }
        drop(endpoints);
        tokio::time::sleep(MIN_REFRESH_GAP).await;
    }
}

/// One address and its connection.
struct Endpoint {
    address: SocketAddr,
    current: Mutex<Current>,
    /// Held while connecting, so that the calls waiting for a connection
    /// share one attempt.
    connecting: tokio::sync::Mutex<()>,
    /// Whether connecting failed since the last resolution.
    down: AtomicBool,
    failed_connects: Failures,
}

#[derive(Default)]
struct Current {
    /// The open connection, if any; its task clears it when it ends.
    connection: Option<(u64, SendRequest<Bytes>)>,
    next_id: u64,
}

impl Endpoint {
    fn new(address: SocketAddr) -> Self {
        Self {
            address,
            current: Mutex::new(Current::default()),
            connecting: tokio::sync::Mutex::new(()),
            down: AtomicBool::new(false),
            failed_connects: Failures::default(),
        }
    }

    /// A sender that may open a stream now: the current connection's, or a
    /// new connection's when there is none or it is going away.
    async fn ready_sender(
        self: &Arc<Self>,
        name: &str,
        options: &ChannelOptions,
    ) -> Result<SendRequest<Bytes>, Status> {
        if let Some((id, sender)) = self.connection() {
            match sender.ready().await {
                Ok(sender) => return Ok(sender),
                // A GOAWAY or a broken connection: nothing was sent, so the
                // call can go on a new connection.
                Err(error) => {
                    tracing::debug!(host = name, address = %self.address, %error, "grpc connection unusable, reconnecting");
                    self.forget(id);
                }
            }
        }
        Box::pin(self.reconnect(name, options)).await
    }

    /// A new connection's sender, or another call's that connected while
    /// this one waited.
    async fn reconnect(
        self: &Arc<Self>,
        name: &str,
        options: &ChannelOptions,
    ) -> Result<SendRequest<Bytes>, Status> {
        let failed_just_now = || {
            Status::unavailable(format!(
                "connecting to {name} ({}) failed just now",
                self.address
            ))
        };
        let seen = self.failed_connects.last();
        if within(seen, options.backoff) {
            return Err(failed_just_now());
        }
        let _connecting = self.connecting.lock().await;
        // Another call may have connected while this one waited.
        if let Some((_, sender)) = self.connection() {
            return sender
                .ready()
                .await
                .map_err(|error| connection_failed(name, self.address, &error));
        }
        if self.failed_connects.since(seen) {
            return Err(failed_just_now());
        }
        let connected =
            tokio::time::timeout(CONNECT_TIMEOUT, self.connect(name, options.keep_alive))
                .await
                .unwrap_or_else(|_| {
                    Err(Status::unavailable(format!(
                        "connecting to {name} ({}) took over {CONNECT_TIMEOUT:?}",
                        self.address
                    )))
                });
        crate::metrics::client_connect(name, connected.is_ok());
        let sender = connected.inspect_err(|_| self.failed_connects.record())?;
        self.down.store(false, Ordering::Relaxed);
        sender
            .ready()
            .await
            .map_err(|error| connection_failed(name, self.address, &error))
    }

    fn connection(&self) -> Option<(u64, SendRequest<Bytes>)> {
        self.lock().connection.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops connection `id` unless it was already replaced.
    fn forget(&self, id: u64) {
        let mut current = self.lock();
        if current
            .connection
            .as_ref()
            .is_some_and(|(current_id, _)| *current_id == id)
        {
            current.connection = None;
        }
    }

    // A warning, not an error: the caller's failure is what gets reported,
    // and a service that is down fails every call that tries it.
    #[tracing::instrument(
        skip_all,
        fields(host = name, address = %self.address),
        err(level = tracing::Level::WARN)
    )]
    async fn connect(
        self: &Arc<Self>,
        name: &str,
        keep_alive: KeepAlive,
    ) -> Result<SendRequest<Bytes>, Status> {
        let unavailable = |what: &str, error: &dyn std::fmt::Display| {
            Status::unavailable(format!("{what} {name} ({}): {error}", self.address))
        };
        let socket = TcpStream::connect(self.address)
            .await
            .map_err(|error| unavailable("cannot connect to", &error))?;
        // HTTP/2 writes a frame's pieces separately, and Nagle would hold
        // them for the peer's delayed ACK (40 ms).
        socket
            .set_nodelay(true)
            .map_err(|error| unavailable("cannot configure the socket to", &error))?;
        let (sender, mut connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(socket)
            .await
            .map_err(|error| unavailable("no HTTP/2 handshake with", &error))?;
        let mut ping_pong = connection
            .ping_pong()
            .ok_or_else(|| Status::internal("the h2 connection's pings were taken"))?;
        let id = {
            let mut current = self.lock();
            current.next_id += 1;
            current.next_id
        };
        let (answered, first_pong) = oneshot::channel();
        let endpoint = Arc::downgrade(self);
        let host = name.to_owned();
        let address = self.address;
        tokio::spawn(async move {
            let ended = tokio::select! {
                result = &mut connection => result.map_err(|error| error.to_string()),
                reason = async {
                    // h2's handshake only writes the preface: a first ping
                    // answered is what shows the peer speaks HTTP/2.
                    if let Err(error) = ping_pong.ping(h2::Ping::opaque()).await {
                        return format!("the first ping failed: {error}");
                    }
                    let _ = answered.send(());
                    keep_alive_pings(ping_pong, keep_alive).await
                } => Err(reason),
            };
            match ended {
                Ok(()) => tracing::debug!(%host, %address, "grpc connection closed"),
                Err(error) => tracing::debug!(%host, %address, %error, "grpc connection ended"),
            }
            if let Some(endpoint) = Weak::upgrade(&endpoint) {
                endpoint.forget(id);
            }
        });
        first_pong
            .await
            .map_err(|_| unavailable("no HTTP/2 answer from", &"the connection ended"))?;
        self.lock().connection = Some((id, sender.clone()));
        Ok(sender)
    }
}

fn connection_failed(name: &str, address: SocketAddr, error: &h2::Error) -> Status {
    super::channel::status_from_h2(
        error,
        format!("the connection to {name} ({address}) failed: {error}"),
    )
}

/// Pings the peer every interval, idle or not; returns why the connection
/// should be given up. Without it a peer that vanished (a node lost, a
/// half-open TCP connection) would keep every call waiting for its deadline
/// for as long as the kernel keeps the socket.
async fn keep_alive_pings(mut ping_pong: h2::PingPong, settings: KeepAlive) -> String {
    loop {
        tokio::time::sleep(settings.interval).await;
        match tokio::time::timeout(settings.timeout, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(error)) => return format!("keep-alive ping failed: {error}"),
            Err(_) => return format!("keep-alive ping unanswered for {:?}", settings.timeout),
        }
    }
}
