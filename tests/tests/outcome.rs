//! `--outcome`: each connect reported once, when the kernel knows how it ended (established,
//! refused, timeout, unreachable, aborted, error; pending at exit), with its latency and errno,
//! in json and stap format, and filtered by `--failed-only` and `--min-latency`. Run by
//! `cargo xtask test` in the VM with each backend and natively.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use probe_tests::{
    Finished, Summary, SynDropping, TRACEPOINT, backend, bound_reusing_address,
    connect_in_progress,
    faults::{
        Capture, ICMP_HOST_UNREACH, any_loopback_port, closed_port, error_once_closed,
        send_icmp_unreachable, set_tcp_option,
    },
    json_lines, listener, reports_failed_calls, run_here, run_probe_user, summary, unix_now,
    unmapped,
};
use serde_json::Value;
use socket2::{Domain, Socket, Type};

/// Every outcome probe-user may print.
const OUTCOMES: [&str; 8] = [
    "established",
    "refused",
    "timeout",
    "unreachable",
    "reset",
    "aborted",
    "error",
    "pending",
];

/// How much a latency may exceed what the client measured around the same events: the kernel
/// and the test read their clocks at different moments, and the VM (TCG) is slow.
const SLACK: Duration = Duration::from_millis(50);

/// What probe-user printed, as JSON, while a closure made its connects.
struct Traced {
    lines: Vec<Value>,
    summary: Summary,
    /// All of its output, for failure messages.
    out: Finished,
}

/// [`run_here`] with `--format json` and `args` (which must ask for outcomes): every line is a
/// connect of this process with an outcome and a latency, made while tracing.
fn json_traced<R>(args: &[&str], f: impl FnOnce() -> R) -> (Traced, R) {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let from = unix_now();
    let (out, made) = run_here(&all, f);
    let to = unix_now();
    let lines = json_lines(&out.stdout);
    let summary = summary(&out.stderr);
    assert_eq!(summary.printed, lines.len() as u64, "{out:?}");
    assert_eq!(summary.malformed, 0, "{out:?}");
    for line in &lines {
        assert_eq!(line["pid"], std::process::id(), "{line}");
        let outcome = line["outcome"].as_str().unwrap_or_default();
        assert!(OUTCOMES.contains(&outcome), "{line}");
        assert!(line["latency_ns"].is_u64(), "{line}");
        if let Some(errno) = line.get("errno") {
            assert!(errno.as_u64().is_some_and(|e| e > 0), "{line}");
        }
        // Every line is of a connect made while tracing (time_s: when its call was made).
        let secs = line["time_s"].as_u64().unwrap();
        assert!(
            secs + 1 >= from && secs <= to + 1,
            "{line} not in [{from}, {to}]"
        );
    }
    (
        Traced {
            lines,
            summary,
            out,
        },
        made,
    )
}

/// [`json_traced`] with `--outcome`.
fn traced<R>(args: &[&str], f: impl FnOnce() -> R) -> (Traced, R) {
    let mut all = vec!["--outcome"];
    all.extend_from_slice(args);
    json_traced(&all, f)
}

/// `addr`/`port` fields of a JSON line (`saddr`/`sport`, `daddr`/`dport`) as one address.
fn endpoint(line: &Value, addr: &str, port: &str) -> Option<SocketAddr> {
    let ip: IpAddr = line[addr].as_str()?.parse().ok()?;
    let port = u16::try_from(line[port].as_u64()?).ok()?;
    Some(SocketAddr::new(ip, port))
}

/// The one line reporting the connect from `src` to `dst`.
fn line_of(t: &Traced, src: SocketAddr, dst: SocketAddr) -> &Value {
    let found: Vec<&Value> = t
        .lines
        .iter()
        .filter(|l| {
            endpoint(l, "saddr", "sport") == Some(src) && endpoint(l, "daddr", "dport") == Some(dst)
        })
        .collect();
    assert_eq!(found.len(), 1, "one line for {src} -> {dst}: {:?}", t.out);
    found[0]
}

/// The line's `errno`, `None` where it has none.
fn errno(line: &Value) -> Option<i32> {
    line.get("errno")
        .map(|e| e.as_i64().unwrap_or_else(|| panic!("{line}")) as i32)
}

