//! The gRPC client channel against real servers on loopback: tonic's own
//! (the health service) and raw h2 servers that hang, stop answering pings,
//! or take and give more than a flow-control window.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gocommerce_platform::grpc::{ChannelOptions, H2Channel, KeepAlive, Resolve, Resolving};
use http_body_util::{BodyExt, StreamBody};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::pb::health_check_response::ServingStatus as Reported;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::HealthReporter;
use tower::Service;

/// How long a test waits for what should take milliseconds.
const PATIENCE: Duration = Duration::from_secs(10);

struct HealthServer {
    reporter: HealthReporter,
    stop: oneshot::Sender<()>,
    served: JoinHandle<()>,
}

impl HealthServer {
    async fn start(listener: TcpListener) -> Self {
        let (reporter, service) = tonic_health::server::health_reporter();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await
                .expect("served");
        });
        Self {
            reporter,
            stop,
            served,
        }
    }

    /// Shuts down gracefully (GOAWAY) and waits until it has.
    async fn stop(self) {
        self.stop.send(()).expect("server running");
        self.served.await.expect("server task");
    }
}

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    (listener, url)
}

fn client(url: &str) -> HealthClient<H2Channel> {
    HealthClient::new(H2Channel::new(url).expect("valid URL"))
}

async fn check(client: &mut HealthClient<H2Channel>) -> Result<i32, tonic::Status> {
    let request = HealthCheckRequest {
        service: String::new(),
    };
    Ok(client.check(request).await?.into_inner().status)
}

#[tokio::test]
async fn a_unary_call_reaches_the_service_and_returns_its_answer() {
    let (listener, url) = listener().await;
    let server = HealthServer::start(listener).await;
    let mut client = client(&url);

    let status = check(&mut client).await.expect("answered");

    assert_eq!(status, Reported::Serving as i32);
    server.stop().await;
}

#[tokio::test]
async fn a_server_stream_delivers_each_message_as_the_service_sends_it() {
    let (listener, url) = listener().await;
    let server = HealthServer::start(listener).await;
    server
        .reporter
        .set_service_status("shop", ServingStatus::Serving)
        .await;
    let mut client = client(&url);

    let mut stream = client
        .watch(HealthCheckRequest {
            service: "shop".to_owned(),
        })
        .await
        .expect("stream opened")
        .into_inner();
    let first: HealthCheckResponse = tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("in time")
        .expect("a message")
        .expect("ok");
    server
        .reporter
        .set_service_status("shop", ServingStatus::NotServing)
        .await;
    let second = tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("in time")
        .expect("a message")
        .expect("ok");

    assert_eq!(first.status, Reported::Serving as i32);
    assert_eq!(second.status, Reported::NotServing as i32);
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn calls_reach_a_restarted_service_on_a_new_connection() {
    let (listener, url) = listener().await;
    let address: SocketAddr = listener.local_addr().expect("address");
    let mut client = client(&url);
    let first = HealthServer::start(listener).await;
    check(&mut client).await.expect("first server answered");

    first.stop().await;
    let second = HealthServer::start(TcpListener::bind(address).await.expect("rebind")).await;
    // The call may still find the old connection before its task has read
    // the server's GOAWAY: the channel then sends it again on a new one.
    let status = check(&mut client).await.expect("second server answered");

    assert_eq!(status, Reported::Serving as i32);
    second.stop().await;
}

#[tokio::test]
async fn a_service_nobody_listens_on_is_unavailable() {
    let (listener, url) = listener().await;
    drop(listener);
    let mut client = client(&url);

    let status = check(&mut client).await.expect_err("nothing listens");

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

/// An h2 server on loopback whose requests go to `handle`, each in a task
/// of its own.
struct H2Server {
    url: String,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
    /// Stops serving the connections open now (pings included) but keeps
    /// them open, like a peer that vanished without closing; later
    /// connections are served.
    freeze: watch::Sender<bool>,
}

async fn h2_server<F, Fut>(handle: F) -> H2Server
where
    F: Fn(http::Request<h2::RecvStream>, h2::server::SendResponse<Bytes>) -> Fut
        + Clone
        + Send
        + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (listener, url) = listener().await;
    let connections = Arc::new(AtomicUsize::new(0));
    let (freeze, frozen) = watch::channel(false);
    let accepted = connections.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.expect("accepted");
            accepted.fetch_add(1, Ordering::SeqCst);
            let handle = handle.clone();
            let mut frozen = frozen.clone();
            let born_frozen = *frozen.borrow_and_update();
            tokio::spawn(async move {
                let mut connection = h2::server::handshake(socket).await.expect("handshake");
                loop {
                    tokio::select! {
                        accepted = connection.accept() => match accepted {
                            Some(accepted) => {
                                let (request, respond) = accepted.expect("request");
                                tokio::spawn(handle.clone()(request, respond));
                            }
                            None => return,
                        },
                        // A dropped sender disables this branch.
                        Ok(_) = frozen.wait_for(|frozen| *frozen), if !born_frozen => break,
                    }
                }
                let _held_open = connection;
                std::future::pending::<()>().await;
            });
        }
    });
    H2Server {
        url,
        connections,
        freeze,
    }
}

