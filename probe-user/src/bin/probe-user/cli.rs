//! The command line: clap's definition of every option, the parsers of their values, the checks
//! of options that cannot work together, and `--generate` (man page, completions).

use std::{process::ExitCode, time::Duration};

use clap::{Parser, builder::PossibleValuesParser, builder::TypedValueParser as _};
use probe_user::{
    Backend, Conflict, CountBy, Format, OutcomeFilter, Report,
    names::{self, Named},
};

use crate::{
    metrics,
    output::{BatchedStdout, WriteError},
};

/// `--version`: the package version and the commit it was built from (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("PROBE_GIT_COMMIT"),
    ")"
);

/// Trace TCP connects (tcp_v4_connect / tcp_v6_connect) with eBPF, printed like SystemTap's
/// tcp.connect examples.
#[derive(Parser, Debug)]
#[command(version = VERSION, about)]
#[command(group(clap::ArgGroup::new("counting").args(["count", "metrics", "otlp_endpoint"]).multiple(true)))]
#[command(group(clap::ArgGroup::new("exporting").args(["metrics", "otlp_endpoint"]).multiple(true)))]
pub struct Cli {
    /// Output style: minimal (timestamp only), stap (with source and destination), json, life
    /// (a line per closed connection, like tcplife; implies --lifetime).
    #[arg(long, default_value_t = Format::Stap, value_parser = parse_format)]
    pub format: Format,
    /// Only trace connects to these destination ports (filtered in the kernel). Repeatable or
    /// comma-separated.
    #[arg(long = "filter-port", value_name = "PORT", value_delimiter = ',', value_parser = parse_port)]
    pub filter_port: Vec<u16>,
    /// Only trace connects made by these processes (filtered in the kernel). Repeatable or
    /// comma-separated.
    #[arg(long, value_name = "PID", value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Only trace connects made by tasks of these user ids (filtered in the kernel).
    /// Repeatable or comma-separated.
    #[arg(long, value_name = "UID", value_delimiter = ',')]
    pub uid: Vec<u32>,
    /// Only trace connects made by tasks in this cgroup v2 directory or below it, e.g.
    /// /sys/fs/cgroup/system.slice (filtered in the kernel, cgroups created later included).
    /// Repeatable (up to 64).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Vec<std::path::PathBuf>,
    /// Only trace connects made by tasks of this container: 12 to 64 hex digits of its id, as
    /// docker ps, crictl ps or podman ps show it (filtered in the kernel by the name of the
    /// task's cgroup; containers started later included). Repeatable or comma-separated (up
    /// to 8).
    #[arg(long, value_name = "ID", value_delimiter = ',')]
    pub container: Vec<String>,
    /// Only trace connects of sockets in this network namespace: its inode number, as
    /// `readlink /proc/PID/ns/net` or `lsns -t net` show it (filtered in the kernel).
    /// Repeatable or comma-separated.
    #[arg(long, value_name = "INODE", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    pub netns: Vec<u32>,
    /// Only trace connects made by tasks with this name (comm, at most 15 bytes; filtered in the
    /// kernel). Repeatable.
    #[arg(long, value_name = "NAME")]
    pub comm: Vec<String>,
    /// Only trace connects to destinations in this network (CIDR, IPv4 or IPv6, or a single
    /// address; filtered in the kernel). Repeatable or comma-separated.
    #[arg(long, value_name = "CIDR", value_delimiter = ',', value_parser = parse_network)]
    pub dst: Vec<ipnet::IpNet>,
    /// Only trace IPv4 connects (tcp_v4_connect; IPv4-mapped IPv6 destinations included).
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Only trace IPv6 connects (tcp_v6_connect; IPv4-mapped IPv6 destinations excluded, as they
    /// are IPv4 connects).
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,
    /// Report only connects that get as far as sending a SYN, from a single hook on
    /// tcp_connect instead of an entry and a return probe: cheaper, but failed calls are not
    /// reported (ret is always 0).
    #[arg(long)]
    pub successes_only: bool,
    /// Report each connect once its outcome is known (established, refused, timeout,
    /// unreachable, reset, aborted, error; pending if still connecting at exit) with its
    /// latency from the call to the outcome, its SYN retransmits and, for a failure, its cause
    /// (rst, icmp, local, drop, timeout, app): stap lines gain ` outcome=... latency=...ms
    /// retrans=N cause=...`, JSON lines `outcome`, `latency_ns`, `errno`, `syn_retransmits`,
    /// `cause` and its details, counts and metrics an outcome, a cause and a latency histogram.
    #[arg(long)]
    pub outcome: bool,
    /// Follow each connect that came up to its close, and report the close too: duration,
    /// payload bytes sent (acknowledged) and received, segments each way, retransmits, smoothed
    /// round-trip time, and how it ended (fin_local, fin_peer, rst_sent, rst_received, timeout,
    /// error; open if still open at exit). JSON lines with "event":"close", or --format life
    /// lines. Implies --outcome.
    #[arg(long)]
    pub lifetime: bool,
    /// Also report each connection a local listener accepts (the return of inet_csk_accept:
    /// needs BPF trampolines or kprobes): JSON lines with "event":"accept" and
    /// "role":"server", the peer as source, the local address and port as destination, the
    /// accepting task as caller. The filters apply as to connects (--filter-port: the local
    /// port). With --lifetime (or --format life) their closes too. Counted (--count,
    /// --metrics, --otlp-endpoint): rows of inet_csk_accept by local end, and
    /// tcpconn_accepts_total.
    #[arg(long)]
    pub accept: bool,
    /// Only report connects that did not come up (every outcome but established; filtered in
    /// the kernel). Implies --outcome.
    #[arg(long)]
    pub failed_only: bool,
    /// Only report connects whose latency is at least this (e.g. 100ms; up to 24h; filtered
    /// in the kernel). Implies --outcome.
    #[arg(long, value_name = "DURATION", value_parser = parse_min_latency)]
    pub min_latency: Option<Duration>,
    /// With --format json: name each connect's destination by the DNS answer that gave its
    /// address to a process in the same network namespace (`dns_name`: the name asked for),
    /// learned from the DNS answers (UDP, from port 53) the kernel delivers to local sockets.
    /// Counting, each row and series carries the name too (implied by --count-by name).
    /// Needs kprobes.
    #[arg(long)]
    pub names: bool,
    /// With --names: how long past an answer's TTL its names still name connects (0s to 1h;
    /// default 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_names_grace)]
    pub names_grace: Option<Duration>,
    /// With --names: the most (network namespace, address) names kept (1 to 1048576); past
    /// it, the one that expires first is evicted (counted in --stats; default 16384).
    #[arg(long, value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=probe_user::NamesConfig::MAX_MAX as i64))]
    pub names_max: Option<u32>,
    /// With --format json: give each connect whose SYN a destination NAT sent elsewhere (a
    /// Kubernetes Service, a published port) the address and port it was sent to (`nat_daddr`,
    /// `nat_dport`), seen as the SYN leaves (the net:net_dev_queue tracepoint). Counting, each
    /// row and series carries it too.
    #[arg(long)]
    pub nat: bool,
    /// Count connects in the kernel (with --names or --nat: in userspace, from the events)
    /// instead of printing each one, and print a table of counts (most connects first) every
    /// --interval and at exit.
    #[arg(long)]
    pub count: bool,
    /// With --count: how often to print the table (e.g. 5s, 1m, 500ms; 10ms to 24h).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_interval, requires = "count")]
    pub interval: Duration,
    /// With --count or --metrics: count by destination address and port (the default for
    /// --count tables), or by destination port only (the default for --metrics, whose connects
    /// carry a daddr label only when this says destination), or by the destination's DNS name
    /// and port (name: implies --names); with --count also by the caller's cgroup or
    /// container. With --names or --nat, connects are counted from their events in userspace
    /// (each one crosses the ring buffer, as in JSON lines).
    #[arg(long, value_name = "KEY", value_parser = parse_count_by(), requires = "counting")]
    pub count_by: Option<CountBy>,
    /// With --metrics or --otlp-endpoint: label every connect series with the caller's cgroup
    /// (cgroup_id, its names in tcpconn_cgroup_info) or container (container_id), counted in
    /// the kernel per cgroup.
    #[arg(long, value_name = "LABEL", value_enum, requires = "exporting")]
    pub metrics_label: Option<metrics::WorkloadLabel>,
    /// With --count or --metrics: the most label sets counted (1 to 1048576; in the kernel
    /// about 350 bytes of kernel memory each, whatever the number of CPUs). Connects with a
    /// new label set beyond it are counted under the "other" series of their family and
    /// outcome (tcpconn_series_overflow_total says how many).
    #[arg(long, value_name = "N", default_value_t = probe_common::limit::MAX_COUNT_KEYS,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(probe_common::limit::MAX_COUNT_KEYS_LIMIT)),
        requires = "counting")]
    pub max_series: u32,
    /// With --count or --metrics counting per cgroup: how long a cgroup must have been gone
    /// before its label sets are retired (their series end, their kernel keys are freed;
    /// 1s to 30d).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_retire_after, requires = "counting")]
    pub retire_after: Duration,
    /// Serve Prometheus/OpenMetrics counters at http://ADDR/metrics (ADDR is PORT for
    /// 127.0.0.1:PORT, or IP:PORT): connects by family and destination port, counted in the
    /// kernel (with --names or --nat, in userspace), and the dropped/missed/malformed counts. Nothing is printed per connect.
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    pub metrics: Option<std::net::SocketAddr>,
    /// With --metrics: serve it over TLS and/or with basic authentication, as this file says,
    /// in the format of the Prometheus exporter-toolkit (node_exporter's --web.config.file):
    /// tls_server_config, basic_auth_users (bcrypt hashes), http_server_config.headers.
    /// Read and checked at start: a file that cannot be used is an error (exit 2).
    #[arg(long, value_name = "FILE", requires = "metrics")]
    pub web_config_file: Option<std::path::PathBuf>,
    /// Push the metrics of --metrics over OTLP (OpenTelemetry) to URL (http:// or https://)
    /// every OTEL_METRIC_EXPORT_INTERVAL ms (default 60000) and at exit. Without URL,
    /// OTEL_EXPORTER_OTLP_METRICS_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT, else the default
    /// collector on localhost. The protocol (grpc or http/protobuf, the default), headers,
    /// timeout, certificate and resource come from the OTEL_* environment variables.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    pub otlp_endpoint: Option<String>,
    /// How to hook the connect path: auto (fentry where the kernel can attach it, else kprobe,
    /// else tracepoint), fentry (fexit on the connect functions), kprobe (kprobe and kretprobe,
    /// as SystemTap) or tracepoint (sock:inet_sock_set_state; reports only calls that send a
    /// SYN).
    #[arg(long, value_name = "BACKEND", default_value = "auto", value_parser = parse_attach)]
    pub attach: Attach,
    /// At exit, also print the start-up time, memory, the connects still in flight in the
    /// kernel's maps and each eBPF program's run count and average run time (kernel BPF
    /// statistics, enabled only while probe-user runs); with --count also each program's after
    /// every table, with --metrics also in every scrape (tcpconn_bpf_program_*).
    #[arg(long)]
    pub stats: bool,
    /// Read struct offsets from this BTF file instead of the kernel's own
    /// (/sys/kernel/btf/vmlinux), for kernels built without CONFIG_DEBUG_INFO_BTF: a raw BTF
    /// file for exactly the running kernel, e.g. extracted from btfhub's archive. fentry
    /// needs the kernel's own BTF, so without it auto uses kprobe or the tracepoint.
    #[arg(long, value_name = "FILE")]
    pub btf: Option<std::path::PathBuf>,
    /// Print the man page (man) or a shell completion script (bash, zsh, fish, elvish) made
    /// from these options to stdout, and exit.
    #[arg(long, value_name = "WHAT", hide = true, value_parser = ["man", "bash", "zsh", "fish", "elvish"])]
    pub generate: Option<String>,
    /// For `cargo xtask bench overhead`: receive and decode every event (decoded), or also
    /// format it (formatted), but write nothing, so that the reader's cost splits into its
    /// parts (docs/benchmarks.md).
    #[arg(long, value_name = "STAGE", hide = true, value_parser = ["decoded", "formatted"])]
    pub discard: Option<String>,
}

