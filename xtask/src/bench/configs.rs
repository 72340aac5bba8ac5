//! The configurations `overhead` and `latency` measure: probe-user's command lines and, with
//! `--stap`, SystemTap's examples, each with the workload it meets.

use crate::stap;

/// One benchmark configuration: a name, the SystemTap example it reproduces, the tracer (none
/// for the baseline), the port the workload connects to and whether anything listens there.
pub(super) struct Config {
    pub(super) name: &'static str,
    pub(super) example: &'static str,
    pub(super) tracer: Option<Tracer>,
    pub(super) port: u16,
    pub(super) workload: Workload,
}

/// What each connect of `connect-bench` meets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Workload {
    /// Its own listener: connect, accept, close with RST.
    Accepted,
    /// No listener (`--refused`): each connect is refused by an RST. Measured against its own
    /// baseline; only in the table of `--outcome`'s cost.
    Refused,
    /// A DNS answer (UDP from port 53) before each accepted connect (`--dns`): what `--names`
    /// costs per answer. Measured against its own baseline.
    Dns,
}

impl Workload {
    /// `connect-bench`'s flag for it.
    pub(super) fn flag(self) -> &'static str {
        match self {
            Workload::Accepted => "--accepted",
            Workload::Refused => "--refused",
            Workload::Dns => "--dns",
        }
    }

    /// The configuration without a tracer it is measured against.
    pub(super) fn baseline(self) -> &'static str {
        match self {
            Workload::Accepted => "baseline",
            Workload::Refused => "baseline-refused",
            Workload::Dns => "baseline-dns",
        }
    }
}

