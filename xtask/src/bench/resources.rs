//! `cargo xtask bench resources`: start-up time and memory of probe-user on every kernel of the
//! test matrix, with every backend. Each kernel is booted with `-icount shift=0` (the guest's
//! clock counts its instructions: deterministic, about a 1 GHz machine at one instruction per
//! cycle), probe-user runs with `--stats` while 500 connects are made, and reports how long
//! `TracerBuilder::attach` took (BTF offsets, load and verify, attach) and its peak and final
//! resident memory from `/proc/self/status`.

use std::{collections::BTreeMap, fmt::Write as _};

use anyhow::{Result, bail};

use super::report::write_section;
use crate::{
    artifacts::{self, Arch},
    kernels, vm,
};

/// The backends measured, with what each adds to the command line.
const BACKENDS: [(&str, &str); 4] = [
    ("auto", ""),
    ("kprobe", "--attach kprobe"),
    ("fentry", "--attach fentry"),
    ("tracepoint", "--attach tracepoint"),
];

/// Runs of each backend per kernel (the median is reported).
const ROUNDS: usize = 3;

/// (kernel, backend) -> every run's (attached line, memory line).
type Results = BTreeMap<(String, String), Vec<(String, String)>>;

pub(super) fn run(write: bool) -> Result<()> {
    let probe_user = artifacts::probe_user(Arch::X86_64)?;
    let helpers = artifacts::test_helpers(Arch::X86_64)?;
    let mut results = Results::new();
    for (version, _) in kernels::MATRIX {
        let guest = vm::Guest::new(guest_script())
            .binary("probe-user", &probe_user)
            .binaries(&helpers);
        let boot = vm::Boot {
            icount: true,
            kernel: Some(kernels::image(version, Arch::X86_64)?),
            ..Default::default()
        };
        let mut pending: BTreeMap<String, String> = BTreeMap::new();
        let mut on_line = |line: &str| {
            println!("{line}");
            let Some(rest) = line.strip_prefix("res ") else {
                return;
            };
            let Some((backend, text)) = rest.split_once(": ") else {
                return;
            };
            if let Some(took) = text.strip_prefix("probe-user: attached in ") {
                pending.insert(backend.to_string(), took.to_string());
            } else if let Some(memory) = text.strip_prefix("probe-user: memory: ")
                && let Some(took) = pending.remove(backend)
            {
                results
                    .entry((version.to_string(), backend.to_string()))
                    .or_default()
                    .push((took, memory.to_string()));
            }
        };
        let code = boot.run(&guest, &artifacts::work_dir("resources"), &mut on_line)?;
        if code != 0 {
            bail!("the resources benchmark failed on {version} (exit code {code})");
        }
    }
    let report = report(&results);
    println!("{report}");
    if write {
        let path = artifacts::workspace_root().join("docs/benchmarks.md");
        write_section(&path, "resources", &report)?;
        eprintln!("xtask: wrote {}", path.display());
    }
    Ok(())
}

fn guest_script() -> String {
    let mut s = String::from(
        "res() { name=$1; shift\n\
         rm -f /tmp/err; /bin/probe-user --stats \"$@\" > /dev/null 2> /tmp/err & t=$!\n\
         until grep -q Tracing /tmp/err 2>/dev/null; do\n\
           kill -0 $t 2>/dev/null || { cat /tmp/err; return 1; }; sleep 0.05; done\n\
         /bin/connect-bench --cycles 500 --port 8080 > /dev/null || return 1\n\
         kill -TERM $t; wait $t\n\
         grep -e 'attached in' -e 'memory:' /tmp/err | sed \"s/^/res $name: /\"\n\
         sleep 1\n\
         }\n",
    );
    for _ in 0..ROUNDS {
        for (name, args) in BACKENDS {
            let _ = writeln!(s, "res {name} {args} || exit 1");
        }
    }
    s
}

/// The median run (by start-up time) of each kernel and backend.
fn report(results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "`cargo xtask bench resources`: each Debian kernel booted with `-icount shift=0` (1 \
         guest ns = 1 instruction), probe-user `--stats` with each backend while 500 connects \
         are made, {ROUNDS} runs each, the median by start-up shown. Start-up is \
         `TracerBuilder::attach` (with `auto`, every backend tried before the one that \
         attached); memory is peak and final RSS (`VmHWM`, `VmRSS`). Targets: start-up < \
         150 ms on 6.1, peak RSS <= 12 MiB, steady <= 6 MiB on every kernel.\n"
    );
    let _ = writeln!(out, "| kernel | backend | attached in | memory |");
    let _ = writeln!(out, "|---|---|---|---|");
    for ((kernel, backend), runs) in results {
        let mut runs = runs.clone();
        runs.sort_by(|a, b| {
            let ms = |s: &str| {
                s.split(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(f64::MAX)
            };
            ms(&a.0).total_cmp(&ms(&b.0))
        });
        let (took, memory) = &runs[runs.len() / 2];
        let _ = writeln!(out, "| {kernel} | {backend} | {took} | {memory} |");
    }
    out
}
