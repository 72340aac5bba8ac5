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
use object::{Object as _, ObjectSection as _, read::elf::ElfFile64};

use crate::{
    artifacts::{self, Arch},
    kernels::Apt,
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

    let nft = nft(arch)?;
    for entry in std::fs::read_dir(&nft)? {
        let path = entry?.path();
        files.push((format!("{GUEST_NFT}/{}", file_name(&path)), path));
    }
    let wrapper = scripts.join(format!("nft-{}", arch.debian()));
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             # Debian's nft, run by its own loader with its own libraries (the guest has no libc).\n\
             exec {GUEST_NFT}/{} --library-path {GUEST_NFT} {GUEST_NFT}/nft \"$@\"\n",
            loader(arch)
        ),
    )?;
    files.push(("/bin/nft".into(), wrapper));
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

/// The dynamic loader of `arch`'s Debian binaries (their PT_INTERP's file name), which libc
/// lists among what it needs.
fn loader(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "ld-linux-x86-64.so.2",
        Arch::Aarch64 => "ld-linux-aarch64.so.1",
    }
}

/// A directory holding Debian's `nft` for `arch` and the shared libraries it needs, its loader
/// among them, fetched on first use (the nftables package and its dependencies, from
/// [`NFT_SUITE`]) and cached under `target/xtask/kernels/nft-<arch>`.
fn nft(arch: Arch) -> Result<PathBuf> {
    let dir = artifacts::work_dir("kernels").join(format!("nft-{}", arch.debian()));
    let out = dir.join("nft");
    if out.join("nft").exists() {
        return Ok(out);
    }
    eprintln!(
        "xtask: fetching Debian {NFT_SUITE}'s nftables for {}",
        arch.debian()
    );
    let apt = Apt::new(&dir, NFT_SUITE, arch)?;
    let packages = apt.dependencies("nftables")?;
    let root = apt.unpack_all(&packages)?;
    let triplet = match arch {
        Arch::X86_64 => "x86_64-linux-gnu",
        Arch::Aarch64 => "aarch64-linux-gnu",
    };
    let lib_dirs: Vec<PathBuf> = [
        format!("lib/{triplet}"),
        format!("usr/lib/{triplet}"),
        "lib".into(),
        "usr/lib".into(),
    ]
    .iter()
    .map(|d| root.join(d))
    .collect();

    let partial = dir.join("nft.partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    let binary = resolve(&root, &root.join("usr/sbin/nft"))?;
    std::fs::copy(&binary, partial.join("nft"))?;
    // The closure of DT_NEEDED, by soname.
    let mut todo = vec![binary];
    let mut copied: Vec<String> = Vec::new();
    while let Some(elf) = todo.pop() {
        for needed in needed(&elf)? {
            if copied.contains(&needed) {
                continue;
            }
            let found = lib_dirs
                .iter()
                .map(|d| d.join(&needed))
                .find(|p| p.symlink_metadata().is_ok())
                .with_context(|| {
                    format!("{needed}, which nft needs, is in none of {packages:?}")
                })?;
            let found = resolve(&root, &found)?;
            std::fs::copy(&found, partial.join(&needed))?;
            copied.push(needed);
            todo.push(found);
        }
    }
    if !copied.iter().any(|c| c == loader(arch)) {
        bail!("nft's libraries do not need {}: {copied:?}", loader(arch));
    }
    std::fs::remove_dir_all(&root)?;
    let _ = std::fs::remove_dir_all(&out);
    std::fs::rename(&partial, &out)?;
    Ok(out)
}

/// The DT_NEEDED entries of the ELF file `path`.
fn needed(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path)?;
    let elf = ElfFile64::<object::Endianness>::parse(&*bytes)
        .with_context(|| format!("{} is not a 64-bit ELF file", path.display()))?;
    let table = elf.elf_dynamic_table()?;
    let mut found = Vec::new();
    for entry in table.iter() {
        if entry.tag == object::elf::DT_NEEDED {
            found.push(String::from_utf8_lossy(table.string(entry)?).into_owned());
        }
    }
    Ok(found)
}

/// `path` inside the unpacked tree `root` with its symbolic links followed inside `root` (an
/// absolute target is relative to `root`, not to the host's `/`).
fn resolve(root: &Path, path: &Path) -> Result<PathBuf> {
    let mut path = path.to_path_buf();
    for _ in 0..16 {
        let Ok(target) = std::fs::read_link(&path) else {
            return Ok(path);
        };
        path = match target.strip_prefix("/") {
            Ok(inside) => root.join(inside),
            Err(_) => path
                .parent()
                .context("a link without a parent")?
                .join(target),
        };
    }
    bail!("too many symbolic links at {}", path.display())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

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
