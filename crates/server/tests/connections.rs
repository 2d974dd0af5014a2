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
use basalt_server::listener::{serve, ConnectionLimits, Tls};
use basalt_server::{router, AppState, ServerConfig};

const IDLE: Duration = Duration::from_millis(800);

/// Serves `app` on a loopback port from a runtime of its own; the server lives as long as
/// the test process.
fn start(app: Router, max_connections: usize) -> SocketAddr {
    start_with(app, max_connections, None)
}

fn start_with(app: Router, max_connections: usize, tls: Option<Tls>) -> SocketAddr {
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
                tls,
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

/// The test certificate authority's files (`tests/fixtures/tls`: a CA and a leaf for
/// 127.0.0.1 it signed, valid for a century; test material, not a secret).
fn tls_fixture(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    std::path::Path::new(&dir)
        .join("tests/fixtures/tls")
        .join(name)
}

fn tls_server() -> SocketAddr {
    let tls = Tls::from_pem_files(&tls_fixture("cert.pem"), &tls_fixture("key.pem")).unwrap();
    start_with(toy(), 16, Some(tls))
}

/// A TLS client that trusts the test CA and offers `alpn`.
async fn tls_connect(
    addr: SocketAddr,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(tls_fixture("ca.pem")).unwrap())
        .unwrap();
    #[allow(deprecated)] // the server's provider; see `Tls::from_pem_files`
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

#[tokio::test]
async fn https_serves_http1_to_a_client_that_trusts_the_certificate() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = tls_server();
    let mut s = tls_connect(addr, &[b"http/1.1"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("ok"), "{text}");
}

#[tokio::test]
async fn https_negotiates_http2_through_alpn() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = tls_server();
    let mut s = tls_connect(addr, &[b"h2", b"http/1.1"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut header = [0u8; 9];
    s.read_exact(&mut header).await.unwrap();
    assert_eq!(
        header[3], 0x4,
        "the server's first frame is its SETTINGS: {header:?}"
    );
}

#[test]
fn a_tls_handshake_that_never_starts_is_closed() {
    let addr = tls_server();
    let mut s = connect(addr);
    let (_, waited) = until_closed(&mut s);
    assert!(waited < IDLE * 4, "closed after {waited:?}");
}

#[test]
fn a_missing_or_wrong_certificate_is_a_clear_error() {
    let missing = Tls::from_pem_files(&tls_fixture("nope.pem"), &tls_fixture("key.pem"));
    assert!(missing.err().unwrap().to_string().contains("nope.pem"));
    let swapped = Tls::from_pem_files(&tls_fixture("key.pem"), &tls_fixture("cert.pem"));
    assert!(swapped
        .err()
        .unwrap()
        .to_string()
        .contains("no PEM certificate"));
}
