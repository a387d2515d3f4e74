//! `screenpilot serve` as a process (issue 17, finding 5): running out of file descriptors
//! (EMFILE on accept) must not take the server down; once connections close it answers again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The server, killed when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn wait_until_listening(server: &mut Serve, addr: SocketAddr) {
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(server.0.try_wait().unwrap().is_none(), "the server exited before listening");
        assert!(start.elapsed() < Duration::from_secs(120), "the server did not start listening");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One chat request on a new connection; returns the status line (empty when the exchange
/// failed: refused, reset or timed out).
fn chat(addr: SocketAddr) -> String {
    let body = r#"{"messages":[{"role":"user","content":"Hello?"}],"max_tokens":3}"#;
    let exchange = || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out.lines().next().unwrap_or("").to_string())
    };
    exchange().unwrap_or_default()
}

#[test]
fn running_out_of_file_descriptors_does_not_take_the_server_down() {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // A low descriptor limit for the server alone, and a connection cap above it, so that
    // accept() itself fails with EMFILE.
    let script = format!(
        "ulimit -n 64 && exec \"$0\" serve --model \"$1\" --port {port} --max-connections 1000 --header-timeout-s 2"
    );
    let child = Command::new("sh")
        .args(["-c", &script, env!("CARGO_BIN_EXE_screenpilot")])
        .arg(tiny())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Serve(child);
    wait_until_listening(&mut server, addr);
    assert!(chat(addr).contains(" 200 "), "answers before the flood");
    let flood: Vec<TcpStream> = (0..150).filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()).collect();
    assert!(flood.len() > 64, "only {} connections were made", flood.len());
    std::thread::sleep(Duration::from_secs(1));
    assert!(server.0.try_wait().unwrap().is_none(), "the server died while out of descriptors");
    drop(flood);
    // The silent connections are closed (by us, and by the header timeout); then it answers.
    let start = Instant::now();
    loop {
        let status = chat(addr);
        if status.contains(" 200 ") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no answer after the flood: {status:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    server.0.kill().ok();
    let mut err = String::new();
    server.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("accept failed"), "the flood never exhausted the descriptors: {err}");
}