/// The line's `latency_ns`.
fn latency(line: &Value) -> Duration {
    Duration::from_nanos(line["latency_ns"].as_u64().unwrap())
}

/// One connect this test made, as the client saw it.
#[derive(Clone, Copy, Debug)]
struct Attempt {
    /// `getsockname`, IPv4-mapped unmapped: taken before the call if the socket was bound (a
    /// failed connect may leave none), else after it.
    src: SocketAddr,
    /// `getpeername` if the call succeeded, else where it connected to; unmapped.
    dst: SocketAddr,
    /// Whether the kernel ran tcp_v6_connect only (not an IPv4-mapped destination).
    v6: bool,
    /// The call's errno, `None` if it succeeded.
    errno: Option<i32>,
    /// How long the call took, measured around it.
    took: Duration,
}

/// A client socket for `dst`, bound to `bind` if given.
fn client(dst: SocketAddr, bind: Option<SocketAddr>) -> Socket {
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, None).unwrap();
    if let Some(bind) = bind {
        socket.bind(&bind.into()).unwrap();
    }
    socket
}

/// A blocking connect of `socket` to `dst`, timed.
fn attempt_with(socket: &Socket, dst: SocketAddr) -> Attempt {
    let local = || unmapped(socket.local_addr().unwrap().as_socket().unwrap());
    let bound = local();
    let start = Instant::now();
    let result = socket.connect(&dst.into());
    let took = start.elapsed();
    let src = if bound.port() != 0 { bound } else { local() };
    let peer = match &result {
        Ok(()) => unmapped(socket.peer_addr().unwrap().as_socket().unwrap()),
        Err(_) => unmapped(dst),
    };
    Attempt {
        src,
        dst: peer,
        v6: matches!(dst.ip(), IpAddr::V6(ip) if ip.to_ipv4_mapped().is_none()),
        errno: result.err().map(|e| e.raw_os_error().unwrap()),
        took,
    }
}

/// A blocking connect to `dst` from a new socket (bound to `bind` if given), closed after.
fn attempt(dst: SocketAddr, bind: Option<SocketAddr>) -> Attempt {
    attempt_with(&client(dst, bind), dst)
}

/// A non-blocking connect to `addr`, left in progress; and its source.
fn connect_in_progress_from(addr: SocketAddr) -> (Socket, SocketAddr) {
    let s = connect_in_progress(addr);
    let src = s.local_addr().unwrap().as_socket().unwrap();
    (s, src)
}

#[test]
fn outcome_established_for_ipv4_ipv6_and_ipv4_mapped_connects() {
    let v4 = listener("127.0.0.1:0");
    let v6 = listener("[::1]:0");
    let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{}", v4.port()).parse().unwrap();
    let (t, made) = traced(&[], || {
        // Unbound: the kernel chooses the source port inside the call.
        [v4, mapped, v6].map(|dst| attempt(dst, None))
    });
    assert_eq!(t.lines.len(), made.len(), "{:?}", t.out);
    for a in made {
        assert_eq!(a.errno, None, "{a:?}");
        let line = line_of(&t, a.src, a.dst);
        assert_eq!(line["outcome"], "established", "{line}");
        assert_eq!(errno(line), None, "{line}");
        assert_eq!(line["ret"], 0, "{line}");
        // The mapped connect ran through tcp_v4_connect: IPv4, with IPv4 addresses.
        let (family, function) = if a.v6 {
            ("ipv6", "tcp_v6_connect")
        } else {
            ("ipv4", "tcp_v4_connect")
        };
        assert_eq!(line["family"], family, "{line}");
        assert_eq!(line["function"], function, "{line}");
        // The handshake ends inside the blocking call (kprobe: from the call's entry; fentry:
        // from its return; tracepoint: from SYN_SENT, inside it).
        let l = latency(line);
        assert!(l > Duration::ZERO, "{line}");
        assert!(l < a.took + SLACK, "{line}: the call took {:?}", a.took);
    }
    assert_eq!(t.summary.accounted(), 3, "{:?}", t.out);
}

