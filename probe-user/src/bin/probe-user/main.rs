//! `probe-user`: the command-line tracer, a thin layer over the `probe_user` library: arguments
//! (clap) onto a [`probe_user::TracerBuilder`], events or counts onto stdout ([`output`]) or a
//! Prometheus endpoint ([`metrics`]), errors as one line.

mod metrics;
mod output;

use std::{process::ExitCode, time::Duration};

use anyhow::{Result, anyhow};
use clap::{Parser, builder::PossibleValuesParser, builder::TypedValueParser as _};
use output::{BatchedStdout, WriteError};
use probe_common::limit::{MAX_CONNECTING, MAX_PENDING};
use probe_user::{
    Backend, Conflict, CountBy, EventStream, Family, Format, Formatter, OutcomeFilter, Report,
    Tracer, WallClock,
    names::{self, Named},
};
use tokio::signal::unix::{SignalKind, signal};

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
#[command(group(clap::ArgGroup::new("counting").args(["count", "metrics"]).multiple(true)))]
struct Cli {
    /// Output style: minimal (timestamp only), stap (with source and destination), json.
    #[arg(long, default_value_t = Format::Stap, value_parser = parse_format)]
    format: Format,
    /// Only trace connects to these destination ports (filtered in the kernel). Repeatable or
    /// comma-separated.
    #[arg(long = "filter-port", value_name = "PORT", value_delimiter = ',', value_parser = parse_port)]
    filter_port: Vec<u16>,
    /// Only trace connects made by these processes (filtered in the kernel). Repeatable or
    /// comma-separated.
    #[arg(long, value_name = "PID", value_delimiter = ',')]
    pid: Vec<u32>,
    /// Only trace connects made by tasks of these user ids (filtered in the kernel).
    /// Repeatable or comma-separated.
    #[arg(long, value_name = "UID", value_delimiter = ',')]
    uid: Vec<u32>,
    /// Only trace connects made by tasks in this cgroup v2 directory or below it, e.g.
    /// /sys/fs/cgroup/system.slice (filtered in the kernel, cgroups created later included).
    /// Repeatable (up to 64).
    #[arg(long, value_name = "PATH")]
    cgroup: Vec<std::path::PathBuf>,
    /// Only trace connects made by tasks of this container: 12 to 64 hex digits of its id, as
    /// docker ps, crictl ps or podman ps show it (filtered in the kernel by the name of the
    /// task's cgroup; containers started later included). Repeatable or comma-separated (up
    /// to 8).
    #[arg(long, value_name = "ID", value_delimiter = ',')]
    container: Vec<String>,
    /// Only trace connects of sockets in this network namespace: its inode number, as
    /// `readlink /proc/PID/ns/net` or `lsns -t net` show it (filtered in the kernel).
    /// Repeatable or comma-separated.
    #[arg(long, value_name = "INODE", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    netns: Vec<u32>,
    /// Only trace connects made by tasks with this name (comm, at most 15 bytes; filtered in the
    /// kernel). Repeatable.
    #[arg(long, value_name = "NAME")]
    comm: Vec<String>,
    /// Only trace connects to destinations in this network (CIDR, IPv4 or IPv6, or a single
    /// address; filtered in the kernel). Repeatable or comma-separated.
    #[arg(long, value_name = "CIDR", value_delimiter = ',', value_parser = parse_network)]
    dst: Vec<ipnet::IpNet>,
    /// Only trace IPv4 connects (tcp_v4_connect; IPv4-mapped IPv6 destinations included).
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    ipv4: bool,
    /// Only trace IPv6 connects (tcp_v6_connect; IPv4-mapped IPv6 destinations excluded, as they
    /// are IPv4 connects).
    #[arg(short = '6', long = "ipv6")]
    ipv6: bool,
    /// Report only connects that get as far as sending a SYN, from a single hook on
    /// tcp_connect instead of an entry and a return probe: cheaper, but failed calls are not
    /// reported (ret is always 0).
    #[arg(long)]
    successes_only: bool,
    /// Report each connect once its outcome is known (established, refused, timeout,
    /// unreachable, reset, aborted, error; pending if still connecting at exit) with its
    /// latency from the call to the outcome: stap lines gain ` outcome=... latency=...ms`,
    /// JSON lines `outcome`, `latency_ns` and `errno`, counts and metrics an outcome and a
    /// latency histogram.
    #[arg(long)]
    outcome: bool,
    /// Only report connects that did not come up (every outcome but established; filtered in
    /// the kernel). Implies --outcome.
    #[arg(long)]
    failed_only: bool,
    /// Only report connects whose latency is at least this (e.g. 100ms; up to 24h; filtered
    /// in the kernel). Implies --outcome.
    #[arg(long, value_name = "DURATION", value_parser = parse_min_latency)]
    min_latency: Option<Duration>,
    /// Count connects in the kernel instead of printing each one, and print a table of counts
    /// (most connects first) every --interval and at exit.
    #[arg(long)]
    count: bool,
    /// With --count: how often to print the table (e.g. 5s, 1m, 500ms; 10ms to 24h).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_interval, requires = "count")]
    interval: Duration,
    /// With --count or --metrics: count by destination address and port (the default for
    /// --count tables), or by destination port only (the default for --metrics, whose connects
    /// carry a daddr label only when this says destination); with --count also by the
    /// caller's cgroup or container.
    #[arg(long, value_name = "KEY", value_parser = parse_count_by(), requires = "counting")]
    count_by: Option<CountBy>,
    /// With --metrics: label every connect series with the caller's cgroup (path) or container
    /// (id), counted in the kernel per cgroup.
    #[arg(long, value_name = "LABEL", value_enum, requires = "metrics")]
    metrics_label: Option<metrics::WorkloadLabel>,
    /// Serve Prometheus/OpenMetrics counters at http://ADDR/metrics (ADDR is PORT for
    /// 127.0.0.1:PORT, or IP:PORT): connects by family and destination port, counted in the
    /// kernel, and the dropped/missed/malformed counts. Nothing is printed per connect.
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    metrics: Option<std::net::SocketAddr>,
    /// How to hook the connect path: auto (fentry where the kernel can attach it, else kprobe,
    /// else tracepoint), fentry (fexit on the connect functions), kprobe (kprobe and kretprobe,
    /// as SystemTap) or tracepoint (sock:inet_sock_set_state; reports only calls that send a
    /// SYN).
    #[arg(long, value_name = "BACKEND", default_value = "auto", value_parser = parse_attach)]
    attach: Attach,
    /// At exit, also print the connects still in flight in the kernel's maps and each eBPF
    /// program's run count and average run time (kernel BPF statistics, enabled only while
    /// probe-user runs).
    #[arg(long)]
    stats: bool,
    /// Read struct offsets from this BTF file instead of the kernel's own
    /// (/sys/kernel/btf/vmlinux), for kernels built without CONFIG_DEBUG_INFO_BTF: a raw BTF
    /// file for exactly the running kernel, e.g. extracted from btfhub's archive. fentry
    /// needs the kernel's own BTF, so without it auto uses kprobe or the tracepoint.
    #[arg(long, value_name = "FILE")]
    btf: Option<std::path::PathBuf>,
    /// Print the man page (man) or a shell completion script (bash, zsh, fish, elvish) made
    /// from these options to stdout, and exit.
    #[arg(long, value_name = "WHAT", hide = true, value_parser = ["man", "bash", "zsh", "fish", "elvish"])]
    generate: Option<String>,
    /// For `cargo xtask bench overhead`: receive and decode every event (decoded), or also
    /// format it (formatted), but write nothing, so that the reader's cost splits into its
    /// parts (docs/benchmarks.md).
    #[arg(long, value_name = "STAGE", hide = true, value_parser = ["decoded", "formatted"])]
    discard: Option<String>,
}

