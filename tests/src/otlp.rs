//! OTLP receivers for `probe-user --otlp-endpoint`: a gRPC `MetricsService` (tonic) and an
//! HTTP/1.1 server that decodes `POST`ed protobuf bodies, each keeping every request it got,
//! and readers of what a request says.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    },
    common::v1::{KeyValue, any_value},
    metrics::v1::{Metric, metric::Data, number_data_point},
};
use prost::Message as _;

pub use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, HistogramDataPoint, NumberDataPoint,
};

/// One request as a receiver got it.
#[derive(Clone, Debug)]
pub struct Received {
    /// The HTTP path (http/protobuf) or the gRPC method's.
    pub path: String,
    /// The content type it was sent with.
    pub content_type: String,
    pub request: ExportMetricsServiceRequest,
}

type Log = Arc<Mutex<Vec<Received>>>;

/// A receiver listening on loopback, recording every request.
pub struct Receiver {
    addr: SocketAddr,
    log: Log,
}

impl Receiver {
    /// A gRPC receiver on `addr` (port 0: any).
    pub fn grpc(addr: &str) -> Receiver {
        let log = Log::default();
        let service = MetricsServiceServer::new(Grpc(log.clone()));
        let (tx, rx) = std::sync::mpsc::channel();
        let addr: SocketAddr = addr.parse().unwrap();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let incoming = tonic::transport::server::TcpIncoming::bind(addr).unwrap();
                tx.send(incoming.local_addr().unwrap()).unwrap();
                tonic::transport::Server::builder()
                    .serve_with_incoming(service, incoming)
                    .await
                    .unwrap();
            });
        });
        Receiver {
            addr: rx.recv().unwrap(),
            log,
        }
    }

    /// An http/protobuf receiver on `addr` (port 0: any).
    pub fn http(addr: &str) -> Receiver {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Log::default();
        let logged = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let log = logged.clone();
                let stream = stream.unwrap();
                std::thread::spawn(move || serve_http(stream, &log));
            }
        });
        Receiver { addr, log }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `n` requests have arrived (at most `within`), and returns them all.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let received = self.received();
            if received.len() >= n || Instant::now() > deadline {
                return received;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Grpc(Log);

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let content_type = request
            .metadata()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        self.0.lock().unwrap().push(Received {
            path: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export".into(),
            content_type,
            request: request.into_inner(),
        });
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Answers the HTTP/1.1 requests of one connection: each body decoded and logged, an empty
/// `ExportMetricsServiceResponse` sent back.
fn serve_http(stream: std::net::TcpStream, log: &Log) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        let mut content_type = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "content-type" => content_type = value.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut words = request_line.split_whitespace();
        assert_eq!(words.next(), Some("POST"), "{request_line}");
        let path = words.next().unwrap_or_default().to_string();
        let request = ExportMetricsServiceRequest::decode(&body[..])
            .unwrap_or_else(|e| panic!("{path}: not an ExportMetricsServiceRequest: {e}"));
        log.lock().unwrap().push(Received {
            path,
            content_type,
            request,
        });
        let response = ExportMetricsServiceResponse::default().encode_to_vec();
        write!(
            writer,
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
            response.len()
        )
        .unwrap();
        writer.write_all(&response).unwrap();
    }
}

/// String attributes as (key, value) pairs.
pub fn attributes(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(
            |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => (kv.key.clone(), s.clone()),
                other => panic!("attribute {}: not a string: {other:?}", kv.key),
            },
        )
        .collect()
}

/// The resource attributes of a request (one resource).
pub fn resource(request: &ExportMetricsServiceRequest) -> Vec<(String, String)> {
    let [resource_metrics] = &request.resource_metrics[..] else {
        panic!("not one resource: {request:?}");
    };
    attributes(&resource_metrics.resource.as_ref().unwrap().attributes)
}

/// The metric `name` of a request, if it has it.
pub fn metric<'a>(request: &'a ExportMetricsServiceRequest, name: &str) -> Option<&'a Metric> {
    request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .find(|m| m.name == name)
}

/// A Sum's or Gauge's data points.
pub fn number_points(metric: &Metric) -> &[NumberDataPoint] {
    match &metric.data {
        Some(Data::Sum(sum)) => &sum.data_points,
        Some(Data::Gauge(gauge)) => &gauge.data_points,
        other => panic!("{}: not a sum or gauge: {other:?}", metric.name),
    }
}

/// A Histogram's data points.
pub fn histogram_points(metric: &Metric) -> &[HistogramDataPoint] {
    match &metric.data {
        Some(Data::Histogram(h)) => &h.data_points,
        other => panic!("{}: not a histogram: {other:?}", metric.name),
    }
}

/// An integer data point's value.
pub fn int_value(point: &NumberDataPoint) -> i64 {
    match point.value {
        Some(number_data_point::Value::AsInt(n)) => n,
        other => panic!("not an integer: {other:?}"),
    }
}

/// A Sum's (is_monotonic, aggregation_temporality).
pub fn sum_kind(metric: &Metric) -> (bool, i32) {
    match &metric.data {
        Some(Data::Sum(sum)) => (sum.is_monotonic, sum.aggregation_temporality),
        other => panic!("{}: not a sum: {other:?}", metric.name),
    }
}

/// Whether `metric` is a Gauge.
pub fn is_gauge(metric: &Metric) -> bool {
    matches!(metric.data, Some(Data::Gauge(_)))
}

/// A Histogram's aggregation temporality.
pub fn histogram_temporality(metric: &Metric) -> i32 {
    match &metric.data {
        Some(Data::Histogram(h)) => h.aggregation_temporality,
        other => panic!("{}: not a histogram: {other:?}", metric.name),
    }
}
