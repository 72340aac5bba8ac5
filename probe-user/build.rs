//! Builds the eBPF object (`probe-ebpf`) with the pinned toolchain, so that
//! `cargo build --release` alone produces a complete `probe-user`.

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let toolchain = pinned_toolchain()?;
    // -Z build-std=core is needed for bpfel-unknown-none; RUSTC_BOOTSTRAP=1 allows it on a
    // stable toolchain. aya-build relays every line the inner cargo prints as a warning of this
    // package: a quiet inner cargo (verbose off, which quiet cannot be combined with) prints
    // only compiler diagnostics and errors, not a `Compiling ...` line per crate. All of this
    // is set only in this build script's process and its children.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe {
        std::env::set_var("RUSTC_BOOTSTRAP", "1");
        std::env::set_var("CARGO_TERM_QUIET", "true");
        std::env::set_var("CARGO_TERM_VERBOSE", "false");
    }
    let package = aya_build::Package {
        name: "probe-ebpf",
        root_dir: "../probe-ebpf",
        ..Default::default()
    };
    println!("cargo::rerun-if-changed=../probe-common/src");
    println!("cargo::rerun-if-changed=../rust-toolchain.toml");
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain))
}

/// The channel in rust-toolchain.toml: rustc's LLVM must match bpf-linker's.
fn pinned_toolchain() -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string("../rust-toolchain.toml").context("reading rust-toolchain.toml")?;
    text.lines()
        .find_map(|line| {
            let value = line.strip_prefix("channel")?.trim().strip_prefix('=')?;
            Some(value.trim().trim_matches('"').to_string())
        })
        .ok_or_else(|| anyhow!("no channel in rust-toolchain.toml"))
}
