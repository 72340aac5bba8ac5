//! probe-user against real connects on a real kernel (run by `cargo xtask test`, in the VM with
//! each backend and natively: see the `probe_tests` crate docs).

use std::{
    collections::BTreeMap, net::SocketAddr, os::unix::process::CommandExt as _, process::Command,
};

use probe_tests::{
    Finished, ProbeUser, SeenConnect, StapLine, connect, connect_kprobes, listener, summary,
    unix_now,
};

/// Counts of each connect, so that "exactly once" compares multisets.
fn tally(connects: impl IntoIterator<Item = SeenConnect>) -> BTreeMap<SeenConnect, usize> {
    let mut counts = BTreeMap::new();
    for c in connects {
        *counts.entry(c).or_insert(0) += 1;
    }
    counts
}

/// Parses stap output, checking every timestamp against the window the connects were made in.
fn stap_connects(stdout: &str, from_s: u64, to_s: u64) -> Vec<SeenConnect> {
    stdout
        .lines()
        .map(|line| {
            let parsed = StapLine::parse(line);
            assert!(
                parsed.unix_s + 1 >= from_s && parsed.unix_s <= to_s + 1,
                "timestamp {} outside [{from_s}, {to_s}] in {line:?}",
                parsed.unix_s
            );
            parsed.connect()
        })
        .collect()
}

/// Every connect in `seen` printed exactly once (and nothing else) in stap format, with a
/// timestamp in `[from, to]`, and a summary with nothing lost.
fn assert_reported_exactly_once(out: &Finished, seen: &[SeenConnect], from: u64, to: u64) {
    assert_reported_once_or_counted(out, seen, from, to);
    assert_clean_exit(&out.stderr, seen.len());
}

/// Every connect in `seen` printed at most once and nothing else printed (timestamps in
/// `[from, to]`), and every one not printed counted in the summary as dropped or missed. With
/// many threads connecting at once, some kernels run out of kretprobe instances (see
/// `Counters::missed`): those connects cannot be reported, but they must be counted.
fn assert_reported_once_or_counted(out: &Finished, seen: &[SeenConnect], from: u64, to: u64) {
    assert!(out.status.success(), "{out:?}");
    let reported = tally(stap_connects(&out.stdout, from, to));
    let expected = tally(seen.iter().copied());
    let extra: Vec<String> = reported
        .iter()
        // A 4-tuple may legitimately recur (a source port reused from TIME_WAIT).
        .filter(|&(k, n)| *n > expected.get(k).copied().unwrap_or(0))
        .map(|(k, n)| format!("{k:?} x{n}"))
        .collect();
    assert!(
        extra.is_empty(),
        "reported but not made, or more often than made: {extra:?}\nmade but not reported: {:?}\nmade: {seen:?}\nstdout: {}\nstderr: {}",
        expected
            .keys()
            .filter(|k| !reported.contains_key(k))
            .collect::<Vec<_>>(),
        out.stdout,
        out.stderr
    );
    let summary = summary(&out.stderr);
    assert_eq!(
        summary.printed,
        reported.values().sum::<usize>() as u64,
        "{}",
        out.stderr
    );
    assert_eq!(
        summary.accounted(),
        seen.len() as u64,
        "connects neither printed nor counted as lost: {:?}\nstderr: {}",
        expected
            .keys()
            .filter(|k| !reported.contains_key(k))
            .collect::<Vec<_>>(),
        out.stderr
    );
}

fn assert_clean_exit(stderr: &str, printed: usize) {
    let summary = summary(stderr);
    assert_eq!(summary.printed, printed as u64, "stderr: {stderr}");
    assert_eq!(summary.accounted(), summary.printed, "stderr: {stderr}");
}

#[test]
fn stap_format_reports_each_ipv4_and_ipv6_connect_once() {
    let v4 = listener("127.0.0.1:0");
    let v6 = listener("[::1]:0");
    let tracer = ProbeUser::start(&[]);
    let from = unix_now();
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(connect(v4, None).unwrap());
        seen.push(connect(v6, None).unwrap());
    }
    // A source port chosen by the client rather than the kernel: below the ephemeral range
    // (32768-60999), which the tests' listeners on port 0 (open until the binary exits) and
    // their connections take ports from; 40123 once failed with EADDRINUSE.
    seen.push(connect(v4, Some("127.0.0.1:30123".parse().unwrap())).unwrap());
    seen.push(connect(v6, Some("[::1]:30124".parse().unwrap())).unwrap());
    let to = unix_now();
    let out = tracer.stop();

    assert!(out.status.success(), "{out:?}");
    let reported = stap_connects(&out.stdout, from, to);
    assert_eq!(tally(reported), tally(seen.iter().copied()));
    assert_clean_exit(&out.stderr, seen.len());
}

