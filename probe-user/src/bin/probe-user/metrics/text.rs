//! The OpenMetrics text exposition of an [`Exposition`], written in chunks.
//!
//! Written here rather than through prometheus-client's registry and encoder, which build the
//! whole text in one `String` from label sets the registry holds a second copy of: at 10,000
//! histograms that is tens of MiB per scrape. Here a scrape holds its rows and one chunk of
//! text at a time, whatever the number of series, and the format's few rules (escapes, type
//! suffixes, cumulative buckets) are in one place.

use std::io::Write as _;

use super::exposition::{Bounds, Exposition, Histogram, Kind, Labels, MetricFamily, PREFIX, Value};

/// The exposition's content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bytes of text handed on at a time.
pub const CHUNK: usize = 64 * 1024;

/// Writes `exposition` as OpenMetrics text, handing each chunk of about [`CHUNK`] bytes to
/// `emit` as it fills, the last one ending with `# EOF`; stops early if `emit` returns false
/// (nobody reads any more).
pub fn write(exposition: &Exposition, mut emit: impl FnMut(Vec<u8>) -> bool) {
    let mut out = Vec::with_capacity(CHUNK + 4096);
    // Each kind of histogram's `le` values, written once.
    let bounds: Vec<(Bounds, Vec<String>)> = Bounds::ALL
        .into_iter()
        .map(|b| {
            let text = b.seconds().into_iter().map(|s| s.to_string());
            (b, text.chain(["+Inf".to_string()]).collect())
        })
        .collect();
    for family in &exposition.0 {
        header(&mut out, family);
        for series in &family.series {
            sample(&mut out, family, &series.labels, &series.value, &bounds);
            // Nobody reads any more: stop writing.
            if out.len() >= CHUNK
                && !emit(std::mem::replace(
                    &mut out,
                    Vec::with_capacity(CHUNK + 4096),
                ))
            {
                return;
            }
        }
    }
    out.extend_from_slice(b"# EOF\n");
    emit(out);
}

/// The whole text at once.
#[cfg(test)]
pub fn to_string(exposition: &Exposition) -> String {
    let mut text = Vec::new();
    write(exposition, |chunk| {
        text.extend(chunk);
        true
    });
    String::from_utf8(text).expect("the exposition is UTF-8")
}

fn header(out: &mut Vec<u8>, family: &MetricFamily) {
    let name = family.name;
    let kind = match family.kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
        Kind::Info => "info",
    };
    let help = family
        .help
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"");
    // Writing into a Vec cannot fail.
    let _ = writeln!(out, "# HELP {PREFIX}_{name} {help}");
    let _ = writeln!(out, "# TYPE {PREFIX}_{name} {kind}");
    if let Some(unit) = family.unit {
        let _ = writeln!(out, "# UNIT {PREFIX}_{name} {unit}");
    }
}

/// One series' sample lines.
fn sample(
    out: &mut Vec<u8>,
    family: &MetricFamily,
    labels: &Labels,
    value: &Value,
    bounds: &[(Bounds, Vec<String>)],
) {
    let name = family.name;
    let suffix = match family.kind {
        Kind::Counter => "_total",
        Kind::Info => "_info",
        Kind::Gauge | Kind::Histogram => "",
    };
    let labels = label_text(labels);
    match value {
        Value::Count(n) => line(out, name, suffix, &labels, Number::Int(*n)),
        Value::Seconds(s) => line(out, name, suffix, &labels, Number::Float(*s)),
        Value::Histogram(h) => {
            let bounds = bounds.iter().find(|(b, _)| *b == h.bounds);
            histogram(
                out,
                name,
                &labels,
                h,
                bounds.map_or(&[][..], |(_, text)| text),
            )
        }
    }
}

/// A sample's value.
#[derive(Clone, Copy)]
enum Number {
    Int(u64),
    Float(f64),
}

