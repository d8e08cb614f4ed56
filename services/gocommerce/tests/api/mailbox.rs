//! A real SMTP server for tests: aiosmtpd as a child process, delivering into a
//! maildir the test reads back. Stopping and restarting it on the same port
//! simulates an SMTP outage; recipients whose address starts with `refused-`
//! are refused for good (550), as unknown mailboxes are (`refusing_mailbox.py`). The Python comes from `GOCOMMERCE_PYTHON`, by
//! default the venv `make tools` creates.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use uuid::Uuid;

/// One delivered email.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

pub struct SmtpServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn python() -> String {
    std::env::var("GOCOMMERCE_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned());
        format!("{home}/.cache/gocommerce/tools/venv/bin/python")
    })
}

impl SmtpServer {
    /// Starts a server on a free port and waits until it accepts connections.
    pub async fn start() -> Self {
        let port = crate::helpers::unused_port();
        let dir = std::env::temp_dir().join(format!("gct-smtp-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("mail directory");
        let mut server = Self {
            port,
            dir,
            child: None,
        };
        server.restart().await;
        server
    }

    /// `smtp://127.0.0.1:<port>`, for `SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port and maildir.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the SMTP server is already running");
        let maildir = self.dir.join("maildir");
        let child = Command::new(python())
            .env(
                "PYTHONPATH",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api"),
            )
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "refusing_mailbox.RefusingMailbox"])
            .arg(&maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.join("aiosmtpd.log"))
                    .map_or_else(|_| Stdio::null(), Stdio::from),
            )
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start aiosmtpd with {} ({e}); run `make tools` or set GOCOMMERCE_PYTHON",
                    python()
                )
            });
        self.child = Some(child);
        for _ in 0..200 {
            self.assert_running();
            // An SMTP greeting, so that what answers is this server and not
            // another listener holding the port (aiosmtpd exits then).
            if self.greets().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "aiosmtpd did not listen on port {} within ten seconds",
            self.port
        );
    }

    async fn greets(&self) -> bool {
        use tokio::io::AsyncReadExt as _;
        let Ok(mut connection) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await
        else {
            return false;
        };
        let mut code = [0; 3];
        matches!(
            tokio::time::timeout(Duration::from_secs(2), connection.read_exact(&mut code)).await,
            Ok(Ok(_)) if &code == b"220"
        )
    }

    fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("started");
        if let Some(status) = child.try_wait().expect("the child's status") {
            let said = std::fs::read_to_string(self.dir.join("aiosmtpd.log")).unwrap_or_default();
            panic!("aiosmtpd on port {} exited ({status}): {said}", self.port);
        }
    }

    /// Stops the server: connections to its port are refused until `restart`.
    pub fn stop(&mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every email delivered so far.
    pub fn messages(&self) -> Vec<Mail> {
        let mut mails = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.dir.join("maildir").join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Ok(raw) = std::fs::read_to_string(entry.path()) {
                    mails.push(parse(&raw));
                }
            }
        }
        mails
    }

    /// The emails matching `wanted`, once there are at least `count`, for at
    /// most `timeout`.
    pub async fn wait_for(
        &self,
        count: usize,
        timeout: Duration,
        wanted: impl Fn(&Mail) -> bool,
    ) -> Vec<Mail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found: Vec<Mail> = self.messages().into_iter().filter(&wanted).collect();
            if found.len() >= count {
                return found;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} of {count} expected emails arrived within {timeout:?}; all: {:#?}",
                    found.len(),
                    self.messages()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Headers (unfolded, names lower-cased) and the decoded text body.
fn parse(raw: &str) -> Mail {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap_or((raw.as_str(), ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let body = match header("content-transfer-encoding")
        .to_ascii_lowercase()
        .as_str()
    {
        "base64" => {
            let compact: String = body.split_whitespace().collect();
            String::from_utf8_lossy(
                &base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .unwrap_or_default(),
            )
            .into_owned()
        }
        "quoted-printable" => quoted_printable(body),
        _ => body.to_owned(),
    };
    Mail {
        to: header("x-rcptto"),
        subject: header("subject"),
        body,
    }
}

fn quoted_printable(text: &str) -> String {
    let text = text.replace("=\n", "");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