impl Cli {
    /// Options clap accepts one by one that cannot work together.
    pub fn contradiction(&self) -> Option<&'static str> {
        if self.format == Format::Life && self.counting() {
            return Some(
                "--format life prints a line per closed connection: to count connections with --count, --metrics or --otlp-endpoint use --lifetime",
            );
        }
        if self.lifetime
            && !self.counting()
            && matches!(self.format, Format::Stap | Format::Minimal)
        {
            return Some(
                "--lifetime reports each close as a line: use it with --format json or life, or count connections with --count, --metrics or --otlp-endpoint",
            );
        }
        if self.accept && (self.failed_only || self.min_latency.is_some()) {
            return Some(
                "--accept reports connections that came up, which have no connect latency: not with --failed-only or --min-latency",
            );
        }
        if self.accept && !self.counting() && matches!(self.format, Format::Stap | Format::Minimal)
        {
            return Some(
                "--accept reports accepted connections as JSON lines: use it with --format json (or life, for their closes), or count them with --count, --metrics or --otlp-endpoint",
            );
        }
        if self.format == Format::Life && (self.names || self.nat) {
            return Some(
                "--format life has no column for names or NAT destinations: use --format json with --names or --nat",
            );
        }
        if self.names && self.format != Format::Json && !self.counting() {
            return Some(
                "--names names each connect in JSON lines, or in counts: use it with --format json, --count, --metrics or --otlp-endpoint",
            );
        }
        if (self.names_grace.is_some() || self.names_max.is_some()) && !self.names() {
            return Some(
                "--names-grace and --names-max set how names are kept: use them with --names or --count-by name",
            );
        }
        if self.nat && self.successes_only {
            return Some(
                "--successes-only reports each connect before its SYN leaves, so --nat cannot give it the NAT's destination: leave one out",
            );
        }
        if self.nat && self.format != Format::Json && !self.counting() {
            return Some(
                "--nat adds the real destination to JSON lines, or to counts: use it with --format json, --count, --metrics or --otlp-endpoint",
            );
        }
        let by_workload = matches!(self.count_by, Some(CountBy::Cgroup | CountBy::Container));
        if self.metrics.is_some() && by_workload {
            return Some(
                "--metrics counts by destination or port: label its series by cgroup or container with --metrics-label",
            );
        }
        if self.otlp_endpoint.is_some() && by_workload {
            return Some(
                "--otlp-endpoint counts by destination or port: label its series by cgroup or container with --metrics-label",
            );
        }
        None
    }

    /// What to report, from the options that say it, or why they cannot work together (the
    /// library checks them: [`Report::from_switches`]; here each conflict in the options'
    /// words).
    pub fn report(&self) -> Result<Report, String> {
        if self.lifetime() && (self.successes_only || self.failed_only) {
            return Err(
                "--lifetime follows each connect that came up: not with --successes-only or --failed-only".into(),
            );
        }
        let outcome = self.outcomes().then(|| {
            OutcomeFilter::default()
                .failed_only(self.failed_only)
                .min_latency(self.min_latency.unwrap_or_default())
        });
        let counts = self
            .counting()
            .then(|| (self.count_by(), self.metrics_label.is_some()));
        let minimal = self.format == Format::Minimal;
        Report::from_switches(minimal, self.successes_only, outcome, counts).map_err(|c| match c {
            Conflict::TimestampsCounted => "--format minimal prints no destination, so it cannot show counts: use --format stap or json with --count or --metrics".into(),
            Conflict::TimestampsOutcomes => "--format minimal prints only the time of each call, so it cannot show outcomes: use --format stap or json with --outcome, --failed-only or --min-latency".into(),
            Conflict::SuccessesOutcomes => "--successes-only does not follow connects past the SYN, so it cannot show outcomes: leave it out with --outcome, --failed-only or --min-latency".into(),
            other => other.to_string(),
        })
    }

    /// Whether connects are counted (`--count` tables, `--metrics` or `--otlp-endpoint`).
    pub fn counting(&self) -> bool {
        self.count || self.metrics.is_some() || self.otlp_endpoint.is_some()
    }

    /// What connects are counted by: `--count` tables default to destinations, `--metrics` to
    /// ports (a label per address only when asked for).
    pub fn count_by(&self) -> CountBy {
        self.count_by.unwrap_or(if self.count {
            CountBy::Destination
        } else {
            CountBy::Port
        })
    }

    /// Whether destinations are named (`--names`, or implied by `--count-by name`).
    pub fn names(&self) -> bool {
        self.names || self.count_by == Some(CountBy::Name)
    }

    /// Whether connects are reported with their outcome (asked for, or implied by a filter on
    /// it).
    pub fn outcomes(&self) -> bool {
        self.outcome || self.failed_only || self.min_latency.is_some() || self.lifetime()
    }

    /// Whether connections are followed to their close (`--lifetime`, or implied by
    /// `--format life`).
    pub fn lifetime(&self) -> bool {
        self.lifetime || self.format == Format::Life
    }
}

