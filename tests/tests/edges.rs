//! Exactness at the edges: the same connect gets the same answer from every backend, format and
//! mode; every connect a program saw is printed or counted, at exit too; bad flags and broken
//! outputs get one line. Run by `cargo xtask test` in the VM with each backend and natively.

use std::{
    mem::size_of,
    net::{Ipv4Addr, SocketAddr},
    os::fd::AsRawFd as _,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use probe_common::limit::{LRU_FREE_PER_CPU, MAX_CONNECTING};
use probe_tests::{
    FENTRY, KPROBE, ProbeUser, StapLine, SynDropping, TRACEPOINT, attach_args, backend,
    bound_reusing_address, connect, connect_in_progress, connect_kprobes, json_lines, listener,
    probe_user, reports_failed_calls, summary, unix_now,
};
use socket2::{Domain, Socket, Type};

/// A plain IPv4 connect, an IPv4-mapped one (an IPv6 socket, through tcp_v4_connect) and a
/// plain IPv6 one, to listeners on one port number each.
struct ThreeFamilies {
    v4: SocketAddr,
    mapped: SocketAddr,
    v6: SocketAddr,
}

impl ThreeFamilies {
    fn new() -> Self {
        let v4 = listener("127.0.0.1:0");
        let v6 = listener("[::1]:0");
        let mapped = format!("[::ffff:127.0.0.1]:{}", v4.port()).parse().unwrap();
        ThreeFamilies { v4, mapped, v6 }
    }

    /// Makes the three connects while `args` traces them (see [`traced`]).
    fn traced(&self, args: &[&str]) -> probe_tests::Finished {
        traced(args, &[self.v4, self.mapped, self.v6])
    }
}

/// Connects to each of `dsts` while probe-user with `args` (and `--pid` of this process:
/// natively, other processes connect too) traces or counts them; returns its output.
fn traced(args: &[&str], dsts: &[SocketAddr]) -> probe_tests::Finished {
    let banner = if args.contains(&"--count") {
        "Counting TCP connects"
    } else {
        "Tracing TCP connects"
    };
    let mut cmd = probe_tests::probe_user_command();
    cmd.args(args).args(only_us());
    let tracer = ProbeUser::start_until(&mut cmd, banner);
    for &dst in dsts {
        connect(dst, None).unwrap();
    }
    let out = tracer.stop();
    assert!(out.status.success(), "{args:?}: {out:?}");
    out
}

/// `--pid <this process>`: natively, the host's other processes connect too.
fn only_us() -> [String; 2] {
    ["--pid".to_string(), std::process::id().to_string()]
}

/// `(function, destination)` of every stap line.
fn stap_destinations(stdout: &str) -> Vec<(bool, SocketAddr)> {
    let mut lines: Vec<(bool, SocketAddr)> = stdout
        .lines()
        .map(|l| {
            let line = StapLine::parse(l);
            (line.v6, line.dst)
        })
        .collect();
    lines.sort();
    lines
}

/// `(function, daddr, dport, connects)` of the last `--count --format json` table.
fn counted(stdout: &str) -> Vec<(String, String, u64, u64)> {
    let tables = json_lines(stdout);
    let last = tables.last().expect("a count table");
    let mut rows: Vec<_> = last["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["function"].as_str().unwrap().to_string(),
                r["daddr"].as_str().unwrap_or("*").to_string(),
                r["dport"].as_u64().unwrap(),
                r["connects"].as_u64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn edge_ipv4_mapped_connects_are_ipv4_connects_for_minus_4_and_minus_6_in_every_format() {
    let c = ThreeFamilies::new();
    let v4_dst = c.v4;
    let v6_dst = c.v6;

    // -4: the plain and the mapped connect, both as tcp_v4_connect to 127.0.0.1.
    let out = c.traced(&["-4"]);
    assert_eq!(
        stap_destinations(&out.stdout),
        vec![(false, v4_dst), (false, v4_dst)]
    );
    let out = c.traced(&["-4", "--format", "minimal"]);
    assert_eq!(out.stdout.lines().count(), 2, "{out:?}");
    assert!(out.stdout.lines().all(|l| l.ends_with(": tcp_v4_connect")));
    let out = c.traced(&["-4", "--count", "--format", "json"]);
    let port = u64::from(v4_dst.port());
    assert_eq!(
        counted(&out.stdout),
        vec![("tcp_v4_connect".into(), "127.0.0.1".into(), port, 2)]
    );

    // -6: only the plain IPv6 connect, never the mapped one.
    let out = c.traced(&["-6"]);
    assert_eq!(stap_destinations(&out.stdout), vec![(true, v6_dst)]);
    let out = c.traced(&["-6", "--format", "minimal"]);
    assert_eq!(out.stdout.lines().collect::<Vec<_>>().len(), 1, "{out:?}");
    assert!(out.stdout.ends_with(": tcp_v6_connect\n"), "{out:?}");
    let out = c.traced(&["-6", "--count", "--format", "json"]);
    let port = u64::from(v6_dst.port());
    assert_eq!(
        counted(&out.stdout),
        vec![("tcp_v6_connect".into(), "::1".into(), port, 1)]
    );
}

#[test]
fn edge_destination_networks_never_match_the_other_family() {
    let c = ThreeFamilies::new();
    // Every IPv6 network contains ::ffff:0:0/96, where the kernel keeps IPv4-mapped addresses:
    // ::/0 must still match no IPv4 destination, mapped ones included.
    let out = c.traced(&["--dst", "::/0"]);
    assert_eq!(stap_destinations(&out.stdout), vec![(true, c.v6)]);
    let out = c.traced(&["--dst", "0.0.0.0/0"]);
    assert_eq!(
        stap_destinations(&out.stdout),
        vec![(false, c.v4), (false, c.v4)]
    );
    // An IPv4-mapped network is the IPv4 network it maps.
    let out = c.traced(&["--dst", "::ffff:127.0.0.0/104"]);
    assert_eq!(
        stap_destinations(&out.stdout),
        vec![(false, c.v4), (false, c.v4)]
    );
}

/// `connect(2)` on a new socket of `domain` with the first `len` bytes of `addr`; the error.
fn raw_connect(domain: Domain, addr: &[u8], len: usize) -> std::io::Error {
    let socket = Socket::new(domain, Type::STREAM, None).unwrap();
    assert!(len <= addr.len());
    // SAFETY: addr is valid for len bytes.
    let ret = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            addr.as_ptr().cast(),
            len as libc::socklen_t,
        )
    };
    assert_eq!(ret, -1);
    std::io::Error::last_os_error()
}

#[test]
fn edge_a_short_addr_len_reports_nothing_beyond_it() {
    if !reports_failed_calls() {
        // The tracepoint sees only calls that send a SYN; these fail before.
        return;
    }
    let port: u16 = 4321;
    // sockaddr_in for 127.0.0.1:4321, and sockaddr_in6 for [::1]:4321.
    let mut sin = [0u8; size_of::<libc::sockaddr_in>()];
    sin[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    sin[2..4].copy_from_slice(&port.to_be_bytes());
    sin[4..8].copy_from_slice(&Ipv4Addr::LOCALHOST.octets());
    let mut sin6 = [0u8; size_of::<libc::sockaddr_in6>()];
    sin6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
    sin6[2..4].copy_from_slice(&port.to_be_bytes());
    sin6[23] = 1;

    let pid = std::process::id().to_string();
    let tracer = ProbeUser::start(&["--format", "json", "--pid", &pid]);
    // The kernel copies only addr_len bytes and fails the call with EINVAL; the rest of its
    // buffer is whatever its stack held.
    for (domain, addr, len) in [
        (Domain::IPV4, &sin[..], 4),
        (Domain::IPV4, &sin[..], 2),
        (Domain::IPV6, &sin6[..], 20),
    ] {
        let e = raw_connect(domain, addr, len);
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
    }
    let out = tracer.stop();
    let reported: Vec<(String, u64, i64)> = json_lines(&out.stdout)
        .iter()
        .map(|e| {
            (
                e["daddr"].as_str().unwrap().to_string(),
                e["dport"].as_u64().unwrap(),
                e["ret"].as_i64().unwrap(),
            )
        })
        .collect();
    let einval = -i64::from(libc::EINVAL);
    assert_eq!(
        reported,
        vec![
            ("0.0.0.0".to_string(), u64::from(port), einval),
            ("0.0.0.0".to_string(), 0, einval),
            ("::".to_string(), u64::from(port), einval),
        ],
        "{out:?}"
    );
}

#[test]
fn edge_an_unwritable_stdout_is_one_error_line_not_silence() {
    let v4 = listener("127.0.0.1:0");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut cmd = probe_tests::probe_user_command();
    cmd.stdout(full).stderr(Stdio::piped()).stdin(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    // Connect until probe-user has written (and failed) or 20 s have passed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        connect(v4, None).unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "probe-user did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert_eq!(
        last, "probe-user: error: cannot write to stdout: No space left on device (os error 28)",
        "{stderr}"
    );
}

#[test]
fn edge_contradictory_and_out_of_range_flags_are_usage_errors() {
    for (args, expected) in [
        (
            &["--count", "--interval", "0s"][..],
            "probe-user: error: invalid value '0s' for '--interval <DURATION>': an interval must be between 10ms and 24h",
        ),
        (
            &["--count", "--interval", "25h"][..],
            "probe-user: error: invalid value '25h' for '--interval <DURATION>': an interval must be between 10ms and 24h",
        ),
        (
            &["--count", "--format", "minimal"][..],
            "probe-user: error: --format minimal prints no destination, so it cannot show counts: use --format stap or json with --count or --metrics",
        ),
        (
            &["--metrics", "0", "--format", "minimal"][..],
            "probe-user: error: --format minimal prints no destination, so it cannot show counts: use --format stap or json with --count or --metrics",
        ),
        (
            &["--count", "--max-series", "0"][..],
            "probe-user: error: invalid value '0' for '--max-series <N>': 0 is not in 1..=1048576",
        ),
        (
            &["--metrics", "0", "--max-series", "1048577"][..],
            "probe-user: error: invalid value '1048577' for '--max-series <N>': 1048577 is not in 1..=1048576",
        ),
        (
            &["--count", "--retire-after", "0s"][..],
            "probe-user: error: invalid value '0s' for '--retire-after <DURATION>': a retirement delay must be between 1s and 30d",
        ),
        (
            &["--max-series", "5"][..],
            "probe-user: error: the following required arguments were not provided: <--count|--metrics <ADDR>|--otlp-endpoint [<URL>]>",
        ),
    ] {
        probe_tests::assert_one_line_error(args, 2, expected);
    }
    // An interval too large for any clock is refused by the parser, never a panic later.
    let out = probe_tests::run_probe_user(&["--count", "--interval", "99999999999999999h"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
}

#[test]
fn edge_stats_without_cap_sys_admin_is_refused_before_attaching() {
    let out = Command::new("as-user")
        .args(["--caps", "CAP_BPF,CAP_PERFMON", "--"])
        .arg(probe_user())
        .args(attach_args())
        .arg("--stats")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "probe-user: error: permission denied: program statistics (--stats) need CAP_SYS_ADMIN (root); run without them or as root\n"
    );
    assert_eq!(connect_kprobes(), Vec::<String>::new());
}

/// Sets CLOCK_REALTIME `by` seconds forward (negative: back).
fn step_clock(by: i64) {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; setting the clock needs root, which the VM tests have.
    unsafe {
        assert_eq!(libc::clock_gettime(libc::CLOCK_REALTIME, &mut now), 0);
        now.tv_sec += by;
        assert_eq!(libc::clock_settime(libc::CLOCK_REALTIME, &now), 0);
    }
}

#[test]
fn edge_lines_follow_a_step_of_the_wall_clock() {
    if std::env::var_os("PROBE_IN_VM").is_none() {
        // Stepping the clock of the machine the tests run on natively is not ours to do.
        return;
    }
    let v4 = listener("127.0.0.1:0");
    let tracer = ProbeUser::start(&[]);
    connect(v4, None).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    const DAY: i64 = 86_400;
    step_clock(DAY);
    // The batch after the step may still use the old clock: the lines after it follow.
    std::thread::sleep(Duration::from_millis(300));
    let from = unix_now();
    connect(v4, None).unwrap();
    let to = unix_now();
    let out = tracer.stop();
    step_clock(-DAY);
    let stamps: Vec<u64> = out
        .stdout
        .lines()
        .map(|l| StapLine::parse(l).unix_s)
        .collect();
    assert_eq!(stamps.len(), 2, "{out:?}");
    assert!(stamps[0] + 3600 < from, "{stamps:?} vs {from}");
    assert!(
        stamps[1] + 1 >= from && stamps[1] <= to + 1,
        "{stamps:?} not in [{from}, {to}]"
    );
}

#[test]
fn edge_the_example_agent_escapes_task_names() {
    let v4 = listener("127.0.0.1:0");
    let mut cmd = Command::new("agent");
    cmd.args(["--events", "1", "--filter-port", &v4.port().to_string()]);
    let agent = ProbeUser::start_until(&mut cmd, "agent: tracing");
    std::thread::Builder::new()
        .name("evil\n9 x 1.2.3.4".into())
        .spawn(move || connect(v4, None).unwrap())
        .unwrap()
        .join()
        .unwrap();
    let out = agent.wait();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
    assert!(out.stdout.contains(r"evil\n9 x 1.2"), "{out:?}");
}

/// `program <name> ran <n> times` and `... was skipped <n> times` lines of `--stats`.
fn program_runs(stderr: &str, name: &str) -> u64 {
    let number_after = |prefix: &str| -> u64 {
        stderr
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    number_after(&format!("probe-user: program {name} ran "))
        + number_after(&format!("probe-user: program {name} was skipped "))
}

#[test]
fn edge_stopping_under_load_accounts_for_every_program_run() {
    // Each run of these programs is one connect call, which must end printed, dropped or
    // missed (the tracepoint's program runs on every state change of every socket, so it has
    // no such identity; its exit is covered by the test below).
    let programs: &[&str] = match backend().as_str() {
        KPROBE => &["tcp_v4_connect", "tcp_v6_connect"],
        FENTRY => &["fexit_tcp_v4_connect", "fexit_tcp_v6_connect"],
        _ => return,
    };
    let v4 = listener("127.0.0.1:0");
    let refused: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let tracer = ProbeUser::start(&["--stats"]);
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut made = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let _ = connect(if i % 2 == 0 { v4 } else { refused }, None);
                    made += 1;
                }
                made
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    // Stopped while the threads keep connecting.
    let out = tracer.stop();
    stop.store(true, Ordering::Relaxed);
    let made: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(out.status.success(), "{out:?}");
    let s = summary(&out.stderr);
    let runs: u64 = programs.iter().map(|p| program_runs(&out.stderr, p)).sum();
    assert!(
        runs > 100 && runs < made,
        "{runs} runs, {made} made: {}",
        out.stderr
    );
    assert_eq!(
        s.printed + s.dropped + s.missed,
        runs,
        "printed + dropped + missed must be every run: {s:?}\n{}",
        out.stderr
    );
    assert_eq!(out.stdout.lines().count() as u64, s.printed);
}

/// The kernel's preemption mode (`/sys/kernel/debug/sched/preempt`, kernels built with
/// PREEMPT_DYNAMIC) set for as long as it lives; nothing where it cannot be switched.
struct PreemptMode(Option<String>);

impl PreemptMode {
    const PATH: &str = "/sys/kernel/debug/sched/preempt";

    fn set(mode: &str) -> PreemptMode {
        // The file reads like "none voluntary (full) lazy": the current mode in parentheses.
        let current = std::fs::read_to_string(Self::PATH).ok().and_then(|modes| {
            let (_, rest) = modes.split_once('(')?;
            Some(rest.split_once(')')?.0.to_string())
        });
        if current.is_some() {
            std::fs::write(Self::PATH, mode).unwrap();
        }
        PreemptMode(current)
    }
}

impl Drop for PreemptMode {
    fn drop(&mut self) {
        if let Some(previous) = &self.0 {
            let _ = std::fs::write(Self::PATH, previous);
        }
    }
}

#[test]
fn edge_nothing_lands_in_the_ring_after_the_last_drain() {
    // 8 threads connect flat out at the lowest priority (nice 19) while a thread per CPU spins
    // at the normal one, on a kernel made fully preemptible where it can be switched
    // (6.x's PREEMPT_DYNAMIC): an fexit program runs preemptibly, so a run is often preempted
    // midway and resumes long after. probe-user is stopped while all of them go on; the test
    // holds its ring buffer open, so a record a run commits after probe-user's last drain
    // stays there (unread), neither printed nor counted.
    let _preempt = PreemptMode::set("full");
    let v4 = listener("127.0.0.1:0");
    let stop = Arc::new(AtomicBool::new(false));
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hogs: Vec<_> = (0..cpus)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let mut tracer = ProbeUser::start(&["--stats"]);
    tracer.read_stdout_in_background();
    let ring = probe_tests::RingWitness::of(tracer.pid());
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // SAFETY: plain syscall on the calling thread (0: this thread, on Linux).
                let set = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
                assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
                let mut made = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let _ = connect(v4, None);
                    made += 1;
                }
                made
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    // Detaching fexit programs waits for an RCU-tasks grace period, which the spinning threads
    // can hold up for minutes (the nice-19 clients preempted in the kernel wait for a CPU):
    // past 10 s of exit, everything stops, and the exit completes as it would on an idle host.
    // The check is the same: what is in the ring once everything stopped.
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(10));
            stop.store(true, Ordering::Relaxed);
        });
    }
    let out = tracer.stop();
    // Runs preempted past the exit get a while to finish before everything stops.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let made: u64 = clients.into_iter().map(|t| t.join().unwrap()).sum();
    hogs.into_iter().for_each(|t| t.join().unwrap());
    assert!(out.status.success(), "{out:?}");
    let s = summary(&out.stderr);
    assert_eq!(out.stdout.lines().count() as u64, s.printed);
    assert!(s.printed > 0 && s.accounted() <= made, "{s:?}, {made} made");
    assert_eq!(
        ring.unread_bytes(),
        0,
        "records landed after the last drain ({s:?})\n{}",
        out.stderr
    );
}

