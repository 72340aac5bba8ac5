//! Debian kernels for the test matrix, fetched with apt from their suites and cached.
//!
//! The host's apt configuration is left alone: each suite gets its own sources list, package
//! lists and cache under `target/xtask/kernels/<suite>`, and the image is unpacked from the
//! package with `dpkg-deb -x` rather than installed. The mirror is the one the host's apt
//! already uses for Debian ([`debian_mirror`]): nothing here names a server. The netfilter
//! modules the guest may load are kept from the same package as the image
//! ([`netfilter::keep_modules`]), so they always match it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    artifacts::{self, Arch},
    netfilter,
};

/// The kernels the integration tests run on: (version, Debian suite).
pub const MATRIX: [(&str, &str); 3] = [
    ("5.10", "bullseye"),
    ("6.1", "bookworm"),
    ("6.12", "trixie"),
];

/// The image of Debian's kernel `version` (one of [`MATRIX`]) for `arch`, fetched on first use.
pub fn image(version: &str, arch: Arch) -> Result<PathBuf> {
    let Some(&(_, suite)) = MATRIX.iter().find(|(v, _)| *v == version) else {
        let known: Vec<&str> = MATRIX.iter().map(|(v, _)| *v).collect();
        bail!(
            "unknown kernel {version:?} (expected one of: {})",
            known.join(", ")
        );
    };
    // amd64 keeps the directories it always had.
    let dir = match arch {
        Arch::X86_64 => artifacts::work_dir("kernels").join(suite),
        Arch::Aarch64 => artifacts::work_dir("kernels").join(format!("{suite}-{}", arch.debian())),
    };
    let image = dir.join("vmlinuz");
    let modules = dir.join("netfilter");
    // An image cached without its modules is fetched again, with them, from the suite's current
    // package: both always come from one package.
    if image.exists() && netfilter::complete(&modules) {
        return Ok(image);
    }
    eprintln!(
        "xtask: fetching Debian {suite}'s {} kernel ({version})",
        arch.debian()
    );
    let apt = Apt::new(&dir, suite, arch)?;
    // linux-image-<arch> is a metapackage: the image is the package it depends on.
    let meta = format!("linux-image-{}", arch.debian());
    let show = output(apt.command("apt-cache").args(["show", &meta]))?;
    let package =
        image_package(&show).with_context(|| format!("no kernel package in {suite}'s {meta}"))?;
    let root = apt.unpack(package)?;
    let vmlinuz = std::fs::read_dir(root.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .starts_with("vmlinuz-")
        })
        .with_context(|| format!("{package} holds no /boot/vmlinuz-*"))?;
    netfilter::keep_modules(&root, &modules)?;
    // amd64's is a bzImage, arm64's a plain (uncompressed) Image: qemu's -kernel boots either.
    install(&vmlinuz, &image)?;
    std::fs::remove_dir_all(&root)?;
    Ok(image)
}

/// A static busybox for `arch`'s guests: the host's (busybox-static) for the host's
/// architecture, else Debian bookworm's `busybox-static` for `arch`, fetched on first use.
pub fn busybox(arch: Arch) -> Result<PathBuf> {
    if arch.is_host() {
        let busybox = PathBuf::from("/bin/busybox");
        if !busybox.exists() {
            bail!("/bin/busybox missing: apt-get install busybox-static");
        }
        return Ok(busybox);
    }
    let dir = artifacts::work_dir("kernels").join(format!("busybox-{}", arch.debian()));
    let busybox = dir.join("busybox");
    if busybox.exists() {
        return Ok(busybox);
    }
    eprintln!(
        "xtask: fetching Debian's busybox-static for {}",
        arch.debian()
    );
    let root = Apt::new(&dir, "bookworm", arch)?.unpack("busybox-static")?;
    // bookworm's is at /bin/busybox, trixie's (merged /usr) at /usr/bin/busybox.
    let found = ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.exists())
        .context("busybox-static holds no busybox")?;
    install(&found, &busybox)?;
    std::fs::remove_dir_all(&root)?;
    Ok(busybox)
}

