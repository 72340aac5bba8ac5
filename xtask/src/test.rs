//! `cargo xtask test`: lints and unit tests on the host, then `tests/` inside the VM.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{artifacts, kernels, vm};

#[derive(clap::Args)]
pub struct Options {
    /// Skip `cargo fmt --check` and `cargo clippy`.
    #[arg(long)]
    no_lint: bool,
    /// Skip the host unit tests.
    #[arg(long)]
    no_unit: bool,
    /// Kernels to run the VM tests on: a version of the matrix (5.10, 6.1, 6.12; Debian's
    /// bullseye, bookworm and trixie kernels, fetched on first use), `all`, or the path of a
    /// kernel image. Repeatable or comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    kernel: Vec<String>,
    /// Only run VM tests whose name contains this.
    filter: Option<String>,
}

pub fn run(options: Options) -> Result<()> {
    if !options.no_lint {
        cargo(&["fmt", "--all", "--check"])?;
        // probe-ebpf only builds for the BPF target (probe-user's build.rs builds it).
        cargo(&[
            "clippy",
            "--workspace",
            "--exclude",
            "probe-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])?;
    }
    if !options.no_unit {
        cargo(&[
            "test",
            "--workspace",
            "--exclude",
            "probe-ebpf",
            "--exclude",
            "probe-tests",
        ])?;
    }

    let kernels = resolve_kernels(&options.kernel)?;
    let probe_user = artifacts::probe_user()?;
    check_host_without_kprobes(&probe_user)?;
    let tests = artifacts::integration_tests()?;
    if tests.is_empty() {
        bail!("cargo built no integration tests");
    }
    let mut guest = vm::Guest::new(guest_script(&tests, options.filter.as_deref()));
    guest = guest.binary("probe-user", &probe_user);
    for (name, path) in artifacts::test_helpers()?.iter().chain(&tests) {
        guest = guest.binary(name, path);
    }
    let mut failed = Vec::new();
    for (name, image) in &kernels {
        eprintln!(
            "xtask: booting kernel {name} ({}) with {} test binaries",
            image.display(),
            tests.len()
        );
        let boot = vm::Boot {
            kernel: Some(image.clone()),
            ..Default::default()
        };
        let code = boot.run(&guest, &artifacts::work_dir("test"), |line| {
            println!("{line}")
        })?;
        eprintln!("xtask: kernel {name}: integration tests exited with {code}");
        if code != 0 {
            failed.push(name.as_str());
        }
    }
    if !failed.is_empty() {
        bail!("integration tests failed on kernel {}", failed.join(", "));
    }
    Ok(())
}

/// The `--kernel` values as (name, image) pairs, fetching matrix kernels as needed.
fn resolve_kernels(values: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let mut kernels = Vec::new();
    for value in values {
        if value == "all" {
            for (version, _) in kernels::MATRIX {
                kernels.push((version.to_string(), kernels::image(version)?));
            }
        } else if value.contains('/') {
            kernels.push((value.clone(), PathBuf::from(value)));
        } else {
            kernels.push((value.clone(), kernels::image(value)?));
        }
    }
    Ok(kernels)
}

/// The host kernel of this project's machines has no kprobes: there, the real binary must refuse
/// in one line. Elsewhere this check has nothing to check and says so.
fn check_host_without_kprobes(probe_user: &std::path::Path) -> Result<()> {
    let kprobes = [
        "/sys/bus/event_source/devices/kprobe",
        "/sys/kernel/tracing/kprobe_events",
    ];
    if kprobes.iter().any(|p| std::path::Path::new(p).exists()) {
        eprintln!("xtask: the host kernel has kprobes; no-kprobes check not applicable");
        return Ok(());
    }
    let out = Command::new(probe_user)
        .output()
        .context("cannot run probe-user")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = "probe-user: error: this kernel has no kprobes (CONFIG_KPROBES is off), so probe-user cannot trace it\n";
    if out.status.code() != Some(1) || stderr != expected {
        bail!(
            "on this host without kprobes probe-user said {stderr:?} ({})",
            out.status
        );
    }
    eprintln!("xtask: host kernel without kprobes: probe-user refused with one line, exit 1 (ok)");
    Ok(())
}

/// Runs every test binary in turn and exits non-zero if any failed. One test at a time: each
/// test traces the whole (otherwise idle) VM.
fn guest_script(tests: &[(String, std::path::PathBuf)], filter: Option<&str>) -> String {
    let filter = filter.unwrap_or("");
    let mut script = String::from("export PROBE_USER=/bin/probe-user RUST_BACKTRACE=1\nstatus=0\n");
    for (name, _) in tests {
        script.push_str(&format!(
            "/bin/{name} --test-threads=1 --show-output {filter} || status=1\n"
        ));
    }
    script.push_str("exit $status");
    script
}

fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(artifacts::workspace_root())
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}
