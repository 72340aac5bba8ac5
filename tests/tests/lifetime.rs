//! `--lifetime` and `--format life`: every traced connection that came up is reported once
//! more when it closes, with the payload bytes the client and server counted, how it ended
//! (FINs from either side first, a reset sent or received) and its duration; one still open at
//! exit as `open`; filters apply to closes as to connects. Run by `cargo xtask test` in the VM
//! with each backend (the close comes from the tracepoint every backend then attaches, the
//! start from each backend's own completion path) and natively.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use probe_tests::{
    ProbeUser, assert_one_line_error, json_lines, metric_samples, probe_user_command, run_here,
    scrape, serving_addr, summary, unmapped,
};
use serde_json::Value;

/// How a test connection ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// The client shuts down first (its FIN), reads to the end, closes.
    ClientFin,
    /// The server closes first (its FIN); the client reads to the end, then closes.
    ServerFin,
    /// The client closes with `SO_LINGER` 0: a reset sent.
    ClientRst,
    /// The server closes with `SO_LINGER` 0: the client reads a reset.
    ServerRst,
    /// The client shuts down first (its FIN), reads the answer, then closes with `SO_LINGER`
    /// 0 while the server still holds the connection: a reset sent after a FIN.
    ClientFinThenRst,
}

impl Ending {
    /// The `end` probe-user must report, as the client's side.
    fn end(self) -> &'static str {
        match self {
            Ending::ClientFin => "fin_local",
            Ending::ServerFin => "fin_peer",
            Ending::ClientRst | Ending::ClientFinThenRst => "rst_sent",
            Ending::ServerRst => "rst_received",
        }
    }
}

/// One connection as the client saw it.
#[derive(Debug)]
struct Seen {
    src: SocketAddr,
    dst: SocketAddr,
    ending: Ending,
    sent: u64,
    received: u64,
    /// From before the connect to after the close.
    elapsed: Duration,
}

/// What the test servers answer each connection, in bytes.
const ANSWER: usize = 3000;

/// How much later than the client's own clock says a close may come: a FIN exchange ends
/// after the application's close, and the VM (TCG) is slow.
const SLACK: Duration = Duration::from_millis(200);

/// A server on `addr` that, for each connection, reads what the client sends up to a byte
/// 0xff (or the end), answers [`ANSWER`] bytes, then ends as the client's first byte asks
/// (`b'f'`: close; `b'r'`: reset; `b'h'`: hold the connection a while, then close; anything
/// else: wait for the client's end, then close).
fn server(addr: &str) -> SocketAddr {
    serve(TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}")))
}

/// [`server`] on a listener already bound.
fn serve(listener: TcpListener) -> SocketAddr {
    let local = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                let mut request = Vec::new();
                let mut byte = [0u8; 4096];
                loop {
                    match stream.read(&mut byte) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            request.extend_from_slice(&byte[..n]);
                            if request.last() == Some(&0xff) {
                                break;
                            }
                        }
                    }
                }
                let _ = stream.write_all(&[b'y'; ANSWER]);
                match request.first() {
                    Some(b'r') => {
                        // Give the client time to read the answer first.
                        thread::sleep(Duration::from_millis(200));
                        let socket = socket2::SockRef::from(&stream);
                        let _ = socket.set_linger(Some(Duration::ZERO));
                    }
                    Some(b'f') => {}
                    Some(b'h') => thread::sleep(Duration::from_secs(3)),
                    _ => {
                        let _ = stream.read_to_end(&mut request);
                    }
                }
            });
        }
    });
    local
}