/// Copies `from` to the cache path `to` through a temporary name, so that an interrupted copy
/// never leaves a truncated file that later runs would take as fetched.
fn install(from: &Path, to: &Path) -> Result<()> {
    let partial = to.with_extension("partial");
    std::fs::copy(from, &partial)?;
    std::fs::rename(&partial, to)?;
    Ok(())
}

/// apt on one suite and architecture, with its own sources list, package lists, cache and
/// (empty) dpkg status under `dir`: the host's apt configuration, architectures included
/// (no `dpkg --add-architecture`), is left alone.
pub(crate) struct Apt {
    dir: PathBuf,
    arch: Arch,
}

impl Apt {
    /// Writes the configuration and runs `apt-get update`.
    pub(crate) fn new(dir: &Path, suite: &str, arch: Arch) -> Result<Self> {
        std::fs::create_dir_all(dir.join("lists/partial"))?;
        std::fs::create_dir_all(dir.join("cache/archives/partial"))?;
        // An empty dpkg status: otherwise the host's installed kernel shows up among the suite's.
        std::fs::write(dir.join("status"), "")?;
        std::fs::write(
            dir.join("sources.list"),
            format!("deb {} {suite} main\n", debian_mirror()?),
        )?;
        let apt = Self {
            dir: dir.to_path_buf(),
            arch,
        };
        run(apt.command("apt-get").arg("update"))?;
        Ok(apt)
    }

    fn command(&self, tool: &str) -> Command {
        let dir = &self.dir;
        let mut cmd = Command::new(tool);
        cmd.current_dir(dir).args([
            "-q",
            "-o",
            &format!(
                "Dir::Etc::sourcelist={}",
                dir.join("sources.list").display()
            ),
            "-o",
            "Dir::Etc::sourceparts=-",
            "-o",
            &format!("Dir::State::Lists={}", dir.join("lists").display()),
            "-o",
            &format!("Dir::Cache={}", dir.join("cache").display()),
            "-o",
            &format!("Dir::State::status={}", dir.join("status").display()),
            // This architecture's package lists only, whatever the host's dpkg knows.
            "-o",
            &format!("APT::Architecture={}", self.arch.debian()),
            "-o",
            &format!("APT::Architectures::={}", self.arch.debian()),
        ]);
        cmd
    }

    /// Downloads `package` and unpacks it (`dpkg-deb -x`) into `<dir>/root`, which it returns;
    /// the package file is removed.
    fn unpack(&self, package: &str) -> Result<PathBuf> {
        self.unpack_all(&[package.to_string()])
    }

    /// [`Apt::unpack`] for each of `packages`, all into the same `<dir>/root`.
    pub(crate) fn unpack_all(&self, packages: &[String]) -> Result<PathBuf> {
        run(self.command("apt-get").arg("download").args(packages))?;
        let root = self.dir.join("root");
        for package in packages {
            let deb = std::fs::read_dir(&self.dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| {
                    let name = p.file_name().unwrap_or_default().to_string_lossy();
                    name.starts_with(&format!("{package}_")) && name.ends_with(".deb")
                })
                .with_context(|| format!("apt-get download left no {package} package"))?;
            run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
            std::fs::remove_file(&deb)?;
        }
        Ok(root)
    }

    /// `package` and every package it depends on, recursively (`Depends` and `Pre-Depends`;
    /// not recommendations), as apt resolves them in this suite.
    pub(crate) fn dependencies(&self, package: &str) -> Result<Vec<String>> {
        let tree = output(self.command("apt-cache").args([
            "depends",
            "--recurse",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
            package,
        ]))?;
        Ok(top_level_packages(&tree))
    }
}

