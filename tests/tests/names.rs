//! The DNS name of each connect's destination (`--names`) and the destination a DNAT sent its
//! SYN to (`--nat`), in JSON lines and counts (run by `cargo xtask test`; every name here starts
//! with `names_`, so `cargo xtask test names` runs these alone).
//!
//! Each test makes network namespaces of its own ([`NetNs`]), each with a DNS server on port 53
//! of its loopback ([`Responder`]) serving the test's [`Zone`], resolves names there as an
//! application's stub resolver does, and connects to the addresses it got, all on 127.0.0.0/8
//! and ::1 so that every connect sends a SYN whatever the backend. probe-user traces this
//! process's connects only (`--pid`).
//!
//! Where a name comes from (a DNS answer seen by the kernel, matched to a connect by network
//! namespace and address) does not depend on the attach backend: those tests run once per
//! kernel ([`once_per_kernel`]). --names needs kprobes (for the answers), so natively on a host
//! without them only its refusal is checked. What a DNAT did may be known at different moments
//! to each backend (the tracepoint fires before the SYN leaves, the return probes after), so the
//! NAT tests run with every backend, wherever nft can (in the VM: xtask puts nft and the
//! kernel's netfilter modules into the guest).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use probe_tests::{
    ProbeUser, SeenConnect, connect,
    dns::{Malformed, Qtype, Resolved, Responder, Zone, resolve},
    free_port, json_lines, kernel_has_kprobes, line_reporting, listener,
    netns::{NetNs, has_nft, netfilter_up, nft, thread_netns, veth},
    once_per_kernel, probe_user_command, scrape, summary,
};
use serde_json::Value;

/// A network namespace with a DNS server on 127.0.0.1:53 and [::1]:53 serving one zone, and a
/// listener on every address of its loopback (`[::]`, IPv4 too) on one port.
struct Site {
    ns: NetNs,
    dns4: Responder,
    dns6: Responder,
    port: u16,
}

impl Site {
    fn new(zone: Zone) -> Site {
        let ns = NetNs::new();
        let (dns4, dns6, port) = ns.run(|| {
            (
                Responder::start("127.0.0.1:53", zone.clone()),
                Responder::start("[::1]:53", zone),
                listener("[::]:0").port(),
            )
        });
        Site {
            ns,
            dns4,
            dns6,
            port,
        }
    }

    /// Resolves `name` in the namespace, A records from the IPv4 server, AAAA from the IPv6 one.
    fn resolve(&self, name: &str, qtype: Qtype) -> std::io::Result<Resolved> {
        let server = match qtype {
            Qtype::A => self.dns4.addr(),
            Qtype::Aaaa => self.dns6.addr(),
        };
        self.ns.run(|| resolve(server, name, qtype))
    }

    /// Resolves `name`, checks it got `expected` (one address), and connects to it at once, as
    /// an application does.
    fn resolve_and_connect(&self, name: &str, qtype: Qtype, expected: IpAddr) -> SeenConnect {
        let resolved = self
            .resolve(name, qtype)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(resolved.addrs, [expected], "{name}: {resolved:?}");
        self.connect(expected)
    }