/// Makes one connection to `dst` that sends `len` bytes (the last one 0xff), reads the
/// server's answer and ends as `ending` says.
fn connection(dst: SocketAddr, len: usize, ending: Ending) -> Seen {
    assert!(len >= 2);
    let started = Instant::now();
    let mut stream = TcpStream::connect(dst).unwrap();
    let src = unmapped(stream.local_addr().unwrap());
    let mut request = vec![b'x'; len];
    request[0] = match ending {
        Ending::ServerFin => b'f',
        Ending::ServerRst => b'r',
        Ending::ClientFinThenRst => b'h',
        Ending::ClientFin | Ending::ClientRst => b'w',
    };
    request[len - 1] = 0xff;
    stream.write_all(&request).unwrap();
    let mut received = 0u64;
    let mut buf = [0u8; 4096];
    match ending {
        Ending::ClientFin => {
            stream.shutdown(Shutdown::Write).unwrap();
            while let Ok(n @ 1..) = stream.read(&mut buf) {
                received += n as u64;
            }
        }
        Ending::ServerFin => {
            while let Ok(n @ 1..) = stream.read(&mut buf) {
                received += n as u64;
            }
        }
        Ending::ServerRst => loop {
            match stream.read(&mut buf) {
                Ok(0) => panic!("{dst}: the server closed without a reset"),
                Ok(n) => received += n as u64,
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
                    break;
                }
            }
        },
        Ending::ClientRst | Ending::ClientFinThenRst => {
            if ending == Ending::ClientFinThenRst {
                stream.shutdown(Shutdown::Write).unwrap();
            }
            // Read the whole answer (unread data would reset anyway), then reset.
            let mut left = ANSWER;
            while left > 0 {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0);
                received += n as u64;
                left -= n;
            }
            socket2::SockRef::from(&stream)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
    }
    drop(stream);
    Seen {
        src,
        dst: unmapped(dst),
        ending,
        sent: len as u64,
        received,
        elapsed: started.elapsed(),
    }
}

/// One connection to each of `dsts` per way of ending, a different size for each, so that a
/// mix-up shows.
fn every_ending(dsts: [SocketAddr; 3]) -> Vec<Seen> {
    let endings = [
        Ending::ClientFin,
        Ending::ServerFin,
        Ending::ClientRst,
        Ending::ServerRst,
        Ending::ClientFinThenRst,
    ];
    let mut seen = Vec::new();
    for (i, dst) in dsts.into_iter().enumerate() {
        for (j, ending) in endings.into_iter().enumerate() {
            seen.push(connection(dst, 1000 + 100 * i + 10 * j, ending));
        }
    }
    seen
}

/// Runs probe-user with `args` and `--pid <this process>` while `f` runs; returns stdout and
/// stderr once it ended (SIGINT).
fn traced<R>(args: &[&str], f: impl FnOnce() -> R) -> (String, String, R) {
    let (out, made) = run_here(args, || {
        let made = f();
        // Closes are reported when the socket reaches CLOSE, which a FIN exchange reaches
        // within the round trip that follows the application's close.
        thread::sleep(Duration::from_millis(300));
        made
    });
    (out.stdout, out.stderr, made)
}

fn endpoint(line: &Value, addr: &str, port: &str) -> SocketAddr {
    let ip = line[addr].as_str().unwrap_or_else(|| panic!("{line}"));
    let port = line[port].as_u64().unwrap_or_else(|| panic!("{line}"));
    unmapped(SocketAddr::new(ip.parse().unwrap(), port as u16))
}

/// The lines of `lines` (connects, or closes with `close`) of the connection `src` -> `dst`.
fn lines_of(lines: &[Value], src: SocketAddr, dst: SocketAddr, close: bool) -> Vec<&Value> {
    lines
        .iter()
        .filter(|l| (l["event"] == "close") == close)
        .filter(|l| endpoint(l, "saddr", "sport") == src && endpoint(l, "daddr", "dport") == dst)
        .collect()
}

