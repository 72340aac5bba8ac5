//! Sending requests: the gRPC call or the http/protobuf POST ([`Transport`]), over TLS for
//! `https` endpoints ([`tls`]), and the task that pushes the latest exposition it is handed
//! ([`pusher`]), each push bounded by the timeout. A failed push is not retried on its own:
//! the next interval's carries every count again (they are cumulative).

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{
    Request, Uri,
    header::{CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT},
};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    metrics_service_client::MetricsServiceClient,
};
use prost::Message as _;
use rustls::pki_types::{CertificateDer, pem::PemObject as _};
use tokio::sync::watch;
use tonic::{metadata::MetadataMap, transport::Channel};

use super::{
    config::{Config, Protocol},
    convert::{self, Times},
};
use crate::metrics::Exposition;

/// What every request says it comes from.
const AGENT: &str = concat!("probe-user/", env!("CARGO_PKG_VERSION"));

/// The TLS client configuration of an `https` endpoint (none for `http`): the system's roots
/// (`SSL_CERT_FILE` / `SSL_CERT_DIR` if set) and `certificate`'s. Checked at start: an https
/// endpoint with no root to trust is refused then.
pub fn tls(config: &Config) -> Result<Option<rustls::ClientConfig>, String> {
    if config.endpoint.scheme_str() != Some("https") {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(pem) = &config.certificate {
        let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("OTEL_EXPORTER_OTLP_CERTIFICATE: not PEM certificates: {e}"))?;
        if certs.is_empty() {
            return Err("OTEL_EXPORTER_OTLP_CERTIFICATE: no PEM certificate in the file".into());
        }
        for cert in certs {
            roots.add(cert).map_err(|e| {
                format!("OTEL_EXPORTER_OTLP_CERTIFICATE: not a CA certificate: {e}")
            })?;
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "{} is https, but no trusted root certificate was found: set SSL_CERT_FILE or OTEL_EXPORTER_OTLP_CERTIFICATE to a PEM file",
            config.endpoint
        ));
    }
    // The process's default provider: ring, the only one rustls is built with here.
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(tls))
}

/// A connector for `http` and `https` URLs offering (ALPN) HTTP/2 for gRPC, HTTP/1.1 for
/// http/protobuf.
fn connector(
    tls: Option<rustls::ClientConfig>,
    protocol: Protocol,
) -> HttpsConnector<HttpConnector> {
    // For an http endpoint the TLS configuration is never used; an empty one stands in.
    let tls = tls.unwrap_or_else(|| {
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    });
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    match protocol {
        Protocol::Grpc => builder.enable_http2().build(),
        Protocol::HttpProtobuf => builder.enable_http1().build(),
    }
}

/// How a request is sent.
pub enum Transport {
    Grpc {
        client: MetricsServiceClient<Channel>,
        metadata: MetadataMap,
    },
    Http {
        // Boxed: hyper's client is several times the size of tonic's.
        client: Box<Client<HttpsConnector<HttpConnector>, Full<Bytes>>>,
        endpoint: Uri,
        headers: HeaderMap,
    },
}

