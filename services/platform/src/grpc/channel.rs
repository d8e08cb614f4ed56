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
//! origin and user agent on every request. Added: a call the server did not
//! process (a stream it refused, or one past the last stream its GOAWAY let
//! through) is sent once more, as gRPC's transparent retry does, so that a
//! service stopping for a rolling update fails none of the calls that meet
//! its GOAWAY. The connections, one per address the service's name resolves
//! to, and the round robin over them are in [`super::endpoints`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::FutureExt;
use h2::{Reason, RecvStream, SendStream};
use http::header::{HeaderValue, USER_AGENT};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http_body::{Body as _, Frame};
use tonic::Status;
use tonic::body::Body;

use super::GrpcError;
use super::endpoints::{ChannelOptions, Endpoints};

const USER_AGENT_VALUE: &str = concat!("gocommerce/", env!("CARGO_PKG_VERSION"));

/// A lazily connecting gRPC channel to one service; clones share its
/// connections.
#[derive(Clone)]
pub struct H2Channel {
    shared: Arc<Shared>,
}

struct Shared {
    scheme: Scheme,
    authority: Authority,
    user_agent: HeaderValue,
    endpoints: Arc<Endpoints>,
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
        Self::with_options(url, ChannelOptions::default())
    }

    /// A channel that resolves, connects and checks its connections as
    /// `options` say.
    pub fn with_options(url: &str, options: ChannelOptions) -> Result<Self, GrpcError> {
        let authority = service_authority(url).map_err(|reason| GrpcError::Url {
            url: url.to_owned(),
            reason,
        })?;
        let endpoints = Endpoints::new(
            authority.as_str(),
            authority.host(),
            authority.port_u16().unwrap_or(80),
            options,
        );
        Ok(Self {
            shared: Arc::new(Shared {
                scheme: Scheme::HTTP,
                authority,
                user_agent: HeaderValue::from_static(USER_AGENT_VALUE),
                endpoints: Arc::new(endpoints),
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
            // A client stream (a catalog import), boxed as rare.
            streaming @ Outgoing::Streaming { .. } => {
                return Box::pin(self.attempt(http::Request::from_parts(parts, ()), streaming))
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
                crate::metrics::client_resent(self.shared.authority.as_str());
                let (method, uri, version, headers) = again;
                let mut head = http::Request::new(());
                *head.method_mut() = method;
                *head.uri_mut() = uri;
                *head.version_mut() = version;
                *head.headers_mut() = headers;
                // Boxed: a future holds room for all its awaits, and every
                // call moves this one.
                Box::pin(self.attempt(head, Outgoing::Whole(body)))
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
        let mut sender = self
            .shared
            .endpoints
            .ready_sender()
            .await
            .map_err(Failure::Failed)?;
        // A stream that could not be opened was not sent.
        let (response, stream) = sender
            .send_request(head, end_of_stream)
            .map_err(|error| Failure::Unprocessed(self.status(&error)))?;
        let mut pumping = None;
        if !end_of_stream {
            let mut pump = BodyPump::new(body, stream);
            // A unary request's message is ready and the stream has window
            // for it, so this usually finishes here; a body that has to
            // wait gets a task of its own, as hyper does it, which lives no
            // longer than the call: given up (a deadline, a caller gone)
            // before its response, or once its response body is dropped.
            if (&mut pump).now_or_never().is_none() {
                pumping = Some(AbortOnDrop(tokio::spawn(pump).abort_handle()));
            }
        }
        match response.await {
            Ok(response) => Ok(response.map(|stream| ResponseBody::new(stream, pumping))),
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

/// The gRPC status for an h2 error, after the gRPC HTTP/2 mapping
/// (<https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md#errors>);
/// a lost or closing connection is `UNAVAILABLE`, so that callers treat it as
/// transient.
pub(super) fn status_from_h2(error: &h2::Error, message: String) -> Status {
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
    let mut read = Read::default();
    while read.len() <= REPLAYABLE_BYTES {
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).now_or_never() {
            None => break,
            Some(None) => return Ok(Outgoing::Whole(read.freeze())),
            Some(Some(Err(status))) => return Err(status),
            Some(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => read.push(data),
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
    Ok(Outgoing::Streaming {
        read: read.freeze(),
        rest: body,
    })
}

/// What was read ahead of a body: its one chunk as it came (a unary
/// message), or several copied into one buffer.
#[derive(Default)]
struct Read {
    first: Bytes,
    joined: Option<bytes::BytesMut>,
}

impl Read {
    fn len(&self) -> usize {
        self.joined
            .as_ref()
            .map_or(self.first.len(), |joined| joined.len())
    }

    fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        if self.first.is_empty() && self.joined.is_none() {
            self.first = data;
            return;
        }
        let first = std::mem::take(&mut self.first);
        self.joined
            .get_or_insert_with(|| bytes::BytesMut::from(first))
            .extend_from_slice(&data);
    }

    fn freeze(self) -> Bytes {
        self.joined.map_or(self.first, bytes::BytesMut::freeze)
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
    /// The task still sending the request's body, if any.
    _pumping: Option<AbortOnDrop>,
}

/// Stops a spawned [`BodyPump`] when dropped. Its stream's last handle goes
/// with it, so h2 resets the stream (CANCEL) and the server stops reading a
/// request nobody waits for.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug, PartialEq, Eq)]
enum BodyState {
    Data,
    Trailers,
    Done,
}

impl ResponseBody {
    fn new(stream: RecvStream, pumping: Option<AbortOnDrop>) -> Self {
        Self {
            stream,
            state: BodyState::Data,
            _pumping: pumping,
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