#[test]
fn lifetime_closes_carry_the_bytes_each_side_counted_and_how_they_ended() {
    let v4 = server("127.0.0.1:0");
    let v6 = server("[::1]:0");
    let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{}", v4.port()).parse().unwrap();
    // Not traced (--filter-port): its close must not be reported either.
    let other = server("127.0.0.1:0");
    let ports = format!("{},{}", v4.port(), v6.port());
    let (stdout, stderr, (seen, open, open_since)) = traced(
        &["--lifetime", "--format", "json", "--filter-port", &ports],
        || {
            let seen = every_ending([v4, v6, mapped]);
            connection(other, 500, Ending::ServerFin);
            // One still open at exit.
            let open_since = Instant::now();
            let mut open = TcpStream::connect(v4).unwrap();
            open.write_all(b"w12345").unwrap();
            (seen, open, open_since)
        },
    );
    let open_src = unmapped(open.local_addr().unwrap());
    let lines = json_lines(&stdout);
    let summary = summary(&stderr);
    assert_eq!(summary.printed, lines.len() as u64, "{stderr}");
    assert_eq!(
        (summary.dropped, summary.missed, summary.malformed),
        (0, 0, 0),
        "{stderr}"
    );
    // Per connection: one connect, established, and one close.
    for s in &seen {
        let connects = lines_of(&lines, s.src, s.dst, false);
        assert_eq!(connects.len(), 1, "{s:?}: {stdout}");
        assert_eq!(connects[0]["outcome"], "established", "{s:?}");
        let closes = lines_of(&lines, s.src, s.dst, true);
        assert_eq!(closes.len(), 1, "{s:?}: {stdout}");
        let close = closes[0];
        assert_eq!(close["end"], s.ending.end(), "{s:?}: {close}");
        assert_eq!(close["bytes_sent"], s.sent, "{s:?}: {close}");
        assert_eq!(close["bytes_received"], s.received, "{s:?}: {close}");
        assert_eq!(close["role"], "client", "{close}");
        assert_eq!(close["pid"], std::process::id(), "{close}");
        assert_eq!(close["comm"], connects[0]["comm"], "{close}");
        let duration = close["duration_ns"].as_u64().unwrap();
        assert!(
            duration > 0 && duration <= (s.elapsed + SLACK).as_nanos() as u64,
            "{s:?}: {close}"
        );
        // Established after the call (within the wall clock's re-measure between batches),
        // closed after established.
        let established = close["established_time_ns"].as_u64().unwrap();
        assert!(
            established + 1_000_000 >= connects[0]["time_ns"].as_u64().unwrap(),
            "{close}"
        );
        assert_eq!(
            close["time_ns"].as_u64().unwrap() - established,
            duration,
            "{close}"
        );
        assert!(close["segs_out"].as_u64().unwrap() >= 2, "{close}");
        assert!(close["segs_in"].as_u64().unwrap() >= 2, "{close}");
        assert!(close["srtt_us"].is_u64(), "{close}");
        assert!(close["retransmits"].is_u64(), "{close}");
        match s.ending {
            Ending::ServerRst => assert_eq!(close["errno"], 104, "{close}"),
            _ => assert!(close.get("errno").is_none(), "{close}"),
        }
    }
    // The one left open: reported open at exit, with its counters then (6 bytes sent, the
    // server waiting for more before it answers).
    let dst = unmapped(v4);
    let closes = lines_of(&lines, open_src, dst, true);
    assert_eq!(closes.len(), 1, "{stdout}");
    assert_eq!(closes[0]["end"], "open", "{}", closes[0]);
    assert_eq!(
        (&closes[0]["bytes_sent"], &closes[0]["bytes_received"]),
        (&6.into(), &0.into()),
        "{}",
        closes[0]
    );
    assert!(
        closes[0]["segs_out"].as_u64().unwrap() >= 2,
        "{}",
        closes[0]
    );
    let duration = closes[0]["duration_ns"].as_u64().unwrap();
    assert!(
        duration <= open_since.elapsed().as_nanos() as u64,
        "{}",
        closes[0]
    );
    drop(open);
    // Nothing else: the connects and closes of this process to the traced ports.
    assert_eq!(lines.len(), 2 * seen.len() + 2, "{stdout}");
}

#[test]
fn lifetime_life_format_prints_a_line_per_close() {
    let dst = server("127.0.0.1:0");
    let port = dst.port().to_string();
    let (stdout, stderr, seen) = traced(&["--format", "life", "--filter-port", &port], || {
        [Ending::ServerFin, Ending::ClientRst].map(|ending| connection(dst, 1234, ending))
    });
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(
            "TIME       PID     LADDR           LPORT RADDR           RPORT   TX_BYTES   RX_BYTES         MS END          COMM"
        ),
        "{stdout}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), seen.len(), "{stdout}");
    // Connects are not printed, but counted with the closes.
    assert_eq!(summary(&stderr).printed, 2 * seen.len() as u64, "{stderr}");
    for s in &seen {
        let row = rows
            .iter()
            .find(|r| r[3] == s.src.port().to_string())
            .unwrap_or_else(|| panic!("{s:?}: {stdout}"));
        let pid = std::process::id().to_string();
        let (sent, received) = (s.sent.to_string(), s.received.to_string());
        assert_eq!(row[1], pid, "{row:?}");
        assert_eq!(
            (row[2], row[4], row[5]),
            ("127.0.0.1", "127.0.0.1", port.as_str()),
            "{row:?}"
        );
        assert_eq!(
            (row[6], row[7]),
            (sent.as_str(), received.as_str()),
            "{row:?}"
        );
        let ms: f64 = row[8].parse().unwrap();
        assert!(
            ms > 0.0 && ms <= (s.elapsed + SLACK).as_secs_f64() * 1000.0,
            "{row:?}"
        );
        assert_eq!(row[9], s.ending.end(), "{row:?}");
        // The test binary's name, as the kernel truncates it.
        assert!(row.len() >= 11, "{row:?}");
    }
}

