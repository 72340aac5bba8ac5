//! `cargo xtask bench throughput`: how many connects per second probe-user reports, and whether
//! it drops any, with 1, 2 and 8 threads connecting as fast as they can in the 2-vCPU VM (qemu
//! TCG without icount: real time on an emulated CPU, so rates are the VM's, not a host's), for
//! stap lines, JSON lines, `--outcome` and `--count`, with libbpf-tools' `tcpconnect` beside
//! them. The untraced rate of the same workload says how close tracing comes to the kernel's
//! own pace: the reader must never be what drops events first.

use std::fmt::Write as _;

use anyhow::{Context as _, Result, bail};

use super::report::write_section;
use crate::{
    artifacts::{self, Arch},
    vm,
};

/// Connect cycles per run, shared by the run's threads.
const CYCLES: u32 = 20_000;

/// Connecting threads per run.
const THREADS: [u32; 3] = [1, 2, 8];

/// (name, tracer command; none for the untraced workload). Lines go to a file on tmpfs, as a
/// log would. The peer is libbpf-tools' `tcpconnect` (a perf buffer), run as in `overhead
/// --peers`.
const CONFIGS: [(&str, Option<&str>); 6] = [
    ("untraced", None),
    ("stap", Some("/bin/probe-user")),
    ("json", Some("/bin/probe-user --format json")),
    ("outcome", Some("/bin/probe-user --outcome")),
    ("count", Some("/bin/probe-user --count --interval 1h")),
    ("tcpconnect", Some("/bin/peer-tcpconnect")),
];

/// What one run measured.
struct Run {
    name: String,
    threads: u32,
    per_s: f64,
    /// The tracer's summary: (reported, dropped, missed), none untraced.
    summary: Option<(u64, u64, u64)>,
}

pub(super) fn run(write: bool) -> Result<()> {
    let probe_user = artifacts::probe_user(Arch::X86_64)?;
    let mut guest = vm::Guest::new(guest_script())
        .binary("probe-user", &probe_user)
        .binaries(&artifacts::test_helpers(Arch::X86_64)?);
    for (guest_path, host) in super::measure::peer_files(Arch::X86_64, &["libbpf-tools"])? {
        guest = guest.file(&guest_path, &host);
    }
    let mut runs = Vec::new();
    let mut unparsed = Vec::new();
    let mut on_line = |line: &str| {
        println!("{line}");
        if let Some(run) = parse(line) {
            runs.push(run);
        } else if line.starts_with("tput ") {
            unparsed.push(line.to_string());
        }
    };
    let code = vm::Boot::default().run(&guest, &artifacts::work_dir("throughput"), &mut on_line)?;
    if code != 0 {
        bail!("the throughput benchmark failed in the VM (exit code {code})");
    }
    if let Some(line) = unparsed.first() {
        bail!("cannot read the throughput run {line:?}");
    }
    let report = report(&runs)?;
    println!("{report}");
    if write {
        let path = artifacts::workspace_root().join("docs/benchmarks.md");
        write_section(&path, "throughput", &report)?;
        eprintln!("xtask: wrote {}", path.display());
    }
    Ok(())
}

fn guest_script() -> String {
    let mut s = String::from(
        // probe-user is ready at its banner and stopped with SIGTERM; its summary is its last
        // line. tcpconnect is ready once it holds its perf events (a kprobe and a kretprobe per
        // family, its buffer on each of the 2 vCPUs), stopped with SIGINT (which it handles, so
        // it flushes); it prints a header line, and `Lost N events on CPU #C!` for each loss.
        "ready() { case $1 in\n\
           /bin/peer-*) [ $(ls -l /proc/$t/fd 2>/dev/null | grep -c perf_event) -ge 6 ];;\n\
           *) grep -q -e Tracing -e Counting /tmp/err 2>/dev/null;;\n\
         esac; }\n\
         tput() { name=$1; threads=$2; shift 2\n\
         if [ $# -gt 0 ]; then\n\
           rm -f /tmp/err; \"$@\" > /tmp/out 2> /tmp/err & t=$!\n\
           until ready $1; do\n\
             kill -0 $t 2>/dev/null || { cat /tmp/err; return 1; }; sleep 0.05; done\n\
         fi\n\
         r=$(/bin/connect-bench --cycles $CYCLES --port 8080 --threads $threads) || return 1\n\
         s=none\n\
         case $1 in\n\
           '') ;;\n\
           /bin/peer-*) kill -INT $t; wait $t\n\
             lost=$(grep -i '^lost ' /tmp/err | awk '{n += $2} END {print n + 0}')\n\
             s=peer:$(($(wc -l < /tmp/out) - 1)):$lost;;\n\
           *) kill -TERM $t; wait $t; s=$(tail -n 1 /tmp/err | tr ' ' _);;\n\
         esac\n\
         echo \"tput $name $threads $r summary=$s\"\n\
         sleep 1\n\
         }\n",
    );
    let _ = writeln!(s, "CYCLES={CYCLES}");
    s.push_str("/bin/connect-bench --cycles 500 --port 8080 > /dev/null\n");
    for threads in THREADS {
        for (name, command) in CONFIGS {
            let _ = writeln!(
                s,
                "tput {name} {threads} {} || exit 1",
                command.unwrap_or("")
            );
        }
    }
    s
}

