//! `--outcome`'s causes: why each connect ended (`cause`: rst, icmp, local, drop, timeout,
//! app), how often its SYN was retransmitted (`syn_retransmits`), the ICMP error or the drop
//! reason behind it, compared with what the client saw of real failures made here: SYNs that
//! vanish, closed ports, ICMP errors injected as a router would send them, calls without a
//! route, connects closed mid-handshake, SYNs dropped by a cgroup egress program. In JSON
//! lines, stap lines, count tables and metrics. Run by `cargo xtask test` in the VM on each
//! kernel with each backend (the ICMP details and drop reasons depend on both), and natively.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    process::Command,
    time::Duration,
};

use probe_tests::{
    Finished, ProbeUser, TRACEPOINT, auto_backend, bound_reusing_address, connect,
    faults::{
        self, ConnectEnded, EgressDrop, FullListener, ICMP_HOST_UNREACH, ICMP_PKT_FILTERED,
        ICMP_PORT_UNREACH, ICMPV6_ADDR_UNREACH, ICMPV6_ADM_PROHIBITED, ICMPV6_PORT_UNREACH,
        any_loopback_port, bpf_prog_loaded, closed_port, connect_ended_by_icmp,
        icmp_unreachable_errno, start_connect, wait_for_the_end,
    },
    free_port, json_lines, kernel_release, listener, metric_samples, netns, probe_user_command,
    reports_failed_calls, run_while, scrape, serving_addr, summary, unmapped,
};
use serde_json::Value;
use socket2::{Domain, Socket, Type};

/// Every cause probe-user may give.
const CAUSES: [&str; 6] = ["rst", "icmp", "local", "drop", "timeout", "app"];

/// Whether this kernel lets probe-user hook the ICMP error handlers (a kprobe or fentry): then
/// an `icmp` cause carries the ICMP type, code and sender. The test library's kernels have
/// fentry only where they have kprobes: the tracepoint is auto's choice on a kernel with
/// neither (this project's machines).
fn icmp_details_known() -> bool {
    auto_backend() != TRACEPOINT
}

/// Whether this kernel says why it dropped a packet (`skb:kfree_skb`'s reason, since 5.17), and
/// names a cgroup egress program's drop (`BPF_CGROUP_EGRESS`, since 5.18).
fn drop_reasons_known() -> bool {
    kernel_release() >= (5, 18)
}

/// What probe-user printed while a closure made its connects.
struct Traced {
    lines: Vec<Value>,
    out: Finished,
}

/// Runs probe-user with `--outcome --format json` and `args` while `f` makes connects; checks
/// every line against the causes' rules ([`check_line`]).
fn traced<R>(args: &[&str], f: impl FnOnce() -> R) -> (Traced, R) {
    let mut cmd = probe_user_command();
    cmd.args(["--outcome", "--format", "json"]).args(args);
    let (out, made) = run_while(&mut cmd, f);
    let lines = json_lines(&out.stdout);
    let s = summary(&out.stderr);
    assert_eq!(s.printed, lines.len() as u64, "{out:?}");
    assert_eq!(s.dropped + s.missed + s.malformed, 0, "{out:?}");
    for line in &lines {
        check_line(line);
    }
    (Traced { lines, out }, made)
}

/// [`traced`] with `--pid <this process>` (natively, the host's other processes connect too).
fn traced_here<R>(f: impl FnOnce() -> R) -> (Traced, R) {
    let pid = std::process::id().to_string();
    traced(&["--pid", &pid], f)
}

/// The rules every line follows: `syn_retransmits` unless pending; a known `cause` unless
/// established or pending; ICMP details only with `icmp` (and then where the kernel lets them
/// be known), a drop reason only with `drop`.
fn check_line(line: &Value) {
    let outcome = line["outcome"].as_str().unwrap_or_else(|| panic!("{line}"));
    let settled = !matches!(outcome, "established" | "pending");
    assert_eq!(
        line.get("syn_retransmits").is_some_and(Value::is_u64),
        outcome != "pending",
        "{line}"
    );
    let cause = line
        .get("cause")
        .map(|c| c.as_str().unwrap_or_else(|| panic!("{line}")));
    assert_eq!(cause.is_some(), settled, "{line}");
    if let Some(cause) = cause {
        assert!(CAUSES.contains(&cause), "{line}");
    }
    for field in ["icmp_type", "icmp_code", "icmp_from"] {
        let expected = cause == Some("icmp") && icmp_details_known();
        assert_eq!(line.get(field).is_some(), expected, "{field}: {line}");
    }
    assert_eq!(
        line.get("drop_reason").is_some(),
        cause == Some("drop"),
        "{line}"
    );
}