impl Ending {
    /// The `end` probe-user must report for the server's side of the connection: the
    /// client's, seen from the other end.
    fn server_end(self) -> &'static str {
        match self.end() {
            "fin_local" => "fin_peer",
            "fin_peer" => "fin_local",
            "rst_sent" => "rst_received",
            "rst_received" => "rst_sent",
            other => unreachable!("{other}"),
        }
    }
}

/// The lines of `lines` of the connection `src` -> `dst` whose `event` is `event` (`None` for
/// a connect's line, which has none) and, for a close, whose role is `role`.
fn events_of<'a>(
    lines: &'a [Value],
    event: Option<&str>,
    role: &str,
    (src, dst): (SocketAddr, SocketAddr),
) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["event"].as_str() == event)
        .filter(|l| event != Some("close") || l["role"] == role)
        .filter(|l| endpoint(l, "saddr", "sport") == src && endpoint(l, "daddr", "dport") == dst)
        .collect()
}

#[test]
fn lifetime_accepts_report_the_server_side_of_each_connection() {
    if !probe_tests::kernel_has_kprobes() {
        assert_one_line_error(
            &["--accept", "--format", "json"],
            1,
            "probe-user: error: --accept: cannot watch accepted connections (an fexit program or a kretprobe on inet_csk_accept): this kernel has no kprobes (CONFIG_KPROBES is off), so probe-user cannot trace it",
        );
        return;
    }
    // Bound now, accepting once tracing runs: the kretprobe sees the returns of the accept
    // calls entered after it was attached.
    let bind = |addr: &str| TcpListener::bind(addr).unwrap();
    let listeners = [
        bind("127.0.0.1:0"),
        bind("[::1]:0"),
        // Dual-stack: an IPv4 client's connection is accepted on an IPv6 socket
        // (IPv4-mapped), and reported as IPv4.
        bind("[::]:0"),
        // Not traced (--filter-port): neither its accept nor its closes.
        bind("127.0.0.1:0"),
    ];
    // Accepted only after its client reset the connection.
    let late = bind("127.0.0.1:0");
    let ports = format!(
        "{},{},{},{}",
        port_of(&listeners[0]),
        port_of(&listeners[1]),
        port_of(&listeners[2]),
        port_of(&late)
    );
    let (stdout, stderr, (seen, open, open_since, v6, reset)) = traced(
        &[
            "--accept",
            "--lifetime",
            "--format",
            "json",
            "--filter-port",
            &ports,
            "--stats",
        ],
        || {
            let [v4, v6, dual, other] = listeners.map(serve);
            let dual_v4: SocketAddr = format!("127.0.0.1:{}", dual.port()).parse().unwrap();
            let seen = every_ending([v4, v6, dual_v4]);
            connection(other, 500, Ending::ServerFin);
            let open_since = Instant::now();
            let mut open = TcpStream::connect(v6).unwrap();
            open.write_all(b"w12345").unwrap();
            // Reset by the client (SO_LINGER 0) while it waits to be accepted: accept()
            // still returns it, closed.
            let mut client = TcpStream::connect(late.local_addr().unwrap()).unwrap();
            client.write_all(b"abc").unwrap();
            let reset = (client.local_addr().unwrap(), late.local_addr().unwrap());
            thread::sleep(Duration::from_millis(50));
            socket2::SockRef::from(&client)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(client);
            thread::sleep(Duration::from_millis(50));
            // Its data is read, then the reset.
            let (mut accepted, _) = late.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0; 8];
            let err = loop {
                match accepted.read(&mut buf) {
                    Ok(n @ 1..) => got.extend_from_slice(&buf[..n]),
                    Ok(0) => panic!("no reset after {got:?}"),
                    Err(e) => break e,
                }
            };
            assert_eq!(got, b"abc");
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
            // The server thread accepts the open one.
            thread::sleep(Duration::from_millis(100));
            (seen, open, open_since, v6, reset)
        },
    );
    let lines = json_lines(&stdout);
    let summary = summary(&stderr);
    assert_eq!(summary.printed, lines.len() as u64, "{stderr}");
    assert_eq!(
        (summary.dropped, summary.missed, summary.malformed),
        (0, 0, 0),
        "{stderr}"
    );
    // Seen by the fexit program where the kernel has BPF trampolines (no limit on the
    // accept() calls blocked at once), else by the kretprobe.
    let runs = |name: &str| {
        stderr
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("probe-user: program {name} ran ")))
            .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    let fexit = runs("fexit_inet_csk_accept") + runs("fexit_inet_csk_accept2");
    let kretprobe = runs("inet_csk_accept");
    if probe_tests::kernel_has_fentry() {
        assert!(fexit > seen.len() as u64 && kretprobe == 0, "{stderr}");
    } else {
        assert!(kretprobe > seen.len() as u64 && fexit == 0, "{stderr}");
    }
    let pid = std::process::id();
    for s in &seen {
        let tuple = (s.src, s.dst);
        let accepts = events_of(&lines, Some("accept"), "server", tuple);
        assert_eq!(accepts.len(), 1, "{s:?}: {stdout}");
        let accept = accepts[0];
        assert_eq!(
            (&accept["role"], &accept["function"], &accept["pid"]),
            (&"server".into(), &"inet_csk_accept".into(), &pid.into()),
            "{accept}"
        );
        let family = if s.dst.is_ipv4() { "ipv4" } else { "ipv6" };
        assert_eq!(accept["family"], family, "{accept}");
        // The accepting thread, not the connecting one.
        let connect = events_of(&lines, None, "client", tuple);
        assert_eq!(connect.len(), 1, "{s:?}: {stdout}");
        assert_ne!(accept["tid"], connect[0]["tid"], "{accept}");
        // Each side's close, each with what that side counted.
        let client = events_of(&lines, Some("close"), "client", tuple);
        let server = events_of(&lines, Some("close"), "server", tuple);
        assert_eq!((client.len(), server.len()), (1, 1), "{s:?}: {stdout}");
        let close = server[0];
        assert_eq!(close["end"], s.ending.server_end(), "{s:?}: {close}");
        assert_eq!(close["pid"], pid, "{close}");
        assert_eq!(close["function"], "inet_csk_accept", "{close}");
        // What the client sent, the server received; what the client received, the server
        // sent, acknowledged (a reset from the client carries no acknowledgement the server
        // takes: its last segments may stay unacknowledged).
        assert_eq!(close["bytes_received"], s.sent, "{s:?}: {close}");
        let sent = close["bytes_sent"].as_u64().unwrap();
        match s.ending {
            Ending::ClientRst | Ending::ClientFinThenRst => {
                assert!(sent <= s.received, "{s:?}: {close}")
            }
            _ => assert_eq!(sent, s.received, "{s:?}: {close}"),
        }
        assert_eq!(client[0]["end"], s.ending.end(), "{s:?}: {}", client[0]);
        let duration = close["duration_ns"].as_u64().unwrap();
        assert!(
            duration > 0 && duration <= (s.elapsed + SLACK).as_nanos() as u64,
            "{s:?}: {close}"
        );
    }
    // The one left open: accepted, open at exit on both sides.
    let src = unmapped(open.local_addr().unwrap());
    let tuple = (src, unmapped(v6));
    assert_eq!(
        events_of(&lines, Some("accept"), "server", tuple).len(),
        1,
        "{stdout}"
    );
    let server = events_of(&lines, Some("close"), "server", tuple);
    let client = events_of(&lines, Some("close"), "client", tuple);
    assert_eq!((server.len(), client.len()), (1, 1), "{stdout}");
    assert_eq!(server[0]["end"], "open", "{}", server[0]);
    assert!(
        server[0]["duration_ns"].as_u64().unwrap() <= open_since.elapsed().as_nanos() as u64,
        "{}",
        server[0]
    );
    // Each side's counters at exit: 6 bytes from the client, no answer yet.
    let bytes = |line: &Value| (line["bytes_sent"].as_u64(), line["bytes_received"].as_u64());
    assert_eq!(bytes(server[0]), (Some(0), Some(6)), "{}", server[0]);
    assert_eq!(client[0]["end"], "open", "{}", client[0]);
    assert_eq!(bytes(client[0]), (Some(6), Some(0)), "{}", client[0]);
    drop(open);
    // The one reset before it was accepted: its accept, then its close at once, reset by the
    // peer, with the 3 bytes it received meanwhile.
    assert_eq!(
        events_of(&lines, Some("accept"), "server", reset).len(),
        1,
        "{stdout}"
    );
    let closes = events_of(&lines, Some("close"), "server", reset);
    assert_eq!(closes.len(), 1, "{stdout}");
    let close = closes[0];
    assert_eq!(
        (&close["end"], &close["errno"], &close["bytes_received"]),
        (&"rst_received".into(), &104.into(), &3.into()),
        "{close}"
    );
    assert_eq!(
        events_of(&lines, Some("close"), "client", reset)[0]["end"],
        "rst_sent",
        "{stdout}"
    );
    // Nothing else: per connection a connect, an accept and two closes.
    assert_eq!(lines.len(), 4 * (seen.len() + 2), "{stdout}");
    // The identity is the accepting task's, in the listener's network namespace.
    for accept in lines.iter().filter(|l| l["event"] == "accept") {
        assert_eq!(accept["netns"], lines[0]["netns"], "{accept}");
        assert!(accept["cgroup_id"].is_u64(), "{accept}");
    }

    // The destination filters apply to the local end: -6 leaves out the IPv4 accepts (and
    // connects), the IPv4-mapped one included.
    let listeners = [bind("127.0.0.1:0"), bind("[::1]:0"), bind("[::]:0")];
    let ports = format!(
        "{},{},{}",
        port_of(&listeners[0]),
        port_of(&listeners[1]),
        port_of(&listeners[2])
    );
    let (stdout, _, seen) = traced(
        &[
            "--accept",
            "-6",
            "--format",
            "json",
            "--filter-port",
            &ports,
        ],
        || {
            let [v4, v6, dual] = listeners.map(serve);
            let dual_v4: SocketAddr = format!("127.0.0.1:{}", dual.port()).parse().unwrap();
            let dual_v6: SocketAddr = format!("[::1]:{}", dual.port()).parse().unwrap();
            [v4, v6, dual_v4, dual_v6].map(|dst| connection(dst, 100, Ending::ServerFin))
        },
    );
    let lines = json_lines(&stdout);
    let accepted: Vec<(SocketAddr, SocketAddr)> = lines
        .iter()
        .filter(|l| l["event"] == "accept")
        .map(|l| (endpoint(l, "saddr", "sport"), endpoint(l, "daddr", "dport")))
        .collect();
    let want: Vec<(SocketAddr, SocketAddr)> = seen
        .iter()
        .filter(|s| s.dst.is_ipv6())
        .map(|s| (s.src, s.dst))
        .collect();
    assert_eq!(accepted, want, "{stdout}");
}

