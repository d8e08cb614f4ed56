//! A gRPC client channel that opens each call's stream on a shared h2
//! connection from the caller's own task.
//!
//! tonic's `Channel` hands every call to a buffer's worker task, which hands
//! it to hyper's HTTP/2 client task over a second queue, which spawns a third
//! task to wait for the response and send it back: three tasks and as many
//! handovers (two queues and a oneshot) for a call whose request is one
//! small frame. Here the caller writes its headers and message into the h2
//! connection's send buffer and waits for the response itself; only the
//! connection's task, which reads and writes the socket, is shared.
//!
//! What tonic's channel did and this keeps: connecting lazily, and again
//! once the connection has ended or is going away (a call that finds it so
//! goes on the new one), a connect timeout, TCP_NODELAY, keep-alive pings
//! (idle or not), the `grpc-timeout` deadline enforced on this side too, and the
//! origin and user agent on every request. Added: a connection counts as
//! made once the peer has answered a first PING, so a listener that never
//! speaks HTTP/2 fails the connect timeout instead of holding calls until
//! their deadline; and a call the server did not process (a stream it
//! refused, or one past the last stream its GOAWAY let through) is sent once
//! more, as gRPC's transparent retry does, so that a service stopping for a
//! rolling update fails none of the calls that meet its GOAWAY.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use h2::client::SendRequest;
use h2::{Reason, RecvStream, SendStream};
use http::header::{HeaderValue, USER_AGENT};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http_body::{Body as _, Frame};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tonic::Status;
use tonic::body::Body;

use super::GrpcError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// hyper's windows: large enough that a response of a few MiB does not wait
/// for window updates.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const USER_AGENT_VALUE: &str = concat!("gocommerce/", env!("CARGO_PKG_VERSION"));

/// A lazily connecting gRPC channel to one service; clones share the
/// connection.
#[derive(Clone)]
pub struct H2Channel {
    shared: Arc<Shared>,
}

struct Shared {
    scheme: Scheme,
    authority: Authority,
    /// `host:port` for the TCP connect.
    address: String,
    keep_alive: KeepAlive,
    user_agent: HeaderValue,
    current: Mutex<Current>,
    /// Held while connecting, so that the calls waiting for a connection
    /// share one attempt.
    connecting: tokio::sync::Mutex<()>,
}

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

#[derive(Default)]
struct Current {
    /// The open connection, if any; its task clears it when it ends.
    connection: Option<(u64, SendRequest<Bytes>)>,
    next_id: u64,
}

impl std::fmt::Debug for H2Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Channel")
            .field("authority", &self.shared.authority)
            .finish_non_exhaustive()
    }
}

impl H2Channel {
    /// A channel to `url` (`http://host:port`); nothing connects until the
    /// first call.
    pub fn new(url: &str) -> Result<Self, GrpcError> {
        Self::with_keep_alive(url, KeepAlive::default())
    }

    /// A channel whose connections ping the server every
    /// `keep_alive.interval` and are given up when a ping goes unanswered
    /// for `keep_alive.timeout`.
    pub fn with_keep_alive(url: &str, keep_alive: KeepAlive) -> Result<Self, GrpcError> {
        let authority = service_authority(url).map_err(|reason| GrpcError::Url {
            url: url.to_owned(),
            reason,
        })?;
        let address = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        Ok(Self {
            shared: Arc::new(Shared {
                scheme: Scheme::HTTP,
                authority,
                address,
                keep_alive,
                user_agent: HeaderValue::from_static(USER_AGENT_VALUE),
                current: Mutex::new(Current::default()),
                connecting: tokio::sync::Mutex::new(()),
            }),
        })
    }

    async fn call(
        self,
        request: http::Request<Body>,
    ) -> Result<http::Response<ResponseBody>, Status> {
        let (mut parts, body) = request.into_parts();
        parts.uri = self.origin(parts.uri)?;
        if !parts.headers.contains_key(USER_AGENT) {
            parts
                .headers
                .insert(USER_AGENT, self.shared.user_agent.clone());
        }
        let body = match read_ahead(body)? {
            Outgoing::Whole(data) => data,
            streaming @ Outgoing::Streaming { .. } => {
                return self
                    .attempt(http::Request::from_parts(parts, ()), streaming)
                    .await
                    .map_err(Failure::into_status);
            }
        };
        // h2 takes the head by value, so a copy is kept for a second attempt.
        let again = (
            parts.method.clone(),
            parts.uri.clone(),
            parts.version,
            parts.headers.clone(),
        );
        let first = self
            .attempt(
                http::Request::from_parts(parts, ()),
                Outgoing::Whole(body.clone()),
            )
            .await;
        match first {
            // gRPC's transparent retry: the server did not process the call
            // (it was going away, or refused the stream), so sending it once
            // more, where `ready_sender` finds or opens a usable connection,
            // cannot run it twice. A service restarting in a rolling update
            // answers the calls that meet its GOAWAY this way.
            Err(Failure::Unprocessed(status)) => {
                tracing::debug!(
                    authority = %self.shared.authority,
                    message = status.message(),
                    "grpc call not processed, sending it again"
                );
                let (method, uri, version, headers) = again;
                let mut head = http::Request::new(());
                *head.method_mut() = method;
                *head.uri_mut() = uri;
                *head.version_mut() = version;
                *head.headers_mut() = headers;
                self.attempt(head, Outgoing::Whole(body))
                    .await
                    .map_err(Failure::into_status)
            }
            other => other.map_err(Failure::into_status),
        }
    }

