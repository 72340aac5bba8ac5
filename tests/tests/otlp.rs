//! `--otlp-endpoint`: the metrics pushed over OTLP (gRPC and http/protobuf) to a receiver
//! here, compared with the connects made and with a scrape of `--metrics` at the same time.
//!
//! What is pushed does not depend on the kernel or the backend (the counts are those of
//! `--metrics`, tested on each): one pass is enough (`ONCE` in xtask/src/test.rs: natively
//! where the host allows, else in the first VM).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use probe_tests::{
    ProbeUser, connect, free_port, listener,
    otlp::{self, AggregationTemporality, Received, Receiver},
    probe_user_command, scrape, serving_addr,
};

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A series' labels, sorted.
type Labels = Vec<(String, String)>;

/// Series and their values.
type Samples = BTreeMap<Labels, u64>;

/// The integer points of metric `name` in `request`.
fn pushed(request: &Received, name: &str) -> Samples {
    otlp::metric(&request.request, name)
        .map(|m| {
            otlp::number_points(m)
                .iter()
                .map(|p| {
                    let mut labels = otlp::attributes(&p.attributes);
                    labels.sort();
                    (labels, otlp::int_value(p) as u64)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The histogram counts of `name` in `request`.
fn pushed_counts(request: &Received, name: &str) -> Samples {
    otlp::metric(&request.request, name)
        .map(|m| {
            otlp::histogram_points(m)
                .iter()
                .map(|p| {
                    let mut labels = otlp::attributes(&p.attributes);
                    labels.sort();
                    (labels, p.count)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The samples of `name` (with its suffix) in an OpenMetrics text.
fn scraped(text: &str, name: &str) -> Samples {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let mut labels: Vec<(String, String)> = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap();
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            labels.sort();
            Some((labels, value.parse().unwrap()))
        })
        .collect()
}

/// The series of `base` and `extra` labels, with `n`.
fn series(base: &Labels, extra: &[(&str, &str)], n: u64) -> (Labels, u64) {
    let mut labels = base.clone();
    labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    labels.sort();
    (labels, n)
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    labels
}

/// Waits (up to 10 s) for a push whose connects of `labels` number `n`, and returns every
/// push received by then.
fn wait_for_connects(receiver: &Receiver, labels: &[(String, String)], n: u64) -> Vec<Received> {
    for _ in 0..500 {
        let received = receiver.received();
        if received
            .last()
            .is_some_and(|r| pushed(r, "tcpconn_connects").get(labels) == Some(&n))
        {
            return received;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "no push with {n} connects of {labels:?}: {:#?}",
        receiver.received().last()
    );
}

#[test]
fn otlp_pushes_equal_the_connects_made_and_the_scrape() {
    for grpc in [true, false] {
        let receiver = if grpc {
            Receiver::grpc("127.0.0.1:0")
        } else {
            Receiver::http("127.0.0.1:0")
        };
        let open = listener("127.0.0.1:0");
        let closed = free_port();
        let ports = format!("{},{closed}", open.port());
        let before = unix_nanos();
        let mut cmd = probe_user_command();
        cmd.args(["--otlp-endpoint", &receiver.url(), "--metrics", "0"])
            .args(["--outcome", "--filter-port", &ports])
            .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
            .env("K8S_NODE_NAME", "node-7")
            .env(
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=test%20env,team=net",
            )
            .env(
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                if grpc { "grpc" } else { "http/protobuf" },
            );
        if !grpc {
            cmd.env("OTEL_SERVICE_NAME", "edge-probe");
        }
        let tracer = ProbeUser::start_until(&mut cmd, "Counting TCP connects");
        for _ in 0..3 {
            connect(open, None).unwrap();
        }
        for _ in 0..2 {
            connect(SocketAddr::from(([127, 0, 0, 1], closed)), None).unwrap_err();
        }
        let to_open = labels(&[("family", "ipv4"), ("dport", &open.port().to_string())]);
        let to_closed = labels(&[("family", "ipv4"), ("dport", &closed.to_string())]);
        wait_for_connects(&receiver, &to_open, 3);
        let received = wait_for_connects(&receiver, &to_closed, 2);
        // Nothing more happens: a scrape now has the numbers of the last push.
        let text = scrape(serving_addr(&tracer));
        let last = received.last().unwrap();
        for (pushed_name, scraped_name) in [
            ("tcpconn_connects", "tcpconn_connects_total"),
            ("tcpconn_connect_failures", "tcpconn_connect_failures_total"),
            ("tcpconn_events_dropped", "tcpconn_events_dropped_total"),
            ("tcpconn_events_missed", "tcpconn_events_missed_total"),
            ("tcpconn_series", "tcpconn_series"),
        ] {
            assert_eq!(
                pushed(last, pushed_name),
                scraped(&text, scraped_name),
                "{pushed_name} (grpc: {grpc}): {text}"
            );
        }
        assert_eq!(
            pushed_counts(last, "tcpconn_connect_duration_seconds"),
            scraped(&text, "tcpconn_connect_duration_seconds_count"),
            "{text}"
        );
        let pushes_before_exit = receiver.received().len();
        let out = tracer.stop();
        assert!(out.status.success(), "{out:?}");
        assert!(!out.stderr.contains("OTLP push"), "{}", out.stderr);

        // The last push, after the detach, is there, and so is every connect.
        let received = receiver.received();
        assert!(received.len() > pushes_before_exit, "no push at exit");
        let last = received.last().unwrap();
        assert_eq!(
            pushed(last, "tcpconn_connects"),
            Samples::from([series(&to_open, &[], 3), series(&to_closed, &[], 2)])
        );
        assert_eq!(
            pushed(last, "tcpconn_connect_failures"),
            Samples::from([series(
                &to_closed,
                &[("reason", "refused"), ("cause", "rst")],
                2
            )])
        );
        assert_eq!(
            pushed_counts(last, "tcpconn_connect_duration_seconds"),
            Samples::from([
                series(&to_open, &[("outcome", "established")], 3),
                series(&to_closed, &[("outcome", "refused")], 2),
            ])
        );
        for name in ["tcpconn_events_dropped", "tcpconn_events_missed"] {
            assert_eq!(
                pushed(last, name),
                Samples::from([series(&vec![], &[], 0)]),
                "{name}"
            );
        }

        // Types, temporality, units and the histogram's buckets.
        let cumulative = AggregationTemporality::Cumulative as i32;
        for name in ["tcpconn_connects", "tcpconn_connect_failures"] {
            let metric = otlp::metric(&last.request, name).unwrap();
            assert_eq!(otlp::sum_kind(metric), (true, cumulative), "{name}");
        }
        let gauge = otlp::metric(&last.request, "tcpconn_series_limit").unwrap();
        assert!(otlp::is_gauge(gauge), "{gauge:?}");
        let duration = otlp::metric(&last.request, "tcpconn_connect_duration_seconds").unwrap();
        assert_eq!(duration.unit, "s");
        assert_eq!(otlp::histogram_temporality(duration), cumulative);
        for point in otlp::histogram_points(duration) {
            assert_eq!(point.bucket_counts.len(), point.explicit_bounds.len() + 1);
            assert_eq!(point.bucket_counts.iter().sum::<u64>(), point.count);
            assert!(point.sum.is_some_and(|s| s > 0.0), "{point:?}");
            assert_eq!(point.explicit_bounds.first(), Some(&16e-6));
        }
        assert!(otlp::metric(&last.request, "tcpconn_connects_total").is_none());

        // One start time, when tracing started, across every push and point.
        let mut starts = Vec::new();
        for r in &received {
            for name in ["tcpconn_connects", "tcpconn_events_missed"] {
                if let Some(m) = otlp::metric(&r.request, name) {
                    starts.extend(
                        otlp::number_points(m)
                            .iter()
                            .map(|p| p.start_time_unix_nano),
                    );
                }
            }
            if let Some(m) = otlp::metric(&r.request, "tcpconn_connect_duration_seconds") {
                starts.extend(
                    otlp::histogram_points(m)
                        .iter()
                        .map(|p| p.start_time_unix_nano),
                );
            }
        }
        starts.dedup();
        assert_eq!(starts.len(), 1, "{starts:?}");
        assert!(
            (before..unix_nanos()).contains(&starts[0]),
            "{} not in {before}..",
            starts[0]
        );

        // The resource.
        let resource: BTreeMap<String, String> =
            otlp::resource(&last.request).into_iter().collect();
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(resource["host.name"], hostname.trim());
        assert_eq!(resource["k8s.node.name"], "node-7");
        assert_eq!(resource["deployment.environment"], "test env");
        assert_eq!(resource["team"], "net");
        assert_eq!(resource["os.type"], "linux");
        assert_eq!(
            resource["service.name"],
            if grpc { "probe-user" } else { "edge-probe" }
        );
        if grpc {
            assert!(
                last.content_type.starts_with("application/grpc"),
                "{last:?}"
            );
        } else {
            assert_eq!(last.path, "/v1/metrics");
            assert_eq!(last.content_type, "application/x-protobuf");
        }
    }
}

/// A receiver that is down is retried every interval; the first push after it comes up
/// carries every connect, those made while it was down included. The failures are one line
/// on stderr, and one more when pushes succeed again.
#[test]
fn otlp_pushes_to_a_receiver_down_are_retried_and_lose_nothing() {
    let open = listener("127.0.0.1:0");
    let receiver_port = free_port();
    let mut cmd = probe_user_command();
    cmd.args([
        "--otlp-endpoint",
        &format!("http://127.0.0.1:{receiver_port}"),
    ])
    .args(["--filter-port", &open.port().to_string()])
    .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
    .env("OTEL_EXPORTER_OTLP_TIMEOUT", "1000");
    let tracer = ProbeUser::start_until(&mut cmd, "Counting TCP connects");
    connect(open, None).unwrap();
    connect(open, None).unwrap();
    // A few intervals with nobody listening.
    std::thread::sleep(Duration::from_millis(900));
    let receiver = Receiver::http(&format!("127.0.0.1:{receiver_port}"));
    connect(open, None).unwrap();
    let to_open = labels(&[("family", "ipv4"), ("dport", &open.port().to_string())]);
    wait_for_connects(&receiver, &to_open, 3);
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    let url = format!("http://127.0.0.1:{receiver_port}/v1/metrics");
    let failed: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with(&format!("probe-user: OTLP push to {url} failed: ")))
        .collect();
    assert_eq!(failed.len(), 1, "{}", out.stderr);
    assert!(failed[0].contains("Connection refused"), "{}", out.stderr);
    let recovered = format!("probe-user: OTLP push to {url} succeeded again after ");
    assert_eq!(
        out.stderr
            .lines()
            .filter(|l| l.starts_with(&recovered))
            .count(),
        1,
        "{}",
        out.stderr
    );
    // The pushes that failed are counted at exit; the last one succeeded.
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("probe-user: ") && l.contains(" OTLP pushes failed")),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("the last OTLP push"), "{}", out.stderr);
    let last = receiver.received().pop().unwrap();
    assert_eq!(
        pushed(&last, "tcpconn_connects"),
        [(to_open, 3)].into_iter().collect::<Samples>()
    );
}

/// A bad endpoint or OTEL_* variable is one line and exit 2, before anything is attached.
#[test]
fn otlp_configuration_errors_are_one_line_before_attaching() {
    for (args, env, expected) in [
        (
            &["--otlp-endpoint", "collector:4317"][..],
            None,
            "probe-user: error: --otlp-endpoint: \"collector:4317\" is not an OTLP endpoint: expected http://HOST:PORT or https://HOST:PORT",
        ),
        (
            &["--otlp-endpoint"],
            Some(("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")),
            "probe-user: error: OTEL_EXPORTER_OTLP_PROTOCOL=\"http/json\" is not a protocol probe-user pushes (expected grpc or http/protobuf)",
        ),
        (
            &["--otlp-endpoint", "http://127.0.0.1:4318"],
            Some(("OTEL_METRIC_EXPORT_INTERVAL", "1m")),
            "probe-user: error: OTEL_METRIC_EXPORT_INTERVAL=\"1m\": expected a positive number of milliseconds",
        ),
        (
            &["--otlp-endpoint", "http://127.0.0.1:4318"],
            Some(("OTEL_EXPORTER_OTLP_HEADERS", "authorization")),
            "probe-user: error: OTEL_EXPORTER_OTLP_HEADERS: \"authorization\" is not KEY=VALUE",
        ),
        (
            &["--otlp-endpoint", "https://127.0.0.1:4318"],
            Some(("OTEL_EXPORTER_OTLP_CERTIFICATE", "/proc/self/status")),
            "probe-user: error: OTEL_EXPORTER_OTLP_CERTIFICATE: no PEM certificate in the file",
        ),
        (
            &["--otlp-endpoint", "--count-by", "cgroup"],
            None,
            "probe-user: error: --otlp-endpoint counts by destination or port: label its series by cgroup or container with --metrics-label",
        ),
    ] {
        let mut cmd = Command::new(probe_tests::probe_user());
        cmd.args(args);
        if let Some((name, value)) = env {
            cmd.env(name, value);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr, format!("{expected}\n"), "{args:?} {env:?}");
        assert!(out.stdout.is_empty());
    }
}
