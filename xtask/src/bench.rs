//! `cargo xtask bench overhead`: guest instructions per connect with and without each tracer,
//! in one deterministic boot (`-icount shift=0,sleep=off -smp 1`). `cargo xtask bench latency`:
//! connect() p50/p99 with and without each tracer at a paced 1000 connects/s, in real time
//! (no icount: noisy). The tracers are probe-user's configurations and, with `--stap`,
//! SystemTap's three examples (see [`crate::stap`]).

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::{Context as _, Result, bail};

use crate::{
    artifacts::{self, Arch},
    chart, stap, vm,
};

#[derive(clap::Args)]
pub struct Options {
    /// `overhead` (guest instructions per connect, deterministic), `latency` (connect()
    /// p50/p99 at a paced 1000 connects/s, real time under TCG: noisy) or `throughput`
    /// (connects/s reported and dropped with 1, 2 and 8 threads; real time) or `resources`
    /// (start-up time and memory on every kernel of the matrix, every backend).
    #[arg(default_value = "overhead")]
    which: String,
    /// Connect cycles per run.
    #[arg(long, default_value_t = 2000)]
    cycles: u32,
    /// Runs of each configuration, interleaved.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Write the results to docs/benchmarks.md (otherwise only print them).
    #[arg(long)]
    write: bool,
    /// Also run SystemTap's three examples (installs systemtap and the kernel's 858 MB debug
    /// package if missing, compiles the modules once).
    #[arg(long)]
    stap: bool,
    /// Render the report from a saved console log (target/xtask/bench/console.log) instead of
    /// booting the VM.
    #[arg(long, value_name = "FILE")]
    from_log: Option<String>,
    /// Only the configurations whose name contains this, or (with commas) exactly these names;
    /// and the baseline.
    #[arg(long)]
    only: Option<String>,
    /// The VM's architecture for `overhead` and `latency`: x86_64 (Debian's 6.1 kernel) or
    /// aarch64 (Debian's arm64 6.12, the first of the matrix whose arm64 build attaches fentry,
    /// the default backend).
    #[arg(long, value_enum, default_value = "x86_64")]
    arch: Arch,
}

impl Options {
    /// The kernel booted, as the report names it.
    fn kernel(&self) -> &'static str {
        match self.arch {
            Arch::X86_64 => "6.1",
            Arch::Aarch64 => "6.12",
        }
    }

    /// The section of docs/benchmarks.md the overhead report goes to.
    fn overhead_section(&self) -> &'static str {
        match self.arch {
            Arch::X86_64 => "overhead",
            Arch::Aarch64 => "overhead-aarch64",
        }
    }
}

impl Options {
    /// The configurations this run measures.
    fn configs(&self) -> impl Iterator<Item = &'static Config> + '_ {
        CONFIGS
            .iter()
            .filter(|c| !c.is_stap() || self.stap)
            .filter(|c| {
                c.name == c.workload.baseline()
                    || self
                        .only
                        .as_deref()
                        .is_none_or(|only| match only.contains(',') {
                            true => only.split(',').any(|name| name == c.name),
                            false => c.name.contains(only),
                        })
            })
    }
}

/// One benchmark configuration: a name, the SystemTap example it reproduces, the tracer (none
/// for the baseline), the port the workload connects to and whether anything listens there.
struct Config {
    name: &'static str,
    example: &'static str,
    tracer: Option<Tracer>,
    port: u16,
    workload: Workload,
}

/// What each connect of `connect-bench` meets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// Its own listener: connect, accept, close with RST.
    Accepted,
    /// No listener (`--refused`): each connect is refused by an RST. Measured against its own
    /// baseline; only in the table of `--outcome`'s cost.
    Refused,
}

