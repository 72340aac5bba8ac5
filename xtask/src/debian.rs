//! Debian's dynamically linked programs in the guests, whose initramfs has no libc: a program
//! is copied with the closure of the shared libraries it needs and their loader, fetched from
//! the Debian package that holds it and its dependencies, and run in the guest by a wrapper
//! (`<loader> --library-path <dir> <dir>/<program>`). Used for `nft` (netfilter tests) and the
//! peer tracers the benchmarks compare with (libbpf-tools).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use object::read::elf::ElfFile64;

use crate::{
    artifacts::{self, Arch},
    kernels::Apt,
};

/// The dynamic loader of `arch`'s Debian binaries (their PT_INTERP's file name), which libc
/// lists among what it needs.
pub fn loader(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "ld-linux-x86-64.so.2",
        Arch::Aarch64 => "ld-linux-aarch64.so.1",
    }
}

/// A directory holding `programs` (paths inside `package`, e.g. `usr/sbin/nft`), each under
/// its file name, and the shared libraries they need, their loader among them: fetched on first
/// use from Debian `suite` (the package and its dependencies) and cached under
/// `target/xtask/kernels/<name>-<arch>`.
pub fn programs(
    name: &str,
    suite: &str,
    package: &str,
    programs: &[&str],
    arch: Arch,
) -> Result<PathBuf> {
    let dir = artifacts::work_dir("kernels").join(format!("{name}-{}", arch.debian()));
    let out = dir.join(name);
    if programs
        .iter()
        .all(|p| out.join(file_name(Path::new(p))).exists())
    {
        return Ok(out);
    }
    eprintln!(
        "xtask: fetching Debian {suite}'s {package} for {}",
        arch.debian()
    );
    let apt = Apt::new(&dir, suite, arch)?;
    let packages = apt.dependencies(package)?;
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

    let partial = dir.join(format!("{name}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    // The closure of DT_NEEDED, by soname.
    let mut todo = Vec::new();
    for program in programs {
        let binary = resolve(&root, &root.join(program))?;
        std::fs::copy(&binary, partial.join(file_name(Path::new(program))))
            .with_context(|| format!("{program} is not in {packages:?}"))?;
        todo.push(binary);
    }
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
                    format!("{needed}, which {package} needs, is in none of {packages:?}")
                })?;
            let found = resolve(&root, &found)?;
            std::fs::copy(&found, partial.join(&needed))?;
            copied.push(needed);
            todo.push(found);
        }
    }
    if !copied.iter().any(|c| c == loader(arch)) {
        bail!(
            "{package}'s libraries do not need {}: {copied:?}",
            loader(arch)
        );
    }
    std::fs::remove_dir_all(&root)?;
    let _ = std::fs::remove_dir_all(&out);
    std::fs::rename(&partial, &out)?;
    Ok(out)
}

/// The guest files (guest path, host path) of a directory made by [`programs`], put at
/// `guest_dir`, and for each of its `programs` a wrapper at `/bin/<wrapper prefix><name>`
/// that runs it with its own loader and libraries.
pub fn guest_files(
    dir: &Path,
    guest_dir: &str,
    programs: &[&str],
    wrapper_prefix: &str,
    arch: Arch,
) -> Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        files.push((format!("{guest_dir}/{}", file_name(&path)), path));
    }
    let scripts = artifacts::work_dir("debian");
    std::fs::create_dir_all(&scripts)?;
    for program in programs {
        let name = file_name(Path::new(program));
        let wrapper = scripts.join(format!("{wrapper_prefix}{name}-{}", arch.debian()));
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\n\
                 # Debian's {name}, run by its own loader with its own libraries (the guest has no libc).\n\
                 exec {guest_dir}/{} --library-path {guest_dir} {guest_dir}/{name} \"$@\"\n",
                loader(arch)
            ),
        )?;
        files.push((format!("/bin/{wrapper_prefix}{name}"), wrapper));
    }
    Ok(files)
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

pub fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}
