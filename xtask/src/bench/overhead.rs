//! `cargo xtask bench overhead`'s report: guest instructions per connect of each
//! configuration against the baseline, SystemTap's and the targets; what `--outcome` and
//! `--format json` add; in-kernel cost per program run; start-up and memory; and the chart.

use std::{collections::BTreeMap, fmt::Write as _};

use anyhow::{Context as _, Result};

use super::{
    configs::{CONFIGS, Config, LIFETIME, Workload, tracer_command},
    measure::{Measured, Peak, Run, median, median_per_cycle},
    options::Options,
    report::write_section,
};
use crate::{
    artifacts::{self, Arch},
    chart,
};

/// SystemTap 4.8's overhead on the same workload and VM (../shared/REFERENCE.md: its scripts,
/// measured the same way; not re-run by this benchmark) and the project's target for each
/// example: at most 0.2x stap's. Thousands of guest instructions per connect.
const EXAMPLES: &[(&str, f64, f64)] = &[
    ("example 1", 7.9, 1.6),
    ("example 2", 12.9, 2.6),
    ("example 3, printed", 12.9, 2.6),
    ("example 3, filtered out", 2.5, 0.5),
];

/// The default configuration's targets, thousands of guest instructions per connect.
const DEFAULT_TARGETS: [(&str, f64); 4] = [
    ("minimal", 0.8),
    ("default", 1.9),
    ("filter-hit", 1.9),
    ("filter-miss", 0.4),
];

/// Prints the overhead report of `measured`, and with `--write` puts it in
/// docs/benchmarks.md and (on x86_64) draws the chart.
pub(super) fn write(options: &Options, measured: &Measured) -> Result<()> {
    let Measured {
        runs,
        stderr_notes,
        program_stats,
        resources,
        peaks,
    } = measured;
    let mut report = report(options, runs, stderr_notes, program_stats, resources)?;
    lifetimes(&mut report, options, runs)?;
    alike(&mut report, options, peaks);
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
                &chart_bars(runs),
            )?;
            eprintln!("xtask: wrote {}", svg.display());
        }
    }
    Ok(())
}

