//! What the running kernel and this process can do, checked before loading anything so that each
//! missing piece gets its own one-line error.

use std::path::Path;

use crate::error::{Error, Missing};

/// Capability numbers from `linux/capability.h`.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Fails unless the process may load eBPF and attach kprobes: root, `CAP_SYS_ADMIN`, or both
/// `CAP_BPF` and `CAP_PERFMON`.
pub fn check_privileges() -> Result<(), Error> {
    missing_capabilities(effective_capabilities())
}

/// Fails unless the process may turn on the kernel's BPF run-time statistics
/// (`BPF_ENABLE_STATS` needs `CAP_SYS_ADMIN`, which `CAP_BPF` + `CAP_PERFMON` do not give).
pub fn check_stats_privileges() -> Result<(), Error> {
    if has_capability(effective_capabilities(), CAP_SYS_ADMIN) {
        Ok(())
    } else {
        Err(Error::StatsPermission)
    }
}

/// This process's effective capability set, as a bit mask.
fn effective_capabilities() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0)
}

fn has_capability(effective: u64, cap: u32) -> bool {
    effective & (1 << cap) != 0
}

fn missing_capabilities(effective: u64) -> Result<(), Error> {
    let has = |cap: u32| has_capability(effective, cap);
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|&(cap, _)| !has(cap))
        .map(|(_, name)| name)
        .collect();
    Err(Error::Permission { missing })
}

/// Why attaching a probe was refused, if `kernel.perf_event_paranoid` explains it: Debian's (and
/// Android's) kernels add a level 3, which allows perf events (kprobes included) only with
/// `CAP_SYS_ADMIN`, so `CAP_BPF` + `CAP_PERFMON` suffice only once it is lowered to 2.
pub fn perf_paranoid_hint() -> Option<String> {
    let level: i32 = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if level <= 2 || has_capability(effective_capabilities(), CAP_SYS_ADMIN) {
        return None;
    }
    Some(format!(
        "kernel.perf_event_paranoid is {level}, which allows kprobes only with CAP_SYS_ADMIN; \
         run as root or lower it to 2 (sysctl kernel.perf_event_paranoid=2)"
    ))
}

/// Why kernel function `function` may be missing from the kernel's own BTF (`vmlinux`), which
/// fentry/fexit programs are attached with: `tcp_v6_connect` is IPv6's, which may be a module
/// (its functions then in the module's BTF, `/sys/kernel/btf/ipv6`, or nowhere until it is
/// loaded).
pub fn missing_function_hint(function: &str) -> Option<String> {
    if function != probe_common::Function::TcpV6Connect.name() {
        return None;
    }
    // A loadable module has an `initstate`; a built-in one (with parameters) only the directory.
    let ipv6 = if Path::new("/sys/kernel/btf/ipv6").exists() {
        Ipv6::ModuleWithBtf
    } else if Path::new("/sys/module/ipv6/initstate").exists() {
        Ipv6::Module
    } else if Path::new("/sys/module/ipv6").exists() {
        Ipv6::BuiltIn
    } else {
        Ipv6::Absent
    };
    ipv6_hint(ipv6)
}

/// How the running kernel has IPv6.
enum Ipv6 {
    BuiltIn,
    /// A loaded module with its own BTF.
    ModuleWithBtf,
    /// A loaded module without BTF (`CONFIG_DEBUG_INFO_BTF_MODULES` off).
    Module,
    /// Neither: a module not loaded yet, or disabled.
    Absent,
}

fn ipv6_hint(ipv6: Ipv6) -> Option<String> {
    let fix = "trace IPv4 only (-4), or attach with kprobes (--attach kprobe)";
    match ipv6 {
        Ipv6::BuiltIn => None,
        Ipv6::ModuleWithBtf => Some(format!(
            "IPv6 is a module here (its BTF is /sys/kernel/btf/ipv6), and probe-user attaches \
             fentry/fexit to the kernel's own functions only; {fix}"
        )),
        Ipv6::Module => Some(format!(
            "IPv6 is a module here, without BTF of its own; {fix}"
        )),
        Ipv6::Absent => Some(format!(
            "IPv6 is not built into this kernel: a module not loaded yet (modprobe ipv6), or \
             disabled; {fix}"
        )),
    }
}