#[test]
fn outcome_established_for_a_socket_in_repair_mode() {
    // How CRIU restores a connection: with TCP_REPAIR set (CAP_NET_ADMIN; the tests run as
    // root), connect() moves the socket to ESTABLISHED inside the call, without any packet.
    // The kprobe and fentry backends see it established at the call's return, the tracepoint
    // backend sees the transition out of SYN_SENT: `established` on each, never `pending`.
    let (_closed, dst) = closed_port(Ipv4Addr::LOCALHOST.into());
    let (t, (src, _socket)) = traced(&[], || {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        set_tcp_option(&socket, libc::TCP_REPAIR, 1);
        socket.connect(&dst.into()).unwrap();
        let src = socket.local_addr().unwrap().as_socket().unwrap();
        // Kept open until tracing has ended: closing a socket in repair mode sends nothing.
        (src, socket)
    });
    let line = line_of(&t, src, dst);
    assert_eq!(line["outcome"], "established", "{line}");
    assert_eq!(line["ret"], 0, "{line}");
    assert_eq!(t.lines.len(), 1, "{:?}", t.out);
}

#[test]
fn outcome_refused_for_a_closed_port() {
    let (_closed4, v4) = closed_port(Ipv4Addr::LOCALHOST.into());
    let (_closed6, v6) = closed_port(Ipv6Addr::LOCALHOST.into());
    // Bound first: a refused connect may leave no source to read after the call.
    let (t, made) = traced(&[], || {
        [v4, v6].map(|dst| attempt(dst, Some(any_loopback_port(dst))))
    });
    assert_eq!(t.lines.len(), 2, "{:?}", t.out);
    for a in made {
        assert_eq!(a.errno, Some(libc::ECONNREFUSED), "{a:?}");
        let line = line_of(&t, a.src, a.dst);
        assert_eq!(line["outcome"], "refused", "{line}");
        assert_eq!(errno(line), Some(libc::ECONNREFUSED), "{line}");
        // The call itself succeeded: it sent the SYN the RST answered.
        assert_eq!(line["ret"], 0, "{line}");
        assert!(latency(line) < a.took + SLACK, "{line}: took {:?}", a.took);
    }
}

#[test]
fn outcome_timeout_once_the_syn_retries_run_out() {
    let server = SynDropping::start();
    let (t, a) = traced(&[], || {
        let socket = client(server.addr, Some(any_loopback_port(server.addr)));
        // One retry instead of the system's six: SYN at 0 s, again at 1 s, given up at 3 s.
        set_tcp_option(&socket, libc::TCP_SYNCNT, 1);
        attempt_with(&socket, server.addr)
    });
    assert_eq!(a.errno, Some(libc::ETIMEDOUT), "{a:?}");
    let line = line_of(&t, a.src, a.dst);
    assert_eq!(line["outcome"], "timeout", "{line}");
    assert_eq!(errno(line), Some(libc::ETIMEDOUT), "{line}");
    assert_eq!(line["ret"], 0, "{line}");
    let l = latency(line);
    assert!(
        l >= Duration::from_secs(1) && l < a.took + SLACK,
        "{line}: took {:?}",
        a.took
    );
    assert_eq!(t.lines.len(), 1, "{:?}", t.out);
}

#[test]
fn outcome_aborted_when_the_application_closes_before_the_handshake() {
    let server = SynDropping::start();
    let (t, (src, held)) = traced(&[], || {
        let (socket, src) = connect_in_progress_from(server.addr);
        let from = Instant::now();
        std::thread::sleep(Duration::from_millis(200));
        let held = from.elapsed();
        // SYN_SENT -> CLOSE with no error on the socket.
        drop(socket);
        (src, held)
    });
    let line = line_of(&t, src, server.addr);
    assert_eq!(line["outcome"], "aborted", "{line}");
    assert_eq!(errno(line), None, "{line}");
    assert_eq!(line["ret"], 0, "{line}");
    // From before the call returned to after the close began.
    assert!(latency(line) >= held, "{line}: held {held:?}");
    assert_eq!(t.lines.len(), 1, "{:?}", t.out);
}

