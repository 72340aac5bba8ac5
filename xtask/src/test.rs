//! `cargo xtask test`: lints and unit tests on the host, then `tests/` inside the VM on each
//! kernel of the matrix and with each attach backend, then natively on the host with the
//! backends its kernel supports.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use probe_common::Backend;

use crate::{
    artifacts::{self, Arch},
    kernels, netfilter, vm,
};

/// The attach backends, by probe-user's names for them (`probe-user --attach <name>`).
const KPROBE: &str = Backend::Kprobe.name();
const FENTRY: &str = Backend::Fentry.name();
const TRACEPOINT: &str = Backend::Tracepoint.name();
const BACKENDS: [&str; 3] = [KPROBE, FENTRY, TRACEPOINT];

/// Test binaries whose scenarios depend on neither the kernel nor the backend (the metrics
/// endpoint's TLS and authentication, the OTLP push): run in one pass only, natively with the
/// tracepoint backend where the host can, else in the first VM with its first backend.
const ONCE: &[&str] = &["web", "otlp"];

/// libtest's per-test wall times (`test x ... ok <1.234s>`), which say where a pass's minutes
/// go: unstable options, allowed at run time by `RUSTC_BOOTSTRAP=1` as for `-Z build-std`.
const TIMES: &str = "-Z unstable-options --report-time";

/// The line the guest script prints for each test binary that failed.
const FAILED_MARKER: &str = "xtask-failed:";

/// The line the guest script prints before each [`Step`], with its index: where a second boot
/// resumes after a kernel crash.
const STEP_MARKER: &str = "xtask-step:";

#[derive(clap::Args)]
pub struct Options {
    /// Skip `cargo fmt --check` and `cargo clippy`.
    #[arg(long)]
    no_lint: bool,
    /// Skip the host unit tests.
    #[arg(long)]
    no_unit: bool,
    /// Skip the native run of the integration tests on the host.
    #[arg(long)]
    no_native: bool,
    /// Kernels to run the VM tests on: a version of the matrix (5.10, 6.1, 6.12; Debian's
    /// bullseye, bookworm and trixie kernels, fetched on first use), `all`, the path of a
    /// kernel image, or `none` (no VM: the native run only). Repeatable or comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    kernel: Vec<String>,
    /// Backends to run the VM tests with. Repeatable or comma-separated.
    #[arg(long, value_delimiter = ',', default_values = BACKENDS)]
    attach: Vec<String>,
    /// The VM's architecture: x86_64 (qemu-system-x86_64, Debian's amd64 kernels) or aarch64
    /// (qemu-system-aarch64 -machine virt, Debian's arm64 kernels, static aarch64 binaries). The
    /// lints, unit tests and the native run stay on the host (skipped: --no-native is implied
    /// for a foreign architecture).
    #[arg(long, value_enum, default_value_t)]
    arch: Arch,
    /// Only run tests whose name contains this.
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
        // The library alone, as an agent embeds it: none of the command's dependencies.
        cargo(&[
            "clippy",
            "--package",
            "probe-user",
            "--no-default-features",
            "--lib",
            "--",
            "-D",
            "warnings",
        ])?;
        clippy_ebpf()?;
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

    for backend in &options.attach {
        if !BACKENDS.contains(&backend.as_str()) {
            bail!(
                "unknown backend {backend:?} (expected one of: {})",
                BACKENDS.join(", ")
            );
        }
    }
    let arch = options.arch;
    let kernels = resolve_kernels(&options.kernel, arch)?;
    let probe_user = artifacts::probe_user(arch)?;
    // The test helpers and probe-user's examples, all copied next to the tests.
    let mut helpers = artifacts::test_helpers(arch)?;
    helpers.extend(artifacts::examples(arch)?);
    let tests = artifacts::integration_tests(arch)?;
    if tests.is_empty() {
        bail!("cargo built no integration tests");
    }
    let mut failed = Vec::new();
    // Where the native run happens, the tests of ONCE run there, else in the first VM.
    let mut once_left = options.no_native || !arch.is_host() || host_has_kprobes();
    if !options.no_native && arch.is_host() {
        failed.extend(run_natively(
            &probe_user,
            &helpers,
            &tests,
            options.filter.as_deref(),
        )?);
    }