/// Fails if the kernel cannot create kprobes (`CONFIG_KPROBES` off): neither the perf `kprobe`
/// PMU nor tracefs' `kprobe_events` exists.
pub fn check_kprobes() -> Result<(), Missing> {
    let present = [
        "/sys/bus/event_source/devices/kprobe",
        "/sys/kernel/tracing/kprobe_events",
        "/sys/kernel/debug/tracing/kprobe_events",
    ]
    .iter()
    .any(|p| Path::new(p).exists());
    if present {
        Ok(())
    } else {
        Err(Missing::Kprobes)
    }
}

/// Fails if the kernel has no BPF ring buffer (Linux < 5.8).
pub fn check_ring_buffer() -> Result<(), Missing> {
    match aya::sys::is_map_supported(aya::maps::MapType::RingBuf) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Missing::RingBuffer),
        Err(e) => Err(Missing::RingBufferProbe(e.to_string())),
    }
}

/// Whether the running kernel's BPF has atomic compare-and-exchange (`BPF_CMPXCHG`): Linux 5.12
/// on x86_64, 5.18 on arm64 (where the JIT gained it; a kernel that cannot JIT a program
/// refuses it when the JIT is always on). Judged by the version, which errs on the safe side:
/// a kernel that backported them runs the LRU store, as older ones do.
pub fn has_atomics() -> bool {
    let since = if cfg!(target_arch = "aarch64") {
        aya::util::KernelVersion::new(5, 18, 0)
    } else {
        aya::util::KernelVersion::new(5, 12, 0)
    };
    aya::util::KernelVersion::current().is_ok_and(|running| running >= since)
}

/// Whether the running kernel's `inet_csk_accept` takes two arguments, `(sk, arg)` (Linux
/// 6.10 and later), rather than four, `(sk, flags, err, kern)`: which fexit program reads its
/// return value. A kernel whose version says otherwise than its function has refuses that
/// program (the verifier checks reads against the function's BTF), and the kretprobe is used.
pub fn accept_takes_two_args() -> bool {
    let since = aya::util::KernelVersion::new(6, 10, 0);
    aya::util::KernelVersion::current().is_ok_and(|running| running >= since)
}

/// Raises `RLIMIT_MEMLOCK`, which bounds BPF map memory on kernels before 5.11: to unlimited if
/// allowed (root), else the soft limit to the hard one.
pub fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscalls with valid pointers; failure just leaves the old limit.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) != 0 {
            let mut limit = std::mem::zeroed::<libc::rlimit>();
            if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) == 0 {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit);
            }
        }
    }
}

/// Why loading may have failed, if `RLIMIT_MEMLOCK` explains it: kernels before 5.11 charge BPF
/// maps to it, and without `CAP_SYS_RESOURCE` it cannot be raised past its hard limit.
pub fn memlock_hint() -> Option<String> {
    // SAFETY: plain syscall with a valid out-pointer.
    let mut limit = unsafe { std::mem::zeroed::<libc::rlimit>() };
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(format!(
        "the locked-memory limit (RLIMIT_MEMLOCK) is {} KiB, which kernels before 5.11 charge BPF \
         maps to; raise it (ulimit -l unlimited, or LimitMEMLOCK=infinity for a service)",
        limit.rlim_cur / 1024
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_bpf_perfmon_pass() {
        assert!(missing_capabilities(u64::MAX).is_ok());
        assert!(missing_capabilities(1 << CAP_SYS_ADMIN).is_ok());
        assert!(missing_capabilities((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_ok());
    }

    #[test]
    fn a_missing_tcp_v6_connect_says_how_ipv6_is_built() {
        assert_eq!(ipv6_hint(Ipv6::BuiltIn), None);
        let module = ipv6_hint(Ipv6::ModuleWithBtf).unwrap();
        assert!(
            module.starts_with("IPv6 is a module here (its BTF is /sys/kernel/btf/ipv6)"),
            "{module}"
        );
        assert!(module.ends_with("trace IPv4 only (-4), or attach with kprobes (--attach kprobe)"));
        let absent = ipv6_hint(Ipv6::Absent).unwrap();
        assert!(absent.contains("modprobe ipv6"), "{absent}");
        assert_eq!(missing_function_hint("tcp_v4_connect"), None);
    }

    #[test]
    fn names_missing_capabilities() {
        let err = missing_capabilities(1 << CAP_BPF).unwrap_err().to_string();
        assert_eq!(
            err,
            "permission denied: run as root or with CAP_BPF and CAP_PERFMON (missing: CAP_PERFMON)"
        );
        let err = missing_capabilities(0).unwrap_err().to_string();
        assert!(err.ends_with("(missing: CAP_BPF, CAP_PERFMON)"), "{err}");
    }
}