#[test]
fn outcome_error_for_a_call_that_fails_inside_the_kernel() {
    // Two sockets bound to the same source port (SO_REUSEADDR) connect to the same listener:
    // the second call fails inside tcp_v4_connect (its 4-tuple is taken: EADDRNOTAVAIL). The
    // tracepoint backend does not see calls that fail, and prints only the first connect.
    let server = listener("127.0.0.1:0");
    let (t, (first, second, e)) = traced(&[], || {
        let first = bound_reusing_address(0);
        first.connect(&server.into()).unwrap();
        let port = first.local_addr().unwrap().as_socket().unwrap().port();
        let second = bound_reusing_address(port);
        let e = second.connect(&server.into()).unwrap_err();
        (first, second, e)
    });
    assert_eq!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{e}");
    let src = first.local_addr().unwrap().as_socket().unwrap();
    drop((first, second));
    let established = line_of(&t, src, server);
    assert_eq!(established["outcome"], "established", "{established}");
    let failed: Vec<&Value> = t
        .lines
        .iter()
        .filter(|l| l["outcome"] != "established")
        .collect();
    if !reports_failed_calls() {
        assert_eq!(failed, Vec::<&Value>::new(), "{:?}", t.out);
        return;
    }
    assert_eq!(failed.len(), 1, "{:?}", t.out);
    let line = failed[0];
    assert_eq!(line["outcome"], "error", "{line}");
    assert_eq!(line["ret"], -libc::EADDRNOTAVAIL, "{line}");
    assert_eq!(errno(line), Some(libc::EADDRNOTAVAIL), "{line}");
    assert_eq!(endpoint(line, "daddr", "dport"), Some(server), "{line}");
    assert_eq!(t.lines.len(), 2, "{:?}", t.out);
}

#[test]
fn outcome_unreachable_for_a_call_without_a_route() {
    // No route to 10.255.255.1 (the test's network has only loopback): tcp_v4_connect fails
    // with ENETUNREACH and sends nothing, so the tracepoint backend sees nothing.
    let dst = SocketAddr::from(([10, 255, 255, 1], 80));
    let (t, a) = traced(&[], || attempt(dst, None));
    assert_eq!(a.errno, Some(libc::ENETUNREACH), "{a:?}");
    if !reports_failed_calls() {
        assert_eq!(t.lines, Vec::<Value>::new(), "{:?}", t.out);
        return;
    }
    assert_eq!(t.lines.len(), 1, "{:?}", t.out);
    let line = &t.lines[0];
    assert_eq!(line["outcome"], "unreachable", "{line}");
    assert_eq!(line["ret"], -libc::ENETUNREACH, "{line}");
    assert_eq!(errno(line), Some(libc::ENETUNREACH), "{line}");
    assert_eq!(endpoint(line, "daddr", "dport"), Some(dst), "{line}");
    assert!(latency(line) < a.took + SLACK, "{line}: took {:?}", a.took);
}

#[test]
fn outcome_unreachable_when_an_icmp_host_unreachable_ends_the_handshake() {
    // The SYN goes unanswered; an ICMP host unreachable quoting it (its ports and sequence
    // number, which tcp_v4_err checks against the socket's) ends the connect in SYN_SENT with
    // EHOSTUNREACH, as a router without a route to the host would.
    let server = SynDropping::start();
    let (t, (src, error, took)) = traced(&[], || {
        // Opened before the connect, so that it receives the first SYN.
        let capture = Capture::tcp(false);
        let start = Instant::now();
        let (socket, src) = connect_in_progress_from(server.addr);
        let syn = capture.syn(src, server.addr);
        drop(capture);
        send_icmp_unreachable(&syn, ICMP_HOST_UNREACH);
        let error = error_once_closed(&socket);
        (src, error, start.elapsed())
    });
    assert_eq!(
        error,
        Some(libc::EHOSTUNREACH),
        "the kernel did not end the connect on the ICMP error"
    );
    let line = line_of(&t, src, server.addr);
    assert_eq!(line["outcome"], "unreachable", "{line}");
    assert_eq!(errno(line), Some(libc::EHOSTUNREACH), "{line}");
    assert_eq!(line["ret"], 0, "{line}");
    assert!(latency(line) < took + SLACK, "{line}: took {took:?}");
    assert_eq!(t.lines.len(), 1, "{:?}", t.out);
}

