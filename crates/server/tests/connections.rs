#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

//! The listener over real sockets: idle, silent and slow connections are closed, requests
//! in flight are not, connections beyond the cap wait, HTTP/2 with prior knowledge is
//! spoken, and a body trickled in past its deadline is a 408. Before, each of these
//! connections stayed open indefinitely, with no key needed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use basalt_server::listener::{serve, ConnectionLimits};
use basalt_server::{router, AppState, ServerConfig};

const IDLE: Duration = Duration::from_millis(800);

/// Serves `app` on a loopback port from a runtime of its own; the server lives as long as
/// the test process.
fn start(app: Router, max_connections: usize) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let limits = ConnectionLimits {
                max_connections,
                idle_timeout: IDLE,
            };
            serve(
                listener,
                app,
                limits,
                std::future::pending(),
                Duration::ZERO,
            )
            .await;
        });
    });
    rx.recv().unwrap()
}

fn toy() -> Router {
    Router::new().route("/", get(|| async { "ok" })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(IDLE * 3).await;
            "slow but fine"
        }),
    )
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads until the server closes the connection; returns what it sent and how long that
/// took.
fn until_closed(s: &mut TcpStream) -> (String, Duration) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
}

fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n")
}

#[test]
fn a_connection_that_sends_nothing_is_closed() {
    let addr = start(toy(), 16);
    let mut s = connect(addr);
    let (_, waited) = until_closed(&mut s);
    assert!(waited < IDLE * 4, "closed after {waited:?}");
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_its_response() {
    let addr = start(toy(), 16);
    let mut s = connect(addr);
    s.write_all(get_request("/").as_bytes()).unwrap();
    let (text, waited) = until_closed(&mut s);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("ok"), "{text}");
    assert!(waited < IDLE * 4, "closed after {waited:?}");
}

#[test]
fn headers_trickled_a_byte_at_a_time_do_not_keep_a_connection() {
    let addr = start(toy(), 16);
    let mut s = connect(addr);
    let request = get_request("/");
    let start = Instant::now();
    let mut closed = false;
    for b in request.as_bytes().iter().cycle().take(200) {
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if start.elapsed() > IDLE * 6 {
            break;
        }
    }
    if !closed {
        let (text, _) = until_closed(&mut s);
        assert!(!text.contains(" 200 "), "{text}");
    }
    assert!(
        start.elapsed() < IDLE * 6,
        "still open after {:?}",
        start.elapsed()
    );
}

#[test]
fn a_request_in_flight_keeps_its_connection_however_long_it_takes() {
    let addr = start(toy(), 16);
    let mut s = connect(addr);
    s.write_all(get_request("/slow").as_bytes()).unwrap();
    let (text, _) = until_closed(&mut s);
    assert!(text.contains("slow but fine"), "{text}");
}

#[test]
fn connections_beyond_the_cap_wait_for_one_to_close() {
    let addr = start(toy(), 2);
    let first = connect(addr);
    let _second = connect(addr);
    std::thread::sleep(Duration::from_millis(100));
    let mut third = connect(addr); // the kernel accepts it; the server does not yet
    third
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    third.write_all(get_request("/").as_bytes()).unwrap();
    let mut buf = [0u8; 64];
    assert!(third.read(&mut buf).is_err(), "served beyond the cap");
    // The first two are closed as idle; then the third is served.
    first.shutdown(std::net::Shutdown::Both).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (text, _) = until_closed(&mut third);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[test]
fn http2_with_prior_knowledge_is_spoken() {
    let addr = start(toy(), 16);
    let mut s = connect(addr);
    // The client preface, then an empty SETTINGS frame.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    s.write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]).unwrap();
    let mut header = [0u8; 9];
    s.read_exact(&mut header).unwrap();
    assert_eq!(
        header[3], 0x4,
        "the server's first frame is its SETTINGS: {header:?}"
    );
}

#[test]
fn a_body_trickled_past_its_deadline_is_a_408() {
    let state = Arc::new(AppState::new(Vec::new()));
    let config = ServerConfig {
        body_read_timeout: IDLE,
        ..Default::default()
    };
    let addr = start(router(state, config), 16);
    let mut s = connect(addr);
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{",
    )
    .unwrap();
    let start = Instant::now();
    let mut answered = String::new();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while start.elapsed() < IDLE * 8 {
        let _ = s.write_all(b" ");
        let mut buf = [0u8; 4096];
        if let Ok(n) = s.read(&mut buf) {
            answered.push_str(&String::from_utf8_lossy(&buf[..n]));
            if n == 0 || answered.contains("\r\n\r\n") {
                break;
            }
        }
    }
    assert!(answered.starts_with("HTTP/1.1 408"), "{answered:?}");
    assert!(
        start.elapsed() < IDLE * 4,
        "answered after {:?}",
        start.elapsed()
    );
}