    /// Sends the call once and waits for the response's head.
    async fn attempt(
        &self,
        head: http::Request<()>,
        body: Outgoing,
    ) -> Result<http::Response<ResponseBody>, Failure> {
        let end_of_stream = body.is_empty();
        let mut sender = self.ready_sender().await.map_err(Failure::Failed)?;
        // A stream that could not be opened was not sent.
        let (response, stream) = sender
            .send_request(head, end_of_stream)
            .map_err(|error| Failure::Unprocessed(self.status(&error)))?;
        if !end_of_stream {
            let mut pump = BodyPump::new(body, stream);
            // A unary request's message is ready and the stream has window
            // for it, so this usually finishes here; a body that has to
            // wait gets a task of its own, as hyper does it.
            if (&mut pump).now_or_never().is_none() {
                tokio::spawn(pump);
            }
        }
        match response.await {
            Ok(response) => Ok(response.map(ResponseBody::new)),
            Err(error) if unprocessed(&error) => Err(Failure::Unprocessed(self.status(&error))),
            Err(error) => Err(Failure::Failed(self.status(&error))),
        }
    }

    /// The request's path on this channel's scheme and authority.
    fn origin(&self, uri: Uri) -> Result<Uri, Status> {
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Uri::builder()
            .scheme(self.shared.scheme.clone())
            .authority(self.shared.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|error| Status::internal(format!("cannot build the request URI: {error}")))
    }

    /// A sender that may open a stream now: the current connection's, or a
    /// new connection's when there is none or it is going away.
    async fn ready_sender(&self) -> Result<SendRequest<Bytes>, Status> {
        if let Some((id, sender)) = self.current() {
            match sender.ready().await {
                Ok(sender) => return Ok(sender),
                // A GOAWAY or a broken connection: nothing was sent, so the
                // call can go on a new connection.
                Err(error) => {
                    tracing::debug!(authority = %self.shared.authority, %error, "grpc connection unusable, reconnecting");
                    self.forget(id);
                }
            }
        }
        let _connecting = self.shared.connecting.lock().await;
        // Another call may have connected while this one waited.
        if let Some((_, sender)) = self.current() {
            return sender.ready().await.map_err(|error| self.status(&error));
        }
        let sender = tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
            .await
            .map_err(|_| {
                Status::unavailable(format!(
                    "connecting to {} took over {CONNECT_TIMEOUT:?}",
                    self.shared.authority
                ))
            })??;
        sender.ready().await.map_err(|error| self.status(&error))
    }

    fn current(&self) -> Option<(u64, SendRequest<Bytes>)> {
        self.lock().connection.clone()
    }

    /// Drops connection `id` unless it was already replaced.
    fn forget(&self, id: u64) {
        forget(&self.shared, id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    // A warning, not an error: the caller's failure is what gets reported,
    // and a service that is down fails every call that tries it.
    #[tracing::instrument(
        skip_all,
        fields(authority = %self.shared.authority),
        err(level = tracing::Level::WARN)
    )]
    async fn connect(&self) -> Result<SendRequest<Bytes>, Status> {
        let unavailable = |what: &str, error: &dyn std::fmt::Display| {
            Status::unavailable(format!("{what} {}: {error}", self.shared.authority))
        };
        let socket = TcpStream::connect(&self.shared.address)
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
        let shared = Arc::downgrade(&self.shared);
        let settings = self.shared.keep_alive;
        let authority = self.shared.authority.clone();
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
                    keep_alive(ping_pong, settings).await
                } => Err(reason),
            };
            match ended {
                Ok(()) => tracing::debug!(%authority, "grpc connection closed"),
                Err(error) => tracing::debug!(%authority, %error, "grpc connection ended"),
            }
            if let Some(shared) = Weak::upgrade(&shared) {
                forget(&shared, id);
            }
        });
        first_pong
            .await
            .map_err(|_| unavailable("no HTTP/2 answer from", &"the connection ended"))?;
        self.lock().connection = Some((id, sender.clone()));
        Ok(sender)
    }

    fn status(&self, error: &h2::Error) -> Status {
        status_from_h2(
            error,
            format!(
                "the connection to {} failed: {error}",
                self.shared.authority
            ),
        )
    }
}

