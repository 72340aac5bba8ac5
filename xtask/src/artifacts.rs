//! Static (musl) builds of what runs inside the VM.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// The target of every binary copied into the VM: static, so the initramfs needs no libc.
pub const MUSL: &str = "x86_64-unknown-linux-musl";

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
pub fn cargo_build(args: &[&str], kind: &str) -> Result<Vec<(String, PathBuf)>> {
    let output = Command::new(env!("CARGO"))
        .args(args)
        .args([
            "--release",
            "--target",
            MUSL,
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
pub fn probe_user() -> Result<PathBuf> {
    let bins = cargo_build(&["build", "-p", "probe-user", "--bin", "probe-user"], "bin")?;
    bins.into_iter()
        .map(|(_, p)| p)
        .next()
        .context("cargo built no probe-user")
}

/// Builds the static helper binaries of the tests crate (`connector`, ...).
pub fn test_helpers() -> Result<Vec<(String, PathBuf)>> {
    cargo_build(&["build", "-p", "probe-tests", "--bins"], "bin")
}

/// Builds probe-user's examples (the agent the tests run).
pub fn examples() -> Result<Vec<(String, PathBuf)>> {
    cargo_build(&["build", "-p", "probe-user", "--examples"], "example")
}

/// Builds the integration tests of the tests crate, returning each test binary.
pub fn integration_tests() -> Result<Vec<(String, PathBuf)>> {
    cargo_build(&["test", "-p", "probe-tests", "--no-run"], "test")
}
