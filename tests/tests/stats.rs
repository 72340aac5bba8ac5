//! `--stats` in the counting modes: with `--count` the programs' runs after every table and
//! everything at exit, with `--metrics` in every scrape and at exit (run by `cargo xtask test`,
//! in the VM with each backend and natively; every name here starts with `stats_`).
//!
//! Every backend runs at least one program per connect (kprobe: entry and return; fentry: the
//! fexit; tracepoint: at least the CLOSE -> SYN_SENT change), so the runs counted over all
//! programs are at least the connects made.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use probe_tests::{ProbeUser, connect, listener, probe_user_command, scrape};

/// Connects made in each test.
const CONNECTS: u64 = 5;

/// Every `probe-user: program NAME ran N times, M ns per run` line of `stderr`: (name, runs),
/// in order.
fn program_lines(stderr: &str) -> Vec<(String, u64)> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("probe-user: program ")?;
            let (name, rest) = rest.split_once(" ran ")?;
            let (runs, rest) = rest.split_once(" times, ")?;
            rest.strip_suffix(" ns per run")?.parse::<u64>().ok()?;
            Some((name.to_string(), runs.parse().ok()?))
        })
        .collect()
}

/// The exit's part of `--stats` (start-up, memory, calls in flight) is in `stderr`.
fn assert_exit_stats(stderr: &str) {
    for start in ["probe-user: attached in ", "probe-user: memory: peak RSS "] {
        assert!(
            stderr.lines().any(|l| l.starts_with(start)),
            "{start:?} in {stderr}"
        );
    }
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("probe-user: ") && l.contains(" connect calls in flight")),
        "{stderr}"
    );
}

/// `--count --stats`: each program's runs after every table, then at exit with the rest of
/// `--stats`; the runs grow and cover every connect made.
#[test]
fn stats_with_count_prints_program_runs_every_interval_and_at_exit() {
    let v4 = listener("127.0.0.1:0");
    let port = v4.port().to_string();
    let tracer = ProbeUser::start_until(
        probe_user_command().args([
            "--count",
            "--stats",
            "--interval",
            "300ms",
            "--filter-port",
            &port,
        ]),
        "Counting TCP connects",
    );
    for _ in 0..CONNECTS {
        connect(v4, None).unwrap();
    }
    // At least two tables after the connects.
    std::thread::sleep(Duration::from_millis(800));
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    assert_exit_stats(&out.stderr);
    let lines = program_lines(&out.stderr);
    let programs: BTreeMap<&str, Vec<u64>> = lines.iter().fold(BTreeMap::new(), |mut m, (n, r)| {
        m.entry(n.as_str()).or_default().push(*r);
        m
    });
    assert!(!programs.is_empty(), "{}", out.stderr);
    for (name, runs) in &programs {
        // Tables at 300 ms, 600 ms, ... and the exit's.
        assert!(runs.len() >= 3, "{name}: {runs:?} in {}", out.stderr);
        assert!(runs.is_sorted(), "{name}: {runs:?}");
    }
    let at_exit: u64 = programs.values().map(|runs| runs.last().unwrap()).sum();
    assert!(at_exit >= CONNECTS, "{at_exit} runs in {}", out.stderr);
    // The table counted them too.
    let summary =
        format!("probe-user: {CONNECTS} connects counted, 0 dropped, 0 missed, 0 malformed");
    assert!(out.stderr.lines().any(|l| l == summary), "{}", out.stderr);
}

/// `--metrics --stats`: every scrape carries the programs' runs, and the exit prints them with
/// the rest of `--stats`.
#[test]
fn stats_with_metrics_exports_program_runs_and_prints_them_at_exit() {
    let v4 = listener("127.0.0.1:0");
    let port = v4.port().to_string();
    let tracer = ProbeUser::start_until(
        probe_user_command().args([
            "--metrics",
            "127.0.0.1:0",
            "--stats",
            "--filter-port",
            &port,
        ]),
        "Counting TCP connects",
    );
    let addr: SocketAddr = tracer
        .preamble()
        .lines()
        .find_map(|l| l.strip_prefix("probe-user: serving metrics on http://"))
        .and_then(|rest| rest.strip_suffix("/metrics")?.parse().ok())
        .unwrap_or_else(|| panic!("no serving line: {:?}", tracer.preamble()));
    for _ in 0..CONNECTS {
        connect(v4, None).unwrap();
    }
    let body = scrape(addr);
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    let scraped: BTreeMap<String, u64> = body
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("tcpconn_bpf_program_runs_total{program=\"")?;
            let (name, value) = rest.split_once("\"} ")?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect();
    assert!(!scraped.is_empty(), "{body}");
    // The scrape's own connect to the endpoint is on another port, filtered out.
    assert!(scraped.values().sum::<u64>() >= CONNECTS, "{body}");
    for name in scraped.keys() {
        let seconds = format!("tcpconn_bpf_program_run_seconds_total{{program=\"{name}\"}} ");
        assert!(
            body.lines().any(|l| l.starts_with(&seconds)),
            "{seconds} in {body}"
        );
    }
    assert_exit_stats(&out.stderr);
    let at_exit: BTreeMap<String, u64> = program_lines(&out.stderr).into_iter().collect();
    assert_eq!(
        at_exit.keys().collect::<Vec<_>>(),
        scraped.keys().collect::<Vec<_>>(),
        "{}",
        out.stderr
    );
    for (name, runs) in &at_exit {
        assert!(*runs >= scraped[name], "{name}: {runs} < {}", scraped[name]);
    }
}
