//! The [`Exposition`] as an OTLP `ExportMetricsServiceRequest`: the same families, series,
//! labels and numbers as the OpenMetrics text, in OpenTelemetry's data model.
//!
//! | OpenMetrics | OTLP |
//! |---|---|
//! | counter `tcpconn_X_total` | `tcpconn_X`: Sum, monotonic, cumulative from the start of tracing |
//! | gauge `tcpconn_X` | `tcpconn_X`: Gauge |
//! | info `tcpconn_X_info` | `tcpconn_X_info`: Sum of 1, not monotonic, cumulative (the Prometheus compatibility specification's mapping of info) |
//! | histogram `tcpconn_X_seconds` | `tcpconn_X_seconds`: Histogram, cumulative, unit `s`, the same bounds, a count per bucket |
//!
//! Labels become the data points' attributes, help texts the descriptions.

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    metrics::v1::{
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
    },
    resource::v1::Resource,
};

use crate::metrics::exposition::{Bounds, Exposition, Kind, Labels, MetricFamily, PREFIX, Value};

/// The instrumentation scope's name and version, and the default `service.name`.
pub const NAME: &str = "probe-user";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The times of one export, in nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug)]
pub struct Times {
    /// When tracing started: the start of every cumulative series.
    pub start: u64,
    /// Now: when the counts were read.
    pub now: u64,
}

/// The request that carries `exposition` for the resource of `attributes`.
pub fn request(
    exposition: &Exposition,
    attributes: &[(String, String)],
    times: Times,
) -> ExportMetricsServiceRequest {
    let bounds: Vec<(Bounds, Vec<f64>)> =
        Bounds::ALL.into_iter().map(|b| (b, b.seconds())).collect();
    let metrics = exposition
        .0
        .iter()
        .map(|family| metric(family, times, &bounds))
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: attributes.iter().map(|(k, v)| key_value(k, v)).collect(),
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: NAME.into(),
                    version: VERSION.into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The resource's attributes: what probe-user knows of itself and the machine (`service.name`,
/// `service.version`, `host.name`, `host.arch`, `os.type`, with `node` `k8s.node.name`), each
/// replaced by the same key of `configured` (`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME`),
/// which adds the others.
pub fn resource(
    configured: &[(String, String)],
    host: &str,
    node: Option<&str>,
) -> Vec<(String, String)> {
    let arch = match std::env::consts::ARCH {
        // The semantic conventions' names.
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let mut attributes: Vec<(String, String)> = [
        ("service.name", NAME),
        ("service.version", VERSION),
        ("host.name", host),
        ("host.arch", arch),
        ("os.type", "linux"),
    ]
    .into_iter()
    .chain(node.map(|n| ("k8s.node.name", n)))
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (key, value) in configured {
        match attributes.iter_mut().find(|(k, _)| k == key) {
            Some(known) => known.1.clone_from(value),
            None => attributes.push((key.clone(), value.clone())),
        }
    }
    attributes
}

fn metric(family: &MetricFamily, times: Times, bounds: &[(Bounds, Vec<f64>)]) -> Metric {
    let cumulative = AggregationTemporality::Cumulative as i32;
    let numbers = || -> Vec<NumberDataPoint> {
        family
            .series
            .iter()
            .map(|s| NumberDataPoint {
                attributes: attributes(&s.labels),
                start_time_unix_nano: if family.kind == Kind::Gauge {
                    0
                } else {
                    times.start
                },
                time_unix_nano: times.now,
                value: Some(match s.value {
                    // Counts beyond i64 are not reachable in practice (2^63 connects).
                    Value::Count(n) => {
                        number_data_point::Value::AsInt(i64::try_from(n).unwrap_or(i64::MAX))
                    }
                    Value::Seconds(s) => number_data_point::Value::AsDouble(s),
                    // A histogram family holds only histograms (below).
                    Value::Histogram(_) => number_data_point::Value::AsInt(0),
                }),
                ..Default::default()
            })
            .collect()
    };
    let (suffix, data) = match family.kind {
        Kind::Counter => (
            "",
            Data::Sum(Sum {
                data_points: numbers(),
                aggregation_temporality: cumulative,
                is_monotonic: true,
            }),
        ),
        Kind::Gauge => (
            "",
            Data::Gauge(Gauge {
                data_points: numbers(),
            }),
        ),
        Kind::Info => (
            "_info",
            Data::Sum(Sum {
                data_points: numbers(),
                aggregation_temporality: cumulative,
                is_monotonic: false,
            }),
        ),
        Kind::Histogram => (
            "",
            Data::Histogram(Histogram {
                data_points: family
                    .series
                    .iter()
                    .filter_map(|s| match &s.value {
                        Value::Histogram(h) => Some(HistogramDataPoint {
                            attributes: attributes(&s.labels),
                            start_time_unix_nano: times.start,
                            time_unix_nano: times.now,
                            count: h.count,
                            sum: Some(h.sum_seconds),
                            bucket_counts: h.buckets.clone(),
                            explicit_bounds: bounds
                                .iter()
                                .find(|(b, _)| *b == h.bounds)
                                .map_or_else(Vec::new, |(_, bounds)| bounds.clone()),
                            ..Default::default()
                        }),
                        _ => None,
                    })
                    .collect(),
                aggregation_temporality: cumulative,
            }),
        ),
    };
    Metric {
        name: format!("{PREFIX}_{}{suffix}", family.name),
        description: family.help.into(),
        unit: match family.unit {
            Some("seconds") => "s".into(),
            Some(other) => other.into(),
            None => String::new(),
        },
        data: Some(data),
        ..Default::default()
    }
}

fn attributes(labels: &Labels) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| key_value(k, v)).collect()
}