#[derive(Clone, Copy)]
pub(super) enum Tracer {
    /// A probe-user command line.
    ProbeUser(&'static str),
    /// SystemTap's example `n`, run by staprun.
    Stap(u32),
    /// A peer's command line (libbpf-tools, run with its own loader and libraries: see
    /// `debian.rs`), stopped with SIGINT, which it handles.
    Peer(&'static str),
}

/// The configurations that follow connections to their close, measured in a table of their own
/// (no SystemTap example does).
pub(super) const LIFETIME: &str = "connection lifetime";

/// What the guest needs for the peers: Debian bookworm's packages and the programs' paths in
/// each, run as `/bin/peer-<program>` with the package's libraries in `/lib/<package>`.
pub(super) const PEER_PACKAGES: [(&str, &[&str]); 2] = [
    ("libbpf-tools", &["usr/sbin/tcpconnect", "usr/sbin/tcplife"]),
    ("bpftrace", &["usr/bin/bpftrace"]),
];

/// bpftrace's equivalent of SystemTap's examples 2 and 3 (as bpftrace's own `tcpconnect.bt`
/// reads the socket, but on `tcp_v4_connect`/`tcp_v6_connect`'s return, as SystemTap and
/// probe report them): each call with its source and destination, only those to `port` if
/// given. The guest path it is written to, and its text.
pub(super) fn bpftrace_script(port: Option<u16>) -> (String, String) {
    let (file, only) = match port {
        Some(port) => (
            format!("connect-{port}.bt"),
            format!("$dport == {port} && "),
        ),
        None => ("connect.bt".to_string(), String::new()),
    };
    let text = format!(
        "kprobe:tcp_v4_connect, kprobe:tcp_v6_connect {{ @sk[tid] = arg0; }}\n\
         kretprobe:tcp_v4_connect, kretprobe:tcp_v6_connect /@sk[tid]/ {{\n\
         \x20 $sk = (struct sock *)@sk[tid];\n\
         \x20 $c = $sk->__sk_common;\n\
         \x20 $dport = ($c.skc_dport >> 8) | (($c.skc_dport << 8) & 0xff00);\n\
         \x20 if ({only}$c.skc_family == 2) {{\n\
         \x20   printf(\"%llu: %s src=%s:%d dst=%s:%d\\n\", nsecs, probe, ntop(2, $c.skc_rcv_saddr), $c.skc_num, ntop(2, $c.skc_daddr), $dport);\n\
         \x20 }}\n\
         \x20 if ({only}$c.skc_family == 10) {{\n\
         \x20   printf(\"%llu: %s src=[%s]:%d dst=[%s]:%d\\n\", nsecs, probe, ntop(10, $c.skc_v6_rcv_saddr.in6_u.u6_addr8), $c.skc_num, ntop(10, $c.skc_v6_daddr.in6_u.u6_addr8), $dport);\n\
         \x20 }}\n\
         \x20 delete(@sk[tid]);\n\
         }}\n"
    );
    (format!("/lib/bpftrace/{file}"), text)
}

const fn traced(name: &'static str, example: &'static str, tracer: Tracer, port: u16) -> Config {
    Config {
        name,
        example,
        tracer: Some(tracer),
        port,
        workload: Workload::Accepted,
    }
}

/// A configuration of the refused workload (on port 9091, where nothing listens).
const fn refused(name: &'static str, tracer: Option<Tracer>) -> Config {
    Config {
        name,
        example: "refused connect",
        tracer,
        port: 9091,
        workload: Workload::Refused,
    }
}

/// A configuration of the DNS workload (on port 8080).
const fn dns(name: &'static str, tracer: Option<Tracer>) -> Config {
    Config {
        name,
        example: "DNS answer + connect",
        tracer,
        port: 8080,
        workload: Workload::Dns,
    }
}

impl Config {
    /// A SystemTap module (only with `--stap`): ready once its kprobe is registered, as it
    /// prints no banner.
    pub(super) fn is_stap(&self) -> bool {
        matches!(self.tracer, Some(Tracer::Stap(_)))
    }

    /// A peer's tracer (only with `--peers`).
    pub(super) fn is_peer(&self) -> bool {
        matches!(self.tracer, Some(Tracer::Peer(_)))
    }

    /// How the guest knows the tracer is ready: probe-user's banner; SystemTap's kprobe
    /// registered; a peer's perf events (one per attach point, one for its perf buffer on the
    /// guest's one CPU), which libbpf-tools open only as it attaches.
    pub(super) fn ready(&self) -> &'static str {
        match self.tracer {
            Some(Tracer::Stap(_)) => "kprobe",
            Some(Tracer::Peer(command)) if command.contains("tcplife") => "perf:2",
            // tcpconnect's or bpftrace's kprobe and kretprobe per connect function, each a perf
            // event, and its perf buffer on the guest's one CPU.
            Some(Tracer::Peer(_)) => "perf:5",
            _ => "banner",
        }
    }

    /// The signal that ends the tracer, letting it write what it holds.
    pub(super) fn stop_signal(&self) -> &'static str {
        if self.is_peer() { "INT" } else { "TERM" }
    }

    /// The configuration without the trailing option `option` that this one adds to.
    pub(super) fn without(&self, option: &str) -> Option<&'static Config> {
        let command = self.command();
        let without = command.strip_suffix(option)?;
        CONFIGS
            .iter()
            .find(|c| c.command() == without && c.port == self.port && c.workload == self.workload)
    }

    /// The tracer's command line in the guest (empty for the baseline).
    pub(super) fn command(&self) -> String {
        match self.tracer {
            None => String::new(),
            Some(Tracer::ProbeUser(command) | Tracer::Peer(command)) => command.to_string(),
            Some(Tracer::Stap(n)) => stap::staprun_command(n),
        }
    }
}

use Tracer::{Peer, ProbeUser, Stap};

