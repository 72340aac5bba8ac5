//! The test VM: Debian's kernel, a busybox initramfs with our static binaries, and qemu (TCG).

use std::{
    io::{BufRead as _, BufReader, Cursor},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use cpio::NewcBuilder;

use crate::{artifacts::Arch, kernels};

/// The line the guest's init prints last, with the exit code of its script.
const EXIT_MARKER: &str = "probe-vm-exit=";

/// How many console lines of a kernel oops [`Crashed`] keeps: its header, registers and the
/// first frames of its call trace (a full oops is ~80 lines, which CI logs cut in the middle).
const OOPS_LINES: usize = 24;

/// The error of [`Boot::run`] when the guest stopped without reporting an exit code: its kernel
/// crashed (`panic=-1` and `-no-reboot` end qemu), or the guest died otherwise. Callers
/// downcast to it to tell a crash from their own failures.
#[derive(Debug)]
pub struct Crashed {
    /// The last oops before the end, from its first line (`BUG:`, `Oops:`, `general
    /// protection fault`, ...), or the panic line if no oops came before it; empty when the
    /// console showed neither.
    pub oops: Vec<String>,
}

impl std::fmt::Display for Crashed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.oops.first() {
            Some(first) => write!(f, "the VM's kernel crashed: {}", first.trim()),
            None => f.write_str("the VM stopped without reporting an exit code"),
        }
    }
}

impl std::error::Error for Crashed {}

/// How a console line starts a kernel oops or panic, if it does.
fn oops_head(line: &str) -> Option<Head> {
    const OOPSES: [&str; 6] = [
        "BUG:",
        "Oops:",
        "general protection fault",
        "kernel BUG at",
        "Unable to handle kernel",
        "Internal error:",
    ];
    // After the `[ seconds]` stamp.
    let text = line.split_once("] ").map_or(line, |(_, text)| text);
    if OOPSES.iter().any(|head| text.starts_with(head)) {
        Some(Head::Oops)
    } else if text.starts_with("Kernel panic") {
        Some(Head::Panic)
    } else {
        None
    }
}

/// What a line [`oops_head`] recognizes starts.
#[derive(PartialEq)]
enum Head {
    /// An oops: the last one before the end is the one that matters (an earlier `BUG:` such
    /// as a soft lockup may not have been fatal).
    Oops,
    /// The panic, which follows the oops that caused it (kept) or starts the report itself.
    Panic,
}

/// The host's newest installed Debian kernel image, or `$PROBE_KERNEL`: the kernel SystemTap's
/// modules are built for (`bench overhead --stap`), whose headers and debug info apt installs
/// on the host. Everything else boots the kernels of [`kernels::MATRIX`], fetched by xtask.
pub fn kernel_image() -> Result<PathBuf> {
    if let Some(kernel) = std::env::var_os("PROBE_KERNEL") {
        return Ok(kernel.into());
    }
    let mut images: Vec<PathBuf> = std::fs::read_dir("/boot")
        .context("cannot read /boot")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("vmlinuz-") && name.ends_with("-amd64")
        })
        .collect();
    images.sort();
    images
        .pop()
        .context("no /boot/vmlinuz-*-amd64: apt-get install linux-image-amd64")
}

/// What goes into the guest: files (guest path, host path) and the shell script init runs.
pub struct Guest {
    files: Vec<(String, PathBuf)>,
    script: String,
}

impl Guest {
    /// A guest that runs `script` (busybox sh) after the system is up.
    pub fn new(script: impl Into<String>) -> Self {
        Self {
            files: Vec::new(),
            script: script.into(),
        }
    }

    /// Copies the host file `host` to `/bin/<name>` in the guest.
    pub fn binary(self, name: &str, host: &Path) -> Self {
        self.file(&format!("/bin/{name}"), host)
    }