#[test]
fn edge_connects_still_in_syn_sent_at_exit_are_counted() {
    let server = SynDropping::start();
    let pid = std::process::id().to_string();
    let tracer = ProbeUser::start(&["--pid", &pid]);
    let clients: Vec<Socket> = (0..6).map(|_| connect_in_progress(server.addr)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let out = tracer.stop();
    drop(clients);
    assert!(out.status.success(), "{out:?}");
    let s = summary(&out.stderr);
    assert_eq!(out.stdout.lines().count() as u64, s.printed);
    assert_eq!(
        s.printed + s.dropped + s.missed,
        6,
        "every connect printed or counted: {s:?}\n{}",
        out.stderr
    );
}

#[test]
fn edge_sockets_held_in_syn_sent_cannot_lock_later_connects_out() {
    // Any local user may hold sockets in SYN_SENT toward a destination that drops SYNs, more
    // of them than the tracepoint backend's map of sockets in SYN_SENT holds. Later connects
    // must still be reported (the oldest handshakes make room), and every connect made is
    // printed or counted. (The kprobe and fentry backends report a call at its return and keep
    // no such map.)
    if backend() != TRACEPOINT {
        return;
    }
    // What the kernel side holds: the LRU's MAX_CONNECTING entries plus room for its per-CPU
    // free lists, and on kernels with BPF atomics as many slots in front of it (on others,
    // the test holds more sockets than needed).
    let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    let last_cpu: u32 = possible
        .trim()
        .rsplit(['-', ','])
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let capacity = (2 * MAX_CONNECTING + LRU_FREE_PER_CPU * (last_cpu + 1)) as usize;
    let held = capacity + 512;
    let nofile = libc::rlimit {
        rlim_cur: held as u64 + 1024,
        rlim_max: held as u64 + 1024,
    };
    // SAFETY: a plain syscall on a valid struct (the tests run as root).
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &nofile) }, 0);
    let hog = SynDropping::start();
    let hog_addr = hog.addr;
    let later = listener("127.0.0.1:0");
    let pid = std::process::id().to_string();
    let mut tracer = ProbeUser::start(&["--format", "json", "--pid", &pid]);
    tracer.read_stdout_in_background();
    let hogs: Vec<Socket> = (0..held).map(|_| connect_in_progress(hog_addr)).collect();
    let seen: Vec<_> = (0..20).map(|_| connect(later, None).unwrap()).collect();
    // Closing a socket in SYN_SENT ends its connect (SYN_SENT -> CLOSE): reported, unless its
    // entry was evicted.
    drop(hogs);
    std::thread::sleep(Duration::from_millis(500));
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    let events = json_lines(&out.stdout);
    let to = |port: u16| {
        events
            .iter()
            .filter(|e| e["dport"].as_u64() == Some(u64::from(port)))
            .collect::<Vec<_>>()
    };
    let mut reported: Vec<u64> = to(later.port())
        .iter()
        .map(|e| e["sport"].as_u64().unwrap())
        .collect();
    reported.sort_unstable();
    let mut made: Vec<u64> = seen.iter().map(|c| u64::from(c.src.port())).collect();
    made.sort_unstable();
    assert_eq!(
        reported, made,
        "every later connect reported:\n{}",
        out.stderr
    );
    let s = summary(&out.stderr);
    assert_eq!(s.printed, events.len() as u64);
    assert_eq!(
        to(hog_addr.port()).len() as u64 + s.dropped + s.missed,
        held as u64,
        "every held connect printed or counted: {s:?}\n{}",
        out.stderr
    );
    assert!(
        s.dropped >= (held - capacity) as u64,
        "the overflow is counted as dropped: {s:?}"
    );
}