#[tokio::test]
async fn a_call_past_its_deadline_fails_as_deadline_exceeded_while_the_service_hangs() {
    let (hold, held) = tokio::sync::mpsc::unbounded_channel();
    let server = h2_server(move |_request, respond| {
        let hold = hold.clone();
        async move {
            // Never answers, but keeps the stream open.
            let _ = hold.send(respond);
        }
    })
    .await;
    let mut client = client(&server.url);
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.set_timeout(Duration::from_millis(200));

    let status = tokio::time::timeout(PATIENCE, client.check(request))
        .await
        .expect("the deadline ends the call")
        .expect_err("no answer");

    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    drop(held);
}

#[tokio::test]
async fn a_service_that_accepts_but_never_speaks_http2_is_unavailable_after_the_connect_timeout() {
    let (listener, url) = listener().await;
    let silent = tokio::spawn(async move {
        let mut sockets = Vec::new();
        loop {
            let (socket, _) = listener.accept().await.expect("accepted");
            sockets.push(socket);
        }
    });
    let mut client = client(&url);

    let status = tokio::time::timeout(PATIENCE, check(&mut client))
        .await
        .expect("the connect timeout ends the call")
        .expect_err("no handshake");

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("handshake") || status.message().contains("took over"));
    silent.abort();
}

/// Echoes the request's body and ends with an OK gRPC status in the trailers.
async fn echo(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let mut body = request.into_body();
    let mut received = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("request chunk");
        body.flow_control()
            .release_capacity(chunk.len())
            .expect("released");
        received.extend_from_slice(&chunk);
    }
    let response = http::Response::builder()
        .header("content-type", "application/grpc")
        .body(())
        .expect("response");
    let mut stream = respond
        .send_response(response, false)
        .expect("sent headers");
    stream
        .send_data(received.freeze(), false)
        .expect("sent data");
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    stream.send_trailers(trailers).expect("sent trailers");
}

#[tokio::test]
async fn bodies_larger_than_the_flow_control_windows_go_through_in_both_directions() {
    let server = h2_server(echo).await;
    let mut channel = H2Channel::new(&server.url).expect("valid URL");
    // 48 chunks of 64 KiB: 3 MiB, past h2's default window of 64 KiB on
    // the server's side and the channel's 2 MiB stream window.
    let chunks: Vec<Bytes> = (0..48u8).map(|i| Bytes::from(vec![i; 64 * 1024])).collect();
    let expected: Vec<u8> = chunks.iter().flat_map(|chunk| chunk.to_vec()).collect();
    let frames = tokio_stream::iter(
        chunks
            .into_iter()
            .map(|chunk| Ok::<_, Infallible>(http_body::Frame::data(chunk))),
    );
    let request = http::Request::builder()
        .method("POST")
        .uri("/echo.Echo/Echo")
        .header("content-type", "application/grpc")
        .body(tonic::body::Body::new(StreamBody::new(frames)))
        .expect("request");

    let response = tokio::time::timeout(PATIENCE, async {
        let response = channel.call(request).await.expect("response");
        response.into_body().collect().await.expect("body")
    })
    .await
    .expect("no stall on flow control");

    let trailers = response.trailers().cloned().expect("trailers");
    assert_eq!(response.to_bytes(), Bytes::from(expected));
    assert_eq!(trailers["grpc-status"], "0");
}

#[test]
fn only_plain_http_service_urls_are_accepted() {
    for url in [
        "https://product:50051",
        "product:50051",
        "http://product:50051/v1",
        "not a url",
    ] {
        let error = H2Channel::new(url).expect_err(url);
        assert!(error.to_string().contains(url), "{error}");
    }
    H2Channel::new("http://product:50051").expect("plain http");
    H2Channel::new("http://[::1]:50051/").expect("IPv6 with a root path");
}