    // Kernel crashes survived by a second boot, reported again at the end (CI logs keep the
    // end).
    let mut crashes = Vec::new();
    for (name, image) in &kernels {
        // Where fentry cannot attach, the guest checks that asking for it is refused instead.
        let fentry_refused = !has_fentry(arch, name) && options.attach.iter().any(|b| b == FENTRY);
        let backends: Vec<String> = options
            .attach
            .iter()
            .filter(|b| !(fentry_refused && *b == FENTRY))
            .cloned()
            .collect();
        let steps = steps(&tests, &backends, std::mem::take(&mut once_left));
        let mut from = 0;
        let mut crashed_once = false;
        loop {
            let script = guest_script(
                &steps,
                from,
                fentry_refused && from == 0,
                stress_connects(arch, name),
                options.filter.as_deref(),
            );
            // Every guest can DNAT (tests run /bin/netfilter-up, then nft).
            let guest = vm::Guest::new(script)
                .binary("probe-user", &probe_user)
                .binaries(helpers.iter().chain(&tests))
                .files(&netfilter::guest_files(image, arch)?);
            eprintln!(
                "xtask: booting kernel {name} ({}) with {} test binaries",
                image.display(),
                tests.len()
            );
            let boot = vm::Boot {
                kernel: Some(image.clone()),
                arch,
                ..Default::default()
            };
            let mut running = None;
            let result = boot.run(&guest, &artifacts::work_dir("test"), |line| {
                if let Some(what) = line.strip_prefix(FAILED_MARKER) {
                    failed.push(format!("kernel {name}, {}", what.trim()));
                } else if let Some(step) = line.strip_prefix(STEP_MARKER) {
                    running = step.trim().parse::<usize>().ok();
                }
                println!("{line}")
            });
            let code = match result {
                Ok(code) => code,
                Err(error) => {
                    let Some(crash) = error.downcast_ref::<vm::Crashed>() else {
                        return Err(error);
                    };
                    let during = running
                        .and_then(|i| steps.get(i))
                        .map_or("before the first test".to_string(), |s| {
                            format!("during {s}")
                        });
                    let oops = crash
                        .oops
                        .first()
                        .map_or("no oops on the console", |l| l.trim());
                    let report = format!("kernel {name} crashed {during}: {oops}");
                    eprintln!("xtask: {report}");
                    for line in &crash.oops {
                        eprintln!("xtask:   {line}");
                    }
                    if crashed_once {
                        failed.push(report);
                        break;
                    }
                    // Once: a crash under TCG may be the emulator's rather than the kernel's.
                    // It is reported here and at the end, and a second boot resumes at the
                    // step that was running; a second crash in the same pass fails it.
                    crashed_once = true;
                    crashes.push(report);
                    from = running.filter(|&i| i < steps.len()).unwrap_or(from);
                    if let Some(step) = steps.get(from) {
                        eprintln!("xtask: booting kernel {name} again, from {step}");
                    }
                    continue;
                }
            };
            eprintln!("xtask: kernel {name}: integration tests exited with {code}");
            if code != 0
                && !failed
                    .iter()
                    .any(|f| f.starts_with(&format!("kernel {name},")))
            {
                failed.push(format!("kernel {name}"));
            }
            break;
        }
    }
    for crash in &crashes {
        eprintln!("xtask: note: {crash} (resumed on a second boot; the oops is above)");
    }
    if !failed.is_empty() {
        bail!("integration tests failed: {}", failed.join("; "));
    }
    Ok(())
}

