//! `cargo xtask bench overhead`: guest instructions per connect with and without each tracer,
//! in one deterministic boot (`-icount shift=0,sleep=off -smp 1`).

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::{Context as _, Result, bail};

use crate::{artifacts, vm};

#[derive(clap::Args)]
pub struct Options {
    /// Which benchmark (only `overhead` so far).
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
}

/// One benchmark configuration: a name, the tracer command (none for the baseline) and the
/// port the workload connects to.
struct Config {
    name: &'static str,
    example: &'static str,
    tracer: Option<&'static str>,
    port: u16,
}

const CONFIGS: &[Config] = &[
    Config {
        name: "baseline",
        example: "-",
        tracer: None,
        port: 8080,
    },
    Config {
        name: "minimal",
        example: "example 1",
        tracer: Some("/bin/probe-user --format minimal"),
        port: 8080,
    },
    Config {
        name: "stap",
        example: "example 2",
        tracer: Some("/bin/probe-user"),
        port: 8080,
    },
    Config {
        name: "filter-hit",
        example: "example 3, printed",
        tracer: Some("/bin/probe-user --filter-port 8080"),
        port: 8080,
    },
    Config {
        name: "filter-miss",
        example: "example 3, filtered out",
        tracer: Some("/bin/probe-user --filter-port 8080"),
        port: 9090,
    },
    Config {
        name: "succ-stap",
        example: "example 2",
        tracer: Some("/bin/probe-user --successes-only"),
        port: 8080,
    },
    Config {
        name: "succ-filter-hit",
        example: "example 3, printed",
        tracer: Some("/bin/probe-user --successes-only --filter-port 8080"),
        port: 8080,
    },
    Config {
        name: "succ-filter-miss",
        example: "example 3, filtered out",
        tracer: Some("/bin/probe-user --successes-only --filter-port 8080"),
        port: 9090,
    },
];

/// What one run measured.
struct Run {
    ns_per_cycle: f64,
    lines: u64,
    cycles: u64,
}

pub fn run(options: Options) -> Result<()> {
    if options.which != "overhead" {
        bail!("unknown benchmark '{}' (expected: overhead)", options.which);
    }
    let probe_user = artifacts::probe_user()?;
    let helpers = artifacts::test_helpers()?;
    let mut guest = vm::Guest::new(guest_script(&options)).binary("probe-user", &probe_user);
    for (name, path) in &helpers {
        guest = guest.binary(name, path);
    }
    let boot = vm::Boot {
        icount: true,
        ..Default::default()
    };
    let mut runs: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
    let mut stderr_notes: BTreeMap<&str, String> = BTreeMap::new();
    let mut program_stats: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let code = boot.run(&guest, &artifacts::work_dir("bench"), |line| {
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
                && let Some(stat) = text.strip_prefix("probe-user: program ")
            {
                program_stats
                    .entry(config.name)
                    .or_default()
                    .push(stat.to_string());
            }
        }
    })?;
    if code != 0 {
        bail!("the benchmark failed in the VM (exit code {code})");
    }
    let report = report(&options, &runs, &stderr_notes, &program_stats)?;
    println!("{report}");
    if options.write {
        let path = artifacts::workspace_root().join("docs/benchmarks.md");
        write_section(&path, &report)?;
        eprintln!("xtask: wrote {}", path.display());
    }
    Ok(())
}

fn guest_script(options: &Options) -> String {
    let mut s = String::from(
        "bench() { name=$1; port=$2; shift 2\n\
         if [ $# -eq 0 ]; then\n\
           r=$(/bin/connect-bench --cycles $CYCLES --port $port) || return 1\n\
           echo \"result $name $r lines=0\"; return 0\n\
         fi\n\
         rm -f /tmp/err; \"$@\" > /tmp/out 2> /tmp/err & t=$!\n\
         until grep -q Tracing /tmp/err 2>/dev/null; do\n\
           kill -0 $t 2>/dev/null || { cat /tmp/err; return 1; }; sleep 0.05; done\n\
         r=$(/bin/connect-bench --cycles $CYCLES --port $port) || return 1\n\
         kill -INT $t; wait $t\n\
         echo \"result $name $r lines=$(wc -l < /tmp/out)\"\n\
         tail -n +2 /tmp/err | sed \"s/^/stderr $name: /\"\n\
         }\n",
    );
    let _ = writeln!(s, "CYCLES={}", options.cycles);
    // Warm-up: first-touch costs (page cache, slab) land here, not in the first measured run.
    s.push_str("/bin/connect-bench --cycles 200 --port 8080 > /dev/null\n");
    for _ in 0..options.rounds {
        for c in CONFIGS {
            let _ = writeln!(
                s,
                "bench {} {} {} || exit 1",
                c.name,
                c.port,
                c.tracer.unwrap_or("")
            );
        }
    }
    // Kernel BPF statistics cost a clock read per program run: a separate, unmeasured pass.
    for c in CONFIGS {
        if let Some(tracer) = c.tracer {
            let _ = writeln!(
                s,
                "bench stats-{} {} {tracer} --stats || exit 1",
                c.name, c.port
            );
        }
    }
    s
}

