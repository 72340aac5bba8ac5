//! `--metrics` on a fleet: exact totals whatever the number of label sets (the overflow
//! series), the latency histogram of each series, labels that stay put while cgroups come and
//! go, and the retirement of gone cgroups' label sets (run by `cargo xtask test`; see the
//! `probe_tests` crate docs).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use probe_tests::{
    Cgroup, CgroupTree, ProbeUser, attach_args, connect, connect_once_from, free_port, listener,
    metric_samples, metric_value, once_per_kernel, probe_user, probe_user_command, scrape,
    serving_addr,
};

/// A series' labels.
type Labels = BTreeMap<String, String>;

/// Connects to listening ports (established) and closed ones (refused), and what a scrape
/// should count of them.
struct Traffic {
    open: Vec<SocketAddr>,
    closed: Vec<SocketAddr>,
}

impl Traffic {
    /// Three listening ports and three closed ones.
    fn new() -> Traffic {
        let open = (0..3).map(|_| listener("127.0.0.1:0")).collect();
        let closed = (0..3)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
            .collect();
        Traffic { open, closed }
    }

    fn ports(&self) -> String {
        let ports: Vec<String> = self
            .open
            .iter()
            .chain(&self.closed)
            .map(|a| a.port().to_string())
            .collect();
        ports.join(",")
    }

    /// Connects `i + 1` times to the `i`th open port and once to each closed one; returns the
    /// connects made by port and outcome.
    fn make(&self) -> BTreeMap<(String, &'static str), u64> {
        let mut made = BTreeMap::new();
        for (i, &dst) in self.open.iter().enumerate() {
            for _ in 0..=i {
                connect(dst, None).unwrap();
                *made
                    .entry((dst.port().to_string(), "established"))
                    .or_default() += 1;
            }
        }
        for &dst in &self.closed {
            assert!(connect(dst, None).is_err(), "{dst} is closed");
            *made.entry((dst.port().to_string(), "refused")).or_default() += 1;
        }
        made
    }
}

/// Starts probe-user serving metrics with outcomes, with `args`.
fn metrics(args: &[&str]) -> ProbeUser {
    ProbeUser::start_until(
        probe_user_command()
            .args(["--metrics", "127.0.0.1:0", "--outcome"])
            .args(args),
        "Counting TCP connects",
    )
}