#[tokio::test]
async fn a_server_that_stops_answering_pings_is_given_up_and_the_next_call_reconnects() {
    let server = h2_server(echo).await;
    let keep_alive = KeepAlive {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(200),
    };
    let options = ChannelOptions {
        keep_alive,
        ..ChannelOptions::default()
    };
    let mut channel = H2Channel::with_options(&server.url, options).expect("valid URL");
    let call = |channel: &mut H2Channel| {
        let request = http::Request::builder()
            .method("POST")
            .uri("/echo.Echo/Echo")
            .body(tonic::body::Body::new(http_body_util::Full::new(
                Bytes::from_static(b"ping"),
            )))
            .expect("request");
        let response = channel.call(request);
        async move {
            let response = response.await.expect("response");
            response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes()
        }
    };
    assert_eq!(call(&mut channel).await, "ping");

    server.freeze.send(true).expect("server running");
    // Several pings' worth: the unanswered one is given up after 300 ms.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answer = tokio::time::timeout(PATIENCE, call(&mut channel))
        .await
        .expect("not stuck on the frozen connection");

    assert_eq!(answer, "ping");
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

/// A unary echo call carrying `ping`; the echoed body.
async fn echo_call(channel: &mut H2Channel) -> Result<Bytes, tonic::Status> {
    let request = http::Request::builder()
        .method("POST")
        .uri("/echo.Echo/Echo")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            Bytes::from_static(b"ping"),
        )))
        .expect("request");
    let response = tokio::time::timeout(PATIENCE, channel.call(request))
        .await
        .expect("answered in time")?;
    Ok(response.into_body().collect().await?.to_bytes())
}

/// An echo server that refuses its first stream, as a server at its stream
/// limit does (the call was not processed); the requests it saw.
async fn refusing_first_stream() -> (H2Server, Arc<AtomicUsize>) {
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    let server = h2_server(move |request, mut respond| {
        let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                respond.send_reset(h2::Reason::REFUSED_STREAM);
            } else {
                echo(request, respond).await;
            }
        }
    })
    .await;
    (server, requests)
}

/// The socket address of a test server's `http://` URL.
fn address_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().expect("address")
}

#[tokio::test]
async fn a_call_whose_stream_the_server_refuses_is_sent_again_and_answered() {
    let (server, requests) = refusing_first_stream().await;
    let mut channel = H2Channel::new(&server.url).expect("valid URL");

    let answer = echo_call(&mut channel).await.expect("answered");

    assert_eq!(answer, "ping");
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_call_the_server_may_have_processed_is_not_sent_again() {
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    let server = h2_server(move |_request, mut respond| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            respond.send_reset(h2::Reason::INTERNAL_ERROR);
        }
    })
    .await;
    let mut channel = H2Channel::new(&server.url).expect("valid URL");

    let status = echo_call(&mut channel).await.expect_err("reset");

    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

/// `count` echo calls started together; their answers.
async fn echo_calls_at_once(
    channel: &H2Channel,
    count: usize,
) -> Vec<Result<Bytes, tonic::Status>> {
    let calls = (0..count).map(|_| {
        let mut channel = channel.clone();
        async move { echo_call(&mut channel).await }
    });
    futures::future::join_all(calls).await
}

/// An HTTP/2 frame: length, type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("small frame");
    let mut frame = length.to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend(payload);
    frame
}

/// Speaks just enough HTTP/2 by hand to answer the client's settings and
/// pings, then meets its first request with a GOAWAY that processed no
/// stream, as a server that began shutting down just before it arrived;
/// h2's own server cannot be made to leave a received stream out of its
/// GOAWAY.
async fn go_away_at_the_first_request(mut socket: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const HEADERS: u8 = 0x1;
    const GOAWAY: u8 = 0x7;
    const ACK: u8 = 0x1;
    let mut preface = [0; 24];
    socket.read_exact(&mut preface).await.expect("preface");
    socket
        .write_all(&frame(SETTINGS, 0, 0, &[]))
        .await
        .expect("settings");
    loop {
        let mut header = [0; 9];
        socket.read_exact(&mut header).await.expect("frame header");
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]);
        let mut payload = vec![0; usize::try_from(length).expect("length")];
        socket
            .read_exact(&mut payload)
            .await
            .expect("frame payload");
        match (header[3], header[4] & ACK) {
            (SETTINGS, 0) => socket.write_all(&frame(SETTINGS, ACK, 0, &[])).await,
            (PING, 0) => socket.write_all(&frame(PING, ACK, 0, &payload)).await,
            (HEADERS, _) => break,
            _ => Ok(()),
        }
        .expect("answered");
    }
    // Last stream id 0, error code NO_ERROR.
    socket
        .write_all(&frame(GOAWAY, 0, 0, &[0; 8]))
        .await
        .expect("goaway");
    socket.shutdown().await.expect("closed for writing");
    // Read what the client still sends until it closes: closing with
    // unread bytes would reset the connection and could lose the GOAWAY.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, socket.read_to_end(&mut rest)).await;
}