impl Cli {
    /// What to report, from the options that say it, or why they cannot work together (the
    /// library checks them: [`Report::from_switches`]; here each conflict in the options'
    /// words).
    fn report(&self) -> Result<Report, String> {
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

    /// Options clap accepts one by one that cannot work together, beyond what to report.
    fn contradiction(&self) -> Option<&'static str> {
        if self.metrics.is_some()
            && matches!(self.count_by, Some(CountBy::Cgroup | CountBy::Container))
        {
            return Some(
                "--metrics counts by destination or port: label its series by cgroup or container with --metrics-label",
            );
        }
        None
    }

    /// Whether connects are counted (`--count` tables or `--metrics`).
    fn counting(&self) -> bool {
        self.count || self.metrics.is_some()
    }

    /// What connects are counted by: `--count` tables default to destinations, `--metrics` to
    /// ports (a label per address only when asked for).
    fn count_by(&self) -> CountBy {
        self.count_by.unwrap_or(if self.count {
            CountBy::Destination
        } else {
            CountBy::Port
        })
    }

    /// Whether connects are reported with their outcome (asked for, or implied by a filter on
    /// it).
    fn outcomes(&self) -> bool {
        self.outcome || self.failed_only || self.min_latency.is_some()
    }
}

/// SIGINT, SIGTERM and SIGHUP, each of which ends tracing cleanly.
struct Signals([tokio::signal::unix::Signal; 3]);

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self([
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ]))
    }

    /// Waits for any of them.
    async fn recv(&mut self) {
        let [int, term, hup] = &mut self.0;
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    }
}

