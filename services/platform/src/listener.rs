//! Binding a server's listening socket. The error names the listener and its
//! address: "address already in use" alone does not tell an operator which
//! of a process' listeners to move, least of all in `gocommerce all`.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;

/// A listening socket that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind the {what} listener to {addr}: {source}")]
pub struct BindError {
    what: &'static str,
    addr: SocketAddr,
    #[source]
    source: io::Error,
}

/// Binds the `what` listener (`"gRPC"`, `"HTTP"`) to `addr`, where port 0
/// picks a free port, and returns it with the port it got.
pub async fn bind(what: &'static str, addr: SocketAddr) -> Result<(TcpListener, u16), BindError> {
    let failed = |source| BindError { what, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(failed)?;
    let port = listener.local_addr().map_err(failed)?.port();
    Ok((listener, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_address_is_an_error_naming_the_listener_and_the_address() {
        let (_taken, port) = bind("gRPC", "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

        let err = bind("HTTP", addr).await.expect_err("the port is taken");

        let message = err.to_string();
        assert!(
            message.starts_with(&format!("cannot bind the HTTP listener to {addr}: ")),
            "{message}"
        );
        assert_eq!(
            std::error::Error::source(&err)
                .and_then(|cause| cause.downcast_ref::<io::Error>())
                .map(io::Error::kind),
            Some(io::ErrorKind::AddrInUse)
        );
    }
}