/// Appends ` <value>\n`. Integers without `fmt`'s machinery: a scrape writes a line per bucket
/// of every histogram, and this is most of its time.
fn value(out: &mut Vec<u8>, value: Number) {
    out.push(b' ');
    match value {
        Number::Int(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        Number::Float(f) => {
            let _ = write!(out, "{f}");
        }
    }
    out.push(b'\n');
}

/// A histogram's bucket lines (cumulative), count and sum.
fn histogram(out: &mut Vec<u8>, name: &str, labels: &str, h: &Histogram, bounds: &[String]) {
    // What every bucket line shares, around its bound: `tcpconn_<name>_bucket{le="` and
    // `",<labels>}`.
    let head = format!("{PREFIX}_{name}_bucket{{le=\"");
    let tail = if labels.is_empty() {
        "\"}".to_string()
    } else {
        format!("\",{labels}}}")
    };
    let mut cumulative = 0;
    for (bound, &n) in bounds.iter().zip(&h.buckets) {
        cumulative += n;
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(bound.as_bytes());
        out.extend_from_slice(tail.as_bytes());
        value(out, Number::Int(cumulative));
    }
    line(out, name, "_count", labels, Number::Int(h.count));
    line(out, name, "_sum", labels, Number::Float(h.sum_seconds));
}

/// `tcpconn_<name><suffix>{<labels>} <value>`.
fn line(out: &mut Vec<u8>, name: &str, suffix: &str, labels: &str, number: Number) {
    for part in [PREFIX, "_", name, suffix] {
        out.extend_from_slice(part.as_bytes());
    }
    if !labels.is_empty() {
        out.push(b'{');
        out.extend_from_slice(labels.as_bytes());
        out.push(b'}');
    }
    value(out, number);
}

/// `name="value",...` with each value escaped.
fn label_text(labels: &Labels) -> String {
    let mut text = String::new();
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(name);
        text.push_str("=\"");
        text.push_str(&escape_label_value(value));
        text.push('"');
    }
    text
}

