//! The HTTP server of `probe-user --metrics`.
//!
//! # What a client can do to the endpoint
//!
//! Anyone who can connect to the address (with the default, 127.0.0.1, any local user), with or
//! without credentials or a client certificate, can hold at most [`MAX_CONNECTIONS`] (64)
//! connections at once, each for at most [`CONNECTION_DEADLINE`] (10 s) and with at most
//! [`MAX_BUF_SIZE`] (16 KiB) of its request buffered:
//!
//! - with TLS (`--web-config-file`'s `tls_server_config`), a connection that has not completed
//!   its handshake within [`HEADER_READ_TIMEOUT`] (5 s) is closed, like one that sends nothing;
//!   a handshake that fails (plain HTTP, no or an unverified client certificate where one is
//!   required) closes the connection with a TLS alert, before any request is read;
//! - a connection that has not sent its request headers within [`HEADER_READ_TIMEOUT`] (5 s,
//!   counted after the handshake with TLS) is closed, however slowly it sends them (idle
//!   connections and slowloris clients);
//! - keep-alive is off (one request per connection, answered with `connection: close`), and
//!   any connection still open [`CONNECTION_DEADLINE`] after it was accepted is closed,
//!   whatever the client does (a slow body, a response it does not read);
//! - connections beyond the cap are accepted, answered `503 Service Unavailable` and closed at
//!   once: they neither queue nor hold anything, and the accept loop never waits for a slot;
//! - errors accepting a connection (`EMFILE` when the process is out of file descriptors,
//!   `ENOBUFS`, ...) pause accepting for 100 ms, doubling up to 1 s, and accepting resumes: the
//!   first error of a run is reported on stderr once, later ones only at `RUST_LOG=warn`;
//! - with `basic_auth_users`, a request without a user's name and password is answered `401`
//!   with `WWW-Authenticate: Basic realm="probe-user"` and nothing else. A password is checked
//!   with bcrypt off the runtime's thread, one check at a time (`web/auth.rs`), and a right one
//!   is remembered (as a keyed hash) so that later scrapes cost no bcrypt; an unknown user
//!   costs the same comparison as a known one, so the time of a `401` does not tell which users
//!   exist. A client sending wrong passwords keeps one core busy at most; a scrape whose
//!   password is not remembered yet (the first after a start) waits its turn behind theirs,
//!   within the connection deadline, while remembered ones need no turn.
//!
//! - at most [`super::body::WRITERS`] (2) scrapes' expositions are written at once, each
//!   until its client has read it (or its deadline): a scrape beyond them is answered `503`
//!   with `retry-after: 1`, so clients that ask and never read hold at most that much memory.
//!
//! So a user who keeps opening connections can make scrapes fail (503 or a closed connection)
//! for as long as they keep every slot taken, which needs a new connection per slot at least
//! every 10 s (every 5 s without sending a request); they cannot stop the endpoint for good,
//! and once they stop, scrapes get through again within 10 s (5 s if their connections were
//! idle). Counting in the kernel is never affected.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use hyper::{Request, Response, StatusCode, body::Incoming, header, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc, oneshot},
};

use super::{
    body::Body,
    text::CONTENT_TYPE,
    web::{Verdict, WebConfig},
};

/// Connections served at once; more are answered 503 and closed. A Prometheus server needs one
/// per scrape (keep-alive is off), so 64 leaves room for several scrapers, overlapping scrapes
/// and a curl or two, while bounding what any client can hold: 64 sockets (well within a
/// 1024-descriptor limit) and 64 × [`MAX_BUF_SIZE`] of buffered requests.
pub const MAX_CONNECTIONS: usize = 64;

/// Time a connection has, from when it is accepted, to send its complete request headers
/// (hyper's `header_read_timeout`, which is not reset by each byte).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a connection is kept, whatever the client does: the same as Prometheus' default
/// `scrape_timeout`, and far longer than answering a scrape takes.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

/// Most bytes of a request buffered per connection (hyper's minimum is 8 KiB; a scrape's
/// request is a few hundred bytes).
pub const MAX_BUF_SIZE: usize = 16 * 1024;

/// First pause after an error accepting a connection; each further error in a row doubles it,
/// up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(100);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The answer to a connection beyond [`MAX_CONNECTIONS`].
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: 5\r\nretry-after: 1\r\nconnection: close\r\n\r\nbusy\n";

/// The challenge of a 401: basic authentication, in a realm named after the program.
const UNAUTHORIZED_CHALLENGE: &str = "Basic realm=\"probe-user\", charset=\"UTF-8\"";

