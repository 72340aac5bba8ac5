//! The third-party licence report shipped in the release tarball: every crate whose code ends
//! up in what probe distributes, with its licence expression and the licence texts it ships.
//!
//! Two parts, both taken from `cargo metadata` (so from Cargo.lock, offline when the registry
//! cache has the crates): the crates linked into `probe-user` for the given target, and the crates
//! built into the eBPF object that probe-user embeds (probe-ebpf, for `bpfel-unknown-none`).
//! Only normal dependencies are followed: build scripts, dev-dependencies and their crates are
//! not in the binary. Proc-macro crates are (they generate code that is) and are marked.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// The eBPF object's target (probe-user's build.rs builds probe-ebpf for it).
const BPF_TARGET: &str = "bpfel-unknown-none";

/// File names (upper-cased prefixes) that hold a crate's licence terms or notices. NOTICE is
/// here because Apache-2.0 §4(d) asks that a work's NOTICE travel with it.
const LICENCE_PREFIXES: &[&str] = &[
    "LICENSE",
    "LICENCE",
    "COPYING",
    "COPYRIGHT",
    "NOTICE",
    "UNLICENSE",
];

/// One third-party crate and the licence files found in its package.
#[derive(Debug, Clone)]
struct Crate {
    name: String,
    version: String,
    /// The SPDX expression of its Cargo.toml (`license`), or a note when it only has a
    /// `license-file`.
    license: String,
    proc_macro: bool,
    /// (file name relative to the package, text)
    files: Vec<(String, String)>,
    /// The package the texts were taken from when this one ships none.
    files_from: Option<String>,
}

/// The report for `target` (e.g. `x86_64-unknown-linux-musl`), as plain text.
pub fn third_party_report(target: &str) -> Result<String> {
    let metadata = cargo_metadata()?;
    let user = linked_crates(&metadata, "probe-user", target)?;
    let bpf = linked_crates(&metadata, "probe-ebpf", BPF_TARGET)?;
    Ok(render(target, &user, &bpf))
}

/// `cargo metadata` of the workspace: every package's manifest, licence and repository.
fn cargo_metadata() -> Result<Value> {
    let stdout = cargo(&["metadata", "--format-version", "1"])?;
    serde_json::from_str(&stdout).context("cargo metadata printed no JSON")
}

fn cargo(args: &[&str]) -> Result<String> {
    let output = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(workspace_root())
        .output()
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!(
            "cargo {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).context("cargo printed no UTF-8")
}

/// The third-party crates that `root`'s normal dependencies pull in for `target`, sorted by
/// name and version.
///
/// The set comes from `cargo tree -p root`, which resolves features for `root` alone, as
/// `cargo build -p root` (and aya-build for probe-ebpf) does. cargo metadata's resolve graph
/// unifies features over the whole workspace: walked from probe-ebpf it would list aya and its
/// dependencies, because probe-user turns on probe-common's "user" feature.
fn linked_crates(metadata: &Value, root: &str, target: &str) -> Result<Vec<Crate>> {
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata: no packages")?;
    let members: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .context("cargo metadata: no workspace_members")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let tree = cargo(&[
        "tree", "-p", root, "-e", "normal", "--target", target, "--prefix", "none", "-f", "{p}",
    ])?;
    let mut wanted = BTreeSet::new();
    for line in tree.lines() {
        let mut words = line.split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            continue;
        };
        wanted.insert((name, version.trim_start_matches('v')));
    }
    let mut crates = Vec::new();
    for (name, version) in wanted {
        let package = packages
            .iter()
            .find(|p| p["name"] == name && p["version"] == version)
            .with_context(|| {
                format!("cargo tree lists {name} {version}, cargo metadata does not")
            })?;
        if members.contains(package["id"].as_str().unwrap_or_default()) {
            continue;
        }
        let mut krate = describe(package)?;
        if krate.files.is_empty() {
            // Some packages leave their project's licence files out (aya-ebpf, ...): take the
            // texts of a package of the same repository that has them.
            if let Some(repo) = package["repository"].as_str() {
                let mut siblings: Vec<&Value> = packages
                    .iter()
                    .filter(|p| p["repository"] == repo)
                    .collect();
                siblings.sort_by_key(|p| p["name"].as_str().unwrap_or_default());
                for sibling in siblings {
                    let other = describe(sibling)?;
                    if !other.files.is_empty() {
                        krate.files = other.files;
                        krate.files_from = Some(format!("{} {}", other.name, other.version));
                        break;
                    }
                }
            }
        }
        crates.push(krate);
    }
    Ok(crates)
}