/// `--btf FILE`: offsets read from a BTF file (here a copy of the kernel's, as btfhub would
/// provide for a kernel without one) trace the same connects; a missing file is one line and
/// exit 1, before anything is attached.
#[test]
fn btf_file_gives_the_offsets() {
    let copy = std::env::temp_dir().join(format!("probe-btf-{}", std::process::id()));
    std::fs::copy("/sys/kernel/btf/vmlinux", &copy).unwrap();
    let v4 = listener("127.0.0.1:0");
    let v6 = listener("[::1]:0");
    let tracer = ProbeUser::start(&["--btf", copy.to_str().unwrap()]);
    let from = unix_now();
    let seen = [connect(v4, None).unwrap(), connect(v6, None).unwrap()];
    let to = unix_now();
    let out = tracer.stop();
    std::fs::remove_file(&copy).unwrap();

    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        tally(stap_connects(&out.stdout, from, to)),
        tally(seen.iter().copied())
    );
    assert_clean_exit(&out.stderr, seen.len());
    probe_tests::assert_one_line_error(
        &["--btf", "/nonexistent/vmlinux.btf"],
        1,
        "probe-user: error: no BTF file at /nonexistent/vmlinux.btf",
    );
}

/// `--version` names the version and the commit built.
#[test]
fn version_names_the_commit() {
    let out = Command::new(probe_tests::probe_user())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let commit = text
        .strip_prefix(&format!(
            "probe-user {} (commit ",
            env!("CARGO_PKG_VERSION")
        ))
        .and_then(|rest| rest.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("{text:?}"));
    assert!(
        commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit()),
        "{text:?}"
    );
}

#[test]
fn minimal_format_prints_one_timestamp_per_connect() {
    let v4 = listener("127.0.0.1:0");
    let v6 = listener("[::1]:0");
    let tracer = ProbeUser::start(&["--format", "minimal"]);
    let from = unix_now();
    for _ in 0..5 {
        connect(v4, None).unwrap();
        connect(v6, None).unwrap();
    }
    // Through tcp_v6_connect into tcp_v4_connect: one connect, one line.
    let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{}", v4.port()).parse().unwrap();
    connect(mapped, None).unwrap();
    let to = unix_now();
    let out = tracer.stop();

    let mut functions = BTreeMap::new();
    for line in out.stdout.lines() {
        let (secs, function) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let secs: u64 = secs.parse().unwrap();
        assert!(
            secs + 1 >= from && secs <= to + 1,
            "timestamp {secs} in {line:?}"
        );
        *functions.entry(function.to_string()).or_insert(0) += 1;
    }
    assert_eq!(
        functions,
        BTreeMap::from([("tcp_v4_connect".into(), 6), ("tcp_v6_connect".into(), 5)])
    );
    assert_clean_exit(&out.stderr, 11);
}

#[test]
fn filter_port_traces_only_listed_destination_ports() {
    let wanted_a = listener("127.0.0.1:0");
    let wanted_b = listener("[::1]:0");
    let unwanted = listener("127.0.0.1:0");
    let unwanted6 = listener("[::1]:0");
    // Both spellings: repeated and comma-separated.
    let ports = format!("{},{}", wanted_a.port(), wanted_b.port());
    let tracer = ProbeUser::start(&[
        "--filter-port",
        &ports,
        "--filter-port",
        &wanted_a.port().to_string(),
    ]);
    let from = unix_now();
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(connect(wanted_a, None).unwrap());
        seen.push(connect(wanted_b, None).unwrap());
        connect(unwanted, None).unwrap();
        connect(unwanted6, None).unwrap();
    }
    let to = unix_now();
    let out = tracer.stop();

    assert_reported_exactly_once(&out, &seen, from, to);
}

