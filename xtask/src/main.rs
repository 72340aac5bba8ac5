//! Developer tasks: `cargo xtask test` (lints and unit tests, then the integration tests in a VM
//! and natively on the host), `cargo xtask run -- <probe-user args>` (probe-user in a VM, with a
//! little traffic) and `cargo xtask bench [overhead|latency|throughput|resources]` (what tracing
//! costs a connect, how many it reports per second, its start-up and memory, in a VM) and
//! `cargo xtask dist [--check]` (the release tarball).

mod artifacts;
mod bench;
mod chart;
mod debian;
mod dist;
mod kernels;
mod licenses;
mod netfilter;
mod run;
mod stap;
mod test;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "probe's developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Lints and unit tests on the host, then the integration tests inside a qemu VM and
    /// natively on the host.
    Test(test::Options),
    /// Runs probe-user inside a qemu VM while a client makes a few connects.
    Run(run::Options),
    /// Measures overhead in a deterministic VM (guest instructions per connect) or connect()
    /// latency.
    Bench(bench::Options),
    /// Packs the release tarball (static probe-user, man page, completions, systemd unit,
    /// licences) into target/dist; `--check` tests it.
    Dist(dist::Options),
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().task {
        Task::Test(options) => test::run(options),
        Task::Run(options) => run::run(options),
        Task::Bench(options) => bench::run(options),
        Task::Dist(options) => dist::run(options),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