/// Parses `tput <name> <threads> cycles=N ns=T summary=<probe-user's last line, _ for spaces,
/// or peer:<lines>:<lost>>`.
fn parse(line: &str) -> Option<Run> {
    let mut words = line.strip_prefix("tput ")?.split(' ');
    let name = words.next()?.to_string();
    let threads = words.next()?.parse().ok()?;
    let mut field =
        |key: &str| -> Option<String> { words.next()?.strip_prefix(key).map(str::to_string) };
    let cycles: f64 = field("cycles=")?.parse().ok()?;
    let ns: f64 = field("ns=")?.parse().ok()?;
    let summary = field("summary=")?;
    // "probe-user:_N_events_printed,_D_dropped,_M_missed,_X_malformed" (or "connects_counted").
    let numbers: Vec<u64> = summary
        .split(['_', ','])
        .filter_map(|w| w.parse().ok())
        .collect();
    let summary = match (summary.as_str(), numbers.as_slice()) {
        ("none", _) => None,
        // "peer:<lines after the header>:<events it says it lost>"
        (peer, _) if peer.starts_with("peer:") => {
            let mut fields = peer.split(':').skip(1).map(str::parse::<u64>);
            let (Some(Ok(reported)), Some(Ok(lost))) = (fields.next(), fields.next()) else {
                return None;
            };
            Some((reported, lost, 0))
        }
        (_, [reported, dropped, missed, ..]) => Some((*reported, *dropped, *missed)),
        _ => return None,
    };
    Some(Run {
        name,
        threads,
        per_s: cycles / (ns / 1e9),
        summary,
    })
}

fn report(runs: &[Run]) -> Result<String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "`cargo xtask bench throughput`: {CYCLES} connect cycles (connect, accept, close) per \
         run, shared by 1, 2 or 8 threads connecting as fast as they can, in the VM with 2 vCPUs \
         (Debian 6.1, qemu TCG without icount: real time on an emulated CPU, so the rates are \
         the VM's, far below a real machine's). The default backend (fentry); lines to a file \
         on tmpfs. Reported is what probe-user printed (or counted); dropped and missed come \
         from its summary. Beside it, libbpf-tools' `tcpconnect` (Debian bookworm's 0.26, \
         kprobes and a perf buffer): reported is the lines it printed, dropped the events its \
         perf buffer says it lost.\n"
    );
    let _ = writeln!(
        out,
        "| output | threads | connects/s | of untraced | reported | dropped | missed |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for threads in THREADS {
        let untraced = runs
            .iter()
            .find(|r| r.name == "untraced" && r.threads == threads)
            .context("no untraced run")?
            .per_s;
        for run in runs.iter().filter(|r| r.threads == threads) {
            let (reported, dropped, missed) = match run.summary {
                Some((r, d, m)) => (r.to_string(), d.to_string(), m.to_string()),
                None => ("-".into(), "-".into(), "-".into()),
            };
            let _ = writeln!(
                out,
                "| {} | {threads} | {:.0} | {:.0}% | {reported} | {dropped} | {missed} |",
                run.name,
                run.per_s,
                100.0 * run.per_s / untraced
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_read_with_probe_users_summary_or_a_peers_counts() {
        let run = parse(
            "tput json 2 cycles=20000 ns=4000000000 \
             summary=probe-user:_20000_events_printed,_3_dropped,_1_missed,_0_malformed",
        )
        .unwrap();
        assert_eq!((run.name.as_str(), run.threads), ("json", 2));
        assert_eq!(run.per_s, 5000.0);
        assert_eq!(run.summary, Some((20000, 3, 1)));
        let peer = parse("tput tcpconnect 8 cycles=20000 ns=4000000000 summary=peer:19990:10");
        assert_eq!(peer.unwrap().summary, Some((19990, 10, 0)));
        let untraced = parse("tput untraced 1 cycles=20000 ns=4000000000 summary=none");
        assert_eq!(untraced.unwrap().summary, None);
        // No header line: the line count less one is negative, which is no run.
        assert!(parse("tput tcpconnect 1 cycles=20000 ns=1 summary=peer:-1:0").is_none());
    }
}