/// Repeats `step` on `state` until a signal arrives, then runs `last` to collect what is left;
/// writes what each printed into `out`'s buffer right after it. Returns `Ok(false)` (at once)
/// if stdout's reader went away (`| head -1`): nobody is listening, so the caller ends quietly;
/// any other write error (a full disk, EIO) is an error.
async fn until_signal<S>(
    state: &mut S,
    signals: &mut Signals,
    out: &mut BatchedStdout,
    mut step: impl AsyncFnMut(&mut S, &mut Vec<u8>),
    last: impl FnOnce(&mut S, &mut Vec<u8>),
) -> Result<bool> {
    let written = |out: &mut BatchedStdout| match out.flush() {
        Ok(()) => Ok(true),
        Err(WriteError::Closed) => Ok(false),
        Err(WriteError::Failed(e)) => Err(anyhow!("cannot write to stdout: {e}")),
    };
    loop {
        tokio::select! {
            _ = step(state, out.buf()) => {}
            _ = signals.recv() => break,
        }
        if !written(out)? {
            return Ok(false);
        }
    }
    last(state, out.buf());
    written(out)
}

/// What to do with the kernel's counts.
struct Counting {
    tracer: Tracer,
    formatter: Formatter,
    /// `--count`: print a table this often and at the end.
    tables: Option<Duration>,
    /// `--metrics`: scrapes to answer.
    scrapes: Option<tokio::sync::mpsc::Receiver<metrics::Scrape>>,
    /// `--count-by destination` given explicitly: metrics carry a daddr label.
    daddr_labels: bool,
    /// `--metrics-label`.
    workload_label: Option<metrics::WorkloadLabel>,
}

impl Counting {
    /// Keeps the bookkeeping going (no events come through the ring buffer, but calls whose
    /// return was missed are reaped) and appends the count table, if tables are printed.
    fn update(&mut self, out: &mut Vec<u8>) {
        self.tracer.drain(|_| {});
        if self.tables.is_some() {
            let unix_s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.formatter
                .write_counts(out, unix_s, &self.tracer.connect_counts());
        }
    }

    /// Answers one scrape with the counts as they are now.
    fn answer(&self, reply: metrics::Scrape) {
        let text = metrics::render(
            &self.tracer.connect_counts(),
            self.tracer.counters(),
            self.daddr_labels,
            self.workload_label,
        );
        let _ = reply.send(text);
    }
}

