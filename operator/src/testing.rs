//! Test helpers shared by modules that talk to the API server: a kube client
//! on tower-test's mock whose answers a closure decides.

use std::pin::pin;

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

/// A client whose requests `answer` handles, given the method, the path and
/// the body; `None` leaves the request unanswered, as a hung connection.
pub fn client<F>(answer: F) -> Client
where
    F: Fn(&Method, &str, Value) -> Option<(u16, Value)> + Send + 'static,
{
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        let mut handle = pin!(handle);
        let mut unanswered = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            match answer(&parts.method, parts.uri.path(), body) {
                Some((code, value)) => send.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&value).expect("json")))
                        .expect("response"),
                ),
                None => unanswered.push(send),
            }
        }
    });
    Client::new(service, "default")
}

/// A failure as the API server reports it.
pub fn status(code: u16, reason: &str) -> (u16, Value) {
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "reason": reason, "message": reason, "code": code});
    (code, status)
}
