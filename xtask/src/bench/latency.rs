//! `cargo xtask bench latency`'s report: connect() p50 and p99 of each configuration.

use std::{collections::BTreeMap, fmt::Write as _};

use anyhow::{Context as _, Result};

use super::{
    configs::tracer_command,
    measure::{Run, median},
    options::Options,
    report::write_section,
};
use crate::artifacts;

/// Prints the latency report of `runs`, and with `--write` puts it in docs/benchmarks.md.
pub(super) fn write(options: &Options, runs: &BTreeMap<&str, Vec<Run>>) -> Result<()> {
    let report = latency_report(options, runs)?;
    println!("{report}");
    if options.write {
        let path = artifacts::workspace_root().join("docs/benchmarks.md");
        write_section(&path, "latency", &report)?;
        eprintln!("xtask: wrote {}", path.display());
    }
    Ok(())
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