#[test]
fn edge_dst_filters_what_the_kernel_connected_a_wildcard_destination_to() {
    // A connect to 0.0.0.0:P (or [::]:P) goes to loopback: `--dst` decides on that, as every
    // format prints it, on every backend and in every mode.
    let v4 = listener("127.0.0.1:0");
    let v6 = listener("[::1]:0");
    let any4 = SocketAddr::from(([0, 0, 0, 0], v4.port()));
    let any6: SocketAddr = format!("[::]:{}", v6.port()).parse().unwrap();
    let run = |args: &[&str]| traced(args, &[any4, any6]);
    let out = run(&["--dst", "127.0.0.0/8,::1"]);
    assert_eq!(
        stap_destinations(&out.stdout),
        vec![(false, v4), (true, v6)]
    );
    let out = run(&["--dst", "127.0.0.0/8", "--format", "minimal"]);
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
    assert!(out.stdout.ends_with(": tcp_v4_connect\n"), "{out:?}");
    let out = run(&["--dst", "::1", "--count", "--format", "json"]);
    assert_eq!(
        counted(&out.stdout),
        vec![(
            "tcp_v6_connect".into(),
            "::1".into(),
            u64::from(v6.port()),
            1
        )]
    );
    let out = run(&["--dst", "10.0.0.0/8,fd00::/8"]);
    assert_eq!(out.stdout, "", "{out:?}");
    assert_eq!(summary(&out.stderr).printed, 0);
}