/// Parses `result <name> cycles=N ns=T lines=L`.
fn parse_result(line: &str) -> Option<(&'static str, Run)> {
    let mut words = line.strip_prefix("result ")?.split(' ');
    let name = words.next()?;
    let config = CONFIGS.iter().find(|c| c.name == name)?;
    let mut field = |key: &str| words.next()?.strip_prefix(key)?.parse::<u64>().ok();
    let cycles = field("cycles=")?;
    let ns = field("ns=")?;
    let lines = field("lines=")?;
    Some((
        config.name,
        Run {
            ns_per_cycle: ns as f64 / cycles as f64,
            lines,
            cycles,
        },
    ))
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
) -> Result<String> {
    let per_cycle = |name: &str| -> Result<f64> {
        let r = runs
            .get(name)
            .with_context(|| format!("no results for {name}"))?;
        Ok(median(r.iter().map(|r| r.ns_per_cycle).collect()))
    };
    let baseline = per_cycle("baseline")?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "`cargo xtask bench overhead --cycles {} --rounds {}` (Debian 6.1 kernel, qemu TCG, \
         `-icount shift=0,sleep=off -smp 1`: 1 guest ns = 1 guest instruction; medians).\n",
        options.cycles, options.rounds
    );
    let _ = writeln!(
        out,
        "Baseline: {:.1}k guest instructions per connect cycle.\n",
        baseline / 1000.0
    );
    let _ = writeln!(
        out,
        "| configuration | SystemTap | overhead per connect | lines printed / connects | tracer's summary |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for c in CONFIGS.iter().filter(|c| c.tracer.is_some()) {
        let r = &runs[c.name];
        let lines: u64 = r.iter().map(|r| r.lines).sum();
        let connects: u64 = r.iter().map(|r| r.cycles).sum();
        let _ = writeln!(
            out,
            "| `{}` (port {}) | {} | +{:.1}k | {} / {} | {} |",
            c.tracer.unwrap_or_default().trim_start_matches("/bin/"),
            c.port,
            c.example,
            (per_cycle(c.name)? - baseline) / 1000.0,
            lines,
            connects,
            notes.get(c.name).map(String::as_str).unwrap_or("-")
        );
    }
    let _ = writeln!(
        out,
        "\nIn-kernel cost per program run (`--stats`: kernel BPF statistics, separate runs; \
         guest ns, i.e. instructions, inside the program only, not the kprobe machinery around it):\n"
    );
    let _ = writeln!(out, "| configuration | programs |");
    let _ = writeln!(out, "|---|---|");
    for c in CONFIGS.iter().filter(|c| c.tracer.is_some()) {
        let stats = program_stats
            .get(c.name)
            .map(|s| s.join("; "))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "| `{}` (port {}) | {stats} |",
            c.tracer.unwrap_or_default().trim_start_matches("/bin/"),
            c.port
        );
    }
    Ok(out)
}

/// Replaces the generated section of docs/benchmarks.md (between the markers) with `report`.
fn write_section(path: &Path, report: &str) -> Result<()> {
    const BEGIN: &str = "<!-- bench overhead: begin -->";
    const END: &str = "<!-- bench overhead: end -->";
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|_| format!("# Benchmarks\n\n{BEGIN}\n{END}\n"));
    let (head, rest) = text
        .split_once(BEGIN)
        .context("docs/benchmarks.md lacks the begin marker")?;
    let (_, tail) = rest
        .split_once(END)
        .context("docs/benchmarks.md lacks the end marker")?;
    std::fs::write(path, format!("{head}{BEGIN}\n{report}{END}{tail}"))?;
    Ok(())
}