/// `--count-by`: a name of [`CountBy`]'s table, listed in the error.
fn parse_count_by() -> impl clap::builder::TypedValueParser<Value = CountBy> {
    let names: Vec<&'static str> = CountBy::ALL.iter().map(|by| by.name()).collect();
    PossibleValuesParser::new(names)
        .map(|name| CountBy::from_name(&name).expect("the parser admits only CountBy's names"))
}

/// `--dst`: a network (`10.0.0.0/8`, `fd00::/8`) or a single address.
fn parse_network(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("not an address or network in CIDR notation: {s:?}"))
}

/// `--interval`: a duration from 10 ms (a table more often is unreadable and costs a map walk
/// each time) to 24 h.
fn parse_interval(s: &str) -> Result<Duration, String> {
    const RANGE: std::ops::RangeInclusive<Duration> =
        Duration::from_millis(10)..=Duration::from_secs(24 * 3600);
    let interval = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if !RANGE.contains(&interval) {
        return Err("an interval must be between 10ms and 24h".into());
    }
    Ok(interval)
}

/// `--names-grace`: 0 s to 1 h.
fn parse_names_grace(s: &str) -> Result<Duration, String> {
    let grace = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if grace > Duration::from_secs(3600) {
        return Err("a grace must be at most 1h".into());
    }
    Ok(grace)
}