/// The Debian archive this machine's apt is configured with: the first source of Debian's own
/// `main` packages, as `apt-get indextargets` lists the sources (one-line and deb822 files
/// alike). Its `Origin`/`Label` come from the Release file, known once `apt-get update` has
/// run; before that, the first `main` source whose path ends in `/debian`.
fn debian_mirror() -> Result<String> {
    let targets = output(Command::new("apt-get").args([
        "indextargets",
        "--format",
        "$(REPO_URI)\t$(ORIGIN)\t$(LABEL)\t$(COMPONENT)\t$(IDENTIFIER)",
    ]))?;
    mirror_in(&targets).context(
        "this machine's apt has no Debian source for `main` (apt-get indextargets lists none): \
         add one to /etc/apt/sources.list.d/ and run apt-get update",
    )
}

/// The mirror in `apt-get indextargets` lines of repository URI, origin, label, component and
/// identifier (see [`debian_mirror`]).
fn mirror_in(targets: &str) -> Option<String> {
    let rows: Vec<Vec<&str>> = targets
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| f.len() == 5 && f[3] == "main" && f[4] == "Packages")
        .collect();
    rows.iter()
        .find(|f| f[1] == "Debian" && f[2] == "Debian")
        .or_else(|| {
            rows.iter()
                .find(|f| f[1].is_empty() && f[0].trim_end_matches('/').ends_with("/debian"))
        })
        .map(|f| f[0].trim_end_matches('/').to_string())
}

/// The package named by the first `Depends:` of `apt-cache show linux-image-<arch>` (the newest
/// version comes first), e.g. `linux-image-6.1.0-56-amd64` or `linux-image-6.1.0-50-arm64`.
fn image_package(show: &str) -> Option<&str> {
    show.lines()
        .find_map(|l| l.strip_prefix("Depends:"))?
        .split([',', '('])
        .next()
        .map(str::trim)
        .filter(|p| p.starts_with("linux-image-"))
}

/// The packages `apt-cache depends --recurse` lists (its unindented lines), virtual ones
/// (`<name>`) left out, each once.
fn top_level_packages(tree: &str) -> Vec<String> {
    let mut packages: Vec<String> = tree
        .lines()
        .filter(|l| !l.starts_with([' ', '<']) && !l.is_empty())
        .map(|l| l.trim().to_string())
        .collect();
    packages.sort();
    packages.dedup();
    packages
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_package_is_the_metapackage_dependency() {
        let show = "Package: linux-image-amd64\nVersion: 6.1.192-2\n\
                    Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)\nDescription: x\n";
        assert_eq!(image_package(show), Some("linux-image-6.1.0-56-amd64"));
        assert_eq!(image_package("Package: x\n"), None);
    }

    #[test]
    fn dependencies_are_the_unindented_real_packages() {
        let tree = "nftables\n  Depends: libnftables1\n  Depends: <libc-dev>\nlibnftables1\n  \
                    Depends: libc6\nlibc6\n<libc-dev>\nlibc6\n";
        assert_eq!(
            top_level_packages(tree),
            ["libc6", "libnftables1", "nftables"]
        );
    }

    #[test]
    fn the_mirror_is_debians_main_archive() {
        let known = "https://mirror.example/debian-security/\tDebian\tDebian-Security\tmain\tPackages\n\
                     https://m.example/nodesource/\tNode Source\tNode Source\tmain\tPackages\n\
                     https://mirror.example/debian/\tDebian\tDebian\tmain\tDEP-11\n\
                     https://mirror.example/debian/\tDebian\tDebian\tmain\tPackages\n";
        assert_eq!(
            mirror_in(known).as_deref(),
            Some("https://mirror.example/debian")
        );
        // Before apt-get update: no origin yet.
        let fresh = "https://m.example/proxy/debian-security/\t\t\tmain\tPackages\n\
                     https://m.example/proxy/debian/\t\t\tmain\tPackages\n";
        assert_eq!(
            mirror_in(fresh).as_deref(),
            Some("https://m.example/proxy/debian")
        );
        assert_eq!(mirror_in(""), None);
    }
}