/// The host and port of a service URL (`http://host:port`), or why it is
/// not one.
pub(crate) fn service_authority(url: &str) -> Result<Authority, &'static str> {
    let uri: Uri = url.parse().map_err(|_| "not a URL")?;
    if uri.scheme() != Some(&Scheme::HTTP) {
        return Err("the scheme must be http:// (the services speak plain HTTP/2 to each other)");
    }
    if !matches!(uri.path(), "" | "/") {
        return Err("a service URL has no path");
    }
    uri.authority().cloned().ok_or("no host")
}

fn forget(shared: &Shared, id: u64) {
    let mut current = shared
        .current
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if current
        .connection
        .as_ref()
        .is_some_and(|(current_id, _)| *current_id == id)
    {
        current.connection = None;
    }
}

/// Pings the peer every interval, idle or not; returns why the connection
/// should be given up. Without it a peer that vanished (a node lost, a
/// half-open TCP connection) would keep every call waiting for its deadline
/// for as long as the kernel keeps the socket.
async fn keep_alive(mut ping_pong: h2::PingPong, settings: KeepAlive) -> String {
    loop {
        tokio::time::sleep(settings.interval).await;
        match tokio::time::timeout(settings.timeout, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(error)) => return format!("keep-alive ping failed: {error}"),
            Err(_) => return format!("keep-alive ping unanswered for {:?}", settings.timeout),
        }
    }
}

/// The gRPC status for an h2 error, after the gRPC HTTP/2 mapping
/// (<https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md#errors>);
/// a lost or closing connection is `UNAVAILABLE`, so that callers treat it as
/// transient.
fn status_from_h2(error: &h2::Error, message: String) -> Status {
    if error.is_io() || error.is_go_away() {
        return Status::unavailable(message);
    }
    match error.reason() {
        Some(Reason::REFUSED_STREAM) => Status::unavailable(message),
        Some(Reason::CANCEL) => Status::cancelled(message),
        Some(Reason::ENHANCE_YOUR_CALM) => Status::resource_exhausted(message),
        Some(Reason::INADEQUATE_SECURITY) => Status::permission_denied(message),
        _ => Status::internal(message),
    }
}

/// Why an attempt failed: whether the server can have processed the call
/// decides whether it may be sent again.
enum Failure {
    /// The server saw none of it: its stream was never opened, was refused
    /// (`REFUSED_STREAM`), or was above the last stream a GOAWAY let through
    /// (RFC 9113, section 8.7).
    Unprocessed(Status),
    Failed(Status),
}

impl Failure {
    fn into_status(self) -> Status {
        match self {
            Self::Unprocessed(status) | Self::Failed(status) => status,
        }
    }
}

/// Whether a stream's error says that the server did not process it. h2
/// gives a stream the GOAWAY's error only when its id is above the GOAWAY's
/// last stream id; the streams below it that the connection's end cuts off
/// get an I/O error instead.
fn unprocessed(error: &h2::Error) -> bool {
    error.is_remote() && (error.is_go_away() || error.reason() == Some(Reason::REFUSED_STREAM))
}

/// The most of a request body read ahead to be sent again: a unary call's
/// message is far smaller, and a client stream (a catalog import) is not
/// held in memory.
const REPLAYABLE_BYTES: usize = 64 * 1024;

/// A request body, read ahead as far as it is ready.
enum Outgoing {
    /// All of it, which a second attempt can send again: a unary or
    /// server-streaming call's one message.
    Whole(Bytes),
    /// A body still being produced (or too large to keep), after what was
    /// read of it.
    Streaming { read: Bytes, rest: Body },
}

impl Outgoing {
    fn is_empty(&self) -> bool {
        matches!(self, Self::Whole(data) if data.is_empty())
    }
}

/// Reads the frames of `body` that are ready now, without waiting.
fn read_ahead(mut body: Body) -> Result<Outgoing, Status> {
    let mut read = Bytes::new();
    // More than one chunk is copied into one buffer; a unary message is one.
    let mut joined: Option<bytes::BytesMut> = None;
    let streaming = |joined: Option<bytes::BytesMut>, read: Bytes, rest: Body| {
        Ok(Outgoing::Streaming {
            read: joined.map_or(read, bytes::BytesMut::freeze),
            rest,
        })
    };
    loop {
        let length = joined.as_ref().map_or(read.len(), |joined| joined.len());
        if length > REPLAYABLE_BYTES {
            return streaming(joined, read, body);
        }
        let polled = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).now_or_never();
        match polled {
            None => return streaming(joined, read, body),
            Some(None) => {
                return Ok(Outgoing::Whole(
                    joined.map_or(read, bytes::BytesMut::freeze),
                ));
            }
            Some(Some(Err(status))) => return Err(status),
            Some(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if data.is_empty() => {}
                Ok(data) if read.is_empty() && joined.is_none() => read = data,
                Ok(data) => joined
                    .get_or_insert_with(|| bytes::BytesMut::from(std::mem::take(&mut read)))
                    .extend_from_slice(&data),
                // gRPC requests end with their last message, never with
                // trailers (the status travels in the response's).
                Err(_) => {
                    return Err(Status::internal(
                        "a gRPC request body cannot carry trailers",
                    ));
                }
            },
        }
    }
}

