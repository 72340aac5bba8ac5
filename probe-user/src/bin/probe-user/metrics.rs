//! Prometheus / OpenMetrics exposition of the kernel's connect counts and of what was lost, and
//! a small HTTP server for it (`probe-user --metrics`).
//!
//! # What a client can do to the endpoint
//!
//! Anyone who can connect to the address (with the default, 127.0.0.1, any local user) can
//! hold at most [`MAX_CONNECTIONS`] (64) connections at once, each for at most
//! [`CONNECTION_DEADLINE`] (10 s) and with at most [`MAX_BUF_SIZE`] (16 KiB) of its request
//! buffered:
//!
//! - a connection that has not sent its request headers within [`HEADER_READ_TIMEOUT`] (5 s)
//!   is closed, however slowly it sends them (idle connections and slowloris clients);
//! - keep-alive is off (one request per connection, answered with `connection: close`), and
//!   any connection still open [`CONNECTION_DEADLINE`] after it was accepted is closed,
//!   whatever the client does (a slow body, a response it does not read);
//! - connections beyond the cap are accepted, answered `503 Service Unavailable` and closed at
//!   once: they neither queue nor hold anything, and the accept loop never waits for a slot;
//! - errors accepting a connection (`EMFILE` when the process is out of file descriptors,
//!   `ENOBUFS`, ...) pause accepting for 100 ms, doubling up to 1 s, and accepting resumes: the
//!   first error of a run is reported on stderr once, later ones only at `RUST_LOG=warn`.
//!
//! So a user who keeps opening connections can make scrapes fail (503 or a closed connection)
//! for as long as they keep every slot taken, which needs a new connection per slot at least
//! every 10 s (every 5 s without sending a request); they cannot stop the endpoint for good,
//! and once they stop, scrapes get through again within 10 s (5 s if their connections were
//! idle). Counting in the kernel is never affected.

use std::{collections::BTreeMap, convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, header, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use probe_common::Named as _;
use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet, text::encode},
    metrics::MetricType,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc, oneshot},
};

use probe_user::{ConnectCount, Counters, LATENCY_BUCKET_BOUNDS_NS};

/// The exposition's content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The namespace of every metric (`tcpconn_connects_total`, ...). Not `probe_`: that is
/// blackbox_exporter's (`probe_success`, `probe_duration_seconds`), which dashboards and
/// recording rules select by prefix.
pub const PREFIX: &str = "tcpconn";

/// Renders `counts` (from [`probe_user::Tracer::connect_counts`]) and `counters` as OpenMetrics
/// text: `tcpconn_connects_total{family,dport}` (plus `daddr` when `with_daddr`; counts of the
/// same port and family are summed otherwise) and `tcpconn_events_{dropped,missed,malformed}_total`.
/// With outcomes also `tcpconn_connect_failures_total{...,reason}` (every outcome but
/// established and pending) and the histogram `tcpconn_connect_duration_seconds{...,outcome}`
/// (buckets of powers of two microseconds, counted in the kernel).
///
/// With `label`, every connect series carries the caller's cgroup (its path, or its id if the
/// path could not be resolved) or container (its id, empty for none) as one more label; the
/// kernel counts per cgroup, so there are as many label values as the `--count` key limit
/// allows, and connects beyond it are counted in `tcpconn_events_dropped_total`.
pub fn render(
    counts: &[ConnectCount],
    counters: Counters,
    with_daddr: bool,
    label: Option<WorkloadLabel>,
) -> String {
    let mut registry = Registry::with_prefix(PREFIX);
    let connects = Family::<Labels, Counter>::default();
    registry.register(
        "connects",
        "TCP connect calls traced (tcp_v4_connect / tcp_v6_connect), by destination",
        connects.clone(),
    );
    let failures = Family::<Labels, Counter>::default();
    let mut durations = Histograms::default();
    for c in counts {
        let mut labels = vec![
            ("family".to_string(), c.family.name().to_string()),
            ("dport".to_string(), c.dport.to_string()),
        ];
        if let (true, Some(daddr)) = (with_daddr, c.daddr) {
            labels.push(("daddr".to_string(), daddr.to_string()));
        }
        if let (Some(label), Some(w)) = (label, &c.workload) {
            let value = match label {
                WorkloadLabel::Cgroup => w
                    .cgroup
                    .as_deref()
                    .map_or_else(|| c.cgroup_id.unwrap_or(0).to_string(), str::to_string),
                WorkloadLabel::Container => w.container.as_deref().unwrap_or("").to_string(),
            };
            labels.push((label.name().to_string(), escape_label_value(&value)));
        }
        connects.get_or_create(&labels).inc_by(c.connects);
        let Some(outcome) = c.outcome else {
            continue;
        };
        if outcome.is_failure() {
            let mut labels = labels.clone();
            labels.push(("reason".to_string(), outcome.name().to_string()));
            failures.get_or_create(&labels).inc_by(c.connects);
        }
        labels.push(("outcome".to_string(), outcome.name().to_string()));
        durations.add(labels, c);
    }
    if counts.iter().any(|c| c.outcome.is_some()) {
        registry.register(
            "connect_failures",
            "TCP connects that did not come up, by destination and reason (the outcome)",
            failures,
        );
        registry.register(
            "connect_duration_seconds",
            "Time from the connect call to its outcome, by destination and outcome",
            durations,
        );
    }
    for (name, help, value) in [
        (
            "events_dropped",
            "Connects not counted: a kernel map was full",
            counters.dropped,
        ),
        (
            "events_missed",
            "Connects seen starting but never completing (missed returns, skipped runs, in flight at exit)",
            counters.missed,
        ),
        (
            "events_malformed",
            "Undecodable ring-buffer records",
            counters.malformed,
        ),
    ] {
        let counter = Counter::<u64>::default();
        counter.inc_by(value);
        registry.register(name, help, counter);
    }
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

/// `value` as an OpenMetrics label value: prometheus-client 0.23 writes label values as they
/// are, and a cgroup's name is anyone's choice who can create one (a delegated subtree, a
/// rootless container): a `"` or `\` in it would otherwise break the exposition, and with it
/// the whole scrape.
fn escape_label_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// `--metrics-label`: the workload label of every connect series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkloadLabel {
    /// `cgroup`: the caller's cgroup v2 path.
    Cgroup,
    /// `container`: the caller's container id.
    Container,
}