fn port_of(listener: &TcpListener) -> u16 {
    listener.local_addr().unwrap().port()
}

/// The samples of `name` for the connects and connections to port `port` (the client's side,
/// for the families with a role), summed over their other labels.
fn sample(body: &str, name: &str, port: u16) -> f64 {
    sample_of(body, name, port, "client")
}

/// Scrapes `addr` until `done` holds of the body (the tracer counts closes as it drains
/// them, every 50 ms), at most 10 s.
fn scrape_until(addr: SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = scrape(addr);
        if done(&body) || Instant::now() > deadline {
            return body;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn lifetime_metrics_and_counts_follow_each_connection() {
    let dst = server("127.0.0.1:0");
    let port = dst.port();
    let filter = port.to_string();
    let pid = std::process::id().to_string();
    let mut cmd = probe_user_command();
    cmd.args([
        "--lifetime",
        "--metrics",
        "127.0.0.1:0",
        "--filter-port",
        &filter,
    ])
    .args(["--pid", &pid]);
    let tracer = ProbeUser::start_until(&mut cmd, "Counting TCP connects");
    let addr = serving_addr(&tracer);
    let seen: Vec<Seen> = [Ending::ClientFin, Ending::ServerFin, Ending::ServerRst]
        .into_iter()
        .enumerate()
        .map(|(i, ending)| connection(dst, 700 + 10 * i, ending))
        .collect();
    // Two held open.
    let mut open: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(dst).unwrap()).collect();
    let closed = |n: f64| {
        move |body: &str| sample(body, "tcpconn_connection_duration_seconds_count", port) == n
    };
    let body = scrape_until(addr, closed(3.0));
    let (sent, received) = seen
        .iter()
        .fold((0, 0), |(s, r), c| (s + c.sent, r + c.received));
    let expect = |body: &str, active: f64, closes: usize| {
        assert_eq!(sample(body, "tcpconn_connects_total", port), 5.0, "{body}");
        assert_eq!(
            sample(body, "tcpconn_connections_active", port),
            active,
            "{body}"
        );
        assert_eq!(
            sample(body, "tcpconn_bytes_sent_total", port),
            seen[..closes].iter().map(|c| c.sent).sum::<u64>() as f64,
            "{body}"
        );
        assert_eq!(
            sample(body, "tcpconn_bytes_received_total", port),
            seen[..closes].iter().map(|c| c.received).sum::<u64>() as f64,
            "{body}"
        );
        assert_eq!(
            sample(body, "tcpconn_connection_duration_seconds_count", port),
            closes as f64,
            "{body}"
        );
        // The +Inf bucket holds every close; the sum is at most the clients' time.
        assert_eq!(
            metric_samples(body, "tcpconn_connection_duration_seconds_bucket")
                .iter()
                .filter(|(l, _)| l.get("le").map(String::as_str) == Some("+Inf"))
                .map(|(_, v)| v)
                .sum::<f64>(),
            closes as f64,
            "{body}"
        );
        let elapsed: Duration = seen[..closes].iter().map(|c| c.elapsed + SLACK).sum();
        let sum = sample(body, "tcpconn_connection_duration_seconds_sum", port);
        assert!(sum > 0.0 && sum <= elapsed.as_secs_f64(), "{body}");
    };
    expect(&body, 2.0, 3);
    // One of the open ones closes: a FIN from the client's side, 6 bytes each way.
    let mut one = open.pop().unwrap();
    one.write_all(b"w1234\xff").unwrap();
    one.shutdown(Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    one.read_to_end(&mut answer).unwrap();
    drop(one);
    let body = scrape_until(addr, closed(4.0));
    assert_eq!(
        sample(&body, "tcpconn_connections_active", port),
        1.0,
        "{body}"
    );
    assert_eq!(
        sample(&body, "tcpconn_bytes_sent_total", port),
        (sent + 6) as f64,
        "{body}"
    );
    assert_eq!(
        sample(&body, "tcpconn_bytes_received_total", port),
        (received + answer.len() as u64) as f64,
        "{body}"
    );
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    drop(open);

    // The same in the count table's JSON row at exit: the one left open is still active.
    let (table, seen) = counted_at_exit(&["--lifetime", "--filter-port", &filter], || dst);
    let rows = table["counts"].as_array().unwrap();
    let row = rows
        .iter()
        .find(|r| r["outcome"] == "established")
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(row["connects"], 2, "{row}");
    assert_eq!(
        connections_of(row),
        [Some(1), Some(1), Some(seen.sent), Some(seen.received)],
        "{row}"
    );
}

/// Runs a tracer counting with `args`, `--count --format json` and `--pid` of this process,
/// while one connection to the server `start` gives once tracing runs sends 900 bytes and
/// ends with the client's FIN and another stays open; returns the count table printed at exit
/// and what the first connection saw.
fn counted_at_exit(args: &[&str], start: impl FnOnce() -> SocketAddr) -> (Value, Seen) {
    let mut cmd = probe_user_command();
    cmd.args(args)
        .args(["--count", "--format", "json"])
        .args(["--pid", &std::process::id().to_string()]);
    let tracer = ProbeUser::start_until(&mut cmd, "Counting TCP connects");
    let dst = start();
    let seen = connection(dst, 900, Ending::ClientFin);
    let held = TcpStream::connect(dst).unwrap();
    thread::sleep(Duration::from_millis(300));
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    drop(held);
    let table = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    (table, seen)
}

/// A count row's connections: active, closed, bytes sent, bytes received.
fn connections_of(row: &Value) -> [Option<u64>; 4] {
    let connections = &row["connections"];
    ["active", "closed", "bytes_sent", "bytes_received"].map(|k| connections[k].as_u64())
}

/// [`sample`] for `role`'s side.
fn sample_of(body: &str, name: &str, port: u16, role: &str) -> f64 {
    metric_samples(body, name)
        .into_iter()
        .filter(|(labels, _)| {
            labels.get("dport").map(String::as_str) == Some(&port.to_string())
                && labels.get("role").is_none_or(|r| r == role)
        })
        .map(|(_, value)| value)
        .sum()
}

#[test]
fn lifetime_accepts_are_counted_on_the_server_side() {
    if !probe_tests::kernel_has_kprobes() {
        return; // --accept's one-line error: see the test above
    }
    // Bound now, accepting once tracing runs (see the test above).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = port_of(&listener);
    let filter = port.to_string();
    let pid = std::process::id().to_string();
    let mut cmd = probe_user_command();
    cmd.args([
        "--accept",
        "--lifetime",
        "--metrics",
        "127.0.0.1:0",
        "--filter-port",
        &filter,
    ])
    .args(["--pid", &pid]);
    let tracer = ProbeUser::start_until(&mut cmd, "Counting TCP connects");
    let addr = serving_addr(&tracer);
    let dst = serve(listener);
    let seen: Vec<Seen> = [Ending::ClientFin, Ending::ServerFin, Ending::ServerRst]
        .into_iter()
        .enumerate()
        .map(|(i, ending)| connection(dst, 800 + 10 * i, ending))
        .collect();
    let mut held = TcpStream::connect(dst).unwrap();
    held.write_all(b"w1234").unwrap();
    let closed = |body: &str| {
        ["client", "server"].iter().all(|role| {
            sample_of(
                body,
                "tcpconn_connection_duration_seconds_count",
                port,
                role,
            ) == 3.0
        }) && sample_of(body, "tcpconn_accepts_total", port, "server") == 4.0
    };
    let body = scrape_until(addr, closed);
    let (sent, received) = seen
        .iter()
        .fold((0, 0), |(s, r), c| (s + c.sent, r + c.received));
    let client = |name: &str| sample(&body, name, port);
    let server = |name: &str| sample_of(&body, name, port, "server");
    // Each connection counted once on each side: its connect, its accept; each side's bytes
    // the mirror of the other's.
    let (sent, received) = (sent as f64, received as f64);
    assert_eq!(
        [
            client("tcpconn_connects_total"),
            server("tcpconn_accepts_total"),
            client("tcpconn_connections_active"),
            server("tcpconn_connections_active"),
            client("tcpconn_bytes_sent_total"),
            server("tcpconn_bytes_sent_total"),
            server("tcpconn_bytes_received_total"),
        ],
        [4.0, 4.0, 1.0, 1.0, sent, received, sent],
        "{body}"
    );
    let out = tracer.stop();
    assert!(out.status.success(), "{out:?}");
    drop(held);

    // The count table's JSON at exit: a row of accepts, by the local end.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = port_of(&listener);
    let filter = port.to_string();
    let args = ["--accept", "--lifetime", "--filter-port", &filter];
    let (table, seen) = counted_at_exit(&args, || serve(listener));
    let rows = table["counts"].as_array().unwrap();
    let accepts: Vec<&Value> = rows.iter().filter(|r| r["role"] == "server").collect();
    assert_eq!(accepts.len(), 1, "{table}");
    let row = accepts[0];
    let key = ["function", "daddr", "dport", "connects"].map(|k| &row[k]);
    let want: [Value; 4] = [
        "inet_csk_accept".into(),
        "127.0.0.1".into(),
        port.into(),
        2.into(),
    ];
    assert_eq!(key, want.each_ref(), "{row}");
    assert!(row.get("outcome").is_none(), "{row}");
    // The server sent what the client received, and received what it sent.
    assert_eq!(
        connections_of(row),
        [Some(1), Some(1), Some(seen.received), Some(seen.sent)],
        "{row}"
    );
    // The connects' row beside it, as without --accept.
    let connects = rows
        .iter()
        .find(|r| r["outcome"] == "established")
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(
        (&connects["connects"], connects.get("role")),
        (&2.into(), None),
        "{connects}"
    );
}

#[test]
fn lifetime_conflicts_are_one_line_errors() {
    for (args, expected) in [
        (
            &["--format", "life", "--metrics", "127.0.0.1:0"][..],
            "probe-user: error: --format life prints a line per closed connection: to count connections with --count, --metrics or --otlp-endpoint use --lifetime",
        ),
        (
            &["--lifetime"][..],
            "probe-user: error: --lifetime reports each close as a line: use it with --format json or life, or count connections with --count, --metrics or --otlp-endpoint",
        ),
        (
            &["--accept", "--format", "json", "--failed-only"][..],
            "probe-user: error: --accept reports connections that came up, which have no connect latency: not with --failed-only or --min-latency",
        ),
        (
            &["--accept"][..],
            "probe-user: error: --accept reports accepted connections as JSON lines: use it with --format json (or life, for their closes), or count them with --count, --metrics or --otlp-endpoint",
        ),
        (
            &["--lifetime", "--count", "--failed-only"][..],
            "probe-user: error: --lifetime follows each connect that came up: not with --successes-only or --failed-only",
        ),
        (
            &["--lifetime", "--format", "json", "--failed-only"][..],
            "probe-user: error: --lifetime follows each connect that came up: not with --successes-only or --failed-only",
        ),
        (
            &["--format", "life", "--successes-only"][..],
            "probe-user: error: --lifetime follows each connect that came up: not with --successes-only or --failed-only",
        ),
        (
            &["--format", "life", "--names"][..],
            "probe-user: error: --format life has no column for names or NAT destinations: use --format json with --names or --nat",
        ),
    ] {
        assert_one_line_error(args, 2, expected);
    }
}