/// `--count` / `--metrics`: prints the kernel's count table every interval and at the end,
/// and answers scrapes, until a signal.
async fn count_until_signal(
    mut counting: Counting,
    mut out: BatchedStdout,
    mut signals: Signals,
) -> Result<()> {
    // Without --count, the tick only keeps the bookkeeping going.
    let period = counting.tables.unwrap_or(Duration::from_secs(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let step = async |counting: &mut Counting, out: &mut Vec<u8>| {
        let scrape = async {
            match &mut counting.scrapes {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => counting.update(out),
            Some(reply) = scrape => counting.answer(reply),
        }
    };
    // At the end: detach first, so that the last table and the counters below account for
    // every connect a program saw.
    let last = |counting: &mut Counting, out: &mut Vec<u8>| {
        counting.tracer.detach();
        counting.update(out);
    };
    if !until_signal(&mut counting, &mut signals, &mut out, step, last).await? {
        return Ok(());
    }
    let tracer = &mut counting.tracer;
    tracer.reap_pending(Duration::ZERO);
    let counted: u64 = tracer.connect_counts().iter().map(|c| c.connects).sum();
    let counters = tracer.counters();
    eprintln!(
        "probe-user: {counted} connects counted, {} dropped, {} missed, {} malformed",
        counters.dropped, counters.missed, counters.malformed
    );
    Ok(())
}

/// `--stats`: how long attaching took and the memory probe-user used (peak and now), for the
/// benchmark's start-up and memory table.
fn print_resources(startup: probe_user::Startup) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "probe-user: attached in {:.1} ms (BTF offsets {:.1} ms, load and verify {:.1} ms, attach {:.1} ms)",
        ms(startup.total()),
        ms(startup.btf),
        ms(startup.load),
        ms(startup.attach)
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    eprintln!(
        "probe-user: memory: peak RSS {} KiB, RSS at exit {} KiB",
        kib("VmHWM:"),
        kib("VmRSS:")
    );
}

/// `--count-by`: a name of [`CountBy`]'s table, listed in the error.
fn parse_count_by() -> impl clap::builder::TypedValueParser<Value = CountBy> {
    let names: Vec<&'static str> = CountBy::ALL.iter().map(|by| by.name()).collect();
    PossibleValuesParser::new(names)
        .map(|name| CountBy::from_name(&name).expect("the parser admits only CountBy's names"))
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
fn one_line(rendered: &str) -> String {
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
enum Attach {
    Auto,
    Only(Backend),
}

fn parse_attach(s: &str) -> Result<Attach, names::UnknownName> {
    match s {
        "auto" => Ok(Attach::Auto),
        _ => names::parse("backend", s, &["auto"]).map(Attach::Only),
    }
}

/// `--dst`: a network (`10.0.0.0/8`, `fd00::/8`) or a single address.
fn parse_network(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("not an address or network in CIDR notation: {s:?}"))
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u32>() {
        Ok(port @ 1..=65535) => Ok(port as u16),
        Ok(_) => Err("a port must be between 1 and 65535".into()),
        Err(_) => Err("a port must be a number between 1 and 65535".into()),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // One line, not clap's usage block: the first line names the problem (completed by
            // the next when that lists the missing arguments or the possible values).
            eprintln!("probe-user: error: {}", one_line(&e.to_string()));
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    if let Some(what) = &cli.generate {
        return generate(what);
    }
    let report = match cli.report() {
        Ok(report) => report,
        Err(conflict) => {
            eprintln!("probe-user: error: {conflict}");
            return ExitCode::from(2);
        }
    };
    if let Some(contradiction) = cli.contradiction() {
        eprintln!("probe-user: error: {contradiction}");
        return ExitCode::from(2);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("probe-user: error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, report)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("probe-user: error: {e:#}");
            // A filter value or option the library refused (before touching the kernel) is a
            // usage error, like those clap finds; anything else happened at run time.
            match e.downcast_ref::<probe_user::Error>() {
                Some(probe_user::Error::Filter(_) | probe_user::Error::Options(_)) => {
                    ExitCode::from(2)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// `--generate WHAT`: the man page or a completion script, from the same clap definition as
/// the parser (`cargo xtask dist` puts them in the release tarball).
fn generate(what: &str) -> ExitCode {
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

async fn run(cli: Cli, report: Report) -> Result<()> {
    let counting = cli.counting();
    let count_by = cli.count_by();
    // JSON lines carry every field, the workload's too; neither counts nor SystemTap's
    // formats show the caller's uid or name.
    let every_field = !counting && cli.format == Format::Json;
    let mut builder = Tracer::builder()
        .filter_ports(cli.filter_port)
        .filter_pids(cli.pid)
        .filter_uids(cli.uid)
        .filter_cgroups(cli.cgroup)
        .filter_containers(cli.container)
        .filter_netns(cli.netns)
        .filter_comms(cli.comm)
        .filter_destinations(cli.dst)
        .report(report)
        .identity(every_field)
        .caller_names(every_field)
        .program_stats(cli.stats);
    if let Some(btf) = cli.btf {
        builder = builder.btf_path(btf);
    }
    if let Attach::Only(backend) = cli.attach {
        builder = builder.backend(backend);
    }
    if cli.ipv4 {
        builder = builder.family(Family::V4);
    } else if cli.ipv6 {
        builder = builder.family(Family::V6);
    }
    // Signals first: a SIGINT that arrives while attaching still ends the run cleanly.
    let mut signals = Signals::new()?;
    let tracer = builder.attach()?;
    for skipped in tracer.fallbacks() {
        eprintln!(
            "probe-user: not attaching with {}: {skipped}",
            skipped.backend
        );
    }
    let backend = tracer.backend();
    let mut formatter = Formatter::new(cli.format, WallClock::measure());
    if counting {
        formatter = formatter.count_by(count_by);
    }
    let mut out = BatchedStdout::default();
    if counting {
        let scrapes = match cli.metrics {
            Some(addr) => {
                let (bound, scrapes) = metrics::serve(addr).await?;
                // With port 0 the kernel picks one: say which.
                eprintln!("probe-user: serving metrics on http://{bound}/metrics");
                Some(scrapes)
            }
            None => None,
        };
        eprintln!("Counting TCP connects by {count_by} ({backend}). Hit Ctrl-C to end.");
        let counting = Counting {
            tracer,
            formatter,
            tables: cli.count.then_some(cli.interval),
            scrapes,
            daddr_labels: cli.count_by == Some(CountBy::Destination),
            workload_label: cli.metrics_label,
        };
        return count_until_signal(counting, out, signals).await;
    }
    let events = tracer.into_stream()?;
    eprintln!(
        "Tracing TCP connects ({} format, {backend}). Hit Ctrl-C to end.",
        cli.format
    );

    let discard = cli.discard.clone();
    let mut printing = (events, formatter);
    let step = async |(events, formatter): &mut (EventStream, Formatter), out: &mut Vec<u8>| {
        // Lines follow the wall clock (NTP steps, `date -s`): it is read again as each batch
        // arrives, before its first line is written.
        let mut first = true;
        let write = |event: &probe_user::ConnectEvent| {
            match discard.as_deref() {
                Some("decoded") => return,
                Some(_) => {
                    formatter.write(out, event);
                    out.clear();
                    return;
                }
                None => {}
            }
            if std::mem::take(&mut first) {
                formatter.follow_clock();
            }
            formatter.write(out, event);
        };
        events.next_batch(write).await;
    };
    // At the end: detach first, so that the last drain sees every event a program emitted and
    // the counters below account for every connect a program saw.
    let last = |(events, formatter): &mut (EventStream, Formatter), out: &mut Vec<u8>| {
        let tracer = events.tracer_mut();
        tracer.detach();
        formatter.follow_clock();
        tracer.drain(|event| formatter.write(out, event));
        if discard.is_some() {
            out.clear();
        }
    };
    if !until_signal(&mut printing, &mut signals, &mut out, step, last).await? {
        return Ok(());
    }
    let tracer = printing.0.tracer_mut();
    if cli.stats {
        print_resources(tracer.startup());
        eprintln!(
            "probe-user: {} connect calls in flight (maps PENDING and CONNECTING, at most {MAX_PENDING} and {MAX_CONNECTING} entries, and with BPF atomics {MAX_CONNECTING} slots of CONNECTING_SLOTS)",
            tracer.pending_calls()
        );
        for p in tracer.program_stats() {
            let per_run = p.run_time_ns.checked_div(p.runs).unwrap_or(0);
            eprintln!(
                "probe-user: program {} ran {} times, {per_run} ns per run",
                p.name, p.runs
            );
            if p.recursion_misses > 0 {
                eprintln!(
                    "probe-user: program {} was skipped {} times (already running on its CPU)",
                    p.name, p.recursion_misses
                );
            }
        }
    }
    // Calls still in flight now will not be reported: count them with the missed ones.
    tracer.reap_pending(Duration::ZERO);
    let counters = tracer.counters();
    eprintln!(
        "probe-user: {} events printed, {} dropped, {} missed, {} malformed",
        counters.events, counters.dropped, counters.missed, counters.malformed
    );
    Ok(())
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