fn describe(package: &Value) -> Result<Crate> {
    let name = package["name"].as_str().context("package without a name")?;
    let manifest = package["manifest_path"]
        .as_str()
        .with_context(|| format!("{name} has no manifest_path"))?;
    let dir = Path::new(manifest)
        .parent()
        .with_context(|| format!("{name}: manifest path {manifest} has no directory"))?;
    let license_file = package["license_file"].as_str();
    let license = match (package["license"].as_str(), license_file) {
        (Some(expr), _) => expr.to_string(),
        (None, Some(file)) => format!("see {file}"),
        (None, None) => "unspecified".to_string(),
    };
    let proc_macro = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "proc-macro"))
        });
    Ok(Crate {
        name: name.to_string(),
        version: package["version"].as_str().unwrap_or("?").to_string(),
        license,
        proc_macro,
        files: licence_files(dir, license_file)?,
        files_from: None,
    })
}

/// The licence files of the package in `dir`: those named like one at its top (and in a
/// LICENSES/ or LICENSE/ directory), plus its Cargo.toml `license-file`.
fn licence_files(dir: &Path, license_file: Option<&str>) -> Result<Vec<(String, String)>> {
    let mut paths = BTreeSet::new();
    let is_licence = |name: &str| {
        let upper = name.to_ascii_uppercase();
        LICENCE_PREFIXES.iter().any(|p| upper.starts_with(p))
    };
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !is_licence(name) {
            continue;
        }
        if path.is_file() {
            paths.insert(path);
        } else if path.is_dir() {
            for inner in fs::read_dir(&path)? {
                let inner = inner?.path();
                if inner.is_file() {
                    paths.insert(inner);
                }
            }
        }
    }
    if let Some(file) = license_file {
        let path = dir.join(file);
        if path.is_file() {
            paths.insert(path);
        }
    }
    let mut files = Vec::new();
    for path in paths {
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes).replace("\r\n", "\n");
        let text = text.trim_end();
        if text.is_empty() {
            continue;
        }
        let shown = path
            .strip_prefix(dir)
            .map(PathBuf::from)
            .unwrap_or(path.clone());
        files.push((shown.display().to_string(), text.to_string()));
    }
    Ok(files)
}

