//! Static (musl) builds of what runs inside the VM.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// The architecture of the VM and of every binary copied into it (`--arch`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    /// qemu-system-x86_64, Debian's amd64 kernels.
    #[default]
    #[value(name = "x86_64")]
    X86_64,
    /// qemu-system-aarch64 (`-machine virt -cpu max`), Debian's arm64 kernels.
    Aarch64,
}

impl Arch {
    /// The target of every binary copied into the VM: static, so the initramfs needs no libc.
    /// (aarch64's is linked by rust-lld, see .cargo/config.toml; probe-user's build script builds
    /// the eBPF object for it with `bpf_target_arch = "aarch64"`, aya-build's choice from the
    /// target, so that kprobes read arm64's `pt_regs`.)
    pub fn musl(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// Debian's name for it (package architecture, kernel flavour).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The architecture xtask runs on: its binaries also run natively.
    pub fn is_host(self) -> bool {
        match self {
            Arch::X86_64 => cfg!(target_arch = "x86_64"),
            Arch::Aarch64 => cfg!(target_arch = "aarch64"),
        }
    }
}

/// The workspace root (xtask's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

/// Where xtask keeps its scratch files.
pub fn work_dir(name: &str) -> PathBuf {
    workspace_root().join("target").join("xtask").join(name)
}

/// Runs cargo with `args` in the workspace, returning the executables it reports building
/// (`(target name, path)`), filtered by target kind.
pub fn cargo_build(arch: Arch, args: &[&str], kind: &str) -> Result<Vec<(String, PathBuf)>> {
    let output = Command::new(env!("CARGO"))
        .args(args)
        .args([
            "--release",
            "--target",
            arch.musl(),
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    let mut found = Vec::new();
    for line in output.stdout.split(|&b| b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(exe), Some(name)) = (msg["executable"].as_str(), msg["target"]["name"].as_str())
        else {
            continue;
        };
        let kinds = msg["target"]["kind"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if kinds.iter().any(|k| k == kind) {
            found.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    Ok(found)
}

/// Builds the static `probe-user`.
pub fn probe_user(arch: Arch) -> Result<PathBuf> {
    let bins = cargo_build(
        arch,
        &["build", "-p", "probe-user", "--bin", "probe-user"],
        "bin",
    )?;
    bins.into_iter()
        .map(|(_, p)| p)
        .next()
        .context("cargo built no probe-user")
}

/// Builds the static helper binaries of the tests crate (`connector`, ...).
pub fn test_helpers(arch: Arch) -> Result<Vec<(String, PathBuf)>> {
    cargo_build(arch, &["build", "-p", "probe-tests", "--bins"], "bin")
}

/// Builds probe-user's examples (the agent the tests run).
pub fn examples(arch: Arch) -> Result<Vec<(String, PathBuf)>> {
    cargo_build(
        arch,
        &["build", "-p", "probe-user", "--examples"],
        "example",
    )
}

/// Builds the integration tests of the tests crate, returning each test binary.
pub fn integration_tests(arch: Arch) -> Result<Vec<(String, PathBuf)>> {
    cargo_build(arch, &["test", "-p", "probe-tests", "--no-run"], "test")
}