#[tokio::test]
async fn a_call_that_meets_the_servers_goaway_is_sent_again_on_a_new_connection() {
    let (listener, url) = listener().await;
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = connections.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.expect("accepted");
            if accepted.fetch_add(1, Ordering::SeqCst) == 0 {
                tokio::spawn(go_away_at_the_first_request(socket));
                continue;
            }
            tokio::spawn(async move {
                let mut connection = h2::server::handshake(socket).await.expect("handshake");
                while let Some(accepted) = connection.accept().await {
                    let (request, respond) = accepted.expect("request");
                    tokio::spawn(echo(request, respond));
                }
            });
        }
    });
    let mut channel = H2Channel::new(&url).expect("valid URL");

    let answer = echo_call(&mut channel).await.expect("answered");

    assert_eq!(answer, "ping");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

/// A resolver whose answer the test sets, counting its lookups.
#[derive(Clone, Default)]
struct Names {
    addresses: Arc<std::sync::Mutex<Vec<SocketAddr>>>,
    lookups: Arc<AtomicUsize>,
}

impl Names {
    fn answering(addresses: &[SocketAddr]) -> Self {
        let names = Self::default();
        names.answer(addresses);
        names
    }

    fn answer(&self, addresses: &[SocketAddr]) {
        *self.addresses.lock().expect("not poisoned") = addresses.to_vec();
    }

