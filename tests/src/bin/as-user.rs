//! `as-user --caps CAP_BPF,CAP_PERFMON [--memlock-kib N] -- <command> [args]`: runs a command as
//! user nobody with only the listed capabilities (none if `--caps` is empty), like `setpriv
//! --reuid nobody --inh-caps ... --ambient-caps ...`, which the busybox guest lacks.
//!
//! The memlock limit is set first (soft and hard; default unlimited, as a service manager would
//! with `LimitMEMLOCK=infinity`): kernels before 5.11 charge BPF maps to it, and limits are not
//! privileges.

use std::{os::unix::process::CommandExt as _, process::Command};

use caps::{CapSet, CapsHashSet};

const NOBODY: u32 = 65534;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(split) = args.iter().position(|a| a == "--") else {
        fail("usage: as-user --caps CAP_A,CAP_B [--memlock-kib N] -- <command> [args]");
    };
    let wanted: CapsHashSet = probe_tests::flag_value::<String>(&args[..split], "--caps")
        .unwrap_or_default()
        .split(',')
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse()
                .unwrap_or_else(|_| fail(&format!("unknown capability {c}")))
        })
        .collect();
    let (program, rest) = args[split + 1..]
        .split_first()
        .unwrap_or_else(|| fail("no command"));

    let memlock = probe_tests::flag_value::<u64>(&args[..split], "--memlock-kib")
        .map_or(libc::RLIM_INFINITY, |kib| kib * 1024);
    let memlock = libc::rlimit {
        rlim_cur: memlock,
        rlim_max: memlock,
    };
    // SAFETY: plain syscalls with valid arguments; each result is checked.
    unsafe {
        // Lifting the limit needs CAP_SYS_RESOURCE, which a container's root may lack: then the
        // limit stays as it is. Lowering it always works.
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &memlock) != 0
            && memlock.rlim_cur != libc::RLIM_INFINITY
        {
            check(-1, "setrlimit");
        }
        // Keep the permitted set across the uid change, so the wanted capabilities can be made
        // ambient (inherited by the command) afterwards.
        check(
            libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0),
            "PR_SET_KEEPCAPS",
        );
        check(libc::setgroups(0, std::ptr::null()), "setgroups");
        check(libc::setresgid(NOBODY, NOBODY, NOBODY), "setresgid");
        check(libc::setresuid(NOBODY, NOBODY, NOBODY), "setresuid");
    }
    for set in [CapSet::Permitted, CapSet::Effective, CapSet::Inheritable] {
        caps::set(None, set, &wanted).unwrap_or_else(|e| fail(&format!("capset: {e}")));
    }
    for cap in &wanted {
        caps::raise(None, CapSet::Ambient, *cap)
            .unwrap_or_else(|e| fail(&format!("ambient {cap}: {e}")));
    }
    let err = Command::new(program).args(rest).exec();
    fail(&format!("cannot run {program}: {err}"));
}

fn check(ret: i32, what: &str) {
    if ret != 0 {
        fail(&format!("{what}: {}", std::io::Error::last_os_error()));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("as-user: {message}");
    std::process::exit(127)
}
