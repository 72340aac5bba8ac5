//! SystemTap for the side-by-side benchmark: the packages, a patched runtime, the three example
//! scripts compiled into kernel modules (cached), and the files `staprun` needs in the guest.
//! The recipe is the one verified in ../shared/REFERENCE.md.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::artifacts;

/// Guest path of staprun, which loads a compiled module and prints what it reports.
const STAPRUN: &str = "/usr/bin/staprun";

/// The name of SystemTap example `n`: its script is `<name>.stp`, its module `<name>.ko`.
fn example_name(n: u32) -> String {
    format!("tcpconn{n}")
}

/// Guest path of the module compiled from example `n`.
fn module_path(n: u32) -> String {
    format!("/stap/{}.ko", example_name(n))
}

/// The guest command line that runs example `n` (its module, as [`prepare`] copies it).
pub fn staprun_command(n: u32) -> String {
    format!("{STAPRUN} {}", module_path(n))
}

/// Files to copy into the guest: `(guest path, host path)`.
pub fn prepare(kernel_image: &Path) -> Result<Vec<(String, PathBuf)>> {
    let kver = kernel_image
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .context("kernel image is not named vmlinuz-<version>")?
        .to_string();
    install_packages(&kver)?;
    let dir = artifacts::work_dir("stap");
    let runtime = patched_runtime(&dir)?;
    let scripts = artifacts::workspace_root().join("../shared/stap");
    let mut files = Vec::new();
    for n in 1..=3 {
        let name = example_name(n);
        let script = scripts.join(format!("{name}.stp"));
        let module = dir.join(format!("{name}.ko"));
        if !is_newer(&module, &script) {
            eprintln!(
                "xtask: compiling {} with stap (kernel {kver})",
                script.display()
            );
            let status = Command::new("stap")
                .args(["-r", &kver, "-p4", "-m", &name])
                .arg(&script)
                .current_dir(&dir)
                // The host's lockdown makes stap ask for signing keys otherwise.
                .env("SYSTEMTAP_NOSIGN", "1")
                .env("SYSTEMTAP_RUNTIME", &runtime)
                .status()
                .context("cannot run stap")?;
            if !status.success() {
                bail!("stap could not compile {}", script.display());
            }
        }
        files.push((module_path(n), module));
    }
    for program in [STAPRUN, "/usr/lib/systemtap/stapio"] {
        files.push((program.to_string(), PathBuf::from(program)));
        for lib in shared_libraries(program)? {
            files.push((lib.clone(), PathBuf::from(lib)));
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn install_packages(kver: &str) -> Result<()> {
    let packages = [
        "systemtap".to_string(),
        "systemtap-runtime".to_string(),
        format!("linux-headers-{kver}"),
        // 858 MB download, 5.4 GB installed: without it stap cannot find tcp_v4_connect.
        format!("linux-image-{kver}-dbg"),
    ];
    let missing: Vec<&String> = packages
        .iter()
        .filter(|p| {
            !Command::new("dpkg")
                .args(["-s", p])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {missing:?} for the stap comparison");
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get")?;
    if !status.success() {
        bail!("apt-get install {missing:?} failed");
    }
    Ok(())
}

/// A copy of stap's runtime whose stp_task_work.c calls task_work_cancel_func: Debian's 6.1
/// backported the newer task_work_cancel() signature, which stap 4.8 does not know.
fn patched_runtime(dir: &Path) -> Result<PathBuf> {
    let runtime = dir.join("runtime");
    if !runtime.exists() {
        std::fs::create_dir_all(dir)?;
        let status = Command::new("cp")
            .args(["-r", "/usr/share/systemtap/runtime"])
            .arg(&runtime)
            .status()?;
        if !status.success() {
            bail!("cannot copy /usr/share/systemtap/runtime");
        }
    }
    let file = runtime.join("stp_task_work.c");
    let text = std::fs::read_to_string(&file)?;
    let patched = text
        .replace(
            "task_work_cancel(task, func)",
            "task_work_cancel_func(task, func)",
        )
        .replace(
            "typeof(&task_work_cancel)",
            "typeof(&task_work_cancel_func)",
        )
        .replace("\"task_work_cancel\"", "\"task_work_cancel_func\"")
        .replace(
            "#define task_work_cancel (",
            "#define task_work_cancel_func (",
        );
    std::fs::write(&file, patched)?;
    Ok(runtime)
}

/// The shared libraries `program` loads, from ldd.
fn shared_libraries(program: &str) -> Result<Vec<String>> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .context("cannot run ldd")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let path = l.split("=>").last()?.trim().split(' ').next()?;
            path.starts_with('/').then(|| path.to_string())
        })
        .collect())
}

fn is_newer(output: &Path, input: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((modified(output), modified(input)), (Some(o), Some(i)) if o >= i)
}
