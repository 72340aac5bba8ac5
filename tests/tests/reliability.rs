//! Reliability of probe-user on a real kernel: load, lifecycle, least privilege (run by
//! `cargo xtask test`, in the VM with each backend and natively: see the `probe_tests` crate
//! docs). Figures go to stdout as `figures: ...` lines for docs/reliability.md.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use probe_tests::{
    ProbeUser, StapLine, attach_args, connect, connect_kprobes, kprobes_per_tracer, listener,
    probe_user, reports_failed_calls, summary, uses_kprobes,
};
use socket2::{Domain, Socket, Type};

/// (family, destination port, return value): what a JSON line says about one connect call.
type CallKind = (String, u16, i64);

/// Makes one connect to `dst` and returns the call the tracer should report. The socket is
/// reset on close (linger 0), so that many thousands of connects leave no TIME_WAIT behind.
fn attempt(dst: SocketAddr) -> CallKind {
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, None).unwrap();
    socket.set_linger(Some(Duration::ZERO)).unwrap();
    let ret = match socket.connect(&dst.into()) {
        Ok(()) => 0,
        // Refused by the peer's RST: tcp_v*_connect itself succeeded (it sent the SYN).
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => 0,
        Err(e) => -i64::from(e.raw_os_error().unwrap()),
    };
    let family = if dst.is_ipv4() { "ipv4" } else { "ipv6" };
    (family.to_string(), dst.port(), ret)
}

fn tally(calls: impl IntoIterator<Item = CallKind>) -> BTreeMap<CallKind, u64> {
    let mut counts = BTreeMap::new();
    for call in calls {
        *counts.entry(call).or_insert(0) += 1;
    }
    counts
}

/// The `N connect calls in flight` count of `--stats`.
fn calls_in_flight(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("probe-user: ")?
                .split_once(" connect calls in flight")
        })
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no calls-in-flight line in {stderr}"))
}

