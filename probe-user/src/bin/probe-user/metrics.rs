//! Prometheus / OpenMetrics exposition of the kernel's connect counts and of what was lost, and
//! a small HTTP server for it (`probe-user --metrics`).

use std::{convert::Infallible, net::SocketAddr};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, header, server::conn::http1};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tokio::sync::{mpsc, oneshot};

use probe_user::{ConnectCount, Counters};

/// The exposition's content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders `counts` (from [`probe_user::Tracer::connect_counts`]) and `counters` as OpenMetrics
/// text: `probe_connects_total{family,dport}` (plus `daddr` when `with_daddr`; counts of the
/// same port and family are summed otherwise) and `probe_events_{dropped,missed,malformed}_total`.
pub fn render(counts: &[ConnectCount], counters: Counters, with_daddr: bool) -> String {
    let mut registry = Registry::with_prefix("probe");
    let connects = Family::<Vec<(String, String)>, Counter>::default();
    registry.register(
        "connects",
        "TCP connect calls traced (tcp_v4_connect / tcp_v6_connect), by destination",
        connects.clone(),
    );
    for c in counts {
        let mut labels = vec![
            ("family".to_string(), c.family.name().to_string()),
            ("dport".to_string(), c.dport.to_string()),
        ];
        if let (true, Some(daddr)) = (with_daddr, c.daddr) {
            labels.push(("daddr".to_string(), daddr.to_string()));
        }
        connects.get_or_create(&labels).inc_by(c.connects);
    }
    for (name, help, value) in [
        (
            "events_dropped",
            "Connects not counted: a kernel map was full",
            counters.dropped,
        ),
        (
            "events_missed",
            "Connects whose return probe never ran (kretprobe maxactive)",
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

/// A scrape waiting for the current exposition text.
pub type Scrape = oneshot::Sender<String>;

/// Serves `GET /metrics` on `addr` over HTTP/1.1: each scrape is sent down the returned channel
/// and answered with whatever text the receiver replies (so the numbers are read at scrape
/// time). Runs on the current tokio runtime until the receiver is dropped.
pub async fn serve(addr: SocketAddr) -> Result<mpsc::Receiver<Scrape>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    let (tx, rx) = mpsc::channel::<Scrape>(16);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            if tx.is_closed() {
                break;
            }
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| respond(req, tx.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(rx)
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

    #[test]
    fn renders_counts_and_losses() {
        let counts = [
            ConnectCount {
                family: IpFamily::V4,
                daddr: Some("10.0.0.1".parse().unwrap()),
                dport: 443,
                connects: 3,
            },
            ConnectCount {
                family: IpFamily::V4,
                daddr: Some("10.0.0.2".parse().unwrap()),
                dport: 443,
                connects: 2,
            },
        ];
        let counters = Counters {
            events: 0,
            dropped: 4,
            missed: 1,
            malformed: 0,
        };
        let text = render(&counts, counters, false);
        assert!(
            text.contains("probe_connects_total{family=\"ipv4\",dport=\"443\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("probe_events_dropped_total 4\n"), "{text}");
        assert!(text.contains("probe_events_missed_total 1\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        let text = render(&counts, counters, true);
        assert!(
            text.contains(
                "probe_connects_total{family=\"ipv4\",dport=\"443\",daddr=\"10.0.0.1\"} 3\n"
            ),
            "{text}"
        );
    }
}