impl tower::Service<http::Request<Body>> for H2Channel {
    type Response = http::Response<ResponseBody>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        // Streams are opened per call; waiting for one (the server's
        // concurrent-stream limit) happens inside the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|raw| raw.to_str().ok())
            .and_then(super::parse_timeout);
        let call = self.clone().call(request);
        Box::pin(async move {
            match deadline {
                // The server stops at the same deadline; this side must not
                // wait longer when the server or the connection hangs.
                Some(deadline) => tokio::time::timeout(deadline, call)
                    .await
                    .unwrap_or_else(|_| {
                        Err(Status::deadline_exceeded(format!(
                            "no response within the {deadline:?} deadline"
                        )))
                    }),
                None => call.await,
            }
        })
    }
}

/// Writes a request body into its stream, waiting for window before each
/// chunk so that no more than one chunk sits in h2's send buffer.
struct BodyPump {
    /// What is left to read, if anything.
    rest: Option<Body>,
    stream: SendStream<Bytes>,
    /// A chunk waiting for window.
    chunk: Option<Bytes>,
}

impl BodyPump {
    fn new(body: Outgoing, stream: SendStream<Bytes>) -> Self {
        let (read, rest) = match body {
            Outgoing::Whole(data) => (data, None),
            Outgoing::Streaming { read, rest } => (read, Some(rest)),
        };
        Self {
            rest,
            stream,
            chunk: (!read.is_empty()).then_some(read),
        }
    }
}

impl Future for BodyPump {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            if let Some(chunk) = this.chunk.take() {
                this.stream.reserve_capacity(chunk.len());
                match this.stream.poll_capacity(cx) {
                    Poll::Pending => {
                        this.chunk = Some(chunk);
                        // The peer resetting the stream ends the wait too.
                        return match this.stream.poll_reset(cx) {
                            Poll::Ready(_) => Poll::Ready(()),
                            Poll::Pending => Poll::Pending,
                        };
                    }
                    Poll::Ready(Some(Ok(_))) => {
                        let end = this.rest.as_ref().is_none_or(Body::is_end_stream);
                        if this.stream.send_data(chunk, end).is_err() || end {
                            return Poll::Ready(());
                        }
                    }
                    Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                }
            }
            let Some(rest) = this.rest.as_mut() else {
                // Only a whole body that was empty gets here, and it is sent
                // with the request's head.
                return Poll::Ready(());
            };
            match ready!(Pin::new(rest).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) => this.chunk = Some(data),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            let _ = this.stream.send_trailers(trailers);
                            return Poll::Ready(());
                        }
                    }
                },
                Some(Err(error)) => {
                    tracing::debug!(%error, "grpc request body failed, resetting the stream");
                    this.stream.send_reset(Reason::CANCEL);
                    return Poll::Ready(());
                }
                None => {
                    let _ = this.stream.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// A response's body: its DATA frames, with their window given back as they
/// are read, then its trailers (where gRPC puts the status).
#[derive(Debug)]
pub struct ResponseBody {
    stream: RecvStream,
    state: BodyState,
}

#[derive(Debug, PartialEq, Eq)]
enum BodyState {
    Data,
    Trailers,
    Done,
}

impl ResponseBody {
    fn new(stream: RecvStream) -> Self {
        Self {
            stream,
            state: BodyState::Data,
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if this.state == BodyState::Data {
            match ready!(this.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Reading it is what frees the window for more.
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => {
                    this.state = BodyState::Done;
                    return Poll::Ready(Some(Err(response_status(&error))));
                }
                None => this.state = BodyState::Trailers,
            }
        }
        if this.state == BodyState::Trailers {
            let trailers = ready!(this.stream.poll_trailers(cx));
            this.state = BodyState::Done;
            return Poll::Ready(match trailers {
                Ok(Some(trailers)) => Some(Ok(Frame::trailers(trailers))),
                Ok(None) => None,
                Err(error) => Some(Err(response_status(&error))),
            });
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.state == BodyState::Done
    }
}

fn response_status(error: &h2::Error) -> Status {
    status_from_h2(error, format!("the response stream failed: {error}"))
}