#[test]
fn ipv4_only_and_ipv6_only() {
    let v4 = listener("127.0.0.1:0");
    let v6 = listener("[::1]:0");
    for (flag, want_v6) in [("-4", false), ("-6", true)] {
        let tracer = ProbeUser::start(&[flag]);
        let from = unix_now();
        let a = connect(v4, None).unwrap();
        let b = connect(v6, None).unwrap();
        let out = tracer.stop();
        let expected = if want_v6 { b } else { a };
        assert_eq!(
            stap_connects(&out.stdout, from, unix_now()),
            vec![expected],
            "{flag}"
        );
    }
}

#[test]
fn pid_filter_traces_only_listed_processes() {
    let v4 = listener("127.0.0.1:0");
    let me = std::process::id().to_string();
    let tracer = ProbeUser::start(&["--pid", &me]);
    let from = unix_now();
    let mine = connect(v4, None).unwrap();
    // Another process connecting to the same listener must not show up.
    let other = Command::new(std::env::current_exe().unwrap())
        .env("PROBE_TESTS_CONNECT_TO", v4.to_string())
        .args(["--exact", "connect_helper", "--nocapture"])
        .output()
        .unwrap();
    assert!(other.status.success(), "{other:?}");
    let out = tracer.stop();
    assert_eq!(stap_connects(&out.stdout, from, unix_now()), vec![mine]);
}

/// Not a test on its own: connects to `$PROBE_TESTS_CONNECT_TO` when run by
/// `pid_filter_traces_only_listed_processes` as a separate process.
#[test]
fn connect_helper() {
    if let Ok(addr) = std::env::var("PROBE_TESTS_CONNECT_TO") {
        connect(addr.parse().unwrap(), None).unwrap();
    }
}

#[test]
fn json_format_carries_ids_and_addresses() {
    let v6 = listener("[::1]:0");
    let tracer = ProbeUser::start(&["--format", "json"]);
    let (seen, tid) = std::thread::Builder::new()
        .name("json-client".into())
        .spawn(move || (connect(v6, None).unwrap(), unsafe { libc::gettid() } as u64))
        .unwrap()
        .join()
        .unwrap();
    let out = tracer.stop();

    let lines = probe_tests::json_lines(&out.stdout);
    assert_eq!(lines.len(), 1, "{}", out.stdout);
    let v = &lines[0];
    assert_eq!(v["pid"], std::process::id() as u64);
    assert_eq!(v["tid"], tid);
    assert_eq!(v["uid"], 0);
    assert_eq!(v["comm"], "json-client");
    assert_eq!(v["family"], "ipv6");
    assert_eq!(v["function"], "tcp_v6_connect");
    assert_eq!(v["ret"], 0);
    assert_eq!(v["saddr"], seen.src.ip().to_string());
    assert_eq!(v["sport"], seen.src.port());
    assert_eq!(v["daddr"], seen.dst.ip().to_string());
    assert_eq!(v["dport"], seen.dst.port());
    let ns = v["time_ns"].as_u64().unwrap();
    assert_eq!(v["time_s"].as_u64().unwrap(), ns / 1_000_000_000);
    assert!(ns / 1_000_000_000 + 1 >= unix_now() - 5, "{ns}");
}

#[test]
fn ipv4_mapped_connect_is_reported_once_as_tcp_v4_connect() {
    let v4 = listener("127.0.0.1:0");
    let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{}", v4.port()).parse().unwrap();
    let tracer = ProbeUser::start(&[]);
    let from = unix_now();
    let seen = connect(mapped, None).unwrap();
    let out = tracer.stop();
    assert!(!seen.v6);
    assert_eq!(stap_connects(&out.stdout, from, unix_now()), vec![seen]);
}

#[test]
fn failed_connect_is_reported_with_its_error_and_destination() {
    // An IPv6-only socket cannot reach an IPv4-mapped address: tcp_v6_connect fails with
    // -ENETUNREACH before assigning a source, and no packet is sent.
    let v4 = listener("127.0.0.1:0");
    let dst: SocketAddr = format!("[::ffff:127.0.0.1]:{}", v4.port()).parse().unwrap();
    let tracer = ProbeUser::start(&["--format", "json"]);
    let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
    socket.set_only_v6(true).unwrap();
    let err = socket.connect(&dst.into()).unwrap_err();
    let out = tracer.stop();

    assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH));
    if !probe_tests::reports_failed_calls() {
        // The call never reached SYN_SENT, so the tracepoint never fired.
        assert_eq!(out.stdout, "");
        return;
    }
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["function"], "tcp_v6_connect");
    assert_eq!(v["ret"], -libc::ENETUNREACH);
    assert_eq!(v["daddr"], "::ffff:127.0.0.1");
    assert_eq!(v["dport"], v4.port());
    assert_eq!(v["sport"], 0);
}