/// The one line reporting the connect from `src` to `dst`.
fn line_of(t: &Traced, src: SocketAddr, dst: SocketAddr) -> &Value {
    let endpoint = |l: &Value, addr: &str, port: &str| -> Option<SocketAddr> {
        let ip: IpAddr = l[addr].as_str()?.parse().ok()?;
        Some(SocketAddr::new(ip, u16::try_from(l[port].as_u64()?).ok()?))
    };
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

/// What a line must say of one connect.
struct Expected<'a> {
    outcome: &'a str,
    cause: Option<&'a str>,
    errno: Option<i32>,
    syn_retransmits: u32,
}

/// Checks `line` against `e`.
fn assert_line(line: &Value, e: &Expected) {
    assert_eq!(line["outcome"], e.outcome, "{line}");
    assert_eq!(line.get("cause").and_then(Value::as_str), e.cause, "{line}");
    let errno = line.get("errno").map(|v| v.as_i64().unwrap() as i32);
    assert_eq!(errno, e.errno, "{line}");
    assert_eq!(line["syn_retransmits"], e.syn_retransmits, "{line}");
}

/// Checks the ICMP details of `line` (an `icmp` cause), where the kernel lets them be known.
fn assert_icmp(line: &Value, icmp_type: u8, code: u8, from: IpAddr) {
    if !icmp_details_known() {
        return;
    }
    assert_eq!(line["icmp_type"], icmp_type, "{line}");
    assert_eq!(line["icmp_code"], code, "{line}");
    assert_eq!(line["icmp_from"], from.to_string(), "{line}");
}

#[test]
fn cause_absent_and_no_retransmission_for_established_connects() {
    let dsts = [listener("127.0.0.1:0"), listener("[::1]:0")];
    let (t, made) = traced_here(|| dsts.map(|dst| connect(dst, None).unwrap()));
    assert_eq!(t.lines.len(), 2, "{:?}", t.out);
    for seen in made {
        let line = line_of(&t, seen.src, seen.dst);
        let established = Expected {
            outcome: "established",
            cause: None,
            errno: None,
            syn_retransmits: 0,
        };
        assert_line(line, &established);
    }
}

#[test]
fn cause_timeout_when_the_syns_vanish() {
    // TCP_SYNCNT 1: a SYN at 0 s, given up at 3 s. Retransmitted at 1 s, and, where the first
    // SYN timeouts are linear (net.ipv4.tcp_syn_linear_timeouts, since 6.5), again at 2 s.
    let server = FullListener::on(Ipv4Addr::LOCALHOST.into());
    let (t, (src, ended)) = traced_here(|| {
        let (socket, src) = start_connect(server.addr, Some(1));
        (src, wait_for_the_end(&socket, Duration::from_secs(10)))
    });
    assert_eq!(ended.errno, Some(libc::ETIMEDOUT), "{ended:?}");
    assert!(matches!(ended.retransmits, 1 | 2), "{ended:?}");
    let line = line_of(&t, src, server.addr);
    let timeout = Expected {
        outcome: "timeout",
        cause: Some("timeout"),
        errno: ended.errno,
        syn_retransmits: ended.retransmits,
    };
    assert_line(line, &timeout);
    assert_eq!(t.lines.len(), 1, "{:?}", t.out);
}

/// A blocking connect to `dst` from a socket bound first (a refused connect may leave no
/// source to read after it): its source and errno.
fn refused_from(dst: SocketAddr) -> (SocketAddr, Option<i32>) {
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, None).unwrap();
    socket.bind(&any_loopback_port(dst).into()).unwrap();
    let src = unmapped(socket.local_addr().unwrap().as_socket().unwrap());
    let errno = socket
        .connect(&dst.into())
        .err()
        .map(|e| e.raw_os_error().unwrap());
    (src, errno)
}