impl WorkloadLabel {
    /// The label's name.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadLabel::Cgroup => "cgroup",
            WorkloadLabel::Container => "container",
        }
    }
}

/// A metric's labels, in order.
type Labels = Vec<(String, String)>;

/// Latency histograms counted in the kernel (already bucketed), one per label set (a map: a
/// scrape may merge up to `MAX_COUNT_KEYS` rows).
#[derive(Debug, Default)]
struct Histograms(BTreeMap<Labels, Histogram>);

/// One histogram: sum in seconds, count, and (upper bound in seconds, count) per bucket, not
/// cumulative (the encoder accumulates), the last bound `+Inf`.
#[derive(Debug)]
struct Histogram {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl Histograms {
    /// Adds the histogram of `count` (rows of one label set are merged: by port, several
    /// destinations share one).
    fn add(&mut self, labels: Labels, count: &ConnectCount) {
        let histogram = self.0.entry(labels).or_insert_with(|| Histogram {
            sum: 0.0,
            count: 0,
            buckets: LATENCY_BUCKET_BOUNDS_NS
                .iter()
                .map(|&bound| (bound as f64 / 1e9, 0))
                // The encoder writes `+Inf` for this bound.
                .chain([(f64::MAX, 0)])
                .collect(),
        });
        histogram.sum += count.latency_ns as f64 / 1e9;
        histogram.count += count.connects;
        for (bucket, n) in histogram.buckets.iter_mut().zip(count.latency_buckets) {
            bucket.1 += n;
        }
    }
}

impl EncodeMetric for Histograms {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, h) in &self.0 {
            encoder
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

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

/// A scrape waiting for the current exposition text.
pub type Scrape = oneshot::Sender<String>;

/// Serves `GET /metrics` on `addr` over HTTP/1.1: each scrape is sent down the returned channel
/// and answered with whatever text the receiver replies (so the numbers are read at scrape
/// time). Returns the address actually bound (its port chosen by the kernel if `addr`'s is 0)
/// and the channel. Runs on the current tokio runtime until the receiver is dropped, within
/// the limits described at the top of this module.
pub async fn serve(addr: SocketAddr) -> Result<(SocketAddr, mpsc::Receiver<Scrape>)> {
    serve_with(addr, Limits::DEFAULT).await
}

async fn serve_with(
    addr: SocketAddr,
    limits: Limits,
) -> Result<(SocketAddr, mpsc::Receiver<Scrape>)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    let bound = listener
        .local_addr()
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    let (tx, rx) = mpsc::channel::<Scrape>(16);
    tokio::spawn(accept_loop(listener, tx, limits));
    Ok((bound, rx))
}

/// Accepts connections until `scrapes`' receiver is dropped, serving each in its own task
/// (while a slot is free) within `limits`. Never ends on an accept error.
async fn accept_loop(listener: TcpListener, scrapes: mpsc::Sender<Scrape>, limits: Limits) {
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
        let service = hyper::service::service_fn(move |req| respond(req, scrapes.clone()));
        let connection = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            // Past the deadline the connection is dropped, which closes it.
            let _ = tokio::time::timeout(limits.connection_deadline, connection).await;
            drop(slot);
        });
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
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status, content_type, body: String| {
        Ok(Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response"))
    };
    if req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "try /metrics\n".into());
    }
    let (tx, rx) = oneshot::channel();
    if scrapes.send(tx).await.is_err() {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "stopping\n".into(),
        );
    }
    match rx.await {
        Ok(text) => reply(StatusCode::OK, CONTENT_TYPE, text),
        Err(_) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "stopping\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_user::Family as IpFamily;

    /// A count of `connects` to `daddr`:443, without outcome.
    fn count(daddr: &str, connects: u64) -> ConnectCount {
        let mut count = ConnectCount::new(IpFamily::V4, Some(daddr.parse().unwrap()), 443);
        count.connects = connects;
        count
    }

    #[test]
    fn renders_outcomes_as_failure_counters_and_histograms() {
        let mut established = count("10.0.0.1", 3);
        established.outcome = Some(probe_user::Outcome::Established);
        established.latency_ns = 3_000_000;
        established.latency_buckets[10] = 3; // <= 1.024 ms
        let mut refused = count("10.0.0.2", 2);
        refused.outcome = Some(probe_user::Outcome::Refused);
        refused.latency_ns = 100_000;
        refused.latency_buckets[6] = 2; // <= 64 us
        let text = render(&[established, refused], Counters::default(), false, None);
        for line in [
            "tcpconn_connects_total{family=\"ipv4\",dport=\"443\"} 5\n",
            "tcpconn_connect_failures_total{family=\"ipv4\",dport=\"443\",reason=\"refused\"} 2\n",
            "tcpconn_connect_duration_seconds_sum{family=\"ipv4\",dport=\"443\",outcome=\"established\"} 0.003\n",
            "tcpconn_connect_duration_seconds_count{family=\"ipv4\",dport=\"443\",outcome=\"established\"} 3\n",
            "tcpconn_connect_duration_seconds_bucket{le=\"0.001024\",family=\"ipv4\",dport=\"443\",outcome=\"established\"} 3\n",
            "tcpconn_connect_duration_seconds_bucket{le=\"0.000512\",family=\"ipv4\",dport=\"443\",outcome=\"established\"} 0\n",
            "tcpconn_connect_duration_seconds_bucket{le=\"+Inf\",family=\"ipv4\",dport=\"443\",outcome=\"refused\"} 2\n",
            "tcpconn_connect_duration_seconds_bucket{le=\"0.000064\",family=\"ipv4\",dport=\"443\",outcome=\"refused\"} 2\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("reason=\"established\""), "{text}");
        assert!(
            !render(&[count("10.0.0.1", 1)], Counters::default(), false, None)
                .contains("connect_duration"),
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            escape_label_value("/a/evil\",dport=\"1\\\nx"),
            "/a/evil\\\",dport=\\\"1\\\\\\nx"
        );
        assert_eq!(
            escape_label_value("/system.slice/x.service"),
            "/system.slice/x.service"
        );
    }

    #[test]
    fn renders_counts_and_losses() {
        let counts = [count("10.0.0.1", 3), count("10.0.0.2", 2)];
        let mut counters = Counters::default();
        counters.dropped = 4;
        counters.missed = 1;
        let text = render(&counts, counters, false, None);
        assert!(
            text.contains("tcpconn_connects_total{family=\"ipv4\",dport=\"443\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("tcpconn_events_dropped_total 4\n"), "{text}");
        assert!(text.contains("tcpconn_events_missed_total 1\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        let text = render(&counts, counters, true, None);
        assert!(
            text.contains(
                "tcpconn_connects_total{family=\"ipv4\",dport=\"443\",daddr=\"10.0.0.1\"} 3\n"
            ),
            "{text}"
        );
    }

    /// Limits small enough for a test to exhaust and wait out.
    const SMALL: Limits = Limits {
        max_connections: 2,
        header_read_timeout: Duration::from_millis(300),
        connection_deadline: Duration::from_secs(2),
    };

    /// Serves on 127.0.0.1 with `limits` (on a thread and runtime of its own, until the test
    /// process ends), answering every scrape with `text`; returns the bound address.
    fn serving(limits: Limits, text: String) -> SocketAddr {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let (addr, mut scrapes) = serve_with(([127, 0, 0, 1], 0).into(), limits)
                    .await
                    .unwrap();
                tx.send(addr).unwrap();
                while let Some(reply) = scrapes.recv().await {
                    let _ = reply.send(text.clone());
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
}