    /// Connects from the namespace to `ip` on the listener's port.
    fn connect(&self, ip: IpAddr) -> SeenConnect {
        let dst = SocketAddr::new(ip, self.port);
        self.ns
            .run(|| connect(dst, None))
            .unwrap_or_else(|e| panic!("connect {dst}: {e}"))
    }
}

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn v4_addr(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// Whether the --names tests run here: once per kernel, where the kernel has kprobes.
fn names_run_here() -> bool {
    if !kernel_has_kprobes() {
        eprintln!("skipped: no kprobes here, --names is refused (names_refused_without_kprobes)");
        return false;
    }
    once_per_kernel()
}

/// probe-user printing JSON lines of this process's connects, with `args`.
fn tracer(args: &[&str]) -> ProbeUser {
    let pid = std::process::id().to_string();
    let mut all = vec!["--format", "json", "--pid", &pid];
    all.extend_from_slice(args);
    ProbeUser::start(&all)
}

/// probe-user counting this process's connects to `port`, with `args` (JSON count tables
/// unless `args` export metrics instead), once it has started counting.
fn counter(port: u16, args: &[&str]) -> ProbeUser {
    let (pid, port) = (std::process::id().to_string(), port.to_string());
    let mut cmd = probe_user_command();
    cmd.args(["--format", "json", "--pid", &pid, "--filter-port", &port]);
    ProbeUser::start_until(cmd.args(args), "Counting TCP connects")
}

/// A count row's `dns_name`, `daddr` and `nat_daddr:nat_dport`.
type RowKey = (Option<String>, Option<String>, Option<String>);

/// The rows of the last JSON count table `tracer` printed, once stopped: each row's key and
/// connects.
fn last_counts(tracer: ProbeUser) -> Vec<(RowKey, u64)> {
    let (tables, stderr) = lines_of(tracer);
    let table = tables
        .last()
        .unwrap_or_else(|| panic!("no table: {stderr}"));
    let text = |v: &Value| {
        v.as_str()
            .map(String::from)
            .or(v.as_u64().map(|n| n.to_string()))
    };
    let mut rows: Vec<_> = table["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let nat = text(&row["nat_daddr"]).map(|a| format!("{a}:{}", row["nat_dport"]));
            let key = (text(&row["dns_name"]), text(&row["daddr"]), nat);
            (key, row["connects"].as_u64().unwrap())
        })
        .collect();
    rows.sort();
    rows
}

/// The name the line reporting `seen` carries (None: no `dns_name`, or null).
fn name_of(lines: &[Value], seen: &SeenConnect) -> Option<String> {
    line_reporting(lines, seen)["dns_name"]
        .as_str()
        .map(String::from)
}

/// Stops `tracer` and returns its JSON lines, checking it ended well.
fn lines_of(tracer: ProbeUser) -> (Vec<Value>, String) {
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    // The lines as printed, for the log of a run.
    print!("{}", out.stdout);
    (json_lines(&out.stdout), out.stderr)
}

/// A connect to a name gets that name: A and AAAA answers (the AAAA over IPv6), a CNAME chain
/// the name asked for, not its aliases; a connect to an address no answer gave gets none.
#[test]
fn names_connects_carry_the_name_asked() {
    if !names_run_here() {
        return;
    }
    let site = Site::new(
        Zone::new()
            .a("v4.names.test", 300, v4_addr(11))
            .aaaa("v6.names.test", 300, Ipv6Addr::LOCALHOST)
            .cname("www.chain.test", 300, "edge.chain.test")
            .cname("edge.chain.test", 300, "host.cdn.test")
            .a("host.cdn.test", 300, v4_addr(12)),
    );
    let tracer = tracer(&["--names"]);
    let by_a = site.resolve_and_connect("v4.names.test", Qtype::A, v4(11));
    let by_aaaa =
        site.resolve_and_connect("v6.names.test", Qtype::Aaaa, Ipv6Addr::LOCALHOST.into());
    let chain = site.resolve("www.chain.test", Qtype::A).unwrap();
    assert_eq!(chain.aliases, ["edge.chain.test", "host.cdn.test"]);
    let by_chain = site.connect(chain.addrs[0]);
    let unnamed = site.connect(v4(13));
    let (lines, _) = lines_of(tracer);
    assert!(by_aaaa.v6, "{by_aaaa:?}");
    assert_eq!(name_of(&lines, &by_a).as_deref(), Some("v4.names.test"));
    assert_eq!(name_of(&lines, &by_aaaa).as_deref(), Some("v6.names.test"));
    assert_eq!(
        name_of(&lines, &by_chain).as_deref(),
        Some("www.chain.test")
    );
    assert_eq!(name_of(&lines, &unnamed), None);
}