/// On a host without kprobes (this project's machines: no kprobes, no fentry, but tracepoints
/// and ring buffers), runs the integration tests natively with the tracepoint backend and with
/// plain probe-user (which must fall back to it), each in a fresh network namespace so that
/// the tests' unroutable destinations fail at once. Also checks the one-line errors of the
/// backends the host lacks. Returns what failed.
fn run_natively(
    probe_user: &Path,
    helpers: &[(String, PathBuf)],
    tests: &[(String, PathBuf)],
    filter: Option<&str>,
) -> Result<Vec<String>> {
    if host_has_kprobes() {
        eprintln!("xtask: the host kernel has kprobes; its native run is left to the VM tests");
        return Ok(Vec::new());
    }
    check_host_refusals(probe_user)?;
    let mut dirs: Vec<&Path> = helpers.iter().filter_map(|(_, p)| p.parent()).collect();
    dirs.dedup();
    let mut path = std::env::join_paths(dirs)?;
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let mut failed = Vec::new();
    for attach in [Some(TRACEPOINT), None] {
        let label = attach.map_or("plain probe-user (auto)".to_string(), |b| {
            format!("--attach {b}")
        });
        for (name, test) in tests {
            if attach.is_none() && ONCE.contains(&name.as_str()) {
                continue;
            }
            eprintln!("xtask: host kernel, {label}: running {name} natively");
            let mut cmd = Command::new("unshare");
            cmd.args([
                "--net",
                "sh",
                "-c",
                "ip link set lo up && exec \"$@\"",
                "sh",
            ])
            .arg(test)
            .args(["--test-threads=1", "--show-output"])
            .args(TIMES.split(' '))
            .args(filter)
            .env("RUSTC_BOOTSTRAP", "1")
            .env("PROBE_USER", probe_user)
            // The full-size stress test runs natively (see `stress_connects`).
            .env_remove("PROBE_STRESS_CONNECTS")
            .env("PATH", &path)
            .env("RUST_BACKTRACE", "1");
            match attach {
                Some(backend) => cmd.env("PROBE_ATTACH", backend),
                None => cmd.env_remove("PROBE_ATTACH"),
            };
            let status = cmd.status().context("cannot run unshare")?;
            if !status.success() {
                failed.push(format!("host kernel, {label}, {name}"));
            }
        }
    }
    Ok(failed)
}

/// Whether the host kernel can create kprobes: then the VMs, not the host, run the tests.
fn host_has_kprobes() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe").exists()
}

/// The `--kernel` values as (name, image) pairs, fetching `arch`'s matrix kernels as needed.
fn resolve_kernels(values: &[String], arch: Arch) -> Result<Vec<(String, PathBuf)>> {
    let mut kernels = Vec::new();
    for value in values {
        if value == "none" {
            continue;
        } else if value == "all" {
            for (version, _) in kernels::MATRIX {
                kernels.push((version.to_string(), kernels::image(version, arch)?));
            }
        } else if value.contains('/') {
            kernels.push((value.clone(), PathBuf::from(value)));
        } else {
            kernels.push((value.clone(), kernels::image(value, arch)?));
        }
    }
    Ok(kernels)
}

/// Where the host lacks kprobes and refuses tracing programs to root (this project's machines:
/// EPERM before the verifier, a security policy), asking for those backends gets one line that
/// says so.
fn check_host_refusals(probe_user: &Path) -> Result<()> {
    for (backend, expected) in [
        (
            KPROBE,
            "probe-user: error: this kernel has no kprobes (CONFIG_KPROBES is off), so probe-user cannot trace it\n",
        ),
        (
            FENTRY,
            "probe-user: error: the kernel refused fexit_tcp_v4_connect although this process may load eBPF programs (root, or CAP_BPF and CAP_PERFMON): a security policy forbids it ",
        ),
    ] {
        let out = Command::new(probe_user)
            .args(["--attach", backend])
            .output()
            .context("cannot run probe-user")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(1)
            || !stderr.starts_with(expected)
            || stderr.lines().count() != 1
        {
            bail!(
                "on this host probe-user --attach {backend} said {stderr:?} ({})",
                out.status
            );
        }
        eprintln!("xtask: host kernel: probe-user --attach {backend} refused in one line (ok)");
    }
    Ok(())
}

/// Whether `arch`'s matrix kernel `kernel` can attach fentry/fexit programs to kernel
/// functions. arm64 has BPF trampolines since Linux 6.0 but ftrace direct calls, which attaching
/// one to a kernel function needs, only since 6.4: Debian's arm64 5.10 and 6.1 refuse
/// (ENOTSUPP), 6.12 attaches. (`probe_tests::kernel_has_fentry` says the same in the guest; a
/// kernel given by path is assumed to have them.)
fn has_fentry(arch: Arch, kernel: &str) -> bool {
    !(arch == Arch::Aarch64 && matches!(kernel, "5.10" | "6.1"))
}

