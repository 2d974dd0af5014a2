//! Accepting and keeping connections: HTTP/1.1 and HTTP/2 on one port, in cleartext (HTTP/2
//! with prior knowledge) or over TLS (HTTP/2 chosen through ALPN), under limits that keep
//! idle, slow and surplus connections from holding the server.
//!
//! - At most [`ConnectionLimits::max_connections`] are open at once; further clients wait
//!   in the kernel's accept queue until one closes.
//! - A connection with no request in flight is closed once it has been idle for
//!   [`ConnectionLimits::idle_timeout`]: a keep-alive connection nobody uses, one that never
//!   sends a byte, one that never completes its headers (HTTP/1's header timer is the same
//!   length, so headers trickled a byte at a time do not keep it open either). A request in
//!   flight, such as a long stream or a slow generation, keeps its connection open.
//! - A TLS handshake must finish within the idle timeout.
//! - Request bodies have their own deadline, applied where they are read (`auth`).
//!
//! On shutdown, connections finish the requests they are serving and close.
//!
//! This module knows nothing of the routes it serves.

use std::convert::Infallible;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::rustls;
use tower::ServiceExt;

/// How many connections may be open, and how long one may sit idle.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// Idle (no request in flight, no bytes moving) this long, a connection is closed; an
    /// HTTP/1 request's headers must also be complete within this long of the connection's
    /// last response (or its opening).
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("{0} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey(PathBuf),
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// TLS for the listener: a certificate chain and its key, with ALPN offering HTTP/2 first
/// (the AWS SDK for JavaScript's Bedrock Runtime client speaks only HTTP/2) and HTTP/1.1.
#[derive(Clone)]
pub struct Tls(tokio_rustls::TlsAcceptor);

impl Tls {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
            .filter_map(Result::ok)
            .collect();
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(cert.to_path_buf()));
        }
        let key = PrivateKeyDer::from_pem_slice(&read(key)?)
            .map_err(|_| TlsError::NoKey(key.to_path_buf()))?;
        // ring, not aws-lc-rs: no C toolchain beyond cc to build it. rustls deprecates ring's
        // provider for lacking post-quantum key exchange (X25519MLKEM768); the classical
        // groups it offers are what most clients negotiate today.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` resolves,
/// then lets open connections finish what they are serving for up to `grace`. Returns once
/// every connection is closed or the grace period is over.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<Tls>,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let max = limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout);
    http.http2().timer(TokioTimer::new());
    let http = Arc::new(http);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset while queued: wait a
                    // little rather than spin, and keep serving.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let http = Arc::clone(&http);
        let app = app.clone();
        let stop = stop_rx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let activity = Arc::new(Activity::new());
            let socket = Watched {
                inner: stream,
                activity: Arc::clone(&activity),
            };
            let connection = Connection {
                http: &http,
                app,
                activity,
                idle_timeout: limits.idle_timeout,
                stop,
            };
            match tls {
                None => connection.serve(socket).await,
                Some(Tls(acceptor)) => {
                    let handshake = acceptor.accept(socket);
                    match tokio::time::timeout(limits.idle_timeout, handshake).await {
                        Ok(Ok(stream)) => connection.serve(stream).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let all_closed = async {
        let _ = permits.acquire_many(max as u32).await;
    };
    if tokio::time::timeout(grace, all_closed).await.is_err() {
        tracing::warn!("grace period over; closing remaining connections");
    }
}

/// One accepted connection and what serving it needs.
struct Connection<'a> {
    http: &'a auto::Builder<TokioExecutor>,
    app: Router,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    stop: watch::Receiver<bool>,
}

impl Connection<'_> {
    /// Serves requests on `io` until the client closes it, it idles out, or shutdown has
    /// let its requests finish.
    async fn serve<I>(mut self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let counted = Arc::clone(&self.activity);
        let app = self.app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let in_flight = InFlight::start(Arc::clone(&counted));
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(Body::new)).await?;
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(Counted {
                        inner: body,
                        _in_flight: in_flight,
                    })
                }))
            }
        });
        let connection = self
            .http
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        let idle_timeout = self.idle_timeout;
        let tick = (idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut stopping = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = self.stop.changed(), if !stopping => {
                    stopping = true;
                    connection.as_mut().graceful_shutdown();
                }
                _ = tokio::time::sleep(tick) => {
                    let idle = self.activity.in_flight() == 0
                        && self.activity.idle_for() >= idle_timeout;
                    if idle {
                        tracing::debug!("closing an idle connection");
                        return; // dropping the connection closes the socket
                    }
                }
            }
        }
    }
}

/// When a connection last moved a byte, and how many of its requests are being served.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// One request being served: counted from its headers until its response body is dropped
/// (sent, or abandoned by a client that went away).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A response body that keeps its request counted as in flight until it is dropped.
struct Counted {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that records when it last read or wrote a byte.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