/// How much the server lets each client hold (the constants above, smaller in tests).
#[derive(Clone, Copy, Debug)]
struct Limits {
    max_connections: usize,
    header_read_timeout: Duration,
    connection_deadline: Duration,
}

impl Limits {
    const DEFAULT: Limits = Limits {
        max_connections: MAX_CONNECTIONS,
        header_read_timeout: HEADER_READ_TIMEOUT,
        connection_deadline: CONNECTION_DEADLINE,
    };
}

/// A scrape waiting for the current exposition (see [`super::body::exposition`]), or `None`
/// when [`super::body::WRITERS`] are busy (answered `503`).
pub type Scrape = oneshot::Sender<Option<Body>>;

/// Serves `GET /metrics` on `addr` over HTTP/1.1: each scrape is sent down the returned channel
/// and answered with whatever text the receiver replies (so the numbers are read at scrape
/// time). Returns the address actually bound (its port chosen by the kernel if `addr`'s is 0)
/// and the channel. Runs on the current tokio runtime until the receiver is dropped, within
/// the limits described at the top of this module.
pub async fn serve(
    addr: SocketAddr,
    web: Option<Arc<WebConfig>>,
) -> Result<(SocketAddr, mpsc::Receiver<Scrape>)> {
    serve_with(addr, web, Limits::DEFAULT).await
}

async fn serve_with(
    addr: SocketAddr,
    web: Option<Arc<WebConfig>>,
    limits: Limits,
) -> Result<(SocketAddr, mpsc::Receiver<Scrape>)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    let bound = listener
        .local_addr()
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    let (tx, rx) = mpsc::channel::<Scrape>(16);
    tokio::spawn(accept_loop(listener, tx, web, limits));
    Ok((bound, rx))
}

/// Accepts connections until `scrapes`' receiver is dropped, serving each in its own task
/// (while a slot is free) within `limits`. Never ends on an accept error.
async fn accept_loop(
    listener: TcpListener,
    scrapes: mpsc::Sender<Scrape>,
    web: Option<Arc<WebConfig>>,
    limits: Limits,
) {
    let tls = web
        .as_ref()
        .and_then(|web| web.tls.clone())
        .map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(false)
        .max_buf_size(MAX_BUF_SIZE);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut failing = false;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = scrapes.closed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                failing = false;
                stream
            }
            // That connection is gone, not the listener: take the next one.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                if failing {
                    log::warn!("metrics: cannot accept a connection: {e}; retrying in {backoff:?}");
                } else {
                    eprintln!("probe-user: metrics: cannot accept a connection: {e}; retrying");
                    failing = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = scrapes.closed() => return,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refuse(stream);
            continue;
        };
        let scrapes = scrapes.clone();
        let web = web.clone();
        let service = hyper::service::service_fn(move |req| {
            let (scrapes, web) = (scrapes.clone(), web.clone());
            async move {
                let mut response = match &web {
                    Some(web) => admit(&req, web).await,
                    None => None,
                };
                if response.is_none() {
                    response = Some(respond(req, scrapes).await?);
                }
                let mut response = response.expect("an answer");
                if let Some(web) = &web {
                    response.headers_mut().extend(web.headers.clone());
                }
                Ok::<_, Infallible>(response)
            }
        });
        let http = http.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let served = async {
                match tls {
                    // The handshake is bounded like the request headers that follow it: a
                    // client that opens a connection and never completes it is cut off.
                    Some(tls) => {
                        let handshake = tls.accept(stream);
                        if let Ok(Ok(stream)) =
                            tokio::time::timeout(limits.header_read_timeout, handshake).await
                        {
                            serve_one(&http, stream, service).await;
                        }
                    }
                    None => serve_one(&http, stream, service).await,
                }
            };
            // Past the deadline the connection is dropped, which closes it.
            let _ = tokio::time::timeout(limits.connection_deadline, served).await;
            drop(slot);
        });
    }
}

/// Serves one HTTP/1.1 exchange on `io` (a TCP connection, or TLS over one).
async fn serve_one<S, F>(http: &http1::Builder, io: S, service: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
{
    let _ = http.serve_connection(TokioIo::new(io), service).await;
}

/// The answer to a request that `web`'s basic authentication refuses (401, with the
/// `WWW-Authenticate` challenge that makes clients send credentials), or `None` to answer it.
async fn admit(req: &Request<Incoming>, web: &WebConfig) -> Option<Response<Body>> {
    let auth = web.auth.as_ref()?;
    match auth.check(req.headers().get(header::AUTHORIZATION)).await {
        Verdict::Allowed => None,
        Verdict::Denied => Some(
            Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header(header::WWW_AUTHENTICATE, UNAUTHORIZED_CHALLENGE)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::text(&b"Unauthorized\n"[..]))
                .expect("a valid response"),
        ),
    }
}