impl Transport {
    /// The transport of `config` (connecting lazily, at the first push). Needs the runtime.
    pub fn new(config: &Config, tls: Option<rustls::ClientConfig>) -> Transport {
        let connector = connector(tls, config.protocol);
        let mut headers = config.headers.clone();
        match config.protocol {
            Protocol::Grpc => {
                let channel = tonic::transport::Endpoint::from(config.endpoint.clone())
                    .user_agent(AGENT)
                    .expect("the agent is a valid header value")
                    .connect_timeout(config.timeout)
                    .timeout(config.timeout)
                    .connect_with_connector_lazy(connector);
                Transport::Grpc {
                    client: MetricsServiceClient::new(channel),
                    metadata: MetadataMap::from_headers(headers),
                }
            }
            Protocol::HttpProtobuf => {
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-protobuf"),
                );
                headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
                Transport::Http {
                    client: Box::new(Client::builder(TokioExecutor::new()).build(connector)),
                    endpoint: config.endpoint.clone(),
                    headers,
                }
            }
        }
    }

    /// Sends `request`; an error says why it did not arrive whole.
    async fn send(&mut self, request: ExportMetricsServiceRequest) -> Result<(), String> {
        let response = match self {
            Transport::Grpc { client, metadata } => {
                let request = tonic::Request::from_parts(
                    metadata.clone(),
                    tonic::Extensions::default(),
                    request,
                );
                client
                    .export(request)
                    .await
                    .map_err(|s| {
                        let mut text = format!("gRPC status {:?}: {}", s.code(), s.message());
                        if let Some(cause) = std::error::Error::source(&s) {
                            text.push_str(": ");
                            text.push_str(&error_chain(cause));
                        }
                        text
                    })?
                    .into_inner()
            }
            Transport::Http {
                client,
                endpoint,
                headers,
            } => {
                let mut post = Request::post(endpoint.clone())
                    .body(Full::new(Bytes::from(request.encode_to_vec())))
                    .map_err(|e| e.to_string())?;
                post.headers_mut().extend(headers.clone());
                let response = client.request(post).await.map_err(|e| error_chain(&e))?;
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("HTTP {status}, then {e}"))?
                    .to_bytes();
                if !status.is_success() {
                    let text = String::from_utf8_lossy(&body[..body.len().min(200)])
                        .escape_debug()
                        .to_string();
                    return Err(format!("HTTP {status}: {text}"));
                }
                // An empty or unreadable body is a full success (a 2xx says it arrived).
                ExportMetricsServiceResponse::decode(body).unwrap_or_default()
            }
        };
        match response.partial_success {
            Some(partial) if partial.rejected_data_points > 0 => Err(format!(
                "the receiver rejected {} data points: {}",
                partial.rejected_data_points, partial.error_message
            )),
            _ => Ok(()),
        }
    }
}

/// An error with its causes, `: `-separated (hyper's top-level errors say little alone).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// An exposition to push and when its counts were read (ns since the Unix epoch).
pub type Latest = Option<(Arc<Exposition>, u64)>;

/// How the pushes went, for the summary at exit.
#[derive(Debug, Default)]
pub struct Outcome {
    pub pushes: u64,
    pub failures: u64,
    /// The last push's error, if it failed.
    pub last_error: Option<String>,
}

/// Pushes the latest exposition in `latest` each time it changes, until its sender is gone
/// (after a last push of what it held then). An exposition handed over while a push is under
/// way replaces any waiting one: the counts are cumulative, the newest carries them all.
pub async fn pusher(
    mut latest: watch::Receiver<Latest>,
    mut transport: Transport,
    endpoint: Uri,
    timeout: Duration,
    resource: Vec<(String, String)>,
    start: u64,
) -> Outcome {
    let mut outcome = Outcome::default();
    // Failures in a row: the first of a run is reported on stderr, the others logged.
    let mut failing = 0u64;
    while latest.changed().await.is_ok() {
        let Some((exposition, now)) = latest.borrow_and_update().clone() else {
            continue;
        };
        let request = convert::request(&exposition, &resource, Times { start, now });
        drop(exposition);
        let result = match tokio::time::timeout(timeout, transport.send(request)).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no answer within {} (OTEL_EXPORTER_OTLP_TIMEOUT)",
                humantime::format_duration(timeout)
            )),
        };
        outcome.pushes += 1;
        match result {
            Ok(()) => {
                if failing > 0 {
                    eprintln!(
                        "probe-user: OTLP push to {endpoint} succeeded again after {failing} failed"
                    );
                }
                failing = 0;
                outcome.last_error = None;
            }
            Err(e) => {
                if failing == 0 {
                    eprintln!(
                        "probe-user: OTLP push to {endpoint} failed: {e} (retried every interval; RUST_LOG=warn shows further failures)"
                    );
                } else {
                    log::warn!("OTLP push to {endpoint} failed again: {e}");
                }
                failing += 1;
                outcome.failures += 1;
                outcome.last_error = Some(e);
            }
        }
    }
    outcome
}
