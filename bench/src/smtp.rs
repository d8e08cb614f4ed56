//! A minimal SMTP sink for the notification lag: it accepts every message
//! (no TLS, no auth, as `builder_dangerous` speaks) and notes when the
//! "Order <id> confirmed" email of each order was handed over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// When each order's confirmation email arrived, by order id.
pub type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

#[derive(Debug)]
pub struct SmtpSink {
    pub port: u16,
    pub arrivals: Arrivals,
    /// When the last message of any kind was handed over.
    last: Arc<Mutex<Option<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let arrivals: Arrivals = Arc::default();
        let last: Arc<Mutex<Option<Instant>>> = Arc::default();
        let task = {
            let arrivals = arrivals.clone();
            let last = last.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(session(stream, arrivals.clone(), last.clone()));
                }
            })
        };
        Ok(Self {
            port,
            arrivals,
            last,
            task,
        })
    }

    /// Waits (up to `limit`) until no message has arrived for `quiet`, so
    /// emails queued by earlier scenarios do not delay the measured ones.
    /// Returns how long it waited.
    pub async fn drain(
        &self,
        quiet: std::time::Duration,
        limit: std::time::Duration,
    ) -> std::time::Duration {
        let start = Instant::now();
        while start.elapsed() < limit {
            let last = *self.last.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_none_or(|at| at.elapsed() >= quiet) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        start.elapsed()
    }

    /// The confirmation time of `order_id`, if its email has arrived.
    pub fn arrival(&self, order_id: &str) -> Option<Instant> {
        self.arrivals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(order_id)
            .copied()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The order id of a "Subject: Order <id> confirmed" header line.
pub fn confirmed_order(header: &str) -> Option<&str> {
    let (name, value) = header.split_once(':')?;
    if !name.trim().eq_ignore_ascii_case("subject") {
        return None;
    }
    value
        .trim()
        .strip_prefix("Order ")?
        .strip_suffix(" confirmed")
        .map(str::trim)
}

async fn session(stream: TcpStream, arrivals: Arrivals, last: Arc<Mutex<Option<Instant>>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    if write
        .write_all(b"220 bench.local ESMTP sink\r\n")
        .await
        .is_err()
    {
        return;
    }
    while let Ok(Some(line)) = lines.next_line().await {
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250 bench.local\r\n",
            "DATA" => {
                if write
                    .write_all(b"354 end with <CRLF>.<CRLF>\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let mut order = None;
                let mut in_headers = true;
                while let Ok(Some(data)) = lines.next_line().await {
                    if data == "." {
                        break;
                    }
                    if data.is_empty() {
                        in_headers = false;
                    }
                    if in_headers && order.is_none() {
                        order = confirmed_order(&data).map(str::to_owned);
                    }
                }
                *last.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                if let Some(order) = order {
                    arrivals
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(order, Instant::now());
                }
                b"250 OK\r\n"
            }
            "QUIT" => {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            }
            _ => b"250 OK\r\n",
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_id_is_read_from_a_confirmation_subject_only() {
        assert_eq!(
            confirmed_order("Subject: Order 0193-abc confirmed"),
            Some("0193-abc")
        );
        assert_eq!(confirmed_order("subject:Order x confirmed"), Some("x"));
        assert_eq!(confirmed_order("Subject: Order x shipped"), None);
        assert_eq!(confirmed_order("X-Subject: Order x confirmed"), None);
        assert_eq!(confirmed_order("Subject: Welcome to GoCommerce, Ada"), None);
    }

    #[tokio::test]
    async fn a_message_handed_over_is_noted_under_its_order() {
        let sink = SmtpSink::start().await.expect("sink");
        let stream = TcpStream::connect(("127.0.0.1", sink.port))
            .await
            .expect("connect");
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let mut expect = async |prefix: &str| {
            let line = lines.next_line().await.expect("read").expect("line");
            assert!(line.starts_with(prefix), "{line}");
        };
        expect("220").await;
        for (send, answer) in [
            ("EHLO test\r\n", "250"),
            ("MAIL FROM:<a@b.c>\r\n", "250"),
            ("RCPT TO:<d@e.f>\r\n", "250"),
            ("DATA\r\n", "354"),
            (
                "Subject: Order 42 confirmed\r\nFrom: a@b.c\r\n\r\nbody\r\n.\r\n",
                "250",
            ),
            ("QUIT\r\n", "221"),
        ] {
            write.write_all(send.as_bytes()).await.expect("write");
            expect(answer).await;
        }
        assert!(sink.arrival("42").is_some());
        assert!(sink.arrival("43").is_none());
    }
}