fn key_value(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::exposition::{Histogram as Latencies, Series};

    const TIMES: Times = Times {
        start: 1_000,
        now: 5_000,
    };

    fn labels(pairs: &[(&'static str, &str)]) -> Labels {
        pairs.iter().map(|&(k, v)| (k, v.to_string())).collect()
    }

    fn family(name: &'static str, kind: Kind, series: Vec<Series>) -> MetricFamily {
        MetricFamily {
            name,
            help: "help text",
            kind,
            unit: name.ends_with("_seconds").then_some("seconds"),
            series,
        }
    }

    fn string_attributes(kvs: &[KeyValue]) -> Vec<(String, String)> {
        kvs.iter()
            .map(
                |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => (kv.key.clone(), s.clone()),
                    other => panic!("{}: not a string: {other:?}", kv.key),
                },
            )
            .collect()
    }

    #[test]
    fn each_kind_maps_to_its_otlp_type_with_the_same_numbers_and_labels() {
        let mut latencies = Latencies {
            sum_seconds: 0.25,
            count: 3,
            ..Latencies::new(Bounds::Latency)
        };
        latencies.buckets[0] = 1;
        latencies.buckets[12] = 2;
        let port = labels(&[("family", "ipv4"), ("dport", "80")]);
        let exposition = Exposition(vec![
            family(
                "connects",
                Kind::Counter,
                vec![
                    Series {
                        labels: port.clone(),
                        value: Value::Count(7),
                    },
                    Series {
                        labels: labels(&[("family", "ipv6"), ("dport", "other")]),
                        value: Value::Count(2),
                    },
                ],
            ),
            family(
                "series",
                Kind::Gauge,
                vec![Series {
                    labels: Vec::new(),
                    value: Value::Count(4),
                }],
            ),
            family(
                "cgroup",
                Kind::Info,
                vec![Series {
                    labels: labels(&[("cgroup_id", "9"), ("cgroup", "/a")]),
                    value: Value::Count(1),
                }],
            ),
            family(
                "connect_duration_seconds",
                Kind::Histogram,
                vec![Series {
                    labels: port.clone(),
                    value: Value::Histogram(latencies),
                }],
            ),
            family(
                "bpf_program_run_seconds",
                Kind::Counter,
                vec![Series {
                    labels: labels(&[("program", "p")]),
                    value: Value::Seconds(1.5),
                }],
            ),
        ]);
        let request = request(&exposition, &[("service.name".into(), "x".into())], TIMES);
        let [resource_metrics] = &request.resource_metrics[..] else {
            panic!("one resource: {request:?}");
        };
        assert_eq!(
            string_attributes(&resource_metrics.resource.as_ref().unwrap().attributes),
            [("service.name".to_string(), "x".to_string())]
        );
        let [scope] = &resource_metrics.scope_metrics[..] else {
            panic!("one scope");
        };
        assert_eq!(scope.scope.as_ref().unwrap().name, "probe-user");
        let names: Vec<&str> = scope.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "tcpconn_connects",
                "tcpconn_series",
                "tcpconn_cgroup_info",
                "tcpconn_connect_duration_seconds",
                "tcpconn_bpf_program_run_seconds",
            ]
        );
        assert!(scope.metrics.iter().all(|m| m.description == "help text"));

        let Some(Data::Sum(connects)) = &scope.metrics[0].data else {
            panic!("{:?}", scope.metrics[0]);
        };
        assert!(connects.is_monotonic);
        assert_eq!(
            connects.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let points: Vec<_> = connects
            .data_points
            .iter()
            .map(|p| {
                (
                    string_attributes(&p.attributes),
                    p.value,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                )
            })
            .collect();
        let owned = |l: &Labels| -> Vec<(String, String)> {
            l.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
        };
        assert_eq!(
            points,
            [
                (
                    owned(&port),
                    Some(number_data_point::Value::AsInt(7)),
                    1_000,
                    5_000
                ),
                (
                    owned(&labels(&[("family", "ipv6"), ("dport", "other")])),
                    Some(number_data_point::Value::AsInt(2)),
                    1_000,
                    5_000
                ),
            ]
        );
        assert_eq!(scope.metrics[0].unit, "");

        let Some(Data::Gauge(gauge)) = &scope.metrics[1].data else {
            panic!("{:?}", scope.metrics[1]);
        };
        assert_eq!(
            gauge.data_points[0].value,
            Some(number_data_point::Value::AsInt(4))
        );
        assert_eq!(gauge.data_points[0].start_time_unix_nano, 0);

        let Some(Data::Sum(info)) = &scope.metrics[2].data else {
            panic!("{:?}", scope.metrics[2]);
        };
        assert!(!info.is_monotonic);
        assert_eq!(
            info.data_points[0].value,
            Some(number_data_point::Value::AsInt(1))
        );

        let duration = &scope.metrics[3];
        assert_eq!(duration.unit, "s");
        let Some(Data::Histogram(histogram)) = &duration.data else {
            panic!("{duration:?}");
        };
        assert_eq!(
            histogram.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let [point] = &histogram.data_points[..] else {
            panic!("one point");
        };
        assert_eq!(string_attributes(&point.attributes), owned(&port));
        assert_eq!((point.count, point.sum), (3, Some(0.25)));
        assert_eq!(point.explicit_bounds, Bounds::Latency.seconds());
        // One count per bucket, the last one past the last bound: not cumulative.
        assert_eq!(point.bucket_counts.len(), point.explicit_bounds.len() + 1);
        assert_eq!(point.bucket_counts, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        assert_eq!(
            (point.start_time_unix_nano, point.time_unix_nano),
            (1_000, 5_000)
        );

        let Some(Data::Sum(seconds)) = &scope.metrics[4].data else {
            panic!("{:?}", scope.metrics[4]);
        };
        assert_eq!(scope.metrics[4].unit, "s");
        assert_eq!(
            seconds.data_points[0].value,
            Some(number_data_point::Value::AsDouble(1.5))
        );
    }

    #[test]
    fn configured_attributes_replace_and_extend_the_known_ones() {
        let configured = [
            ("service.name".to_string(), "edge".to_string()),
            ("deployment.environment".to_string(), "prod".to_string()),
        ];
        let attributes = resource(&configured, "node-1", Some("worker-3"));
        let get = |key: &str| {
            attributes
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("service.name"), Some("edge"));
        assert_eq!(get("service.version"), Some(VERSION));
        assert_eq!(get("host.name"), Some("node-1"));
        assert_eq!(get("os.type"), Some("linux"));
        assert_eq!(get("k8s.node.name"), Some("worker-3"));
        assert_eq!(get("deployment.environment"), Some("prod"));
        assert!(get("host.arch").is_some_and(|a| !a.is_empty()));
        assert_eq!(attributes.len(), 7);
        assert_eq!(resource(&[], "h", None).len(), 5);
        assert_eq!(
            resource(&[], "h", None)[0],
            ("service.name".into(), "probe-user".into())
        );
    }
}
