//! `cargo xtask bench scale`: `--metrics --outcome --metrics-label cgroup` on a node's worth of
//! workloads, in the 2-vCPU VM (Debian 6.1, qemu TCG without icount: real time on an emulated
//! CPU). Three phases, each its own probe-user:
//!
//! - load: 1,000 cgroups, each connecting to 5 listening ports (established) and 5 closed ones
//!   (refused): 10,000 label sets within the default budget. Scrape time, size and samples,
//!   probe-user's memory, the kernel map's memory, and the connects counted against those made.
//! - overflow: the same with `--max-series 5000`: half the label sets overflow, the totals
//!   stay exact.
//! - churn: `--max-series 2000 --retire-after 2s`, ten rounds of 200 cgroups (2,000 label sets
//!   each) that connect and are removed, each round once the last one's were retired: 20,000
//!   label sets through a budget of 2,000, none overflowing.
//!
//! The workload is `tests/src/bin/fleet.rs`, its cgroups below `/cg/fleet`, which probe-user
//! traces alone (`--cgroup`): the scrapes' own connects are not counted.

use std::{collections::BTreeMap, fmt::Write as _};

use anyhow::{Result, bail};

use super::report::write_section;
use crate::{
    artifacts::{self, Arch},
    vm,
};

/// Cgroups and ports of the load and overflow phases.
const CGROUPS: u32 = 1000;
const OPEN: u32 = 5;
const CLOSED: u32 = 5;
/// The churn phase's rounds, cgroups per round and budget.
const ROUNDS: u32 = 10;
const CHURN_CGROUPS: u32 = 200;
const CHURN_BUDGET: u32 = 2000;
/// Scrapes per phase (the median time is reported).
const SCRAPES: u32 = 5;

/// What a phase printed: `scale <phase>: <text>` lines, in order.
type Lines = BTreeMap<String, Vec<String>>;

pub(super) fn run(write: bool) -> Result<()> {
    let probe_user = artifacts::probe_user(Arch::X86_64)?;
    let guest = vm::Guest::new(guest_script())
        .binary("probe-user", &probe_user)
        .binaries(&artifacts::test_helpers(Arch::X86_64)?);
    let mut lines = Lines::new();
    let mut on_line = |line: &str| {
        println!("{line}");
        if let Some((phase, text)) = line
            .strip_prefix("scale ")
            .and_then(|rest| rest.split_once(": "))
        {
            lines
                .entry(phase.to_string())
                .or_default()
                .push(text.to_string());
        }
    };
    let code = vm::Boot::default().run(&guest, &artifacts::work_dir("scale"), &mut on_line)?;
    if code != 0 {
        bail!("the scale benchmark failed in the VM (exit code {code})");
    }
    let report = report(&lines)?;
    println!("{report}");
    if write {
        let path = artifacts::workspace_root().join("docs/benchmarks.md");
        write_section(&path, "scale", &report)?;
        eprintln!("xtask: wrote {}", path.display());
    }
    Ok(())
}

fn guest_script() -> String {
    let mut s = String::from(
        "mkdir -p /cg && mount -t cgroup2 none /cg && mkdir /cg/fleet || exit 1\n\
         M=127.0.0.1:9779\n\
         start() { rm -f /tmp/err\n\
           /bin/probe-user --metrics $M --outcome --metrics-label cgroup --cgroup /cg/fleet \
             --stats \"$@\" \
             > /dev/null 2> /tmp/err & t=$!\n\
           until grep -q Counting /tmp/err 2>/dev/null; do\n\
             kill -0 $t 2>/dev/null || { cat /tmp/err; exit 1; }; sleep 0.1; done; }\n\
         say() { sed \"s/^/scale $1: /\"; }\n\
         scrapes() { sleep 2; for i in $(seq $SCRAPES); do /bin/fleet scrape $M | say $1; done\n\
           grep -e VmHWM -e VmRSS /proc/$t/status | tr -s ' \\t' ' ' | say $1; }\n\
         stop() { kill -INT $t; wait $t\n\
           grep -e 'counts:' -e 'connects counted' -e 'other' /tmp/err | say $1; }\n",
    );
    let _ = writeln!(s, "SCRAPES={SCRAPES}");
    let load = format!("/cg/fleet/load {CGROUPS} {OPEN} {CLOSED}");
    let _ = writeln!(
        s,
        "start\n/bin/fleet connect {load} | say load || exit 1\nscrapes load\nstop load"
    );
    let _ = writeln!(
        s,
        "start --max-series {}\n/bin/fleet connect {load} | say overflow || exit 1\n\
         scrapes overflow\nstop overflow",
        CGROUPS * (OPEN + CLOSED) / 2
    );
    let _ = writeln!(
        s,
        "start --max-series {CHURN_BUDGET} --retire-after 2s\n\
         for r in $(seq {ROUNDS}); do\n\
           /bin/fleet connect /cg/fleet/churn$r {CHURN_CGROUPS} {OPEN} {CLOSED} --remove | say churn || exit 1\n\
           n=0; until /bin/fleet scrape $M | grep -q ' series=0 '; do\n\
             n=$((n+1)); [ $n -gt 60 ] && {{ echo 'scale churn: not retired'; break; }}; sleep 0.5; done\n\
         done\n\
         scrapes churn\nstop churn"
    );
    s
}

