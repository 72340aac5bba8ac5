//! `--count`: connects counted in the kernel, printed as tables (run by `cargo xtask test`,
//! in the VM with each backend and natively: see the `probe_tests` crate docs).

use std::{net::SocketAddr, time::Duration};

use probe_tests::{ProbeUser, connect, free_port, listener, probe_user_command};

/// Checks count mode's closing summary: `n` connects counted, nothing lost.
fn assert_counted_without_loss(stderr: &str, n: u64) {
    let summary = format!("probe-user: {n} connects counted, 0 dropped, 0 missed, 0 malformed");
    assert!(stderr.lines().any(|l| l == summary), "{stderr}");
}

/// Starts probe-user in count mode with `args`.
fn start_counting(args: &[&str]) -> ProbeUser {
    ProbeUser::start_until(
        probe_user_command().arg("--count").args(args),
        "Counting TCP connects",
    )
}

#[test]
fn count_table_matches_the_connects_made() {
    let v4 = listener("127.0.0.1:0");
    let v6 = listener("[::1]:0");
    let unwanted = listener("127.0.0.1:0");
    let ports = format!("{},{}", v4.port(), v6.port());
    // An interval longer than the test: only the table at exit is printed.
    let tracer = start_counting(&["--interval", "1h", "--filter-port", &ports]);
    for dst in [v4, v6, v4, unwanted, v4, v6] {
        connect(dst, None).unwrap();
    }
    let out = tracer.stop();

    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert!(
        lines[0].ends_with(": connects since start"),
        "{}",
        out.stdout
    );
    assert_eq!(lines[1], "  CONNECTS  FUNCTION        DESTINATION");
    assert_eq!(lines[2], format!("         3  tcp_v4_connect  {v4}"));
    assert_eq!(lines[3], format!("         2  tcp_v6_connect  {v6}"));
    assert_counted_without_loss(&out.stderr, 5);
}