impl Workload {
    /// `connect-bench`'s flag for it.
    fn flag(self) -> &'static str {
        match self {
            Workload::Accepted => "--accepted",
            Workload::Refused => "--refused",
        }
    }

    /// The configuration without a tracer it is measured against.
    fn baseline(self) -> &'static str {
        match self {
            Workload::Accepted => "baseline",
            Workload::Refused => "baseline-refused",
        }
    }
}

#[derive(Clone, Copy)]
enum Tracer {
    /// A probe-user command line.
    ProbeUser(&'static str),
    /// SystemTap's example `n`, run by staprun.
    Stap(u32),
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

impl Config {
    /// A SystemTap module (only with `--stap`): ready once its kprobe is registered, as it
    /// prints no banner.
    fn is_stap(&self) -> bool {
        matches!(self.tracer, Some(Tracer::Stap(_)))
    }

    /// The configuration without the trailing option `option` that this one adds to.
    fn without(&self, option: &str) -> Option<&'static Config> {
        let command = self.command();
        let without = command.strip_suffix(option)?;
        CONFIGS
            .iter()
            .find(|c| c.command() == without && c.port == self.port && c.workload == self.workload)
    }

    /// The tracer's command line in the guest (empty for the baseline).
    fn command(&self) -> String {
        match self.tracer {
            None => String::new(),
            Some(Tracer::ProbeUser(command)) => command.to_string(),
            Some(Tracer::Stap(n)) => stap::staprun_command(n),
        }
    }
}

use Tracer::{ProbeUser, Stap};

#[rustfmt::skip]
const CONFIGS: &[Config] = &[
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

/// SystemTap 4.8's overhead on the same workload and VM (../shared/REFERENCE.md: its scripts,
/// measured the same way; not re-run by this benchmark) and the project's target for each
/// example: at most 0.2x stap's. Thousands of guest instructions per connect.
const EXAMPLES: &[(&str, f64, f64)] = &[
    ("example 1", 7.9, 1.6),
    ("example 2", 12.9, 2.6),
    ("example 3, printed", 12.9, 2.6),
    ("example 3, filtered out", 2.5, 0.5),
];

/// The default configuration's targets (#14), thousands of guest instructions per connect.
const DEFAULT_TARGETS: [(&str, f64); 4] = [
    ("minimal", 0.8),
    ("default", 1.9),
    ("filter-hit", 1.9),
    ("filter-miss", 0.4),
];

/// What one run measured.
struct Run {
    ns_per_cycle: f64,
    lines: u64,
    cycles: u64,
    /// connect() latency percentiles (latency benchmark only).
    p50_ns: Option<u64>,
    p99_ns: Option<u64>,
}

pub fn run(options: Options) -> Result<()> {
    let latency = match options.which.as_str() {
        "overhead" => false,
        "latency" => true,
        "throughput" => return crate::throughput::run(options.write),
        "resources" => return crate::resources::run(options.write),
        other => bail!(
            "unknown benchmark '{other}' (expected: overhead, latency, throughput, resources)"
        ),
    };
    if options.stap && options.arch != Arch::X86_64 {
        bail!(
            "--stap runs only on x86_64: SystemTap's modules are built on this host for the \
             x86_64 VM kernel, and nothing here cross-builds them for arm64's"
        );
    }
    let mut runs: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
    let mut stderr_notes: BTreeMap<&str, String> = BTreeMap::new();
    let mut program_stats: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    // Per configuration, from its `--stats` run: start-up time and memory.
    let mut resources: BTreeMap<&str, (String, String)> = BTreeMap::new();
    let mut console = Vec::new();
    let mut on_line = |line: &str| {
        println!("{line}");
        if let Some((name, run)) = parse_result(line) {
            runs.entry(name).or_default().push(run);
        } else if let Some(rest) = line.strip_prefix("stderr ")
            && let Some((name, text)) = rest.split_once(": ")
        {
            if let Some(config) = CONFIGS.iter().find(|c| c.name == name) {
                stderr_notes.insert(config.name, text.to_string());
            } else if let Some(config) = CONFIGS
                .iter()
                .find(|c| name.strip_prefix("stats-") == Some(c.name))
            {
                if let Some(stat) = text.strip_prefix("probe-user: program ") {
                    program_stats
                        .entry(config.name)
                        .or_default()
                        .push(stat.to_string());
                } else if let Some(took) = text.strip_prefix("probe-user: attached in ") {
                    resources.entry(config.name).or_default().0 = took.to_string();
                } else if let Some(memory) = text.strip_prefix("probe-user: memory: ") {
                    resources.entry(config.name).or_default().1 = memory.to_string();
                }
            }
        }
        console.push(line.to_string());
    };
    match &options.from_log {
        Some(log) => {
            let text =
                std::fs::read_to_string(log).with_context(|| format!("cannot read {log}"))?;
            text.lines().for_each(&mut on_line);
        }
        None => {
            let probe_user = artifacts::probe_user(options.arch)?;
            let helpers = artifacts::test_helpers(options.arch)?;
            let mut guest = vm::Guest::new(guest_script(&options, latency))
                .binary("probe-user", &probe_user)
                .binaries(&helpers);
            if options.stap {
                for (guest_path, host) in stap::prepare(&vm::kernel_image()?)? {
                    guest = guest.file(&guest_path, &host);
                }
            }
            // With stap, the host's installed kernel, which stap's modules are built for.
            let kernel = if options.stap {
                vm::kernel_image()?
            } else {
                crate::kernels::image(options.kernel(), options.arch)?
            };
            let boot = vm::Boot {
                icount: !latency,
                kernel: Some(kernel),
                arch: options.arch,
                ..Default::default()
            };
            let dir = artifacts::work_dir("bench");
            let code = boot.run(&guest, &dir, &mut on_line)?;
            // Kept so the report can be re-rendered with --from-log.
            std::fs::write(dir.join("console.log"), console.join("\n"))?;
            if code != 0 {
                bail!("the benchmark failed in the VM (exit code {code})");
            }
        }
    }
    if latency {
        let report = latency_report(&options, &runs)?;
        println!("{report}");
        if options.write {
            let path = artifacts::workspace_root().join("docs/benchmarks.md");
            write_section(&path, "latency", &report)?;
            eprintln!("xtask: wrote {}", path.display());
        }
        return Ok(());
    }
    let report = report(&options, &runs, &stderr_notes, &program_stats, &resources)?;
    println!("{report}");
    if options.write {
        let path = artifacts::workspace_root().join("docs/benchmarks.md");
        write_section(&path, options.overhead_section(), &report)?;
        eprintln!("xtask: wrote {}", path.display());
        if options.arch == Arch::X86_64 {
            let svg = artifacts::workspace_root().join("docs/benchmarks-overhead.svg");
            chart::horizontal_bars(
                &svg,
                "Overhead per connect: probe-user vs SystemTap",
                &chart_bars(&runs),
            )?;
            eprintln!("xtask: wrote {}", svg.display());
        }
    }
    Ok(())
}

fn guest_script(options: &Options, latency: bool) -> String {
    // Tracers are stopped with SIGTERM: a non-interactive shell starts background jobs with
    // SIGINT ignored, and stapio keeps it ignored. After a tracer exits, the kernel finishes
    // tearing its programs down in deferred work (RCU callbacks, trampoline freeing) that would
    // land in the next run, ~4k instructions per connect in a baseline: the 2 s sleep lets it
    // settle (under `sleep=off` idle time costs no wall time).
    let mut s = String::from(
        "bench() { name=$1; port=$2; workload=$3; ready=$4; shift 4\n\
         if [ $# -eq 0 ]; then\n\
           r=$(/bin/connect-bench --cycles $CYCLES --port $port $workload $PACE) || return 1\n\
           echo \"result $name $r lines=0\"; return 0\n\
         fi\n\
         rm -f /tmp/err; \"$@\" > /tmp/out 2> /tmp/err & t=$!\n\
         until if [ $ready = banner ]; then grep -q Tracing /tmp/err 2>/dev/null;\n\
               else grep -q tcp_v4_connect /sys/kernel/debug/kprobes/list; fi; do\n\
           kill -0 $t 2>/dev/null || { cat /tmp/err; return 1; }; sleep 0.05; done\n\
         [ $ready = banner ] || sleep 1\n\
         r=$(/bin/connect-bench --cycles $CYCLES --port $port $workload $PACE) || return 1\n\
         kill -TERM $t; wait $t\n\
         echo \"result $name $r lines=$(wc -l < /tmp/out)\"\n\
         sleep 2\n\
         tail -n +2 /tmp/err | sed \"s/^/stderr $name: /\"\n\
         }\n",
    );
    let _ = writeln!(s, "CYCLES={}", options.cycles);
    let _ = writeln!(s, "PACE={}", if latency { "'--pace 1000'" } else { "" });
    // Warm-up: first-touch costs (page cache, slab) land here, not in the first measured run.
    s.push_str("/bin/connect-bench --cycles 200 --port 8080 > /dev/null\n");
    for _ in 0..options.rounds {
        for c in options.configs() {
            let ready = if c.is_stap() { "kprobe" } else { "banner" };
            let _ = writeln!(
                s,
                "bench {} {} {} {ready} {} || exit 1",
                c.name,
                c.port,
                c.workload.flag(),
                c.command()
            );
        }
    }
    // Kernel BPF statistics cost a clock read per program run: a separate, unmeasured pass.
    for c in options.configs().filter(|c| !latency && !c.is_stap()) {
        if c.tracer.is_some() {
            let _ = writeln!(
                s,
                "bench stats-{} {} {} banner {} --stats || exit 1",
                c.name,
                c.port,
                c.workload.flag(),
                c.command()
            );
        }
    }
    s
}

/// Parses `result <name> cycles=N ns=T [p50=X p99=Y] lines=L`.
fn parse_result(line: &str) -> Option<(&'static str, Run)> {
    let mut words = line.strip_prefix("result ")?.split(' ');
    let name = words.next()?;
    let config = CONFIGS.iter().find(|c| c.name == name)?;
    let fields: BTreeMap<&str, u64> = words
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect();
    let cycles = *fields.get("cycles")?;
    Some((
        config.name,
        Run {
            ns_per_cycle: *fields.get("ns")? as f64 / cycles as f64,
            lines: *fields.get("lines")?,
            cycles,
            p50_ns: fields.get("p50").copied(),
            p99_ns: fields.get("p99").copied(),
        },
    ))
}

/// The configurations of this run that end in `option` and the one without it, each with the
/// median guest instructions per connect without it and with it.
fn added_by<'a>(
    options: &'a Options,
    runs: &'a BTreeMap<&str, Vec<Run>>,
    option: &'a str,
) -> impl Iterator<Item = (&'static Config, f64, f64)> + 'a {
    options.configs().filter_map(move |c| {
        let without = c.without(option)?;
        Some((
            c,
            median_per_cycle(runs, without.name)?,
            median_per_cycle(runs, c.name)?,
        ))
    })
}

/// Median guest ns per connect cycle over the runs of configuration `name`, if it ran.
fn median_per_cycle(runs: &BTreeMap<&str, Vec<Run>>, name: &str) -> Option<f64> {
    runs.get(name)
        .map(|r| median(r.iter().map(|r| r.ns_per_cycle).collect()))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn report(
    options: &Options,
    runs: &BTreeMap<&str, Vec<Run>>,
    notes: &BTreeMap<&str, String>,
    program_stats: &BTreeMap<&str, Vec<String>>,
    resources: &BTreeMap<&str, (String, String)>,
) -> Result<String> {
    let per_cycle = |name: &str| -> Result<f64> {
        median_per_cycle(runs, name).with_context(|| format!("no results for {name}"))
    };
    let baseline = per_cycle("baseline")?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "`cargo xtask bench overhead --arch {} --cycles {} --rounds {}` (Debian {} {} kernel, \
         qemu TCG, `-icount shift=0,sleep=off -smp 1`: 1 guest ns = 1 guest instruction; \
         medians).\n",
        options.arch.musl().split('-').next().unwrap_or_default(),
        options.cycles,
        options.rounds,
        options.arch.debian(),
        options.kernel()
    );
    let _ = writeln!(
        out,
        "Baseline: {:.1}k guest instructions per connect cycle.\n",
        baseline / 1000.0
    );
    let _ = writeln!(
        out,
        "| configuration | SystemTap example | overhead | stap 4.8 | target | met | \
         per-run overheads | lines printed / connects | tracer's summary |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for c in options
        .configs()
        .filter(|c| c.tracer.is_some() && c.workload == Workload::Accepted)
    {
        let r = runs
            .get(c.name)
            .with_context(|| format!("no results for {}", c.name))?;
        let lines: u64 = r.iter().map(|r| r.lines).sum();
        let connects: u64 = r.iter().map(|r| r.cycles).sum();
        let overhead = (per_cycle(c.name)? - baseline) / 1000.0;
        let each: Vec<String> = r
            .iter()
            .map(|r| format!("{:+.1}k", (r.ns_per_cycle - baseline) / 1000.0))
            .collect();
        let (_, _, target) = example(c.example);
        let (stap, source) = stap_overhead(runs, c.example, baseline);
        // The targets are fractions of SystemTap's cost on x86_64, the only place it runs.
        let (stap_cell, target_cell, met) = if c.is_stap() || options.arch != Arch::X86_64 {
            ("-".to_string(), "-".to_string(), "-")
        } else {
            (
                format!("+{stap:.1}k ({source})"),
                format!("<= +{target:.1}k"),
                if overhead <= target { "yes" } else { "no" },
            )
        };
        let _ = writeln!(
            out,
            "| `{}` (port {}) | {} | **+{overhead:.1}k** | {stap_cell} | {target_cell} | {met} | {} | {lines} / {connects} | {} |",
            tracer_command(c),
            c.port,
            c.example,
            each.join(", "),
            notes.get(c.name).map(String::as_str).unwrap_or("-")
        );
    }
    if options.arch == Arch::X86_64 {
        default_against_targets(&mut out, runs, baseline)?;
    }
    let _ = writeln!(
        out,
        "\nWhat `--outcome` adds to the same configuration without it (target: at most +1.0k; \
         the refused workload connects to a port where nothing listens, against a baseline of \
         its own, {:.1}k):\n",
        median_per_cycle(runs, Workload::Refused.baseline()).unwrap_or(f64::NAN) / 1000.0
    );
    let _ = writeln!(
        out,
        "| configuration | workload | without | with | added | met | lines printed / connects |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for (c, without_ns, with_ns) in added_by(options, runs, " --outcome") {
        let base = per_cycle(c.workload.baseline())?;
        let added = (with_ns - without_ns) / 1000.0;
        let r = &runs[c.name];
        let lines: u64 = r.iter().map(|r| r.lines).sum();
        let connects: u64 = r.iter().map(|r| r.cycles).sum();
        let _ = writeln!(
            out,
            "| `{}` | port {}, {} | +{:.1}k | +{:.1}k | **{added:+.1}k** | {} | {lines} / {connects} |",
            tracer_command(c),
            c.port,
            match c.workload {
                Workload::Accepted => "accepted",
                Workload::Refused => "refused",
            },
            (without_ns - base) / 1000.0,
            (with_ns - base) / 1000.0,
            if added <= 1.0 { "yes" } else { "no" },
        );
    }
    let _ = writeln!(
        out,
        "\nWhat `--format json` adds to the stap format of the same backend: the JSON line and \
         the caller's workload (cgroup, namespaces and pids in the kernel; cgroup path, \
         container and pod in userspace, cached per cgroup), which only JSON output reads:\n"
    );
    let _ = writeln!(out, "| configuration | stap | json | added |");
    let _ = writeln!(out, "|---|---|---|---|");
    for (c, without_ns, with_ns) in added_by(options, runs, " --format json") {
        let base = per_cycle(c.workload.baseline())?;
        let _ = writeln!(
            out,
            "| `{}` | +{:.1}k | +{:.1}k | **{:+.1}k** |",
            tracer_command(c),
            (without_ns - base) / 1000.0,
            (with_ns - base) / 1000.0,
            (with_ns - without_ns) / 1000.0,
        );
    }
    let _ = writeln!(
        out,
        "\nIn-kernel cost per program run (`--stats`: kernel BPF statistics, separate runs; \
         guest ns, i.e. instructions, inside the program only, not the kprobe machinery around it):\n"
    );
    let _ = writeln!(out, "| configuration | programs |");
    let _ = writeln!(out, "|---|---|");
    for c in options
        .configs()
        .filter(|c| c.tracer.is_some() && !c.is_stap())
    {
        let stats = program_stats
            .get(c.name)
            .map(|s| s.join("; "))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "| `{}` (port {}) | {stats} |",
            tracer_command(c),
            c.port
        );
    }
    let _ = writeln!(
        out,
        "\nStart-up and memory (the same `--stats` runs; start-up on the guest's clock, which \
         under icount is its instruction count, from entering `TracerBuilder::attach` to \
         attached; memory from `/proc/self/status` at exit, after the 2000 connects; targets: \
         start-up < 150 ms, peak RSS <= 12 MiB, RSS at exit <= 6 MiB):\n"
    );
    let _ = writeln!(out, "| configuration | attached in | memory |");
    let _ = writeln!(out, "|---|---|---|");
    for c in options
        .configs()
        .filter(|c| c.tracer.is_some() && !c.is_stap() && c.port == 8080)
    {
        if let Some((took, memory)) = resources.get(c.name) {
            let _ = writeln!(out, "| `{}` | {took} | {memory} |", tracer_command(c));
        }
    }
    Ok(out)
}

fn latency_report(options: &Options, runs: &BTreeMap<&str, Vec<Run>>) -> Result<String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "`cargo xtask bench latency --cycles {} --rounds {}`: connect() latency at a paced 1000 \
         connects/s, qemu TCG **without** icount (-smp 2), so real time on an emulated CPU: noisy, \
         for orders of magnitude only. Medians over rounds of each run's percentile.\n",
        options.cycles, options.rounds
    );
    let _ = writeln!(
        out,
        "| configuration | port | connect() p50 | connect() p99 | lines printed / connects |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for c in options.configs() {
        let r = runs
            .get(c.name)
            .with_context(|| format!("no results for {}", c.name))?;
        let pct = |f: fn(&Run) -> Option<u64>| {
            median(r.iter().filter_map(f).map(|v| v as f64).collect()) / 1000.0
        };
        let lines: u64 = r.iter().map(|r| r.lines).sum();
        let connects: u64 = r.iter().map(|r| r.cycles).sum();
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} µs | {:.0} µs | {lines} / {connects} |",
            c.tracer
                .map(|_| format!("`{}`", tracer_command(c)))
                .unwrap_or_else(|| "baseline (no tracer)".into()),
            c.port,
            pct(|r| r.p50_ns),
            pct(|r| r.p99_ns),
        );
    }
    Ok(out)
}