/// `key=value` of `line`.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn report(lines: &Lines) -> Result<String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "`cargo xtask bench scale`: probe-user `--metrics --outcome --metrics-label cgroup` in \
         the 2-vCPU VM (Debian 6.1, qemu TCG without icount: real time on an emulated CPU, \
         several times slower than a real one). load: {CGROUPS} cgroups each connecting to \
         {OPEN} listening and {CLOSED} closed ports ({} label sets); overflow: the same with \
         `--max-series {}`; churn: `--max-series {CHURN_BUDGET} --retire-after 2s`, {ROUNDS} \
         rounds of {CHURN_CGROUPS} cgroups made, connecting and removed. Scrape: median of \
         {SCRAPES}, with its size and sample lines. Counted: the sum of \
         `tcpconn_connects_total` (plus the retired connects) against the connects made.\n",
        CGROUPS * (OPEN + CLOSED),
        CGROUPS * (OPEN + CLOSED) / 2
    );
    let _ = writeln!(
        out,
        "| phase | connects made | counted | overflow | retired label sets | scrape | size | samples | probe-user RSS (peak) | kernel counts map |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for phase in ["load", "overflow", "churn"] {
        let Some(phase_lines) = lines.get(phase) else {
            bail!("no output of the {phase} phase");
        };
        if phase_lines.iter().any(|l| l.contains("not retired")) {
            bail!("churn: the gone cgroups' label sets were not retired");
        }
        let made: u64 = phase_lines
            .iter()
            .filter_map(|l| l.strip_prefix("made ")?.parse::<u64>().ok())
            .sum();
        let scrapes: Vec<&String> = phase_lines
            .iter()
            .filter(|l| l.starts_with("scrape "))
            .collect();
        let Some(last) = scrapes.last() else {
            bail!("no scrape in the {phase} phase");
        };
        let mut ms: Vec<f64> = scrapes
            .iter()
            .filter_map(|l| field(l, "ms")?.parse().ok())
            .collect();
        ms.sort_by(f64::total_cmp);
        let number = |key| -> f64 { field(last, key).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
        let counted = number("connects") + number("retired_connects_total");
        if counted != made as f64 {
            bail!("{phase}: {counted} connects counted, {made} made");
        }
        let kib = |key: &str| -> String {
            phase_lines
                .iter()
                .find_map(|l| l.strip_prefix(key))
                .map_or("?".into(), |v| v.trim().to_string())
        };
        let map = phase_lines
            .iter()
            .find_map(|l| l.strip_prefix("probe-user: counts: "))
            .unwrap_or("?");
        let _ = writeln!(
            out,
            "| {phase} | {made} | {counted} | {} | {} | {:.0} ms | {:.1} MiB | {} | {} ({}) | {map} |",
            number("series_overflow_total"),
            number("series_retired_total"),
            ms[ms.len() / 2],
            number("bytes") / (1024.0 * 1024.0),
            number("samples"),
            kib("VmRSS:"),
            kib("VmHWM:"),
        );
    }
    Ok(out)
}
