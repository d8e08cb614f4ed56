//! The `gocommerce` binary as an operator meets it: what it prints when it
//! cannot start, and the logs it writes into a pipe.

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `gocommerce gateway` with nothing of this shell's environment but the
/// listeners' addresses and the log level: the gateway needs no database,
/// and starts without its backends running.
fn gateway(gateway_addr: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gocommerce"));
    command
        .arg("gateway")
        .env_clear()
        .env("GATEWAY_ADDR", gateway_addr)
        .env("ADMIN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
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
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines.send(line.unwrap()).is_err() {
                break;
            }
        }
    });

    // Act: read until the process says it started.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut read = Vec::new();
    while let Ok(line) = received.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let started = line.contains("started");
        read.push(line);
        if started {
            break;
        }
    }
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