#[test]
fn count_by_port_prints_json_tables_every_interval() {
    let a = listener("127.0.0.1:0");
    let b = listener("[::1]:0");
    let a2 = listener("0.0.0.0:0");
    let tracer = start_counting(&[
        "--count-by",
        "port",
        "--format",
        "json",
        "--interval",
        "300ms",
    ]);
    for dst in [a, b, a] {
        connect(dst, None).unwrap();
    }
    // Same port, other address: one row per port.
    let to_a2 = format!("127.0.0.2:{}", a2.port()).parse().unwrap();
    connect(to_a2, None).unwrap();
    connect(format!("127.0.0.1:{}", a2.port()).parse().unwrap(), None).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let out = tracer.stop();

    assert!(out.status.success(), "{out:?}");
    let tables = probe_tests::json_lines(&out.stdout);
    assert!(tables.len() >= 3, "{}", out.stdout);
    let last = tables.last().unwrap();
    let rows: Vec<(u64, String, u64)> = last["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r["daddr"].is_null(), "{r}");
            (
                r["dport"].as_u64().unwrap(),
                r["family"].as_str().unwrap().to_string(),
                r["connects"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut expected = vec![
        (u64::from(a.port()), "ipv4".to_string(), 2),
        (u64::from(a2.port()), "ipv4".to_string(), 2),
        (u64::from(b.port()), "ipv6".to_string(), 1),
    ];
    // Most connects first; ties by port.
    expected[..2].sort();
    assert_eq!(rows, expected, "{}", out.stdout);
}

/// `GET path` over HTTP/1.1 from `addr`: (status line, content type, body).
fn http_get(addr: &str, path: &str) -> (String, String, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = probe_tests::http_response(&response);
    let status = head.lines().next().unwrap().to_string();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_string();
    (status, content_type, body)
}

#[test]
fn metrics_endpoint_counts_the_connects_made() {
    let v4 = listener("127.0.0.1:0");
    let v6 = listener("[::1]:0");
    let port = free_port();
    let ports = format!("{},{}", v4.port(), v6.port());
    let port_arg = port.to_string();
    for (count_by, with_daddr) in [(None, false), (Some("destination"), true)] {
        let mut args = vec!["--metrics", &port_arg, "--filter-port", &ports];
        if let Some(by) = count_by {
            args.extend(["--count-by", by]);
        }
        let tracer =
            ProbeUser::start_until(probe_user_command().args(&args), "Counting TCP connects");
        for dst in [v4, v6, v4, v4, v6] {
            connect(dst, None).unwrap();
        }
        let (status, content_type, body) = http_get(&format!("127.0.0.1:{port}"), "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        // Bound to loopback's 127.0.0.1 only.
        assert!(std::net::TcpStream::connect(("127.0.0.2", port)).is_err());
        let (status, _, _) = http_get(&format!("127.0.0.1:{port}"), "/other");
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        let out = tracer.stop();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, "", "nothing is printed per connect");

        let sample = |family: &str, p: u16, daddr: &str| {
            if with_daddr {
                format!(
                    "tcpconn_connects_total{{family=\"{family}\",dport=\"{p}\",daddr=\"{daddr}\"}}"
                )
            } else {
                format!("tcpconn_connects_total{{family=\"{family}\",dport=\"{p}\"}}")
            }
        };
        let mut expected = vec![
            format!("{} 3", sample("ipv4", v4.port(), "127.0.0.1")),
            format!("{} 2", sample("ipv6", v6.port(), "::1")),
            "tcpconn_events_dropped_total 0".to_string(),
            "tcpconn_events_missed_total 0".to_string(),
            "tcpconn_events_malformed_total 0".to_string(),
            // The label sets counted (one per port) and the budget; nothing overflowed or
            // was retired.
            "tcpconn_series 2".to_string(),
            "tcpconn_series_limit 16384".to_string(),
            "tcpconn_series_overflow_total 0".to_string(),
            "tcpconn_series_retired_total 0".to_string(),
            "tcpconn_retired_connects_total 0".to_string(),
        ];
        let mut samples: Vec<String> = body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        samples.sort();
        expected.sort();
        assert_eq!(samples, expected, "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
    }
}

/// A port nobody listens on, and connects to it refused.
fn refused_connects(n: usize) -> u16 {
    let port = free_port();
    for _ in 0..n {
        let e = connect(SocketAddr::from(([127, 0, 0, 1], port)), None).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    }
    port
}

#[test]
fn count_tables_with_outcomes_match_the_connects_made() {
    let up = listener("127.0.0.1:0");
    let pid = std::process::id().to_string();
    let tracer = start_counting(&[
        "--outcome",
        "--format",
        "json",
        "--interval",
        "1h",
        "--pid",
        &pid,
    ]);
    for _ in 0..3 {
        connect(up, None).unwrap();
    }
    let down = refused_connects(2);
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    let tables = probe_tests::json_lines(&out.stdout);
    let mut rows: Vec<(u64, String, u64, bool)> = tables.last().unwrap()["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["dport"].as_u64().unwrap(),
                r["outcome"].as_str().unwrap().to_string(),
                r["connects"].as_u64().unwrap(),
                r["latency_ns_sum"].as_u64().unwrap() > 0,
            )
        })
        .collect();
    rows.sort();
    let mut expected = vec![
        (u64::from(up.port()), "established".to_string(), 3, true),
        (u64::from(down), "refused".to_string(), 2, true),
    ];
    expected.sort();
    assert_eq!(rows, expected, "{}", out.stdout);
    assert_counted_without_loss(&out.stderr, 5);
}

#[test]
fn metrics_failures_and_latency_histograms_equal_the_connects_made() {
    let up = listener("127.0.0.1:0");
    let pid = std::process::id().to_string();
    let port = free_port().to_string();
    let tracer = ProbeUser::start_until(
        probe_user_command().args(["--metrics", &port, "--outcome", "--pid", &pid]),
        "Counting TCP connects",
    );
    for _ in 0..4 {
        connect(up, None).unwrap();
    }
    let down = refused_connects(3);
    // The scrape's own connect (to another port) is this process's too, and counted apart.
    let (status, _, body) = http_get(&format!("127.0.0.1:{port}"), "/metrics");
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let value = |series: &str| -> u64 {
        let line = body
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{body}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let (up_port, down_port) = (up.port(), down);
    assert_eq!(
        value(&format!(
            "tcpconn_connect_failures_total{{family=\"ipv4\",dport=\"{down_port}\",reason=\"refused\",cause=\"rst\"}}"
        )),
        3
    );
    assert!(
        !body.contains(&format!("dport=\"{up_port}\",reason=")),
        "an established connect is no failure:\n{body}"
    );
    for (p, outcome, n) in [(up_port, "established", 4), (down_port, "refused", 3)] {
        let labels = format!("family=\"ipv4\",dport=\"{p}\",outcome=\"{outcome}\"");
        assert_eq!(
            value(&format!(
                "tcpconn_connect_duration_seconds_count{{{labels}}}"
            )),
            n
        );
        assert_eq!(
            value(&format!(
                "tcpconn_connect_duration_seconds_bucket{{le=\"+Inf\",{labels}}}"
            )),
            n
        );
        // Cumulative buckets (16 us to 67 s, a factor of four apart, and +Inf) never decrease,
        // and every connect took less than a second.
        let buckets: Vec<u64> = body
            .lines()
            .filter(|l| {
                l.starts_with("tcpconn_connect_duration_seconds_bucket{") && l.contains(&labels)
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(buckets.len(), 13, "{body}");
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
        assert_eq!(
            value(&format!(
                "tcpconn_connect_duration_seconds_bucket{{le=\"1.048576\",{labels}}}"
            )),
            n
        );
        assert_eq!(
            value(&format!(
                "tcpconn_connects_total{{family=\"ipv4\",dport=\"{p}\"}}"
            )),
            n
        );
    }
}