/// A scrape, once everything made has been counted (the tracepoint reports a connect when
/// its handshake ends, just after the client sees it).
fn scrape_when(tracer: &ProbeUser, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = scrape(serving_addr(tracer));
        if done(&body) || Instant::now() > deadline {
            return body;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The sum of a metric's samples.
fn total(body: &str, name: &str) -> u64 {
    metric_samples(body, name)
        .iter()
        .map(|(_, v)| *v as u64)
        .sum()
}

/// Every connect series has a histogram per outcome whose `_count` and `+Inf` bucket are its
/// connects, and the connects of a series are the sum of its histograms' counts.
fn assert_histograms_match(body: &str) {
    let mut by_series: BTreeMap<Labels, u64> = BTreeMap::new();
    for (mut labels, count) in metric_samples(body, "tcpconn_connect_duration_seconds_count") {
        let mut inf = labels.clone();
        inf.insert("le".into(), "+Inf".into());
        let buckets = metric_samples(body, "tcpconn_connect_duration_seconds_bucket");
        let at_inf = buckets.iter().find(|(l, _)| *l == inf).map(|(_, v)| *v);
        assert_eq!(at_inf, Some(count), "+Inf of {labels:?} in {body}");
        labels.remove("outcome");
        *by_series.entry(labels).or_default() += count as u64;
    }
    let connects: BTreeMap<Labels, u64> = metric_samples(body, "tcpconn_connects_total")
        .into_iter()
        .map(|(l, v)| (l, v as u64))
        .collect();
    assert_eq!(by_series, connects, "{body}");
}

/// Without overflow, each port and outcome is its own series, exactly; with a budget of two
/// label sets the rest are counted under `dport="other"`, still exactly: the totals, the
/// failures by reason and the histograms' counts are the connects made.
#[test]
fn fleet_totals_are_exact_with_and_without_overflow() {
    let traffic = Traffic::new();
    let ports = traffic.ports();
    // Every label set its own series.
    let tracer = metrics(&["--filter-port", &ports]);
    let made = traffic.make();
    let n: u64 = made.values().sum();
    let body = scrape_when(&tracer, |b| total(b, "tcpconn_connects_total") >= n);
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    let mut got = BTreeMap::new();
    for (labels, value) in metric_samples(&body, "tcpconn_connect_duration_seconds_count") {
        got.insert(
            (labels["dport"].clone(), outcome_name(&labels["outcome"])),
            value as u64,
        );
    }
    assert_eq!(got, made, "{body}");
    assert_histograms_match(&body);
    assert_eq!(metric_value(&body, "tcpconn_series_overflow_total"), 0.0);
    assert_eq!(metric_value(&body, "tcpconn_series"), made.len() as f64);

    // A budget of two label sets: the first two made keep theirs, the rest overflow.
    let tracer = metrics(&["--filter-port", &ports, "--max-series", "2"]);
    let made = traffic.make();
    let body = scrape_when(&tracer, |b| total(b, "tcpconn_connects_total") >= n);
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(total(&body, "tcpconn_connects_total"), n, "{body}");
    let own: Vec<(Labels, f64)> = metric_samples(&body, "tcpconn_connects_total")
        .into_iter()
        .filter(|(l, _)| l["dport"] != "other")
        .collect();
    assert!(own.len() <= 2, "{body}");
    for (labels, value) in &own {
        let port = &labels["dport"];
        let made_to_port: u64 = made
            .iter()
            .filter(|((p, _), _)| p == port)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(*value as u64, made_to_port, "{labels:?} in {body}");
    }
    let other: u64 = metric_samples(&body, "tcpconn_connects_total")
        .iter()
        .filter(|(l, _)| l["dport"] == "other")
        .map(|(_, v)| *v as u64)
        .sum();
    assert!(other > 0, "{body}");
    assert_eq!(
        metric_value(&body, "tcpconn_series_overflow_total") as u64,
        other,
        "{body}"
    );
    assert_eq!(metric_value(&body, "tcpconn_series"), 2.0, "{body}");
    assert_eq!(metric_value(&body, "tcpconn_series_limit"), 2.0, "{body}");
    assert_eq!(
        total(&body, "tcpconn_connect_failures_total"),
        traffic.closed.len() as u64,
        "{body}"
    );
    assert_histograms_match(&body);
    let summary = format!("probe-user: {n} connects counted, 0 dropped, 0 missed, 0 malformed");
    assert!(out.stderr.lines().any(|l| l == summary), "{}", out.stderr);
}

fn outcome_name(outcome: &str) -> &'static str {
    match outcome {
        "established" => "established",
        "refused" => "refused",
        other => panic!("outcome {other}"),
    }
}

/// One connect to `dst` from a task in `cgroup`.
fn connect_in(cgroup: &Cgroup, dst: SocketAddr) {
    connect_once_from(&[], &["--cgroup", cgroup.dir()], dst);
}

/// Whether `body` has one connect from each of `cgroups`, named in its info.
fn named(body: &str, cgroups: &[&Cgroup]) -> bool {
    let series = by_cgroup(body);
    cgroups.iter().all(|c| {
        series
            .get(&c.id.to_string())
            .is_some_and(|(n, info)| *n == 1 && info.get("cgroup") == Some(&c.path))
    })
}

/// The connect series of each cgroup id in `body`, and the info line of each.
fn by_cgroup(body: &str) -> BTreeMap<String, (u64, Labels)> {
    let infos: BTreeMap<String, Labels> = metric_samples(body, "tcpconn_cgroup_info")
        .into_iter()
        .map(|(l, _)| (l["cgroup_id"].clone(), l))
        .collect();
    metric_samples(body, "tcpconn_connects_total")
        .into_iter()
        .map(|(l, v)| {
            let id = l["cgroup_id"].clone();
            let info = infos.get(&id).cloned().unwrap_or_default();
            (id, (v as u64, info))
        })
        .collect()
}

/// Labelled by cgroup, as root (cgroups asked of the kernel by file handle): see
/// [`labels_stay_put_and_gone_cgroups_retire`].
#[test]
fn fleet_labels_stay_put_and_gone_cgroups_retire() {
    if once_per_kernel() {
        labels_stay_put_and_gone_cgroups_retire(probe_user_command(), "root");
    }
}

/// The same as user nobody with only CAP_BPF and CAP_PERFMON, as the shipped units run it:
/// without CAP_DAC_READ_SEARCH, gone cgroups are found by walking the cgroup tree. The walk is
/// the kernel's cgroupfs as any directory tree, so this runs natively only.
#[test]
fn fleet_gone_cgroups_retire_without_file_handles() {
    if std::env::var_os("PROBE_IN_VM").is_some() || !once_per_kernel() {
        eprintln!("skipped: run natively only");
        return;
    }
    let mut cmd = Command::new("as-user");
    cmd.args(["--caps", "CAP_BPF,CAP_PERFMON", "--"])
        .arg(probe_user())
        .args(attach_args());
    labels_stay_put_and_gone_cgroups_retire(cmd, "nobody");
}

/// Labelled by cgroup: each cgroup's series keeps its label set (its id) from scrape to scrape
/// while cgroups appear and go, its names joined through `tcpconn_cgroup_info`; the label sets
/// of cgroups gone for `--retire-after` are retired (their kernel keys freed), so cgroups that
/// come and go far past the budget are all counted exactly, none as "other".
fn labels_stay_put_and_gone_cgroups_retire(mut command: Command, name: &str) {
    let dst = listener("127.0.0.1:0");
    let port = dst.port().to_string();
    let mut tree = CgroupTree::new(&format!("probe-fleet-{}-{name}", std::process::id()));
    let tracer = ProbeUser::start_until(
        command.args([
            "--metrics",
            "127.0.0.1:0",
            "--metrics-label",
            "cgroup",
            "--max-series",
            "4",
            "--retire-after",
            "2s",
            "--filter-port",
            &port,
            "--cgroup",
            tree.root().dir(),
        ]),
        "Counting TCP connects",
    );
    let mut made = 0;
    let (a, b) = (tree.mkdir("a"), tree.mkdir("b"));
    connect_in(&a, dst);
    connect_in(&b, dst);
    made += 2;
    // Named: at once by file handle, or by the next walk of the tree (at most one a second).
    let first = by_cgroup(&scrape_when(&tracer, |body| named(body, &[&a, &b])));
    for cgroup in [&a, &b] {
        let (n, info) = &first[&cgroup.id.to_string()];
        assert_eq!(*n, 1, "{first:?}");
        assert_eq!(info["cgroup"], cgroup.path, "{first:?}");
    }
    // a and b go; c and d come: a's and b's series stay as they were until retired.
    tree.remove(&a);
    tree.remove(&b);
    let (c, d) = (tree.mkdir("c"), tree.mkdir("d"));
    connect_in(&c, dst);
    connect_in(&d, dst);
    made += 2;
    let body = scrape_when(&tracer, |b| total(b, "tcpconn_connects_total") >= 4);
    let second = by_cgroup(&body);
    let retired = metric_value(&body, "tcpconn_series_retired_total") as u64;
    for cgroup in [&a, &b] {
        let id = cgroup.id.to_string();
        // Retired already (a slow machine), or exactly as before.
        assert!(
            second.get(&id) == first.get(&id) || retired > 0,
            "{first:?} then {second:?}"
        );
    }
    // Rounds of two new cgroups, each gone before the next: ten cgroups in all, for a budget of
    // four, each counted under its own label set once the gone ones are retired.
    let mut seen_retired = 0;
    for round in 0..4 {
        let body = scrape_when(&tracer, |b| {
            metric_value(b, "tcpconn_series") <= 2.0
                && metric_value(b, "tcpconn_series_retired_total") >= (2 + 2 * round) as f64
        });
        seen_retired = metric_value(&body, "tcpconn_series_retired_total") as u64;
        assert_eq!(seen_retired, 2 + 2 * round as u64, "{body}");
        if round == 3 {
            break;
        }
        let e = tree.mkdir(&format!("e{round}"));
        let f = tree.mkdir(&format!("f{round}"));
        connect_in(&e, dst);
        connect_in(&f, dst);
        made += 2;
        // Counted under their own label sets, then gone at once, named or not (a short-lived
        // job's cgroup): retired all the same.
        let body = scrape_when(&tracer, |b| total(b, "tcpconn_connects_total") >= 4);
        let now = by_cgroup(&body);
        for cgroup in [&e, &f, &c, &d] {
            assert_eq!(
                now.get(&cgroup.id.to_string()).map(|s| s.0),
                Some(1),
                "{body}"
            );
        }
        tree.remove(&e);
        tree.remove(&f);
    }
    let body = scrape(serving_addr(&tracer));
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    // c and d, still there, under the label sets they first had; their info named them,
    // at once or (without file handles, a cgroup made since the last walk) by now.
    let last = by_cgroup(&body);
    for cgroup in [&c, &d] {
        let id = cgroup.id.to_string();
        let (before, now) = (&second[&id], &last[&id]);
        assert_eq!(before.0, now.0, "{second:?} then {last:?}");
        assert!(
            [String::new(), cgroup.path.clone()].contains(&before.1["cgroup"]),
            "{second:?}"
        );
        assert_eq!(now.1["cgroup"], cgroup.path, "{last:?}");
    }
    assert_eq!(metric_value(&body, "tcpconn_series_overflow_total"), 0.0);
    let retired_connects = metric_value(&body, "tcpconn_retired_connects_total") as u64;
    assert_eq!(retired_connects, seen_retired, "{body}");
    assert_eq!(
        total(&body, "tcpconn_connects_total") + retired_connects,
        made,
        "{body}"
    );
}