/// Counted by name (`--count-by name`): a row per name and port, whatever addresses the name
/// had, and one for the connects no answer named; with `--names`, metrics carry a `dns_name`
/// label, and with outcomes their histograms too. Each count equals the connects made.
#[test]
fn names_count_and_label_connects_by_name() {
    if !names_run_here() {
        return;
    }
    let site = Site::new(
        Zone::new()
            .a("x.names.test", 300, v4_addr(31))
            .a("y.names.test", 300, v4_addr(32))
            .a("z.names.test", 300, v4_addr(32)),
    );
    let table = counter(site.port, &["--count", "--count-by", "name"]);
    let metrics_port = free_port();
    let metrics = counter(
        site.port,
        &[
            "--metrics",
            &metrics_port.to_string(),
            "--names",
            "--outcome",
        ],
    );
    for _ in 0..3 {
        site.resolve_and_connect("x.names.test", Qtype::A, v4(31));
    }
    site.resolve_and_connect("y.names.test", Qtype::A, v4(32));
    // A second name for y's address: its connect is z's, until y is answered again.
    site.resolve_and_connect("z.names.test", Qtype::A, v4(32));
    site.resolve_and_connect("y.names.test", Qtype::A, v4(32));
    site.connect(v4(34));

    let body = scrape(SocketAddr::from(([127, 0, 0, 1], metrics_port)));
    let out = metrics.stop();
    assert!(out.status.success(), "{out:?}");
    let p = site.port;
    for (name, n) in [
        ("x.names.test", 3),
        ("y.names.test", 2),
        ("z.names.test", 1),
        ("", 1),
    ] {
        let labels = format!("family=\"ipv4\",dport=\"{p}\",dns_name=\"{name}\"");
        for line in [
            format!("tcpconn_connects_total{{{labels}}} {n}\n"),
            format!(
                "tcpconn_connect_duration_seconds_count{{{labels},outcome=\"established\"}} {n}\n"
            ),
        ] {
            assert!(body.contains(&line), "{line} in\n{body}");
        }
    }
    assert!(body.contains("tcpconn_events_dropped_total 0\n"), "{body}");

    let name = |n: &str| (Some(n.to_string()), None, None);
    assert_eq!(
        last_counts(table),
        [
            ((None, None, None), 1),
            (name("x.names.test"), 3),
            (name("y.names.test"), 2),
            (name("z.names.test"), 1),
        ]
    );
}

/// Names are per network namespace: one name answered with different addresses in two
/// namespaces, and one address answered for different names, each connect gets its own
/// namespace's name; an address answered in the other namespace only gets none.
#[test]
fn names_are_per_network_namespace() {
    if !names_run_here() {
        return;
    }
    let a = Site::new(Zone::new().a("svc.test", 300, v4_addr(21)).a(
        "a-only.test",
        300,
        v4_addr(22),
    ));
    let b = Site::new(Zone::new().a("svc.test", 300, v4_addr(23)).a(
        "b-only.test",
        300,
        v4_addr(22),
    ));
    assert_ne!(a.ns.inode(), b.ns.inode());
    let tracer = tracer(&["--names"]);
    let a_svc = a.resolve_and_connect("svc.test", Qtype::A, v4(21));
    let a_shared = a.resolve_and_connect("a-only.test", Qtype::A, v4(22));
    let b_svc = b.resolve_and_connect("svc.test", Qtype::A, v4(23));
    let b_shared = b.resolve_and_connect("b-only.test", Qtype::A, v4(22));
    let b_to_a = b.connect(v4(21));
    let a_to_b = a.connect(v4(23));
    let (lines, _) = lines_of(tracer);
    assert_eq!(name_of(&lines, &a_svc).as_deref(), Some("svc.test"));
    assert_eq!(name_of(&lines, &a_shared).as_deref(), Some("a-only.test"));
    assert_eq!(name_of(&lines, &b_svc).as_deref(), Some("svc.test"));
    assert_eq!(name_of(&lines, &b_shared).as_deref(), Some("b-only.test"));
    assert_eq!(name_of(&lines, &b_to_a), None);
    assert_eq!(name_of(&lines, &a_to_b), None);
}