    async fn wait_for_lookups(&self, count: usize) {
        tokio::time::timeout(PATIENCE, async {
            while self.lookups.load(Ordering::SeqCst) < count {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("resolved again");
    }
}

impl Resolve for Names {
    fn resolve(&self, host: &str, port: u16) -> Resolving {
        assert!(host.ends_with(".shop") && port == 50052, "{host}:{port}");
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let addresses = self.addresses.lock().expect("not poisoned").clone();
        Box::pin(async move {
            // As long as a DNS round trip, so that calls queue behind it.
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(addresses)
        })
    }
}

/// A channel to `http://product.shop:50052`, resolved by `names`.
fn named_channel(names: &Names, refresh: Duration) -> H2Channel {
    channel_to("http://product.shop:50052", names, refresh)
}

/// A channel to `url` (a `.shop` host, port 50052), resolved by `names`.
fn channel_to(url: &str, names: &Names, refresh: Duration) -> H2Channel {
    let options = ChannelOptions {
        refresh,
        resolver: Arc::new(names.clone()),
        ..ChannelOptions::default()
    };
    H2Channel::with_options(url, options).expect("valid URL")
}

/// An echo server counting the requests it answers.
async fn counting_echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    let server = h2_server(move |request, respond| {
        seen.fetch_add(1, Ordering::SeqCst);
        echo(request, respond)
    })
    .await;
    (address_of(&server.url), requests)
}

#[tokio::test]
async fn calls_are_spread_evenly_over_every_address_the_name_resolves_to() {
    let (first, first_requests) = counting_echo_server().await;
    let (second, second_requests) = counting_echo_server().await;
    let names = Names::answering(&[first, second]);
    let mut channel = named_channel(&names, Duration::from_secs(60));

    for _ in 0..20 {
        assert_eq!(echo_call(&mut channel).await.expect("answered"), "ping");
    }

    assert_eq!(first_requests.load(Ordering::SeqCst), 10);
    assert_eq!(second_requests.load(Ordering::SeqCst), 10);
    assert_eq!(names.lookups.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_address_nobody_listens_on_is_passed_by_and_every_call_answered() {
    let (live, live_requests) = counting_echo_server().await;
    let (listener, _) = listener().await;
    let dead = listener.local_addr().expect("address");
    drop(listener);
    let names = Names::answering(&[dead, live]);
    let mut channel = named_channel(&names, Duration::from_secs(60));

    for _ in 0..10 {
        assert_eq!(echo_call(&mut channel).await.expect("answered"), "ping");
    }

    assert_eq!(live_requests.load(Ordering::SeqCst), 10);
    // The failed connect asked for a fresh answer at once.
    names.wait_for_lookups(2).await;
}

#[tokio::test]
async fn calls_follow_the_addresses_when_the_name_resolves_differently() {
    let (old, old_requests) = counting_echo_server().await;
    let (new, new_requests) = counting_echo_server().await;
    let names = Names::answering(&[old]);
    let mut channel = named_channel(&names, Duration::from_millis(100));
    echo_call(&mut channel)
        .await
        .expect("answered by the old address");

    names.answer(&[new]);
    // The lookup after the one that saw the change: that one's answer is
    // in place by then.
    names.wait_for_lookups(3).await;
    for _ in 0..5 {
        echo_call(&mut channel).await.expect("answered");
    }

    assert_eq!(old_requests.load(Ordering::SeqCst), 1);
    assert_eq!(new_requests.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_name_that_resolves_to_no_address_is_unavailable_and_says_so() {
    let names = Names::default();
    let mut channel = named_channel(&names, Duration::from_secs(60));

    let status = echo_call(&mut channel).await.expect_err("nowhere to go");

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("product.shop:50052"),
        "{status:?}"
    );
}

/// A channel to `http://product.shop:50052`, resolved by `names`, whose
/// failures are held for `backoff`.
fn channel_with_backoff(names: &Names, backoff: Duration) -> H2Channel {
    let options = ChannelOptions {
        refresh: Duration::from_secs(60),
        backoff,
        resolver: Arc::new(names.clone()),
        ..ChannelOptions::default()
    };
    H2Channel::with_options("http://product.shop:50052", options).expect("valid URL")
}

#[tokio::test]
async fn calls_during_and_soon_after_a_lookup_that_finds_nothing_share_its_answer() {
    let names = Names::default();
    let channel = channel_with_backoff(&names, Duration::from_secs(60));

    let together = echo_calls_at_once(&channel, 5).await;
    let mut after = Vec::new();
    for _ in 0..3 {
        after.push(echo_call(&mut channel.clone()).await);
    }

    for answer in together.into_iter().chain(after) {
        let status = answer.expect_err("nowhere to go");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    assert_eq!(names.lookups.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_call_after_the_backoff_asks_again_and_is_answered_once_the_name_resolves() {
    let names = Names::default();
    let backoff = Duration::from_millis(50);
    let mut channel = channel_with_backoff(&names, backoff);
    let first = echo_call(&mut channel).await;
    let (server, requests) = counting_echo_server().await;
    names.answer(&[server]);

    tokio::time::sleep(backoff).await;
    let later = echo_call(&mut channel).await;

    assert_eq!(first.expect_err("nowhere to go").code(), Code::Unavailable);
    assert_eq!(later.expect("answered once the name resolves"), "ping");
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    assert_eq!(names.lookups.load(Ordering::SeqCst), 2);
}

/// A port that accepts connections and closes them at once, so that every
/// connect to it fails; it counts them until the task is aborted.
async fn closing_port() -> (String, Arc<AtomicUsize>, JoinHandle<()>) {
    let (listener, url) = listener().await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    let closing = tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.expect("accepted");
            counted.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (url, accepted, closing)
}

fn health_client_with_backoff(url: &str, backoff: Duration) -> HealthClient<H2Channel> {
    let options = ChannelOptions {
        backoff,
        ..ChannelOptions::default()
    };
    HealthClient::new(H2Channel::with_options(url, options).expect("valid URL"))
}

#[tokio::test]
async fn calls_soon_after_a_failed_connect_fail_at_once_without_connecting_again() {
    let (url, accepted, closing) = closing_port().await;
    let mut client = health_client_with_backoff(&url, Duration::from_secs(60));

    let first = check(&mut client).await;
    let mut after = Vec::new();
    for _ in 0..3 {
        after.push(check(&mut client).await);
    }

    assert_eq!(first.expect_err("closed").code(), Code::Unavailable);
    for answer in after {
        let status = answer.expect_err("failed just now");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("failed just now"), "{status:?}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    closing.abort();
}

#[tokio::test]
async fn a_call_after_the_backoff_connects_again_and_reaches_a_service_that_came_back() {
    let (url, _, closing) = closing_port().await;
    let backoff = Duration::from_millis(50);
    let mut client = health_client_with_backoff(&url, backoff);
    let first = check(&mut client).await;
    closing.abort();
    let _ = closing.await;
    let server =
        HealthServer::start(TcpListener::bind(address_of(&url)).await.expect("rebind")).await;

    tokio::time::sleep(backoff).await;
    let later = check(&mut client).await;

    assert_eq!(first.expect_err("closed").code(), Code::Unavailable);
    assert_eq!(later.expect("answered"), Reported::Serving as i32);
    server.stop().await;
}

#[tokio::test]
async fn a_host_name_is_resolved_by_the_system() {
    let server = h2_server(echo).await;
    let port = server.url.rsplit(':').next().expect("port");
    // `localhost` is in every /etc/hosts; where it also names ::1, nothing
    // listens there and that address is passed by.
    let mut channel = H2Channel::new(&format!("http://localhost:{port}")).expect("valid URL");

    let answer = echo_call(&mut channel).await.expect("answered");

    assert_eq!(answer, "ping");
}

#[tokio::test]
async fn calls_waiting_on_a_connect_that_fails_go_to_the_next_address_without_trying_it_again() {
    // An address that accepts and never speaks HTTP/2: a connect to it
    // fails only at the connect timeout.
    let (listener, _) = listener().await;
    let silent = listener.local_addr().expect("address");
    let attempts = Arc::new(AtomicUsize::new(0));
    let accepted = attempts.clone();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        loop {
            let (socket, _) = listener.accept().await.expect("accepted");
            accepted.fetch_add(1, Ordering::SeqCst);
            sockets.push(socket);
        }
    });
    let (live, live_requests) = counting_echo_server().await;
    let names = Names::answering(&[silent, live]);
    let channel = named_channel(&names, Duration::from_secs(60));

    // Six at once: the round robin starts three of them at the silent
    // address, where one connects and two wait for it.
    let answers = echo_calls_at_once(&channel, 6).await;

    for answer in answers {
        assert_eq!(answer.expect("answered"), "ping");
    }
    assert_eq!(live_requests.load(Ordering::SeqCst), 6);
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    held.abort();
}

#[tokio::test]
async fn a_channel_reports_its_addresses_connects_and_resent_calls_as_metrics() {
    let (refusing, _) = refusing_first_stream().await;
    let (other, _) = counting_echo_server().await;
    let names = Names::answering(&[address_of(&refusing.url), other]);
    // A target of its own: the registry is the test process's.
    let mut channel = channel_to("http://metrics.shop:50052", &names, Duration::from_secs(60));

    for _ in 0..4 {
        echo_call(&mut channel).await.expect("answered");
    }

    let text = gocommerce_platform::metrics::encode();
    for line in [
        r#"grpc_client_endpoints{target="metrics.shop:50052"} 2"#,
        r#"grpc_client_connects_total{result="ok",target="metrics.shop:50052"} 2"#,
        r#"grpc_client_resent_total{target="metrics.shop:50052"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
}

#[tokio::test]
async fn a_request_stream_still_being_sent_is_cancelled_when_its_call_is_given_up() {
    // The server reads the request and never answers; it reports how the
    // request ended.
    let (ended, mut how) = tokio::sync::mpsc::unbounded_channel();
    let server = h2_server(move |request, respond| {
        let ended = ended.clone();
        async move {
            let _no_answer = respond;
            let mut body = request.into_body();
            let outcome = loop {
                match body.data().await {
                    Some(Ok(chunk)) => {
                        let _ = body.flow_control().release_capacity(chunk.len());
                    }
                    Some(Err(error)) => break format!("reset: {error}"),
                    None => break "ended".to_owned(),
                }
            };
            let _ = ended.send(outcome);
        }
    })
    .await;
    let mut channel = H2Channel::new(&server.url).expect("valid URL");
    // A client stream that never ends: a chunk every 20 ms.
    let chunks = futures::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Some((
            Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(b"row"))),
            (),
        ))
    });
    let request = http::Request::builder()
        .method("POST")
        .uri("/echo.Echo/Import")
        .header("grpc-timeout", "200m")
        .body(tonic::body::Body::new(StreamBody::new(chunks)))
        .expect("request");

    let status = tokio::time::timeout(PATIENCE, channel.call(request))
        .await
        .expect("the deadline ends the call")
        .expect_err("no answer");
    let outcome = tokio::time::timeout(PATIENCE, how.recv())
        .await
        .expect("the server's request ended")
        .expect("reported");

    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(outcome.starts_with("reset"), "{outcome}");
}
