//! Netfilter in the test VM, so that tests can DNAT: the kernel modules of nftables' NAT, taken
//! from the kernel's own Debian package when xtask fetches the kernel ([`keep_modules`]), and
//! Debian's `nft` with its shared libraries and loader ([`guest_files`]).
//!
//! In the guest, `/bin/netfilter-up` loads the modules (`/lib/netfilter`) in dependency order
//! and `/bin/nft` runs nft through its own loader and libraries (`/lib/nft`): the initramfs has
//! no libc, and no modprobe for the kernel to load modules on demand.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use object::{Object as _, ObjectSection as _};

use crate::{
    artifacts::{self, Arch},
    debian::{self, file_name},
};

/// The modules the guest loads, with every module they depend on: nftables' NAT chain type and
/// `dnat` expression (which bring nf_tables, nf_nat, conntrack and defragmentation, for IPv4 and
/// IPv6 alike), conntrack's netlink interface, which a host doing NAT has loaded as soon
/// as anything lists or queries connections, and veth: interface pairs between network
/// namespaces, so that a test can forward a namespace's connects through another, as a node
/// forwards its pods'.
const WANTED: [&str; 4] = ["nft_chain_nat", "nft_nat", "nf_conntrack_netlink", "veth"];

/// Whether `dir` holds the modules of [`WANTED`] as this xtask wants them (an older cache may
/// hold fewer: then the kernel is fetched again, with them).
pub fn complete(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("wanted")).is_ok_and(|w| w.trim() == WANTED.join(" "))
}

/// Modules providing what a `softdep=pre:` names, where that is not a module's name:
/// libcrc32c needs the crc32c algorithm, which Debian builds as a module and the kernel would
/// load on demand through modprobe, absent from the guest.
const SOFT_PROVIDERS: [(&str, &str); 1] = [("crc32c", "crc32c_generic")];

/// The Debian suite whose nft the guests run, whatever their kernel: nft talks to any of them
/// through the stable nf_tables netlink interface.
const NFT_SUITE: &str = "bookworm";

/// Where the guest finds the modules, their load order and the release they were built for.
const GUEST_MODULES: &str = "/lib/netfilter";
/// Where the guest finds nft, its libraries and their loader.
const GUEST_NFT: &str = "/lib/nft";

/// Copies the netfilter modules of [`WANTED`] and their dependencies out of the unpacked kernel
/// package `root` into `out` (decompressed: busybox's insmod reads plain ELF), with `order`
/// (their names, each after those it needs) and `release` (the `uname -r` they are built for,
/// which must be the package's `vmlinuz-<release>`).
pub fn keep_modules(root: &Path, out: &Path) -> Result<()> {
    // bullseye and bookworm install under /lib/modules, trixie under /usr/lib/modules.
    let base = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.is_dir())
        .context("the kernel package holds no lib/modules")?;
    let release_dir = std::fs::read_dir(&base)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_dir())
        .context("the kernel package holds no lib/modules/<release>")?;
    let release = file_name(&release_dir);
    if !root
        .join("boot")
        .join(format!("vmlinuz-{release}"))
        .exists()
    {
        bail!("the kernel package's modules ({release}) are not its vmlinuz's");
    }
    let mut files = BTreeMap::new();
    index_modules(&release_dir.join("kernel"), &mut files)?;
    let builtin = std::fs::read_to_string(release_dir.join("modules.builtin")).unwrap_or_default();

    let partial = out.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    let mut order = Vec::new();
    for name in WANTED {
        add_module(
            name,
            &files,
            &builtin,
            &partial,
            &mut order,
            &mut Vec::new(),
        )?;
    }
    std::fs::write(partial.join("order"), order.join("\n") + "\n")?;
    std::fs::write(partial.join("release"), format!("{release}\n"))?;
    std::fs::write(partial.join("wanted"), WANTED.join(" ") + "\n")?;
    let _ = std::fs::remove_dir_all(out);
    std::fs::rename(&partial, out)?;
    Ok(())
}