/// `--retire-after`: 1 s to 30 days.
fn parse_retire_after(s: &str) -> Result<Duration, String> {
    const RANGE: std::ops::RangeInclusive<Duration> =
        Duration::from_secs(1)..=Duration::from_secs(30 * 24 * 3600);
    let after = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if !RANGE.contains(&after) {
        return Err("a retirement delay must be between 1s and 30d".into());
    }
    Ok(after)
}

/// `--min-latency`: a duration up to 24 h.
fn parse_min_latency(s: &str) -> Result<Duration, String> {
    let min = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if min > Duration::from_secs(24 * 3600) {
        return Err("a minimum latency must be at most 24h".into());
    }
    Ok(min)
}

/// `--metrics`: `PORT` (loopback) or `IP:PORT`.
fn parse_metrics_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("expected PORT or IP:PORT (e.g. 9779, 0.0.0.0:9779), got {s:?}"))
}

/// The first line of a clap error, completed by the next one if it ends with a colon or the
/// next lists the possible values.
pub fn one_line(rendered: &str) -> String {
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ");
    match lines.next() {
        Some(next) if first.ends_with(':') || next.starts_with("[possible values") => {
            format!("{first} {next}")
        }
        _ => first.to_string(),
    }
}

fn parse_format(s: &str) -> Result<Format, names::UnknownName> {
    s.parse()
}