#[test]
fn stress_every_connect_is_printed_or_counted_and_no_state_is_left_behind() {
    // 8 threads x 20k connects as fast as they go, IPv4 and IPv6 alternating: 80% refused by a
    // closed port, 10% accepted, 10% failing inside the connect call (no route). xtask sets
    // `PROBE_STRESS_CONNECTS` lower on the kernels where the full size adds CI minutes and no
    // other path (see docs/development.md).
    const THREADS: usize = 8;
    let per_thread: usize = std::env::var("PROBE_STRESS_CONNECTS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(20_000, |n| n.div_ceil(THREADS).max(10));
    let accepted = [listener("127.0.0.1:0"), listener("[::1]:0")];
    let refused: [SocketAddr; 2] = ["127.0.0.1:9".parse().unwrap(), "[::1]:9".parse().unwrap()];
    let unroutable: [SocketAddr; 2] = [
        "192.0.2.1:9".parse().unwrap(),
        "[2001:db8::1]:9".parse().unwrap(),
    ];
    let mut tracer = ProbeUser::start(&["--format", "json", "--stats"]);
    tracer.read_stdout_in_background();
    let started = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                (0..per_thread)
                    .map(|i| {
                        let family = (t + i) % 2;
                        let dst = match i % 10 {
                            0 => unroutable[family],
                            1 => accepted[family],
                            _ => refused[family],
                        };
                        attempt(dst)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut made = tally(workers.into_iter().flat_map(|w| w.join().unwrap()));
    let unroutable_made: u64 = made
        .iter()
        .filter(|((_, _, ret), _)| *ret != 0)
        .map(|(_, n)| n)
        .sum();
    if !reports_failed_calls() {
        // Calls failing before a SYN is sent are out of the tracepoint backend's sight.
        made.retain(|(_, _, ret), _| *ret == 0);
    }
    let elapsed = started.elapsed();
    let (peak_rss_kib, rss_kib) = tracer.rss_kib();
    let out = tracer.stop();

    assert!(out.status.success(), "{}", out.stderr);
    let printed = tally(probe_tests::json_lines(&out.stdout).iter().map(|v| {
        (
            v["family"].as_str().unwrap().to_string(),
            v["dport"].as_u64().unwrap() as u16,
            v["ret"].as_i64().unwrap(),
        )
    }));
    for (kind, n) in &printed {
        let expected = made.get(kind).copied().unwrap_or(0);
        assert!(
            *n <= expected,
            "{kind:?} printed {n} times, made {expected}"
        );
    }
    let connects: u64 = made.values().sum();
    assert_eq!(unroutable_made, (THREADS * per_thread.div_ceil(10)) as u64);
    let summary = summary(&out.stderr);
    assert_eq!(summary.printed, printed.values().sum::<u64>());
    assert_eq!(summary.malformed, 0, "{}", out.stderr);
    assert_eq!(summary.accounted(), connects, "{}", out.stderr);
    // Calls between entry and return probe: at most one per thread (a thread whose last
    // return was missed), none from the failed calls.
    let in_flight = calls_in_flight(&out.stderr);
    assert!(
        in_flight <= THREADS as u64,
        "{in_flight} calls left in flight"
    );
    println!(
        "figures: stress connects={connects} printed={} dropped={} missed={} in_flight_at_exit={in_flight} peak_rss_kib={peak_rss_kib} rss_kib={rss_kib} seconds={:.1} kernel={}",
        summary.printed,
        summary.dropped,
        summary.missed,
        elapsed.as_secs_f64(),
        kernel_release()
    );
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn sigint_sigterm_and_sighup_each_end_it_cleanly_with_a_summary() {
    let v4 = listener("127.0.0.1:0");
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let tracer = ProbeUser::start(&[]);
        let seen = connect(v4, None).unwrap();
        let out = tracer.stop_with(signal);
        assert_eq!(out.status.code(), Some(0), "signal {signal}: {out:?}");
        let lines: Vec<StapLine> = out.stdout.lines().map(StapLine::parse).collect();
        assert_eq!(lines.len(), 1, "signal {signal}: {}", out.stdout);
        assert_eq!(lines[0].connect(), seen);
        let summary = summary(&out.stderr);
        assert_eq!((summary.printed, summary.accounted()), (1, 1));
        assert_eq!(connect_kprobes(), Vec::<String>::new(), "signal {signal}");
    }
}

#[test]
fn sigkill_leaves_no_kprobe_attached() {
    let mut tracer = ProbeUser::start(&[]);
    assert_eq!(connect_kprobes().len(), kprobes_per_tracer());
    tracer.child_mut().kill().unwrap();
    tracer.child_mut().wait().unwrap();
    // The links are released with the process's file descriptors.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !connect_kprobes().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(connect_kprobes(), Vec::<String>::new());
}

#[test]
fn two_instances_at_once_each_report_every_connect() {
    let v4 = listener("127.0.0.1:0");
    let v6 = listener("[::1]:0");
    let first = ProbeUser::start(&[]);
    let second = ProbeUser::start(&["--filter-port", &v6.port().to_string()]);
    assert_eq!(
        connect_kprobes().len(),
        2 * kprobes_per_tracer(),
        "{:?}",
        connect_kprobes()
    );
    let seen: Vec<_> = (0..20)
        .map(|i| connect(if i % 2 == 0 { v4 } else { v6 }, None).unwrap())
        .collect();
    let (a, b) = (first.stop(), second.stop());
    let parse = |stdout: &str| -> Vec<_> {
        stdout
            .lines()
            .map(|l| StapLine::parse(l).connect())
            .collect()
    };
    assert_eq!(parse(&a.stdout), seen);
    let to_v6: Vec<_> = seen.iter().copied().filter(|c| c.dst == v6).collect();
    assert_eq!(parse(&b.stdout), to_v6);
    assert_eq!(connect_kprobes(), Vec::<String>::new());
}

/// probe-user as user nobody with only `caps` (via the `as-user` helper).
fn as_nobody(caps: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("as-user");
    cmd.args(["--caps", caps, "--"])
        .arg(probe_user())
        .args(attach_args())
        .args(args);
    cmd
}

/// (major, minor) of the running kernel.
fn kernel_version() -> (u32, u32) {
    let release = kernel_release();
    let mut parts = release.split(['.', '-']).map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap(), parts.next().unwrap())
}

#[test]
fn a_low_memlock_limit_matters_only_before_5_11_and_is_named() {
    let _paranoid = PerfParanoid::set("2");
    let mut cmd = Command::new("as-user");
    cmd.args(["--caps", "CAP_BPF,CAP_PERFMON", "--memlock-kib", "64", "--"])
        .arg(probe_user());
    if kernel_version() >= (5, 11) {
        // Maps are charged to the memory cgroup instead: the limit does not matter.
        let tracer = ProbeUser::start_with(&mut cmd);
        let out = tracer.stop();
        assert!(out.status.success(), "{out:?}");
    } else {
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("probe-user: error: the locked-memory limit (RLIMIT_MEMLOCK) is 64 KiB, which kernels before 5.11 charge BPF maps to; raise it (ulimit -l unlimited, or LimitMEMLOCK=infinity for a service): cannot load"),
            "{stderr}"
        );
    }
}

const PERF_PARANOID: &str = "/proc/sys/kernel/perf_event_paranoid";

/// Sets `kernel.perf_event_paranoid` for as long as it lives.
struct PerfParanoid(String);

impl PerfParanoid {
    fn set(level: &str) -> PerfParanoid {
        let previous = std::fs::read_to_string(PERF_PARANOID).unwrap();
        std::fs::write(PERF_PARANOID, level).unwrap();
        PerfParanoid(previous)
    }
}

impl Drop for PerfParanoid {
    fn drop(&mut self) {
        std::fs::write(PERF_PARANOID, self.0.trim()).unwrap();
    }
}

#[test]
fn runs_as_nobody_with_only_cap_bpf_and_cap_perfmon() {
    // Debian's kernels default to level 3, which needs CAP_SYS_ADMIN for any perf event, kprobes
    // included: the kprobe backend must say so; fentry and the tracepoint use no perf event and
    // work (so does auto, which takes fentry). At level 2 (upstream's default) the two
    // capabilities suffice for every backend.
    {
        let _paranoid = PerfParanoid::set("3");
        if uses_kprobes() && !attach_args().is_empty() {
            let out = as_nobody("CAP_BPF,CAP_PERFMON", &[]).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{out:?}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(
                stderr.starts_with(
                    "probe-user: error: kernel.perf_event_paranoid is 3, which allows kprobes only with CAP_SYS_ADMIN; run as root or lower it to 2 (sysctl kernel.perf_event_paranoid=2): cannot attach"
                ),
                "{stderr}"
            );
        } else {
            let tracer = ProbeUser::start_with(&mut as_nobody("CAP_BPF,CAP_PERFMON", &[]));
            let out = tracer.stop();
            assert!(out.status.success(), "{out:?}");
        }
    }
    let _paranoid = PerfParanoid::set("2");
    let v6 = listener("[::1]:0");
    // Only this test's connects: natively, the host's other processes connect too.
    let pid = std::process::id().to_string();
    let tracer = ProbeUser::start_with(&mut as_nobody(
        "CAP_BPF,CAP_PERFMON",
        &["--format", "json", "--pid", &pid],
    ));
    let status = std::fs::read_to_string(format!("/proc/{}/status", tracer.pid())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_string()
    };
    assert!(field("Uid:").starts_with("65534"), "{status}");
    // CAP_PERFMON (38) and CAP_BPF (39) and nothing else.
    assert_eq!(
        field("CapEff:"),
        format!("{:016x}", (1u64 << 38) | (1 << 39))
    );
    let seen = connect(v6, None).unwrap();
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    let lines = probe_tests::json_lines(&out.stdout);
    assert_eq!(lines.len(), 1, "{}", out.stdout);
    assert_eq!(lines[0]["sport"], seen.src.port());
    assert_eq!(lines[0]["dport"], seen.dst.port());
}

#[test]
fn without_cap_perfmon_it_names_the_missing_capability() {
    let out = as_nobody("CAP_BPF", &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "probe-user: error: permission denied: run as root or with CAP_BPF and CAP_PERFMON (missing: CAP_PERFMON)\n"
    );
}
