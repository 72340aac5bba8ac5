//! Builds the eBPF object (`probe-ebpf`) with the pinned toolchain, so that
//! `cargo build --release` alone produces a complete `probe-user`, and strips its debug info.

use std::{path::Path, process::Command};

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
    println!("cargo::rerun-if-changed=../probe-common/src");
    println!("cargo::rerun-if-changed=../rust-toolchain.toml");
    // Two objects (see probe-ebpf's `atomics` feature): `probe-atomics` for kernels with BPF
    // atomics, `probe` for older ones, which reject the instructions even where they cannot
    // run. aya-build names its output after the binary, so the first is renamed.
    for (features, object) in [(&["atomics"][..], "probe-atomics"), (&[], "probe")] {
        let package = aya_build::Package {
            name: "probe-ebpf",
            root_dir: "../probe-ebpf",
            features,
            ..Default::default()
        };
        aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain))?;
        strip_debug_info(object)?;
    }
    git_commit();
    Ok(())
}

/// Sets `PROBE_GIT_COMMIT` (shown by `--version`) to the commit being built, or `unknown
/// commit` outside a git checkout (a source tarball). Uncommitted changes are not marked:
/// noticing them would mean rerunning this script, and rebuilding the eBPF object, on every
/// edit.
fn git_commit() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => format!("commit {commit}"),
        None => "unknown commit".to_string(),
    };
    println!("cargo::rustc-env=PROBE_GIT_COMMIT={commit}");
    // A new commit or checkout moves HEAD or the branch it names. Only files that exist are
    // watched: cargo takes a missing one as changed, and would rerun this script (and rebuild
    // the eBPF object) on every build.
    let watch = |path: String| {
        if Path::new(&path).exists() {
            println!("cargo::rerun-if-changed={path}");
        }
    };
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        watch(format!("{git_dir}/HEAD"));
    }
    // Refs live in the common directory (shared by worktrees), loose (a directory cargo scans
    // for changes) or packed.
    if let Some(common) = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]) {
        watch(format!("{common}/refs/heads"));
        watch(format!("{common}/packed-refs"));
    }
}

/// Removes the DWARF from the eBPF object just built (`$OUT_DIR/probe`), which probe-user
/// embeds as `$OUT_DIR/<name>`.
///
/// bpf-linker emits the object's BTF from its debug info, so the eBPF crate is built with it,
/// but neither aya nor the kernel reads DWARF: it is ~1.4 MB of the 1.7 MB object, which
/// probe-user would carry in memory for as long as it runs. `--strip-debug` removes only the
/// `.debug_*` sections (and their relocations); `.BTF` and `.BTF.ext`, which aya loads, and
/// the symbol table, which names the programs and maps, stay.
///
/// Without an objcopy the build goes on with the object as it is, with a warning: it works
/// the same, in more memory.
fn strip_debug_info(name: &str) -> anyhow::Result<()> {
    let Some(out_dir) = std::env::var_os("OUT_DIR") else {
        return Ok(());
    };
    let built = Path::new(&out_dir).join("probe");
    // Not built (AYA_BUILD_SKIP).
    if !built.exists() {
        return Ok(());
    }
    let object = Path::new(&out_dir).join(name);
    // An error, not a warning: a `probe-atomics` left by an earlier build would be embedded.
    if object != built {
        std::fs::rename(&built, &object)
            .with_context(|| format!("renaming {} to {name}", built.display()))?;
    }
    let stripped = object.with_extension("stripped");
    let mut tried = Vec::new();
    for &objcopy in OBJCOPY {
        let output = Command::new(objcopy)
            .arg("--strip-debug")
            .arg(&object)
            .arg(&stripped)
            .output();
        match output {
            Ok(output) if output.status.success() => match std::fs::rename(&stripped, &object) {
                Ok(()) => return Ok(()),
                Err(e) => tried.push(format!("{}: {e}", stripped.display())),
            },
            Ok(output) => tried.push(format!(
                "{objcopy}: {} {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tried.push(format!("{objcopy}: not found"));
            }
            Err(e) => tried.push(format!("{objcopy}: {e}")),
        }
    }
    let _ = std::fs::remove_file(&stripped);
    println!(
        "cargo::warning=could not strip the debug info from the eBPF object, which probe-user \
         then embeds as is (~1.4 MB more memory at run time): {}",
        tried.join("; ")
    );
    Ok(())
}

/// The objcopy programs to try, best first: LLVM 22's, the version bpf-linker is built
/// against (Debian's `llvm-22` package installs it as `llvm-objcopy-22`, and under
/// `/usr/lib/llvm-22/bin`, the `LLVM_PREFIX` of setup.sh), then any `llvm-objcopy`. (The
/// `rust-objcopy` in Rust's sysroot does not run outside rustc's environment: it cannot find
/// rustc's libLLVM.)
const OBJCOPY: &[&str] = &[
    "llvm-objcopy-22",
    "/usr/lib/llvm-22/bin/llvm-objcopy",
    "llvm-objcopy",
];

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
