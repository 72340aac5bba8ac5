//! One boot that runs every configuration of `overhead` or `latency` (or a saved console log
//! of one), parsed into what each run measured.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use super::{
    configs::{CONFIGS, PEER_PACKAGES, bpftrace_script},
    options::Options,
};
use crate::{
    artifacts::{self, Arch},
    debian, kernels, stap, vm,
};

/// What one run measured.
pub(super) struct Run {
    pub(super) ns_per_cycle: f64,
    pub(super) lines: u64,
    pub(super) cycles: u64,
    /// connect() latency percentiles (latency benchmark only).
    pub(super) p50_ns: Option<u64>,
    pub(super) p99_ns: Option<u64>,
}

/// What the runs of one boot measured, per configuration.
pub(super) struct Measured {
    pub(super) runs: BTreeMap<&'static str, Vec<Run>>,
    /// The last line each tracer wrote to stderr (its summary).
    pub(super) stderr_notes: BTreeMap<&'static str, String>,
    /// From its `--stats` run: each program's kernel BPF statistics.
    pub(super) program_stats: BTreeMap<&'static str, Vec<String>>,
    /// From its `--stats` run: start-up time and memory.
    pub(super) resources: BTreeMap<&'static str, (String, String)>,
    /// Measured alike for every tracer, per run.
    pub(super) peaks: BTreeMap<&'static str, Vec<Peak>>,
}

/// A tracer's start-up and memory in one run, measured from outside alike for every tracer.
pub(super) struct Peak {
    /// Exec to ready, in centiseconds of the guest's clock.
    pub(super) ready: u64,
    /// Peak RSS (`VmHWM`, KiB) after the run's connects.
    pub(super) hwm: u64,
    /// RSS (`VmRSS`, KiB) then, once the run is over: what it keeps while tracing (none in
    /// console logs from before it was taken).
    pub(super) rss: Option<u64>,
}

