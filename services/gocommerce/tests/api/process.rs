//! The `gocommerce` binary as an operator meets it: what it prints when it
//! cannot start, the logs it writes into a pipe, and how it answers its
//! probes and stops while it still waits for its database, or does not wait.

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::helpers::unused_port;

/// `gocommerce <component>` with nothing of this shell's environment but
/// `vars`, a free admin port and the log level.
fn gocommerce(component: &str, vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gocommerce"));
    command
        .arg(component)
        .env_clear()
        .envs(vars.iter().copied())
        .env("ADMIN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// The gateway needs no database, and starts without its backends running.
fn gateway(gateway_addr: &str) -> Command {
    gocommerce("gateway", &[("GATEWAY_ADDR", gateway_addr)])
}

/// The lines `child` writes to its standard output, as they come.
fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    received
}

/// The lines read until one contains `wanted`, or all read in 30 s.
fn read_until(lines: &mpsc::Receiver<String>, wanted: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut read = Vec::new();
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let found = line.contains(wanted);
        read.push(line);
        if found {
            break;
        }
    }
    read
}

#[test]
fn a_taken_port_stops_the_process_saying_which_listener_and_the_cause_once() {
    // Arrange
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();

    // Act
    let output = gateway(&addr.to_string()).output().unwrap();

    // Assert
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    let said = stderr.trim_end();
    assert!(
        said.starts_with(&format!(
            "Error: gateway failed to start: cannot bind the HTTP listener to {addr}: "
        )),
        "{said}"
    );
    assert_eq!(
        said.to_lowercase().matches("in use").count(),
        1,
        "the cause is told once: {said}"
    );
    assert_eq!(said.lines().count(), 1, "one line: {said}");
}

#[test]
fn logs_written_into_a_pipe_carry_no_colour_codes() {
    // Arrange
    let mut child = gateway("127.0.0.1:0").spawn().unwrap();
    let lines = stdout_lines(&mut child);

    // Act
    let read = read_until(&lines, "started");
    child.kill().unwrap();
    child.wait().unwrap();

    // Assert
    assert!(
        read.last().is_some_and(|line| line.contains("started")),
        "the gateway never said it started: {read:?}"
    );
    assert!(read.len() >= 2, "{read:?}");
    for line in &read {
        assert!(!line.contains('\u{1b}'), "an escape code in {line:?}");
    }
}

#[tokio::test]
async fn a_service_waiting_for_its_database_is_live_not_ready_and_stops_at_once_when_told() {
    // Arrange: a payment service whose database does not answer yet.
    let (closed, admin) = (unused_port(), unused_port());
    let url = format!("postgres://postgres@127.0.0.1:{closed}/gct_never_up");
    let admin = format!("http://127.0.0.1:{admin}");
    let mut child = gocommerce(
        "payment",
        &[
            ("PAYMENT_DATABASE_URL", &url),
            ("PAYMENT_GRPC_ADDR", "127.0.0.1:0"),
        ],
    )
    .env("ADMIN_ADDR", admin.trim_start_matches("http://"))
    .spawn()
    .unwrap();
    let lines = stdout_lines(&mut child);
    let waiting = read_until(&lines, "waiting for it");
    assert!(
        waiting
            .last()
            .is_some_and(|line| line.contains("waiting for it")),
        "the service did not wait for its database: {waiting:?}"
    );
    let client = reqwest::Client::new();
    let live = client.get(format!("{admin}/healthz")).send().await.unwrap();
    let ready = client.get(format!("{admin}/readyz")).send().await.unwrap();

    // Act
    let told = Instant::now();
    let signalled = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let stopped = read_until(&lines, "stopped while starting");
    let status = child.wait().unwrap();

    // Assert
    assert_eq!(live.status(), reqwest::StatusCode::OK, "alive: no restart");
    assert_eq!(
        ready.status(),
        reqwest::StatusCode::SERVICE_UNAVAILABLE,
        "no traffic for a service that has not started"
    );
    assert!(signalled.success());
    assert!(
        stopped
            .last()
            .is_some_and(|line| line.contains("stopped while starting")),
        "{stopped:?}"
    );
    assert!(status.success(), "a requested stop is no failure: {status}");
    assert!(
        told.elapsed() < Duration::from_secs(5),
        "stopped {:?} after being told, not when its wait was over",
        told.elapsed()
    );
}

#[test]
fn a_service_told_not_to_wait_for_its_database_fails_at_once_saying_so() {
    // Arrange: a laptop's PostgreSQL that is not running.
    let closed = unused_port();
    let url = format!("postgres://postgres@127.0.0.1:{closed}/gct_never_up");
    let started = Instant::now();

    // Act
    let output = gocommerce(
        "payment",
        &[
            ("PAYMENT_DATABASE_URL", &url),
            ("PAYMENT_GRPC_ADDR", "127.0.0.1:0"),
            ("DATABASE_STARTUP_WAIT_SECONDS", "0"),
        ],
    )
    .output()
    .unwrap();

    // Assert
    assert!(!output.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "gave up after {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("Error: payment service failed to start: ")
            && stderr.contains("cannot connect to the database")
            && stderr.to_lowercase().contains("refused"),
        "{stderr}"
    );
}