#[test]
fn thousands_of_connects_from_several_threads_are_each_reported_once() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 600;
    let v4 = listener("127.0.0.1:0");
    let v6 = listener("[::1]:0");
    let tracer = ProbeUser::start(&[]);
    let from = unix_now();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                (0..PER_THREAD)
                    .map(|i| connect(if (t + i) % 2 == 0 { v4 } else { v6 }, None).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let seen: Vec<SeenConnect> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let to = unix_now();
    let out = tracer.stop();

    assert_eq!(seen.len(), THREADS * PER_THREAD);
    assert_reported_once_or_counted(&out, &seen, from, to);
}

#[test]
fn auto_attach_says_which_backend_it_chose_and_why() {
    let v4 = listener("127.0.0.1:0");
    let tracer =
        ProbeUser::start_with(Command::new(probe_tests::probe_user()).args(["--attach", "auto"]));
    let has_kprobes = probe_tests::kernel_has_kprobes();
    let expected = probe_tests::auto_backend();
    assert_eq!(
        tracer.banner().trim_end(),
        format!("Tracing TCP connects (stap format, {expected}). Hit Ctrl-C to end.")
    );
    if has_kprobes && expected == probe_tests::FENTRY {
        assert_eq!(tracer.preamble(), "");
    } else if has_kprobes {
        // arm64 before 6.4: kprobes, but no fentry.
        let lines: Vec<&str> = tracer.preamble().lines().collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("probe-user: not attaching with fentry: "),
            "{lines:?}"
        );
    } else {
        let lines: Vec<&str> = tracer.preamble().lines().collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        // fentry first, then kprobe: this host has neither.
        assert!(
            lines[0].starts_with("probe-user: not attaching with fentry: "),
            "{lines:?}"
        );
        assert_eq!(
            lines[1],
            "probe-user: not attaching with kprobe: this kernel has no kprobes (CONFIG_KPROBES is off), so probe-user cannot trace it"
        );
    }
    let seen = connect(v4, None).unwrap();
    let out = tracer.stop();
    assert_eq!(stap_connects(&out.stdout, 0, u64::MAX - 1), vec![seen]);
}

#[test]
fn sigterm_ends_cleanly_and_no_kprobe_is_left_behind() {
    let tracer = ProbeUser::start(&[]);
    let attached = connect_kprobes();
    // Entry and return probe on each function (kprobe backend).
    assert_eq!(
        attached.len(),
        probe_tests::kprobes_per_tracer(),
        "{attached:?}"
    );
    let out = tracer.stop_with(libc::SIGTERM);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(summary(&out.stderr).accounted(), 0);
    assert_eq!(connect_kprobes(), Vec::<String>::new());
}

#[test]
fn closed_stdout_ends_it_quietly() {
    let v4 = listener("127.0.0.1:0");
    let mut tracer = ProbeUser::start(&[]);
    drop(tracer.child_mut().stdout.take());
    connect(v4, None).unwrap();
    let out = tracer.wait();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stderr, "", "expected no output after the banner");
    assert_eq!(connect_kprobes(), Vec::<String>::new());
}