/// Boots the VM that runs every configuration of `options` (paced, in real time, if
/// `latency`; else under icount), or reads the console log `--from-log` names.
pub(super) fn measure(options: &Options, latency: bool) -> Result<Measured> {
    let mut runs: BTreeMap<&'static str, Vec<Run>> = BTreeMap::new();
    let mut stderr_notes = BTreeMap::new();
    let mut program_stats: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut resources: BTreeMap<&'static str, (String, String)> = BTreeMap::new();
    let mut peaks: BTreeMap<&'static str, Vec<Peak>> = BTreeMap::new();
    let mut console = Vec::new();
    let mut on_line = |line: &str| {
        println!("{line}");
        if let Some((name, run)) = parse_result(line) {
            runs.entry(name).or_default().push(run);
        } else if let Some((name, peak)) = parse_peak(line) {
            peaks.entry(name).or_default().push(peak);
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
            let mut guest = vm::Guest::new(guest_script(options, latency))
                .binary("probe-user", &probe_user)
                .binaries(&helpers);
            if options.stap {
                for (guest_path, host) in stap::prepare(&vm::kernel_image()?)? {
                    guest = guest.file(&guest_path, &host);
                }
            }
            if options.peers {
                let packages = PEER_PACKAGES.map(|(package, _)| package);
                for (guest_path, host) in peer_files(options.arch, &packages)? {
                    guest = guest.file(&guest_path, &host);
                }
            }
            // With stap, the host's installed kernel, which stap's modules are built for.
            let kernel = if options.stap {
                vm::kernel_image()?
            } else {
                kernels::image(options.kernel(), options.arch)?
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
    Ok(Measured {
        runs,
        stderr_notes,
        program_stats,
        resources,
        peaks,
    })
}

/// The guest files (guest path, host path) of the peer packages `packages` (of
/// [`PEER_PACKAGES`]): each one's programs with their libraries, and bpftrace's scripts.
pub(super) fn peer_files(arch: Arch, packages: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for (package, programs) in PEER_PACKAGES
        .iter()
        .filter(|(name, _)| packages.contains(name))
    {
        let dir = debian::programs(package, "bookworm", package, programs, arch)?;
        let names: Vec<&str> = programs
            .iter()
            .map(|p| p.rsplit('/').next().unwrap_or(p))
            .collect();
        files.extend(debian::guest_files(
            &dir,
            &format!("/lib/{package}"),
            &names,
            "peer-",
            arch,
        )?);
    }
    if packages.contains(&"bpftrace") {
        let scripts = artifacts::work_dir("debian");
        for port in [None, Some(8080)] {
            let (guest_path, text) = bpftrace_script(port);
            let host = scripts.join(debian::file_name(Path::new(&guest_path)));
            std::fs::write(&host, text)?;
            files.push((guest_path, host));
        }
    }
    Ok(files)
}

fn guest_script(options: &Options, latency: bool) -> String {
    // Tracers are stopped with SIGTERM: a non-interactive shell starts background jobs with
    // SIGINT ignored, and stapio keeps it ignored. After a tracer exits, the kernel finishes
    // tearing its programs down in deferred work (RCU callbacks, trampoline freeing) that would
    // land in the next run, ~4k instructions per connect in a baseline: the 2 s sleep lets it
    // settle (under `sleep=off` idle time costs no wall time).
    // Every tracer's start-up is also taken alike, from its launch to ready as the guest sees it
    // (polled every 10 ms, on /proc/uptime's centiseconds), with its peak RSS after the run.
    let mut s = String::from(
        "cs() { u=$(cut -d' ' -f1 /proc/uptime); echo $(( ${u%.*} * 100 + 1${u#*.} - 100 )); }\n\
         ready() { case $1 in\n\
           banner) grep -q 'Hit Ctrl-C' /tmp/err 2>/dev/null;;\n\
           kprobe) grep -q tcp_v4_connect /sys/kernel/debug/kprobes/list;;\n\
           perf:*) [ $(ls -l /proc/$t/fd 2>/dev/null | grep -c perf_event) -ge ${1#perf:} ];;\n\
         esac; }\n\
         bench() { name=$1; port=$2; workload=$3; ready=$4; stop=$5; shift 5\n\
         if [ $# -eq 0 ]; then\n\
           r=$(/bin/connect-bench --cycles $CYCLES --port $port $workload $PACE) || return 1\n\
           echo \"result $name $r lines=0\"; return 0\n\
         fi\n\
         rm -f /tmp/err; t0=$(cs); \"$@\" > /tmp/out 2> /tmp/err & t=$!\n\
         until ready $ready; do\n\
           kill -0 $t 2>/dev/null || { cat /tmp/err; return 1; }; usleep 10000; done\n\
         t1=$(cs)\n\
         [ $ready = banner ] || sleep 1\n\
         r=$(/bin/connect-bench --cycles $CYCLES --port $port $workload $PACE) || return 1\n\
         hwm=$(grep VmHWM /proc/$t/status | tr -s ' ' | cut -d' ' -f2)\n\
         rss=$(grep VmRSS /proc/$t/status | tr -s ' ' | cut -d' ' -f2)\n\
         kill -$stop $t; wait $t\n\
         echo \"result $name $r lines=$(wc -l < /tmp/out)\"\n\
         echo \"peak $name ready=$((t1 - t0)) hwm=$hwm rss=$rss\"\n\
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
            let _ = writeln!(
                s,
                "bench {} {} {} {} {} {} || exit 1",
                c.name,
                c.port,
                c.workload.flag(),
                c.ready(),
                c.stop_signal(),
                c.command()
            );
        }
    }
    // Kernel BPF statistics cost a clock read per program run: a separate, unmeasured pass.
    for c in options
        .configs()
        .filter(|c| !latency && !c.is_stap() && !c.is_peer())
    {
        if c.tracer.is_some() {
            let _ = writeln!(
                s,
                "bench stats-{} {} {} banner TERM {} --stats || exit 1",
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

/// Parses `peak <name> ready=<centiseconds> hwm=<KiB> [rss=<KiB>]`.
fn parse_peak(line: &str) -> Option<(&'static str, Peak)> {
    let mut words = line.strip_prefix("peak ")?.split(' ');
    let name = words.next()?;
    let config = CONFIGS.iter().find(|c| c.name == name)?;
    let ready = words.next()?.strip_prefix("ready=")?.parse().ok()?;
    let hwm = words.next()?.strip_prefix("hwm=")?.parse().ok()?;
    let rss = words
        .next()
        .and_then(|w| w.strip_prefix("rss=")?.parse().ok());
    Some((config.name, Peak { ready, hwm, rss }))
}

/// Median guest ns per connect cycle over the runs of configuration `name`, if it ran.
pub(super) fn median_per_cycle(runs: &BTreeMap<&str, Vec<Run>>, name: &str) -> Option<f64> {
    runs.get(name)
        .map(|r| median(r.iter().map(|r| r.ns_per_cycle).collect()))
}

pub(super) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}