#[test]
fn outcome_pending_for_a_connect_still_in_syn_sent_at_exit() {
    let server = SynDropping::start();
    // The socket is returned, so that it is still connecting when probe-user stops.
    let (t, (socket, src, held)) = traced(&[], || {
        let (socket, src) = connect_in_progress_from(server.addr);
        let from = Instant::now();
        std::thread::sleep(Duration::from_millis(200));
        (socket, src, from.elapsed())
    });
    drop(socket);
    let s = t.summary;
    assert_eq!(s.printed + s.dropped + s.missed, 1, "{:?}", t.out);
    assert_eq!(t.lines.len(), 1, "{:?}", t.out);
    let line = &t.lines[0];
    assert_eq!(line["outcome"], "pending", "{line}");
    assert_eq!(errno(line), None, "{line}");
    assert_eq!(line["ret"], 0, "{line}");
    assert_eq!(
        endpoint(line, "daddr", "dport"),
        Some(server.addr),
        "{line}"
    );
    // The tracepoint backend tracks the socket from SYN_SENT, before the call chose its
    // source port, and learns it only when the socket leaves SYN_SENT.
    let reported = endpoint(line, "saddr", "sport").unwrap();
    let unknown = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    assert!(
        reported == src || (backend() == TRACEPOINT && reported == unknown),
        "{line}: source {src}"
    );
    // Up to the exit, which came after the tracer was stopped.
    assert!(latency(line) >= held, "{line}: held {held:?}");
}

/// Counts of each key, so that "exactly once" compares multisets (a source port freed by a
/// refused connect may be given to a later one).
fn tally<K: Ord>(keys: impl IntoIterator<Item = K>) -> BTreeMap<K, u64> {
    let mut counts = BTreeMap::new();
    for k in keys {
        *counts.entry(k).or_insert(0) += 1;
    }
    counts
}

