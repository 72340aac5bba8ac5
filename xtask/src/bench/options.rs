//! `cargo xtask bench`'s options, and the configurations of `overhead` and `latency` they
//! select.

use crate::artifacts::Arch;

use super::configs::{CONFIGS, Config};

#[derive(clap::Args)]
pub struct Options {
    /// `overhead` (guest instructions per connect, deterministic), `latency` (connect()
    /// p50/p99 at a paced 1000 connects/s, real time under TCG: noisy) or `throughput`
    /// (connects/s reported and dropped with 1, 2 and 8 threads; real time) or `resources`
    /// (start-up time and memory on every kernel of the matrix, every backend) or `scale`
    /// (`--metrics` with 1,000 cgroups: scrape cost, memory, overflow and churn).
    #[arg(default_value = "overhead")]
    pub(super) which: String,
    /// Connect cycles per run.
    #[arg(long, default_value_t = 2000)]
    pub(super) cycles: u32,
    /// Runs of each configuration, interleaved.
    #[arg(long, default_value_t = 3)]
    pub(super) rounds: u32,
    /// Write the results to docs/benchmarks.md (otherwise only print them).
    #[arg(long)]
    pub(super) write: bool,
    /// Also run SystemTap's three examples (installs systemtap and the kernel's 858 MB debug
    /// package if missing, compiles the modules once).
    #[arg(long)]
    pub(super) stap: bool,
    /// Also run the peers probe is measured against: libbpf-tools' tcpconnect (examples 2 and
    /// 3) and tcplife (connection lifetimes), and bpftrace with the same probes as tcpconnect
    /// (examples 2 and 3): Debian bookworm's libbpf-tools and bpftrace packages and their
    /// libraries, fetched on first use.
    #[arg(long)]
    pub(super) peers: bool,
    /// Render the report from a saved console log (target/xtask/bench/console.log) instead of
    /// booting the VM.
    #[arg(long, value_name = "FILE")]
    pub(super) from_log: Option<String>,
    /// Only the configurations whose name contains this, or (with commas) exactly these names;
    /// and the baseline.
    #[arg(long)]
    pub(super) only: Option<String>,
    /// The VM's architecture for `overhead` and `latency`: x86_64 (Debian's 6.1 kernel) or
    /// aarch64 (Debian's arm64 6.12, the first of the matrix whose arm64 build attaches fentry,
    /// the default backend).
    #[arg(long, value_enum, default_value = "x86_64")]
    pub(super) arch: Arch,
    /// For `overhead`: another kernel of the matrix (5.10, 6.1, 6.12) than the arch's default,
    /// as for the peers on every kernel. Printed only: the report's sections in
    /// docs/benchmarks.md are the default kernel's; not with `--stap`, whose modules are built
    /// for the host's kernel, which it boots.
    #[arg(long, conflicts_with_all = ["write", "stap"])]
    pub(super) kernel: Option<String>,
}

impl Options {
    /// The kernel booted, as the report names it.
    pub(super) fn kernel(&self) -> &str {
        match (&self.kernel, self.arch) {
            (Some(kernel), _) => kernel,
            (None, Arch::X86_64) => "6.1",
            (None, Arch::Aarch64) => "6.12",
        }
    }

    /// The section of docs/benchmarks.md the overhead report goes to.
    pub(super) fn overhead_section(&self) -> &'static str {
        match self.arch {
            Arch::X86_64 => "overhead",
            Arch::Aarch64 => "overhead-aarch64",
        }
    }
}

impl Options {
    /// The configurations this run measures.
    pub(super) fn configs(&self) -> impl Iterator<Item = &'static Config> + '_ {
        CONFIGS
            .iter()
            .filter(|c| !c.is_stap() || self.stap)
            .filter(|c| !c.is_peer() || self.peers)
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