/// Adds `name`, after what it needs (its `softdep=pre:` and `depends=`), to `order`, writing it
/// decompressed to `out/<name>.ko`. `path` is the chain of modules being added, for cycles.
fn add_module(
    name: &str,
    files: &BTreeMap<String, PathBuf>,
    builtin: &str,
    out: &Path,
    order: &mut Vec<String>,
    path: &mut Vec<String>,
) -> Result<()> {
    if order.iter().any(|m| m == name) {
        return Ok(());
    }
    if path.iter().any(|m| m == name) {
        bail!("modules depend on each other in a cycle: {path:?}");
    }
    let Some(file) = files.get(name) else {
        // Built into the kernel: nothing to load.
        if builtin.lines().any(|l| module_name(l) == name) {
            return Ok(());
        }
        bail!("the kernel package has no module {name} (and does not build it in)");
    };
    let bytes = decompressed(file)?;
    let elf = object::File::parse(&*bytes).with_context(|| format!("{}", file.display()))?;
    let info = elf
        .section_by_name(".modinfo")
        .with_context(|| format!("{} has no .modinfo", file.display()))?
        .data()?;
    let mut needs = Vec::new();
    for entry in info.split(|&b| b == 0).map(String::from_utf8_lossy) {
        if let Some(pre) = entry
            .strip_prefix("softdep=")
            .and_then(|s| s.split("post:").next())
            .and_then(|s| s.trim().strip_prefix("pre:"))
        {
            for soft in pre.split_whitespace() {
                let provider = SOFT_PROVIDERS.iter().find(|(n, _)| *n == soft);
                needs.push(provider.map_or(soft, |(_, m)| *m).to_string());
            }
        } else if let Some(depends) = entry.strip_prefix("depends=") {
            needs.extend(depends.split(',').filter(|d| !d.is_empty()).map(Into::into));
        }
    }
    path.push(name.to_string());
    for need in needs {
        add_module(&need, files, builtin, out, order, path)?;
    }
    path.pop();
    std::fs::write(out.join(format!("{name}.ko")), bytes)?;
    order.push(name.to_string());
    Ok(())
}

/// Every module file under `dir`, by module name.
fn index_modules(dir: &Path, files: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            index_modules(&path, files)?;
        } else if file_name(&path).contains(".ko") {
            files.insert(module_name(&file_name(&path)).to_string(), path);
        }
    }
    Ok(())
}

/// The module name of a module file name or path (`kernel/crypto/crc32c-intel.ko.xz`:
/// `crc32c_intel`): the kernel spells dashes as underscores.
fn module_name(file: &str) -> String {
    let base = file.rsplit('/').next().unwrap_or(file);
    base.split(".ko").next().unwrap_or(base).replace('-', "_")
}

/// A module file's bytes, decompressed by the host's xz or zstd where the package compressed it
/// (trixie's are .ko.xz).
fn decompressed(file: &Path) -> Result<Vec<u8>> {
    let tool = match file.extension().and_then(|e| e.to_str()) {
        Some("ko") => return Ok(std::fs::read(file)?),
        Some("xz") => ("xz", "xz-utils"),
        Some("zst") => ("zstd", "zstd"),
        _ => bail!("unknown module compression: {}", file.display()),
    };
    let out = Command::new(tool.0)
        .arg("-dc")
        .arg(file)
        .output()
        .with_context(|| format!("cannot run {}: apt-get install {}", tool.0, tool.1))?;
    if !out.status.success() {
        bail!("{} -dc {} failed ({})", tool.0, file.display(), out.status);
    }
    Ok(out.stdout)
}

/// The guest files (guest path, host path) that give `kernel`'s guest netfilter: the modules kept
/// next to it by [`keep_modules`] (none for a kernel given by path: netfilter-up then says so),
/// `/bin/netfilter-up`, and `/bin/nft` with everything it runs with.
pub fn guest_files(kernel: &Path, arch: Arch) -> Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    let modules = kernel.with_file_name("netfilter");
    if modules.join("order").exists() {
        for entry in std::fs::read_dir(&modules)? {
            let path = entry?.path();
            files.push((format!("{GUEST_MODULES}/{}", file_name(&path)), path));
        }
    }
    let scripts = artifacts::work_dir("netfilter");
    std::fs::create_dir_all(&scripts)?;
    let up = scripts.join("netfilter-up");
    std::fs::write(&up, NETFILTER_UP)?;
    files.push(("/bin/netfilter-up".into(), up));

    let nft = debian::programs("nft", NFT_SUITE, "nftables", &["usr/sbin/nft"], arch)?;
    files.extend(debian::guest_files(&nft, GUEST_NFT, &["nft"], "", arch)?);
    Ok(files)
}

/// `/bin/netfilter-up`: loads the modules in order, skipping those already loaded, so that every
/// test needing netfilter can run it.
const NETFILTER_UP: &str = r#"#!/bin/sh
# Loads the kernel's netfilter modules for nftables NAT, each after those it needs; those
# already loaded are skipped, so running it again is harmless.
dir=/lib/netfilter
if [ ! -f $dir/order ]; then
    echo "netfilter-up: no netfilter modules for this kernel in the guest" >&2
    exit 1
fi
if [ "$(uname -r)" != "$(cat $dir/release)" ]; then
    echo "netfilter-up: the modules are for $(cat $dir/release), the kernel is $(uname -r)" >&2
    exit 1
fi
for module in $(cat $dir/order); do
    grep -q "^$module " /proc/modules || insmod $dir/$module.ko || exit 1
done
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_spell_dashes_as_underscores() {
        assert_eq!(
            module_name("kernel/arch/x86/crypto/crc32c-intel.ko.xz"),
            "crc32c_intel"
        );
        assert_eq!(module_name("nf_nat.ko"), "nf_nat");
        assert_eq!(module_name("kernel/lib/libcrc32c.ko.zst"), "libcrc32c");
    }
}