#[test]
fn bad_arguments_get_one_line_errors() {
    for (args, expected) in [
        (
            &["--filter-port", "0"][..],
            "probe-user: error: invalid value '0' for '--filter-port <PORT>': a port must be between 1 and 65535",
        ),
        (
            &["--filter-port", "65536"][..],
            "probe-user: error: invalid value '65536' for '--filter-port <PORT>': a port must be between 1 and 65535",
        ),
        (
            &["--filter-port", "http"][..],
            "probe-user: error: invalid value 'http' for '--filter-port <PORT>': a port must be a number between 1 and 65535",
        ),
        (
            &["--format", "xml"][..],
            "probe-user: error: invalid value 'xml' for '--format <FORMAT>': unknown format 'xml' (expected one of: minimal, stap, json, life)",
        ),
        (
            &["--frobnicate"][..],
            "probe-user: error: unexpected argument '--frobnicate' found",
        ),
        (
            &["--count-by", "port"][..],
            "probe-user: error: the following required arguments were not provided: <--count|--metrics <ADDR>|--otlp-endpoint [<URL>]>",
        ),
        (
            &["--count", "--count-by", "dport"][..],
            "probe-user: error: invalid value 'dport' for '--count-by <KEY>' [possible values: destination, port, cgroup, container, name]",
        ),
        (
            &["--count", "--names-max", "5"][..],
            "probe-user: error: --names-grace and --names-max set how names are kept: use them with --names or --count-by name",
        ),
        (
            &["--names"][..],
            "probe-user: error: --names names each connect in JSON lines, or in counts: use it with --format json, --count, --metrics or --otlp-endpoint",
        ),
        (
            &["--nat", "--format", "stap"][..],
            "probe-user: error: --nat adds the real destination to JSON lines, or to counts: use it with --format json, --count, --metrics or --otlp-endpoint",
        ),
        (
            &["--metrics", "localhost"][..],
            "probe-user: error: invalid value 'localhost' for '--metrics <ADDR>': expected PORT or IP:PORT (e.g. 9779, 0.0.0.0:9779), got \"localhost\"",
        ),
    ] {
        probe_tests::assert_one_line_error(args, 2, expected);
    }
}

#[test]
fn unprivileged_user_is_told_which_capabilities_are_missing() {
    let out = Command::new(probe_tests::probe_user())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "probe-user: error: permission denied: run as root or with CAP_BPF and CAP_PERFMON (missing: CAP_BPF, CAP_PERFMON)\n"
    );
}

#[test]
fn successes_only_reports_each_successful_connect_from_tcp_connect() {
    let wanted = listener("127.0.0.1:0");
    // Ports are per family: another test's IPv4 listener could be given this IPv6 listener's
    // port, and its connects would pass the port filter. Holding the IPv4 port too prevents it.
    let wanted6 = loop {
        let wanted6 = listener("[::1]:0");
        if let Ok(hold) = std::net::TcpListener::bind(("127.0.0.1", wanted6.port())) {
            std::mem::forget(hold);
            break wanted6;
        }
    };
    let unwanted = listener("127.0.0.1:0");
    let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{}", wanted.port())
        .parse()
        .unwrap();
    let ports = format!("{},{}", wanted.port(), wanted6.port());
    let tracer = ProbeUser::start(&["--successes-only", "--filter-port", &ports]);
    assert_eq!(
        connect_kprobes(),
        Vec::<String>::new(),
        "only tcp_connect may be probed"
    );
    let from = unix_now();
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(connect(wanted, None).unwrap());
        seen.push(connect(wanted6, None).unwrap());
        seen.push(connect(mapped, None).unwrap());
        connect(unwanted, None).unwrap();
    }
    seen.push(connect(wanted6, Some("[::1]:30125".parse().unwrap())).unwrap());
    // Fails inside tcp_v6_connect before tcp_connect: not reported in this mode.
    let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
    socket.set_only_v6(true).unwrap();
    assert!(socket.connect(&mapped.into()).is_err());
    let to = unix_now();
    let out = tracer.stop();

    assert_reported_exactly_once(&out, &seen, from, to);

    let tracer = ProbeUser::start(&["--successes-only", "-6"]);
    let from = unix_now();
    connect(wanted, None).unwrap();
    let v6 = connect(wanted6, None).unwrap();
    let out = tracer.stop();
    assert_eq!(stap_connects(&out.stdout, from, unix_now()), vec![v6]);
}