    /// Copies each host file of `binaries` to `/bin/<name>` in the guest.
    pub fn binaries<'a>(self, binaries: impl IntoIterator<Item = &'a (String, PathBuf)>) -> Self {
        binaries
            .into_iter()
            .fold(self, |guest, (name, host)| guest.binary(name, host))
    }

    /// Copies each host file of `files` to its absolute guest path: (guest path, host path).
    pub fn files<'a>(self, files: impl IntoIterator<Item = &'a (String, PathBuf)>) -> Self {
        files
            .into_iter()
            .fold(self, |guest, (path, host)| guest.file(path, host))
    }

    /// Copies the host file `host` to the absolute path `guest` in the guest.
    pub fn file(mut self, guest: &str, host: &Path) -> Self {
        self.files.push((
            guest.trim_start_matches('/').to_string(),
            host.to_path_buf(),
        ));
        self
    }

    /// Writes the initramfs to `out`, with `busybox` (a static busybox of the guest's
    /// architecture) as its shell and tools.
    fn write_initramfs(&self, out: &Path, busybox: &Path) -> Result<()> {
        let init = format!(
            "#!/bin/busybox sh\n\
             /bin/busybox --install -s /bin\n\
             mount -t proc proc /proc\n\
             mount -t sysfs sys /sys\n\
             mount -t devtmpfs dev /dev\n\
             mount -t debugfs debugfs /sys/kernel/debug\n\
             mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null\n\
             mount -t tmpfs tmp /tmp\n\
             ip link set lo up\n\
             echo 0 > /proc/sys/kernel/printk_ratelimit 2>/dev/null\n\
             cd /tmp\n\
             echo\n\
             (\n{}\n)\n\
             echo {EXIT_MARKER}$?\n\
             poweroff -f\n",
            self.script
        );
        let mut entries: Vec<(NewcBuilder, Cursor<Vec<u8>>)> = Vec::new();
        for dir in ["bin", "dev", "proc", "sys", "tmp", "etc"] {
            entries.push((
                NewcBuilder::new(dir).mode(0o040755),
                Cursor::new(Vec::new()),
            ));
        }
        entries.push((
            NewcBuilder::new("init").mode(0o100755),
            Cursor::new(init.into_bytes()),
        ));
        entries.push((
            NewcBuilder::new("etc/passwd").mode(0o100644),
            Cursor::new(
                b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n".to_vec(),
            ),
        ));
        let mut files = self.files.clone();
        files.push(("bin/busybox".into(), busybox.to_path_buf()));
        let mut dirs: Vec<String> = Vec::new();
        for (guest, _) in &files {
            let mut parent = Path::new(guest).parent();
            while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
                dirs.push(dir.to_string_lossy().into_owned());
                parent = dir.parent();
            }
        }
        dirs.sort();
        dirs.dedup();
        for dir in dirs
            .iter()
            .filter(|d| !["bin", "etc"].contains(&d.as_str()))
        {
            entries.push((
                NewcBuilder::new(dir).mode(0o040755),
                Cursor::new(Vec::new()),
            ));
        }
        for (guest, host) in files {
            let bytes =
                std::fs::read(&host).with_context(|| format!("cannot read {}", host.display()))?;
            entries.push((NewcBuilder::new(&guest).mode(0o100755), Cursor::new(bytes)));
        }
        let file = std::fs::File::create(out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        cpio::write_cpio(entries.into_iter(), std::io::BufWriter::new(file))?;
        Ok(())
    }
}

/// How to run qemu.
pub struct Boot {
    /// `-icount shift=0,sleep=off -smp 1`: the guest clock counts instructions (benchmarks).
    pub icount: bool,
    /// Give up after this long.
    pub timeout: Duration,
    /// The kernel image to boot (default: `$PROBE_KERNEL`, else Debian's 6.1 for the arch).
    pub kernel: Option<PathBuf>,
    /// The guest's architecture: qemu's system, machine and console, and the busybox.
    pub arch: Arch,
}