/// `value` as an OpenMetrics label value. A cgroup's name is anyone's choice who can create one
/// (a delegated subtree, a rootless container): a `"` or `\` in it would otherwise break the
/// exposition, and with it the whole scrape. Control characters are escaped first, as in every
/// text output ([`probe_user::escape`]), so the label value a scraper reads is the name as count
/// tables show it; then the exposition's own escapes (`\\`, `\"`, `\n`) apply to that text.
pub fn escape_label_value(value: &str) -> String {
    let value = probe_user::escape::escape(value);
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

#[cfg(test)]
mod tests {
    use probe_user::{
        ConnectCount, ConnectionCounts, Family, Outcome, ProgramStats, Role, WorkloadNames,
    };

    use super::super::{
        WorkloadLabel,
        exposition::{Bookkeeping, Exposition, Options, Pins, bucket_bounds_seconds},
    };
    use super::*;

    /// A count of `connects` to `daddr`:443, without outcome.
    fn count(daddr: &str, connects: u64) -> ConnectCount {
        let mut count = ConnectCount::new(Family::V4, Some(daddr.parse().unwrap()), 443);
        count.connects = connects;
        count
    }

    fn render(rows: &[ConnectCount], options: Options, pins: &mut Pins) -> String {
        to_string(&Exposition::collect(
            rows,
            Bookkeeping::default(),
            options,
            pins,
            None,
        ))
    }

    fn plain(rows: &[ConnectCount]) -> String {
        render(rows, Options::default(), &mut Pins::default())
    }

    #[test]
    fn renders_outcomes_as_failure_counters_and_histograms() {
        let mut established = count("10.0.0.1", 3);
        established.outcome = Some(Outcome::Established);
        established.latency_ns = 3_000_000;
        established.latency_buckets[10] = 3; // <= 1.024 ms
        let mut refused = count("10.0.0.2", 2);
        refused.outcome = Some(Outcome::Refused);
        refused.cause = Some(probe_user::failure::Cause::Rst);
        refused.syn_retransmits = 1;
        refused.latency_ns = 100_000;
        refused.latency_buckets[5] = 2; // <= 32 us: in the exported bucket <= 64 us
        let text = plain(&[established, refused]);
        for line in [
            "tcpconn_connects_total{family=\"ipv4\",dport=\"443\"} 5\n",
            "tcpconn_connect_failures_total{family=\"ipv4\",dport=\"443\",reason=\"refused\",cause=\"rst\"} 2\n",
            "tcpconn_syn_retransmits_total{family=\"ipv4\",dport=\"443\"} 1\n",
            "tcpconn_connect_duration_seconds_sum{family=\"ipv4\",dport=\"443\",outcome=\"established\"} 0.003\n",
            "tcpconn_connect_duration_seconds_count{family=\"ipv4\",dport=\"443\",outcome=\"established\"} 3\n",
            "tcpconn_connect_duration_seconds_bucket{le=\"0.001024\",family=\"ipv4\",dport=\"443\",outcome=\"established\"} 3\n",
            "tcpconn_connect_duration_seconds_bucket{le=\"0.000256\",family=\"ipv4\",dport=\"443\",outcome=\"established\"} 0\n",
            "tcpconn_connect_duration_seconds_bucket{le=\"+Inf\",family=\"ipv4\",dport=\"443\",outcome=\"refused\"} 2\n",
            "tcpconn_connect_duration_seconds_bucket{le=\"0.000064\",family=\"ipv4\",dport=\"443\",outcome=\"refused\"} 2\n",
            "tcpconn_connect_duration_seconds_bucket{le=\"0.000016\",family=\"ipv4\",dport=\"443\",outcome=\"refused\"} 0\n",
            "# TYPE tcpconn_connect_duration_seconds histogram\n# UNIT tcpconn_connect_duration_seconds seconds\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("reason=\"established\""), "{text}");
        assert!(!plain(&[count("10.0.0.1", 1)]).contains("connect_duration"));
    }

    /// Merging the kernel's buckets into the exported ones keeps every connect: the `+Inf`
    /// bucket is the count, and each bound counts what the kernel counted at or below it.
    #[test]
    fn exported_buckets_are_the_kernels_merged_exactly() {
        let mut row = count("10.0.0.1", 0);
        row.outcome = Some(Outcome::Timeout);
        for (b, n) in row.latency_buckets.iter_mut().enumerate() {
            *n = b as u64 + 1;
            row.connects += *n;
        }
        let text = plain(&[row.clone()]);
        let bucket = |le: &str| -> u64 {
            let prefix = format!("tcpconn_connect_duration_seconds_bucket{{le=\"{le}\",");
            let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap();
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert_eq!(bucket("+Inf"), row.connects);
        for (&b, le) in super::super::exposition::EXPORTED_BUCKETS
            .iter()
            .zip(bucket_bounds_seconds())
        {
            let want: u64 = row.latency_buckets[..=b].iter().sum();
            assert_eq!(bucket(&le.to_string()), want, "le {le}");
        }
    }

    #[test]
    fn accepts_have_their_own_family_and_their_connections_the_servers_role() {
        let connections = |opened, closed, bytes_sent| {
            let mut c = ConnectionCounts::default();
            (c.opened, c.closed, c.bytes_sent) = (opened, closed, bytes_sent);
            c
        };
        let mut connects = count("127.0.0.1", 2);
        connects.connections = Some(connections(2, 1, 10));
        let mut accepts = count("127.0.0.1", 3);
        accepts.role = Role::Server;
        accepts.connections = Some(connections(3, 3, 20));
        let options = Options {
            with_accepts: true,
            ..Options::default()
        };
        let text = render(&[connects, accepts], options, &mut Pins::default());
        for line in [
            r#"tcpconn_connects_total{family="ipv4",dport="443"} 2"#,
            r#"tcpconn_accepts_total{family="ipv4",dport="443"} 3"#,
            r#"tcpconn_connections_active{family="ipv4",dport="443",role="client"} 1"#,
            r#"tcpconn_connections_active{family="ipv4",dport="443",role="server"} 0"#,
            r#"tcpconn_bytes_sent_total{family="ipv4",dport="443",role="client"} 10"#,
            r#"tcpconn_bytes_sent_total{family="ipv4",dport="443",role="server"} 20"#,
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} in\n{text}");
        }
        // Without --accept, no accepts family (and no accepts rows to fill it).
        assert!(!plain(&[count("127.0.0.1", 1)]).contains("tcpconn_accepts"));
        // With it, the family before any accept.
        let text = render(&[count("127.0.0.1", 1)], options, &mut Pins::default());
        assert!(text.contains("# TYPE tcpconn_accepts counter\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        // `\` before a newline is doubled by the shared escaping (it would read as `\\n`),
        // then every `\` once more by the exposition's.
        assert_eq!(
            escape_label_value("/a/evil\",dport=\"1\\\nx"),
            "/a/evil\\\",dport=\\\"1\\\\\\\\\\\\nx"
        );
        // Control characters as every text output shows them, then in the exposition's
        // escaping: a scraper reads the label value `/e\u{1b}[31m\r\n\tx`.
        assert_eq!(
            escape_label_value("/e\u{1b}[31m\r\n\tx"),
            r"/e\\u{1b}[31m\\r\\n\\tx"
        );
        assert_eq!(
            escape_label_value("/system.slice/x.service"),
            "/system.slice/x.service"
        );
    }

    #[test]
    fn renders_counts_losses_and_the_budget() {
        let counts = [count("10.0.0.1", 3), count("10.0.0.2", 2)];
        let mut book = Bookkeeping {
            series: 2,
            max_series: 16384,
            ..Bookkeeping::default()
        };
        book.counters.dropped = 4;
        book.counters.missed = 1;
        book.counters.overflow = 7;
        let collect = |options| {
            to_string(&Exposition::collect(
                &counts,
                book,
                options,
                &mut Pins::default(),
                None,
            ))
        };
        let text = collect(Options::default());
        for line in [
            "tcpconn_connects_total{family=\"ipv4\",dport=\"443\"} 5\n",
            "tcpconn_events_dropped_total 4\n",
            "tcpconn_events_missed_total 1\n",
            "tcpconn_series_overflow_total 7\n",
            "tcpconn_series 2\n",
            "tcpconn_series_limit 16384\n",
            "# TYPE tcpconn_series gauge\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        let text = collect(Options {
            with_daddr: true,
            label: None,
            ..Options::default()
        });
        assert!(
            text.contains(
                "tcpconn_connects_total{family=\"ipv4\",dport=\"443\",daddr=\"10.0.0.1\"} 3\n"
            ),
            "{text}"
        );
    }

    /// The overflow rows are the "other" series of every label that varies.
    #[test]
    fn overflow_rows_are_the_other_series() {
        let mut other = ConnectCount::new(Family::V6, None, 0);
        other.overflow = true;
        other.connects = 9;
        other.outcome = Some(Outcome::Refused);
        other.cause = Some(probe_user::failure::Cause::Icmp);
        other.latency_buckets[3] = 9;
        let options = Options {
            with_daddr: true,
            label: Some(WorkloadLabel::Cgroup),
            ..Options::default()
        };
        let text = render(&[other], options, &mut Pins::default());
        let labels = r#"family="ipv6",dport="other",daddr="other",cgroup_id="other""#;
        for line in [
            format!("tcpconn_connects_total{{{labels}}} 9\n"),
            format!(
                "tcpconn_connect_failures_total{{{labels},reason=\"refused\",cause=\"icmp\"}} 9\n"
            ),
            format!("tcpconn_connect_duration_seconds_count{{{labels},outcome=\"refused\"}} 9\n"),
        ] {
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert!(!text.contains("tcpconn_cgroup_info{"), "{text}");
    }

    /// With names and NAT, a series carries the name and where the NAT sent it (empty when
    /// none; `other` for the overflow row); names are escaped like any label value.
    #[test]
    fn names_and_nat_destinations_are_labels() {
        let mut named = ConnectCount::new(Family::V4, None, 443);
        named.connects = 2;
        named.dns_name = Some("api.example\n".into());
        named.nat_dst = Some("10.0.3.17:8443".parse().unwrap());
        let mut unnamed = ConnectCount::new(Family::V4, None, 443);
        unnamed.connects = 1;
        let mut other = ConnectCount::new(Family::V4, None, 0);
        other.overflow = true;
        other.connects = 5;
        let options = Options {
            with_names: true,
            with_nat: true,
            ..Options::default()
        };
        let text = render(&[named, unnamed, other], options, &mut Pins::default());
        for line in [
            r#"tcpconn_connects_total{family="ipv4",dport="443",dns_name="api.example\\n",nat_daddr="10.0.3.17",nat_dport="8443"} 2"#,
            r#"tcpconn_connects_total{family="ipv4",dport="443",dns_name="",nat_daddr="",nat_dport=""} 1"#,
            r#"tcpconn_connects_total{family="ipv4",dport="other",dns_name="other",nat_daddr="other",nat_dport="other"} 5"#,
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} in\n{text}");
        }
    }

    /// A cgroup's series keep the label they were first exported with, though its names are
    /// found (or lost) later; its info metric shows the names once found.
    #[test]
    fn labels_are_pinned_at_first_export() {
        const ID: &str = "4f3a0b9c2d1e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";
        let named = WorkloadNames::of_cgroup(format!("/kubepods/pod1/{ID}"));
        let row = |names: WorkloadNames| {
            let mut row = count("10.0.0.1", 1);
            row.cgroup_id = Some(42);
            row.workload = Some(names);
            row
        };
        let container = Options {
            with_daddr: false,
            label: Some(WorkloadLabel::Container),
            ..Options::default()
        };
        // Unnamed at first: held back, then under the container once named.
        let mut pins = Pins::default();
        let first = render(&[row(WorkloadNames::default())], container, &mut pins);
        assert!(!first.contains("tcpconn_connects_total{"), "{first}");
        let later = render(&[row(named.clone())], container, &mut pins);
        let series =
            format!(r#"tcpconn_connects_total{{family="ipv4",dport="443",container_id="{ID}"}} 1"#);
        assert!(later.lines().any(|l| l == series), "{later}");
        // Named at first: its container, even once the names are lost.
        let mut pins = Pins::default();
        let first = render(&[row(named.clone())], container, &mut pins);
        let later = render(&[row(WorkloadNames::default())], container, &mut pins);
        let series =
            format!(r#"tcpconn_connects_total{{family="ipv4",dport="443",container_id="{ID}"}} 1"#);
        let info = format!(r#"tcpconn_container_info{{container_id="{ID}",pod_uid=""}} 1"#);
        for text in [&first, &later] {
            assert!(text.lines().any(|l| l == series), "{text}");
            assert!(text.lines().any(|l| l == info), "{text}");
        }
        // By cgroup: the id always; the info metric gains the names when found.
        let cgroup = Options {
            with_daddr: false,
            label: Some(WorkloadLabel::Cgroup),
            ..Options::default()
        };
        let mut pins = Pins::default();
        let first = render(&[row(WorkloadNames::default())], cgroup, &mut pins);
        let later = render(&[row(named)], cgroup, &mut pins);
        let series = r#"tcpconn_connects_total{family="ipv4",dport="443",cgroup_id="42"} 1"#;
        assert!(first.lines().any(|l| l == series), "{first}");
        assert!(later.lines().any(|l| l == series), "{later}");
        assert!(first.contains(
            r#"tcpconn_cgroup_info{cgroup_id="42",cgroup="",container_id="",pod_uid=""} 1"#
        ));
        let info = format!(
            r#"tcpconn_cgroup_info{{cgroup_id="42",cgroup="/kubepods/pod1/{ID}",container_id="{ID}",pod_uid=""}} 1"#
        );
        assert!(later.lines().any(|l| l == info), "{later}");
    }

    /// A container's series is the sum of its cgroups': the counts of a retired one are carried
    /// on, so it never goes down, until the container has no cgroup with counts.
    #[test]
    fn a_containers_series_keeps_its_retired_cgroups_counts() {
        const ID: &str = "4f3a0b9c2d1e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";
        let row = |id: u64, connects: u64| {
            let mut row = count("10.0.0.1", connects);
            row.cgroup_id = Some(id);
            row.workload = Some(WorkloadNames::of_cgroup(format!(
                "/kubepods/pod1/{ID}/{id}"
            )));
            row
        };
        let options = Options {
            with_daddr: false,
            label: Some(WorkloadLabel::Container),
            ..Options::default()
        };
        let series = |n: u64| {
            format!(
                r#"tcpconn_connects_total{{family="ipv4",dport="443",container_id="{ID}"}} {n}"#
            )
        };
        let mut pins = Pins::default();
        let text = render(&[row(42, 3), row(43, 2)], options, &mut pins);
        assert!(text.lines().any(|l| l == series(5)), "{text}");
        // 42 is retired: its 3 stay in the series, 43 counts on.
        pins.retire(&[row(42, 3)], options);
        let text = render(&[row(43, 4)], options, &mut pins);
        assert!(text.lines().any(|l| l == series(7)), "{text}");
        // 43 too: nothing of the container counts any more, its series ends.
        pins.retire(&[row(43, 4)], options);
        let text = render(&[], options, &mut pins);
        assert!(!text.contains(ID), "{text}");
    }

    /// A cgroup path with control characters: escaped in the info metric, so the exposition
    /// stays one sample per line with no control byte.
    #[test]
    fn cgroup_names_hold_no_control_characters() {
        let mut row = count("10.0.0.1", 1);
        row.cgroup_id = Some(9);
        row.workload = Some(WorkloadNames::of_cgroup(
            "/evil\u{1b}[2K\r\ntcpconn_connects_total 99",
        ));
        let options = Options {
            with_daddr: false,
            label: Some(WorkloadLabel::Cgroup),
            ..Options::default()
        };
        let text = render(&[row], options, &mut Pins::default());
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        let expected = r#"tcpconn_cgroup_info{cgroup_id="9",cgroup="/evil\\u{1b}[2K\\r\\ntcpconn_connects_total 99",container_id="",pod_uid=""} 1"#;
        assert!(text.lines().any(|l| l == expected), "{text}");
    }

    /// `--stats`: each program's runs, run time and skipped runs, labelled by program.
    #[test]
    fn renders_program_statistics() {
        let mut program = ProgramStats::default();
        program.name = "tcp_v4_connect_exit".into();
        program.runs = 12;
        program.run_time_ns = 6_000;
        program.recursion_misses = 1;
        let programs = [program];
        let text = to_string(&Exposition::collect(
            &[],
            Bookkeeping::default(),
            Options::default(),
            &mut Pins::default(),
            Some(&programs),
        ));
        for line in [
            "tcpconn_bpf_program_runs_total{program=\"tcp_v4_connect_exit\"} 12\n",
            "tcpconn_bpf_program_run_seconds_total{program=\"tcp_v4_connect_exit\"} 0.000006\n",
            "tcpconn_bpf_program_recursion_misses_total{program=\"tcp_v4_connect_exit\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!plain(&[]).contains("bpf_program"), "only with --stats");
    }

    /// Chunks are handed on as they fill, and together make the whole text.
    #[test]
    fn long_expositions_come_in_chunks() {
        let rows: Vec<ConnectCount> = (0..5000)
            .map(|i| {
                let mut row = count("10.0.0.1", 1);
                row.dport = i;
                row
            })
            .collect();
        let exposition = Exposition::collect(
            &rows,
            Bookkeeping::default(),
            Options::default(),
            &mut Pins::default(),
            None,
        );
        let mut chunks = Vec::new();
        write(&exposition, |chunk| {
            chunks.push(chunk);
            true
        });
        assert!(chunks.len() > 2, "{}", chunks.len());
        assert!(chunks.iter().all(|c| c.len() < CHUNK + 4096));
        assert_eq!(chunks.concat(), to_string(&exposition).into_bytes());
    }
}