#[test]
fn lines_arrive_while_tracing_not_only_at_exit() {
    use std::io::BufRead as _;
    let v4 = listener("127.0.0.1:0");
    let mut tracer = ProbeUser::start(&[]);
    let seen = connect(v4, None).unwrap();
    // Read the line while probe-user keeps running: output is batched, not held until exit.
    let stdout = tracer.child_mut().stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    assert_eq!(StapLine::parse(line.trim_end()).connect(), seen);
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn rust_log_debug_shows_the_kernel_side_log() {
    let v4 = listener("127.0.0.1:0");
    let tracer = ProbeUser::start_with(probe_tests::probe_user_command().env("RUST_LOG", "debug"));
    let seen = connect(v4, None).unwrap();
    let out = tracer.stop();
    let expected = format!(
        "connect ret=0 sport={} dport={}",
        seen.src.port(),
        seen.dst.port()
    );
    assert!(
        out.stderr.contains(&expected),
        "no {expected:?} in {}",
        out.stderr
    );
}

#[test]
fn a_full_ring_buffer_is_counted_not_silently_lost_and_tracing_recovers() {
    // More connects than the 1 MiB ring holds (~10.9k records of 96 bytes: 88 and the ring's
    // 8-byte header) while the reader is stopped: the excess must show up as dropped, and
    // printed + dropped must add up. Once the reader runs again, new connects are printed again.
    const BURST: u64 = 15_000;
    const AFTER: u64 = 100;
    let v4 = listener("127.0.0.1:0");
    let tracer = ProbeUser::start(&[]);
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(tracer.pid() as i32, libc::SIGSTOP) };
    for _ in 0..BURST {
        connect(v4, None).unwrap();
    }
    unsafe { libc::kill(tracer.pid() as i32, libc::SIGCONT) };
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after: Vec<SeenConnect> = (0..AFTER).map(|_| connect(v4, None).unwrap()).collect();
    let out = tracer.stop();

    assert!(out.status.success(), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let summary = summary(&out.stderr);
    assert_eq!(summary.printed, lines.len() as u64);
    assert_eq!(summary.malformed, 0);
    assert!(summary.dropped > 0, "the ring never filled: {}", out.stderr);
    assert_eq!(summary.accounted(), BURST + AFTER, "{}", out.stderr);
    let last: Vec<SeenConnect> = lines[lines.len() - AFTER as usize..]
        .iter()
        .map(|l| StapLine::parse(l).connect())
        .collect();
    assert_eq!(
        last, after,
        "connects after the burst not reported in order"
    );
    println!(
        "figures: burst connects={} printed={} dropped={} missed={}",
        BURST + AFTER,
        summary.printed,
        summary.dropped,
        summary.missed
    );
}

#[test]
fn library_example_agent_reports_the_connects() {
    // probe-user/examples/agent.rs: the library's Stream API, as an agent would use it. Once
    // with the callers' names, once without (`without_caller_names`: the name comes out empty,
    // everything else the same).
    // The name this thread connects under (the test harness names its threads).
    let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
    for (flags, name) in [(&[][..], comm.trim()), (&["--without-names"][..], "")] {
        agent_reports_the_connects(flags, name);
    }
}

/// Runs the example agent with `flags`, makes three connects to wanted ports and one to an
/// unwanted one, and checks that it printed exactly the three, with `name` as the caller's.
fn agent_reports_the_connects(flags: &[&str], name: &str) {
    let v4 = listener("127.0.0.1:0");
    let v6 = listener("[::1]:0");
    let unwanted = listener("127.0.0.1:0");
    let mut cmd = Command::new("agent");
    cmd.args(["--events", "3"]).args(flags);
    for port in [v4.port(), v6.port()] {
        cmd.args(["--filter-port", &port.to_string()]);
    }
    let agent = ProbeUser::start_until(&mut cmd, "agent: tracing");
    connect(unwanted, None).unwrap();
    let seen: Vec<SeenConnect> = [v4, v6, v4]
        .into_iter()
        .map(|dst| connect(dst, None).unwrap())
        .collect();
    let out = agent.wait();

    assert!(out.status.success(), "{out:?}");
    // The agent dropped its stream on exit: everything is detached.
    assert_eq!(connect_kprobes(), Vec::<String>::new());
    // `<pid> <comm> <src> -> <dst> ret=<ret>`, one per event, in order.
    let expected: Vec<String> = seen
        .iter()
        .map(|c| {
            let pid = std::process::id();
            format!("{pid} {} {} -> {} ret=0", name.escape_debug(), c.src, c.dst)
        })
        .collect();
    let printed: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(printed, expected, "agent {flags:?}");
    for line in [
        format!("agent: port {}: 2 connects", v4.port()),
        format!("agent: port {}: 1 connects", v6.port()),
        "agent: 3 events, 0 lost (dropped 0, missed 0, malformed 0)".to_string(),
    ] {
        assert!(
            out.stderr.lines().any(|l| l == line),
            "no {line:?} in {}",
            out.stderr
        );
    }
}