#[rustfmt::skip]
pub(super) const CONFIGS: &[Config] = &[
    Config { name: "baseline", example: "-", tracer: None, port: 8080, workload: Workload::Accepted },
    // The default backend (auto: fentry where the kernel can attach it, as on this VM).
    traced("minimal", "example 1", ProbeUser("/bin/probe-user --format minimal"), 8080),
    traced("default", "example 2", ProbeUser("/bin/probe-user"), 8080),
    // The default with the reader's output left out (`--discard`, hidden): what the kernel side,
    // the ring buffer and decoding cost, then formatting, without the write.
    traced("discard-decoded", "example 2", ProbeUser("/bin/probe-user --discard decoded"), 8080),
    traced("discard-formatted", "example 2", ProbeUser("/bin/probe-user --discard formatted"), 8080),
    traced("filter-hit", "example 3, printed", ProbeUser("/bin/probe-user --filter-port 8080"), 8080),
    traced("filter-miss", "example 3, filtered out", ProbeUser("/bin/probe-user --filter-port 8080"), 9090),
    traced("succ-default", "example 2", ProbeUser("/bin/probe-user --successes-only"), 8080),
    traced("succ-filter-hit", "example 3, printed", ProbeUser("/bin/probe-user --successes-only --filter-port 8080"), 8080),
    traced("succ-filter-miss", "example 3, filtered out", ProbeUser("/bin/probe-user --successes-only --filter-port 8080"), 9090),
    // kprobe + kretprobe, as SystemTap (auto's choice on kernels without trampolines).
    traced("kprobe-minimal", "example 1", ProbeUser("/bin/probe-user --attach kprobe --format minimal"), 8080),
    traced("kprobe-default", "example 2", ProbeUser("/bin/probe-user --attach kprobe"), 8080),
    traced("kprobe-filter-hit", "example 3, printed", ProbeUser("/bin/probe-user --attach kprobe --filter-port 8080"), 8080),
    traced("kprobe-filter-miss", "example 3, filtered out", ProbeUser("/bin/probe-user --attach kprobe --filter-port 8080"), 9090),
    traced("kprobe-succ-default", "example 2", ProbeUser("/bin/probe-user --attach kprobe --successes-only"), 8080),
    traced("kprobe-succ-filter-hit", "example 3, printed", ProbeUser("/bin/probe-user --attach kprobe --successes-only --filter-port 8080"), 8080),
    traced("kprobe-succ-filter-miss", "example 3, filtered out", ProbeUser("/bin/probe-user --attach kprobe --successes-only --filter-port 8080"), 9090),
    traced("tp-minimal", "example 1", ProbeUser("/bin/probe-user --attach tracepoint --format minimal"), 8080),
    traced("tp-default", "example 2", ProbeUser("/bin/probe-user --attach tracepoint"), 8080),
    traced("tp-filter-hit", "example 3, printed", ProbeUser("/bin/probe-user --attach tracepoint --filter-port 8080"), 8080),
    traced("tp-filter-miss", "example 3, filtered out", ProbeUser("/bin/probe-user --attach tracepoint --filter-port 8080"), 9090),
    traced("outcome-default", "example 2", ProbeUser("/bin/probe-user --outcome"), 8080),
    traced("outcome-discard-decoded", "example 2", ProbeUser("/bin/probe-user --discard decoded --outcome"), 8080),
    traced("outcome-discard-formatted", "example 2", ProbeUser("/bin/probe-user --discard formatted --outcome"), 8080),
    traced("outcome-filter-hit", "example 3, printed", ProbeUser("/bin/probe-user --filter-port 8080 --outcome"), 8080),
    traced("outcome-filter-miss", "example 3, filtered out", ProbeUser("/bin/probe-user --filter-port 8080 --outcome"), 9090),
    traced("kprobe-outcome-default", "example 2", ProbeUser("/bin/probe-user --attach kprobe --outcome"), 8080),
    traced("kprobe-outcome-filter-hit", "example 3, printed", ProbeUser("/bin/probe-user --attach kprobe --filter-port 8080 --outcome"), 8080),
    traced("tp-outcome-default", "example 2", ProbeUser("/bin/probe-user --attach tracepoint --outcome"), 8080),
    traced("tp-outcome-filter-hit", "example 3, printed", ProbeUser("/bin/probe-user --attach tracepoint --filter-port 8080 --outcome"), 8080),
    traced("json-default", "example 2", ProbeUser("/bin/probe-user --format json"), 8080),
    traced("kprobe-json-default", "example 2", ProbeUser("/bin/probe-user --attach kprobe --format json"), 8080),
    traced("tp-json-default", "example 2", ProbeUser("/bin/probe-user --attach tracepoint --format json"), 8080),
    // `--names` and `--nat` on JSON lines (which they need), against JSON alone: what each adds
    // per connect (the accepted workload has no DNS answer and no NAT: the hooks' cost on
    // packets that are neither), and with a DNS answer before each connect.
    traced("json-names", "example 2", ProbeUser("/bin/probe-user --format json --names"), 8080),
    traced("json-nat", "example 2", ProbeUser("/bin/probe-user --format json --nat"), 8080),
    // Counting: in the kernel (nothing crosses per connect), and by DNS name, which userspace
    // counts from the events (each connect crosses the ring buffer, as a JSON line does).
    traced("count-default", "example 2", ProbeUser("/bin/probe-user --count --interval 1h"), 8080),
    traced("count-names", "example 2", ProbeUser("/bin/probe-user --count --interval 1h --count-by name"), 8080),
    // Following each connection to its close, and libbpf-tools' tcplife (which reports both
    // ends of each connection: the client's and the accepted one).
    traced("life", LIFETIME, ProbeUser("/bin/probe-user --format life"), 8080),
    traced("json-lifetime", LIFETIME, ProbeUser("/bin/probe-user --format json --lifetime"), 8080),
    // Both ends of each connection, as tcplife reports them: the accept and its close too.
    traced("life-accept", LIFETIME, ProbeUser("/bin/probe-user --format life --accept"), 8080),
    // The same counted (each connect, accept and close crosses the ring buffer; userspace counts).
    traced("life-accept-count", LIFETIME, ProbeUser("/bin/probe-user --count --interval 1h --lifetime --accept"), 8080),
    traced("peer-tcplife", LIFETIME, Peer("/bin/peer-tcplife"), 8080),
    // libbpf-tools' tcpconnect: kprobe + kretprobe, a perf buffer.
    traced("peer-tcpconnect", "example 2", Peer("/bin/peer-tcpconnect"), 8080),
    traced("peer-tcpconnect-hit", "example 3, printed", Peer("/bin/peer-tcpconnect -P 8080"), 8080),
    traced("peer-tcpconnect-miss", "example 3, filtered out", Peer("/bin/peer-tcpconnect -P 8080"), 9090),
    // bpftrace: the same probes, its printf through a perf buffer (`-q`: no banner line).
    traced("peer-bpftrace", "example 2", Peer("/bin/peer-bpftrace -q /lib/bpftrace/connect.bt"), 8080),
    traced("peer-bpftrace-hit", "example 3, printed", Peer("/bin/peer-bpftrace -q /lib/bpftrace/connect-8080.bt"), 8080),
    traced("peer-bpftrace-miss", "example 3, filtered out", Peer("/bin/peer-bpftrace -q /lib/bpftrace/connect-8080.bt"), 9090),
    dns("baseline-dns", None),
    dns("dns-json", Some(ProbeUser("/bin/probe-user --format json"))),
    dns("dns-json-names", Some(ProbeUser("/bin/probe-user --format json --names"))),
    refused("baseline-refused", None),
    refused("refused-default", Some(ProbeUser("/bin/probe-user"))),
    refused("refused-outcome", Some(ProbeUser("/bin/probe-user --outcome"))),
    refused("kprobe-refused-default", Some(ProbeUser("/bin/probe-user --attach kprobe"))),
    refused("kprobe-refused-outcome", Some(ProbeUser("/bin/probe-user --attach kprobe --outcome"))),
    refused("tp-refused-default", Some(ProbeUser("/bin/probe-user --attach tracepoint"))),
    refused("tp-refused-outcome", Some(ProbeUser("/bin/probe-user --attach tracepoint --outcome"))),
    traced("stap-1", "example 1", Stap(1), 8080),
    traced("stap-2", "example 2", Stap(2), 8080),
    traced("stap-3-hit", "example 3, printed", Stap(3), 8080),
    traced("stap-3-miss", "example 3, filtered out", Stap(3), 9090),
];

/// The tracer's command line as the report shows it, without the program's directory.
pub(super) fn tracer_command(c: &Config) -> String {
    let command = c.command();
    command
        .trim_start_matches("/usr/bin/")
        .trim_start_matches("/bin/")
        .replace("peer-", "")
}