/// SystemTap's overhead for `example`: measured in this run if it ran, else the reference.
fn stap_overhead(
    runs: &BTreeMap<&str, Vec<Run>>,
    example_name: &str,
    baseline: f64,
) -> (f64, &'static str) {
    let measured = CONFIGS
        .iter()
        .find(|c| c.is_stap() && c.example == example_name)
        .and_then(|c| median_per_cycle(runs, c.name))
        .map(|ns| (ns - baseline) / 1000.0);
    match measured {
        Some(k) => (k, "measured"),
        None => (example(example_name).1, "reference"),
    }
}

/// The tracer's command line as the report shows it, without the program's directory.
fn tracer_command(c: &Config) -> String {
    let command = c.command();
    command
        .trim_start_matches("/usr/bin/")
        .trim_start_matches("/bin/")
        .to_string()
}

fn example(name: &str) -> (&'static str, f64, f64) {
    *EXAMPLES
        .iter()
        .find(|e| e.0 == name)
        .expect("every traced config names a known example")
}

/// The bars of the chart: per example, stap's reference, each probe-user configuration, the target.
fn chart_bars(runs: &BTreeMap<&str, Vec<Run>>) -> Vec<chart::Bar> {
    let per_cycle = |name: &str| median_per_cycle(runs, name);
    let Some(baseline) = per_cycle("baseline") else {
        return Vec::new();
    };
    let mut bars = Vec::new();
    for &(name, _, target) in EXAMPLES {
        let (stap, source) = stap_overhead(runs, name, baseline);
        bars.push(chart::Bar {
            label: format!("{name}: stap 4.8 ({source})"),
            value_k: stap,
            color: chart::STAP,
        });
        for c in CONFIGS
            .iter()
            .filter(|c| c.example == name && c.tracer.is_some() && !c.is_stap())
        {
            if let Some(v) = per_cycle(c.name) {
                bars.push(chart::Bar {
                    label: format!("{name}: {}", tracer_command(c)),
                    value_k: (v - baseline) / 1000.0,
                    color: chart::PROBE,
                });
            }
        }
        bars.push(chart::Bar {
            label: format!("{name}: target"),
            value_k: target,
            color: chart::TARGET,
        });
    }
    bars
}

