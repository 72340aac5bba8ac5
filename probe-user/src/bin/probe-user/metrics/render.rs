//! The Prometheus / OpenMetrics exposition of the kernel's connect counts and of what was lost.

use std::{collections::BTreeMap, sync::atomic::AtomicU64};

use probe_common::Named as _;
use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet, text::encode},
    metrics::MetricType,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use probe_user::{ConnectCount, Counters, LATENCY_BUCKET_BOUNDS_NS, ProgramStats};

use super::WorkloadLabel;

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
///
/// With `programs` (`--stats`), each eBPF program's runs, run time and skipped runs, labelled
/// by `program`: `tcpconn_bpf_program_{runs,run_seconds,recursion_misses}_total`.
pub fn render(
    counts: &[ConnectCount],
    counters: Counters,
    with_daddr: bool,
    label: Option<WorkloadLabel>,
    programs: Option<&[ProgramStats]>,
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
    if let Some(programs) = programs {
        register_programs(&mut registry, programs);
    }
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

/// The kernel's statistics of each program (`--stats`), as counters labelled by program name.
fn register_programs(registry: &mut Registry, programs: &[ProgramStats]) {
    let runs = Family::<Labels, Counter>::default();
    let run_seconds = Family::<Labels, Counter<f64, AtomicU64>>::default();
    let misses = Family::<Labels, Counter>::default();
    for p in programs {
        let labels = vec![("program".to_string(), p.name.clone())];
        runs.get_or_create(&labels).inc_by(p.runs);
        run_seconds
            .get_or_create(&labels)
            .inc_by(p.run_time_ns as f64 / 1e9);
        misses.get_or_create(&labels).inc_by(p.recursion_misses);
    }
    registry.register(
        "bpf_program_runs",
        "Runs of each eBPF program (kernel BPF statistics, --stats)",
        runs,
    );
    registry.register(
        "bpf_program_run_seconds",
        "Time spent in each eBPF program (kernel BPF statistics, --stats)",
        run_seconds,
    );
    registry.register(
        "bpf_program_recursion_misses",
        "Runs of each eBPF program the kernel skipped (already running on its CPU)",
        misses,
    );
}

/// `value` as an OpenMetrics label value: prometheus-client 0.23 writes label values as they
/// are, and a cgroup's name is anyone's choice who can create one (a delegated subtree, a
/// rootless container): a `"` or `\` in it would otherwise break the exposition, and with it
/// the whole scrape. Control characters are escaped first, as in every text output
/// ([`probe_user::escape`]), so the label value a scraper reads is the name as count tables show
/// it; then the exposition's own escapes (`\\`, `\"`, `\n`) apply to that text.
fn escape_label_value(value: &str) -> String {
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
        let text = render(
            &[established, refused],
            Counters::default(),
            false,
            None,
            None,
        );
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
            !render(
                &[count("10.0.0.1", 1)],
                Counters::default(),
                false,
                None,
                None
            )
            .contains("connect_duration"),
        );
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
    fn renders_counts_and_losses() {
        let counts = [count("10.0.0.1", 3), count("10.0.0.2", 2)];
        let mut counters = Counters::default();
        counters.dropped = 4;
        counters.missed = 1;
        let text = render(&counts, counters, false, None, None);
        assert!(
            text.contains("tcpconn_connects_total{family=\"ipv4\",dport=\"443\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("tcpconn_events_dropped_total 4\n"), "{text}");
        assert!(text.contains("tcpconn_events_missed_total 1\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        let text = render(&counts, counters, true, None, None);
        assert!(
            text.contains(
                "tcpconn_connects_total{family=\"ipv4\",dport=\"443\",daddr=\"10.0.0.1\"} 3\n"
            ),
            "{text}"
        );
    }

    /// A cgroup label value with control characters: escaped, so the exposition stays one
    /// sample per line with no control byte.
    #[test]
    fn cgroup_labels_hold_no_control_characters() {
        let mut row = count("10.0.0.1", 1);
        row.cgroup_id = Some(9);
        row.workload = Some(probe_user::WorkloadNames::of_cgroup(
            "/evil\u{1b}[2K\r\ntcpconn_connects_total 99",
        ));
        let text = render(
            &[row],
            Counters::default(),
            false,
            Some(WorkloadLabel::Cgroup),
            None,
        );
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        let expected = r#"tcpconn_connects_total{family="ipv4",dport="443",cgroup="/evil\\u{1b}[2K\\r\\ntcpconn_connects_total 99"} 1"#;
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
        let text = render(&[], Counters::default(), false, None, Some(&programs));
        for line in [
            "tcpconn_bpf_program_runs_total{program=\"tcp_v4_connect_exit\"} 12\n",
            "tcpconn_bpf_program_run_seconds_total{program=\"tcp_v4_connect_exit\"} 0.000006\n",
            "tcpconn_bpf_program_recursion_misses_total{program=\"tcp_v4_connect_exit\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(
            !render(&[], Counters::default(), false, None, None).contains("bpf_program"),
            "only with --stats"
        );
    }
}