impl Default for Boot {
    fn default() -> Self {
        Self {
            icount: false,
            timeout: Duration::from_secs(1200),
            kernel: None,
            arch: Arch::default(),
        }
    }
}

impl Boot {
    /// Boots `guest`, passes every console line to `on_line`, and returns the exit code of the
    /// guest's script.
    pub fn run(
        &self,
        guest: &Guest,
        work_dir: &Path,
        mut on_line: impl FnMut(&str),
    ) -> Result<i32> {
        let kernel = match (&self.kernel, self.arch) {
            (Some(kernel), _) => kernel.clone(),
            (None, arch) => match std::env::var_os("PROBE_KERNEL") {
                Some(kernel) if arch == Arch::X86_64 => kernel.into(),
                _ => kernels::image("6.1", arch)?,
            },
        };
        std::fs::create_dir_all(work_dir)?;
        let initramfs = work_dir.join("initramfs.cpio");
        guest.write_initramfs(&initramfs, &kernels::busybox(self.arch)?)?;

        // qemu's binary, its Debian package, its machine, and the kernel's console.
        let (qemu, package, machine, console): (_, _, &[&str], _) = match self.arch {
            Arch::X86_64 => (
                "qemu-system-x86_64",
                "qemu-system-x86",
                &["-machine", "accel=tcg"],
                "ttyS0",
            ),
            // `-cpu max`: every feature TCG emulates (Debian's arm64 kernels use pointer
            // authentication and BTI where present); `pauth-impdef=on` swaps the architected
            // QARMA5 pointer signatures, very slow to emulate, for a cheap IMPDEF algorithm.
            Arch::Aarch64 => (
                "qemu-system-aarch64",
                "qemu-system-arm",
                &["-machine", "virt,accel=tcg", "-cpu", "max,pauth-impdef=on"],
                "ttyAMA0",
            ),
        };
        let mut cmd = Command::new(qemu);
        cmd.args(machine);
        cmd.args(["-m", "1024", "-nographic", "-no-reboot", "-nic", "none"]);
        if self.icount {
            cmd.args(["-icount", "shift=0,sleep=off", "-smp", "1"]);
        } else {
            cmd.args(["-smp", "2"]);
        }
        cmd.arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initramfs);
        cmd.args([
            "-append",
            &format!("console={console} quiet panic=-1 loglevel=3"),
        ]);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {qemu}: apt-get install {package}"))?;

        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_string();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + self.timeout;
        // The exit marker's code, once seen (none if garbled).
        let mut exit: Option<Option<i32>> = None;
        let mut oops = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(code) = line.strip_prefix(EXIT_MARKER) {
                        exit = Some(code.trim().parse().ok());
                    } else {
                        let head = oops_head(&line);
                        if head == Some(Head::Oops) {
                            oops.clear();
                        }
                        if (head.is_some() || !oops.is_empty()) && oops.len() < OOPS_LINES {
                            oops.push(line.clone());
                        }
                        on_line(&line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    bail!("the VM did not finish within {:?}", self.timeout);
                }
            }
        }
        child.wait()?;
        match exit {
            Some(Some(code)) => Ok(code),
            Some(None) => bail!("the guest's exit code was garbled on the console"),
            None => Err(Crashed { oops }.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oops_heads_are_recognised_after_the_timestamp() {
        let oops = "[  460.1] BUG: unable to handle page fault for address: 0000000000000008";
        assert!(oops_head(oops) == Some(Head::Oops));
        let gp = "[  460.1] general protection fault, probably for non-canonical address";
        assert!(oops_head(gp) == Some(Head::Oops));
        let panic = "[  460.8] Kernel panic - not syncing: Fatal exception in interrupt";
        assert!(oops_head(panic) == Some(Head::Panic));
        assert!(oops_head("[  460.8] RIP: 0010:irqentry_exit+0x1c/0x40").is_none());
        assert!(oops_head("test edge_bug: ... ok").is_none());
    }
}