/// Replaces the generated section of docs/benchmarks.md (between the markers) with `report`.
pub(crate) fn write_section(path: &Path, which: &str, report: &str) -> Result<()> {
    let begin = format!("<!-- bench {which}: begin -->");
    let end = format!("<!-- bench {which}: end -->");
    let (begin, end) = (begin.as_str(), end.as_str());
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|_| format!("# Benchmarks\n\n{begin}\n{end}\n"));
    let (head, rest) = text
        .split_once(begin)
        .context("docs/benchmarks.md lacks the begin marker")?;
    let (_, tail) = rest
        .split_once(end)
        .context("docs/benchmarks.md lacks the end marker")?;
    std::fs::write(path, format!("{head}{begin}\n{report}{end}{tail}"))?;
    Ok(())
}

/// The table of the default configuration against its targets (fractions of SystemTap's cost,
/// measured on x86_64).
fn default_against_targets(
    out: &mut String,
    runs: &BTreeMap<&str, Vec<Run>>,
    baseline: f64,
) -> Result<()> {
    let _ = writeln!(
        out,
        "\nThe default configuration (`--attach auto`, which takes fentry on this kernel) against \
         its targets (example 1 <= +0.8k; examples 2 and 3 printed <= +1.9k, 0.15x stap; \
         filtered out <= +0.4k):\n"
    );
    let _ = writeln!(out, "| configuration | example | overhead | target | met |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for (name, target) in DEFAULT_TARGETS {
        let (Some(c), Some(v)) = (
            CONFIGS.iter().find(|c| c.name == name),
            median_per_cycle(runs, name),
        ) else {
            continue;
        };
        let overhead = (v - baseline) / 1000.0;
        let _ = writeln!(
            out,
            "| `{}` (port {}) | {} | **{overhead:+.1}k** | <= +{target:.1}k | {} |",
            tracer_command(c),
            c.port,
            c.example,
            if overhead <= target { "yes" } else { "no" }
        );
    }
    Ok(())
}