/// Errors that end one incoming connection, not the listener's ability to accept more.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// Answers a connection beyond the cap with [`BUSY`] if its socket can take it right now (a
/// fresh socket's send buffer always can) and closes it, without waiting for anything.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(BUSY);
}

async fn respond(
    req: Request<Incoming>,
    scrapes: mpsc::Sender<Scrape>,
) -> Result<Response<Body>, Infallible> {
    let reply = |status, content_type, body: Body| {
        Ok(Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .expect("a valid response"))
    };
    let stopping = || {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            Body::text("stopping\n"),
        )
    };
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            Body::text("try /metrics\n"),
        );
    }
    let (tx, rx) = oneshot::channel();
    if scrapes.send(tx).await.is_err() {
        return stopping();
    }
    match rx.await {
        Ok(Some(body)) => reply(StatusCode::OK, CONTENT_TYPE, body),
        Ok(None) => Ok(Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header(header::CONTENT_TYPE, "text/plain")
            .header(header::RETRY_AFTER, "1")
            .body(Body::text("busy\n"))
            .expect("a valid response")),
        Err(_) => stopping(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Limits small enough for a test to exhaust and wait out.
    const SMALL: Limits = Limits {
        max_connections: 2,
        header_read_timeout: Duration::from_millis(300),
        connection_deadline: Duration::from_secs(2),
    };

    /// Serves on 127.0.0.1 with `limits` (on a thread and runtime of its own, until the test
    /// process ends), answering every scrape with `text`; returns the bound address.
    fn serving(limits: Limits, text: String) -> SocketAddr {
        serving_with(None, limits, text)
    }

    /// [`serving`] with a web config.
    fn serving_with(web: Option<Arc<WebConfig>>, limits: Limits, text: String) -> SocketAddr {
        serving_bodies(web, limits, move || Body::text(text.clone()))
    }

    /// [`serving_with`], answering every scrape with what `body` makes.
    fn serving_bodies(
        web: Option<Arc<WebConfig>>,
        limits: Limits,
        body: impl Fn() -> Body + Send + 'static,
    ) -> SocketAddr {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let (addr, mut scrapes) = serve_with(([127, 0, 0, 1], 0).into(), web, limits)
                    .await
                    .unwrap();
                tx.send(addr).unwrap();
                while let Some(reply) = scrapes.recv().await {
                    let _ = reply.send(Some(body()));
                }
            });
        });
        rx.recv().unwrap()
    }

    /// A connection to `addr` whose reads give up after 5 s.
    fn connect(addr: SocketAddr) -> std::net::TcpStream {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }

    /// Everything `stream` receives until the server closes it (a read timeout fails).
    fn read_all(stream: &mut std::net::TcpStream) -> Vec<u8> {
        use std::io::Read as _;
        let mut received = Vec::new();
        match stream.read_to_end(&mut received) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!(
                "not closed by the server: {e} after {} bytes",
                received.len()
            ),
        }
        received
    }

    /// `GET path` on a new connection: the whole response.
    fn get(addr: SocketAddr, path: &str) -> String {
        use std::io::Write as _;
        let mut stream = connect(addr);
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        String::from_utf8(read_all(&mut stream)).unwrap()
    }

    #[test]
    fn answers_scrapes_of_any_size_and_closes_each_connection() {
        // 1 MiB, far beyond the request buffer.
        let text = format!("{}# EOF\n", "tcpconn_connects_total 1\n".repeat(48 * 1024));
        let addr = serving(Limits::DEFAULT, text.clone());
        let response = get(addr, "/metrics");
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains(&format!("content-type: {CONTENT_TYPE}\r\n")),
            "{head}"
        );
        // Keep-alive is off: the server said so and closed the connection (`get` read to EOF).
        assert!(head.contains("connection: close\r\n"), "{head}");
        assert!(body == text, "{} bytes of {}", body.len(), text.len());
        assert!(get(addr, "/other").starts_with("HTTP/1.1 404 Not Found\r\n"));
    }

    /// An exposition comes in chunks as it is written: sent chunked, whole.
    #[test]
    fn streams_a_chunked_exposition_whole() {
        let text = "tcpconn_connects_total 1\n".repeat(20_000);
        let chunks = text.clone();
        let addr = serving_bodies(None, Limits::DEFAULT, move || {
            let parts: Vec<&[u8]> = chunks.as_bytes().chunks(64 * 1024).collect();
            let (sender, body) = mpsc::channel(parts.len());
            for part in parts {
                sender.try_send(part.to_vec().into()).unwrap();
            }
            Body::Chunks(body)
        });
        let response = get(addr, "/metrics");
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
        let mut whole = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size, 16).unwrap();
            if size == 0 {
                break;
            }
            whole.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        assert!(whole == text, "{} bytes of {}", whole.len(), text.len());
    }

    #[test]
    fn connections_beyond_the_cap_are_refused_at_once_until_slots_free_up() {
        let addr = serving(SMALL, "# EOF\n".into());
        let start = std::time::Instant::now();
        let mut idle: Vec<_> = (0..SMALL.max_connections).map(|_| connect(addr)).collect();
        // Answered at once, not after waiting for a slot (which would give a 200).
        for _ in 0..3 {
            let refused = read_all(&mut connect(addr));
            assert_eq!(
                String::from_utf8_lossy(&refused),
                String::from_utf8_lossy(BUSY)
            );
        }
        // The idle connections sent no request: closed after the header timeout, no sooner.
        for stream in &mut idle {
            assert_eq!(read_all(stream), b"");
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= SMALL.header_read_timeout, "{elapsed:?}");
        assert!(elapsed < SMALL.connection_deadline, "{elapsed:?}");
        assert!(get(addr, "/metrics").starts_with("HTTP/1.1 200 OK\r\n"));
    }

    #[test]
    fn slow_clients_are_cut_off() {
        use std::io::Write as _;
        // More than the loopback socket buffers can hold, so that a client that does not read
        // keeps the response from being sent.
        let text = format!("{}# EOF\n", "tcpconn_connects_total 1\n".repeat(1 << 20));
        let addr = serving(SMALL, text.clone());

        // Headers that never end: cut off at the header timeout.
        let mut slow_headers = connect(addr);
        let start = std::time::Instant::now();
        slow_headers
            .write_all(b"GET /metrics HTTP/1.1\r\n")
            .unwrap();
        assert_eq!(read_all(&mut slow_headers), b"");
        let elapsed = start.elapsed();
        assert!(elapsed >= SMALL.header_read_timeout, "{elapsed:?}");
        assert!(elapsed < SMALL.connection_deadline, "{elapsed:?}");

        // A response nobody reads: cut off at the connection deadline.
        let mut slow_reader = connect(addr);
        slow_reader
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        std::thread::sleep(SMALL.connection_deadline + Duration::from_millis(500));
        let received = read_all(&mut slow_reader);
        assert!(received.len() < text.len(), "{} bytes", received.len());

        // Both slots are free again.
        for _ in 0..SMALL.max_connections + 1 {
            assert!(get(addr, "/metrics").starts_with("HTTP/1.1 200 OK\r\n"));
        }
    }

    /// TLS with a self-signed certificate for localhost.
    fn tls_only() -> Arc<WebConfig> {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        #[allow(deprecated)] // The provider probe-user serves with: see web/tls.rs.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        Arc::new(WebConfig {
            tls: Some(Arc::new(tls)),
            auth: None,
            headers: Default::default(),
        })
    }

    #[test]
    fn tls_handshakes_count_against_the_limits() {
        use std::io::Write as _;
        let addr = serving_with(Some(tls_only()), SMALL, "# EOF\n".into());
        let start = std::time::Instant::now();
        // One connection that never starts its handshake, one that stops halfway through its
        // ClientHello (a record header announcing 512 bytes, then 3 of them).
        let mut idle = connect(addr);
        let mut partial = connect(addr);
        partial
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01])
            .unwrap();
        // Both hold a slot: the cap is reached and the next connection is refused at once.
        let refused = read_all(&mut connect(addr));
        assert_eq!(
            String::from_utf8_lossy(&refused),
            String::from_utf8_lossy(BUSY)
        );
        // Both are cut off at the header timeout, no sooner, and not at the deadline.
        assert_eq!(read_all(&mut idle), b"");
        assert_eq!(read_all(&mut partial), b"");
        let elapsed = start.elapsed();
        assert!(elapsed >= SMALL.header_read_timeout, "{elapsed:?}");
        assert!(elapsed < SMALL.connection_deadline, "{elapsed:?}");
    }
}