#[test]
fn outcome_of_each_connect_from_several_threads_is_reported_once() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 50;
    let (_closed4, closed4) = closed_port(Ipv4Addr::LOCALHOST.into());
    let (_closed6, closed6) = closed_port(Ipv6Addr::LOCALHOST.into());
    let dsts = [
        listener("127.0.0.1:0"),
        listener("[::1]:0"),
        closed4,
        closed6,
    ];
    let (t, made) = traced(&[], || {
        let workers: Vec<_> = (0..THREADS)
            .map(|w| {
                std::thread::spawn(move || {
                    (0..PER_THREAD)
                        .map(|i| {
                            let dst = dsts[(w + i) % dsts.len()];
                            // Bound first: the source of a refused connect is known too.
                            attempt(dst, Some(any_loopback_port(dst)))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(made.len(), THREADS * PER_THREAD);
    // (function, sport, dport, outcome) of each connect.
    let expected = tally(made.iter().map(|a| {
        let outcome = match a.errno {
            None => "established",
            Some(libc::ECONNREFUSED) => "refused",
            Some(e) => panic!("the client saw errno {e}: {a:?}"),
        };
        let function = if a.v6 {
            "tcp_v6_connect"
        } else {
            "tcp_v4_connect"
        };
        (function, a.src.port(), a.dst.port(), outcome)
    }));
    for line in &t.lines {
        let outcome = line["outcome"].as_str().unwrap();
        let want = if outcome == "refused" {
            Some(libc::ECONNREFUSED)
        } else {
            None
        };
        assert_eq!(errno(line), want, "{line}");
        assert_eq!(line["ret"], 0, "{line}");
        assert!(
            ["127.0.0.1", "::1"].contains(&line["saddr"].as_str().unwrap()),
            "{line}"
        );
    }
    let reported = tally(t.lines.iter().map(|l| {
        (
            l["function"].as_str().unwrap(),
            l["sport"].as_u64().unwrap() as u16,
            l["dport"].as_u64().unwrap() as u16,
            l["outcome"].as_str().unwrap(),
        )
    }));
    let wrong: Vec<_> = reported
        .iter()
        .filter(|&(k, n)| *n > expected.get(k).copied().unwrap_or(0))
        .collect();
    assert!(
        wrong.is_empty(),
        "reported but not made (or not so often): {wrong:?}\n{:?}",
        t.out
    );
    // Many threads at once may exhaust kretprobe instances: lost connects must be counted.
    let s = t.summary;
    assert_eq!(
        s.printed + s.dropped + s.missed,
        made.len() as u64,
        "every connect printed or counted: {s:?}\n{}",
        t.out.stderr
    );
}

#[test]
fn outcome_in_stap_format_ends_the_line_with_outcome_and_latency() {
    let (_closed, dst) = closed_port(Ipv4Addr::LOCALHOST.into());
    let from = unix_now();
    let (out, a) = run_here(&["--outcome"], || {
        attempt(dst, Some(any_loopback_port(dst)))
    });
    let to = unix_now();
    assert_eq!(a.errno, Some(libc::ECONNREFUSED), "{a:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{out:?}");
    let line = lines[0];
    // `<unix s>: tcp_v4_connect src=<ip:port> dst=<ip:port> outcome=refused latency=<ms>ms
    // retrans=0 cause=rst`, the milliseconds with exactly three decimals.
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (secs, rest) = line.split_once(": ").unwrap_or_else(|| panic!("{line:?}"));
    assert!(digits(secs), "{line:?}");
    let secs: u64 = secs.parse().unwrap();
    assert!(
        secs + 1 >= from && secs <= to + 1,
        "{line:?} not in [{from}, {to}]"
    );
    let head = format!(
        "tcp_v4_connect src={} dst=127.0.0.1:{} outcome=refused latency=",
        a.src,
        dst.port()
    );
    // Then the SYN's retransmits and the cause: a reset answered the only SYN.
    let millis = rest
        .strip_prefix(&head)
        .and_then(|r| r.strip_suffix(" retrans=0 cause=rst"))
        .and_then(|r| r.strip_suffix("ms"))
        .unwrap_or_else(|| panic!("{line:?} is not {head}<ms>ms"));
    let (whole, decimals) = millis.split_once('.').unwrap_or_else(|| panic!("{line:?}"));
    assert!(
        digits(whole) && digits(decimals) && decimals.len() == 3,
        "{line:?}"
    );
    let micros: u64 = format!("{whole}{decimals}").parse().unwrap();
    assert!(
        Duration::from_micros(micros) < a.took + SLACK,
        "{line:?}: took {:?}",
        a.took
    );
    assert_eq!(summary(&out.stderr).printed, 1, "{out:?}");
}

#[test]
fn outcome_filters_failed_only_and_min_latency() {
    let up = listener("127.0.0.1:0");
    let (_closed, down) = closed_port(Ipv4Addr::LOCALHOST.into());
    let both = || {
        let ok = attempt(up, None);
        let refused = attempt(down, Some(any_loopback_port(down)));
        assert_eq!(ok.errno, None, "{ok:?}");
        assert_eq!(refused.errno, Some(libc::ECONNREFUSED), "{refused:?}");
        refused
    };

    // --failed-only (implying --outcome): the refused connect, not the established one.
    let (t, refused) = json_traced(&["--failed-only"], both);
    assert_eq!(t.lines.len(), 1, "{:?}", t.out);
    let line = line_of(&t, refused.src, refused.dst);
    assert_eq!(line["outcome"], "refused", "{line}");

    // --min-latency (implying --outcome): neither took an hour.
    let (t, _) = json_traced(&["--min-latency", "1h"], both);
    assert_eq!(t.lines, Vec::<Value>::new(), "{:?}", t.out);
    assert_eq!(t.summary.printed, 0, "{:?}", t.out);

    // Nor 100 ms; a connect closed after 300 ms in SYN_SENT did.
    let server = SynDropping::start();
    let (t, src) = json_traced(&["--min-latency", "100ms"], || {
        both();
        let (socket, src) = connect_in_progress_from(server.addr);
        std::thread::sleep(Duration::from_millis(300));
        drop(socket);
        src
    });
    assert_eq!(t.lines.len(), 1, "{:?}", t.out);
    let line = line_of(&t, src, server.addr);
    assert_eq!(line["outcome"], "aborted", "{line}");
    assert!(latency(line) >= Duration::from_millis(100), "{line}");
}

#[test]
fn outcome_cannot_be_shown_in_minimal_format() {
    // --failed-only and --min-latency imply --outcome.
    for args in [
        &["--outcome", "--format", "minimal"][..],
        &["--failed-only", "--format", "minimal"][..],
        &["--min-latency", "1s", "--format", "minimal"][..],
    ] {
        let out = run_probe_user(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {out:?}");
        assert!(out.stderr.ends_with('\n'), "{args:?}: {out:?}");
        assert_eq!(out.stdout, "", "{args:?}");
    }
}