/// A name lasts its answer's TTL plus the grace: with `--names-grace 0s` a 1 s answer names a
/// connect at once but not 2 s later, while a 300 s answer still does; with the default grace
/// (30 s, a second tracer watching the same connects) the 1 s answer still names it.
#[test]
fn names_expire_with_the_ttl_and_the_grace() {
    if !names_run_here() {
        return;
    }
    let site = Site::new(Zone::new().a("short.test", 1, v4_addr(31)).a(
        "long.test",
        300,
        v4_addr(32),
    ));
    let strict = tracer(&["--names", "--names-grace", "0s"]);
    let graceful = tracer(&["--names"]);
    let fresh = site.resolve_and_connect("short.test", Qtype::A, v4(31));
    let long = site.resolve("long.test", Qtype::A).unwrap();
    assert_eq!(long.ttls, [300]);
    std::thread::sleep(Duration::from_secs(2));
    let expired = site.connect(v4(31));
    let still = site.connect(v4(32));
    let (strict, _) = lines_of(strict);
    let (graceful, _) = lines_of(graceful);
    assert_eq!(name_of(&strict, &fresh).as_deref(), Some("short.test"));
    assert_eq!(name_of(&strict, &expired), None);
    assert_eq!(name_of(&strict, &still).as_deref(), Some("long.test"));
    assert_eq!(name_of(&graceful, &expired).as_deref(), Some("short.test"));
}

/// Malformed answers (a name pointing at itself, a packet cut inside an address) are counted as
/// malformed and change nothing: the address keeps the name a sound answer gave it, and an
/// address only a malformed answer gave gets none.
#[test]
fn names_malformed_answers_change_nothing() {
    if !names_run_here() {
        return;
    }
    let site = Site::new(
        Zone::new()
            .a("good.test", 300, v4_addr(41))
            .malformed("loop.test", Malformed::NameLoop, v4_addr(41))
            .malformed("cut.test", Malformed::Truncated, v4_addr(42)),
    );
    let tracer = tracer(&["--names"]);
    site.resolve("good.test", Qtype::A).unwrap();
    for garbled in ["loop.test", "cut.test"] {
        let err = site.resolve(garbled, Qtype::A).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{garbled}");
    }
    assert_eq!(site.dns4.answered(), 3);
    let good = site.connect(v4(41));
    let only_garbled = site.connect(v4(42));
    let (lines, stderr) = lines_of(tracer);
    assert_eq!(name_of(&lines, &good).as_deref(), Some("good.test"));
    assert_eq!(name_of(&lines, &only_garbled), None);
    assert_eq!(summary(&stderr).malformed, 2, "{stderr}");
}

/// `--names-max 2` bounds the cache: of three addresses answered in turn, the last one answered
/// keeps its name and at most two connects are named.
#[test]
fn names_cache_is_bounded() {
    if !names_run_here() {
        return;
    }
    let site = Site::new(
        Zone::new()
            .a("n1.test", 300, v4_addr(51))
            .a("n2.test", 300, v4_addr(52))
            .a("n3.test", 300, v4_addr(53)),
    );
    let tracer = tracer(&["--names", "--names-max", "2"]);
    for name in ["n1.test", "n2.test", "n3.test"] {
        site.resolve(name, Qtype::A).unwrap();
    }
    let seen: Vec<SeenConnect> = [51, 52, 53].map(|last| site.connect(v4(last))).into();
    let (lines, _) = lines_of(tracer);
    let names: Vec<Option<String>> = seen.iter().map(|s| name_of(&lines, s)).collect();
    assert_eq!(names[2].as_deref(), Some("n3.test"), "{names:?}");
    assert!(names.iter().flatten().count() <= 2, "{names:?}");
}