/// What `--names` and `--nat` add to JSON lines: per connect with no DNS answer nor NAT (their
/// hooks' cost on every other packet), and with a DNS answer before each connect (its capture,
/// parse and the name's lookup), each against its own baseline.
fn names_and_nat(
    out: &mut String,
    options: &Options,
    runs: &BTreeMap<&str, Vec<Run>>,
) -> Result<()> {
    let rows: Vec<_> = [" --names", " --nat"]
        .into_iter()
        .flat_map(|option| added_by(options, runs, option))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let _ = writeln!(
        out,
        "\nWhat `--names` and `--nat` add to the same JSON lines (the accepted workload has no DNS \
         answer and no NAT: what their hooks cost on other packets; the DNS workload receives a \
         DNS answer, from port 53, before each connect, against a baseline of its own, {:.1}k):\n",
        median_per_cycle(runs, Workload::Dns.baseline()).unwrap_or(f64::NAN) / 1000.0
    );
    let _ = writeln!(
        out,
        "| configuration | workload | without | with | added | lines printed / connects |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for (c, without_ns, with_ns) in rows {
        let base = median_per_cycle(runs, c.workload.baseline())
            .with_context(|| format!("no results for {}", c.workload.baseline()))?;
        let r = &runs[c.name];
        let lines: u64 = r.iter().map(|r| r.lines).sum();
        let connects: u64 = r.iter().map(|r| r.cycles).sum();
        let _ = writeln!(
            out,
            "| `{}` | {} | +{:.1}k | +{:.1}k | **{:+.1}k** | {lines} / {connects} |",
            tracer_command(c),
            if c.workload == Workload::Dns {
                "DNS answer + connect"
            } else {
                "accepted"
            },
            (without_ns - base) / 1000.0,
            (with_ns - base) / 1000.0,
            (with_ns - without_ns) / 1000.0,
        );
    }
    Ok(())
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
        .filter(|c| c.example != LIFETIME)
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
        let (stap_cell, target_cell, met) =
            if c.is_stap() || c.is_peer() || options.arch != Arch::X86_64 {
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
                Workload::Dns => "DNS answer + connect",
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
    names_and_nat(&mut out, options, runs)?;
    let _ = writeln!(
        out,
        "\nIn-kernel cost per program run (`--stats`: kernel BPF statistics, separate runs; \
         guest ns, i.e. instructions, inside the program only, not the kprobe machinery around it):\n"
    );
    let _ = writeln!(out, "| configuration | programs |");
    let _ = writeln!(out, "|---|---|");
    for c in options
        .configs()
        .filter(|c| c.tracer.is_some() && !c.is_stap() && !c.is_peer())
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

/// Following connections to their close: `--format life`, JSON with `--lifetime` (against JSON
/// alone) and libbpf-tools' tcplife, if they ran.
fn lifetimes(out: &mut String, options: &Options, runs: &BTreeMap<&str, Vec<Run>>) -> Result<()> {
    let rows: Vec<&Config> = options
        .configs()
        .filter(|c| c.example == LIFETIME && runs.contains_key(c.name))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let baseline = median_per_cycle(runs, "baseline").context("no results for baseline")?;
    let _ = writeln!(
        out,
        "\nFollowing each connection to its close (each cycle: a connect, its accept and the close \
         of both ends), side by side with libbpf-tools' tcplife (Debian bookworm's 0.26, a perf \
         buffer), which reports both ends of each connection where probe reports the connect's:\n"
    );
    let _ = writeln!(
        out,
        "| configuration | overhead | added to the same without following closes | lines printed / connects |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for c in rows {
        let r = &runs[c.name];
        let lines: u64 = r.iter().map(|r| r.lines).sum();
        let connects: u64 = r.iter().map(|r| r.cycles).sum();
        let with = median_per_cycle(runs, c.name).unwrap_or(f64::NAN);
        let added = c
            .without(" --lifetime")
            .and_then(|w| median_per_cycle(runs, w.name))
            .map_or("-".to_string(), |without| {
                format!("{:+.1}k", (with - without) / 1000.0)
            });
        let _ = writeln!(
            out,
            "| `{}` | **+{:.1}k** | {added} | {lines} / {connects} |",
            tracer_command(c),
            (with - baseline) / 1000.0,
        );
    }
    Ok(())
}

/// Start-up and peak memory taken alike for every tracer of the run (probe-user's own `--stats`
/// measure from inside; this one from outside, as for a peer).
fn alike(out: &mut String, options: &Options, peaks: &BTreeMap<&str, Vec<Peak>>) {
    if peaks.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nStart-up and memory measured alike for every tracer: from its launch to ready as \
         the guest's shell sees it (probe-user's banner, SystemTap's kprobe, a peer's perf \
         events; polled every 10 ms, so within 10 ms), and `VmHWM` (peak) and `VmRSS` \
         (steady, still tracing) after the run's connects; medians of the runs:\n"
    );
    let _ = writeln!(
        out,
        "| configuration | port | launch to ready | peak RSS | steady RSS |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for c in options.configs().filter(|c| c.tracer.is_some()) {
        let Some(p) = peaks.get(c.name) else {
            continue;
        };
        let ready = median(p.iter().map(|p| p.ready as f64).collect());
        let hwm = median(p.iter().map(|p| p.hwm as f64).collect());
        let rss: Vec<f64> = p.iter().filter_map(|p| p.rss).map(|r| r as f64).collect();
        let rss = match rss.is_empty() {
            true => "-".to_string(),
            false => format!("{:.0} KiB", median(rss)),
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {:.0} ms | {:.0} KiB | {rss} |",
            tracer_command(c),
            c.port,
            ready * 10.0,
            hwm
        );
    }
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
            .filter(|c| c.example == name && c.tracer.is_some() && !c.is_stap() && !c.is_peer())
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
