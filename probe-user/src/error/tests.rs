//! The errors' messages and chains, from the errors aya reports.

use probe_common::Backend;

use crate::diagnose::{load_refused, trampoline_refused, verifier_rejected};

use super::{
    attach::{chain, permission_message},
    *,
};
use std::error::Error as _;

use aya::programs::ProgramError;

fn os(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

fn load_error(errno: i32, log: &str) -> ProgramError {
    ProgramError::LoadError {
        io_error: os(errno),
        verifier_log: aya_obj::VerifierLog::new(log.to_string()),
    }
}

fn numbered(n: usize) -> String {
    (1..=n).map(|i| format!("{i}: insn\n")).collect()
}

#[test]
fn a_verifier_rejection_shows_the_last_lines_of_its_log() {
    let log = format!(
        "{}BPF_STX uses reserved fields\nprocessed 24 insns\n",
        numbered(23)
    );
    let error = load_refused("connect_outcome", None, load_error(libc::EINVAL, &log));
    let AttachError::Verifier { .. } = error else {
        panic!("{error:?}")
    };
    let reason = BackendError {
        backend: Backend::Fentry,
        error,
    }
    .reason();
    let mut expected = String::from(
        "the verifier rejected connect_outcome (Invalid argument (os error 22)): the last 20 \
         of its 25 log lines (all with debug logging, e.g. RUST_LOG=debug):",
    );
    for i in 6..=23 {
        expected.push_str(&format!("\n  {i}: insn"));
    }
    expected.push_str("\n  BPF_STX uses reserved fields\n  processed 24 insns");
    assert_eq!(reason, expected);
}

#[test]
fn a_short_or_whole_verifier_log_is_shown_entirely() {
    let short = VerifierLog {
        text: "R1 invalid mem access\nprocessed 3 insns\n".into(),
        whole: false,
    };
    assert_eq!(
        short.to_string(),
        "its log:\n  R1 invalid mem access\n  processed 3 insns"
    );
    let whole = VerifierLog {
        text: numbered(30),
        whole: true,
    };
    let shown = whole.to_string();
    assert!(
        shown.starts_with("its log (30 lines):\n  1: insn\n"),
        "{shown}"
    );
    assert_eq!(shown.lines().count(), 31);
}

#[test]
fn only_statistics_in_the_log_is_no_verifier_rejection() {
    let log = "processed 1200 insns (limit 1000000) max_states_per_insn 4\nstack depth 64\n";
    assert!(!verifier_rejected(log));
    assert!(!verifier_rejected(""));
    assert!(verifier_rejected("0: (b7) r0 = 0\nprocessed 1 insns\n"));
    // A program the verifier passed whose JIT compilation failed.
    let error = load_refused("p", None, load_error(524, log));
    assert!(matches!(error, AttachError::Load { .. }), "{error:?}");
    assert!(error.is_rejection());
    assert_eq!(
        chain(&error),
        "the kernel refused to load p: Unknown error 524 (os error 524)"
    );
}

#[test]
fn eperm_without_a_log_is_permission_not_missing_trampolines() {
    let error = load_refused(
        "fexit_tcp_v4_connect",
        Some("tcp_v4_connect"),
        load_error(libc::EPERM, ""),
    );
    let AttachError::Permission { source, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(source.raw_os_error(), Some(libc::EPERM));
    assert!(!error.is_rejection());
    assert_eq!(
        permission_message("fexit_tcp_v4_connect", true),
        "the kernel refused fexit_tcp_v4_connect although this process may load eBPF \
         programs (root, or CAP_BPF and CAP_PERFMON): a security policy forbids it (a Linux \
         security module, such as SELinux, AppArmor or a BPF LSM program)"
    );
    assert_eq!(
        permission_message("fexit_tcp_v4_connect", false),
        "permission denied: loading fexit_tcp_v4_connect needs root, or CAP_BPF and CAP_PERFMON"
    );
}

#[test]
fn a_function_missing_from_btf_is_named() {
    let missing = ProgramError::Btf(aya::BtfError::UnknownBtfTypeName {
        type_name: "tcp_v6_connect".into(),
    });
    let error = load_refused("fexit_tcp_v6_connect", Some("tcp_v6_connect"), missing);
    let shown = error.to_string();
    assert!(
        shown.starts_with(
            "tcp_v6_connect is not in the kernel's BTF (/sys/kernel/btf/vmlinux), so \
             fentry/fexit cannot attach to it"
        ),
        "{shown}"
    );
}

#[test]
fn only_enotsupp_at_attach_means_no_trampolines() {
    let syscall = |errno| {
        ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_raw_tracepoint_open",
            io_error: os(errno),
        })
    };
    for errno in [524, libc::EOPNOTSUPP] {
        let error = trampoline_refused("fentry_p", "f", syscall(errno));
        assert!(matches!(error, AttachError::Trampoline { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .contains("Linux 5.5+ on x86_64 or 6.4+ on arm64")
        );
    }
    let error = trampoline_refused("fentry_p", "f", syscall(libc::EBUSY));
    assert_eq!(
        chain(&error),
        "cannot attach fentry_p to f: Device or resource busy (os error 16)"
    );
    let error = trampoline_refused("fentry_p", "f", syscall(libc::EPERM));
    assert!(matches!(error, AttachError::Permission { .. }), "{error:?}");
}

#[test]
fn no_backend_lists_each_reason_with_its_causes_and_its_source_is_the_first() {
    let errors = BackendErrors(vec![
        BackendError {
            backend: Backend::Fentry,
            error: AttachError::Attach {
                program: "fexit_tcp_v4_connect",
                function: "tcp_v4_connect",
                source: Box::new(os(libc::EBUSY)),
            },
        },
        BackendError {
            backend: Backend::Kprobe,
            error: Missing::Kprobes.into(),
        },
    ]);
    let error = Error::NoBackend(errors);
    assert_eq!(
        error.to_string(),
        "no way to attach works on this kernel (fentry: cannot attach fexit_tcp_v4_connect \
         to tcp_v4_connect: Device or resource busy (os error 16); kprobe: this kernel has \
         no kprobes (CONFIG_KPROBES is off), so probe-user cannot trace it)"
    );
    assert_eq!(error.backend_errors().len(), 2);
    let first = error.source().expect("the first backend's error");
    assert_eq!(
        first.to_string(),
        "cannot attach fexit_tcp_v4_connect to tcp_v4_connect"
    );
    let errno = first.source().and_then(|e| e.downcast_ref::<io::Error>());
    assert_eq!(errno.and_then(io::Error::raw_os_error), Some(libc::EBUSY));
}

/// A cgroup path given on the command line is shown escaped: the error is one line, with no
/// control character of the path in it.
#[test]
fn cgroup_paths_are_escaped_in_errors() {
    let path = PathBuf::from("/sys/fs/cgroup/evil\u{1b}[2J\r\nforged\tx");
    let line = FilterError::NotCgroup2(path.clone()).to_string();
    assert!(
        line.starts_with(r"/sys/fs/cgroup/evil\u{1b}[2J\r\nforged\tx is not a cgroup v2"),
        "{line:?}"
    );
    let source = std::io::Error::from(std::io::ErrorKind::NotFound);
    let line = FilterError::Cgroup { path, source }.to_string();
    assert_eq!(
        line,
        r"cannot use cgroup /sys/fs/cgroup/evil\u{1b}[2J\r\nforged\tx"
    );
}
