//! `cargo xtask bench overhead`: guest instructions per connect with and without each tracer,
//! in one deterministic boot (`-icount shift=0,sleep=off -smp 1`). `cargo xtask bench latency`:
//! connect() p50/p99 with and without each tracer at a paced 1000 connects/s, in real time
//! (no icount: noisy). The tracers are probe-user's configurations and, with `--stap`,
//! SystemTap's three examples (see [`crate::stap`]). `cargo xtask bench throughput` and
//! `cargo xtask bench resources` and `cargo xtask bench scale` (metrics with thousands of
//! cgroups): see their modules.
//!
//! `options.rs` (the command line) and `configs.rs` (what `overhead` and `latency` run) feed
//! `measure.rs` (one boot, parsed), whose runs `overhead.rs` and `latency.rs` report;
//! `throughput.rs`, `resources.rs` and `scale.rs` boot their own. Every report goes to its section of
//! docs/benchmarks.md through `report.rs`, which uses none of them.

mod configs;
mod latency;
mod measure;
mod options;
mod overhead;
mod report;
mod resources;
mod scale;
mod throughput;

use anyhow::{Result, bail};

pub use options::Options;

use crate::artifacts::Arch;

pub fn run(options: Options) -> Result<()> {
    let latency = match options.which.as_str() {
        "overhead" => false,
        "latency" => true,
        "throughput" => return throughput::run(options.write),
        "resources" => return resources::run(options.write),
        "scale" => return scale::run(options.write),
        other => bail!(
            "unknown benchmark '{other}' (expected: overhead, latency, throughput, resources, scale)"
        ),
    };
    if options.stap && options.arch != Arch::X86_64 {
        bail!(
            "--stap runs only on x86_64: SystemTap's modules are built on this host for the \
             x86_64 VM kernel, and nothing here cross-builds them for arm64's"
        );
    }
    let measured = measure::measure(&options, latency)?;
    if latency {
        latency::write(&options, &measured.runs)
    } else {
        overhead::write(&options, &measured)
    }
}