/// The connects of the reliability stress test on `arch`'s kernel `kernel`, if fewer than its
/// full 160,000: those take 40-60 s per backend in a TCG guest (twice that on arm64), so the
/// full size runs natively and on x86_64 5.10 (the oldest kretprobe and trampoline code of the
/// matrix), and a quarter of it elsewhere, with the same assertions.
fn stress_connects(arch: Arch, kernel: &str) -> Option<u32> {
    (arch != Arch::X86_64 || kernel != "5.10").then_some(40_000)
}

/// One run of one test binary in the guest, with one backend.
struct Step {
    backend: String,
    test: String,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} with --attach {}", self.test, self.backend)
    }
}

/// Every test binary with every backend in turn, one test at a time: each test traces the
/// whole (otherwise idle) VM. The tests of [`ONCE`] run only with `once`, and then with the
/// first backend.
fn steps(tests: &[(String, PathBuf)], backends: &[String], once: bool) -> Vec<Step> {
    let mut steps = Vec::new();
    for (i, backend) in backends.iter().enumerate() {
        for (name, _) in tests {
            if ONCE.contains(&name.as_str()) && !(once && i == 0) {
                continue;
            }
            steps.push(Step {
                backend: backend.clone(),
                test: name.clone(),
            });
        }
    }
    steps
}

/// Runs `steps` from index `from` on, marking each start ([`STEP_MARKER`]) and each failure
/// ([`FAILED_MARKER`]) on the console, and exits non-zero if any failed. With `fentry_refused`,
/// first checks that `--attach fentry` fails in one line.
fn guest_script(
    steps: &[Step],
    from: usize,
    fentry_refused: bool,
    stress: Option<u32>,
    filter: Option<&str>,
) -> String {
    let filter = filter.unwrap_or("");
    let mut script = String::from(
        "export PROBE_USER=/bin/probe-user PROBE_IN_VM=1 RUST_BACKTRACE=1 RUSTC_BOOTSTRAP=1\n\
         status=0\n",
    );
    if let Some(connects) = stress {
        script.push_str(&format!("export PROBE_STRESS_CONNECTS={connects}\n"));
    }
    if fentry_refused {
        script.push_str(&format!(
            "echo 'xtask: --attach {FENTRY}: this kernel cannot attach it; checking the refusal'\n\
             err=$(timeout 300 /bin/probe-user --attach {FENTRY} 2>&1 >/dev/null); code=$?\n\
             if [ $code = 1 ] && [ \"$(echo \"$err\" | wc -l)\" = 1 ] && echo \"$err\" | \
             grep -q '^probe-user: error: this kernel cannot attach fentry/fexit programs'; then \
             echo 'xtask: --attach {FENTRY} refused in one line (ok)'; \
             else status=1; echo \"{FAILED_MARKER} --attach {FENTRY} not refused ($code): $err\"; fi\n"
        ));
    }
    let mut backend = None;
    for (i, step) in steps.iter().enumerate().skip(from) {
        let Step {
            backend: attach,
            test,
        } = step;
        if backend != Some(attach) {
            script.push_str(&format!("echo 'xtask: --attach {attach}'\n"));
            backend = Some(attach);
        }
        script.push_str(&format!(
            "echo '{STEP_MARKER}{i}'\n\
             PROBE_ATTACH={attach} /bin/{test} --test-threads=1 --show-output {TIMES} {filter} \
             || {{ status=1; echo '{FAILED_MARKER} --attach {attach}, {test}'; }}\n"
        ));
    }
    script.push_str("exit $status");
    script
}

/// `cargo clippy` on probe-ebpf for its BPF target, as probe-user's build.rs builds it
/// (`-Z build-std=core`, which RUSTC_BOOTSTRAP allows on the pinned stable toolchain): both
/// objects, without and with the `atomics` feature.
fn clippy_ebpf() -> Result<()> {
    let dir = artifacts::workspace_root().join("probe-ebpf");
    for features in [&[][..], &["--features", "atomics"]] {
        let mut args = vec![
            "clippy",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
            "../target/ebpf-clippy",
        ];
        args.extend_from_slice(features);
        args.extend_from_slice(&["--", "-D", "warnings"]);
        cargo_in(&dir, &[("RUSTC_BOOTSTRAP", "1")], &args)?;
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    cargo_in(&artifacts::workspace_root(), &[], args)
}

/// Runs cargo with `args` in `dir`, with `env` added to the environment.
fn cargo_in(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo {} (in {}) failed", args.join(" "), dir.display());
    }
    Ok(())
}