#[test]
fn cause_rst_for_a_closed_port() {
    let (_closed4, v4) = closed_port(Ipv4Addr::LOCALHOST.into());
    let (_closed6, v6) = closed_port(Ipv6Addr::LOCALHOST.into());
    let (t, made) = traced_here(|| [v4, v6].map(|dst| (refused_from(dst), dst)));
    assert_eq!(t.lines.len(), 2, "{:?}", t.out);
    for ((src, errno), dst) in made {
        assert_eq!(errno, Some(libc::ECONNREFUSED), "{src} -> {dst}");
        let refused = Expected {
            outcome: "refused",
            cause: Some("rst"),
            errno,
            syn_retransmits: 0,
        };
        assert_line(line_of(&t, src, dst), &refused);
    }
}

/// The outcome of a handshake ended with `errno` (probe-common's `Outcome::of_handshake`).
fn outcome_of(errno: i32) -> &'static str {
    match errno {
        libc::ECONNREFUSED => "refused",
        libc::EHOSTUNREACH | libc::EACCES => "unreachable",
        e => panic!("no outcome expected for errno {e}"),
    }
}

/// Connects to a listener whose SYNs vanish on `ip`, each ended by an ICMP (ICMPv6 for IPv6)
/// destination unreachable of the code given, after as many SYN retransmissions; checks that
/// each is reported with the `icmp` cause, the ICMP error, and the client's errno.
fn assert_ended_by_icmp(ip: IpAddr, codes: &[(u8, u32)]) {
    let server = FullListener::on(ip);
    let v6 = ip.is_ipv6();
    let (t, made) = traced_here(|| {
        codes
            .iter()
            .map(|&(code, retransmits)| {
                let (src, ended) = connect_ended_by_icmp(server.addr, code, retransmits);
                (code, src, ended)
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(t.lines.len(), codes.len(), "{:?}", t.out);
    for ((code, src, ended), &(_, retransmits)) in made.into_iter().zip(codes) {
        let errno = icmp_unreachable_errno(v6, code);
        assert_eq!(ended.errno, Some(errno), "code {code}: {ended:?}");
        assert_eq!(ended.retransmits, retransmits, "code {code}: {ended:?}");
        let line = line_of(&t, src, server.addr);
        let icmp = Expected {
            outcome: outcome_of(errno),
            cause: Some("icmp"),
            errno: Some(errno),
            syn_retransmits: retransmits,
        };
        assert_line(line, &icmp);
        let icmp_type = if v6 {
            faults::ICMPV6_DEST_UNREACH
        } else {
            faults::ICMP_DEST_UNREACH
        };
        assert_icmp(line, icmp_type, code, ip);
    }
}

#[test]
fn cause_icmp_for_ipv4_host_unreachable_admin_prohibited_and_port_unreachable() {
    // Administratively prohibited after one retransmission (a second in): the count of
    // retransmissions is the socket's at the end, not at the call. A port unreachable is
    // refused like a reset, but its cause is the ICMP error.
    assert_ended_by_icmp(
        Ipv4Addr::LOCALHOST.into(),
        &[
            (ICMP_HOST_UNREACH, 0),
            (ICMP_PKT_FILTERED, 1),
            (ICMP_PORT_UNREACH, 0),
        ],
    );
}

#[test]
fn cause_icmp_for_ipv6_admin_prohibited_address_and_port_unreachable() {
    assert_ended_by_icmp(
        Ipv6Addr::LOCALHOST.into(),
        &[
            (ICMPV6_ADM_PROHIBITED, 0),
            (ICMPV6_ADDR_UNREACH, 0),
            (ICMPV6_PORT_UNREACH, 0),
        ],
    );
}

#[test]
fn cause_local_for_calls_that_fail_inside_the_host() {
    // No route to 10.255.255.1 (the test's network has only loopback): ENETUNREACH. Two
    // sockets bound to one source port (SO_REUSEADDR) connecting to one listener: the second
    // call finds its 4-tuple taken, EADDRNOTAVAIL. Neither sends anything: the tracepoint
    // backend sees neither (only the first, established connect).
    let nowhere = SocketAddr::from(([10, 255, 255, 1], 80));
    let server = listener("127.0.0.1:0");
    let (t, (unrouted, first, taken)) = traced_here(|| {
        let unrouted = connect(nowhere, None).unwrap_err();
        let first = bound_reusing_address(0);
        first.connect(&server.into()).unwrap();
        let port = first.local_addr().unwrap().as_socket().unwrap().port();
        let taken = bound_reusing_address(port)
            .connect(&server.into())
            .unwrap_err();
        (unrouted, first, taken)
    });
    assert_eq!(
        unrouted.raw_os_error(),
        Some(libc::ENETUNREACH),
        "{unrouted}"
    );
    assert_eq!(taken.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{taken}");
    let src = first.local_addr().unwrap().as_socket().unwrap();
    let established = Expected {
        outcome: "established",
        cause: None,
        errno: None,
        syn_retransmits: 0,
    };
    assert_line(line_of(&t, src, server), &established);
    let failed: Vec<&Value> = t
        .lines
        .iter()
        .filter(|l| l["outcome"] != "established")
        .collect();
    if !reports_failed_calls() {
        assert_eq!(failed, Vec::<&Value>::new(), "{:?}", t.out);
        return;
    }
    assert_eq!(failed.len(), 2, "{:?}", t.out);
    for (dst, outcome, errno) in [
        (nowhere, "unreachable", libc::ENETUNREACH),
        (server, "error", libc::EADDRNOTAVAIL),
    ] {
        let line = failed
            .iter()
            .find(|l| l["dport"] == dst.port() && l["daddr"] == dst.ip().to_string())
            .unwrap_or_else(|| panic!("no line for {dst}: {:?}", t.out));
        let local = Expected {
            outcome,
            cause: Some("local"),
            errno: Some(errno),
            syn_retransmits: 0,
        };
        assert_line(line, &local);
        assert_eq!(line["ret"], -errno, "{line}");
    }
}

#[test]
fn cause_app_when_the_application_closes_mid_handshake() {
    let server = FullListener::on(Ipv4Addr::LOCALHOST.into());
    let (t, src) = traced_here(|| {
        let (socket, src) = start_connect(server.addr, None);
        std::thread::sleep(Duration::from_millis(200));
        drop(socket);
        src
    });
    let app = Expected {
        outcome: "aborted",
        cause: Some("app"),
        errno: None,
        syn_retransmits: 0,
    };
    assert_line(line_of(&t, src, server.addr), &app);
    assert_eq!(t.lines.len(), 1, "{:?}", t.out);
}

#[test]
fn drop_cause_fixture_attaches_one_program_and_leaves_nothing_behind() {
    let fixture = EgressDrop::new();
    let id = fixture.prog_id();
    let dir = fixture.cgroup().dir.clone();
    assert_eq!(fixture.attached(), vec![id]);
    assert!(bpf_prog_loaded(id));
    drop(fixture);
    assert!(!dir.exists(), "{dir:?} left behind");
    assert!(
        !dir.parent().unwrap().exists(),
        "{dir:?}'s parent left behind"
    );
    // Freed once detached and closed (the last reference may be put a moment later).
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while bpf_prog_loaded(id) {
        assert!(
            std::time::Instant::now() < deadline,
            "program {id} still loaded"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn cause_drop_for_syns_a_cgroup_egress_program_drops() {
    // A process in a cgroup whose egress program drops everything (a local firewall) connects
    // to a listener that would answer: its SYNs never leave the host. On 5.10 the kernel gives
    // no drop reason: a timeout like any other.
    let server = listener("127.0.0.1:0");
    let denied = EgressDrop::new();
    let (t, seen) = traced(&["--cgroup", denied.cgroup().dir()], || {
        let out = Command::new("connect-once")
            .args(["--cgroup", denied.cgroup().dir(), "--syncnt", "1"])
            .arg(server.to_string())
            .output()
            .expect("cannot run connect-once");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        ConnectEnded::parse(&text).unwrap_or_else(|| panic!("connect-once printed {text:?}"))
    });
    drop(denied);
    assert_eq!(seen.ended.errno, Some(libc::ETIMEDOUT), "{seen:?}");
    let line = line_of(&t, seen.src, seen.dst);
    let cause = if drop_reasons_known() {
        "drop"
    } else {
        "timeout"
    };
    let dropped = Expected {
        outcome: "timeout",
        cause: Some(cause),
        errno: Some(libc::ETIMEDOUT),
        syn_retransmits: seen.ended.retransmits,
    };
    assert_line(line, &dropped);
    if drop_reasons_known() {
        assert_eq!(line["drop_reason"], "BPF_CGROUP_EGRESS", "{line}");
    }
    assert_eq!(t.lines.len(), 1, "{:?}", t.out);
}

#[test]
fn cause_drop_for_syns_a_netfilter_rule_drops() {
    // A local nftables rule drops the SYNs in the output hook (a host firewall): `drop` with
    // the kernel's NETFILTER_DROP, a timeout where it gives no drop reason (5.10). In a network
    // namespace of the test's own, so that nothing else meets the rule.
    netns::netfilter_up();
    if !netns::has_nft() {
        return;
    }
    let ns = netns::NetNs::new();
    let port = free_port();
    netns::nft(
        &ns,
        &format!(
            "table ip filter {{\n\
               chain output {{\n\
                 type filter hook output priority 0;\n\
                 tcp dport {port} drop\n\
               }}\n\
             }}\n"
        ),
    );
    let dst = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let (t, (src, ended)) = traced_here(|| {
        ns.run(|| {
            let (socket, src) = start_connect(dst, Some(1));
            (src, wait_for_the_end(&socket, Duration::from_secs(10)))
        })
    });
    assert_eq!(ended.errno, Some(libc::ETIMEDOUT), "{ended:?}");
    let line = line_of(&t, src, dst);
    let cause = if drop_reasons_known() {
        "drop"
    } else {
        "timeout"
    };
    let dropped = Expected {
        outcome: "timeout",
        cause: Some(cause),
        errno: Some(libc::ETIMEDOUT),
        syn_retransmits: ended.retransmits,
    };
    assert_line(line, &dropped);
    if drop_reasons_known() {
        assert_eq!(line["drop_reason"], "NETFILTER_DROP", "{line}");
    }
    assert_eq!(t.lines.len(), 1, "{:?}", t.out);
}

#[test]
fn cause_and_retransmissions_end_the_stap_line() {
    let (_closed, dst) = closed_port(Ipv4Addr::LOCALHOST.into());
    let server = FullListener::on(Ipv4Addr::LOCALHOST.into());
    let pid = std::process::id().to_string();
    let mut tracer = ProbeUser::start_with(probe_user_command().args(["--outcome", "--pid", &pid]));
    tracer.read_stdout_in_background();
    let (refused_src, errno) = refused_from(dst);
    // After one retransmission, so that the count shows.
    let (icmp_src, ended) = connect_ended_by_icmp(server.addr, ICMP_PKT_FILTERED, 1);
    let established = connect(listener("127.0.0.1:0"), None).unwrap();
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(errno, Some(libc::ECONNREFUSED));
    assert_eq!(ended.errno, Some(libc::EHOSTUNREACH), "{ended:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{out:?}");
    // `... outcome=NAME latency=X.XXXms retrans=N[ cause=CAUSE[ details]]`; the ICMP error's
    // type, code and sender where the kernel lets probe-user see them.
    let icmp_tail = if icmp_details_known() {
        " retrans=1 cause=icmp icmp=3/13 from=127.0.0.1"
    } else {
        " retrans=1 cause=icmp"
    };
    for line in &lines {
        println!("{line}");
    }
    for (src, to, outcome, tail) in [
        (refused_src, dst, "refused", " retrans=0 cause=rst"),
        (icmp_src, server.addr, "unreachable", icmp_tail),
        (
            established.src,
            established.dst,
            "established",
            " retrans=0",
        ),
    ] {
        let head = format!("tcp_v4_connect src={src} dst={to} outcome={outcome} latency=");
        let line = lines
            .iter()
            .find(|l| {
                l.split_once(": ")
                    .is_some_and(|(_, rest)| rest.starts_with(&head))
            })
            .unwrap_or_else(|| panic!("no line {head}...: {out:?}"));
        let rest = &line[line.find(&head).unwrap() + head.len()..];
        let (millis, after) = rest.split_once("ms").unwrap_or_else(|| panic!("{line:?}"));
        assert!(millis.parse::<f64>().is_ok(), "{line:?}");
        assert_eq!(after, tail, "{line:?}");
    }
}

/// The connects the count and metrics tests make: `n` established to `up`, `n` refused by
/// `closed`, `n` ended (at once, in parallel) by an ICMP administratively prohibited after one
/// SYN retransmission each, to `full`.
fn mixed_connects(n: usize, up: SocketAddr, closed: SocketAddr, full: SocketAddr) {
    let icmp: Vec<_> = (0..n)
        .map(|_| std::thread::spawn(move || connect_ended_by_icmp(full, ICMP_PKT_FILTERED, 1)))
        .collect();
    for _ in 0..n {
        connect(up, None).unwrap();
        assert_eq!(refused_from(closed).1, Some(libc::ECONNREFUSED));
    }
    for handle in icmp {
        let (_, ended) = handle.join().unwrap();
        assert_eq!(ended.errno, Some(libc::EHOSTUNREACH), "{ended:?}");
        assert_eq!(ended.retransmits, 1, "{ended:?}");
    }
}

#[test]
fn count_rows_carry_the_cause_and_the_retransmissions_summed() {
    let up = listener("127.0.0.1:0");
    let (_closed, closed) = closed_port(Ipv4Addr::LOCALHOST.into());
    let full = FullListener::on(Ipv4Addr::LOCALHOST.into());
    let pid = std::process::id().to_string();
    let tracer = ProbeUser::start_until(
        probe_user_command().args([
            "--count",
            "--outcome",
            "--format",
            "json",
            "--interval",
            "1h",
            "--pid",
            &pid,
        ]),
        "Counting TCP connects",
    );
    mixed_connects(2, up, closed, full.addr);
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    let tables = json_lines(&out.stdout);
    let mut rows: Vec<(u64, String, u64, Option<String>, u64)> =
        tables.last().unwrap_or_else(|| panic!("no table: {out:?}"))["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["dport"].as_u64().unwrap(),
                    r["outcome"].as_str().unwrap().to_string(),
                    r["connects"].as_u64().unwrap(),
                    r["cause"].as_str().map(str::to_string),
                    r["syn_retransmits"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("{r}")),
                )
            })
            .collect();
    rows.sort();
    let mut expected = vec![
        (u64::from(up.port()), "established".into(), 2, None, 0),
        (
            u64::from(closed.port()),
            "refused".into(),
            2,
            Some("rst".into()),
            0,
        ),
        (
            u64::from(full.addr.port()),
            "unreachable".into(),
            2,
            Some("icmp".into()),
            2,
        ),
    ];
    expected.sort();
    assert_eq!(rows, expected, "{}", out.stdout);
}

#[test]
fn metrics_failures_carry_the_cause_and_retransmissions_are_counted() {
    let up = listener("127.0.0.1:0");
    let (_closed, closed) = closed_port(Ipv4Addr::LOCALHOST.into());
    let full = FullListener::on(Ipv4Addr::LOCALHOST.into());
    let pid = std::process::id().to_string();
    let port = free_port().to_string();
    let tracer = ProbeUser::start_until(
        probe_user_command().args(["--metrics", &port, "--outcome", "--pid", &pid]),
        "Counting TCP connects",
    );
    mixed_connects(2, up, closed, full.addr);
    // The scrape's own connect (established) is this process's too.
    let body = scrape(serving_addr(&tracer));
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    let failures = metric_samples(&body, "tcpconn_connect_failures_total");
    let failed = |dport: u16| -> Vec<(String, String, f64)> {
        failures
            .iter()
            .filter(|(labels, _)| labels["dport"] == dport.to_string())
            .map(|(labels, value)| (labels["reason"].clone(), labels["cause"].clone(), *value))
            .collect()
    };
    assert_eq!(
        failed(closed.port()),
        [("refused".into(), "rst".into(), 2.0)],
        "{body}"
    );
    assert_eq!(
        failed(full.addr.port()),
        [("unreachable".into(), "icmp".into(), 2.0)],
        "{body}"
    );
    assert_eq!(failed(up.port()), [], "{body}");
    // Two retransmissions in all, both to `full`.
    let retransmits = metric_samples(&body, "tcpconn_syn_retransmits_total");
    let sum = |dport: Option<u16>| -> f64 {
        retransmits
            .iter()
            .filter(|(labels, _)| dport.is_none_or(|p| labels["dport"] == p.to_string()))
            .map(|(_, value)| value)
            .sum()
    };
    assert_eq!(sum(Some(full.addr.port())), 2.0, "{body}");
    assert_eq!(sum(None), 2.0, "{body}");
}