/// Where the kernel has no kprobes, --names is refused at start in one line (exit 1).
#[test]
fn names_refused_without_kprobes() {
    if kernel_has_kprobes() {
        eprintln!("skipped: this kernel has kprobes");
        return;
    }
    let out = probe_user_command()
        .args(["--names", "--format", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("probe-user: error: "), "{stderr}");
}

/// The scenarios' own mechanics, without probe-user (also natively, where the tests above
/// cannot run): each namespace's server answers there with its own zone, the connects to the
/// answers reach the namespace's listener, and the test's own namespace is left alone.
#[test]
fn names_scenario_mechanics() {
    let a = Site::new(Zone::new().a("svc.test", 300, v4_addr(21)));
    let b = Site::new(Zone::new().a("svc.test", 300, v4_addr(23)));
    assert_eq!(a.ns.run(thread_netns), a.ns.inode());
    assert_ne!(thread_netns(), a.ns.inode());
    let seen = a.resolve_and_connect("svc.test", Qtype::A, v4(21));
    assert_eq!(seen.dst, SocketAddr::new(v4(21), a.port));
    b.resolve_and_connect("svc.test", Qtype::A, v4(23));
    let v6 = Site::new(Zone::new().aaaa("v6.test", 5, Ipv6Addr::LOCALHOST));
    let seen = v6.resolve_and_connect("v6.test", Qtype::Aaaa, Ipv6Addr::LOCALHOST.into());
    assert!(seen.v6);
    assert_eq!(
        (a.dns4.answered(), b.dns4.answered(), v6.dns6.answered()),
        (1, 1, 1)
    );
}

/// A listener that records the peer of each connection it accepts.
struct Backend {
    addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Backend {
    fn start(ns: &NetNs, bind: &str) -> Backend {
        let listener = ns.run(|| TcpListener::bind(bind).unwrap());
        let addr = listener.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let record = peers.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                record.lock().unwrap().push(stream.peer_addr().unwrap());
            }
        });
        Backend { addr, peers }
    }

    /// Waits (up to 2 s) until it has accepted a connection from `peer`.
    fn assert_accepted_from(&self, peer: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.peers.lock().unwrap().contains(&peer) {
            assert!(
                Instant::now() < deadline,
                "{} never accepted {peer}: {:?}",
                self.addr,
                self.peers.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Checks that the line reporting `seen` says its SYN went to `nat` (`nat_daddr`, `nat_dport`),
/// or carries no `nat_*` field for `None`.
fn assert_nat(lines: &[Value], seen: &SeenConnect, nat: Option<SocketAddr>) {
    let line = line_reporting(lines, seen);
    let got = (line.get("nat_daddr"), line.get("nat_dport"));
    let want = nat.map(|nat| (Value::from(nat.ip().to_string()), Value::from(nat.port())));
    match want {
        Some((daddr, dport)) => assert_eq!(got, (Some(&daddr), Some(&dport)), "{line}"),
        None => assert_eq!(got, (None, None), "{line}"),
    }
}

/// `--nat`: a connect that an nftables DNAT rule (output hook) sends to a local backend carries
/// the address and port its SYN went to (`nat_daddr`, `nat_dport`) next to the destination
/// the application asked for (`daddr`, `dport`), for IPv4 and IPv6; a connect no rule touches
/// carries no `nat_*` fields.
#[test]
fn names_nat_dnat_destination_is_reported() {
    // nft opens its netlink socket at start: nfnetlink must be loaded first.
    netfilter_up();
    if !has_nft() {
        return;
    }
    let ns = NetNs::new();
    // The destinations are local addresses on which nothing listens on port 80: only the DNAT
    // makes those connects succeed.
    ns.command("ip", &["addr", "add", "198.51.100.10/32", "dev", "lo"]);
    ns.command(
        "ip",
        &["-6", "addr", "add", "2001:db8::10/128", "dev", "lo"],
    );
    let backend4 = Backend::start(&ns, "127.0.0.1:0");
    let backend6 = Backend::start(&ns, "[::1]:0");
    nft(
        &ns,
        &format!(
            "table ip nat {{\n\
               chain output {{\n\
                 type nat hook output priority -100;\n\
                 ip daddr 198.51.100.10 tcp dport 80 dnat to 127.0.0.1:{}\n\
               }}\n\
             }}\n\
             table ip6 nat {{\n\
               chain output {{\n\
                 type nat hook output priority -100;\n\
                 ip6 daddr 2001:db8::10 tcp dport 80 dnat to [::1]:{}\n\
               }}\n\
             }}\n",
            backend4.addr.port(),
            backend6.addr.port()
        ),
    );
    let to = |dst: &str| {
        let dst: SocketAddr = dst.parse().unwrap();
        ns.run(|| connect(dst, None))
            .unwrap_or_else(|e| panic!("connect {dst}: {e}"))
    };
    // The rules are in force before tracing starts: these reach the backends.
    backend4.assert_accepted_from(to("198.51.100.10:80").src);
    backend6.assert_accepted_from(to("[2001:db8::10]:80").src);

    let tracer = tracer(&["--nat"]);
    let counts = counter(80, &["--count", "--nat"]);
    let nat4 = to("198.51.100.10:80");
    let nat6 = to("[2001:db8::10]:80");
    let direct = ns.run(|| connect(backend4.addr, None)).unwrap();
    let (lines, _) = lines_of(tracer);

    // The client saw the destination it asked for; the backend accepted it.
    assert_eq!(nat4.dst, "198.51.100.10:80".parse().unwrap());
    assert_eq!(nat6.dst, "[2001:db8::10]:80".parse().unwrap());
    backend4.assert_accepted_from(nat4.src);
    backend6.assert_accepted_from(nat6.src);
    backend4.assert_accepted_from(direct.src);

    assert_nat(&lines, &nat4, Some(backend4.addr));
    assert_nat(&lines, &nat6, Some(backend6.addr));
    assert_nat(&lines, &direct, None);
    // Counted by destination with --nat: each row holds where the NAT sent its connects.
    let dst = |ip: &str, backend: &Backend| {
        (
            None,
            Some(ip.to_string()),
            Some(backend.addr.to_string().replace(['[', ']'], "")),
        )
    };
    let mut want = vec![
        (dst("198.51.100.10", &backend4), 1),
        (dst("2001:db8::10", &backend6), 1),
    ];
    want.sort();
    assert_eq!(last_counts(counts), want);
}

/// `--nat` for connects a host forwards, as a node forwards its pods' to a Kubernetes Service:
/// a client namespace routes through a router namespace (veth pairs), whose nftables
/// PREROUTING DNAT sends a Service-like address to a backend in a third namespace. The SYN
/// leaves the router without its socket; its conntrack entry says where it went, and the
/// connect (in the client's namespace) carries it (`nat_daddr`, `nat_dport`), in JSON lines and
/// in counts; a connect forwarded without NAT carries none.
#[test]
fn names_nat_forwarded_dnat_destination_is_reported() {
    netfilter_up();
    if !has_nft() {
        return;
    }
    let (client, router, server) = (NetNs::new(), NetNs::new(), NetNs::new());
    veth(&router, "pod", "10.0.0.1/24", &client, "10.0.0.2/24");
    veth(&router, "backend", "10.0.1.1/24", &server, "10.0.1.2/24");
    router.run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap());
    let backend = Backend::start(&server, "10.0.1.2:0");
    nft(
        &router,
        &format!(
            "table ip nat {{\n\
               chain prerouting {{\n\
                 type nat hook prerouting priority -100;\n\
                 ip daddr 10.96.0.10 tcp dport 80 dnat to {}\n\
               }}\n\
             }}\n",
            backend.addr
        ),
    );
    let to = |dst: SocketAddr| {
        client
            .run(|| connect(dst, None))
            .unwrap_or_else(|e| panic!("connect {dst}: {e}"))
    };
    let service: SocketAddr = "10.96.0.10:80".parse().unwrap();
    // The path works (and the neighbours are resolved) before tracing starts.
    backend.assert_accepted_from(to(service).src);

    let tracer = tracer(&["--nat"]);
    let counts = counter(80, &["--count", "--nat"]);
    let natted = to(service);
    let direct = to(backend.addr);
    let (lines, _) = lines_of(tracer);
    backend.assert_accepted_from(natted.src);
    backend.assert_accepted_from(direct.src);
    assert_eq!(natted.dst, service);

    assert_eq!(line_reporting(&lines, &natted)["netns"], client.inode());
    assert_nat(&lines, &natted, Some(backend.addr));
    assert_nat(&lines, &direct, None);
    assert_eq!(
        last_counts(counts),
        [(
            (
                None,
                Some("10.96.0.10".into()),
                Some(backend.addr.to_string())
            ),
            1
        )]
    );
}
