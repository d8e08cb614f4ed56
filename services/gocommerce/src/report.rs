//! How a failure that stops the process is told: one line, each cause once.
//!
//! The services' errors put their cause in their own message, so that a log
//! line's `error = %err` is whole, and also return it as `source()`, so that
//! callers can look at it; many libraries' errors do the same. Printed as a
//! chain, as anyhow does, each such cause would then appear twice.

use std::fmt;

/// An error as the process reports it when it stops: `main`'s `Err` is
/// printed with `Debug`, which here is the same line as `Display`.
pub struct Report(anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for Report {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&chain(&self.0))
    }
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `error` and its causes joined by ": ", leaving out a cause whose message
/// the line already holds.
pub fn chain(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if line.is_empty() {
            line = message;
        } else if !line.contains(&message) {
            line.push_str(": ");
            line.push_str(&message);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot bind the gRPC listener: {0}")]
    struct Quoting(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("the migration failed")]
    struct Silent(#[source] std::io::Error);

    fn in_use() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::AddrInUse)
    }

    #[test]
    fn a_cause_the_message_already_quotes_is_told_once() {
        let error = Err::<(), _>(Quoting(in_use()))
            .context("payment service failed to start")
            .unwrap_err();

        assert_eq!(
            Report::from(error).to_string(),
            "payment service failed to start: cannot bind the gRPC listener: address in use"
        );
    }

    #[test]
    fn a_cause_the_message_leaves_out_is_still_told() {
        let error = Err::<(), _>(Silent(in_use()))
            .context("order service failed to start")
            .unwrap_err();

        assert_eq!(
            format!("{:?}", Report::from(error)),
            "order service failed to start: the migration failed: address in use"
        );
    }
}
