//! Network namespaces made for a test ([`NetNs`]), and netfilter inside the test VM
//! ([`netfilter_up`], [`nft`]).
//!
//! A network namespace belongs to a thread, not to the process: [`NetNs::new`] makes one with
//! `unshare(CLONE_NEWNET)` on a thread of its own and keeps it by a file descriptor,
//! [`NetNs::run`] enters it with `setns` on another thread and runs a closure there. Sockets
//! keep the namespace they were made in for their whole life, whichever thread uses them, and
//! children started from that thread (`Command`) start in it; the rest of the test process stays
//! where it was.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    process::Command,
};

/// A network namespace of its own, with `lo` up (its only interface); it ends when this and
/// every socket made in it are gone.
pub struct NetNs {
    fd: OwnedFd,
    inode: u64,
}

impl NetNs {
    /// A fresh network namespace, `lo` up.
    #[allow(clippy::new_without_default)] // each call makes a namespace: not a default value
    pub fn new() -> NetNs {
        std::thread::spawn(|| {
            // SAFETY: unshare(2) on this thread, which only ever runs this closure.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                panic!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
            }
            set_lo_up();
            let path = c"/proc/thread-self/ns/net";
            // SAFETY: a NUL-terminated path; the descriptor is owned below.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            assert!(
                fd >= 0,
                "open {path:?}: {}",
                std::io::Error::last_os_error()
            );
            NetNs {
                // SAFETY: a descriptor just opened, owned by nothing else.
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
                inode: thread_netns(),
            }
        })
        .join()
        .unwrap()
    }

    /// Its inode number (`--netns`, and what probe-user reports as `netns`).
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// Runs `f` on a thread inside this namespace and returns what it returns (a panic in `f`
    /// is this thread's panic).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns(2) on this thread with a namespace descriptor we own.
                    if unsafe { libc::setns(self.fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        panic!("setns: {}", std::io::Error::last_os_error());
                    }
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Runs `program` with `args` inside this namespace, panicking with its output unless it
    /// succeeds; returns its stdout.
    pub fn command(&self, program: &str, args: &[&str]) -> String {
        self.run(|| run_checked(Command::new(program).args(args)))
    }
}

/// Joins `a` and `b` with a veth pair: `name` in `a` with `a_addr` (CIDR), its peer in `b`
/// with `b_addr`, both up, and `b`'s default route through `a_addr`'s address: `a` routes for
/// `b`, as a node for a pod. With busybox's `ip` (the VM's; the kernel's `veth` module loaded
/// by [`netfilter_up`]), whose `ip link add` names the peer itself (`veth0`, in a namespace
/// that has none: it is moved to `b` at once).
pub fn veth(a: &NetNs, name: &str, a_addr: &str, b: &NetNs, b_addr: &str) {
    a.command("ip", &["link", "add", name, "type", "veth"]);
    // `ip link set ... netns` takes a process of the namespace.
    let mut holder = b.run(|| {
        Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("cannot run sleep")
    });
    let moved = std::panic::catch_unwind(|| {
        a.command(
            "ip",
            &["link", "set", "veth0", "netns", &holder.id().to_string()],
        )
    });
    let _ = holder.kill();
    let _ = holder.wait();
    if let Err(panic) = moved {
        std::panic::resume_unwind(panic);
    }
    a.command("ip", &["addr", "add", a_addr, "dev", name]);
    a.command("ip", &["link", "set", name, "up"]);
    b.command("ip", &["addr", "add", b_addr, "dev", "veth0"]);
    b.command("ip", &["link", "set", "veth0", "up"]);
    let gateway = a_addr.split('/').next().unwrap();
    b.command("ip", &["route", "add", "default", "via", gateway]);
}

/// The inode number of the calling thread's network namespace (`/proc/self/ns/net` is the main
/// thread's).
pub fn thread_netns() -> u64 {
    let link = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let link = link.to_string_lossy();
    link.trim_start_matches("net:[")
        .trim_end_matches(']')
        .parse()
        .unwrap_or_else(|_| panic!("{link}"))
}

/// Brings up `lo` of the calling thread's network namespace (SIOCSIFFLAGS, as `ip link set lo
/// up` does).
fn set_lo_up() {
    // SAFETY: a plain socket, closed by OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: just made, owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all zeroes is a valid (empty) request.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq's flags, which outlives them.
    unsafe {
        assert_eq!(
            libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req),
            0,
            "SIOCGIFFLAGS lo: {}",
            std::io::Error::last_os_error()
        );
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(
            libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS as _, &mut req),
            0,
            "SIOCSIFFLAGS lo: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Runs a prepared command, panicking with its output unless it succeeds; returns its stdout.
fn run_checked(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{cmd:?}: {} {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `nft` can run here: in the test VM (xtask puts Debian's nft and the kernel's
/// netfilter modules into every guest; call [`netfilter_up`] first, nft opens its netlink
/// socket at start), or on a host that has it. Says so when it is absent, panics when it fails.
pub fn has_nft() -> bool {
    match Command::new("nft").arg("--version").output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            // Present but broken (in the VM: its libraries or loader): not a reason to skip.
            panic!(
                "nft --version: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => {
            eprintln!("skipped: no nft here ({e})");
            false
        }
    }
}

/// Makes nftables NAT possible: in the test VM, loads the netfilter modules (the guest's
/// `/bin/netfilter-up`, which skips those already loaded); elsewhere the host's kernel loads
/// them on demand.
pub fn netfilter_up() {
    if std::env::var_os("PROBE_IN_VM").is_some() {
        run_checked(&mut Command::new("netfilter-up"));
    }
}

/// Loads the nftables `ruleset` (`nft -f -`) inside `ns`.
pub fn nft(ns: &NetNs, ruleset: &str) {
    use std::io::Write as _;
    ns.run(|| {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("cannot run nft");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ruleset.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft -f {ruleset}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    })
}