/// `--attach`: a backend, or the first that works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    Auto,
    Only(Backend),
}

fn parse_attach(s: &str) -> Result<Attach, names::UnknownName> {
    match s {
        "auto" => Ok(Attach::Auto),
        _ => names::parse("backend", s, &["auto"]).map(Attach::Only),
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(port @ 1..=65535) => Ok(port as u16),
        Ok(_) => Err("a port must be between 1 and 65535".into()),
        Err(_) => Err("a port must be a number between 1 and 65535".into()),
    }
}

/// `--generate WHAT`: the man page or a completion script, from the same clap definition as
/// the parser (`cargo xtask dist` puts them in the release tarball).
pub fn generate(what: &str) -> ExitCode {
    use clap::CommandFactory as _;
    let mut command = Cli::command();
    // Rendered into memory, then written like the events (a closed pipe ends it quietly):
    // clap_complete panics on a failed write to the writer it is given.
    let mut out = BatchedStdout::default();
    match what {
        // Writing into a Vec cannot fail.
        "man" => {
            let _ = clap_mangen::Man::new(command).render(out.buf());
        }
        shell => {
            let shell: clap_complete::Shell = match shell.parse() {
                Ok(shell) => shell,
                Err(e) => {
                    eprintln!("probe-user: error: {e}");
                    return ExitCode::from(2);
                }
            };
            clap_complete::generate(shell, &mut command, "probe-user", out.buf());
        }
    }
    match out.flush() {
        Ok(()) | Err(WriteError::Closed) => ExitCode::SUCCESS,
        Err(WriteError::Failed(e)) => {
            eprintln!("probe-user: error: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;
    use proptest::prelude::*;

    use super::*;

    fn parse(args: &[String]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("probe-user".to_string()).chain(args.iter().cloned()))
    }

    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_backend_lists_auto_and_every_backend() {
        assert_eq!(
            parse_attach("uprobe").unwrap_err().to_string(),
            "unknown backend 'uprobe' (expected one of: auto, kprobe, fentry, tracepoint)"
        );
        for &backend in Backend::ALL {
            assert_eq!(parse_attach(backend.name()), Ok(Attach::Only(backend)));
        }
        assert_eq!(parse_attach("auto"), Ok(Attach::Auto));
    }

    proptest! {
        /// Whatever the arguments, parsing returns (a value or an error), never panics.
        #[test]
        fn any_arguments_parse_or_fail_cleanly(args in proptest::collection::vec(
            prop_oneof![
                Just("--format".to_string()), Just("--filter-port".to_string()),
                Just("--pid".to_string()), Just("-4".to_string()), Just("-6".to_string()),
                Just("--successes-only".to_string()), Just("--stats".to_string()),
                Just("--attach".to_string()),
                "[a-z0-9,=-]{0,12}", any::<String>(),
            ],
            0..8,
        )) {
            let _ = parse(&args);
        }

        /// Port lists, comma-separated or repeated, are accepted exactly when every port is in
        /// 1..=65535, and then come out as given.
        #[test]
        fn port_lists_round_trip(ports in proptest::collection::vec(0u32..70_000, 1..6), repeat in any::<bool>()) {
            let args: Vec<String> = if repeat {
                ports.iter().flat_map(|p| ["--filter-port".to_string(), p.to_string()]).collect()
            } else {
                let list: Vec<String> = ports.iter().map(u32::to_string).collect();
                vec!["--filter-port".to_string(), list.join(",")]
            };
            let valid = ports.iter().all(|p| (1..=65535).contains(p));
            match parse(&args) {
                Ok(cli) => {
                    prop_assert!(valid);
                    let expected: Vec<u16> = ports.iter().map(|&p| p as u16).collect();
                    prop_assert_eq!(cli.filter_port, expected);
                }
                Err(e) => {
                    prop_assert!(!valid, "{}", e);
                    prop_assert!(e.to_string().contains("a port must be"), "{}", e);
                }
            }
        }

        #[test]
        fn pid_lists_round_trip(pids in proptest::collection::vec(any::<u32>(), 1..6)) {
            let list: Vec<String> = pids.iter().map(u32::to_string).collect();
            let cli = parse(&["--pid".to_string(), list.join(",")]).unwrap();
            prop_assert_eq!(cli.pid, pids);
        }

        #[test]
        fn attach_names_parse(name in "[a-z]{0,10}") {
            let parsed = parse(&["--attach".to_string(), name.clone()]);
            let known = name == "auto" || Backend::from_name(&name).is_some();
            prop_assert_eq!(parsed.is_ok(), known);
        }

        #[test]
        fn format_names_parse(name in "[a-z]{0,8}") {
            let parsed = parse(&["--format".to_string(), name.clone()]);
            prop_assert_eq!(parsed.is_ok(), Format::from_name(&name).is_some());
        }
    }
}