fn render(target: &str, user: &[Crate], bpf: &[Crate]) -> String {
    // Each distinct text once, numbered in order of first appearance, with who ships it.
    let mut texts: Vec<(String, Vec<String>)> = Vec::new();
    let mut index = BTreeMap::<String, usize>::new();
    let mut refs = BTreeMap::<(String, String), Vec<usize>>::new();
    for krate in user.iter().chain(bpf) {
        let key = (krate.name.clone(), krate.version.clone());
        if refs.contains_key(&key) {
            continue;
        }
        let mut numbers = Vec::new();
        for (file, text) in &krate.files {
            let n = *index.entry(text.clone()).or_insert_with(|| {
                texts.push((text.clone(), Vec::new()));
                texts.len()
            });
            texts[n - 1]
                .1
                .push(format!("{} {} ({file})", krate.name, krate.version));
            numbers.push(n);
        }
        refs.insert(key, numbers);
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "Third-party software in probe ({target})\n\
         \n\
         probe itself is MIT OR Apache-2.0 (LICENSE-MIT, LICENSE-APACHE); its eBPF object is\n\
         MIT OR GPL-2.0-only (\"Dual MIT/GPL\"). It contains code of the crates below, taken from\n\
         Cargo.lock: normal dependencies only (no build scripts, no dev-dependencies). Proc-macro\n\
         crates run at build time and are listed because the code they generate is included.\n\
         Each licence text follows once, numbered; a crate's line names the texts it ships."
    );
    let mut missing = Vec::new();
    for (title, crates) in [
        (format!("Crates linked into probe-user ({target})"), user),
        (
            format!("Crates built into the eBPF object embedded in probe-user ({BPF_TARGET})"),
            bpf,
        ),
    ] {
        let _ = writeln!(out, "\n{title}: {}\n", crates.len());
        for krate in crates {
            let numbers = &refs[&(krate.name.clone(), krate.version.clone())];
            let texts = if numbers.is_empty() {
                missing.push(format!("{} {}", krate.name, krate.version));
                "no licence file in the package".to_string()
            } else {
                let list: Vec<String> = numbers.iter().map(|n| format!("[{n}]")).collect();
                match &krate.files_from {
                    None => format!("texts {}", list.join(" ")),
                    Some(from) => format!(
                        "texts {} (its project's, as shipped by {from}; this package has none)",
                        list.join(" ")
                    ),
                }
            };
            let _ = writeln!(
                out,
                "  {} {}{}  {}  {texts}",
                krate.name,
                krate.version,
                if krate.proc_macro {
                    " (proc-macro)"
                } else {
                    ""
                },
                krate.license,
            );
        }
    }
    if !missing.is_empty() {
        missing.sort();
        missing.dedup();
        let _ = writeln!(
            out,
            "\nThese packages ship no licence file; their terms are the standard text of the\n\
             licence named above: {}",
            missing.join(", ")
        );
    }
    let _ = writeln!(out, "\nLicence texts: {}", texts.len());
    for (n, (text, shippers)) in texts.iter().enumerate() {
        let _ = writeln!(
            out,
            "\n==== [{}] from {} ====\n\n{text}",
            n + 1,
            shippers.join(", ")
        );
    }
    out
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MUSL: &str = "x86_64-unknown-linux-musl";

    #[test]
    fn licenses_report_covers_linked_crates_and_no_gpl() {
        let metadata = cargo_metadata().unwrap();
        let user = linked_crates(&metadata, "probe-user", MUSL).unwrap();
        for name in ["aya", "tokio", "clap"] {
            let krate = user
                .iter()
                .find(|c| c.name == name)
                .unwrap_or_else(|| panic!("{name} is not in probe-user's crates"));
            assert!(
                krate.files.iter().any(|(_, text)| !text.trim().is_empty()),
                "{name} has no licence text"
            );
        }
        // Build-only and dev-only crates are not linked.
        for name in ["aya-build", "proptest", "cargo_metadata"] {
            assert!(user.iter().all(|c| c.name != name), "{name} is listed");
        }
        let bpf = linked_crates(&metadata, "probe-ebpf", BPF_TARGET).unwrap();
        assert!(
            bpf.iter()
                .any(|c| c.name == "aya-ebpf" && !c.files.is_empty())
        );
        // Per-package features: probe-common's "user" feature (aya) is probe-user's only.
        assert!(
            bpf.iter().all(|c| c.name != "aya"),
            "aya is not in the eBPF object"
        );
        // Nothing copyleft in what is distributed as MIT OR Apache-2.0 (btf-rs, LGPL, was
        // linked once). The eBPF object is probe's own MIT OR GPL-2.0-only, not a dependency.
        for krate in user.iter().chain(&bpf) {
            assert!(
                !krate.license.contains("GPL"),
                "{} {} is {}",
                krate.name,
                krate.version,
                krate.license
            );
        }
        let report = third_party_report(MUSL).unwrap();
        for needle in [
            "\n  aya 0.",
            "\n  tokio 1.",
            "\n  clap 4.",
            "\n  aya-ebpf 0.",
            "Apache License",
        ] {
            assert!(report.contains(needle), "report lacks {needle:?}");
        }
        assert!(
            !report.contains("\n  probe-common "),
            "workspace crates are not third-party"
        );
    }
}