#[test]
fn edge_a_failed_call_has_no_source_on_every_kernel() {
    if !reports_failed_calls() {
        return;
    }
    // No route to 10.255.255.1 (the test's network has only loopback): tcp_v4_connect fails
    // with ENETUNREACH after the socket was bound to a source.
    let pid = std::process::id().to_string();
    let tracer = ProbeUser::start(&["--format", "json", "--pid", &pid]);
    for bind in [None, Some(SocketAddr::from(([127, 0, 0, 1], 0)))] {
        let e = connect(SocketAddr::from(([10, 255, 255, 1], 80)), bind).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENETUNREACH), "{e}");
    }
    let out = tracer.stop();
    let events = json_lines(&out.stdout);
    assert_eq!(events.len(), 2, "{out:?}");
    for e in events {
        assert_eq!(e["ret"], -libc::ENETUNREACH, "{e}");
        assert_eq!(
            (e["saddr"].as_str(), e["sport"].as_u64()),
            (Some("0.0.0.0"), Some(0)),
            "{e}"
        );
        assert_eq!(
            (e["daddr"].as_str(), e["dport"].as_u64()),
            (Some("10.255.255.1"), Some(80)),
            "{e}"
        );
    }
}

#[test]
fn edge_a_call_failing_after_syn_sent_is_never_reported_as_a_connect() {
    // Two sockets bound to the same source port (SO_REUSEADDR) connect to the same listener:
    // the second call fails inside tcp_v4_connect after SYN_SENT (its 4-tuple is taken:
    // EADDRNOTAVAIL) and sends no SYN. The 4-tuple must be reported once as a connect; backends
    // that report failed calls show the second with its error.
    let server = listener("127.0.0.1:0");
    let pid = std::process::id().to_string();
    let tracer = ProbeUser::start(&["--format", "json", "--pid", &pid]);
    let first = bound_reusing_address(0);
    first.connect(&server.into()).unwrap();
    let port = first.local_addr().unwrap().as_socket().unwrap().port();
    let second = bound_reusing_address(port);
    let e = second.connect(&server.into()).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{e}");
    let out = tracer.stop();
    drop((first, second));
    let events: Vec<(u64, i64)> = json_lines(&out.stdout)
        .iter()
        .map(|e| (e["sport"].as_u64().unwrap(), e["ret"].as_i64().unwrap()))
        .collect();
    let mut expected = vec![(u64::from(port), 0)];
    if reports_failed_calls() {
        expected.push((0, -i64::from(libc::EADDRNOTAVAIL)));
    }
    assert_eq!(events, expected, "{out:?}");
    assert_eq!(summary(&out.stderr).missed, 0, "{out:?}");
}
